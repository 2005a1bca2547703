//go:build !(386 || amd64 || arm64 || loong64 || ppc64le || wasm)

package correlate

import "encoding/binary"

// load8 returns the eight bytes b[i:i+8] as a little-endian word (i+8 <= len(b)); on a big-endian machine through
// encoding/binary, with its bounds checks.
func load8(b []byte, i int) uint64 { return binary.LittleEndian.Uint64(b[i:]) }

// store8 writes x to b[i:i+8], little-endian.
func store8(b []byte, i int, x uint64) { binary.LittleEndian.PutUint64(b[i:], x) }

//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package correlate

import "unsafe"

// load8 returns the eight bytes b[i:i+8] as a little-endian word. The caller has checked i+8 <= len(b): the JSON
// scanners test that once per word already, and binary.LittleEndian.Uint64(b[i:]) would check it twice more (the
// slice, then its eighth byte), which on argument text (a stop every few words) is a third of the word loop.
func load8(b []byte, i int) uint64 {
	return *(*uint64)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(b)), i))
}

// store8 writes x to b[i:i+8], little-endian; the caller has checked i+8 <= len(b) (or cap: see the callers).
func store8(b []byte, i int, x uint64) {
	*(*uint64)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(b)), i)) = x
}

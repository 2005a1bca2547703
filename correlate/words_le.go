//go:build 386 || amd64 || arm64 || loong64 || ppc64le || wasm

package correlate

import "unsafe"

// These architectures are little-endian and load unaligned words cheaply (those Go itself merges byte loads into
// unaligned words on); on the others (arm, mips, riscv64, big-endian ones) words_other.go reads through
// encoding/binary, whose byte loads never fault or trap.

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

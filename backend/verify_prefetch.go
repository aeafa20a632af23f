//go:build amd64 || arm64

package backend

import "unsafe"

// prefetch asks the CPU to start loading the cache line at addr and returns
// at once; the instruction retires without waiting for memory, unlike a
// load, which would stall the CPU's reorder buffer behind a DRAM miss. It
// never faults. Go has no portable prefetch; this is one instruction in
// assembly (verify_prefetch_amd64.s, verify_prefetch_arm64.s).
//
//go:noescape
func prefetch(addr unsafe.Pointer)

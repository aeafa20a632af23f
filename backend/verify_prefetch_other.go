//go:build !amd64 && !arm64

package backend

import "unsafe"

// prefetch is a no-op where there is no assembly for it (see verify_prefetch.go):
// verify is as fast there as before the index was placed by loc.
func prefetch(unsafe.Pointer) {}

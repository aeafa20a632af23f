package keyformat

import (
	"net/netip"
	"slices"
)

// The checks below are what a key may do, shared by the plugin's verify and
// the edge verifier so the two can never answer differently.

// AllowsIP reports whether ip may present a key restricted to cidrs; no
// CIDRs allows any client, and an unknown client is refused when there are.
func AllowsIP(cidrs []netip.Prefix, ip netip.Addr) bool {
	if len(cidrs) == 0 {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range cidrs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// HasScopes reports whether a key holding the sorted scopes holds every one
// of required.
func HasScopes(sorted, required []string) bool {
	for _, s := range required {
		if _, found := slices.BinarySearch(sorted, s); !found {
			return false
		}
	}
	return true
}

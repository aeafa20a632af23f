package notify

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/hashicorp/go-cleanhttp"
)

// RefusedError is a delivery the dispatcher will not attempt: retrying
// cannot change the answer, so the delivery is dead-lettered at once.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "refused: " + e.Reason }

// Addresses a public-only target may not reach, beyond what netip's
// predicates name: "this network" and the carrier-grade NAT range, both
// used for internal hosts, and the limited broadcast address.
var nonPublicPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

// CheckPublicAddr returns an error when a is not a public unicast address:
// loopback, private (RFC 1918, fc00::/7), link-local, unspecified,
// multicast, and the ranges above. IPv4-mapped IPv6 addresses are judged as
// the IPv4 address they carry.
func CheckPublicAddr(a netip.Addr) error {
	a = a.Unmap()
	var kind string
	switch {
	case !a.IsValid():
		kind = "an invalid"
	case a.IsLoopback():
		kind = "a loopback"
	case a.IsPrivate():
		kind = "a private"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		kind = "a link-local"
	case a.IsUnspecified():
		kind = "an unspecified"
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		kind = "a multicast"
	default:
		for _, p := range nonPublicPrefixes {
			if p.Contains(a) {
				kind = "a non-public"
				break
			}
		}
	}
	if kind == "" {
		return nil
	}
	return &RefusedError{Reason: fmt.Sprintf("%s is %s address; this target may only reach public addresses", a, kind)}
}

// publicOnlyControl is the net.Dialer Control of public-only targets. It
// runs on the address the dialer is about to connect to, after name
// resolution, so a host name that resolves (or is re-pointed) to an
// internal address is refused too: checking the URL at write time alone
// would not stop DNS rebinding.
func publicOnlyControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Reason: fmt.Sprintf("cannot judge the address %q", address)}
	}
	return CheckPublicAddr(ap.Addr())
}

// newPublicOnlyClient is the HTTP client of public-only targets. It
// connects directly, ignoring HTTP(S)_PROXY: through a proxy the dialer
// would judge the proxy's address, not the receiver's.
func newPublicOnlyClient() *http.Client {
	tr := cleanhttp.DefaultPooledTransport()
	tr.Proxy = nil
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: publicOnlyControl}
	tr.DialContext = dialer.DialContext
	return &http.Client{Transport: tr, CheckRedirect: noRedirects}
}

// noRedirects keeps a receiver's redirect from pointing the signed delivery
// at a host nobody configured (and, for public-only targets, from leaving
// the dial-time check behind: a redirect is a new request anyway, but not
// following it keeps the rule simple).
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// asRefused reports whether err carries a RefusedError, and returns it.
func asRefused(err error) (*RefusedError, bool) {
	var r *RefusedError
	ok := errors.As(err, &r)
	return r, ok
}

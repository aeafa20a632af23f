package contract

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// Request is one verify question.
type Request struct {
	APIKey string
	// Tenant, when set, limits the answer to that tenant's keys: any other
	// key answers exactly like an unknown one.
	Tenant         string
	RequiredScopes []string
	ClientIP       netip.Addr
}

// Key is what the checks read of a found key.
type Key struct {
	Tenant    string
	ExpiresAt int64 // unix nanoseconds; 0 never
	// Disabled: parked by its owner; it answers DISABLED until enabled.
	Disabled bool
	Scopes   []string // sorted
	CIDRs    []netip.Prefix
}

// Quota is where a key stands against the quota that applies to it (the
// role's, or the tenant's when that leaves less), as Spend found it.
type Quota struct {
	// Limit is requests per period; 0: no quota applies.
	Limit     int64
	Remaining int64
	// ResetsAt is the start of the next period, unix nanoseconds.
	ResetsAt int64
}

// Verdict is Decide's answer: the code, and the quota when one applies.
type Verdict struct {
	Code  string
	Quota Quota
}

// Store is what a verifier keeps beside its keys. Decide asks it only as
// far as the checks get, so the plugin reads a tenant only for a key that
// has not expired.
type Store[K any] interface {
	// TenantStatus is the status of the tenant, "" when it does not exist.
	TenantStatus(ctx context.Context, tenant string) (string, error)
	// Spend takes one request from k's allowances (its rate limit, then
	// its quota) and answers the code that refuses it, or "" when it may
	// pass, with the quota's state when one applies. Decide asks it only
	// for a request that passed every other check, so a refused request
	// spends nothing.
	Spend(k K, now time.Time) (string, Quota)
}

// WellFormed is the offline check that comes before any other: a presented
// value that is not shaped like a key, or whose checksum is wrong, answers
// MALFORMED without a lookup.
func WellFormed(apiKey string) bool {
	_, ok := keyformat.Parse(apiKey)
	return ok
}

// Decide answers r for a found key f (k is the verifier's own handle on it,
// passed back to st.Spend), in the contract's order:
//
//	another tenant's key on a tenant-limited request  NOT_FOUND
//	past its expiry                                   EXPIRED
//	tenant gone                                       NOT_FOUND
//	tenant suspended                                  TENANT_SUSPENDED
//	key disabled by its owner                         DISABLED
//	client IP outside the key's CIDRs                 IP_NOT_ALLOWED
//	a required scope the key lacks                    INSUFFICIENT_SCOPE
//	over its rate limit (st.Spend)                    RATE_LIMITED
//	over its quota (st.Spend)                         QUOTA_EXCEEDED
//	else                                              VALID
//
// MALFORMED (WellFormed) and an unknown key (NOT_FOUND) come before it.
// Expiry is decided here even though a lease revokes its key: a revoke that
// has not run yet, or failed, must not keep a key alive.
func Decide[K any, S Store[K]](ctx context.Context, st S, r *Request, f *Key, k K, now time.Time) (Verdict, error) {
	if r.Tenant != "" && f.Tenant != r.Tenant {
		return Verdict{Code: CodeNotFound}, nil
	}
	if f.ExpiresAt != 0 && now.UnixNano() >= f.ExpiresAt {
		return Verdict{Code: CodeExpired}, nil
	}
	status, err := st.TenantStatus(ctx, f.Tenant)
	if err != nil {
		return Verdict{}, err
	}
	switch status {
	case "", TenantDeleted:
		return Verdict{Code: CodeNotFound}, nil
	case TenantSuspended:
		return Verdict{Code: CodeTenantSuspended}, nil
	}
	if f.Disabled {
		return Verdict{Code: CodeDisabled}, nil
	}
	if !AllowsIP(f.CIDRs, r.ClientIP) {
		return Verdict{Code: CodeIPNotAllowed}, nil
	}
	if !HasScopes(f.Scopes, r.RequiredScopes) {
		return Verdict{Code: CodeInsufficientScope}, nil
	}
	code, q := st.Spend(k, now)
	if code == "" {
		code = CodeValid
	}
	return Verdict{Code: code, Quota: q}, nil
}

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

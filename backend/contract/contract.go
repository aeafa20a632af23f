// Package contract is the verify contract that the plugin's verify path and
// every edge verifier share: the answer codes and their HTTP statuses, the
// answer, the order of the checks (Decide) and the wire types of the sync
// feed and the usage report. It is written once so that a new check or a
// new field reaches both sides at once and they cannot answer differently.
package contract

import "net/http"

// Verify answer codes: the public contract with API gateways.
const (
	CodeValid             = "VALID"
	CodeMalformed         = "MALFORMED"
	CodeNotFound          = "NOT_FOUND"
	CodeExpired           = "EXPIRED"
	CodeTenantSuspended   = "TENANT_SUSPENDED"
	CodeDisabled          = "DISABLED"
	CodeInsufficientScope = "INSUFFICIENT_SCOPE"
	CodeIPNotAllowed      = "IP_NOT_ALLOWED"
	CodeRateLimited       = "RATE_LIMITED"
	CodeQuotaExceeded     = "QUOTA_EXCEEDED"
)

// VerifyCodes is every code Vault's verify answers, in the order the
// contract lists them; usage and metrics index their counters by it.
var VerifyCodes = [...]string{
	CodeValid, CodeMalformed, CodeNotFound, CodeExpired, CodeTenantSuspended, CodeDisabled,
	CodeInsufficientScope, CodeIPNotAllowed, CodeRateLimited, CodeQuotaExceeded,
}

// CodeIndex is code's position in VerifyCodes, -1 when it is none of them.
func CodeIndex(code string) int {
	for i, c := range VerifyCodes {
		if c == code {
			return i
		}
	}
	return -1
}

// AboutKey reports whether an answer with code is about a found key of the
// tenant asked for, so that usage books it on that key: every code of
// VerifyCodes but MALFORMED and NOT_FOUND (which names no key, or another
// tenant's). A usage report carries only these (UsageReport.VerifyByCode).
func AboutKey(code string) bool {
	return CodeIndex(code) >= 0 && code != CodeMalformed && code != CodeNotFound
}

// Codes only an edge answers, never Vault's verify: no key was presented,
// the edge has not synced within its staleness bound, or a key the edge
// does not hold could not be checked with Vault.
const (
	CodeMissing     = "MISSING"
	CodeStale       = "STALE"
	CodeUnavailable = "UNAVAILABLE"
)

// Tenant statuses. TenantDeleted is never stored: the sync feed sends it
// when a tenant goes.
const (
	TenantActive    = "active"
	TenantSuspended = "suspended"
	TenantDeleted   = "deleted"
)

// HTTPStatus is the status a gateway answers a refused request with (and
// 200 for VALID): 401 when the key is not good (disabled included), 403
// when it is good but not for this request, 429 over its rate limit or
// quota, 503 when the answer could not be had.
func HTTPStatus(code string) int {
	switch code {
	case CodeValid:
		return http.StatusOK
	case CodeInsufficientScope, CodeIPNotAllowed:
		return http.StatusForbidden
	case CodeRateLimited, CodeQuotaExceeded:
		return http.StatusTooManyRequests
	case CodeStale, CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusUnauthorized
	}
}

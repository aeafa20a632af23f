package edge

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// What every gateway integration does alike (the /check endpoint,
// Middleware, the Caddy module, the Envoy ext_authz gRPC check): where the
// key is read, how an answer becomes a refusal, and which headers the
// upstream gets. Only the framing differs between gateways.

// HeaderPrefix starts every header an answer sets. A gateway removes every
// header of the client's request that starts with it before the upstream
// sees the request, so an upstream can trust them.
const HeaderPrefix = "X-Apikeys-"

// For gateways that pass on only some statuses of their auth check
// (nginx's auth_request: 2xx, 401 and 403; anything else becomes 500): a
// check request carrying HeaderRefuseWith: 401 (or 403) gets every refusal
// in that status, and the status the client should see in HeaderStatus.
const (
	HeaderRefuseWith = "X-Apikeys-Refuse-With"
	HeaderStatus     = "X-Apikeys-Status"
)

// Header is one header of an answer, its name in canonical form.
type Header struct{ Name, Value string }

// Check answers r as a gateway must: MISSING when no key was presented,
// the verify answer, or STALE / UNAVAILABLE when the edge could not
// answer. Its HTTP status is contract.HTTPStatus(a.Code).
func Check(ctx context.Context, v Verifier, r *Request) Answer {
	if r.APIKey == "" {
		return contract.Refusal(contract.CodeMissing)
	}
	a, err := v.Verify(ctx, r)
	if err != nil {
		code := contract.CodeUnavailable
		if errors.Is(err, ErrStale) {
			code = contract.CodeStale
		}
		return contract.Refusal(code)
	}
	return a
}

// AnswerHeaders are the headers of an answer: X-Apikeys-Code always, and
// for a VALID answer the tenant, key id, scopes (comma separated) and role.
// The check endpoint answers with them; gateways set them on the request
// they pass upstream.
func AnswerHeaders(a Answer) []Header {
	if !a.Valid {
		return []Header{{HeaderCode, a.Code}}
	}
	return []Header{
		{HeaderCode, a.Code},
		{HeaderTenant, a.Tenant},
		{HeaderKeyID, a.KeyID},
		{HeaderScopes, strings.Join(a.Scopes, ",")},
		{HeaderRole, a.Role},
	}
}

// SetUpstreamHeaders removes every X-Apikeys-* header the client sent and
// sets the answer's: what the upstream of a request let through receives.
func SetUpstreamHeaders(h http.Header, a Answer) {
	StripClientHeaders(h)
	for _, hv := range AnswerHeaders(a) {
		h.Set(hv.Name, hv.Value)
	}
}

// StripClientHeaders deletes every header whose name starts with
// X-Apikeys- (any case: the header map's keys are canonical, and a
// non-canonical key set by hand is caught too).
func StripClientHeaders(h http.Header) {
	for name := range h {
		if len(name) >= len(HeaderPrefix) && strings.EqualFold(name[:len(HeaderPrefix)], HeaderPrefix) {
			delete(h, name)
		}
	}
}

// PresentedKey is the key of a request: the keyHeader header when set and
// present, else Authorization: Bearer <key>. get reads a header by name
// (http.Header.Get, or a lookup in Envoy's lower-cased map).
func PresentedKey(get func(string) string, keyHeader string) string {
	if keyHeader != "" {
		if k := strings.TrimSpace(get(keyHeader)); k != "" {
			return k
		}
	}
	auth := get("Authorization")
	if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	return ""
}

// ParseScopes splits a comma-separated scope list, dropping blanks, and
// appends the scopes to to.
func ParseScopes(to []string, list string) []string {
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			to = append(to, s)
		}
	}
	return to
}

// RetryAfter is the Retry-After of a 429, in whole seconds, "" for any
// other answer: until the quota resets for QUOTA_EXCEEDED, and 1 for
// RATE_LIMITED (a token bucket refills continuously; a client that waits a
// second finds a token unless the limit is below one request a second).
func RetryAfter(a Answer, now time.Time) string {
	switch a.Code {
	case contract.CodeRateLimited:
		return "1"
	case contract.CodeQuotaExceeded:
		if a.QuotaResetsAt != nil {
			if t, err := time.Parse(time.RFC3339, *a.QuotaResetsAt); err == nil {
				secs := int64(t.Sub(now).Seconds() + 0.999)
				return strconv.FormatInt(max(secs, 1), 10)
			}
		}
		return "1"
	}
	return ""
}

// checkEndpoint wraps the /check handler: a 429 gets a Retry-After when
// the answer did not bring one (RATE_LIMITED's), and a gateway that asked,
// with HeaderRefuseWith, for every refusal in one status it passes on gets
// that status, the real one in HeaderStatus for it to map back.
func checkEndpoint(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &checkWriter{ResponseWriter: w}
		switch s := r.Header.Get(HeaderRefuseWith); s {
		case "401", "403":
			cw.refuseWith, _ = strconv.Atoi(s)
		}
		next.ServeHTTP(cw, r)
	})
}

type checkWriter struct {
	http.ResponseWriter
	refuseWith int
}

func (w *checkWriter) WriteHeader(code int) {
	h := w.Header()
	if code == http.StatusTooManyRequests && h.Get("Retry-After") == "" {
		// The code is all this writer sees of the answer; a quota's reset
		// is in the body, and comes with its own Retry-After.
		if ra := RetryAfter(Answer{Code: h.Get(HeaderCode)}, time.Now()); ra != "" {
			h.Set("Retry-After", ra)
		}
	}
	if w.refuseWith != 0 {
		h.Set(HeaderStatus, strconv.Itoa(code))
		if code != http.StatusOK {
			code = w.refuseWith
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

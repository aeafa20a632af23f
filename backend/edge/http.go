package edge

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// Response headers of the check endpoint and the middleware.
const (
	HeaderCode   = "X-Apikeys-Code"
	HeaderTenant = "X-Apikeys-Tenant"
	HeaderKeyID  = "X-Apikeys-Key-Id"
	HeaderScopes = "X-Apikeys-Scopes"
	HeaderRole   = "X-Apikeys-Role"

	// DefaultScopesHeader carries the scopes a route needs, comma separated
	// (query parameter "scopes" works too).
	DefaultScopesHeader = "X-Required-Scopes"
	// DefaultTenantHeader limits a check to one tenant's keys (query
	// parameter "tenant" works too).
	DefaultTenantHeader = "X-Required-Tenant"
)

// Verifier is what the middleware needs; *Edge is one.
type Verifier interface {
	Verify(ctx context.Context, r *Request) (Answer, error)
}

// HTTPOptions say where a request carries what the check needs.
type HTTPOptions struct {
	// KeyHeader, when set, is read before Authorization: Bearer.
	KeyHeader    string
	ScopesHeader string
	TenantHeader string
	// TrustForwarded takes the client address from X-Real-IP, else the
	// last X-Forwarded-For entry (the one the gateway appended), instead
	// of the connection's peer. Set it only when the peer is the gateway.
	TrustForwarded bool
	// Now is the clock Retry-After is counted by; nil is time.Now (an
	// Edge's Handler uses the edge's clock).
	Now func() time.Time
}

func (o HTTPOptions) withDefaults() HTTPOptions {
	if o.ScopesHeader == "" {
		o.ScopesHeader = DefaultScopesHeader
	}
	if o.TenantHeader == "" {
		o.TenantHeader = DefaultTenantHeader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

type answerKey struct{}

// AnswerFrom returns the verify answer Middleware attached to a request.
func AnswerFrom(ctx context.Context) (Answer, bool) {
	a, ok := ctx.Value(answerKey{}).(Answer)
	return a, ok
}

// Middleware lets only requests with a VALID key through to next, with the
// answer in the request context (AnswerFrom). Refusals get 401 (missing,
// malformed, unknown, expired key, suspended tenant), 403 (scope, IP), 429
// (rate limit; quota, with Retry-After: the seconds until it is whole
// again) or 503 (edge stale or Vault unreachable), with the code in
// X-Apikeys-Code.
func Middleware(v Verifier, opts HTTPOptions) func(http.Handler) http.Handler {
	opts = opts.withDefaults()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a, status := check(v, opts, r)
			setHeaders(w.Header(), a)
			if status == http.StatusTooManyRequests {
				setRetryAfter(w.Header(), a, opts.Now())
			}
			if status != http.StatusOK {
				writeJSON(w, status, a)
				return
			}
			// The upstream trusts X-Apikeys-*: none of the client's reach it.
			SetUpstreamHeaders(r.Header, a)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), answerKey{}, a)))
		})
	}
}

func check(v Verifier, opts HTTPOptions, r *http.Request) (Answer, int) {
	req := Request{APIKey: PresentedKey(r.Header.Get, opts.KeyHeader)}
	q := r.URL.Query()
	scopes := r.Header.Get(opts.ScopesHeader)
	if scopes == "" {
		scopes = q.Get("scopes")
	}
	req.RequiredScopes = ParseScopes(nil, scopes)
	req.Tenant = r.Header.Get(opts.TenantHeader)
	if req.Tenant == "" {
		req.Tenant = q.Get("tenant")
	}
	req.ClientIP = clientIP(r, opts.TrustForwarded)
	a := Check(r.Context(), v, &req)
	return a, contract.HTTPStatus(a.Code)
}

func clientIP(r *http.Request, trustForwarded bool) netip.Addr {
	if trustForwarded {
		if v := strings.TrimSpace(r.Header.Get("X-Real-IP")); v != "" {
			if a, err := netip.ParseAddr(v); err == nil {
				return a
			}
		}
		if v := r.Header.Get("X-Forwarded-For"); v != "" {
			parts := strings.Split(v, ",")
			if a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
				return a
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a
}

func setHeaders(h http.Header, a Answer) {
	for _, hv := range AnswerHeaders(a) {
		h.Set(hv.Name, hv.Value)
	}
}

// setRetryAfter tells a client refused with 429 when to come back
// (RetryAfter: the seconds to quota_resets_at, or 1 for the rate limit).
func setRetryAfter(h http.Header, a Answer, now time.Time) {
	if ra := RetryAfter(a, now); ra != "" {
		h.Set("Retry-After", ra)
	}
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Handler serves /check (any method: nginx auth_request, Envoy ext_authz
// HTTP, Traefik forwardAuth), /healthz and /metrics.
func (e *Edge) Handler(opts HTTPOptions) http.Handler {
	if opts.Now == nil {
		opts.Now = func() time.Time { return e.now() }
	}
	mux := http.NewServeMux()
	check := checkEndpoint(Middleware(e, opts)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, _ := AnswerFrom(r.Context())
		writeJSON(w, http.StatusOK, a)
	})))
	mux.Handle("/check", check)
	// Envoy's ext_authz appends the original path to its path_prefix.
	mux.Handle("/check/", check)
	mux.HandleFunc("/healthz", e.serveHealth)
	mux.Handle("/metrics", promhttp.HandlerFor(e.cfg.Registry, promhttp.HandlerOpts{}))
	return mux
}

func (e *Edge) serveHealth(w http.ResponseWriter, _ *http.Request) {
	status, code := "ok", http.StatusOK
	if e.Stale() {
		status, code = "stale", http.StatusServiceUnavailable
		if e.lastSync.Load() == 0 {
			status = "starting"
		}
	}
	age := -1.0
	if d := e.syncAge(); d >= 0 {
		age = d.Seconds()
	}
	writeJSON(w, code, map[string]interface{}{
		"status":            status,
		"seq":               e.store.currentSeq(),
		"keys":              e.store.size(),
		"sync_age_seconds":  age,
		"staleness_seconds": e.cfg.Staleness.Seconds(),
	})
}

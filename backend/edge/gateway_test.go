package edge

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// The upstream behind Middleware sees the answer's X-Apikeys-* headers and
// none of the client's, whatever their case.
func TestMiddlewareStripsClientHeaders(t *testing.T) {
	e, h := offlineEdge(t)
	k := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Role: "web", Scopes: []string{"read"}})
	var got http.Header
	handler := Middleware(e, HTTPOptions{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
	}))
	r := httptest.NewRequest(http.MethodGet, "/api", nil)
	r.Header.Set("Authorization", "Bearer "+k)
	r.Header.Set("X-Apikeys-Tenant", "globex")
	r.Header.Set("X-Apikeys-Admin", "true")
	r.Header["x-apikeys-role"] = []string{"owner"} // not canonical, as a proxy might pass it
	w := httptest.NewRecorder()
	handler.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("valid key: %d", w.Code)
	}
	want := map[string]string{"X-Apikeys-Code": "VALID", "X-Apikeys-Tenant": "acme", "X-Apikeys-Key-Id": "k1", "X-Apikeys-Scopes": "read", "X-Apikeys-Role": "web"}
	for name, vals := range got {
		if len(name) >= len(HeaderPrefix) && http.CanonicalHeaderKey(name[:len(HeaderPrefix)]) == HeaderPrefix {
			if v, ok := want[name]; !ok || len(vals) != 1 || vals[0] != v {
				t.Errorf("upstream got %s: %q", name, vals)
			}
		}
	}
	for name, v := range want {
		if got.Get(name) != v {
			t.Errorf("upstream %s = %q, want %q", name, got.Get(name), v)
		}
	}
}

// A check request with X-Apikeys-Refuse-With (nginx's auth_request) gets
// every refusal in that status and the real one in X-Apikeys-Status; a 429
// carries Retry-After either way.
func TestCheckRefuseWith(t *testing.T) {
	e, h := offlineEdge(t)
	valid := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Scopes: []string{"read"}})
	limited := addKey(t, e, h, contract.WireKey{KeyID: "k2", Tenant: "acme", RateLimit: 1, RateLimitPeriod: 3600})
	handler := e.Handler(HTTPOptions{})
	do := func(key, refuseWith, scopes string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/check", nil)
		r.Header.Set("Authorization", "Bearer "+key)
		if refuseWith != "" {
			r.Header.Set(HeaderRefuseWith, refuseWith)
		}
		if scopes != "" {
			r.Header.Set(DefaultScopesHeader, scopes)
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w
	}
	if w := do(valid, "401", ""); w.Code != 200 || w.Header().Get(HeaderStatus) != "200" {
		t.Fatalf("valid: %d %q", w.Code, w.Header().Get(HeaderStatus))
	}
	if w := do(valid, "401", "admin"); w.Code != 401 || w.Header().Get(HeaderStatus) != "403" || w.Header().Get(HeaderCode) != contract.CodeInsufficientScope {
		t.Fatalf("scope: %d %q %q", w.Code, w.Header().Get(HeaderStatus), w.Header().Get(HeaderCode))
	}
	if w := do(limited, "", ""); w.Code != 200 {
		t.Fatalf("first request under the limit: %d", w.Code)
	}
	w := do(limited, "403", "")
	if w.Code != 403 || w.Header().Get(HeaderStatus) != "429" || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("rate limited, refuse with 403: %d %v", w.Code, w.Header())
	}
	w = do(limited, "", "")
	if w.Code != 429 || w.Header().Get(HeaderStatus) != "" || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("rate limited: %d %v", w.Code, w.Header())
	}
	// Only 401 and 403 are honoured: a client cannot make a refusal a 200.
	if w := do(valid, "200", "admin"); w.Code != 403 {
		t.Fatalf("refuse with 200: %d", w.Code)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	resets := now.Add(90*time.Second + 300*time.Millisecond).Format(time.RFC3339)
	cases := []struct {
		a    Answer
		want string
	}{
		{Answer{Code: contract.CodeRateLimited}, "1"},
		{Answer{Code: contract.CodeQuotaExceeded, QuotaResetsAt: &resets}, "90"},
		{Answer{Code: contract.CodeQuotaExceeded}, "1"},
		{Answer{Code: contract.CodeNotFound}, ""},
		{Answer{Valid: true, Code: contract.CodeValid}, ""},
	}
	for _, c := range cases {
		if got := RetryAfter(c.a, now); got != c.want {
			t.Errorf("%s: %q, want %q", c.a.Code, got, c.want)
		}
	}
}

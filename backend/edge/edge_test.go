package edge

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// offlineEdge is an edge loaded by hand, its Vault at a closed port: any
// fallthrough fails, so a test sees exactly what is answered from memory.
func offlineEdge(t testing.TB) (*Edge, *keyformat.Hasher) {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = "http://127.0.0.1:1"
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Client: c, Mount: "apikeys", Staleness: time.Minute, PollWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := keyformat.NewPepper()
	h, _ := keyformat.NewHasher(secret)
	n := newStore()
	n.hasher = h
	n.tenants["acme"] = "active"
	n.tenants["globex"] = "suspended"
	e.store.replace(n)
	e.markSynced()
	return e, h
}

func addKey(t testing.TB, e *Edge, h *keyformat.Hasher, w contract.WireKey) string {
	t.Helper()
	k, err := keyformat.Generate("ak", "live")
	if err != nil {
		t.Fatal(err)
	}
	sum := h.Sum(k)
	w.EdgeHash = hex.EncodeToString(sum[:])
	if err := e.store.apply([]*contract.Change{{Seq: 1, Op: "upsert", Key: &w}}, e.store.currentSeq()+1); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEdgeAnswersFromMemory checks the edge alone, offline: every code it can
// answer from memory, a tenant the feed deleted, and a tombstoned key that
// must fall through (to an unreachable Vault here: an error, never a stale
// VALID). backend/verify_contract_test.go runs the same cases through the
// plugin and an edge synced from it and requires identical answers.
func TestEdgeAnswersFromMemory(t *testing.T) {
	e, h := offlineEdge(t)
	valid := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Role: "web", Scopes: []string{"write", "read"}})
	expired := addKey(t, e, h, contract.WireKey{KeyID: "k2", Tenant: "acme", ExpiresAt: time.Now().Add(-time.Second).Format(time.RFC3339Nano)})
	suspended := addKey(t, e, h, contract.WireKey{KeyID: "k3", Tenant: "globex"})
	cidr := addKey(t, e, h, contract.WireKey{KeyID: "k4", Tenant: "acme", AllowedCIDRs: []string{"10.0.0.0/8"}})
	limited := addKey(t, e, h, contract.WireKey{KeyID: "k5", Tenant: "acme", RateLimit: 1, RateLimitPeriod: 3600})
	orphan := addKey(t, e, h, contract.WireKey{KeyID: "k6", Tenant: "gone"})
	cases := []struct {
		name string
		req  Request
		code string
	}{
		{"valid", Request{APIKey: valid, RequiredScopes: []string{"read"}}, contract.CodeValid},
		{"malformed", Request{APIKey: valid + "x"}, contract.CodeMalformed},
		{"missing scope", Request{APIKey: valid, RequiredScopes: []string{"admin"}}, contract.CodeInsufficientScope},
		{"other tenant", Request{APIKey: valid, Tenant: "globex"}, contract.CodeNotFound},
		{"expired", Request{APIKey: expired}, contract.CodeExpired},
		{"suspended", Request{APIKey: suspended}, contract.CodeTenantSuspended},
		{"ip outside", Request{APIKey: cidr, ClientIP: netip.MustParseAddr("192.0.2.1")}, contract.CodeIPNotAllowed},
		{"no ip", Request{APIKey: cidr}, contract.CodeIPNotAllowed},
		{"ip inside", Request{APIKey: cidr, ClientIP: netip.MustParseAddr("::ffff:10.1.2.3")}, contract.CodeValid},
		{"within limit", Request{APIKey: limited}, contract.CodeValid},
		{"over limit", Request{APIKey: limited}, contract.CodeRateLimited},
		{"tenant deleted", Request{APIKey: orphan}, contract.CodeNotFound},
	}
	for _, c := range cases {
		a, err := e.Verify(context.Background(), &c.req)
		if err != nil || a.Code != c.code {
			t.Errorf("%s: %s %v, want %s", c.name, a.Code, err, c.code)
		}
	}
	// A tombstone removes the key; the next check falls through to Vault,
	// which is unreachable here: 503, never a stale VALID.
	if err := e.store.apply([]*contract.Change{{Seq: 9, Op: "delete", KeyID: "k1"}}, 9); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Verify(context.Background(), &Request{APIKey: valid}); err == nil {
		t.Fatal("revoked key answered without Vault")
	}
}

func TestStaleEdgeFailsClosed(t *testing.T) {
	e, h := offlineEdge(t)
	k := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme"})
	now := time.Now()
	e.now = func() time.Time { return now.Add(59 * time.Second) }
	if a, err := e.Verify(context.Background(), &Request{APIKey: k}); err != nil || a.Code != contract.CodeValid {
		t.Fatalf("inside the bound: %s %v", a.Code, err)
	}
	e.now = func() time.Time { return now.Add(61 * time.Second) }
	srv := httptest.NewServer(e.Handler(HTTPOptions{}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/check", nil)
	req.Header.Set("Authorization", "Bearer "+k)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(HeaderCode) != "STALE" {
		t.Fatalf("past the bound: %d %s", resp.StatusCode, resp.Header.Get(HeaderCode))
	}
	resp, err = http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz when stale: %d", resp.StatusCode)
	}
}

func TestMiddlewareHeadersAndStatus(t *testing.T) {
	e, h := offlineEdge(t)
	k := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Role: "web", Scopes: []string{"read"}, AllowedCIDRs: []string{"203.0.113.0/24"}})
	var seen Answer
	handler := Middleware(e, HTTPOptions{KeyHeader: "X-Api-Key", TrustForwarded: true})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = AnswerFrom(r.Context())
	}))
	cases := []struct {
		name   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"no key", nil, 401, "MISSING"},
		{"header key, forwarded ip", map[string]string{"X-Api-Key": k, "X-Forwarded-For": "198.51.100.1, 203.0.113.7"}, 200, contract.CodeValid},
		{"bearer, real ip", map[string]string{"Authorization": "Bearer " + k, "X-Real-IP": "203.0.113.9"}, 200, contract.CodeValid},
		{"ip not allowed", map[string]string{"Authorization": "Bearer " + k}, 403, contract.CodeIPNotAllowed},
		{"scope", map[string]string{"X-Api-Key": k, "X-Real-IP": "203.0.113.9", DefaultScopesHeader: "read,admin"}, 403, contract.CodeInsufficientScope},
		{"malformed", map[string]string{"X-Api-Key": "nope"}, 401, contract.CodeMalformed},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodPost, "/anything", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		seen = Answer{}
		handler.ServeHTTP(w, r)
		if w.Code != c.status || w.Header().Get(HeaderCode) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Header().Get(HeaderCode), c.status, c.code)
		}
		if c.status == 200 && (seen.KeyID != "k1" || w.Header().Get(HeaderTenant) != "acme" || w.Header().Get(HeaderScopes) != "read") {
			t.Errorf("%s: answer %+v headers %v", c.name, seen, w.Header())
		}
	}
}

// BenchmarkEdgeCheck is the whole /check handler on a key held in memory.
func BenchmarkEdgeCheck(b *testing.B) {
	e, h := offlineEdge(b)
	k := addKey(b, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Role: "web", Scopes: []string{"read", "write"}})
	handler := e.Handler(HTTPOptions{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest(http.MethodGet, "/check", nil)
		r.Header.Set("Authorization", "Bearer "+k)
		r.Header.Set(DefaultScopesHeader, "read")
		for pb.Next() {
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code)
			}
		}
	})
}

// BenchmarkEdgeVerify is the decision alone.
func BenchmarkEdgeVerify(b *testing.B) {
	e, h := offlineEdge(b)
	k := addKey(b, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Role: "web", Scopes: []string{"read", "write"}})
	req := &Request{APIKey: k, RequiredScopes: []string{"read"}}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if a, err := e.Verify(ctx, req); err != nil || !a.Valid {
				b.Fatal(a.Code, err)
			}
		}
	})
}

// A key the edge does not hold is answered by Vault's verify, and its
// answer passes through unchanged; only NOT_FOUND is cached.
func TestFallthroughAsksVault(t *testing.T) {
	calls := 0
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.URL.Path != "/v1/apikeys/verify" || r.Method != http.MethodPut {
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":{"valid":true,"code":"VALID","key_id":"k9","tenant":"acme","role":"web","scopes":["read"],"kind":"dynamic","in_grace":false,"expires_at":null}}`))
	}))
	defer vault.Close()
	e, _ := offlineEdge(t)
	if err := e.client.SetAddress(vault.URL); err != nil {
		t.Fatal(err)
	}
	k, _ := keyformat.Generate("ak", "live")
	for i := 0; i < 2; i++ {
		a, err := e.Verify(context.Background(), &Request{APIKey: k})
		if err != nil || !a.Valid || a.KeyID != "k9" || a.Tenant != "acme" || a.Scopes[0] != "read" {
			t.Fatalf("fallthrough: %+v %v", a, err)
		}
	}
	if calls != 2 {
		t.Fatalf("a VALID answer from Vault was cached: %d calls", calls)
	}
}

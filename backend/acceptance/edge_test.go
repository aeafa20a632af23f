package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// gatewayToken makes a token holding only the bootstrap gateway-global
// policy, rendered for this mount the way bootstrap/policies.sh does.
func gatewayToken(t *testing.T, mount string) string {
	t.Helper()
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	hcl, err := os.ReadFile(filepath.Join(root, "bootstrap/policies/apikeys-gateway-global.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	policy := strings.ReplaceAll(string(hcl), `path "apikeys/`, `path "`+mount+`/`)
	name := mount + "-gateway-global"
	if err := srv.Client.Sys().PutPolicy(name, policy); err != nil {
		t.Fatal(err)
	}
	s, err := srv.Client.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{name}, TTL: "1h", NoParent: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.Auth.ClientToken
}

type edgeFixture struct {
	t   *testing.T
	e   *engine
	ed  *edge.Edge
	srv *httptest.Server
}

func (f *edgeFixture) check(key string, hdr ...string) (int, http.Header, string) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+"/check", nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// waitCheck polls /check until it answers status with code, and returns how
// long that took.
func (f *edgeFixture) waitCheck(key string, status int, code string, limit time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	testvault.WaitFor(f.t, limit, fmt.Sprintf("/check to answer %d %s", status, code), func() error {
		if st, h, body := f.check(key); st != status || h.Get(edge.HeaderCode) != code {
			return fmt.Errorf("/check answers %d %s", st, body)
		}
		return nil
	})
	return time.Since(start)
}

func (f *edgeFixture) metric(name string, labels ...string) float64 {
	f.t.Helper()
	mfs, err := f.ed.Registry().Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func startEdge(t *testing.T, e *engine, staleness time.Duration) *edgeFixture {
	t.Helper()
	return startEdgeWith(t, e, staleness, nil)
}

// startEdgeWith is startEdge with the edge's config changed by tune first.
func startEdgeWith(t *testing.T, e *engine, staleness time.Duration, tune func(*edge.Config)) *edgeFixture {
	t.Helper()
	c, err := srv.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(gatewayToken(t, e.mount))
	cfg := edge.Config{
		Client: c, Mount: e.mount, Staleness: staleness, PollWait: time.Second, UsageInterval: time.Second,
		Logger:   hclog.New(&hclog.LoggerOptions{Name: "edge", Level: hclog.Warn, Output: os.Stderr}),
		Registry: prometheus.NewRegistry(),
	}
	if tune != nil {
		tune(&cfg)
	}
	return launchEdge(t, e, cfg)
}

// launchEdge runs an edge made from cfg until the test ends, serves its
// /check, and waits for its first snapshot.
func launchEdge(t *testing.T, e *engine, cfg edge.Config) *edgeFixture {
	t.Helper()
	ed, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ed.Run(ctx); err != nil {
			t.Errorf("edge run: %v", err)
		}
	}()
	hs := httptest.NewServer(ed.Handler(edge.HTTPOptions{}))
	t.Cleanup(func() { hs.Close(); cancel(); <-done })
	testvault.WaitFor(t, 10*time.Second, "the edge to load its snapshot", func() bool { return !ed.Stale() })
	return &edgeFixture{t: t, e: e, ed: ed, srv: hs}
}

func TestEdgeVerifiesFromMemoryAndFollowsVault(t *testing.T) {
	e := newEngine(t)
	e.acme()
	before := e.issue("acme", "web", nil) // in the snapshot
	f := startEdge(t, e, 3*time.Second)

	st, h, body := f.check(before.key)
	if st != http.StatusOK || h.Get(edge.HeaderTenant) != "acme" || h.Get(edge.HeaderKeyID) != before.id || h.Get(edge.HeaderScopes) != "read,write" {
		t.Fatalf("snapshot key: %d %v %s", st, h, body)
	}
	// The edge answers like Vault's verify, field for field.
	var got map[string]interface{}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := e.verify("verify", map[string]interface{}{"api_key": before.key})
	for _, k := range []string{"valid", "code", "key_id", "tenant", "role", "environment", "kind", "expires_at"} {
		if got[k] != want[k] {
			t.Errorf("%s: edge %v, vault %v", k, got[k], want[k])
		}
	}
	if st, h, _ := f.check(before.key, edge.DefaultScopesHeader, "admin"); st != http.StatusForbidden || h.Get(edge.HeaderCode) != "INSUFFICIENT_SCOPE" {
		t.Fatalf("missing scope: %d %s", st, h.Get(edge.HeaderCode))
	}
	if st, h, _ := f.check("acme_live_garbage"); st != http.StatusUnauthorized || h.Get(edge.HeaderCode) != "MALFORMED" {
		t.Fatalf("malformed: %d %s", st, h.Get(edge.HeaderCode))
	}
	if n := f.metric("apikeys_edge_vault_verify_total"); n != 0 {
		t.Fatalf("keys the edge holds cost %v calls to Vault", n)
	}

	// A key issued a moment ago verifies at once: from the feed if it has
	// arrived, else through Vault.
	fresh := e.issue("acme", "web", nil)
	if st, _, body := f.check(fresh.key); st != http.StatusOK {
		t.Fatalf("fresh key: %d %s", st, body)
	}
	t.Logf("fresh key answered by: local %v, vault %v",
		f.metric("apikeys_edge_verifications_total", "code", "VALID", "source", "local"),
		f.metric("apikeys_edge_verifications_total", "code", "VALID", "source", "vault"))

	// Unknown keys go to Vault once, then come from the negative cache.
	unknown := regenerateKey(t, before.key)
	calls := f.metric("apikeys_edge_vault_verify_total")
	for i := 0; i < 3; i++ {
		if st, h, _ := f.check(unknown); st != http.StatusUnauthorized || h.Get(edge.HeaderCode) != "NOT_FOUND" {
			t.Fatalf("unknown key: %d %s", st, h.Get(edge.HeaderCode))
		}
	}
	if n := f.metric("apikeys_edge_vault_verify_total") - calls; n != 1 {
		t.Fatalf("3 checks of one unknown key made %v Vault calls, want 1", n)
	}

	// Revocation through Vault's lease reaches the edge through the feed.
	if err := srv.Client.Sys().Revoke(before.lease); err != nil {
		t.Fatal(err)
	}
	t.Logf("revocation visible at the edge after %s", f.waitCheck(before.key, http.StatusUnauthorized, "NOT_FOUND", 5*time.Second))

	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "suspended"})
	t.Logf("suspension visible at the edge after %s", f.waitCheck(fresh.key, http.StatusUnauthorized, "TENANT_SUSPENDED", 5*time.Second))
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "active"})
	f.waitCheck(fresh.key, http.StatusOK, "VALID", 5*time.Second)

	// Vault stops answering the edge (its token is revoked): it keeps
	// serving from memory, then fails closed after the staleness bound.
	tok := f.ed.Token()
	if err := srv.Client.Auth().Token().RevokeOrphan(tok); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if st, _, body := f.check(fresh.key); st != http.StatusOK {
		t.Fatalf("right after losing Vault: %d %s", st, body)
	}
	f.waitCheck(fresh.key, http.StatusServiceUnavailable, "STALE", 10*time.Second)
	t.Logf("failed closed %s after losing Vault (staleness bound 3s, long-poll 1s)", time.Since(cut))
	resp, err := http.Get(f.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || f.metric("apikeys_edge_stale") != 1 {
		t.Fatalf("stale edge: healthz %d, apikeys_edge_stale %v", resp.StatusCode, f.metric("apikeys_edge_stale"))
	}
	// MALFORMED needs no Vault and stays a 401.
	if st, h, _ := f.check("acme_live_garbage"); st != http.StatusUnauthorized || h.Get(edge.HeaderCode) != "MALFORMED" {
		t.Fatalf("malformed while stale: %d %s", st, h.Get(edge.HeaderCode))
	}
}

// The mount's usage shows keys verified at the edge only: the edge reports
// them through usage/report with the gateway-global token.
func TestEdgeReportsUsage(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	f := startEdge(t, e, 10*time.Second)
	for i := 0; i < 5; i++ {
		if st, _, body := f.check(k.key); st != http.StatusOK {
			t.Fatalf("check: %d %s", st, body)
		}
	}
	if n := f.metric("apikeys_edge_vault_verify_total"); n != 0 {
		t.Fatalf("%v checks went to Vault", n)
	}
	testvault.WaitFor(t, 15*time.Second, "the key's usage to show the edge's checks", func() error {
		u := read(t, e.c, e.path("tenants/acme/usage"))
		ku, _ := u.Data["keys"].(map[string]interface{})[k.id].(map[string]interface{})
		if ku == nil || ku["last_used_at"] == nil || fmt.Sprint(ku["requests"]) != "5" {
			return fmt.Errorf("key usage %v", ku)
		}
		return nil
	})
}

// regenerateKey returns a well-formed key of the same prefix and
// environment that was never issued.
func regenerateKey(t *testing.T, key string) string {
	t.Helper()
	parts := strings.SplitN(key, "_", 3)
	k, err := keyformat.Generate(parts[0], parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEdgeLoad measures /check on loopback next to Vault's GET verify and a
// KV v2 read, same load tool and concurrency, same run. It reports the
// figures, and fails when an answer was not the expected one:
// APIKEYS_EDGE_LOAD=10s go test -run TestEdgeLoad -v ./backend/acceptance/
func TestEdgeLoad(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("APIKEYS_EDGE_LOAD"))
	if err != nil {
		t.Skip("set APIKEYS_EDGE_LOAD to a duration to run the edge load test")
	}
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	if err := srv.Client.Sys().TuneMountAllowNil(e.mount, api.TuneMountConfigInput{PassthroughRequestHeaders: &[]string{"X-Api-Key"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Logical().Write("secret/data/edge-load", map[string]interface{}{
		"data": map[string]interface{}{"key_id": k.id, "tenant": "acme", "role": "web", "scopes": "read,write"},
	}); err != nil {
		t.Fatal(err)
	}
	f := startEdge(t, e, 30*time.Second)
	targets := []struct {
		name string
		tgt  vegeta.Target
		want string
	}{
		{"edge /check", vegeta.Target{Method: "GET", URL: f.srv.URL + "/check", Header: http.Header{"Authorization": {"Bearer " + k.key}}}, `"VALID"`},
		{"vault verify GET", vegeta.Target{Method: "GET", URL: srv.Addr + "/v1/" + e.path("verify"), Header: http.Header{"X-Vault-Token": {srv.Token}, "X-Api-Key": {k.key}}}, `"VALID"`},
		{"kv-v2 read", vegeta.Target{Method: "GET", URL: srv.Addr + "/v1/secret/data/edge-load", Header: http.Header{"X-Vault-Token": {srv.Token}}}, `"key_id"`},
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}
	for _, tg := range targets {
		// An attacker runs one attack: a second one returns at once.
		attacker := func() *vegeta.Attacker {
			return vegeta.NewAttacker(vegeta.Client(client), vegeta.Workers(16), vegeta.MaxWorkers(16))
		}
		for range attacker().Attack(vegeta.NewStaticTargeter(tg.tgt), vegeta.Rate{Freq: 0}, 2*time.Second, "warmup") {
		}
		var m vegeta.Metrics
		var bad int
		var firstBad *vegeta.Result
		for r := range attacker().Attack(vegeta.NewStaticTargeter(tg.tgt), vegeta.Rate{Freq: 0}, d, tg.name) {
			m.Add(r)
			if r.Code != 200 || !strings.Contains(string(r.Body), tg.want) {
				if bad++; firstBad == nil {
					firstBad = r
				}
			}
		}
		m.Close()
		t.Logf("%-18s %8.0f req/s  p50 %-10s p99 %-10s errors %d", tg.name,
			float64(m.Requests-uint64(bad))/(m.Duration+m.Wait).Seconds(), m.Latencies.P50, m.Latencies.P99, bad)
		// A figure is only worth something if every answer was the right one.
		switch {
		case m.Requests == 0:
			t.Errorf("%s: no request completed in %s", tg.name, d)
		case bad > 0:
			body := string(firstBad.Body)
			if len(body) > 300 {
				body = body[:300] + "…"
			}
			t.Errorf("%s: %d of %d answers were not HTTP 200 with %s; first: HTTP %d, error %q, body %s",
				tg.name, bad, m.Requests, tg.want, firstBad.Code, firstBad.Error, body)
		}
	}
	t.Logf("edge fallthroughs to Vault during the run: %v", f.metric("apikeys_edge_vault_verify_total"))
}

// TestEdgeRevocationLatency revokes 100 keys through their leases, one at a
// time, and logs how long each took to be refused at the edge. It asserts
// only that every revocation arrives (within 5 s); the figures are for
// docs/edge.md.
func TestEdgeRevocationLatency(t *testing.T) {
	e := newEngine(t)
	e.acme()
	const n = 100
	keys := make([]issued, n)
	for i := range keys {
		keys[i] = e.issue("acme", "web", nil)
	}
	f := startEdge(t, e, 30*time.Second)
	lat := make([]time.Duration, n)
	for i, k := range keys {
		f.waitCheck(k.key, http.StatusOK, "VALID", 5*time.Second)
		start := time.Now()
		if err := srv.Client.Sys().Revoke(k.lease); err != nil {
			t.Fatal(err)
		}
		revoked := time.Since(start)
		lat[i] = revoked + f.waitCheck(k.key, http.StatusUnauthorized, "NOT_FOUND", 5*time.Second)
	}
	slices.Sort(lat)
	t.Logf("revoke call start → refused at the edge, %d revocations: p50 %s, p90 %s, p99 %s, max %s",
		n, lat[n/2], lat[n*9/10], lat[n*99/100], lat[n-1])
}

// An edge logging in with AppRole (role_id/secret_id) syncs and verifies
// like one given a token.
func TestEdgeAppRoleLogin(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	gatewayToken(t, e.mount) // writes the policy
	authPath := e.mount + "-approle"
	if err := srv.Client.Sys().EnableAuthWithOptions(authPath, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Client.Sys().DisableAuth(authPath) })
	write(t, srv.Client, "auth/"+authPath+"/role/edge", map[string]interface{}{
		"token_policies": e.mount + "-gateway-global", "token_ttl": "30s", "token_max_ttl": "1h",
	})
	roleID := str(t, read(t, srv.Client, "auth/"+authPath+"/role/edge/role-id"), "role_id")
	secretID := str(t, write(t, srv.Client, "auth/"+authPath+"/role/edge/secret-id", nil), "secret_id")

	c, err := api.NewClient(&api.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	ed, err := edge.New(edge.Config{
		Client: c, Mount: e.mount, AppRoleMount: authPath, RoleID: roleID, SecretID: secretID,
		Staleness: 5 * time.Second, PollWait: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ed.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testvault.WaitFor(t, 10*time.Second, "the AppRole edge to sync", func() bool { return !ed.Stale() })
	if a, err := ed.Verify(ctx, &edge.Request{APIKey: k.key}); err != nil || !a.Valid {
		t.Fatalf("AppRole edge: %+v %v", a, err)
	}
	if ed.Token() == "" || ed.Token() == srv.Token {
		t.Fatal("the edge did not use its AppRole token")
	}
}

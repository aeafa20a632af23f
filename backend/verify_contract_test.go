package backend

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// testClock is a clock a test moves by hand; the plugin's verify and the
// edge both read it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// serveMount answers the Vault HTTP API for one mount with the backend's
// own HandleRequest, so a real edge syncs from, and falls through to, the
// real plugin paths in process. It carries requests, nothing more: Vault's
// own behaviour (leases, policies) is what the acceptance tests check
// against a real server.
func serveMount(t testing.TB, b *backend, s logical.Storage, mount string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply := func(status int, body interface{}) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(body)
		}
		if r.URL.Path == "/v1/auth/token/lookup-self" {
			reply(http.StatusOK, map[string]interface{}{"data": map[string]interface{}{"ttl": 0, "renewable": false}})
			return
		}
		path, ok := strings.CutPrefix(r.URL.Path, "/v1/"+mount+"/")
		if !ok {
			reply(http.StatusNotFound, map[string]interface{}{"errors": []string{"no handler for " + r.URL.Path}})
			return
		}
		req := &logical.Request{Path: path, Storage: s, Data: map[string]interface{}{}}
		switch r.Method {
		case http.MethodGet:
			req.Operation = logical.ReadOperation
			for k, v := range r.URL.Query() {
				req.Data[k] = v[0]
			}
		case http.MethodPut, http.MethodPost:
			req.Operation = logical.UpdateOperation
			dec := json.NewDecoder(r.Body)
			dec.UseNumber()
			if err := dec.Decode(&req.Data); err != nil {
				reply(http.StatusBadRequest, map[string]interface{}{"errors": []string{err.Error()}})
				return
			}
		default:
			reply(http.StatusMethodNotAllowed, nil)
			return
		}
		resp, err := b.HandleRequest(r.Context(), req)
		var coded logical.HTTPCodedError
		switch {
		case errors.As(err, &coded):
			reply(coded.Code(), map[string]interface{}{"errors": []string{coded.Error()}})
		case err != nil:
			reply(http.StatusInternalServerError, map[string]interface{}{"errors": []string{err.Error()}})
		case resp == nil:
			w.WriteHeader(http.StatusNoContent)
		case resp.IsError():
			reply(http.StatusBadRequest, map[string]interface{}{"errors": []string{resp.Error().Error()}})
		default:
			reply(http.StatusOK, map[string]interface{}{"data": resp.Data})
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestPluginAndEdgeAnswerAlike runs every verify case through the plugin's
// verify path and through an edge synced from it, and requires the same
// answer, field for field, from both.
func TestPluginAndEdgeAnswerAlike(t *testing.T) {
	b, s := newTestBackend(t)
	start := time.Now().Truncate(time.Second)
	clock := &testClock{t: start}
	b.usage.now = clock.Now

	write := func(path string, data map[string]interface{}) *logical.Response {
		return b.do(t, s, logical.UpdateOperation, path, data)
	}
	create := func(path string, data map[string]interface{}) {
		b.do(t, s, logical.CreateOperation, path, data)
	}
	issue := func(tenant, role string, data map[string]interface{}) string {
		return write("tenants/"+tenant+"/creds/"+role, data).Data["api_key"].(string)
	}
	create("tenants/acme", map[string]interface{}{})
	create("tenants/acme/roles/web", map[string]interface{}{"scopes": "read,write", "ttl": "1h", "metadata": "tier=gold"})
	create("tenants/acme/roles/office", map[string]interface{}{"scopes": "read", "ttl": "1h", "allowed_cidrs": "10.0.0.0/8,2001:db8::/32"})
	create("tenants/acme/roles/limited", map[string]interface{}{"ttl": "1h", "rate_limit": 2, "rate_limit_period": "1h"})
	create("tenants/acme/roles/short", map[string]interface{}{"ttl": "1m"})
	create("tenants/acme/roles/metered", map[string]interface{}{"ttl": "48h", "quota": 2, "quota_period": "day"})
	web := issue("acme", "web", map[string]interface{}{"name": "ci", "metadata": "owner=ops"})
	narrow := issue("acme", "web", map[string]interface{}{"scopes": "read"})
	office := issue("acme", "office", nil)
	limited := issue("acme", "limited", nil)
	short := issue("acme", "short", nil)
	parkedResp := write("tenants/acme/creds/office", nil)
	parked, parkedID := parkedResp.Data["api_key"].(string), parkedResp.Data["key_id"].(string)
	metered := issue("acme", "metered", nil)
	revokedResp := write("tenants/acme/creds/web", nil)
	revoked := revokedResp.Data["api_key"].(string)
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+revokedResp.Data["key_id"].(string), nil)

	create("tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
	previous := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data["api_key"].(string)
	write("tenants/acme/static-keys/app/rotate", nil)
	current := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data["api_key"].(string)

	create("tenants/globex", map[string]interface{}{})
	create("tenants/globex/roles/web", map[string]interface{}{"ttl": "1h"})
	globexResp := write("tenants/globex/creds/web", nil)
	globex := globexResp.Data["api_key"].(string)
	write("tenants/globex", map[string]interface{}{"status": contract.TenantSuspended})
	staticID := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data["key_id"].(string)
	create("tenants/initech", map[string]interface{}{"quota": 1, "quota_period": "week"})
	create("tenants/initech/roles/web", map[string]interface{}{"ttl": "48h"})
	capped := issue("initech", "web", nil)
	// The next UTC midnight, when the day's quota is whole again.
	nextDay := start.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(start)

	srv := serveMount(t, b, s, "apikeys")
	cfg := api.DefaultConfig()
	cfg.Address = srv.URL
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken("in-process")
	e, err := edge.New(edge.Config{
		Client: client, Mount: "apikeys", Now: clock.Now,
		// The clock is moved by hand below; the edge must not go stale
		// for it. Nor report its quota use to the plugin meanwhile: each
		// side counts what it answered itself.
		Staleness: 24 * time.Hour, PollWait: time.Second, UsageInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	testvault.WaitFor(t, 10*time.Second, "the edge to load its snapshot", func() bool { return !e.Stale() })

	// setStatus changes a key's status on the plugin, then waits for the
	// edge to have applied the feed up to that change, so the case after
	// it asks both sides about the same state.
	setStatus := func(tenant, id, status string) func() {
		return func() {
			write("tenants/"+tenant+"/keys/"+id, map[string]interface{}{"status": status})
			head, err := b.feed.readHead(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			testvault.WaitFor(t, 10*time.Second, "the edge to apply the status change", func() bool { return edgeSeq(t, e) >= head.Seq })
		}
	}

	unknown := regenerate(t, web)
	inside, outside, v6 := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::7")
	cases := []struct {
		name string
		// before changes the mount first (and waits for the edge).
		before func()
		req    contract.Request
		at     time.Duration // from start
		want   string
	}{
		{"valid", nil, contract.Request{APIKey: web}, 0, contract.CodeValid},
		{"valid with held scopes", nil, contract.Request{APIKey: web, RequiredScopes: []string{"write", "read"}}, 0, contract.CodeValid},
		{"missing scope", nil, contract.Request{APIKey: web, RequiredScopes: []string{"admin"}}, 0, contract.CodeInsufficientScope},
		{"narrowed at issue", nil, contract.Request{APIKey: narrow, RequiredScopes: []string{"write"}}, 0, contract.CodeInsufficientScope},
		{"malformed", nil, contract.Request{APIKey: web + "x"}, 0, contract.CodeMalformed},
		{"bad checksum", nil, contract.Request{APIKey: badChecksum(web)}, 0, contract.CodeMalformed},
		{"unknown", nil, contract.Request{APIKey: unknown}, 0, contract.CodeNotFound},
		{"revoked", nil, contract.Request{APIKey: revoked}, 0, contract.CodeNotFound},
		{"tenant-scoped, own key", nil, contract.Request{APIKey: web, Tenant: "acme"}, 0, contract.CodeValid},
		{"tenant-scoped, other tenant's key", nil, contract.Request{APIKey: web, Tenant: "globex"}, 0, contract.CodeNotFound},
		{"tenant suspended", nil, contract.Request{APIKey: globex}, 0, contract.CodeTenantSuspended},
		{"no client ip with cidrs", nil, contract.Request{APIKey: office}, 0, contract.CodeIPNotAllowed},
		{"ip outside", nil, contract.Request{APIKey: office, ClientIP: outside}, 0, contract.CodeIPNotAllowed},
		{"ip inside", nil, contract.Request{APIKey: office, ClientIP: inside}, 0, contract.CodeValid},
		{"ipv6 inside", nil, contract.Request{APIKey: office, ClientIP: v6}, 0, contract.CodeValid},
		{"ip checked before scopes", nil, contract.Request{APIKey: office, ClientIP: outside, RequiredScopes: []string{"admin"}}, 0, contract.CodeIPNotAllowed},
		{"static, current", nil, contract.Request{APIKey: current}, 0, contract.CodeValid},
		{"static, previous in grace", nil, contract.Request{APIKey: previous}, 0, contract.CodeValid},
		{"within rate limit", nil, contract.Request{APIKey: limited}, 0, contract.CodeValid},
		{"refused requests spend nothing", nil, contract.Request{APIKey: limited, RequiredScopes: []string{"admin"}}, 0, contract.CodeInsufficientScope},
		{"still within rate limit", nil, contract.Request{APIKey: limited}, 0, contract.CodeValid},
		{"over rate limit", nil, contract.Request{APIKey: limited}, 0, contract.CodeRateLimited},
		{"short key before expiry", nil, contract.Request{APIKey: short}, 59 * time.Second, contract.CodeValid},
		{"expired", nil, contract.Request{APIKey: short}, 61 * time.Second, contract.CodeExpired},
		{"another tenant's expired key: the tenant is checked first", nil, contract.Request{APIKey: short, Tenant: "globex"}, 61 * time.Second, contract.CodeNotFound},
		{"static, previous past grace", nil, contract.Request{APIKey: previous}, 11 * time.Minute, contract.CodeExpired},
		{"static, current after the grace", nil, contract.Request{APIKey: current}, 11 * time.Minute, contract.CodeValid},
		{"disabled", setStatus("acme", parkedID, keyStatusDisabled), contract.Request{APIKey: parked, ClientIP: inside}, 11 * time.Minute, contract.CodeDisabled},
		{"disabled before the ip check", nil, contract.Request{APIKey: parked, ClientIP: outside, RequiredScopes: []string{"admin"}}, 11 * time.Minute, contract.CodeDisabled},
		{"disabled, another tenant's key on the tenant path", nil, contract.Request{APIKey: parked, Tenant: "globex"}, 11 * time.Minute, contract.CodeNotFound},
		{"disabled key of a suspended tenant", setStatus("globex", globexResp.Data["key_id"].(string), keyStatusDisabled), contract.Request{APIKey: globex}, 11 * time.Minute, contract.CodeTenantSuspended},
		{"re-enabled", setStatus("acme", parkedID, keyStatusActive), contract.Request{APIKey: parked, ClientIP: inside}, 11 * time.Minute, contract.CodeValid},
		{"static, parked", setStatus("acme", staticID, keyStatusDisabled), contract.Request{APIKey: current}, 11 * time.Minute, contract.CodeDisabled},
		{"static, parked and past its grace: expiry first", nil, contract.Request{APIKey: previous}, 11 * time.Minute, contract.CodeExpired},
		{"static, enabled again", setStatus("acme", staticID, keyStatusActive), contract.Request{APIKey: current}, 11 * time.Minute, contract.CodeValid},
		{"within quota", nil, contract.Request{APIKey: metered}, 11 * time.Minute, contract.CodeValid},
		{"a refused request spends none of it", nil, contract.Request{APIKey: metered, RequiredScopes: []string{"admin"}}, 11 * time.Minute, contract.CodeInsufficientScope},
		{"the last of the quota", nil, contract.Request{APIKey: metered}, 11 * time.Minute, contract.CodeValid},
		{"over quota", nil, contract.Request{APIKey: metered}, 11 * time.Minute, contract.CodeQuotaExceeded},
		{"tenant-wide quota", nil, contract.Request{APIKey: capped}, 11 * time.Minute, contract.CodeValid},
		{"over the tenant's quota", nil, contract.Request{APIKey: capped}, 11 * time.Minute, contract.CodeQuotaExceeded},
		{"quota, the next day", nil, contract.Request{APIKey: metered}, nextDay, contract.CodeValid},
	}
	for _, c := range cases {
		if c.before != nil {
			c.before()
		}
		clock.Set(start.Add(c.at))
		plugin := pluginAnswer(t, b, s, &c.req)
		fromEdge, err := e.Verify(context.Background(), &c.req)
		if err != nil {
			t.Fatalf("%s: edge: %v", c.name, err)
		}
		if plugin.Code != c.want {
			t.Errorf("%s: plugin answered %s, want %s", c.name, plugin.Code, c.want)
		}
		if strings.Contains(c.name, "quota") && (plugin.QuotaResetsAt == nil || plugin.Valid && plugin.QuotaRemaining == nil) {
			t.Errorf("%s: the answer says nothing of the quota: %+v", c.name, plugin)
		}
		pj, _ := json.Marshal(plugin)
		ej, _ := json.Marshal(fromEdge)
		if string(pj) != string(ej) {
			t.Errorf("%s: answers differ\n plugin: %s\n   edge: %s", c.name, pj, ej)
		}
	}
}

// pluginAnswer asks the plugin's verify path, the tenant-scoped one when
// the request names a tenant, and decodes its answer as a client would.
func pluginAnswer(t *testing.T, b *backend, s logical.Storage, r *contract.Request) contract.Answer {
	t.Helper()
	data := map[string]interface{}{"api_key": r.APIKey}
	path := "verify"
	if r.Tenant != "" {
		path = "tenants/" + r.Tenant + "/verify"
	}
	if len(r.RequiredScopes) > 0 {
		data["required_scopes"] = strings.Join(r.RequiredScopes, ",")
	}
	if r.ClientIP.IsValid() {
		data["client_ip"] = r.ClientIP.String()
	}
	resp := b.do(t, s, logical.UpdateOperation, path, data)
	raw, err := json.Marshal(resp.Data)
	if err != nil {
		t.Fatal(err)
	}
	var a contract.Answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// edgeSeq is the feed position the edge has applied, from its
// apikeys_edge_feed_seq gauge.
func edgeSeq(t *testing.T, e *edge.Edge) uint64 {
	t.Helper()
	mfs, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "apikeys_edge_feed_seq" && len(mf.GetMetric()) == 1 {
			return uint64(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	return 0
}

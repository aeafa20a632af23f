package backend

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// newTenantMonitored is newMonitored with acme and globex, and the guard
// of tenants' targets lifted so they can reach loopback receivers.
func newTenantMonitored(t *testing.T) (*backend, *countingStorage, *hook) {
	t.Helper()
	b, s, h := newMonitored(t)
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"tenant_webhook_private_ok": true})
	for _, tn := range []string{"acme", "globex"} {
		b.do(t, s, logical.CreateOperation, "tenants/"+tn, nil)
		b.do(t, s, logical.CreateOperation, "tenants/"+tn+"/roles/web", nil)
	}
	return b, s, h
}

func TestTenantTargetsReceiveOnlyTheirTenantsEvents(t *testing.T) {
	b, s, all := newTenantMonitored(t)
	acme, globex := newHook(t), newHook(t)
	// The same name in both tenants: two targets.
	b.do(t, s, logical.CreateOperation, "tenants/acme/notifications/alerts", map[string]interface{}{"url": acme.srv.URL, "secret": hookSecret})
	b.do(t, s, logical.CreateOperation, "tenants/globex/notifications/alerts", map[string]interface{}{"url": globex.srv.URL, "secret": hookSecret, "events": "key-issued"})
	a := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	g := b.do(t, s, logical.ReadOperation, "tenants/globex/creds/web", nil)
	b.do(t, s, logical.DeleteOperation, "tenants/globex/keys/"+g.Data["key_id"].(string), nil)

	gotA := acme.waitEvents(notify.KeyIssued, 1)
	gotG := globex.waitEvents(notify.KeyIssued, 1)
	all.waitEvents(notify.KeyIssued, 2)
	all.waitEvents(notify.KeyRevoked, 1)
	all.settle(b, s)
	if len(acme.got()) != 1 || gotA[0].Tenant != "acme" || gotA[0].Data["key_id"] != a.Data["key_id"] {
		t.Fatalf("acme's target got %+v", acme.got())
	}
	// globex's filter keeps its key-revoked out; acme's key never reaches it.
	if len(globex.got()) != 1 || gotG[0].Tenant != "globex" {
		t.Fatalf("globex's target got %+v", globex.got())
	}
	list := b.do(t, s, logical.ListOperation, "tenants/acme/notifications/", nil)
	if keys := list.Data["keys"].([]string); len(keys) != 1 || keys[0] != "alerts" {
		t.Fatalf("acme's targets %v", keys)
	}
	// The mount's list is the mount's own targets only.
	if keys := b.do(t, s, logical.ListOperation, "config/notifications/", nil).Data["keys"].([]string); len(keys) != 1 || keys[0] != "ops" {
		t.Fatalf("mount targets %v", keys)
	}
	if v := metricValue(t, b, s, "apikeys_notification_deliveries_total", map[string]string{"target": "acme.alerts", "result": "delivered"}); v != 1 {
		t.Fatalf("deliveries of acme.alerts: %v", v)
	}
}

func TestTenantTargetInputIsCheckedAndSecretNeverReturned(t *testing.T) {
	b, s := newTestBackend(t)
	b.do(t, s, logical.CreateOperation, "tenants/acme", nil)
	resp := b.do(t, s, logical.CreateOperation, "tenants/acme/notifications/gen", map[string]interface{}{"url": "https://hooks.example.com/x"})
	secret, _ := resp.Data["secret"].(string)
	if len(secret) < 32 {
		t.Fatalf("a generated secret must be returned once on create: %v", resp.Data)
	}
	r := b.do(t, s, logical.ReadOperation, "tenants/acme/notifications/gen", nil)
	if _, ok := r.Data["secret"]; ok || r.Data["secret_set"] != true || r.Data["url"] != "https://hooks.example.com/x" || r.Data["name"] != "gen" {
		t.Fatalf("read: %v", r.Data)
	}
	if _, ok := r.Data["tenants"]; ok {
		t.Fatalf("a tenant's target has no tenants filter: %v", r.Data)
	}
	if r := b.do(t, s, logical.UpdateOperation, "tenants/acme/notifications/gen", map[string]interface{}{"events": "key-issued"}); r != nil {
		t.Fatalf("update returned %v", r.Data)
	}
	tg, _ := readTenantTarget(context.Background(), s, "acme", "gen")
	if tg.Secret != secret || len(tg.Events) != 1 || tg.Name != "acme.gen" {
		t.Fatalf("stored %+v", tg)
	}
	for _, tc := range []struct {
		path  string
		data  map[string]interface{}
		field string
	}{
		{"tenants/acme/notifications/bad", map[string]interface{}{}, "url"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "http://hooks.example.com"}, "url"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "https://127.0.0.1:8443/x"}, "url"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "https://[::1]/x"}, "url"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "https://10.1.2.3/x"}, "url"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "https://169.254.169.254/latest"}, "url"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "https://u:p@x.example"}, "url"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "https://x.example", "secret": "short"}, "secret"},
		{"tenants/acme/notifications/bad", map[string]interface{}{"url": "https://x.example", "events": "key-exploded"}, "events"},
		{"tenants/acme/notifications/Bad_Name", map[string]interface{}{"url": "https://x.example"}, "name"},
		{"tenants/nobody/notifications/x", map[string]interface{}{"url": "https://x.example"}, "tenant"},
		{"tenants/Bad_T/notifications/x", map[string]interface{}{"url": "https://x.example"}, "tenant"},
	} {
		resp, err := request(b, s, logical.CreateOperation, tc.path, tc.data)
		if err == nil || resp == nil || !strings.Contains(resp.Error().Error(), tc.field) {
			t.Errorf("%s %v: want a 400 naming %s, got %v %v", tc.path, tc.data, tc.field, resp, err)
		}
	}
	// "failed" is the dead-letter list's segment, never a target.
	if resp, err := request(b, s, logical.CreateOperation, "tenants/acme/notifications/failed", map[string]interface{}{"url": "https://x.example"}); err == nil {
		t.Fatalf("a target named failed: %v", resp)
	}
	if keys, _ := s.List(context.Background(), tenantTargetPrefix("acme")); len(keys) != 1 {
		t.Fatalf("a refused target was stored: %v", keys)
	}
	// The mount's config lifts the guard: http and loopback are accepted.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"tenant_webhook_private_ok": true})
	if cfg := b.do(t, s, logical.ReadOperation, "config", nil); cfg.Data["tenant_webhook_private_ok"] != true {
		t.Fatalf("config: %v", cfg.Data)
	}
	b.do(t, s, logical.CreateOperation, "tenants/acme/notifications/local", map[string]interface{}{"url": "http://127.0.0.1:9/x"})
}

// TestTenantTargetPrivateAddressRefusedAtDial: a host name passes the
// write-time check, but what it resolves to is judged when the delivery
// connects; the refusal is a dead letter at once, and the mount's config
// lets the same delivery through.
func TestTenantTargetPrivateAddressRefusedAtDial(t *testing.T) {
	b, s, all := newMonitored(t)
	b.do(t, s, logical.CreateOperation, "tenants/acme", nil)
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/web", nil)
	h := newHook(t)
	port := h.srv.URL[strings.LastIndex(h.srv.URL, ":")+1:]
	// localhost resolves to a loopback address; https is what the guard
	// demands, so the refusal must come from the dial.
	b.do(t, s, logical.CreateOperation, "tenants/acme/notifications/alerts", map[string]interface{}{"url": "https://localhost:" + port + "/hook", "secret": hookSecret})
	b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	var ids []string
	testvault.WaitFor(t, 10*time.Second, "a dead letter of acme's target", func() bool {
		ids = listKeys(t, b, s, "tenants/acme/notifications/failed/")
		return len(ids) == 1
	})
	if !strings.HasSuffix(ids[0], ".alerts") || strings.Contains(ids[0], "acme") {
		t.Fatalf("tenant's dead-letter id %q", ids[0])
	}
	dl := b.do(t, s, logical.ReadOperation, "tenants/acme/notifications/failed/"+ids[0], nil)
	if msg := dl.Data["last_error"].(string); !strings.Contains(msg, "refused") || !strings.Contains(msg, "loopback") || dl.Data["attempts"] != 1 {
		t.Fatalf("dead letter %v", dl.Data)
	}
	all.settle(b, s)
	if len(h.got()) != 0 {
		t.Fatalf("the receiver on loopback was reached: %v", h.got())
	}
	// Allowed with the config: the same URL over http (the test receiver
	// has no TLS), and the requeued dead letter arrives.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"tenant_webhook_private_ok": true})
	b.do(t, s, logical.UpdateOperation, "tenants/acme/notifications/alerts", map[string]interface{}{"url": h.srv.URL})
	b.do(t, s, logical.UpdateOperation, "tenants/acme/notifications/failed/"+ids[0]+"/requeue", nil)
	if got := h.waitEvents(notify.KeyIssued, 1); got[0].ID != dl.Data["event_id"] {
		t.Fatalf("requeued delivery %+v, dead letter %v", got[0], dl.Data)
	}
	// Guard back on: the http URL is refused at delivery, not only at write.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"tenant_webhook_private_ok": false})
	b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	testvault.WaitFor(t, 10*time.Second, "an http delivery refused", func() bool {
		ids = listKeys(t, b, s, "tenants/acme/notifications/failed/")
		return len(ids) == 1
	})
	dl = b.do(t, s, logical.ReadOperation, "tenants/acme/notifications/failed/"+ids[0], nil)
	if msg := dl.Data["last_error"].(string); !strings.Contains(msg, "https") {
		t.Fatalf("dead letter %v", dl.Data)
	}
}

func TestTenantDeadLettersAreTheTenantsOwn(t *testing.T) {
	b, s, all := newTenantMonitored(t)
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"delivery_max_attempts": 1})
	acme, globex := newHook(t), newHook(t)
	acme.setDown(true)
	globex.setDown(true)
	b.do(t, s, logical.CreateOperation, "tenants/acme/notifications/alerts", map[string]interface{}{"url": acme.srv.URL, "secret": hookSecret})
	b.do(t, s, logical.CreateOperation, "tenants/globex/notifications/alerts", map[string]interface{}{"url": globex.srv.URL, "secret": hookSecret})
	b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	b.do(t, s, logical.ReadOperation, "tenants/globex/creds/web", nil)
	all.waitEvents(notify.KeyIssued, 2)
	testvault.WaitFor(t, 10*time.Second, "both tenants' dead letters", func() bool { return len(outbox(t, s, notify.FailedPrefix)) == 2 })

	a := listKeys(t, b, s, "tenants/acme/notifications/failed/")
	g := listKeys(t, b, s, "tenants/globex/notifications/failed/")
	if len(a) != 1 || len(g) != 1 || a[0] == g[0] {
		t.Fatalf("acme %v, globex %v", a, g)
	}
	// The mount's list shows both, under their stored ids.
	if m := listKeys(t, b, s, "notifications/failed/"); len(m) != 2 {
		t.Fatalf("mount's dead letters %v", m)
	}
	dl := b.do(t, s, logical.ReadOperation, "tenants/acme/notifications/failed/"+a[0], nil)
	if dl.Data["tenant"] != "acme" || dl.Data["target"] != "alerts" || dl.Data["id"] != a[0] || !strings.Contains(dl.Data["last_error"].(string), "503") {
		t.Fatalf("dead letter %v", dl.Data)
	}
	// globex's path never reaches acme's dead letter, whatever the id.
	for _, id := range []string{a[0], strings.Replace(a[0], ".alerts", ".acme.alerts", 1)} {
		resp, err := request(b, s, logical.ReadOperation, "tenants/globex/notifications/failed/"+id, nil)
		if resp != nil && err == nil {
			t.Fatalf("globex read acme's dead letter %s: %v", id, resp.Data)
		}
		if _, err := request(b, s, logical.UpdateOperation, "tenants/globex/notifications/failed/"+id+"/requeue", nil); err == nil {
			t.Fatalf("globex requeued %s", id)
		}
	}
	b.do(t, s, logical.DeleteOperation, "tenants/globex/notifications/failed/"+a[0], nil)
	if len(outbox(t, s, notify.FailedPrefix)) != 2 {
		t.Fatal("globex's delete reached acme's dead letter")
	}
	acme.setDown(false)
	b.do(t, s, logical.UpdateOperation, "tenants/acme/notifications/failed/"+a[0]+"/requeue", nil)
	if got := acme.waitEvents(notify.KeyIssued, 1); got[0].ID != dl.Data["event_id"] {
		t.Fatalf("requeued %+v", got[0])
	}
	b.do(t, s, logical.DeleteOperation, "tenants/globex/notifications/failed/"+g[0], nil)
	if ids := outbox(t, s, notify.FailedPrefix); len(ids) != 0 {
		t.Fatalf("dead letters left: %v", ids)
	}
	if resp, err := request(b, s, logical.ReadOperation, "tenants/acme/notifications/failed/no-dot", nil); err == nil || !strings.Contains(resp.Error().Error(), "id") {
		t.Fatalf("bad id: %v %v", resp, err)
	}
}

func TestDeletingATenantDeletesItsTargetsAndDeadLetters(t *testing.T) {
	b, s, all := newTenantMonitored(t)
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"delivery_max_attempts": 1})
	down := newHook(t)
	down.setDown(true)
	b.do(t, s, logical.CreateOperation, "tenants/acme/notifications/alerts", map[string]interface{}{"url": down.srv.URL, "secret": hookSecret})
	b.do(t, s, logical.CreateOperation, "tenants/globex/notifications/alerts", map[string]interface{}{"url": down.srv.URL, "secret": hookSecret})
	b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	b.do(t, s, logical.ReadOperation, "tenants/globex/creds/web", nil)
	all.waitEvents(notify.KeyIssued, 2)
	testvault.WaitFor(t, 10*time.Second, "two dead letters", func() bool { return len(outbox(t, s, notify.FailedPrefix)) == 2 })

	b.do(t, s, logical.DeleteOperation, "tenants/acme", map[string]interface{}{"force": true})
	all.waitEvents(notify.KeyRevoked, 1)
	all.settle(b, s)
	ctx := context.Background()
	if keys, _ := s.List(ctx, tenantTargetPrefix("acme")); len(keys) != 0 {
		t.Fatalf("acme's targets left: %v", keys)
	}
	ids := outbox(t, s, notify.FailedPrefix)
	if len(ids) != 1 || !strings.HasSuffix(ids[0], ".globex.alerts") {
		t.Fatalf("dead letters after acme's delete: %v", ids)
	}
	// A tenant of the same name starts with no targets.
	b.do(t, s, logical.CreateOperation, "tenants/acme", nil)
	if keys := listKeys(t, b, s, "tenants/acme/notifications/"); len(keys) != 0 {
		t.Fatalf("targets of the new acme: %v", keys)
	}
}

// listKeys is a LIST's keys; none is an empty list.
func listKeys(t *testing.T, b *backend, s logical.Storage, path string) []string {
	t.Helper()
	keys, _ := b.do(t, s, logical.ListOperation, path, nil).Data["keys"].([]string)
	return keys
}

func TestInvalidateOfATenantTargetDropsTheTargetCache(t *testing.T) {
	b, s := newTestBackend(t)
	b.do(t, s, logical.CreateOperation, "tenants/acme", nil)
	b.do(t, s, logical.CreateOperation, "tenants/acme/notifications/alerts", map[string]interface{}{"url": "https://hooks.example.com"})
	ctx := context.Background()
	list, err := b.notificationTargets(ctx, s)
	if err != nil || len(list) != 1 || list[0].Name != "acme.alerts" || !list[0].Wants(notify.KeyIssued, "acme") || list[0].Wants(notify.KeyIssued, "globex") {
		t.Fatalf("targets %+v %v", list, err)
	}
	b.invalidate(ctx, "tenants/acme")
	if b.targets == nil {
		t.Fatal("a tenant's entry dropped the target cache")
	}
	b.invalidate(ctx, tenantTargetPrefix("acme")+"alerts")
	if b.targets != nil {
		t.Fatal("Invalidate of a tenant's target kept the cache")
	}
}

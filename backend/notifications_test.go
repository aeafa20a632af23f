package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

const hookSecret = "test-webhook-secret-0123456789"

// hook is a loopback webhook receiver that checks every signature.
type hook struct {
	t   testing.TB
	srv *httptest.Server

	mu     sync.Mutex
	down   bool
	events []notify.Event
	bad    []string
	tries  int
}

func newHook(t testing.TB) *hook {
	h := &hook{t: t}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tries++
	if h.down {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if err := notify.Verify([]byte(hookSecret), r.Header.Get(notify.SignatureHeader), body, time.Now(), notify.DefaultTolerance); err != nil {
		h.bad = append(h.bad, err.Error())
	}
	var ev notify.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		h.bad = append(h.bad, err.Error())
	}
	if r.Header.Get(notify.IdempotencyHeader) != ev.ID || r.Header.Get(notify.EventHeader) != ev.Type {
		h.bad = append(h.bad, "headers disagree with body")
	}
	h.events = append(h.events, ev)
}

func (h *hook) setDown(down bool) {
	h.mu.Lock()
	h.down = down
	h.mu.Unlock()
}

func (h *hook) got() []notify.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bad) > 0 {
		h.t.Fatalf("receiver saw bad deliveries: %v", h.bad)
	}
	return append([]notify.Event(nil), h.events...)
}

func (h *hook) ofType(typ string) []notify.Event {
	var out []notify.Event
	for _, e := range h.got() {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// waitEvents waits until the receiver holds n events of typ.
func (h *hook) waitEvents(typ string, n int) []notify.Event {
	h.t.Helper()
	var evs []notify.Event
	testvault.WaitFor(h.t, 10*time.Second, fmt.Sprintf("%d %s events", n, typ), func() error {
		if evs = h.ofType(typ); len(evs) < n {
			return fmt.Errorf("receiver has %v", h.got())
		}
		return nil
	})
	return evs
}

// settle returns once everything b has decided to send so far has reached
// the receivers: no anomaly report in flight (raiseAnomaly counts one
// before its goroutine starts), nothing queued or in flight in the
// dispatcher, and an empty outbox (emit stores a delivery before the
// request that raised it returns; the dispatcher removes it only after the
// receiver answered). A check that an event did not arrive runs after it:
// had the event been raised, it would be here, or still in the outbox.
func (h *hook) settle(b *backend, s logical.Storage) {
	h.t.Helper()
	testvault.WaitFor(h.t, 10*time.Second, "every raised notification to be delivered", func() error {
		if n := b.anomaliesInFlight.Load(); n > 0 {
			return fmt.Errorf("%d anomaly reports in flight", n)
		}
		if n := b.dispatcher.Depth(); n > 0 {
			return fmt.Errorf("%d deliveries queued or in flight", n)
		}
		if ids := outbox(h.t, s, notify.OutboxPrefix); len(ids) > 0 {
			return fmt.Errorf("outbox holds %v", ids)
		}
		return nil
	})
}

// newMonitored is a backend initialised as an active node, with fast
// delivery retries and a webhook target pointing at a fresh receiver.
func newMonitored(t *testing.T) (*backend, *countingStorage, *hook) {
	t.Helper()
	b, s := newTestBackend(t)
	return startMonitored(t, b, s)
}

func startMonitored(t *testing.T, b *backend, s *countingStorage) (*backend, *countingStorage, *hook) {
	t.Helper()
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Cleanup(context.Background()) })
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{
		"delivery_retry_base": "20ms", "delivery_retry_max": "100ms", "delivery_timeout": "2s",
		"delivery_max_attempts": 1000, "scan_interval": "1h",
	})
	h := newHook(t)
	b.do(t, s, logical.CreateOperation, "config/notifications/ops", map[string]interface{}{"url": h.srv.URL, "secret": hookSecret})
	return b, s, h
}

func outbox(t testing.TB, s logical.Storage, prefix string) []string {
	t.Helper()
	ids, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestEveryEventTypeReachesTheWebhookSigned(t *testing.T) {
	b, s, h := newMonitored(t)
	ctx := context.Background()
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"expiry_warning": "2h"})
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"tenant_failure_threshold": 5, "anomaly_window": "1h"})

	// key-issued, then key-expiring (1h TTL inside a 2h warning window).
	key, id, _ := setupAcme(t, b, s)
	issued := h.waitEvents(notify.KeyIssued, 1)[0]
	if issued.Tenant != "acme" || issued.Data["key_id"] != id || issued.Data["kind"] != kindDynamic || issued.Data["role"] != "web" {
		t.Fatalf("key-issued %+v", issued)
	}
	// Every key event names the key by its hint too.
	hint, _ := issued.Data["hint"].(string)
	if !strings.HasPrefix(hint, "ak_live_") || !strings.Contains(hint, "…") {
		t.Fatalf("key-issued hint %q", hint)
	}
	if err := b.scanStep(ctx, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	if exp := h.waitEvents(notify.KeyExpiring, 1)[0]; exp.Data["key_id"] != id || exp.Data["in_grace"] != false || exp.Data["hint"] != hint {
		t.Fatalf("key-expiring %+v", exp)
	}

	// key-rotated (and key-issued for the static key's first key).
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
	first := h.waitEvents(notify.KeyIssued, 2)[1]
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	rot := h.waitEvents(notify.KeyRotated, 1)[0]
	if rot.Data["static_key"] != "app" || rot.Data["previous_key_id"] != first.Data["key_id"] || rot.Data["grace_ends_at"] == nil ||
		rot.Data["previous_hint"] != first.Data["hint"] || rot.Data["hint"] == "" || rot.Data["hint"] == first.Data["hint"] {
		t.Fatalf("key-rotated %+v after first key %+v", rot, first)
	}

	// key-updated: the key is disabled.
	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"status": "disabled"})
	if up := h.waitEvents(notify.KeyUpdated, 1)[0]; up.Data["key_id"] != id || up.Data["hint"] != hint || up.Data["status"] != "disabled" || fmt.Sprint(up.Data["changed"]) != "[status]" {
		t.Fatalf("key-updated %+v", up)
	}

	// key-leaked: a scanner reports the key; notify leaves it be.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"leak_action": "notify"})
	b.do(t, s, logical.UpdateOperation, "leaks/report", map[string]interface{}{"reports": []interface{}{
		map[string]interface{}{"token": key, "url": "https://github.com/o/r/blob/abc/f", "source": "content"},
	}})
	if lk := h.waitEvents(notify.KeyLeaked, 1)[0]; lk.Data["key_id"] != id || lk.Data["hint"] != hint || lk.Data["action"] != "notify" || lk.Data["source"] != "content" {
		t.Fatalf("key-leaked %+v", lk)
	}

	// key-revoked.
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	if rev := h.waitEvents(notify.KeyRevoked, 1)[0]; rev.Data["key_id"] != id || rev.Data["reason"] != "revoked" || rev.Data["hint"] != hint {
		t.Fatalf("key-revoked %+v", rev)
	}

	// rotation-failed: the rotation engine's WAL write fails.
	s.mu.Lock()
	s.failPut = framework.WALPrefix
	s.mu.Unlock()
	lock := b.tenantLock("acme")
	lock.Lock()
	e, _ := readStaticKey(ctx, s, "acme", "app")
	e.NextRotation = time.Now().Add(-time.Second)
	if err := writeStaticKey(ctx, s, e); err != nil {
		t.Fatal(err)
	}
	lock.Unlock()
	b.processDue(ctx, s, "acme/app")
	s.mu.Lock()
	s.failPut = ""
	s.mu.Unlock()
	if rf := h.waitEvents(notify.RotationFailed, 1)[0]; rf.Data["static_key"] != "app" || rf.Data["attempt"] != float64(1) {
		t.Fatalf("rotation-failed %+v", rf)
	}

	// verify-anomaly: a burst of unknown keys with acme's prefix (acme is
	// the only tenant using the mount's default prefix, so it names acme).
	if err := b.refreshPrefixes(ctx, s); err != nil {
		t.Fatal(err)
	}
	for range 12 {
		resp := b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": regenerate(t, "ak_live_x")})
		if resp.Data["code"] != contract.CodeNotFound {
			t.Fatalf("unknown key: %v", resp.Data)
		}
	}
	an := h.waitEvents(notify.VerifyAnomaly, 1)
	if len(an) != 1 || an[0].Tenant != "acme" || an[0].Data["kind"] != anomalyTenantFailures {
		t.Fatalf("verify-anomaly %+v", an)
	}

	// tenant-suspended, once.
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "suspended"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"display_name": "still suspended"})
	if sus := h.waitEvents(notify.TenantSuspended, 1); sus[0].Tenant != "acme" {
		t.Fatalf("tenant-suspended %+v", sus)
	}

	seen := map[string]bool{}
	for _, ev := range h.got() {
		seen[ev.Type] = true
	}
	for _, typ := range notify.Types {
		if !seen[typ] {
			t.Errorf("no %s event arrived", typ)
		}
	}
	h.settle(b, s)
	if n := len(h.ofType(notify.TenantSuspended)); n != 1 {
		t.Fatalf("%d tenant-suspended events, want 1", n)
	}
	if n := len(h.ofType(notify.VerifyAnomaly)); n != 1 {
		t.Fatalf("%d verify-anomaly events in one window, want 1", n)
	}
}

func TestRevokingTwiceRaisesOneKeyRevoked(t *testing.T) {
	b, s, h := newMonitored(t)
	_, id, resp := setupAcme(t, b, s)
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	h.waitEvents(notify.KeyRevoked, 1)
	// The lease ends later: the key is already gone.
	if err := revokeLease(b, s, resp); err != nil {
		t.Fatal(err)
	}
	h.settle(b, s)
	if n := len(h.ofType(notify.KeyRevoked)); n != 1 {
		t.Fatalf("%d key-revoked events for one key", n)
	}
	if u := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data; u["keys_revoked"] != uint64(1) {
		t.Fatalf("keys_revoked %v for one key", u["keys_revoked"])
	}
	u, err := readKeyUsage(context.Background(), s, "acme", id)
	if err != nil || u == nil || u.RevokedAt.IsZero() || u.RevokeReason != "revoked" {
		t.Fatalf("tombstone: %+v %v", u, err)
	}
}

func TestFiltersPickTargets(t *testing.T) {
	b, s, all := newMonitored(t)
	only := newHook(t)
	b.do(t, s, logical.CreateOperation, "config/notifications/globex-revokes", map[string]interface{}{
		"url": only.srv.URL, "secret": hookSecret, "events": "key-revoked", "tenants": "globex",
	})
	_, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	b.do(t, s, logical.CreateOperation, "tenants/globex", nil)
	b.do(t, s, logical.CreateOperation, "tenants/globex/roles/r", nil)
	g := b.do(t, s, logical.ReadOperation, "tenants/globex/creds/r", nil)
	b.do(t, s, logical.DeleteOperation, "tenants/globex/keys/"+g.Data["key_id"].(string), nil)
	all.waitEvents(notify.KeyRevoked, 2)
	got := only.waitEvents(notify.KeyRevoked, 1)
	all.settle(b, s) // the outbox holds the deliveries of both targets
	if len(only.got()) != 1 || got[0].Tenant != "globex" {
		t.Fatalf("filtered target got %+v", only.got())
	}
}

func TestTargetSecretIsNeverReturnedAndInputIsChecked(t *testing.T) {
	b, s := newTestBackend(t)
	resp := b.do(t, s, logical.CreateOperation, "config/notifications/gen", map[string]interface{}{"url": "https://hooks.example.com/x"})
	secret, _ := resp.Data["secret"].(string)
	if len(secret) < 32 {
		t.Fatalf("a generated secret must be returned once on create: %v", resp.Data)
	}
	for _, p := range []string{"config/notifications/gen"} {
		r := b.do(t, s, logical.ReadOperation, p, nil)
		if _, ok := r.Data["secret"]; ok || r.Data["secret_set"] != true {
			t.Fatalf("read exposes the secret: %v", r.Data)
		}
	}
	// An update that sets no secret keeps it, and returns nothing.
	if r := b.do(t, s, logical.UpdateOperation, "config/notifications/gen", map[string]interface{}{"events": "key-issued"}); r != nil {
		t.Fatalf("update returned %v", r.Data)
	}
	tg, _ := readTarget(context.Background(), s, "gen")
	if tg.Secret != secret || len(tg.Events) != 1 {
		t.Fatalf("stored %+v", tg)
	}
	for _, tc := range []struct {
		data  map[string]interface{}
		field string
	}{
		{map[string]interface{}{}, "url"},
		{map[string]interface{}{"url": "ftp://x"}, "url"},
		{map[string]interface{}{"url": "https://u:p@x.example"}, "url"},
		{map[string]interface{}{"url": "https://x.example", "secret": "short"}, "secret"},
		{map[string]interface{}{"url": "https://x.example", "events": "key-issued,key-exploded"}, "events"},
		{map[string]interface{}{"url": "https://x.example", "tenants": "Not_A_Name"}, "tenants"},
	} {
		resp, err := request(b, s, logical.CreateOperation, "config/notifications/bad", tc.data)
		if err == nil || resp == nil || !strings.Contains(resp.Error().Error(), tc.field) {
			t.Errorf("%v: want a 400 naming %s, got %v %v", tc.data, tc.field, resp, err)
		}
	}
	if tg, _ := readTarget(context.Background(), s, "bad"); tg != nil {
		t.Fatal("a refused target was stored")
	}
	if resp, err := request(b, s, logical.CreateOperation, "config/notifications/Bad_Name", map[string]interface{}{"url": "https://x.example"}); err == nil || !strings.Contains(resp.Error().Error(), "name") {
		t.Fatalf("bad name: %v %v", resp, err)
	}
}

func TestDeadLettersAreListedReadableAndRequeued(t *testing.T) {
	b, s, h := newMonitored(t)
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"delivery_max_attempts": 2})
	h.setDown(true)
	_, id, _ := setupAcme(t, b, s)
	testvault.WaitFor(t, 10*time.Second, "a dead letter", func() bool { return len(outbox(t, s, notify.FailedPrefix)) > 0 })
	list := b.do(t, s, logical.ListOperation, "notifications/failed/", nil)
	ids := list.Data["keys"].([]string)
	if len(ids) != 1 || !strings.HasSuffix(ids[0], ".ops") {
		t.Fatalf("dead letters %v", ids)
	}
	dl := b.do(t, s, logical.ReadOperation, "notifications/failed/"+ids[0], nil)
	ev := dl.Data["event"].(map[string]interface{})
	if dl.Data["attempts"] != 2 || !strings.Contains(dl.Data["last_error"].(string), "503") || ev["type"] != notify.KeyIssued || ev["data"].(map[string]interface{})["key_id"] != id {
		t.Fatalf("dead letter %v", dl.Data)
	}
	if v := metricValue(t, b, s, "apikeys_notification_dead_letters", nil); v != 1 {
		t.Fatalf("dead letters gauge %v", v)
	}
	if v := metricValue(t, b, s, "apikeys_notification_dead_lettered_total", map[string]string{"target": "ops"}); v != 1 {
		t.Fatalf("dead-lettered counter %v", v)
	}
	h.setDown(false)
	b.do(t, s, logical.UpdateOperation, "notifications/failed/"+ids[0]+"/requeue", nil)
	if got := h.waitEvents(notify.KeyIssued, 1); got[0].ID != ev["id"] {
		t.Fatalf("requeued event has a new id: %v vs %v", got[0].ID, ev["id"])
	}
	if len(outbox(t, s, notify.FailedPrefix)) != 0 {
		t.Fatal("requeue left the dead letter")
	}
	if resp, err := request(b, s, logical.UpdateOperation, "notifications/failed/nope.ops/requeue", nil); err == nil {
		t.Fatalf("requeue of nothing: %v", resp)
	}
}

// TestRestartLosesNoNotification: events raised while the receiver is down
// survive a Clean (step-down, restart) and are delivered by the next
// backend over the same storage, each once with its original id.
func TestRestartLosesNoNotification(t *testing.T) {
	b1, s := newTestBackend(t)
	b1, s, h := startMonitored(t, b1, s)
	h.setDown(true)
	key, id, _ := setupAcme(t, b1, s)
	b1.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	_ = key
	b1.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "suspended"})
	testvault.WaitFor(t, 10*time.Second, "three delivery attempts", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.tries >= 3
	})
	queued := outbox(t, s, notify.OutboxPrefix)
	if len(queued) != 3 {
		t.Fatalf("outbox holds %d deliveries, want 3 (issued, revoked, suspended)", len(queued))
	}
	b1.Cleanup(context.Background())

	h.setDown(false)
	b2, _ := newTestBackendOn(t, s)
	if err := b2.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	defer b2.Cleanup(context.Background())
	for _, typ := range []string{notify.KeyIssued, notify.KeyRevoked, notify.TenantSuspended} {
		h.waitEvents(typ, 1)
	}
	testvault.WaitFor(t, 10*time.Second, "the outbox to drain", func() bool { return len(outbox(t, s, notify.OutboxPrefix)) == 0 })
	ids := map[string]string{}
	for _, ev := range h.got() {
		if prev, ok := ids[ev.Type]; ok && prev != ev.ID {
			t.Fatalf("%s delivered with two ids", ev.Type)
		}
		ids[ev.Type] = ev.ID
	}
	t.Logf("queued %d deliveries before the restart, delivered %d after", len(queued), len(h.got()))
}

func TestInvalidateDropsExactlyItsEntries(t *testing.T) {
	b, s := newTestBackend(t)
	ctx := context.Background()
	b.do(t, s, logical.CreateOperation, "config/notifications/a", map[string]interface{}{"url": "https://a.example", "secret": hookSecret})
	if list, _ := b.notificationTargets(ctx, s); len(list) != 1 {
		t.Fatal("target not loaded")
	}
	// Written behind this node's back (another node), then invalidated.
	if err := putJSON(ctx, s, notifyTargetPrefix+"b", "target", &notify.Target{Name: "b", URL: "https://b.example", Secret: hookSecret}); err != nil {
		t.Fatal(err)
	}
	b.invalidate(ctx, usageTenantPrefix+"acme")
	if list, _ := b.notificationTargets(ctx, s); len(list) != 1 {
		t.Fatal("an unrelated key dropped the target cache")
	}
	b.invalidate(ctx, notifyTargetPrefix+"b")
	if list, _ := b.notificationTargets(ctx, s); len(list) != 2 {
		t.Fatalf("targets after invalidate: %d", len(list))
	}

	// config/monitoring changed elsewhere: reloaded without a request.
	if err := putJSON(ctx, s, monitorConfigPath, "monitoring config", &monitorConfig{AnomalyWindow: time.Hour, TenantFailureThreshold: 7, IPFailureThreshold: 1, KeySpikeFactor: 2, KeySpikeMinimum: 1, ScanBatch: 1, FlushMaxWrites: 1, DeliveryMaxAttempts: 1, DeliveryRetryBase: time.Second, DeliveryRetryMax: time.Second, DeliveryTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	b.invalidate(ctx, monitorConfigPath)
	testvault.WaitFor(t, 5*time.Second, "config/monitoring to reload", func() bool { return b.usage.cfg.Load().TenantFailureThreshold == 7 })
}

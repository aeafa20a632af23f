package backend

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

func verifyReq(t testing.TB, b *backend, s logical.Storage, data map[string]interface{}) string {
	t.Helper()
	return b.do(t, s, logical.UpdateOperation, "verify", data).Data["code"].(string)
}

func TestVerifyUsageShowsInKeyAndTenantUsage(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/batch", map[string]interface{}{"scopes": "read"})
	batch := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/batch", nil).Data["api_key"].(string)

	before := time.Now().UTC().Truncate(time.Second)
	for range 4 {
		if c := verifyReq(t, b, s, map[string]interface{}{"api_key": key}); c != contract.CodeValid {
			t.Fatal(c)
		}
	}
	verifyReq(t, b, s, map[string]interface{}{"api_key": batch})
	verifyReq(t, b, s, map[string]interface{}{"api_key": key, "required_scopes": "admin"})
	// A tenant-scoped verify of an unknown key counts against that tenant.
	verifyReq(t, b, s, map[string]interface{}{"api_key": regenerate(t, key)})
	b.do(t, s, logical.UpdateOperation, "tenants/acme/verify", map[string]interface{}{"api_key": regenerate(t, key)})

	kr := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil)
	if kr.Data["verify_count"] != uint64(4) {
		t.Fatalf("verify_count %v (a refused verify must not count)", kr.Data["verify_count"])
	}
	last, err := time.Parse(time.RFC3339, kr.Data["last_used_at"].(string))
	if err != nil || last.Before(before) {
		t.Fatalf("last_used_at %v %v", kr.Data["last_used_at"], err)
	}

	u := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data
	byCode := u["verify_by_code"].(map[string]uint64)
	byRole := u["verify_by_role"].(map[string]uint64)
	if byCode[contract.CodeValid] != 5 || byCode[contract.CodeInsufficientScope] != 1 || byCode[contract.CodeNotFound] != 1 || byRole["web"] != 4 || byRole["batch"] != 1 {
		t.Fatalf("by code %v, by role %v", byCode, byRole)
	}
	if u["keys_active"] != 2 || u["keys_issued"] != uint64(2) || u["keys_revoked"] != uint64(0) || u["verify_count"] != uint64(7) {
		t.Fatalf("usage %v", u)
	}
	keys := u["keys"].(map[string]interface{})
	if keys[id].(map[string]interface{})["verify_count"] != uint64(4) {
		t.Fatalf("per key %v", keys)
	}

	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	u = b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data
	if u["keys_active"] != 1 || u["keys_revoked"] != uint64(1) {
		t.Fatalf("after revoke %v", u)
	}
	if resp, err := request(b, s, logical.ReadOperation, "tenants/nobody/usage", nil); err == nil || !strings.Contains(resp.Error().Error(), "nobody") {
		t.Fatalf("unknown tenant: %v %v", resp, err)
	}
}

func TestVerifyRequestStillWritesNothing(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, _ := setupAcme(t, b, s)
	s.reset()
	for range 20 {
		verifyReq(t, b, s, map[string]interface{}{"api_key": key})
		verifyReq(t, b, s, map[string]interface{}{"api_key": regenerate(t, key), "client_ip": "10.0.0.1"})
	}
	if s.writes() != 0 {
		t.Fatalf("verify wrote storage %d times: %v", s.writes(), s.putKeys)
	}
}

func TestUsageFlushIsBoundedAndSurvivesRestart(t *testing.T) {
	b, s := newTestBackend(t)
	ctx := context.Background()
	// An active node: Clean flushes what it counted.
	if err := b.Initialize(ctx, &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	setupAcme(t, b, s)
	var keys, ids []string
	for range 6 {
		r := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
		keys, ids = append(keys, r.Data["api_key"].(string)), append(ids, r.Data["key_id"].(string))
	}
	for i, k := range keys {
		for range i + 1 {
			verifyReq(t, b, s, map[string]interface{}{"api_key": k})
		}
	}
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"flush_max_writes": 4})
	s.reset()
	b.periodicMonitoring(ctx, &logical.Request{Storage: s})
	var usageWrites int
	for _, k := range s.putKeys {
		if strings.HasPrefix(k, usagePrefix) {
			usageWrites++
		}
	}
	if usageWrites != 4 {
		t.Fatalf("one flush wrote %d usage entries, want flush_max_writes=4: %v", usageWrites, s.putKeys)
	}
	// Three more flushes drain the rest (1 tenant + 6 keys, each its
	// history and its totals: 14 writes).
	for range 3 {
		b.periodicMonitoring(ctx, &logical.Request{Storage: s})
	}
	s.reset()
	b.periodicMonitoring(ctx, &logical.Request{Storage: s})
	if s.puts != 0 {
		t.Fatalf("a flush with nothing new wrote %v", s.putKeys)
	}

	// Counted after the last periodic flush, saved by Clean.
	verifyReq(t, b, s, map[string]interface{}{"api_key": keys[0]})
	b.Cleanup(ctx)

	b2, _ := newTestBackendOn(t, s)
	for i, id := range ids {
		want := uint64(i + 1)
		if i == 0 {
			want++
		}
		got := b2.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["verify_count"]
		if got != want {
			t.Errorf("key %d after restart: verify_count %v, want %d", i, got, want)
		}
	}
	u := b2.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data
	if u["verify_count"] != uint64(22) || u["keys_issued"] != uint64(7) {
		t.Fatalf("tenant usage after restart: %v", u)
	}
	// The restarted node keeps counting on top of the stored totals.
	verifyReq(t, b2, s, map[string]interface{}{"api_key": keys[5]})
	if got := b2.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+ids[5], nil).Data["verify_count"]; got != uint64(7) {
		t.Fatalf("after restart and one more verify: %v", got)
	}
}

// TestStandbySeesActiveFlushAfterInvalidate: a standby (another backend
// over the same storage) adds its own node-local counts to what the active
// node flushed, and re-reads the total when Invalidate says it changed.
func TestStandbySeesActiveFlushAfterInvalidate(t *testing.T) {
	active, s := newTestBackend(t)
	ctx := context.Background()
	key, id, _ := setupAcme(t, active, s)
	standby, _ := newTestBackendOn(t, s)
	verifyReq(t, standby, s, map[string]interface{}{"api_key": key})
	if got := standby.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["verify_count"]; got != uint64(1) {
		t.Fatalf("standby's own count: %v", got)
	}
	for range 3 {
		verifyReq(t, active, s, map[string]interface{}{"api_key": key})
	}
	active.flushUsage(ctx, s)
	// Until told, the standby keeps the base it read.
	if got := standby.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["verify_count"]; got != uint64(1) {
		t.Fatalf("before invalidate: %v", got)
	}
	standby.invalidate(ctx, usageKeyPath("acme", id))
	if got := standby.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["verify_count"]; got != uint64(4) {
		t.Fatalf("after invalidate: %v, want 3 flushed + 1 local", got)
	}
	standby.invalidate(ctx, usageTenantPrefix+"acme")
	u := standby.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data
	if u["verify_count"] != uint64(4) {
		t.Fatalf("tenant usage on the standby: %v", u["verify_count"])
	}
}

func TestGatewayReportsCountPerKeyAndRefuseForeignKeys(t *testing.T) {
	b, s := newTestBackend(t)
	_, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/globex", nil)
	b.do(t, s, logical.CreateOperation, "tenants/globex/roles/r", nil)
	gid := b.do(t, s, logical.ReadOperation, "tenants/globex/creds/r", nil).Data["key_id"].(string)

	resp := b.do(t, s, logical.UpdateOperation, "usage/report", map[string]interface{}{"reports": []interface{}{
		map[string]interface{}{"tenant": "acme", "key_id": id, "requests": json.Number("10"), "errors": 1, "upstream_latency_ms_sum": 250.5, "upstream_latency_ms_max": 80},
		map[string]interface{}{"tenant": "acme", "key_id": id, "requests": 10, "upstream_latency_ms_sum": 149.5, "upstream_latency_ms_max": 120},
		// globex's key booked on acme: refused, not counted.
		map[string]interface{}{"tenant": "acme", "key_id": gid, "requests": 1000},
	}})
	if resp.Data["accepted"] != 2 || len(resp.Data["rejected"].([]interface{})) != 1 {
		t.Fatalf("report answer %v", resp.Data)
	}
	k := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data
	if k["requests"] != uint64(20) || k["errors"] != uint64(1) || k["upstream_latency_ms_avg"] != 20.0 || k["upstream_latency_ms_max"] != 120.0 {
		t.Fatalf("key figures %v", k)
	}
	g := b.do(t, s, logical.ReadOperation, "tenants/globex/usage", nil).Data["gateway"].(map[string]interface{})
	if g["requests"] != uint64(0) {
		t.Fatalf("globex got acme's report: %v", g)
	}
	a := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data["gateway"].(map[string]interface{})
	if a["requests"] != uint64(20) || a["upstream_latency_ms_avg"] != 20.0 {
		t.Fatalf("acme gateway figures %v", a)
	}

	for _, tc := range []struct {
		reports interface{}
		want    string
	}{
		{[]interface{}{}, "reports"},
		{[]interface{}{"x"}, "reports[0]"},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": "nope", "requests": 1}}, "reports[0].key_id"},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": id, "requests": 1}, map[string]interface{}{"tenant": "acme", "key_id": id, "requests": -1}}, "reports[1].requests"},
		{[]interface{}{map[string]interface{}{"tenant": "Bad", "key_id": id}}, "reports[0].tenant"},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": id, "requests": 1, "errors": 2}}, "reports[0].errors"},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": id, "upstream_latency_ms_sum": "fast"}}, "reports[0].upstream_latency_ms_sum"},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": id, "verify_by_code": "VALID"}}, "reports[0].verify_by_code: must be an object"},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": id, "verify_by_code": map[string]interface{}{"NOT_FOUND": 1}}}, `reports[0].verify_by_code: "NOT_FOUND" is not`},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": id, "verify_by_code": map[string]interface{}{"BOGUS": 1}}}, `reports[0].verify_by_code: "BOGUS" is not`},
		{[]interface{}{map[string]interface{}{"tenant": "acme", "key_id": id, "verify_by_code": map[string]interface{}{"EXPIRED": -1}}}, "reports[0].verify_by_code.EXPIRED"},
	} {
		resp, err := request(b, s, logical.UpdateOperation, "usage/report", map[string]interface{}{"reports": tc.reports})
		if err == nil || !strings.Contains(resp.Error().Error(), tc.want) {
			t.Errorf("%v: want a 400 naming %s, got %v", tc.reports, tc.want, err)
		}
	}
	big := make([]interface{}, contract.MaxUsageReports+1)
	for i := range big {
		big[i] = map[string]interface{}{"tenant": "acme", "key_id": id, "requests": 1}
	}
	if _, err := request(b, s, logical.UpdateOperation, "usage/report", map[string]interface{}{"reports": big}); err == nil {
		t.Fatal("an oversized batch was accepted")
	}
	// Nothing of the refused batches was counted.
	if k := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data; k["requests"] != uint64(20) {
		t.Fatalf("refused batches counted: %v", k["requests"])
	}
}

// fakeClock stands in for the usage clock: it starts at the real time and
// then moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestStaleKeysAreReportedAndRevokedWhenTheRoleSaysSo(t *testing.T) {
	b, s, h := newMonitored(t)
	ctx := context.Background()
	// Set before the first request: only requests (and what they start)
	// read the usage clock.
	clk := newFakeClock()
	b.usage.now = clk.now
	setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/temp", map[string]interface{}{"revoke_unused_after": "2h"})
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/roles/temp", nil).Data["revoke_unused_after"]; got != int64(7200) {
		t.Fatalf("role revoke_unused_after %v", got)
	}
	used := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/temp", nil).Data
	unused := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/temp", nil).Data
	verifyReq(t, b, s, map[string]interface{}{"api_key": used["api_key"]})

	// Ten minutes on the used key is used again (a use within a second of
	// the last one would not move last_used_at): the other two keys have
	// been unused for ten minutes, the used one not at all.
	clk.advance(10 * time.Minute)
	verifyReq(t, b, s, map[string]interface{}{"api_key": used["api_key"]})
	u := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", map[string]interface{}{"stale_after": 300}).Data
	stale := u["stale_keys"].([]string)
	if u["keys_stale"] != 2 || len(stale) != 2 || contains(stale, used["key_id"].(string)) || !contains(stale, unused["key_id"].(string)) {
		t.Fatalf("stale keys %v (used key %v)", stale, used["key_id"])
	}

	// Three hours on: the used key was used 3h ago too, so both go; an
	// hour on, neither.
	if err := b.scanStep(ctx, s, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	h.settle(b, s)
	if n := len(h.ofType(notify.KeyRevoked)); n != 0 {
		t.Fatalf("revoked before revoke_unused_after: %d", n)
	}
	if err := b.scanStep(ctx, s, time.Now().Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	revoked := h.waitEvents(notify.KeyRevoked, 2)
	for _, ev := range revoked {
		if ev.Data["reason"] != "unused" || ev.Data["revoke_unused_after"] != float64(7200) || ev.Data["unused_since"] == nil {
			t.Fatalf("key-revoked %+v", ev)
		}
	}
	ids := b.do(t, s, logical.ListOperation, "tenants/acme/keys/", nil).Data["keys"].([]string)
	if len(ids) != 1 {
		t.Fatalf("keys left %v: only the web role's key must stay", ids)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestKeyExpiringOnceAndForStaticGrace(t *testing.T) {
	b, s, h := newMonitored(t)
	ctx := context.Background()
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"expiry_warning": "30m"})
	setupAcme(t, b, s) // 1h TTL: outside the window now
	if err := b.scanStep(ctx, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.scanStep(ctx, s, time.Now().Add(40*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Delivered and out of the outbox before the scans below, so a warning
	// raised again cannot hide in it under the same delivery id.
	h.settle(b, s)
	// Again later in the window, and after a "restart" of the scan: once.
	if err := b.scanStep(ctx, s, time.Now().Add(45*time.Minute)); err != nil {
		t.Fatal(err)
	}
	b2, _ := newTestBackendOn(t, s)
	if err := b2.scanStep(ctx, s, time.Now().Add(50*time.Minute)); err != nil {
		t.Fatal(err)
	}
	// b2 runs no dispatcher: had it raised the event again, the delivery
	// would stay in the outbox, and settle would say so.
	h.settle(b, s)
	if evs := h.ofType(notify.KeyExpiring); len(evs) != 1 || evs[0].Data["expires_in_seconds"].(float64) > 1200 {
		t.Fatalf("key-expiring events %+v", evs)
	}
	u := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data
	if u["keys_expiring"] != 0 {
		t.Fatalf("nothing expires within 30m yet: %v", u["keys_expiring"])
	}

	// A static key's rotated-out key expires when its grace ends.
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "24h", "grace_period": "10m"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	if err := b.scanStep(ctx, s, time.Now()); err != nil {
		t.Fatal(err)
	}
	evs := h.waitEvents(notify.KeyExpiring, 2)
	if g := evs[1]; g.Data["in_grace"] != true || g.Data["kind"] != kindStatic {
		t.Fatalf("grace key-expiring %+v", g)
	}
	if u := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data; u["keys_expiring"] != 1 {
		t.Fatalf("usage keys_expiring %v", u["keys_expiring"])
	}
}

func TestScanIsBoundedPerStep(t *testing.T) {
	b, s := newTestBackend(t)
	ctx := context.Background()
	setupAcme(t, b, s)
	for range 9 {
		b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	}
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"scan_batch": 4})
	// No expiry warnings: they would add usage reads to what is counted.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"expiry_warning": 0})
	var steps []int
	for range 3 {
		s.reset()
		if err := b.scanStep(ctx, s, time.Now()); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		steps = append(steps, s.gets)
		s.mu.Unlock()
	}
	// 4 keys cost 8 reads (index entry and record); a pass start adds a few.
	for i, g := range steps {
		if g > 4*2+8 {
			t.Fatalf("step %d read %d entries for 4 keys: the scan is not bounded (%v)", i, g, steps)
		}
	}
	if b.scan.ti != 1 || b.scan.keys != nil {
		t.Fatalf("after 3 steps of 4 the pass over 10 keys must be done: %+v", b.scan)
	}
}

func TestMonitoringConfigValidation(t *testing.T) {
	b, s := newTestBackend(t)
	for _, tc := range []struct {
		data  map[string]interface{}
		field string
	}{
		{map[string]interface{}{"anomaly_window": "soon"}, "anomaly_window"},
		{map[string]interface{}{"anomaly_window": "10ms"}, "anomaly_window"},
		{map[string]interface{}{"tenant_failure_threshold": 0}, "tenant_failure_threshold"},
		{map[string]interface{}{"key_spike_factor": 1}, "key_spike_factor"},
		{map[string]interface{}{"delivery_retry_base": "10s", "delivery_retry_max": "1s"}, "delivery_retry_max"},
		{map[string]interface{}{"scan_batch": "many"}, "scan_batch"},
	} {
		resp, err := request(b, s, logical.UpdateOperation, "config/monitoring", tc.data)
		if err == nil || !strings.Contains(resp.Error().Error(), tc.field) {
			t.Errorf("%v: want a 400 naming %s, got %v", tc.data, tc.field, err)
		}
	}
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"delivery_timeout": "250ms", "stale_after": "3d"})
	r := b.do(t, s, logical.ReadOperation, "config/monitoring", nil).Data
	if r["delivery_timeout"] != 0.25 || r["stale_after"] != int64(3*86400) || r["tenant_failure_threshold"] != 100 {
		t.Fatalf("read back %v", r)
	}
	if b.dispatcher.Policy().Timeout != 250*time.Millisecond {
		t.Fatal("a write must apply to the dispatcher at once")
	}
}

// Verifies counted while a key's usage record is being rewritten (here by
// the expiry warning) stay counted.
func TestUsageCountsDuringARecordWriteAreKept(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	for range 10 {
		if c := verifyReq(t, b, s, map[string]interface{}{"api_key": key}); c != contract.CodeValid {
			t.Fatal(c)
		}
	}
	e, err := readTenantKey(context.Background(), s, "acme", id)
	if err != nil || e == nil {
		t.Fatalf("key record: %v %v", e, err)
	}
	var once sync.Once
	hs := &hookStorage{Storage: s, beforePut: func(_ context.Context, k string) error {
		if k == usageKeyPath("acme", id) {
			once.Do(func() {
				for range 5 {
					if c := verifyReq(t, b, s, map[string]interface{}{"api_key": key}); c != contract.CodeValid {
						t.Error(c)
					}
				}
			})
		}
		return nil
	}}
	if err := b.warnExpiring(context.Background(), hs, e, time.Now()); err != nil {
		t.Fatal(err)
	}
	kr := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil)
	if kr.Data["verify_count"] != uint64(15) {
		t.Fatalf("verify_count %v, want 15: verifies counted during the write were lost", kr.Data["verify_count"])
	}
}

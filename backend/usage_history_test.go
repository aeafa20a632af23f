package backend

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// historyEnv is a mount with tenant acme, role web (keys live 30 days, so
// the clock can move) and one key, on a clock the test moves.
type historyEnv struct {
	b       *backend
	s       *countingStorage
	clock   *testClock
	key, id string
}

// historyStart is tomorrow 10:30 UTC: a fixed hour and day to count in,
// after the keys' real issue time.
func historyStart() time.Time {
	return historyDay(time.Now()).Add(24*time.Hour + 10*time.Hour + 30*time.Minute)
}

func newHistoryEnv(t *testing.T) *historyEnv {
	t.Helper()
	b, s := newTestBackend(t)
	e := &historyEnv{b: b, s: s, clock: &testClock{t: historyStart()}}
	b.usage.now = e.clock.Now
	b.do(t, s, logical.CreateOperation, "tenants/acme", map[string]interface{}{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/web", map[string]interface{}{"scopes": "read,write", "ttl": "720h"})
	e.key, e.id = e.issue(t)
	return e
}

func (e *historyEnv) issue(t *testing.T) (key, id string) {
	t.Helper()
	r := e.b.do(t, e.s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	return r.Data["api_key"].(string), r.Data["key_id"].(string)
}

func (e *historyEnv) verify(t *testing.T, n int, data map[string]interface{}) {
	t.Helper()
	for range n {
		e.b.do(t, e.s, logical.UpdateOperation, "verify", data)
	}
}

func (e *historyEnv) report(t *testing.T, id string, requests, errs int, sumMs, maxMs float64) {
	t.Helper()
	e.b.do(t, e.s, logical.UpdateOperation, "usage/report", map[string]interface{}{"reports": []interface{}{
		map[string]interface{}{"tenant": "acme", "key_id": id, "requests": requests, "errors": errs,
			"upstream_latency_ms_sum": sumMs, "upstream_latency_ms_max": maxMs},
	}})
}

func (e *historyEnv) flush(t *testing.T) int {
	t.Helper()
	n, err := e.b.usage.flush(context.Background(), e.s, 1000, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// stored is a second backend over the same storage and clock: it has
// counted nothing, so what it reads is what storage holds.
func (e *historyEnv) stored(t *testing.T) *historyEnv {
	t.Helper()
	b2, _ := newTestBackendOn(t, e.s)
	b2.usage.now = e.clock.Now
	return &historyEnv{b: b2, s: e.s, clock: e.clock, key: e.key, id: e.id}
}

// buckets reads a history path and returns its buckets by start.
func (e *historyEnv) buckets(t *testing.T, path string, data map[string]interface{}) (map[string]map[string]interface{}, []interface{}) {
	t.Helper()
	r := e.b.do(t, e.s, logical.ReadOperation, path, data)
	list := r.Data["buckets"].([]interface{})
	out := map[string]map[string]interface{}{}
	prev := ""
	for _, b := range list {
		m := b.(map[string]interface{})
		start := m["start"].(string)
		if start <= prev {
			t.Fatalf("buckets not sorted: %s after %s", start, prev)
		}
		prev = start
		out[start] = m
	}
	return out, list
}

func hourOf(t time.Time) string { return t.UTC().Truncate(time.Hour).Format(time.RFC3339) }
func dayOf(t time.Time) string  { return historyDay(t).Format(time.RFC3339) }

// wantBucket checks a bucket's codes (absent codes must be absent) and
// gateway figures; requests < 0 skips those.
func wantBucket(t *testing.T, what string, b map[string]interface{}, codes map[string]uint64, requests, errs int, avg, mx interface{}) {
	t.Helper()
	if b == nil {
		t.Fatalf("%s: no bucket", what)
	}
	got := b["verify_by_code"].(map[string]uint64)
	var total uint64
	for c, n := range codes {
		total += n
		if got[c] != n {
			t.Errorf("%s: %s = %d, want %d (%v)", what, c, got[c], n, got)
		}
	}
	if len(got) != len(codes) || b["verify_count"] != total {
		t.Errorf("%s: verify_by_code %v, verify_count %v; want %v", what, got, b["verify_count"], codes)
	}
	if requests >= 0 && (b["requests"] != uint64(requests) || b["errors"] != uint64(errs) ||
		b["upstream_latency_ms_avg"] != avg || b["upstream_latency_ms_max"] != mx) {
		t.Errorf("%s: gateway figures %v %v %v %v, want %d %d %v %v", what, b["requests"], b["errors"],
			b["upstream_latency_ms_avg"], b["upstream_latency_ms_max"], requests, errs, avg, mx)
	}
}

func TestUsageHistoryKeepsHourAndDayBucketsPerKeyAndTenant(t *testing.T) {
	e := newHistoryEnv(t)
	other, _ := e.issue(t)
	t0 := e.clock.Now()
	e.verify(t, 3, map[string]interface{}{"api_key": e.key})
	e.verify(t, 1, map[string]interface{}{"api_key": e.key, "required_scopes": "admin"})
	e.verify(t, 1, map[string]interface{}{"api_key": other})
	e.b.do(t, e.s, logical.UpdateOperation, "tenants/acme/verify", map[string]interface{}{"api_key": regenerate(t, e.key)})
	e.report(t, e.id, 10, 1, 500, 80)
	e.flush(t)

	t1 := t0.Add(40 * time.Minute) // 11:10
	e.clock.Set(t1)
	e.verify(t, 2, map[string]interface{}{"api_key": e.key})
	e.report(t, e.id, 4, 0, 100, 30)
	e.flush(t)

	for _, env := range []*historyEnv{e, e.stored(t)} {
		keyPath := "tenants/acme/keys/" + e.id + "/usage/history"
		hours, list := env.buckets(t, keyPath, nil)
		if len(list) != defaultHistoryHours || list[len(list)-1].(map[string]interface{})["start"] != hourOf(t1) {
			t.Fatalf("default hourly range: %d buckets ending %v", len(list), list[len(list)-1])
		}
		wantBucket(t, "key 10:00", hours[hourOf(t0)], map[string]uint64{contract.CodeValid: 3, contract.CodeInsufficientScope: 1}, 10, 1, 50.0, 80.0)
		wantBucket(t, "key 11:00", hours[hourOf(t1)], map[string]uint64{contract.CodeValid: 2}, 4, 0, 25.0, 30.0)
		empty := 0
		for start, b := range hours {
			if start != hourOf(t0) && start != hourOf(t1) {
				wantBucket(t, "key "+start, b, nil, 0, 0, nil, nil)
				empty++
			}
		}
		if empty != defaultHistoryHours-2 {
			t.Fatalf("%d empty buckets", empty)
		}

		days, list := env.buckets(t, keyPath, map[string]interface{}{"granularity": "day"})
		if len(list) != defaultHistoryDays {
			t.Fatalf("default daily range: %d buckets", len(list))
		}
		wantBucket(t, "key day", days[dayOf(t0)], map[string]uint64{contract.CodeValid: 5, contract.CodeInsufficientScope: 1}, 14, 1, 42.857, 80.0)

		tenant, _ := env.buckets(t, "tenants/acme/usage/history", nil)
		wantBucket(t, "tenant 10:00", tenant[hourOf(t0)], map[string]uint64{contract.CodeValid: 4, contract.CodeInsufficientScope: 1, contract.CodeNotFound: 1}, 10, 1, 50.0, 80.0)
		wantBucket(t, "tenant 11:00", tenant[hourOf(t1)], map[string]uint64{contract.CodeValid: 2}, 4, 0, 25.0, 30.0)
		tdays, _ := env.buckets(t, "tenants/acme/usage/history", map[string]interface{}{"granularity": "day", "from": dayOf(t0)[:10]})
		if len(tdays) != 1 {
			t.Fatalf("from today: %d buckets", len(tdays))
		}
		wantBucket(t, "tenant day", tdays[dayOf(t0)], map[string]uint64{contract.CodeValid: 6, contract.CodeInsufficientScope: 1, contract.CodeNotFound: 1}, 14, 1, 42.857, 80.0)
	}
}

// TestUsageCountsTheVerifiesAnEdgeReports: the answers an edge gave
// without Vault (usage/report's verify_by_code) count in the key's and the
// tenant's verify figures and history like Vault's own, on a node that has
// never seen the key verify (its role comes from the key's record).
func TestUsageCountsTheVerifiesAnEdgeReports(t *testing.T) {
	e := newHistoryEnv(t)
	e.verify(t, 2, map[string]interface{}{"api_key": e.key})
	e.flush(t)
	n := e.stored(t)
	t0 := n.clock.Now()
	n.b.do(t, n.s, logical.UpdateOperation, "usage/report", map[string]interface{}{"reports": []interface{}{
		map[string]interface{}{"tenant": "acme", "key_id": e.id, "requests": 5,
			"verify_by_code": map[string]interface{}{contract.CodeValid: 5, contract.CodeDisabled: 2, contract.CodeInsufficientScope: 1}},
	}})
	n.flush(t)
	for _, env := range []*historyEnv{n, n.stored(t)} {
		hours, _ := env.buckets(t, "tenants/acme/keys/"+e.id+"/usage/history", nil)
		wantBucket(t, "key", hours[hourOf(t0)], map[string]uint64{contract.CodeValid: 7, contract.CodeDisabled: 2, contract.CodeInsufficientScope: 1}, 5, 0, 0.0, 0.0)
		tenant, _ := env.buckets(t, "tenants/acme/usage/history", nil)
		wantBucket(t, "tenant", tenant[hourOf(t0)], map[string]uint64{contract.CodeValid: 7, contract.CodeDisabled: 2, contract.CodeInsufficientScope: 1}, 5, 0, 0.0, 0.0)
		k := env.b.do(t, env.s, logical.ReadOperation, "tenants/acme/keys/"+e.id, nil).Data
		if k["verify_count"] != uint64(7) {
			t.Errorf("key verify_count %v, want 7 (2 by Vault, 5 by the edge)", k["verify_count"])
		}
		u := env.b.do(t, env.s, logical.ReadOperation, "tenants/acme/usage", nil).Data
		byRole, _ := u["verify_by_role"].(map[string]uint64)
		byCode, _ := u["verify_by_code"].(map[string]uint64)
		if byRole["web"] != 7 || byCode[contract.CodeValid] != 7 || byCode[contract.CodeDisabled] != 2 {
			t.Errorf("tenant usage: verify_by_role %v, verify_by_code %v", u["verify_by_role"], u["verify_by_code"])
		}
	}
}

// TestUsageHistoryCountsLandInTheBucketOfTheirFlush pins the hour
// boundary: verifies at 10:59 flushed at 11:00 are 11:00's. Before the
// flush, a read on the active node shows them in the current bucket, where
// the flush will put them.
func TestUsageHistoryCountsLandInTheBucketOfTheirFlush(t *testing.T) {
	e := newHistoryEnv(t)
	at := historyDay(e.clock.Now()).Add(10*time.Hour + 59*time.Minute + 30*time.Second)
	e.clock.Set(at)
	e.verify(t, 4, map[string]interface{}{"api_key": e.key})
	path := "tenants/acme/keys/" + e.id + "/usage/history"
	live, _ := e.buckets(t, path, nil)
	wantBucket(t, "10:00 before the flush", live[hourOf(at)], map[string]uint64{contract.CodeValid: 4}, -1, 0, nil, nil)

	e.clock.Set(at.Add(time.Minute)) // 11:00:30
	e.flush(t)
	for _, env := range []*historyEnv{e, e.stored(t)} {
		hours, _ := env.buckets(t, path, nil)
		wantBucket(t, "10:00", hours[hourOf(at)], nil, -1, 0, nil, nil)
		wantBucket(t, "11:00", hours[hourOf(at.Add(time.Minute))], map[string]uint64{contract.CodeValid: 4}, -1, 0, nil, nil)
	}
	// The same across midnight: the new day's.
	midnight := historyDay(at).Add(24*time.Hour - 10*time.Second)
	e.clock.Set(midnight)
	e.verify(t, 2, map[string]interface{}{"api_key": e.key})
	e.clock.Set(midnight.Add(time.Minute))
	e.flush(t)
	days, _ := e.stored(t).buckets(t, path, map[string]interface{}{"granularity": "day"})
	wantBucket(t, "day before midnight", days[dayOf(at)], map[string]uint64{contract.CodeValid: 4}, -1, 0, nil, nil)
	wantBucket(t, "day after midnight", days[dayOf(midnight.Add(time.Minute))], map[string]uint64{contract.CodeValid: 2}, -1, 0, nil, nil)
}

// TestUsageHistoryFailedFlushLosesAndDoublesNothing fails each write of a
// flush in turn (a storage hiccup), counts more, flushes again, and checks
// that storage holds every count exactly once; then fails every history
// write for a while (storage down), and checks the same.
func TestUsageHistoryFailedFlushLosesAndDoublesNothing(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, e *historyEnv, what string, valid uint64, requests int) {
		t.Helper()
		st := e.stored(t)
		days, _ := st.buckets(t, "tenants/acme/keys/"+e.id+"/usage/history", map[string]interface{}{"granularity": "day", "from": dayOf(e.clock.Now())[:10]})
		wantBucket(t, what+": key", days[dayOf(e.clock.Now())], map[string]uint64{contract.CodeValid: valid, contract.CodeRateLimited: 1}, requests, 0, 1.0, 1.0)
		tdays, _ := st.buckets(t, "tenants/acme/usage/history", map[string]interface{}{"granularity": "day", "from": dayOf(e.clock.Now())[:10]})
		wantBucket(t, what+": tenant", tdays[dayOf(e.clock.Now())], map[string]uint64{contract.CodeValid: valid, contract.CodeRateLimited: 1}, requests, 0, 1.0, 1.0)
	}
	for n := 1; ; n++ {
		e := newHistoryEnv(t)
		e.b.do(t, e.s, logical.CreateOperation, "tenants/acme/roles/web", map[string]interface{}{"rate_limit": 3, "rate_limit_period": "1h"})
		e.key, e.id = e.issue(t)
		e.verify(t, 4, map[string]interface{}{"api_key": e.key}) // 3 VALID, 1 RATE_LIMITED
		e.report(t, e.id, 2, 0, 2, 1)
		e.s.reset()
		e.s.failAt, e.s.failOnce = n, true
		_, err := e.b.usage.flush(ctx, e.s, 1000, e.clock.Now())
		e.s.failAt, e.s.failOnce = 0, false
		if err == nil {
			if n == 1 {
				t.Fatal("the flush wrote nothing")
			}
			t.Logf("a flush of one tenant and one key: %d writes, each failed in turn", n-1)
			break
		}
		// More counted between the failed flush and the next.
		e.report(t, e.id, 1, 0, 1, 1)
		e.flush(t)
		check(t, e, fmt.Sprintf("write %d failed", n), 3, 3)
	}

	e := newHistoryEnv(t)
	e.b.do(t, e.s, logical.CreateOperation, "tenants/acme/roles/web", map[string]interface{}{"rate_limit": 3, "rate_limit_period": "1h"})
	e.key, e.id = e.issue(t)
	e.verify(t, 4, map[string]interface{}{"api_key": e.key})
	e.s.failPut = usageHistoryPrefix
	for range 3 {
		e.report(t, e.id, 1, 0, 1, 1)
		if _, err := e.b.usage.flush(ctx, e.s, 1000, e.clock.Now()); err == nil {
			t.Fatal("a flush with history writes failing succeeded")
		}
	}
	e.s.failPut = ""
	e.flush(t)
	check(t, e, "after three failed flushes", 3, 3)
	// And nothing is booked twice by a flush after that.
	if n := e.flush(t); n != 0 {
		t.Fatalf("a flush with nothing new wrote %d entries", n)
	}
	check(t, e, "after one more flush", 3, 3)
}

// TestUsageHistoryFlushStaysWithinMaxWrites: a tenant or key that counted
// takes two writes, and is never split between flushes; a key that was
// only refused changed its history, not its totals.
func TestUsageHistoryFlushStaysWithinMaxWrites(t *testing.T) {
	e := newHistoryEnv(t)
	ctx := context.Background()
	var ids []string
	for range 3 {
		k, id := e.issue(t)
		ids = append(ids, id)
		e.verify(t, 1, map[string]interface{}{"api_key": k})
	}
	e.verify(t, 1, map[string]interface{}{"api_key": e.key, "required_scopes": "admin"})
	e.flush(t)
	e.verify(t, 1, map[string]interface{}{"api_key": e.key, "required_scopes": "admin"})
	e.s.reset()
	n, err := e.b.usage.flush(ctx, e.s, 2, e.clock.Now())
	if err != nil || n != 2 {
		t.Fatalf("flush: %d writes, %v", n, err)
	}
	// The tenant took both: its history and its totals.
	if len(e.s.putKeys) != 2 || e.s.putKeys[0] != tenantHistoryPrefix("acme")+historyDay(e.clock.Now()).Format(historyDayFormat) || e.s.putKeys[1] != usageTenantPrefix+"acme" {
		t.Fatalf("first flush wrote %v", e.s.putKeys)
	}
	e.s.reset()
	if n, err := e.b.usage.flush(ctx, e.s, 2, e.clock.Now()); err != nil || n != 1 {
		t.Fatalf("second flush: %d writes, %v", n, err)
	}
	// The refused key: its history only.
	if len(e.s.putKeys) != 1 || e.s.putKeys[0] != keyHistoryPrefix("acme", e.id)+historyDay(e.clock.Now()).Format(historyDayFormat) {
		t.Fatalf("second flush wrote %v", e.s.putKeys)
	}
	if n := e.flush(t); n != 0 {
		t.Fatalf("a flush with nothing new wrote %d", n)
	}

	// The tenant and three keys counted: eight writes, at most three per
	// flush, and no entry split, so two per flush.
	for _, id := range ids {
		e.report(t, id, 1, 0, 0, 0)
	}
	for i, want := range []int{2, 2, 2, 2, 0} {
		e.s.reset()
		n, err := e.b.usage.flush(ctx, e.s, 3, e.clock.Now())
		if err != nil || n != want {
			t.Fatalf("flush %d: %d writes (%v), want %d: %v", i, n, err, want, e.s.putKeys)
		}
	}
	e.b.do(t, e.s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"flush_max_writes": 2})
	if r, _ := request(e.b, e.s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"flush_max_writes": 1}); r == nil || !strings.Contains(r.Error().Error(), "flush_max_writes") {
		t.Fatalf("flush_max_writes=1: %v", r)
	}
}

func TestUsageHistoryTidyDropsOldHoursThenOldDays(t *testing.T) {
	e := newHistoryEnv(t)
	ctx := context.Background()
	d0 := e.clock.Now()
	e.verify(t, 2, map[string]interface{}{"api_key": e.key})
	e.flush(t)
	e.clock.Set(d0.Add(24 * time.Hour))
	e.verify(t, 3, map[string]interface{}{"api_key": e.key})
	e.flush(t)
	entry := func(day time.Time) *usageHistoryDay {
		t.Helper()
		h, err := getJSON[usageHistoryDay](ctx, e.s, keyHistoryPrefix("acme", e.id)+historyDay(day).Format(historyDayFormat), "history")
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	tidy := func(now time.Time, limit int) {
		t.Helper()
		if err := e.b.tidyHistory(ctx, e.s, now, func() error { return nil }, limit); err != nil {
			t.Fatal(err)
		}
	}

	// Two days and a half later, d0's last hour (23:00) is 49.5 h old:
	// its hours go, its total stays; d0+1's hours stay.
	now := historyDay(d0).Add(3*24*time.Hour + 30*time.Minute)
	e.clock.Set(now)
	tidy(now, 1000)
	if h := entry(d0); h == nil || len(h.Hours) != 0 || h.Day.Codes[contract.CodeValid] != 2 {
		t.Fatalf("d0 after tidy: %+v", h)
	}
	if h := entry(d0.Add(24 * time.Hour)); h == nil || len(h.Hours) != 1 {
		t.Fatalf("d0+1 after tidy: %+v", h)
	}
	days, _ := e.buckets(t, "tenants/acme/keys/"+e.id+"/usage/history", map[string]interface{}{"granularity": "day", "from": dayOf(d0)[:10]})
	wantBucket(t, "d0", days[dayOf(d0)], map[string]uint64{contract.CodeValid: 2}, -1, 0, nil, nil)
	// Hourly reads reach back 48 hours, no further.
	if r, _ := request(e.b, e.s, logical.ReadOperation, "tenants/acme/usage/history", map[string]interface{}{"from": hourOf(now.Add(-49 * time.Hour))}); r == nil || !strings.Contains(r.Error().Error(), "from") {
		t.Fatalf("hourly read before the window: %v", r)
	}
	// The same tidy again: the mark says it is done, it reads and writes
	// no history.
	e.s.reset()
	tidy(now, 1000)
	if e.s.writes() != 0 || e.s.gets != 1 {
		t.Fatalf("a second tidy wrote %d and read %d entries", e.s.writes(), e.s.gets)
	}

	// usage_retention (90 days) on: d0 goes, d0+1 (its hours dropped
	// since) stays until the day after.
	now = d0.Add(91 * 24 * time.Hour)
	e.clock.Set(now)
	e.b.tidy.status = tidyStatus{}
	tidy(now, 1000)
	if entry(d0) != nil || entry(d0.Add(24*time.Hour)) == nil || len(entry(d0.Add(24*time.Hour)).Hours) != 0 {
		t.Fatalf("after retention: d0 %+v, d0+1 %+v", entry(d0), entry(d0.Add(24*time.Hour)))
	}
	if st := e.b.tidy.status; st.HistoryRemoved != 2 || st.HistoryCompacted != 2 { // the key's and the tenant's
		t.Fatalf("tidy status %+v", st)
	}
	if r, _ := request(e.b, e.s, logical.ReadOperation, "tenants/acme/usage/history", map[string]interface{}{"granularity": "day", "from": dayOf(d0)[:10]}); r == nil || !strings.Contains(r.Error().Error(), "from") {
		t.Fatalf("daily read before retention: %v", r)
	}

	// Bounded: with many days due, one run writes at most its limit, and
	// the next goes on.
	for i := 0; i < 5; i++ {
		if err := putJSON(ctx, e.s, keyHistoryPrefix("acme", e.id)+historyDay(now.Add(-time.Duration(200+i)*24*time.Hour)).Format(historyDayFormat), "h", &usageHistoryDay{}); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(24 * time.Hour)
	e.s.reset()
	tidy(now, 3)
	if e.s.writes() != 3 {
		t.Fatalf("a run limited to 3 writes made %d", e.s.writes())
	}
	tidy(now, 3)
	tidy(now, 3)
	names, _ := e.s.List(ctx, keyHistoryPrefix("acme", e.id))
	if len(names) != 0 {
		t.Fatalf("left after three bounded runs: %v", names)
	}
}

// TestRevokedKeyHistoryGoesWithItsTombstone: what a key counted up to its
// revocation is booked by the revocation, readable while its tombstone is
// kept, and removed with it; a deleted tenant's history goes with its
// totals.
func TestRevokedKeyHistoryGoesWithItsTombstone(t *testing.T) {
	e := newHistoryEnv(t)
	ctx := context.Background()
	e.b.do(t, e.s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"usage_retention": "4d"})
	e.verify(t, 2, map[string]interface{}{"api_key": e.key})
	e.flush(t)
	e.verify(t, 1, map[string]interface{}{"api_key": e.key}) // not flushed when revoked
	e.b.do(t, e.s, logical.DeleteOperation, "tenants/acme/keys/"+e.id, nil)
	path := "tenants/acme/keys/" + e.id + "/usage/history"
	hours, _ := e.stored(t).buckets(t, path, nil)
	wantBucket(t, "revoked key", hours[hourOf(e.clock.Now())], map[string]uint64{contract.CodeValid: 3}, -1, 0, nil, nil)

	// Another tenant cannot read it, nor an id that never was.
	e.b.do(t, e.s, logical.CreateOperation, "tenants/globex", map[string]interface{}{})
	for _, p := range []string{"tenants/globex/keys/" + e.id + "/usage/history", "tenants/acme/keys/00000000-0000-0000-0000-000000000000/usage/history"} {
		if r, err := request(e.b, e.s, logical.ReadOperation, p, nil); r != nil || err != nil {
			t.Fatalf("%s: %v %v, want not found", p, r, err)
		}
	}

	// Past usage_retention the scan removes tombstone and history.
	if err := e.b.scanStep(ctx, e.s, e.clock.Now().Add(5*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if names, _ := e.s.List(ctx, keyHistoryPrefix("acme", e.id)); len(names) != 0 {
		t.Fatalf("history left: %v", names)
	}
	if r, err := request(e.b, e.s, logical.ReadOperation, path, nil); r != nil || err != nil {
		t.Fatalf("history of a key gone: %v %v", r, err)
	}

	if names, _ := e.s.List(ctx, tenantHistoryPrefix("acme")); len(names) != 1 {
		t.Fatalf("tenant history: %v", names)
	}
	e.b.do(t, e.s, logical.DeleteOperation, "tenants/acme", map[string]interface{}{"force": true})
	if err := e.b.scanStep(ctx, e.s, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if names, _ := e.s.List(ctx, tenantHistoryPrefix("acme")); len(names) != 0 {
		t.Fatalf("a deleted tenant's history left: %v", names)
	}
}

func TestUsageHistoryPathsRefuseBadInputNamingTheField(t *testing.T) {
	e := newHistoryEnv(t)
	now := e.clock.Now()
	keyPath := "tenants/acme/keys/" + e.id + "/usage/history"
	for _, c := range []struct {
		name, path string
		data       map[string]interface{}
		want       string
	}{
		{"granularity", keyPath, map[string]interface{}{"granularity": "week"}, "invalid granularity"},
		{"from not a time", keyPath, map[string]interface{}{"from": "yesterday"}, "invalid from"},
		{"to not a time", keyPath, map[string]interface{}{"to": "2026-13-01"}, "invalid to"},
		{"from before the hourly window", keyPath, map[string]interface{}{"from": hourOf(now.Add(-49 * time.Hour))}, "invalid from"},
		{"to before the hourly window", keyPath, map[string]interface{}{"to": hourOf(now.Add(-49 * time.Hour))}, "invalid to"},
		{"from in the future", keyPath, map[string]interface{}{"from": hourOf(now.Add(2 * time.Hour))}, "invalid from"},
		{"from after to", keyPath, map[string]interface{}{"from": hourOf(now.Add(-2 * time.Hour)), "to": hourOf(now.Add(-3 * time.Hour))}, "invalid from"},
		{"from before retention", "tenants/acme/usage/history", map[string]interface{}{"granularity": "day", "from": now.Add(-91 * 24 * time.Hour).Format(historyDayFormat)}, "invalid from"},
		{"tenant name", "tenants/ACME/usage/history", nil, "invalid tenant"},
		{"unknown tenant", "tenants/nobody/usage/history", nil, "unknown tenant"},
		{"key id", "tenants/acme/keys/nope/usage/history", nil, "invalid key_id"},
	} {
		r, _ := request(e.b, e.s, logical.ReadOperation, c.path, c.data)
		if r == nil || !r.IsError() || !strings.Contains(r.Error().Error(), c.want) {
			t.Errorf("%s: %v, want a 400 with %q", c.name, r, c.want)
		}
	}

	for _, c := range []struct {
		name string
		data map[string]interface{}
		n    int
		from string
	}{
		{"a date is its whole day", map[string]interface{}{"from": now.Add(-24 * time.Hour).Format(historyDayFormat), "to": now.Add(-24 * time.Hour).Format(historyDayFormat)}, 24, dayOf(now.Add(-24 * time.Hour))},
		{"a time is its bucket", map[string]interface{}{"from": now.Add(-130 * time.Minute).Format(time.RFC3339)}, 3, hourOf(now.Add(-130 * time.Minute))},
		{"to is at most now", map[string]interface{}{"from": hourOf(now), "to": now.Add(48 * time.Hour).Format(time.RFC3339)}, 1, hourOf(now)},
		{"the whole hourly window", map[string]interface{}{"from": hourOf(now.Add(-48 * time.Hour))}, 49, hourOf(now.Add(-48 * time.Hour))},
		{"the whole daily window", map[string]interface{}{"granularity": "day", "from": now.Add(-90 * 24 * time.Hour).Format(historyDayFormat)}, 91, dayOf(now.Add(-90 * 24 * time.Hour))},
		{"a default range stops at the oldest kept", map[string]interface{}{"to": hourOf(now.Add(-40 * time.Hour))}, 9, hourOf(now.Add(-48 * time.Hour))},
	} {
		r := e.b.do(t, e.s, logical.ReadOperation, keyPath, c.data)
		if n := len(r.Data["buckets"].([]interface{})); n != c.n || r.Data["from"] != c.from {
			t.Errorf("%s: %d buckets from %v, want %d from %s", c.name, n, r.Data["from"], c.n, c.from)
		}
	}

	// A long usage_retention still reads at most a year per request.
	e.b.do(t, e.s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"usage_retention": "800d"})
	r, _ := request(e.b, e.s, logical.ReadOperation, keyPath, map[string]interface{}{"granularity": "day", "from": now.Add(-400 * 24 * time.Hour).Format(historyDayFormat)})
	if r == nil || !strings.Contains(r.Error().Error(), "at most 366") {
		t.Fatalf("400 days in one read: %v", r)
	}
}

// TestUsageHistoryStorageBound measures the bytes of a key's history
// entries, as docs/monitoring.md states them: a day with all 24 hours, and
// a day after tidy dropped its hours, for a busy key (every code a key can
// be refused with, nine-digit counts, gateway figures) and a typical one.
func TestUsageHistoryStorageBound(t *testing.T) {
	size := func(d *usageHistoryDay) int {
		e, err := logical.StorageEntryJSON("x", d)
		if err != nil {
			t.Fatal(err)
		}
		return len(e.Value)
	}
	busy := usageBucket{Codes: map[string]uint64{}, Requests: 999_999_999, Errors: 999_999_999, LatencyMicro: 999_999_999_999_999, LatencyMax: 999_999_999}
	for _, c := range verifyCodes {
		if c != contract.CodeMalformed && c != contract.CodeNotFound { // never about a found key
			busy.Codes[c] = 999_999_999
		}
	}
	typical := usageBucket{Codes: map[string]uint64{contract.CodeValid: 36_000, contract.CodeRateLimited: 120}, Requests: 36_000, Errors: 40, LatencyMicro: 1_800_000_000, LatencyMax: 900_000}
	for _, c := range []struct {
		name              string
		b                 usageBucket
		maxHours, maxDays int
	}{
		{"busy", busy, 7500, 310},
		{"typical", typical, 3000, 120},
	} {
		full := &usageHistoryDay{Day: c.b, Hours: map[int]*usageBucket{}}
		for h := range 24 {
			full.Hours[h] = &c.b
		}
		hours, day := size(full), size(&usageHistoryDay{Day: c.b})
		// 90 days of usage_retention: 91 daily entries, of which the last
		// three (today, yesterday, the day before: 48 hours reach into it)
		// hold their hours, and a fourth until the hourly tidy drops them.
		total := 4*hours + 87*day
		t.Logf("%s key: a day with its hours %d bytes, without %d bytes; 90 days' history %d bytes", c.name, hours, day, total)
		if hours > c.maxHours || day > c.maxDays {
			t.Errorf("%s: %d and %d bytes, over the %d and %d docs/monitoring.md states", c.name, hours, day, c.maxHours, c.maxDays)
		}
	}
}

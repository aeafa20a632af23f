package backend

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// quotaMount is a backend with tenant acme on a hand-moved clock, set at
// at (15:04:05 today, UTC, when zero). Keys are issued by the wall clock,
// so the test days are today and the next few.
func quotaMount(t *testing.T, at time.Time) (*backend, *countingStorage, *testClock) {
	t.Helper()
	b, s := newTestBackend(t)
	if at.IsZero() {
		at = today().Add(15*time.Hour + 4*time.Minute + 5*time.Second)
	}
	clock := &testClock{t: at}
	b.usage.now = clock.Now
	b.do(t, s, logical.CreateOperation, "tenants/acme", map[string]interface{}{})
	return b, s, clock
}

// today is 00:00 UTC of the current day.
func today() time.Time { return time.Now().UTC().Truncate(24 * time.Hour) }

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func verifyData(t *testing.T, b *backend, s logical.Storage, key string) map[string]interface{} {
	t.Helper()
	return b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": key}).Data
}

// expectQuota checks one verify answer: its code, and quota_remaining
// (-1: absent) and quota_resets_at.
func expectQuota(t *testing.T, d map[string]interface{}, code string, remaining int64, resets string) {
	t.Helper()
	if d["code"] != code {
		t.Fatalf("code %v, want %s (%v)", d["code"], code, d)
	}
	if got, ok := d["quota_remaining"]; remaining < 0 && ok || remaining >= 0 && got != remaining {
		t.Fatalf("quota_remaining %v, want %d (%v)", got, remaining, d)
	}
	if got, ok := d["quota_resets_at"]; resets == "" && ok || resets != "" && got != resets {
		t.Fatalf("quota_resets_at %v, want %q", got, resets)
	}
}

func issue(t *testing.T, b *backend, s logical.Storage, tenant, role string) (key, id string) {
	t.Helper()
	d := b.do(t, s, logical.ReadOperation, "tenants/"+tenant+"/creds/"+role, nil).Data
	return d["api_key"].(string), d["key_id"].(string)
}

func TestQuotaDayAllowsFiveThenRefuses(t *testing.T) {
	b, s, clock := quotaMount(t, time.Time{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"quota": 5, "quota_period": "day", "ttl": "72h"})
	role := b.do(t, s, logical.ReadOperation, "tenants/acme/roles/metered", nil).Data
	if role["quota"] != int64(5) || role["quota_period"] != "day" {
		t.Fatalf("role read: %v", role)
	}
	key, _ := issue(t, b, s, "acme", "metered")
	midnight := rfc(today().AddDate(0, 0, 1))
	for i := int64(4); i >= 0; i-- {
		expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, i, midnight)
	}
	over := verifyData(t, b, s, key)
	expectQuota(t, over, contract.CodeQuotaExceeded, -1, midnight)
	if over["valid"] != false || len(over) != 3 {
		t.Fatalf("a refusal says valid, code and quota_resets_at only: %v", over)
	}
	// Refusals spend nothing, and a refused scope check is not counted.
	b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": key, "required_scopes": "admin"})

	// The last second of the day is still the day; its first second is
	// the next, whole again.
	clock.Set(today().Add(24*time.Hour - time.Second))
	expectQuota(t, verifyData(t, b, s, key), contract.CodeQuotaExceeded, -1, midnight)
	clock.Set(today().AddDate(0, 0, 1))
	expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, 4, rfc(today().AddDate(0, 0, 2)))

	// A key of a role without a quota says nothing of quotas.
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/free", map[string]interface{}{})
	free, _ := issue(t, b, s, "acme", "free")
	expectQuota(t, verifyData(t, b, s, free), contract.CodeValid, -1, "")
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/roles/free", nil).Data; got["quota"] != int64(0) || got["quota_period"] != "day" {
		t.Fatalf("role without quota: %v", got)
	}
}

func TestQuotaPeriods(t *testing.T) {
	now := today().Add(15*time.Hour + 4*time.Minute)
	monday := today().AddDate(0, 0, 7-(int(today().Weekday())+6)%7)
	y, m, _ := now.Date()
	for _, c := range []struct {
		period string
		resets time.Time
	}{
		{"hour", today().Add(16 * time.Hour)},
		{"day", today().AddDate(0, 0, 1)},
		{"week", monday}, // weeks start on Monday
		{"month", time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		b, s, _ := quotaMount(t, now)
		b.do(t, s, logical.CreateOperation, "tenants/acme/roles/m", map[string]interface{}{"quota": 1, "quota_period": c.period, "ttl": "48h"})
		key, _ := issue(t, b, s, "acme", "m")
		expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, 0, rfc(c.resets))
		expectQuota(t, verifyData(t, b, s, key), contract.CodeQuotaExceeded, -1, rfc(c.resets))
	}
}

func TestQuotaFieldsAreChecked(t *testing.T) {
	b, s, _ := quotaMount(t, time.Time{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/web", map[string]interface{}{})
	for _, c := range []struct {
		data map[string]interface{}
		want string
	}{
		{map[string]interface{}{"quota": -1}, "quota must be between 0 and"},
		{map[string]interface{}{"quota": contract.MaxQuota + 1}, "quota must be between 0 and"},
		{map[string]interface{}{"quota": 5, "quota_period": "year"}, "quota_period"},
		{map[string]interface{}{"quota": "many"}, "quota"},
	} {
		for _, path := range []string{"tenants/acme/roles/web", "tenants/acme"} {
			resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.UpdateOperation, Path: path, Data: c.data, Storage: s})
			if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), c.want) {
				t.Errorf("%s %v: %v %v, want a 400 naming %q", path, c.data, resp, err, c.want)
			}
		}
	}
}

func refill(t *testing.T, b *backend, s logical.Storage, path string, data map[string]interface{}) (*logical.Response, error) {
	t.Helper()
	return b.HandleRequest(context.Background(), &logical.Request{Operation: logical.UpdateOperation, Path: path, Data: data, Storage: s})
}

func TestQuotaRefillByHand(t *testing.T) {
	b, s, _ := quotaMount(t, time.Time{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"quota": 2, "ttl": "48h"})
	key, id := issue(t, b, s, "acme", "metered")
	path := "tenants/acme/keys/" + id + "/quota"
	verifyData(t, b, s, key)
	verifyData(t, b, s, key)
	expectQuota(t, verifyData(t, b, s, key), contract.CodeQuotaExceeded, -1, rfc(today().AddDate(0, 0, 1)))
	st := b.do(t, s, logical.ReadOperation, path, nil).Data
	if st["used"] != int64(2) || st["remaining"] != int64(0) || st["quota"] != int64(2) || st["resets_at"] != rfc(today().AddDate(0, 0, 1)) || st["period_start"] != rfc(today()) {
		t.Fatalf("standing: %v", st)
	}

	_, seq := b.changes(t, s, 0)
	got := b.do(t, s, logical.UpdateOperation, path, map[string]interface{}{"reset": true}).Data
	if got["remaining"] != int64(2) {
		t.Fatalf("after reset: %v", got)
	}
	// At once on Vault, and in the feed for edges.
	expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, 1, rfc(today().AddDate(0, 0, 1)))
	c, _ := b.changes(t, s, seq)
	if len(c) != 1 || c[0].Op != contract.OpQuota || len(c[0].Quotas) != 1 || c[0].Quotas[0].KeyID != id || c[0].Quotas[0].Credit != 2 {
		t.Fatalf("feed after the refill: %+v", c)
	}
	b.do(t, s, logical.UpdateOperation, path, map[string]interface{}{"add": 3})
	for i := int64(3); i >= 0; i-- {
		expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, i, rfc(today().AddDate(0, 0, 1)))
	}
	expectQuota(t, verifyData(t, b, s, key), contract.CodeQuotaExceeded, -1, rfc(today().AddDate(0, 0, 1)))

	for _, c := range []struct {
		data map[string]interface{}
		want string
	}{
		{map[string]interface{}{}, "reset or add"},
		{map[string]interface{}{"reset": true, "add": 1}, "not both"},
		{map[string]interface{}{"reset": false}, "reset must be true"},
		{map[string]interface{}{"add": 0}, "add must be"},
		{map[string]interface{}{"add": -4}, "add must be"},
		{map[string]interface{}{"add": "lots"}, "add"},
	} {
		resp, err := refill(t, b, s, path, c.data)
		if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), c.want) {
			t.Errorf("%v: %v %v, want a 400 naming %q", c.data, resp, err, c.want)
		}
	}

	// Another tenant's key id answers exactly like one that does not exist.
	b.do(t, s, logical.CreateOperation, "tenants/globex", map[string]interface{}{})
	other, err := refill(t, b, s, "tenants/globex/keys/"+id+"/quota", map[string]interface{}{"reset": true})
	unknown, err2 := refill(t, b, s, "tenants/globex/keys/00000000-0000-0000-0000-000000000000/quota", map[string]interface{}{"reset": true})
	var coded logical.HTTPCodedError
	if other != nil || unknown != nil || !errors.As(err, &coded) || coded.Code() != http.StatusNotFound ||
		strings.ReplaceAll(err.Error(), id, "ID") != strings.ReplaceAll(err2.Error(), "00000000-0000-0000-0000-000000000000", "ID") {
		t.Fatalf("other tenant's key: %v %v / unknown: %v %v", other, err, unknown, err2)
	}
	if _, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "tenants/globex/keys/" + id + "/quota", Storage: s}); !errors.As(err, &coded) || coded.Code() != http.StatusNotFound {
		t.Fatalf("read of another tenant's key: %v", err)
	}
	// A key without a quota of its own cannot be refilled.
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/free", map[string]interface{}{})
	_, freeID := issue(t, b, s, "acme", "free")
	if resp, err := refill(t, b, s, "tenants/acme/keys/"+freeID+"/quota", map[string]interface{}{"add": 1}); err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "no quota") {
		t.Fatalf("refill of a key without a quota: %v %v", resp, err)
	}
}

func TestQuotaTenantWide(t *testing.T) {
	b, s, clock := quotaMount(t, time.Time{})
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 3, "quota_period": "month"})
	if d := b.do(t, s, logical.ReadOperation, "tenants/acme", nil).Data; d["quota"] != int64(3) || d["quota_period"] != "month" {
		t.Fatalf("tenant read: %v", d)
	}
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/free", map[string]interface{}{"ttl": "48h"})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"quota": 10, "ttl": "48h"})
	a, _ := issue(t, b, s, "acme", "free")
	m, mID := issue(t, b, s, "acme", "metered")
	y, mon, _ := today().Date()
	month := rfc(time.Date(y, mon+1, 1, 0, 0, 0, 0, time.UTC))
	// Both keys count against the tenant; the metered key's answer is the
	// tenant's quota, which leaves less than its own.
	expectQuota(t, verifyData(t, b, s, a), contract.CodeValid, 2, month)
	expectQuota(t, verifyData(t, b, s, m), contract.CodeValid, 1, month)
	expectQuota(t, verifyData(t, b, s, a), contract.CodeValid, 0, month)
	expectQuota(t, verifyData(t, b, s, m), contract.CodeQuotaExceeded, -1, month)
	expectQuota(t, verifyData(t, b, s, a), contract.CodeQuotaExceeded, -1, month)
	// The tenant refused it, so the key's own quota was not spent.
	if st := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+mID+"/quota", nil).Data; st["used"] != int64(1) {
		t.Fatalf("metered key's own use: %v", st)
	}
	// Raising the tenant's quota applies at once.
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 5})
	expectQuota(t, verifyData(t, b, s, m), contract.CodeValid, 1, month)
	// Dropping it leaves the key's own.
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 0})
	expectQuota(t, verifyData(t, b, s, m), contract.CodeValid, 7, rfc(today().AddDate(0, 0, 1)))
	expectQuota(t, verifyData(t, b, s, a), contract.CodeValid, -1, "")
	// A changed period starts over; a new day is whole again.
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 3, "quota_period": "day"})
	tomorrow := rfc(today().AddDate(0, 0, 1))
	expectQuota(t, verifyData(t, b, s, a), contract.CodeValid, 2, tomorrow)
	verifyData(t, b, s, a)
	verifyData(t, b, s, a)
	expectQuota(t, verifyData(t, b, s, a), contract.CodeQuotaExceeded, -1, tomorrow)
	clock.Set(today().AddDate(0, 0, 1))
	expectQuota(t, verifyData(t, b, s, a), contract.CodeValid, 2, rfc(today().AddDate(0, 0, 2)))
}

func TestQuotaSurvivesRestartByFlush(t *testing.T) {
	b, s, clock := quotaMount(t, time.Time{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"quota": 5, "ttl": "48h"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 100})
	key, id := issue(t, b, s, "acme", "metered")
	for range 3 {
		verifyData(t, b, s, key)
	}
	_, seq := b.changes(t, s, 0)
	s.reset()
	b.flushQuotas(context.Background(), s)
	if s.puts < 2 {
		t.Fatalf("flush wrote %d entries: %v", s.puts, s.putKeys)
	}
	c, _ := b.changes(t, s, seq)
	if len(c) != 1 || c[0].Op != contract.OpQuota || len(c[0].Quotas) != 2 {
		t.Fatalf("one feed change per flush, holding both standings: %+v", c)
	}
	for _, st := range c[0].Quotas {
		if st.Used != 3 || (st.KeyID != id && st.KeyID != "") {
			t.Fatalf("standing: %+v", st)
		}
	}
	// Nothing changed: a second flush writes nothing and tells nobody.
	s.reset()
	b.flushQuotas(context.Background(), s)
	if s.writes() != 0 {
		t.Fatalf("an idle flush wrote: %v", s.putKeys)
	}
	// Counted after the last flush: what a crash of the active node loses.
	verifyData(t, b, s, key)

	b2, _ := newTestBackendOn(t, s)
	b2.usage.now = clock.Now
	expectQuota(t, verifyData(t, b2, s, key), contract.CodeValid, 1, rfc(today().AddDate(0, 0, 1)))
	expectQuota(t, verifyData(t, b2, s, key), contract.CodeValid, 0, rfc(today().AddDate(0, 0, 1)))
	expectQuota(t, verifyData(t, b2, s, key), contract.CodeQuotaExceeded, -1, rfc(today().AddDate(0, 0, 1)))
	if d := b2.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id+"/quota", nil).Data; d["used"] != int64(5) {
		t.Fatalf("after the restart: %v", d)
	}
	// Clean flushes too: a graceful stop loses nothing.
	b2.usage.now = clock.Now
	b2.monMu.Lock()
	b2.monStorage = s
	b2.monMu.Unlock()
	b2.Cleanup(context.Background())
	rec, err := getJSON[quotaRecord](context.Background(), s, quotaKeyPath("acme", id), "quota")
	if err != nil || rec == nil || rec.Used != 5 {
		t.Fatalf("stored after Clean: %+v %v", rec, err)
	}

	// A revoked key's standing goes with it.
	b3, _ := newTestBackendOn(t, s)
	b3.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	if rec, _ := getJSON[quotaRecord](context.Background(), s, quotaKeyPath("acme", id), "quota"); rec != nil {
		t.Fatalf("a revoked key's quota is still stored: %+v", rec)
	}
}

func TestQuotaCountsEdgeReports(t *testing.T) {
	b, s, _ := quotaMount(t, time.Time{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"quota": 10, "ttl": "48h"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 50})
	key, id := issue(t, b, s, "acme", "metered")
	verifyData(t, b, s, key)
	day := today().Unix()
	report := func(entry map[string]interface{}) map[string]interface{} {
		t.Helper()
		return b.do(t, s, logical.UpdateOperation, "usage/report", map[string]interface{}{"reports": []interface{}{entry}}).Data
	}
	got := report(map[string]interface{}{
		"tenant": "acme", "key_id": id, "requests": 6,
		"quota_period_start": day, "quota_used": 6, "tenant_quota_period_start": day, "tenant_quota_used": 6,
	})
	quotas := got["quotas"].([]*contract.QuotaStanding)
	if len(quotas) != 2 || quotas[0].KeyID != id || quotas[0].Used != 7 || quotas[0].PeriodStart != day || quotas[1].KeyID != "" || quotas[1].Used != 7 {
		t.Fatalf("report answer: %+v %+v", quotas[0], quotas)
	}
	expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, 2, rfc(today().AddDate(0, 0, 1)))
	// A report of another period is not this one's.
	report(map[string]interface{}{"tenant": "acme", "key_id": id, "requests": 5, "quota_period_start": day - 86400, "quota_used": 5})
	expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, 1, rfc(today().AddDate(0, 0, 1)))
	// Nor may a gateway book use on another tenant's key.
	b.do(t, s, logical.CreateOperation, "tenants/globex", map[string]interface{}{})
	rej := report(map[string]interface{}{"tenant": "globex", "key_id": id, "requests": 5, "quota_period_start": day, "quota_used": 5})
	if rej["accepted"] != 0 {
		t.Fatalf("another tenant's key accepted: %v", rej)
	}
	expectQuota(t, verifyData(t, b, s, key), contract.CodeValid, 0, rfc(today().AddDate(0, 0, 1)))
}

func TestQuotaSnapshotAndInvalidate(t *testing.T) {
	b, s, clock := quotaMount(t, time.Time{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"quota": 5, "ttl": "48h"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 9, "quota_period": "week"})
	key, id := issue(t, b, s, "acme", "metered")
	verifyData(t, b, s, key)
	verifyData(t, b, s, key)
	snap := b.do(t, s, logical.ReadOperation, "sync/snapshot", nil).Data
	keys := snap["keys"].([]*contract.WireKey)
	if len(keys) != 1 || keys[0].Quota == nil || *keys[0].Quota != (contract.QuotaRule{Limit: 5, Period: contract.PeriodDay}) {
		t.Fatalf("snapshot key quota: %+v", keys)
	}
	if tq := snap["tenant_quotas"].(map[string]contract.QuotaRule); tq["acme"] != (contract.QuotaRule{Limit: 9, Period: contract.PeriodWeek}) {
		t.Fatalf("snapshot tenant quotas: %v", tq)
	}
	quotas := snap["quotas"].([]*contract.QuotaStanding)
	if len(quotas) != 2 || quotas[0].Used != 2 || quotas[1].Used != 2 {
		t.Fatalf("snapshot standings: %+v", quotas)
	}

	// A performance standby counts on top of what another node stored,
	// and merges a newer stored standing when told of it (Invalidate).
	standby, _ := newTestBackendOn(t, s)
	standby.usage.now = clock.Now
	b.flushQuotas(context.Background(), s)
	expectQuota(t, verifyData(t, standby, s, key), contract.CodeValid, 2, rfc(today().AddDate(0, 0, 1)))
	verifyData(t, b, s, key)
	verifyData(t, b, s, key)
	b.flushQuotas(context.Background(), s)
	standby.invalidate(context.Background(), quotaKeyPath("acme", id))
	standby.invalidate(context.Background(), quotaTenantPrefix+"acme")
	// The stored 4 replaces the standby's 3 (2 stored, 1 its own): the
	// higher of the two, never their sum, which would count the stored
	// ones twice.
	expectQuota(t, verifyData(t, standby, s, key), contract.CodeValid, 0, rfc(today().AddDate(0, 0, 1)))
	expectQuota(t, verifyData(t, standby, s, key), contract.CodeQuotaExceeded, -1, rfc(today().AddDate(0, 0, 1)))
}

func TestQuotaMetrics(t *testing.T) {
	b, s, _ := quotaMount(t, time.Time{})
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"quota": 2})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"quota": 1, "ttl": "48h"})
	key, id := issue(t, b, s, "acme", "metered")
	verifyData(t, b, s, key)
	verifyData(t, b, s, key)
	fams := scrape(t, b, s)
	acme := map[string]string{"tenant": "acme"}
	for name, want := range map[string]float64{
		"apikeys_quota_exceeded_total": 1,
		"apikeys_quota_used":           1,
		"apikeys_quota_limit":          2,
		"apikeys_quota_keys_exhausted": 1,
	} {
		if got := sampleOf(fams, name, acme); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := sampleOf(fams, "apikeys_verify_total", map[string]string{"tenant": "acme", "code": contract.CodeQuotaExceeded}); got != 1 {
		t.Errorf("apikeys_verify_total QUOTA_EXCEEDED = %v", got)
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == id {
					t.Errorf("%s carries a key id", name)
				}
			}
		}
	}
}

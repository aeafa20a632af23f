package edge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

func codes(t *testing.T, e *Edge, key string, n int) []string {
	t.Helper()
	var out []string
	for range n {
		a, err := e.Verify(context.Background(), &Request{APIKey: key})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a.Code)
	}
	return out
}

func TestEdgeQuotaFromMemory(t *testing.T) {
	at := time.Date(2026, 12, 3, 15, 4, 5, 0, time.UTC)
	e, h := offlineEdge(t)
	e.now = func() time.Time { return at }
	e.markSynced()
	day := &contract.QuotaRule{Limit: 3, Period: contract.PeriodDay}
	k := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Quota: day})
	a, _ := e.Verify(context.Background(), &Request{APIKey: k})
	if !a.Valid || a.QuotaRemaining == nil || *a.QuotaRemaining != 2 || *a.QuotaResetsAt != "2026-12-04T00:00:00Z" {
		t.Fatalf("first: %+v", a)
	}
	// The cluster used one more elsewhere: the feed says so.
	start := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).Unix()
	if err := e.store.apply([]*contract.Change{{Seq: 2, Op: contract.OpQuota, Quotas: []*contract.QuotaStanding{
		{Tenant: "acme", KeyID: "k1", PeriodStart: start, Used: 1},
		// Another tenant's standing for the same id changes nothing.
		{Tenant: "globex", KeyID: "k1", PeriodStart: start, Used: 100},
	}}}, 2); err != nil {
		t.Fatal(err)
	}
	if got := codes(t, e, k, 2); got[0] != contract.CodeValid || got[1] != contract.CodeQuotaExceeded {
		t.Fatalf("after the feed: %v", got)
	}
	// A refill (credit) reaches the edge the same way.
	if err := e.store.apply([]*contract.Change{{Seq: 3, Op: contract.OpQuota, Quotas: []*contract.QuotaStanding{
		{Tenant: "acme", KeyID: "k1", PeriodStart: start, Used: 1, Credit: 2},
	}}}, 3); err != nil {
		t.Fatal(err)
	}
	if got := codes(t, e, k, 3); got[0] != contract.CodeValid || got[1] != contract.CodeValid || got[2] != contract.CodeQuotaExceeded {
		t.Fatalf("after the refill: %v", got)
	}
	// A renew (upsert of the same key) keeps the count.
	renewed := contract.WireKey{KeyID: "k1", Tenant: "acme", Quota: day, EdgeHash: e.store.byHash[e.store.byID["k1"]].w.EdgeHash}
	if err := e.store.apply([]*contract.Change{{Seq: 4, Op: contract.OpUpsert, Key: &renewed}}, 4); err != nil {
		t.Fatal(err)
	}
	if got := codes(t, e, k, 1); got[0] != contract.CodeQuotaExceeded {
		t.Fatalf("a renew refilled the quota: %v", got)
	}
	// The next day is whole again.
	e.now = func() time.Time { return at.Add(9 * time.Hour) }
	e.markSynced()
	if got := codes(t, e, k, 1); got[0] != contract.CodeValid {
		t.Fatalf("next day: %v", got)
	}

	// A tenant-wide quota counts every key of the tenant.
	e.now = func() time.Time { return at }
	e.markSynced()
	if err := e.store.apply([]*contract.Change{{Seq: 5, Op: contract.OpTenant, Tenant: "acme", TenantStatus: contract.TenantActive,
		TenantQuota: &contract.QuotaRule{Limit: 2, Period: contract.PeriodMonth}}}, 5); err != nil {
		t.Fatal(err)
	}
	free1 := addKey(t, e, h, contract.WireKey{KeyID: "k2", Tenant: "acme"})
	free2 := addKey(t, e, h, contract.WireKey{KeyID: "k3", Tenant: "acme"})
	a, _ = e.Verify(context.Background(), &Request{APIKey: free1})
	if !a.Valid || *a.QuotaRemaining != 1 || *a.QuotaResetsAt != "2027-01-01T00:00:00Z" {
		t.Fatalf("tenant quota: %+v", a)
	}
	if got := codes(t, e, free2, 2); got[0] != contract.CodeValid || got[1] != contract.CodeQuotaExceeded {
		t.Fatalf("tenant cap: %v", got)
	}
	// The tenant's quota gone, only the keys' own count.
	if err := e.store.apply([]*contract.Change{{Seq: 6, Op: contract.OpTenant, Tenant: "acme", TenantStatus: contract.TenantActive}}, 6); err != nil {
		t.Fatal(err)
	}
	if a, _ := e.Verify(context.Background(), &Request{APIKey: free1}); !a.Valid || a.QuotaRemaining != nil {
		t.Fatalf("no quota: %+v", a)
	}
}

func TestEdgeQuotaAnswers429WithRetryAfter(t *testing.T) {
	at := time.Date(2026, 12, 3, 23, 59, 0, 500_000_000, time.UTC)
	e, h := offlineEdge(t)
	e.now = func() time.Time { return at }
	e.markSynced()
	k := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Quota: &contract.QuotaRule{Limit: 1, Period: contract.PeriodDay}})
	srv := httptest.NewServer(e.Handler(HTTPOptions{}))
	defer srv.Close()
	get := func() (*http.Response, Answer) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/check", nil)
		req.Header.Set("Authorization", "Bearer "+k)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a Answer
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			t.Fatal(err)
		}
		return resp, a
	}
	resp, a := get()
	if resp.StatusCode != 200 || resp.Header.Get("Retry-After") != "" || *a.QuotaRemaining != 0 {
		t.Fatalf("first: %d %v %+v", resp.StatusCode, resp.Header, a)
	}
	resp, a = get()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(HeaderCode) != contract.CodeQuotaExceeded ||
		resp.Header.Get("Retry-After") != "60" || *a.QuotaResetsAt != "2026-12-04T00:00:00Z" {
		t.Fatalf("over: %d %v %+v", resp.StatusCode, resp.Header, a)
	}
	// A rate limit answers 429 too, with the Retry-After of a token bucket
	// (RetryAfter: 1 s), never the quota's reset.
	lim := addKey(t, e, h, contract.WireKey{KeyID: "k2", Tenant: "acme", RateLimit: 1, RateLimitPeriod: 3600})
	handler := Middleware(e, HTTPOptions{Now: e.now})(http.NotFoundHandler())
	for i, want := range []int{404, 429} {
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Header.Set("Authorization", "Bearer "+lim)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		wantRetry := map[int]string{404: "", 429: "1"}[want]
		if w.Code != want || w.Header().Get("Retry-After") != wantRetry {
			t.Fatalf("rate limited %d: %d %v", i, w.Code, w.Header())
		}
	}
}

// What the edge served goes to Vault with the next report; once Vault
// answers, it counts in the learned total instead of the edge's own.
func TestEdgeReportsQuotaUse(t *testing.T) {
	at := time.Date(2026, 12, 3, 15, 4, 5, 0, time.UTC)
	start := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).Unix()
	var got []contract.UsageReport
	e, h := offlineEdge(t)
	v := newUsageVault(t, e, func(batch []contract.UsageReport) contract.UsageReportAnswer {
		got = append(got, batch...)
		// Vault counted them, and 4 more served elsewhere.
		return contract.UsageReportAnswer{Quotas: []*contract.QuotaStanding{
			{Tenant: "acme", KeyID: "k1", PeriodStart: start, Used: 6},
		}}
	})
	e.now = func() time.Time { return at }
	e.markSynced()
	k := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Quota: &contract.QuotaRule{Limit: 10, Period: contract.PeriodDay}})
	codes(t, e, k, 2)
	// A failed report keeps the counts for the next one.
	e.reportUsage(context.Background())
	if a, _ := e.Verify(context.Background(), &Request{APIKey: k}); *a.QuotaRemaining != 7 {
		t.Fatalf("after a failed report: %+v", a)
	}
	v.setFail(false)
	e.reportUsage(context.Background())
	if len(got) != 1 || got[0].Requests != 3 || got[0].QuotaUsed != 3 || got[0].QuotaPeriodStart != start {
		t.Fatalf("report: %+v", got)
	}
	// 6 used in the cluster, nothing of its own left unacknowledged.
	if a, _ := e.Verify(context.Background(), &Request{APIKey: k}); *a.QuotaRemaining != 3 {
		t.Fatalf("after the report: %+v", a)
	}
	// Nothing served since but this one: the next report says 1.
	got = nil
	e.reportUsage(context.Background())
	if len(got) != 1 || got[0].QuotaUsed != 1 {
		t.Fatalf("second report: %+v", got)
	}
}

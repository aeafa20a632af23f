package edge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// usageVault stands in for Vault's usage/report: it answers 500 while it
// fails (as it starts), else hands each batch to got, under its lock, and
// answers what got returns.
type usageVault struct {
	mu   sync.Mutex
	fail bool
}

func newUsageVault(t *testing.T, e *Edge, got func([]contract.UsageReport) contract.UsageReportAnswer) *usageVault {
	v := &usageVault{fail: true}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var body struct {
			Reports []contract.UsageReport `json:"reports"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"data": got(body.Reports)})
	}))
	t.Cleanup(srv.Close)
	if err := e.client.SetAddress(srv.URL); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *usageVault) setFail(fail bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fail = fail
}

// The answers the edge gave without Vault go to Vault by key and code with
// the next report (VALID as many as the requests it served), NOT_FOUND
// never (it names no key of the tenant asked for); a failed report keeps
// them for the next one, and a snapshot reload keeps them.
func TestEdgeReportsItsAnswersByCode(t *testing.T) {
	got := map[string]contract.UsageReport{}
	e, h := offlineEdge(t)
	v := newUsageVault(t, e, func(batch []contract.UsageReport) contract.UsageReportAnswer {
		for _, u := range batch {
			got[u.KeyID] = u
		}
		return contract.UsageReportAnswer{}
	})
	e.now = func() time.Time { return time.Date(2026, 12, 3, 15, 4, 5, 0, time.UTC) }
	e.markSynced()
	k1 := addKey(t, e, h, contract.WireKey{KeyID: "k1", Tenant: "acme", Scopes: []string{"read"}})
	k2 := addKey(t, e, h, contract.WireKey{KeyID: "k2", Tenant: "acme", Disabled: true})
	for _, c := range []struct {
		r    Request
		want string
	}{
		{Request{APIKey: k1}, contract.CodeValid},
		{Request{APIKey: k1, RequiredScopes: []string{"read"}}, contract.CodeValid},
		{Request{APIKey: k1, RequiredScopes: []string{"admin"}}, contract.CodeInsufficientScope},
		{Request{APIKey: k1, Tenant: "globex"}, contract.CodeNotFound},
		{Request{APIKey: k2}, contract.CodeDisabled},
	} {
		a, err := e.Verify(context.Background(), &c.r)
		if err != nil || a.Code != c.want {
			t.Fatalf("%+v: %v %v, want %s", c.r, a.Code, err, c.want)
		}
	}
	// A snapshot loaded again (a resync) keeps what was not reported yet.
	reload := newStore()
	e.store.mu.RLock()
	reload.hasher, reload.tenants = e.store.hasher, e.store.tenants
	for _, k := range e.store.byHash {
		n, err := newKey(k.w)
		if err != nil {
			t.Fatal(err)
		}
		reload.upsertLocked(n)
	}
	e.store.mu.RUnlock()
	e.store.replace(reload)
	want := map[string]contract.UsageReport{
		"k1": {Tenant: "acme", KeyID: "k1", Requests: 2, LastUsedAt: e.now().Unix(),
			VerifyByCode: map[string]uint64{contract.CodeValid: 2, contract.CodeInsufficientScope: 1}},
		"k2": {Tenant: "acme", KeyID: "k2", VerifyByCode: map[string]uint64{contract.CodeDisabled: 1}},
	}
	e.reportUsage(context.Background())
	v.setFail(false)
	e.reportUsage(context.Background())
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after a failed report and a good one:\n got %+v\nwant %+v", got, want)
	}
	// Reported once: the next report has nothing to say.
	got = map[string]contract.UsageReport{}
	e.reportUsage(context.Background())
	if len(got) != 0 {
		t.Fatalf("reported twice: %+v", got)
	}
}

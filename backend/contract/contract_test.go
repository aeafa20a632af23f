package contract

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"sort"
	"testing"
	"time"
)

// fakeStore records what Decide asked, so a test sees that the checks stop
// where the contract says.
type fakeStore struct {
	status     map[string]string
	err        error
	spend      string
	quota      Quota
	askedState *[]string
}

func (s fakeStore) TenantStatus(_ context.Context, tenant string) (string, error) {
	*s.askedState = append(*s.askedState, "tenant:"+tenant)
	return s.status[tenant], s.err
}

func (s fakeStore) Spend(k int, _ time.Time) (string, Quota) {
	*s.askedState = append(*s.askedState, "spend")
	return s.spend, s.quota
}

func TestDecideOrder(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	base := Key{Tenant: "acme", Scopes: []string{"read", "write"}, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	inside := netip.MustParseAddr("10.1.2.3")
	outside := netip.MustParseAddr("192.0.2.1")
	cases := []struct {
		name   string
		key    func(k *Key)
		req    Request
		status string
		spend  string
		want   string
		asked  []string
	}{
		{"valid", nil, Request{ClientIP: inside, RequiredScopes: []string{"read"}}, TenantActive, "", CodeValid, []string{"tenant:acme", "spend"}},
		{"other tenant first, nothing asked", func(k *Key) { k.ExpiresAt = 1 }, Request{Tenant: "globex"}, TenantSuspended, "", CodeNotFound, nil},
		{"expired before the tenant is read", func(k *Key) { k.ExpiresAt = now.UnixNano() }, Request{}, "", "", CodeExpired, nil},
		{"expires later", func(k *Key) { k.ExpiresAt = now.UnixNano() + 1 }, Request{ClientIP: inside}, TenantActive, "", CodeValid, []string{"tenant:acme", "spend"}},
		{"tenant gone", nil, Request{ClientIP: outside}, "", "", CodeNotFound, []string{"tenant:acme"}},
		{"tenant deleted on the feed", nil, Request{ClientIP: outside}, TenantDeleted, "", CodeNotFound, []string{"tenant:acme"}},
		{"suspended before disabled", func(k *Key) { k.Disabled = true }, Request{ClientIP: outside}, TenantSuspended, "", CodeTenantSuspended, []string{"tenant:acme"}},
		{"disabled before ip", func(k *Key) { k.Disabled = true }, Request{ClientIP: outside}, TenantActive, "", CodeDisabled, []string{"tenant:acme"}},
		{"suspended before ip", nil, Request{ClientIP: outside}, TenantSuspended, "", CodeTenantSuspended, []string{"tenant:acme"}},
		{"ip before scopes", nil, Request{ClientIP: outside, RequiredScopes: []string{"admin"}}, TenantActive, "", CodeIPNotAllowed, []string{"tenant:acme"}},
		{"no ip with cidrs", nil, Request{}, TenantActive, "", CodeIPNotAllowed, []string{"tenant:acme"}},
		{"scopes before spending", nil, Request{ClientIP: inside, RequiredScopes: []string{"admin"}}, TenantActive, CodeRateLimited, CodeInsufficientScope, []string{"tenant:acme"}},
		{"spend refuses last", nil, Request{ClientIP: inside}, TenantActive, CodeRateLimited, CodeRateLimited, []string{"tenant:acme", "spend"}},
		{"quota refuses last", nil, Request{ClientIP: inside}, TenantActive, CodeQuotaExceeded, CodeQuotaExceeded, []string{"tenant:acme", "spend"}},
		{"tenant-limited, own key", nil, Request{Tenant: "acme", ClientIP: inside}, TenantActive, "", CodeValid, []string{"tenant:acme", "spend"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := base
			if c.key != nil {
				c.key(&k)
			}
			var asked []string
			st := fakeStore{status: map[string]string{"acme": c.status}, spend: c.spend, askedState: &asked}
			got, err := Decide(context.Background(), st, &c.req, &k, 7, now)
			if err != nil || got.Code != c.want {
				t.Fatalf("Decide = %s %v, want %s", got.Code, err, c.want)
			}
			if !reflect.DeepEqual(asked, c.asked) {
				t.Fatalf("asked %v, want %v", asked, c.asked)
			}
		})
	}
	// The quota Spend found comes back with the verdict, VALID or not.
	var asked []string
	q := Quota{Limit: 5, Remaining: 4, ResetsAt: now.Add(time.Hour).UnixNano()}
	v, err := Decide(context.Background(), fakeStore{status: map[string]string{"acme": TenantActive}, quota: q, askedState: &asked}, &Request{}, &Key{Tenant: "acme"}, 7, now)
	if err != nil || v.Code != CodeValid || v.Quota != q {
		t.Fatalf("quota not passed on: %+v %v", v, err)
	}
	boom := errors.New("storage down")
	st := fakeStore{err: boom, askedState: &asked}
	if _, err := Decide(context.Background(), st, &Request{}, &Key{Tenant: "acme"}, 7, now); !errors.Is(err, boom) {
		t.Fatalf("a tenant read failure is not passed on: %v", err)
	}
}

func TestAccessRules(t *testing.T) {
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for _, tc := range []struct {
		cidrs []netip.Prefix
		ip    string
		want  bool
	}{
		{nil, "", true},
		{nil, "192.0.2.1", true},
		{cidrs, "", false},
		{cidrs, "10.1.2.3", true},
		{cidrs, "::ffff:10.1.2.3", true},
		{cidrs, "11.0.0.1", false},
		{cidrs, "2001:db8::1", true},
	} {
		var ip netip.Addr
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		if got := AllowsIP(tc.cidrs, ip); got != tc.want {
			t.Errorf("AllowsIP(%v, %q) = %v", tc.cidrs, tc.ip, got)
		}
	}
	held := []string{"admin", "read", "write"}
	if !HasScopes(held, nil) || !HasScopes(held, []string{"write", "read"}) || HasScopes(held, []string{"read", "billing"}) {
		t.Error("HasScopes")
	}
}

func TestHTTPStatus(t *testing.T) {
	want := map[string]int{
		CodeValid: 200, CodeMalformed: 401, CodeNotFound: 401, CodeExpired: 401, CodeTenantSuspended: 401,
		CodeMissing: 401, CodeDisabled: 401, CodeInsufficientScope: 403, CodeIPNotAllowed: 403, CodeRateLimited: 429, CodeQuotaExceeded: 429,
		CodeStale: 503, CodeUnavailable: 503,
	}
	for code, status := range want {
		if got := HTTPStatus(code); got != status {
			t.Errorf("HTTPStatus(%s) = %d, want %d", code, got, status)
		}
	}
}

// jsonFields is the field names of v's JSON encoding, empty fields
// included: omitempty is undone by filling every field first.
func jsonFields(t *testing.T, v interface{}) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func keysOf(m map[string]interface{}) []string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Vault's verify sends Data(), an edge the struct: the same names and,
// decoded, the same answer.
func TestAnswerDataMatchesJSON(t *testing.T) {
	a := Answer{
		Valid: true, Code: CodeValid, KeyID: "k", Tenant: "acme", Role: "web", Scopes: []string{"read"},
		Environment: "live", Metadata: map[string]string{"team": "a"}, ExpiresAt: Expiry(time.Unix(5, 0).UnixNano()),
		Kind: "dynamic", InGrace: true,
	}
	a.SetQuota(Quota{Limit: 10, Remaining: 3, ResetsAt: time.Unix(3600, 0).UnixNano()})
	if *a.QuotaRemaining != 3 || *a.QuotaResetsAt != "1970-01-01T01:00:00Z" {
		t.Fatalf("SetQuota: %v %v", *a.QuotaRemaining, *a.QuotaResetsAt)
	}
	if got, want := keysOf(a.Data()), jsonFields(t, a); !reflect.DeepEqual(got, want) {
		t.Fatalf("Data() names %v, JSON names %v", got, want)
	}
	over := Refusal(CodeQuotaExceeded)
	over.SetQuota(Quota{Limit: 10, ResetsAt: time.Unix(3600, 0).UnixNano()})
	if over.QuotaRemaining != nil || over.QuotaResetsAt == nil {
		t.Fatalf("a refusal over quota carries its reset only: %+v", over)
	}
	unlimited := Answer{Valid: true, Code: CodeValid}
	unlimited.SetQuota(Quota{})
	if unlimited.QuotaRemaining != nil || unlimited.QuotaResetsAt != nil {
		t.Fatal("no quota, yet quota fields")
	}
	for _, in := range []Answer{a, {Valid: true, Code: CodeValid, KeyID: "k"}, Refusal(CodeExpired), over} {
		b, err := json.Marshal(in.Data())
		if err != nil {
			t.Fatal(err)
		}
		var back Answer
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, in) {
			t.Fatalf("Data() decodes to %+v, want %+v", back, in)
		}
	}
	refusal := Refusal(CodeExpired)
	if d := refusal.Data(); len(d) != 2 {
		t.Fatalf("a refusal says more than valid and code: %v", d)
	}
	if Expiry(0) != nil || *Expiry(time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC).UnixNano()) != "2030-01-02T03:04:05Z" {
		t.Fatal("Expiry")
	}
}

func TestPagesDataMatchJSON(t *testing.T) {
	day := &QuotaRule{Limit: 5, Period: PeriodDay}
	standing := &QuotaStanding{Tenant: "acme", KeyID: "k", PeriodStart: 86400, Used: 2, Credit: 1}
	snap := SnapshotPage{
		Seq: 3, VerifierKey: "c2VjcmV0", Keys: []*WireKey{{EdgeHash: "ab", KeyID: "k", Quota: day}}, Next: "n",
		Tenants: map[string]string{"acme": TenantActive}, TenantQuotas: map[string]QuotaRule{"acme": *day},
		Quotas: []*QuotaStanding{standing},
	}
	changes := ChangesPage{Changes: []*Change{
		{Seq: 4, Op: OpDelete, KeyID: "k"},
		{Seq: 5, Op: OpTenant, Tenant: "acme", TenantStatus: TenantActive, TenantQuota: day},
		{Seq: 6, Op: OpQuota, Quotas: []*QuotaStanding{standing}},
	}, Seq: 6, Head: 9}
	for _, c := range []struct {
		page interface{}
		data map[string]interface{}
		back interface{}
	}{
		{&snap, snap.Data(), &SnapshotPage{}},
		{&changes, changes.Data(), &ChangesPage{}},
	} {
		if got, want := keysOf(c.data), jsonFields(t, c.page); !reflect.DeepEqual(got, want) {
			t.Fatalf("%T: Data() names %v, JSON names %v", c.page, got, want)
		}
		b, err := json.Marshal(c.data)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, c.back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c.back, c.page) {
			t.Fatalf("%T: Data() decodes to %+v", c.page, c.back)
		}
	}
}

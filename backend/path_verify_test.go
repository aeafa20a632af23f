package backend

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

func (b *backend) code(t testing.TB, s logical.Storage, in contract.Request, now time.Time) string {
	t.Helper()
	out, err := b.verify(context.Background(), s, &in, now)
	if err != nil {
		t.Fatal(err)
	}
	return out.Code
}

func TestVerifyMalformedReadsNoStorage(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, _ := setupAcme(t, b, s)
	coldCaches(b) // cold: nothing cached, not even the pepper
	s.reset()
	for _, k := range []string{"", "garbage", badChecksum(key), key + "a", "ak_prod_" + key[8:], key[:20], key + strings.Repeat("x", keyformat.MaxLen)} {
		if c := b.code(t, s, contract.Request{APIKey: k}, time.Now()); c != contract.CodeMalformed {
			t.Fatalf("%q: %s", k, c)
		}
	}
	if s.gets+s.lists != 0 {
		t.Fatalf("malformed keys cost %d storage reads", s.gets+s.lists)
	}
}

func TestVerifyWarmReadsNothingAndNeverWrites(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, _ := setupAcme(t, b, s)
	coldCaches(b)
	s.reset()
	if c := b.code(t, s, contract.Request{APIKey: key}, time.Now()); c != contract.CodeValid {
		t.Fatalf("cold verify: %s", c)
	}
	if s.gets == 0 {
		t.Fatal("cold verify read nothing: the cache was not cleaned")
	}
	// The cold miss started the one background listing of known hashes;
	// let it finish so its List is not counted against the warm calls.
	waitKnownLoaded(t, b)
	s.reset()
	for i := 0; i < 5; i++ {
		if c := b.code(t, s, contract.Request{APIKey: key, RequiredScopes: []string{"read"}}, time.Now()); c != contract.CodeValid {
			t.Fatalf("warm verify: %s", c)
		}
	}
	if s.gets+s.lists != 0 {
		t.Fatalf("warm verify read storage %d times", s.gets+s.lists)
	}

	// Every answer, valid or not, leaves storage untouched.
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/limited", map[string]interface{}{"allowed_cidrs": "10.0.0.0/8", "rate_limit": 1})
	limited := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/limited", nil).Data["api_key"].(string)
	coldCaches(b)
	s.reset()
	defer waitKnownLoaded(t, b)
	for _, in := range []contract.Request{
		{APIKey: key},
		{APIKey: key, Tenant: "globex"},
		{APIKey: key, RequiredScopes: []string{"admin"}},
		{APIKey: limited},
		{APIKey: badChecksum(key)},
		{APIKey: regenerate(t, key)},
	} {
		b.code(t, s, in, time.Now())
		b.code(t, s, in, time.Now().Add(48*time.Hour))
	}
	if w := s.writes(); w != 0 {
		t.Fatalf("verify wrote storage %d times", w)
	}
}

func TestVerifyChecksExpiryWithoutTheLease(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, resp := setupAcme(t, b, s)
	ttl := resp.Secret.TTL
	if c := b.code(t, s, contract.Request{APIKey: key}, time.Now().Add(ttl-time.Second)); c != contract.CodeValid {
		t.Fatalf("before expiry: %s", c)
	}
	// No lease revoke ever ran: verify alone must refuse the key.
	if c := b.code(t, s, contract.Request{APIKey: key}, time.Now().Add(ttl+time.Second)); c != contract.CodeExpired {
		t.Fatalf("after expiry: %s", c)
	}
}

func TestVerifyCodes(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, _ := setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/globex", map[string]interface{}{})
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/office", map[string]interface{}{"scopes": "read", "allowed_cidrs": "10.0.0.0/8,::ffff:192.0.2.0/120"})
	office := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/office", nil).Data["api_key"].(string)
	ip := func(s string) contract.Request {
		in := contract.Request{APIKey: office}
		in.ClientIP = mustAddr(t, s)
		return in
	}
	now := time.Now()
	for name, tc := range map[string]struct {
		in   contract.Request
		want string
	}{
		"valid":                   {contract.Request{APIKey: key}, contract.CodeValid},
		"scopes held":             {contract.Request{APIKey: key, RequiredScopes: []string{"read", "write"}}, contract.CodeValid},
		"scope missing":           {contract.Request{APIKey: key, RequiredScopes: []string{"read", "admin"}}, contract.CodeInsufficientScope},
		"other tenant":            {contract.Request{APIKey: key, Tenant: "globex"}, contract.CodeNotFound},
		"own tenant":              {contract.Request{APIKey: key, Tenant: "acme"}, contract.CodeValid},
		"ip inside":               {ip("10.9.8.7"), contract.CodeValid},
		"ip outside":              {ip("11.0.0.1"), contract.CodeIPNotAllowed},
		"ip missing":              {contract.Request{APIKey: office}, contract.CodeIPNotAllowed},
		"ipv4-mapped ipv6 inside": {ip("::ffff:10.1.1.1"), contract.CodeValid},
		"unknown well-formed key": {contract.Request{APIKey: regenerate(t, key)}, contract.CodeNotFound},
		"bad checksum":            {contract.Request{APIKey: badChecksum(key)}, contract.CodeMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			if got := b.code(t, s, tc.in, now); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestVerifyFollowsLocalWritesAtOnce(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	now := time.Now()
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeValid {
		t.Fatal(c)
	}
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "suspended"})
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeTenantSuspended {
		t.Fatalf("after suspend: %s", c)
	}
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "active"})
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeValid {
		t.Fatalf("after resume: %s", c)
	}
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeNotFound {
		t.Fatalf("after delete: %s", c)
	}
}

// TestInvalidateUsesTheKeysPluginWrites plays a standby: it caches a key and
// its tenant, another node changes them, and Invalidate is fed exactly the
// storage keys the active node wrote. A mismatch between those strings and
// what Invalidate expects would leave the standby answering VALID.
func TestInvalidateUsesTheKeysPluginWrites(t *testing.T) {
	active, s := newTestBackend(t)
	standby, _ := newTestBackendOn(t, s)
	key, id, _ := setupAcme(t, active, s)
	now := time.Now()
	if c := standby.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeValid {
		t.Fatal(c)
	}

	s.reset()
	active.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "suspended"})
	if c := standby.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeValid {
		t.Fatalf("standby saw the suspension before Invalidate (%s): the test no longer proves anything", c)
	}
	for _, k := range s.putKeys {
		standby.Invalidate(context.Background(), k)
	}
	if c := standby.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeTenantSuspended {
		t.Fatalf("after Invalidate of %v: %s", s.putKeys, c)
	}
	active.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "active"})

	// An unrelated change drops nothing: the next verify is still warm.
	standby.Invalidate(context.Background(), "tenants/acme") // resume
	standby.code(t, s, contract.Request{APIKey: key}, now)
	standby.Invalidate(context.Background(), "tenants/globex")
	standby.Invalidate(context.Background(), "roles/acme/web")
	s.reset()
	standby.code(t, s, contract.Request{APIKey: key}, now)
	if s.gets != 0 {
		t.Fatalf("unrelated invalidations cost %d reads", s.gets)
	}

	// A key disabled and enabled again through keys/<key_id>.
	for _, step := range []struct{ status, want string }{
		{keyStatusDisabled, contract.CodeDisabled},
		{keyStatusActive, contract.CodeValid},
	} {
		s.reset()
		active.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"status": step.status})
		if c := standby.code(t, s, contract.Request{APIKey: key}, now); c == step.want {
			t.Fatalf("standby answered %s before Invalidate: the test no longer proves anything", c)
		}
		for _, k := range s.putKeys {
			standby.Invalidate(context.Background(), k)
		}
		if c := standby.code(t, s, contract.Request{APIKey: key}, now); c != step.want {
			t.Fatalf("after Invalidate of %v: %s, want %s", s.putKeys, c, step.want)
		}
	}

	s.reset()
	active.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	if len(s.delKeys) == 0 {
		t.Fatal("revoke deleted nothing")
	}
	for _, k := range s.delKeys {
		standby.Invalidate(context.Background(), k)
	}
	if c := standby.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeNotFound {
		t.Fatalf("after Invalidate of %v: %s", s.delKeys, c)
	}
}

func TestRateLimitIsPerKeyAndRefills(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/metered", map[string]interface{}{"rate_limit": 2, "rate_limit_period": "10s"})
	k1 := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/metered", nil).Data["api_key"].(string)
	k2 := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/metered", nil).Data["api_key"].(string)
	now := time.Now()
	want := []string{contract.CodeValid, contract.CodeValid, contract.CodeRateLimited}
	for i, w := range want {
		if c := b.code(t, s, contract.Request{APIKey: k1}, now); c != w {
			t.Fatalf("call %d: %s, want %s", i, c, w)
		}
	}
	if c := b.code(t, s, contract.Request{APIKey: k2}, now); c != contract.CodeValid {
		t.Fatalf("second key limited by the first: %s", c)
	}
	// 2 per 10 s refills one token every 5 s.
	if c := b.code(t, s, contract.Request{APIKey: k1}, now.Add(5*time.Second)); c != contract.CodeValid {
		t.Fatalf("after refill: %s", c)
	}
}

func TestFailedIssueLeavesNothingBehind(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	before, err := s.List(context.Background(), keyIndexPrefix("acme"))
	if err != nil {
		t.Fatal(err)
	}
	s.failPut = hashPrefix
	resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "tenants/acme/creds/web", Storage: s})
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("issue succeeded with a failing storage")
	}
	s.failPut = ""
	after, err := s.List(context.Background(), keyIndexPrefix("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("failed issue left an index entry: %v -> %v", before, after)
	}
	hashes, _ := s.List(context.Background(), hashPrefix)
	if len(hashes) != len(before) {
		t.Fatalf("failed issue left %d records for %d keys", len(hashes), len(before))
	}
}

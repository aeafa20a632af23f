package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// attempt sends a request and returns its answer or error as they are, for
// tests of refusals.
func (b *backend) attempt(s logical.Storage, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	return b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: s})
}

// storedValues is every storage entry's raw value, for checks that a
// plaintext key is in none of them.
func storedValues(t *testing.T, s *countingStorage) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, k := range snapshot(t, s) {
		e, err := s.Storage.Get(ctx, k)
		if err != nil || e == nil {
			t.Fatalf("read %s: %v", k, err)
		}
		out[k] = string(e.Value)
	}
	return out
}

func TestKeyHintIsStoredAndShownNeverTheKey(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, issued := setupAcme(t, b, s)
	hint := keyformat.Hint(key)
	if hint == "" || issued.Data["hint"] != hint {
		t.Fatalf("issue answer hint %v, want %q", issued.Data["hint"], hint)
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["hint"]; got != hint {
		t.Fatalf("key read hint %v, want %q", got, hint)
	}
	b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": key})
	usage := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data["keys"].(map[string]interface{})
	if got := usage[id].(map[string]interface{})["hint"]; got != hint {
		t.Fatalf("usage key list hint %v, want %q", got, hint)
	}

	// Static keys: the first key and each rotation's, in static-creds, the
	// static key read and the key record.
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	creds := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data
	static := creds["api_key"].(string)
	if creds["hint"] != keyformat.Hint(static) {
		t.Fatalf("static-creds hint %v for %s", creds["hint"], keyformat.Hint(static))
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/static-keys/app", nil).Data["hint"]; got != keyformat.Hint(static) {
		t.Fatalf("static key read hint %v", got)
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+creds["key_id"].(string), nil).Data["hint"]; got != keyformat.Hint(static) {
		t.Fatalf("static key record hint %v", got)
	}

	// A dynamic key lives in storage as its HMAC and hint only.
	for k, v := range storedValues(t, s) {
		if strings.Contains(v, key) {
			t.Errorf("storage entry %s holds the plaintext dynamic key", k)
		}
		// Static keys are kept whole in their (seal-wrapped) entry
		// only: Vault Agent reads them there.
		if strings.Contains(v, static) && !strings.HasPrefix(k, staticPrefix) {
			t.Errorf("storage entry %s holds a static key's plaintext", k)
		}
	}

	// A key issued before hints existed shows an empty hint; nothing is
	// migrated.
	rec, err := readKeyRecord(context.Background(), s, issued.Secret.InternalData["hash"].(string))
	if err != nil {
		t.Fatal(err)
	}
	rec.Hint = ""
	if err := putJSON(context.Background(), s, hashPrefix+rec.Hash, "key record", rec); err != nil {
		t.Fatal(err)
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["hint"]; got != "" {
		t.Fatalf("a key without a stored hint shows %v", got)
	}
}

// usage=true adds each key's use to key_info (what the portal's key list
// shows), for one more storage read per key at most; without it key_info
// holds none and reads nothing more.
func TestKeyListWithUsage(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	idle := b.do(t, s, logical.UpdateOperation, "tenants/acme/creds/web", nil).Data["key_id"].(string)
	for range 2 {
		b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": key})
	}

	s.reset()
	resp := b.do(t, s, logical.ListOperation, "tenants/acme/keys/", map[string]interface{}{"usage": true})
	info := resp.Data["key_info"].(map[string]interface{})
	if s.gets > 3*len(info) || s.writes() != 0 {
		t.Fatalf("list with usage cost %d gets, %d writes for %d keys", s.gets, s.writes(), len(info))
	}
	used, unused := info[id].(map[string]interface{}), info[idle].(map[string]interface{})
	if used["verify_count"] != uint64(2) || used["last_used_at"] == nil || used["environment"] != "live" {
		t.Fatalf("key_info of the used key: %v", used)
	}
	if unused["verify_count"] != uint64(0) || unused["last_used_at"] != nil {
		t.Fatalf("key_info of the unused key: %v", unused)
	}

	plain := b.do(t, s, logical.ListOperation, "tenants/acme/keys/", nil).Data["key_info"].(map[string]interface{})
	if _, ok := plain[id].(map[string]interface{})["verify_count"]; ok {
		t.Fatalf("key_info without usage=true holds usage: %v", plain[id])
	}
}

func TestKeyListHasKeyInfo(t *testing.T) {
	b, s := newTestBackend(t)
	_, id, _ := setupAcme(t, b, s)
	named := b.do(t, s, logical.UpdateOperation, "tenants/acme/creds/web", map[string]interface{}{"name": "ci"})
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"status": "disabled"})

	s.reset()
	resp := b.do(t, s, logical.ListOperation, "tenants/acme/keys/", nil)
	ids := resp.Data["keys"].([]string)
	info := resp.Data["key_info"].(map[string]interface{})
	if len(ids) != 3 || len(info) != 3 {
		t.Fatalf("list: %d keys, %d key_info", len(ids), len(info))
	}
	// One List, and per key its index entry and its record: no more.
	if s.lists != 1 || s.gets != 2*len(ids) || s.writes() != 0 {
		t.Fatalf("list cost %d lists, %d gets, %d writes for %d keys", s.lists, s.gets, s.writes(), len(ids))
	}
	want := map[string]map[string]interface{}{
		id:                               {"name": "", "kind": kindDynamic, "status": keyStatusDisabled},
		named.Data["key_id"].(string):    {"name": "ci", "kind": kindDynamic, "status": keyStatusActive, "hint": named.Data["hint"]},
		firstStaticKeyID(t, b, s, "app"): {"name": "app", "kind": kindStatic, "status": keyStatusActive, "expires_at": nil},
	}
	for kid, fields := range want {
		ki, ok := info[kid].(map[string]interface{})
		if !ok {
			t.Fatalf("no key_info for %s: %v", kid, info)
		}
		for _, f := range []string{"hint", "name", "role", "kind", "environment", "status", "created_at", "expires_at"} {
			if _, ok := ki[f]; !ok {
				t.Errorf("key_info of %s lacks %s", kid, f)
			}
		}
		if ki["role"] != "web" || !strings.Contains(ki["hint"].(string), "…") {
			t.Errorf("key_info of %s: %v", kid, ki)
		}
		for f, v := range fields {
			if ki[f] != v {
				t.Errorf("key_info of %s: %s = %v, want %v", kid, f, ki[f], v)
			}
		}
	}
	for _, ki := range info {
		for f := range ki.(map[string]interface{}) {
			if f == "api_key" || f == "hash" || f == "edge_hash" {
				t.Fatalf("key_info shows %s", f)
			}
		}
	}

	// key_info is a page: limit keys after the key id given, in id order;
	// keys is every id, and a warning names where the next page starts.
	sorted := slices.Sorted(slices.Values(ids))
	seen := map[string]bool{}
	after := ""
	for page := 0; page < len(ids); page++ {
		s.reset()
		resp := b.do(t, s, logical.ListOperation, "tenants/acme/keys/", map[string]interface{}{"limit": 1, "after": after})
		pi := resp.Data["key_info"].(map[string]interface{})
		if len(resp.Data["keys"].([]string)) != len(ids) || len(pi) != 1 || pi[sorted[page]] == nil || s.gets != 2 {
			t.Fatalf("page %d after %q: %d keys, key_info %v, %d gets", page, after, len(resp.Data["keys"].([]string)), pi, s.gets)
		}
		if last := page == len(ids)-1; last != (len(resp.Warnings) == 0) || (!last && !strings.Contains(resp.Warnings[0], "after="+sorted[page])) {
			t.Fatalf("page %d: warnings %v", page, resp.Warnings)
		}
		seen[sorted[page]] = true
		after = sorted[page]
	}
	if len(seen) != len(ids) {
		t.Fatalf("the pages covered %d of %d keys", len(seen), len(ids))
	}
	for _, limit := range []int{0, maxKeyInfo + 1} {
		if resp, err := b.attempt(s, logical.ListOperation, "tenants/acme/keys/", map[string]interface{}{"limit": limit}); err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "limit") {
			t.Fatalf("limit %d: %v %v", limit, resp, err)
		}
	}

	// A record that cannot be read fails the list rather than answering
	// half of it; an index entry without a record is listed without info.
	hs := &hookStorage{Storage: s, beforeGet: func(_ context.Context, k string) error {
		if strings.HasPrefix(k, hashPrefix) {
			return errInjected
		}
		return nil
	}}
	if _, err := b.attempt(hs, logical.ListOperation, "tenants/acme/keys/", nil); !errors.Is(err, errInjected) {
		t.Fatalf("list over failing reads: %v", err)
	}
	if err := s.Delete(context.Background(), hashPrefix+named.Secret.InternalData["hash"].(string)); err != nil {
		t.Fatal(err)
	}
	resp = b.do(t, s, logical.ListOperation, "tenants/acme/keys/", nil)
	if n, ni := len(resp.Data["keys"].([]string)), len(resp.Data["key_info"].(map[string]interface{})); n != 3 || ni != 2 {
		t.Fatalf("with an orphaned index entry: %d keys, %d key_info", n, ni)
	}
}

func firstStaticKeyID(t *testing.T, b *backend, s logical.Storage, name string) string {
	t.Helper()
	return b.do(t, s, logical.ReadOperation, "tenants/acme/static-keys/"+name, nil).Data["key_id"].(string)
}

func TestKeyUpdateRefusesBadInputAndWritesNothing(t *testing.T) {
	b, s := newTestBackend(t)
	_, id, issued := setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h"})
	staticID := firstStaticKeyID(t, b, s, "app")
	expiry := issued.Data["expires_at"].(string)
	leaseEnd, err := time.Parse(time.RFC3339, expiry)
	if err != nil {
		t.Fatal(err)
	}
	key := "tenants/acme/keys/" + id
	for _, c := range []struct {
		name, path string
		data       map[string]interface{}
		field      string
	}{
		{"unknown status", key, map[string]interface{}{"status": "paused"}, "status"},
		{"long name", key, map[string]interface{}{"name": strings.Repeat("n", 129)}, "name"},
		{"bad metadata", key, map[string]interface{}{"metadata": []interface{}{"no-equals-sign"}}, "metadata"},
		{"expiry not a time", key, map[string]interface{}{"expires_at": "tomorrow"}, "expires_at"},
		{"expiry in the past", key, map[string]interface{}{"expires_at": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)}, "expires_at"},
		{"expiry past the lease", key, map[string]interface{}{"expires_at": leaseEnd.Add(time.Minute).Format(time.RFC3339)}, "expires_at"},
		{"expiry past the lease, with a valid status", key, map[string]interface{}{"status": "disabled", "expires_at": leaseEnd.Add(time.Minute).Format(time.RFC3339)}, "expires_at"},
		{"nothing to update", key, map[string]interface{}{}, "nothing to update"},
		{"static key name", "tenants/acme/keys/" + staticID, map[string]interface{}{"status": "disabled", "name": "x"}, "name"},
		{"static key metadata", "tenants/acme/keys/" + staticID, map[string]interface{}{"metadata": "a=b"}, "metadata"},
		{"static key expiry", "tenants/acme/keys/" + staticID, map[string]interface{}{"expires_at": time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}, "expires_at"},
		{"bad key id", "tenants/acme/keys/not-a-uuid", map[string]interface{}{"status": "disabled"}, "key_id"},
		{"bad tenant", "tenants/ACME/keys/" + id, map[string]interface{}{"status": "disabled"}, "tenant"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.reset()
			resp, err := b.attempt(s, logical.UpdateOperation, c.path, c.data)
			if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), c.field) {
				t.Fatalf("want a 400 naming %s, got %v %v", c.field, resp, err)
			}
			if w := s.writes(); w != 0 {
				t.Fatalf("a refused update wrote %d times: %v", w, s.putKeys)
			}
		})
	}
	// Another tenant's key, or none: 404, nothing written.
	b.do(t, s, logical.CreateOperation, "tenants/globex", map[string]interface{}{})
	for _, p := range []string{"tenants/globex/keys/" + id, "tenants/acme/keys/00000000-0000-0000-0000-000000000000"} {
		s.reset()
		_, err := b.attempt(s, logical.UpdateOperation, p, map[string]interface{}{"status": "disabled"})
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) || coded.Code() != http.StatusNotFound || s.writes() != 0 {
			t.Fatalf("%s: want 404 and no write, got %v (%d writes)", p, err, s.writes())
		}
	}
	if got := b.do(t, s, logical.ReadOperation, key, nil).Data; got["status"] != keyStatusActive || got["expires_at"] != expiry || got["updated_at"] != nil {
		t.Fatalf("the key changed after refused updates: %v", got)
	}
}

func TestDisabledKeyVerifiesDisabledOnTheNextRequest(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/office", map[string]interface{}{"allowed_cidrs": "10.0.0.0/8", "ttl": "1h"})
	office := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/office", nil)
	now := time.Now()
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeValid {
		t.Fatal(c)
	}

	resp := b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"status": "disabled", "name": "parked", "metadata": "why=audit"})
	if resp.Data["status"] != keyStatusDisabled || resp.Data["name"] != "parked" || fmt.Sprint(resp.Data["metadata"]) != "map[why:audit]" || resp.Data["updated_at"] == nil {
		t.Fatalf("update answer: %v", resp.Data)
	}
	// The cached key was replaced under its lock: the next verify answers
	// DISABLED from memory.
	s.reset()
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeDisabled {
		t.Fatalf("after disable: %s", c)
	}
	if s.gets != 0 {
		t.Fatalf("the verify after a disable read storage %d times: the cache was dropped, not updated", s.gets)
	}
	// Before the IP and scope checks, after the tenant's status.
	oid := office.Data["key_id"].(string)
	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+oid, map[string]interface{}{"status": "disabled"})
	if c := b.code(t, s, contract.Request{APIKey: office.Data["api_key"].(string), RequiredScopes: []string{"admin"}}, now); c != contract.CodeDisabled {
		t.Fatalf("disabled key outside its CIDRs: %s", c)
	}
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "suspended"})
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeTenantSuspended {
		t.Fatalf("disabled key of a suspended tenant: %s", c)
	}
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "active"})
	// A verify answer never reveals more for a disabled key.
	if d := b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": key}).Data; d["valid"] != false || d["code"] != contract.CodeDisabled || len(d) != 2 {
		t.Fatalf("verify answer of a disabled key: %v", d)
	}
	usage := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data["verify_by_code"].(map[string]uint64)
	if usage[contract.CodeDisabled] != 1 {
		t.Fatalf("verify_by_code: %v", usage)
	}
	// Disabled keys of a role share a profile, as active ones do.
	if p1, p2 := cachedProfile(t, b, key), cachedProfile(t, b, office.Data["api_key"].(string)); p1 == nil || !p1.disabled || !p2.disabled {
		t.Fatalf("profiles of disabled keys: %+v %+v", p1, p2)
	}

	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"status": "active"})
	if c := b.code(t, s, contract.Request{APIKey: key}, now); c != contract.CodeValid {
		t.Fatalf("after enable: %s", c)
	}
	if d := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data; d["status"] != keyStatusActive || d["name"] != "parked" {
		t.Fatalf("enabled key: %v", d)
	}
}

// cachedProfile is the profile the verify cache holds for key.
func cachedProfile(t *testing.T, b *backend, key string) *keyProfile {
	t.Helper()
	h, err := b.getHasher(context.Background(), nil, false)
	if err != nil || h == nil {
		t.Fatalf("hasher: %v", err)
	}
	sl, ok := b.cache.getKey(b.cache.locate(key), h.Sum(key))
	if !ok {
		return nil
	}
	return sl.profile
}

func TestExpiresAtShortensAKeyAndRenewalsKeepIt(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, issued := setupAcme(t, b, s)
	at := time.Now().Add(10 * time.Minute).UTC().Truncate(time.Second)
	d := b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"expires_at": at.Format(time.RFC3339)}).Data
	if d["expires_at"] != at.Format(time.RFC3339) {
		t.Fatalf("expires_at after update: %v", d["expires_at"])
	}
	if c := b.code(t, s, contract.Request{APIKey: key}, at.Add(-time.Second)); c != contract.CodeValid {
		t.Fatalf("before the new expiry: %s", c)
	}
	if c := b.code(t, s, contract.Request{APIKey: key}, at); c != contract.CodeExpired {
		t.Fatalf("at the new expiry: %s", c)
	}
	// A renewal asks for the full hour: the lease gets what is left up to
	// expires_at, and the key's expiry stays.
	sec := issued.Secret
	sec.IssueTime = time.Now()
	sec.Increment = time.Hour
	resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.RenewOperation, Storage: s, Secret: sec})
	if err != nil || resp.IsError() {
		t.Fatalf("renew: %v %v", resp, err)
	}
	if ttl := resp.Secret.TTL; ttl > 10*time.Minute || ttl < 9*time.Minute {
		t.Fatalf("renewed TTL %s, want what is left to expires_at", ttl)
	}
	// Vault recomputes the TTL from the increment, capped by the lease's
	// issue time plus MaxTTL: that must be expires_at.
	if end := sec.IssueTime.Truncate(time.Second).Add(resp.Secret.MaxTTL); end.After(at) || end.Before(at.Add(-time.Second)) {
		t.Fatalf("lease may run to %s, past expires_at %s", end, at)
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["expires_at"]; got != at.Format(time.RFC3339) {
		t.Fatalf("a renewal moved expires_at to %v", got)
	}
	// Shorter again is fine; later than the pinned expiry is not.
	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"expires_at": at.Add(-time.Minute).Format(time.RFC3339)})
	resp, err = b.attempt(s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"expires_at": at.Format(time.RFC3339)})
	if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "expires_at") {
		t.Fatalf("extending a shortened key: %v %v", resp, err)
	}
}

// A static key parked through one of its keys stays parked across
// rotations: its current and rotated-out keys and every new one answer
// DISABLED until it is enabled, through any of its keys.
func TestDisabledStaticKeyStaysDisabledAcrossRotation(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
	first := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data
	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+first["key_id"].(string), map[string]interface{}{"status": "disabled"})
	if c := b.code(t, s, contract.Request{APIKey: first["api_key"].(string)}, time.Now()); c != contract.CodeDisabled {
		t.Fatalf("disabled static key: %s", c)
	}
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	second := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data
	if second["disabled"] != true || second["key_id"] == first["key_id"] {
		t.Fatalf("static-creds after a rotation while parked: disabled %v, key_id %v (first %v)", second["disabled"], second["key_id"], first["key_id"])
	}
	for name, k := range map[string]string{"rotated-out": first["api_key"].(string), "new": second["api_key"].(string)} {
		if c := b.code(t, s, contract.Request{APIKey: k}, time.Now()); c != contract.CodeDisabled {
			t.Fatalf("%s key of a parked static key: %s", name, c)
		}
	}
	if st := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+second["key_id"].(string), nil).Data["status"]; st != keyStatusDisabled {
		t.Fatalf("new key's status %v", st)
	}
	// Enabled through the rotated-out key: the whole static key is back.
	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+first["key_id"].(string), map[string]interface{}{"status": "active"})
	for name, k := range map[string]string{"rotated-out": first["api_key"].(string), "current": second["api_key"].(string)} {
		if c := b.code(t, s, contract.Request{APIKey: k}, time.Now()); c != contract.CodeValid {
			t.Fatalf("%s key after enable: %s", name, c)
		}
	}
	if d := b.do(t, s, logical.ReadOperation, "tenants/acme/static-keys/app", nil).Data; d["disabled"] != false {
		t.Fatalf("static key after enable: %v", d)
	}
}

package backend

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// faultCase is one write path run with storage "crashing" at its n-th write
// (that write and every later one fail), then retried on a healthy storage.
type faultCase struct {
	name string
	// setup prepares state and returns what the op needs.
	setup func(t *testing.T, b *backend, s *countingStorage) map[string]string
	op    func(b *backend, s *countingStorage, st map[string]string) error
	// done checks the state after a successful op.
	done func(t *testing.T, b *backend, s *countingStorage, st map[string]string)
}

func request(b *backend, s logical.Storage, op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: s})
	if err == nil && resp != nil && resp.IsError() {
		err = resp.Error()
	}
	return resp, err
}

func revokeLease(b *backend, s logical.Storage, resp *logical.Response) error {
	_, err := b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation, Storage: s,
		Secret: &logical.Secret{InternalData: resp.Secret.InternalData},
	})
	return err
}

func TestWritePathsSurviveAFailureAtEveryWrite(t *testing.T) {
	var leased *logical.Response
	cases := []faultCase{
		{
			name:  "issue",
			setup: func(t *testing.T, b *backend, s *countingStorage) map[string]string { setupAcme(t, b, s); return nil },
			op: func(b *backend, s *countingStorage, _ map[string]string) error {
				_, err := request(b, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
				return err
			},
			done: func(t *testing.T, b *backend, s *countingStorage, _ map[string]string) {
				if ids, _ := s.List(context.Background(), keyIndexPrefix("acme")); len(ids) != 2 {
					t.Fatalf("issue after retry: %d keys, want 2", len(ids))
				}
			},
		},
		{
			name: "lease revoke",
			setup: func(t *testing.T, b *backend, s *countingStorage) map[string]string {
				key, _, resp := setupAcme(t, b, s)
				leased = resp
				return map[string]string{"key": key}
			},
			op: func(b *backend, s *countingStorage, _ map[string]string) error { return revokeLease(b, s, leased) },
			done: func(t *testing.T, b *backend, s *countingStorage, st map[string]string) {
				if c := b.code(t, s, contract.Request{APIKey: st["key"]}, time.Now()); c != contract.CodeNotFound {
					t.Fatalf("revoked key: %s", c)
				}
			},
		},
		{
			name: "tenant force delete",
			setup: func(t *testing.T, b *backend, s *countingStorage) map[string]string {
				key, _, _ := setupAcme(t, b, s)
				b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
				b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h"})
				return map[string]string{"key": key}
			},
			op: func(b *backend, s *countingStorage, _ map[string]string) error {
				_, err := request(b, s, logical.DeleteOperation, "tenants/acme", map[string]interface{}{"force": true})
				return err
			},
			done: func(t *testing.T, b *backend, s *countingStorage, st map[string]string) {
				ctx := context.Background()
				for _, p := range []string{keyIndexPrefix("acme"), hashPrefix, staticKeyPrefix("acme"), rolePrefix("acme")} {
					if left, _ := s.List(ctx, p); len(left) != 0 {
						t.Fatalf("%s left after tenant delete: %v", p, left)
					}
				}
				if c := b.code(t, s, contract.Request{APIKey: st["key"]}, time.Now()); c != contract.CodeNotFound {
					t.Fatalf("key of deleted tenant: %s", c)
				}
			},
		},
		{
			// A disable that fails part way is completed by sending it
			// again: the record and the edge feed both end up disabled.
			name: "key disable",
			setup: func(t *testing.T, b *backend, s *countingStorage) map[string]string {
				key, id, _ := setupAcme(t, b, s)
				return map[string]string{"key": key, "id": id}
			},
			op: func(b *backend, s *countingStorage, st map[string]string) error {
				_, err := request(b, s, logical.UpdateOperation, "tenants/acme/keys/"+st["id"], map[string]interface{}{"status": "disabled"})
				return err
			},
			done: func(t *testing.T, b *backend, s *countingStorage, st map[string]string) {
				if c := b.code(t, s, contract.Request{APIKey: st["key"]}, time.Now()); c != contract.CodeDisabled {
					t.Fatalf("disabled key: %s", c)
				}
				assertFeedSaysDisabled(t, s, st["id"])
			},
		},
		{
			name: "static key disable",
			setup: func(t *testing.T, b *backend, s *countingStorage) map[string]string {
				setupAcme(t, b, s)
				b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
				prev := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data
				b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
				cur := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data
				return map[string]string{"prev": prev["api_key"].(string), "prev_id": prev["key_id"].(string), "cur": cur["api_key"].(string), "cur_id": cur["key_id"].(string)}
			},
			op: func(b *backend, s *countingStorage, st map[string]string) error {
				_, err := request(b, s, logical.UpdateOperation, "tenants/acme/keys/"+st["cur_id"], map[string]interface{}{"status": "disabled"})
				return err
			},
			done: func(t *testing.T, b *backend, s *countingStorage, st map[string]string) {
				for _, k := range []string{"prev", "cur"} {
					if c := b.code(t, s, contract.Request{APIKey: st[k]}, time.Now()); c != contract.CodeDisabled {
						t.Fatalf("%s key of the disabled static key: %s", k, c)
					}
					assertFeedSaysDisabled(t, s, st[k+"_id"])
				}
				if e, _ := readStaticKey(context.Background(), s, "acme", "app"); e == nil || !e.Disabled {
					t.Fatalf("static key entry not parked: %+v", e)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for n := 1; ; n++ {
				// A single failed write: the operation fails cleanly, and
				// storage holds exactly what it held before.
				b, s := newTestBackend(t)
				st := tc.setup(t, b, s)
				before := snapshot(t, s)
				s.reset()
				s.failAt, s.failOnce = n, true
				err := tc.op(b, s, st)
				s.failAt, s.failOnce = 0, false
				if err == nil {
					if n == 1 {
						t.Fatal("the operation wrote nothing?")
					}
					t.Logf("%s: %d writes, each failed in turn", tc.name, n-1)
					tc.done(t, b, s, st)
					return
				}
				// The edge feed is a log: a failed issue may append an
				// entry and its undo (path_sync_test.go checks the feed).
				if after := snapshot(t, s); tc.name == "issue" && !equalKeys(withoutEdgeFeed(before), withoutEdgeFeed(after)) {
					t.Fatalf("write %d: failed issue left %v (before %v)", n, after, before)
				}
				assertEveryRecordIndexed(t, s, n)

				// A crash at that write: nothing after it lands. No key may
				// verify without being listed under its tenant, and a
				// restarted node (cold caches) retries and completes; tidy
				// collects an index entry a crashed issue left behind.
				b, s = newTestBackend(t)
				st = tc.setup(t, b, s)
				s.reset()
				s.failAt = n
				if err := tc.op(b, s, st); err == nil {
					t.Fatalf("write %d: a crash at this write went unnoticed", n)
				}
				s.failAt = 0
				assertEveryRecordIndexed(t, s, n)
				b2, _ := newTestBackendOn(t, s)
				if err := tc.op(b2, s, st); err != nil {
					t.Fatalf("write %d: retry failed: %v", n, err)
				}
				if err := b2.runTidy(context.Background(), s, 0, 100, time.Now); err != nil {
					t.Fatal(err)
				}
				tc.done(t, b2, s, st)
				assertEveryRecordIndexed(t, s, n)
			}
		})
	}
}

func snapshot(t *testing.T, s logical.Storage) []string {
	t.Helper()
	keys, err := logical.CollectKeys(context.Background(), s.(*countingStorage).Storage.(*logical.InmemStorage))
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func withoutEdgeFeed(keys []string) []string {
	return slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return strings.HasPrefix(k, "edge/") })
}

func equalKeys(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func assertEveryRecordIndexed(t *testing.T, s logical.Storage, n int) {
	t.Helper()
	ctx := context.Background()
	hashes, _ := s.List(ctx, hashPrefix)
	for _, h := range hashes {
		rec, err := readKeyRecord(ctx, s, h)
		if err != nil || rec == nil {
			t.Fatalf("write %d: record %s unreadable: %v", n, h, err)
		}
		if p, _ := readKeyPointer(ctx, s, rec.Tenant, rec.KeyID); p == nil || p.Hash != h {
			t.Fatalf("write %d: key %s verifies but is not listed under tenant %s", n, rec.KeyID, rec.Tenant)
		}
	}
}

// TestUsageFlushSurvivesAFailureAtEveryWrite: a flush that fails at any of
// its writes leaves every stored usage entry whole (each is one write) and
// the unwritten ones dirty, so the next flush completes the figures.
func TestUsageFlushSurvivesAFailureAtEveryWrite(t *testing.T) {
	for n := 1; ; n++ {
		b, s := newTestBackend(t)
		k1, id1, _ := setupAcme(t, b, s)
		k2 := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil).Data["api_key"].(string)
		for _, k := range []string{k1, k1, k2} {
			b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": k})
		}
		ctx := context.Background()
		s.reset()
		s.failAt, s.failOnce = n, true
		_, err := b.usage.flush(ctx, s, 100, time.Now())
		s.failAt, s.failOnce = 0, false
		if err == nil {
			if n == 1 {
				t.Fatal("the flush wrote nothing")
			}
			t.Logf("usage flush: %d writes, each failed in turn", n-1)
			return
		}
		if _, err := b.usage.flush(ctx, s, 100, time.Now()); err != nil {
			t.Fatalf("write %d: retry: %v", n, err)
		}
		tu, err := readTenantUsage(ctx, s, "acme")
		if err != nil || tu == nil || tu.VerifyByCode[contract.CodeValid] != 3 {
			t.Fatalf("write %d: tenant usage after retry: %+v %v", n, tu, err)
		}
		ku, err := readKeyUsage(ctx, s, "acme", id1)
		if err != nil || ku == nil || ku.VerifyCount != 2 {
			t.Fatalf("write %d: key usage after retry: %+v %v", n, ku, err)
		}
	}
}

// assertFeedSaysDisabled checks that the newest upsert of key id on the edge
// feed carries the disabled flag: edges would keep answering VALID
// otherwise.
func assertFeedSaysDisabled(t *testing.T, s logical.Storage, id string) {
	t.Helper()
	var f edgeFeed
	changes, _, ok, err := f.changesSince(context.Background(), s, 0, 1<<20)
	if err != nil || !ok {
		t.Fatalf("read the edge feed: %v %v", ok, err)
	}
	var last *contract.Change
	for _, c := range changes {
		if c.Op == contract.OpUpsert && c.KeyID == id {
			last = c
		}
	}
	if last == nil || !last.Key.Disabled {
		t.Fatalf("the edge feed's last upsert of %s is %+v, not disabled", id, last)
	}
}

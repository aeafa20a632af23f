package backend

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func createStatic(t *testing.T, b *backend, s logical.Storage, data map[string]interface{}) {
	t.Helper()
	setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", data)
}

func staticCreds(t *testing.T, b *backend, s logical.Storage) (key, id string) {
	t.Helper()
	resp := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil)
	return resp.Data["api_key"].(string), resp.Data["key_id"].(string)
}

func TestStaticKeyRotationKeepsOldKeyInGrace(t *testing.T) {
	b, s := newTestBackend(t)
	createStatic(t, b, s, map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
	k1, id1 := staticCreds(t, b, s)
	out, err := b.verify(context.Background(), s, &contract.Request{APIKey: k1}, time.Now())
	if err != nil || out.Code != contract.CodeValid || out.Key.profile.kind != kindStatic || out.Key.inGrace {
		t.Fatalf("first key: %v %+v", err, out)
	}

	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	k2, id2 := staticCreds(t, b, s)
	if k2 == k1 || id2 == id1 {
		t.Fatal("rotate did not change the key")
	}
	now := time.Now()
	out, _ = b.verify(context.Background(), s, &contract.Request{APIKey: k1}, now)
	if out.Code != contract.CodeValid || !out.Key.inGrace {
		t.Fatalf("old key right after rotation: %+v", out)
	}
	if c := b.code(t, s, contract.Request{APIKey: k2}, now); c != contract.CodeValid {
		t.Fatalf("new key: %s", c)
	}
	if c := b.code(t, s, contract.Request{APIKey: k1}, now.Add(11*time.Minute)); c != contract.CodeExpired {
		t.Fatalf("old key after grace: %s", c)
	}
	// The engine then removes it for good.
	lock := b.tenantLock("acme")
	lock.Lock()
	_, err = b.rotateIfDue(context.Background(), s, "acme", "app", now.Add(11*time.Minute))
	lock.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if c := b.code(t, s, contract.Request{APIKey: k1}, now); c != contract.CodeNotFound {
		t.Fatalf("old key after cleanup: %s", c)
	}
	ids, _ := s.List(context.Background(), keyIndexPrefix("acme"))
	if len(ids) != 2 { // the dynamic key of setupAcme and the current static key
		t.Fatalf("keys left: %v", ids)
	}
}

// A static key whose role was deleted keeps rotating with what its current
// key was issued with: the role's scopes and metadata included.
func TestStaticKeyRotatesAfterItsRoleIsDeleted(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/svc", map[string]interface{}{
		"scopes": "read", "metadata": map[string]interface{}{"team": "payments", "tier": "gold"}, "ttl": "1h",
	})
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{
		"role": "svc", "rotation_period": "1h", "metadata": map[string]interface{}{"tier": "silver", "owner": "ops"},
	})
	b.do(t, s, logical.DeleteOperation, "tenants/acme/roles/svc", nil)
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	k2, _ := staticCreds(t, b, s)
	out, err := b.verify(context.Background(), s, &contract.Request{APIKey: k2, RequiredScopes: []string{"read"}}, time.Now())
	if err != nil || out.Code != contract.CodeValid {
		t.Fatalf("key after rotation: %v %+v", err, out)
	}
	want := map[string]string{"team": "payments", "tier": "silver", "owner": "ops"}
	if got := out.Key.profile.metadata; !maps.Equal(got, want) {
		t.Fatalf("metadata after rotation without the role: %v, want %v", got, want)
	}
	if c := b.code(t, s, contract.Request{APIKey: k2, RequiredScopes: []string{"write"}}, time.Now()); c != contract.CodeInsufficientScope {
		t.Fatalf("scope the role never had: %s", c)
	}
}

func TestStaticKeyScheduledRotationIsDue(t *testing.T) {
	b, s := newTestBackend(t)
	createStatic(t, b, s, map[string]interface{}{"role": "web", "rotation_schedule": "*/5 * * * *", "grace_period": "1m"})
	e, err := readStaticKey(context.Background(), s, "acme", "app")
	if err != nil {
		t.Fatal(err)
	}
	if e.NextRotation.Minute()%5 != 0 || e.NextRotation.Second() != 0 || time.Until(e.NextRotation) > 5*time.Minute {
		t.Fatalf("next rotation %s is not the next 5-minute mark", e.NextRotation)
	}
	lock := b.tenantLock("acme")
	lock.Lock()
	before := e.CurrentID
	e, err = b.rotateIfDue(context.Background(), s, "acme", "app", e.NextRotation.Add(time.Second))
	lock.Unlock()
	if err != nil || e.CurrentID == before {
		t.Fatalf("scheduled rotation did not happen: %v", err)
	}
}

func TestStaticKeyBadInput(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	for name, tc := range map[string]struct {
		data  map[string]interface{}
		field string
	}{
		"bad cron":             {map[string]interface{}{"role": "web", "rotation_schedule": "every day"}, "rotation_schedule"},
		"six-field cron":       {map[string]interface{}{"role": "web", "rotation_schedule": "0 0 3 * * *"}, "rotation_schedule"},
		"grace equals period":  {map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "1h"}, "grace_period"},
		"grace above schedule": {map[string]interface{}{"role": "web", "rotation_schedule": "0 * * * *", "grace_period": "2h"}, "grace_period"},
		"period too short":     {map[string]interface{}{"role": "web", "rotation_period": "2s"}, "rotation_period"},
		"unknown role":         {map[string]interface{}{"role": "nope", "rotation_period": "1h"}, "role"},
		"no role":              {map[string]interface{}{"rotation_period": "1h"}, "role"},
		"no rotation":          {map[string]interface{}{"role": "web"}, "rotation_period"},
		"both rotations":       {map[string]interface{}{"role": "web", "rotation_period": "1h", "rotation_schedule": "0 * * * *"}, "rotation_schedule"},
		"window without cron":  {map[string]interface{}{"role": "web", "rotation_period": "1h", "rotation_window": "10m"}, "rotation_window"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.CreateOperation, Path: "tenants/acme/static-keys/app", Data: tc.data, Storage: s,
			})
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("want a 400, got %v %v", resp, err)
			}
			code, _ := logical.RespondErrorCommon(&logical.Request{}, resp, nil)
			if code != http.StatusBadRequest || !strings.Contains(resp.Error().Error(), tc.field) {
				t.Fatalf("HTTP %d %q does not name %s", code, resp.Error(), tc.field)
			}
		})
	}
	if names, _ := s.List(context.Background(), staticKeyPrefix("acme")); len(names) != 0 {
		t.Fatalf("rejected creates left static keys: %v", names)
	}
}

// A storage failure while a static key's fields are checked is the
// server's fault: a 500 carrying the storage error, not a 400 that sends
// the caller looking for a mistake in its request.
func TestStaticKeyStorageFailureIsAServerError(t *testing.T) {
	b, s := newTestBackend(t)
	createStatic(t, b, s, map[string]interface{}{"role": "web", "rotation_period": "1h"})
	down := errors.New("storage unavailable")
	fs := &hookStorage{Storage: s, beforeGet: func(_ context.Context, k string) error {
		if k == rolePrefix("acme")+"web" {
			return down
		}
		return nil
	}}
	for name, tc := range map[string]struct {
		op   logical.Operation
		path string
	}{
		"create": {logical.CreateOperation, "tenants/acme/static-keys/other"},
		"update": {logical.UpdateOperation, "tenants/acme/static-keys/app"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := b.HandleRequest(context.Background(), &logical.Request{
				Operation: tc.op, Path: tc.path, Storage: fs,
				Data: map[string]interface{}{"role": "web", "rotation_period": "2h"},
			})
			if !errors.Is(err, down) {
				t.Fatalf("want the storage error, got %v %v", resp, err)
			}
			if code, _ := logical.RespondErrorCommon(&logical.Request{}, resp, err); code != http.StatusInternalServerError {
				t.Fatalf("HTTP %d, want 500", code)
			}
		})
	}
	if names, _ := s.List(context.Background(), staticKeyPrefix("acme")); len(names) != 1 {
		t.Fatalf("failed writes changed the static keys: %v", names)
	}
	resp := b.do(t, s, logical.ReadOperation, "tenants/acme/static-keys/app", nil)
	if got := resp.Data["rotation_period"]; got != int64(3600) {
		t.Fatalf("failed update changed rotation_period to %v", got)
	}
}

// TestRotationSurvivesAFailureAtEveryWrite crashes a rotation at each of its
// writes in turn (that write and all after it fail, so not even the inline
// undo lands), restarts the backend over the same storage, and checks
// that the static key still has a valid key, nothing is orphaned, and the
// next rotation works.
func TestRotationSurvivesAFailureAtEveryWrite(t *testing.T) {
	for n := 1; ; n++ {
		b, s := newTestBackend(t)
		createStatic(t, b, s, map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
		// A first rotation so the failing one also has a previous key to drop.
		b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
		before, _ := staticCreds(t, b, s)

		s.reset()
		s.failAt = n
		resp, err := b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "tenants/acme/static-keys/app/rotate", Storage: s,
		})
		failed := err != nil || (resp != nil && resp.IsError())
		s.failAt = 0
		if !failed {
			if n < 3 {
				t.Fatalf("rotation has only %d writes?", n-1)
			}
			t.Logf("a rotation has %d writes; every one was failed in turn", n-1)
			return
		}

		// Restart: a new backend over the same storage recovers on start.
		b2, _ := newTestBackendOn(t, s)
		if err := b2.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
			t.Fatalf("write %d: initialize: %v", n, err)
		}
		b2.rotations.stop()
		cur, _ := staticCreds(t, b2, s)
		if c := b2.code(t, s, contract.Request{APIKey: cur}, time.Now()); c != contract.CodeValid {
			t.Fatalf("write %d: current key after recovery: %s", n, c)
		}
		if cur != before {
			// The rotation committed: the key it replaced is in its grace.
			if c := b2.code(t, s, contract.Request{APIKey: before}, time.Now()); c != contract.CodeValid {
				t.Fatalf("write %d: replaced key after recovery: %s", n, c)
			}
		}
		wals, _ := framework.ListWAL(context.Background(), s)
		if len(wals) != 0 {
			t.Fatalf("write %d: WAL left after recovery: %v", n, wals)
		}
		assertNoOrphans(t, s, n)
		b2.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
		next, _ := staticCreds(t, b2, s)
		if c := b2.code(t, s, contract.Request{APIKey: next}, time.Now()); c != contract.CodeValid {
			t.Fatalf("write %d: rotation after recovery: %s", n, c)
		}
		assertNoOrphans(t, s, n)
	}
}

// assertNoOrphans: every key record is indexed under its tenant, every index
// entry points at a record, and the static key holds at most two keys.
func assertNoOrphans(t *testing.T, s logical.Storage, n int) {
	t.Helper()
	ctx := context.Background()
	hashes, _ := s.List(ctx, hashPrefix)
	ids, _ := s.List(ctx, keyIndexPrefix("acme"))
	indexed := map[string]bool{}
	for _, id := range ids {
		p, err := readKeyPointer(ctx, s, "acme", id)
		if err != nil || p == nil {
			t.Fatalf("write %d: index %s: %v", n, id, err)
		}
		rec, _ := readKeyRecord(ctx, s, p.Hash)
		if rec == nil {
			t.Fatalf("write %d: index entry %s points at no record", n, id)
		}
		indexed[p.Hash] = true
	}
	for _, h := range hashes {
		if !indexed[h] {
			t.Fatalf("write %d: record %s is not indexed (orphan)", n, h)
		}
	}
	// setupAcme's dynamic key + current + at most one previous.
	if len(ids) > 3 {
		t.Fatalf("write %d: %d keys for one static key", n, len(ids)-1)
	}
}

func TestPeriodicRotationDoesNotDrift(t *testing.T) {
	b, s := newTestBackend(t)
	createStatic(t, b, s, map[string]interface{}{"role": "web", "rotation_period": "10s", "grace_period": "5s"})
	e, _ := readStaticKey(context.Background(), s, "acme", "app")
	due := e.NextRotation
	lock := b.tenantLock("acme")
	lock.Lock()
	defer lock.Unlock()
	// The engine's tick lands 700 ms after the due time.
	e, err := b.rotateIfDue(context.Background(), s, "acme", "app", due.Add(700*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if !e.NextRotation.Equal(due.Add(10 * time.Second)) {
		t.Fatalf("next rotation %s, want %s (no drift)", e.NextRotation, due.Add(10*time.Second))
	}
	// A node that was down for several periods restarts the cycle from now.
	late := e.NextRotation.Add(35 * time.Second)
	e, err = b.rotateIfDue(context.Background(), s, "acme", "app", late)
	if err != nil {
		t.Fatal(err)
	}
	if !e.NextRotation.Equal(late.Add(10 * time.Second)) {
		t.Fatalf("after downtime: next rotation %s, want %s", e.NextRotation, late.Add(10*time.Second))
	}
}

// A storage error while the rotation queue loads fails Initialize at once
// (it hung, waiting for a rotation loop that never started), monitoring
// starts regardless, and rotation starts by itself once storage recovers.
func TestInitializeSurvivesAQueueLoadFailure(t *testing.T) {
	b, s := newTestBackend(t)
	createStatic(t, b, s, map[string]interface{}{"role": "web", "rotation_period": "1h"})
	b.rotations.startRetry = 10 * time.Millisecond
	s.mu.Lock()
	s.failList = staticPrefix
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- b.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}) }()
	select {
	case err := <-done:
		if !errors.Is(err, errInjected) {
			t.Fatalf("initialize with the queue unreadable: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("initialize hung after the rotation queue failed to load")
	}
	b.monMu.Lock()
	monitoring := b.scanCancel != nil
	b.monMu.Unlock()
	if !monitoring {
		t.Fatal("monitoring did not start because rotation could not")
	}

	s.mu.Lock()
	s.failList = ""
	s.mu.Unlock()
	testvault.WaitFor(t, 10*time.Second, "the rotation queue to load once storage recovered", func() error {
		b.rotations.mu.Lock()
		defer b.rotations.mu.Unlock()
		if n := b.rotations.q.Len(); n != 1 {
			return fmt.Errorf("%d items, want 1", n)
		}
		return nil
	})
	cleaned := make(chan struct{})
	go func() { b.Clean(context.Background()); close(cleaned) }()
	select {
	case <-cleaned:
	case <-time.After(10 * time.Second):
		t.Fatal("cleanup hung")
	}
}

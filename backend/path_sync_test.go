package backend

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func (b *backend) changes(t *testing.T, s logical.Storage, since uint64) ([]*contract.Change, uint64) {
	t.Helper()
	resp := b.do(t, s, logical.ReadOperation, "sync/changes", map[string]interface{}{"since": int(since)})
	return resp.Data["changes"].([]*contract.Change), resp.Data["seq"].(uint64)
}

func TestEdgeFeedRecordsWritesOnly(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)

	snap := b.do(t, s, logical.ReadOperation, "sync/snapshot", nil)
	keys := snap.Data["keys"].([]*contract.WireKey)
	if len(keys) != 1 || keys[0].KeyID != id || keys[0].Tenant != "acme" {
		t.Fatalf("snapshot keys: %+v", keys)
	}
	if snap.Data["tenants"].(map[string]string)["acme"] != contract.TenantActive {
		t.Fatalf("snapshot tenants: %v", snap.Data["tenants"])
	}
	// The edge hashes a presented key with the secret it was given and
	// finds the key's entry; the secret is not the storage pepper.
	secret, err := base64.StdEncoding.DecodeString(snap.Data["verifier_key"].(string))
	if err != nil {
		t.Fatal(err)
	}
	eh, err := keyformat.NewHasher(secret)
	if err != nil {
		t.Fatal(err)
	}
	sum := eh.Sum(key)
	if hex.EncodeToString(sum[:]) != keys[0].EdgeHash {
		t.Fatal("edge hash of the issued key does not match the snapshot")
	}
	ph, err := b.getHasher(context.Background(), s, false)
	if err != nil {
		t.Fatal(err)
	}
	if ps := ph.Sum(key); hex.EncodeToString(ps[:]) == keys[0].EdgeHash {
		t.Fatal("edge hash equals the storage hash: the verifier secret is the pepper")
	}

	all, seq := b.changes(t, s, 0)
	// The new tenant's status, then the key.
	if len(all) != 2 || all[0].Op != contract.OpTenant || all[1].Op != contract.OpUpsert || all[1].Key.KeyID != id {
		t.Fatalf("changes after issue: %+v", all)
	}
	if snap.Data["seq"].(uint64) != seq {
		t.Fatalf("snapshot seq %v, feed seq %d", snap.Data["seq"], seq)
	}

	// Verify, valid or not, records nothing and writes nothing.
	s.reset()
	for i := 0; i < 3; i++ {
		b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": key})
		b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": regenerate(t, key)})
	}
	if s.writes() != 0 {
		t.Fatalf("verify wrote storage %d times", s.writes())
	}
	if c, _ := b.changes(t, s, seq); len(c) != 0 {
		t.Fatalf("verify recorded changes: %+v", c)
	}

	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": contract.TenantSuspended})
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"display_name": "Acme"})
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	c, last := b.changes(t, s, seq)
	if len(c) != 2 {
		t.Fatalf("want suspension and revocation only, got %+v", c)
	}
	if c[0].Op != contract.OpTenant || c[0].Tenant != "acme" || c[0].TenantStatus != contract.TenantSuspended {
		t.Fatalf("suspension: %+v", c[0])
	}
	if c[1].Op != contract.OpDelete || c[1].KeyID != id {
		t.Fatalf("revocation: %+v", c[1])
	}
	if last != c[1].Seq {
		t.Fatalf("seq %d, last change %d", last, c[1].Seq)
	}
}

func TestEdgeFeedStaticRotation(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	_, seq := b.changes(t, s, 0)
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/svc", map[string]interface{}{"role": "web", "rotation_period": "24h", "grace_period": "1h"})
	_, seq2 := b.changes(t, s, seq)
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/svc/rotate", nil)
	c, _ := b.changes(t, s, seq2)
	var newKey, grace bool
	for _, ch := range c {
		if ch.Op == contract.OpUpsert && ch.Key.Kind == kindStatic {
			if ch.Key.InGrace {
				grace = true
			} else {
				newKey = true
			}
		}
	}
	if !newKey || !grace {
		t.Fatalf("rotation: want the new key and the old key in grace, got %+v", c)
	}
}

func TestEdgeFeedCompactionAsksForResync(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	for i := 0; i < 4; i++ {
		b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	}
	_, seq := b.changes(t, s, 0)
	if seq != 6 {
		t.Fatalf("seq %d after a new tenant and 5 issues", seq)
	}
	n, err := b.feed.compact(context.Background(), s, 2)
	if err != nil || n != 4 {
		t.Fatalf("compact: removed %d, %v", n, err)
	}
	if c, _ := b.changes(t, s, 4); len(c) != 2 {
		t.Fatalf("kept changes: %d", len(c))
	}
	for _, since := range []int{0, 3, 7} {
		_, err := b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.ReadOperation, Path: "sync/changes", Storage: s,
			Data: map[string]interface{}{"since": since},
		})
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) || coded.Code() != http.StatusGone || !strings.Contains(err.Error(), "resync") {
			t.Fatalf("since=%d: want 410 resync, got %v", since, err)
		}
	}
	// A fresh backend over the same storage (a restart) continues the
	// sequence and keeps the compaction point.
	b2, _ := newTestBackendOn(t, s)
	b2.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	if c, last := b2.changes(t, s, 6); len(c) != 1 || last != 7 {
		t.Fatalf("after restart: %d changes, seq %d", len(c), last)
	}
}

// waitingPolls is how many sync/changes long polls wait for a change.
func (f *edgeFeed) waitingPolls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waiting
}

func TestEdgeFeedLongPoll(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	_, seq := b.changes(t, s, 0)
	done := make(chan *logical.Response, 1)
	go func() {
		resp, err := b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.ReadOperation, Path: "sync/changes", Storage: s,
			Data: map[string]interface{}{"since": int(seq), "wait": 30},
		})
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	// The poll found nothing and waits: the change below must wake it, and
	// can no longer be there on its first look.
	testvault.WaitFor(t, 10*time.Second, "the long poll to wait", func() bool { return b.feed.waitingPolls() == 1 })
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": contract.TenantSuspended})
	var resp *logical.Response
	select {
	case resp = <-done:
	case <-time.After(20 * time.Second): // the poll's own wait is 30 s
		t.Fatal("long poll was not woken by the change")
	}
	if c := resp.Data["changes"].([]*contract.Change); len(c) != 1 || c[0].Op != contract.OpTenant {
		t.Fatalf("long poll: %+v", c)
	}
	if n := b.feed.waitingPolls(); n != 0 {
		t.Fatalf("%d polls still counted as waiting after the answer", n)
	}

	// With nothing to report, it returns empty after the wait.
	resp = b.do(t, s, logical.ReadOperation, "sync/changes", map[string]interface{}{"since": int(seq + 1), "wait": 1})
	if c := resp.Data["changes"].([]*contract.Change); len(c) != 0 {
		t.Fatalf("empty poll: %+v", c)
	}
	resp, _ = b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.ReadOperation, Path: "sync/changes", Storage: s,
		Data: map[string]interface{}{"since": int(seq), "wait": 3600},
	})
	if resp == nil || !resp.IsError() {
		t.Fatalf("unbounded wait accepted: %v", resp)
	}
}

// A revoke or a suspension whose edge feed entry failed is told to the
// edges when the caller retries: the first try may already have changed
// storage, and the retry must not find "nothing to do".
func TestEdgeFeedGetsRetriedRevokeAndSuspension(t *testing.T) {
	b, s := newTestBackend(t)
	_, id, _ := setupAcme(t, b, s)
	_, seq := b.changes(t, s, 0)

	s.failPut = feedPrefix
	if resp, err := request(b, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("revoke succeeded although the edge feed could not be written")
	}
	if resp, err := request(b, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "suspended"}); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("suspension succeeded although the edge feed could not be written")
	}
	s.failPut = ""
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	b.do(t, s, logical.UpdateOperation, "tenants/acme", map[string]interface{}{"status": "suspended"})

	c, _ := b.changes(t, s, seq)
	var deleted, suspended bool
	for _, ch := range c {
		deleted = deleted || (ch.Op == contract.OpDelete && ch.KeyID == id)
		suspended = suspended || (ch.Op == contract.OpTenant && ch.Tenant == "acme" && ch.TenantStatus == contract.TenantSuspended)
	}
	if !deleted || !suspended {
		t.Fatalf("after the retries the edges heard: revoke %v, suspension %v (%+v)", deleted, suspended, c)
	}
}

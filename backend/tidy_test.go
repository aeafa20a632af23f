package backend

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func TestNonLeasedKeysExpireThroughTidy(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/roles/bulk", map[string]interface{}{"leased": false, "ttl": "1h"})
	resp := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/bulk", nil)
	if resp.Secret != nil {
		t.Fatalf("non-leased role issued a lease: %+v", resp.Secret)
	}
	key := resp.Data["api_key"].(string)
	if resp.Data["ttl"] != int64(3600) {
		t.Fatalf("ttl %v", resp.Data["ttl"])
	}
	if c := b.code(t, s, contract.Request{APIKey: key}, time.Now()); c != contract.CodeValid {
		t.Fatal(c)
	}
	later := time.Now().Add(2 * time.Hour)
	if c := b.code(t, s, contract.Request{APIKey: key}, later); c != contract.CodeExpired {
		t.Fatalf("after ttl: %s", c)
	}
	// A buffer longer than the time since expiry keeps the key.
	if err := b.runTidy(context.Background(), s, 2*time.Hour, 2, func() time.Time { return later }); err != nil {
		t.Fatal(err)
	}
	if c := b.code(t, s, contract.Request{APIKey: key}, later); c != contract.CodeExpired {
		t.Fatalf("tidy inside the safety buffer removed the key: %s", c)
	}
	if err := b.runTidy(context.Background(), s, 0, 2, func() time.Time { return later }); err != nil {
		t.Fatal(err)
	}
	if c := b.code(t, s, contract.Request{APIKey: key}, later); c != contract.CodeNotFound {
		t.Fatalf("after tidy: %s", c)
	}
	if b.tidy.status.ExpiredRemoved != 2 { // the bulk key and setupAcme's 1h key
		t.Fatalf("expired removed: %+v", b.tidy.status)
	}
}

func TestTidyRemovesOrphansAndSparesLiveKeys(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "10s", "grace_period": "5s"})
	static := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data["api_key"].(string)
	ctx := context.Background()

	// An index entry without a record, and a record without an index entry:
	// what a crash between the two writes of an issue or revoke leaves.
	var dangling [32]byte
	dangling[0] = 1
	ptr, _ := logical.StorageEntryJSON(keyIndexPrefix("acme")+"11111111-1111-1111-1111-111111111111", keyPointer{Hash: hex.EncodeToString(dangling[:])})
	if err := s.Put(ctx, ptr); err != nil {
		t.Fatal(err)
	}
	var orphan [32]byte
	orphan[0] = 2
	rec := &keyEntry{KeyID: "22222222-2222-2222-2222-222222222222", Tenant: "acme", Kind: kindDynamic, Hash: hex.EncodeToString(orphan[:])}
	if err := b.putKeyRecord(ctx, s, rec); err != nil {
		t.Fatal(err)
	}

	if err := b.runTidy(ctx, s, 0, 1, time.Now); err != nil {
		t.Fatal(err)
	}
	if got := b.tidy.status.OrphansRemoved; got != 2 {
		t.Fatalf("orphans removed %d, want 2", got)
	}
	// Edges may hold the dangling key (its feed upsert precedes the
	// record): tidy tells them it is gone.
	head, err := b.feed.readHead(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	changes, _, _, err := b.feed.changesSince(ctx, s, 0, int(head.Seq))
	if err != nil {
		t.Fatal(err)
	}
	told := false
	for _, c := range changes {
		told = told || (c.Op == contract.OpDelete && c.KeyID == "11111111-1111-1111-1111-111111111111")
	}
	if !told {
		t.Fatal("tidy removed an orphaned index entry without telling the edges")
	}
	ids, _ := s.List(ctx, keyIndexPrefix("acme"))
	hashes, _ := s.List(ctx, hashPrefix)
	if len(ids) != 2 || len(hashes) != 2 {
		t.Fatalf("after tidy: %d index entries, %d records; want the dynamic and the static key", len(ids), len(hashes))
	}
	for _, k := range []string{key, static} {
		if c := b.code(t, s, contract.Request{APIKey: k}, time.Now()); c != contract.CodeValid {
			t.Fatalf("tidy hurt a live key: %s", c)
		}
	}
	// Far in the future the dynamic key is gone but the static key's current
	// key stays: rotation, not tidy, manages it.
	if err := b.runTidy(ctx, s, 0, 10, func() time.Time { return time.Now().Add(48 * time.Hour) }); err != nil {
		t.Fatal(err)
	}
	if p, _ := readKeyPointer(ctx, s, "acme", id); p != nil {
		t.Fatal("expired dynamic key survived tidy")
	}
	if c := b.code(t, s, contract.Request{APIKey: static}, time.Now()); c != contract.CodeValid {
		t.Fatalf("tidy removed a static key's current key: %s", c)
	}
}

func TestTidyRunsInBackgroundAndReports(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	resp, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.UpdateOperation, Path: "tidy", Storage: s, Data: map[string]interface{}{}})
	if err != nil || resp == nil || resp.Data[logical.HTTPStatusCode] != 202 {
		t.Fatalf("tidy: %v %v", resp, err)
	}
	var st *logical.Response
	testvault.WaitFor(t, 5*time.Second, "the tidy to finish", func() error {
		if st = b.do(t, s, logical.ReadOperation, "tidy/status", nil); st.Data["state"] != "finished" {
			return fmt.Errorf("status %v", st.Data)
		}
		return nil
	})
	if st.Data["keys_checked"] != 1 || st.Data["trigger"] != "manual" {
		t.Fatalf("status: %v", st.Data)
	}
	resp, _ = b.HandleRequest(context.Background(), &logical.Request{Operation: logical.UpdateOperation, Path: "tidy", Storage: s, Data: map[string]interface{}{"batch_size": 0}})
	if resp == nil || !resp.IsError() {
		t.Fatalf("batch_size=0 accepted: %v", resp)
	}
}

// A tidy that runs while a key is being issued must not take the key's
// index entry for an orphan: the key would be handed out, then revoked by
// the next tidy as a record no index entry points at.
func TestTidyLeavesAKeyBeingIssuedAlone(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	// Hold the first key record write (its index entry is written by then)
	// until release: an issue caught between its two writes.
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ps := &hookStorage{Storage: s, beforePut: func(_ context.Context, k string) error {
		if strings.HasPrefix(k, hashPrefix) {
			once.Do(func() {
				close(reached)
				<-release
			})
		}
		return nil
	}}
	issued := make(chan string)
	go func() {
		resp := b.do(t, ps, logical.ReadOperation, "tenants/acme/creds/web", nil)
		issued <- resp.Data["api_key"].(string)
	}()
	<-reached
	tidied := make(chan error)
	go func() { tidied <- b.runTidy(context.Background(), s, 0, 100, time.Now) }()
	// Give a tidy that does not wait for the issue ample time to finish.
	select {
	case err := <-tidied:
		t.Fatalf("tidy finished while a key was half issued (err %v): it did not wait for the tenant's writes", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	key := <-issued
	if err := <-tidied; err != nil {
		t.Fatal(err)
	}
	if err := b.runTidy(context.Background(), s, 0, 100, time.Now); err != nil {
		t.Fatal(err)
	}
	if c := b.code(t, s, contract.Request{APIKey: key}, time.Now()); c != contract.CodeValid {
		t.Fatalf("key issued during a tidy, after the next tidy: %s", c)
	}
}

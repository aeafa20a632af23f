package backend

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func waitKnownLoaded(t testing.TB, b *backend) {
	t.Helper()
	testvault.WaitFor(t, 5*time.Second, "the known hashes to load", func() bool {
		b.known.mu.RLock()
		defer b.known.mu.RUnlock()
		return b.known.state == knownLoaded
	})
}

func TestUnknownKeyCostsNoStorageRead(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, _ := setupAcme(t, b, s)
	guess := regenerate(t, key)
	b.code(t, s, contract.Request{APIKey: guess}, time.Now()) // starts the listing
	waitKnownLoaded(t, b)
	s.reset()
	for i := 0; i < 3; i++ {
		if c := b.code(t, s, contract.Request{APIKey: regenerate(t, key)}, time.Now()); c != contract.CodeNotFound {
			t.Fatal(c)
		}
	}
	if s.gets != 0 {
		t.Fatalf("unknown keys cost %d storage reads", s.gets)
	}
	// Issued after the listing: known at once.
	fresh := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil).Data["api_key"].(string)
	b.cache.reset() // cold cache: the set alone must not hide it
	if c := b.code(t, s, contract.Request{APIKey: fresh}, time.Now()); c != contract.CodeValid {
		t.Fatalf("key issued after the listing: %s", c)
	}
}

// TestStandbyNeverTakesANewKeyForAbsent: a key created on the active node
// after the standby listed its hashes must verify on the standby once the
// Invalidate for its record arrives.
func TestStandbyNeverTakesANewKeyForAbsent(t *testing.T) {
	active, s := newTestBackend(t)
	standby, _ := newTestBackendOn(t, s)
	key, _, _ := setupAcme(t, active, s)
	standby.code(t, s, contract.Request{APIKey: regenerate(t, key)}, time.Now())
	waitKnownLoaded(t, standby)

	s.reset()
	fresh := active.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil).Data["api_key"].(string)
	for _, k := range s.putKeys {
		standby.Invalidate(context.Background(), k)
	}
	if c := standby.code(t, s, contract.Request{APIKey: fresh}, time.Now()); c != contract.CodeValid {
		t.Fatalf("standby after Invalidate: %s", c)
	}
}

func TestChangesDuringLoadingAreKept(t *testing.T) {
	var k knownHashes
	k.state = knownLoading
	var a, b [32]byte
	a[0], b[0] = 1, 2
	k.add(a)
	k.remove(b)
	if k.absent(a) {
		t.Fatal("absent while loading")
	}
	// The listing (which saw b but not a) finishes after the changes.
	if !k.finish(map[[32]byte]struct{}{b: {}}) {
		t.Fatal("finish refused")
	}
	if k.absent(a) || !k.absent(b) {
		t.Fatalf("after load: a absent=%v b absent=%v", k.absent(a), k.absent(b))
	}
}

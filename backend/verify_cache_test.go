package backend

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// TestCacheStaysExactUnderConcurrentWrites runs verifies against revokes,
// rewrites that do not know the plaintext (as renew and rotation do) and
// dropped entries (as Invalidate does), all at once. Once a revoke or an
// expiring rewrite has returned, no verify that starts later may answer
// VALID, whether it finds the key cached, refills it from storage, or races
// with the write; keys nobody touched stay VALID throughout.
func TestCacheStaysExactUnderConcurrentWrites(t *testing.T) {
	b, s := newTestBackend(t)
	ctx := context.Background()
	setupAcme(t, b, s)
	const n = 96
	keys, ids, hashes := make([]string, n), make([]string, n), make([]string, n)
	h, err := b.getHasher(ctx, s, false)
	if err != nil || h == nil {
		t.Fatal(err)
	}
	for i := range n {
		resp := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
		keys[i], ids[i] = resp.Data["api_key"].(string), resp.Data["key_id"].(string)
		sum := h.Sum(keys[i])
		hashes[i] = hex.EncodeToString(sum[:])
	}
	// Keys 0..n/4 are revoked, n/4..n/2 expire, the rest stay untouched.
	var revoked, expired [n]atomic.Bool
	var writing atomic.Bool
	writing.Store(true)

	var wg sync.WaitGroup
	failures := make(chan string, 8)
	fail := func(format string, args ...interface{}) {
		select {
		case failures <- fmt.Sprintf(format, args...):
		default:
		}
	}
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			// Keep verifying a while after the writer is done, so late
			// refills are checked too.
			for extra := 2000; writing.Load() || extra > 0; {
				if !writing.Load() {
					extra--
				}
				i := rng.IntN(n)
				wasRevoked, wasExpired := revoked[i].Load(), expired[i].Load()
				out, err := b.verify(ctx, s, &contract.Request{APIKey: keys[i]}, time.Now())
				switch {
				case err != nil:
					fail("key %d: %v", i, err)
				case wasRevoked && out.Code != contract.CodeNotFound:
					fail("key %d verified %s after its revoke returned", i, out.Code)
				case wasExpired && out.Code != contract.CodeExpired:
					fail("key %d verified %s after its expiry was written", i, out.Code)
				case i >= n/2 && out.Code != contract.CodeValid:
					fail("untouched key %d verified %s", i, out.Code)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // Invalidate of random records, as another node's writes cause
		defer wg.Done()
		rng := rand.New(rand.NewPCG(9, 9))
		for writing.Load() {
			b.forgetKey(hashes[rng.IntN(n)])
			time.Sleep(50 * time.Microsecond)
		}
	}()

	for _, i := range rand.New(rand.NewPCG(7, 7)).Perm(n / 2) {
		if i < n/4 {
			if err := b.revokeKey(ctx, s, "acme", ids[i]); err != nil {
				t.Error(err)
			}
			revoked[i].Store(true)
		} else {
			if _, err := b.updateKeyRecord(ctx, s, hashes[i], func(e *keyEntry) {
				e.ExpiresAt = time.Now().Add(-time.Minute)
			}); err != nil {
				t.Error(err)
			}
			expired[i].Store(true)
		}
		time.Sleep(200 * time.Microsecond)
	}
	writing.Store(false)
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	// Every key the test did not revoke is still placed where verify looks.
	if got, want := b.cache.keyCount(), len(b.cache.locs); got != want {
		t.Fatalf("%d keys in the index, %d positions known", got, want)
	}
}

// cachedKey's hot first 64 bytes stay in one cache line only while the
// struct is exactly 128 bytes (a size class of 128-aligned objects).
func TestCachedKeyIs128Bytes(t *testing.T) {
	if n := unsafe.Sizeof(cachedKey{}); n != 128 {
		t.Fatalf("cachedKey is %d bytes; adjust its pad to 128", n)
	}
	if off := unsafe.Offsetof(cachedKey{}.inGrace); off >= 64 {
		t.Fatalf("the hot fields run to byte %d, past the first cache line", off)
	}
}

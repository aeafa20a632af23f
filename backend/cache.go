package backend

import (
	"context"
	"encoding/hex"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// verifyCache keeps what verify reads, so a warm verify costs no storage
// round trip. It is exact, not time-based: every local write updates it under
// the entry's lock and Invalidate drops what other nodes changed.
type verifyCache struct {
	// shards split the key index by the HMAC's last byte. Growing an index
	// rebuilds it under its write lock; split 256 ways, that pauses the
	// verifies of one shard for a millisecond or so at 1M keys (the worst
	// put while filling 1M keys took 9.6 ms, garbage collection included)
	// instead of every verify for a fifth of a second.
	shards [indexShards]indexShard

	// pmu guards profiles, which intern the keys' profiles: keys of one
	// role share one, so verify reads it from the CPU caches. Key writes
	// hold it, then their shard's lock.
	pmu      sync.Mutex
	profiles map[string]*keyProfile

	mu      sync.RWMutex // guards tenants
	tenants map[string]*tenantEntry
}

const indexShards = 256

type indexShard struct {
	mu sync.RWMutex
	keyIndex
	_ [8]byte // one cache line per shard: no false sharing between them
}

func newVerifyCache() *verifyCache {
	return &verifyCache{
		tenants:  make(map[string]*tenantEntry),
		profiles: make(map[string]*keyProfile),
	}
}

// shard is h's shard. The last byte of the HMAC is independent of the first
// eight, which place h inside the shard.
func (c *verifyCache) shard(h *[32]byte) *indexShard { return &c.shards[h[31]] }

func (c *verifyCache) getKey(h [32]byte) (verifySlot, bool) {
	sh := c.shard(&h)
	sh.mu.RLock()
	s, ok := sh.get(&h)
	sh.mu.RUnlock()
	return s, ok
}

// putKey stores k, which nobody else holds yet: its profile becomes the
// shared instance of equal profiles.
func (c *verifyCache) putKey(k *cachedKey) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	if p, ok := c.profiles[k.profile.id]; ok {
		k.profile = p
	} else {
		c.profiles[k.profile.id] = k.profile
	}
	k.profile.refs++
	sh := c.shard(&k.hash)
	sh.mu.Lock()
	old := sh.put(k.slot())
	sh.mu.Unlock()
	c.release(old)
}

func (c *verifyCache) deleteKey(h [32]byte) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	sh := c.shard(&h)
	sh.mu.Lock()
	old := sh.delete(&h)
	sh.mu.Unlock()
	c.release(old)
}

// release drops a removed slot's hold on its profile; c.pmu is held.
func (c *verifyCache) release(s verifySlot) {
	if s.key == nil {
		return
	}
	if s.profile.refs--; s.profile.refs == 0 {
		delete(c.profiles, s.profile.id)
	}
}

func (c *verifyCache) getTenant(name string) *tenantEntry {
	c.mu.RLock()
	t := c.tenants[name]
	c.mu.RUnlock()
	return t
}

func (c *verifyCache) putTenant(t *tenantEntry) {
	c.mu.Lock()
	c.tenants[t.Name] = t
	c.mu.Unlock()
}

func (c *verifyCache) deleteTenant(name string) {
	c.mu.Lock()
	delete(c.tenants, name)
	c.mu.Unlock()
}

func (c *verifyCache) reset() {
	c.pmu.Lock()
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.keyIndex = keyIndex{}
		sh.mu.Unlock()
	}
	c.profiles = make(map[string]*keyProfile)
	c.pmu.Unlock()
	c.mu.Lock()
	c.tenants = make(map[string]*tenantEntry)
	c.mu.Unlock()
}

// lookupKey returns the verify slot of the key whose HMAC is h (key nil when
// there is none), from the cache or else from storage. The fill holds the
// hash lock, so a concurrent revoke or Invalidate either runs before the
// read or removes what the fill stored.
func (b *backend) lookupKey(ctx context.Context, s logical.Storage, h [32]byte) (verifySlot, error) {
	if k, ok := b.cache.getKey(h); ok {
		return k, nil
	}
	if b.known.absent(h) {
		return verifySlot{}, nil
	}
	b.ensureKnownLoaded()
	hx := hex.EncodeToString(h[:])
	lock := b.hashLock(hx)
	lock.RLock()
	defer lock.RUnlock()
	if k, ok := b.cache.getKey(h); ok {
		return k, nil
	}
	e, err := readKeyRecord(ctx, s, hx)
	if err != nil {
		return verifySlot{}, err
	}
	if e == nil {
		// Holding the hash lock: no write of this hash can interleave.
		b.known.remove(h)
		return verifySlot{}, nil
	}
	k, err := newCachedKey(e, h)
	if err != nil {
		return verifySlot{}, err
	}
	b.cache.putKey(k)
	return k.slot(), nil
}

// lookupTenant is lookupKey's counterpart for tenant records.
func (b *backend) lookupTenant(ctx context.Context, s logical.Storage, name string) (*tenantEntry, error) {
	if t := b.cache.getTenant(name); t != nil {
		return t, nil
	}
	lock := b.tenantLock(name)
	lock.RLock()
	defer lock.RUnlock()
	if t := b.cache.getTenant(name); t != nil {
		return t, nil
	}
	t, err := readTenant(ctx, s, name)
	if err != nil || t == nil {
		return nil, err
	}
	b.cache.putTenant(t)
	return t, nil
}

// forgetKey and forgetTenant serve Invalidate: they take the same locks as a
// fill so a fill in flight cannot put back what another node just changed.
func (b *backend) forgetKey(hashHex string) {
	h, ok := parseHash(hashHex)
	if !ok {
		return
	}
	lock := b.hashLock(hashHex)
	lock.Lock()
	b.cache.deleteKey(h)
	// Created or deleted elsewhere: it may exist now.
	b.known.add(h)
	lock.Unlock()
}

func (b *backend) forgetTenant(name string) {
	lock := b.tenantLock(name)
	lock.Lock()
	b.cache.deleteTenant(name)
	lock.Unlock()
}

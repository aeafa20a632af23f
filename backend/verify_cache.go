package backend

import (
	"context"
	"encoding/hex"
	"hash/maphash"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// The verify hot path, the files named verify_*: the memory a warm verify
// reads instead of storage, laid out so that one verify touches one cache
// line of its own. verify_cache.go holds the cache and its fills from
// storage, verify_index.go the sharded table of 64-byte slots,
// verify_known.go the set of hashes that may exist (an unknown key costs no
// storage read), verify_prefetch* the one instruction that starts loading a
// slot before the HMAC is known. They stay in package backend: the slots
// point at the plugin's key and profile types, and Invalidate and the key
// writes keep them exact under the plugin's locks.

// verifyCache keeps what verify reads, so a warm verify costs no storage
// round trip. It is exact, not time-based: every local write updates it under
// the entry's lock and Invalidate drops what other nodes changed.
type verifyCache struct {
	// shards split the key index by loc's top byte. Growing an index
	// rebuilds it under its write lock; split 256 ways, that pauses the
	// verifies of one shard for a millisecond or so at 1M keys (the worst
	// put while filling 1M keys took 9.6 ms, garbage collection included)
	// instead of every verify for a fifth of a second.
	shards [indexShards]indexShard

	// seed keys locate. It is random and never leaves the process: a
	// key's position is memory-only and nobody outside can aim keys at one
	// probe run.
	seed maphash.Seed

	// pmu guards profiles, which intern the keys' profiles: keys of one
	// role share one, so verify reads it from the CPU caches. Key writes
	// hold it, then their shard's lock.
	pmu      sync.Mutex
	profiles map[string]*keyProfile
	// locs finds a cached key's slot from its HMAC, for writes that do not
	// know the plaintext (renew, rotation, Invalidate); guarded by pmu. A
	// hash is here exactly when its key is in the index. It is keyed by
	// the HMAC's first 128 bits (locKey), which saves ~40 bytes per key:
	// two keys sharing them is as likely as a 128-bit hash collision,
	// ~10^-27 at 1M keys.
	locs map[[16]byte]uint64

	mu      sync.RWMutex // guards tenants
	tenants map[string]*tenantEntry
}

const indexShards = 256

// indexShard is 64 bytes (mutex 24, index 40). Go does not align the array
// to cache lines (a large allocation starts 8 bytes into its page), so a
// shard shares a line with its neighbour's last field; with 256 shards two
// cores rarely touch neighbours at once.
type indexShard struct {
	mu sync.RWMutex
	keyIndex
}

func newVerifyCache() *verifyCache {
	return &verifyCache{
		seed:     maphash.MakeSeed(),
		tenants:  make(map[string]*tenantEntry),
		profiles: make(map[string]*keyProfile),
		locs:     make(map[[16]byte]uint64),
	}
}

// locate is a key's position in the index: a 64-bit keyed hash of the
// plaintext, ~10 ns against the HMAC's ~250, never 0 (0 marks an empty
// slot) and never stored.
func (c *verifyCache) locate(key string) uint64 {
	if l := maphash.String(c.seed, key); l != 0 {
		return l
	}
	return 1
}

func locKey(h *[32]byte) [16]byte { return [16]byte(h[:16]) }

// shard is loc's shard. loc's top byte is independent of its low bits,
// which place the key inside the shard.
func (c *verifyCache) shard(loc uint64) *indexShard { return &c.shards[loc>>56] }

func (c *verifyCache) getKey(loc uint64, h [32]byte) (verifySlot, bool) {
	sh := c.shard(loc)
	sh.mu.RLock()
	s, ok := sh.get(loc, &h)
	sh.mu.RUnlock()
	return s, ok
}

// prefetchKey starts loading the slot of the key at loc and returns at
// once. Verify calls it before checking the key's shape and computing its
// HMAC, so the memory access (~150-190 ns for a random slot of a 1M-key
// table on our VM) runs during that work instead of after it.
func (c *verifyCache) prefetchKey(loc uint64) { c.shard(loc).prefetch(loc) }

// putKey stores k, which nobody else holds yet: its profile becomes the
// shared instance of equal profiles. A key whose position is unknown (k.loc
// 0: written without its plaintext) replaces its cached copy, or else stays
// out; the next verify reads it from storage and places it.
func (c *verifyCache) putKey(k *cachedKey) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	known, ok := c.locs[locKey(&k.hash)]
	switch {
	case !ok && k.loc == 0:
		return
	case ok && k.loc == 0:
		k.loc = known
	case ok && known != k.loc:
		// Cannot happen under one seed (loc and HMAC are functions of the
		// same plaintext), but never leave a second slot behind.
		c.release(c.shard(known).remove(known, &k.hash))
	}
	c.locs[locKey(&k.hash)] = k.loc
	if p, ok := c.profiles[k.profile.id]; ok {
		k.profile = p
	} else {
		c.profiles[k.profile.id] = k.profile
	}
	k.profile.refs++
	sh := c.shard(k.loc)
	sh.mu.Lock()
	old := sh.put(k.slot())
	sh.mu.Unlock()
	c.release(old)
}

func (c *verifyCache) deleteKey(h [32]byte) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	loc, ok := c.locs[locKey(&h)]
	if !ok {
		return
	}
	delete(c.locs, locKey(&h))
	c.release(c.shard(loc).remove(loc, &h))
}

// remove deletes (loc, h) under the shard's lock; c.pmu is held.
func (sh *indexShard) remove(loc uint64, h *[32]byte) verifySlot {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.delete(loc, h)
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
		sh.clear()
		sh.mu.Unlock()
	}
	c.profiles = make(map[string]*keyProfile)
	c.locs = make(map[[16]byte]uint64)
	c.pmu.Unlock()
	c.mu.Lock()
	c.tenants = make(map[string]*tenantEntry)
	c.mu.Unlock()
}

// lookupKey returns the verify slot of the key at loc whose HMAC is h (key
// nil when there is none), from the cache or else from storage. The fill
// holds the hash lock, so a concurrent revoke or Invalidate either runs
// before the read or removes what the fill stored.
func (b *backend) lookupKey(ctx context.Context, s logical.Storage, loc uint64, h [32]byte) (verifySlot, error) {
	if k, ok := b.cache.getKey(loc, h); ok {
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
	if k, ok := b.cache.getKey(loc, h); ok {
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
	// Every cached key of a role with a quota holds its counters, so
	// verify never reads storage for them.
	if err := b.attachKeyQuota(ctx, s, k); err != nil {
		return verifySlot{}, err
	}
	k.loc = loc
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
	// The quota verify spends against is the cached record's.
	if err := b.attachTenantQuota(ctx, s, t); err != nil {
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

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
	mu      sync.RWMutex
	keys    keyIndex
	tenants map[string]*tenantEntry
	// profiles interns the keys' profiles: keys of one role share one, so
	// verify reads it from the CPU caches.
	profiles map[string]*keyProfile
}

func newVerifyCache() *verifyCache {
	return &verifyCache{
		tenants:  make(map[string]*tenantEntry),
		profiles: make(map[string]*keyProfile),
	}
}

func (c *verifyCache) getKey(h [32]byte) (verifySlot, bool) {
	c.mu.RLock()
	s, ok := c.keys.get(&h)
	c.mu.RUnlock()
	return s, ok
}

// putKey stores k, which nobody else holds yet: its profile becomes the
// shared instance of equal profiles.
func (c *verifyCache) putKey(k *cachedKey) {
	c.mu.Lock()
	if p, ok := c.profiles[k.profile.id]; ok {
		k.profile = p
	} else {
		c.profiles[k.profile.id] = k.profile
	}
	k.profile.refs++
	c.release(c.keys.put(k.slot()))
	c.mu.Unlock()
}

func (c *verifyCache) deleteKey(h [32]byte) {
	c.mu.Lock()
	c.release(c.keys.delete(&h))
	c.mu.Unlock()
}

// release drops a removed slot's hold on its profile; c.mu is held.
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
	c.mu.Lock()
	c.keys = keyIndex{}
	c.tenants = make(map[string]*tenantEntry)
	c.profiles = make(map[string]*keyProfile)
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

package backend

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"
)

// indexHash makes a hash whose key indexKey places at pos (masked to the
// table's size), told apart by id: keys of one pos share their loc.
func indexHash(pos uint64, id uint32) [32]byte {
	var h [32]byte
	binary.LittleEndian.PutUint64(h[:8], pos)
	binary.LittleEndian.PutUint32(h[8:12], id)
	return h
}

func indexKey(h [32]byte, tenant string, scopes ...string) *cachedKey {
	k, err := newCachedKey(&keyEntry{Tenant: tenant, Scopes: scopes, locator: indexLoc(h)}, h)
	if err != nil {
		panic(err)
	}
	return k
}

// indexLoc is the loc indexKey gives the key of hash h.
func indexLoc(h [32]byte) uint64 { return max(1, binary.LittleEndian.Uint64(h[:8])) }

// checkIndex compares the index with the model and checks that every entry
// is reachable from its home position without crossing an empty slot.
func checkIndex(t *testing.T, x *keyIndex, model map[[32]byte]*cachedKey) {
	t.Helper()
	if x.count != len(model) {
		t.Fatalf("count %d, model %d", x.count, len(model))
	}
	for h, k := range model {
		s, ok := x.get(k.loc, &h)
		if !ok || s.key != k || s.hash != h || s.loc != k.loc || s.profile != k.profile || s.expiresAt != k.expiresAt {
			t.Fatalf("get %x: %v %+v", h[:12], ok, s)
		}
	}
	n := 0
	for i := range x.slots {
		if x.slots[i].key == nil {
			continue
		}
		n++
		if _, ok := model[x.slots[i].hash]; !ok {
			t.Fatalf("slot %d holds %x, which was deleted", i, x.slots[i].hash[:12])
		}
	}
	if n != len(model) {
		t.Fatalf("%d occupied slots, model %d", n, len(model))
	}
	if len(x.slots) != 0 && (x.count+1)*4 > len(x.slots)*3+4 {
		t.Fatalf("load %d/%d above 3/4", x.count, len(x.slots))
	}
}

// TestKeyIndexRandomOps runs puts, replaces and deletes against a map model.
// Positions are drawn from a narrow range so probe runs are long and wrap
// around the end of the table, where backward-shift deletion is subtle, and
// many keys share one loc, which only their HMACs tell apart.
func TestKeyIndexRandomOps(t *testing.T) {
	for _, spread := range []int{8, 64, 1 << 16} {
		rng := rand.New(rand.NewPCG(uint64(spread), 7))
		var x keyIndex
		model := map[[32]byte]*cachedKey{}
		var live [][32]byte
		for op := range 40_000 {
			// ^r is the r-th last slot at every table size, so probe
			// runs wrap to slot 0.
			home := ^uint64(rng.IntN(spread))
			if spread == 1<<16 {
				home = rng.Uint64()
			}
			switch r := rng.IntN(10); {
			case r < 5 || len(live) == 0: // insert
				h := indexHash(home, uint32(op))
				k := indexKey(h, "acme")
				if old := x.put(k.slot()); old.key != nil {
					t.Fatal("fresh hash replaced an entry")
				}
				model[h] = k
				live = append(live, h)
			case r < 6: // replace
				h := live[rng.IntN(len(live))]
				k := indexKey(h, "beta")
				if old := x.put(k.slot()); old.key != model[h] {
					t.Fatal("replace returned the wrong old entry")
				}
				model[h] = k
			default: // delete, sometimes of an absent hash
				var h [32]byte
				if rng.IntN(8) == 0 {
					h = indexHash(home, uint32(op)|1<<31)
				} else {
					i := rng.IntN(len(live))
					h = live[i]
					live[i] = live[len(live)-1]
					live = live[:len(live)-1]
				}
				old := x.delete(indexLoc(h), &h)
				if old.key != model[h] {
					t.Fatalf("delete %x returned the wrong entry", h[:12])
				}
				delete(model, h)
			}
			if op%997 == 0 {
				checkIndex(t, &x, model)
			}
		}
		checkIndex(t, &x, model)
		// Emptying the table shrinks it back.
		for h := range model {
			x.delete(indexLoc(h), &h)
			delete(model, h)
		}
		checkIndex(t, &x, model)
		if len(x.slots) != minIndexSlots {
			t.Fatalf("empty index kept %d slots", len(x.slots))
		}
	}
}

// TestVerifySlotIsOneCacheLine: the layout verify's speed at 1M keys rests
// on, and 64-byte shards (see indexShard).
func TestVerifySlotIsOneCacheLine(t *testing.T) {
	if n := unsafe.Sizeof(verifySlot{}); n != 64 {
		t.Fatalf("verifySlot is %d bytes, want 64", n)
	}
	if n := unsafe.Sizeof(indexShard{}); n != 64 {
		t.Fatalf("indexShard is %d bytes, want 64", n)
	}
}

// TestVerifyCacheSharesProfiles checks that keys with equal profiles share
// one instance, that every field of a profile tells profiles apart, and that
// the intern table forgets a profile with its last key.
func TestVerifyCacheSharesProfiles(t *testing.T) {
	c := newVerifyCache()
	a := indexKey(indexHash(1, 1), "acme", "read", "write")
	b := indexKey(indexHash(2, 2), "acme", "read", "write")
	d := indexKey(indexHash(3, 3), "acme", "read")
	for _, k := range []*cachedKey{a, b, d} {
		c.putKey(k)
	}
	if a.profile != b.profile || a.profile == d.profile {
		t.Fatal("equal policies not shared, or different ones merged")
	}
	if len(c.profiles) != 2 || a.profile.refs != 2 {
		t.Fatalf("%d interned profiles, refs %d", len(c.profiles), a.profile.refs)
	}
	// Replacing a key's record releases its old policy.
	b2 := indexKey(indexHash(2, 2), "acme", "read")
	c.putKey(b2)
	if b2.profile != d.profile || a.profile.refs != 1 || d.profile.refs != 2 {
		t.Fatalf("after replace: refs %d and %d", a.profile.refs, d.profile.refs)
	}
	c.deleteKey(a.hash)
	if _, ok := c.profiles[a.profile.id]; ok {
		t.Fatal("profile kept after its last key was deleted")
	}
	c.deleteKey(a.hash) // already gone: no double release
	if d.profile.refs != 2 || len(c.profiles) != 1 {
		t.Fatalf("refs %d, %d profiles", d.profile.refs, len(c.profiles))
	}
	// Each field is part of a profile's identity, and strings holding the
	// encoding's own separators cannot make two profiles collide.
	base := keyEntry{Tenant: "acme", Role: "web", Environment: "live", Kind: kindDynamic, Scopes: []string{"read"}, Metadata: map[string]string{"team": "a"}}
	variants := []func(e *keyEntry){
		func(e *keyEntry) {},
		func(e *keyEntry) { e.Tenant = "globex" },
		func(e *keyEntry) { e.Role = "api" },
		func(e *keyEntry) { e.Environment = "test" },
		func(e *keyEntry) { e.Kind = kindStatic },
		func(e *keyEntry) { e.Scopes = []string{"read", "write"} },
		func(e *keyEntry) { e.Scopes = []string{"read:1:w"} },
		func(e *keyEntry) { e.AllowedCIDRs = []string{"10.0.0.0/8"} },
		func(e *keyEntry) { e.RateLimit, e.RateLimitPeriod = 5, time.Second },
		func(e *keyEntry) { e.Metadata = map[string]string{"team": "b"} },
		func(e *keyEntry) { e.Metadata = map[string]string{"team": "a", "x": ""} },
		func(e *keyEntry) { e.Metadata = map[string]string{"team": "a1:x"} },
	}
	seen := map[*keyProfile]int{}
	for i, change := range variants {
		e := base
		e.Metadata = maps.Clone(base.Metadata)
		change(&e)
		e.locator = uint64(100 + i)
		k, err := newCachedKey(&e, indexHash(uint64(100+i), uint32(100+i)))
		if err != nil {
			t.Fatal(err)
		}
		c.putKey(k)
		if j, ok := seen[k.profile]; ok {
			t.Fatalf("variants %d and %d share a profile", j, i)
		}
		seen[k.profile] = i
	}
	c.reset()
	if len(c.profiles) != 0 || c.keyCount() != 0 {
		t.Fatal("reset kept entries")
	}
}

// TestVerifyCachePlacesKeysItCanFind covers writes that do not know a key's
// plaintext, hence its position (renew, rotation, a stored record read
// back): they replace a cached copy in place and otherwise leave the key to
// the next verify; and deletes find a key by its HMAC alone.
func TestVerifyCachePlacesKeysItCanFind(t *testing.T) {
	c := newVerifyCache()
	h := indexHash(42, 1)
	// Unknown position and not cached: stays out.
	blind, err := newCachedKey(&keyEntry{Tenant: "acme", Scopes: []string{"read"}}, h)
	if err != nil {
		t.Fatal(err)
	}
	c.putKey(blind)
	if c.keyCount() != 0 || len(c.locs) != 0 || len(c.profiles) != 0 {
		t.Fatalf("a key without a position was cached: %d keys, %d locs, %d profiles", c.keyCount(), len(c.locs), len(c.profiles))
	}
	// Placed where its plaintext put it.
	placed := indexKey(h, "acme", "read")
	c.putKey(placed)
	if s, ok := c.getKey(placed.loc, h); !ok || s.key != placed {
		t.Fatal("placed key not found")
	}
	// Rewritten without the plaintext: replaces the cached copy in place.
	renewed, err := newCachedKey(&keyEntry{Tenant: "acme", Scopes: []string{"read"}, ExpiresAt: time.Unix(100, 0)}, h)
	if err != nil {
		t.Fatal(err)
	}
	c.putKey(renewed)
	s, ok := c.getKey(placed.loc, h)
	if !ok || s.key != renewed || s.expiresAt != time.Unix(100, 0).UnixNano() || c.keyCount() != 1 {
		t.Fatalf("rewrite not in place: %v %+v, %d keys", ok, s, c.keyCount())
	}
	// Same position, other HMAC: a different key.
	other := indexKey(indexHash(42, 2), "acme", "read")
	c.putKey(other)
	if other.loc != placed.loc || c.keyCount() != 2 {
		t.Fatalf("keys sharing a loc: %d cached", c.keyCount())
	}
	// Deleted by HMAC alone, the other key untouched; twice is harmless.
	c.deleteKey(h)
	c.deleteKey(h)
	if _, ok := c.getKey(placed.loc, h); ok {
		t.Fatal("deleted key still found")
	}
	if s, ok := c.getKey(other.loc, other.hash); !ok || s.key != other || len(c.locs) != 1 || other.profile.refs != 1 {
		t.Fatalf("other key: %v, %d locs, refs %d", ok, len(c.locs), other.profile.refs)
	}
	// A wrong loc finds nothing.
	if _, ok := c.getKey(other.loc+1, other.hash); ok {
		t.Fatal("found under a wrong loc")
	}
}

// TestLocateIsKeyedAndNeverZero: the position depends on the mount's own
// random seed, so two caches place the same key independently, and 0 stays
// free to mark empty slots.
func TestLocateIsKeyedAndNeverZero(t *testing.T) {
	a, b := newVerifyCache(), newVerifyCache()
	same := 0
	for i := range 64 {
		k := fmt.Sprintf("ak_live_%d", i)
		la, lb := a.locate(k), b.locate(k)
		if la == 0 || lb == 0 {
			t.Fatal("locate returned 0")
		}
		if la != a.locate(k) {
			t.Fatal("locate is not stable")
		}
		if la == lb {
			same++
		}
	}
	if same > 1 {
		t.Fatalf("%d of 64 keys got the same position under two seeds", same)
	}
}

// BenchmarkKeyIndexGet is the verify index's share of a warm verify: one
// lookup of a random present hash. At 1M keys it is one DRAM access, the
// floor of what a verify at that size must pay over one at 10k.
func BenchmarkKeyIndexGet(bb *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		var x keyIndex
		hashes := make([][32]byte, n)
		for i := range hashes {
			binary.LittleEndian.PutUint64(hashes[i][:8], rng.Uint64())
			binary.LittleEndian.PutUint64(hashes[i][8:16], rng.Uint64())
			x.put(indexKey(hashes[i], "acme", "read").slot())
		}
		bb.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, ok := x.get(indexLoc(hashes[i%n]), &hashes[i%n]); !ok {
					b.Fatal("missing")
				}
			}
		})
	}
}

// keyCount is the number of cached keys.
func (c *verifyCache) keyCount() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += sh.count
		sh.mu.RUnlock()
	}
	return n
}

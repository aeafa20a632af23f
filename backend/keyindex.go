package backend

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// verifySlot is one 64-byte line of the verify index: everything the verify
// decision reads about a key. A warm verify touches this one line of memory
// that belongs to the key alone; the profile it points at is shared by the
// keys of a role and stays in the CPU caches. So a verify among 1M keys
// costs one memory access more than among 10k, where a map of pointers to
// records took several DRAM misses per verify.
type verifySlot struct {
	hash      [32]byte
	expiresAt int64 // unix nanoseconds; 0 never
	profile   *keyProfile
	// key is the rest of the key, read to build the answer, never to
	// decide. nil marks an empty slot.
	key *cachedKey
	_   [8]byte // a slot fills one cache line, never two
}

// keyProfile is what keys issued from one role share: what they allow (the
// scopes, the role's or a narrower set; allowed CIDRs; rate limit) and the
// role-level fields of the verify answer. The cache interns profiles, so a
// million keys of a few roles hold a few profiles, not a million records.
// Keys issued with metadata of their own each hold a profile of their own.
type keyProfile struct {
	tenant, role, environment, kind string
	scopes                          []string
	cidrs                           []netip.Prefix
	rateLimit                       int
	ratePeriod                      time.Duration
	metadata                        map[string]string

	id   string // canonical form: the intern key
	refs int    // cached keys using it; guarded by verifyCache.mu
}

func newKeyProfile(e *keyEntry, cidrs []netip.Prefix) *keyProfile {
	// Every part is length-prefixed, so two different profiles can never
	// share an id, whatever bytes their strings hold.
	var id strings.Builder
	put := func(s string) {
		id.WriteString(strconv.Itoa(len(s)))
		id.WriteByte(':')
		id.WriteString(s)
	}
	for _, s := range []string{e.Tenant, e.Role, e.Environment, e.Kind} {
		put(s)
	}
	put(strconv.Itoa(len(e.Scopes)))
	for _, s := range e.Scopes {
		put(s)
	}
	put(strconv.Itoa(len(cidrs)))
	for _, c := range cidrs {
		put(c.String())
	}
	put(strconv.Itoa(e.RateLimit))
	put(strconv.FormatInt(int64(e.RateLimitPeriod), 10))
	put(strconv.Itoa(len(e.Metadata)))
	for _, k := range slices.Sorted(maps.Keys(e.Metadata)) {
		put(k)
		put(e.Metadata[k])
	}
	return &keyProfile{
		tenant: e.Tenant, role: e.Role, environment: e.Environment, kind: e.Kind,
		scopes: nonNilSlice(e.Scopes), cidrs: cidrs,
		rateLimit: e.RateLimit, ratePeriod: e.RateLimitPeriod,
		metadata: nonNilMap(e.Metadata), id: id.String(),
	}
}

// keyIndex is an open-addressing hash table (linear probing, backward-shift
// deletion) of verifySlots keyed by the key's HMAC. The HMAC is uniformly
// random, so its first bytes are the table position; a hit usually costs one
// cache line. Not safe for concurrent use: verifyCache guards it.
type keyIndex struct {
	slots []verifySlot // length a power of two, at most 3/4 full
	count int
}

const minIndexSlots = 8

func (x *keyIndex) home(h *[32]byte) int {
	return int(binary.LittleEndian.Uint64(h[:8]) & uint64(len(x.slots)-1))
}

// find returns the position of h, or -1.
func (x *keyIndex) find(h *[32]byte) int {
	if len(x.slots) == 0 {
		return -1
	}
	mask := len(x.slots) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.key == nil {
			return -1
		}
		if s.hash == *h {
			return i
		}
	}
}

func (x *keyIndex) get(h *[32]byte) (verifySlot, bool) {
	if i := x.find(h); i >= 0 {
		return x.slots[i], true
	}
	return verifySlot{}, false
}

// put stores s, returning the slot it replaced (key nil when none).
func (x *keyIndex) put(s verifySlot) verifySlot {
	if (x.count+1)*4 > len(x.slots)*3 {
		x.resize(max(minIndexSlots, 2*len(x.slots)))
	}
	mask := len(x.slots) - 1
	for i := x.home(&s.hash); ; i = (i + 1) & mask {
		cur := &x.slots[i]
		if cur.key == nil {
			*cur = s
			x.count++
			return verifySlot{}
		}
		if cur.hash == s.hash {
			old := *cur
			*cur = s
			return old
		}
	}
}

// delete removes h, returning what it held (key nil when absent). Later
// entries of the probe run move back, so lookups never need tombstones.
func (x *keyIndex) delete(h *[32]byte) verifySlot {
	i := x.find(h)
	if i < 0 {
		return verifySlot{}
	}
	old := x.slots[i]
	mask := len(x.slots) - 1
	for j := (i + 1) & mask; x.slots[j].key != nil; j = (j + 1) & mask {
		home := x.home(&x.slots[j].hash)
		// The entry at j may fill the hole at i only if its home is not
		// cyclically within (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = verifySlot{}
	x.count--
	if len(x.slots) > minIndexSlots && x.count*8 < len(x.slots) {
		x.resize(len(x.slots) / 2)
	}
	return old
}

// resize rebuilds the table at n slots. It runs under the shard's write
// lock, so that shard's verifies wait for it (verifyCache.shards).
func (x *keyIndex) resize(n int) {
	old := x.slots
	x.slots = make([]verifySlot, n)
	x.count = 0
	for i := range old {
		if old[i].key != nil {
			x.put(old[i])
		}
	}
}

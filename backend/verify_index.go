package backend

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// verifySlot is one 64-byte line of the verify index: everything the verify
// decision reads about a key. A warm verify touches this one line of memory
// that belongs to the key alone; the profile it points at is shared by the
// keys of a role and stays in the CPU caches.
//
// The line's position comes from loc, a keyed hash of the plaintext key
// that is cheap to compute (verifyCache.locate), not from the HMAC. So
// verify can start reading the line before it computes the HMAC, and the
// CPU fetches it from memory during the HMAC's ~250 ns: a verify among 1M
// keys, whose table is far bigger than the CPU caches, costs ~1.2x one
// among 10k instead of ~1.4x (docs/performance.md).
type verifySlot struct {
	hash      [32]byte
	loc       uint64 // never 0 in a used slot
	expiresAt int64  // unix nanoseconds; 0 never
	profile   *keyProfile
	// key is the rest of the key, read to build the answer, never to
	// decide. nil marks an empty slot.
	key *cachedKey
}

// keyProfile is what keys issued from one role share: what they allow (the
// scopes, the role's or a narrower set; allowed CIDRs; rate limit) and the
// role-level fields of the verify answer. The cache interns profiles, so a
// million keys of a few roles hold a few profiles, not a million records.
// Keys issued with metadata of their own each hold a profile of their own.
// A disabled key's profile differs from its role's by disabled alone: the
// 64-byte slot has no room for a flag, and the disabled keys of a role
// share one profile as the others share theirs.
type keyProfile struct {
	tenant, role, environment, kind string
	scopes                          []string
	cidrs                           []netip.Prefix
	disabled                        bool
	rateLimit                       int
	ratePeriod                      time.Duration
	quota                           contract.QuotaRule // the keys' own; Limit 0 none
	metadata                        map[string]string
	// tenantMeter is the tenant's quota counters (quota.go), found on the
	// first verify of one of the profile's keys.
	tenantMeter atomic.Pointer[quotaMeter]

	id   string // canonical form: the intern key
	refs int    // cached keys using it; guarded by verifyCache.pmu
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
	put(strconv.FormatBool(e.Disabled))
	put(strconv.Itoa(e.RateLimit))
	put(strconv.FormatInt(int64(e.RateLimitPeriod), 10))
	if e.Quota != nil {
		put(strconv.FormatInt(e.Quota.Limit, 10))
		put(e.Quota.Period.String())
	} else {
		put("")
	}
	put(strconv.Itoa(len(e.Metadata)))
	for _, k := range slices.Sorted(maps.Keys(e.Metadata)) {
		put(k)
		put(e.Metadata[k])
	}
	p := &keyProfile{
		tenant: e.Tenant, role: e.Role, environment: e.Environment, kind: e.Kind,
		scopes: nonNilSlice(e.Scopes), cidrs: cidrs, disabled: e.Disabled,
		rateLimit: e.RateLimit, ratePeriod: e.RateLimitPeriod,
		metadata: nonNilMap(e.Metadata), id: id.String(),
	}
	if e.Quota != nil && e.Quota.Applies() {
		p.quota = *e.Quota
	}
	return p
}

// keyIndex is an open-addressing hash table (linear probing, backward-shift
// deletion) of verifySlots keyed by (loc, HMAC). loc is uniformly random, so
// its low bits are the table position; a hit usually costs one cache line.
// Not safe for concurrent use: each keyIndex is embedded in an indexShard
// and guarded by that shard's mu (write lock: put, delete, resize, clear;
// read lock: get). Only prefetch reads it unlocked, through view.
type keyIndex struct {
	slots []verifySlot // length a power of two, at most 3/4 full
	count int
	// view is slots for prefetch, which runs without the shard's lock.
	view atomic.Pointer[[]verifySlot]
}

const minIndexSlots = 8

func (x *keyIndex) home(loc uint64) int {
	return int(loc & uint64(len(x.slots)-1))
}

// find returns the position of (loc, h), or -1.
func (x *keyIndex) find(loc uint64, h *[32]byte) int {
	if len(x.slots) == 0 {
		return -1
	}
	mask := len(x.slots) - 1
	for i := x.home(loc); ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.key == nil {
			return -1
		}
		if s.loc == loc && s.hash == *h {
			return i
		}
	}
}

func (x *keyIndex) get(loc uint64, h *[32]byte) (verifySlot, bool) {
	if i := x.find(loc, h); i >= 0 {
		return x.slots[i], true
	}
	return verifySlot{}, false
}

// prefetch starts loading loc's home slot into the CPU caches and returns
// at once (see verify_prefetch.go). It needs no lock: it reads the table through
// view, and a table replaced meanwhile only makes the hint useless. A lock
// would cost more than the hint saves: its atomic instruction waits for the
// memory access that the prefetch has just started.
func (x *keyIndex) prefetch(loc uint64) {
	if v := x.view.Load(); v != nil && len(*v) != 0 {
		prefetch(unsafe.Pointer(&(*v)[loc&uint64(len(*v)-1)]))
	}
}

// put stores s, returning the slot it replaced (key nil when none).
func (x *keyIndex) put(s verifySlot) verifySlot {
	if (x.count+1)*4 > len(x.slots)*3 {
		x.resize(max(minIndexSlots, 2*len(x.slots)))
	}
	mask := len(x.slots) - 1
	for i := x.home(s.loc); ; i = (i + 1) & mask {
		cur := &x.slots[i]
		if cur.key == nil {
			*cur = s
			x.count++
			return verifySlot{}
		}
		if cur.loc == s.loc && cur.hash == s.hash {
			old := *cur
			*cur = s
			return old
		}
	}
}

// delete removes (loc, h), returning what it held (key nil when absent).
// Later entries of the probe run move back, so lookups never need
// tombstones.
func (x *keyIndex) delete(loc uint64, h *[32]byte) verifySlot {
	i := x.find(loc, h)
	if i < 0 {
		return verifySlot{}
	}
	old := x.slots[i]
	mask := len(x.slots) - 1
	for j := (i + 1) & mask; x.slots[j].key != nil; j = (j + 1) & mask {
		home := x.home(x.slots[j].loc)
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
	v := x.slots
	x.view.Store(&v)
}

// clear empties the index.
func (x *keyIndex) clear() {
	x.slots, x.count = nil, 0
	x.view.Store(nil)
}

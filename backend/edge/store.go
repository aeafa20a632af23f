// Package edge is the edge verifier: it keeps the keys of one apikeys mount
// in memory, synced from Vault's sync/snapshot and sync/changes paths, and
// answers verify questions with the same codes as the mount's verify path.
// cmd/apikeys-edge serves it over HTTP; Middleware embeds it in a Go service.
package edge

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// key is a contract.WireKey prepared once for verification.
type key struct {
	w    *contract.WireKey
	hash [32]byte
	// facts is what contract.Decide reads: tenant, expiry, disabled,
	// sorted scopes, parsed CIDRs.
	facts   contract.Key
	limiter *rate.Limiter

	// used and lastUsed (unix seconds) feed usage/report (usage.go), and
	// refused, the key's refusals by code (allocated on its first: most
	// keys are never refused).
	used     atomic.Uint64
	lastUsed atomic.Int64
	refused  atomic.Pointer[refusals]

	// quota is the key's own quota (nil: none) and qs what this edge
	// knows of it (quota.go); tenantSpent is what this key spent of its
	// tenant's quota here and has not had acknowledged.
	quota       *contract.QuotaRule
	qs          contract.QuotaState
	tenantSpent contract.Meter
}

// markUsed stores lastUsed only when the second changes, so concurrent
// checks of one hot key do not all write the same cache line.
func (k *key) markUsed(now time.Time) {
	k.used.Add(1)
	if s := now.Unix(); k.lastUsed.Load() != s {
		k.lastUsed.Store(s)
	}
}

// refusals counts a key's refusals, indexed like contract.VerifyCodes.
type refusals [len(contract.VerifyCodes)]atomic.Uint64

// countRefusal counts n answers other than VALID about the key (code is
// contract.AboutKey), for usage/report.
func (k *key) countRefusal(code string, n uint64) {
	i := contract.CodeIndex(code)
	if i < 0 {
		return
	}
	r := k.refused.Load()
	if r == nil {
		r = new(refusals)
		if !k.refused.CompareAndSwap(nil, r) {
			r = k.refused.Load()
		}
	}
	r[i].Add(n)
}

// takeRefusals moves the key's refusal counts into byCode.
func (k *key) takeRefusals(byCode map[string]uint64) map[string]uint64 {
	r := k.refused.Load()
	if r == nil {
		return byCode
	}
	for i := range r {
		if n := r[i].Swap(0); n > 0 {
			if byCode == nil {
				byCode = map[string]uint64{}
			}
			byCode[contract.VerifyCodes[i]] += n
		}
	}
	return byCode
}

// giveRefusals adds back the refusals of byCode that a report could not
// deliver (VALID goes back as used).
func (k *key) giveRefusals(byCode map[string]uint64) {
	for code, n := range byCode {
		if code != contract.CodeValid && n > 0 {
			k.countRefusal(code, n)
		}
	}
}

// carryUsage moves what prev (the same key, before an update or a
// snapshot reload) counted and has not reported yet to k.
func (k *key) carryUsage(prev *key) {
	k.used.Add(prev.used.Swap(0))
	k.lastUsed.Store(prev.lastUsed.Load())
	k.giveRefusals(prev.takeRefusals(nil))
}

func newKey(w *contract.WireKey) (*key, error) {
	k := &key{w: w, facts: contract.Key{Tenant: w.Tenant, Disabled: w.Disabled}}
	b, err := hex.DecodeString(w.EdgeHash)
	if err != nil || len(b) != len(k.hash) {
		return nil, fmt.Errorf("key %q: bad edge hash", w.KeyID)
	}
	copy(k.hash[:], b)
	if w.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339Nano, w.ExpiresAt)
		if err != nil {
			return nil, fmt.Errorf("key %q: expires_at: %w", w.KeyID, err)
		}
		k.facts.ExpiresAt = t.UnixNano()
	}
	for _, c := range w.AllowedCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("key %q: allowed_cidrs: %w", w.KeyID, err)
		}
		k.facts.CIDRs = append(k.facts.CIDRs, p)
	}
	w.Scopes = slices.Clone(w.Scopes)
	slices.Sort(w.Scopes)
	k.facts.Scopes = w.Scopes
	if w.Quota != nil && w.Quota.Applies() {
		q := *w.Quota
		k.quota = &q
	}
	if w.RateLimit > 0 && w.RateLimitPeriod > 0 {
		// Per edge, as the plugin's limits are per Vault node.
		k.limiter = rate.NewLimiter(rate.Limit(float64(w.RateLimit)/float64(w.RateLimitPeriod)), w.RateLimit)
	}
	return k, nil
}

// store is the in-memory copy of the mount. Readers take the read lock
// only; the sync loop is the only writer.
type store struct {
	mu      sync.RWMutex
	hasher  *keyformat.Hasher
	byHash  map[[32]byte]*key
	byID    map[string][32]byte
	tenants map[string]string
	// tenantQuotas holds the tenants with a quota (quota.go).
	tenantQuotas map[string]*tenantQuota
	seq          uint64
	loaded       bool
}

func newStore() *store {
	return &store{byHash: map[[32]byte]*key{}, byID: map[string][32]byte{}, tenants: map[string]string{}, tenantQuotas: map[string]*tenantQuota{}}
}

// replace swaps in a freshly loaded snapshot in one step, so verification
// never sees half of one. What this edge counted and has not reported yet
// (usage, quotas) carries over.
func (s *store) replace(n *store) {
	s.mu.Lock()
	carryCounts(s, n)
	s.hasher, s.byHash, s.byID, s.tenants, s.seq, s.loaded = n.hasher, n.byHash, n.byID, n.tenants, n.seq, true
	s.tenantQuotas = n.tenantQuotas
	s.mu.Unlock()
}

func (s *store) upsertLocked(k *key) {
	if old, ok := s.byID[k.w.KeyID]; ok && old != k.hash {
		delete(s.byHash, old)
	}
	if prev, ok := s.byHash[k.hash]; ok {
		k.carryUsage(prev)
		carryKeyQuota(k, prev)
	}
	// Keep the bucket across updates (a renew), so a renew does not refill it.
	if prev, ok := s.byHash[k.hash]; ok && prev.limiter != nil && k.limiter != nil &&
		prev.w.RateLimit == k.w.RateLimit && prev.w.RateLimitPeriod == k.w.RateLimitPeriod {
		k.limiter = prev.limiter
	}
	s.byHash[k.hash] = k
	s.byID[k.w.KeyID] = k.hash
}

func (s *store) deleteLocked(id string) {
	if h, ok := s.byID[id]; ok {
		delete(s.byHash, h)
		delete(s.byID, id)
	}
}

func (s *store) setTenantLocked(name, status string) {
	if status == contract.TenantDeleted {
		delete(s.tenants, name)
		return
	}
	s.tenants[name] = status
}

// apply applies changes in order; a change whose key cannot be parsed is an
// error, so the caller resyncs instead of silently missing a key.
func (s *store) apply(changes []*contract.Change, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range changes {
		switch c.Op {
		case contract.OpUpsert:
			if c.Key == nil {
				return fmt.Errorf("change %d: upsert without a key", c.Seq)
			}
			k, err := newKey(c.Key)
			if err != nil {
				return fmt.Errorf("change %d: %w", c.Seq, err)
			}
			s.upsertLocked(k)
		case contract.OpDelete:
			s.deleteLocked(c.KeyID)
		case contract.OpTenant:
			s.setTenantLocked(c.Tenant, c.TenantStatus)
			s.setTenantQuotaLocked(c.Tenant, c.TenantQuota)
		case contract.OpQuota:
			s.learnLocked(c.Quotas)
		default:
			return fmt.Errorf("change %d: unknown op %q", c.Seq, c.Op)
		}
	}
	s.seq = seq
	return nil
}

func (s *store) size() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byHash)
}

func (s *store) currentSeq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

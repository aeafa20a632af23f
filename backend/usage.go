package backend

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// Usage is counted in memory by verify and flushed to storage by the active
// node (PeriodicFunc and Clean). Storage holds, per key and per tenant
// (usage/ in storage.go), the totals as of the last flush; a read adds what
// this node counted since.
//
// Counters in memory only ever grow, from zero at process start; the stored
// totals of this process are "base" (what storage held when this process
// first touched the entry) plus the counters. No delta bookkeeping, so a
// failed flush simply writes the larger total next time. Usage history
// needs increments per bucket: usage_history.go takes them as the counters
// less what this process already wrote to history, which keeps the same
// property.
const (
	// unattributedTenant labels failures that name no tenant and whose key
	// prefix is shared or unknown. Tenant names cannot start with "_".
	unattributedTenant = "_unknown"

	keyShardCount = 64
	// maxTrackedTenants bounds the tenant map against a gateway (or a bug)
	// sending endless made-up tenant names on the tenant-scoped verify path.
	maxTrackedTenants = 10_000
)

// verifyCodes indexes the per-code counters: the contract's codes, in its
// order, which docs and metrics show.
var verifyCodes = contract.VerifyCodes

const numCodes = len(verifyCodes)

// codeIndex is c's counter; verify answers no code outside the list.
func codeIndex(c string) int { return max(contract.CodeIndex(c), 0) }

// keyUsageRecord is the stored usage of one key.
type keyUsageRecord struct {
	Tenant       string    `json:"tenant"`
	KeyID        string    `json:"key_id"`
	VerifyCount  uint64    `json:"verify_count"`
	LastUsedAt   time.Time `json:"last_used_at"`
	Requests     uint64    `json:"requests"`
	Errors       uint64    `json:"errors"`
	LatencyMicro uint64    `json:"upstream_latency_us_sum"`
	LatencyMax   uint64    `json:"upstream_latency_us_max"`
	// ExpiryWarnedFor is the expiry a key-expiring event was raised for, so
	// a restart does not raise it again; a renewed lease gets a new warning.
	ExpiryWarnedFor time.Time `json:"expiry_warned_for"`
	// RevokedAt marks a tombstone: the key is gone, and a second revoke (the
	// lease ending after a delete) raises no second key-revoked.
	RevokedAt    time.Time `json:"revoked_at"`
	RevokeReason string    `json:"revoke_reason,omitempty"`
}

// tenantUsageRecord is the stored usage of one tenant.
type tenantUsageRecord struct {
	Tenant           string            `json:"tenant"`
	VerifyByCode     map[string]uint64 `json:"verify_by_code"`
	VerifyByRole     map[string]uint64 `json:"verify_by_role"`
	Issued           uint64            `json:"issued"`
	Revoked          uint64            `json:"revoked"`
	Rotations        uint64            `json:"rotations"`
	RotationFailures uint64            `json:"rotation_failures"`
	Anomalies        uint64            `json:"anomalies"`
	Requests         uint64            `json:"requests"`
	Errors           uint64            `json:"errors"`
	LatencyMicro     uint64            `json:"upstream_latency_us_sum"`
	// LastStatus is the tenant status last seen by the tenant hook, so a
	// tenant-suspended event fires on the change, not on every later write.
	LastStatus string    `json:"last_status"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// keyUsage is one key's counters on this node. It points at its tenant's
// counters and its role's counter, resolved once when the key is first
// seen, so a valid verify finds everything it counts with one map read.
type keyUsage struct {
	tenant string
	id     string
	hash   [32]byte
	tu     *tenantUsage
	// role is nil for a key first seen in a gateway report, which names no
	// role; the first valid verify fills it.
	role atomic.Pointer[atomic.Uint64]

	verifies     atomic.Uint64
	lastUsed     atomic.Int64 // unix nanoseconds
	requests     atomic.Uint64
	errors       atomic.Uint64
	latencyMicro atomic.Uint64
	latencyMax   atomic.Uint64
	dirty        atomic.Bool
	spike        rolling
	hist         keyHistory // usage_history.go

	mu     sync.Mutex // guards loaded, gone, base and hist's bookkeeping; record writers take it inside recordLocks
	loaded bool
	gone   bool
	base   keyUsageRecord
}

// record is base plus this node's counters. Caller holds mu.
func (k *keyUsage) record() keyUsageRecord { return k.recordOf(k.counts()) }

// keyCounts is one reading of a key's counters since its base.
type keyCounts struct{ verifies, requests, errors, latencyMicro uint64 }

func (k *keyUsage) counts() keyCounts {
	return keyCounts{k.verifies.Load(), k.requests.Load(), k.errors.Load(), k.latencyMicro.Load()}
}

// recordOf is the base plus counts c, which the caller read once: a caller
// that rebases on what it wrote must subtract the very counts it added.
func (k *keyUsage) recordOf(c keyCounts) keyUsageRecord {
	r := k.base
	r.VerifyCount += c.verifies
	if n := k.lastUsed.Load(); n != 0 {
		if t := time.Unix(0, n).UTC(); t.After(r.LastUsedAt) {
			r.LastUsedAt = t
		}
	}
	r.Requests += c.requests
	r.Errors += c.errors
	r.LatencyMicro += c.latencyMicro
	r.LatencyMax = max(r.LatencyMax, k.latencyMax.Load())
	return r
}

// tenantUsage is one tenant's counters on this node.
type tenantUsage struct {
	name string

	codes            [numCodes]atomic.Uint64
	issued           atomic.Uint64
	revoked          atomic.Uint64
	rotations        atomic.Uint64
	rotationFailures atomic.Uint64
	anomalies        atomic.Uint64
	requests         atomic.Uint64
	errors           atomic.Uint64
	latencyMicro     atomic.Uint64
	dirty            atomic.Bool
	failures         rolling
	hist             tenantHistory // usage_history.go

	// roles is replaced whole when a role is added (rarely), so readers
	// take no lock.
	rmu   sync.Mutex
	roles atomic.Pointer[map[string]*atomic.Uint64]

	mu     sync.Mutex
	loaded bool
	base   tenantUsageRecord
}

func (t *tenantUsage) role(name string) *atomic.Uint64 {
	if c := (*t.roles.Load())[name]; c != nil {
		return c
	}
	t.rmu.Lock()
	defer t.rmu.Unlock()
	old := *t.roles.Load()
	if c := old[name]; c != nil {
		return c
	}
	next := make(map[string]*atomic.Uint64, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	c := new(atomic.Uint64)
	next[name] = c
	t.roles.Store(&next)
	return c
}

func newTenantUsage(name string) *tenantUsage {
	t := &tenantUsage{name: name}
	empty := map[string]*atomic.Uint64{}
	t.roles.Store(&empty)
	return t
}

// record is base plus this node's counters. Caller holds mu.
func (t *tenantUsage) record() tenantUsageRecord {
	r := t.base
	r.Tenant = t.name
	r.VerifyByCode = make(map[string]uint64, numCodes)
	for i, c := range verifyCodes {
		if n := t.base.VerifyByCode[c] + t.codes[i].Load(); n > 0 {
			r.VerifyByCode[c] = n
		}
	}
	r.VerifyByRole = make(map[string]uint64, len(t.base.VerifyByRole))
	for k, v := range t.base.VerifyByRole {
		r.VerifyByRole[k] = v
	}
	for k, v := range *t.roles.Load() {
		r.VerifyByRole[k] += v.Load()
	}
	r.Issued += t.issued.Load()
	r.Revoked += t.revoked.Load()
	r.Rotations += t.rotations.Load()
	r.RotationFailures += t.rotationFailures.Load()
	r.Anomalies += t.anomalies.Load()
	r.Requests += t.requests.Load()
	r.Errors += t.errors.Load()
	r.LatencyMicro += t.latencyMicro.Load()
	return r
}

// Keys are found by verify through their HMAC, which verify already holds
// in the cache line it just compared (the key id string would cost another
// cache miss to hash), and by everything else through their id.
type keyShard struct {
	mu     sync.RWMutex
	byHash map[[32]byte]*keyUsage
	// Pad to a cache line so that shards used by different cores do not
	// share one.
	_ [64 - 32]byte
}

type idShard struct {
	mu   sync.RWMutex
	byID map[string]*keyUsage
	_    [64 - 32]byte
}

// usageTracker holds every counter of this node.
type usageTracker struct {
	shards [keyShardCount]keyShard
	ids    [keyShardCount]idShard

	// tenants is replaced whole when a tenant is added or dropped (rarely),
	// so verify reads it with one atomic load and no lock.
	tmu     sync.Mutex
	tenants atomic.Pointer[map[string]*tenantUsage]

	// prefixes maps a tenant's own key prefix to the tenant, so a burst of
	// unknown keys carrying it counts against that tenant. Replaced whole.
	prefixes atomic.Pointer[map[string]string]

	ipFailures ipWindow
	cfg        atomic.Pointer[monitorConfig]

	// now is the clock of the usage figures: the time a verify is counted
	// at (the verify handler reads it once for the decision and the
	// count), the stale and expiring windows of a usage read, the bound on
	// a reported last use, flush times. time.Now, except in tests that
	// move it instead of sleeping.
	now func() time.Time

	// recordLocks serialise every write of one key's stored usage record
	// (flushKey; updateKeyUsage: tombstone, expiry mark), whether or not
	// the key has counters in memory. keyUsage.mu, when there is one, is
	// taken inside it.
	recordLocks []*locksutil.LockEntry
}

func newUsageTracker() *usageTracker {
	u := &usageTracker{recordLocks: locksutil.CreateLocks(), now: time.Now}
	noTenants := map[string]*tenantUsage{}
	u.tenants.Store(&noTenants)
	for i := range u.shards {
		u.shards[i].byHash = map[[32]byte]*keyUsage{}
		u.ids[i].byID = map[string]*keyUsage{}
	}
	u.cfg.Store(defaultMonitorConfig())
	empty := map[string]string{}
	u.prefixes.Store(&empty)
	u.ipFailures.counts = map[netip.Addr]int{}
	return u
}

// idShardOf spreads key ids over the shards with FNV-1a, which allocates
// nothing and costs a few ns for a 36-byte id.
func (u *usageTracker) idShardOf(id string) *idShard {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return &u.ids[h%keyShardCount]
}

// key returns the counters of the key with this HMAC, creating them on
// first use. The HMAC is uniformly random, so its first byte is the shard.
func (u *usageTracker) key(tenant, id, role string, hash *[32]byte) *keyUsage {
	sh := &u.shards[hash[0]%keyShardCount]
	sh.mu.RLock()
	k := sh.byHash[*hash]
	sh.mu.RUnlock()
	if k != nil {
		return k
	}
	return u.newKey(tenant, id, role, hash)
}

func (u *usageTracker) newKey(tenant, id, role string, hash *[32]byte) *keyUsage {
	t := u.tenant(tenant)
	sh := &u.shards[hash[0]%keyShardCount]
	is := u.idShardOf(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if k := sh.byHash[*hash]; k != nil {
		return k
	}
	k := &keyUsage{tenant: tenant, id: id, hash: *hash, tu: t}
	if role != "" {
		k.role.Store(t.role(role))
	}
	sh.byHash[*hash] = k
	is.mu.Lock()
	is.byID[id] = k
	is.mu.Unlock()
	return k
}

func (u *usageTracker) peekKey(id string) *keyUsage {
	is := u.idShardOf(id)
	is.mu.RLock()
	defer is.mu.RUnlock()
	return is.byID[id]
}

func (u *usageTracker) dropKey(id string) *keyUsage {
	k := u.peekKey(id)
	if k == nil {
		return nil
	}
	sh := &u.shards[k.hash[0]%keyShardCount]
	is := u.idShardOf(id)
	sh.mu.Lock()
	if sh.byHash[k.hash] == k {
		delete(sh.byHash, k.hash)
	}
	is.mu.Lock()
	if is.byID[id] == k {
		delete(is.byID, id)
	}
	is.mu.Unlock()
	sh.mu.Unlock()
	return k
}

// tenant returns the tenant's counters, creating them on first use; past
// maxTrackedTenants new names count as unattributed.
func (u *usageTracker) tenant(name string) *tenantUsage {
	if t := (*u.tenants.Load())[name]; t != nil {
		return t
	}
	u.tmu.Lock()
	defer u.tmu.Unlock()
	old := *u.tenants.Load()
	if t := old[name]; t != nil {
		return t
	}
	if len(old) >= maxTrackedTenants && name != unattributedTenant {
		if t := old[unattributedTenant]; t != nil {
			return t
		}
		name = unattributedTenant
	}
	t := newTenantUsage(name)
	u.storeTenants(old, name, t)
	return t
}

// storeTenants publishes a copy of old with name set to t (nil drops it).
// Caller holds tmu.
func (u *usageTracker) storeTenants(old map[string]*tenantUsage, name string, t *tenantUsage) {
	next := make(map[string]*tenantUsage, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	if t == nil {
		delete(next, name)
	} else {
		next[name] = t
	}
	u.tenants.Store(&next)
}

func (u *usageTracker) dropTenant(name string) {
	u.tmu.Lock()
	defer u.tmu.Unlock()
	u.storeTenants(*u.tenants.Load(), name, nil)
}

func (u *usageTracker) peekTenant(name string) *tenantUsage {
	return (*u.tenants.Load())[name]
}

func (u *usageTracker) tenantList() []*tenantUsage {
	m := *u.tenants.Load()
	out := make([]*tenantUsage, 0, len(m))
	for _, t := range m {
		out = append(out, t)
	}
	return out
}

// tenantOfKey attributes a key that matched nothing (NOT_FOUND, or
// MALFORMED with a recognisable prefix) to the tenant owning its prefix.
func (u *usageTracker) tenantOfKey(apiKey string) string {
	i := strings.IndexByte(apiKey, '_')
	if i <= 0 {
		return unattributedTenant
	}
	if t := (*u.prefixes.Load())[apiKey[:i]]; t != "" {
		return t
	}
	return unattributedTenant
}

// recordVerify is verify's only hook: it counts the answer in memory and
// watches for anomalies. It must stay cheap. Once a key and tenant have
// been seen, a VALID answer allocates nothing and takes no lock but its key
// shard's read lock (usageTracker.key); so does a refusal about a found
// key, which also allocates the key's refusal counters once, on its first
// refusal; a refusal with a client_ip also takes ipWindow.mu, one mutex per
// mount (anomaly.go). No clock read but the latency's (start is the time
// verify was given, from u.now). The counters (the tenant's code and role
// counters, shared by all its keys, and the key's verifies or refusals)
// take an atomic add on every call; last-use times and dirty flags are
// written only when they change. Usage history is built from these
// counters by the flush, never here (usage_history.go).
func (b *backend) recordVerify(in *contract.Request, out verifyOutcome, start time.Time) {
	b.metrics.verifyLatency.observe(time.Since(start))
	u := b.usage
	cfg := u.cfg.Load()
	// The request counts at the time it was given: last use shows whole
	// seconds and a window is an hour or so, far above a verify's duration.
	nowNano := start.UnixNano()
	win := nowNano / int64(cfg.AnomalyWindow)

	if out.Code == contract.CodeValid {
		ck, p := out.Key, out.Key.profile
		k := u.key(p.tenant, ck.keyID, p.role, &ck.hash)
		k.tu.codes[0].Add(1)
		rc := k.role.Load()
		if rc == nil {
			rc = k.tu.role(p.role)
			k.role.Store(rc)
		}
		rc.Add(1)
		k.verifies.Add(1)
		// Second precision is all last_used_at shows; a hot key then
		// writes the shared line once a second, not on every verify.
		if nowNano-k.lastUsed.Load() >= int64(time.Second) {
			k.lastUsed.Store(nowNano)
		}
		setDirty(&k.dirty)
		setDirty(&k.tu.dirty)
		if n := k.spike.add(win); n >= int64(cfg.KeySpikeMinimum) {
			threshold := int64(cfg.KeySpikeMinimum)
			if base, ok := k.spike.baseline(); ok {
				threshold = max(threshold, base*int64(cfg.KeySpikeFactor))
				if n >= threshold && k.spike.fire(win) {
					b.raiseAnomaly(anomaly{Kind: anomalyKeySpike, Tenant: p.tenant, KeyID: ck.keyID, Count: n, Baseline: base, Threshold: threshold, Window: cfg.AnomalyWindow})
				}
			}
		}
		return
	}

	// verify hands over the key for every refusal about a found key; the
	// key's history counts it too, and its counters lead to the tenant's.
	// No role: verify_by_role counts VALID answers, and a role gets its
	// counter with its key's first one.
	ci := codeIndex(out.Code)
	var tenant string
	var t *tenantUsage
	switch {
	case out.Key != nil:
		tenant = out.Key.profile.tenant
		k := u.key(tenant, out.Key.keyID, "", &out.Key.hash)
		k.countRefusal(ci)
		t = k.tu
	case in.Tenant != "":
		tenant = in.Tenant
	default:
		tenant = u.tenantOfKey(in.APIKey)
	}
	if t == nil {
		t = u.tenant(tenant)
	}
	t.codes[ci].Add(1)
	setDirty(&t.dirty)
	// Rate limits and quotas are the role working as configured, not a
	// sign of attack.
	if out.Code == contract.CodeRateLimited || out.Code == contract.CodeQuotaExceeded {
		return
	}
	if n := t.failures.add(win); n >= int64(cfg.TenantFailureThreshold) && t.failures.fire(win) {
		b.raiseAnomaly(anomaly{Kind: anomalyTenantFailures, Tenant: tenant, Count: n, Threshold: int64(cfg.TenantFailureThreshold), Window: cfg.AnomalyWindow})
	}
	if in.ClientIP.IsValid() {
		if n, fire := u.ipFailures.add(in.ClientIP, win, cfg.IPFailureThreshold); fire {
			b.raiseAnomaly(anomaly{Kind: anomalyIPFailures, Tenant: tenant, ClientIP: in.ClientIP.String(), Count: int64(n), Threshold: int64(cfg.IPFailureThreshold), Window: cfg.AnomalyWindow})
		}
	}
}

// setDirty writes the flag only when it changes: on a busy key it is
// already set, and a load keeps the cache line shared between cores.
func setDirty(f *atomic.Bool) {
	if !f.Load() {
		f.Store(true)
	}
}

// loadKeyBase reads a key's stored record into k once. Caller holds k.mu.
func (u *usageTracker) loadKeyBase(ctx context.Context, s logical.Storage, id string, k *keyUsage) error {
	if k.loaded {
		return nil
	}
	rec, err := readKeyUsage(ctx, s, k.tenant, id)
	if err != nil {
		return err
	}
	if rec != nil {
		k.base = *rec
	} else {
		k.base = keyUsageRecord{Tenant: k.tenant, KeyID: id}
	}
	k.loaded = true
	// A tombstone means the key was revoked: whatever this node counted
	// since belongs to a dead key and must not bring the record back.
	if !k.base.RevokedAt.IsZero() {
		k.gone = true
	}
	return nil
}

func readKeyUsage(ctx context.Context, s logical.Storage, tenant, id string) (*keyUsageRecord, error) {
	return getJSON[keyUsageRecord](ctx, s, usageKeyPath(tenant, id), fmt.Sprintf("usage of key %q", id))
}

func readTenantUsage(ctx context.Context, s logical.Storage, tenant string) (*tenantUsageRecord, error) {
	return getJSON[tenantUsageRecord](ctx, s, usageTenantPrefix+tenant, fmt.Sprintf("usage of tenant %q", tenant))
}

// keyUsageOf returns a key's usage as this node knows it: stored totals plus
// its own counters.
func (u *usageTracker) keyUsageOf(ctx context.Context, s logical.Storage, tenant, id string) (keyUsageRecord, error) {
	if k := u.peekKey(id); k != nil && k.tenant == tenant {
		k.mu.Lock()
		defer k.mu.Unlock()
		if err := u.loadKeyBase(ctx, s, id, k); err != nil {
			return keyUsageRecord{}, err
		}
		return k.record(), nil
	}
	rec, err := readKeyUsage(ctx, s, tenant, id)
	if err != nil || rec == nil {
		return keyUsageRecord{Tenant: tenant, KeyID: id}, err
	}
	return *rec, nil
}

// updateKeyUsage changes a key's stored record under the same lock as the
// flush; change returns false to leave it unwritten. It returns whether
// it wrote.
func (u *usageTracker) updateKeyUsage(ctx context.Context, s logical.Storage, tenant, id string, change func(*keyUsageRecord) bool) (bool, error) {
	lock := locksutil.LockForKey(u.recordLocks, id)
	lock.Lock()
	defer lock.Unlock()
	if k := u.peekKey(id); k != nil && k.tenant == tenant {
		k.mu.Lock()
		defer k.mu.Unlock()
		if err := u.loadKeyBase(ctx, s, id, k); err != nil {
			return false, err
		}
		c := k.counts()
		rec := k.recordOf(c)
		if !change(&rec) {
			return false, nil
		}
		// History first: a tombstone drops the counters, and what they
		// had not booked would be lost.
		if d, m := k.pendingHistory(); !d.empty() {
			if err := writeKeyHistory(ctx, s, k, &d, m, u.now()); err != nil {
				return false, err
			}
		}
		if err := putJSON(ctx, s, usageKeyPath(tenant, id), fmt.Sprintf("usage of key %q", id), rec); err != nil {
			return false, err
		}
		// What was written becomes the base, less the counts it holds:
		// the counters keep running, so verifies counted during the write
		// stay counted, and nothing is counted twice.
		k.base = rec
		k.base.VerifyCount -= c.verifies
		k.base.Requests -= c.requests
		k.base.Errors -= c.errors
		k.base.LatencyMicro -= c.latencyMicro
		k.gone = !rec.RevokedAt.IsZero()
		return true, nil
	}
	rec, err := readKeyUsage(ctx, s, tenant, id)
	if err != nil {
		return false, err
	}
	if rec == nil {
		rec = &keyUsageRecord{Tenant: tenant, KeyID: id}
	}
	if !change(rec) {
		return false, nil
	}
	return true, putJSON(ctx, s, usageKeyPath(tenant, id), fmt.Sprintf("usage of key %q", id), rec)
}

// tombstone marks a key's usage record revoked. It returns false when it
// already was: the caller then raises no second key-revoked.
func (u *usageTracker) tombstone(ctx context.Context, s logical.Storage, tenant, id, reason string, now time.Time) (bool, error) {
	first, err := u.updateKeyUsage(ctx, s, tenant, id, func(r *keyUsageRecord) bool {
		if !r.RevokedAt.IsZero() {
			return false
		}
		r.RevokedAt, r.RevokeReason = now.UTC(), reason
		return true
	})
	// The counters go: a verify racing the revoke may recreate them, and the
	// flush then finds the tombstone and drops them again.
	u.dropKey(id)
	return first, err
}

// loadTenantBase reads a tenant's stored record into t once. Caller holds t.mu.
func (u *usageTracker) loadTenantBase(ctx context.Context, s logical.Storage, t *tenantUsage) error {
	if t.loaded {
		return nil
	}
	rec, err := readTenantUsage(ctx, s, t.name)
	if err != nil {
		return err
	}
	if rec != nil {
		t.base = *rec
	} else {
		t.base = tenantUsageRecord{Tenant: t.name}
	}
	t.loaded = true
	return nil
}

// tenantUsageOf returns a tenant's usage: stored totals plus this node's.
func (u *usageTracker) tenantUsageOf(ctx context.Context, s logical.Storage, name string) (tenantUsageRecord, error) {
	t := u.peekTenant(name)
	if t == nil {
		rec, err := readTenantUsage(ctx, s, name)
		if err != nil || rec == nil {
			return tenantUsageRecord{Tenant: name}, err
		}
		return *rec, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := u.loadTenantBase(ctx, s, t); err != nil {
		return tenantUsageRecord{}, err
	}
	return t.record(), nil
}

// writeTenant stores a tenant's totals. Caller holds t.mu.
func (u *usageTracker) writeTenant(ctx context.Context, s logical.Storage, t *tenantUsage, now time.Time) error {
	if err := u.loadTenantBase(ctx, s, t); err != nil {
		return err
	}
	rec := t.record()
	rec.UpdatedAt = now.UTC()
	return putJSON(ctx, s, usageTenantPrefix+t.name, fmt.Sprintf("usage of tenant %q", t.name), rec)
}

// flush writes what changed since the last flush, at most maxWrites
// storage writes; the rest stays dirty for the next one. A tenant or key
// takes two when it counted verifies or traffic (its history entry of the
// day, then its totals: usage_history.go), and is never split between
// flushes. Tenants go first: they are few and carry the figures operators
// look at.
func (u *usageTracker) flush(ctx context.Context, s logical.Storage, maxWrites int, now time.Time) (int, error) {
	written := 0
	for _, t := range u.tenantList() {
		if written >= maxWrites {
			return written, nil
		}
		if t.name == unattributedTenant || !t.dirty.Swap(false) {
			continue
		}
		t.mu.Lock()
		n, full, err := u.flushTenant(ctx, s, t, maxWrites-written, now)
		t.mu.Unlock()
		written += n
		if err != nil || full {
			t.dirty.Store(true)
			return written, err
		}
	}
	for i := range u.ids {
		is := &u.ids[i]
		is.mu.RLock()
		var dirty []string
		for id, k := range is.byID {
			if k.dirty.Load() || k.hist.dirty.Load() {
				dirty = append(dirty, id)
			}
		}
		is.mu.RUnlock()
		for _, id := range dirty {
			if written >= maxWrites {
				return written, nil
			}
			k := u.peekKey(id)
			if k == nil {
				continue
			}
			totals, hist := k.dirty.Swap(false), k.hist.dirty.Swap(false)
			if !totals && !hist {
				continue
			}
			n, full, err := u.flushKey(ctx, s, id, k, totals, maxWrites-written, now)
			written += n
			if err != nil || full {
				// Setting a flag whose part was written costs the next
				// flush a look, never a second count.
				if totals {
					k.dirty.Store(true)
				}
				if hist {
					k.hist.dirty.Store(true)
				}
				return written, err
			}
		}
	}
	return written, nil
}

// flushKey writes a key's history (when it counted something since) and,
// when they changed, its totals, if that fits in budget writes; full says
// it did not. A key refused and never verified since changed only its
// history.
func (u *usageTracker) flushKey(ctx context.Context, s logical.Storage, id string, k *keyUsage, totals bool, budget int, now time.Time) (written int, full bool, err error) {
	lock := locksutil.LockForKey(u.recordLocks, id)
	lock.Lock()
	defer lock.Unlock()
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := u.loadKeyBase(ctx, s, id, k); err != nil {
		return 0, false, err
	}
	if k.gone {
		u.dropKey(id)
		return 0, false, nil
	}
	d, m := k.pendingHistory()
	if boolInt(totals)+boolInt(!d.empty()) > budget {
		return 0, true, nil
	}
	if !d.empty() {
		if err := writeKeyHistory(ctx, s, k, &d, m, now); err != nil {
			return 0, false, err
		}
		written++
	}
	if totals {
		if err := putJSON(ctx, s, usageKeyPath(k.tenant, id), fmt.Sprintf("usage of key %q", id), k.record()); err != nil {
			return written, false, err
		}
		written++
	}
	return written, false, nil
}

// flushUsage is the periodic and Clean-time flush; only nodes that passed
// WriteSafeReplicationState run it. ErrReadOnly means the node stopped
// being writable since (step-down, or the replication state cached for up
// to a second, sysview.go): it is logged at debug and the counts stay in
// memory. A standby never flushes: its counts stay node-local.
func (b *backend) flushUsage(ctx context.Context, s logical.Storage) {
	// Two writes is the least one entry can take; a setting stored before
	// that floor is read as it.
	n, err := b.usage.flush(ctx, s, max(b.usage.cfg.Load().FlushMaxWrites, 2), b.usage.now())
	switch {
	case errors.Is(err, logical.ErrReadOnly):
		b.Logger().Debug("usage not flushed: storage is read-only on this node")
	case err != nil:
		b.Logger().Warn("usage flush failed; will retry", "written", n, "error", err)
	case n > 0:
		b.Logger().Debug("usage flushed", "entries", n)
	}
}

// invalidate serves Invalidate for usage/<rest>: the active node wrote a
// newer total, so this node's base is re-read on next use. Its own
// counters stay, since the active node never counted them.
func (u *usageTracker) invalidate(rest string) {
	switch {
	case strings.HasPrefix(rest, "tenants/"):
		if t := u.peekTenant(strings.TrimPrefix(rest, "tenants/")); t != nil {
			t.mu.Lock()
			t.loaded = false
			t.mu.Unlock()
		}
	case strings.HasPrefix(rest, "keys/"):
		_, id, ok := strings.Cut(strings.TrimPrefix(rest, "keys/"), "/")
		if !ok {
			return
		}
		if k := u.peekKey(id); k != nil {
			k.mu.Lock()
			k.loaded = false
			k.mu.Unlock()
		}
	}
}

package backend

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// Quotas are counted in memory by verify and flushed with the usage by the
// active node (PeriodicFunc and Clean), in their own entries (quota/ in
// storage.go). On the community edition every verify reaches the active
// node, so its counters are the cluster's: its own verifies plus what edges
// report through usage/report. Edges learn the totals back from the answer
// to their report and from the sync feed (one OpQuota change per flush).
//
// A key's quota is its role's at issue (keyEntry.Quota, like its rate
// limit); a tenant's is read live from the tenant record, so changing it
// applies at once. Verify spends with contract.TakeQuota on the counters of
// quotaMeter: one compare-and-swap per quota, no lock, no storage access.
// The counters of a key are read from storage once per process, when a
// verify (or a report) first meets the key (attachKeyQuota), and a tenant's
// when its record enters the verify cache (attachTenantQuota).
//
// A failover or crash of the active node loses what it counted since its
// last flush (about a minute); edges keep what they learned, since they only
// ever raise it.

// quotaRecord is the stored standing of one quota.
type quotaRecord struct {
	Tenant      string          `json:"tenant"`
	KeyID       string          `json:"key_id,omitempty"`
	Period      contract.Period `json:"period"`
	PeriodStart time.Time       `json:"period_start"`
	Used        int64           `json:"used"`
	Credit      int64           `json:"credit"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

// quotaMeter is one quota's counters on this node: a key's (keyID set) or
// a tenant's. A key's rule never changes; a tenant's follows its record.
type quotaMeter struct {
	// state is what verify spends on. A key's lives in the first cached
	// key that met the meter (cachedKey.ownQuota), in the cache line verify
	// reads anyway, so a quota costs verify no memory access of its own; a
	// tenant's, and that of a key only an edge's report has met, is own.
	state *contract.QuotaState
	own   contract.QuotaState
	// reload asks the next load to merge the stored standing again:
	// another node wrote it (Invalidate).
	reload atomic.Bool
	// rule is nil when no quota applies (a tenant without one).
	rule atomic.Pointer[contract.QuotaRule]
	// exceeded counts QUOTA_EXCEEDED answers (tenant meters only).
	exceeded atomic.Uint64

	tenant, keyID string
	hash          [32]byte // a key's HMAC: its verify cache entry

	mu     sync.Mutex // guards loaded, gone, flushed; taken by loads and flushes, never by verify
	loaded bool
	gone   bool
	// flushed is the Spent and Credit words as last written, so a flush
	// writes only what changed.
	flushed [2]meterWord
}

type meterWord struct {
	idx, n int64
	ok     bool
}

func wordOf(m *contract.Meter) meterWord {
	idx, n, ok := m.Word()
	return meterWord{idx, n, ok}
}

func (m *quotaMeter) currentRule() (contract.QuotaRule, bool) {
	if r := m.rule.Load(); r != nil {
		return *r, true
	}
	return contract.QuotaRule{}, false
}

func (m *quotaMeter) storagePath() string {
	if m.keyID == "" {
		return quotaTenantPrefix + m.tenant
	}
	return quotaKeyPath(m.tenant, m.keyID)
}

func (m *quotaMeter) what() string {
	if m.keyID == "" {
		return fmt.Sprintf("quota of tenant %q", m.tenant)
	}
	return fmt.Sprintf("quota of key %q", m.keyID)
}

const quotaShardCount = 64

type quotaShard struct {
	mu   sync.RWMutex
	byID map[string]*quotaMeter
	_    [64 - 32]byte
}

// quotaTracker holds every quota counter of this node.
type quotaTracker struct {
	seed   maphash.Seed
	shards [quotaShardCount]quotaShard

	// tenants is replaced whole when a tenant is added (rarely), so
	// verify reads it with one atomic load.
	tmu     sync.Mutex
	tenants atomic.Pointer[map[string]*quotaMeter]
}

func newQuotaTracker() *quotaTracker {
	q := &quotaTracker{seed: maphash.MakeSeed()}
	for i := range q.shards {
		q.shards[i].byID = map[string]*quotaMeter{}
	}
	empty := map[string]*quotaMeter{}
	q.tenants.Store(&empty)
	return q
}

func (q *quotaTracker) shard(id string) *quotaShard {
	return &q.shards[maphash.String(q.seed, id)%quotaShardCount]
}

// key returns the meter of a key, creating it (with rule) on first use,
// its counters in store when that is not nil (see quotaMeter.state).
func (q *quotaTracker) key(tenant, id string, rule contract.QuotaRule, hash [32]byte, store *contract.QuotaState) *quotaMeter {
	sh := q.shard(id)
	sh.mu.RLock()
	m := sh.byID[id]
	sh.mu.RUnlock()
	if m != nil {
		return m
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if m := sh.byID[id]; m != nil {
		return m
	}
	m = &quotaMeter{tenant: tenant, keyID: id, hash: hash}
	m.state = &m.own
	if store != nil {
		m.state = store
	}
	m.rule.Store(&rule)
	sh.byID[id] = m
	return m
}

func (q *quotaTracker) peekKey(id string) *quotaMeter {
	sh := q.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.byID[id]
}

func (q *quotaTracker) dropKey(id string) *quotaMeter {
	sh := q.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.byID[id]
	delete(sh.byID, id)
	return m
}

// tenant returns a tenant's meter, creating it (with no rule) on first use.
// Tenant names reach it only from records that exist (a key's, a tenant
// record's), so the map is bounded by the mount's tenants.
func (q *quotaTracker) tenant(name string) *quotaMeter {
	if m := (*q.tenants.Load())[name]; m != nil {
		return m
	}
	q.tmu.Lock()
	defer q.tmu.Unlock()
	old := *q.tenants.Load()
	if m := old[name]; m != nil {
		return m
	}
	m := &quotaMeter{tenant: name}
	m.state = &m.own
	next := maps.Clone(old)
	next[name] = m
	q.tenants.Store(&next)
	return m
}

func (q *quotaTracker) dropTenant(name string) {
	q.tmu.Lock()
	defer q.tmu.Unlock()
	old := *q.tenants.Load()
	if old[name] == nil {
		return
	}
	next := maps.Clone(old)
	delete(next, name)
	q.tenants.Store(&next)
}

func (q *quotaTracker) meters() []*quotaMeter {
	var out []*quotaMeter
	for _, m := range *q.tenants.Load() {
		out = append(out, m)
	}
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.RLock()
		for _, m := range sh.byID {
			out = append(out, m)
		}
		sh.mu.RUnlock()
	}
	return out
}

func (q *quotaTracker) reset() {
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.Lock()
		sh.byID = map[string]*quotaMeter{}
		sh.mu.Unlock()
	}
	q.tmu.Lock()
	empty := map[string]*quotaMeter{}
	q.tenants.Store(&empty)
	q.tmu.Unlock()
}

// invalidate serves Invalidate for quota/<rest>: another node wrote the
// standing, which the next load merges in. It returns the key's meter.
func (q *quotaTracker) invalidate(rest string) *quotaMeter {
	var m *quotaMeter
	switch {
	case strings.HasPrefix(rest, "tenants/"):
		m = (*q.tenants.Load())[strings.TrimPrefix(rest, "tenants/")]
	case strings.HasPrefix(rest, "keys/"):
		if _, id, ok := strings.Cut(strings.TrimPrefix(rest, "keys/"), "/"); ok {
			m = q.peekKey(id)
		}
	}
	if m != nil {
		m.reload.Store(true)
	}
	return m
}

// load merges the stored standing into m once (and again after reload):
// Raise, so what this node counted meanwhile is never lost. Caller holds
// m.mu.
func (m *quotaMeter) load(ctx context.Context, s logical.Storage) error {
	if m.loaded && !m.reload.Load() {
		return nil
	}
	m.reload.Store(false)
	r, ok := m.currentRule()
	if !ok || !r.Applies() {
		return nil
	}
	rec, err := getJSON[quotaRecord](ctx, s, m.storagePath(), m.what())
	if err != nil {
		m.reload.Store(true)
		return err
	}
	if rec != nil && rec.Period == r.Period {
		idx := r.Period.Index(rec.PeriodStart)
		m.state.Spent.Raise(idx, rec.Used)
		m.state.Credit.Raise(idx, rec.Credit)
		if !m.loaded {
			m.flushed = [2]meterWord{wordOf(&m.state.Spent), wordOf(&m.state.Credit)}
		}
	}
	m.loaded = true
	return nil
}

// attachKeyQuota gives a key of a role with a quota its meter, loaded,
// before the verify cache holds the key (a fill, a key write), so verify
// finds the counters in memory. A standing another node wrote drops the
// cached key (invalidateQuota), and its next fill merges it.
func (b *backend) attachKeyQuota(ctx context.Context, s logical.Storage, k *cachedKey) error {
	p := k.profile
	if p.quota.Limit == 0 {
		return nil
	}
	m := b.quotas.key(p.tenant, k.keyID, p.quota, k.hash, &k.ownQuota)
	m.mu.Lock()
	err := m.load(ctx, s)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	k.quota.Store(m.state)
	return nil
}

// attachTenantQuota sets the tenant's meter to the record's quota; the
// verify cache calls it when it fills a tenant, so the cached record and
// the rule verify spends against are always the same. A changed period
// starts over: counts of days are not counts of months.
func (b *backend) attachTenantQuota(ctx context.Context, s logical.Storage, t *tenantEntry) error {
	rule := t.quotaRule()
	m := b.quotas.tenant(t.Name)
	m.mu.Lock()
	defer m.mu.Unlock()
	old, had := m.currentRule()
	switch {
	case rule == nil && !had:
		return nil
	case rule == nil:
		m.rule.Store(nil)
		return nil
	case !had || old.Period != rule.Period:
		m.state.Spent.Reset()
		m.state.Known.Reset()
		m.state.Credit.Reset()
		m.loaded = false
		m.flushed = [2]meterWord{}
	}
	m.rule.Store(rule)
	return m.load(ctx, s)
}

// spendQuota is pluginStore.Spend's quota part: k's own quota, resolved
// before Decide (attachKeyQuota), and its tenant's.
func (b *backend) spendQuota(p *keyProfile, k *cachedKey, now time.Time) (string, contract.Quota) {
	var ks *contract.QuotaState
	if p.quota.Limit > 0 {
		ks = k.quota.Load()
	}
	tm := p.tenantMeter.Load()
	if tm == nil {
		tm = b.quotas.tenant(p.tenant)
		p.tenantMeter.Store(tm)
	}
	tr := tm.rule.Load()
	if ks == nil && tr == nil {
		return "", contract.Quota{}
	}
	var trule contract.QuotaRule
	var ts *contract.QuotaState
	if tr != nil {
		trule, ts = *tr, tm.state
	}
	code, q := contract.TakeQuota(now, p.quota, ks, trule, ts)
	if code == contract.CodeQuotaExceeded {
		tm.exceeded.Add(1)
	}
	return code, q
}

// quotaReport is the quota part of one usage/report entry.
type quotaReport struct {
	periodStart, used             int64
	tenantPeriodStart, tenantUsed int64
}

// parseQuotaReport reads the quota fields of a usage/report entry; its
// error starts with the field name. Quota use is part of the entry's
// requests.
func parseQuotaReport(m map[string]interface{}, requests uint64) (quotaReport, error) {
	var r quotaReport
	for _, f := range []struct {
		name string
		dst  *int64
	}{
		{"quota_period_start", &r.periodStart}, {"quota_used", &r.used},
		{"tenant_quota_period_start", &r.tenantPeriodStart}, {"tenant_quota_used", &r.tenantUsed},
	} {
		v, err := nonNegative(m, f.name, 1)
		if err != nil {
			return r, err
		}
		*f.dst = int64(v)
	}
	if uint64(r.used) > requests {
		return r, fmt.Errorf("quota_used: %d exceeds requests (%d)", r.used, requests)
	}
	if uint64(r.tenantUsed) > requests {
		return r, fmt.Errorf("tenant_quota_used: %d exceeds requests (%d)", r.tenantUsed, requests)
	}
	return r, nil
}

// reportQuota counts what an edge reports it served of a key's quota and
// its tenant's, when the report is of the period this node is in, and
// returns where those quotas stand now (nil where none applies).
func (b *backend) reportQuota(ctx context.Context, s logical.Storage, tenant, id string, hash *[32]byte, r quotaReport, now time.Time) (key, ten *contract.QuotaStanding, err error) {
	km := b.quotas.peekKey(id)
	// Edges send quota_used only for keys with a quota of their own: keys
	// without one cost no record read.
	if km == nil && r.used > 0 {
		rec, err := readKeyRecord(ctx, s, hex.EncodeToString(hash[:]))
		if err != nil {
			return nil, nil, err
		}
		if rec != nil && rec.Tenant == tenant && rec.Quota != nil && rec.Quota.Applies() {
			km = b.quotas.key(tenant, id, *rec.Quota, *hash, nil)
		}
	}
	if km != nil {
		km.mu.Lock()
		err := km.load(ctx, s)
		km.mu.Unlock()
		if err != nil {
			return nil, nil, err
		}
		if rule, ok := km.currentRule(); ok && rule.Applies() {
			idx := rule.Period.Index(now)
			if r.used > 0 && r.periodStart == rule.Period.StartSec(idx) {
				km.state.Spent.Add(idx, r.used)
			}
			key = km.state.Standing(rule, idx, tenant, id)
		}
	}
	// The tenant's rule is set when its record enters the verify cache.
	t, err := b.lookupTenant(ctx, s, tenant)
	if err != nil || t == nil {
		return key, nil, err
	}
	tm := b.quotas.tenant(tenant)
	if rule, ok := tm.currentRule(); ok {
		idx := rule.Period.Index(now)
		if r.tenantUsed > 0 && r.tenantPeriodStart == rule.Period.StartSec(idx) {
			tm.state.Spent.Add(idx, r.tenantUsed)
		}
		ten = tm.state.Standing(rule, idx, tenant, "")
	}
	return key, ten, nil
}

// maxQuotasPerChange bounds one OpQuota change (about 100 bytes each).
const maxQuotasPerChange = 500

// flushQuotas writes the standings that changed since the last flush, at
// most maxWrites, and tells edges in one feed change per
// maxQuotasPerChange standings. Where storage is read-only the counts stay
// in memory, as usage's do (flushUsage).
func (b *backend) flushQuotas(ctx context.Context, s logical.Storage) {
	n, err := b.quotas.flush(ctx, s, b, b.usage.cfg.Load().FlushMaxWrites, b.usage.now())
	switch {
	case errors.Is(err, logical.ErrReadOnly):
		b.Logger().Debug("quotas not flushed: storage is read-only on this node")
	case err != nil:
		b.Logger().Warn("quota flush failed; will retry", "written", n, "error", err)
	case n > 0:
		b.Logger().Debug("quotas flushed", "entries", n)
	}
}

func (q *quotaTracker) flush(ctx context.Context, s logical.Storage, b *backend, maxWrites int, now time.Time) (int, error) {
	var changed []*contract.QuotaStanding
	publish := func() error {
		for len(changed) > 0 {
			n := min(len(changed), maxQuotasPerChange)
			if err := b.edgeQuotas(ctx, s, changed[:n]); err != nil {
				return err
			}
			changed = changed[n:]
		}
		return nil
	}
	written := 0
	for _, m := range q.meters() {
		if written >= maxWrites {
			break
		}
		st, wrote, err := m.flush(ctx, s, now)
		if err != nil {
			return written, errors.Join(err, publish())
		}
		if wrote {
			written++
			changed = append(changed, st)
		}
	}
	return written, publish()
}

// flush writes m's standing if it changed since the last write.
func (m *quotaMeter) flush(ctx context.Context, s logical.Storage, now time.Time) (*contract.QuotaStanding, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.currentRule()
	if !ok || !r.Applies() || m.gone || !m.loaded {
		return nil, false, nil
	}
	words := [2]meterWord{wordOf(&m.state.Spent), wordOf(&m.state.Credit)}
	if words == m.flushed {
		return nil, false, nil
	}
	st, err := m.write(ctx, s, r, now)
	if err != nil {
		return nil, false, err
	}
	m.flushed = words
	return st, true, nil
}

// write stores m's standing of the period now is in. Caller holds m.mu.
func (m *quotaMeter) write(ctx context.Context, s logical.Storage, r contract.QuotaRule, now time.Time) (*contract.QuotaStanding, error) {
	idx := r.Period.Index(now)
	st := m.state.Standing(r, idx, m.tenant, m.keyID)
	rec := quotaRecord{
		Tenant: m.tenant, KeyID: m.keyID, Period: r.Period, PeriodStart: time.Unix(st.PeriodStart, 0).UTC(),
		Used: st.Used, Credit: st.Credit, UpdatedAt: now.UTC(),
	}
	if err := putJSON(ctx, s, m.storagePath(), m.what(), rec); err != nil {
		return nil, err
	}
	return st, nil
}

// edgeQuotas tells edges where quotas stand.
func (b *backend) edgeQuotas(ctx context.Context, s logical.Storage, st []*contract.QuotaStanding) error {
	return b.feed.appendChange(ctx, s, &contract.Change{Op: contract.OpQuota, Quotas: st})
}

// refillKeyQuota grants a key's quota more requests in the current period:
// reset makes the whole quota available again (Credit at least what was
// used: a grant made earlier with add is never taken back), add grants n
// more. The standing is written and sent to edges at once.
func (b *backend) refillKeyQuota(ctx context.Context, s logical.Storage, e *keyEntry, reset bool, add int64, now time.Time) (*contract.QuotaStanding, error) {
	rule := *e.Quota
	hash, _ := parseHash(e.Hash)
	m := b.quotas.key(e.Tenant, e.KeyID, rule, hash, nil)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.load(ctx, s); err != nil {
		return nil, err
	}
	idx := rule.Period.Index(now)
	if reset {
		m.state.Credit.Raise(idx, m.state.Spent.Load(idx))
	} else {
		m.state.Credit.Add(idx, add)
	}
	st, err := m.write(ctx, s, rule, now)
	if err != nil {
		return nil, err
	}
	m.flushed = [2]meterWord{wordOf(&m.state.Spent), wordOf(&m.state.Credit)}
	if err := b.edgeQuotas(ctx, s, []*contract.QuotaStanding{st}); err != nil {
		return nil, fmt.Errorf("record quota refill for edges: %w", err)
	}
	return st, nil
}

// keyQuotaRevoked drops a revoked key's counters and stored standing.
func (b *backend) keyQuotaRevoked(ctx context.Context, s logical.Storage, tenant, id string) {
	if m := b.quotas.dropKey(id); m != nil {
		m.mu.Lock()
		m.gone = true
		m.mu.Unlock()
	}
	if err := s.Delete(ctx, quotaKeyPath(tenant, id)); err != nil {
		b.Logger().Warn("could not delete a revoked key's quota standing", "tenant", tenant, "key_id", id, "error", err)
	}
}

// tenantQuotaDeleted drops a deleted tenant's counters and stored standing.
func (b *backend) tenantQuotaDeleted(ctx context.Context, s logical.Storage, tenant string) error {
	if m := (*b.quotas.tenants.Load())[tenant]; m != nil {
		m.mu.Lock()
		m.gone = true
		m.mu.Unlock()
	}
	b.quotas.dropTenant(tenant)
	if err := s.Delete(ctx, quotaTenantPrefix+tenant); err != nil {
		return fmt.Errorf("delete quota of tenant %q: %w", tenant, err)
	}
	return nil
}

// keyStanding is where a key's own quota stands now, from this node's
// counters when it has them, else from storage; nil when the key has no
// quota or nothing of this period is known.
func (b *backend) keyStanding(ctx context.Context, s logical.Storage, e *keyEntry, now time.Time) (*contract.QuotaStanding, error) {
	if e.Quota == nil || !e.Quota.Applies() {
		return nil, nil
	}
	rule := *e.Quota
	idx := rule.Period.Index(now)
	if m := b.quotas.peekKey(e.KeyID); m != nil {
		m.mu.Lock()
		err := m.load(ctx, s)
		m.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return m.state.Standing(rule, idx, e.Tenant, e.KeyID), nil
	}
	return storedStanding(ctx, s, quotaKeyPath(e.Tenant, e.KeyID), fmt.Sprintf("quota of key %q", e.KeyID), rule, idx, e.Tenant, e.KeyID)
}

// tenantStanding is keyStanding's counterpart for a tenant's quota.
func (b *backend) tenantStanding(ctx context.Context, s logical.Storage, t *tenantEntry, now time.Time) (*contract.QuotaStanding, error) {
	rule := t.quotaRule()
	if rule == nil {
		return nil, nil
	}
	idx := rule.Period.Index(now)
	if m := (*b.quotas.tenants.Load())[t.Name]; m != nil {
		if r, ok := m.currentRule(); ok && r == *rule {
			return m.state.Standing(*rule, idx, t.Name, ""), nil
		}
	}
	return storedStanding(ctx, s, quotaTenantPrefix+t.Name, fmt.Sprintf("quota of tenant %q", t.Name), *rule, idx, t.Name, "")
}

func storedStanding(ctx context.Context, s logical.Storage, path, what string, rule contract.QuotaRule, idx int64, tenant, id string) (*contract.QuotaStanding, error) {
	st := &contract.QuotaStanding{Tenant: tenant, KeyID: id, PeriodStart: rule.Period.StartSec(idx)}
	rec, err := getJSON[quotaRecord](ctx, s, path, what)
	if err != nil {
		return nil, err
	}
	if rec != nil && rec.Period == rule.Period && rec.PeriodStart.Unix() == st.PeriodStart {
		st.Used, st.Credit = rec.Used, rec.Credit
	}
	return st, nil
}

// quotaRuleOf is a role's or tenant's quota as a rule, nil for none.
func quotaRuleOf(limit int64, p contract.Period) *contract.QuotaRule {
	if limit <= 0 || p == 0 {
		return nil
	}
	return &contract.QuotaRule{Limit: limit, Period: p}
}

func (t *tenantEntry) quotaRule() *contract.QuotaRule { return quotaRuleOf(t.Quota, t.QuotaPeriod) }

func (r *roleEntry) quotaRule() *contract.QuotaRule { return quotaRuleOf(r.Quota, r.QuotaPeriod) }

func equalQuota(a, b *contract.QuotaRule) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// invalidateQuota serves Invalidate for quota/<rest>: the meter merges the
// stored standing again when its key or tenant enters the verify cache
// next, so the cached copy goes.
func (b *backend) invalidateQuota(rest string) {
	m := b.quotas.invalidate(rest)
	if name, ok := strings.CutPrefix(rest, "tenants/"); ok {
		b.forgetTenant(name)
	} else if m != nil {
		b.forgetKey(hex.EncodeToString(m.hash[:]))
	}
}

// quotaCollector turns the quota counters into metrics at scrape time:
// per tenant, never per key.
type quotaCollector struct {
	q   *quotaTracker
	now func() time.Time
}

func (b *backend) quotaCollector() *quotaCollector {
	return &quotaCollector{q: b.quotas, now: func() time.Time { return b.usage.now() }}
}

var (
	descQuotaExceeded = prometheus.NewDesc("apikeys_quota_exceeded_total",
		"Verify answers QUOTA_EXCEEDED on this node, by tenant (the key's own quota or its tenant's).", []string{"tenant"}, nil)
	descQuotaUsed = prometheus.NewDesc("apikeys_quota_used",
		"Requests spent of the tenant-wide quota in its current period, as this node counts them (on the active node: the cluster's, edges' reports included).", []string{"tenant"}, nil)
	descQuotaLimit = prometheus.NewDesc("apikeys_quota_limit",
		"The tenant-wide quota of the current period: the tenant's quota plus what operators granted.", []string{"tenant"}, nil)
	descQuotaKeysExhausted = prometheus.NewDesc("apikeys_quota_keys_exhausted",
		"Keys of the tenant whose own quota is spent for the current period, among those this node counts.", []string{"tenant"}, nil)
)

func (c *quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQuotaExceeded, descQuotaUsed, descQuotaLimit, descQuotaKeysExhausted} {
		ch <- d
	}
}

func (c *quotaCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	exhausted := map[string]int{}
	for i := range c.q.shards {
		sh := &c.q.shards[i]
		sh.mu.RLock()
		for _, m := range sh.byID {
			if r, ok := m.currentRule(); ok && r.Applies() && m.state.Remaining(r, r.Period.Index(now)) == 0 {
				exhausted[m.tenant]++
			}
		}
		sh.mu.RUnlock()
	}
	for name, m := range *c.q.tenants.Load() {
		if n := m.exceeded.Load(); n > 0 {
			ch <- prometheus.MustNewConstMetric(descQuotaExceeded, prometheus.CounterValue, float64(n), name)
		}
		if r, ok := m.currentRule(); ok && r.Applies() {
			idx := r.Period.Index(now)
			ch <- prometheus.MustNewConstMetric(descQuotaUsed, prometheus.GaugeValue, float64(m.state.Used(idx)), name)
			ch <- prometheus.MustNewConstMetric(descQuotaLimit, prometheus.GaugeValue, float64(r.Limit+m.state.Credit.Load(idx)), name)
		}
		if n := exhausted[name]; n > 0 {
			ch <- prometheus.MustNewConstMetric(descQuotaKeysExhausted, prometheus.GaugeValue, float64(n), name)
		}
	}
}

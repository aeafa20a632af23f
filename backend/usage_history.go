package backend

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// Usage history: per tenant and per key, buckets of verify answers by code
// and of the gateway figures, hourly for the last 48 hours and daily for
// usage_retention. The active node's usage flush builds it from the
// counters verify already keeps (usage.go), so verify does no more work
// than before.
//
// Storage (storage.go): one entry per subject (tenant or key) and UTC day,
// holding the day's total and its hours. A flush adds what it books to the
// entry of its own day and hour, one read and one write per subject; tidy
// drops a day's hours once all of them are older than 48 hours, and the
// entry once the day is older than usage_retention. A range read is one
// List and a Get per day in the range.
//
// Deltas: counters only grow, so what a flush books is the counters less
// what this process booked before ("booked"), and booked moves forward only
// once the entry is written. A failed write books the same counts, and the
// ones counted since, on the next flush; a write that succeeded is never
// booked again.
//
// Time: the counters carry no timestamps, so counts land in the bucket of
// the flush that books them. A flush runs about once a minute, so an
// hour's bucket may hold up to a minute of the hour before, and never
// loses or double counts across the boundary; splitting a flush's counts
// in proportion to time would invent a distribution the counters never saw.
const (
	historyDayFormat  = "2006-01-02"
	historyHourlyKeep = 48 * time.Hour
	// historyMinRetention floors usage_retention for history: a day's
	// entry carries its hours, which must outlive the hourly window.
	historyMinRetention = 72 * time.Hour
	// maxHistoryDays bounds a daily read (a Get per day) whatever
	// usage_retention is.
	maxHistoryDays      = 366
	defaultHistoryHours = 24
	defaultHistoryDays  = 30
	// historyTidyMaxWrites bounds the writes of one tidy run's history
	// pass; what is left waits for the next run (hourly).
	historyTidyMaxWrites = 20_000
)

// usageBucket is one hour or one day of a tenant's or a key's usage. Codes
// are stored by name, so a code added to the contract, or a change of its
// order, never shifts stored counts. The field names are short: a day's
// entry holds 25 buckets, rewritten on every flush that counted.
type usageBucket struct {
	Codes        map[string]uint64 `json:"codes,omitempty"`
	Requests     uint64            `json:"req,omitempty"`
	Errors       uint64            `json:"err,omitempty"`
	LatencyMicro uint64            `json:"lat_sum_us,omitempty"`
	LatencyMax   uint64            `json:"lat_max_us,omitempty"`
}

func (b *usageBucket) empty() bool {
	return len(b.Codes) == 0 && b.Requests == 0 && b.Errors == 0 && b.LatencyMicro == 0 && b.LatencyMax == 0
}

func (b *usageBucket) add(d *usageBucket) {
	for c, n := range d.Codes {
		if b.Codes == nil {
			b.Codes = make(map[string]uint64, len(d.Codes))
		}
		b.Codes[c] += n
	}
	b.Requests += d.Requests
	b.Errors += d.Errors
	b.LatencyMicro += d.LatencyMicro
	b.LatencyMax = max(b.LatencyMax, d.LatencyMax)
}

// usageHistoryDay is the stored history of one subject and UTC day.
type usageHistoryDay struct {
	Day usageBucket `json:"day"`
	// Hours by hour of the day (0–23, UTC); tidy drops them once the last
	// is older than 48 hours.
	Hours map[int]*usageBucket `json:"hours,omitempty"`
}

// historyDay is the start of t's UTC day.
func historyDay(t time.Time) time.Time { return t.UTC().Truncate(24 * time.Hour) }

// oldestHistoryHour is the start of the oldest hourly bucket kept: the
// current hour and the 48 before it.
func oldestHistoryHour(now time.Time) time.Time {
	return now.UTC().Truncate(time.Hour).Add(-historyHourlyKeep)
}

// oldestHistoryDay is the oldest daily bucket kept.
func oldestHistoryDay(now time.Time, retention time.Duration) time.Time {
	return historyDay(now.Add(-max(retention, historyMinRetention)))
}

// --- what a flush books ---

// keyHistory is a key's history bookkeeping on this node; keyUsage.mu
// guards booked and refusalCounts.booked.
type keyHistory struct {
	// refused counts refusals of the key by code, allocated on its first
	// refusal: most keys are never refused.
	refused atomic.Pointer[refusalCounts]
	// latencyMax is the largest upstream latency reported since it was
	// last booked.
	latencyMax atomic.Uint64
	// dirty marks refusals not booked yet (keyUsage.dirty marks the rest,
	// which also changes the key's totals).
	dirty  atomic.Bool
	booked keyCounts
}

type refusalCounts struct {
	n      [numCodes]atomic.Uint64
	booked [numCodes]uint64
}

// countRefusal is recordVerify's count of a refusal about a found key: the
// key's counters are found with the lookup the tenant's would have cost.
func (k *keyUsage) countRefusal(code int) { k.countRefusals(code, 1) }

// countRefusals counts n refusals of the key with code (an edge reports
// them in usage/report).
func (k *keyUsage) countRefusals(code int, n uint64) {
	r := k.hist.refused.Load()
	if r == nil {
		r = new(refusalCounts)
		if !k.hist.refused.CompareAndSwap(nil, r) {
			r = k.hist.refused.Load()
		}
	}
	r.n[code].Add(n)
	setDirty(&k.hist.dirty)
}

// storeMax raises a to v unless it already holds more.
func storeMax(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// keyHistoryMark is one reading of a key's counters, what booking it books
// up to.
type keyHistoryMark struct {
	c          keyCounts
	refused    [numCodes]uint64
	latencyMax uint64
}

// pendingHistory is what the key counted since its last booking. Caller
// holds k.mu.
func (k *keyUsage) pendingHistory() (usageBucket, keyHistoryMark) {
	m := keyHistoryMark{c: k.counts(), latencyMax: k.hist.latencyMax.Load()}
	b := k.hist.booked
	d := usageBucket{
		Requests:     m.c.requests - b.requests,
		Errors:       m.c.errors - b.errors,
		LatencyMicro: m.c.latencyMicro - b.latencyMicro,
		LatencyMax:   m.latencyMax,
	}
	if n := m.c.verifies - b.verifies; n > 0 {
		d.Codes = map[string]uint64{contract.CodeValid: n}
	}
	if r := k.hist.refused.Load(); r != nil {
		for i := range r.n {
			m.refused[i] = r.n[i].Load()
			if n := m.refused[i] - r.booked[i]; n > 0 {
				if d.Codes == nil {
					d.Codes = map[string]uint64{}
				}
				d.Codes[verifyCodes[i]] += n
			}
		}
	}
	return d, m
}

// bookHistory records that everything up to m is in storage. Caller holds
// k.mu.
func (k *keyUsage) bookHistory(m keyHistoryMark) {
	k.hist.booked = m.c
	if r := k.hist.refused.Load(); r != nil {
		r.booked = m.refused
	}
	// A larger latency reported since stays for the next booking.
	k.hist.latencyMax.CompareAndSwap(m.latencyMax, 0)
}

// writeKeyHistory books a key's pending counts into its history entry of
// now's day. Caller holds the key's record lock and k.mu.
func writeKeyHistory(ctx context.Context, s logical.Storage, k *keyUsage, d *usageBucket, m keyHistoryMark, now time.Time) error {
	if err := addToHistory(ctx, s, keyHistoryPrefix(k.tenant, k.id), fmt.Sprintf("usage history of key %q", k.id), d, now); err != nil {
		return err
	}
	k.bookHistory(m)
	return nil
}

// tenantHistory is a tenant's history bookkeeping on this node;
// tenantUsage.mu guards booked.
type tenantHistory struct {
	latencyMax atomic.Uint64
	booked     tenantHistoryMark
}

type tenantHistoryMark struct {
	codes                          [numCodes]uint64
	requests, errors, latencyMicro uint64
	latencyMax                     uint64
}

// pendingHistory is what the tenant counted since its last booking. Caller
// holds t.mu.
func (t *tenantUsage) pendingHistory() (usageBucket, tenantHistoryMark) {
	m := tenantHistoryMark{
		requests: t.requests.Load(), errors: t.errors.Load(), latencyMicro: t.latencyMicro.Load(),
		latencyMax: t.hist.latencyMax.Load(),
	}
	b := t.hist.booked
	d := usageBucket{
		Requests:     m.requests - b.requests,
		Errors:       m.errors - b.errors,
		LatencyMicro: m.latencyMicro - b.latencyMicro,
		LatencyMax:   m.latencyMax,
	}
	for i := range t.codes {
		m.codes[i] = t.codes[i].Load()
		if n := m.codes[i] - b.codes[i]; n > 0 {
			if d.Codes == nil {
				d.Codes = map[string]uint64{}
			}
			d.Codes[verifyCodes[i]] = n
		}
	}
	return d, m
}

// flushTenant writes a tenant's history (when it counted something since)
// and its totals, if both fit in budget writes; full says they did not.
// Caller holds t.mu.
func (u *usageTracker) flushTenant(ctx context.Context, s logical.Storage, t *tenantUsage, budget int, now time.Time) (written int, full bool, err error) {
	d, m := t.pendingHistory()
	if cost := 1 + boolInt(!d.empty()); cost > budget {
		return 0, true, nil
	}
	if !d.empty() {
		if err := addToHistory(ctx, s, tenantHistoryPrefix(t.name), fmt.Sprintf("usage history of tenant %q", t.name), &d, now); err != nil {
			return 0, false, err
		}
		t.hist.booked = m
		t.hist.latencyMax.CompareAndSwap(m.latencyMax, 0)
		written++
	}
	if err := u.writeTenant(ctx, s, t, now); err != nil {
		return written, false, err
	}
	return written + 1, false, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// addToHistory adds d to the bucket of now's hour and to its day's total,
// in the subject's entry of now's day.
func addToHistory(ctx context.Context, s logical.Storage, prefix, what string, d *usageBucket, now time.Time) error {
	day := historyDay(now)
	key := prefix + day.Format(historyDayFormat)
	e, err := getJSON[usageHistoryDay](ctx, s, key, what)
	if err != nil {
		return err
	}
	if e == nil {
		e = &usageHistoryDay{}
	}
	e.Day.add(d)
	if e.Hours == nil {
		e.Hours = map[int]*usageBucket{}
	}
	h := now.UTC().Hour()
	if e.Hours[h] == nil {
		e.Hours[h] = &usageBucket{}
	}
	e.Hours[h].add(d)
	return putJSON(ctx, s, key, what, e)
}

// --- reading ---

// historyRange is a validated read: the buckets of step from from to to,
// both bucket starts, both included.
type historyRange struct {
	granularity string
	step        time.Duration
	from, to    time.Time
}

func (r historyRange) len() int { return int(r.to.Sub(r.from)/r.step) + 1 }

// readHistory returns every bucket of r for the subject under prefix,
// empty ones included, plus live (what this node counted and has not
// booked yet) in the current bucket.
func readHistory(ctx context.Context, s logical.Storage, prefix, what string, r historyRange, live *usageBucket, now time.Time) ([]usageBucket, error) {
	names, err := s.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	out := make([]usageBucket, r.len())
	first, last := historyDay(r.from), historyDay(r.to)
	put := func(start time.Time, b *usageBucket) {
		if b != nil && !start.Before(r.from) && !start.After(r.to) {
			out[int(start.Sub(r.from)/r.step)].add(b)
		}
	}
	for _, name := range names {
		day, err := time.Parse(historyDayFormat, name)
		if err != nil || day.Before(first) || day.After(last) {
			continue
		}
		e, err := getJSON[usageHistoryDay](ctx, s, prefix+name, what)
		if err != nil {
			return nil, err
		}
		if e == nil {
			continue
		}
		if r.step == 24*time.Hour {
			put(day, &e.Day)
			continue
		}
		for h, b := range e.Hours {
			put(day.Add(time.Duration(h)*time.Hour), b)
		}
	}
	if live != nil {
		put(now.UTC().Truncate(r.step), live)
	}
	return out, nil
}

// liveKeyHistory is what this node counted for the key and has not booked:
// the next flush books it into the current bucket, so a read shows it
// there. Only the node that flushes has any: a performance standby's own
// counts never reach history.
func (u *usageTracker) liveKeyHistory(ctx context.Context, s logical.Storage, tenant, id string) (*usageBucket, error) {
	k := u.peekKey(id)
	if k == nil || k.tenant != tenant {
		return nil, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := u.loadKeyBase(ctx, s, id, k); err != nil || k.gone {
		return nil, err
	}
	d, _ := k.pendingHistory()
	return &d, nil
}

func (u *usageTracker) liveTenantHistory(name string) *usageBucket {
	t := u.peekTenant(name)
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	d, _ := t.pendingHistory()
	return &d
}

// --- removal ---

// deleteHistory removes every entry of one subject: a revoked key's when
// its tombstone goes, a deleted tenant's with its totals.
func deleteHistory(ctx context.Context, s logical.Storage, prefix, what string) error {
	names, err := s.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("list %s: %w", what, err)
	}
	for _, n := range names {
		if err := s.Delete(ctx, prefix+n); err != nil {
			return fmt.Errorf("delete %s of %s: %w", what, n, err)
		}
	}
	return nil
}

// historyTidyMark says how far tidy has aged history out: no entry of a
// day before CompactedBefore holds hours, none before DeletedBefore is
// left. It lets a tidy run skip history until a day boundary moves them
// (once a day), and look only at the days that aged out since.
type historyTidyMark struct {
	CompactedBefore time.Time `json:"compacted_before"`
	DeletedBefore   time.Time `json:"deleted_before"`
}

// tidyHistory is tidy's history pass: it drops hours older than 48 hours
// and days older than usage_retention. It runs once the day boundaries
// moved past the stored mark, lists each subject's days once, reads only
// the days whose hours aged out since the last pass, and writes at most
// maxWrites entries; an unfinished pass leaves the mark where it was, and
// the next run goes on from there.
func (b *backend) tidyHistory(ctx context.Context, s logical.Storage, now time.Time, pause func() error, maxWrites int) error {
	mark, err := getJSON[historyTidyMark](ctx, s, usageHistoryTidyPath, "usage history tidy mark")
	if err != nil {
		return err
	}
	if mark == nil {
		mark = &historyTidyMark{}
	}
	next := historyTidyMark{
		CompactedBefore: historyDay(oldestHistoryHour(now)),
		DeletedBefore:   oldestHistoryDay(now, b.usage.cfg.Load().UsageRetention),
	}
	if !mark.CompactedBefore.Before(next.CompactedBefore) && !mark.DeletedBefore.Before(next.DeletedBefore) {
		return nil
	}
	writes := 0
	full := false
	err = walkHistorySubjects(ctx, s, func(prefix string) error {
		if err := pause(); err != nil {
			return err
		}
		names, err := s.List(ctx, prefix)
		if err != nil {
			return fmt.Errorf("list usage history %s: %w", prefix, err)
		}
		for _, name := range names {
			if writes >= maxWrites {
				full = true
				return errStopWalk
			}
			day, err := time.Parse(historyDayFormat, name)
			if err != nil {
				continue
			}
			switch {
			case day.Before(next.DeletedBefore):
				if err := s.Delete(ctx, prefix+name); err != nil {
					return fmt.Errorf("delete usage history %s%s: %w", prefix, name, err)
				}
				writes++
				b.tidyCount(func(st *tidyStatus) { st.HistoryRemoved++ })
			case day.Before(next.CompactedBefore) && !day.Before(mark.CompactedBefore):
				wrote, err := compactHistoryDay(ctx, s, prefix+name)
				if err != nil {
					return err
				}
				if wrote {
					writes++
					b.tidyCount(func(st *tidyStatus) { st.HistoryCompacted++ })
				}
			}
		}
		return nil
	})
	if full {
		b.Logger().Info("usage history tidy stopped at its write limit; the next tidy goes on", "writes", writes)
		return nil
	}
	if err != nil {
		return err
	}
	return putJSON(ctx, s, usageHistoryTidyPath, "usage history tidy mark", next)
}

// compactHistoryDay drops the hours of one day's entry.
func compactHistoryDay(ctx context.Context, s logical.Storage, key string) (bool, error) {
	e, err := getJSON[usageHistoryDay](ctx, s, key, "usage history "+key)
	if err != nil || e == nil || len(e.Hours) == 0 {
		return false, err
	}
	e.Hours = nil
	return true, putJSON(ctx, s, key, "usage history "+key, e)
}

// errStopWalk ends walkHistorySubjects early without an error.
var errStopWalk = errors.New("stop")

// walkHistorySubjects calls fn with the storage prefix of every tenant and
// key with history, one tenant's keys listed at a time.
func walkHistorySubjects(ctx context.Context, s logical.Storage, fn func(prefix string) error) error {
	tenants, err := s.List(ctx, usageHistoryTenantPrefix)
	if err != nil {
		return fmt.Errorf("list tenant usage history: %w", err)
	}
	for _, t := range tenants {
		if err := fn(usageHistoryTenantPrefix + t); err != nil {
			return err
		}
	}
	keyTenants, err := s.List(ctx, usageHistoryKeyPrefix)
	if err != nil {
		return fmt.Errorf("list key usage history: %w", err)
	}
	for _, t := range keyTenants {
		ids, err := s.List(ctx, usageHistoryKeyPrefix+t)
		if err != nil {
			return fmt.Errorf("list key usage history of %s: %w", t, err)
		}
		for _, id := range ids {
			if err := fn(usageHistoryKeyPrefix + t + id); err != nil {
				return err
			}
		}
	}
	return nil
}

package contract

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Quotas: a role's (per key) and a tenant's (all its keys together) number
// of requests per calendar period. The periods are UTC calendar periods,
// so every verifier, Vault or edge, agrees on when one starts without
// talking to another: an hour, a day (from midnight UTC), an ISO week
// (from Monday 00:00 UTC) or a month (from the 1st, 00:00 UTC). A period's
// allowance is whole again at its start; nothing carries over.

// Period is a quota period. The zero Period is no period (no quota).
type Period uint8

// The quota periods.
const (
	PeriodHour Period = iota + 1
	PeriodDay
	PeriodWeek
	PeriodMonth
)

var periodNames = [...]string{PeriodHour: "hour", PeriodDay: "day", PeriodWeek: "week", PeriodMonth: "month"}

// PeriodNames lists the periods as the API spells them.
func PeriodNames() []string { return []string{"hour", "day", "week", "month"} }

// ParsePeriod reads a period's name.
func ParsePeriod(s string) (Period, error) {
	for p, name := range periodNames {
		if name != "" && name == s {
			return Period(p), nil
		}
	}
	return 0, fmt.Errorf("%q is not a quota period (hour, day, week or month)", s)
}

func (p Period) String() string {
	if int(p) < len(periodNames) {
		return periodNames[p]
	}
	return ""
}

// MarshalText and UnmarshalText give a Period its name on the wire.
func (p Period) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p *Period) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*p = 0
		return nil
	}
	v, err := ParsePeriod(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

const (
	secondsPerHour = 3600
	secondsPerDay  = 86400
	secondsPerWeek = 7 * secondsPerDay
	// 1969-12-29, the Monday before the epoch, starts week 0.
	weekOffset = 3 * secondsPerDay
)

// Index numbers t's period: whole periods since the one holding the epoch
// (for weeks, the one starting Monday 1969-12-29). It is pure integer
// arithmetic on unix seconds, cheap enough for every verify.
func (p Period) Index(t time.Time) int64 { return p.indexOf(t.Unix()) }

func (p Period) indexOf(sec int64) int64 {
	switch p {
	case PeriodHour:
		return floorDiv(sec, secondsPerHour)
	case PeriodDay:
		return floorDiv(sec, secondsPerDay)
	case PeriodWeek:
		return floorDiv(sec+weekOffset, secondsPerWeek)
	case PeriodMonth:
		y, m, _ := civil(floorDiv(sec, secondsPerDay))
		return (y-1970)*12 + m - 1
	}
	return 0
}

// StartSec is the unix second period idx starts at.
func (p Period) StartSec(idx int64) int64 {
	switch p {
	case PeriodHour:
		return idx * secondsPerHour
	case PeriodDay:
		return idx * secondsPerDay
	case PeriodWeek:
		return idx*secondsPerWeek - weekOffset
	case PeriodMonth:
		y := 1970 + floorDiv(idx, 12)
		m := idx - floorDiv(idx, 12)*12 + 1
		return daysFromCivil(y, m, 1) * secondsPerDay
	}
	return 0
}

// periodSpan is one period: its index and the unix seconds it runs over.
type periodSpan struct{ idx, start, end int64 }

// spans remembers the period each Period was last asked about, so verify
// finds the current one with an atomic load and two comparisons: a month's
// index otherwise costs a calendar conversion each way (~25 ns of a
// ~15 ns quota check). Written once per period.
var spans [len(periodNames)]atomic.Pointer[periodSpan]

// span is the index of the period holding sec and the second the next one
// starts at.
func (p Period) span(sec int64) (idx, next int64) {
	if int(p) >= len(spans) {
		return 0, 0
	}
	if s := spans[p].Load(); s != nil && s.start <= sec && sec < s.end {
		return s.idx, s.end
	}
	idx = p.indexOf(sec)
	s := &periodSpan{idx: idx, start: p.StartSec(idx), end: p.StartSec(idx + 1)}
	spans[p].Store(s)
	return s.idx, s.end
}

// Start is the start of the period holding t, in UTC.
func (p Period) Start(t time.Time) time.Time {
	return time.Unix(p.StartSec(p.Index(t)), 0).UTC()
}

// Next is the start of the period after the one holding t: when its
// allowance is whole again.
func (p Period) Next(t time.Time) time.Time {
	return time.Unix(p.StartSec(p.Index(t)+1), 0).UTC()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// civil and daysFromCivil convert between days since the epoch and the
// proleptic Gregorian calendar (Howard Hinnant's algorithms), so a
// month's index costs a few integer operations instead of time.Date.
func civil(days int64) (y, m, d int64) {
	z := days + 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yoe := y - era*400
	mp := m + 9
	if m > 2 {
		mp = m - 3
	}
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// QuotaRule is a quota: Limit requests per Period; Limit 0 is none.
type QuotaRule struct {
	Limit  int64  `json:"limit"`
	Period Period `json:"period"`
}

// Applies reports whether the rule limits anything.
func (r QuotaRule) Applies() bool { return r.Limit > 0 && r.Period != 0 }

// MaxQuota is the largest quota a role or tenant may set: a Meter counts
// up to 2^40-1 per period.
const MaxQuota = 1_000_000_000_000

// Meter counts requests of one period without a lock: the period's index
// and the count share one 64-bit word, so a new period starts from zero in
// the same atomic step that counts its first request, and a count from an
// earlier period is never mistaken for the current one. The zero Meter
// holds nothing.
type Meter struct{ w atomic.Uint64 }

const (
	meterCountBits = 40
	meterCountMax  = 1<<meterCountBits - 1
	meterIndexMax  = 1<<(64-meterCountBits) - 2
)

// pack stores idx+1, so the zero word is "nothing counted". Indexes beyond
// the word (hours after the year 3800) share its last value.
func pack(idx, n int64) uint64 {
	idx = min(max(idx, 0), meterIndexMax)
	n = min(max(n, 0), meterCountMax)
	return uint64(idx+1)<<meterCountBits | uint64(n)
}

func unpack(w uint64) (idx, n int64, ok bool) {
	if w == 0 {
		return 0, 0, false
	}
	return int64(w>>meterCountBits) - 1, int64(w & meterCountMax), true
}

func sameIndex(w uint64, idx int64) bool {
	return w != 0 && int64(w>>meterCountBits)-1 == min(max(idx, 0), meterIndexMax)
}

// Load is the count of period idx: 0 when the meter holds another period.
func (m *Meter) Load(idx int64) int64 {
	w := m.w.Load()
	if !sameIndex(w, idx) {
		return 0
	}
	return int64(w & meterCountMax)
}

// Word is what the meter holds: its period index and count; ok is false
// when it holds nothing.
func (m *Meter) Word() (idx, n int64, ok bool) { return unpack(m.w.Load()) }

// Spend counts one request of period idx if fewer than budget are counted
// in it, and returns the count after (spent) or as it stands (refused). A
// meter holding another period starts idx from zero.
func (m *Meter) Spend(idx, budget int64) (int64, bool) {
	for {
		w := m.w.Load()
		var n int64
		if sameIndex(w, idx) {
			n = int64(w & meterCountMax)
		}
		if n >= budget {
			return n, false
		}
		if m.w.CompareAndSwap(w, pack(idx, n+1)) {
			return n + 1, true
		}
	}
}

// Add adds d (which may be negative; the count stays at least 0) to
// period idx. A meter holding an earlier period starts idx at d when d is
// positive; one holding a later period is left alone.
func (m *Meter) Add(idx, d int64) {
	for {
		w := m.w.Load()
		var n int64
		if sameIndex(w, idx) {
			n = int64(w & meterCountMax)
		} else if cur, _, ok := unpack(w); (ok && cur > idx) || d <= 0 {
			return
		}
		if m.w.CompareAndSwap(w, pack(idx, n+d)) {
			return
		}
	}
}

// Raise makes period idx's count at least n: totals learned from another
// verifier only ever raise what one knows, so a late or repeated message
// does no harm. A later period replaces an earlier one; an earlier is
// ignored.
func (m *Meter) Raise(idx, n int64) {
	for {
		w := m.w.Load()
		if sameIndex(w, idx) {
			if int64(w&meterCountMax) >= n {
				return
			}
		} else if cur, _, ok := unpack(w); ok && cur > idx {
			return
		}
		if m.w.CompareAndSwap(w, pack(idx, n)) {
			return
		}
	}
}

// Reset empties the meter.
func (m *Meter) Reset() { m.w.Store(0) }

// QuotaState is what one verifier knows of one quota in its current period:
//
//	Spent   what this verifier counted: on the plugin's active node the
//	        cluster's total (its own verifies plus what edges reported);
//	        on an edge, what it served and has not yet had acknowledged
//	Known   the cluster's total as an edge last learned it (0 on the plugin)
//	Credit  requests an operator granted on top of the limit this period
//
// The verifier may count in Spent up to Limit + Credit - Known.
type QuotaState struct {
	Spent, Known, Credit Meter
}

func (s *QuotaState) budget(r QuotaRule, idx int64) int64 {
	return r.Limit + s.Credit.Load(idx) - s.Known.Load(idx)
}

// Used is the period's total as this verifier sees it: Known plus Spent.
func (s *QuotaState) Used(idx int64) int64 { return s.Known.Load(idx) + s.Spent.Load(idx) }

// Remaining is what is left of r in period idx (never below 0).
func (s *QuotaState) Remaining(r QuotaRule, idx int64) int64 {
	return max(r.Limit+s.Credit.Load(idx)-s.Used(idx), 0)
}

// TakeQuota spends one request of a key's quota (key, ks) and of its
// tenant's (tenant, ts); either may not apply (a rule that does not apply,
// or a nil state). It spends both or neither: over either it answers
// CodeQuotaExceeded with the reset of the exhausted quota (the later one
// when both are), else "" with the quota that leaves less. Both sides of
// the contract call it from Store.Spend, so they count alike.
func TakeQuota(now time.Time, key QuotaRule, ks *QuotaState, tenant QuotaRule, ts *QuotaState) (string, Quota) {
	sec := now.Unix()
	var kq, tq Quota
	var kIdx int64
	keyOn := ks != nil && key.Applies()
	if keyOn {
		var next int64
		kIdx, next = key.Period.span(sec)
		kq = Quota{Limit: key.Limit, ResetsAt: next * int64(time.Second)}
		budget := ks.budget(key, kIdx)
		n, ok := ks.Spent.Spend(kIdx, budget)
		if !ok {
			if ts != nil && tenant.Applies() {
				tIdx, tNext := tenant.Period.span(sec)
				if ts.Spent.Load(tIdx) >= ts.budget(tenant, tIdx) {
					kq.ResetsAt = max(kq.ResetsAt, tNext*int64(time.Second))
				}
			}
			return CodeQuotaExceeded, kq
		}
		kq.Remaining = max(budget-n, 0)
	}
	if ts == nil || !tenant.Applies() {
		return "", kq
	}
	tIdx, tNext := tenant.Period.span(sec)
	tq = Quota{Limit: tenant.Limit, ResetsAt: tNext * int64(time.Second)}
	budget := ts.budget(tenant, tIdx)
	n, ok := ts.Spent.Spend(tIdx, budget)
	if !ok {
		if keyOn {
			ks.Spent.Add(kIdx, -1)
		}
		return CodeQuotaExceeded, tq
	}
	tq.Remaining = max(budget-n, 0)
	if keyOn && kq.Remaining <= tq.Remaining {
		return "", kq
	}
	return "", tq
}

// QuotaStanding is where one quota stands in one period, as the plugin's
// active node counts it: what the sync feed (OpQuota), a snapshot page and
// the answer to usage/report tell edges. KeyID is empty for a tenant's
// quota. Edges only ever raise what they know to it (Meter.Raise), so a
// late or repeated standing does no harm.
type QuotaStanding struct {
	Tenant string `json:"tenant"`
	KeyID  string `json:"key_id,omitempty"`
	// PeriodStart is the unix second the period starts at.
	PeriodStart int64 `json:"period_start"`
	Used        int64 `json:"used"`
	Credit      int64 `json:"credit,omitempty"`
}

// Learn raises an edge's knowledge of a quota to standing q: the cluster's
// total and the credit, when q is of the period the edge counts now or a
// later one.
func (s *QuotaState) Learn(r QuotaRule, q *QuotaStanding) {
	if !r.Applies() {
		return
	}
	idx := r.Period.indexOf(q.PeriodStart)
	s.Known.Raise(idx, q.Used)
	s.Credit.Raise(idx, q.Credit)
}

// Standing is s as a QuotaStanding of period idx, counted by the plugin
// (Spent is its total).
func (s *QuotaState) Standing(r QuotaRule, idx int64, tenant, keyID string) *QuotaStanding {
	return &QuotaStanding{
		Tenant: tenant, KeyID: keyID, PeriodStart: r.Period.StartSec(idx),
		Used: s.Spent.Load(idx), Credit: s.Credit.Load(idx),
	}
}

package contract

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestPeriodBoundaries(t *testing.T) {
	cases := []struct {
		name        string
		p           Period
		at          string
		start, next string
	}{
		{"hour, inside", PeriodHour, "2026-03-29T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"},
		{"hour, at its start", PeriodHour, "2026-03-29T02:00:00Z", "2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z"},
		{"hour, last second", PeriodHour, "2026-12-31T23:59:59Z", "2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z"},
		// Europe's clocks go forward on 2026-03-29 and back on 10-25: UTC
		// days stay 24 hours.
		{"day across a DST change elsewhere", PeriodDay, "2026-03-29T12:00:00Z", "2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z"},
		{"day, autumn DST elsewhere", PeriodDay, "2026-10-25T01:30:00Z", "2026-10-25T00:00:00Z", "2026-10-26T00:00:00Z"},
		{"day, at midnight", PeriodDay, "2026-05-01T00:00:00Z", "2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z"},
		{"day, leap day", PeriodDay, "2028-02-29T23:59:59Z", "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"day, epoch", PeriodDay, "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z"},
		{"week, Monday is its first day", PeriodWeek, "2026-12-07T00:00:00Z", "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"},
		{"week, Sunday is its last", PeriodWeek, "2026-12-13T23:59:59Z", "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"},
		{"week across a year end", PeriodWeek, "2027-01-01T10:00:00Z", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"},
		{"week holding the epoch", PeriodWeek, "1970-01-01T00:00:00Z", "1969-12-29T00:00:00Z", "1970-01-05T00:00:00Z"},
		{"month, 31 days", PeriodMonth, "2026-01-31T23:59:59Z", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"},
		{"month, February", PeriodMonth, "2026-02-15T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		{"month, February of a leap year", PeriodMonth, "2028-02-29T12:00:00Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"month, 2100 is no leap year", PeriodMonth, "2100-02-28T23:59:59Z", "2100-02-01T00:00:00Z", "2100-03-01T00:00:00Z"},
		{"month, 2000 is one", PeriodMonth, "2000-02-29T00:00:00Z", "2000-02-01T00:00:00Z", "2000-03-01T00:00:00Z"},
		{"month, 30 days", PeriodMonth, "2026-04-30T23:59:59Z", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"},
		{"month, December", PeriodMonth, "2026-12-31T23:59:59Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"month, its first second", PeriodMonth, "2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			at := utc(c.at)
			if got := c.p.Start(at); !got.Equal(utc(c.start)) {
				t.Errorf("Start = %s, want %s", got.Format(time.RFC3339), c.start)
			}
			if got := c.p.Next(at); !got.Equal(utc(c.next)) {
				t.Errorf("Next = %s, want %s", got.Format(time.RFC3339), c.next)
			}
			// A time zone changes nothing: periods are UTC's.
			if got := c.p.Start(at.In(time.FixedZone("UTC+14", 14*3600))); !got.Equal(utc(c.start)) {
				t.Errorf("Start in another zone = %s", got)
			}
		})
	}
}

// The integer calendar agrees with the time package every day from 1970
// to 2200, and consecutive periods tile time without gaps.
func TestPeriodArithmeticAgreesWithTime(t *testing.T) {
	for day := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC); day.Year() < 2200; day = day.AddDate(0, 0, 1) {
		noon := day.Add(12 * time.Hour)
		if got, want := PeriodMonth.Start(noon), time.Date(day.Year(), day.Month(), 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
			t.Fatalf("month of %s: %s, want %s", day.Format(time.DateOnly), got, want)
		}
		if got := PeriodDay.Start(noon); !got.Equal(day) {
			t.Fatalf("day of %s: %s", day.Format(time.DateOnly), got)
		}
		wd := (int(day.Weekday()) + 6) % 7 // Monday 0
		if got, want := PeriodWeek.Start(noon), day.AddDate(0, 0, -wd); !got.Equal(want) {
			t.Fatalf("week of %s: %s, want %s", day.Format(time.DateOnly), got, want)
		}
	}
	for _, p := range []Period{PeriodHour, PeriodDay, PeriodWeek, PeriodMonth} {
		for idx := int64(0); idx < 5000; idx += 7 {
			if p.Index(time.Unix(p.StartSec(idx), 0)) != idx || p.Index(time.Unix(p.StartSec(idx+1)-1, 0)) != idx {
				t.Fatalf("%s: period %d does not run from its start to the next one's", p, idx)
			}
		}
	}
}

func TestPeriodNames(t *testing.T) {
	for _, name := range PeriodNames() {
		p, err := ParsePeriod(name)
		if err != nil || p.String() != name {
			t.Fatalf("ParsePeriod(%q) = %v %v", name, p, err)
		}
	}
	if _, err := ParsePeriod("year"); err == nil {
		t.Fatal("year accepted")
	}
	b, err := json.Marshal(QuotaRule{Limit: 5, Period: PeriodWeek})
	if err != nil || string(b) != `{"limit":5,"period":"week"}` {
		t.Fatalf("%s %v", b, err)
	}
	var r QuotaRule
	if err := json.Unmarshal(b, &r); err != nil || r != (QuotaRule{Limit: 5, Period: PeriodWeek}) {
		t.Fatalf("%+v %v", r, err)
	}
	if err := json.Unmarshal([]byte(`{"limit":5,"period":"fortnight"}`), &r); err == nil {
		t.Fatal("an unknown period decoded")
	}
}

func TestMeter(t *testing.T) {
	var m Meter
	if n, ok := m.Spend(10, 2); !ok || n != 1 {
		t.Fatalf("first spend: %d %v", n, ok)
	}
	m.Spend(10, 2)
	if n, ok := m.Spend(10, 2); ok || n != 2 {
		t.Fatalf("over budget: %d %v", n, ok)
	}
	if m.Load(11) != 0 || m.Load(10) != 2 {
		t.Fatal("Load reads another period")
	}
	if n, ok := m.Spend(11, 2); !ok || n != 1 {
		t.Fatalf("a new period starts from zero: %d %v", n, ok)
	}
	m.Add(10, 5) // a late report of the last period
	if m.Load(11) != 1 {
		t.Fatal("a late Add changed the current period")
	}
	m.Add(11, -3)
	if m.Load(11) != 0 {
		t.Fatal("Add took the count below zero")
	}
	m.Raise(11, 7)
	m.Raise(11, 4)
	m.Raise(10, 100)
	if m.Load(11) != 7 {
		t.Fatalf("Raise: %d", m.Load(11))
	}
	m.Raise(12, 1)
	if idx, n, ok := m.Word(); !ok || idx != 12 || n != 1 {
		t.Fatalf("a later period replaces: %d %d %v", idx, n, ok)
	}
	var zero Meter
	if zero.Load(0) != 0 {
		t.Fatal("the zero meter counts period 0")
	}
	zero.Raise(0, 3)
	if zero.Load(0) != 3 {
		t.Fatal("period 0 (the epoch's) cannot be counted")
	}

	// Concurrent spenders never exceed the budget together.
	var c Meter
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				if _, ok := c.Spend(3, 2500); ok {
					mu.Lock()
					granted++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if granted != 2500 || c.Load(3) != 2500 {
		t.Fatalf("granted %d, counted %d, want 2500", granted, c.Load(3))
	}
}

func TestTakeQuota(t *testing.T) {
	now := utc("2026-12-03T15:04:05Z")
	midnight := utc("2026-12-04T00:00:00Z").UnixNano()
	month := utc("2027-01-01T00:00:00Z").UnixNano()
	day5 := QuotaRule{Limit: 5, Period: PeriodDay}
	var ks QuotaState
	for i := 4; i >= 0; i-- {
		code, q := TakeQuota(now, day5, &ks, QuotaRule{}, nil)
		if code != "" || q != (Quota{Limit: 5, Remaining: int64(i), ResetsAt: midnight}) {
			t.Fatalf("spend %d: %q %+v", 5-i, code, q)
		}
	}
	if code, q := TakeQuota(now, day5, &ks, QuotaRule{}, nil); code != CodeQuotaExceeded || q.ResetsAt != midnight {
		t.Fatalf("over: %q %+v", code, q)
	}
	// Credit raises the budget; a new day starts from zero.
	ks.Credit.Add(day5.Period.Index(now), 1)
	if code, q := TakeQuota(now, day5, &ks, QuotaRule{}, nil); code != "" || q.Remaining != 0 {
		t.Fatalf("with credit: %q %+v", code, q)
	}
	if code, q := TakeQuota(now.Add(9*time.Hour), day5, &ks, QuotaRule{}, nil); code != "" || q.Remaining != 4 {
		t.Fatalf("next day: %q %+v", code, q)
	}

	// An edge's budget is what the cluster has not used yet.
	var edgeState QuotaState
	edgeState.Learn(day5, &QuotaStanding{PeriodStart: day5.Period.StartSec(day5.Period.Index(now)), Used: 3})
	if _, q := TakeQuota(now, day5, &edgeState, QuotaRule{}, nil); q.Remaining != 1 {
		t.Fatalf("edge: %+v", q)
	}

	// The tenant's quota counts too; the answer is the one that leaves less.
	tenant := QuotaRule{Limit: 3, Period: PeriodMonth}
	var k2, ts QuotaState
	code, q := TakeQuota(now, day5, &k2, tenant, &ts)
	if code != "" || q != (Quota{Limit: 3, Remaining: 2, ResetsAt: month}) {
		t.Fatalf("tenant leaves less: %q %+v", code, q)
	}
	TakeQuota(now, day5, &k2, tenant, &ts)
	TakeQuota(now, day5, &k2, tenant, &ts)
	code, q = TakeQuota(now, day5, &k2, tenant, &ts)
	if code != CodeQuotaExceeded || q.ResetsAt != month || q.Limit != 3 {
		t.Fatalf("tenant over: %q %+v", code, q)
	}
	if k2.Spent.Load(day5.Period.Index(now)) != 3 {
		t.Fatal("a request the tenant refused spent the key's quota")
	}
	// Key and tenant both spent: the later reset is when a request passes.
	TakeQuota(now, day5, &k2, QuotaRule{}, nil)
	TakeQuota(now, day5, &k2, QuotaRule{}, nil)
	if code, q := TakeQuota(now, day5, &k2, tenant, &ts); code != CodeQuotaExceeded || q.ResetsAt != month || q.Limit != 5 {
		t.Fatalf("both over: %q %+v", code, q)
	}
	// No quota at all: nothing to say.
	if code, q := TakeQuota(now, QuotaRule{}, nil, QuotaRule{}, nil); code != "" || q != (Quota{}) {
		t.Fatalf("none: %q %+v", code, q)
	}
}

// BenchmarkTakeQuota is the quota's part of a VALID verify: a key's quota
// alone, and with its tenant's.
func BenchmarkTakeQuota(bb *testing.B) {
	now := utc("2026-12-03T15:04:05Z")
	for _, p := range []Period{PeriodHour, PeriodDay, PeriodWeek, PeriodMonth} {
		r := QuotaRule{Limit: MaxQuota, Period: p}
		bb.Run(p.String(), func(b *testing.B) {
			var ks QuotaState
			b.ReportAllocs()
			for b.Loop() {
				if code, _ := TakeQuota(now, r, &ks, QuotaRule{}, nil); code != "" {
					b.Fatal(code)
				}
			}
		})
	}
	bb.Run("day+tenant-month", func(b *testing.B) {
		var ks, ts QuotaState
		kr, tr := QuotaRule{Limit: MaxQuota, Period: PeriodDay}, QuotaRule{Limit: MaxQuota, Period: PeriodMonth}
		b.ReportAllocs()
		for b.Loop() {
			if code, _ := TakeQuota(now, kr, &ks, tr, &ts); code != "" {
				b.Fatal(code)
			}
		}
	})
}

// Package chart renders the portal's usage charts as inline SVG on the
// server: no JavaScript, no CDN, nothing a page served with
// "default-src 'none'; style-src 'self'" would refuse. It stands alone
// because it is pure drawing: input is the answer of
// tenants/:tenant/usage/history (or a key's), output is markup.
//
// The SVG uses presentation attributes (fill=, stroke=, font-size=) and
// never a style attribute or a <style> element, which that CSP blocks;
// it has a viewBox and no fixed size, so it scales to its container. Each
// chart is role="img" with an aria-label, a <title> and a <desc> that
// states the figures in words; each bar and point has a <title>, which
// browsers show as a tooltip without script. Every string from the input
// (codes, titles) is XML-escaped, so the result is safe to embed as
// template.HTML. Output is deterministic: the same history gives the same
// bytes.
package chart

import (
	"encoding/json"
	"fmt"
	"time"
)

// Granularities of the history paths.
const (
	Hour = "hour"
	Day  = "day"
)

// Bucket is one bucket of a usage history, as the plugin answers it.
type Bucket struct {
	Start        time.Time         `json:"start"`
	VerifyByCode map[string]uint64 `json:"verify_by_code"`
	Requests     uint64            `json:"requests"`
	Errors       uint64            `json:"errors"`
	// LatencyMsAvg is nil for a bucket with no gateway requests: no
	// latency, which is not a latency of zero.
	LatencyMsAvg *float64 `json:"upstream_latency_ms_avg"`
}

// History is the answer of a usage/history read.
type History struct {
	Granularity string    `json:"granularity"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	Buckets     []Bucket  `json:"buckets"`
}

// FromData decodes the data of a usage/history read (a Vault response's
// Data map, JSON numbers or not).
func FromData(data map[string]any) (History, error) {
	var h History
	raw, err := json.Marshal(data)
	if err != nil {
		return h, fmt.Errorf("usage history: %w", err)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return h, fmt.Errorf("usage history: %w", err)
	}
	return h, nil
}

// step is the bucket size of the granularity (hour unless "day").
func (h History) step() time.Duration {
	if h.Granularity == Day {
		return 24 * time.Hour
	}
	return time.Hour
}

// slots lays the history on a regular grid from From to To (or from the
// first to the last bucket when those are unset): a bucket missing from
// the answer is a slot with nothing in it. Buckets outside the range are
// dropped, and two buckets of one slot are added up.
func (h History) slots() []slot {
	step := h.step()
	from, to := h.From.UTC(), h.To.UTC()
	if from.IsZero() || to.IsZero() {
		for i, b := range h.Buckets {
			s := b.Start.UTC()
			if i == 0 || s.Before(from) {
				from = s
			}
			if i == 0 || s.After(to) {
				to = s
			}
		}
	}
	from, to = from.Truncate(step), to.Truncate(step)
	if len(h.Buckets) == 0 && (h.From.IsZero() || h.To.IsZero()) || to.Before(from) {
		return nil
	}
	n := int(to.Sub(from)/step) + 1
	// A bound on nonsense input (a year of hours is 8784): the history
	// paths never answer more than 366 days or 49 hours.
	const maxSlots = 10000
	if n > maxSlots {
		n = maxSlots
	}
	out := make([]slot, n)
	for i := range out {
		out[i].start = from.Add(time.Duration(i) * step)
	}
	for _, b := range h.Buckets {
		i := int(b.Start.UTC().Truncate(step).Sub(from) / step)
		if b.Start.UTC().Before(from) || i >= n {
			continue
		}
		s := &out[i]
		for c, v := range b.VerifyByCode {
			if s.codes == nil {
				s.codes = map[string]uint64{}
			}
			s.codes[c] += v
		}
		s.requests += b.Requests
		s.errors += b.Errors
		if b.LatencyMsAvg != nil {
			// Two buckets of one slot: weigh by their requests.
			w := float64(b.Requests)
			s.latSum += *b.LatencyMsAvg * max(w, 1)
			s.latW += max(w, 1)
		}
	}
	return out
}

type slot struct {
	start            time.Time
	codes            map[string]uint64
	requests, errors uint64
	latSum, latW     float64
}

func (s *slot) latency() (float64, bool) {
	if s.latW == 0 {
		return 0, false
	}
	return s.latSum / s.latW, true
}

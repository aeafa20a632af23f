package backend

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// Anomaly kinds, the "kind" of a verify-anomaly event.
const (
	// anomalyTenantFailures: failed verifications attributed to one tenant
	// (by the key found, the tenant-scoped path, or the key's prefix)
	// reached tenant_failure_threshold within one window.
	anomalyTenantFailures = "tenant-failures"
	// anomalyIPFailures: failed verifications from one client_ip reached
	// ip_failure_threshold within one window.
	anomalyIPFailures = "ip-failures"
	// anomalyKeySpike: one key's valid verifications in a window reached
	// key_spike_factor times its own baseline (and key_spike_minimum).
	anomalyKeySpike = "key-spike"

	// baselineScale keeps the baseline average in fixed point, so the hot
	// path needs no floating point and no lock.
	baselineScale = 16
	// baselineWindows of history are needed before a key has a baseline:
	// a key's first busy minute is not a spike.
	baselineWindows = 3
	// maxAnomaliesInFlight bounds the goroutines that report anomalies; past
	// it, anomalies are counted as dropped in metrics instead.
	maxAnomaliesInFlight = 64
	// maxIPsPerWindow bounds the per-IP failure map of one window.
	maxIPsPerWindow = 100_000
)

// rolling counts events in fixed windows (window id = unix time / window
// length) and keeps an exponentially weighted average of earlier windows.
// Lock-free: a window rolls over on the first event that sees a new id. A
// count landing during a rollover may be booked to the neighbouring
// window; for anomaly thresholds that is noise, not error.
type rolling struct {
	win   atomic.Int64
	n     atomic.Int64
	base  atomic.Int64 // EWMA of earlier windows, times baselineScale
	seen  atomic.Int64 // windows of history, capped
	fired atomic.Int64 // window id of the last anomaly raised
}

// add counts one event in window w and returns the count of w so far.
func (r *rolling) add(w int64) int64 {
	if cur := r.win.Load(); cur != w && w > cur && r.win.CompareAndSwap(cur, w) {
		prev := r.n.Swap(0)
		if cur != 0 {
			r.roll(prev, w-cur)
		}
	}
	return r.n.Add(1)
}

// roll folds the finished window's count, and gap-1 empty windows after
// it, into the baseline (alpha = 1/4).
func (r *rolling) roll(prev, gap int64) {
	b := r.base.Load()
	b += (prev*baselineScale - b) / 4
	for i := int64(1); i < gap && i < 32; i++ {
		b -= b / 4
	}
	if gap >= 32 {
		b = 0
	}
	r.base.Store(b)
	if r.seen.Load() < baselineWindows {
		r.seen.Add(min(gap, baselineWindows))
	}
}

// baseline is the average count of a window so far, rounded up so that a
// key used once a minute has a baseline of one, not zero; ok is false while
// there is too little history.
func (r *rolling) baseline() (int64, bool) {
	if r.seen.Load() < baselineWindows {
		return 0, false
	}
	return (r.base.Load() + baselineScale - 1) / baselineScale, true
}

// fire reports true once per window: the first caller that crosses the
// threshold in window w raises the anomaly, every later one is quiet.
func (r *rolling) fire(w int64) bool {
	f := r.fired.Load()
	return f != w && r.fired.CompareAndSwap(f, w)
}

// ipWindow counts failed verifications per client IP in the current window.
// Only failures reach it, so its lock is off the path of valid keys.
type ipWindow struct {
	mu     sync.Mutex
	win    int64
	counts map[netip.Addr]int
}

// add counts a failure from ip and reports fire=true exactly when the
// count reaches threshold.
func (w *ipWindow) add(ip netip.Addr, win int64, threshold int) (int, bool) {
	ip = ip.Unmap()
	w.mu.Lock()
	defer w.mu.Unlock()
	if win != w.win {
		clear(w.counts)
		w.win = win
	}
	n, ok := w.counts[ip]
	if !ok && len(w.counts) >= maxIPsPerWindow {
		return 0, false
	}
	n++
	w.counts[ip] = n
	return n, n == threshold
}

// anomaly is what the hot path hands over; everything costly happens in
// reportAnomaly, on its own goroutine.
type anomaly struct {
	Kind      string
	Tenant    string
	KeyID     string
	ClientIP  string
	Count     int64
	Threshold int64
	Baseline  int64
	Window    time.Duration
}

// raiseAnomaly reports off the request path. Thresholds fire once per
// window per subject, so this runs rarely, and never more than
// maxAnomaliesInFlight at once.
func (b *backend) raiseAnomaly(a anomaly) {
	if b.anomaliesInFlight.Add(1) > maxAnomaliesInFlight {
		b.anomaliesInFlight.Add(-1)
		b.metrics.anomaliesDropped.Inc()
		return
	}
	go func() {
		defer b.anomaliesInFlight.Add(-1)
		b.reportAnomaly(a, b.usage.now())
	}()
}

func (b *backend) reportAnomaly(a anomaly, now time.Time) {
	b.usage.tenant(a.Tenant).anomalies.Add(1)
	b.metrics.anomalies.WithLabelValues(a.Tenant, a.Kind).Inc()
	b.Logger().Warn("verify anomaly", "kind", a.Kind, "tenant", a.Tenant, "key_id", a.KeyID, "client_ip", a.ClientIP,
		"count", a.Count, "threshold", a.Threshold, "window", a.Window)

	windowStart := now.Truncate(a.Window)
	data := map[string]interface{}{
		"kind":           a.Kind,
		"count":          a.Count,
		"threshold":      a.Threshold,
		"window_seconds": int64(a.Window.Seconds()),
		"window_start":   windowStart.UTC().Format(time.RFC3339),
	}
	if a.KeyID != "" {
		data["key_id"] = a.KeyID
		data["baseline"] = a.Baseline
	}
	if a.ClientIP != "" {
		data["client_ip"] = a.ClientIP
	}
	tenant := a.Tenant
	if tenant == unattributedTenant {
		tenant = ""
	}
	ev := &notify.Event{
		// One id per subject and window: the same anomaly seen twice (two
		// nodes, a retry) is one event to a receiver.
		ID:   notify.StableID(notify.VerifyAnomaly, a.Kind, a.Tenant, a.KeyID, a.ClientIP, strconv.FormatInt(windowStart.Unix(), 10)),
		Type: notify.VerifyAnomaly, OccurredAt: now.UTC(), Tenant: tenant, Data: data,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Only the node that delivers writes the outbox; anywhere else (a
	// performance standby) the Vault event and the log line are all there is.
	var s = b.deliveryStorage()
	b.emit(ctx, s, ev)
}

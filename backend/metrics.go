package backend

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics is the backend's own Prometheus registry: each mount has one, so
// two mounts of the plugin in one process (Vault multiplexes them) never
// collide, and nothing lands in the global default registry.
//
// Counters are this node's, since the plugin process started (Prometheus
// handles the reset on restart); durable totals are in the usage paths.
type metrics struct {
	reg *prometheus.Registry

	verifyLatency    *latencyHistogram
	activeKeys       *prometheus.GaugeVec
	deliveries       *prometheus.CounterVec
	deadLettered     *prometheus.CounterVec
	deadLetters      prometheus.Gauge
	enqueueFailures  prometheus.Counter
	events           *prometheus.CounterVec
	anomalies        *prometheus.CounterVec
	anomaliesDropped prometheus.Counter
}

func newMetrics(u *usageTracker, queueDepth func() int) *metrics {
	m := &metrics{
		reg:           prometheus.NewRegistry(),
		verifyLatency: newLatencyHistogram(),
		activeKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "apikeys_keys_active",
			Help: "Keys a tenant holds (dynamic and static, in grace included), counted from storage at scrape time.",
		}, []string{"tenant"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_notification_deliveries_total",
			Help: "Webhook delivery attempts by target and result (delivered, failed).",
		}, []string{"target", "result"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_notification_dead_lettered_total",
			Help: "Deliveries moved to notifications/failed after their last attempt.",
		}, []string{"target"}),
		deadLetters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "apikeys_notification_dead_letters",
			Help: "Deliveries in notifications/failed now, counted from storage at scrape time.",
		}),
		enqueueFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "apikeys_notification_enqueue_failures_total",
			Help: "Events that could not be written to the outbox (storage errors); the event was logged instead.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_events_total",
			Help: "Events raised on this node, by type.",
		}, []string{"type"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_verify_anomalies_total",
			Help: "verify-anomaly events raised on this node, by tenant and kind (tenant-failures, ip-failures, key-spike).",
		}, []string{"tenant", "kind"}),
		anomaliesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "apikeys_verify_anomalies_dropped_total",
			Help: "Anomalies not reported because too many reports were already in flight.",
		}),
	}
	m.reg.MustRegister(m.verifyLatency, m.activeKeys, m.deliveries, m.deadLettered, m.deadLetters,
		m.enqueueFailures, m.events, m.anomalies, m.anomaliesDropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apikeys_notification_queue_depth",
			Help: "Deliveries waiting or in flight in the outbox of this node (0 where delivery does not run).",
		}, func() float64 { return float64(queueDepth()) }),
		&usageCollector{u: u},
	)
	return m
}

// usageCollector turns the usage counters into metrics at scrape time, so
// verify increments plain atomics instead of Prometheus vectors, whose label
// lookup would cost a hash and allocations on every call.
type usageCollector struct{ u *usageTracker }

var (
	descVerify           = prometheus.NewDesc("apikeys_verify_total", "Verify answers by tenant and code.", []string{"tenant", "code"}, nil)
	descVerifyRole       = prometheus.NewDesc("apikeys_verify_valid_by_role_total", "VALID verify answers by tenant and role.", []string{"tenant", "role"}, nil)
	descIssued           = prometheus.NewDesc("apikeys_keys_issued_total", "Keys issued (dynamic and the first key of static keys).", []string{"tenant"}, nil)
	descRevoked          = prometheus.NewDesc("apikeys_keys_revoked_total", "Keys revoked (lease end, delete, rotation, unused).", []string{"tenant"}, nil)
	descRotations        = prometheus.NewDesc("apikeys_rotations_total", "Static key rotations.", []string{"tenant"}, nil)
	descRotationFailures = prometheus.NewDesc("apikeys_rotation_failures_total", "Failed static key rotation attempts.", []string{"tenant"}, nil)
	descGatewayRequests  = prometheus.NewDesc("apikeys_gateway_requests_total", "Requests gateways reported serving through usage/report.", []string{"tenant"}, nil)
	descGatewayErrors    = prometheus.NewDesc("apikeys_gateway_errors_total", "Failed requests gateways reported through usage/report.", []string{"tenant"}, nil)
	descGatewayLatency   = prometheus.NewDesc("apikeys_gateway_upstream_latency_seconds_total", "Sum of upstream latency gateways reported; divide by requests for the mean.", []string{"tenant"}, nil)
)

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVerify, descVerifyRole, descIssued, descRevoked, descRotations, descRotationFailures, descGatewayRequests, descGatewayErrors, descGatewayLatency} {
		ch <- d
	}
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, t := range c.u.tenantList() {
		for i, code := range verifyCodes {
			if n := t.codes[i].Load(); n > 0 {
				counter(descVerify, float64(n), t.name, code)
			}
		}
		for role, n := range *t.roles.Load() {
			counter(descVerifyRole, float64(n.Load()), t.name, role)
		}
		if t.name == unattributedTenant {
			continue
		}
		counter(descIssued, float64(t.issued.Load()), t.name)
		counter(descRevoked, float64(t.revoked.Load()), t.name)
		counter(descRotations, float64(t.rotations.Load()), t.name)
		counter(descRotationFailures, float64(t.rotationFailures.Load()), t.name)
		counter(descGatewayRequests, float64(t.requests.Load()), t.name)
		counter(descGatewayErrors, float64(t.errors.Load()), t.name)
		counter(descGatewayLatency, float64(t.latencyMicro.Load())/1e6, t.name)
	}
}

// latencyHistogram is verify's latency histogram. Prometheus' own adds the
// sum of seconds as a float with a compare-and-swap loop, which retries
// under contention on every verify; this one adds integers (nanoseconds
// and a bucket count) with two plain atomic adds and builds the Prometheus
// histogram at scrape time.
type latencyHistogram struct {
	buckets [len(latencyBounds) + 1]atomic.Uint64 // the last one is +Inf
	sumNano atomic.Uint64
}

// latencyBounds are the bucket upper bounds, from a warm cache hit (about
// a microsecond) to a cold storage read.
var latencyBounds = [...]time.Duration{
	time.Microsecond, 2500 * time.Nanosecond, 5 * time.Microsecond, 10 * time.Microsecond,
	25 * time.Microsecond, 50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond,
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond,
}

var descVerifyLatency = prometheus.NewDesc("apikeys_verify_duration_seconds",
	"Time verify spends deciding, in the plugin (Vault's HTTP and gRPC hops excluded).", nil, nil)

func newLatencyHistogram() *latencyHistogram { return &latencyHistogram{} }

func (h *latencyHistogram) observe(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNano.Add(uint64(max(d, 0)))
}

func (h *latencyHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- descVerifyLatency }

func (h *latencyHistogram) Collect(ch chan<- prometheus.Metric) {
	cumulative := make(map[float64]uint64, len(latencyBounds))
	var n uint64
	for i, bound := range latencyBounds {
		n += h.buckets[i].Load()
		cumulative[bound.Seconds()] = n
	}
	n += h.buckets[len(latencyBounds)].Load()
	ch <- prometheus.MustNewConstHistogram(descVerifyLatency, n, float64(h.sumNano.Load())/1e9, cumulative)
}

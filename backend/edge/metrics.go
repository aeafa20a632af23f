package edge

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	verifications *prometheus.CounterVec
	vaultVerify   *prometheus.CounterVec
	negativeHits  prometheus.Counter
	unavailable   prometheus.Counter
	resyncs       prometheus.Counter
	syncErrors    prometheus.Counter
	changes       prometheus.Counter
	seq           prometheus.Gauge
	lastSync      prometheus.Gauge
	usageReported *prometheus.CounterVec
	// all is every collector above and the gauges of newMetrics, for a
	// registry other than the edge's own (Collector).
	all           []prometheus.Collector
	quotaExceeded *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, e *Edge) *metrics {
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_edge_verifications_total",
			Help: "Verify answers by code and by source (local: from memory; vault: fell through to Vault's verify).",
		}, []string{"code", "source"}),
		vaultVerify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_edge_vault_verify_total",
			Help: "Fallthrough calls to Vault's verify path, by result (ok, error).",
		}, []string{"result"}),
		negativeHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "apikeys_edge_negative_cache_hits_total",
			Help: "Unknown keys answered NOT_FOUND from the negative cache without asking Vault.",
		}),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "apikeys_edge_unavailable_total",
			Help: "Verifications refused with 503: edge stale, or Vault unreachable for an unknown key.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "apikeys_edge_snapshots_loaded_total",
			Help: "Snapshots loaded (start, and each resync after the feed was compacted past the edge).",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "apikeys_edge_sync_errors_total",
			Help: "Failed snapshot or change feed requests to Vault.",
		}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "apikeys_edge_changes_applied_total",
			Help: "Change feed entries applied.",
		}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "apikeys_edge_feed_seq",
			Help: "Sequence number of the last change applied.",
		}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "apikeys_edge_last_sync_timestamp_seconds",
			Help: "Unix time of the last successful answer from Vault's sync paths.",
		}),
		usageReported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_edge_usage_reports_total",
			Help: "Per-key usage entries sent to usage/report, by result (ok, error: kept for the next report).",
		}, []string{"result"}),
		quotaExceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "apikeys_edge_quota_exceeded_total",
			Help: "QUOTA_EXCEEDED answers given from memory, by tenant (the key's own quota or its tenant's).",
		}, []string{"tenant"}),
	}
	m.all = []prometheus.Collector{m.usageReported, m.quotaExceeded, m.verifications, m.vaultVerify, m.negativeHits, m.unavailable, m.resyncs,
		m.syncErrors, m.changes, m.seq, m.lastSync,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apikeys_edge_stale",
			Help: "1 while the edge fails closed (no sync within the staleness bound), else 0.",
		}, func() float64 {
			if e.Stale() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apikeys_edge_sync_age_seconds",
			Help: "Seconds since the last successful sync; -1 before the first.",
		}, func() float64 {
			if age := e.syncAge(); age >= 0 {
				return age.Seconds()
			}
			return -1
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apikeys_edge_keys",
			Help: "Keys held in memory.",
		}, func() float64 { return float64(e.store.size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "apikeys_edge_negative_cache_entries",
			Help: "Entries in the negative cache.",
		}, func() float64 { return float64(e.neg.len()) }),
	}
	reg.MustRegister(m.all...)
	return m
}

// Collector gathers the edge's metrics, to register them in a registry
// besides the edge's own (Caddy's, which the admin endpoint serves).
func (e *Edge) Collector() prometheus.Collector { return collectors(e.m.all) }

type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

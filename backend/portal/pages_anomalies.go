package portal

import (
	"fmt"
	"io"
	"net/http"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// anomaliesNav is the platform admin's: the counts come from the mount's
// metrics, which span every tenant, and the thresholds from
// config/monitoring. Tenant policies grant neither.
var anomaliesNav = &navEntry{
	title: "Anomalies", href: "/admin/anomalies", order: 85,
	needs: []capCheck{
		{"{mount}/metrics", "read"},
		{"{mount}/config/monitoring", "read"},
	},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{"GET /admin/anomalies": (*Server).anomaliesPage},
		nav:    anomaliesNav,
	})
}

// The metric families the page reads (backend/metrics.go).
const (
	anomaliesMetric        = "apikeys_verify_anomalies_total"
	anomaliesDroppedMetric = "apikeys_verify_anomalies_dropped_total"
	// unattributedLabel is the tenant label of failures no tenant could be
	// told for (backend/usage.go's unattributedTenant).
	unattributedLabel = "_unknown"
	// maxMetricsBody bounds the metrics text read: a few lines per tenant.
	maxMetricsBody = 16 << 20
)

type anomalyRow struct {
	Tenant, Kind string
	Count        uint64
	Unattributed bool
	Known        bool // a tenant the admin can open
}

type anomaliesData struct {
	Rows       []anomalyRow
	Dropped    uint64
	Thresholds []kv
	Kinds      []kv
	Total      uint64
}

// anomalyKinds say what each kind of backend/anomaly.go means.
var anomalyKinds = []kv{
	{"tenant-failures", "failed verifications attributed to one tenant reached tenant_failure_threshold within one window"},
	{"ip-failures", "failed verifications from one client_ip reached ip_failure_threshold within one window"},
	{"key-spike", "one key's valid verifications in a window reached key_spike_factor times its own baseline"},
}

// anomaliesPage shows how many verify anomalies Vault raised, per tenant and
// kind, since this Vault node started, and the thresholds that raise them.
// The plugin keeps no list of single anomalies to acknowledge: each one is a
// verify-anomaly notification (webhook targets, Vault events) with its
// subject, window and count.
func (s *Server) anomaliesPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, anomaliesNav) {
		return
	}
	ctx := r.Context()
	cfg, err := rc.vault.Logical().ReadWithContext(ctx, s.cfg.Mount+"/config/monitoring")
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	var d anomaliesData
	d.Kinds = anomalyKinds
	if cfg != nil {
		for _, k := range []string{"anomaly_window", "tenant_failure_threshold", "ip_failure_threshold", "key_spike_factor", "key_spike_minimum"} {
			v := str(cfg.Data, k)
			if k == "anomaly_window" {
				v = ttlText(v)
			}
			d.Thresholds = append(d.Thresholds, kv{k, orDash(v)})
		}
	}
	// metrics answers Prometheus text, not Vault's JSON envelope.
	resp, err := rc.vault.Logical().ReadRawWithContext(ctx, s.cfg.Mount+"/metrics")
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	families, err := parseMetrics(io.LimitReader(resp.Body, maxMetricsBody))
	if err != nil {
		s.log.Error("anomalies: metrics unreadable", "error", err)
		s.message(w, r, rc, http.StatusInternalServerError, "Something went wrong", "Vault's metrics of the mount could not be read.")
		return
	}
	known := map[string]bool{}
	if sec, err := rc.vault.Logical().ListWithContext(ctx, s.cfg.Mount+"/tenants/"); err == nil && sec != nil {
		for _, n := range stringList(sec.Data["keys"]) {
			known[n] = true
		}
	}
	if f := families[anomaliesMetric]; f != nil {
		for _, m := range f.GetMetric() {
			row := anomalyRow{Count: uint64(m.GetCounter().GetValue())}
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "tenant":
					row.Tenant = l.GetValue()
				case "kind":
					row.Kind = l.GetValue()
				}
			}
			row.Unattributed = row.Tenant == unattributedLabel || row.Tenant == ""
			row.Known = !row.Unattributed && known[row.Tenant]
			if row.Count > 0 {
				d.Rows = append(d.Rows, row)
				d.Total += row.Count
			}
		}
	}
	if f := families[anomaliesDroppedMetric]; f != nil {
		for _, m := range f.GetMetric() {
			d.Dropped += uint64(m.GetCounter().GetValue())
		}
	}
	sort.Slice(d.Rows, func(i, j int) bool {
		if d.Rows[i].Count != d.Rows[j].Count {
			return d.Rows[i].Count > d.Rows[j].Count
		}
		if d.Rows[i].Tenant != d.Rows[j].Tenant {
			return d.Rows[i].Tenant < d.Rows[j].Tenant
		}
		return d.Rows[i].Kind < d.Rows[j].Kind
	})
	s.render(w, r, rc, "anomalies.html", "Anomalies", http.StatusOK, d)
}

// parseMetrics reads the Prometheus text exposition format.
func parseMetrics(body io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

package backend

import (
	"bytes"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"

	"github.com/hashicorp/vault/sdk/logical"
)

// scrape reads the metrics path the way Vault hands it to Prometheus and
// parses it with Prometheus' own parser.
func scrape(t testing.TB, b *backend, s logical.Storage) map[string]*dto.MetricFamily {
	t.Helper()
	resp := b.do(t, s, logical.ReadOperation, "metrics", nil)
	if ct, _ := resp.Data[logical.HTTPContentType].(string); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	if resp.Data[logical.HTTPStatusCode] != 200 {
		t.Fatalf("status %v", resp.Data[logical.HTTPStatusCode])
	}
	body, ok := resp.Data[logical.HTTPRawBody].([]byte)
	if !ok {
		t.Fatalf("raw body is %T", resp.Data[logical.HTTPRawBody])
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, body)
	}
	return fams
}

// metricValue returns the value of the one sample of name whose labels
// include want (counter, gauge, or a histogram's sample count); -1 if none.
func metricValue(t testing.TB, b *backend, s logical.Storage, name string, want map[string]string) float64 {
	t.Helper()
	return sampleOf(scrape(t, b, s), name, want)
}

func sampleOf(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func TestMetricsParseAndMatchWhatHappened(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil)
	b.do(t, s, logical.DeleteOperation, "tenants/acme/keys/"+id, nil)
	other := b.do(t, s, logical.ReadOperation, "tenants/acme/creds/web", nil).Data["api_key"].(string)
	verify := func(k string, extra ...string) string {
		data := map[string]interface{}{"api_key": k}
		for i := 0; i+1 < len(extra); i += 2 {
			data[extra[i]] = extra[i+1]
		}
		return b.do(t, s, logical.UpdateOperation, "verify", data).Data["code"].(string)
	}
	for range 5 {
		if c := verify(other); c != contract.CodeValid {
			t.Fatal(c)
		}
	}
	for range 3 {
		if c := verify(key); c != contract.CodeNotFound { // revoked
			t.Fatal(c)
		}
	}
	if c := verify(other, "required_scopes", "admin"); c != contract.CodeInsufficientScope {
		t.Fatal(c)
	}
	if c := verify("garbage"); c != contract.CodeMalformed {
		t.Fatal(c)
	}

	fams := scrape(t, b, s)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"apikeys_verify_total", map[string]string{"tenant": "acme", "code": contract.CodeValid}, 5},
		{"apikeys_verify_total", map[string]string{"tenant": "acme", "code": contract.CodeInsufficientScope}, 1},
		{"apikeys_verify_total", map[string]string{"tenant": unattributedTenant, "code": contract.CodeMalformed}, 1},
		{"apikeys_verify_valid_by_role_total", map[string]string{"tenant": "acme", "role": "web"}, 5},
		{"apikeys_verify_duration_seconds", nil, 10},
		{"apikeys_keys_issued_total", map[string]string{"tenant": "acme"}, 3},
		{"apikeys_keys_revoked_total", map[string]string{"tenant": "acme"}, 1},
		{"apikeys_keys_active", map[string]string{"tenant": "acme"}, 2},
		{"apikeys_notification_queue_depth", nil, 0},
		{"apikeys_notification_dead_letters", nil, 0},
		{"apikeys_rotations_total", map[string]string{"tenant": "acme"}, 0},
	} {
		if got := sampleOf(fams, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// The unknown keys carry the mount's prefix, which acme alone uses
	// once prefixes are mapped: they count against acme, before that they
	// are unattributed.
	if got := sampleOf(fams, "apikeys_verify_total", map[string]string{"code": contract.CodeNotFound}); got != 3 {
		t.Errorf("NOT_FOUND total %v, want 3", got)
	}
	if f := fams["apikeys_verify_duration_seconds"]; f.GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("latency is a %v", f.GetType())
	}
}

// TestMonitoringPathsFollowTheConventions: help, operation prefix and an
// existence check wherever a write can create.
func TestMonitoringPathsFollowTheConventions(t *testing.T) {
	b, _ := newTestBackend(t)
	found := 0
	for _, p := range b.Paths {
		if !strings.Contains(p.Pattern, "metrics") && !strings.Contains(p.Pattern, "usage") &&
			!strings.Contains(p.Pattern, "monitoring") && !strings.Contains(p.Pattern, "notifications") {
			continue
		}
		found++
		if p.HelpSynopsis == "" || p.HelpDescription == "" {
			t.Errorf("%s: no help", p.Pattern)
		}
		if p.DisplayAttrs == nil || p.DisplayAttrs.OperationPrefix != operationPrefix {
			t.Errorf("%s: no operation prefix", p.Pattern)
		}
		_, create := p.Operations[logical.CreateOperation]
		_, update := p.Operations[logical.UpdateOperation]
		if (create || update) && p.ExistenceCheck == nil {
			t.Errorf("%s: writable without an existence check", p.Pattern)
		}
		for op, h := range p.Operations {
			if h.Properties().Summary == "" {
				t.Errorf("%s %s: no summary", p.Pattern, op)
			}
		}
	}
	// 9, the two usage/history paths and the five of tenants' own
	// notifications.
	if found != 16 {
		t.Fatalf("found %d monitoring paths, want 16", found)
	}
}

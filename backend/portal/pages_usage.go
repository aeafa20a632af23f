package portal

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/portal/chart"
)

// usageNav is the tenant's usage: the tenant admin's (the developer policy
// reads only keys' histories, which the key usage page shows).
var usageNav = &navEntry{
	title: "Usage", href: "/usage", order: 50,
	needs: []capCheck{{"{mount}/tenants/{tenant}/usage/history", "read"}},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{
			"GET /usage":               (*Server).usagePage,
			"GET /keys/{key_id}/usage": (*Server).keyUsagePage,
		},
		nav: usageNav,
	})
}

// usageRange is the form's choice, validated before Vault sees it.
type usageRange struct {
	Granularity, From, To string
}

// historyInput is a from or to value: a date or an RFC 3339 time, as the
// history paths take them.
func historyInput(v string) bool {
	if _, err := time.Parse(time.DateOnly, v); err == nil {
		return true
	}
	_, err := time.Parse(time.RFC3339, v)
	return err == nil
}

// usageForm reads the range form; the error names the field.
func usageForm(q url.Values) (usageRange, string) {
	u := usageRange{Granularity: q.Get("granularity"), From: strings.TrimSpace(q.Get("from")), To: strings.TrimSpace(q.Get("to"))}
	if u.Granularity == "" {
		u.Granularity = chart.Hour
	}
	if u.Granularity != chart.Hour && u.Granularity != chart.Day {
		return u, `granularity must be "hour" or "day".`
	}
	for _, f := range []struct{ name, v string }{{"from", u.From}, {"to", u.To}} {
		if f.v != "" && (len(f.v) > 40 || !historyInput(f.v)) {
			return u, f.name + " must be a date (2026-12-03) or an RFC 3339 time (2026-12-03T10:00:00Z)."
		}
	}
	return u, ""
}

func (u usageRange) query() url.Values {
	v := url.Values{"granularity": {u.Granularity}}
	if u.From != "" {
		v.Set("from", u.From)
	}
	if u.To != "" {
		v.Set("to", u.To)
	}
	return v
}

type chartView struct {
	Title string
	SVG   template.HTML
}

type usageData struct {
	Range    usageRange
	Action   string
	Heading  string
	Charts   []chartView
	FromTo   string
	Totals   []kv
	ByCode   []kv
	Quota    []kv
	KeyID    string
	KeyHint  string
	Scope    string
	HasTotal bool
	// TotalsURL offers the tenant's totals, which the page reads only when
	// asked (totals=1): Vault reads every key's record for them, seconds
	// at 10 000 keys, while the charts come from the history alone.
	TotalsURL string
}

// charts renders the three charts of a history; prefix keeps their ids
// unique on the page.
func charts(h chart.History, prefix string) []chartView {
	return []chartView{
		{"Verifications", chart.Verifications(h, chart.Options{ID: prefix + "-verifications"})},
		{"Gateway requests", chart.Gateway(h, chart.Options{ID: prefix + "-gateway"})},
		{"Upstream latency", chart.Latency(h, chart.Options{ID: prefix + "-latency"})},
	}
}

func (s *Server) readHistory(rc *reqCtx, r *http.Request, path string, u usageRange) (chart.History, error) {
	q := url.Values{}
	for k, v := range u.query() {
		q[k] = v
	}
	sec, err := rc.vault.Logical().ReadWithDataWithContext(r.Context(), path, q)
	if err != nil {
		return chart.History{}, err
	}
	if sec == nil {
		return chart.History{}, errNotFound
	}
	return chart.FromData(sec.Data)
}

var errNotFound = &api.ResponseError{StatusCode: http.StatusNotFound}

func rangeText(h chart.History) string {
	layout := "2006-01-02 15:04 UTC"
	if h.Granularity == chart.Day {
		layout = "2006-01-02"
	}
	if h.From.IsZero() || h.To.IsZero() {
		return ""
	}
	return fmt.Sprintf("%s to %s, per %s", h.From.UTC().Format(layout), h.To.UTC().Format(layout), h.Granularity)
}

// usagePage is the tenant's history charts, quota, and on request its
// totals. The totals read (tenants/:t/usage) walks the tenant's keys in
// Vault (~9 s at 10 000 keys), so the page makes it only with totals=1,
// side by side with the history, and asks for no per-key lists.
func (s *Server) usagePage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, usageNav) {
		return
	}
	u, bad := usageForm(r.URL.Query())
	if bad != "" {
		s.message(w, r, rc, http.StatusBadRequest, "Bad range", bad)
		return
	}
	ctx := r.Context()
	d := usageData{Range: u, Action: "/usage", Heading: "Usage of " + rc.tenant, Scope: "tenant"}
	var (
		h           chart.History
		herr        error
		totals      *api.Secret
		tenantQuota *api.Secret
		wg          sync.WaitGroup
	)
	wg.Go(func() { h, herr = s.readHistory(rc, r, rc.path("usage/history"), u) })
	wantTotals := r.URL.Query().Get("totals") == "1"
	if rc.can(ctx, rc.path("usage"), "read") && !wantTotals {
		q := u.query()
		q.Set("totals", "1")
		d.TotalsURL = "/usage?" + q.Encode()
	}
	if rc.can(ctx, rc.path("usage"), "read") && wantTotals {
		wg.Go(func() {
			var err error
			totals, err = rc.vault.Logical().ReadWithDataWithContext(ctx, rc.path("usage"), url.Values{"limit": {"1"}})
			if err != nil {
				s.log.Warn("usage totals unreadable", "tenant", rc.tenant, "error", err)
			}
		})
	}
	// The tenant's quota is on the tenant record, which only platform
	// admins read.
	tenantPath := s.cfg.Mount + "/tenants/" + rc.tenant
	if rc.can(ctx, tenantPath, "read") {
		wg.Go(func() { tenantQuota, _ = rc.vault.Logical().ReadWithContext(ctx, tenantPath) })
	}
	wg.Wait()
	if herr != nil {
		s.vaultError(w, r, rc, herr)
		return
	}
	d.Charts, d.FromTo = charts(h, "tenant"), rangeText(h)
	if totals != nil {
		t := totals.Data
		d.HasTotal = true
		d.Totals = []kv{
			{"Verifications", orDash(str(t, "verify_count"))},
			{"Active keys", orDash(str(t, "keys_active"))},
			{"Keys issued", orDash(str(t, "keys_issued"))},
			{"Keys revoked", orDash(str(t, "keys_revoked"))},
			{"Stale keys", orDash(str(t, "keys_stale"))},
			{"Keys expiring soon", orDash(str(t, "keys_expiring"))},
			{"Rotations", orDash(str(t, "rotations"))},
			{"Rotation failures", orDash(str(t, "rotation_failures"))},
		}
		if g, ok := t["gateway"].(map[string]interface{}); ok {
			d.Totals = append(d.Totals, kv{"Gateway requests", orDash(str(g, "requests"))}, kv{"Gateway errors", orDash(str(g, "errors"))})
			if lat := str(g, "upstream_latency_ms_avg"); lat != "" {
				d.Totals = append(d.Totals, kv{"Average upstream latency", lat + " ms"})
			}
		}
		d.ByCode = counts(t["verify_by_code"])
	}
	if tenantQuota != nil {
		if q := str(tenantQuota.Data, "quota"); q != "" && q != "0" {
			d.Quota = []kv{{"Tenant quota", q + " verifications per " + str(tenantQuota.Data, "quota_period") + ", over all keys"}}
		}
	}
	s.render(w, r, rc, "usage.html", "Usage", http.StatusOK, d)
}

func counts(v interface{}) []kv {
	m, _ := v.(map[string]interface{})
	out := make([]kv, 0, len(m))
	for k := range m {
		out = append(out, kv{k, str(m, k)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].K < out[j].K })
	return out
}

// keyUsagePage is one key's history charts, its totals from its record and
// its quota when one applies and the policy lets the user read it.
func (s *Server) keyUsagePage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	id := r.PathValue("key_id")
	if !keyIDRE.MatchString(id) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "key_id must be a key id (a UUID).")
		return
	}
	// Not a nav page (it is reached from a key's page): the check is on
	// the probe key, as the policies grant keys/+/usage/history.
	if !rc.needTenant(w, r) {
		return
	}
	if !rc.can(r.Context(), rc.path("keys/"+probeKeyID+"/usage/history"), "read") {
		if !rc.endIfDead(w, r) {
			s.message(w, r, rc, http.StatusForbidden, "Permission denied", "Your policy does not give you this page.")
		}
		return
	}
	u, bad := usageForm(r.URL.Query())
	if bad != "" {
		s.message(w, r, rc, http.StatusBadRequest, "Bad range", bad)
		return
	}
	ctx := r.Context()
	// The key's record first: a key of another tenant, or none, is a 404
	// before any history is asked for.
	key, ok := s.readKey(w, r, rc, id)
	if !ok {
		return
	}
	d := usageData{Range: u, Action: "/keys/" + id + "/usage", KeyID: id, KeyHint: str(key.Data, "hint"), Scope: "key"}
	d.Heading = "Usage of key " + d.KeyHint
	var (
		h     chart.History
		herr  error
		quota *api.Secret
		wg    sync.WaitGroup
	)
	wg.Go(func() { h, herr = s.readHistory(rc, r, rc.path("keys/"+id+"/usage/history"), u) })
	if rc.can(ctx, rc.path("keys/"+probeKeyID+"/quota"), "read") {
		wg.Go(func() { quota, _ = rc.vault.Logical().ReadWithContext(ctx, rc.path("keys/"+id+"/quota")) })
	}
	wg.Wait()
	if herr != nil {
		s.vaultError(w, r, rc, herr)
		return
	}
	d.Charts, d.FromTo = charts(h, "key"), rangeText(h)
	d.HasTotal = true
	d.Totals = []kv{
		{"Verifications", orDash(str(key.Data, "verify_count"))},
		{"Last used", fmtTime(str(key.Data, "last_used_at"))},
	}
	if quota != nil {
		if q := str(quota.Data, "quota"); q != "" && q != "0" {
			d.Quota = []kv{
				{"Quota", q + " per " + str(quota.Data, "quota_period")},
				{"Used this period", orDash(str(quota.Data, "used"))},
				{"Remaining", orDash(str(quota.Data, "remaining"))},
				{"Resets", fmtTime(str(quota.Data, "resets_at"))},
			}
		}
	}
	s.render(w, r, rc, "usage.html", "Key usage", http.StatusOK, d)
}

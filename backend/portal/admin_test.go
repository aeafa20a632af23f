package portal

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// uniqueTenant is a fresh tenant name: the tests share one Vault.
func uniqueTenant(prefix string) string {
	return prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e10, 36)
}

func readTenantAs(t *testing.T, c *api.Client, name string) map[string]interface{} {
	t.Helper()
	s, err := c.Logical().Read("apikeys/tenants/" + name)
	if err != nil {
		t.Fatalf("read tenant %s: %v", name, err)
	}
	if s == nil {
		return nil
	}
	return s.Data
}

// TestPortalPlatformAdminTenants: the platform admin creates a tenant (with
// markup in its display name), suspends and resumes it, sets its quota and
// limits from the pages, with Vault's verify answering at each step; bad
// input is a 400 naming the field; "act as" uses the picker's POST.
func TestPortalPlatformAdminTenants(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, func(c *Config) { c.PageSize = 2 })
	admin := login(t, srv, "platform-admin")
	b := newBrowser(t, tp.url)

	picker := b.signIn("platform-admin", demo["platform-admin"])
	picker.want(t, http.StatusOK, "Work on this tenant", `href="/admin/tenants"`, `href="/admin/anomalies"`)

	name := uniqueTenant("pt")
	markup := `<b onclick="x()">Evil & Co</b>`
	newForm := b.get("/admin/tenants/new").want(t, http.StatusOK, `name="tenant"`, `name="quota_period"`)
	good := url.Values{
		"csrf": {newForm.csrf(t)}, "tenant": {name}, "display_name": {markup}, "key_prefix": {"pt"},
		"max_keys": {"5"}, "default_ttl": {"1h"}, "max_ttl": {"24h"}, "quota": {""}, "quota_period": {"day"},
	}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for kk, vv := range good {
			f[kk] = append([]string(nil), vv...)
		}
		f.Set(k, v)
		return f
	}
	// Refused before Vault is asked: no CSRF token, a bad name, a bad number.
	b.post("/admin/tenants", with("csrf", "")).want(t, http.StatusForbidden, "Request refused")
	b.post("/admin/tenants", with("tenant", "Bad_Name")).want(t, http.StatusBadRequest, "tenant must be")
	b.post("/admin/tenants", with("max_keys", "-1")).want(t, http.StatusBadRequest, "max_keys must be a whole number")
	b.post("/admin/tenants", with("quota_period", "fortnight")).want(t, http.StatusBadRequest, "quota_period must be one of")
	// Refused by Vault, shown with its message on the form again.
	b.post("/admin/tenants", with("key_prefix", "9bad")).want(t, http.StatusBadRequest, "key_prefix", html.EscapeString(markup))
	if got := readTenantAs(t, admin, name); got != nil {
		t.Fatalf("a refused create left tenant %s behind: %v", name, got)
	}

	created := b.post("/admin/tenants", good)
	if created.status != http.StatusSeeOther || created.header.Get("Location") != "/admin/tenants/"+name {
		t.Fatalf("create: want 303 to the tenant, got %d %q: %s", created.status, created.header.Get("Location"), created.body)
	}
	detail := b.follow(created).want(t, http.StatusOK, "Tenant "+name+" created.", html.EscapeString(markup), "Suspend…", "1h0m0s", "24h0m0s")
	detail.lacks(t, markup)
	rec := readTenantAs(t, admin, name)
	if str(rec, "display_name") != markup || str(rec, "max_keys") != "5" || str(rec, "default_ttl") != "3600" || str(rec, "key_prefix") != "pt" {
		t.Fatalf("created tenant: %v", rec)
	}
	// Paged list, two a page (acme, globex and this one at least), acme first.
	list := b.get("/admin/tenants").want(t, http.StatusOK, "Tenants 1–2 of", `href="/admin/tenants/acme"`, `action="/tenant"`, `rel="next"`)
	wantSecurityHeaders(t, list)
	next := regexpFind(t, list.body, `href="(/admin/tenants\?after=[^"]+)" rel="next"`)
	b.get(html.UnescapeString(next)).want(t, http.StatusOK, "Tenants 3–", `rel="prev"`)
	// The list escapes it too.
	b.get("/admin/tenants?after="+name[:len(name)-1]).want(t, http.StatusOK, html.EscapeString(markup)).lacks(t, markup)
	// Create never overwrites.
	b.post("/admin/tenants", with("display_name", "other")).want(t, http.StatusConflict, "exists already")
	if str(readTenantAs(t, admin, name), "display_name") != markup {
		t.Fatal("a second create changed the tenant")
	}

	// A key of the tenant, issued as the platform admin.
	if _, err := admin.Logical().Write("apikeys/tenants/"+name+"/roles/svc", map[string]interface{}{"scopes": "read", "environment": "live", "ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	cred, err := admin.Logical().Write("apikeys/tenants/"+name+"/creds/svc", map[string]interface{}{"name": "probe"})
	if err != nil {
		t.Fatal(err)
	}
	key := str(cred.Data, "api_key")
	if key == "" {
		t.Fatalf("no api_key in %v", cred.Data)
	}
	wantCode(t, srv, key, "VALID")

	// Suspend: a confirmation page, then the POST.
	csrf := detail.csrf(t)
	b.get("/admin/tenants/"+name+"/suspend").want(t, http.StatusOK, "Suspend the tenant", html.EscapeString(markup), `value="suspended"`)
	b.post("/admin/tenants/"+name+"/status", url.Values{"status": {"suspended"}}).want(t, http.StatusForbidden, "Request refused")
	wantCode(t, srv, key, "VALID")
	b.post("/admin/tenants/"+name+"/status", url.Values{"csrf": {csrf}, "status": {"gone"}}).want(t, http.StatusBadRequest, "status must be")
	sus := b.post("/admin/tenants/"+name+"/status", url.Values{"csrf": {csrf}, "status": {"suspended"}})
	b.follow(sus).want(t, http.StatusOK, "suspended: its keys verify as TENANT_SUSPENDED", "Resume")
	wantCode(t, srv, key, "TENANT_SUSPENDED")
	res := b.post("/admin/tenants/"+name+"/status", url.Values{"csrf": {csrf}, "status": {"active"}})
	b.follow(res).want(t, http.StatusOK, "resumed", "Suspend…")
	wantCode(t, srv, key, "VALID")

	// Quota: bad input named; then a quota that verify enforces.
	b.post("/admin/tenants/"+name+"/quota", url.Values{"csrf": {csrf}, "quota": {"lots"}, "quota_period": {"hour"}}).
		want(t, http.StatusBadRequest, "quota must be a whole number")
	b.post("/admin/tenants/"+name+"/quota", url.Values{"csrf": {csrf}, "quota": {""}, "quota_period": {"hour"}}).
		want(t, http.StatusBadRequest, "quota is required")
	q := b.post("/admin/tenants/"+name+"/quota", url.Values{"csrf": {csrf}, "quota": {"2"}, "quota_period": {"hour"}})
	b.follow(q).want(t, http.StatusOK, "set to 2 per hour", "2 per hour")
	rec = readTenantAs(t, admin, name)
	if str(rec, "quota") != "2" || str(rec, "quota_period") != "hour" {
		t.Fatalf("quota not set: %v", rec)
	}
	exceeded := false
	for i := 0; i < 4 && !exceeded; i++ {
		switch code := str(verify(t, srv, key).Data, "code"); code {
		case "VALID":
		case "QUOTA_EXCEEDED":
			exceeded = true
		default:
			t.Fatalf("verify under a quota of 2: %s", code)
		}
	}
	if !exceeded {
		t.Fatal("4 verifications under a tenant quota of 2 per hour never answered QUOTA_EXCEEDED")
	}

	// Limits: Vault's 400 (default_ttl over max_ttl) on the tenant's page.
	b.post("/admin/tenants/"+name+"/limits", url.Values{"csrf": {csrf}, "default_ttl": {"48h"}}).
		want(t, http.StatusBadRequest, "default_ttl", html.EscapeString(markup))
	lim := b.post("/admin/tenants/"+name+"/limits", url.Values{"csrf": {csrf}, "display_name": {"Plain Co"}, "max_keys": {"0"}})
	b.follow(lim).want(t, http.StatusOK, "Limits of "+name+" saved.", "Plain Co", "no limit")

	// A tenant that does not exist, and a name that cannot be one.
	b.get("/admin/tenants/no-such-tenant-here").want(t, http.StatusNotFound, "There is no tenant")
	b.get("/admin/tenants/Bad_Name").want(t, http.StatusBadRequest, "tenant must be")

	// Act as this tenant: the picker's POST.
	act := b.post("/tenant", url.Values{"csrf": {csrf}, "tenant": {name}})
	if act.status != http.StatusSeeOther || act.header.Get("Location") != "/keys" {
		t.Fatalf("act as: %d %s", act.status, act.body)
	}
	if got := sessionOf(t, tp, b).getTenant(); got != name {
		t.Fatalf("acting as %q, want %q", got, name)
	}
	b.get("/keys").want(t, http.StatusOK, "Keys of "+name, "probe")
}

// TestPortalAdminPagesRefused: tenant admins and developers are not offered
// the platform admin's pages and get a plain 403 by every URL of them.
func TestPortalAdminPagesRefused(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	admin := login(t, srv, "platform-admin")
	for _, user := range []string{"acme-admin", "acme-dev"} {
		t.Run(user, func(t *testing.T) {
			b := newBrowser(t, tp.url)
			keys := b.signIn(user, demo[user]).want(t, http.StatusOK, "Keys of acme")
			keys.lacks(t, `href="/admin/tenants"`, `href="/admin/anomalies"`, `href="/tenants"`)
			csrf := keys.csrf(t)
			for _, p := range []string{"/admin/tenants", "/admin/tenants/new", "/admin/tenants/acme", "/admin/tenants/globex", "/admin/tenants/globex/suspend", "/admin/anomalies"} {
				got := b.get(p).want(t, http.StatusForbidden, "Permission denied")
				got.lacks(t, "Globex Corporation", "goroutine", "panic")
			}
			for p, form := range map[string]url.Values{
				"/admin/tenants":               {"csrf": {csrf}, "tenant": {uniqueTenant("sneak")}},
				"/admin/tenants/globex/status": {"csrf": {csrf}, "status": {"suspended"}},
				"/admin/tenants/acme/status":   {"csrf": {csrf}, "status": {"suspended"}},
				"/admin/tenants/acme/quota":    {"csrf": {csrf}, "quota": {"1"}, "quota_period": {"hour"}},
				"/admin/tenants/globex/limits": {"csrf": {csrf}, "max_keys": {"1"}},
			} {
				b.post(p, form).want(t, http.StatusForbidden, "Permission denied")
			}
			for _, tn := range []string{"acme", "globex"} {
				rec := readTenantAs(t, admin, tn)
				if str(rec, "status") != "active" || str(rec, "max_keys") != "0" || !(str(rec, "quota") == "0" || str(rec, "quota") == "") {
					t.Fatalf("%s changed by %s: %v", tn, user, rec)
				}
			}
		})
	}
}

// TestPortalAnomaliesPage: failed verifications of a fresh tenant over a
// threshold of 1 raise a tenant-failures anomaly, which the platform
// admin's page lists with a link to the tenant.
func TestPortalAnomaliesPage(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	admin := login(t, srv, "platform-admin")
	cfg, err := admin.Logical().Read("apikeys/config/monitoring")
	if err != nil || cfg == nil {
		t.Fatalf("read config/monitoring: %v", err)
	}
	old := str(cfg.Data, "tenant_failure_threshold")
	if _, err := admin.Logical().Write("apikeys/config/monitoring", map[string]interface{}{"tenant_failure_threshold": 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Logical().Write("apikeys/config/monitoring", map[string]interface{}{"tenant_failure_threshold": old}); err != nil {
			t.Errorf("restore tenant_failure_threshold: %v", err)
		}
	})
	name := uniqueTenant("anom")
	if _, err := admin.Logical().Write("apikeys/tenants/"+name, map[string]interface{}{"display_name": "Anomalous"}); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, tp.url)
	b.signIn("platform-admin", demo["platform-admin"])
	before := b.get("/admin/anomalies").want(t, http.StatusOK, "Thresholds", "tenant_failure_threshold", "tenant-failures")
	before.lacks(t, `href="/admin/tenants/`+name+`"`)

	// Failed verifications on the tenant's own verify path are its own.
	for i := 0; i < 3; i++ {
		s, err := admin.Logical().Write("apikeys/tenants/"+name+"/verify", map[string]interface{}{"api_key": "not-a-key"})
		if err != nil {
			t.Fatal(err)
		}
		if str(s.Data, "valid") == "true" {
			t.Fatalf("garbage verified: %v", s.Data)
		}
	}
	// The anomaly is reported off the request path: wait for it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := b.get("/admin/anomalies").want(t, http.StatusOK)
		i := strings.Index(p.body, `href="/admin/tenants/`+name+`"`)
		if i >= 0 {
			if !strings.Contains(p.body[i:], "tenant-failures") {
				t.Fatalf("the anomaly of %s is not of kind tenant-failures: %s", name, p.body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no anomaly of %s listed after 20s: %s", name, p.body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The tenant's page counts it too.
	b.get("/admin/tenants/"+name).want(t, http.StatusOK, "Anomalies")
}

// regexpFind is the first group of re's first match in s.
func regexpFind(t *testing.T, s, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no match of %s in: %s", re, s)
	}
	return m[1]
}

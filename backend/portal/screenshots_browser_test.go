package portal

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	chromium "github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/browser"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// The screenshots of docs/portal.md: one row per picture. A page added to
// the portal gets a row here (TestPortalDocScreenshots fails for a nav
// page without one), and docs/portal.md embeds it as portal/<name>.png.
type shot struct {
	name  string // docs/portal/<name>.png
	user  string // demo login; "" for a signed-out page
	path  string // the page; its path (no query) is what the nav check matches
	phone bool
	// then, when set, acts on the loaded page (e.g. submits its form).
	then func(t *testing.T, e *webEnv, p *chromium.Page, d *shotData)
}

// shotData is the fixed demo data of the screenshots.
type shotData struct {
	keyID string            // acme's "checkout-service" key
	keys  map[string]string // the demo keys by name
}

// demoUsage gives acme's usage pages something to draw: verifies of each
// kind through Vault, a gateway's report, and a flush (reloading the
// mount's backend: Clean flushes) that puts them in the history.
func demoUsage(t *testing.T, e *webEnv, d *shotData) {
	t.Helper()
	root := e.srv.Client
	verify := func(n int, body map[string]interface{}) {
		for range n {
			if _, err := root.Logical().Write("apikeys/verify", body); err != nil {
				t.Fatal(err)
			}
		}
	}
	verify(40, map[string]interface{}{"api_key": d.keys["checkout-service"]})
	verify(6, map[string]interface{}{"api_key": d.keys["checkout-service"], "required_scopes": "admin"})
	verify(9, map[string]interface{}{"api_key": d.keys["mobile-app"]})
	verify(12, map[string]interface{}{"api_key": d.keys["local-dev"]})
	verify(3, map[string]interface{}{"api_key": "ak_live_not-a-key"})
	if _, err := root.Logical().Write("apikeys/usage/report", map[string]interface{}{"reports": []map[string]interface{}{{
		"tenant": "acme", "key_id": d.keyID, "requests": 38, "errors": 2,
		"upstream_latency_ms_sum": 38 * 42.5, "upstream_latency_ms_max": 120,
	}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Sys().ReloadPlugin(&api.ReloadPluginInput{Mounts: []string{"apikeys"}}); err != nil {
		t.Fatalf("reload the mount (its Clean flushes usage): %v", err)
	}
	// The tenant guard lets no root token read a tenant's paths.
	admin := login(t, e.srv, "platform-admin")
	testvault.WaitFor(t, 30*time.Second, "acme's usage history after the flush", func() error {
		s, err := admin.Logical().ReadWithData("apikeys/tenants/acme/usage/history", map[string][]string{"granularity": {"hour"}})
		if err != nil {
			return err
		}
		if s != nil {
			buckets, _ := s.Data["buckets"].([]interface{})
			for _, b := range buckets {
				if m, _ := b.(map[string]interface{}); str(m, "requests") == "38" {
					return nil
				}
			}
		}
		return fmt.Errorf("no bucket holds the report's 38 requests yet")
	})
}

var shots = []shot{
	{name: "signin", path: "/signin"},
	{name: "signin-phone", path: "/signin", phone: true},
	{name: "keys", user: "acme-admin", path: "/keys"},
	{name: "keys-phone", user: "acme-admin", path: "/keys", phone: true},
	{name: "key", user: "acme-admin", path: "/keys/{key}"},
	{name: "revoke", user: "acme-admin", path: "/keys/{key}/revoke"},
	{name: "issue", user: "acme-admin", path: "/issue"},
	{name: "issue-form", user: "acme-admin", path: "/issue?role=web"},
	{name: "issued", user: "acme-admin", path: "/issue?role=web", then: issueShotKey},
	{name: "issued-phone", user: "acme-admin", path: "/issue?role=web", phone: true, then: issueShotKey},
	{name: "roles", user: "acme-admin", path: "/roles"},
	{name: "developer-keys", user: "acme-dev", path: "/keys"},
	{name: "developer-roles-refused", user: "acme-dev", path: "/roles"},
	{name: "tenants", user: "platform-admin", path: "/tenants"},
	{name: "static-keys", user: "acme-admin", path: "/static-keys"},
	{name: "static-key", user: "acme-admin", path: "/static-keys/checkout"},
	{name: "usage", user: "acme-admin", path: "/usage?totals=1"},
	{name: "usage-phone", user: "acme-admin", path: "/usage", phone: true},
	{name: "key-usage", user: "acme-admin", path: "/keys/{key}/usage"},
	{name: "notifications", user: "platform-admin", path: "/notifications"},
	{name: "snippets", user: "acme-admin", path: "/snippets"},
	{name: "admin-tenants", user: "platform-admin", path: "/admin/tenants"},
	{name: "admin-tenant", user: "platform-admin", path: "/admin/tenants/acme"},
	{name: "admin-tenant-new", user: "platform-admin", path: "/admin/tenants/new"},
	{name: "anomalies", user: "platform-admin", path: "/admin/anomalies"},
}

// shotPagesNotInNav are routes of a nav-less page that have a picture all
// the same (the platform admin's tenant picker is linked from the layout).
var shotPagesNotInNav = []string{"/signin", "/keys/{key}", "/keys/{key}/revoke", "/tenants"}

func issueShotKey(t *testing.T, e *webEnv, p *chromium.Page, d *shotData) {
	t.Helper()
	if status := submit(t, p, `form[action="/issue"]`, map[string]string{"name": "billing-worker", "ttl": "2h"}); status != http.StatusOK {
		t.Fatalf("issue: HTTP %d", status)
	}
	href, _, _ := p.Attr(`main a[href^="/keys/"]`, "href")
	t.Cleanup(func() { _, _ = login(t, e.srv, "platform-admin").Logical().Delete("apikeys/tenants/acme" + href) })
}

// demoKeys makes acme's keys what the screenshots show: the fixed demo
// keys and nothing else (the static key of bootstrap/demo.sh stays).
func demoKeys(t *testing.T, e *webEnv) *shotData {
	t.Helper()
	admin := login(t, e.srv, "platform-admin")
	s, err := admin.Logical().List("apikeys/tenants/acme/keys/")
	if err != nil {
		t.Fatal(err)
	}
	if s != nil {
		info, _ := s.Data["key_info"].(map[string]interface{})
		for _, id := range stringList(s.Data["keys"]) {
			if m, _ := info[id].(map[string]interface{}); str(m, "kind") == "static" {
				continue
			}
			if _, err := admin.Logical().Delete("apikeys/tenants/acme/keys/" + id); err != nil {
				t.Fatal(err)
			}
		}
	}
	d := &shotData{keys: map[string]string{}}
	for _, k := range []struct{ role, name, status string }{
		{"web", "checkout-service", ""},
		{"web", "mobile-app", "disabled"},
		{"dev-sandbox", "local-dev", ""},
	} {
		s, err := admin.Logical().Write("apikeys/tenants/acme/creds/"+k.role, map[string]interface{}{"name": k.name, "ttl": "8h"})
		if err != nil {
			t.Fatal(err)
		}
		id := str(s.Data, "key_id")
		d.keys[k.name] = str(s.Data, "api_key")
		if k.status != "" {
			if _, err := admin.Logical().Write("apikeys/tenants/acme/keys/"+id, map[string]interface{}{"status": k.status}); err != nil {
				t.Fatal(err)
			}
		}
		if k.name == "checkout-service" {
			d.keyID = id
		}
		t.Cleanup(func() { _, _ = admin.Logical().Delete("apikeys/tenants/acme/keys/" + id) })
	}
	return d
}

// maskJS makes a page the same on every run: times, ids, hints and the
// issued key are replaced by fixed demo values, and the keys table is in
// name order (Vault lists keys by their random ids).
const maskJS = `(() => {
	const tb = document.querySelector("table.keys tbody");
	if (tb) [...tb.rows].sort((a, b) => a.cells[1].innerText.localeCompare(b.cells[1].innerText)).forEach(r => tb.appendChild(r));
	const hints = new Map();
	const subs = [
		[/\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/g, () => "2025-06-02 09:30 UTC"],
		[/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, () => "5f0c2a9e-1d3b-4c6a-9e8f-7b2d1a0c3e4f"],
	];
	const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
	for (let n; (n = w.nextNode());) {
		let v = n.nodeValue;
		for (const [re, f] of subs) v = v.replace(re, f);
		n.nodeValue = v;
	}
	// Hints: each distinct hint becomes a fixed one, in page order.
	document.querySelectorAll("main code").forEach(c => {
		const h = c.textContent;
		if (!/[_-]/.test(h) || /^[0-9a-f-]{36}$/.test(h)) return;
		const m = h.match(/^(.*_)[^_…]+…[^…]+$/);
		if (!m) return;
		const fixed = ["k2Vd…7Qx2", "Hq8L…K9mB", "r5Nc…d4Tz", "Ye3W…Wp3s", "b7Ja…8hLc"];
		if (!hints.has(h)) hints.set(h, m[1] + fixed[hints.size % fixed.length]);
		c.textContent = hints.get(h);
	});
	document.querySelectorAll("input.key").forEach(i => {
		i.value = i.value.replace(/[A-Za-z0-9]{20,}/, m => "D3m0".repeat(Math.ceil(m.length / 4)).slice(0, m.length));
	});
	return true;
})()`

// shotsDir is where the pictures go: docs/portal when PORTAL_SCREENSHOTS=docs
// (make screenshots), else a temporary folder, so that make test checks
// every picture can be taken without rewriting the committed ones (the
// usage charts' axes show the day they were taken).
func shotsDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("PORTAL_SCREENSHOTS") != "docs" {
		return t.TempDir()
	}
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "docs", "portal")
}

// TestBrowserScreenshots takes a picture of every row of shots, at the fixed
// viewports of scripts/browser, from fixed demo data (into docs/portal
// with PORTAL_SCREENSHOTS=docs: make screenshots).
func TestBrowserScreenshots(t *testing.T) {
	e := webTest(t)
	d := demoKeys(t, e)
	demoUsage(t, e, d)
	dir := shotsDir(t)
	for _, s := range shots {
		t.Run(s.name, func(t *testing.T) {
			opts := chromium.PageOptions{}
			if s.phone {
				opts.Viewport = chromium.Phone
			}
			p := e.page(t, opts)
			if s.user != "" {
				e.signIn(t, p, s.user)
			}
			if s.user == "platform-admin" {
				// The picker with acme chosen.
				submit(t, p, `form[action="/tenant"]`, map[string]string{"tenant": "acme"})
			}
			e.goTo(t, p, strings.ReplaceAll(s.path, "{key}", d.keyID))
			if s.then != nil {
				s.then(t, e, p, d)
			}
			if !eval[bool](t, p, maskJS) {
				t.Fatal("mask")
			}
			// Blur: no focus ring in the picture.
			if _, err := p.Eval(`document.activeElement && document.activeElement.blur(), true`); err != nil {
				t.Fatal(err)
			}
			path, w, h, err := p.Screenshot(dir, s.name)
			if err != nil {
				t.Fatal(err)
			}
			want := int(chromium.Desktop.Width)
			if s.phone {
				want = int(float64(chromium.Phone.Width) * chromium.Phone.Scale)
			}
			if w != want || h < 200 {
				t.Fatalf("%s: %dx%d", path, w, h)
			}
			wantClean(t, p, s.name)
		})
	}
}

var docShotRE = regexp.MustCompile(`\(portal/([a-z0-9-]+)\.png\)`)

// TestPortalDocScreenshots keeps docs/portal.md telling the truth: every
// picture it embeds is one TestBrowserScreenshots takes (and is on disk),
// every picture taken is embedded, and every page the nav can offer, and
// every nav-less page in shotPagesNotInNav, has a picture.
func TestPortalDocScreenshots(t *testing.T) {
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "portal.md"))
	if err != nil {
		t.Fatal(err)
	}
	taken := map[string]shot{}
	shotPaths := map[string]bool{}
	for _, s := range shots {
		taken[s.name] = s
		p, _, _ := strings.Cut(s.path, "?")
		shotPaths[p] = true
	}
	embedded := map[string]bool{}
	for _, m := range docShotRE.FindAllStringSubmatch(string(doc), -1) {
		embedded[m[1]] = true
		if _, ok := taken[m[1]]; !ok {
			t.Errorf("docs/portal.md embeds portal/%s.png, which no row of shots takes", m[1])
		}
		if _, err := os.Stat(filepath.Join(root, "docs", "portal", m[1]+".png")); err != nil {
			t.Errorf("docs/portal.md embeds portal/%s.png: %v (run go test ./backend/portal -run TestBrowserScreenshots)", m[1], err)
		}
	}
	for name := range taken {
		if !embedded[name] {
			t.Errorf("docs/portal.md does not embed portal/%s.png", name)
		}
	}
	var navHrefs []string
	for _, pg := range pages {
		if pg.nav != nil {
			navHrefs = append(navHrefs, pg.nav.href)
		}
	}
	sort.Strings(navHrefs)
	for _, href := range append(navHrefs, shotPagesNotInNav...) {
		if !shotPaths[href] {
			t.Errorf("the page %s has no screenshot: add a row to shots (screenshots_browser_test.go) and embed it in docs/portal.md", href)
		}
	}
	if len(navHrefs) < 3 {
		t.Fatalf("only %d nav pages registered: %v", len(navHrefs), navHrefs)
	}
}

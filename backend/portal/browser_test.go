package portal

import (
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	chromium "github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/browser"
)

// The browser tests: a real headless Chromium (scripts/browser) against the
// portal over a real Vault with the bootstrap policies (env_browser_test.go).
// They show issue 17's "Must show" the way a person meets it: clicks,
// forms, what the page renders, what Vault then answers.

// wantClean fails on CSP violations and console errors of the page so far.
func wantClean(t *testing.T, p *chromium.Page, what string) {
	t.Helper()
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if v := p.CSPViolations(); len(v) > 0 {
		t.Errorf("%s: CSP violations: %v", what, v)
	}
	for _, m := range p.ConsoleErrors() {
		// A refusal's status is logged as a failed load of the document:
		// the tests check those statuses themselves. A failed load of an
		// asset (/static/...) still counts.
		if m.Kind == "log" && m.Source == "network" && !strings.Contains(m.URL, "/static/") &&
			strings.Contains(m.Text, "responded with a status of 4") {
			continue
		}
		t.Errorf("%s: console error: %v", what, m)
	}
}

// wantPlainRefusal: a 4xx page with a heading and a plain message, no
// trace of the portal's insides.
func wantPlainRefusal(t *testing.T, p *chromium.Page, what string, status int) {
	t.Helper()
	if status < 400 || status >= 500 {
		t.Errorf("%s: want a refusal (4xx), got HTTP %d: %q", what, status, bodyText(t, p))
		return
	}
	if count(t, p, "main h1") != 1 || count(t, p, "main p.message") != 1 {
		t.Errorf("%s: HTTP %d is not the plain message page: %q", what, status, bodyText(t, p))
	}
	body := bodyText(t, p)
	for _, s := range []string{"goroutine", "panic", ".go:", "runtime.", "stack", "hvs."} {
		if strings.Contains(body, s) {
			t.Errorf("%s: the refusal shows %q: %q", what, s, body)
		}
	}
}

// signInOIDC clicks through the OIDC sign-in as the identity subject.
func (e *webEnv) signInOIDC(t *testing.T, p *chromium.Page, subject string) {
	t.Helper()
	e.goTo(t, p, "/signin")
	if got := text(t, p, "#oidc"); !strings.Contains(got, "identity provider") {
		t.Fatalf("OIDC button: %q", got)
	}
	if status, err := p.ClickNav("#oidc"); err != nil || status != http.StatusOK {
		t.Fatalf("to the identity provider: HTTP %d, %v", status, err)
	}
	if u, _ := p.URL(); !strings.HasPrefix(u, e.idpURL+"/authorize") {
		t.Fatalf("the OIDC button led to %s, not the identity provider %s", u, e.idpURL)
	}
	if status, err := p.ClickNav(`button[name="identity"][value="` + subject + `"]`); err != nil || status != http.StatusOK {
		t.Fatalf("sign in at the identity provider as %s: HTTP %d, %v", subject, status, err)
	}
	if got := e.path(t, p); !strings.HasPrefix(got, "/auth/oidc/callback") {
		t.Fatalf("the identity provider sent the browser to %s", got)
	}
	if status, err := p.ClickNav("#continue"); err != nil || status != http.StatusOK {
		t.Fatalf("continue to the portal: HTTP %d, %v", status, err)
	}
}

// TestBrowserSignIn: acme's tenant admin signs in with userpass and, in
// another browser, with OIDC through the stand-in identity provider; both
// land on acme's keys, with a session cookie JavaScript cannot read.
func TestBrowserSignIn(t *testing.T) {
	e := webTest(t)
	for _, how := range []string{"userpass", "oidc"} {
		t.Run(how, func(t *testing.T) {
			p := e.page(t, chromium.PageOptions{})
			if how == "userpass" {
				e.signIn(t, p, "acme-admin")
			} else {
				e.signInOIDC(t, p, "acme-admin")
			}
			if got := e.path(t, p); got != "/keys" {
				t.Fatalf("signed in at %s, want /keys", got)
			}
			if h := text(t, p, "main h1"); h != "Keys of acme" {
				t.Fatalf("heading %q", h)
			}
			if who := text(t, p, ".who"); !strings.Contains(who, "tenant acme") {
				t.Fatalf("header %q does not say tenant acme", who)
			}
			cookies, err := p.Cookies()
			if err != nil {
				t.Fatal(err)
			}
			var sess bool
			for _, c := range cookies {
				if c.Name == sessionCookie {
					sess = true
					if !c.HTTPOnly || c.SameSite != "Strict" || c.Path != "/" {
						t.Errorf("session cookie flags: HttpOnly %v SameSite %q Path %q", c.HTTPOnly, c.SameSite, c.Path)
					}
				}
			}
			if !sess {
				t.Fatal("no session cookie")
			}
			if jsCookies := eval[string](t, p, "document.cookie"); strings.Contains(jsCookies, sessionCookie) {
				t.Fatalf("JavaScript reads the session cookie: %q", jsCookies)
			}
			if how == "oidc" {
				// The session's token is an OIDC token of acme's admin.
				c, _ := e.srv.Client.Clone()
				c.SetToken(e.sessionToken(t, p))
				self, err := c.Auth().Token().LookupSelf()
				if err != nil {
					t.Fatal(err)
				}
				if p := str(self.Data, "path"); !strings.HasPrefix(p, "auth/oidc/") {
					t.Fatalf("the session's token came from %s, not the oidc mount", p)
				}
			}
			wantClean(t, p, how+" sign-in")
		})
	}
}

// sessionToken is the Vault token of the page's server-side session.
func (e *webEnv) sessionToken(t *testing.T, p *chromium.Page) string {
	t.Helper()
	cookies, err := p.Cookies()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies {
		if c.Name == sessionCookie {
			if ss, ok := e.portal.sessions.get(c.Value); ok {
				return ss.token
			}
		}
	}
	t.Fatal("the page has no live session")
	return ""
}

// issueFromPage issues a key of role through the issue pages and returns
// the key and its id, as the issued page shows them.
func (e *webEnv) issueFromPage(t *testing.T, p *chromium.Page, role, name string) (key, id string) {
	t.Helper()
	e.goTo(t, p, "/keys")
	if status, err := p.ClickNav(`main a.button[href="/issue"]`); err != nil || status != http.StatusOK {
		t.Fatalf("issue link: HTTP %d, %v", status, err)
	}
	if status, err := p.ClickNav(`main a[href="/issue?role=` + role + `"]`); err != nil || status != http.StatusOK {
		t.Fatalf("role %s: HTTP %d, %v", role, status, err)
	}
	if status := submit(t, p, `form[action="/issue"]`, map[string]string{"name": name, "ttl": "2h"}); status != http.StatusOK {
		t.Fatalf("issue: HTTP %d: %q", status, bodyText(t, p))
	}
	if h := text(t, p, "main h1"); h != "Your new key" {
		t.Fatalf("issued page: %q", bodyText(t, p))
	}
	if w := text(t, p, ".warning"); !strings.Contains(w, "only time it is shown") {
		t.Fatalf("no once-only warning: %q", w)
	}
	key = eval[string](t, p, `document.getElementById("api-key").value`)
	href, ok, err := p.Attr(`main a[href^="/keys/"]`, "href")
	if err != nil || !ok {
		t.Fatalf("no key details link: %v", err)
	}
	id = strings.TrimPrefix(href, "/keys/")
	if key == "" || !keyIDRE.MatchString(id) {
		t.Fatalf("issued page: key %d chars, id %q", len(key), id)
	}
	return key, id
}

// TestBrowserKeyLifecycle: acme's admin issues a key and reads it once
// from the page and through the copy button; Vault verifies it; disabled
// from the key page it verifies DISABLED, revoked through the confirmation
// NOT_FOUND; the issued page, reloaded or gone back to, does not show the
// key again.
func TestBrowserKeyLifecycle(t *testing.T) {
	e := webTest(t)
	p := e.page(t, chromium.PageOptions{})
	e.signIn(t, p, "acme-admin")
	key, id := e.issueFromPage(t, p, "web", "browser lifecycle")
	wantClean(t, p, "issued page")

	// The copy button (shown only with JavaScript) puts the key on the
	// clipboard.
	if hidden := eval[bool](t, p, `document.querySelector("button[data-copy]").hidden`); hidden {
		t.Fatal("the copy button stays hidden with JavaScript on")
	}
	if err := p.Click("button[data-copy]"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitVisible(`button[data-copy]`); err != nil {
		t.Fatal(err)
	}
	clip, err := p.Clipboard()
	if err != nil {
		t.Fatal(err)
	}
	if clip != key {
		t.Fatalf("clipboard holds %d chars, not the key", len(clip))
	}
	if got := text(t, p, "button[data-copy]"); got != "Copied" {
		t.Fatalf("copy button says %q", got)
	}
	v := wantCode(t, e.srv, key, "VALID")
	if str(v.Data, "key_id") != id || str(v.Data, "tenant") != "acme" {
		t.Fatalf("verify: %v", v.Data)
	}

	// Reloading the issued page does not show the key again (no-store: the
	// browser has no copy, and the portal none to give).
	if _, err := p.Eval(`location.reload(), true`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitVisible("body"); err != nil {
		t.Fatal(err)
	}
	if html, err := p.HTML("html"); err != nil || strings.Contains(html, key) {
		t.Fatalf("the reloaded issued page shows the key again (err %v)", err)
	}
	e.goTo(t, p, "/keys/"+id)
	if _, err := p.Eval(`history.back(), true`); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitVisible("body"); err != nil {
		t.Fatal(err)
	}
	if html, err := p.HTML("html"); err != nil || strings.Contains(html, key) {
		t.Fatalf("going back shows the key again (err %v)", err)
	}

	// Disable from the key page.
	e.goTo(t, p, "/keys")
	if status, err := p.ClickNav(`a[href="/keys/` + id + `"]`); err != nil || status != http.StatusOK {
		t.Fatalf("key link: HTTP %d, %v", status, err)
	}
	if html, _ := p.HTML("html"); strings.Contains(html, key) {
		t.Fatal("the key page shows the key")
	}
	if status := submit(t, p, `form[action="/keys/`+id+`/status"]`, nil); status != http.StatusOK {
		t.Fatalf("disable: HTTP %d", status)
	}
	if f := text(t, p, ".flash"); !strings.Contains(f, "Key disabled") {
		t.Fatalf("flash %q", f)
	}
	if st := text(t, p, ".status"); st != "disabled" {
		t.Fatalf("status shown %q", st)
	}
	wantCode(t, e.srv, key, "DISABLED")

	// Revoke, through the confirmation.
	if status, err := p.ClickNav(`a.button.danger[href="/keys/` + id + `/revoke"]`); err != nil || status != http.StatusOK {
		t.Fatalf("revoke link: HTTP %d, %v", status, err)
	}
	if w := text(t, p, ".warning"); !strings.Contains(w, "cannot be undone") {
		t.Fatalf("confirmation %q", w)
	}
	wantCode(t, e.srv, key, "DISABLED")
	if status := submit(t, p, `form[action="/keys/`+id+`/revoke"]`, nil); status != http.StatusOK {
		t.Fatalf("revoke: HTTP %d", status)
	}
	if f := text(t, p, ".flash"); !strings.Contains(f, "Key revoked") {
		t.Fatalf("flash %q", f)
	}
	if e.path(t, p) != "/keys" || count(t, p, `a[href="/keys/`+id+`"]`) != 0 {
		t.Fatal("the revoked key is still listed")
	}
	wantCode(t, e.srv, key, "NOT_FOUND")
	wantClean(t, p, "lifecycle")
}

// TestBrowserDeveloperNotOfferedRoles: acme's developer has no Roles in the
// nav, and the roles URL answers the plain 403 message.
func TestBrowserDeveloperNotOfferedRoles(t *testing.T) {
	e := webTest(t)
	p := e.page(t, chromium.PageOptions{})
	e.signIn(t, p, "acme-dev")
	nav := text(t, p, "header nav")
	if !strings.Contains(nav, "Keys") || strings.Contains(nav, "Roles") {
		t.Fatalf("developer's nav: %q", nav)
	}
	if n := count(t, p, `a[href="/roles"]`); n != 0 {
		t.Fatalf("%d links to /roles", n)
	}
	status := e.goTo(t, p, "/roles")
	if status != http.StatusForbidden {
		t.Fatalf("/roles: HTTP %d", status)
	}
	wantPlainRefusal(t, p, "developer's /roles", status)
	if h := text(t, p, "main h1"); h != "Permission denied" {
		t.Fatalf("heading %q", h)
	}
	if body := bodyText(t, p); strings.Contains(body, "dev-sandbox") || strings.Contains(body, "Environment") {
		t.Fatalf("the refusal shows role data: %q", body)
	}
	wantClean(t, p, "developer's /roles")
}

// A globex key, role and secret names that acme must never see.
type globexData struct {
	key, id string
	leaks   []string
}

func newGlobexData(t *testing.T, e *webEnv) globexData {
	t.Helper()
	admin := login(t, e.srv, "platform-admin")
	role := "globex-only-role"
	if _, err := admin.Logical().Write("apikeys/tenants/globex/roles/"+role, map[string]interface{}{"scopes": "globex-scope", "environment": "live", "ttl": "1h"}); err != nil {
		t.Fatal(err)
	}
	g, err := admin.Logical().Write("apikeys/tenants/globex/creds/"+role, map[string]interface{}{"name": "globex-private-key"})
	if err != nil {
		t.Fatal(err)
	}
	d := globexData{key: str(g.Data, "api_key"), id: str(g.Data, "key_id")}
	t.Cleanup(func() {
		_, _ = admin.Logical().Delete("apikeys/tenants/globex/keys/" + d.id)
		_, _ = admin.Logical().Delete("apikeys/tenants/globex/roles/" + role)
	})
	// What acme's admin could not know, so could not have echoed back: the
	// key's name, hint and secret, the role's scope, the display name. (The
	// key id and role name are what the test sends; a page may echo them,
	// e.g. in the filter's input, without telling anything of globex.)
	d.leaks = []string{"globex-private-key", d.key, str(g.Data, "hint"), "globex-scope", "Globex Corporation", "Globex"}
	return d
}

var wildcardRE = regexp.MustCompile(`\{([a-z_]+)\$?\}`)

// portalRoutes are the method and pattern of every route the portal
// registers: the fixed ones of routes() and each page's.
func portalRoutes() []string {
	out := []string{"GET /signin", "POST /signin/userpass", "GET /auth/oidc/start", "GET /auth/oidc/callback", "GET /healthz"}
	for _, pg := range pages {
		for pattern := range pg.routes {
			out = append(out, pattern)
		}
	}
	sort.Strings(out)
	return out
}

// TestBrowserNoOtherTenantData: acme's admin, in the browser, gets nothing
// of globex by any URL the test can craft: every GET route the portal
// registers, with each path wildcard filled in with globex's key id, role
// and tenant name and with tenant=globex (and the other names) in the
// query; every POST route the same, with the page's valid CSRF token. Each
// answer is acme's own page or a plain refusal, and no globex value shows.
func TestBrowserNoOtherTenantData(t *testing.T) {
	e := webTest(t)
	g := newGlobexData(t, e)
	p := e.page(t, chromium.PageOptions{})
	e.signIn(t, p, "acme-admin")

	fills := []string{g.id, "globex-only-role", "globex", "web"}
	queries := []string{"", "?tenant=globex", "?tenant=globex&role=globex-only-role&name=globex&key_id=" + g.id, "?after=" + g.id}
	leakCheck := func(what string, status int) {
		t.Helper()
		html, err := p.HTML("html")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range g.leaks {
			if l != "" && strings.Contains(html, l) {
				t.Errorf("%s shows globex's %q", what, l)
			}
		}
		if status >= 500 {
			t.Errorf("%s: HTTP %d", what, status)
			return
		}
		if status >= 400 {
			wantPlainRefusal(t, p, what, status)
			return
		}
		// A 200 is acme's own page (a query's tenant is ignored).
		if count(t, p, ".who") != 1 {
			t.Errorf("%s: HTTP %d, not a signed-in page: %q", what, status, bodyText(t, p))
		} else if who := text(t, p, ".who"); !strings.Contains(who, "tenant acme") {
			t.Errorf("%s: HTTP %d, header %q", what, status, who)
		}
	}
	walked := 0
	for _, route := range portalRoutes() {
		method, pattern, _ := strings.Cut(route, " ")
		if strings.HasPrefix(pattern, "/auth/") || pattern == "/signin/userpass" || pattern == "/signin" || pattern == "/signout" || pattern == "/healthz" || strings.HasPrefix(pattern, "/static/") {
			continue // sign-in and sign-out: no tenant's data
		}
		var paths []string
		if wildcardRE.MatchString(pattern) {
			for _, f := range fills {
				paths = append(paths, wildcardRE.ReplaceAllString(pattern, f))
			}
		} else {
			paths = []string{strings.TrimSuffix(pattern, "{$}")}
		}
		for _, path := range paths {
			if method == http.MethodGet {
				for _, q := range queries {
					status, err := p.Goto(e.url+path+q, "body")
					if err != nil {
						t.Fatal(err)
					}
					leakCheck("GET "+path+q, status)
					walked++
				}
				continue
			}
			e.goTo(t, p, "/keys")
			status := forgePost(t, p, path, map[string]string{
				"tenant": "globex", "key_id": g.id, "role": "globex-only-role", "status": "disabled", "name": "globex",
			}, "")
			leakCheck("POST "+path, status)
			walked++
		}
	}
	if walked < 30 {
		t.Fatalf("walked only %d requests", walked)
	}
	// Nothing changed at globex, and acme's session is still acme's.
	wantCode(t, e.srv, g.key, "VALID")
	e.goTo(t, p, "/keys")
	if h := text(t, p, "main h1"); h != "Keys of acme" {
		t.Fatalf("after the walk: %q", h)
	}
	wantClean(t, p, "globex walk")
}

// TestBrowserCSRFRefused: each state change of the pages, posted from the
// signed-in browser without the CSRF token or with a wrong one, is a 403
// and changes nothing.
func TestBrowserCSRFRefused(t *testing.T) {
	e := webTest(t)
	p := e.page(t, chromium.PageOptions{})
	e.signIn(t, p, "acme-admin")
	key, id := e.issueFromPage(t, p, "web", "csrf target")
	acmeKeys := func() int {
		t.Helper()
		c, _ := e.srv.Client.Clone()
		c.SetToken(e.sessionToken(t, p))
		s, err := c.Logical().List("apikeys/tenants/acme/keys/")
		if err != nil || s == nil {
			t.Fatalf("list acme's keys: %v", err)
		}
		return len(stringList(s.Data["keys"]))
	}
	before := acmeKeys()
	for _, tc := range []struct {
		action string
		fields map[string]string
	}{
		{"/keys/" + id + "/status", map[string]string{"status": "disabled"}},
		{"/keys/" + id + "/revoke", nil},
		{"/issue", map[string]string{"role": "web", "name": "forged"}},
		{"/signout", nil},
		{"/tenant", map[string]string{"tenant": "globex"}},
	} {
		for _, csrf := range []string{"-", "forged-token"} {
			e.goTo(t, p, "/keys/"+id)
			status := forgePost(t, p, tc.action, tc.fields, csrf)
			if status != http.StatusForbidden {
				t.Errorf("POST %s with csrf %q: HTTP %d", tc.action, csrf, status)
			}
			if h := text(t, p, "main h1"); h != "Request refused" {
				t.Errorf("POST %s with csrf %q: %q", tc.action, csrf, bodyText(t, p))
			}
		}
	}
	// Nothing changed: the key verifies, no key was issued, the session is
	// alive and still acme's.
	wantCode(t, e.srv, key, "VALID")
	if n := acmeKeys(); n != before {
		t.Fatalf("acme had %d keys, now %d", before, n)
	}
	e.goTo(t, p, "/keys/"+id)
	if st := text(t, p, ".status"); st != "active" {
		t.Fatalf("key status %q", st)
	}
	if who := text(t, p, ".who"); !strings.Contains(who, "tenant acme") {
		t.Fatalf("header %q", who)
	}
	// The real form, with its token, works.
	if status := submit(t, p, `form[action="/keys/`+id+`/status"]`, nil); status != http.StatusOK {
		t.Fatalf("disable with the token: HTTP %d", status)
	}
	wantCode(t, e.srv, key, "DISABLED")
	admin := login(t, e.srv, "platform-admin")
	_, _ = admin.Logical().Delete("apikeys/tenants/acme/keys/" + id)
}

const markup = `<img src=x onerror=alert(1)><script>alert(2)</script>`

// wantMarkupAsText: the page shows s literally in its text, and no element
// came of it: no img, no script but the portal's own copy.js.
func wantMarkupAsText(t *testing.T, p *chromium.Page, what, s string, mustShow bool) {
	t.Helper()
	body := bodyText(t, p)
	if mustShow && !strings.Contains(body, s) {
		t.Errorf("%s: the text does not show %q: %q", what, s, body)
	}
	if n := count(t, p, "img"); n != 0 {
		t.Errorf("%s: %d img elements", what, n)
	}
	if n := count(t, p, "script"); n != 1 || count(t, p, `script[src="/static/copy.js"]`) != 1 {
		t.Errorf("%s: %d script elements", what, n)
	}
	// An alert would have blocked the page: this evaluation answers only
	// when no dialog is open.
	if title := eval[string](t, p, "document.title"); title == "" {
		t.Errorf("%s: no title", what)
	}
	wantClean(t, p, what)
}

// TestBrowserMarkupShownAsText: a key name and a tenant display name with
// markup are shown as text, with scripts on, on every page that shows them.
func TestBrowserMarkupShownAsText(t *testing.T) {
	e := webTest(t)
	t.Run("key name", func(t *testing.T) {
		p := e.page(t, chromium.PageOptions{})
		e.signIn(t, p, "acme-admin")
		_, id := e.issueFromPage(t, p, "web", markup)
		t.Cleanup(func() { _, _ = login(t, e.srv, "platform-admin").Logical().Delete("apikeys/tenants/acme/keys/" + id) })
		wantMarkupAsText(t, p, "issued page", markup, true)
		for _, path := range []string{"/keys", "/keys?name=" + url.QueryEscape("<img"), "/keys/" + id, "/keys/" + id + "/revoke"} {
			e.goTo(t, p, path)
			wantMarkupAsText(t, p, path, markup, true)
		}
	})
	t.Run("tenant display name", func(t *testing.T) {
		admin := login(t, e.srv, "platform-admin")
		if _, err := admin.Logical().Write("apikeys/tenants/markup", map[string]interface{}{"display_name": markup}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Logical().Write("apikeys/tenants/markup/roles/web", map[string]interface{}{"scopes": "read", "environment": "live", "ttl": "1h"}); err != nil {
			t.Fatal(err)
		}
		iss, err := admin.Logical().Write("apikeys/tenants/markup/creds/web", map[string]interface{}{"name": markup})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = admin.Logical().Delete("apikeys/tenants/markup/keys/" + str(iss.Data, "key_id"))
			_, _ = admin.Logical().Delete("apikeys/tenants/markup/roles/web")
			_, _ = admin.Logical().Delete("apikeys/tenants/markup")
		})
		p := e.page(t, chromium.PageOptions{})
		e.signIn(t, p, "platform-admin")
		if status := submit(t, p, `form[action="/tenant"]`, map[string]string{"tenant": "markup"}); status != http.StatusOK {
			t.Fatalf("pick tenant markup: HTTP %d", status)
		}
		// Every page a platform admin is offered, and the key's: the
		// display name must be text wherever it is shown (the key's name
		// is shown on its pages for sure).
		paths := []string{"/tenants", "/keys/" + str(iss.Data, "key_id")}
		paths = append(paths, navLinks(t, p)...)
		shown := 0
		for _, path := range paths {
			e.goTo(t, p, path)
			raw, err := p.HTML("main")
			if err != nil {
				t.Fatal(err)
			}
			// html/template writes the markup escaped; the page shows it
			// wherever that is in the HTML.
			escaped := strings.Contains(raw, "&lt;img src=x onerror=alert(1)&gt;")
			if escaped {
				shown++
			}
			wantMarkupAsText(t, p, "platform admin "+path, markup, escaped)
			if strings.Contains(raw, "<img") {
				t.Errorf("%s: raw markup in the HTML", path)
			}
		}
		if shown == 0 {
			t.Fatal("no page showed the markup at all")
		}
		// The tenant's own admin page shows its display name for sure.
		e.goTo(t, p, "/admin/tenants/markup")
		wantMarkupAsText(t, p, "/admin/tenants/markup", markup, true)
	})
}

// navLinks are the hrefs of the page's main nav.
func navLinks(t *testing.T, p *chromium.Page) []string {
	t.Helper()
	return eval[[]string](t, p, `Array.from(document.querySelectorAll("header nav a"), a => a.getAttribute("href"))`)
}

// TestBrowserWithoutJavaScript: the issue flow, with scripts off: the key
// is on the page (selectable), the copy button stays hidden, and Vault
// verifies the key.
func TestBrowserWithoutJavaScript(t *testing.T) {
	e := webTest(t)
	p := e.page(t, chromium.PageOptions{NoJavaScript: true})
	e.signIn(t, p, "acme-admin")
	key, id := e.issueFromPage(t, p, "web", "no javascript")
	if hidden := eval[bool](t, p, `document.querySelector("button[data-copy]").hidden`); !hidden {
		t.Fatal("the copy button shows without JavaScript")
	}
	wantCode(t, e.srv, key, "VALID")
	e.goTo(t, p, "/keys/"+id)
	submit(t, p, `form[action="/keys/`+id+`/status"]`, nil)
	wantCode(t, e.srv, key, "DISABLED")
	if _, err := p.ClickNav(`a[href="/keys/` + id + `/revoke"]`); err != nil {
		t.Fatal(err)
	}
	submit(t, p, `form[action="/keys/`+id+`/revoke"]`, nil)
	wantCode(t, e.srv, key, "NOT_FOUND")
	wantClean(t, p, "without JavaScript")
}

// tourPages are the pages of acme's admin that the CSP, phone-width and
// keyboard checks visit; the nav's own links are added to them.
func (e *webEnv) tourPages(t *testing.T, p *chromium.Page, id string) []string {
	t.Helper()
	paths := []string{"/keys", "/keys?status=active&name=a", "/keys/" + id, "/keys/" + id + "/revoke", "/issue", "/issue?role=web"}
	e.goTo(t, p, "/keys")
	for _, l := range navLinks(t, p) {
		if !contains(paths, l) {
			paths = append(paths, l)
		}
	}
	return paths
}

// TestBrowserCSPAndPhoneWidth: no page breaks the CSP or logs an error,
// and at phone width no page's body is wider than the screen.
func TestBrowserCSPAndPhoneWidth(t *testing.T) {
	e := webTest(t)
	admin := login(t, e.srv, "platform-admin")
	s, err := admin.Logical().Write("apikeys/tenants/acme/creds/web", map[string]interface{}{"name": "a tour key with a rather long name that must wrap on a phone"})
	if err != nil {
		t.Fatal(err)
	}
	id := str(s.Data, "key_id")
	t.Cleanup(func() { _, _ = admin.Logical().Delete("apikeys/tenants/acme/keys/" + id) })
	for _, vp := range []struct {
		name string
		vp   chromium.Viewport
	}{{"desktop", chromium.Desktop}, {"phone", chromium.Phone}} {
		t.Run(vp.name, func(t *testing.T) {
			p := e.page(t, chromium.PageOptions{Viewport: vp.vp})
			e.goTo(t, p, "/signin")
			wantFits(t, p, vp.name+" /signin")
			wantClean(t, p, "/signin")
			e.signIn(t, p, "acme-admin")
			for _, path := range e.tourPages(t, p, id) {
				if status := e.goTo(t, p, path); status != http.StatusOK {
					t.Errorf("%s: HTTP %d", path, status)
				}
				wantFits(t, p, vp.name+" "+path)
				wantClean(t, p, vp.name+" "+path)
			}
			// The issued page, too.
			e.goTo(t, p, "/issue?role=web")
			submit(t, p, `form[action="/issue"]`, map[string]string{"name": "phone check"})
			wantFits(t, p, vp.name+" issued page")
			wantClean(t, p, vp.name+" issued page")
			issued, _, _ := p.Attr(`main a[href^="/keys/"]`, "href")
			_, _ = admin.Logical().Delete("apikeys/tenants/acme" + issued)
		})
	}
}

// wantFits: the page is no wider than the viewport (no horizontal
// scrolling of the body).
func wantFits(t *testing.T, p *chromium.Page, what string) {
	t.Helper()
	w := eval[[2]int](t, p, `[document.documentElement.scrollWidth, window.innerWidth]`)
	if w[0] > w[1] {
		t.Errorf("%s: the page is %d px wide in a %d px viewport", what, w[0], w[1])
	}
}

// TestBrowserKeyboard: Tab alone reaches the nav and the main controls of
// the keys page and of the issue form.
func TestBrowserKeyboard(t *testing.T) {
	e := webTest(t)
	p := e.page(t, chromium.PageOptions{})
	e.signIn(t, p, "acme-admin")
	reach := func(path string, want []string) {
		t.Helper()
		e.goTo(t, p, path)
		got := map[string]bool{}
		var seen []string
		for i := 0; i < 60 && len(got) < len(want); i++ {
			f, err := p.Tab(1)
			if err != nil {
				t.Fatal(err)
			}
			d := f.Tag
			switch {
			case strings.HasSuffix(f.Href, "#main"):
				d = "a #main"
			case f.Href != "":
				d = "a " + strings.TrimPrefix(f.Href, e.url)
			case f.ID != "":
				d = f.Tag + "#" + f.ID
			case f.Tag == "button":
				d = "button " + f.Text
			case f.Name != "":
				d = f.Tag + "[" + f.Name + "]"
			}
			seen = append(seen, d)
			if contains(want, d) {
				got[d] = true
			}
		}
		for _, w := range want {
			if !got[w] {
				t.Errorf("%s: Tab never reached %s; it reached %v", path, w, seen)
			}
		}
	}
	reach("/keys", []string{"a #main", "a /keys", "a /issue", "a /roles", "button Sign out", "select#f-status", "input#f-role", "input#f-name", "button Filter"})
	reach("/issue?role=web", []string{"a /keys", "input#name", "input#ttl", "input[scopes]", "button Issue the key"})
}

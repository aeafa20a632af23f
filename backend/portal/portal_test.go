package portal

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

var (
	issuedKeyRE = regexp.MustCompile(`id="api-key" class="key" readonly value="([^"]+)"`)
	keyLinkRE   = regexp.MustCompile(`href="/keys/([0-9a-f-]{36})"`)
)

// verify asks Vault (as root: verify is no tenant path) what a key answers.
func verify(t *testing.T, srv *testvault.Server, key string) *api.Secret {
	t.Helper()
	s, err := srv.Client.Logical().Write("apikeys/verify", map[string]interface{}{"api_key": key})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return s
}

func wantCode(t *testing.T, srv *testvault.Server, key, code string) *api.Secret {
	t.Helper()
	s := verify(t, srv, key)
	if got := str(s.Data, "code"); got != code {
		t.Fatalf("verify: want %s, got %s (%v)", code, got, s.Data)
	}
	return s
}

func wantSecurityHeaders(t *testing.T, p webPage) {
	t.Helper()
	csp := p.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q allows unsafe code", csp)
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
		if got := p.header.Get(h); got != want {
			t.Errorf("%s: want %q, got %q", h, want, got)
		}
	}
}

// sessionOf is the server-side session of a browser.
func sessionOf(t *testing.T, tp *testPortal, b *browser) *session {
	t.Helper()
	u, _ := url.Parse(tp.url)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == sessionCookie {
			if ss, ok := tp.sessions.get(c.Value); ok {
				return ss
			}
		}
	}
	t.Fatal("the browser has no live session")
	return nil
}

// TestPortalTenantAdminKeyLifecycle: acme's tenant admin signs in, issues a
// key (a name with markup), reads it once, and disables and revokes it from
// the pages, with Vault's verify answering at each step.
func TestPortalTenantAdminKeyLifecycle(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)

	// The sign-in form is CSRF-protected before there is a session.
	b.get("/signin")
	b.post("/signin/userpass", url.Values{"username": {"acme-admin"}, "password": {demo["acme-admin"]}}).
		want(t, http.StatusForbidden, "Request refused")
	b.post("/signin/userpass", url.Values{"csrf": {"forged"}, "username": {"acme-admin"}, "password": {demo["acme-admin"]}}).
		want(t, http.StatusForbidden, "Request refused")
	// A wrong password is a plain message, no session.
	form := b.get("/signin")
	b.post("/signin/userpass", url.Values{"csrf": {form.csrf(t)}, "username": {"acme-admin"}, "password": {"wrong"}}).
		want(t, http.StatusUnauthorized, "Sign-in failed")
	b.get("/keys").want(t, http.StatusSeeOther)

	form = b.get("/signin")
	in := b.post("/signin/userpass", url.Values{"csrf": {form.csrf(t)}, "username": {"acme-admin"}, "password": {demo["acme-admin"]}})
	if in.status != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %s", in.status, in.body)
	}
	cookie := strings.Join(in.header.Values("Set-Cookie"), "\n")
	for _, want := range []string{sessionCookie + "=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	ss := sessionOf(t, tp, b)
	if ss.tenant != "acme" || ss.canListTenants {
		t.Fatalf("acme-admin's session: tenant %q, platform admin %v", ss.tenant, ss.canListTenants)
	}
	if strings.Contains(cookie, ss.token) {
		t.Fatal("the Vault token is in a cookie")
	}
	keys := b.follow(in).want(t, http.StatusOK, "Keys of acme", `href="/issue"`, `href="/roles"`)
	wantSecurityHeaders(t, keys)
	if strings.Contains(keys.body, ss.token) {
		t.Fatal("the Vault token is on a page")
	}

	// Issue, with markup in the name and a narrower scope.
	b.get("/issue").want(t, http.StatusOK, `href="/issue?role=web"`, `href="/issue?role=dev-sandbox"`)
	issueForm := b.get("/issue?role=web").want(t, http.StatusOK, `value="read"`, `value="write"`)
	markup := `<script>alert(1)</script>`
	issued := b.post("/issue", url.Values{"csrf": {issueForm.csrf(t)}, "once": {issueForm.field(t, "once")}, "role": {"web"}, "name": {markup}, "ttl": {"2h"}, "scopes": {"read"}}).
		want(t, http.StatusOK, "only time it is shown", html.EscapeString(markup))
	issued.lacks(t, markup)
	wantSecurityHeaders(t, issued)
	m := issuedKeyRE.FindStringSubmatch(issued.body)
	if m == nil {
		t.Fatalf("no key on the issued page: %s", issued.body)
	}
	key := html.UnescapeString(m[1])
	v := wantCode(t, srv, key, "VALID")
	if str(v.Data, "tenant") != "acme" || strings.Join(stringList(v.Data["scopes"]), ",") != "read" {
		t.Fatalf("issued key: %v", v.Data)
	}
	keyID := str(v.Data, "key_id")
	// Shown once: the session does not hold it, and no later page shows it.
	if strings.Contains(ss.flash, key) {
		t.Fatal("the key is in the session")
	}
	list := b.get("/keys").want(t, http.StatusOK, "/keys/"+keyID, html.EscapeString(markup), "live")
	list.lacks(t, key, markup)
	b.get("/keys?name=alert").want(t, http.StatusOK, "/keys/"+keyID)
	b.get("/keys?status=disabled").lacks(t, "/keys/"+keyID)
	b.get("/keys?status=bogus").want(t, http.StatusBadRequest, "status must be one of")

	// Disable from the key page; CSRF is required.
	detail := b.get("/keys/"+keyID).want(t, http.StatusOK, "Disable", "Revoke", html.EscapeString(markup))
	detail.lacks(t, key)
	b.post("/keys/"+keyID+"/status", url.Values{"status": {"disabled"}}).want(t, http.StatusForbidden, "Request refused")
	b.post("/keys/"+keyID+"/status", url.Values{"status": {"disabled"}, "csrf": {"x" + detail.csrf(t)}}).want(t, http.StatusForbidden, "Request refused")
	wantCode(t, srv, key, "VALID")
	b.get("/keys/"+keyID+"/status").want(t, http.StatusMethodNotAllowed)
	b.follow(b.post("/keys/"+keyID+"/status", url.Values{"status": {"disabled"}, "csrf": {detail.csrf(t)}})).
		want(t, http.StatusOK, "Key disabled", "Enable")
	wantCode(t, srv, key, "DISABLED")
	b.get("/keys?status=disabled").want(t, http.StatusOK, "/keys/"+keyID)
	b.post("/keys/"+keyID+"/status", url.Values{"status": {"gone"}, "csrf": {detail.csrf(t)}}).want(t, http.StatusBadRequest, "status must be")

	// Revoke: a confirmation page, then the POST.
	confirm := b.get("/keys/"+keyID+"/revoke").want(t, http.StatusOK, "cannot be undone", `action="/keys/`+keyID+`/revoke"`)
	wantCode(t, srv, key, "DISABLED")
	b.post("/keys/"+keyID+"/revoke", url.Values{}).want(t, http.StatusForbidden, "Request refused")
	b.follow(b.post("/keys/"+keyID+"/revoke", url.Values{"csrf": {confirm.csrf(t)}})).want(t, http.StatusOK, "Key revoked")
	wantCode(t, srv, key, "NOT_FOUND")
	b.get("/keys/"+keyID).want(t, http.StatusNotFound)

	// Sign-out revokes the token and ends the session.
	token := ss.token
	b.follow(b.post("/signout", url.Values{"csrf": {detail.csrf(t)}})).want(t, http.StatusOK, "Sign in")
	b.get("/keys").want(t, http.StatusSeeOther)
	c, _ := srv.Client.Clone()
	c.SetToken(token)
	if _, err := c.Auth().Token().LookupSelf(); err == nil {
		t.Fatal("the token still works after sign-out")
	}
}

// TestPortalDeveloperNotOfferedRoles: acme's developer gets no roles page,
// by the nav or by URL, and issues only from dev-* roles.
func TestPortalDeveloperNotOfferedRoles(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	keys := b.signIn("acme-dev", demo["acme-dev"]).want(t, http.StatusOK, "Keys of acme", `href="/issue"`)
	keys.lacks(t, `href="/roles"`, `href="/tenants"`)
	roles := b.get("/roles").want(t, http.StatusForbidden, "Permission denied")
	roles.lacks(t, "goroutine", "panic", "dev-sandbox")
	wantSecurityHeaders(t, roles)
	issue := b.get("/issue").want(t, http.StatusOK, `href="/issue?role=dev-sandbox"`)
	issue.lacks(t, `href="/issue?role=web"`)
	b.get("/issue?role=web").want(t, http.StatusNotFound)
	// Forced past the form, Vault refuses the role.
	f := b.get("/issue?role=dev-sandbox")
	b.post("/issue", url.Values{"csrf": {f.csrf(t)}, "once": {f.field(t, "once")}, "role": {"web"}}).want(t, http.StatusForbidden, "Permission denied")
	// A developer may not disable: the button is not offered.
	issued := b.post("/issue", url.Values{"csrf": {f.csrf(t)}, "once": {f.field(t, "once")}, "role": {"dev-sandbox"}, "name": {"dev key"}}).want(t, http.StatusOK)
	id := keyLinkRE.FindStringSubmatch(issued.body)
	if id == nil {
		t.Fatalf("no key link: %s", issued.body)
	}
	detail := b.get("/keys/"+id[1]).want(t, http.StatusOK, "Revoke")
	detail.lacks(t, ">Disable<")
	b.post("/keys/"+id[1]+"/status", url.Values{"csrf": {f.csrf(t)}, "status": {"disabled"}}).want(t, http.StatusForbidden, "Permission denied")
	// A 403 from Vault does not end a session whose token is alive.
	b.get("/keys").want(t, http.StatusOK)
}

// TestPortalNoOtherTenantData: acme's admin gets nothing of globex through
// any page or action the test can craft with globex's names; the tenant
// comes from the session, and a session forced onto globex is refused by
// Vault.
func TestPortalNoOtherTenantData(t *testing.T) {
	srv := sharedVault(t)
	admin := login(t, srv, "platform-admin")
	g, err := admin.Logical().Write("apikeys/tenants/globex/creds/web", map[string]interface{}{"name": "globex-private-key"})
	if err != nil {
		t.Fatal(err)
	}
	gKey, gID := str(g.Data, "api_key"), str(g.Data, "key_id")
	t.Cleanup(func() { _, _ = admin.Logical().Delete("apikeys/tenants/globex/keys/" + gID) })

	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	b.signIn("acme-admin", demo["acme-admin"])
	csrf := b.get("/keys").csrf(t)
	leak := []string{"globex-private-key", gID, "Globex"}

	for _, path := range []string{
		"/keys?tenant=globex", "/keys?tenant=globex&name=globex", "/roles?tenant=globex", "/issue?tenant=globex",
		"/issue?role=web&tenant=globex", "/keys/" + gID, "/keys/" + gID + "?tenant=globex", "/keys/" + gID + "/revoke",
		"/tenants", "/keys?after=" + gID,
	} {
		p := b.get(path)
		p.lacks(t, leak...)
		if strings.HasPrefix(path, "/keys/"+gID) && p.status != http.StatusNotFound {
			t.Errorf("%s: want 404, got %d", path, p.status)
		}
	}
	for path, form := range map[string]url.Values{
		"/keys/" + gID + "/status": {"status": {"disabled"}, "tenant": {"globex"}},
		"/keys/" + gID + "/revoke": {"tenant": {"globex"}},
		"/tenant":                  {"tenant": {"globex"}},
	} {
		form.Set("csrf", csrf)
		p := b.post(path, form)
		if p.status != http.StatusNotFound && p.status != http.StatusForbidden {
			t.Errorf("POST %s: want 404 or 403, got %d", path, p.status)
		}
		p.lacks(t, leak...)
	}
	wantCode(t, srv, gKey, "VALID")
	// A key issued with tenant=globex in the form is acme's.
	f := b.get("/issue?role=web")
	issued := b.post("/issue", url.Values{"csrf": {f.csrf(t)}, "once": {f.field(t, "once")}, "role": {"web"}, "tenant": {"globex"}}).want(t, http.StatusOK)
	m := issuedKeyRE.FindStringSubmatch(issued.body)
	if m == nil {
		t.Fatalf("no key: %s", issued.body)
	}
	if v := wantCode(t, srv, html.UnescapeString(m[1]), "VALID"); str(v.Data, "tenant") != "acme" {
		t.Fatalf("key issued for %s", str(v.Data, "tenant"))
	}
	if ss := sessionOf(t, tp, b); ss.getTenant() != "acme" {
		t.Fatalf("session tenant changed to %s", ss.getTenant())
	}

	// Were the portal's tenant wrong, Vault would refuse: force the session
	// onto globex.
	ss := sessionOf(t, tp, b)
	ss.setTenant("globex")
	for _, path := range []string{"/keys", "/roles", "/issue", "/issue?role=web", "/keys/" + gID, "/keys/" + gID + "/revoke"} {
		p := b.get(path)
		if p.status != http.StatusForbidden {
			t.Errorf("forced onto globex, %s: want 403, got %d", path, p.status)
		}
		p.lacks(t, leak...)
	}
	for path, form := range map[string]url.Values{
		"/keys/" + gID + "/status": {"status": {"disabled"}},
		"/keys/" + gID + "/revoke": {},
		"/issue":                   {"role": {"web"}},
	} {
		form.Set("csrf", csrf)
		if p := b.post(path, form); p.status != http.StatusForbidden {
			t.Errorf("forced onto globex, POST %s: want 403, got %d", path, p.status)
		}
	}
	// Behind the portal's own check, Vault itself refuses the user's token.
	c, _ := srv.Client.Clone()
	c.SetToken(ss.token)
	if _, err := c.Logical().Read("apikeys/tenants/globex/keys/" + gID); err == nil {
		t.Fatal("Vault let acme's admin read globex's key")
	}
	wantCode(t, srv, gKey, "VALID")
}

// TestPortalPlatformAdminPicksTenant: a platform admin has no tenant of
// their own and picks one.
func TestPortalPlatformAdminPicksTenant(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	form := b.get("/signin")
	in := b.post("/signin/userpass", url.Values{"csrf": {form.csrf(t)}, "username": {"platform-admin"}, "password": {demo["platform-admin"]}})
	if loc := in.header.Get("Location"); loc != "/tenants" {
		t.Fatalf("platform admin sent to %q", loc)
	}
	tenants := b.follow(in).want(t, http.StatusOK, `value="acme"`, `value="globex"`)
	b.get("/keys").want(t, http.StatusSeeOther)
	b.follow(b.post("/tenant", url.Values{"csrf": {tenants.csrf(t)}, "tenant": {"globex"}})).want(t, http.StatusOK, "Keys of globex")
	b.post("/tenant", url.Values{"csrf": {tenants.csrf(t)}, "tenant": {"Not A Name"}}).want(t, http.StatusBadRequest, "tenant must be")
	b.get("/roles").want(t, http.StatusOK, "Roles of globex", "web")
}

// TestPortalSessionEndsWithToken: a token revoked behind the portal's back
// ends the session at the next request.
func TestPortalSessionEndsWithToken(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	b.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK)
	ss := sessionOf(t, tp, b)
	if ss.expires.IsZero() {
		t.Fatal("session without an end")
	}
	if err := srv.Client.Auth().Token().RevokeOrphan(ss.token); err != nil {
		t.Fatal(err)
	}
	p := b.get("/keys")
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.header.Get("Location"), "/signin") {
		t.Fatalf("after revocation: %d %s", p.status, p.header.Get("Location"))
	}
	b.get("/keys").want(t, http.StatusSeeOther)
}

// TestPortalIssueFormIssuesOnce: an issue form sent twice (a reload of the
// page that showed the key, a second click) issues one key, and the second
// answer shows neither the key nor a new one; a form whose issue failed may
// be sent again; a form without its once token is refused.
func TestPortalIssueFormIssuesOnce(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	b.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK, "Keys of acme")
	form := b.get("/issue?role=web").want(t, http.StatusOK)
	name := "issued-once-" + randomToken()[:8]
	sent := url.Values{"csrf": {form.csrf(t)}, "once": {form.field(t, "once")}, "role": {"web"}, "name": {name}}

	// Vault refuses a scope the role does not have: nothing was issued,
	// so the same form may go again.
	bad := url.Values{}
	for k, v := range sent {
		bad[k] = v
	}
	bad.Set("scopes", "no-such-scope")
	if p := b.post("/issue", bad); p.status != http.StatusBadRequest {
		t.Fatalf("a scope the role lacks: want 400, got %d: %s", p.status, p.body)
	}
	first := b.post("/issue", sent).want(t, http.StatusOK, "only time it is shown")
	m := issuedKeyRE.FindStringSubmatch(first.body)
	if m == nil {
		t.Fatalf("no key on the issued page: %s", first.body)
	}
	key := html.UnescapeString(m[1])
	keyID := str(wantCode(t, srv, key, "VALID").Data, "key_id")

	again := b.post("/issue", sent).want(t, http.StatusConflict, "Already issued", keyID)
	again.lacks(t, key, `id="api-key"`)
	list, err := login(t, srv, "platform-admin").Logical().List("apikeys/tenants/acme/keys")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := list.Data["key_info"].(map[string]interface{})
	var named []string
	for id, v := range info {
		if d, _ := v.(map[string]interface{}); str(d, "name") == name {
			named = append(named, id)
		}
	}
	if len(named) != 1 || named[0] != keyID {
		t.Fatalf("keys named %s after sending the form twice: %v, want only %s", name, named, keyID)
	}

	// A new form issues a new key; a form without a once token, none.
	next := b.get("/issue?role=web")
	b.post("/issue", url.Values{"csrf": {next.csrf(t)}, "once": {next.field(t, "once")}, "role": {"web"}}).want(t, http.StatusOK, "only time it is shown")
	sent.Del("once")
	b.post("/issue", sent).want(t, http.StatusBadRequest, "out of date")
	sent.Set("once", "short")
	b.post("/issue", sent).want(t, http.StatusBadRequest, "out of date")
}

// TestSessionRemembersBoundedForms: a session remembers at most
// maxSentForms issue forms, the oldest forgotten first, and a form whose
// issue failed is forgotten at once.
func TestSessionRemembersBoundedForms(t *testing.T) {
	var ss session
	forms := make([]string, maxSentForms+1)
	for i := range forms {
		forms[i] = randomToken()
		if _, fresh := ss.claimForm(forms[i]); !fresh {
			t.Fatalf("form %d claimed before", i)
		}
		ss.settleForm(forms[i], "key-"+strconv.Itoa(i))
	}
	if len(ss.sent) != maxSentForms || len(ss.sentOrder) != maxSentForms {
		t.Fatalf("remembers %d forms (%d in order), want %d", len(ss.sent), len(ss.sentOrder), maxSentForms)
	}
	if _, fresh := ss.claimForm(forms[0]); !fresh {
		t.Fatal("the oldest form was not forgotten")
	}
	if id, fresh := ss.claimForm(forms[maxSentForms]); fresh || id != "key-"+strconv.Itoa(maxSentForms) {
		t.Fatalf("the newest form: fresh %v, key %q", fresh, id)
	}
	failed := randomToken()
	ss.claimForm(failed)
	if id, fresh := ss.claimForm(failed); fresh || id != "" {
		t.Fatalf("a form in flight: fresh %v, key %q", fresh, id)
	}
	ss.settleForm(failed, "")
	if _, fresh := ss.claimForm(failed); !fresh {
		t.Fatal("a failed form was not forgotten")
	}
	if len(ss.sent) != len(ss.sentOrder) {
		t.Fatalf("sent %d, order %d", len(ss.sent), len(ss.sentOrder))
	}
}

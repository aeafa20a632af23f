package portal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	chromium "github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/browser"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/devidp/idp"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// The browser tests share, per test binary, one headless Chromium and one
// portal over the package's real Vault, set up as `make dev` sets it up:
// the bootstrap policies and demo logins (harness_test.go), plus OIDC
// sign-in through Vault's oidc auth method (bootstrap/auth-oidc.sh, role
// portal) against the stand-in identity provider (scripts/devidp), which
// lets the portal's callback in. Each test opens its own pages (a browser
// context each: no cookie is shared between tests).

var (
	webOnce sync.Once
	web     *webEnv
	webErr  error
)

type webEnv struct {
	srv     *testvault.Server
	browser *chromium.Browser
	portal  *Server
	url     string // the portal's base URL
	idpURL  string
	closers []func()
}

// closeWeb is called from TestMain after the tests.
func closeWeb() {
	if web == nil {
		return
	}
	for i := len(web.closers) - 1; i >= 0; i-- {
		web.closers[i]()
	}
}

// webTest is the shared browser environment; it skips (or, with
// APIKEYS_REQUIRE_BROWSER set, fails) without Chromium.
func webTest(t *testing.T) *webEnv {
	t.Helper()
	bin := chromium.Require(t)
	srv := sharedVault(t)
	webOnce.Do(func() { web, webErr = startWeb(srv, bin) })
	if webErr != nil {
		t.Fatal(webErr)
	}
	return web
}

func startWeb(srv *testvault.Server, bin string) (*webEnv, error) {
	e := &webEnv{srv: srv}
	fail := func(err error) (*webEnv, error) {
		web = e // so closeWeb frees what was started
		return nil, err
	}
	b, err := chromium.Launch(context.Background(), chromium.Options{Bin: bin})
	if err != nil {
		return fail(fmt.Errorf("launch Chromium: %w", err))
	}
	e.browser = b
	e.closers = append(e.closers, b.Close)

	// The portal's address first: the identity provider and Vault's role
	// must allow its callback.
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	e.url = "http://" + pln.Addr().String()
	iln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pln.Close()
		return fail(err)
	}
	e.idpURL = "http://" + iln.Addr().String()
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return fail(err)
	}
	provider, err := idp.New(idp.Config{
		Issuer:     e.idpURL,
		Client:     idp.Client{ID: "vault-apikeys", Secret: hex.EncodeToString(secret), RedirectURIs: []string{e.url + "/auth/oidc/callback"}},
		Identities: idp.DemoIdentities(),
	})
	if err != nil {
		return fail(err)
	}
	is := &http.Server{Handler: provider.Handler()}
	go func() { _ = is.Serve(iln) }()
	e.closers = append(e.closers, func() { _ = is.Close() })

	secretFile := filepath.Join(srv.Dir, "browser-idp-secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		return fail(err)
	}
	if err := bootstrap(srv, "auth-oidc.sh", []string{
		"OIDC_DISCOVERY_URL=" + e.idpURL, "OIDC_CLIENT_SECRET_FILE=" + secretFile, "PORTAL_URL=" + e.url, "OIDC_CLI_REDIRECT=",
	}); err != nil {
		return fail(err)
	}
	// The policies again, now that the oidc mount's accessor exists.
	if err := bootstrap(srv, "policies.sh", nil); err != nil {
		return fail(err)
	}

	p, err := New(Config{Vault: srv.Client, Mount: "apikeys", PublicURL: e.url, OIDCRole: "portal"})
	if err != nil {
		pln.Close()
		return fail(err)
	}
	e.portal = p
	ts := &httptest.Server{Listener: pln, Config: NewHTTPServer("", p.Handler())}
	ts.Start()
	e.closers = append(e.closers, func() { ts.Close(); p.Close() })
	return e, nil
}

// page opens a tab for the test.
func (e *webEnv) page(t *testing.T, opts chromium.PageOptions) *chromium.Page {
	t.Helper()
	return e.browser.PageT(t, opts)
}

// goTo loads a portal path and waits for its main element.
func (e *webEnv) goTo(t *testing.T, p *chromium.Page, path string) int {
	t.Helper()
	status, err := p.Goto(e.url+path, "main")
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// signIn signs in through the userpass form, as a person types it, and
// returns the status of the page it leads to.
func (e *webEnv) signIn(t *testing.T, p *chromium.Page, user string) {
	t.Helper()
	e.goTo(t, p, "/signin")
	status, err := p.Submit(`form[action="/signin/userpass"]`, map[string]string{"username": user, "password": demo[user]})
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK {
		t.Fatalf("sign-in of %s: HTTP %d", user, status)
	}
	if who := text(t, p, ".who"); !strings.Contains(who, "Sign out") {
		t.Fatalf("sign-in of %s: not signed in: %q", user, who)
	}
}

// submit submits a form of the page and returns the status it leads to.
func submit(t *testing.T, p *chromium.Page, form string, fields map[string]string) int {
	t.Helper()
	status, err := p.Submit(form, fields)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

func text(t *testing.T, p *chromium.Page, sel string) string {
	t.Helper()
	s, err := p.Text(sel)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// bodyText is the page's rendered text.
func bodyText(t *testing.T, p *chromium.Page) string {
	t.Helper()
	return text(t, p, "body")
}

func eval[T any](t *testing.T, p *chromium.Page, expr string) T {
	t.Helper()
	raw, err := p.Eval(expr)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("evaluate %s: %s: %v", expr, raw, err)
	}
	return v
}

func count(t *testing.T, p *chromium.Page, sel string) int {
	t.Helper()
	n, err := p.Count(sel)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// path is the page's current path and query.
func (e *webEnv) path(t *testing.T, p *chromium.Page) string {
	t.Helper()
	u, err := p.URL()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u, e.url)
}

// forgePost adds a form to the page that POSTs fields to action, as a
// crafted request from this signed-in browser would, and submits it; csrf
// "" copies the page's own CSRF token into it, "-" sends none.
func forgePost(t *testing.T, p *chromium.Page, action string, fields map[string]string, csrf string) int {
	t.Helper()
	all := map[string]string{}
	for k, v := range fields {
		all[k] = v
	}
	switch csrf {
	case "-":
	case "":
		all["csrf"] = eval[string](t, p, `(document.querySelector('input[name="csrf"]') || {value: ""}).value`)
	default:
		all["csrf"] = csrf
	}
	spec, _ := json.Marshal(map[string]interface{}{"action": action, "fields": all})
	eval[bool](t, p, `(() => {
		const s = `+string(spec)+`;
		const f = document.createElement("form");
		f.id = "forged"; f.method = "post"; f.action = s.action;
		for (const [k, v] of Object.entries(s.fields)) {
			const i = document.createElement("input");
			i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i);
		}
		const b = document.createElement("button"); b.type = "submit"; b.textContent = "go"; f.appendChild(b);
		document.body.appendChild(f);
		return true;
	})()`)
	return submit(t, p, "#forged", nil)
}

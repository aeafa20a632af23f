package portal

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// The real-Vault tests share one dev server, set up the way `make dev`
// sets one up: bootstrap/apply.sh (mount, userpass, the tier policies, the
// platform admins' group, the tenant guard on) and bootstrap/demo.sh (the
// acme and globex tenants and the demo logins). It starts on first use, so
// the unit tests of the package run without Vault.

var (
	vaultOnce sync.Once
	shared    *testvault.Server
	demo      map[string]string // demo login → password
	vaultErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	closeWeb() // the browser tests' Chromium, portal and identity provider
	if shared != nil {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "--- vault server log (tail) ---\n%s\n", shared.LogTail(40))
		}
		shared.Cleanup()
	}
	os.Exit(code)
}

func sharedVault(t testing.TB) *testvault.Server {
	t.Helper()
	vaultOnce.Do(func() { vaultErr = startVault() })
	if vaultErr != nil {
		t.Fatal(vaultErr)
	}
	return shared
}

func startVault() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, err := testvault.Start(ctx, testvault.Options{})
	if err != nil {
		return err
	}
	shared = srv
	env := []string{"PLUGIN_BIN=" + filepath.Join(srv.PluginDir, testvault.PluginName), "PLUGIN_VERSION=" + srv.PluginVersion}
	if err := bootstrap(srv, "apply.sh", env); err != nil {
		return err
	}
	creds := filepath.Join(srv.Dir, "demo-credentials")
	if err := bootstrap(srv, "demo.sh", []string{"DEMO_CREDENTIALS=" + creds}); err != nil {
		return err
	}
	f, err := os.Open(creds)
	if err != nil {
		return err
	}
	defer f.Close()
	demo = map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if u, p, ok := strings.Cut(sc.Text(), "="); ok {
			demo[u] = p
		}
	}
	return sc.Err()
}

func bootstrap(srv *testvault.Server, script string, env []string, args ...string) error {
	root, err := testvault.RepoRoot()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(root, "bootstrap", script)}, args...)...)
	cmd.Env = append(os.Environ(), "VAULT="+srv.VaultBin, "VAULT_ADDR="+srv.Addr, "VAULT_TOKEN="+srv.Token, "VAULT_FORMAT=", "NO_COLOR=1")
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bootstrap/%s: %w\n%s", script, err, out.String())
	}
	return nil
}

// login is a userpass login's token, straight from Vault (not the portal).
func login(t testing.TB, srv *testvault.Server, user string) *api.Client {
	t.Helper()
	c, err := srv.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	s, err := c.Logical().Write("auth/userpass/login/"+user, map[string]interface{}{"password": demo[user]})
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	c.SetToken(s.Auth.ClientToken)
	return c
}

// testPortal is a portal over the shared Vault, served by httptest.
type testPortal struct {
	*Server
	url string
}

func newTestPortal(t testing.TB, srv *testvault.Server, mutate func(*Config)) *testPortal {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	cfg := Config{Vault: srv.Client, Mount: "apikeys", PublicURL: "http://" + ts.Listener.Addr().String()}
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Config = NewHTTPServer("", p.Handler())
	ts.Start()
	t.Cleanup(func() { ts.Close(); p.Close() })
	return &testPortal{Server: p, url: ts.URL}
}

// browser is a cookie-keeping HTTP client that does not follow redirects,
// so that each test sees every answer.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

type webPage struct {
	status int
	header http.Header
	body   string
}

func newBrowser(t testing.TB, base string) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, base: base, c: &http.Client{
		Jar:           jar,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (b *browser) do(method, path string, form url.Values) webPage {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return webPage{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

func (b *browser) get(path string) webPage { b.t.Helper(); return b.do("GET", path, nil) }

func (b *browser) post(path string, form url.Values) webPage {
	b.t.Helper()
	return b.do("POST", path, form)
}

// follow GETs the Location of a redirect.
func (b *browser) follow(p webPage) webPage {
	b.t.Helper()
	if p.status != http.StatusSeeOther && p.status != http.StatusFound {
		b.t.Fatalf("want a redirect, got %d: %s", p.status, p.body)
	}
	return b.get(p.header.Get("Location"))
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of the first form on a page.
func (p webPage) csrf(t testing.TB) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no csrf field on the page: %s", p.body)
	}
	return m[1]
}

// field is the value of the page's hidden form field name.
func (p webPage) field(t testing.TB, name string) string {
	t.Helper()
	m := regexp.MustCompile(`name="` + regexp.QuoteMeta(name) + `" value="([^"]+)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no %s field on the page: %s", name, p.body)
	}
	return m[1]
}

func (p webPage) want(t testing.TB, status int, texts ...string) webPage {
	t.Helper()
	if p.status != status {
		t.Fatalf("want HTTP %d, got %d: %s", status, p.status, p.body)
	}
	for _, s := range texts {
		if !strings.Contains(p.body, s) {
			t.Fatalf("page does not show %q: %s", s, p.body)
		}
	}
	return p
}

func (p webPage) lacks(t testing.TB, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(p.body, s) {
			t.Fatalf("page shows %q, which it must not: %s", s, p.body)
		}
	}
}

// signIn signs in through the userpass form and returns the first page.
func (b *browser) signIn(user, password string) webPage {
	b.t.Helper()
	form := b.get("/signin").want(b.t, http.StatusOK, `name="username"`)
	p := b.post("/signin/userpass", url.Values{"csrf": {form.csrf(b.t)}, "username": {user}, "password": {password}})
	if p.status != http.StatusSeeOther {
		b.t.Fatalf("sign-in of %s: want 303, got %d: %s", user, p.status, p.body)
	}
	return b.follow(p)
}

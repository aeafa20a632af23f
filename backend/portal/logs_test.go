package portal

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
)

// syncBuffer is a log sink the portal's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func bufferLogger(buf *syncBuffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "portal", Output: buf, Level: hclog.Trace})
}

// TestPortalLogHoldsNoSecrets: the portal's log, at its most verbose, never
// holds a password, a Vault token, an issued key, a session id, a CSRF
// token or an OIDC sign-in's code, state or nonce — through a sign-in, an
// issue, refusals, a sign-out, and the failures Vault can answer with.
func TestPortalLogHoldsNoSecrets(t *testing.T) {
	srv := sharedVault(t)
	var logs syncBuffer
	tp := newTestPortal(t, srv, func(c *Config) { c.Logger = bufferLogger(&logs) })
	b := newBrowser(t, tp.url)
	var secrets []string

	keys := b.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK, "Keys of acme")
	ss := sessionOf(t, tp, b)
	secrets = append(secrets, demo["acme-admin"], ss.token, ss.csrf)
	u, _ := url.Parse(tp.url)
	for _, c := range b.c.Jar.Cookies(u) {
		secrets = append(secrets, c.Value)
	}
	issueForm := b.get("/issue?role=web").want(t, http.StatusOK)
	issued := b.post("/issue", url.Values{"csrf": {keys.csrf(t)}, "once": {issueForm.field(t, "once")}, "role": {"web"}, "name": {"log-check"}}).want(t, http.StatusOK)
	m := issuedKeyRE.FindStringSubmatch(issued.body)
	if m == nil {
		t.Fatalf("no key on the issued page: %s", issued.body)
	}
	secrets = append(secrets, m[1])
	id := keyLinkRE.FindStringSubmatch(issued.body)
	if id == nil {
		t.Fatalf("no key link on the issued page: %s", issued.body)
	}
	t.Cleanup(func() { _, _ = login(t, srv, "platform-admin").Logical().Delete("apikeys/tenants/acme/keys/" + id[1]) })
	// Refusals: a forged CSRF token, a page of another tenant's key.
	b.post("/keys/"+id[1]+"/status", url.Values{"csrf": {"forged-" + ss.csrf}, "status": {"disabled"}}).want(t, http.StatusForbidden)
	b.get("/keys/00000000-0000-0000-0000-000000000000")
	b.post("/signout", url.Values{"csrf": {ss.csrf}}).want(t, http.StatusSeeOther)

	// Vault failing: every answer a 500 that echoes nothing useful.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"errors":["internal error"]}`, http.StatusInternalServerError)
	}))
	defer broken.Close()
	bc := api.DefaultConfig()
	bc.Address = broken.URL
	bc.MaxRetries = 0
	bv, err := api.NewClient(bc)
	if err != nil {
		t.Fatal(err)
	}
	fp := newTestPortal(t, srv, func(c *Config) { c.Vault, c.Logger, c.OIDCRole = bv, bufferLogger(&logs), "portal" })
	fb := newBrowser(t, fp.url)
	form := fb.get("/signin")
	fb.post("/signin/userpass", url.Values{"csrf": {form.csrf(t)}, "username": {"acme-admin"}, "password": {demo["acme-admin"]}}).
		want(t, http.StatusBadGateway)
	// An OIDC sign-in in flight, whose callback Vault fails.
	handle, ok := fp.pending.put(pendingOIDC{nonce: "nonce-" + randomToken(), state: "state-" + randomToken()})
	if !ok {
		t.Fatal("no room for a pending sign-in")
	}
	var p pendingOIDC
	for _, v := range fp.pending.m {
		p = v
	}
	code := "code-" + randomToken()
	fu, _ := url.Parse(fp.url)
	fb.c.Jar.SetCookies(fu, []*http.Cookie{{Name: oidcCookie, Value: handle, Path: "/"}})
	fb.get("/auth/oidc/callback?"+url.Values{"state": {p.state}, "code": {code}}.Encode()).want(t, http.StatusBadGateway)
	secrets = append(secrets, handle, p.nonce, p.state, code)

	out := logs.String()
	for _, want := range []string{"signed in", "userpass login failed", "oidc callback failed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the log lacks %q, so this test did not reach what it checks:\n%s", want, out)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Fatalf("the portal's log holds a secret (%d characters):\n%s", len(s), out)
		}
	}
}

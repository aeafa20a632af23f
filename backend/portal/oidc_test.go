package portal

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// fakeOIDCVault stands in for the two endpoints of Vault's OIDC auth
// method the portal drives (auth_url, callback), plus what the portal asks
// of a fresh token, as Vault's API documents them.
type fakeOIDCVault struct {
	t           *testing.T
	mu          sync.Mutex
	authURL     string // answered by auth_url; default an IdP URL with state S1
	gotRedirect string
	gotRole     string
	gotNonce    string
	callbacks   int
}

func (f *fakeOIDCVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(v interface{}) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.URL.Path == "/v1/auth/oidc/oidc/auth_url" && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		var body map[string]string
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"errors":["bad body"]}`, http.StatusBadRequest)
			return
		}
		f.gotRole, f.gotRedirect, f.gotNonce = body["role"], body["redirect_uri"], body["client_nonce"]
		u := f.authURL
		if u == "" {
			u = "https://idp.example/authorize?client_id=vault&state=S1&nonce=n1&redirect_uri=" + url.QueryEscape(body["redirect_uri"])
		}
		if u == "none" {
			u = ""
		}
		reply(map[string]interface{}{"data": map[string]interface{}{"auth_url": u}})
	case r.URL.Path == "/v1/auth/oidc/oidc/callback" && r.Method == http.MethodGet:
		f.callbacks++
		q := r.URL.Query()
		if q.Get("state") != "S1" || q.Get("code") != "C1" || q.Get("client_nonce") != f.gotNonce || f.gotNonce == "" {
			w.WriteHeader(http.StatusBadRequest)
			reply(map[string]interface{}{"errors": []string{"invalid state, code or client_nonce"}})
			return
		}
		if r.Header.Get("X-Vault-Token") != "" {
			f.t.Errorf("the callback carried a token")
		}
		reply(map[string]interface{}{"auth": map[string]interface{}{
			"client_token": "hvs.oidc-user-token", "policies": []string{"default"},
			"metadata": map[string]string{"role": "portal", "tenant": "acme"}, "lease_duration": 3600, "entity_id": "e1",
		}})
	case r.URL.Path == "/v1/auth/token/lookup-self":
		if r.Header.Get("X-Vault-Token") != "hvs.oidc-user-token" {
			w.WriteHeader(http.StatusForbidden)
			reply(map[string]interface{}{"errors": []string{"permission denied"}})
			return
		}
		reply(map[string]interface{}{"data": map[string]interface{}{"ttl": 1800, "entity_id": "e1", "display_name": "oidc-alice"}})
	case r.URL.Path == "/v1/sys/capabilities-self":
		var body struct{ Paths []string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		data := map[string]interface{}{}
		for _, p := range body.Paths {
			data[p] = []string{"deny"}
		}
		reply(map[string]interface{}{"data": data})
	default:
		w.WriteHeader(http.StatusForbidden)
		reply(map[string]interface{}{"errors": []string{"permission denied"}})
	}
}

func newOIDCPortal(t *testing.T, role string) (*fakeOIDCVault, *testPortal) {
	t.Helper()
	f := &fakeOIDCVault{t: t}
	vs := httptest.NewServer(f)
	t.Cleanup(vs.Close)
	cfg := api.DefaultConfig()
	cfg.Address = vs.URL
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	p, err := New(Config{Vault: c, PublicURL: "http://" + ts.Listener.Addr().String(), OIDCRole: role})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config = NewHTTPServer("", p.Handler())
	ts.Start()
	t.Cleanup(func() { ts.Close(); p.Close() })
	return f, &testPortal{Server: p, url: ts.URL}
}

func TestOIDCSignIn(t *testing.T) {
	f, tp := newOIDCPortal(t, "portal")
	b := newBrowser(t, tp.url)
	b.get("/signin").want(t, http.StatusOK, `href="/auth/oidc/start"`)

	start := b.get("/auth/oidc/start")
	if start.status != http.StatusFound || !strings.HasPrefix(start.header.Get("Location"), "https://idp.example/authorize?") {
		t.Fatalf("start: %d %s", start.status, start.header.Get("Location"))
	}
	if f.gotRole != "portal" || f.gotRedirect != tp.url+"/auth/oidc/callback" || len(f.gotNonce) < 40 {
		t.Fatalf("auth_url request: role %q redirect %q nonce %q", f.gotRole, f.gotRedirect, f.gotNonce)
	}
	cookie := strings.Join(start.header.Values("Set-Cookie"), "\n")
	if !strings.Contains(cookie, oidcCookie+"=") || !strings.Contains(cookie, "SameSite=Lax") || !strings.Contains(cookie, "HttpOnly") {
		t.Fatalf("oidc cookie: %s", cookie)
	}
	if strings.Contains(cookie, f.gotNonce) || strings.Contains(start.header.Get("Location"), f.gotNonce) {
		t.Fatal("the client_nonce left the server")
	}

	// Another browser (no pending sign-in) cannot complete it.
	other := newBrowser(t, tp.url)
	other.get("/auth/oidc/callback?state=S1&code=C1").want(t, http.StatusForbidden, "did not start")

	// A state that is not the one Vault issued is refused before Vault.
	before := f.callbacks
	b.get("/auth/oidc/callback?state=S2&code=C1").want(t, http.StatusForbidden, "does not belong")
	if f.callbacks != before {
		t.Fatal("a mismatched state reached Vault")
	}
	// That used up the pending sign-in: start again.
	b.get("/auth/oidc/start")
	done := b.get("/auth/oidc/callback?state=S1&code=C1").want(t, http.StatusOK, `href="/keys"`)
	if !strings.Contains(strings.Join(done.header.Values("Set-Cookie"), "\n"), sessionCookie+"=") {
		t.Fatal("no session cookie after the callback")
	}
	ss := sessionOf(t, tp, b)
	if ss.tenant != "acme" || ss.user != "oidc-alice" || ss.token != "hvs.oidc-user-token" {
		t.Fatalf("session: tenant %q user %q", ss.tenant, ss.user)
	}
	if left := time.Until(ss.expires); left > 1800*time.Second || left < 1700*time.Second {
		t.Fatalf("session lasts %s, the token 1800 s", left)
	}
	// A callback is used once.
	b.get("/auth/oidc/callback?state=S1&code=C1").want(t, http.StatusForbidden)
}

func TestOIDCUnusableAuthURL(t *testing.T) {
	f, tp := newOIDCPortal(t, "portal")
	f.authURL = "none"
	newBrowser(t, tp.url).get("/auth/oidc/start").want(t, http.StatusBadGateway, "does not allow this portal")
}

func TestOIDCOffWithoutRole(t *testing.T) {
	_, tp := newOIDCPortal(t, "")
	b := newBrowser(t, tp.url)
	b.get("/signin").want(t, http.StatusOK, `name="username"`).lacks(t, "/auth/oidc/start")
	b.get("/auth/oidc/start").want(t, http.StatusNotFound)
}

func TestTenantFromACL(t *testing.T) {
	for name, tc := range map[string]struct {
		data map[string]interface{}
		want string
	}{
		"templated tenant admin": {map[string]interface{}{"exact_paths": map[string]interface{}{
			"apikeys/tenants/acme/keys/": map[string]interface{}{}, "sys/capabilities-self": map[string]interface{}{},
		}, "glob_paths": map[string]interface{}{"apikeys/tenants/acme/keys/+": map[string]interface{}{}}}, "acme"},
		"platform admin glob": {map[string]interface{}{"glob_paths": map[string]interface{}{"apikeys/": map[string]interface{}{}}}, ""},
		"two tenants":         {map[string]interface{}{"exact_paths": map[string]interface{}{"apikeys/tenants/a/keys/": nil, "apikeys/tenants/b/keys/": nil}}, ""},
		"wildcard segment":    {map[string]interface{}{"exact_paths": map[string]interface{}{"apikeys/tenants/+/keys/": nil}}, ""},
		"other mount":         {map[string]interface{}{"exact_paths": map[string]interface{}{"other/tenants/acme/keys/": nil}}, ""},
	} {
		if got := tenantFromACL("apikeys", tc.data); got != tc.want {
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
}

// revoked collects the tokens a session store revoked.
type revoked struct {
	mu     sync.Mutex
	tokens []string
	got    chan string
}

func newRevoked() *revoked { return &revoked{got: make(chan string, 16)} }

func (rv *revoked) revoke(token string) {
	rv.mu.Lock()
	rv.tokens = append(rv.tokens, token)
	rv.mu.Unlock()
	rv.got <- token
}

func (rv *revoked) wait(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-rv.got:
		if got != want {
			t.Fatalf("revoked %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("token %q was not revoked", want)
	}
}

func TestSessionExpires(t *testing.T) {
	rv := newRevoked()
	st := newSessionStore(sessionCookie, rv.revoke)
	id := st.create(&session{token: "t-expired", expires: time.Now().Add(-time.Second)})
	if _, ok := st.get(id); ok {
		t.Fatal("an expired session was returned")
	}
	// A session whose time is up ends with its token.
	rv.wait(t, "t-expired")
	id = st.create(&session{token: "t-live", expires: time.Now().Add(time.Hour)})
	ss, ok := st.get(id)
	if !ok || len(ss.csrf) < 40 {
		t.Fatal("a live session was not returned with a CSRF token")
	}
	if _, ok := st.get(id + "x"); ok {
		t.Fatal("a wrong id found a session")
	}
	if equalSecret("", "") || !equalSecret(ss.csrf, ss.csrf) || equalSecret(ss.csrf, ss.csrf[1:]) {
		t.Fatal("equalSecret")
	}

	// The sweeper ends sessions nobody comes back to.
	st.create(&session{token: "t-idle", expires: time.Now().Add(time.Minute)})
	st.sweep(time.Now())
	select {
	case tok := <-rv.got:
		t.Fatalf("sweep before the time revoked %q", tok)
	default:
	}
	st.sweep(time.Now().Add(2 * time.Minute))
	rv.wait(t, "t-idle")
	if _, ok := st.get(id); !ok {
		t.Fatal("a sweep two minutes on ended a one-hour session")
	}
}

func TestSessionReplacedAndClosedRevokeTokens(t *testing.T) {
	rv := newRevoked()
	st := newSessionStore(sessionCookie, rv.revoke)
	id := st.create(&session{token: "t-first", expires: time.Now().Add(time.Hour)})
	r := httptest.NewRequest(http.MethodPost, "/signin/userpass", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: id})
	// Signing in again in the same browser ends the session it had.
	st.replace(r)
	rv.wait(t, "t-first")
	if _, ok := st.get(id); ok {
		t.Fatal("the replaced session is still there")
	}
	st.create(&session{token: "t-a", expires: time.Now().Add(time.Hour)})
	st.close()
	rv.wait(t, "t-a")
}

func TestPendingSignInsAreBounded(t *testing.T) {
	p := newPendingStore(2)
	var handles []string
	for range 2 {
		h, ok := p.put(pendingOIDC{state: "s", nonce: "n"})
		if !ok {
			t.Fatal("a sign-in under the cap was refused")
		}
		handles = append(handles, h)
	}
	if _, ok := p.put(pendingOIDC{state: "s"}); ok {
		t.Fatal("a sign-in over the cap was stored")
	}
	// Expired ones go at the sweep, and make room.
	p.sweep(time.Now().Add(pendingOIDCTTL + time.Second))
	if _, ok := p.take(handles[0]); ok {
		t.Fatal("an expired sign-in survived the sweep")
	}
	if _, ok := p.put(pendingOIDC{state: "s"}); !ok {
		t.Fatal("no room after the sweep")
	}
}

package idp

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testClient   = "vault-apikeys"
	testSecret   = "s3cret/with+chars"
	testRedirect = "http://127.0.0.1:8300/auth/oidc/callback"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t     *testing.T
	p     *Provider
	srv   *httptest.Server
	clock *clock
	http  *http.Client
}

func newFixture(t *testing.T, alg jose.SignatureAlgorithm, ids ...Identity) *fixture {
	t.Helper()
	if len(ids) == 0 {
		ids = DemoIdentities()
	}
	f := &fixture{t: t, clock: &clock{t: time.Now()}}
	// The issuer must be known before the server starts: start it
	// unconfigured, then plug the provider in.
	var h http.Handler
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(f.srv.Close)
	p, err := New(Config{
		Issuer:     f.srv.URL + "/idp",
		Client:     Client{ID: testClient, Secret: testSecret, RedirectURIs: []string{testRedirect, "http://localhost:8250/oidc/callback"}},
		Identities: ids,
		Alg:        alg,
		Now:        f.clock.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.p, h = p, p.Handler()
	f.http = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return f
}

// authParams is a valid authorization request with PKCE and a nonce.
func authParams(verifier string) url.Values {
	sum := sha256.Sum256([]byte(verifier))
	return url.Values{
		"client_id": {testClient}, "redirect_uri": {testRedirect}, "response_type": {"code"},
		"scope": {"openid email"}, "state": {"st-123"}, "nonce": {"n-456"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
}

func (f *fixture) get(path string, q url.Values) (*http.Response, string) {
	f.t.Helper()
	resp, err := f.http.Get(f.p.Issuer() + path + "?" + q.Encode())
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var hiddenRe = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// signIn opens the sign-in page for q, clicks the identity's button, and
// returns the code and state the provider redirected to the client with.
func (f *fixture) signIn(q url.Values, sub string) (code, state string) {
	f.t.Helper()
	resp, body := f.get("/authorize", q)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("authorize page: HTTP %d: %s", resp.StatusCode, body)
	}
	form := url.Values{}
	for _, m := range hiddenRe.FindAllStringSubmatch(body, -1) {
		form.Set(m[1], unescape(m[2]))
	}
	if form.Get("state") != q.Get("state") {
		f.t.Fatalf("the page does not carry the state: %v", form)
	}
	form.Set("identity", sub)
	loc := f.post("/authorize", form, http.StatusSeeOther)
	u, err := url.Parse(loc.Header.Get("Location"))
	if err != nil {
		f.t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != q.Get("redirect_uri") {
		f.t.Fatalf("redirected to %s, want %s", got, q.Get("redirect_uri"))
	}
	return u.Query().Get("code"), u.Query().Get("state")
}

func unescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&#39;", "'", "&#43;", "+").Replace(s)
}

func (f *fixture) post(path string, form url.Values, want int) *http.Response {
	f.t.Helper()
	resp, err := f.http.PostForm(f.p.Issuer()+path, form)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		f.t.Fatalf("POST %s: HTTP %d, want %d: %s", path, resp.StatusCode, want, b)
	}
	return resp
}

type tokenAnswer struct {
	status                     int
	AccessToken                string `json:"access_token"`
	TokenType                  string `json:"token_type"`
	IDToken                    string `json:"id_token"`
	Error                      string `json:"error"`
	ExpiresIn                  int    `json:"expires_in"`
	authenticateHeaderOnRefuse string
}

// exchange posts to /token; basic picks client_secret_basic over _post.
func (f *fixture) exchange(code, verifier, redirect, secret string, basic bool) tokenAnswer {
	f.t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	if !basic {
		form.Set("client_id", testClient)
		form.Set("client_secret", secret)
	}
	req, _ := http.NewRequest(http.MethodPost, f.p.Issuer()+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(testClient), url.QueryEscape(secret))
	}
	resp, err := f.http.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var a tokenAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		f.t.Fatal(err)
	}
	a.status = resp.StatusCode
	a.authenticateHeaderOnRefuse = resp.Header.Get("WWW-Authenticate")
	return a
}

// verifyIDToken checks the signature against the published JWKS, fetched
// over HTTP as a relying party does, and returns the claims.
func (f *fixture) verifyIDToken(raw string, alg jose.SignatureAlgorithm) map[string]interface{} {
	f.t.Helper()
	resp, body := f.get("/jwks", nil)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("jwks: HTTP %d", resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		f.t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{alg})
	if err != nil {
		f.t.Fatalf("parse the ID token: %v", err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		f.t.Fatalf("kid %q not in the JWKS", tok.Headers[0].KeyID)
	}
	var std jwt.Claims
	var all map[string]interface{}
	if err := tok.Claims(keys[0].Key, &std, &all); err != nil {
		f.t.Fatalf("ID token signature: %v", err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: f.p.Issuer(), AnyAudience: jwt.Audience{testClient}, Time: f.clock.now()}, 0); err != nil {
		f.t.Fatalf("ID token claims: %v", err)
	}
	return all
}

func TestDiscoveryNamesTheEndpoints(t *testing.T) {
	f := newFixture(t, jose.RS256)
	resp, body := f.get("/.well-known/openid-configuration", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	var d map[string]interface{}
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	iss := f.p.Issuer()
	for k, want := range map[string]string{
		"issuer": iss, "authorization_endpoint": iss + "/authorize", "token_endpoint": iss + "/token",
		"userinfo_endpoint": iss + "/userinfo", "jwks_uri": iss + "/jwks",
	} {
		if d[k] != want {
			t.Errorf("%s = %v, want %s", k, d[k], want)
		}
	}
	if !strings.Contains(body, `"S256"`) || !strings.Contains(body, `"client_secret_post"`) || !strings.Contains(body, `"client_secret_basic"`) {
		t.Errorf("discovery lacks PKCE S256 or a client auth method: %s", body)
	}
}

func TestCodeFlowWithPKCEAndNonce(t *testing.T) {
	for _, tc := range []struct {
		alg   jose.SignatureAlgorithm
		basic bool
	}{{jose.RS256, true}, {jose.ES256, false}} {
		t.Run(string(tc.alg), func(t *testing.T) {
			f := newFixture(t, tc.alg)
			verifier := "a-verifier-of-enough-length-0123456789abcdefghij"
			code, state := f.signIn(authParams(verifier), "acme-admin")
			if code == "" || state != "st-123" {
				t.Fatalf("code %q state %q", code, state)
			}
			a := f.exchange(code, verifier, testRedirect, testSecret, tc.basic)
			if a.status != http.StatusOK || a.TokenType != "Bearer" || a.AccessToken == "" || a.ExpiresIn <= 0 {
				t.Fatalf("token: %+v", a)
			}
			c := f.verifyIDToken(a.IDToken, tc.alg)
			for k, want := range map[string]interface{}{
				"sub": "acme-admin", "nonce": "n-456", "tenant": "acme", "apikeys_tier": "tenant-admin",
				"email": "ada@acme.example", "aud": testClient,
			} {
				if c[k] != want {
					t.Errorf("claim %s = %v, want %v", k, c[k], want)
				}
			}

			req, _ := http.NewRequest(http.MethodGet, f.p.Issuer()+"/userinfo", nil)
			req.Header.Set("Authorization", "Bearer "+a.AccessToken)
			resp, err := f.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var ui map[string]interface{}
			_ = json.NewDecoder(resp.Body).Decode(&ui)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || ui["sub"] != "acme-admin" || ui["tenant"] != "acme" {
				t.Fatalf("userinfo: HTTP %d %v", resp.StatusCode, ui)
			}
		})
	}
}

func TestPlatformAdminHasNoTenantClaim(t *testing.T) {
	f := newFixture(t, jose.RS256)
	code, _ := f.signIn(authParams("v-0123456789012345678901234567890123456789"), "platform-admin")
	a := f.exchange(code, "v-0123456789012345678901234567890123456789", testRedirect, testSecret, true)
	c := f.verifyIDToken(a.IDToken, jose.RS256)
	if _, ok := c["tenant"]; ok || c["apikeys_tier"] != "platform-admin" {
		t.Fatalf("claims %v", c)
	}
}

func TestCodeWorksOnce(t *testing.T) {
	f := newFixture(t, jose.RS256)
	v := "verifier-0123456789012345678901234567890123456789"
	code, _ := f.signIn(authParams(v), "acme-dev")
	if a := f.exchange(code, v, testRedirect, testSecret, true); a.status != http.StatusOK {
		t.Fatalf("first exchange: %+v", a)
	}
	if a := f.exchange(code, v, testRedirect, testSecret, true); a.status != http.StatusBadRequest || a.Error != "invalid_grant" {
		t.Fatalf("second exchange: %+v", a)
	}
}

func TestCodeExpires(t *testing.T) {
	f := newFixture(t, jose.RS256)
	v := "verifier-0123456789012345678901234567890123456789"
	code, _ := f.signIn(authParams(v), "acme-dev")
	f.clock.add(61 * time.Second)
	if a := f.exchange(code, v, testRedirect, testSecret, true); a.Error != "invalid_grant" {
		t.Fatalf("expired code: %+v", a)
	}
}

func TestPKCEVerifierMustMatch(t *testing.T) {
	f := newFixture(t, jose.RS256)
	v := "verifier-0123456789012345678901234567890123456789"
	code, _ := f.signIn(authParams(v), "acme-admin")
	if a := f.exchange(code, "another-verifier-012345678901234567890123456789", testRedirect, testSecret, true); a.Error != "invalid_grant" {
		t.Fatalf("wrong verifier: %+v", a)
	}
	// A failed try burns the code: whoever tried it first, nobody gets it.
	if a := f.exchange(code, v, testRedirect, testSecret, true); a.Error != "invalid_grant" {
		t.Fatalf("after a wrong verifier: %+v", a)
	}

	code, _ = f.signIn(authParams(v), "acme-admin")
	if a := f.exchange(code, "", testRedirect, testSecret, true); a.Error != "invalid_grant" {
		t.Fatalf("no verifier for a PKCE code: %+v", a)
	}

	// Without PKCE a verifier is refused, not ignored.
	q := authParams(v)
	q.Del("code_challenge")
	q.Del("code_challenge_method")
	code, _ = f.signIn(q, "acme-admin")
	if a := f.exchange(code, v, testRedirect, testSecret, true); a.Error != "invalid_grant" {
		t.Fatalf("verifier without challenge: %+v", a)
	}
	code, _ = f.signIn(q, "acme-admin")
	a := f.exchange(code, "", testRedirect, testSecret, false)
	if a.status != http.StatusOK {
		t.Fatalf("no PKCE: %+v", a)
	}
	if c := f.verifyIDToken(a.IDToken, jose.RS256); c["nonce"] != "n-456" {
		t.Fatalf("nonce %v", c["nonce"])
	}
}

func TestNoNonceNoNonceClaim(t *testing.T) {
	f := newFixture(t, jose.RS256)
	v := "verifier-0123456789012345678901234567890123456789"
	q := authParams(v)
	q.Del("nonce")
	code, _ := f.signIn(q, "acme-admin")
	a := f.exchange(code, v, testRedirect, testSecret, true)
	if c := f.verifyIDToken(a.IDToken, jose.RS256); c["nonce"] != nil {
		t.Fatalf("nonce %v without one asked", c["nonce"])
	}
}

func TestClientAuthentication(t *testing.T) {
	f := newFixture(t, jose.RS256)
	v := "verifier-0123456789012345678901234567890123456789"
	code, _ := f.signIn(authParams(v), "acme-admin")
	for _, basic := range []bool{true, false} {
		a := f.exchange(code, v, testRedirect, "wrong", basic)
		if a.status != http.StatusUnauthorized || a.Error != "invalid_client" {
			t.Fatalf("wrong secret (basic %v): %+v", basic, a)
		}
		if basic && a.authenticateHeaderOnRefuse == "" {
			t.Errorf("401 to basic auth without WWW-Authenticate")
		}
	}
	// A caller who cannot authenticate cannot burn the client's code.
	if a := f.exchange(code, v, testRedirect, testSecret, false); a.status != http.StatusOK {
		t.Fatalf("right secret after wrong ones: %+v", a)
	}
}

func TestTokenRedirectURIMustMatch(t *testing.T) {
	f := newFixture(t, jose.RS256)
	v := "verifier-0123456789012345678901234567890123456789"
	code, _ := f.signIn(authParams(v), "acme-admin")
	if a := f.exchange(code, v, "http://localhost:8250/oidc/callback", testSecret, true); a.Error != "invalid_grant" {
		t.Fatalf("other redirect_uri: %+v", a)
	}
}

func TestAuthorizeRefusals(t *testing.T) {
	f := newFixture(t, jose.RS256)
	v := "verifier-0123456789012345678901234567890123456789"
	// Refused on the provider's own page, never redirected.
	for name, change := range map[string][2]string{
		"unknown client":           {"client_id", "someone-else"},
		"unregistered redirect":    {"redirect_uri", "http://evil.example/cb"},
		"redirect with extra path": {"redirect_uri", testRedirect + "/x"},
	} {
		q := authParams(v)
		q.Set(change[0], change[1])
		resp, _ := f.get("/authorize", q)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("%s: HTTP %d, Location %q", name, resp.StatusCode, resp.Header.Get("Location"))
		}
		q.Set("identity", "acme-admin")
		if resp := f.post("/authorize", q, http.StatusBadRequest); resp.Header.Get("Location") != "" {
			t.Errorf("%s (POST): redirected", name)
		}
	}
	// Refused back to the client with an OAuth error and the state.
	for name, tc := range map[string]struct{ key, value, want string }{
		"no openid":       {"scope", "email", "invalid_scope"},
		"implicit flow":   {"response_type", "id_token", "unsupported_response_type"},
		"plain PKCE":      {"code_challenge_method", "plain", "invalid_request"},
		"short challenge": {"code_challenge", "abc", "invalid_request"},
	} {
		q := authParams(v)
		q.Set(tc.key, tc.value)
		resp, _ := f.get("/authorize", q)
		u, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || u == nil || u.Query().Get("error") != tc.want || u.Query().Get("state") != "st-123" || u.Query().Get("code") != "" {
			t.Errorf("%s: HTTP %d, Location %q", name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// An identity that is not on the list.
	q := authParams(v)
	q.Set("identity", "mallory")
	f.post("/authorize", q, http.StatusBadRequest)
	// Cancel.
	q.Del("identity")
	q.Set("deny", "1")
	resp := f.post("/authorize", q, http.StatusSeeOther)
	if u, _ := url.Parse(resp.Header.Get("Location")); u.Query().Get("error") != "access_denied" {
		t.Errorf("cancel: Location %q", resp.Header.Get("Location"))
	}
}

func TestSignInPageEscapesIdentities(t *testing.T) {
	f := newFixture(t, jose.RS256, Identity{Subject: `x"><script>`, Name: "<b>Mal</b>", Email: "m@x", Tier: "tenant-admin", Tenant: "acme"})
	resp, body := f.get("/authorize", authParams("verifier-0123456789012345678901234567890123456789"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	if strings.Contains(body, "<b>Mal") || strings.Contains(body, `"><script>`) {
		t.Fatalf("markup not escaped: %s", body)
	}
	if !strings.Contains(body, "&lt;b&gt;Mal") {
		t.Fatalf("name missing: %s", body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("headers: CSP %q, Cache-Control %q", csp, resp.Header.Get("Cache-Control"))
	}
}

func TestUserinfoRefusesUnknownToken(t *testing.T) {
	f := newFixture(t, jose.RS256)
	req, _ := http.NewRequest(http.MethodGet, f.p.Issuer()+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer nope")
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	ok := Config{Issuer: "http://127.0.0.1:1", Client: Client{ID: "c", Secret: "s", RedirectURIs: []string{testRedirect}}, Identities: DemoIdentities()}
	for name, change := range map[string]func(*Config){
		"no secret":       func(c *Config) { c.Client.Secret = "" },
		"no redirect":     func(c *Config) { c.Client.RedirectURIs = nil },
		"relative redir":  func(c *Config) { c.Client.RedirectURIs = []string{"/cb"} },
		"issuer query":    func(c *Config) { c.Issuer = "http://x/?a=b" },
		"no identities":   func(c *Config) { c.Identities = nil },
		"duplicate sub":   func(c *Config) { c.Identities = append(DemoIdentities(), DemoIdentities()[0]) },
		"no tier":         func(c *Config) { c.Identities = []Identity{{Subject: "a"}} },
		"unsupported alg": func(c *Config) { c.Alg = jose.HS256 },
	} {
		c := ok
		c.Client.RedirectURIs = append([]string(nil), ok.Client.RedirectURIs...)
		change(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(ok); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

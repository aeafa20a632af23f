package acceptance

// OIDC sign-in as the portal does it: Vault's oidc auth method, set up by
// bootstrap/auth-oidc.sh against the stand-in identity provider
// (scripts/devidp), driven through the whole authorization code flow by a
// plain HTTP client that clicks the identity's button on the provider's
// page and catches the redirect to the portal's callback.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
	"golang.org/x/net/html"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/devidp/idp"
)

const (
	oidcClientID = "vault-apikeys"
	// The portal's callback for auth-oidc.sh's default PORTAL_URL. Nothing
	// listens there: the test catches the redirect instead of following it.
	portalCallback = "http://127.0.0.1:8300/auth/oidc/callback"
)

// oidcInstall is an install with OIDC sign-in on its own oidc mount.
type oidcInstall struct {
	*install
	oidcPath string
	issuer   string
	secret   string
	browser  *http.Client // a browser that does not follow redirects
}

func newOIDCInstall(t *testing.T) *oidcInstall {
	t.Helper()
	in := newInstall(t)
	o := &oidcInstall{
		install:  in,
		oidcPath: "oidc-" + in.mount,
		browser:  &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	o.secret = hex.EncodeToString(b)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.issuer = "http://" + ln.Addr().String()
	ids := append(idp.DemoIdentities(),
		// A tenant claim that is a policy glob: the policies paste it into
		// the path, the plugin's guard must catch it.
		idp.Identity{Subject: "mallory", Name: "Mallory", Email: "m@evil.example", Tenant: "+", Tier: "tenant-developer"},
		// A machine tier: the portal role must not admit it.
		idp.Identity{Subject: "gw", Name: "Gateway", Email: "gw@acme.example", Tenant: "acme", Tier: "gateway"},
	)
	p, err := idp.New(idp.Config{
		Issuer:     o.issuer,
		Client:     idp.Client{ID: oidcClientID, Secret: o.secret, RedirectURIs: []string{portalCallback, "http://localhost:8250/oidc/callback"}},
		Identities: ids,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: p.Handler()}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	secretFile := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(secretFile, []byte(o.secret), 0o600); err != nil {
		t.Fatal(err)
	}
	c := srv.Client
	t.Cleanup(func() {
		_ = c.Sys().DisableAuth(o.oidcPath)
		for _, tier := range []string{"tenant-admin", "tenant-developer", "platform-admin"} {
			_, _ = c.Logical().Delete("identity/group/name/" + in.prefix + "apikeys-" + tier + "-via-" + o.oidcPath)
		}
	})
	runBootstrap(t, "auth-oidc.sh", "OIDC_PATH="+o.oidcPath, "OIDC_DISCOVERY_URL="+o.issuer,
		"OIDC_CLIENT_ID="+oidcClientID, "OIDC_CLIENT_SECRET_FILE="+secretFile,
		"POLICY_PREFIX="+in.prefix, "PLATFORM_ADMIN_GROUP="+in.adminGroup)
	// The policies again, now that the oidc mount's accessor exists.
	runBootstrap(t, "policies.sh", "APIKEYS_MOUNT="+in.mount, "JWT_PATH="+in.jwtPath,
		"OIDC_PATH="+o.oidcPath, "POLICY_PREFIX="+in.prefix)

	for _, tenant := range []string{"acme", "globex"} {
		write(t, c, in.mount+"/tenants/"+tenant, map[string]interface{}{"allowed_environments": "live,test"})
		write(t, c, in.mount+"/tenants/"+tenant+"/roles/web", map[string]interface{}{"scopes": "read", "environment": "live", "ttl": "1h"})
		write(t, c, in.mount+"/tenants/"+tenant+"/roles/dev-sandbox", map[string]interface{}{"scopes": "read", "environment": "test", "ttl": "1h"})
	}
	return o
}

// anonymous is a Vault client without a token, like the portal before
// sign-in.
func anonymous(t *testing.T) *api.Client {
	t.Helper()
	c, err := srv.Client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	return c
}

var errEmptyAuthURL = errors.New("empty auth_url from Vault")

// authURL asks Vault for the provider's URL, as the portal does.
func (o *oidcInstall) authURL(redirect string) (string, error) {
	s, err := anonymous(o.t).Logical().Write("auth/"+o.oidcPath+"/oidc/auth_url", map[string]interface{}{
		"role": "portal", "redirect_uri": redirect,
	})
	if err != nil {
		return "", err
	}
	// A redirect_uri the role does not allow gets an empty auth_url
	// (and a warning in Vault's log), not an error.
	u, _ := s.Data["auth_url"].(string)
	if u == "" {
		return "", errEmptyAuthURL
	}
	return u, nil
}

// signIn opens the provider's page at authURL, clicks sub's button and
// returns the code and state of the redirect to the portal's callback.
func (o *oidcInstall) signIn(authURL, sub string) (code, state string) {
	o.t.Helper()
	if !strings.HasPrefix(authURL, o.issuer+"/authorize?") {
		o.t.Fatalf("auth_url %s is not the provider's authorize endpoint", authURL)
	}
	resp, err := o.browser.Get(authURL)
	if err != nil {
		o.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		o.t.Fatalf("sign-in page: HTTP %d: %s", resp.StatusCode, body)
	}
	action, form, buttons := parseForm(o.t, string(body))
	if !slices.Contains(buttons, sub) {
		o.t.Fatalf("sign-in page offers %v, not %s", buttons, sub)
	}
	target, err := url.Parse(authURL)
	if err != nil {
		o.t.Fatal(err)
	}
	target, err = target.Parse(action)
	if err != nil {
		o.t.Fatal(err)
	}
	form.Set("identity", sub)
	resp, err = o.browser.PostForm(target.String(), form)
	if err != nil {
		o.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		o.t.Fatalf("sign-in: HTTP %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		o.t.Fatal(err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != portalCallback {
		o.t.Fatalf("redirected to %s, want the portal's callback %s", got, portalCallback)
	}
	code, state = loc.Query().Get("code"), loc.Query().Get("state")
	if code == "" || state == "" {
		o.t.Fatalf("callback without code or state: %s", loc.Query())
	}
	return code, state
}

// parseForm reads the sign-in page's form: its action, hidden fields, and
// the values of its identity buttons.
func parseForm(t *testing.T, page string) (action string, hidden url.Values, buttons []string) {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	hidden = url.Values{}
	attr := func(n *html.Node, k string) string {
		for _, a := range n.Attr {
			if a.Key == k {
				return a.Val
			}
		}
		return ""
	}
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		switch {
		case n.Data == "form":
			action = attr(n, "action")
		case n.Data == "input" && attr(n, "type") == "hidden":
			hidden.Set(attr(n, "name"), attr(n, "value"))
		case n.Data == "button" && attr(n, "name") == "identity":
			buttons = append(buttons, attr(n, "value"))
		}
	}
	if action == "" {
		t.Fatalf("no form on the sign-in page: %s", page)
	}
	return action, hidden, buttons
}

// callback hands code and state to Vault, as the portal's callback does.
func (o *oidcInstall) callback(code, state string) (*api.Secret, error) {
	return anonymous(o.t).Logical().ReadWithData("auth/"+o.oidcPath+"/oidc/callback", map[string][]string{
		"state": {state}, "code": {code},
	})
}

// login signs sub in through the whole flow and returns the Vault token.
func (o *oidcInstall) login(sub string) string {
	o.t.Helper()
	u, err := o.authURL(portalCallback)
	if err != nil {
		o.t.Fatal(err)
	}
	s, err := o.callback(o.signIn(u, sub))
	if err != nil {
		o.t.Fatalf("oidc callback for %s: %v", sub, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		o.t.Fatalf("oidc callback for %s gave no token", sub)
	}
	return s.Auth.ClientToken
}

// exchange posts a code to the provider's token endpoint directly, with
// client_secret_basic, as someone holding the code and a secret would.
func (o *oidcInstall) exchange(code, secret string) (int, string) {
	o.t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {portalCallback}}
	req, _ := http.NewRequest(http.MethodPost, o.issuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(oidcClientID, secret)
	resp, err := o.browser.Do(req)
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Error
}

func identityPolicies(t *testing.T, token string) []string {
	t.Helper()
	a := call(t, token, http.MethodGet, "auth/token/lookup-self", nil, nil)
	if !a.ok() {
		t.Fatalf("lookup-self: %v", a)
	}
	var out []string
	raw, _ := a.data["identity_policies"].([]interface{})
	for _, p := range raw {
		out = append(out, p.(string))
	}
	return out
}

func wantCode(t *testing.T, what string, a answer, status int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: %v, want HTTP %d", what, a, status)
	}
}

func (o *oidcInstall) enforce(on bool) {
	o.t.Helper()
	write(o.t, srv.Client, o.mount+"/config", map[string]interface{}{"enforce_entity_tenant": on})
}

func TestOIDCSignInTenantAdmin(t *testing.T) {
	o := newOIDCInstall(t)
	m := o.mount
	token := o.login("acme-admin")
	if pol := identityPolicies(t, token); !slices.Contains(pol, o.policy("apikeys-tenant-admin")) {
		t.Fatalf("identity policies %v lack %s", pol, o.policy("apikeys-tenant-admin"))
	}
	// The tenant is the OIDC alias's metadata, from the tenant claim.
	self := call(t, token, http.MethodGet, "auth/token/lookup-self", nil, nil)
	if meta, _ := self.data["meta"].(map[string]interface{}); meta["tenant"] != "acme" {
		t.Fatalf("token meta %v, want tenant acme", self.data["meta"])
	}

	for _, on := range []bool{false, true} {
		o.enforce(on)
		issued := call(t, token, http.MethodPost, m+"/tenants/acme/creds/web", map[string]interface{}{"name": "oidc"}, nil)
		wantCode(t, "issue an acme key", issued, http.StatusOK)
		keyID, _ := issued.data["key_id"].(string)
		if apiKey, _ := issued.data["api_key"].(string); apiKey == "" || keyID == "" {
			t.Fatalf("issued %v", issued.data)
		}
		list := call(t, token, "LIST", m+"/tenants/acme/keys/", nil, nil)
		wantCode(t, "list acme's keys", list, http.StatusOK)
		if !strings.Contains(string(list.raw), keyID) {
			t.Fatalf("acme's keys %s lack %s", list.raw, keyID)
		}
		for _, p := range []struct{ method, path string }{
			{"LIST", m + "/tenants/globex/keys/"},
			{http.MethodGet, m + "/tenants/globex/creds/web"},
			{http.MethodGet, m + "/tenants/globex/roles/web"},
		} {
			wantCode(t, p.method+" "+p.path, call(t, token, p.method, p.path, nil, nil), http.StatusForbidden)
		}
	}
}

func TestOIDCSignInDeveloperAndPlatformAdmin(t *testing.T) {
	o := newOIDCInstall(t)
	m := o.mount
	o.enforce(true)

	dev := o.login("acme-dev")
	pol := identityPolicies(t, dev)
	if !slices.Contains(pol, o.policy("apikeys-tenant-developer")) || slices.Contains(pol, o.policy("apikeys-tenant-admin")) {
		t.Fatalf("developer's identity policies %v", pol)
	}
	wantCode(t, "developer issues dev-sandbox", call(t, dev, http.MethodGet, m+"/tenants/acme/creds/dev-sandbox", nil, nil), http.StatusOK)
	wantCode(t, "developer issues web", call(t, dev, http.MethodGet, m+"/tenants/acme/creds/web", nil, nil), http.StatusForbidden)
	wantCode(t, "developer reads globex", call(t, dev, http.MethodGet, m+"/tenants/globex/creds/dev-sandbox", nil, nil), http.StatusForbidden)

	// globex's admin is refused acme: the same role, another tenant claim.
	globex := o.login("globex-admin")
	wantCode(t, "globex admin lists globex", call(t, globex, http.MethodPost, m+"/tenants/globex/creds/web", nil, nil), http.StatusOK)
	wantCode(t, "globex admin lists acme", call(t, globex, "LIST", m+"/tenants/acme/keys/", nil, nil), http.StatusForbidden)

	// The platform admin: policy and guard through the nested group.
	admin := o.login("platform-admin")
	if pol := identityPolicies(t, admin); !slices.Contains(pol, o.policy("apikeys-platform-admin")) {
		t.Fatalf("platform admin's identity policies %v", pol)
	}
	for _, tenant := range []string{"acme", "globex"} {
		wantCode(t, "platform admin reads "+tenant, call(t, admin, http.MethodGet, m+"/tenants/"+tenant, nil, nil), http.StatusOK)
	}

	// A machine tier cannot sign in through the portal role.
	u, err := o.authURL(portalCallback)
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.callback(o.signIn(u, "gw"))
	wantStatus(t, err, http.StatusBadRequest, "claim")
}

// The tier policy pastes a tenant claim of "+" into its path, so Vault's ACL
// lets mallory reach globex; the plugin's guard, reading the OIDC alias,
// does not.
func TestOIDCTenantGuardCatchesAGlobClaim(t *testing.T) {
	o := newOIDCInstall(t)
	m := o.mount
	token := o.login("mallory")
	write(t, srv.Client, m+"/tenants/globex/creds/dev-sandbox", nil)
	o.enforce(false)
	wantCode(t, "ACL with the glob claim", call(t, token, "LIST", m+"/tenants/globex/keys/", nil, nil), http.StatusOK)
	o.enforce(true)
	a := call(t, token, "LIST", m+"/tenants/globex/keys/", nil, nil)
	wantCode(t, "guard with the glob claim", a, http.StatusForbidden)
	wantCode(t, "guard on acme", call(t, token, http.MethodGet, m+"/tenants/acme/creds/dev-sandbox", nil, nil), http.StatusForbidden)
}

func TestOIDCProviderRefusals(t *testing.T) {
	o := newOIDCInstall(t)

	// Vault refuses a callback its role does not allow...
	if _, err := o.authURL("http://evil.example/auth/oidc/callback"); !errors.Is(err, errEmptyAuthURL) {
		t.Fatalf("auth_url for a redirect_uri the role does not allow: %v", err)
	}
	// ...and the provider refuses one not registered, on its own page.
	u, err := o.authURL(portalCallback)
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := url.Parse(u)
	q := bad.Query()
	q.Set("redirect_uri", "http://evil.example/auth/oidc/callback")
	bad.RawQuery = q.Encode()
	resp, err := o.browser.Get(bad.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Fatalf("unregistered redirect_uri: HTTP %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// A wrong client secret gets nothing, and does not burn the code.
	code, state := o.signIn(u, "acme-admin")
	if status, e := o.exchange(code, "not-the-secret"); status != http.StatusUnauthorized || e != "invalid_client" {
		t.Fatalf("wrong client secret: HTTP %d %s", status, e)
	}
	s, err := o.callback(code, state)
	if err != nil || s == nil || s.Auth == nil {
		t.Fatalf("callback after a refused exchange: %v", err)
	}
	// The code has been used: neither the provider nor Vault take it again.
	if status, e := o.exchange(code, o.secret); status != http.StatusBadRequest || e != "invalid_grant" {
		t.Fatalf("replayed code at the provider: HTTP %d %s", status, e)
	}
	_, err = o.callback(code, state)
	wantStatus(t, err, http.StatusBadRequest)

	// A code someone else tried first is dead for Vault too (and that try,
	// without Vault's PKCE verifier, got nothing).
	u, err = o.authURL(portalCallback)
	if err != nil {
		t.Fatal(err)
	}
	code, state = o.signIn(u, "acme-admin")
	if status, e := o.exchange(code, o.secret); status != http.StatusBadRequest || e != "invalid_grant" {
		t.Fatalf("exchange without the PKCE verifier: HTTP %d %s", status, e)
	}
	_, err = o.callback(code, state)
	wantStatus(t, err, http.StatusBadRequest, "exchanging")
}

// Package idp is the stand-in identity provider of make dev and the tests: a
// small but real OpenID Connect provider (authorization code flow, PKCE S256,
// nonce, client_secret_basic and client_secret_post, RS256 or ES256 ID
// tokens), so that Vault's oidc auth method and the portal run the same
// browser redirect flow against it as against a company's IdP. Its users are
// a fixed list of identities, each a button on the sign-in page: one click
// signs in, with no password, so it must only ever listen on loopback.
package idp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Identity is one person the provider can sign in. Tenant and Tier become
// the tenant and apikeys_tier claims that Vault's oidc role maps to the
// alias metadata and to the tier's identity group.
type Identity struct {
	Subject string `json:"sub"`
	Name    string `json:"name"`
	Email   string `json:"email"`
	Tenant  string `json:"tenant,omitempty"`
	Tier    string `json:"apikeys_tier"`
}

// DemoIdentities match bootstrap/demo.sh's tenants acme and globex.
func DemoIdentities() []Identity {
	return []Identity{
		{Subject: "acme-admin", Name: "Ada Admin (Acme)", Email: "ada@acme.example", Tenant: "acme", Tier: "tenant-admin"},
		{Subject: "acme-dev", Name: "Dev Eloper (Acme)", Email: "dev@acme.example", Tenant: "acme", Tier: "tenant-developer"},
		{Subject: "globex-admin", Name: "Gus Admin (Globex)", Email: "gus@globex.example", Tenant: "globex", Tier: "tenant-admin"},
		{Subject: "platform-admin", Name: "Pat Platform", Email: "pat@platform.example", Tier: "platform-admin"},
	}
}

// Client is the one registered relying party (Vault's oidc auth mount).
type Client struct {
	ID           string
	Secret       string
	RedirectURIs []string
}

// Config of a Provider. Issuer, Client and Identities are required.
type Config struct {
	// Issuer is the provider's URL as Vault reaches it (http://127.0.0.1:8202);
	// the endpoints live under its path.
	Issuer     string
	Client     Client
	Identities []Identity
	// Alg is RS256 (default) or ES256; Key, if set, must match it.
	Alg jose.SignatureAlgorithm
	Key crypto.Signer
	// CodeTTL: how long an authorization code may wait for its exchange
	// (default 1 minute). TokenTTL: ID and access tokens (default 10 minutes).
	CodeTTL  time.Duration
	TokenTTL time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
}

// Provider serves the OpenID Connect endpoints.
type Provider struct {
	cfg      Config
	base     string // issuer without a trailing slash
	prefix   string // the issuer's path
	signer   jose.Signer
	jwks     jose.JSONWebKeySet
	secret   [32]byte // SHA-256 of the client secret, compared in constant time
	log      *slog.Logger
	mu       sync.Mutex
	codes    map[string]*grant
	accesses map[string]*access
}

type grant struct {
	identity      Identity
	redirectURI   string
	nonce         string
	challenge     string
	scope         string
	expires       time.Time
	authenticated time.Time
}

type access struct {
	identity Identity
	expires  time.Time
}

// New checks cfg and makes a provider; without a Key it generates one.
func New(cfg Config) (*Provider, error) {
	u, err := url.Parse(cfg.Issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("issuer %q: want an http(s) URL without query or fragment", cfg.Issuer)
	}
	if cfg.Client.ID == "" || cfg.Client.Secret == "" {
		return nil, errors.New("client id and client secret are required")
	}
	if len(cfg.Client.RedirectURIs) == 0 {
		return nil, errors.New("at least one redirect URI is required")
	}
	for _, r := range cfg.Client.RedirectURIs {
		ru, err := url.Parse(r)
		if err != nil || ru.Scheme == "" || ru.Host == "" || ru.Fragment != "" {
			return nil, fmt.Errorf("redirect URI %q: want an absolute URL without fragment", r)
		}
	}
	if len(cfg.Identities) == 0 {
		return nil, errors.New("at least one identity is required")
	}
	seen := map[string]bool{}
	for i, id := range cfg.Identities {
		if id.Subject == "" || id.Tier == "" {
			return nil, fmt.Errorf("identity %d: sub and apikeys_tier are required", i)
		}
		if seen[id.Subject] {
			return nil, fmt.Errorf("identity %q listed twice", id.Subject)
		}
		seen[id.Subject] = true
	}
	if cfg.Alg == "" {
		cfg.Alg = jose.RS256
	}
	if cfg.Key == nil {
		switch cfg.Alg {
		case jose.RS256:
			cfg.Key, err = rsa.GenerateKey(rand.Reader, 2048)
		case jose.ES256:
			cfg.Key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		default:
			return nil, fmt.Errorf("alg %q: want RS256 or ES256", cfg.Alg)
		}
		if err != nil {
			return nil, fmt.Errorf("generate the signing key: %w", err)
		}
	}
	switch k := cfg.Key.(type) {
	case *rsa.PrivateKey:
		if cfg.Alg != jose.RS256 {
			return nil, fmt.Errorf("an RSA key signs RS256, not %s", cfg.Alg)
		}
	case *ecdsa.PrivateKey:
		if cfg.Alg != jose.ES256 || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("an ECDSA key signs ES256 on P-256, not %s", cfg.Alg)
		}
	default:
		return nil, fmt.Errorf("signing key type %T: want RSA or ECDSA", cfg.Key)
	}
	if cfg.CodeTTL <= 0 {
		cfg.CodeTTL = time.Minute
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	pub := jose.JSONWebKey{Key: cfg.Key.Public(), Algorithm: string(cfg.Alg), Use: "sig"}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("key thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: cfg.Alg, Key: jose.JSONWebKey{Key: cfg.Key, KeyID: pub.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	p := &Provider{
		cfg:      cfg,
		base:     strings.TrimSuffix(cfg.Issuer, "/"),
		prefix:   strings.TrimSuffix(u.Path, "/"),
		signer:   signer,
		jwks:     jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}},
		secret:   sha256.Sum256([]byte(cfg.Client.Secret)),
		log:      cfg.Logger,
		codes:    map[string]*grant{},
		accesses: map[string]*access{},
	}
	return p, nil
}

// Issuer is the iss of the provider's tokens (without a trailing slash).
func (p *Provider) Issuer() string { return p.base }

// PublicKeys is the JWKS the provider publishes.
func (p *Provider) PublicKeys() jose.JSONWebKeySet { return p.jwks }

// Handler serves the endpoints under the issuer's path.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+p.prefix+"/.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET "+p.prefix+"/jwks", p.keys)
	mux.HandleFunc("GET "+p.prefix+"/authorize", p.authorizePage)
	mux.HandleFunc("POST "+p.prefix+"/authorize", p.authorizeSubmit)
	mux.HandleFunc("POST "+p.prefix+"/token", p.token)
	mux.HandleFunc("GET "+p.prefix+"/userinfo", p.userinfo)
	mux.HandleFunc("POST "+p.prefix+"/userinfo", p.userinfo)
	return http.MaxBytesHandler(mux, 64<<10)
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"issuer":                                p.base,
		"authorization_endpoint":                p.base + "/authorize",
		"token_endpoint":                        p.base + "/token",
		"userinfo_endpoint":                     p.base + "/userinfo",
		"jwks_uri":                              p.base + "/jwks",
		"response_types_supported":              []string{"code"},
		"response_modes_supported":              []string{"query"},
		"grant_types_supported":                 []string{"authorization_code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(p.cfg.Alg)},
		"scopes_supported":                      []string{"openid", "profile", "email"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"code_challenge_methods_supported":      []string{"S256"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "name", "email", "email_verified", "tenant", "apikeys_tier"},
	})
}

func (p *Provider) keys(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, p.jwks)
}

// authRequest is what /authorize is asked, from the query (GET) or the
// sign-in form (POST), which carries it back in hidden fields and so is
// checked again in full.
type authRequest struct {
	ClientID, RedirectURI, ResponseType, Scope, State, Nonce, Challenge, ChallengeMethod string
}

func readAuthRequest(v url.Values) authRequest {
	return authRequest{
		ClientID: v.Get("client_id"), RedirectURI: v.Get("redirect_uri"),
		ResponseType: v.Get("response_type"), Scope: v.Get("scope"), State: v.Get("state"),
		Nonce: v.Get("nonce"), Challenge: v.Get("code_challenge"), ChallengeMethod: v.Get("code_challenge_method"),
	}
}

// check validates the request. A bad client or redirect URI is answered on
// the provider's own page (redirecting there would make the provider an open
// redirector); anything else goes back to the client as an OAuth error.
func (p *Provider) check(w http.ResponseWriter, r *http.Request, ar authRequest) bool {
	if ar.ClientID != p.cfg.Client.ID {
		p.log.Warn("authorize refused", "reason", "unknown client_id")
		page(w, http.StatusBadRequest, "Unknown client_id.")
		return false
	}
	if !slices.Contains(p.cfg.Client.RedirectURIs, ar.RedirectURI) {
		p.log.Warn("authorize refused", "reason", "redirect_uri not registered", "redirect_uri", ar.RedirectURI)
		page(w, http.StatusBadRequest, "redirect_uri is not registered for this client.")
		return false
	}
	bad := func(code, desc string) bool {
		p.log.Warn("authorize refused", "reason", desc)
		redirectError(w, r, ar, code, desc)
		return false
	}
	if ar.ResponseType != "code" {
		return bad("unsupported_response_type", "response_type must be code")
	}
	if !slices.Contains(strings.Fields(ar.Scope), "openid") {
		return bad("invalid_scope", "scope must contain openid")
	}
	if ar.Challenge != "" && ar.ChallengeMethod != "S256" {
		return bad("invalid_request", "code_challenge_method must be S256")
	}
	if ar.Challenge == "" && ar.ChallengeMethod != "" {
		return bad("invalid_request", "code_challenge_method without code_challenge")
	}
	if ar.Challenge != "" && !validChallenge(ar.Challenge) {
		return bad("invalid_request", "code_challenge must be 43 base64url characters")
	}
	return true
}

func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil && len(b) == sha256.Size
}

// pageCSS is the sign-in page's only style, allowed by its hash in the
// Content-Security-Policy, so the page needs no 'unsafe-inline'.
const pageCSS = `body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}
button{display:block;width:100%;text-align:left;margin:.5rem 0;padding:.75rem;font:inherit;border:1px solid #888;border-radius:.4rem;background:#f6f6f6;cursor:pointer}
button:focus,button:hover{background:#e4ecff;outline:2px solid #2a5bd7}
small{color:#555}`

var pageCSSHash = func() string {
	sum := sha256.Sum256([]byte(pageCSS))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}()

var signInPage = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in: stand-in identity provider</title>
<style>` + pageCSS + `</style></head><body>
<h1>Sign in</h1>
<p>Stand-in identity provider for development: pick who you are. There is no password.</p>
<form method="post" action="{{.Action}}">
{{range $k, $v := .Hidden}}<input type="hidden" name="{{$k}}" value="{{$v}}">
{{end}}{{range .Identities}}<button type="submit" name="identity" value="{{.Subject}}">{{.Name}}<br><small>{{.Email}} · {{.Tier}}{{if .Tenant}} of {{.Tenant}}{{end}}</small></button>
{{end}}<button type="submit" name="deny" value="1">Cancel</button>
</form></body></html>
`))

func (p *Provider) authorizePage(w http.ResponseWriter, r *http.Request) {
	ar := readAuthRequest(r.URL.Query())
	if !p.check(w, r, ar) {
		return
	}
	hidden := map[string]string{
		"client_id": ar.ClientID, "redirect_uri": ar.RedirectURI, "response_type": ar.ResponseType,
		"scope": ar.Scope, "state": ar.State, "nonce": ar.Nonce,
		"code_challenge": ar.Challenge, "code_challenge_method": ar.ChallengeMethod,
	}
	secureHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := signInPage.Execute(w, map[string]interface{}{
		"Action": p.prefix + "/authorize", "Hidden": hidden, "Identities": p.cfg.Identities,
	}); err != nil {
		p.log.Error("render the sign-in page", "error", err)
	}
}

func (p *Provider) authorizeSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		page(w, http.StatusBadRequest, "The form could not be read.")
		return
	}
	ar := readAuthRequest(r.PostForm)
	if !p.check(w, r, ar) {
		return
	}
	if r.PostForm.Get("deny") != "" {
		redirectError(w, r, ar, "access_denied", "the user cancelled the sign-in")
		return
	}
	sub := r.PostForm.Get("identity")
	i := slices.IndexFunc(p.cfg.Identities, func(id Identity) bool { return id.Subject == sub })
	if i < 0 {
		page(w, http.StatusBadRequest, "Unknown identity.")
		return
	}
	code, err := randomToken()
	if err != nil {
		p.log.Error("make an authorization code", "error", err)
		page(w, http.StatusInternalServerError, "Could not make an authorization code.")
		return
	}
	now := p.cfg.Now()
	p.mu.Lock()
	p.sweep(now)
	p.codes[code] = &grant{
		identity: p.cfg.Identities[i], redirectURI: ar.RedirectURI, nonce: ar.Nonce,
		challenge: ar.Challenge, scope: ar.Scope, expires: now.Add(p.cfg.CodeTTL), authenticated: now,
	}
	p.mu.Unlock()
	p.log.Info("signed in", "sub", sub, "client_id", ar.ClientID, "pkce", ar.Challenge != "")
	q := url.Values{"code": {code}}
	if ar.State != "" {
		q.Set("state", ar.State)
	}
	http.Redirect(w, r, withQuery(ar.RedirectURI, q), http.StatusSeeOther)
}

// sweep drops expired codes and tokens; p.mu is held.
func (p *Provider) sweep(now time.Time) {
	for k, g := range p.codes {
		if now.After(g.expires) {
			delete(p.codes, k)
		}
	}
	for k, a := range p.accesses {
		if now.After(a.expires) {
			delete(p.accesses, k)
		}
	}
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", "the form could not be read")
		return
	}
	if !p.clientAuthenticated(w, r) {
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "authorization_code" {
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code")
		return
	}
	code := r.PostForm.Get("code")
	now := p.cfg.Now()
	// The code is taken out before it is checked: whatever happens next, it
	// never works a second time.
	p.mu.Lock()
	g := p.codes[code]
	delete(p.codes, code)
	p.mu.Unlock()
	refuse := func(desc string) {
		p.log.Warn("token refused", "reason", desc)
		tokenError(w, http.StatusBadRequest, "invalid_grant", desc)
	}
	switch {
	case code == "" || g == nil:
		refuse("unknown, used or expired code")
		return
	case now.After(g.expires):
		refuse("unknown, used or expired code")
		return
	case r.PostForm.Get("redirect_uri") != g.redirectURI:
		refuse("redirect_uri does not match the authorization request")
		return
	}
	verifier := r.PostForm.Get("code_verifier")
	if g.challenge != "" {
		sum := sha256.Sum256([]byte(verifier))
		if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.challenge)) != 1 {
			refuse("code_verifier does not match the code_challenge")
			return
		}
	} else if verifier != "" {
		refuse("code_verifier given but no code_challenge was")
		return
	}

	claims := p.claims(g.identity)
	claims["iss"] = p.base
	claims["aud"] = p.cfg.Client.ID
	claims["iat"] = now.Unix()
	claims["exp"] = now.Add(p.cfg.TokenTTL).Unix()
	claims["auth_time"] = g.authenticated.Unix()
	if g.nonce != "" {
		claims["nonce"] = g.nonce
	}
	idToken, err := jwt.Signed(p.signer).Claims(claims).Serialize()
	if err != nil {
		p.log.Error("sign the ID token", "error", err)
		tokenError(w, http.StatusInternalServerError, "server_error", "could not sign the ID token")
		return
	}
	at, err := randomToken()
	if err != nil {
		p.log.Error("make an access token", "error", err)
		tokenError(w, http.StatusInternalServerError, "server_error", "could not make an access token")
		return
	}
	p.mu.Lock()
	p.accesses[at] = &access{identity: g.identity, expires: now.Add(p.cfg.TokenTTL)}
	p.mu.Unlock()
	p.log.Info("issued tokens", "sub", g.identity.Subject, "client_id", p.cfg.Client.ID)
	writeJSON(w, http.StatusOK, map[string]interface{}{
		"access_token": at, "token_type": "Bearer", "expires_in": int(p.cfg.TokenTTL.Seconds()),
		"id_token": idToken, "scope": g.scope,
	})
}

// clientAuthenticated checks client_secret_basic or client_secret_post (one
// of them, as RFC 6749 2.3 wants) and answers 401 otherwise.
func (p *Provider) clientAuthenticated(w http.ResponseWriter, r *http.Request) bool {
	id, secret, basic := r.BasicAuth()
	if basic {
		// client_secret_basic form-encodes both before base64 (RFC 6749 2.3.1).
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil || r.PostForm.Has("client_secret") {
			tokenError(w, http.StatusBadRequest, "invalid_request", "bad or double client authentication")
			return false
		}
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	sum := sha256.Sum256([]byte(secret))
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(p.cfg.Client.ID)) == 1
	secretOK := subtle.ConstantTimeCompare(sum[:], p.secret[:]) == 1
	if secret == "" || !idOK || !secretOK {
		p.log.Warn("token refused", "reason", "client authentication failed", "basic", basic)
		if basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		}
		tokenError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return false
	}
	return true
}

func (p *Provider) claims(id Identity) map[string]interface{} {
	c := map[string]interface{}{
		"sub": id.Subject, "name": id.Name, "email": id.Email, "email_verified": id.Email != "",
		"apikeys_tier": id.Tier,
	}
	if id.Tenant != "" {
		c["tenant"] = id.Tenant
	}
	return c
}

func (p *Provider) userinfo(w http.ResponseWriter, r *http.Request) {
	at, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p.mu.Lock()
	a := p.accesses[strings.TrimSpace(at)]
	p.mu.Unlock()
	if !ok || a == nil || p.cfg.Now().After(a.expires) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		tokenError(w, http.StatusUnauthorized, "invalid_token", "unknown or expired access token")
		return
	}
	writeJSON(w, http.StatusOK, p.claims(a.identity))
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func withQuery(base string, q url.Values) string {
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + q.Encode()
}

func redirectError(w http.ResponseWriter, r *http.Request, ar authRequest, code, desc string) {
	q := url.Values{"error": {code}, "error_description": {desc}}
	if ar.State != "" {
		q.Set("state", ar.State)
	}
	http.Redirect(w, r, withQuery(ar.RedirectURI, q), http.StatusSeeOther)
}

func secureHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src "+pageCSSHash+"; form-action 'self' http: https:; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in error</title></head>
<body><h1>Sign-in error</h1><p>{{.}}</p></body></html>
`))

func page(w http.ResponseWriter, status int, msg string) {
	secureHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = errorPage.Execute(w, msg)
}

func tokenError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

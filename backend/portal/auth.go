package portal

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/hashicorp/vault/api"
)

// vaultTimeout bounds one sign-in's calls to Vault.
const vaultTimeout = 15 * time.Second

// usernameRE is what the sign-in form accepts (Vault's userpass names are
// lower-cased by Vault; this only keeps the URL segment plain).
var usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

type signinData struct {
	CSRF     string
	OIDC     bool
	Error    string
	Username string
	Ended    bool
}

// signinPage shows the sign-in forms with a fresh pre-session CSRF token
// (double submit: the cookie and the hidden field must match).
func (s *Server) signinPage(w http.ResponseWriter, r *http.Request) {
	s.renderSignin(w, r, http.StatusOK, signinData{Ended: r.URL.Query().Get("ended") != ""})
}

func (s *Server) renderSignin(w http.ResponseWriter, r *http.Request, status int, d signinData) {
	d.CSRF = randomToken()
	d.OIDC = s.cfg.OIDCRole != ""
	http.SetCookie(w, s.cookie(preCookie, d.CSRF, http.SameSiteStrictMode, 3600))
	s.render(w, r, nil, "signin.html", "Sign in", status, d)
}

func (s *Server) signinUserpass(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.formError(w, r, nil, err)
		return
	}
	c, err := r.Cookie(s.cookieName(preCookie))
	if err != nil || !equalSecret(c.Value, r.PostForm.Get(csrfField)) {
		s.message(w, r, nil, http.StatusForbidden, "Request refused", "The sign-in form was missing its security token or it did not match. Reload the sign-in page and try again.")
		return
	}
	user := r.PostForm.Get("username")
	pw := r.PostForm.Get("password")
	switch {
	case user == "":
		s.renderSignin(w, r, http.StatusBadRequest, signinData{Error: "username is required"})
		return
	case !usernameRE.MatchString(user):
		s.renderSignin(w, r, http.StatusBadRequest, signinData{Error: "username may hold only letters, digits and . _ @ -"})
		return
	case pw == "":
		s.renderSignin(w, r, http.StatusBadRequest, signinData{Error: "password is required", Username: user})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), vaultTimeout)
	defer cancel()
	sec, err := s.vault.Logical().WriteWithContext(ctx, "auth/"+s.cfg.UserpassMount+"/login/"+url.PathEscape(user), map[string]interface{}{"password": pw})
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode < 500 {
			s.renderSignin(w, r, http.StatusUnauthorized, signinData{Error: "Sign-in failed: wrong username or password.", Username: user})
			return
		}
		s.log.Error("userpass login failed", "error", err)
		s.message(w, r, nil, http.StatusBadGateway, "Vault unavailable", "Vault could not be reached. Try again later.")
		return
	}
	s.clearCookie(w, preCookie, http.SameSiteStrictMode)
	s.startSession(ctx, w, r, sec, false)
}

// startSession makes the session of a fresh login. fromOIDC: the browser
// arrived from the identity provider, a cross-site navigation on which a
// SameSite=Strict cookie set now would not come back on a redirect, so the
// next page is reached through a same-site page instead.
func (s *Server) startSession(ctx context.Context, w http.ResponseWriter, r *http.Request, sec *api.Secret, fromOIDC bool) {
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		s.message(w, r, nil, http.StatusBadGateway, "Sign-in failed", "Vault gave no token.")
		return
	}
	c, err := s.userClient(sec.Auth.ClientToken)
	if err != nil {
		s.log.Error("vault client", "error", err)
		s.message(w, r, nil, http.StatusInternalServerError, "Something went wrong", "The portal could not reach Vault.")
		return
	}
	id, err := s.whoami(ctx, c, sec.Auth)
	if err != nil {
		s.log.Error("sign-in: who am I failed", "error", err)
		// The token is of no use to anyone now.
		_ = c.Auth().Token().RevokeSelfWithContext(ctx, "")
		s.message(w, r, nil, http.StatusBadGateway, "Sign-in failed", "Vault could not say who you are. Try again later.")
		return
	}
	life := s.cfg.MaxSession
	if id.ttl > 0 && id.ttl < life {
		life = id.ttl
	}
	ss := &session{
		user: id.user, token: sec.Auth.ClientToken, tenant: id.tenant,
		canListTenants: id.canListTenants, expires: time.Now().Add(life),
	}
	s.sessions.replace(r)
	sid := s.sessions.create(ss)
	http.SetCookie(w, s.cookie(sessionCookie, sid, http.SameSiteStrictMode, int(life.Seconds())))
	s.log.Info("signed in", "user", id.user, "tenant", id.tenant, "session_ttl", life.Round(time.Second).String())
	next := "/keys"
	if id.tenant == "" && id.canListTenants {
		next = "/tenants"
	}
	if fromOIDC {
		s.render(w, r, nil, "continue.html", "Signed in", http.StatusOK, next)
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// oidcStart asks Vault's OIDC auth method for the identity provider's URL
// and sends the browser there. The client_nonce Vault binds to the state
// stays on the server; the browser holds only a random handle to it, so the
// callback completes only in the browser that started the sign-in.
func (s *Server) oidcStart(w http.ResponseWriter, r *http.Request) {
	if s.cfg.OIDCRole == "" {
		s.message(w, r, nil, http.StatusNotFound, "Not found", "OIDC sign-in is not configured.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), vaultTimeout)
	defer cancel()
	nonce := randomToken()
	sec, err := s.vault.Logical().WriteWithContext(ctx, "auth/"+s.cfg.OIDCMount+"/oidc/auth_url", map[string]interface{}{
		"role":         s.cfg.OIDCRole,
		"redirect_uri": s.cfg.PublicURL + "/auth/oidc/callback",
		"client_nonce": nonce,
	})
	if err != nil {
		s.log.Error("oidc auth_url failed", "error", err)
		s.message(w, r, nil, http.StatusBadGateway, "Sign-in unavailable", "Vault could not start the OIDC sign-in.")
		return
	}
	authURL := ""
	if sec != nil {
		authURL = str(sec.Data, "auth_url")
	}
	u, err := url.Parse(authURL)
	if authURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		// Vault answers an empty auth_url when redirect_uri is not one of
		// the role's allowed_redirect_uris.
		s.log.Error("oidc auth_url unusable: is the portal's callback in the role's allowed_redirect_uris?", "role", s.cfg.OIDCRole, "redirect_uri", s.cfg.PublicURL+"/auth/oidc/callback")
		s.message(w, r, nil, http.StatusBadGateway, "Sign-in unavailable", "Vault's OIDC role does not allow this portal's callback URL.")
		return
	}
	state := u.Query().Get("state")
	if state == "" {
		s.log.Error("oidc auth_url carries no state", "role", s.cfg.OIDCRole)
		s.message(w, r, nil, http.StatusBadGateway, "Sign-in unavailable", "Vault's OIDC sign-in answer was not usable.")
		return
	}
	handle, ok := s.pending.put(pendingOIDC{nonce: nonce, state: state})
	if !ok {
		s.log.Warn("oidc sign-in refused: too many sign-ins in flight", "max", maxPendingOIDC)
		s.message(w, r, nil, http.StatusServiceUnavailable, "Sign-in busy", "Too many sign-ins are in progress. Try again in a few minutes.")
		return
	}
	// Lax: the callback is a top-level navigation from the identity
	// provider's site, which would not carry a Strict cookie.
	http.SetCookie(w, s.cookie(oidcCookie, handle, http.SameSiteLaxMode, int(pendingOIDCTTL.Seconds())))
	http.Redirect(w, r, authURL, http.StatusFound)
}

func (s *Server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state, code := q.Get("state"), q.Get("code")
	c, err := r.Cookie(s.cookieName(oidcCookie))
	if err != nil {
		s.message(w, r, nil, http.StatusForbidden, "Sign-in refused", "This browser did not start an OIDC sign-in (or it took too long). Start again.")
		return
	}
	p, ok := s.pending.take(c.Value)
	s.clearCookie(w, oidcCookie, http.SameSiteLaxMode)
	if !ok || !equalSecret(p.state, state) {
		s.message(w, r, nil, http.StatusForbidden, "Sign-in refused", "The sign-in answer does not belong to the sign-in this browser started. Start again.")
		return
	}
	if e := q.Get("error"); e != "" || code == "" {
		s.message(w, r, nil, http.StatusUnauthorized, "Sign-in failed", "The identity provider did not sign you in.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), vaultTimeout)
	defer cancel()
	sec, err := s.vault.Logical().ReadWithDataWithContext(ctx, "auth/"+s.cfg.OIDCMount+"/oidc/callback", map[string][]string{
		"state": {state}, "code": {code}, "client_nonce": {p.nonce},
	})
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode < 500 {
			s.message(w, r, nil, http.StatusUnauthorized, "Sign-in failed", "Vault did not accept the identity provider's answer.")
			return
		}
		// Not err itself: it holds the request's URL, whose query is the
		// code, state and client_nonce of the sign-in.
		status := 0
		if re != nil {
			status = re.StatusCode
		}
		s.log.Error("oidc callback failed", "status", status, "timeout", errors.Is(err, context.DeadlineExceeded))
		s.message(w, r, nil, http.StatusBadGateway, "Vault unavailable", "Vault could not finish the sign-in.")
		return
	}
	s.startSession(ctx, w, r, sec, true)
}

func init() {
	registerPage(page{routes: map[string]pageFunc{
		"POST /signout": (*Server).signout,
		"GET /tenants":  (*Server).tenantsPage,
		"POST /tenant":  (*Server).pickTenant,
	}})
}

// signout revokes the token and ends the session.
func (s *Server) signout(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	ctx, cancel := context.WithTimeout(r.Context(), vaultTimeout)
	defer cancel()
	if err := rc.vault.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		var re *api.ResponseError
		// A token that is gone already is what sign-out wants.
		if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
			s.log.Error("revoke on sign-out failed; trying again in the background", "status", statusOf(err))
			go s.revokeToken(rc.sess.token)
		}
	}
	s.sessions.deleteSession(rc.sess)
	s.clearCookie(w, sessionCookie, http.SameSiteStrictMode)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

type tenantsData struct {
	Tenants []string
}

// tenantsPage lets a platform admin pick the tenant to work on.
func (s *Server) tenantsPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.sess.canListTenants {
		s.message(w, r, rc, http.StatusForbidden, "Permission denied", "Only platform admins pick a tenant; yours comes from your identity.")
		return
	}
	sec, err := rc.vault.Logical().ListWithContext(r.Context(), s.cfg.Mount+"/tenants/")
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	var d tenantsData
	if sec != nil {
		d.Tenants = stringList(sec.Data["keys"])
	}
	s.render(w, r, rc, "tenants.html", "Tenants", http.StatusOK, d)
}

// pickTenant sets the session's tenant: platform admins only (whom Vault
// lets into every tenant anyway); anyone else keeps their identity's.
func (s *Server) pickTenant(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.sess.canListTenants {
		s.message(w, r, rc, http.StatusForbidden, "Permission denied", "Your tenant comes from your identity and cannot be changed here.")
		return
	}
	t := r.PostForm.Get("tenant")
	if !nameRE.MatchString(t) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "tenant must be a tenant name (lower-case letters, digits, dashes).")
		return
	}
	rc.sess.setTenant(t)
	http.Redirect(w, r, "/keys", http.StatusSeeOther)
}

package portal

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// reqCtx is a signed-in user's request: the session, a Vault client with
// the user's token (a clone per request: the base client never holds one)
// and the tenant from the session.
type reqCtx struct {
	s      *Server
	sess   *session
	vault  *api.Client
	tenant string
}

// userClient is the base client with token set, for this request only.
func (s *Server) userClient(token string) (*api.Client, error) {
	c, err := s.vault.Clone()
	if err != nil {
		return nil, fmt.Errorf("clone the Vault client: %w", err)
	}
	c.SetToken(token)
	return c, nil
}

// pageTimeout bounds everything one page asks of Vault.
const pageTimeout = 30 * time.Second

// authed wraps a page handler: no session sends to sign-in; a POST needs
// the session's CSRF token.
func (s *Server) authed(post bool, h pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A page's Vault calls all end within pageTimeout, before the
		// server's WriteTimeout, and stop when the client goes.
		ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		ss, ok := s.sessions.fromRequest(r)
		if !ok {
			if post {
				s.message(w, r, nil, http.StatusForbidden, "Signed out", "Your session has ended. Sign in again.")
				return
			}
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		c, err := s.userClient(ss.token)
		if err != nil {
			s.log.Error("vault client", "error", err)
			s.message(w, r, nil, http.StatusInternalServerError, "Something went wrong", "The portal could not reach Vault.")
			return
		}
		rc := &reqCtx{s: s, sess: ss, vault: c, tenant: ss.getTenant()}
		if post {
			if err := r.ParseForm(); err != nil {
				s.formError(w, r, rc, err)
				return
			}
			if !equalSecret(r.PostForm.Get(csrfField), ss.csrf) {
				s.message(w, r, rc, http.StatusForbidden, "Request refused", "The form was missing its security token or it did not match. Go back, reload the page and try again.")
				return
			}
		}
		h(s, w, r, rc)
	})
}

// formError answers a body that could not be read: too large or malformed.
func (s *Server) formError(w http.ResponseWriter, r *http.Request, rc *reqCtx, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		s.message(w, r, rc, http.StatusRequestEntityTooLarge, "Request too large", fmt.Sprintf("A form may carry at most %d bytes.", maxBody))
		return
	}
	s.message(w, r, rc, http.StatusBadRequest, "Bad request", "The form could not be read.")
}

// needTenant answers when the session has no tenant yet (a platform admin
// who has not picked one); it reports whether the handler may go on.
func (rc *reqCtx) needTenant(w http.ResponseWriter, r *http.Request) bool {
	if rc.tenant != "" {
		return true
	}
	if rc.sess.canListTenants {
		http.Redirect(w, r, "/tenants", http.StatusSeeOther)
		return false
	}
	rc.s.message(w, r, rc, http.StatusForbidden, "No tenant", "Your identity carries no tenant, so there is nothing to show here.")
	return false
}

// path is a path of the mount under the session's tenant.
func (rc *reqCtx) path(rest string) string {
	return rc.s.cfg.Mount + "/tenants/" + rc.tenant + "/" + rest
}

// vaultError shows a Vault error as a plain page. A 403 whose token no
// longer looks itself up is a dead token: the session ends and the user
// goes to sign-in. Vault's 400 messages name the field and are shown; other
// failures are logged and shown as a generic 500.
func (s *Server) vaultError(w http.ResponseWriter, r *http.Request, rc *reqCtx, err error) {
	var re *api.ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusForbidden:
			if rc.endIfDead(w, r) {
				return
			}
			s.message(w, r, rc, http.StatusForbidden, "Permission denied", "Vault does not allow you to do this.")
			return
		case http.StatusNotFound:
			s.message(w, r, rc, http.StatusNotFound, "Not found", "Vault has no such object for your tenant.")
			return
		case http.StatusBadRequest:
			s.message(w, r, rc, http.StatusBadRequest, "Vault refused the request", strings.Join(re.Errors, "; "))
			return
		}
	}
	s.log.Error("vault request failed", "path", r.URL.Path, "error", err)
	s.message(w, r, rc, http.StatusInternalServerError, "Something went wrong", "Vault could not answer. Try again later.")
}

// endIfDead ends the session and sends to sign-in when its token is gone
// (revoked, expired): Vault then answers every call with 403.
func (rc *reqCtx) endIfDead(w http.ResponseWriter, r *http.Request) bool {
	if rc.tokenAlive(r.Context()) {
		return false
	}
	rc.s.sessions.deleteSession(rc.sess)
	rc.s.clearCookie(w, sessionCookie, http.SameSiteStrictMode)
	http.Redirect(w, r, "/signin?ended=1", http.StatusSeeOther)
	return true
}

// tokenAlive asks Vault whether the session's token still exists.
func (rc *reqCtx) tokenAlive(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := rc.vault.Auth().Token().LookupSelfWithContext(ctx)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
		return false
	}
	return true
}

// capsTTL is how long a session reuses its capabilities-self answers:
// they decide what the nav offers, not what Vault allows.
const capsTTL = 30 * time.Second

func (rc *reqCtx) expand(p string) string {
	return strings.NewReplacer("{mount}", rc.s.cfg.Mount, "{tenant}", rc.tenant).Replace(p)
}

// capabilities returns the user's capabilities on every path of every
// registered nav check plus extra, from one sys/capabilities-self call.
func (rc *reqCtx) capabilities(ctx context.Context, extra ...string) map[string][]string {
	rc.sess.mu.Lock()
	caps, fresh := rc.sess.caps, time.Since(rc.sess.capsAt) < capsTTL
	rc.sess.mu.Unlock()
	missing := false
	for _, p := range extra {
		if _, ok := caps[p]; !ok {
			missing = true
		}
	}
	if caps != nil && fresh && !missing {
		return caps
	}
	paths := append([]string(nil), extra...)
	for _, pg := range pages {
		if pg.nav == nil {
			continue
		}
		for e := pg.nav; e != nil; e = e.or {
			for _, c := range e.needs {
				paths = append(paths, rc.expand(c.path))
			}
		}
	}
	got, err := capabilitiesSelf(ctx, rc.vault, paths)
	if err != nil {
		rc.s.log.Warn("capabilities-self failed", "error", err)
		return map[string][]string{}
	}
	rc.sess.mu.Lock()
	if rc.sess.tenant == rc.tenant {
		rc.sess.caps, rc.sess.capsAt = got, time.Now()
	}
	rc.sess.mu.Unlock()
	return got
}

// can reports whether the user has capability on path.
func (rc *reqCtx) can(ctx context.Context, path, capability string) bool {
	return hasCap(rc.capabilities(ctx, path)[path], capability)
}

func hasCap(caps []string, c string) bool {
	for _, x := range caps {
		if x == c || x == "root" {
			return true
		}
	}
	return false
}

// allowed reports whether every check of e is granted (or of e.or).
func (rc *reqCtx) allowed(ctx context.Context, e *navEntry) bool {
	if rc.grants(ctx, e.needs) {
		return true
	}
	return e.or != nil && rc.allowed(ctx, e.or)
}

// grants reports whether every check is granted; a check that names the
// tenant is not, without one.
func (rc *reqCtx) grants(ctx context.Context, needs []capCheck) bool {
	caps := rc.capabilities(ctx)
	for _, c := range needs {
		if rc.tenant == "" && strings.Contains(c.path, "{tenant}") {
			return false
		}
		if !hasCap(caps[rc.expand(c.path)], c.capability) {
			return false
		}
	}
	return true
}

// require refuses the request with a plain 403 page when the nav would not
// offer e: a page that is not offered cannot be reached by its URL either.
func (rc *reqCtx) require(w http.ResponseWriter, r *http.Request, e *navEntry) bool {
	if e.perTenant() && !rc.needTenant(w, r) {
		return false
	}
	if rc.allowed(r.Context(), e) {
		return true
	}
	if rc.endIfDead(w, r) {
		return false
	}
	rc.s.message(w, r, rc, http.StatusForbidden, "Permission denied", "Your policy does not give you this page.")
	return false
}

// perTenant reports whether e's checks name the session's tenant; an entry
// that does not (the platform admin's pages) is offered without one.
func (e *navEntry) perTenant() bool {
	for _, c := range e.needs {
		if strings.Contains(c.path, "{tenant}") {
			return true
		}
	}
	return false
}

// capabilitiesSelf asks Vault for the token's capabilities on paths.
func capabilitiesSelf(ctx context.Context, c *api.Client, paths []string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(paths) == 0 {
		return out, nil
	}
	sec, err := c.Logical().WriteWithContext(ctx, "sys/capabilities-self", map[string]interface{}{"paths": paths})
	if err != nil {
		return nil, err
	}
	if sec == nil {
		return out, nil
	}
	for _, p := range paths {
		out[p] = stringList(sec.Data[p])
	}
	return out, nil
}

func stringList(v interface{}) []string {
	l, _ := v.([]interface{})
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func str(m map[string]interface{}, k string) string {
	switch v := m[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

// guarded runs f, turning a panic into an error: a bug in one of a page's
// worker goroutines (which the handler's recover does not cover) fails
// that page, not the process.
func guarded(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("portal worker panicked: %v", v)
		}
	}()
	return f()
}

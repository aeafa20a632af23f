package portal

import (
	"context"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

var issueNav = &navEntry{
	title: "Issue a key", href: "/issue", order: 20,
	needs: []capCheck{{"{mount}/tenants/{tenant}/roles/", "list"}},
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{
			"GET /issue":  (*Server).issuePage,
			"POST /issue": (*Server).issueKey,
		},
		nav: issueNav,
	})
}

type roleView struct {
	Name, Environment, TTL, MaxTTL, Rate, Quota, CIDRs string
	Scopes                                             []string
	Leased                                             bool
}

type issueData struct {
	Roles []roleView
	Role  *roleView
	Error string
	Name  string
	TTL   string
	// Once names this form: the portal issues at most one key per form
	// (session.claimForm).
	Once string
}

// issuableRoles lists the tenant's roles the user may issue keys from
// (update on creds/<role>: developers get only dev-* roles), with their
// settings.
func (rc *reqCtx) roles(ctx context.Context, onlyIssuable bool) ([]roleView, error) {
	sec, err := rc.vault.Logical().ListWithContext(ctx, rc.path("roles/"))
	if err != nil {
		return nil, err
	}
	var names []string
	if sec != nil {
		names = stringList(sec.Data["keys"])
	}
	if onlyIssuable && len(names) > 0 {
		paths := make([]string, len(names))
		for i, n := range names {
			paths[i] = rc.path("creds/" + n)
		}
		caps, err := capabilitiesSelf(ctx, rc.vault, paths)
		if err != nil {
			return nil, err
		}
		kept := names[:0]
		for i, n := range names {
			if hasCap(caps[paths[i]], "update") {
				kept = append(kept, n)
			}
		}
		names = kept
	}
	out := make([]roleView, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			errs[i] = guarded(func() (err error) {
				out[i], err = rc.role(ctx, n)
				return err
			})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (rc *reqCtx) role(ctx context.Context, name string) (roleView, error) {
	sec, err := rc.vault.Logical().ReadWithContext(ctx, rc.path("roles/"+name))
	if err != nil || sec == nil {
		return roleView{Name: name}, err
	}
	d := sec.Data
	v := roleView{
		Name: name, Environment: str(d, "environment"), Scopes: stringList(d["scopes"]),
		TTL: seconds(str(d, "ttl")), MaxTTL: seconds(str(d, "max_ttl")),
		CIDRs: strings.Join(stringList(d["allowed_cidrs"]), ", "), Leased: str(d, "leased") != "false",
		Rate: "none", Quota: "none",
	}
	if rl := str(d, "rate_limit"); rl != "" && rl != "0" {
		v.Rate = rl + " per " + seconds(str(d, "rate_limit_period"))
	}
	if q := str(d, "quota"); q != "" && q != "0" {
		v.Quota = q + " per " + str(d, "quota_period")
	}
	return v, nil
}

// seconds shows a number of seconds as a duration ("3600" → "1h0m0s").
func seconds(v string) string {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n == 0 {
		return "default"
	}
	return (time.Duration(n) * time.Second).String()
}

func (s *Server) issuePage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, issueNav) {
		return
	}
	roles, err := rc.roles(r.Context(), true)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	d := issueData{Roles: roles, Once: randomToken()}
	if want := r.URL.Query().Get("role"); want != "" {
		for i := range roles {
			if roles[i].Name == want {
				d.Role = &roles[i]
			}
		}
		if d.Role == nil {
			s.message(w, r, rc, http.StatusNotFound, "No such role", "You cannot issue keys from a role of that name.")
			return
		}
	}
	s.render(w, r, rc, "issue.html", "Issue a key", http.StatusOK, d)
}

// onceRE is an issue form's once token: randomToken's shape.
var onceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

type issuedData struct {
	APIKey, KeyID, Hint, Role, Name, Environment, Expires, Scopes string
}

func (s *Server) issueKey(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, issueNav) {
		return
	}
	f := r.PostForm
	role := f.Get("role")
	if !nameRE.MatchString(role) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "role must be a role name.")
		return
	}
	name := strings.TrimSpace(f.Get("name"))
	if len(name) > 128 {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "name must be at most 128 characters.")
		return
	}
	body := map[string]interface{}{"name": name, "scopes": strings.Join(f["scopes"], ",")}
	if ttl := strings.TrimSpace(f.Get("ttl")); ttl != "" {
		if _, err := time.ParseDuration(ttl); err != nil {
			if _, err := strconv.ParseUint(ttl, 10, 63); err != nil {
				s.message(w, r, rc, http.StatusBadRequest, "Bad request", "ttl must be a duration such as 30m, 12h or a number of seconds.")
				return
			}
		}
		body["ttl"] = ttl
	}
	once := f.Get("once")
	if !onceRE.MatchString(once) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "This form is out of date: open Issue a key again.")
		return
	}
	if keyID, fresh := rc.sess.claimForm(once); !fresh {
		text := "This form was sent before and is still being answered: its key is issued once, not twice."
		if keyID != "" {
			text = "This form was sent before, and the key it issued (" + keyID + ") was shown then, once. " +
				"A reload does not issue a second key or show that one again. If you did not keep it, revoke it and issue a new one."
		}
		s.message(w, r, rc, http.StatusConflict, "Already issued", text)
		return
	}
	sec, err := rc.vault.Logical().WriteWithContext(r.Context(), rc.path("creds/"+role), body)
	if err != nil {
		rc.sess.settleForm(once, "")
		s.vaultError(w, r, rc, err)
		return
	}
	if sec == nil || str(sec.Data, "api_key") == "" {
		rc.sess.settleForm(once, "")
		s.log.Error("issue answered without a key", "tenant", rc.tenant, "role", role)
		s.message(w, r, rc, http.StatusBadGateway, "Something went wrong", "Vault answered without a key.")
		return
	}
	rc.sess.settleForm(once, str(sec.Data, "key_id"))
	// The key goes into this one response and nowhere else: not the
	// session, not a log, not a URL (Cache-Control: no-store is on every
	// page).
	s.render(w, r, rc, "issued.html", "Your new key", http.StatusOK, issuedData{
		APIKey: str(sec.Data, "api_key"), KeyID: str(sec.Data, "key_id"), Hint: str(sec.Data, "hint"),
		Role: role, Name: name, Environment: str(sec.Data, "environment"),
		Expires: fmtTime(str(sec.Data, "expires_at")), Scopes: strings.Join(stringList(sec.Data["scopes"]), ", "),
	})
}

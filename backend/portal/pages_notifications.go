package portal

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// notificationsNav: one page over two sets of targets and dead letters.
// Whoever may list the mount's (config/notifications, notifications/failed;
// platform admins in the bootstrap policies) works on those, every tenant's
// events; a tenant admin works on the tenant's own
// (tenants/<tenant>/notifications/...), which get the tenant's events only.
// Developers are offered neither.
var notificationsNav = &navEntry{
	title: "Notifications", href: "/notifications", order: 60,
	needs: []capCheck{{"{mount}/config/notifications/", "list"}},
	or:    &navEntry{needs: []capCheck{{"{mount}/tenants/{tenant}/notifications/", "list"}}},
}

// notifScope is which targets and dead letters a request works on.
type notifScope struct {
	mount            bool   // the mount's, not the tenant's own
	targets, failed  string // their paths, with a trailing slash
	Heading, Explain string
}

func (rc *reqCtx) notifScope(ctx context.Context) notifScope {
	m := rc.s.cfg.Mount
	if rc.grants(ctx, notificationsNav.needs) {
		return notifScope{mount: true, targets: m + "/config/notifications/", failed: m + "/notifications/failed/",
			Heading: "the mount's", Explain: "Targets belong to the whole mount: a target limited to tenants gets only their events."}
	}
	return notifScope{targets: rc.path("notifications/"), failed: rc.path("notifications/failed/"),
		Heading: rc.tenant + "'s", Explain: "These targets are " + rc.tenant + "'s own: they get " + rc.tenant + "'s events only, and Vault delivers only to public https addresses."}
}

func init() {
	registerPage(page{
		routes: map[string]pageFunc{
			"GET /notifications":                        (*Server).notificationsPage,
			"POST /notifications/targets":               (*Server).targetCreate,
			"POST /notifications/targets/{name}/delete": (*Server).targetDelete,
			"POST /notifications/failed/{id}/requeue":   (*Server).deadLetterRequeue,
			"POST /notifications/failed/{id}/delete":    (*Server).deadLetterDrop,
		},
		nav: notificationsNav,
	})
}

// deadLetterRE is a dead letter id, <event id>.<target>, as the plugin's
// path pattern takes it.
var deadLetterRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}$`)

// deadLettersPage is how many dead letters one page reads: the list is
// ids only, and each shown one is one read.
const deadLettersPage = 25

type targetView struct {
	Name, URL, Events, Tenants string
	SecretSet, ThisTenant      bool
}

type deadLetterView struct {
	ID, EventType, Tenant, Target, Attempts, LastError, FailedAt string
}

type notificationsData struct {
	Scope                                notifScope
	Mount                                bool
	Targets                              []targetView
	Dead                                 []deadLetterView
	DeadTotal                            int
	DeadNext, DeadPrev                   string
	EventTypes                           []string
	CanCreate, CanDelete                 bool
	CanListDead, CanRequeue, CanDropDead bool
}

func (s *Server) notificationsPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, notificationsNav) {
		return
	}
	after := r.URL.Query().Get("after")
	if after != "" && !deadLetterRE.MatchString(after) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad page", "after must be a dead letter id.")
		return
	}
	ctx := r.Context()
	sc := rc.notifScope(ctx)
	probeTarget, probeDead := sc.targets+probeStaticName, sc.failed+"probe.probe"
	caps := rc.capabilities(ctx, probeTarget, probeDead, probeDead+"/requeue", sc.failed)
	d := notificationsData{
		Scope: sc, Mount: sc.mount,
		EventTypes:  notify.Types,
		CanCreate:   hasCap(caps[probeTarget], "create"),
		CanDelete:   hasCap(caps[probeTarget], "delete"),
		CanListDead: hasCap(caps[sc.failed], "list"),
		CanRequeue:  hasCap(caps[probeDead+"/requeue"], "update"),
		CanDropDead: hasCap(caps[probeDead], "delete"),
	}
	sec, err := rc.vault.Logical().ListWithContext(ctx, sc.targets)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	var names []string
	if sec != nil {
		names = stringList(sec.Data["keys"])
	}
	sort.Strings(names)
	// Targets are configuration, a handful per mount or tenant; their
	// reads are bounded by the workers all the same.
	d.Targets = make([]targetView, len(names))
	each(len(names), func(i int) {
		t := targetView{Name: names[i]}
		if sec, err := rc.vault.Logical().ReadWithContext(ctx, sc.targets+names[i]); err == nil && sec != nil {
			t.URL = str(sec.Data, "url")
			t.Events = strings.Join(stringList(sec.Data["events"]), ", ")
			tenants := stringList(sec.Data["tenants"])
			t.Tenants = strings.Join(tenants, ", ")
			t.ThisTenant = len(tenants) == 0 || contains(tenants, rc.tenant)
			t.SecretSet = str(sec.Data, "secret_set") == "true"
		}
		d.Targets[i] = t
	}, func(i int, err error) {
		s.log.Error("target row", "target", names[i], "error", err)
		d.Targets[i] = targetView{Name: names[i]}
	})
	if d.CanListDead {
		if !s.deadLetters(w, r, rc, sc, after, &d) {
			return
		}
	}
	s.render(w, r, rc, "notifications.html", "Notifications", http.StatusOK, d)
}

// deadLetters fills one page of dead letters: a list of ids, then a read
// of each shown one.
func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request, rc *reqCtx, sc notifScope, after string, d *notificationsData) bool {
	ctx := r.Context()
	sec, err := rc.vault.Logical().ListWithContext(ctx, sc.failed)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return false
	}
	var ids []string
	if sec != nil {
		ids = stringList(sec.Data["keys"])
	}
	shown, pg := pageOf(ids, after, deadLettersPage, "/notifications")
	d.DeadTotal, d.DeadNext, d.DeadPrev = pg.Total, pg.NextURL, pg.PrevURL
	d.Dead = make([]deadLetterView, len(shown))
	unread := func(i int) deadLetterView {
		return deadLetterView{ID: shown[i], EventType: "–", Tenant: "–", Target: "–", Attempts: "–", LastError: "–", FailedAt: "–"}
	}
	each(len(shown), func(i int) {
		v := unread(i)
		if sec, err := rc.vault.Logical().ReadWithContext(ctx, sc.failed+shown[i]); err == nil && sec != nil {
			v.EventType, v.Tenant, v.Target = orDash(str(sec.Data, "event_type")), orDash(str(sec.Data, "tenant")), orDash(str(sec.Data, "target"))
			v.Attempts, v.LastError, v.FailedAt = orDash(str(sec.Data, "attempts")), orDash(str(sec.Data, "last_error")), fmtTime(str(sec.Data, "failed_at"))
		}
		d.Dead[i] = v
	}, func(i int, err error) {
		s.log.Error("dead letter row", "id", shown[i], "error", err)
		d.Dead[i] = unread(i)
	})
	return true
}

type targetCreatedData struct {
	Name, Secret string
}

// targetCreate creates a webhook target. A secret the user typed is sent
// to Vault and never shown again; one Vault generated is shown this once.
func (s *Server) targetCreate(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, notificationsNav) {
		return
	}
	f := r.PostForm
	name := f.Get("name")
	if !nameRE.MatchString(name) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "name must be 1-63 lower-case letters, digits or dashes.")
		return
	}
	raw := strings.TrimSpace(f.Get("url"))
	if u, err := url.Parse(raw); err != nil || len(raw) > 2048 || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "url must be an http(s) URL without user info, at most 2048 characters.")
		return
	}
	body := map[string]interface{}{"url": raw}
	if secret := f.Get("secret"); secret != "" {
		if len(secret) < 16 || len(secret) > 1024 {
			s.message(w, r, rc, http.StatusBadRequest, "Bad request", "secret must be 16 to 1024 characters (or empty: Vault generates one).")
			return
		}
		body["secret"] = secret
	}
	events := f["events"]
	for _, e := range events {
		if !notify.ValidType(e) {
			s.message(w, r, rc, http.StatusBadRequest, "Bad request", "events must be among "+strings.Join(notify.Types, ", ")+".")
			return
		}
	}
	if len(events) > 0 {
		body["events"] = strings.Join(events, ",")
	}
	ctx := r.Context()
	sc := rc.notifScope(ctx)
	// The mount's targets choose their tenants; a tenant's own get its
	// events only, by the path.
	if sc.mount {
		switch f.Get("scope") {
		case "tenant":
			if !rc.needTenant(w, r) {
				return
			}
			body["tenants"] = rc.tenant
		case "all":
		default:
			s.message(w, r, rc, http.StatusBadRequest, "Bad request", `scope must be "tenant" or "all".`)
			return
		}
	}
	p := sc.targets + name
	// Create, not overwrite: a name in use is the user's mistake.
	if sec, err := rc.vault.Logical().ReadWithContext(ctx, p); err != nil {
		s.vaultError(w, r, rc, err)
		return
	} else if sec != nil {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "name: a target of that name already exists.")
		return
	}
	sec, err := rc.vault.Logical().WriteWithContext(ctx, p, body)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	if sec != nil && str(sec.Data, "secret") != "" {
		w.Header().Set("Cache-Control", "no-store")
		s.render(w, r, rc, "target_created.html", "Target created", http.StatusOK, targetCreatedData{Name: name, Secret: str(sec.Data, "secret")})
		return
	}
	rc.sess.setFlash("Target " + name + " created.")
	http.Redirect(w, r, "/notifications", http.StatusSeeOther)
}

func (s *Server) targetDelete(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if !rc.require(w, r, notificationsNav) {
		return
	}
	name := r.PathValue("name")
	if !nameRE.MatchString(name) {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "name must be a target name.")
		return
	}
	ctx := r.Context()
	p := rc.notifScope(ctx).targets + name
	if sec, err := rc.vault.Logical().ReadWithContext(ctx, p); err != nil {
		s.vaultError(w, r, rc, err)
		return
	} else if sec == nil {
		s.message(w, r, rc, http.StatusNotFound, "Not found", "There is no target of that name.")
		return
	}
	if _, err := rc.vault.Logical().DeleteWithContext(ctx, p); err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	rc.sess.setFlash("Target " + name + " deleted; its pending deliveries are now dead letters.")
	http.Redirect(w, r, "/notifications", http.StatusSeeOther)
}

// deadLetterPath is the path of the dead letter the URL names, after the
// page check.
func (s *Server) deadLetterPath(w http.ResponseWriter, r *http.Request, rc *reqCtx) (string, bool) {
	if !rc.require(w, r, notificationsNav) {
		return "", false
	}
	id := r.PathValue("id")
	if !deadLetterRE.MatchString(id) || !strings.Contains(id, ".") || strings.Contains(id, "..") {
		s.message(w, r, rc, http.StatusBadRequest, "Bad request", "id must be a dead letter id (<event id>.<target>).")
		return "", false
	}
	p := rc.notifScope(r.Context()).failed + id
	sec, err := rc.vault.Logical().ReadWithContext(r.Context(), p)
	if err != nil {
		s.vaultError(w, r, rc, err)
		return "", false
	}
	if sec == nil {
		s.message(w, r, rc, http.StatusNotFound, "Not found", "There is no such dead letter.")
		return "", false
	}
	return p, true
}

func (s *Server) deadLetterRequeue(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	p, ok := s.deadLetterPath(w, r, rc)
	if !ok {
		return
	}
	if _, err := rc.vault.Logical().WriteWithContext(r.Context(), p+"/requeue", map[string]interface{}{}); err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	rc.sess.setFlash("Dead letter queued again for delivery.")
	http.Redirect(w, r, "/notifications", http.StatusSeeOther)
}

func (s *Server) deadLetterDrop(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	p, ok := s.deadLetterPath(w, r, rc)
	if !ok {
		return
	}
	if _, err := rc.vault.Logical().DeleteWithContext(r.Context(), p); err != nil {
		s.vaultError(w, r, rc, err)
		return
	}
	rc.sess.setFlash("Dead letter dropped.")
	http.Redirect(w, r, "/notifications", http.StatusSeeOther)
}

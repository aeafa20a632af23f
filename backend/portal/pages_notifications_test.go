package portal

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var targetSecretRE = regexp.MustCompile(`id="target-secret" class="key" readonly value="([^"]+)"`)

// TestPortalNotifications: a platform admin working on acme creates webhook
// targets (a typed secret never shown back; a generated one shown once),
// deletes one, and drops the dead letter that deletion left; acme's tenant
// admin, whose policy has no notification paths, is offered nothing and
// refused by URL and POST.
func TestPortalNotifications(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)

	tenantAdmin := newBrowser(t, tp.url)
	tenantAdmin.signIn("acme-admin", demo["acme-admin"]).lacks(t, `href="/notifications"`)
	tenantAdmin.get("/notifications").want(t, http.StatusForbidden, "Permission denied")
	tcsrf := tenantAdmin.get("/keys").csrf(t)
	tenantAdmin.post("/notifications/targets", url.Values{"csrf": {tcsrf}, "name": {"sneaky"}, "url": {"http://127.0.0.1:1/"}, "scope": {"all"}}).
		want(t, http.StatusForbidden)
	if s, _ := srv.Client.Logical().Read("apikeys/config/notifications/sneaky"); s != nil {
		t.Fatal("a tenant admin created a target")
	}

	b := newBrowser(t, tp.url)
	tenants := b.signIn("platform-admin", demo["platform-admin"])
	b.follow(b.post("/tenant", url.Values{"csrf": {tenants.csrf(t)}, "tenant": {"acme"}})).want(t, http.StatusOK, `href="/notifications"`)
	page := b.get("/notifications").want(t, http.StatusOK, "New target", `value="key-issued"`)
	csrf := page.csrf(t)
	t.Cleanup(func() {
		for _, n := range []string{"portal-typed", "portal-gen", "portal-dead"} {
			_, _ = srv.Client.Logical().Delete("apikeys/config/notifications/" + n)
		}
	})

	typed := "typed-secret-0123456789abcdef"
	b.post("/notifications/targets", url.Values{"csrf": {""}, "name": {"portal-typed"}, "url": {"http://127.0.0.1:1/hook"}, "scope": {"tenant"}}).
		want(t, http.StatusForbidden, "Request refused")
	b.follow(b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"portal-typed"}, "url": {"http://127.0.0.1:1/hook"}, "secret": {typed}, "scope": {"tenant"}, "events": {"key-revoked"}})).
		want(t, http.StatusOK, "Target portal-typed created", "portal-typed", "http://127.0.0.1:1/hook", "set (never shown)", "key-revoked").
		lacks(t, typed)
	if s, err := srv.Client.Logical().Read("apikeys/config/notifications/portal-typed"); err != nil || strings.Join(stringList(s.Data["tenants"]), ",") != "acme" {
		t.Fatalf("target's tenants: %v %v", s, err)
	}
	b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"portal-typed"}, "url": {"http://127.0.0.1:1/"}, "scope": {"all"}}).
		want(t, http.StatusBadRequest, "already exists")
	b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"Bad Name"}, "url": {"http://x/"}, "scope": {"all"}}).want(t, http.StatusBadRequest, "name must be")
	b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"x"}, "url": {"ftp://x/"}, "scope": {"all"}}).want(t, http.StatusBadRequest, "url must be")
	b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"x"}, "url": {"http://x/"}, "secret": {"short"}, "scope": {"all"}}).want(t, http.StatusBadRequest, "secret must be")
	b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"x"}, "url": {"http://x/"}, "events": {"nope"}, "scope": {"all"}}).want(t, http.StatusBadRequest, "events must be")

	gen := b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"portal-gen"}, "url": {"https://hooks.example.com/a"}, "scope": {"all"}}).
		want(t, http.StatusOK, "shows it this once")
	if gen.header.Get("Cache-Control") != "no-store" {
		t.Fatal("the secret's page may be cached")
	}
	m := targetSecretRE.FindStringSubmatch(gen.body)
	if m == nil || len(m[1]) < 16 {
		t.Fatalf("no generated secret: %s", gen.body)
	}
	b.get("/notifications").want(t, http.StatusOK, "portal-gen", "every tenant").lacks(t, m[1])

	// A dead letter: a target nobody answers, a key-issued event for it,
	// then the target deleted from the page, which dead-letters what it
	// still had pending.
	b.follow(b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"portal-dead"}, "url": {"http://127.0.0.1:1/dead"}, "secret": {typed}, "scope": {"tenant"}, "events": {"key-issued"}})).
		want(t, http.StatusOK, "portal-dead")
	acme := login(t, srv, "acme-admin")
	k, err := acme.Logical().Write("apikeys/tenants/acme/creds/web", map[string]interface{}{"name": "notify-me"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = acme.Logical().Delete("apikeys/tenants/acme/keys/" + str(k.Data, "key_id")) })
	b.follow(b.post("/notifications/targets/portal-dead/delete", url.Values{"csrf": {csrf}})).want(t, http.StatusOK, "Target portal-dead deleted")
	var dead string
	for deadline := time.Now().Add(30 * time.Second); dead == "" && time.Now().Before(deadline); {
		if s, err := srv.Client.Logical().List("apikeys/notifications/failed/"); err == nil && s != nil {
			for _, id := range stringList(s.Data["keys"]) {
				if strings.HasSuffix(id, ".portal-dead") {
					dead = id
				}
			}
		}
		if dead == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if dead == "" {
		t.Fatal("no dead letter for the deleted target")
	}
	list := b.get("/notifications").want(t, http.StatusOK, dead, "key-issued", `action="/notifications/failed/`+dead+`/requeue"`)
	list.lacks(t, `action="/notifications/targets/portal-dead/delete"`)
	b.post("/notifications/failed/"+dead+"/delete", url.Values{}).want(t, http.StatusForbidden, "Request refused")
	tenantAdmin.post("/notifications/failed/"+dead+"/delete", url.Values{"csrf": {tcsrf}}).want(t, http.StatusForbidden)
	b.post("/notifications/failed/no-dot/delete", url.Values{"csrf": {csrf}}).want(t, http.StatusBadRequest, "id must be")
	b.follow(b.post("/notifications/failed/"+dead+"/delete", url.Values{"csrf": {csrf}})).want(t, http.StatusOK, "Dead letter dropped").lacks(t, dead)
	b.post("/notifications/failed/"+dead+"/requeue", url.Values{"csrf": {csrf}}).want(t, http.StatusNotFound)
}

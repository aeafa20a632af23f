package portal

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

var targetSecretRE = regexp.MustCompile(`id="target-secret" class="key" readonly value="([^"]+)"`)

// TestPortalNotifications: a platform admin working on acme creates the
// mount's webhook targets (a typed secret never shown back; a generated
// one shown once), deletes one, and drops the dead letter that deletion
// left; acme's tenant admin works on acme's own targets instead
// (TestPortalTenantNotifications) and cannot reach the mount's.
func TestPortalNotifications(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)

	tenantAdmin := newBrowser(t, tp.url)
	tenantAdmin.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK, `href="/notifications"`)
	tenantAdmin.get("/notifications").want(t, http.StatusOK, "acme&#39;s targets").lacks(t, `value="all"`)
	tcsrf := tenantAdmin.get("/keys").csrf(t)
	// A mount-wide target asked for by a tenant admin becomes (at most)
	// a target of acme's own: the form's scope is not looked at.
	tenantAdmin.post("/notifications/targets", url.Values{"csrf": {tcsrf}, "name": {"sneaky"}, "url": {"https://hooks.example.com/sneaky"}, "scope": {"all"}})
	t.Cleanup(func() {
		_, _ = login(t, srv, "platform-admin").Logical().Delete("apikeys/tenants/acme/notifications/sneaky")
	})
	if s, _ := srv.Client.Logical().Read("apikeys/config/notifications/sneaky"); s != nil {
		t.Fatal("a tenant admin created a mount target")
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
	// The mount's dead letter is not acme's own: acme's admin looks for it
	// among acme's, where it is not.
	tenantAdmin.post("/notifications/failed/"+dead+"/delete", url.Values{"csrf": {tcsrf}}).want(t, http.StatusNotFound)
	b.post("/notifications/failed/no-dot/delete", url.Values{"csrf": {csrf}}).want(t, http.StatusBadRequest, "id must be")
	b.follow(b.post("/notifications/failed/"+dead+"/delete", url.Values{"csrf": {csrf}})).want(t, http.StatusOK, "Dead letter dropped").lacks(t, dead)
	b.post("/notifications/failed/"+dead+"/requeue", url.Values{"csrf": {csrf}}).want(t, http.StatusNotFound)
}

// TestPortalTenantNotifications: acme's tenant admin manages acme's own
// webhook targets from the page; a delivery arrives signed; a failed one is
// a dead letter of acme's, shown, requeued and dropped from the page;
// globex's admin sees none of it; acme's developer is offered nothing.
func TestPortalTenantNotifications(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	// The receivers are on loopback, which tenants' targets may reach only
	// when the mount allows it.
	setConfig(t, srv, map[string]interface{}{"tenant_webhook_private_ok": true})
	t.Cleanup(func() { setConfig(t, srv, map[string]interface{}{"tenant_webhook_private_ok": false}) })
	// The tenant guard keeps root off tenant paths: the platform admin reads.
	admin := login(t, srv, "platform-admin")
	for _, n := range []string{"receiver", "generated", "refusing"} {
		t.Cleanup(func() { _, _ = admin.Logical().Delete("apikeys/tenants/acme/notifications/" + n) })
	}

	secret := "acme-signing-secret-0123456789"
	got := make(chan []byte, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notify.Verify([]byte(secret), r.Header.Get(notify.SignatureHeader), body, time.Now(), notify.DefaultTolerance); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		got <- body
	}))
	defer receiver.Close()
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	defer refusing.Close()

	b := newBrowser(t, tp.url)
	b.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK, `href="/notifications"`)
	page := b.get("/notifications").want(t, http.StatusOK, "acme&#39;s targets", "New target")
	csrf := page.csrf(t)
	b.post("/notifications/targets", url.Values{"name": {"receiver"}, "url": {receiver.URL}}).want(t, http.StatusForbidden, "Request refused")
	b.follow(b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"receiver"}, "url": {receiver.URL}, "secret": {secret}, "events": {"key-issued"}})).
		want(t, http.StatusOK, "Target receiver created", receiver.URL, "set (never shown)").lacks(t, secret)
	if s, err := admin.Logical().Read("apikeys/tenants/acme/notifications/receiver"); err != nil || s == nil || str(s.Data, "url") != receiver.URL {
		t.Fatalf("acme's target in Vault: %v %v", s, err)
	}
	gen := b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"generated"}, "url": {"https://hooks.example.com/acme"}}).
		want(t, http.StatusOK, "shows it this once")
	m := targetSecretRE.FindStringSubmatch(gen.body)
	if m == nil || gen.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("the generated secret, once and not cached: %s", gen.body)
	}
	b.get("/notifications").want(t, http.StatusOK, "generated").lacks(t, m[1])

	// An acme key issued: the receiver gets the event, signed.
	acme := login(t, srv, "acme-admin")
	k, err := acme.Logical().Write("apikeys/tenants/acme/creds/web", map[string]interface{}{"name": "tenant-hooks"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = acme.Logical().Delete("apikeys/tenants/acme/keys/" + str(k.Data, "key_id")) })
	select {
	case body := <-got:
		if !strings.Contains(string(body), str(k.Data, "key_id")) {
			t.Fatalf("the delivery is not of the issued key: %s", body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no signed delivery of acme's key-issued event")
	}

	// globex's admin sees none of acme's targets, by the page or by name.
	gpw := randomToken()
	if err := bootstrap(srv, "users.sh", nil, "globex-hooks-admin", gpw, "apikeys-tenant-admin", "tenant=globex"); err != nil {
		t.Fatal(err)
	}
	g := newBrowser(t, tp.url)
	g.signIn("globex-hooks-admin", gpw)
	gp := g.get("/notifications").want(t, http.StatusOK, "globex&#39;s targets")
	gp.lacks(t, receiver.URL, ">receiver<", "hooks.example.com/acme")
	g.post("/notifications/targets/receiver/delete", url.Values{"csrf": {gp.csrf(t)}}).want(t, http.StatusNotFound)
	if s, _ := admin.Logical().Read("apikeys/tenants/acme/notifications/receiver"); s == nil {
		t.Fatal("globex's admin deleted acme's target")
	}

	// A target that refuses: its delivery, out of attempts, is acme's dead
	// letter (the outbox gives up at once on a deleted target: delete it).
	b.follow(b.post("/notifications/targets", url.Values{"csrf": {csrf}, "name": {"refusing"}, "url": {refusing.URL}, "secret": {secret}, "events": {"key-revoked"}})).
		want(t, http.StatusOK, "refusing")
	if _, err := acme.Logical().Delete("apikeys/tenants/acme/keys/" + str(k.Data, "key_id")); err != nil {
		t.Fatal(err)
	}
	b.follow(b.post("/notifications/targets/refusing/delete", url.Values{"csrf": {csrf}})).want(t, http.StatusOK, "Target refusing deleted")
	var dead string
	testvault.WaitFor(t, 30*time.Second, "acme's dead letter of the deleted target", func() bool {
		s, err := acme.Logical().List("apikeys/tenants/acme/notifications/failed/")
		if err == nil && s != nil {
			for _, id := range stringList(s.Data["keys"]) {
				if strings.HasSuffix(id, ".refusing") {
					dead = id
				}
			}
		}
		return dead != ""
	})
	b.get("/notifications").want(t, http.StatusOK, dead, `action="/notifications/failed/`+dead+`/requeue"`)
	g.get("/notifications").lacks(t, dead)
	g.post("/notifications/failed/"+dead+"/delete", url.Values{"csrf": {gp.csrf(t)}}).want(t, http.StatusNotFound)
	b.follow(b.post("/notifications/failed/"+dead+"/requeue", url.Values{"csrf": {csrf}})).want(t, http.StatusOK, "queued again")
	// Requeued to a target that is gone, it comes back a dead letter.
	testvault.WaitFor(t, 30*time.Second, "the requeued delivery back among the dead letters", func() bool {
		s, err := acme.Logical().Read("apikeys/tenants/acme/notifications/failed/" + dead)
		return err == nil && s != nil
	})
	b.follow(b.post("/notifications/failed/"+dead+"/delete", url.Values{"csrf": {csrf}})).want(t, http.StatusOK, "Dead letter dropped").lacks(t, dead)

	// acme's developer: not offered, refused by URL and POST.
	d := newBrowser(t, tp.url)
	d.signIn("acme-dev", demo["acme-dev"]).lacks(t, `href="/notifications"`)
	d.get("/notifications").want(t, http.StatusForbidden, "Permission denied")
	d.post("/notifications/targets", url.Values{"csrf": {d.get("/keys").csrf(t)}, "name": {"dev"}, "url": {receiver.URL}}).want(t, http.StatusForbidden)
}

// setConfig writes the mount's config as the platform admin (the tenant
// guard keeps root off tenant paths, not off config).
func setConfig(t *testing.T, srv *testvault.Server, c map[string]interface{}) {
	t.Helper()
	if _, err := srv.Client.Logical().Write("apikeys/config", c); err != nil {
		t.Fatalf("config: %v", err)
	}
}

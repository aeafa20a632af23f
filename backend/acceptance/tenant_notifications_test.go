package acceptance

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// TestTenantAdminReceivesItsOwnTenantsEvents: on the installation
// bootstrap/ makes, with the tenant guard on, acme's tenant admin creates
// a webhook target with its own token and receives acme's events, signed;
// globex's admin does the same for globex; neither reaches the other's
// target, and neither receiver gets the other tenant's event.
func TestTenantAdminReceivesItsOwnTenantsEvents(t *testing.T) {
	in := newInstall(t)
	tokens := in.users(
		userSpec{"nf-platform", "-", in.adminGroup, nil},
		userSpec{"nf-acme-admin", in.policy("apikeys-tenant-admin"), "", []string{"tenant=acme"}},
		userSpec{"nf-globex-admin", in.policy("apikeys-tenant-admin"), "", []string{"tenant=globex"}},
		userSpec{"nf-acme-dev", in.policy("apikeys-tenant-developer"), "", []string{"tenant=acme"}},
	)
	platform, acmeAdmin, globexAdmin, acmeDev := tokens[0], tokens[1], tokens[2], tokens[3]
	p := func(path string) string { return in.mount + "/" + path }
	must := func(token, method, path string, body map[string]interface{}) answer {
		t.Helper()
		a := call(t, token, method, p(path), body, nil)
		if !a.ok() {
			t.Fatalf("%s %s: %s", method, path, a)
		}
		return a
	}
	// The receivers listen on loopback, which tenants' targets may reach
	// only when the mount says so.
	must(platform, http.MethodPost, "config", map[string]interface{}{"enforce_entity_tenant": true, "tenant_webhook_private_ok": true})
	for _, tn := range []string{"acme", "globex"} {
		must(platform, http.MethodPost, "tenants/"+tn, nil)
		must(platform, http.MethodPost, "tenants/"+tn+"/roles/web", map[string]interface{}{"ttl": "1h"})
	}
	acme, globex := newReceiver(t), newReceiver(t)
	must(acmeAdmin, http.MethodPost, "tenants/acme/notifications/alerts", map[string]interface{}{"url": acme.srv.URL, "secret": receiverSecret})
	must(globexAdmin, http.MethodPost, "tenants/globex/notifications/alerts", map[string]interface{}{"url": globex.srv.URL, "secret": receiverSecret})

	for _, c := range []struct {
		who, token, method, path string
	}{
		{"acme's admin", acmeAdmin, http.MethodGet, "tenants/globex/notifications/alerts"},
		{"acme's admin", acmeAdmin, "LIST", "tenants/globex/notifications/"},
		{"acme's admin", acmeAdmin, http.MethodPost, "tenants/globex/notifications/alerts"},
		{"acme's admin", acmeAdmin, "LIST", "tenants/globex/notifications/failed/"},
		{"acme's admin", acmeAdmin, http.MethodGet, "config/notifications/"},
		{"acme's developer", acmeDev, "LIST", "tenants/acme/notifications/"},
		{"acme's developer", acmeDev, http.MethodPost, "tenants/acme/notifications/mine"},
		{"acme's developer", acmeDev, "LIST", "tenants/acme/notifications/failed/"},
	} {
		if a := call(t, c.token, c.method, p(c.path), map[string]interface{}{"url": acme.srv.URL}, nil); a.status != http.StatusForbidden {
			t.Errorf("%s %s %s: want 403, got %s", c.who, c.method, c.path, a)
		}
	}
	if r := must(acmeAdmin, http.MethodGet, "tenants/acme/notifications/alerts", nil); r.data["url"] != acme.srv.URL || r.data["secret"] != nil {
		t.Fatalf("acme's target: %v", r.data)
	}

	a := must(acmeAdmin, http.MethodGet, "tenants/acme/creds/web", nil)
	g := must(globexAdmin, http.MethodGet, "tenants/globex/creds/web", nil)
	testvault.WaitFor(t, 30*time.Second, "each tenant's key-issued at its receiver, and an empty outbox", func() error {
		if acme.count(notify.KeyIssued) < 1 || globex.count(notify.KeyIssued) < 1 {
			return fmt.Errorf("acme has %d, globex %d", len(acme.got()), len(globex.got()))
		}
		// Both deliveries were enqueued with their events; once the outbox
		// is empty, whatever else was meant for a receiver has arrived.
		for k := range rawEntries(t, in.mount) {
			if strings.HasPrefix(k, notify.OutboxPrefix) {
				return fmt.Errorf("outbox holds %s", k)
			}
		}
		return nil
	})
	check := func(r *receiver, tenant string, key answer) {
		t.Helper()
		evs := r.got()
		if len(evs) != 1 || evs[0].Tenant != tenant || evs[0].Type != notify.KeyIssued || evs[0].Data["key_id"] != key.data["key_id"] {
			t.Fatalf("%s's receiver got %+v", tenant, evs)
		}
	}
	check(acme, "acme", a)
	check(globex, "globex", g)
	if dl := call(t, acmeAdmin, "LIST", p("tenants/acme/notifications/failed/"), nil, nil); dl.status != http.StatusNotFound {
		t.Fatalf("acme's dead letters: %s", dl)
	}
}

package acceptance

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// The RBAC matrix: every path × operation of DESIGN.md (made concrete: a
// role the developer tier may use and one it may not, the app's own static
// key and another), for a token of every tier, logged in for real through
// userpass and through JWT, on the installation bootstrap/ makes. A tier
// gets what it is allowed on its tenant (acme), with the answer checked, and
// 403 on everything else: all of globex, and every global path it is not
// given. The whole matrix runs twice: with the policies alone, and with the
// plugin's tenant guard (enforce_entity_tenant) on as well, which must not
// take away anything the policies allow.

// probe is one (path, operation) of the matrix.
type probe struct {
	// name is the DESIGN.md row and operation, e.g.
	// "tenants/:tenant/roles/:role delete"; a qualifier in parentheses
	// tells apart probes of one row.
	name string
	// path is the request path below the mount; {tenant} marks a tenant
	// path and is replaced by the tenant under test.
	path string
	op   string // create, read, update, delete, list
	// prep readies the fixture before the request (a create needs the
	// object absent, a delete needs one to delete) and may return the path
	// to use instead of path.
	prep func(fx *fixture, tenant string) string
	body func(fx *fixture, tenant string) map[string]interface{}
	// header, for the GET verify that takes the key in X-Api-Key.
	header func(fx *fixture, tenant string) map[string]string
	// check judges an allowed request's answer (already known to be 2xx).
	check func(fx *fixture, tenant string, a answer) error
	// restore repairs the fixture after a request that may have changed it;
	// always says it runs even after a failed request (prep broke it).
	restore func(fx *fixture, tenant string)
	always  bool
}

func (p probe) global() bool { return !strings.Contains(p.path, "{tenant}") }

// pendingProbes are probes of paths DESIGN.md names but the engine does not
// serve yet, e.g. "tenants/:tenant/usage read": "usage is not served yet".
// Their denied cases run (a policy denies before Vault routes); their
// allowed cases are skipped and counted. The test fails as soon as one of
// them is served, so that it is switched on here and checked for real:
// delete its line. Every probe is live today.
var pendingProbes = map[string]string{}

// Tiers and what each may do. A tier's allowed probes on its own tenant
// (acme); all of globex is denied to every tier but the platform admin.
var tierAllowsOwnTenant = map[string][]string{
	"tenant-admin": {
		"tenants/:tenant/roles/ list",
		"tenants/:tenant/roles/:role read",
		"tenants/:tenant/creds/:role read (web)", "tenants/:tenant/creds/:role update (web)",
		"tenants/:tenant/creds/:role read (dev-*)", "tenants/:tenant/creds/:role update (dev-*)",
		"tenants/:tenant/static-keys/ list",
		"tenants/:tenant/static-keys/:name create", "tenants/:tenant/static-keys/:name read",
		"tenants/:tenant/static-keys/:name update", "tenants/:tenant/static-keys/:name delete",
		"tenants/:tenant/static-keys/:name/rotate update",
		"tenants/:tenant/static-creds/:name read (the app's)", "tenants/:tenant/static-creds/:name read (another)",
		"tenants/:tenant/onboard update",
		"tenants/:tenant/keys/ list",
		"tenants/:tenant/keys/:key_id read", "tenants/:tenant/keys/:key_id update", "tenants/:tenant/keys/:key_id delete",
		"tenants/:tenant/verify update", "tenants/:tenant/verify read",
		"tenants/:tenant/usage read",
		"tenants/:tenant/usage/history read", "tenants/:tenant/keys/:key_id/usage/history read",
		"tenants/:tenant/keys/:key_id/quota read",
		"tenants/:tenant/notifications/ list",
		"tenants/:tenant/notifications/:name create", "tenants/:tenant/notifications/:name read",
		"tenants/:tenant/notifications/:name update", "tenants/:tenant/notifications/:name delete",
		"tenants/:tenant/notifications/failed/ list",
		"tenants/:tenant/notifications/failed/:id read", "tenants/:tenant/notifications/failed/:id delete",
		"tenants/:tenant/notifications/failed/:id/requeue update",
	},
	"tenant-developer": {
		"tenants/:tenant/roles/ list",
		"tenants/:tenant/roles/:role read",
		"tenants/:tenant/creds/:role read (dev-*)", "tenants/:tenant/creds/:role update (dev-*)",
		"tenants/:tenant/keys/ list",
		"tenants/:tenant/keys/:key_id read", "tenants/:tenant/keys/:key_id delete",
		"tenants/:tenant/keys/:key_id/usage/history read",
	},
	"gateway": {
		"tenants/:tenant/verify update", "tenants/:tenant/verify read",
	},
	"app": {
		"tenants/:tenant/static-creds/:name read (the app's)",
	},
}

// tierAllowsGlobal: the global paths a tier may use.
var tierAllowsGlobal = map[string][]string{
	"gateway-global": {"verify update", "verify read", "usage/report update", "sync/snapshot read", "sync/changes read"},
	"leak-reporter":  {"leaks/report update"},
}

const platformAdmin = "platform-admin"

func (id identity) allowed(p probe, tenant string) bool {
	if id.tier == platformAdmin {
		return true
	}
	if p.global() {
		return slices.Contains(tierAllowsGlobal[id.tier], p.name)
	}
	return tenant == "acme" && slices.Contains(tierAllowsOwnTenant[id.tier], p.name)
}

// identity is a logged-in caller of one tier.
type identity struct {
	tier, login, token string
}

func (id identity) String() string { return id.tier + "/" + id.login }

// fixture is what the probes act on, kept in shape by a platform admin
// login of its own (a member of the platform admins' group, so it passes
// the tenant guard too).
type fixture struct {
	t     *testing.T
	in    *install
	admin string
	// key and id of a standing key of each tenant (issued from role web).
	key, id map[string]string
}

func (fx *fixture) path(p string) string { return fx.in.mount + "/" + p }

// do is a fixture request that must succeed.
func (fx *fixture) do(method, path string, body map[string]interface{}) answer {
	fx.t.Helper()
	a := call(fx.t, fx.admin, method, fx.path(path), body, nil)
	if !a.ok() {
		fx.t.Fatalf("fixture %s %s: %s", method, path, a)
	}
	return a
}

// ensureTenant (re)creates a tenant with everything the probes use.
func (fx *fixture) ensureTenant(tenant string) {
	fx.t.Helper()
	fx.do(http.MethodPost, "tenants/"+tenant, map[string]interface{}{"display_name": tenant, "allowed_environments": "live,test"})
	fx.do(http.MethodPost, "tenants/"+tenant+"/roles/web", map[string]interface{}{"scopes": "read,write", "environment": "live", "ttl": "1h"})
	fx.do(http.MethodPost, "tenants/"+tenant+"/roles/dev-sandbox", map[string]interface{}{"scopes": "read", "environment": "test", "ttl": "1h"})
	for _, s := range []string{"checkout", "billing"} {
		fx.do(http.MethodPost, "tenants/"+tenant+"/static-keys/"+s, map[string]interface{}{"role": "web", "rotation_period": "720h"})
	}
	// A target of the tenant's own that no event reaches (nothing suspends
	// the tenant), so the matrix sends nothing anywhere.
	fx.do(http.MethodPost, "tenants/"+tenant+"/notifications/hook", map[string]interface{}{"url": "https://hooks.example.com/" + tenant, "events": "tenant-suspended"})
	a := fx.do(http.MethodGet, "tenants/"+tenant+"/creds/web", nil)
	fx.key[tenant], fx.id[tenant] = a.data["api_key"].(string), a.data["key_id"].(string)
	// A key under a quota of its own, whose standing the quota probes read
	// and refill (no probe comes near the quota).
	fx.do(http.MethodPost, "tenants/"+tenant+"/roles/metered", map[string]interface{}{"scopes": "read", "environment": "live", "ttl": "1h", "quota": 1000000, "quota_period": "day"})
	fx.id[tenant+"/metered"] = fx.do(http.MethodGet, "tenants/"+tenant+"/creds/metered", nil).data["key_id"].(string)
}

// deadLetter returns the id of one of the tenant's dead letters, making one
// when there is none: a target of the tenant's own on loopback, which the
// address guard (tenant_webhook_private_ok is off) refuses on the first
// attempt, gets one event, and is deleted again so no other event reaches
// it. A requeued dead letter comes back the same way ("target is no longer
// configured").
func (fx *fixture) deadLetter(tenant string) string {
	fx.t.Helper()
	list := "tenants/" + tenant + "/notifications/failed/"
	ids := func() []interface{} {
		a := call(fx.t, fx.admin, "LIST", fx.path(list), nil, nil)
		keys, _ := a.data["keys"].([]interface{})
		return keys
	}
	if keys := ids(); len(keys) > 0 {
		return keys[0].(string)
	}
	fx.do(http.MethodPost, "tenants/"+tenant+"/notifications/refused", map[string]interface{}{"url": "https://localhost:1/hook", "events": "key-issued"})
	fx.do(http.MethodGet, "tenants/"+tenant+"/creds/web", nil)
	var id string
	testvault.WaitFor(fx.t, 30*time.Second, tenant+"'s dead letter", func() bool {
		if keys := ids(); len(keys) > 0 {
			id = keys[0].(string)
		}
		return id != ""
	})
	fx.do(http.MethodDelete, "tenants/"+tenant+"/notifications/refused", nil)
	return id
}

func deadLetterPath(suffix string) func(fx *fixture, tenant string) string {
	return func(fx *fixture, tenant string) string {
		return "tenants/" + tenant + "/notifications/failed/" + fx.deadLetter(tenant) + suffix
	}
}

func (fx *fixture) absent(path string) {
	fx.t.Helper()
	fx.do(http.MethodDelete, path, nil)
}

func wantData(field string, want interface{}) func(*fixture, string, answer) error {
	return func(_ *fixture, _ string, a answer) error {
		if fmt.Sprint(a.data[field]) != fmt.Sprint(want) {
			return fmt.Errorf("%s = %v, want %v", field, a.data[field], want)
		}
		return nil
	}
}

func wantListed(item func(fx *fixture, tenant string) string) func(*fixture, string, answer) error {
	return func(fx *fixture, tenant string, a answer) error {
		keys, _ := a.data["keys"].([]interface{})
		want := item(fx, tenant)
		for _, k := range keys {
			if k == want {
				return nil
			}
		}
		return fmt.Errorf("list %v lacks %q", keys, want)
	}
}

func wantKeyOf(role string) func(*fixture, string, answer) error {
	return func(_ *fixture, tenant string, a answer) error {
		if k, _ := a.data["api_key"].(string); k == "" || a.data["tenant"] != tenant || a.data["role"] != role {
			return fmt.Errorf("issued key: %v", redacted(a.data))
		}
		return nil
	}
}

func wantValid(tenant string) func(*fixture, string, answer) error {
	return func(_ *fixture, _ string, a answer) error {
		if a.data["code"] != "VALID" || a.data["tenant"] != tenant {
			return fmt.Errorf("verify: %v", a.data)
		}
		return nil
	}
}

func redacted(data map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range data {
		if k == "api_key" {
			v = "<redacted>"
		}
		out[k] = v
	}
	return out
}

func static(name string) func(*fixture, string) string {
	return func(fx *fixture, tenant string) string { return name }
}

func body(b map[string]interface{}) func(*fixture, string) map[string]interface{} {
	return func(*fixture, string) map[string]interface{} { return b }
}

// keyOf is the standing key a verify probe presents: the tenant's own on a
// tenant path, acme's on the global path.
func keyOf(fx *fixture, tenant string) string {
	if tenant == "" {
		tenant = "acme"
	}
	return fx.key[tenant]
}

func keyBody(fx *fixture, tenant string) map[string]interface{} {
	return map[string]interface{}{"api_key": keyOf(fx, tenant)}
}

func keyHeader(fx *fixture, tenant string) map[string]string {
	return map[string]string{"X-Api-Key": keyOf(fx, tenant)}
}

func restoreTenant(fx *fixture, tenant string) { fx.ensureTenant(tenant) }

// probes lists the matrix's paths and operations, DESIGN.md's table in
// order.
func probes() []probe {
	return []probe{
		{name: "config read", path: "config", op: "read", check: func(_ *fixture, _ string, a answer) error {
			if a.data["key_prefix"] == nil {
				return fmt.Errorf("config: %v", a.data)
			}
			return nil
		}},
		{name: "config update", path: "config", op: "update", body: body(map[string]interface{}{"expiry_warning": "168h"})},
		{name: "tenants/ list", path: "tenants/", op: "list", check: wantListed(static("globex"))},

		{name: "tenants/:tenant create", path: "tenants/{tenant}", op: "create",
			prep: func(fx *fixture, tenant string) string {
				fx.absent("tenants/" + tenant + "?force=true")
				return ""
			},
			body:    body(map[string]interface{}{"display_name": "created"}),
			restore: restoreTenant, always: true},
		{name: "tenants/:tenant read", path: "tenants/{tenant}", op: "read", check: func(_ *fixture, tenant string, a answer) error {
			return wantData("tenant", tenant)(nil, "", a)
		}},
		{name: "tenants/:tenant update", path: "tenants/{tenant}", op: "update", body: body(map[string]interface{}{"display_name": "renamed"})},
		{name: "tenants/:tenant delete", path: "tenants/{tenant}?force=true", op: "delete", restore: restoreTenant},

		{name: "tenants/:tenant/roles/ list", path: "tenants/{tenant}/roles/", op: "list", check: wantListed(static("dev-sandbox"))},
		{name: "tenants/:tenant/roles/:role create", path: "tenants/{tenant}/roles/new-role", op: "create",
			prep: func(fx *fixture, tenant string) string {
				fx.absent("tenants/" + tenant + "/roles/new-role")
				return ""
			},
			body: body(map[string]interface{}{"scopes": "read", "environment": "live"})},
		{name: "tenants/:tenant/roles/:role read", path: "tenants/{tenant}/roles/web", op: "read", check: wantData("environment", "live")},
		{name: "tenants/:tenant/roles/:role update", path: "tenants/{tenant}/roles/web", op: "update", body: body(map[string]interface{}{"scopes": "read,write"})},
		{name: "tenants/:tenant/roles/:role delete", path: "tenants/{tenant}/roles/doomed", op: "delete",
			prep: func(fx *fixture, tenant string) string {
				fx.do(http.MethodPost, "tenants/"+tenant+"/roles/doomed", map[string]interface{}{"scopes": "read"})
				return ""
			}},

		{name: "tenants/:tenant/creds/:role read (web)", path: "tenants/{tenant}/creds/web", op: "read", check: wantKeyOf("web")},
		{name: "tenants/:tenant/creds/:role update (web)", path: "tenants/{tenant}/creds/web", op: "update",
			body: body(map[string]interface{}{"name": "matrix"}), check: wantKeyOf("web")},
		{name: "tenants/:tenant/creds/:role read (dev-*)", path: "tenants/{tenant}/creds/dev-sandbox", op: "read", check: wantKeyOf("dev-sandbox")},
		{name: "tenants/:tenant/creds/:role update (dev-*)", path: "tenants/{tenant}/creds/dev-sandbox", op: "update",
			body: body(map[string]interface{}{"name": "matrix"}), check: wantKeyOf("dev-sandbox")},

		{name: "tenants/:tenant/static-keys/ list", path: "tenants/{tenant}/static-keys/", op: "list", check: wantListed(static("checkout"))},
		{name: "tenants/:tenant/static-keys/:name create", path: "tenants/{tenant}/static-keys/new-static", op: "create",
			prep: func(fx *fixture, tenant string) string {
				fx.absent("tenants/" + tenant + "/static-keys/new-static")
				return ""
			},
			body: body(map[string]interface{}{"role": "web", "rotation_period": "720h"}),
			check: func(_ *fixture, _ string, a answer) error {
				if a.data["key_id"] == nil {
					return fmt.Errorf("static key create: %v", a.data)
				}
				return nil
			}},
		{name: "tenants/:tenant/static-keys/:name read", path: "tenants/{tenant}/static-keys/checkout", op: "read", check: wantData("role", "web")},
		{name: "tenants/:tenant/static-keys/:name update", path: "tenants/{tenant}/static-keys/checkout", op: "update",
			body: body(map[string]interface{}{"metadata": "team=matrix"})},
		{name: "tenants/:tenant/static-keys/:name delete", path: "tenants/{tenant}/static-keys/doomed", op: "delete",
			prep: func(fx *fixture, tenant string) string {
				fx.do(http.MethodPost, "tenants/"+tenant+"/static-keys/doomed", map[string]interface{}{"role": "web", "rotation_period": "720h"})
				return ""
			}},
		{name: "tenants/:tenant/static-creds/:name read (the app's)", path: "tenants/{tenant}/static-creds/checkout", op: "read", check: wantKeyOf("web")},
		{name: "tenants/:tenant/static-creds/:name read (another)", path: "tenants/{tenant}/static-creds/billing", op: "read", check: wantKeyOf("web")},
		{name: "tenants/:tenant/static-keys/:name/rotate update", path: "tenants/{tenant}/static-keys/checkout/rotate", op: "update",
			check: func(_ *fixture, _ string, a answer) error {
				if a.data["key_id"] == nil {
					return fmt.Errorf("rotate: %v", a.data)
				}
				return nil
			}},
		// Not a row of DESIGN.md's table; a tenant path all the same.
		{name: "tenants/:tenant/onboard update", path: "tenants/{tenant}/onboard", op: "update",
			prep: func(fx *fixture, tenant string) string {
				fx.absent("tenants/" + tenant + "/static-keys/web-test")
				return ""
			},
			body: body(map[string]interface{}{"role": "web", "environments": "test", "rotation_period": "720h"}),
			check: func(_ *fixture, _ string, a answer) error {
				if keys, _ := a.data["keys"].(map[string]interface{}); keys["test"] == nil {
					return fmt.Errorf("onboard: no key for test")
				}
				return nil
			}},

		{name: "tenants/:tenant/keys/ list", path: "tenants/{tenant}/keys/", op: "list",
			check: wantListed(func(fx *fixture, tenant string) string { return fx.id[tenant] })},
		{name: "tenants/:tenant/keys/:key_id read", path: "tenants/{tenant}/keys/", op: "read",
			prep: func(fx *fixture, tenant string) string { return "tenants/" + tenant + "/keys/" + fx.id[tenant] },
			check: func(fx *fixture, tenant string, a answer) error {
				if a.data["key_id"] != fx.id[tenant] || a.data["api_key"] != nil {
					return fmt.Errorf("key metadata: %v", redacted(a.data))
				}
				return nil
			}},
		// Disabling a key: tenant admins may, developers may not.
		{name: "tenants/:tenant/keys/:key_id update", path: "tenants/{tenant}/keys/", op: "update",
			// A key of its own, so that the standing key keeps verifying.
			prep: func(fx *fixture, tenant string) string {
				a := fx.do(http.MethodGet, "tenants/"+tenant+"/creds/web", nil)
				return "tenants/" + tenant + "/keys/" + a.data["key_id"].(string)
			},
			body: body(map[string]interface{}{"status": "disabled"}), check: wantData("status", "disabled")},
		{name: "tenants/:tenant/keys/:key_id delete", path: "tenants/{tenant}/keys/", op: "delete",
			// A key of its own, so that an allowed revoke leaves the
			// standing key alone.
			prep: func(fx *fixture, tenant string) string {
				a := fx.do(http.MethodGet, "tenants/"+tenant+"/creds/web", nil)
				return "tenants/" + tenant + "/keys/" + a.data["key_id"].(string)
			}},

		{name: "verify update", path: "verify", op: "update", body: keyBody, check: wantValid("acme")},
		{name: "verify read", path: "verify", op: "read", header: keyHeader, check: wantValid("acme")},
		{name: "tenants/:tenant/verify update", path: "tenants/{tenant}/verify", op: "update", body: keyBody,
			check: func(fx *fixture, tenant string, a answer) error { return wantValid(tenant)(fx, tenant, a) }},
		{name: "tenants/:tenant/verify read", path: "tenants/{tenant}/verify", op: "read", header: keyHeader,
			check: func(fx *fixture, tenant string, a answer) error { return wantValid(tenant)(fx, tenant, a) }},
		{name: "tenants/:tenant/usage read", path: "tenants/{tenant}/usage", op: "read",
			check: func(_ *fixture, tenant string, a answer) error {
				if a.data["tenant"] != tenant || a.data["keys_active"] == nil {
					return fmt.Errorf("usage: %v", a.data)
				}
				return nil
			}},
		{name: "tenants/:tenant/usage/history read", path: "tenants/{tenant}/usage/history", op: "read",
			check: func(_ *fixture, tenant string, a answer) error {
				if a.data["tenant"] != tenant || a.data["buckets"] == nil {
					return fmt.Errorf("usage history: %v", a.data)
				}
				return nil
			}},
		{name: "tenants/:tenant/keys/:key_id/quota read", path: "tenants/{tenant}/keys/", op: "read",
			prep: func(fx *fixture, tenant string) string {
				return "tenants/" + tenant + "/keys/" + fx.id[tenant+"/metered"] + "/quota"
			},
			check: func(fx *fixture, tenant string, a answer) error {
				if a.data["key_id"] != fx.id[tenant+"/metered"] || a.data["quota"] == nil {
					return fmt.Errorf("key quota: %v", a.data)
				}
				return nil
			}},
		{name: "tenants/:tenant/keys/:key_id/quota update", path: "tenants/{tenant}/keys/", op: "update",
			prep: func(fx *fixture, tenant string) string {
				return "tenants/" + tenant + "/keys/" + fx.id[tenant+"/metered"] + "/quota"
			},
			body: func(*fixture, string) map[string]interface{} { return map[string]interface{}{"reset": true} }},
		{name: "tenants/:tenant/keys/:key_id/usage/history read", path: "tenants/{tenant}/keys/", op: "read",
			prep: func(fx *fixture, tenant string) string {
				return "tenants/" + tenant + "/keys/" + fx.id[tenant] + "/usage/history"
			},
			check: func(fx *fixture, tenant string, a answer) error {
				if a.data["key_id"] != fx.id[tenant] || a.data["buckets"] == nil {
					return fmt.Errorf("key usage history: %v", a.data)
				}
				return nil
			}},
		{name: "tenants/:tenant/notifications/ list", path: "tenants/{tenant}/notifications/", op: "list", check: wantListed(static("hook"))},
		{name: "tenants/:tenant/notifications/:name create", path: "tenants/{tenant}/notifications/new-hook", op: "create",
			prep: func(fx *fixture, tenant string) string {
				fx.absent("tenants/" + tenant + "/notifications/new-hook")
				return ""
			},
			body: body(map[string]interface{}{"url": "https://hooks.example.com/new", "events": "tenant-suspended"}),
			check: func(_ *fixture, _ string, a answer) error {
				if sec, _ := a.data["secret"].(string); len(sec) < 32 || a.data["name"] != "new-hook" {
					return fmt.Errorf("target create: no generated secret, or name %v", a.data["name"])
				}
				return nil
			}},
		{name: "tenants/:tenant/notifications/:name read", path: "tenants/{tenant}/notifications/hook", op: "read",
			check: func(_ *fixture, tenant string, a answer) error {
				if a.data["url"] != "https://hooks.example.com/"+tenant || a.data["secret"] != nil || a.data["secret_set"] != true {
					return fmt.Errorf("target read: url %v, secret_set %v", a.data["url"], a.data["secret_set"])
				}
				return nil
			}},
		{name: "tenants/:tenant/notifications/:name update", path: "tenants/{tenant}/notifications/hook", op: "update",
			body: body(map[string]interface{}{"events": "tenant-suspended"})},
		{name: "tenants/:tenant/notifications/:name delete", path: "tenants/{tenant}/notifications/doomed", op: "delete",
			prep: func(fx *fixture, tenant string) string {
				fx.do(http.MethodPost, "tenants/"+tenant+"/notifications/doomed", map[string]interface{}{"url": "https://hooks.example.com/doomed", "events": "tenant-suspended"})
				return ""
			}},
		{name: "tenants/:tenant/notifications/failed/ list", path: "tenants/{tenant}/notifications/failed/", op: "list",
			prep: func(fx *fixture, tenant string) string {
				fx.deadLetter(tenant)
				return ""
			},
			check: func(_ *fixture, _ string, a answer) error {
				if keys, _ := a.data["keys"].([]interface{}); len(keys) == 0 || !strings.HasSuffix(fmt.Sprint(keys[0]), ".refused") {
					return fmt.Errorf("dead letters %v", a.data["keys"])
				}
				return nil
			}},
		{name: "tenants/:tenant/notifications/failed/:id read", path: "tenants/{tenant}/notifications/failed/x.refused", op: "read",
			prep: deadLetterPath(""),
			check: func(_ *fixture, tenant string, a answer) error {
				if a.data["tenant"] != tenant || a.data["target"] != "refused" || a.data["event_type"] != "key-issued" {
					return fmt.Errorf("dead letter: %v", a.data)
				}
				return nil
			}},
		{name: "tenants/:tenant/notifications/failed/:id delete", path: "tenants/{tenant}/notifications/failed/x.refused", op: "delete",
			prep: deadLetterPath("")},
		{name: "tenants/:tenant/notifications/failed/:id/requeue update", path: "tenants/{tenant}/notifications/failed/x.refused/requeue", op: "update",
			prep: deadLetterPath("/requeue")},
		{name: "tidy update", path: "tidy", op: "update", body: body(map[string]interface{}{})},
		// Beyond DESIGN.md's table: mount-wide operations. A shared gateway
		// reports the traffic it served; the rest is the platform's.
		{name: "usage/report update", path: "usage/report", op: "update",
			body: func(fx *fixture, _ string) map[string]interface{} {
				return map[string]interface{}{"reports": []interface{}{
					map[string]interface{}{"tenant": "acme", "key_id": fx.id["acme"], "requests": 1},
				}}
			},
			check: wantData("accepted", 1)},
		// Edge verifiers' sync: it carries the verifier secret, so no
		// tenant tier may read it.
		{name: "sync/snapshot read", path: "sync/snapshot", op: "read",
			check: func(_ *fixture, _ string, a answer) error {
				if a.data["verifier_key"] == nil || a.data["keys"] == nil {
					return fmt.Errorf("snapshot: %v", a.data)
				}
				return nil
			}},
		{name: "sync/changes read", path: "sync/changes", op: "read",
			check: func(_ *fixture, _ string, a answer) error {
				if a.data["changes"] == nil {
					return fmt.Errorf("changes: %v", a.data)
				}
				return nil
			}},
		// A secret scanner reports a key it found: a key of its own, so
		// that the revoke leaves the standing key alone.
		{name: "leaks/report update", path: "leaks/report", op: "update",
			body: func(fx *fixture, _ string) map[string]interface{} {
				a := fx.do(http.MethodGet, "tenants/acme/creds/web", nil)
				return map[string]interface{}{"reports": []interface{}{
					map[string]interface{}{"token": a.data["api_key"], "type": "apikeys", "url": "https://github.com/o/r/blob/1/f", "source": "content"},
				}}
			},
			check: func(_ *fixture, _ string, a answer) error {
				res, _ := a.data["results"].([]interface{})
				if len(res) != 1 {
					return fmt.Errorf("leak report: %v", a.data)
				}
				if r, _ := res[0].(map[string]interface{}); r["status"] != "matched" || r["tenant"] != "acme" || r["action"] != "revoke" {
					return fmt.Errorf("leak report result: %v", r)
				}
				return nil
			}},
		{name: "config/monitoring read", path: "config/monitoring", op: "read"},
		{name: "config/monitoring update", path: "config/monitoring", op: "update", body: body(map[string]interface{}{})},
		{name: "metrics read", path: "metrics", op: "read", check: func(_ *fixture, _ string, a answer) error {
			if len(a.raw) == 0 {
				return fmt.Errorf("metrics: empty answer")
			}
			return nil
		}},
	}
}

var httpMethod = map[string]string{
	"create": http.MethodPost, "update": http.MethodPost, "read": http.MethodGet,
	"delete": http.MethodDelete, "list": "LIST",
}

// matrix is a test's installation with a token of every tier.
type matrix struct {
	in         *install
	fx         *fixture
	identities []identity
}

func newMatrix(t *testing.T) *matrix {
	t.Helper()
	in := newInstall(t)
	fx := &fixture{t: t, in: in, key: map[string]string{}, id: map[string]string{}}
	fx.admin = in.user("fixture-admin", "-", in.adminGroup)
	for _, tenant := range []string{"acme", "globex"} {
		fx.ensureTenant(tenant)
	}

	m := &matrix{in: in, fx: fx}
	add := func(tier, login, token string) {
		m.identities = append(m.identities, identity{tier: tier, login: login, token: token})
	}
	// userpass: the tenant (and the app's static key) on the entity.
	tiers := []string{platformAdmin, "tenant-admin", "tenant-developer", "gateway", "gateway-global", "app", "leak-reporter", "none"}
	tokens := in.users(
		userSpec{"platform-admin", "-", in.adminGroup, nil},
		userSpec{"acme-admin", in.policy("apikeys-tenant-admin"), "", []string{"tenant=acme"}},
		userSpec{"acme-dev", in.policy("apikeys-tenant-developer"), "", []string{"tenant=acme"}},
		userSpec{"acme-gw", in.policy("apikeys-gateway"), "", []string{"tenant=acme"}},
		userSpec{"edge-gw", in.policy("apikeys-gateway-global"), "", nil},
		userSpec{"acme-app", in.policy("apikeys-app"), "", []string{"tenant=acme", "static_key=checkout"}},
		// A secret scanner's relay: no tenant, since its reports span them.
		userSpec{"leak-scanner", in.policy("apikeys-leak-reporter"), "", nil},
		// A login of acme with no tier policy: the tenant alone grants
		// nothing.
		userSpec{"acme-nobody", "-", "", []string{"tenant=acme"}},
	)
	for i, tier := range tiers {
		add(tier, "userpass", tokens[i])
	}
	// JWT: the tenant (and static key) from claims, through claim_mappings.
	for _, tier := range []string{"tenant-admin", "tenant-developer", "gateway", "gateway-global", "app", "leak-reporter"} {
		extra := []string{"tenant=acme"}
		if tier == "app" {
			extra = append(extra, "static_key=checkout")
		}
		if tier == "gateway-global" || tier == "leak-reporter" {
			extra = nil
		}
		token, err := in.jwtLogin(tier, jwtClaims("jwt-"+tier+"-"+in.mount, tier, extra...))
		if err != nil {
			t.Fatalf("jwt login %s: %v", tier, err)
		}
		add(tier, "jwt", token)
	}
	return m
}

// run sends every probe as every identity and returns how many cases ran
// and how many allowed cases were skipped as pending.
func (m *matrix) run(t *testing.T, label string) (ran, pending int) {
	t.Helper()
	for _, id := range m.identities {
		for _, p := range probes() {
			tenants := []string{"acme", "globex"}
			if p.global() {
				tenants = []string{""}
			}
			for _, tenant := range tenants {
				allowed := id.allowed(p, tenant)
				if _, skip := pendingProbes[p.name]; skip && allowed {
					pending++
					continue
				}
				ran++
				m.send(t, label, id, p, tenant, allowed)
			}
		}
	}
	return ran, pending
}

func (m *matrix) send(t *testing.T, label string, id identity, p probe, tenant string, allowed bool) {
	t.Helper()
	fx := m.fx
	path := strings.ReplaceAll(p.path, "{tenant}", tenant)
	if p.prep != nil {
		if alt := p.prep(fx, tenant); alt != "" {
			path = alt
		}
	}
	var b map[string]interface{}
	if p.body != nil {
		b = p.body(fx, tenant)
	}
	var h map[string]string
	if p.header != nil {
		h = p.header(fx, tenant)
	}
	a := call(t, id.token, httpMethod[p.op], fx.path(path), b, h)
	where := fmt.Sprintf("[%s] %s as %s on %s", label, p.name, id, orGlobal(tenant))
	switch {
	case !allowed && a.status != http.StatusForbidden:
		t.Errorf("%s: want 403, got %s", where, a)
	case allowed && !a.ok():
		t.Errorf("%s: want success, got %s", where, a)
	case allowed && p.check != nil:
		if err := p.check(fx, tenant, a); err != nil {
			t.Errorf("%s: %v", where, err)
		}
	}
	if p.restore != nil && (p.always || a.ok()) {
		p.restore(fx, tenant)
	}
}

func orGlobal(tenant string) string {
	if tenant == "" {
		return "the mount"
	}
	return tenant
}

func TestRBACMatrix(t *testing.T) {
	m := newMatrix(t)

	// A path still listed as pending must really be missing, else its
	// allowed cases would go unchecked.
	for _, p := range probes() {
		if _, ok := pendingProbes[p.name]; !ok {
			continue
		}
		path := strings.ReplaceAll(p.path, "{tenant}", "acme")
		if a := call(t, m.fx.admin, httpMethod[p.op], m.fx.path(path), nil, nil); !a.unsupported() {
			t.Errorf("%q answers %s: the engine serves it now, so delete it from pendingProbes", p.name, a)
		}
	}
	for name := range pendingProbes {
		if !slices.ContainsFunc(probes(), func(p probe) bool { return p.name == name }) {
			t.Errorf("pendingProbes names %q, which is no probe", name)
		}
	}
	// A misspelt name would quietly turn an allowed case into a denied one.
	for _, allows := range []map[string][]string{tierAllowsOwnTenant, tierAllowsGlobal} {
		for tier, names := range allows {
			for _, n := range names {
				if !slices.ContainsFunc(probes(), func(p probe) bool { return p.name == n }) {
					t.Errorf("tier %s allows %q, which is no probe", tier, n)
				}
			}
		}
	}

	ranOff, pendOff := m.run(t, "policies only")
	write(t, srv.Client, m.in.mount+"/config", map[string]interface{}{"enforce_entity_tenant": true})
	ranOn, pendOn := m.run(t, "policies + tenant guard")

	tiers := map[string]bool{}
	for _, id := range m.identities {
		tiers[id.tier] = true
	}
	perIdentity := 0
	for _, p := range probes() {
		if p.global() {
			perIdentity++
		} else {
			perIdentity += 2
		}
	}
	t.Logf("RBAC matrix: %d (path, operation, tenant) probes × %d identities (%d tiers; userpass and JWT) × 2 guard settings = %d cases, %d sent and checked, %d allowed cases pending (%v); %d distinct (path, operation, tier) cases",
		perIdentity, len(m.identities), len(tiers), perIdentity*len(m.identities)*2, ranOff+ranOn, pendOff+pendOn, sortedKeys(pendingProbes), len(probes())*len(tiers))
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// A JWT minted for acme logs in through the role of its tier and lands on
// that tier's policy, with the tenant in its alias metadata; tokens that are
// not exactly what the roles want do not log in at all.
func TestJWTLoginLandsOnTenantPolicies(t *testing.T) {
	in := newInstall(t)
	fx := &fixture{t: t, in: in, key: map[string]string{}, id: map[string]string{}}
	fx.admin = in.user("fixture-admin", "-", in.adminGroup)
	fx.ensureTenant("acme")
	fx.ensureTenant("globex")

	token, err := in.jwtLogin("tenant-admin", jwtClaims("alice", "tenant-admin", "tenant=acme"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(&api.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	self, err := c.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatal(err)
	}
	policies, _ := self.TokenPolicies()
	if !slices.Contains(policies, in.policy("apikeys-tenant-admin")) {
		t.Fatalf("token policies %v", policies)
	}
	entityID, _ := self.Data["entity_id"].(string)
	entity := read(t, srv.Client, "identity/entity/id/"+entityID)
	var aliasTenant interface{}
	for _, a := range entity.Data["aliases"].([]interface{}) {
		alias := a.(map[string]interface{})
		if alias["name"] == "alice" {
			aliasTenant = alias["metadata"].(map[string]interface{})["tenant"]
		}
	}
	if aliasTenant != "acme" {
		t.Fatalf("alias metadata tenant %v (entity %v)", aliasTenant, entity.Data)
	}
	if a := call(t, token, http.MethodGet, in.mount+"/tenants/acme/creds/web", nil, nil); !a.ok() {
		t.Fatalf("issue on acme: %s", a)
	}
	if a := call(t, token, http.MethodGet, in.mount+"/tenants/globex/creds/web", nil, nil); a.status != http.StatusForbidden {
		t.Fatalf("issue on globex: %s", a)
	}

	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	expired := jwtClaims("alice", "tenant-admin", "tenant=acme")
	expired["exp"] = expired["iat"].(int64) - 60
	for _, tc := range []struct {
		name   string
		key    *rsa.PrivateKey
		role   string
		claims map[string]interface{}
	}{
		{"another tier's role", in.idp, "tenant-admin", jwtClaims("alice", "tenant-developer", "tenant=acme")},
		{"no tier claim", in.idp, "tenant-admin", func() map[string]interface{} {
			c := jwtClaims("alice", "", "tenant=acme")
			delete(c, "apikeys_tier")
			return c
		}()},
		{"wrong audience", in.idp, "tenant-admin", jwtClaims("alice", "tenant-admin", "tenant=acme", "aud=someone-else")},
		{"wrong issuer", in.idp, "tenant-admin", jwtClaims("alice", "tenant-admin", "tenant=acme", "iss=evil-idp")},
		{"expired", in.idp, "tenant-admin", expired},
		{"signed by another key", other, "tenant-admin", jwtClaims("alice", "tenant-admin", "tenant=acme")},
	} {
		if _, err := in.jwtLoginWith(tc.key, tc.role, tc.claims); err == nil {
			t.Errorf("%s: login succeeded", tc.name)
		} else if re, ok := err.(*api.ResponseError); !ok || re.StatusCode >= 500 {
			t.Errorf("%s: want a 4xx refusal, got %v", tc.name, err)
		}
	}
}

// The tenant guard stops what the policies let through, and only that.
func TestTenantGuardStopsWhatPoliciesLeak(t *testing.T) {
	in := newInstall(t)
	fx := &fixture{t: t, in: in, key: map[string]string{}, id: map[string]string{}}
	fx.admin = in.user("fixture-admin", "-", in.adminGroup)
	fx.ensureTenant("acme")
	fx.ensureTenant("globex")
	mount := in.mount
	setGuard := func(on bool) {
		t.Helper()
		write(t, srv.Client, mount+"/config", map[string]interface{}{"enforce_entity_tenant": on})
	}
	status := func(token, method, path string) int {
		t.Helper()
		return call(t, token, method, mount+"/"+path, nil, nil).status
	}

	// A mis-written policy: every tenant instead of the caller's.
	broad := in.prefix + "too-broad"
	if err := srv.Client.Sys().PutPolicy(broad, `path "`+mount+`/tenants/*" { capabilities = ["read", "list", "update", "create", "delete"] }`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Client.Sys().DeletePolicy(broad) })
	acmeUser := in.user("acme-broad", broad, "", "tenant=acme")

	// An identity provider that lets a "+" through as the tenant: Vault
	// pastes it into the templated policy, where "+" is a path wildcard.
	plus, err := in.jwtLogin("tenant-developer", jwtClaims("mallory", "tenant-developer", "tenant=+"))
	if err != nil {
		t.Fatal(err)
	}

	// A token with no entity, made by the token store.
	bare, err := srv.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{broad}})
	if err != nil {
		t.Fatal(err)
	}
	noEntity := bare.Auth.ClientToken
	admin := in.user("platform-admin", "-", in.adminGroup)

	setGuard(false)
	// Without the guard each of them reaches globex: the test can fail.
	if s := status(acmeUser, http.MethodGet, "tenants/globex/roles/web"); s != http.StatusOK {
		t.Fatalf("broad policy, guard off: globex answers %d; the leak this test needs is not there", s)
	}
	if s := status(plus, http.MethodGet, "tenants/globex/creds/dev-sandbox"); s != http.StatusOK {
		t.Fatalf(`tenant "+" with the guard off: globex answers %d; Vault no longer pastes "+" into policy paths? Update docs/security.md`, s)
	}
	if s := status(noEntity, http.MethodGet, "tenants/globex/roles/web"); s != http.StatusOK {
		t.Fatalf("token without entity, guard off: %d", s)
	}

	setGuard(true)
	for _, tc := range []struct {
		name, token, method, path string
		want                      int
	}{
		{"broad policy, own tenant", acmeUser, http.MethodGet, "tenants/acme/roles/web", http.StatusOK},
		{"broad policy, own tenant, write", acmeUser, http.MethodPost, "tenants/acme/roles/web", http.StatusNoContent},
		{"broad policy, other tenant", acmeUser, http.MethodGet, "tenants/globex/roles/web", http.StatusForbidden},
		{"broad policy, other tenant's record", acmeUser, http.MethodDelete, "tenants/globex", http.StatusForbidden},
		{"broad policy, other tenant's keys", acmeUser, "LIST", "tenants/globex/keys/", http.StatusForbidden},
		{`tenant "+", other tenant`, plus, http.MethodGet, "tenants/globex/creds/dev-sandbox", http.StatusForbidden},
		{`tenant "+", acme`, plus, http.MethodGet, "tenants/acme/creds/dev-sandbox", http.StatusForbidden},
		{"no entity", noEntity, http.MethodGet, "tenants/acme/roles/web", http.StatusForbidden},
		{"root", srv.Token, http.MethodGet, "tenants/acme/roles/web", http.StatusForbidden},
		{"root, global paths stay", srv.Token, http.MethodGet, "config", http.StatusOK},
		{"root, tenant list stays", srv.Token, "LIST", "tenants/", http.StatusOK},
		{"platform admin group", admin, http.MethodGet, "tenants/globex/roles/web", http.StatusOK},
	} {
		if s := status(tc.token, tc.method, tc.path); s != tc.want {
			t.Errorf("guard on, %s: %s %s answers %d, want %d", tc.name, tc.method, tc.path, s, tc.want)
		}
	}
	// globex's role is as the fixture made it: the denied writes wrote
	// nothing.
	if r := call(t, admin, http.MethodGet, mount+"/tenants/globex/roles/web", nil, nil); fmt.Sprint(r.data["scopes"]) != "[read write]" {
		t.Fatalf("globex role: %v", r.data)
	}

	// The platform admin group is configuration, read on every request.
	write(t, srv.Client, mount+"/config", map[string]interface{}{"platform_admin_groups": ""})
	if s := status(admin, http.MethodGet, "tenants/globex/roles/web"); s != http.StatusForbidden {
		t.Fatalf("platform admin after the group was removed from config: %d", s)
	}
	write(t, srv.Client, mount+"/config", map[string]interface{}{"platform_admin_groups": in.adminGroup})
	// Metadata changes take effect at once: the guard asks Vault every time.
	entityName := in.prefix + "acme-broad"
	write(t, srv.Client, "identity/entity/name/"+entityName, map[string]interface{}{"metadata": "tenant=globex"})
	if s := status(acmeUser, http.MethodGet, "tenants/acme/roles/web"); s != http.StatusForbidden {
		t.Fatalf("entity moved to globex still reaches acme: %d", s)
	}
	if s := status(acmeUser, http.MethodGet, "tenants/globex/roles/web"); s != http.StatusOK {
		t.Fatalf("entity moved to globex cannot reach globex: %d", s)
	}
}

package portal

import (
	"net/http"
	"strings"
	"testing"
)

// TestPortalUsage: the tenant's and a key's charts and totals after real
// verifications; the range form's bad input is a 400 naming the field; the
// developer gets the key's page but not the tenant's; globex's key id is a
// 404.
func TestPortalUsage(t *testing.T) {
	srv := sharedVault(t)
	acme := login(t, srv, "acme-admin")
	k, err := acme.Logical().Write("apikeys/tenants/acme/creds/web", map[string]interface{}{"name": "usage-key"})
	if err != nil {
		t.Fatal(err)
	}
	key, id := str(k.Data, "api_key"), str(k.Data, "key_id")
	admin := login(t, srv, "platform-admin")
	g, err := admin.Logical().Write("apikeys/tenants/globex/creds/web", map[string]interface{}{"name": "globex-usage"})
	if err != nil {
		t.Fatal(err)
	}
	gID := str(g.Data, "key_id")
	t.Cleanup(func() {
		_, _ = admin.Logical().Delete("apikeys/tenants/acme/keys/" + id)
		_, _ = admin.Logical().Delete("apikeys/tenants/globex/keys/" + gID)
	})
	for range 3 {
		wantCode(t, srv, key, "VALID")
	}

	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	b.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK, `href="/usage"`)
	u := b.get("/usage").want(t, http.StatusOK, "Usage of acme", `<svg`, `id="tenant-verifications-title"`, `id="tenant-gateway-title"`, `id="tenant-latency-title"`,
		`class="chart-scroll"`, "VALID", `href="/usage?granularity=hour&amp;totals=1"`)
	u.lacks(t, "Active keys")
	if n := strings.Count(u.body, "<svg"); n != 3 {
		t.Fatalf("want 3 charts, got %d", n)
	}
	// The totals, which walk every key in Vault, only when asked for.
	b.get("/usage?granularity=hour&totals=1").want(t, http.StatusOK, "Totals", "Active keys", `id="tenant-verifications-title"`).
		lacks(t, "Show the tenant")
	b.get("/usage?granularity=day").want(t, http.StatusOK, "per day", `id="tenant-verifications-title"`)
	b.get("/usage?granularity=week").want(t, http.StatusBadRequest, "granularity must be")
	b.get("/usage?from=yesterday").want(t, http.StatusBadRequest, "from must be a date")
	b.get("/usage?to=2026-13-45").want(t, http.StatusBadRequest, "to must be a date")
	// A well-formed range Vault does not keep: Vault's 400, field named.
	b.get("/usage?from=2000-01-01").want(t, http.StatusBadRequest, "from")

	b.get("/keys/"+id).want(t, http.StatusOK, `href="/keys/`+id+`/usage"`)
	ku := b.get("/keys/"+id+"/usage").want(t, http.StatusOK, "Usage of key", `id="key-verifications-title"`, `id="key-latency-title"`, "VALID")
	ku.lacks(t, key)
	b.get("/keys/not-a-uuid/usage").want(t, http.StatusBadRequest, "key_id must be")
	for _, p := range []string{"/keys/" + gID + "/usage", "/keys/" + gID + "/usage?tenant=globex", "/usage?tenant=globex"} {
		p := b.get(p)
		p.lacks(t, "globex-usage", "Usage of globex")
		if strings.Contains(p.body, gID) && p.status != http.StatusNotFound {
			t.Fatalf("globex key page: %d", p.status)
		}
	}
	b.get("/keys/"+gID+"/usage").want(t, http.StatusNotFound)

	dev := newBrowser(t, tp.url)
	dev.signIn("acme-dev", demo["acme-dev"]).lacks(t, `href="/usage"`)
	dev.get("/usage").want(t, http.StatusForbidden, "Permission denied").lacks(t, "<svg")
	dev.get("/keys/"+id+"/usage").want(t, http.StatusOK, `id="key-verifications-title"`)
}

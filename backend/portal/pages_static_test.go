package portal

import (
	"html"
	"net/http"
	"net/url"
	"testing"
)

// TestPortalStaticKeys: acme's admin lists a static key, reads its rotation
// state, rotates it from the page (confirmation, CSRF) and gets the new key
// once, with the old one still verifying in grace; the developer is offered
// none of it; globex's static key stays out of reach.
func TestPortalStaticKeys(t *testing.T) {
	srv := sharedVault(t)
	admin := login(t, srv, "platform-admin")
	for p, body := range map[string]map[string]interface{}{
		"apikeys/tenants/acme/static-keys/portal-sk":   {"role": "web", "rotation_period": "720h", "grace_period": "1h"},
		"apikeys/tenants/globex/static-keys/globex-sk": {"role": "web", "rotation_period": "720h"},
	} {
		if _, err := admin.Logical().Write(p, body); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = admin.Logical().Delete(p) })
	}
	old, err := admin.Logical().Read("apikeys/tenants/acme/static-creds/portal-sk")
	if err != nil {
		t.Fatal(err)
	}
	oldKey, oldID := str(old.Data, "api_key"), str(old.Data, "key_id")

	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	b.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK, `href="/static-keys"`)
	list := b.get("/static-keys").want(t, http.StatusOK, `href="/static-keys/portal-sk"`, `href="/static-keys/checkout"`, "every 720h0m0s")
	list.lacks(t, "globex-sk", oldKey)
	detail := b.get("/static-keys/portal-sk").want(t, http.StatusOK, "Static key portal-sk", "/keys/"+oldID, "1h0m0s", "none in grace", "Rotate now")
	detail.lacks(t, oldKey)
	b.get("/static-keys/Bad_Name").want(t, http.StatusBadRequest, "name must be")
	b.get("/static-keys/nope").want(t, http.StatusNotFound)

	confirm := b.get("/static-keys/portal-sk/rotate").want(t, http.StatusOK, `action="/static-keys/portal-sk/rotate"`)
	b.post("/static-keys/portal-sk/rotate", url.Values{}).want(t, http.StatusForbidden, "Request refused")
	wantCode(t, srv, oldKey, "VALID")
	if v := verify(t, srv, oldKey); str(v.Data, "in_grace") == "true" {
		t.Fatal("rotated without CSRF")
	}
	rotated := b.post("/static-keys/portal-sk/rotate", url.Values{"csrf": {confirm.csrf(t)}}).want(t, http.StatusOK, "rotated", oldID)
	if cc := rotated.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	m := issuedKeyRE.FindStringSubmatch(rotated.body)
	if m == nil {
		t.Fatalf("no new key on the page: %s", rotated.body)
	}
	newKey := html.UnescapeString(m[1])
	if newKey == oldKey {
		t.Fatal("the key did not change")
	}
	if v := wantCode(t, srv, newKey, "VALID"); str(v.Data, "tenant") != "acme" || str(v.Data, "kind") != "static" {
		t.Fatalf("new key: %v", v.Data)
	}
	if v := wantCode(t, srv, oldKey, "VALID"); str(v.Data, "in_grace") != "true" {
		t.Fatalf("old key not in grace: %v", v.Data)
	}
	// Shown once: the detail page names the previous key but shows no key.
	after := b.get("/static-keys/portal-sk").want(t, http.StatusOK, "verifies (in grace) until", oldID)
	after.lacks(t, newKey, oldKey)

	// globex's names: nothing, by any URL.
	for _, p := range []string{"/static-keys/globex-sk", "/static-keys/globex-sk/rotate", "/static-keys/globex-sk?tenant=globex"} {
		b.get(p).want(t, http.StatusNotFound).lacks(t, "globex-sk</h1>")
	}
	b.post("/static-keys/globex-sk/rotate", url.Values{"csrf": {confirm.csrf(t)}, "tenant": {"globex"}}).want(t, http.StatusNotFound)

	// The developer: not offered, refused by URL, and by POST.
	dev := newBrowser(t, tp.url)
	dev.signIn("acme-dev", demo["acme-dev"]).lacks(t, `href="/static-keys"`)
	for _, p := range []string{"/static-keys", "/static-keys/portal-sk", "/static-keys/portal-sk/rotate"} {
		dev.get(p).want(t, http.StatusForbidden, "Permission denied").lacks(t, "portal-sk</h1>", newKey)
	}
	dcsrf := dev.get("/keys").csrf(t)
	dev.post("/static-keys/portal-sk/rotate", url.Values{"csrf": {dcsrf}}).want(t, http.StatusForbidden)
	wantCode(t, srv, newKey, "VALID")
}

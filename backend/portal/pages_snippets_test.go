package portal

import (
	"html"
	"net/http"
	"strings"
	"testing"
)

// TestPortalSnippets: the snippets carry acme's name, the mount, the real
// Vault address and the picked role, escaped in <pre>, each with a copy
// button; the Vault Agent template's path really issues a key; globex and
// unknown roles are refused.
func TestPortalSnippets(t *testing.T) {
	srv := sharedVault(t)
	tp := newTestPortal(t, srv, nil)
	b := newBrowser(t, tp.url)
	b.signIn("acme-admin", demo["acme-admin"]).want(t, http.StatusOK, `href="/snippets"`)
	p := b.get("/snippets").want(t, http.StatusOK,
		`<pre id="snippet-agent"`, `data-copy="snippet-agent"`, `data-copy="snippet-curl"`, `data-copy="snippet-nginx"`, `data-copy="snippet-caddy"`,
		html.EscapeString(`{{- with secret "apikeys/tenants/acme/creds/dev-sandbox"`),
		srv.Addr+"/v1/apikeys/tenants/acme/verify", "set $apikeys_tenant_filter acme;", "tenant acme", "vault_addr "+srv.Addr)
	p.lacks(t, `with secret "apikeys`, "globex")
	web := b.get("/snippets?role=web").want(t, http.StatusOK, html.EscapeString(`"apikeys/tenants/acme/creds/web"`), html.EscapeString(`set $apikeys_scopes "read write";`), "scopes read write")
	wantSecurityHeaders(t, web)
	if strings.Contains(web.body, srv.Token) {
		t.Fatal("a token on the snippets page")
	}
	b.get("/snippets?role=Not_A_Role").want(t, http.StatusBadRequest, "role must be")
	b.get("/snippets?role=nope").want(t, http.StatusNotFound)
	b.get("/snippets?tenant=globex").want(t, http.StatusOK, "acme").lacks(t, "tenants/globex")

	// The agent template's path is one acme's admin may issue from.
	acme := login(t, srv, "acme-admin")
	k, err := acme.Logical().Write("apikeys/tenants/acme/creds/web", map[string]interface{}{"name": "my-app"})
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, srv, str(k.Data, "api_key"), "VALID")
	_, _ = acme.Logical().Delete("apikeys/tenants/acme/keys/" + str(k.Data, "key_id"))

	// The developer sees the same snippets for the roles it can list.
	dev := newBrowser(t, tp.url)
	dev.signIn("acme-dev", demo["acme-dev"]).want(t, http.StatusOK, `href="/snippets"`)
	dev.get("/snippets").want(t, http.StatusOK, `<pre id="snippet-curl"`)
}

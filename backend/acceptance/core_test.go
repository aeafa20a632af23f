package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// engine is one mount of the plugin in the shared server (or, from
// TestProductionInstall, in a server of its own).
type engine struct {
	t     *testing.T
	mount string
	c     *api.Client
	// vault runs the CLI against the engine's server as root.
	vault func(ctx context.Context, env []string, args ...string) (string, error)
}

func newEngine(t *testing.T) *engine {
	return &engine{t: t, mount: newMount(t), c: srv.Client, vault: srv.CLI}
}

func (e *engine) path(p string) string { return e.mount + "/" + p }

func (e *engine) tenant(name string, data map[string]interface{}) {
	e.t.Helper()
	write(e.t, e.c, e.path("tenants/"+name), data)
}

func (e *engine) role(tenant, name string, data map[string]interface{}) {
	e.t.Helper()
	write(e.t, e.c, e.path("tenants/"+tenant+"/roles/"+name), data)
}

type issued struct {
	key, id, lease string
	secret         *api.Secret
}

// issue issues a key through creds with the engine's client; data nil reads.
func (e *engine) issue(tenant, role string, data map[string]interface{}) issued {
	e.t.Helper()
	return e.issueWith(e.c, tenant, role, data)
}

func (e *engine) issueWith(c *api.Client, tenant, role string, data map[string]interface{}) issued {
	e.t.Helper()
	var s *api.Secret
	if data == nil {
		s = read(e.t, c, e.path("tenants/"+tenant+"/creds/"+role))
	} else {
		s = write(e.t, c, e.path("tenants/"+tenant+"/creds/"+role), data)
	}
	if s == nil || s.LeaseID == "" {
		e.t.Fatalf("issue gave no lease: %#v", s)
	}
	return issued{key: str(e.t, s, "api_key"), id: str(e.t, s, "key_id"), lease: s.LeaseID, secret: s}
}

// verify calls the verify path and returns the answer's data.
func (e *engine) verify(path string, data map[string]interface{}) map[string]interface{} {
	e.t.Helper()
	s := write(e.t, e.c, e.path(path), data)
	if s == nil {
		e.t.Fatalf("verify gave no body")
	}
	return s.Data
}

func (e *engine) code(key string, extra ...interface{}) string {
	e.t.Helper()
	data := map[string]interface{}{"api_key": key}
	for i := 0; i+1 < len(extra); i += 2 {
		data[extra[i].(string)] = extra[i+1]
	}
	return e.verify("verify", data)["code"].(string)
}

func (e *engine) wantCode(key, want string, extra ...interface{}) {
	e.t.Helper()
	if got := e.code(key, extra...); got != want {
		e.t.Fatalf("verify %v: got %s, want %s", extra, got, want)
	}
}

// revokeLease runs `vault lease revoke -sync`: the CLI's default queues the
// revocation and returns before it ran, so a check right after it would
// race Vault's expiration manager. The tests of the default form wait.
func (e *engine) revokeLease(args ...string) {
	e.t.Helper()
	e.cli(nil, append([]string{"lease", "revoke", "-sync"}, args...)...)
}

// waitCode polls verify until it answers want, for what Vault does in the
// background (a queued lease revocation).
func (e *engine) waitCode(key, want string, within time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	testvault.WaitFor(e.t, within, "verify to answer "+want, func() error {
		if got := e.code(key); got != want {
			return fmt.Errorf("verify answers %s", got)
		}
		return nil
	})
	return time.Since(start)
}

func (e *engine) cli(env []string, args ...string) string {
	e.t.Helper()
	out, err := e.vault(context.Background(), env, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *engine) keyIDs(tenant string) []string {
	e.t.Helper()
	s, err := e.c.Logical().List(e.path("tenants/" + tenant + "/keys"))
	if err != nil {
		e.t.Fatal(err)
	}
	if s == nil {
		return nil
	}
	var ids []string
	for _, k := range s.Data["keys"].([]interface{}) {
		ids = append(ids, k.(string))
	}
	return ids
}

func (e *engine) acme() {
	e.tenant("acme", map[string]interface{}{"display_name": "Acme Corp", "allowed_environments": "live,test"})
	e.role("acme", "web", map[string]interface{}{"scopes": "read,write", "environment": "live", "ttl": "1h", "max_ttl": "2h"})
}

var keyShape = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}_[a-z][a-z0-9]{0,9}_[0-9A-Za-z]{49}$`)

func TestIssueThenVerify(t *testing.T) {
	e := newEngine(t)
	e.acme()
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"key_prefix": "acme"})
	k := e.issue("acme", "web", map[string]interface{}{"name": "checkout", "metadata": "team=payments"})
	if !keyShape.MatchString(k.key) || !strings.HasPrefix(k.key, "acme_live_") {
		t.Fatalf("key %q does not have the documented shape", k.key)
	}
	if !strings.HasPrefix(k.lease, e.path("tenants/acme/creds/web/")) {
		t.Fatalf("lease id %q", k.lease)
	}
	if ttl := k.secret.LeaseDuration; ttl != 3600 {
		t.Fatalf("lease duration %d, want 3600", ttl)
	}
	got := e.verify("verify", map[string]interface{}{"api_key": k.key, "required_scopes": "read"})
	want := map[string]interface{}{
		"valid": true, "code": "VALID", "key_id": k.id, "tenant": "acme", "role": "web",
		"environment": "live", "kind": "dynamic", "in_grace": false,
	}
	for f, w := range want {
		if !reflect.DeepEqual(got[f], w) {
			t.Errorf("verify %s = %#v, want %#v", f, got[f], w)
		}
	}
	if md := got["metadata"].(map[string]interface{}); md["team"] != "payments" {
		t.Errorf("metadata %v", md)
	}
	if exp, err := time.Parse(time.RFC3339, got["expires_at"].(string)); err != nil || time.Until(exp) < 50*time.Minute {
		t.Errorf("expires_at %v", got["expires_at"])
	}

	// The key is listed under its tenant, and its metadata never shows the key.
	if ids := e.keyIDs("acme"); !reflect.DeepEqual(ids, []string{k.id}) {
		t.Fatalf("keys of acme: %v", ids)
	}
	md := read(t, e.c, e.path("tenants/acme/keys/"+k.id))
	raw, _ := json.Marshal(md.Data)
	if strings.Contains(string(raw), k.key) || md.Data["hash"] != nil || md.Data["api_key"] != nil {
		t.Fatalf("key metadata leaks the key or its hash: %s", raw)
	}
	if md.Data["name"] != "checkout" || md.Data["status"] != "active" || md.Data["kind"] != "dynamic" {
		t.Fatalf("key metadata %v", md.Data)
	}
}

func TestVerifyAnswers200ForBadKeysAnd400ForMissingKey(t *testing.T) {
	e := newEngine(t)
	e.acme()
	ctx := context.Background()
	status, body, err := srv.Raw(ctx, http.MethodPost, e.path("verify"), strings.NewReader(`{"api_key":"not-a-key"}`))
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK || !strings.Contains(string(body), `"code":"MALFORMED"`) || !strings.Contains(string(body), `"valid":false`) {
		t.Fatalf("malformed key: HTTP %d %s", status, body)
	}
	k := e.issue("acme", "web", nil)
	// One changed character breaks the checksum: answered offline.
	typo := k.key[:len(k.key)-10] + flip(k.key[len(k.key)-10]) + k.key[len(k.key)-9:]
	e.wantCode(typo, "MALFORMED")

	status, body, err = srv.Raw(ctx, http.MethodPost, e.path("verify"), strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusBadRequest || !strings.Contains(string(body), "api_key") {
		t.Fatalf("missing api_key: HTTP %d %s", status, body)
	}
	_, err = e.c.Logical().Write(e.path("verify"), map[string]interface{}{"api_key": k.key, "client_ip": "300.1.1.1"})
	wantStatus(t, err, http.StatusBadRequest, "client_ip")
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func TestLeaseRevokeKillsKey(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	e.wantCode(k.key, "VALID")
	// What an operator types: the CLI queues the revocation by default.
	e.cli(nil, "lease", "revoke", k.lease)
	t.Logf("key refused %s after `vault lease revoke` returned", e.waitCode(k.key, "NOT_FOUND", 15*time.Second))
	if ids := e.keyIDs("acme"); len(ids) != 0 {
		t.Fatalf("revoked key still listed: %v", ids)
	}
	// Revoking again is harmless.
	if _, err := e.c.Logical().Write("sys/leases/revoke", map[string]interface{}{"lease_id": k.lease}); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
}

func TestLeaseRevokePrefixKillsOneTenant(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.tenant("globex", nil)
	e.role("globex", "api", map[string]interface{}{"scopes": "read"})
	a1, a2 := e.issue("acme", "web", nil), e.issue("acme", "web", nil)
	g := e.issue("globex", "api", nil)
	e.cli(nil, "lease", "revoke", "-prefix", e.path("tenants/acme/"))
	e.waitCode(a1.key, "NOT_FOUND", 15*time.Second)
	e.waitCode(a2.key, "NOT_FOUND", 15*time.Second)
	e.wantCode(g.key, "VALID")
}

func TestTTLExpiryEndsKey(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.role("acme", "short", map[string]interface{}{"ttl": "2s", "max_ttl": "2s"})
	k := e.issue("acme", "short", nil)
	e.wantCode(k.key, "VALID")
	testvault.WaitFor(t, 10*time.Second, "the key to be refused after its 2 s TTL", func() error {
		if c := e.code(k.key); c != "EXPIRED" && c != "NOT_FOUND" {
			return fmt.Errorf("verify answers %s", c)
		}
		return nil
	})
	// Vault's expiration manager then revokes the lease, which deletes it.
	testvault.WaitFor(t, 30*time.Second, "the expired key's lease to revoke it", func() bool { return len(e.keyIDs("acme")) == 0 })
	e.wantCode(k.key, "NOT_FOUND")
}

func TestRevokingIssuingTokenKillsKey(t *testing.T) {
	e := newEngine(t)
	e.acme()
	policy := `path "` + e.path("tenants/acme/creds/*") + `" { capabilities = ["read", "update"] }`
	if err := e.c.Sys().PutPolicy(e.mount+"-issuer", policy); err != nil {
		t.Fatal(err)
	}
	tok, err := e.c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{e.mount + "-issuer"}})
	if err != nil {
		t.Fatal(err)
	}
	child, err := api.NewClient(&api.Config{Address: srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	child.SetToken(tok.Auth.ClientToken)
	k := e.issueWith(child, "acme", "web", nil)
	e.wantCode(k.key, "VALID")
	if err := e.c.Auth().Token().RevokeTree(tok.Auth.ClientToken); err != nil {
		t.Fatal(err)
	}
	// Vault revokes a revoked token's leases through its expiration
	// manager, which may finish just after the revoke call returns.
	e.waitCode(k.key, "NOT_FOUND", 15*time.Second)
}

func TestSuspendAndResumeTenant(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	e.wantCode(k.key, "VALID")
	e.tenant("acme", map[string]interface{}{"status": "suspended"})
	e.wantCode(k.key, "TENANT_SUSPENDED")
	_, err := e.c.Logical().Read(e.path("tenants/acme/creds/web"))
	wantStatus(t, err, http.StatusBadRequest, "suspended")
	e.tenant("acme", map[string]interface{}{"status": "active"})
	e.wantCode(k.key, "VALID")
}

func TestScopeAndCIDRChecks(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.role("acme", "office", map[string]interface{}{"scopes": "read,write,admin", "allowed_cidrs": "10.0.0.0/8,2001:db8::/32"})
	k := e.issue("acme", "office", nil)
	e.wantCode(k.key, "VALID", "client_ip", "10.1.2.3", "required_scopes", "read,admin")
	e.wantCode(k.key, "VALID", "client_ip", "2001:db8::1")
	e.wantCode(k.key, "IP_NOT_ALLOWED", "client_ip", "192.168.1.1")
	e.wantCode(k.key, "IP_NOT_ALLOWED")
	e.wantCode(k.key, "INSUFFICIENT_SCOPE", "client_ip", "10.1.2.3", "required_scopes", "billing")

	// A narrower key keeps only what it asked for; a wider ask is refused
	// and leaves nothing behind.
	narrow := e.issue("acme", "web", map[string]interface{}{"scopes": "read"})
	e.wantCode(narrow.key, "VALID", "required_scopes", "read")
	e.wantCode(narrow.key, "INSUFFICIENT_SCOPE", "required_scopes", "write")
	before := len(e.keyIDs("acme"))
	_, err := e.c.Logical().Write(e.path("tenants/acme/creds/web"), map[string]interface{}{"scopes": "read,admin"})
	wantStatus(t, err, http.StatusBadRequest, "scopes", "admin")
	if after := len(e.keyIDs("acme")); after != before {
		t.Fatalf("refused issue left a key behind: %d -> %d", before, after)
	}

	// A key keeps the scopes of its issue time.
	e.role("acme", "web", map[string]interface{}{"scopes": "read"})
	e.wantCode(narrow.key, "VALID", "required_scopes", "read")
}

func TestCrossTenantVerifyLooksLikeUnknownKey(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.tenant("globex", nil)
	k := e.issue("acme", "web", nil)
	unknown := e.issue("acme", "web", nil)
	e.revokeLease(unknown.lease)

	ownPath := e.verify("tenants/acme/verify", map[string]interface{}{"api_key": k.key})
	if ownPath["code"] != "VALID" {
		t.Fatalf("own tenant path: %v", ownPath)
	}
	other := e.verify("tenants/globex/verify", map[string]interface{}{"api_key": k.key})
	gone := e.verify("tenants/globex/verify", map[string]interface{}{"api_key": unknown.key})
	if !reflect.DeepEqual(other, gone) || other["code"] != "NOT_FOUND" {
		t.Fatalf("another tenant's key %v differs from an unknown key %v", other, gone)
	}
	e.wantCode(k.key, "NOT_FOUND", "tenant", "globex")
	e.wantCode(k.key, "VALID", "tenant", "acme")
}

func TestMaxKeysEnforcedAtIssue(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.tenant("acme", map[string]interface{}{"max_keys": 2})
	a := e.issue("acme", "web", nil)
	e.issue("acme", "web", nil)
	_, err := e.c.Logical().Read(e.path("tenants/acme/creds/web"))
	wantStatus(t, err, http.StatusBadRequest, "max_keys")
	if n := len(e.keyIDs("acme")); n != 2 {
		t.Fatalf("keys after refused issue: %d", n)
	}
	e.revokeLease(a.lease)
	e.issue("acme", "web", nil)
}

func TestTenantDeleteRefusesWithKeysUnlessForced(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k1, k2 := e.issue("acme", "web", nil), e.issue("acme", "web", nil)
	_, err := e.c.Logical().Delete(e.path("tenants/acme"))
	wantStatus(t, err, http.StatusBadRequest, "force=true")
	e.wantCode(k1.key, "VALID")

	e.cli(nil, "delete", e.path("tenants/acme"), "force=true")
	if s := read(t, e.c, e.path("tenants/acme")); s != nil {
		t.Fatalf("tenant still there: %v", s.Data)
	}
	e.wantCode(k1.key, "NOT_FOUND")
	e.wantCode(k2.key, "NOT_FOUND")
	// Their leases still revoke cleanly with tenant and role gone.
	e.revokeLease(k1.lease)

	// A tenant without keys deletes without force.
	e.tenant("empty", nil)
	if _, err := e.c.Logical().Delete(e.path("tenants/empty")); err != nil {
		t.Fatal(err)
	}
}

func TestLeaseRevokesAfterRoleDeleted(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	if _, err := e.c.Logical().Delete(e.path("tenants/acme/roles/web")); err != nil {
		t.Fatal(err)
	}
	e.wantCode(k.key, "VALID")
	e.revokeLease(k.lease)
	e.wantCode(k.key, "NOT_FOUND")
}

func TestRenewExtendsUpToMaxTTL(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.role("acme", "renewable", map[string]interface{}{"ttl": "10m", "max_ttl": "30m"})
	k := e.issue("acme", "renewable", nil)
	s, err := e.c.Sys().Renew(k.lease, 1200)
	if err != nil {
		t.Fatal(err)
	}
	if s.LeaseDuration < 1190 || s.LeaseDuration > 1200 {
		t.Fatalf("renewed lease duration %d, want ~1200", s.LeaseDuration)
	}
	md := read(t, e.c, e.path("tenants/acme/keys/"+k.id))
	exp, _ := time.Parse(time.RFC3339, md.Data["expires_at"].(string))
	if d := time.Until(exp); d < 19*time.Minute || d > 21*time.Minute {
		t.Fatalf("key expiry after renew is %s away, want ~20m", d)
	}
	// Past max_ttl the lease is capped.
	s, err = e.c.Sys().Renew(k.lease, 7200)
	if err != nil {
		t.Fatal(err)
	}
	if s.LeaseDuration > 1800 {
		t.Fatalf("renew beyond max_ttl gave %d s", s.LeaseDuration)
	}
	e.wantCode(k.key, "VALID")
}

func TestRateLimitPerKey(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.role("acme", "metered", map[string]interface{}{"rate_limit": 3, "rate_limit_period": "1h"})
	k := e.issue("acme", "metered", nil)
	other := e.issue("acme", "metered", nil)
	for i := 0; i < 3; i++ {
		e.wantCode(k.key, "VALID")
	}
	e.wantCode(k.key, "RATE_LIMITED")
	e.wantCode(other.key, "VALID")
}

func TestBadInputIsA400NamingTheField(t *testing.T) {
	e := newEngine(t)
	e.acme()
	for _, tc := range []struct {
		name, path string
		data       map[string]interface{}
		want       string
	}{
		{"tenant name upper case", "tenants/Acme", map[string]interface{}{}, "tenant"},
		{"tenant name too long", "tenants/" + strings.Repeat("a", 64), map[string]interface{}{}, "tenant"},
		{"tenant bad status", "tenants/acme", map[string]interface{}{"status": "paused"}, "status"},
		{"tenant bad prefix", "tenants/acme", map[string]interface{}{"key_prefix": "A_B"}, "key_prefix"},
		{"tenant bad environment", "tenants/acme", map[string]interface{}{"allowed_environments": "live,Prod!"}, "allowed_environments"},
		{"tenant negative max_keys", "tenants/acme", map[string]interface{}{"max_keys": -1}, "max_keys"},
		{"tenant max_keys not a number", "tenants/acme", map[string]interface{}{"max_keys": "many"}, "max_keys"},
		{"tenant bad ttl", "tenants/acme", map[string]interface{}{"default_ttl": "forever"}, "default_ttl"},
		{"tenant ttl above max", "tenants/acme", map[string]interface{}{"default_ttl": "3h", "max_ttl": "1h"}, "default_ttl"},
		{"tenant bad metadata", "tenants/acme", map[string]interface{}{"metadata": "novalue"}, "metadata"},
		{"role on unknown tenant", "tenants/nobody/roles/web", map[string]interface{}{}, "tenant"},
		{"role bad name", "tenants/acme/roles/web_1", map[string]interface{}{}, "role"},
		{"role environment not allowed", "tenants/acme/roles/x", map[string]interface{}{"environment": "prod"}, "environment"},
		{"role bad cidr", "tenants/acme/roles/x", map[string]interface{}{"allowed_cidrs": "10.0.0.0/33"}, "allowed_cidrs"},
		{"role ttl above max", "tenants/acme/roles/x", map[string]interface{}{"ttl": "2h", "max_ttl": "1h"}, "ttl"},
		{"role negative rate", "tenants/acme/roles/x", map[string]interface{}{"rate_limit": -1}, "rate_limit"},
		{"role bad scope", "tenants/acme/roles/x", map[string]interface{}{"scopes": "read write"}, "scopes"},
		{"creds unknown tenant", "tenants/nobody/creds/web", map[string]interface{}{}, "tenant"},
		{"creds unknown role", "tenants/acme/creds/nope", map[string]interface{}{}, "role"},
		{"creds ttl above max", "tenants/acme/creds/web", map[string]interface{}{"ttl": "3h"}, "ttl"},
		{"creds bad ttl", "tenants/acme/creds/web", map[string]interface{}{"ttl": "tomorrow"}, "ttl"},
		{"creds name too long", "tenants/acme/creds/web", map[string]interface{}{"name": strings.Repeat("n", 129)}, "name"},
		{"verify bad tenant", "verify", map[string]interface{}{"api_key": "x", "tenant": "NO"}, "tenant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.Logical().Write(e.path(tc.path), tc.data)
			wantStatus(t, err, http.StatusBadRequest, tc.want)
		})
	}
	// Unknown things are a 4xx, never a 500.
	for _, p := range []string{"tenants/nobody", "tenants/acme/roles/nope", "tenants/acme/keys/00000000-0000-0000-0000-000000000000"} {
		s, err := e.c.Logical().Read(e.path(p))
		if err != nil || s != nil {
			t.Errorf("read %s: %v %v, want 404", p, s, err)
		}
	}
	_, err := e.c.Logical().Read(e.path("tenants/acme/keys/not-an-id"))
	wantStatus(t, err, http.StatusBadRequest, "key_id")
	_, err = e.c.Logical().Read(e.path("tenants/nobody/creds/web"))
	wantStatus(t, err, http.StatusBadRequest, "tenant")
	if ids := e.keyIDs("acme"); len(ids) != 0 {
		t.Fatalf("failed issues left keys: %v", ids)
	}
}

func TestKeyDeleteRevokesAtOnce(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.tenant("globex", nil)
	k := e.issue("acme", "web", nil)
	// Another tenant's path cannot see or delete the key.
	if s := read(t, e.c, e.path("tenants/globex/keys/"+k.id)); s != nil {
		t.Fatalf("globex reads acme's key: %v", s.Data)
	}
	if _, err := e.c.Logical().Delete(e.path("tenants/globex/keys/" + k.id)); err != nil {
		t.Fatal(err)
	}
	e.wantCode(k.key, "VALID")
	if _, err := e.c.Logical().Delete(e.path("tenants/acme/keys/" + k.id)); err != nil {
		t.Fatal(err)
	}
	e.wantCode(k.key, "NOT_FOUND")
	// The lease revoke that follows is a no-op.
	e.revokeLease(k.lease)
}

func TestListsAndReads(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.tenant("globex", nil)
	s, err := e.c.Logical().List(e.path("tenants"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Data["keys"]; !reflect.DeepEqual(got, []interface{}{"acme", "globex"}) {
		t.Fatalf("tenants: %v", got)
	}
	s, err = e.c.Logical().List(e.path("tenants/acme/roles"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Data["keys"]; !reflect.DeepEqual(got, []interface{}{"web"}) {
		t.Fatalf("roles: %v", got)
	}
	r := read(t, e.c, e.path("tenants/acme/roles/web"))
	if r.Data["environment"] != "live" || !reflect.DeepEqual(r.Data["scopes"], []interface{}{"read", "write"}) {
		t.Fatalf("role: %v", r.Data)
	}
	tn := read(t, e.c, e.path("tenants/acme"))
	if tn.Data["display_name"] != "Acme Corp" || tn.Data["status"] != "active" {
		t.Fatalf("tenant: %v", tn.Data)
	}
}

func TestVerifyOverGETWithKeyInHeader(t *testing.T) {
	e := newEngine(t)
	e.acme()
	e.tenant("globex", nil)
	e.cli(nil, "secrets", "tune", "-passthrough-request-headers=X-Api-Key", e.mount+"/")
	k := e.issue("acme", "web", nil)
	get := func(path, key string) (int, map[string]interface{}) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.Addr+"/v1/"+e.path(path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Vault-Token", srv.Token)
		if key != "" {
			req.Header.Set("X-Api-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Data   map[string]interface{} `json:"data"`
			Errors []string               `json:"errors"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if body.Data == nil {
			body.Data = map[string]interface{}{"errors": strings.Join(body.Errors, ";")}
		}
		return resp.StatusCode, body.Data
	}
	if st, d := get("verify?required_scopes=read", k.key); st != 200 || d["code"] != "VALID" || d["key_id"] != k.id {
		t.Fatalf("GET verify: %d %v", st, d)
	}
	if st, d := get("verify?required_scopes=admin", k.key); st != 200 || d["code"] != "INSUFFICIENT_SCOPE" {
		t.Fatalf("GET verify without scope: %d %v", st, d)
	}
	if st, d := get("tenants/globex/verify", k.key); st != 200 || d["code"] != "NOT_FOUND" {
		t.Fatalf("GET verify on another tenant: %d %v", st, d)
	}
	if st, d := get("verify", ""); st != 400 || !strings.Contains(d["errors"].(string), "X-Api-Key") {
		t.Fatalf("GET verify without a key: %d %v", st, d)
	}
	if st, d := get("verify?api_key="+k.key, ""); st != 400 || !strings.Contains(d["errors"].(string), "URL") {
		t.Fatalf("GET verify with the key in the URL: %d %v", st, d)
	}
}

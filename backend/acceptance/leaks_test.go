package acceptance

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// scannerToken is a token of bootstrap/policies/apikeys-leak-reporter.hcl
// as bootstrap renders it for mount.
func scannerToken(t *testing.T, mount string) string {
	t.Helper()
	hcl, err := os.ReadFile(filepath.Join(repoRoot(t), "bootstrap/policies/apikeys-leak-reporter.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	name := mount + "-leak-reporter"
	rendered := strings.ReplaceAll(string(hcl), `"apikeys/`, `"`+mount+`/`)
	if err := srv.Client.Sys().PutPolicy(name, rendered); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Client.Sys().DeletePolicy(name) })
	tok, err := srv.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}, NoDefaultPolicy: true, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Auth.ClientToken
}

// TestLeakReportRevokesAndAlertsThroughVault: a secret scanner's token of
// the bootstrap policy reports, in GitHub's shape, a dynamic key, a static
// key, a look-alike and garbage. The keys are revoked (verify NOT_FOUND at
// once; the static key has a new key), the webhook gets key-leaked with
// hint, tenant, url, source and action, and the audit log carries the
// tokens only HMAC'd, with the outcome in clear; no log holds a token.
func TestLeakReportRevokesAndAlertsThroughVault(t *testing.T) {
	e := newEngine(t)
	tuneLikeBootstrap(t, e.mount)
	device := "file-" + e.mount
	logFile := filepath.Join(t.TempDir(), "audit.log")
	if err := srv.Client.Sys().EnableAuditWithOptions(device, &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": logFile},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Client.Sys().DisableAudit(device) })

	rcv := newReceiver(t)
	write(t, e.c, e.path("config/monitoring"), monitoringSettings())
	write(t, e.c, e.path("config/notifications/security"), map[string]interface{}{"url": rcv.srv.URL, "secret": receiverSecret, "events": "key-leaked,key-revoked"})
	e.acme()
	k := e.issue("acme", "web", nil)
	write(t, e.c, e.path("tenants/acme/static-keys/checkout"), map[string]interface{}{"role": "web", "rotation_period": "720h", "grace_period": "1h"})
	before := read(t, e.c, e.path("tenants/acme/static-creds/checkout"))
	static, staticID := str(t, before, "api_key"), str(t, before, "key_id")
	e.wantCode(k.key, "VALID")
	e.wantCode(static, "VALID")

	scanner := scannerToken(t, e.mount)
	const url = "https://github.com/octo/leaky/blob/8a1f0c3/deploy/.env"
	lookAlike := regenerateKey(t, k.key)
	// What GitHub posts, wrapped the way a relay does.
	reports := []interface{}{
		map[string]interface{}{"token": k.key, "type": "apikeys_api_key", "url": url, "source": "content"},
		map[string]interface{}{"token": lookAlike, "type": "apikeys_api_key", "url": url, "source": "content"},
		map[string]interface{}{"token": static, "type": "apikeys_api_key", "url": "", "source": "commit"},
		map[string]interface{}{"token": "ak_live_" + strings.Repeat("x", 49), "type": "apikeys_api_key", "url": url, "source": "content"},
	}
	a := call(t, scanner, http.MethodPost, e.path("leaks/report"), map[string]interface{}{"reports": reports}, nil)
	if !a.ok() {
		t.Fatalf("scanner's report: %s", a)
	}
	for _, secret := range []string{k.key, static, lookAlike} {
		if strings.Contains(string(a.raw), secret[len(secret)-30:]) {
			t.Fatalf("the answer holds a reported token: %s", a.raw)
		}
	}
	res, _ := a.data["results"].([]interface{})
	if len(res) != 4 {
		t.Fatalf("results %v", a.data)
	}
	want := []map[string]interface{}{
		{"status": "matched", "tenant": "acme", "key_id": k.id, "kind": "dynamic", "action": "revoke", "hint": keyformat.Hint(k.key)},
		{"status": "unknown"},
		{"status": "matched", "tenant": "acme", "key_id": staticID, "kind": "static", "action": "revoke", "hint": keyformat.Hint(static)},
		{"status": "unknown"},
	}
	for i, w := range want {
		r := res[i].(map[string]interface{})
		for f, v := range w {
			if r[f] != v {
				t.Errorf("results[%d].%s = %v, want %v (%v)", i, f, r[f], v, r)
			}
		}
	}

	// Dead at once; the static key lives on with a new key.
	e.wantCode(k.key, "NOT_FOUND")
	e.wantCode(static, "NOT_FOUND")
	after := read(t, e.c, e.path("tenants/acme/static-creds/checkout"))
	if str(t, after, "key_id") == staticID {
		t.Fatal("the static key kept its leaked key")
	}
	e.wantCode(str(t, after, "api_key"), "VALID")

	// The webhook.
	testvault.WaitFor(t, 20*time.Second, "two key-leaked and two key-revoked events", func() bool {
		return rcv.count(notify.KeyLeaked) >= 2 && rcv.count(notify.KeyRevoked) >= 2
	})
	for _, ev := range rcv.got() {
		switch ev.Type {
		case notify.KeyLeaked:
			if ev.Tenant != "acme" || ev.Data["action"] != "revoke" || ev.Data["hint"] == "" {
				t.Errorf("key-leaked %+v", ev)
			}
			if ev.Data["key_id"] == k.id && (ev.Data["url"] != url || ev.Data["source"] != "content" || ev.Data["hint"] != keyformat.Hint(k.key)) {
				t.Errorf("key-leaked of the dynamic key %+v", ev)
			}
		case notify.KeyRevoked:
			if ev.Data["reason"] != "leaked" {
				t.Errorf("key-revoked %+v", ev)
			}
		}
	}

	// A repeated report: the keys are gone, so unknown; nothing more is
	// raised (the negative check waits for the outbox to drain, where a
	// new event would sit until delivered).
	again := call(t, scanner, http.MethodPost, e.path("leaks/report"), map[string]interface{}{"reports": reports[:1]}, nil)
	if r, _ := again.data["results"].([]interface{}); !again.ok() || len(r) != 1 || r[0].(map[string]interface{})["status"] != "unknown" {
		t.Fatalf("repeated report: %s %v", again, again.data)
	}
	testvault.WaitFor(t, 20*time.Second, "the outbox to drain", func() bool {
		return sample(scrapeMetrics(t, srv.Addr, srv.Token, e.mount), "apikeys_notification_queue_depth") == 0
	})
	if n := rcv.count(notify.KeyLeaked); n != 2 {
		t.Fatalf("%d key-leaked events after a repeated report, want 2", n)
	}

	// A bad batch: 400 naming the field, never the token.
	bad := call(t, scanner, http.MethodPost, e.path("leaks/report"), map[string]interface{}{"reports": []interface{}{
		map[string]interface{}{"token": str(t, after, "api_key")}, map[string]interface{}{"url": str(t, after, "api_key")},
	}}, nil)
	if bad.status != http.StatusBadRequest || !strings.Contains(string(bad.raw), "reports[1].token") || strings.Contains(string(bad.raw), str(t, after, "api_key")[20:]) {
		t.Fatalf("bad batch: %s %s", bad, bad.raw)
	}

	// The scanner's token reaches nothing else.
	for _, p := range []struct{ method, path string }{
		{http.MethodPost, "verify"}, {http.MethodGet, "config"}, {http.MethodGet, "tenants/acme/keys/" + k.id},
		{"LIST", "tenants/"}, {http.MethodGet, "leaks/report"},
	} {
		if got := call(t, scanner, p.method, e.path(p.path), map[string]interface{}{"api_key": k.key}, nil); got.status != http.StatusForbidden && got.status != http.StatusMethodNotAllowed {
			t.Errorf("scanner token: %s %s answers %s", p.method, p.path, got)
		}
	}

	// The audit log: tokens HMAC'd inside reports; outcome in clear.
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	serverLog := srv.LogTail(1 << 20)
	for what, secret := range map[string]string{"dynamic": k.key, "static": static, "look-alike": lookAlike} {
		body := secret[strings.LastIndex(secret, "_")+1:][:24]
		if strings.Contains(string(raw), body) {
			t.Errorf("%s key in the audit log", what)
		}
		if strings.Contains(serverLog, body) {
			t.Errorf("%s key in the server log", what)
		}
	}
	entries := parseAudit(t, raw, e.mount+"/")
	reqEntry := findEntry(entries, func(en auditEntry) bool {
		return en.Type == "request" && en.Request.Path == e.path("leaks/report") && en.Request.Data["reports"] != nil
	})
	if reqEntry == nil {
		t.Fatal("no audit entry of the report")
	}
	first := reqEntry.Request.Data["reports"].([]interface{})[0].(map[string]interface{})
	if tok, _ := first["token"].(string); !strings.HasPrefix(tok, "hmac-sha256:") {
		t.Fatalf("audited reports[0].token is %q, want it HMAC'd", tok)
	}
	hash := str(t, write(t, srv.Client, "sys/audit-hash/"+device, map[string]interface{}{"input": k.key}), "hash")
	if first["token"] != hash {
		t.Fatalf("reports[0].token audited as %v, sys/audit-hash gives %s", first["token"], hash)
	}
	respEntry := findEntry(entries, func(en auditEntry) bool {
		return en.Type == "response" && en.Request.Path == e.path("leaks/report") && en.Response.Data["results"] != nil
	})
	if respEntry == nil {
		t.Fatal("no audit entry of the report's answer")
	}
	r0 := respEntry.Response.Data["results"].([]interface{})[0].(map[string]interface{})
	if r0["key_id"] != k.id || r0["tenant"] != "acme" || r0["action"] != "revoke" || r0["status"] != "matched" {
		t.Errorf("audited results[0] %v: want key_id, tenant, action and status in clear", r0)
	}
	t.Logf("audited leak report: reports[0].token %s, results[0] %v", first["token"], r0)
}

package acceptance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// auditEntry is the part of a file audit device line the test reads.
type auditEntry struct {
	Type    string `json:"type"`
	Request struct {
		Operation string                 `json:"operation"`
		Path      string                 `json:"path"`
		Data      map[string]interface{} `json:"data"`
	} `json:"request"`
	Response struct {
		Data map[string]interface{} `json:"data"`
	} `json:"response"`
	raw string
}

// A full life of keys (issue, verify three ways, static key create, read,
// rotate, onboard, revoke by lease and by key id) through a mount tuned
// like bootstrap/apply.sh tunes it: the audit log holds no key anywhere,
// shows key_id, tenant and role in clear, and sys/audit-hash of a leaked key
// finds exactly the entries that carried it.
func TestAuditLogHoldsNoKeysButShowsWhoAndWhat(t *testing.T) {
	e := newEngine(t)
	tune := tuneLikeBootstrap(t, e.mount)
	for _, list := range []string{"audit_non_hmac_request_keys", "audit_non_hmac_response_keys"} {
		// "keys" too: onboard answers with the new keys nested under it;
		// "token" and "reports": leaks/report requests carry leaked keys.
		for _, secret := range []string{"api_key", "keys", "token", "reports"} {
			if slices.Contains(tune[list], secret) {
				t.Fatalf("bootstrap/mount-tune.json: %s lists %q, which carries keys", list, secret)
			}
		}
	}

	// A device of this test's own; audit devices are server-wide, so it
	// also sees other tests' requests, which are told apart by mount.
	device := "file-" + e.mount
	logFile := filepath.Join(t.TempDir(), "audit.log")
	if err := srv.Client.Sys().EnableAuditWithOptions(device, &api.EnableAuditOptions{
		Type: "file", Options: map[string]string{"file_path": logFile},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Client.Sys().DisableAudit(device); err != nil {
			t.Errorf("disable audit device: %v", err)
		}
	})

	e.acme()
	k1 := e.issue("acme", "web", nil)
	k2 := e.issue("acme", "web", map[string]interface{}{"name": "audited", "scopes": "read"})
	e.wantCode(k1.key, "VALID", "tenant", "acme", "client_ip", "10.0.0.1")
	if got := e.verify("tenants/acme/verify", map[string]interface{}{"api_key": k2.key})["code"]; got != "VALID" {
		t.Fatalf("tenant verify: %v", got)
	}
	if a := call(t, srv.Token, http.MethodGet, e.path("verify"), nil, map[string]string{"X-Api-Key": k1.key}); a.data["code"] != "VALID" {
		t.Fatalf("GET verify: %s %v", a, a.data)
	}

	write(t, e.c, e.path("tenants/acme/static-keys/checkout"), map[string]interface{}{"role": "web", "rotation_period": "720h"})
	s1 := str(t, read(t, e.c, e.path("tenants/acme/static-creds/checkout")), "api_key")
	write(t, e.c, e.path("tenants/acme/static-keys/checkout/rotate"), nil)
	s2creds := read(t, e.c, e.path("tenants/acme/static-creds/checkout"))
	s2 := str(t, s2creds, "api_key")
	e.wantCode(s1, "VALID")
	e.wantCode(s2, "VALID")
	onboard := write(t, e.c, e.path("tenants/acme/onboard"), map[string]interface{}{"role": "web", "environments": "test", "rotation_period": "720h"})
	o1 := onboard.Data["keys"].(map[string]interface{})["test"].(map[string]interface{})["api_key"].(string)

	e.revokeLease(k1.lease)
	e.wantCode(k1.key, "NOT_FOUND")
	if _, err := e.c.Logical().Delete(e.path("tenants/acme/keys/" + k2.id)); err != nil {
		t.Fatal(err)
	}
	e.wantCode(k2.key, "NOT_FOUND")

	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	serverLog := srv.LogTail(1 << 20)

	// 1. No key, nor a piece of one, anywhere: not in the audit log, not in
	// the server's log.
	keys := map[string]string{"dynamic 1": k1.key, "dynamic 2": k2.key, "static 1": s1, "static 2": s2, "onboarded": o1}
	for what, k := range keys {
		// The random part alone: a key split or reformatted still shows.
		body := k[strings.LastIndex(k, "_")+1:][:24]
		for where, text := range map[string]string{"audit log": string(raw), "server log": serverLog} {
			if strings.Contains(text, k) || strings.Contains(text, body) {
				t.Errorf("%s key found in the %s", what, where)
			}
		}
	}

	entries := parseAudit(t, raw, e.mount+"/")
	if len(entries) < 20 {
		t.Fatalf("only %d audit entries of the mount", len(entries))
	}
	isHMAC := func(v interface{}) bool { s, _ := v.(string); return strings.HasPrefix(s, "hmac-sha256:") }

	// 2. Issue: the key HMAC'd, who and what in clear.
	issue := findEntry(entries, func(en auditEntry) bool {
		return en.Type == "response" && en.Request.Path == e.path("tenants/acme/creds/web") && en.Response.Data["key_id"] == k1.id
	})
	if issue == nil {
		t.Fatalf("no issue response with key_id %s in clear", k1.id)
	}
	if issue.Response.Data["tenant"] != "acme" || issue.Response.Data["role"] != "web" || !isHMAC(issue.Response.Data["api_key"]) {
		t.Errorf("issue response: %v", issue.Response.Data)
	}
	// The name of k2 and its narrower scopes were asked for in clear.
	issue2 := findEntry(entries, func(en auditEntry) bool {
		return en.Type == "request" && en.Request.Path == e.path("tenants/acme/creds/web") && en.Request.Data["name"] == "audited"
	})
	if issue2 == nil || fmt.Sprint(issue2.Request.Data["scopes"]) != "read" {
		t.Errorf("issue request with name and scopes in clear: %+v", issue2)
	}

	// 3. Verify: the presented key HMAC'd in the request; the answer shows
	// whose key it was and the outcome.
	verify := findEntry(entries, func(en auditEntry) bool {
		return en.Type == "response" && en.Request.Path == e.path("verify") && en.Response.Data["key_id"] == k1.id
	})
	if verify == nil {
		t.Fatalf("no verify response with key_id %s in clear", k1.id)
	}
	d := verify.Response.Data
	if d["tenant"] != "acme" || d["role"] != "web" || d["code"] != "VALID" || d["valid"] != true {
		t.Errorf("verify response: %v", d)
	}
	if !isHMAC(verify.Request.Data["api_key"]) || verify.Request.Data["tenant"] != "acme" || verify.Request.Data["client_ip"] != "10.0.0.1" {
		t.Errorf("verify request: %v", verify.Request.Data)
	}
	if findEntry(entries, func(en auditEntry) bool {
		return en.Type == "response" && en.Request.Path == e.path("verify") && en.Response.Data["code"] == "NOT_FOUND"
	}) == nil {
		t.Error("no verify answer NOT_FOUND in clear after the revoke")
	}

	// 4. Static keys: the current key HMAC'd, its id in clear; the rotation
	// is visible as a new key_id.
	rotate := findEntry(entries, func(en auditEntry) bool {
		return en.Type == "response" && en.Request.Path == e.path("tenants/acme/static-keys/checkout/rotate")
	})
	if rotate == nil || rotate.Response.Data["key_id"] != s2creds.Data["key_id"] {
		t.Errorf("rotate response: %+v", rotate)
	}
	creds := findEntry(entries, func(en auditEntry) bool {
		return en.Type == "response" && en.Request.Path == e.path("tenants/acme/static-creds/checkout") &&
			en.Response.Data["key_id"] == s2creds.Data["key_id"]
	})
	if creds == nil || !isHMAC(creds.Response.Data["api_key"]) || creds.Response.Data["tenant"] != "acme" {
		t.Errorf("static-creds response: %+v", creds)
	}

	// 5. Revoke by key id: the request names the key in clear.
	if findEntry(entries, func(en auditEntry) bool {
		return en.Type == "request" && en.Request.Operation == "delete" && en.Request.Path == e.path("tenants/acme/keys/"+k2.id)
	}) == nil {
		t.Error("no revoke request of key " + k2.id)
	}

	// 6. A leaked key: its audit hash finds the entries that carried it,
	// and only those.
	s, err := srv.Client.Logical().Write("sys/audit-hash/"+device, map[string]interface{}{"input": k1.key})
	if err != nil {
		t.Fatal(err)
	}
	hash := str(t, s, "hash")
	var carriers []auditEntry
	for _, en := range entries {
		if strings.Contains(en.raw, hash) {
			carriers = append(carriers, en)
		}
	}
	has := func(typ, path string) bool {
		return slices.ContainsFunc(carriers, func(en auditEntry) bool { return en.Type == typ && en.Request.Path == path })
	}
	if !has("response", e.path("tenants/acme/creds/web")) || !has("request", e.path("verify")) {
		t.Fatalf("audit-hash of key 1 finds %d entries, not its issue and its verify", len(carriers))
	}
	for _, en := range carriers {
		if id, ok := en.Response.Data["key_id"]; ok && id != k1.id {
			t.Errorf("audit-hash of key 1 matches an entry of key %v", id)
		}
	}
	t.Logf("audit: %d entries of the mount, %d carry key 1's HMAC; no key in clear", len(entries), len(carriers))
}

// parseAudit reads a file audit device's lines, keeping those of one mount.
func parseAudit(t *testing.T, raw []byte, mountPrefix string) []auditEntry {
	t.Helper()
	var out []auditEntry
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var en auditEntry
		if err := json.Unmarshal(sc.Bytes(), &en); err != nil {
			t.Fatalf("audit line is not JSON: %v: %.200s", err, sc.Text())
		}
		if strings.HasPrefix(en.Request.Path, mountPrefix) {
			en.raw = sc.Text()
			out = append(out, en)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func findEntry(entries []auditEntry, match func(auditEntry) bool) *auditEntry {
	for i := range entries {
		if match(entries[i]) {
			return &entries[i]
		}
	}
	return nil
}

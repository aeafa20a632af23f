package acceptance

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// rawEntries is every storage entry of the mount as the plugin wrote it,
// read through sys/raw (the shared server enables it: main_test.go).
func rawEntries(t *testing.T, mount string) map[string]string {
	t.Helper()
	mounts, err := srv.Client.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	m := mounts[mount+"/"]
	if m == nil || m.UUID == "" {
		t.Fatalf("mount %s not found", mount)
	}
	out := map[string]string{}
	var walk func(prefix string)
	walk = func(prefix string) {
		s, err := srv.Client.Logical().List("sys/raw/logical/" + m.UUID + "/" + prefix)
		if err != nil {
			t.Fatalf("list raw %q: %v", prefix, err)
		}
		if s == nil {
			return
		}
		for _, k := range s.Data["keys"].([]interface{}) {
			name := prefix + k.(string)
			if strings.HasSuffix(name, "/") {
				walk(name)
				continue
			}
			e := read(t, srv.Client, "sys/raw/logical/"+m.UUID+"/"+name)
			out[name] = fmt.Sprint(e.Data["value"])
		}
	}
	walk("")
	return out
}

// TestDisableKeyOnVaultAndEdge parks a dynamic and a static key and enables
// them again, through a real Vault and an edge synced from it: DISABLED on
// Vault at the very next verify, on the edge within the feed's latency,
// VALID again after enable, the lease and the rotation running meanwhile;
// the hint is in the answers, no key in any answer or storage entry.
func TestDisableKeyOnVaultAndEdge(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	write(t, e.c, e.path("tenants/acme/static-keys/app"), map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
	app := read(t, e.c, e.path("tenants/acme/static-creds/app"))
	appKey, appID := str(t, app, "api_key"), str(t, app, "key_id")
	f := startEdge(t, e, 30*time.Second)
	if st, _, body := f.check(k.key); st != http.StatusOK {
		t.Fatalf("before disable: %d %s", st, body)
	}
	if hint := str(t, k.secret, "hint"); hint != keyformat.Hint(k.key) {
		t.Fatalf("issue answer hint %q, want %q", hint, keyformat.Hint(k.key))
	}
	var answers []string

	up := write(t, e.c, e.path("tenants/acme/keys/"+k.id), map[string]interface{}{"status": "disabled"})
	answers = append(answers, fmt.Sprint(up.Data))
	if up.Data["status"] != "disabled" || up.Data["hint"] != keyformat.Hint(k.key) {
		t.Fatalf("update answer: %v", up.Data)
	}
	e.wantCode(k.key, "DISABLED")
	t.Logf("dynamic key DISABLED at the edge after %s", f.waitCheck(k.key, http.StatusUnauthorized, "DISABLED", 10*time.Second))

	// Its lease runs on: Vault still holds it and renews it.
	lease, err := e.c.Sys().Lookup(k.lease)
	if err != nil || lease == nil {
		t.Fatalf("lease of a disabled key: %v %v", lease, err)
	}
	if _, err := e.c.Sys().Renew(k.lease, 600); err != nil {
		t.Fatalf("renew a disabled key's lease: %v", err)
	}
	e.wantCode(k.key, "DISABLED")

	write(t, e.c, e.path("tenants/acme/keys/"+k.id), map[string]interface{}{"status": "active"})
	e.wantCode(k.key, "VALID")
	t.Logf("dynamic key VALID at the edge again after %s", f.waitCheck(k.key, http.StatusOK, "VALID", 10*time.Second))

	// A static key is parked whole, and a rotation keeps it parked.
	write(t, e.c, e.path("tenants/acme/keys/"+appID), map[string]interface{}{"status": "disabled"})
	e.wantCode(appKey, "DISABLED")
	f.waitCheck(appKey, http.StatusUnauthorized, "DISABLED", 10*time.Second)
	rot := write(t, e.c, e.path("tenants/acme/static-keys/app/rotate"), nil)
	answers = append(answers, fmt.Sprint(rot.Data))
	next := read(t, e.c, e.path("tenants/acme/static-creds/app"))
	nextKey := str(t, next, "api_key")
	if next.Data["disabled"] != true || next.Data["hint"] != keyformat.Hint(nextKey) {
		t.Fatalf("static-creds of a parked static key: disabled %v, hint %v", next.Data["disabled"], next.Data["hint"])
	}
	e.wantCode(nextKey, "DISABLED")
	e.wantCode(appKey, "DISABLED")
	t.Logf("rotated static key DISABLED at the edge after %s", f.waitCheck(nextKey, http.StatusUnauthorized, "DISABLED", 10*time.Second))
	write(t, e.c, e.path("tenants/acme/keys/"+appID), map[string]interface{}{"status": "active"})
	for _, key := range []string{appKey, nextKey} {
		e.wantCode(key, "VALID")
		f.waitCheck(key, http.StatusOK, "VALID", 10*time.Second)
	}

	// Bad input: a 400 naming the field, nothing changed.
	lease, err = e.c.Sys().Lookup(k.lease)
	if err != nil {
		t.Fatal(err)
	}
	expiry := str(t, read(t, e.c, e.path("tenants/acme/keys/"+k.id)), "expires_at")
	end, err := time.Parse(time.RFC3339, expiry)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path  string
		data  map[string]interface{}
		field string
	}{
		{"tenants/acme/keys/" + k.id, map[string]interface{}{"status": "paused"}, "status"},
		{"tenants/acme/keys/" + k.id, map[string]interface{}{"status": "disabled", "expires_at": end.Add(time.Hour).Format(time.RFC3339)}, "expires_at"},
		{"tenants/acme/keys/" + appID, map[string]interface{}{"expires_at": time.Now().Add(time.Minute).UTC().Format(time.RFC3339)}, "expires_at"},
	} {
		_, err := e.c.Logical().Write(e.path(c.path), c.data)
		wantStatus(t, err, http.StatusBadRequest, c.field)
	}
	_, err = e.c.Logical().Write(e.path("tenants/acme/keys/00000000-0000-0000-0000-000000000000"), map[string]interface{}{"status": "disabled"})
	wantStatus(t, err, http.StatusNotFound)
	e.wantCode(k.key, "VALID")

	// A shorter expiry: the key expires then, and a renewal stops there.
	at := time.Now().Add(5 * time.Minute).UTC().Truncate(time.Second)
	write(t, e.c, e.path("tenants/acme/keys/"+k.id), map[string]interface{}{"expires_at": at.Format(time.RFC3339)})
	renewed, err := e.c.Sys().Renew(k.lease, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(renewed.LeaseDuration) * time.Second; d > 5*time.Minute {
		t.Fatalf("renewed past expires_at: lease %s, expires_at in %s (lease before %v)", d, time.Until(at), lease.Data["ttl"])
	}

	// The list shows every key by its hint.
	l, err := e.c.Logical().List(e.path("tenants/acme/keys"))
	if err != nil {
		t.Fatal(err)
	}
	answers = append(answers, fmt.Sprint(l.Data))
	info := l.Data["key_info"].(map[string]interface{})
	for id, key := range map[string]string{k.id: k.key, appID: appKey, str(t, next, "key_id"): nextKey} {
		ki, _ := info[id].(map[string]interface{})
		if ki == nil || ki["hint"] != keyformat.Hint(key) {
			t.Fatalf("key_info of %s: %v", id, ki)
		}
	}
	answers = append(answers, fmt.Sprint(read(t, e.c, e.path("tenants/acme/keys/"+appID)).Data), fmt.Sprint(read(t, e.c, e.path("tenants/acme/static-keys/app")).Data))

	// No answer above, and no storage entry but the static key's own
	// (which Vault Agent reads it from), holds a key.
	for _, a := range answers {
		for _, key := range []string{k.key, appKey, nextKey} {
			if strings.Contains(a, key) {
				t.Fatalf("an answer holds a key: %s", a)
			}
		}
	}
	entries := rawEntries(t, e.mount)
	if len(entries) == 0 {
		t.Fatal("sys/raw shows no entries of the mount")
	}
	for name, v := range entries {
		for _, key := range []string{k.key, appKey, nextKey} {
			if strings.Contains(v, key) && !strings.HasPrefix(name, "static-keys/acme/app") {
				t.Errorf("storage entry %s holds a plaintext key", name)
			}
		}
	}
	t.Logf("%d storage entries of the mount read through sys/raw: no plaintext key outside the static key's entry", len(entries))
}

package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// lockedBuffer is a log sink that tests may read while the backend's
// background work still writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newMonitoredLogging is newMonitored with every log line, at every level,
// kept for the test to search.
func newMonitoredLogging(t *testing.T) (*backend, *countingStorage, *hook, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	conf := logical.TestBackendConfig()
	s := &countingStorage{Storage: &logical.InmemStorage{}}
	conf.StorageView = s
	conf.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: logs})
	lb, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b, s, h := startMonitored(t, lb.(*backend), s)
	return b, s, h, logs
}

func leakReports(tokens ...string) map[string]interface{} {
	list := make([]interface{}, len(tokens))
	for i, tok := range tokens {
		list[i] = map[string]interface{}{
			"token": tok, "type": "apikeys_key",
			"url":    fmt.Sprintf("https://github.com/octo/repo/blob/0123abc/config-%d.yml", i),
			"source": "content",
		}
	}
	return map[string]interface{}{"reports": list}
}

// report sends a leaks/report and returns its results.
func (b *backend) report(t *testing.T, s logical.Storage, tokens ...string) []map[string]interface{} {
	t.Helper()
	resp := b.do(t, s, logical.UpdateOperation, "leaks/report", leakReports(tokens...))
	raw := resp.Data["results"].([]interface{})
	out := make([]map[string]interface{}, len(raw))
	for i, r := range raw {
		out[i] = r.(map[string]interface{})
		if out[i]["index"] != i {
			t.Fatalf("results[%d] has index %v", i, out[i]["index"])
		}
	}
	return out
}

func wantMatched(t *testing.T, r map[string]interface{}, tenant, id, action string) {
	t.Helper()
	if r["status"] != leakMatched || r["tenant"] != tenant || r["key_id"] != id || r["action"] != action || r["hint"] == "" {
		t.Fatalf("result %v, want %s of tenant %s, action %s", r, id, tenant, action)
	}
}

func wantUnknown(t *testing.T, r map[string]interface{}) {
	t.Helper()
	if r["status"] != leakUnknown || len(r) != 2 {
		t.Fatalf("result %v, want only status unknown (and index)", r)
	}
}

func TestLeakReportRevokesByDefault(t *testing.T) {
	b, s, h := newMonitored(t)
	key, id, _ := setupAcme(t, b, s)
	if cfg := b.do(t, s, logical.ReadOperation, "config", nil).Data; cfg["leak_action"] != leakRevoke {
		t.Fatalf("default leak_action %v", cfg["leak_action"])
	}
	res := b.report(t, s, key)
	wantMatched(t, res[0], "acme", id, leakRevoke)
	if res[0]["hint"] != keyformat.Hint(key) || res[0]["kind"] != kindDynamic {
		t.Fatalf("result %v", res[0])
	}
	if got := b.code(t, s, contract.Request{APIKey: key}, time.Now()); got != contract.CodeNotFound {
		t.Fatalf("leaked key verifies %s", got)
	}
	if ids := b.do(t, s, logical.ListOperation, "tenants/acme/keys/", nil).Data["keys"]; ids != nil {
		t.Fatalf("revoked key still listed: %v", ids)
	}

	lk := h.waitEvents(notify.KeyLeaked, 1)[0]
	if lk.Tenant != "acme" || lk.Data["key_id"] != id || lk.Data["hint"] != keyformat.Hint(key) || lk.Data["action"] != leakRevoke ||
		lk.Data["url"] != "https://github.com/octo/repo/blob/0123abc/config-0.yml" || lk.Data["source"] != "content" || lk.Data["type"] != "apikeys_key" {
		t.Fatalf("key-leaked %+v", lk)
	}
	rev := h.waitEvents(notify.KeyRevoked, 1)[0]
	if rev.Data["key_id"] != id || rev.Data["reason"] != "leaked" || rev.Data["source"] != "content" {
		t.Fatalf("key-revoked %+v", rev)
	}

	// The same report again (a scanner's retry): the key is gone, so it is
	// unknown and raises nothing.
	wantUnknown(t, b.report(t, s, key)[0])
	h.settle(b, s)
	if n, m := len(h.ofType(notify.KeyLeaked)), len(h.ofType(notify.KeyRevoked)); n != 1 || m != 1 {
		t.Fatalf("%d key-leaked and %d key-revoked events after a repeated report, want 1 and 1", n, m)
	}
}

func TestLeakReportDisables(t *testing.T) {
	b, s, h := newMonitored(t)
	key, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"leak_action": "disable"})
	wantMatched(t, b.report(t, s, key)[0], "acme", id, leakDisable)
	if got := b.code(t, s, contract.Request{APIKey: key}, time.Now()); got != contract.CodeDisabled {
		t.Fatalf("leaked key verifies %s, want DISABLED", got)
	}
	if up := h.waitEvents(notify.KeyUpdated, 1)[0]; up.Data["key_id"] != id || up.Data["status"] != keyStatusDisabled {
		t.Fatalf("key-updated %+v", up)
	}
	h.waitEvents(notify.KeyLeaked, 1)

	// Again: still matched, still disabled; nothing changed, so no second
	// key-updated, and the same finding is the same key-leaked id.
	wantMatched(t, b.report(t, s, key)[0], "acme", id, leakDisable)
	h.settle(b, s)
	if n := len(h.ofType(notify.KeyUpdated)); n != 1 {
		t.Fatalf("%d key-updated events, want 1", n)
	}
	if lk := h.ofType(notify.KeyLeaked); len(lk) != 2 || lk[0].ID != lk[1].ID {
		t.Fatalf("key-leaked events %+v: want the repeat under the first one's id", lk)
	}
	// An owner may enable it again after a look.
	b.do(t, s, logical.UpdateOperation, "tenants/acme/keys/"+id, map[string]interface{}{"status": "active"})
	if got := b.code(t, s, contract.Request{APIKey: key}, time.Now()); got != contract.CodeValid {
		t.Fatalf("enabled key verifies %s", got)
	}
}

func TestLeakReportNotifyOnly(t *testing.T) {
	b, s, h := newMonitored(t)
	key, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"leak_action": "notify"})
	s.reset()
	wantMatched(t, b.report(t, s, key)[0], "acme", id, leakNotify)
	// Only the event's outbox entries are written (and deleted once
	// delivered).
	s.mu.Lock()
	for _, k := range append(s.putKeys, s.delKeys...) {
		if !strings.HasPrefix(k, notify.OutboxPrefix) {
			t.Errorf("notify wrote or deleted %s", k)
		}
	}
	s.mu.Unlock()
	if got := b.code(t, s, contract.Request{APIKey: key}, time.Now()); got != contract.CodeValid {
		t.Fatalf("key verifies %s after a notify-only report", got)
	}
	if lk := h.waitEvents(notify.KeyLeaked, 1)[0]; lk.Data["action"] != leakNotify {
		t.Fatalf("key-leaked %+v", lk)
	}
}

func TestLeakActionIsValidated(t *testing.T) {
	b, s := newTestBackend(t)
	resp, err := b.attempt(s, logical.UpdateOperation, "config", map[string]interface{}{"leak_action": "delete"})
	if err == nil && (resp == nil || !resp.IsError()) {
		t.Fatalf("leak_action=delete accepted: %v", resp)
	}
	if err == nil && !strings.Contains(resp.Error().Error(), "leak_action") {
		t.Fatalf("error does not name leak_action: %v", resp.Error())
	}
	if got := b.do(t, s, logical.ReadOperation, "config", nil).Data["leak_action"]; got != leakRevoke {
		t.Fatalf("leak_action %v after a refused write", got)
	}
}

// A static key's current key, reported, is replaced at once with no grace
// (its static key lives on with a new key); a rotated-out key in its grace
// is dropped.
func TestLeakReportOfStaticKeys(t *testing.T) {
	b, s, h := newMonitored(t)
	createStatic(t, b, s, map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
	k1, id1 := staticCreds(t, b, s)
	res := b.report(t, s, k1)
	wantMatched(t, res[0], "acme", id1, leakRevoke)
	if res[0]["kind"] != kindStatic {
		t.Fatalf("result %v", res[0])
	}
	k2, id2 := staticCreds(t, b, s)
	if id2 == id1 {
		t.Fatal("the static key kept its leaked key")
	}
	now := time.Now()
	if got := b.code(t, s, contract.Request{APIKey: k1}, now); got != contract.CodeNotFound {
		t.Fatalf("leaked static key verifies %s (no grace for a leaked key)", got)
	}
	if got := b.code(t, s, contract.Request{APIKey: k2}, now); got != contract.CodeValid {
		t.Fatalf("the static key's new key verifies %s", got)
	}
	if rot := h.waitEvents(notify.KeyRotated, 1)[0]; rot.Data["previous_key_id"] != id1 || rot.Data["grace_ends_at"] != nil {
		t.Fatalf("key-rotated %+v", rot)
	}

	// Rotate normally, then the key in grace leaks.
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	k3, _ := staticCreds(t, b, s)
	if got := b.code(t, s, contract.Request{APIKey: k2}, now); got != contract.CodeValid {
		t.Fatalf("key in grace verifies %s", got)
	}
	wantMatched(t, b.report(t, s, k2)[0], "acme", id2, leakRevoke)
	if got := b.code(t, s, contract.Request{APIKey: k2}, now); got != contract.CodeNotFound {
		t.Fatalf("leaked key in grace verifies %s", got)
	}
	if _, id := staticCreds(t, b, s); b.code(t, s, contract.Request{APIKey: k3}, now) != contract.CodeValid || id == id2 {
		t.Fatal("the current key suffered for its predecessor's leak")
	}
	if st := b.do(t, s, logical.ReadOperation, "tenants/acme/static-keys/app", nil).Data; st["previous_key_id"] != nil && st["previous_key_id"] != "" {
		t.Fatalf("static key still names the dropped key: %v", st["previous_key_id"])
	}

	// leak_action=disable parks the whole static key, as keys/<key_id>
	// status=disabled does.
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"leak_action": "disable"})
	_, id3 := staticCreds(t, b, s)
	wantMatched(t, b.report(t, s, k3)[0], "acme", id3, leakDisable)
	if got := b.code(t, s, contract.Request{APIKey: k3}, now); got != contract.CodeDisabled {
		t.Fatalf("disabled static key verifies %s", got)
	}
	if st := b.do(t, s, logical.ReadOperation, "tenants/acme/static-keys/app", nil).Data; st["disabled"] != true {
		t.Fatalf("static key after a disabling leak report: %v", st)
	}
}

// Tokens that are no key of this mount answer unknown; those that fail
// the offline check do so without a storage read.
func TestLeakReportUnknownTokens(t *testing.T) {
	b, s := newTestBackend(t)
	// A mount that never issued a key has no pepper: nothing to look up.
	never, err := keyformat.Generate("ak", "live")
	if err != nil {
		t.Fatal(err)
	}
	s.reset()
	wantUnknown(t, b.report(t, s, never)[0])
	if s.writes() != 0 {
		t.Fatalf("a report on a fresh mount wrote %v", s.putKeys)
	}

	key, _, _ := setupAcme(t, b, s)
	s.reset()
	for _, tok := range []string{"garbage", badChecksum(key), key[:len(key)-1], key + "0", strings.ToUpper(key), strings.Repeat("a", 4096)} {
		wantUnknown(t, b.report(t, s, tok)[0])
	}
	if s.gets != 0 || s.writes() != 0 {
		t.Fatalf("malformed tokens cost %d reads and %d writes, want none", s.gets, s.writes())
	}
	// Well-formed, never issued: one read (its record), then unknown.
	wantUnknown(t, b.report(t, s, regenerate(t, key))[0])
	if s.gets != 1 || s.writes() != 0 {
		t.Fatalf("an unknown well-formed token cost %d reads and %d writes, want 1 and 0", s.gets, s.writes())
	}
	if got := b.code(t, s, contract.Request{APIKey: key}, time.Now()); got != contract.CodeValid {
		t.Fatalf("the real key verifies %s after reports of look-alikes", got)
	}
}

// One batch mixes tenants, garbage and unknown keys: each answer is in
// place, and every real key is handled whoever its tenant is (the path is
// the platform's, and holding the token is the proof).
func TestLeakReportMixedBatchSpansTenants(t *testing.T) {
	b, s := newTestBackend(t)
	acme, acmeID, _ := setupAcme(t, b, s)
	b.do(t, s, logical.CreateOperation, "tenants/globex", map[string]interface{}{"key_prefix": "globex"})
	b.do(t, s, logical.CreateOperation, "tenants/globex/roles/api", map[string]interface{}{"scopes": "read"})
	g := b.do(t, s, logical.ReadOperation, "tenants/globex/creds/api", nil).Data
	globex, globexID := g["api_key"].(string), g["key_id"].(string)

	res := b.report(t, s, acme, "not a key", globex, badChecksum(acme), regenerate(t, globex), acme)
	if len(res) != 6 {
		t.Fatalf("%d results for 6 reports", len(res))
	}
	wantMatched(t, res[0], "acme", acmeID, leakRevoke)
	wantUnknown(t, res[1])
	wantMatched(t, res[2], "globex", globexID, leakRevoke)
	wantUnknown(t, res[3])
	wantUnknown(t, res[4])
	// The same token twice in one batch: the second finds it revoked.
	wantUnknown(t, res[5])
	now := time.Now()
	for _, k := range []string{acme, globex} {
		if got := b.code(t, s, contract.Request{APIKey: k}, now); got != contract.CodeNotFound {
			t.Fatalf("reported key verifies %s", got)
		}
	}
}

func TestLeakReportRefusesBadShapeNamingTheField(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, _ := setupAcme(t, b, s)
	long := strings.Repeat("u", maxLeakURLLen+1)
	many := make([]interface{}, maxLeakReports+1)
	for i := range many {
		many[i] = map[string]interface{}{"token": "x"}
	}
	ok := map[string]interface{}{"token": key, "url": "https://example.com/", "source": "content"}
	for _, tc := range []struct {
		name string
		data map[string]interface{}
		want string
	}{
		{"no reports", map[string]interface{}{}, "reports"},
		{"empty", map[string]interface{}{"reports": []interface{}{}}, "at least one"},
		{"too many", map[string]interface{}{"reports": many}, "at most 1000"},
		{"not a list", map[string]interface{}{"reports": key}, "reports"},
		{"not an object", map[string]interface{}{"reports": []interface{}{ok, key}}, "reports[1]: must be an object"},
		{"no token", map[string]interface{}{"reports": []interface{}{ok, ok, map[string]interface{}{"url": key}}}, "reports[2].token: missing"},
		{"token not a string", map[string]interface{}{"reports": []interface{}{map[string]interface{}{"token": 42}}}, "reports[0].token: must be a string"},
		{"empty token", map[string]interface{}{"reports": []interface{}{map[string]interface{}{"token": ""}}}, "reports[0].token: must not be empty"},
		{"url too long", map[string]interface{}{"reports": []interface{}{map[string]interface{}{"token": key, "url": long}}}, "reports[0].url: at most 2048"},
		{"source not a string", map[string]interface{}{"reports": []interface{}{ok, ok, ok, map[string]interface{}{"token": key, "source": []interface{}{key}}}}, "reports[3].source: must be a string"},
		{"type not a string", map[string]interface{}{"reports": []interface{}{map[string]interface{}{"token": key, "type": map[string]interface{}{"k": key}}}}, "reports[0].type: must be a string"},
	} {
		resp, err := b.attempt(s, logical.UpdateOperation, "leaks/report", tc.data)
		if err != nil {
			if strings.Contains(err.Error(), key) {
				t.Errorf("%s: error echoes the token", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, tc.want)
			}
			continue
		}
		if resp == nil || !resp.IsError() {
			t.Errorf("%s: accepted: %v", tc.name, resp)
			continue
		}
		msg := resp.Error().Error()
		if !strings.Contains(msg, tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.name, msg, tc.want)
		}
		if strings.Contains(msg, key) || strings.Contains(msg, key[len(key)-30:]) {
			t.Errorf("%s: error echoes the token: %q", tc.name, msg)
		}
	}
	// Nothing was acted on: a bad batch is refused whole.
	if got := b.code(t, s, contract.Request{APIKey: key}, time.Now()); got != contract.CodeValid {
		t.Fatalf("a refused batch revoked its key: %s", got)
	}
}

// No reported token, nor its random part, ends up in an answer, a stored
// entry, a log line or an event, whatever the action.
func TestLeakReportKeepsTokensOutOfAnswersStorageAndLogs(t *testing.T) {
	b, s, h, logs := newMonitoredLogging(t)
	var keys []string
	for _, action := range []string{leakNotify, leakDisable, leakRevoke} {
		b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"leak_action": action})
		key, _, _ := setupAcme(t, b, s)
		unknown := regenerate(t, key)
		keys = append(keys, key, unknown, badChecksum(key))
		resp := b.do(t, s, logical.UpdateOperation, "leaks/report", leakReports(key, unknown, badChecksum(key)))
		raw, err := json.Marshal(resp.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys[len(keys)-3:] {
			if bytes.Contains(raw, []byte(k[len(k)-30:])) {
				t.Fatalf("%s: the answer holds a token: %s", action, raw)
			}
		}
	}
	// A failing action is logged and announced, still without the token.
	key, _, _ := setupAcme(t, b, s)
	keys = append(keys, key)
	s.mu.Lock()
	s.failPut = hashPrefix
	s.mu.Unlock()
	b.do(t, s, logical.UpdateOperation, "config", map[string]interface{}{"leak_action": leakDisable})
	_, err := b.attempt(s, logical.UpdateOperation, "leaks/report", leakReports(key))
	s.mu.Lock()
	s.failPut = ""
	s.mu.Unlock()
	if err == nil || strings.Contains(err.Error(), key[len(key)-30:]) {
		t.Fatalf("a failed disable: error %v", err)
	}
	if failed := h.waitEvents(notify.KeyLeaked, 4)[3]; failed.Data["action"] != "failed" || failed.Data["failed_action"] != leakDisable {
		t.Fatalf("key-leaked after a failed disable %+v", failed)
	}

	h.settle(b, s)
	events, err := json.Marshal(h.got())
	if err != nil {
		t.Fatal(err)
	}
	stored := storedValues(t, s)
	logText := logs.String()
	if !strings.Contains(logText, "leaked key reported") {
		t.Fatalf("the reports were not logged:\n%s", logText)
	}
	for _, k := range keys {
		body := k[strings.LastIndex(k, "_")+1:][:24]
		if strings.Contains(logText, body) {
			t.Errorf("a token is in the log")
		}
		if bytes.Contains(events, []byte(body)) {
			t.Errorf("a token is in an event")
		}
		for name, v := range stored {
			if strings.Contains(v, body) {
				t.Errorf("a token is in storage entry %s", name)
			}
		}
	}
	if n := len(h.ofType(notify.KeyLeaked)); n != 4 {
		t.Fatalf("%d key-leaked events, want 4 (notify, disable, revoke, failed disable)", n)
	}
}

package acceptance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

const receiverSecret = "acceptance-webhook-secret-0123"

// receiver is a webhook endpoint on loopback. It records every delivery
// whose signature verifies, and any that does not.
type receiver struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	mode     string // "up", "down" (503) or "hang" (no answer)
	events   []notify.Event
	bad      []string
	attempts int
	release  chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, mode: "up", release: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		r.setMode("up")
		r.srv.Close()
	})
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.attempts++
	mode, release := r.mode, r.release
	r.mu.Unlock()
	switch mode {
	case "down":
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case "hang":
		select {
		case <-release:
		case <-req.Context().Done():
		}
		// Released or given up: either way this attempt was not received.
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var ev notify.Event
	err := notify.Verify([]byte(receiverSecret), req.Header.Get(notify.SignatureHeader), body, time.Now(), notify.DefaultTolerance)
	if err == nil {
		err = json.Unmarshal(body, &ev)
	}
	if err == nil && (req.Header.Get(notify.IdempotencyHeader) != ev.ID || req.Header.Get(notify.EventHeader) != ev.Type) {
		err = fmt.Errorf("headers disagree with the body")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.events = append(r.events, ev)
}

func (r *receiver) setMode(m string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == "hang" && m != "hang" {
		close(r.release)
		r.release = make(chan struct{})
	}
	r.mode = m
}

func (r *receiver) got() []notify.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Fatalf("receiver refused deliveries: %v", r.bad)
	}
	return append([]notify.Event(nil), r.events...)
}

func (r *receiver) count(typ string) int {
	n := 0
	for _, e := range r.got() {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// scrapeMetrics reads <mount>/metrics over plain HTTP with a token, as
// Prometheus does, and parses it with Prometheus' parser.
func scrapeMetrics(t *testing.T, addr, token, mount string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, addr+"/v1/"+mount+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: HTTP %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, body)
	}
	return fams
}

// sample is the value of the sample of name whose labels include want
// (a histogram's count); -1 when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == want[i] && l.GetValue() == want[i+1])
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

// verifyLatency times n sequential verifies through Vault and returns the
// median and the 95th percentile.
func verifyLatency(t *testing.T, c *api.Client, path, key string, n int) (time.Duration, time.Duration) {
	t.Helper()
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		s, err := c.Logical().Write(path, map[string]interface{}{"api_key": key})
		d[i] = time.Since(start)
		if err != nil || s.Data["code"] != "VALID" {
			t.Fatalf("verify: %v %v", err, s)
		}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[n/2], d[n*95/100]
}

// newKey is a well-formed key with the mount's default prefix that was
// never issued.
func newKey(t *testing.T) string {
	t.Helper()
	k, err := keyformat.Generate("ak", "live")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func monitoringSettings() map[string]interface{} {
	return map[string]interface{}{
		"delivery_retry_base": "100ms", "delivery_retry_max": "500ms", "delivery_timeout": "1s",
		"delivery_max_attempts": 1000, "scan_interval": "300ms",
		"tenant_failure_threshold": 5, "anomaly_window": "1h",
	}
}

// TestMonitoringThroughVault drives every path of issue 6 through the
// shared dev server: webhook events with valid signatures, usage and
// metrics that match what the test did, gateway reports, and verify latency
// while the webhook receiver hangs.
func TestMonitoringThroughVault(t *testing.T) {
	e := newEngine(t)
	rcv := newReceiver(t)
	write(t, e.c, e.path("config/monitoring"), monitoringSettings())
	write(t, e.c, e.path("config"), map[string]interface{}{"expiry_warning": "2h"})
	s := write(t, e.c, e.path("config/notifications/ops"), map[string]interface{}{"url": rcv.srv.URL, "secret": receiverSecret})
	if s != nil {
		t.Fatalf("a target written with a secret must not echo it: %v", s.Data)
	}
	if got := read(t, e.c, e.path("config/notifications/ops")); got.Data["secret"] != nil || got.Data["secret_set"] != true {
		t.Fatalf("target read: %v", got.Data)
	}
	e.acme()

	// Usage of a dynamic key, then its revocation through its lease.
	k := e.issue("acme", "web", nil)
	const valid = 20
	for range valid {
		e.wantCode(k.key, "VALID")
	}
	key := read(t, e.c, e.path("tenants/acme/keys/"+k.id))
	if n, _ := key.Data["verify_count"].(json.Number).Int64(); n != valid || key.Data["last_used_at"] == nil {
		t.Fatalf("key usage %v", key.Data)
	}
	// A burst of unknown keys on acme's verify path: one verify-anomaly.
	const unknown = 8
	for range unknown {
		d := e.verify("tenants/acme/verify", map[string]interface{}{"api_key": newKey(t)})
		if d["code"] != "NOT_FOUND" {
			t.Fatalf("unknown key: %v", d)
		}
	}

	// A static key: first key, a rotation, its old key in grace.
	write(t, e.c, e.path("tenants/acme/static-keys/app"), map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "10m"})
	write(t, e.c, e.path("tenants/acme/static-keys/app/rotate"), nil)
	static := e.staticCreds("acme", "app")

	// Gateway figures for the static key.
	rep := write(t, e.c, e.path("usage/report"), map[string]interface{}{"reports": []interface{}{
		map[string]interface{}{"tenant": "acme", "key_id": static["key_id"], "requests": 40, "errors": 2, "upstream_latency_ms_sum": 2000, "upstream_latency_ms_max": 90},
	}})
	if rep.Data["accepted"].(json.Number).String() != "1" {
		t.Fatalf("report: %v", rep.Data)
	}
	_, err := e.c.Logical().Write(e.path("usage/report"), map[string]interface{}{"reports": []interface{}{map[string]interface{}{"tenant": "acme", "key_id": "x"}}})
	wantStatus(t, err, http.StatusBadRequest, "reports[0].key_id")

	// The scan finds both keys inside the 2h warning window: the dynamic
	// key (1h TTL) and the static key's old key (10m grace).
	testvault.WaitFor(t, 20*time.Second, "key-expiring", func() bool { return rcv.count(notify.KeyExpiring) >= 2 })
	e.revokeLease(k.lease)
	e.wantCode(k.key, "NOT_FOUND")

	// Every event so far reaches the receiver, signed.
	testvault.WaitFor(t, 20*time.Second, "events", func() bool {
		return rcv.count(notify.KeyIssued) >= 2 && rcv.count(notify.KeyRotated) >= 1 && rcv.count(notify.KeyRevoked) >= 1 &&
			rcv.count(notify.VerifyAnomaly) >= 1
	})

	// Verify latency with the receiver healthy, then hanging on deliveries.
	verifyPath := e.path("verify")
	p50, p95 := verifyLatency(t, e.c, verifyPath, static["api_key"].(string), 200)
	rcv.setMode("hang")
	for range 3 {
		e.issue("acme", "web", nil)
	}
	testvault.WaitFor(t, 10*time.Second, "a delivery to hang", func() bool {
		fams := scrapeMetrics(t, srv.Addr, srv.Token, e.mount)
		return sample(fams, "apikeys_notification_queue_depth") >= 1
	})
	h50, h95 := verifyLatency(t, e.c, verifyPath, static["api_key"].(string), 200)
	t.Logf("verify latency through Vault, receiver healthy: p50 %s p95 %s; receiver hanging: p50 %s p95 %s", p50, p95, h50, h95)
	rcv.setMode("up")
	testvault.WaitFor(t, 20*time.Second, "the held events", func() bool { return rcv.count(notify.KeyIssued) >= 5 })

	// Suspension, once.
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "suspended"})
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"display_name": "Acme (suspended)"})
	testvault.WaitFor(t, 10*time.Second, "tenant-suspended", func() bool { return rcv.count(notify.TenantSuspended) == 1 })

	for _, ev := range rcv.got() {
		if ev.Tenant != "acme" || ev.ID == "" {
			t.Errorf("event %+v", ev)
		}
	}
	if n := rcv.count(notify.VerifyAnomaly); n != 1 {
		t.Errorf("%d verify-anomaly events for one burst in one window, want 1", n)
	}

	// Metrics match what happened.
	verifies := float64(valid + 1 + 400) // + the NOT_FOUND after revoke + latency runs
	fams := scrapeMetrics(t, srv.Addr, srv.Token, e.mount)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"apikeys_verify_total", []string{"tenant", "acme", "code", "VALID"}, valid + 400},
		{"apikeys_verify_total", []string{"tenant", "acme", "code", "NOT_FOUND"}, unknown + 1},
		{"apikeys_verify_duration_seconds", nil, verifies + unknown},
		{"apikeys_keys_issued_total", []string{"tenant", "acme"}, 5},
		{"apikeys_keys_revoked_total", []string{"tenant", "acme"}, 1},
		{"apikeys_rotations_total", []string{"tenant", "acme"}, 1},
		{"apikeys_keys_active", []string{"tenant", "acme"}, 5},
		{"apikeys_verify_anomalies_total", []string{"tenant", "acme", "kind", "tenant-failures"}, 1},
		{"apikeys_gateway_requests_total", []string{"tenant", "acme"}, 40},
		{"apikeys_notification_queue_depth", nil, 0},
		{"apikeys_notification_dead_letters", nil, 0},
	} {
		if got := sample(fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if d := sample(fams, "apikeys_notification_deliveries_total", "target", "ops", "result", "delivered"); d < float64(len(rcv.got())) {
		t.Errorf("delivered %v, receiver has %d", d, len(rcv.got()))
	}

	// Usage as a tenant sees it.
	u := read(t, e.c, e.path("tenants/acme/usage")).Data
	byCode := u["verify_by_code"].(map[string]interface{})
	if byCode["VALID"].(json.Number).String() != fmt.Sprint(valid+400) || u["keys_revoked"].(json.Number).String() != "1" ||
		u["keys_issued"].(json.Number).String() != "5" {
		t.Errorf("usage %v", u)
	}
	sk := read(t, e.c, e.path("tenants/acme/keys/"+static["key_id"].(string))).Data
	if sk["requests"].(json.Number).String() != "40" || sk["upstream_latency_ms_avg"].(json.Number).String() != "50" {
		t.Errorf("static key usage %v", sk)
	}
}

// fileVault is a Vault server on file storage (not -dev: its data outlives
// the process), for the restart test.
type fileVault struct {
	t                       *testing.T
	dir, config, addr       string
	token, unsealKey, mount string
	client                  *api.Client
	proc                    *testvault.ServerProcess
}

func startFileVault(t *testing.T) *fileVault {
	t.Helper()
	port, err := testvault.FreePortPair()
	if err != nil {
		t.Fatal(err)
	}
	v := &fileVault{t: t, dir: t.TempDir(), addr: fmt.Sprintf("http://127.0.0.1:%d", port), mount: "apikeys"}
	v.config = filepath.Join(v.dir, "vault.hcl")
	v.proc = testvault.NewServerProcess(srv.VaultBin, v.config, filepath.Join(v.dir, "vault.log"), "-log-level=info")
	cfg := fmt.Sprintf(`
storage "file" { path = %q }
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr         = %q
plugin_directory = %q
disable_mlock    = true
`, filepath.Join(v.dir, "data"), port, port+1, v.addr, srv.PluginDir)
	if err := os.WriteFile(v.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgAPI := api.DefaultConfig()
	cfgAPI.Address = v.addr
	cfgAPI.MaxRetries = 0
	if v.client, err = api.NewClient(cfgAPI); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.stop)
	v.start()
	init, err := v.client.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("init: %v\n%s", err, v.tail())
	}
	v.unsealKey, v.token = init.Keys[0], init.RootToken
	v.client.SetToken(v.token)
	v.unseal()
	ctx := context.Background()
	if err := v.client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name: testvault.PluginName, Type: api.PluginTypeSecrets, Command: testvault.PluginName,
		SHA256: srv.PluginSHA256, Version: srv.PluginVersion,
	}); err != nil {
		t.Fatal(err)
	}
	if err := v.client.Sys().MountWithContext(ctx, v.mount, &api.MountInput{
		Type: testvault.PluginName, Config: api.MountConfigInput{PluginVersion: srv.PluginVersion},
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *fileVault) start() {
	v.t.Helper()
	if err := v.proc.Start(context.Background(), v.client, 60*time.Second); err != nil {
		v.t.Fatal(err)
	}
}

func (v *fileVault) unseal() {
	v.t.Helper()
	if _, err := v.client.Sys().Unseal(v.unsealKey); err != nil {
		v.t.Fatalf("unseal: %v", err)
	}
	testvault.WaitFor(v.t, 60*time.Second, "vault to be active", func() bool {
		h, err := v.client.Sys().Health()
		return err == nil && h.Initialized && !h.Sealed && !h.Standby
	})
}

// stop ends Vault the way an operator does (SIGTERM), so the plugin gets
// its Clean call; what survives is what was in storage.
func (v *fileVault) stop() { v.proc.Stop() }

func (v *fileVault) tail() string { return v.proc.LogTail(40) }

func (v *fileVault) path(p string) string { return v.mount + "/" + p }

func (v *fileVault) write(p string, data map[string]interface{}) *api.Secret {
	v.t.Helper()
	return write(v.t, v.client, v.path(p), data)
}

// mountDir finds the plugin mount's directory in the file storage: the one
// logical/<uuid>/ that holds a "tenants" directory.
func (v *fileVault) mountDir() string {
	v.t.Helper()
	var found string
	root := filepath.Join(v.dir, "data", "logical")
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "tenants" && filepath.Dir(filepath.Dir(p)) == root {
			found = filepath.Dir(p)
			return filepath.SkipAll
		}
		return nil
	})
	if found == "" {
		v.t.Fatalf("no mount directory under %s", root)
	}
	return found
}

// breakWAL makes every write under wal/ fail, as a full or broken disk
// would for the rotation engine's write-ahead log: a regular file where
// the directory goes. The directory only exists during a rotation.
func (v *fileVault) breakWAL() (undo func()) {
	v.t.Helper()
	p := filepath.Join(v.mountDir(), "wal")
	testvault.WaitFor(v.t, 20*time.Second, "a moment without a rotation in flight", func() bool {
		return os.WriteFile(p, []byte("not a directory"), 0o600) == nil
	})
	return func() {
		if err := os.Remove(p); err != nil {
			v.t.Fatal(err)
		}
	}
}

// TestNotificationsSurviveVaultRestart: with the receiver down, every kind
// of event happens (a rotation failure included, from a broken disk); Vault
// is stopped and started again on its file storage; the receiver comes
// back; every event arrives, signed, and no event arrives twice under two
// ids.
func TestNotificationsSurviveVaultRestart(t *testing.T) {
	v := startFileVault(t)
	rcv := newReceiver(t)
	rcv.setMode("down")
	v.write("config/monitoring", monitoringSettings())
	v.write("config", map[string]interface{}{"expiry_warning": "2h"})
	v.write("config/notifications/ops", map[string]interface{}{"url": rcv.srv.URL, "secret": receiverSecret})
	v.write("tenants/acme", nil)
	v.write("tenants/acme/roles/web", map[string]interface{}{"scopes": "read", "ttl": "1h"})

	k := v.write("tenants/acme/creds/web", map[string]interface{}{})
	for range 6 {
		s := write(t, v.client, v.path("tenants/acme/verify"), map[string]interface{}{"api_key": newKey(t)})
		if s.Data["code"] != "NOT_FOUND" {
			t.Fatalf("garbage verified: %v", s.Data)
		}
	}
	// Scheduled rotations every 5 s, the second one onto a broken disk.
	v.write("tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "5s", "grace_period": "2s"})
	metric := func(name string, labels ...string) float64 {
		return sample(scrapeMetrics(t, v.addr, v.token, v.mount), name, labels...)
	}
	testvault.WaitFor(t, 20*time.Second, "a scheduled rotation", func() bool { return metric("apikeys_rotations_total", "tenant", "acme") >= 1 })
	undo := v.breakWAL()
	testvault.WaitFor(t, 30*time.Second, "a failed rotation", func() bool { return metric("apikeys_rotation_failures_total", "tenant", "acme") >= 1 })
	undo()
	// The retry (5 s later) succeeds; then rotations slow down for the rest.
	testvault.WaitFor(t, 30*time.Second, "the retried rotation", func() bool { return metric("apikeys_rotations_total", "tenant", "acme") >= 2 })
	v.write("tenants/acme/static-keys/app", map[string]interface{}{"rotation_period": "1h", "grace_period": "10m"})
	leaked := v.write("tenants/acme/creds/web", map[string]interface{}{})
	v.write("leaks/report", map[string]interface{}{"reports": []interface{}{
		map[string]interface{}{"token": str(t, leaked, "api_key"), "url": "https://github.com/o/r/blob/1/f", "source": "content"},
	}})
	v.write("tenants/acme/keys/"+str(t, k, "key_id"), map[string]interface{}{"status": "disabled"})
	write(t, v.client, "sys/leases/revoke", map[string]interface{}{"lease_id": k.LeaseID})
	v.write("tenants/acme", map[string]interface{}{"status": "suspended"})

	testvault.WaitFor(t, 20*time.Second, "every event type raised", func() bool {
		fams := scrapeMetrics(t, v.addr, v.token, v.mount)
		for _, typ := range notify.Types {
			if sample(fams, "apikeys_events_total", "type", typ) < 1 {
				return false
			}
		}
		return true
	})
	queued := metric("apikeys_notification_queue_depth")
	if queued < float64(len(notify.Types)) {
		t.Fatalf("only %v deliveries queued with the receiver down", queued)
	}
	if got := rcv.got(); len(got) != 0 {
		t.Fatalf("a down receiver got %d events", len(got))
	}

	v.stop()
	v.start()
	v.unseal()
	rcv.setMode("up")
	testvault.WaitFor(t, 60*time.Second, "the outbox to drain after the restart", func() bool {
		s, err := v.client.Logical().Read(v.path("info"))
		if err != nil || s == nil {
			return false
		}
		return metric("apikeys_notification_queue_depth") == 0 && len(rcv.got()) >= int(queued)
	})

	events := rcv.got()
	ids := map[string]bool{}
	bySubject := map[string]map[string]bool{}
	types := map[string]int{}
	for _, ev := range events {
		ids[ev.ID] = true
		types[ev.Type]++
		subject := ev.Type
		for _, f := range []string{"key_id", "static_key", "kind", "attempt", "expires_at", "window_start"} {
			subject += fmt.Sprintf("/%v", ev.Data[f])
		}
		if bySubject[subject] == nil {
			bySubject[subject] = map[string]bool{}
		}
		bySubject[subject][ev.ID] = true
	}
	for _, typ := range notify.Types {
		if types[typ] == 0 {
			t.Errorf("no %s event arrived after the restart", typ)
		}
	}
	for subject, set := range bySubject {
		if len(set) > 1 {
			t.Errorf("%s arrived under %d different ids", subject, len(set))
		}
	}
	if len(ids) < int(queued) {
		t.Errorf("%v deliveries were queued, %d distinct events arrived", queued, len(ids))
	}
	t.Logf("notification restart: %v deliveries queued while the receiver was down; after the Vault restart %d delivered (%d distinct ids), by type %v",
		queued, len(events), len(ids), types)
}

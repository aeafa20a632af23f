package acceptance

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// caddyBinary is Caddy with the apikeys module, built by scripts/caddy.sh
// (once per machine and source change; make test builds it first).
func caddyBinary(t *testing.T) string {
	t.Helper()
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "caddy.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/caddy.sh: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// caddyfile: two routes with the module, read and admin, sharing one
// verifier (same sync settings), in front of one upstream. %[1]d admin
// port, %[2]d listen port, %[3]s Vault, %[4]s mount, %[5]s token file,
// %[6]s upstream.
const caddyfile = `{
	admin 127.0.0.1:%[1]d
	auto_https off
	persist_config off
}

(apikeys_sync) {
	vault_addr %[3]s
	mount %[4]s
	token_file %[5]s
	staleness 4s
	poll_wait 1s
}

http://127.0.0.1:%[2]d {
	route /api/* {
		apikeys {
			import apikeys_sync
			scopes read
		}
		reverse_proxy %[6]s
	}
	route /admin/* {
		apikeys {
			import apikeys_sync
			scopes admin
		}
		reverse_proxy %[6]s
	}
}
`

type caddyFixture struct {
	t     *testing.T
	get   gatewayGet
	admin string
	token string
}

// startCaddy runs the module's Caddy against mount e with a fresh
// gateway-global token, and waits until it lets the valid key through.
func startCaddy(t *testing.T, e *engine, validKey string, upstream string) *caddyFixture {
	t.Helper()
	bin := caddyBinary(t)
	dir := t.TempDir()
	token := gatewayToken(t, e.mount)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	adminPort, err := testvault.FreePortPair()
	if err != nil {
		t.Fatal(err)
	}
	port := adminPort + 1
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(caddyfile, adminPort, port, srv.Addr, e.mount, tokenFile, strings.TrimPrefix(upstream, "http://"))), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	// Caddy keeps its data and config under HOME / XDG_*: the test's own.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	logf, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("caddy log (tail):\n%s", b)
		}
	})
	f := &caddyFixture{t: t, get: httpGateway(t, fmt.Sprintf("http://127.0.0.1:%d", port)), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), token: token}
	testvault.WaitFor(t, 30*time.Second, "Caddy to let a valid key through", func() error {
		if a := f.get("/api/x", validKey, nil); a.status != 200 {
			return fmt.Errorf("answered %d %s", a.status, a.body)
		}
		return nil
	})
	return f
}

// metrics is Caddy's admin /metrics.
func (f *caddyFixture) metrics() string {
	f.t.Helper()
	resp, err := http.Get(f.admin + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestCaddyModule runs Caddy built with the module in front of an
// upstream, against a real Vault: the table of answers (valid key through
// with the answer's headers and none of the client's, each refusal with
// its status and code), a disabled key enabled and disabled again within
// the feed's latency, the edge's metrics in Caddy's, one verifier for
// both routes, a revoked key refused within the feed's latency, and the
// module failing closed once its sync is stale.
func TestCaddyModule(t *testing.T) {
	e := newEngine(t)
	k := setupGatewayKeys(e)
	up := echoUpstream(t)
	f := startCaddy(t, e, k.valid.key, up.URL)
	checkGatewayAnswers(t, f.get, k, true)
	checkDisabledFollowsVault(t, e, f.get, k)

	m := f.metrics()
	for _, want := range []string{"apikeys_edge_keys ", `apikeys_edge_verifications_total{code="RATE_LIMITED",source="local"} 1`, "apikeys_edge_snapshots_loaded_total 1\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("Caddy's /metrics has no %q (the two routes share one verifier: one snapshot)", want)
		}
	}

	fresh := e.issue("acme", "web", nil)
	waitGateway(t, f.get, fresh.key, 200, "", "fresh key", 5*time.Second)
	e.revokeLease(fresh.lease)
	t.Logf("Caddy refuses a key revoked with vault lease revoke after %s",
		waitGateway(t, f.get, fresh.key, 401, "NOT_FOUND", "revoked key", 5*time.Second))
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "suspended"})
	waitGateway(t, f.get, k.valid.key, 401, "TENANT_SUSPENDED", "suspended tenant", 5*time.Second)
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "active"})
	waitGateway(t, f.get, k.valid.key, 200, "", "resumed tenant", 5*time.Second)

	if err := srv.Client.Auth().Token().RevokeOrphan(f.token); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if a := f.get("/api/x", regenerateKey(t, k.valid.key), nil); a.status != 503 || a.header.Get("X-Apikeys-Code") != "UNAVAILABLE" {
		t.Errorf("unknown key without Vault: %d %s", a.status, a.header.Get("X-Apikeys-Code"))
	}
	waitGateway(t, f.get, k.valid.key, 503, "STALE", "module failing closed", 15*time.Second)
	t.Logf("Caddy failed closed %s after the module lost Vault (staleness 4s)", time.Since(cut))
	if m := f.metrics(); !strings.Contains(m, "apikeys_edge_stale 1") {
		t.Errorf("apikeys_edge_stale is not 1 in Caddy's /metrics")
	}
}

package acceptance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// nginxConf runs the shipped snippets (bootstrap/gateways/nginx) the way
// site.conf does: %[1]s the test's directory, %[2]d the port, %[3]s the
// edge, %[4]s the upstream, %[5]s the snippets' directory.
const nginxConf = `
daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream apikeys_edge {
        server %[3]s;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:%[2]d;
        include %[5]s/apikeys-check.conf;
        location /api/ {
            set $apikeys_scopes read;
            set $apikeys_tenant_filter "";
            include %[5]s/apikeys-protect.conf;
            proxy_pass http://%[4]s;
        }
        location /admin/ {
            set $apikeys_scopes admin;
            set $apikeys_tenant_filter "";
            include %[5]s/apikeys-protect.conf;
            proxy_pass http://%[4]s;
        }
    }
}
`

// nginxBinary is Debian's nginx. make test installs nginx-light when it
// is missing (make tools); a bare go test on a machine without nginx
// skips, except in CI.
func nginxBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin = "/usr/sbin/nginx"; !fileExists(bin) {
			if os.Getenv("CI") != "" {
				t.Fatal("nginx is not installed: make tools installs nginx-light")
			}
			t.Skip("nginx is not installed (make tools, or apt-get install nginx-light)")
		}
	}
	return bin
}

// startNginx runs nginx with the shipped snippets in front of upstream,
// asking the edge at edgeHost, and returns its base URL.
func startNginx(t *testing.T, bin, edgeHost, upstream string) string {
	t.Helper()
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	snippets := filepath.Join(root, "bootstrap", "gateways", "nginx")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, port, edgeHost, strings.TrimPrefix(upstream, "http://"), snippets)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error log:\n%s", b)
		}
	})
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// TestEdgeBehindNginx runs Debian's nginx with the shipped auth_request
// configuration (bootstrap/gateways/nginx) in front of an upstream: the
// table of answers, with both 429s (RATE_LIMITED, QUOTA_EXCEEDED, each
// with its Retry-After) and 503 reaching the client as such instead of
// auth_request's 500; the contract's X-Apikeys-* headers of a client
// replaced; a disabled key enabled and disabled again, a revoked key and a
// suspended tenant refused
// within the feed's latency; 503 STALE once the edge is stale, and 503
// UNAVAILABLE when the edge cannot be reached.
func TestEdgeBehindNginx(t *testing.T) {
	bin := nginxBinary(t)
	e := newEngine(t)
	k := setupGatewayKeys(e)
	f := startEdge(t, e, 3*time.Second)
	up := echoUpstream(t)
	base := startNginx(t, bin, f.srv.Listener.Addr().String(), up.URL)
	get := httpGateway(t, base)
	testvault.WaitFor(t, 10*time.Second, "nginx to start", func() bool { return get("/api/x", k.valid.key, nil).status != 0 })
	checkGatewayAnswers(t, get, k, false)
	checkDisabledFollowsVault(t, e, get, k)

	other := e.issue("acme", "web", nil)
	waitGateway(t, get, other.key, http.StatusOK, "", "second key", 5*time.Second)
	e.revokeLease(k.valid.lease)
	t.Logf("nginx refuses a key revoked with vault lease revoke after %s",
		waitGateway(t, get, k.valid.key, http.StatusUnauthorized, "NOT_FOUND", "revoked key", 5*time.Second))
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "suspended"})
	t.Logf("nginx refuses a suspended tenant's key after %s",
		waitGateway(t, get, other.key, http.StatusUnauthorized, "TENANT_SUSPENDED", "suspended tenant", 5*time.Second))
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "active"})
	waitGateway(t, get, other.key, http.StatusOK, "", "resumed tenant", 5*time.Second)

	// Vault gone for the edge: served within the bound, then 503 STALE.
	if err := srv.Client.Auth().Token().RevokeOrphan(f.ed.Token()); err != nil {
		t.Fatal(err)
	}
	if a := get("/api/x", other.key, nil); a.status != http.StatusOK {
		t.Fatalf("within the staleness bound: %d", a.status)
	}
	start := time.Now()
	waitGateway(t, get, other.key, http.StatusServiceUnavailable, "STALE", "stale edge", 10*time.Second)
	t.Logf("nginx answers 503 STALE %s after the edge lost Vault", time.Since(start))

	// The edge itself gone: nginx's own 500 becomes 503 UNAVAILABLE.
	f.srv.Close()
	a := get("/api/x", other.key, nil)
	if a.status != http.StatusServiceUnavailable || a.header.Get("X-Apikeys-Code") != "UNAVAILABLE" || !strings.Contains(a.body, `"UNAVAILABLE"`) {
		t.Fatalf("edge unreachable: %d %s %s", a.status, a.header.Get("X-Apikeys-Code"), a.body)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

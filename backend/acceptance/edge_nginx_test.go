package acceptance

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// nginxConf puts auth_request to the edge in front of an upstream that
// echoes the tenant header nginx forwards.
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
    server {
        listen 127.0.0.1:%[2]d;
        location = /_apikeys_check {
            internal;
            proxy_pass http://%[3]s/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Real-IP $remote_addr;
        }
        location / {
            auth_request /_apikeys_check;
            auth_request_set $apikeys_tenant $upstream_http_x_apikeys_tenant;
            proxy_set_header X-Apikeys-Tenant $apikeys_tenant;
            proxy_pass http://%[4]s;
        }
    }
}
`

// TestEdgeBehindNginx runs nginx from Debian's package with auth_request to
// the edge. `make test` installs nginx-light when it is missing (make
// tools); a bare `go test` on a machine without nginx skips, except in CI.
func TestEdgeBehindNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin = "/usr/sbin/nginx"; !fileExists(bin) {
			if os.Getenv("CI") != "" {
				t.Fatal("nginx is not installed: make tools installs nginx-light")
			}
			t.Skip("nginx is not installed (make tools, or apt-get install nginx-light)")
		}
	}
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	f := startEdge(t, e, 3*time.Second)

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tenant=%s", r.Header.Get("X-Apikeys-Tenant"))
	}))
	defer upstream.Close()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	edgeHost := f.srv.Listener.Addr().String()
	upHost := upstream.Listener.Addr().String()
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, port, edgeHost, upHost)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()

	base := fmt.Sprintf("http://127.0.0.1:%d/", port)
	get := func(key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"api/thing", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testvault.WaitFor(t, 10*time.Second, "nginx to start", func() bool { st, _ := get(k.key); return st != 0 })
	waitFor := func(key string, status int, what string) time.Duration {
		t.Helper()
		start := time.Now()
		testvault.WaitFor(t, 5*time.Second, fmt.Sprintf("%s: nginx to answer %d", what, status), func() error {
			if st, body := get(key); st != status {
				return fmt.Errorf("nginx answers %d %s", st, body)
			}
			return nil
		})
		return time.Since(start)
	}

	if st, body := get(k.key); st != http.StatusOK || body != "tenant=acme" {
		t.Fatalf("valid key through nginx: %d %q", st, body)
	}
	if st, _ := get(regenerateKey(t, k.key)); st != http.StatusUnauthorized {
		t.Fatalf("unknown key through nginx: %d", st)
	}
	if st, _ := get(""); st != http.StatusUnauthorized {
		t.Fatalf("no key through nginx: %d", st)
	}

	other := e.issue("acme", "web", nil)
	waitFor(other.key, http.StatusOK, "second key")
	e.revokeLease(k.lease)
	t.Logf("nginx refuses a key revoked with vault lease revoke after %s", waitFor(k.key, http.StatusUnauthorized, "revoked key"))
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "suspended"})
	t.Logf("nginx refuses a suspended tenant's key after %s", waitFor(other.key, http.StatusUnauthorized, "suspended tenant"))
	write(t, e.c, e.path("tenants/acme"), map[string]interface{}{"status": "active"})
	waitFor(other.key, http.StatusOK, "resumed tenant")

	// Vault gone for the edge: served within the bound, then refused (nginx
	// turns the edge's 503 into a 500).
	if err := srv.Client.Auth().Token().RevokeOrphan(f.ed.Token()); err != nil {
		t.Fatal(err)
	}
	if st, _ := get(other.key); st != http.StatusOK {
		t.Fatalf("within the staleness bound: %d", st)
	}
	start := time.Now()
	testvault.WaitFor(t, 10*time.Second, "nginx to refuse once the edge is stale", func() error {
		if st, _ := get(other.key); st != http.StatusInternalServerError {
			return fmt.Errorf("nginx answers %d", st)
		}
		return nil
	})
	t.Logf("nginx refuses after the edge went stale, %s after Vault was lost", time.Since(start))
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

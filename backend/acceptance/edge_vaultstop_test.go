package acceptance

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// TestEdgeKeepsServingWhenVaultStopsThenFailsClosed stops a real Vault
// server process (its own, not the shared one) under a running edge: the
// edge answers from memory within its staleness bound, then refuses.
func TestEdgeKeepsServingWhenVaultStopsThenFailsClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	own, err := testvault.Start(ctx, testvault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer own.Cleanup()
	if err := own.Mount(ctx, "apikeys"); err != nil {
		t.Fatal(err)
	}
	c := own.Client
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{"apikeys/tenants/acme", map[string]interface{}{}},
		{"apikeys/tenants/acme/roles/web", map[string]interface{}{"scopes": "read"}},
	} {
		if _, err := c.Logical().Write(w.path, w.data); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.Logical().Read("apikeys/tenants/acme/creds/web")
	if err != nil {
		t.Fatal(err)
	}
	key := s.Data["api_key"].(string)

	const staleness = 3 * time.Second
	ed, err := edge.New(edge.Config{
		Client: c, Mount: "apikeys", Staleness: staleness, PollWait: time.Second, UsageInterval: time.Second,
		Logger:   hclog.New(&hclog.LoggerOptions{Name: "edge", Level: hclog.Error, Output: os.Stderr}),
		Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = ed.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	hs := httptest.NewServer(ed.Handler(edge.HTTPOptions{}))
	defer hs.Close()
	check := func() int {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/check", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testvault.WaitFor(t, 10*time.Second, "the edge to serve the key", func() bool { return !ed.Stale() && check() == http.StatusOK })

	own.Stop() // the Vault server process is gone
	stopped := time.Now()
	if st := check(); st != http.StatusOK {
		t.Fatalf("right after Vault stopped: HTTP %d, want 200 from memory", st)
	}
	testvault.WaitFor(t, staleness+5*time.Second, fmt.Sprintf("the edge to stop serving (staleness bound %s)", staleness), func() bool { return check() != http.StatusOK })
	if st := check(); st != http.StatusServiceUnavailable {
		t.Fatalf("after the bound: HTTP %d, want 503", st)
	}
	t.Logf("edge served from memory for %s after Vault stopped (staleness bound %s), then failed closed", time.Since(stopped).Round(10*time.Millisecond), staleness)
}

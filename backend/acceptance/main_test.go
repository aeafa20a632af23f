// Package acceptance runs the plugin inside a real Vault server process and
// talks to it over HTTP and the vault CLI. One server serves every test of
// the package; each test gets a mount of its own.
package acceptance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

var srv *testvault.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// sys/raw lets a test read what the plugin stored, as it was written
	// (rawEntries): the proof that no plaintext key is in storage.
	dir, err := os.MkdirTemp("", "apikeys-acceptance-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot make a config directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	rawConfig := filepath.Join(dir, "raw.hcl")
	if err := os.WriteFile(rawConfig, []byte("raw_storage_endpoint = true\n"), 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "cannot write %s: %v\n", rawConfig, err)
		return 1
	}
	srv, err = testvault.Start(ctx, testvault.Options{
		ExtraArgs: []string{"-config=" + rawConfig},
		Log:       func(f string, a ...interface{}) { fmt.Fprintf(os.Stderr, "testvault: "+f+"\n", a...) },
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot start Vault: %v\n", err)
		return 1
	}
	defer srv.Cleanup()
	defer removeReleases()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- vault server log (tail) ---\n%s\n", srv.LogTail(60))
	}
	return code
}

var mountSeq atomic.Int64

// newMount enables the plugin at a fresh path for one test and disables it
// when the test ends. It returns the mount path without a trailing slash.
func newMount(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	mount := fmt.Sprintf("ak%d-%s", mountSeq.Add(1), name)
	ctx := context.Background()
	if err := srv.Mount(ctx, mount); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Client.Sys().UnmountWithContext(context.Background(), mount); err != nil {
			t.Errorf("unmount %s: %v", mount, err)
		}
	})
	return mount
}

func write(t *testing.T, c *api.Client, path string, data map[string]interface{}) *api.Secret {
	t.Helper()
	s, err := c.Logical().Write(path, data)
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return s
}

func read(t *testing.T, c *api.Client, path string) *api.Secret {
	t.Helper()
	s, err := c.Logical().Read(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return s
}

// wantStatus asserts that err is a Vault response error with the given HTTP
// status whose message mentions every one of want.
func wantStatus(t *testing.T, err error, status int, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want HTTP %d, got success", status)
	}
	re, ok := err.(*api.ResponseError)
	if !ok {
		t.Fatalf("want HTTP %d, got %v", status, err)
	}
	if re.StatusCode != status {
		t.Fatalf("want HTTP %d, got %d: %v", status, re.StatusCode, re.Errors)
	}
	msg := strings.Join(re.Errors, "; ")
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not mention %q", msg, w)
		}
	}
}

func str(t *testing.T, s *api.Secret, field string) string {
	t.Helper()
	if s == nil {
		t.Fatalf("no response for field %s", field)
	}
	v, ok := s.Data[field].(string)
	if !ok {
		t.Fatalf("field %s: want a string, got %#v (data %v)", field, s.Data[field], s.Data)
	}
	return v
}

package acceptance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func (e *engine) staticCreds(tenant, name string) map[string]interface{} {
	e.t.Helper()
	s := read(e.t, e.c, e.path("tenants/"+tenant+"/static-creds/"+name))
	if s == nil {
		e.t.Fatalf("no static creds for %s/%s", tenant, name)
	}
	return s.Data
}

// startAgent runs a real `vault agent` with the example config shipped in
// bootstrap/agent, pointed at this server and mount. It returns the path of
// the rendered file.
func startAgent(t *testing.T, e *engine, token string) string {
	t.Helper()
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{"agent.hcl", "api-key.ctmpl"} {
		data, err := os.ReadFile(filepath.Join(root, "bootstrap", "agent", f))
		if err != nil {
			t.Fatal(err)
		}
		out := strings.ReplaceAll(string(data), "http://127.0.0.1:8200", srv.Addr)
		out = strings.ReplaceAll(out, `"apikeys/`, `"`+e.mount+`/`)
		if err := os.WriteFile(filepath.Join(dir, f), []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "vault-token"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(srv.VaultBin, "agent", "-config=agent.hcl", "-log-level=debug")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+srv.Addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
			t.Logf("agent log:\n%s", data)
		}
	})
	return filepath.Join(dir, "api-key.txt")
}

// waitFile waits until path holds something other than not, and returns
// it and when it was seen.
func waitFile(t *testing.T, path, not string, timeout time.Duration) (string, time.Time) {
	t.Helper()
	var data []byte
	testvault.WaitFor(t, timeout, path+" to change", func() bool {
		var err error
		data, err = os.ReadFile(path)
		return err == nil && len(bytes.TrimSpace(data)) > 0 && string(data) != not
	})
	return string(data), time.Now()
}

func TestAgentRendersStaticKeyAndFollowsRotation(t *testing.T) {
	t.Parallel()
	e := newEngine(t)
	e.acme()
	write(t, e.c, e.path("tenants/acme/static-keys/app"), map[string]interface{}{"role": "web", "rotation_period": "6s", "grace_period": "4s"})
	policy := `path "` + e.path("tenants/acme/static-creds/app") + `" { capabilities = ["read"] }`
	if err := e.c.Sys().PutPolicy(e.mount+"-app", policy); err != nil {
		t.Fatal(err)
	}
	tok, err := e.c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{e.mount + "-app"}})
	if err != nil {
		t.Fatal(err)
	}
	file := startAgent(t, e, tok.Auth.ClientToken)

	first, _ := waitFile(t, file, "", 30*time.Second)
	if !keyShape.MatchString(first) {
		t.Fatalf("agent rendered %q", first)
	}
	second, changedAt := waitFile(t, file, first, 20*time.Second)
	creds := e.staticCreds("acme", "app")
	if creds["api_key"] != second {
		t.Fatalf("agent file holds %q, static-creds %q", second, creds["api_key"])
	}
	rotated, err := time.Parse(time.RFC3339Nano, creds["last_rotated"].(string))
	if err != nil {
		t.Fatal(err)
	}
	lag := changedAt.Sub(rotated)
	t.Logf("agent-rendered file changed %s after the rotation", lag.Round(time.Millisecond))
	if lag < 0 || lag > 4*time.Second {
		t.Fatalf("file changed %s after the rotation", lag)
	}

	// The key the app had before keeps working in its grace, then fails.
	old := e.verify("verify", map[string]interface{}{"api_key": first})
	if old["code"] != "VALID" || old["in_grace"] != true || old["kind"] != "static" {
		t.Fatalf("rotated-out key right after rotation: %v", old)
	}
	testvault.WaitFor(t, time.Until(rotated.Add(4*time.Second))+5*time.Second, "the rotated-out key to be refused after its grace", func() error {
		if c := e.code(first); c != "EXPIRED" && c != "NOT_FOUND" {
			return fmt.Errorf("verify answers %s", c)
		}
		return nil
	})
}

func TestVerifyDuringRotationsNeverFailsServedKey(t *testing.T) {
	t.Parallel()
	e := newEngine(t)
	e.acme()
	write(t, e.c, e.path("tenants/acme/static-keys/app"), map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "5m"})

	var served atomic.Value
	served.Store(e.staticCreds("acme", "app")["api_key"].(string))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var verifies, failures, inGrace atomic.Int64
	var firstFailure atomic.Value
	// The app: re-reads its key like Vault Agent would, every 100 ms.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if s, err := e.c.Logical().Read(e.path("tenants/acme/static-creds/app")); err == nil && s != nil {
				served.Store(s.Data["api_key"].(string))
			}
		}
	}()
	// The gateway: verifies whatever key the app presents, continuously.
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s, err := e.c.Logical().Write(e.path("verify"), map[string]interface{}{"api_key": served.Load().(string)})
				verifies.Add(1)
				if err != nil || s.Data["code"] != "VALID" {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, []interface{}{err, s})
					continue
				}
				if s.Data["in_grace"] == true {
					inGrace.Add(1)
				}
			}
		}()
	}
	const rotations = 15
	for i := 0; i < rotations; i++ {
		time.Sleep(700 * time.Millisecond)
		write(t, e.c, e.path("tenants/acme/static-keys/app/rotate"), nil)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d rotations, %d verifies, %d answered in grace, %d failures", rotations, verifies.Load(), inGrace.Load(), failures.Load())
	if failures.Load() != 0 {
		t.Fatalf("%d of %d verifies failed during rotations; first: %v", failures.Load(), verifies.Load(), firstFailure.Load())
	}
	if verifies.Load() < 100 {
		t.Fatalf("only %d verifies: the loop did not really run", verifies.Load())
	}
}

func TestRotationScheduleFiresAtTheMinute(t *testing.T) {
	t.Parallel()
	e := newEngine(t)
	e.acme()
	write(t, e.c, e.path("tenants/acme/static-keys/cron"), map[string]interface{}{"role": "web", "rotation_schedule": "* * * * *", "grace_period": "20s"})
	info := read(t, e.c, e.path("tenants/acme/static-keys/cron"))
	next, err := time.Parse(time.RFC3339, info.Data["next_rotation"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if next.Second() != 0 || time.Until(next) > time.Minute {
		t.Fatalf("next_rotation %s is not the next minute", next)
	}
	firstID := info.Data["key_id"]
	// Nothing can happen before the minute: polling until then would only
	// load the server.
	time.Sleep(time.Until(next))
	var creds map[string]interface{}
	testvault.WaitFor(t, 10*time.Second, fmt.Sprintf("the rotation scheduled for %s", next.Format(time.TimeOnly)), func() bool {
		creds = e.staticCreds("acme", "cron")
		return creds["key_id"] != firstID
	})
	rotated, _ := time.Parse(time.RFC3339Nano, creds["last_rotated"].(string))
	t.Logf("scheduled for %s, rotated at %s", next.Format(time.TimeOnly), rotated.Format("15:04:05.000"))
	if rotated.Before(next) || rotated.After(next.Add(3*time.Second)) {
		t.Fatalf("rotated at %s, scheduled %s", rotated, next)
	}
	if creds["rotation_schedule"] != "* * * * *" || creds["rotation_period"].(json.Number).String() != "60" {
		t.Fatalf("static-creds lacks the schedule data Vault Agent needs: %v", creds)
	}
}

func TestStaticKeyLifecycleAndBadInput(t *testing.T) {
	e := newEngine(t)
	e.acme()
	for _, tc := range []struct {
		name  string
		data  map[string]interface{}
		field string
	}{
		{"bad cron", map[string]interface{}{"role": "web", "rotation_schedule": "at noon"}, "rotation_schedule"},
		{"grace not below period", map[string]interface{}{"role": "web", "rotation_period": "1h", "grace_period": "2h"}, "grace_period"},
		{"unknown role", map[string]interface{}{"role": "ghost", "rotation_period": "1h"}, "role"},
		{"period below 5s", map[string]interface{}{"role": "web", "rotation_period": "1s"}, "rotation_period"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.Logical().Write(e.path("tenants/acme/static-keys/bad"), tc.data)
			wantStatus(t, err, http.StatusBadRequest, tc.field)
		})
	}
	if s, _ := e.c.Logical().List(e.path("tenants/acme/static-keys")); s != nil {
		t.Fatalf("rejected creates left static keys: %v", s.Data)
	}

	write(t, e.c, e.path("tenants/acme/static-keys/app"), map[string]interface{}{"role": "web", "rotation_period": "24h", "grace_period": "1h", "metadata": "app=shop"})
	c1 := e.staticCreds("acme", "app")
	k1 := c1["api_key"].(string)
	if ttl, _ := c1["ttl"].(json.Number).Int64(); ttl < 86000 || c1["rotation_period"].(json.Number).String() != "86400" {
		t.Fatalf("static-creds: %v", c1)
	}
	got := e.verify("verify", map[string]interface{}{"api_key": k1})
	if got["kind"] != "static" || got["metadata"].(map[string]interface{})["app"] != "shop" {
		t.Fatalf("static key verify: %v", got)
	}

	// Deleting a leaked current key rotates at once, without grace.
	e.cli(nil, "delete", e.path("tenants/acme/keys/"+c1["key_id"].(string)))
	e.wantCode(k1, "NOT_FOUND")
	k2 := e.staticCreds("acme", "app")["api_key"].(string)
	e.wantCode(k2, "VALID")

	// Rotate keeps the old key in grace; delete revokes current and previous.
	write(t, e.c, e.path("tenants/acme/static-keys/app/rotate"), nil)
	k3 := e.staticCreds("acme", "app")["api_key"].(string)
	e.wantCode(k2, "VALID")
	if _, err := e.c.Logical().Delete(e.path("tenants/acme/static-keys/app")); err != nil {
		t.Fatal(err)
	}
	e.wantCode(k2, "NOT_FOUND")
	e.wantCode(k3, "NOT_FOUND")
	if ids := e.keyIDs("acme"); len(ids) != 0 {
		t.Fatalf("keys left after static key delete: %v", ids)
	}
}

func TestOnboardingHandsKeysOverInOneWrappingToken(t *testing.T) {
	e := newEngine(t)
	e.tenant("acme", map[string]interface{}{"allowed_environments": "production,staging"})
	e.role("acme", "api", map[string]interface{}{"scopes": "read", "environment": "production"})
	out := e.cli(nil, "write", "-format=json", "-wrap-ttl=60s", e.path("tenants/acme/onboard"),
		"role=api", "environments=production,staging", "rotation_period=720h")
	var wrapped struct {
		WrapInfo struct {
			Token string `json:"token"`
		} `json:"wrap_info"`
		Data map[string]interface{} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &wrapped); err != nil || wrapped.WrapInfo.Token == "" {
		t.Fatalf("no wrapping token: %v\n%s", err, out)
	}
	if wrapped.Data != nil {
		t.Fatalf("keys travelled outside the wrapping token: %v", wrapped.Data)
	}
	out = e.cli(nil, "unwrap", "-format=json", wrapped.WrapInfo.Token)
	var unwrapped struct {
		Data struct {
			Keys map[string]struct {
				Name   string `json:"name"`
				APIKey string `json:"api_key"`
			} `json:"keys"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &unwrapped); err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{"production", "staging"} {
		k := unwrapped.Data.Keys[env]
		if k.Name != "api-"+env || !strings.HasPrefix(k.APIKey, "ak_"+env+"_") {
			t.Fatalf("%s: %+v", env, k)
		}
		got := e.verify("tenants/acme/verify", map[string]interface{}{"api_key": k.APIKey})
		if got["code"] != "VALID" || got["environment"] != env {
			t.Fatalf("%s key: %v", env, got)
		}
	}
	if _, err := srv.CLI(context.Background(), nil, "unwrap", wrapped.WrapInfo.Token); err == nil {
		t.Fatal("the wrapping token worked twice")
	}
	// A second onboarding of the same role refuses and creates nothing.
	_, err := e.c.Logical().Write(e.path("tenants/acme/onboard"), map[string]interface{}{"role": "api", "environments": "staging", "rotation_period": "720h"})
	wantStatus(t, err, http.StatusBadRequest, "environments")
}

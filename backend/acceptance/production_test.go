package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// releases are what scripts/release.sh (make release) builds for the host
// platform, one per version for the whole package run: the production
// test and the operations guide install the same artifacts.
var releases struct {
	sync.Mutex
	dir   string
	built map[string]*testvault.Release
}

// release returns the host platform's release of version, building it the
// first time it is asked for.
func release(t *testing.T, version string) *testvault.Release {
	t.Helper()
	releases.Lock()
	defer releases.Unlock()
	if r := releases.built[version]; r != nil {
		return r
	}
	if releases.dir == "" {
		dir, err := os.MkdirTemp("", "apikeys-releases-")
		if err != nil {
			t.Fatal(err)
		}
		releases.dir, releases.built = dir, map[string]*testvault.Release{}
	}
	start := time.Now()
	r, err := testvault.BuildRelease(repoRoot(t), filepath.Join(releases.dir, version), version, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("release %s built in %s", version, time.Since(start).Round(time.Millisecond))
	releases.built[version] = r
	return r
}

// removeReleases is TestMain's: the releases outlive the test that built
// them.
func removeReleases() {
	releases.Lock()
	defer releases.Unlock()
	if releases.dir != "" {
		os.RemoveAll(releases.dir)
	}
}

// TestProductionInstall installs the release build on a Vault run the way
// production runs it, following docs/operations.md's Install, Upgrade and
// Roll back with the commands an operator types: a config file with a TLS
// listener (certificate from a CA made for the test), Raft storage,
// plugin_directory, api_addr/cluster_addr; `vault operator init` with 3
// key shares and a threshold of 2, unseal; the plugin checked against
// SHA256SUMS, copied into plugin_directory and registered by that checksum
// and version; the core tour; a restart (sealed again, unsealed with
// another pair of shares) that keys, tenants and static keys survive; an
// upgrade to a higher version and a rollback, keys verifying throughout.
func TestProductionInstall(t *testing.T) {
	const mount = "apikeys"
	ctx := context.Background()
	v1, v2 := release(t, "v0.1.0"), release(t, "v0.2.0")

	p, err := testvault.StartProduction(ctx, testvault.ProductionOptions{Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Cleanup)
	defer func() {
		if t.Failed() {
			t.Logf("--- vault server log (tail) ---\n%s", p.LogTail(60))
		}
	}()
	e := &engine{t: t, mount: mount, c: p.Client, vault: p.CLI}

	// init: 3 shares, any 2 unseal. The shares and root token are read
	// from the JSON an operator would hand out to three custodians.
	var init struct {
		Keys      []string `json:"unseal_keys_b64"`
		RootToken string   `json:"root_token"`
	}
	out := e.cli(nil, "operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json")
	if err := json.Unmarshal([]byte(out), &init); err != nil || len(init.Keys) != 3 || init.RootToken == "" {
		t.Fatalf("operator init: %v: %s", err, out)
	}
	unseal := func(shares ...string) {
		t.Helper()
		for _, k := range shares {
			e.cli(nil, "operator", "unseal", k)
		}
		if err := p.WaitActive(ctx, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	unseal(init.Keys[0], init.Keys[1])
	p.Client.SetToken(init.RootToken)

	// The operator's install: check the download, copy it in, register
	// it by the checksum SHA256SUMS gives and its version, mount it.
	install := func(r *testvault.Release) (command, sum string) {
		t.Helper()
		check := exec.Command("sha256sum", "--check", "--ignore-missing", "SHA256SUMS")
		check.Dir = r.Dir
		if out, err := check.CombinedOutput(); err != nil {
			t.Fatalf("sha256sum --check in %s: %v: %s", r.Dir, err, out)
		}
		file := r.File(testvault.PluginName, "")
		command = testvault.PluginName + "_" + r.Version
		if out, err := exec.Command("install", "-m", "0755", filepath.Join(r.Dir, file), filepath.Join(p.PluginDir, command)).CombinedOutput(); err != nil {
			t.Fatalf("install %s: %v: %s", file, err, out)
		}
		sum = r.Sums[file]
		e.cli(nil, "plugin", "register", "-sha256="+sum, "-version="+r.Version, "-command="+command,
			"secret", testvault.PluginName)
		return command, sum
	}
	_, sum1 := install(v1)
	e.cli(nil, "secrets", "enable", "-path="+mount, "-plugin-version="+v1.Version, testvault.PluginName)
	wantRunning(t, e, v1.Version, sum1)

	// The core tour.
	e.tenant("acme", map[string]interface{}{"display_name": "Acme Corp", "key_prefix": "acme"})
	e.role("acme", "web", map[string]interface{}{"scopes": "read,write", "ttl": "1h"})
	revoked, kept := e.issue("acme", "web", nil), e.issue("acme", "web", nil)
	e.wantCode(revoked.key, "VALID")
	e.revokeLease(revoked.lease)
	e.wantCode(revoked.key, "NOT_FOUND")
	write(t, p.Client, mount+"/tenants/acme/static-keys/checkout", map[string]interface{}{"role": "web", "rotation_period": "720h"})
	static := str(t, read(t, p.Client, mount+"/tenants/acme/static-creds/checkout"), "api_key")
	e.wantCode(static, "VALID")
	e.wantCode(kept.key, "VALID")

	// A restart seals Vault; any two shares unseal it, and everything
	// written before is there: tenant, keys (the revoked one stays dead),
	// the static key's current key.
	start := time.Now()
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := p.Client.Sys().HealthWithContext(ctx); err != nil || !h.Sealed {
		t.Fatalf("after a restart Vault should be sealed: %+v, %v", h, err)
	}
	unseal(init.Keys[2], init.Keys[0])
	t.Logf("restart and unseal: %s", time.Since(start).Round(time.Millisecond))
	if got := str(t, read(t, p.Client, mount+"/tenants/acme"), "display_name"); got != "Acme Corp" {
		t.Fatalf("tenant after restart: display_name %q", got)
	}
	if got := str(t, read(t, p.Client, mount+"/tenants/acme/static-creds/checkout"), "api_key"); got != static {
		t.Fatalf("static key changed across the restart")
	}
	stillValid := func(when string, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if got := e.code(k); got != "VALID" {
				t.Fatalf("%s: a key answers %s, want VALID", when, got)
			}
		}
		e.wantCode(revoked.key, "NOT_FOUND")
	}
	stillValid("after the restart", kept.key, static)

	// Upgrade: the new binary beside the old, registered, the mount tuned
	// to it and reloaded. A key issued by the new version must still verify
	// after the rollback.
	// The reloads are the guide's: the upgrade reloads every mount of the
	// plugin, the rollback this mount only.
	_, sum2 := install(v2)
	e.cli(nil, "secrets", "tune", "-plugin-version="+v2.Version, mount+"/")
	e.cli(nil, "plugin", "reload", "-type=secret", "-plugin="+testvault.PluginName)
	wantRunning(t, e, v2.Version, sum2)
	stillValid("after the upgrade", kept.key, static)
	onV2 := e.issue("acme", "web", nil)
	e.wantCode(onV2.key, "VALID")

	e.cli(nil, "secrets", "tune", "-plugin-version="+v1.Version, mount+"/")
	e.cli(nil, "write", "sys/plugins/reload/backend", "mounts="+mount+"/")
	wantRunning(t, e, v1.Version, sum1)
	stillValid("after the rollback", kept.key, static, onV2.key)
}

// wantRunning waits until the mount runs version (the plugin's own
// apikeys/info, and Vault's running_plugin_version and running_sha256 in
// sys/mounts): a reload restarts the plugin, and requests in between may
// fail.
func wantRunning(t *testing.T, e *engine, version, sum string) {
	t.Helper()
	testvault.WaitFor(t, 60*time.Second, "the mount to run "+version, func() error {
		info, err := e.c.Logical().Read(e.mount + "/info")
		if err != nil {
			return err
		}
		if got, _ := info.Data["version"].(string); got != version {
			return fmt.Errorf("apikeys/info reports %q", got)
		}
		m, err := e.c.Sys().GetMount(e.mount)
		if err != nil {
			return err
		}
		if m.RunningVersion != version || m.RunningSha256 != sum || m.PluginVersion != version {
			return fmt.Errorf("sys/mounts: plugin_version %q, running_plugin_version %q, running_sha256 %q",
				m.PluginVersion, m.RunningVersion, m.RunningSha256)
		}
		return nil
	})
	if commit := strings.TrimSpace(fmt.Sprint(mustInfo(t, e)["commit"])); commit == "" || commit == "unknown" {
		t.Fatalf("the release build reports commit %q", commit)
	}
}

func mustInfo(t *testing.T, e *engine) map[string]interface{} {
	t.Helper()
	return read(t, e.c, e.mount+"/info").Data
}

package acceptance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// TestTutorialReplays runs every command of docs/tutorial.md, top to
// bottom in one bash session, against a Vault dev server of its own (the
// tutorial installs the engine at apikeys/, enables userpass/ and writes
// the tier policies under their plain names, which must not meet the
// shared server's other tests), and checks every output the tutorial
// shows. The tutorial starts a real vault agent; the session's process
// group, agent included, is killed at the end whatever happens.
func TestTutorialReplays(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	v, err := testvault.Start(ctx, testvault.Options{
		Log: func(f string, a ...interface{}) { t.Logf("testvault: "+f, a...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Cleanup)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- tutorial server log (docsTail) ---\n%s", v.LogTail(40))
		}
	})
	t.Logf("tutorial server up in %s", time.Since(start).Round(time.Millisecond))

	work := t.TempDir()
	r := &docsReplay{
		Doc:      docsRead(t, "docs/tutorial.md"),
		Workdir:  repoRoot(t),
		VaultBin: v.VaultBin,
		Env:      []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token},
		Inputs: map[string]string{
			"VAULT_ADDR":     v.Addr,
			"VAULT_TOKEN":    v.Token,
			"PLUGIN_DIR":     v.PluginDir,
			"PLUGIN_VERSION": v.PluginVersion,
			"AUDIT_LOG":      filepath.Join(work, "audit.log"),
		},
	}
	results := r.replay(t)
	ran := 0
	for _, res := range results {
		if res.Ran {
			ran++
		}
	}
	t.Logf("replayed %d of %d blocks of docs/tutorial.md in %s", ran, len(results), time.Since(start).Round(time.Millisecond))

	// The tutorial runs in the repository's root: it must leave nothing
	// behind there.
	for _, f := range []string{"agent.hcl", "api-key.txt", "vault-token", "report.json"} {
		if _, err := os.Stat(filepath.Join(repoRoot(t), f)); err == nil {
			t.Errorf("the tutorial left %s in the repository", f)
		}
	}
	if ran == 0 {
		t.Fatal(fmt.Errorf("no block of docs/tutorial.md ran"))
	}
}

// Command leasecost measures what a Vault lease per key costs Vault: the
// server's resident memory per leased key and how long a restarted server
// takes to restore its leases, next to the same number of non-leased keys
// (roles with leased=false), which cost Vault nothing per key.
//
// It runs a one-node Vault with Raft storage (the production storage, so a
// restart restores from disk), issues -keys keys of each kind, and kills and
// restarts the node. Run it as
//
//	go run ./scripts/leasecost [-keys 100000] [-workers 16]
//
// A 1M-lease figure is estimated from the run linearly, which the memory
// per lease and the restore rate measured at two sizes support (run it with
// -keys 10000 and -keys 100000 to see the slope).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func main() {
	keys := flag.Int("keys", 100_000, "keys to issue of each kind (leased, then non-leased)")
	workers := flag.Int("workers", 16, "concurrent issuers")
	flag.Parse()
	logger := log.New(os.Stderr, "leasecost: ", log.Ltime)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *keys, *workers); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *log.Logger, n, workers int) error {
	c, err := testvault.StartCluster(ctx, testvault.ClusterOptions{Nodes: 1, Log: logger.Printf})
	if err != nil {
		return err
	}
	defer c.Cleanup()
	node := c.Nodes[0]
	cl := node.Client
	if err := c.Mount(ctx, "apikeys"); err != nil {
		return err
	}
	// In order: the tenant before its roles.
	for _, w := range []struct {
		path string
		data map[string]interface{}
	}{
		{"apikeys/tenants/load", map[string]interface{}{"max_ttl": "768h"}},
		{"apikeys/tenants/load/roles/lease", map[string]interface{}{"ttl": "720h", "max_ttl": "720h", "scopes": "read"}},
		{"apikeys/tenants/load/roles/plain", map[string]interface{}{"ttl": "720h", "max_ttl": "720h", "scopes": "read", "leased": false}},
	} {
		if _, err := cl.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			return fmt.Errorf("write %s: %w", w.path, err)
		}
	}

	base := rssMB(node.PID())
	leasedRate, err := issue(ctx, cl, "apikeys/tenants/load/creds/lease", n, workers)
	if err != nil {
		return err
	}
	afterLeased := rssMB(node.PID())
	plainRate, err := issue(ctx, cl, "apikeys/tenants/load/creds/plain", n, workers)
	if err != nil {
		return err
	}
	afterPlain := rssMB(node.PID())

	logger.Printf("killing and restarting the node to time the lease restore")
	seen := len(restoreRE.FindAllStringIndex(node.Log(), -1))
	node.Kill()
	start := time.Now()
	if err := c.Restart(ctx, node); err != nil {
		return err
	}
	unsealed := time.Since(start)
	restored, count, err := waitRestore(ctx, node, start, seen, n)
	if err != nil {
		return err
	}
	afterRestart := rssMB(node.PID())

	perLeaseKB := (afterLeased - base) * 1024 / float64(n)
	perPlainKB := (afterPlain - afterLeased) * 1024 / float64(n)
	fmt.Printf("machine:  %d CPUs, %s/%s, %s; Vault %s, one node, raft storage\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), vaultVersion(ctx, cl))
	fmt.Printf("command:  go run ./scripts/leasecost %s\n\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("keys per kind:            %d\n", n)
	fmt.Printf("issue rate, leased:       %.0f keys/s\n", leasedRate)
	fmt.Printf("issue rate, non-leased:   %.0f keys/s\n", plainRate)
	fmt.Printf("Vault RSS: start %.0f MB, +leased %.0f MB, +non-leased %.0f MB, after restart %.0f MB\n", base, afterLeased, afterPlain, afterRestart)
	fmt.Printf("Vault memory per leased key:      %.2f KB (non-leased: %.2f KB)\n", perLeaseKB, perPlainKB)
	fmt.Printf("restart: unsealed after %s, %d leases restored after %s (%.0f leases/s)\n",
		unsealed.Round(time.Millisecond), count, restored.Round(time.Millisecond), float64(count)/restored.Seconds())
	fmt.Printf("estimate for 1M leased keys: ~%.1f GB of Vault memory, ~%s to restore leases after a restart\n",
		perLeaseKB*1e6/1024/1024, (time.Duration(float64(restored) * 1e6 / float64(count))).Round(time.Second))
	return nil
}

// issue reads path n times with workers in parallel and returns keys/s.
func issue(ctx context.Context, cl *api.Client, path string, n, workers int) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				if _, err := cl.Logical().ReadWithContext(ctx, path); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, fmt.Errorf("issue from %s: %w", path, err)
	}
	return float64(n) / time.Since(start).Seconds(), ctx.Err()
}

var restoreRE = regexp.MustCompile(`expiration: lease restore complete`)

// waitRestore waits for Vault's "lease restore complete" log line (which
// comes once every lease is loaded) and returns the time since start; the
// count is the leases issued, since the line carries none.
func waitRestore(ctx context.Context, node *testvault.Node, start time.Time, seen, want int) (time.Duration, int, error) {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		// The log is appended to across restarts: wait for a new line.
		if len(restoreRE.FindAllStringIndex(node.Log(), -1)) > seen {
			return time.Since(start), want, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, 0, fmt.Errorf("no lease restore completed (want %d leases)", want)
}

func rssMB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func vaultVersion(ctx context.Context, cl *api.Client) string {
	h, err := cl.Sys().HealthWithContext(ctx)
	if err != nil {
		return "?"
	}
	return h.Version
}

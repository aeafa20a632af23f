// Package testvault starts real Vault servers (a dev server, or a Raft
// cluster, with this repository's plugin registered in their catalog; or
// one server set up for production and left for the caller to initialize)
// for integration tests, benchmarks and tools, builds releases with
// scripts/release.sh, and holds WaitFor, the one polling wait of the
// tests. It lives under scripts/, outside the shipped
// backend/ tree, and does not import "testing", so it can serve TestMain
// and command-line tools alike.
package testvault

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	// PluginName is the plugin's name in Vault's catalog.
	PluginName = "vault-plugin-secrets-apikeys"
	// DefaultPluginVersion is what the harness builds and registers.
	DefaultPluginVersion = "v0.1.0-test"

	modulePath = "github.com/vault-apikeys/vault-plugin-secrets-apikeys"
)

// Options tune Start. The zero value is what most tests want.
type Options struct {
	// PluginVersion is set in the binary with -ldflags and registered with
	// the same version. Default DefaultPluginVersion.
	PluginVersion string
	// ExtraArgs are appended to "vault server -dev ...".
	ExtraArgs []string
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...interface{})
}

// Server is a running Vault dev server with the plugin in its catalog.
// Stop, Kill, Running, PID, Log and LogTail are those of its process.
type Server struct {
	Addr          string
	Token         string
	Client        *api.Client
	VaultBin      string
	PluginDir     string
	PluginVersion string
	PluginSHA256  string
	Dir           string

	process
}

// RepoRoot finds the root of this module from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module "+modulePath+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// VaultBinary returns the pinned Vault server binary (or $VAULT_BIN), building
// it through scripts/vault.sh when this machine has not built it yet.
func VaultBinary(root string) (string, error) {
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "vault.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/vault.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// BuildPlugin compiles the plugin with the given version into dir.
func BuildPlugin(root, dir, version string) (string, error) {
	bin := filepath.Join(dir, PluginName)
	cmd := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X "+modulePath+"/backend.Version="+version,
		"./cmd/"+PluginName)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build plugin: %w: %s", err, out)
	}
	return bin, nil
}

// FileSHA256 is the hex SHA-256 of a file, as Vault's plugin catalog wants it.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Start builds the plugin, starts a Vault dev server on a free loopback port
// with a private plugin directory and registers the plugin by SHA-256 and
// version. Call Cleanup when done (Stop leaves the directory); the server
// also dies with the calling process, even when that process panics.
func Start(ctx context.Context, opts Options) (*Server, error) {
	a, err := prepare("apikeys-vault-", opts.PluginVersion, opts.Log)
	if err != nil {
		return nil, err
	}
	logf := a.logf
	s := &Server{
		VaultBin: a.vaultBin, Dir: a.dir, PluginDir: filepath.Dir(a.plugin),
		PluginVersion: a.version, PluginSHA256: a.sha256,
	}
	s.process = process{LogPath: filepath.Join(s.Dir, "vault.log"), name: "vault", bin: s.VaultBin, freshLog: true}
	// Another test binary may grab the same port between our probe and
	// Vault's bind: retry with a fresh port.
	if err := onFreshPorts(5, logf, func() error { return s.launch(ctx, opts.ExtraArgs) }, s.Stop); err != nil {
		s.Cleanup()
		return nil, err
	}
	logf("vault dev server at %s", s.Addr)
	if err := s.RegisterPlugin(ctx, a.plugin, a.version); err != nil {
		s.Cleanup()
		return nil, err
	}
	return s, nil
}

func (s *Server) launch(ctx context.Context, extra []string) error {
	port, err := FreePortPair()
	if err != nil {
		return err
	}
	s.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.Token = "root-" + randomHex(8)
	s.args = append([]string{"server", "-dev",
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(port),
		"-dev-root-token-id=" + s.Token,
		"-dev-plugin-dir=" + s.PluginDir,
		"-dev-no-store-token",
		"-log-level=info",
	}, extra...)
	s.env = []string{"VAULT_ADDR=" + s.Addr}
	if s.Client, err = newClient(s.Addr, s.Token, 0, ""); err != nil {
		return err
	}
	if err := s.start(); err != nil {
		return err
	}
	return s.waitUp(ctx, s.Client, 60*time.Second, func(h *api.HealthResponse) bool { return h.Initialized && !h.Sealed })
}

// RegisterPlugin adds a plugin binary of the plugin directory to the catalog
// by SHA-256 and version.
func (s *Server) RegisterPlugin(ctx context.Context, bin, version string) error {
	sum, err := FileSHA256(bin)
	if err != nil {
		return err
	}
	return registerPlugin(ctx, s.Client, filepath.Base(bin), sum, version)
}

// Mount enables the plugin at path (e.g. "apikeys-t1") at the registered
// version. A mount per test keeps tests apart on one shared server.
func (s *Server) Mount(ctx context.Context, path string) error {
	return mountPlugin(ctx, s.Client, path, s.PluginVersion)
}

// CLI runs the vault CLI against the server with the root token (or the
// token given in env as VAULT_TOKEN=...), returning stdout; stderr is in the
// error.
func (s *Server) CLI(ctx context.Context, env []string, args ...string) (string, error) {
	return runCLI(ctx, s.VaultBin, append([]string{"VAULT_ADDR=" + s.Addr, "VAULT_TOKEN=" + s.Token}, env...), args...)
}

// Cleanup stops the server and removes its directory.
func (s *Server) Cleanup() {
	s.Stop()
	if s.Dir != "" {
		os.RemoveAll(s.Dir)
	}
}

// FreePortPair finds a loopback port p such that p and p+1 (Vault's dev
// cluster port) are both free. It looks below the kernel's ephemeral range:
// a port from that range, freed when a test kills a node, can be taken by
// any outgoing connection (the load, the other nodes dialling the dead
// one) before the node restarts and binds it again. In one CI run the
// restarted node ran but its cluster port refused connections for 30 s, and
// the failover test timed out waiting for it to rejoin.
func FreePortPair() (int, error) {
	lo, hi := nonEphemeralPorts()
	for i := 0; i < 200; i++ {
		port := lo + mrand.IntN(hi-lo)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free loopback port pair found in [%d, %d)", lo, hi)
}

// nonEphemeralPorts is a range of ports the kernel does not hand out to
// outgoing connections: the 10 000 ports below Linux's ip_local_port_range,
// or 20000-30000 elsewhere (below the ranges BSD, macOS and Windows use).
func nonEphemeralPorts() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > 11024 {
				return low - 10000, low - 1
			}
		}
	}
	return 20000, 30000
}

// Raw sends a request with the server's token and returns status and body,
// for checks of exact HTTP behaviour the api client would hide.
func (s *Server) Raw(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.Addr+"/v1/"+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-Vault-Token", s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Package testvault starts a real Vault dev server with this repository's
// plugin registered in its catalog, for integration tests and benchmarks.
// It is imported only by tests and tools, never by the plugin binary, and it
// does not import "testing" so it can serve TestMain and cmd-line tools alike.
package testvault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	"syscall"
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
type Server struct {
	Addr          string
	Token         string
	Client        *api.Client
	VaultBin      string
	PluginDir     string
	PluginVersion string
	PluginSHA256  string
	Dir           string

	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
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
// version. Call Stop when done; the server also dies with the calling
// process, even when that process panics.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.PluginVersion == "" {
		opts.PluginVersion = DefaultPluginVersion
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...interface{}) {}
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	vaultBin, err := VaultBinary(root)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "apikeys-vault-")
	if err != nil {
		return nil, err
	}
	s := &Server{VaultBin: vaultBin, Dir: dir, PluginDir: filepath.Join(dir, "plugins"), PluginVersion: opts.PluginVersion}
	if err := os.Mkdir(s.PluginDir, 0o755); err != nil {
		return nil, err
	}
	logf("building plugin %s", opts.PluginVersion)
	bin, err := BuildPlugin(root, s.PluginDir, opts.PluginVersion)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if s.PluginSHA256, err = FileSHA256(bin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}

	// Another test binary may grab the same port between our probe and
	// Vault's bind: retry with a fresh port.
	for attempt := 0; ; attempt++ {
		err = s.launch(ctx, opts.ExtraArgs)
		if err == nil {
			break
		}
		s.Stop()
		if attempt == 4 || !errors.Is(err, errPortTaken) {
			os.RemoveAll(dir)
			return nil, err
		}
		logf("vault: %v; retrying", err)
	}
	logf("vault dev server at %s", s.Addr)
	if err := s.RegisterPlugin(ctx, bin, opts.PluginVersion); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

var errPortTaken = errors.New("port already in use")

func (s *Server) launch(ctx context.Context, extra []string) error {
	port, err := FreePortPair()
	if err != nil {
		return err
	}
	s.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.Token = "root-" + randomHex(8)
	s.logPath = filepath.Join(s.Dir, "vault.log")
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"server", "-dev",
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(port),
		"-dev-root-token-id=" + s.Token,
		"-dev-plugin-dir=" + s.PluginDir,
		"-dev-no-store-token",
		"-log-level=info",
	}, extra...)
	cmd := exec.Command(s.VaultBin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+s.Addr)
	// Own process group, so Stop also reaches the plugin processes; and
	// SIGKILL when the test process dies, so a panic leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start vault: %w", err)
	}
	logFile.Close()
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()

	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	client, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	client.SetToken(s.Token)
	s.Client = client

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.exited:
			log := s.LogTail(40)
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%w: %d", errPortTaken, port)
			}
			return fmt.Errorf("vault exited during start:\n%s", log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if h, err := client.Sys().HealthWithContext(ctx); err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault did not become ready in 60s:\n%s", s.LogTail(40))
		}
	}
}

// RegisterPlugin adds a plugin binary of the plugin directory to the catalog
// by SHA-256 and version.
func (s *Server) RegisterPlugin(ctx context.Context, bin, version string) error {
	sum, err := FileSHA256(bin)
	if err != nil {
		return err
	}
	err = s.Client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name:    PluginName,
		Type:    api.PluginTypeSecrets,
		Command: filepath.Base(bin),
		SHA256:  sum,
		Version: version,
	})
	if err != nil {
		return fmt.Errorf("register plugin %s: %w", version, err)
	}
	return nil
}

// Mount enables the plugin at path (e.g. "apikeys-t1") at the registered
// version. A mount per test keeps tests apart on one shared server.
func (s *Server) Mount(ctx context.Context, path string) error {
	err := s.Client.Sys().MountWithContext(ctx, path, &api.MountInput{
		Type:   PluginName,
		Config: api.MountConfigInput{PluginVersion: s.PluginVersion},
	})
	if err != nil {
		return fmt.Errorf("mount plugin at %s: %w", path, err)
	}
	return nil
}

// CLI runs the vault CLI against the server with the root token (or the
// token given in env as VAULT_TOKEN=...), returning stdout; stderr is in the
// error.
func (s *Server) CLI(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.VaultBin, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+s.Addr, "VAULT_TOKEN="+s.Token, "VAULT_FORMAT=", "NO_COLOR=1")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("vault %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop ends the server and its plugin processes and removes its files.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.exited
		}
		// Plugin processes left in the group once Vault is gone.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		s.cmd = nil
	}
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

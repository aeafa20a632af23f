package testvault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// What Start, StartCluster and StartProduction share: one Vault server
// process, the plugin build before it, the waits on it, the catalog and
// mount calls, and the CLI.

// process is one Vault server process: the dev server of Start, or one
// node of StartCluster. It runs in its own process group, so stopping it
// also ends the plugin processes Vault started, and it gets SIGKILL when
// the calling process dies, so a panic leaves no server behind.
type process struct {
	// LogPath is the server's log (stdout and stderr).
	LogPath string

	name string // "vault" or the node id, for errors
	bin  string
	args []string
	env  []string // added to the caller's environment
	// freshLog truncates the log at each start; otherwise a restart
	// appends to it, so one log tells the node's whole story.
	freshLog bool

	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *process) start() error {
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if p.freshLog {
		flags = os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	}
	logFile, err := os.OpenFile(p.LogPath, flags, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", p.LogPath, err)
	}
	defer logFile.Close()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	go func() { _ = cmd.Wait(); close(exited) }()
	return nil
}

// Running reports whether the server process is alive.
func (p *process) Running() bool {
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// PID is the server's process id, or 0 when it is not running.
func (p *process) PID() int {
	if !p.Running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop ends the server the way an operator does (SIGTERM: Vault seals and
// the plugin gets its Clean call), by force after 10 s, then kills the
// plugin processes left in its group. Its directory (log, data, plugins)
// stays, so the log can still be read and a cluster node restarted;
// Cleanup removes it.
func (p *process) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	p.cmd = nil
}

// Kill ends the server and its plugin processes with SIGKILL, as a crash
// of the machine would: no step-down, no seal, no flush.
func (p *process) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// Log returns the server's whole log.
func (p *process) Log() string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	return string(data)
}

// LogTail returns the last n lines of the server's log.
func (p *process) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ServerProcess is a `vault server -config=...` of the caller's making (on
// a storage backend the harness does not set up, say), run as Start and
// StartCluster run theirs: in its own process group, killed with the
// caller, logging to a file appended across restarts, with Stop, Kill,
// Running, PID, Log and LogTail.
type ServerProcess struct{ process }

// NewServerProcess prepares `vault server -config=configPath args...`,
// logging to logPath.
func NewServerProcess(vaultBin, configPath, logPath string, args ...string) *ServerProcess {
	return &ServerProcess{process{
		LogPath: logPath, name: "vault", bin: vaultBin,
		args: append([]string{"server", "-config=" + configPath}, args...),
	}}
}

// Start starts the server (again, after Stop or Kill) and waits until it
// answers sys/health through client, in any state.
func (p *ServerProcess) Start(ctx context.Context, client *api.Client, timeout time.Duration) error {
	if err := p.start(); err != nil {
		return err
	}
	return p.waitUp(ctx, client, timeout, nil)
}

var errPortTaken = errors.New("port already in use")

// waitUp polls sys/health until ready accepts the answer (nil: any
// answer). A server that exits first fails it at once, with errPortTaken
// when another process bound one of its ports between our probe and
// Vault's bind.
func (p *process) waitUp(ctx context.Context, client *api.Client, timeout time.Duration, ready func(*api.HealthResponse) bool) error {
	err := poll(ctx, timeout, every(100*time.Millisecond), func() (bool, error) {
		if !p.Running() {
			log := p.LogTail(40)
			for _, line := range strings.Split(log, "\n") {
				if strings.Contains(line, "address already in use") {
					return false, fmt.Errorf("%w: %s: %s", errPortTaken, p.name, line)
				}
			}
			return false, fmt.Errorf("%s exited during start:\n%s", p.name, log)
		}
		h, err := client.Sys().HealthWithContext(ctx)
		return err == nil && (ready == nil || ready(h)), nil
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%s not up within %s:\n%s", p.name, timeout, p.LogTail(40))
	}
	return err
}

// onFreshPorts runs launch until it succeeds or fails for something other
// than a taken port, at most attempts times; undo runs after each failure.
func onFreshPorts(attempts int, logf func(string, ...interface{}), launch func() error, undo func()) error {
	for attempt := 1; ; attempt++ {
		err := launch()
		if err == nil {
			return nil
		}
		undo()
		if attempt == attempts || !errors.Is(err, errPortTaken) {
			return err
		}
		logf("vault: %v; retrying on other ports", err)
	}
}

var errTimeout = errors.New("timed out")

// pace is how often poll tries: first after the first try, doubling up
// to most.
type pace struct{ first, most time.Duration }

func every(d time.Duration) pace { return pace{d, d} }

// poll calls try until it reports done, returns an error (which ends the
// wait: try decides what is worth another try), ctx ends, or timeout has
// passed (errTimeout). It is the one wait loop of the harness and of
// WaitFor.
func poll(ctx context.Context, timeout time.Duration, p pace, try func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	wait := p.first
	for {
		done, err := try()
		if err != nil || done {
			return err
		}
		if !time.Now().Before(deadline) {
			return errTimeout
		}
		t := time.NewTimer(min(wait, max(time.Until(deadline), 0)))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, p.most)
	}
}

// artifacts is what a server needs before it starts: the pinned Vault and
// a private directory with the plugin built into its plugins/.
type artifacts struct {
	vaultBin, dir, plugin, sha256 string
	version                       string
	logf                          func(string, ...interface{})
}

// prepare makes the artifacts; version "" is DefaultPluginVersion, and a
// nil log discards the progress lines.
func prepare(pattern, version string, log func(string, ...interface{})) (*artifacts, error) {
	if version == "" {
		version = DefaultPluginVersion
	}
	a, root, err := prepareVault(pattern, log)
	if err != nil {
		return nil, err
	}
	a.version = version
	logf, dir := a.logf, a.dir
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.Mkdir(pluginDir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf("building plugin %s", version)
	if a.plugin, err = BuildPlugin(root, pluginDir, version); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if a.sha256, err = FileSHA256(a.plugin); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("hash plugin: %w", err)
	}
	return a, nil
}

// prepareVault is the part of the artifacts every server needs, the
// plugin left out: the pinned Vault, a private directory (pattern as
// os.MkdirTemp takes it) and the log. It also returns the repository root.
func prepareVault(pattern string, log func(string, ...interface{})) (*artifacts, string, error) {
	logf := log
	if logf == nil {
		logf = func(string, ...interface{}) {}
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, "", err
	}
	vaultBin, err := VaultBinary(root)
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, "", fmt.Errorf("create server directory: %w", err)
	}
	return &artifacts{vaultBin: vaultBin, dir: dir, logf: logf}, root, nil
}

// newClient talks to one server only: no retries, so a test sees each
// answer (and each refusal) as it is. caCert, when given, is the PEM file
// of the CA the server's TLS certificate comes from.
func newClient(addr, token string, timeout time.Duration, caCert string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	if timeout > 0 {
		cfg.Timeout = timeout
	}
	if caCert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: caCert}); err != nil {
			return nil, fmt.Errorf("client for %s: %w", addr, err)
		}
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", addr, err)
	}
	client.SetToken(token)
	return client, nil
}

func registerPlugin(ctx context.Context, client *api.Client, command, sha256, version string) error {
	err := client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name:    PluginName,
		Type:    api.PluginTypeSecrets,
		Command: command,
		SHA256:  sha256,
		Version: version,
	})
	if err != nil {
		return fmt.Errorf("register plugin %s: %w", version, err)
	}
	return nil
}

func mountPlugin(ctx context.Context, client *api.Client, path, version string) error {
	err := client.Sys().MountWithContext(ctx, path, &api.MountInput{
		Type:   PluginName,
		Config: api.MountConfigInput{PluginVersion: version},
	})
	if err != nil {
		return fmt.Errorf("mount plugin at %s: %w", path, err)
	}
	return nil
}

// runCLI runs the vault CLI with env added to the caller's environment
// (later entries win), returning stdout; stderr is in the error.
func runCLI(ctx context.Context, vaultBin string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, vaultBin, args...)
	cmd.Env = append(os.Environ(), "VAULT_FORMAT=", "NO_COLOR=1")
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("vault %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

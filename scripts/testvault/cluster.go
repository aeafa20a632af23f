package testvault

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// ClusterOptions tune StartCluster. The zero value is a 3-node cluster.
type ClusterOptions struct {
	// Nodes is the number of Vault servers (default 3).
	Nodes int
	// PluginVersion is built into the plugin and registered (default
	// DefaultPluginVersion).
	PluginVersion string
	// RaftPerformanceMultiplier scales raft's heartbeat, election and leader
	// lease timeouts; Vault's default is 5 (a 5 s heartbeat timeout). On
	// loopback 1 is safe and keeps a failover test short. 0 keeps Vault's
	// default.
	RaftPerformanceMultiplier int
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...interface{})
}

// Cluster is a Vault cluster of real server processes on loopback, with
// Raft integrated storage, initialized with one unseal key, every node
// unsealed and the plugin registered in the catalog.
type Cluster struct {
	Dir           string
	VaultBin      string
	PluginVersion string
	PluginSHA256  string
	UnsealKey     string
	Token         string
	Nodes         []*Node

	logf func(string, ...interface{})
}

// Node is one Vault server of a Cluster. Stop, Kill, Running, PID, Log,
// LogTail and LogPath are those of its process.
type Node struct {
	// ID is the raft node_id ("node1", …).
	ID          string
	Addr        string
	APIPort     int
	ClusterPort int
	Dir         string
	ConfigPath  string
	// Client talks to this node only (no retries), with the root token.
	Client *api.Client

	process
}

// StartCluster builds the plugin, starts opts.Nodes Vault servers that find
// each other through retry_join, initializes the first, unseals all, waits
// until every node is a raft voter and registers the plugin. Call Cleanup
// when done; the servers also die with the calling process.
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	a, err := prepare("apikeys-ha-", opts.PluginVersion, opts.Log)
	if err != nil {
		return nil, err
	}
	logf := a.logf
	c := &Cluster{Dir: a.dir, VaultBin: a.vaultBin, PluginVersion: a.version, PluginSHA256: a.sha256, logf: logf}
	ok := false
	defer func() {
		if !ok {
			c.Cleanup()
		}
	}()

	// Another process may take a port between our probe and Vault's bind:
	// then the whole cluster starts again on fresh ports, because every
	// node's retry_join names the others' addresses.
	if err := onFreshPorts(3, logf, func() error { return c.launchAll(ctx, opts, a.plugin) }, c.stopAll); err != nil {
		return nil, err
	}
	if err := c.initialize(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

func (c *Cluster) launchAll(ctx context.Context, opts ClusterOptions, pluginBin string) error {
	c.Nodes = nil
	used := map[int]bool{}
	for i := 0; i < opts.Nodes; i++ {
		port, err := distinctPortPair(used)
		if err != nil {
			return err
		}
		n := &Node{
			ID:          fmt.Sprintf("node%d", i+1),
			APIPort:     port,
			ClusterPort: port + 1,
			Addr:        fmt.Sprintf("http://127.0.0.1:%d", port),
		}
		n.Dir = filepath.Join(c.Dir, n.ID)
		n.ConfigPath = filepath.Join(n.Dir, "vault.hcl")
		n.process = process{
			LogPath: filepath.Join(n.Dir, "vault.log"), name: n.ID, bin: c.VaultBin,
			args: []string{"server", "-config=" + n.ConfigPath},
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		// A retry starts from empty raft directories: a half-started
		// node may have written some.
		if err := os.RemoveAll(n.Dir); err != nil {
			return fmt.Errorf("clear %s: %w", n.Dir, err)
		}
		for _, d := range []string{filepath.Join(n.Dir, "raft"), filepath.Join(n.Dir, "plugins")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return fmt.Errorf("create %s: %w", d, err)
			}
		}
		// Each node runs the plugin from its own plugin_directory, as on
		// separate machines; the catalog entry (SHA-256) is shared through
		// raft, so every copy must be the same binary.
		if err := copyFile(pluginBin, filepath.Join(n.Dir, "plugins", PluginName), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(n.ConfigPath, []byte(c.nodeConfig(n, opts.RaftPerformanceMultiplier)), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", n.ConfigPath, err)
		}
		if err := n.start(); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := n.waitListening(ctx, 60*time.Second); err != nil {
			return err
		}
	}
	c.logf("started %d Vault servers in %s", len(c.Nodes), c.Dir)
	return nil
}

// distinctPortPair is FreePortPair that also avoids ports already handed
// out to other nodes (they are not bound yet, so the probe cannot see them).
func distinctPortPair(used map[int]bool) (int, error) {
	for i := 0; i < 20; i++ {
		p, err := FreePortPair()
		if err != nil {
			return 0, err
		}
		if !used[p] && !used[p+1] {
			used[p], used[p+1] = true, true
			return p, nil
		}
	}
	return 0, errors.New("no distinct free loopback port pair found")
}

func (c *Cluster) nodeConfig(n *Node, multiplier int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ui = false\ndisable_mlock = true\nlog_level = \"info\"\n")
	fmt.Fprintf(&b, "api_addr = %q\ncluster_addr = %q\n", n.Addr, fmt.Sprintf("https://127.0.0.1:%d", n.ClusterPort))
	fmt.Fprintf(&b, "plugin_directory = %q\n\n", filepath.Join(n.Dir, "plugins"))
	fmt.Fprintf(&b, "listener \"tcp\" {\n  address = %q\n  cluster_address = %q\n  tls_disable = true\n}\n\n",
		fmt.Sprintf("127.0.0.1:%d", n.APIPort), fmt.Sprintf("127.0.0.1:%d", n.ClusterPort))
	fmt.Fprintf(&b, "storage \"raft\" {\n  path = %q\n  node_id = %q\n", filepath.Join(n.Dir, "raft"), n.ID)
	if multiplier > 0 {
		fmt.Fprintf(&b, "  performance_multiplier = %d\n", multiplier)
	}
	// Autopilot adds a joining node as a non-voter and promotes it once it
	// has been healthy for server_stabilization_time, checked every
	// reconcile interval (10 s by default); shorter intervals get the
	// cluster to three voters in seconds.
	b.WriteString("  autopilot_update_interval = \"500ms\"\n  autopilot_reconcile_interval = \"1s\"\n")
	for _, o := range c.Nodes {
		if o != n {
			fmt.Fprintf(&b, "  retry_join {\n    leader_api_addr = %q\n  }\n", o.Addr)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// start starts the node's server with a fresh client (keeping the token).
func (n *Node) start() error {
	client, err := newClient(n.Addr, "", 30*time.Second, "")
	if err != nil {
		return err
	}
	if n.Client != nil {
		client.SetToken(n.Client.Token())
	}
	n.Client = client
	return n.process.start()
}

// waitListening waits until the node answers sys/health in any state.
func (n *Node) waitListening(ctx context.Context, timeout time.Duration) error {
	return n.waitUp(ctx, n.Client, timeout, nil)
}

func (c *Cluster) initialize(ctx context.Context) error {
	first := c.Nodes[0]
	init, err := first.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("init %s: %w", first.ID, err)
	}
	c.UnsealKey, c.Token = init.Keys[0], init.RootToken
	for _, n := range c.Nodes {
		n.Client.SetToken(c.Token)
	}
	if err := c.unseal(ctx, first); err != nil {
		return err
	}
	if _, err := c.WaitActive(ctx, 60*time.Second); err != nil {
		return err
	}
	// Promote joiners quickly (see nodeConfig); stored in raft, so it holds
	// for the whole cluster and after a failover.
	if _, err := first.Client.Logical().WriteWithContext(ctx, "sys/storage/raft/autopilot/configuration",
		map[string]interface{}{"server_stabilization_time": "2s"}); err != nil {
		return fmt.Errorf("autopilot configuration: %w", err)
	}
	for _, n := range c.Nodes[1:] {
		if err := c.unseal(ctx, n); err != nil {
			return err
		}
	}
	if err := c.WaitVoters(ctx, len(c.Nodes), 60*time.Second); err != nil {
		return err
	}
	c.logf("cluster of %d voters up; registering the plugin", len(c.Nodes))
	active, err := c.Active(ctx)
	if err != nil {
		return err
	}
	// One registration is enough: the catalog lives in the barrier
	// (core/plugin-catalog/), which raft replicates to every node.
	return registerPlugin(ctx, active.Client, PluginName, c.PluginSHA256, c.PluginVersion)
}

// unseal gives a node the unseal key until it reports unsealed. A node that
// joins through retry_join refuses the key ("not initialized") until it has
// fetched the leader's join challenge, so refusals are retried.
func (c *Cluster) unseal(ctx context.Context, n *Node) error {
	var lastErr error
	accepted := false
	err := poll(ctx, 90*time.Second, every(300*time.Millisecond), func() (bool, error) {
		if !n.Running() {
			return false, fmt.Errorf("%s exited while unsealing:\n%s", n.ID, n.LogTail(40))
		}
		var st *api.SealStatusResponse
		var err error
		if accepted {
			// A joiner unseals in the background once raft has streamed
			// it the keyring; giving the key again would only restart that.
			st, err = n.Client.Sys().SealStatusWithContext(ctx)
		} else {
			st, err = n.Client.Sys().UnsealWithContext(ctx, c.UnsealKey)
			accepted = err == nil
		}
		lastErr = err
		return err == nil && !st.Sealed, nil
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%s not unsealed in 90s (last error: %v):\n%s", n.ID, lastErr, n.LogTail(40))
	}
	return err
}

// Health is the node's sys/health answer, or an error when it does not
// answer.
func (n *Node) Health(ctx context.Context) (*api.HealthResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return n.Client.Sys().HealthWithContext(ctx)
}

// Active returns the node that is active now, or an error when none is.
func (c *Cluster) Active(ctx context.Context) (*Node, error) {
	if n := c.activeExcept(ctx, nil); n != nil {
		return n, nil
	}
	return nil, errors.New("no active node")
}

// WaitActive polls until a running node other than those in exclude is
// active, and returns it.
func (c *Cluster) WaitActive(ctx context.Context, timeout time.Duration, exclude ...*Node) (*Node, error) {
	var active *Node
	err := poll(ctx, timeout, every(50*time.Millisecond), func() (bool, error) {
		active = c.activeExcept(ctx, exclude)
		return active != nil, nil
	})
	if errors.Is(err, errTimeout) {
		return nil, fmt.Errorf("no active node within %s", timeout)
	}
	return active, err
}

func (c *Cluster) activeExcept(ctx context.Context, exclude []*Node) *Node {
	for _, n := range c.Nodes {
		if !n.Running() || contains(exclude, n) {
			continue
		}
		h, err := n.Health(ctx)
		if err == nil && h.Initialized && !h.Sealed && !h.Standby {
			return n
		}
	}
	return nil
}

// WaitStandby polls until the node is an unsealed standby that knows the
// active node's address, i.e. can forward requests.
func (c *Cluster) WaitStandby(ctx context.Context, n *Node, timeout time.Duration) error {
	err := poll(ctx, timeout, every(100*time.Millisecond), func() (bool, error) {
		h, err := n.Health(ctx)
		if err != nil || h.Sealed || !h.Standby {
			return false, nil
		}
		l, err := n.Client.Sys().LeaderWithContext(ctx)
		return err == nil && l.LeaderAddress != "" && l.LeaderAddress != n.Addr, nil
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%s is not a standby with a known leader within %s", n.ID, timeout)
	}
	return err
}

// RaftServer is one entry of sys/storage/raft/configuration.
type RaftServer struct {
	NodeID  string
	Address string
	Leader  bool
	Voter   bool
}

// RaftServers reads the raft configuration through the active node.
func (c *Cluster) RaftServers(ctx context.Context) ([]RaftServer, error) {
	active, err := c.Active(ctx)
	if err != nil {
		return nil, err
	}
	s, err := active.Client.Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
	if err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	if s == nil {
		return nil, errors.New("read raft configuration: empty answer")
	}
	cfg, _ := s.Data["config"].(map[string]interface{})
	list, _ := cfg["servers"].([]interface{})
	var out []RaftServer
	for _, raw := range list {
		m, _ := raw.(map[string]interface{})
		srv := RaftServer{}
		srv.NodeID, _ = m["node_id"].(string)
		srv.Address, _ = m["address"].(string)
		srv.Leader, _ = m["leader"].(bool)
		srv.Voter, _ = m["voter"].(bool)
		out = append(out, srv)
	}
	return out, nil
}

// WaitVoters polls until the raft configuration holds want voters.
func (c *Cluster) WaitVoters(ctx context.Context, want int, timeout time.Duration) error {
	var last []RaftServer
	err := poll(ctx, timeout, every(200*time.Millisecond), func() (bool, error) {
		servers, err := c.RaftServers(ctx)
		if err != nil {
			return false, nil
		}
		last = servers
		voters := 0
		for _, s := range servers {
			if s.Voter {
				voters++
			}
		}
		return voters >= want, nil
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("raft has not %d voters within %s: %+v", want, timeout, last)
	}
	return err
}

// Mount enables the plugin at path through the active node.
func (c *Cluster) Mount(ctx context.Context, path string) error {
	active, err := c.Active(ctx)
	if err != nil {
		return err
	}
	return mountPlugin(ctx, active.Client, path, c.PluginVersion)
}

// Restart starts a stopped node again on the same ports and data, and
// unseals it; it rejoins raft from its own data directory.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if n.Running() {
		return fmt.Errorf("%s is still running", n.ID)
	}
	if err := n.start(); err != nil {
		return err
	}
	if err := n.waitListening(ctx, 60*time.Second); err != nil {
		return err
	}
	return c.unseal(ctx, n)
}

func (c *Cluster) stopAll() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// Cleanup stops every node and removes the cluster's directory.
func (c *Cluster) Cleanup() {
	c.stopAll()
	if c.Dir != "" {
		os.RemoveAll(c.Dir)
	}
}

func contains(nodes []*Node, n *Node) bool {
	for _, o := range nodes {
		if o == n {
			return true
		}
	}
	return false
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}

package testvault

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// ProductionOptions tune StartProduction.
type ProductionOptions struct {
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...interface{})
}

// Production is one Vault server set up the way docs/operations.md
// installs one: a config file with a TLS listener (a certificate from a CA
// made for it), Raft storage, plugin_directory, api_addr and cluster_addr.
// Unlike Start and StartCluster it is left uninitialized and sealed, with
// an empty plugin directory: installing the plugin, `vault operator init`
// and unseal are the caller's, as they are the operator's. Stop, Kill,
// Running, PID, Log and LogTail are those of its process.
type Production struct {
	Dir        string
	VaultBin   string
	Addr       string // https://127.0.0.1:<port>
	ConfigPath string
	PluginDir  string
	RaftDir    string
	// CACert is the PEM file of the CA that signed the listener's
	// certificate: VAULT_CACERT for the CLI.
	CACert string
	// Client trusts CACert; it has no token until the caller sets one.
	Client *api.Client

	process
}

// StartProduction writes the certificates and the config and starts the
// server, returning once it answers sys/health (uninitialized). Call
// Cleanup when done; the server also dies with the calling process.
func StartProduction(ctx context.Context, opts ProductionOptions) (*Production, error) {
	a, _, err := prepareVault("apikeys-prod-", opts.Log)
	if err != nil {
		return nil, err
	}
	logf, dir, vaultBin := a.logf, a.dir, a.vaultBin
	p := &Production{
		Dir: dir, VaultBin: vaultBin,
		ConfigPath: filepath.Join(dir, "vault.hcl"),
		PluginDir:  filepath.Join(dir, "plugins"),
		RaftDir:    filepath.Join(dir, "raft"),
		CACert:     filepath.Join(dir, "tls", "ca.pem"),
	}
	p.process = process{
		LogPath: filepath.Join(dir, "vault.log"), name: "vault", bin: vaultBin,
		args: []string{"server", "-config=" + p.ConfigPath},
	}
	ok := false
	defer func() {
		if !ok {
			p.Cleanup()
		}
	}()
	for _, d := range []string{p.PluginDir, p.RaftDir, filepath.Dir(p.CACert)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	cert, key, err := writeTLS(filepath.Dir(p.CACert))
	if err != nil {
		return nil, err
	}
	launch := func() error {
		// A server that failed to bind may have created its database.
		if err := os.RemoveAll(p.RaftDir); err != nil {
			return err
		}
		if err := os.Mkdir(p.RaftDir, 0o700); err != nil {
			return err
		}
		port, err := FreePortPair()
		if err != nil {
			return err
		}
		p.Addr = fmt.Sprintf("https://127.0.0.1:%d", port)
		cfg := productionConfig(p, port, cert, key)
		if err := os.WriteFile(p.ConfigPath, []byte(cfg), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", p.ConfigPath, err)
		}
		if p.Client, err = newClient(p.Addr, "", 30*time.Second, p.CACert); err != nil {
			return err
		}
		if err := p.start(); err != nil {
			return err
		}
		return p.waitUp(ctx, p.Client, 60*time.Second, nil)
	}
	if err := onFreshPorts(3, logf, launch, p.Stop); err != nil {
		return nil, err
	}
	logf("vault server (TLS, raft, uninitialized) at %s, config %s", p.Addr, p.ConfigPath)
	ok = true
	return p, nil
}

// productionConfig is the config docs/operations.md shows, on loopback
// (TestDocsOperationsRunbooksRun compares their settings).
func productionConfig(p *Production, port int, cert, key string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ui            = false\n")
	// Raft storage maps its database into memory, which mlock interacts
	// badly with; Vault's docs recommend disable_mlock with raft.
	fmt.Fprintf(&b, "disable_mlock = true\n")
	fmt.Fprintf(&b, "api_addr      = %q\n", p.Addr)
	fmt.Fprintf(&b, "cluster_addr  = %q\n", fmt.Sprintf("https://127.0.0.1:%d", port+1))
	fmt.Fprintf(&b, "plugin_directory = %q\n\n", p.PluginDir)
	fmt.Fprintf(&b, "listener \"tcp\" {\n")
	fmt.Fprintf(&b, "  address         = %q\n", fmt.Sprintf("127.0.0.1:%d", port))
	fmt.Fprintf(&b, "  cluster_address = %q\n", fmt.Sprintf("127.0.0.1:%d", port+1))
	fmt.Fprintf(&b, "  tls_cert_file   = %q\n", cert)
	fmt.Fprintf(&b, "  tls_key_file    = %q\n", key)
	fmt.Fprintf(&b, "  tls_min_version = \"tls12\"\n}\n\n")
	fmt.Fprintf(&b, "storage \"raft\" {\n")
	fmt.Fprintf(&b, "  path    = %q\n", p.RaftDir)
	fmt.Fprintf(&b, "  node_id = \"vault1\"\n")
	// Vault's recommendation for production servers (5, the default, is
	// for minimal machines); it also keeps leader election after a
	// restart to about a second.
	fmt.Fprintf(&b, "  performance_multiplier = 1\n}\n")
	return b.String()
}

// Restart stops the server as an operator does (SIGTERM) and starts it
// again on the same config and data; it comes back sealed, and returns
// once it answers sys/health.
func (p *Production) Restart(ctx context.Context) error {
	p.Stop()
	if err := p.start(); err != nil {
		return err
	}
	return p.waitUp(ctx, p.Client, 60*time.Second, nil)
}

// WaitActive polls until the server is initialized, unsealed and active.
func (p *Production) WaitActive(ctx context.Context, timeout time.Duration) error {
	return p.waitUp(ctx, p.Client, timeout, func(h *api.HealthResponse) bool {
		return h.Initialized && !h.Sealed && !h.Standby
	})
}

// CLI runs the vault CLI against the server as an operator's shell does:
// VAULT_ADDR, VAULT_CACERT and the client's token (if any) as VAULT_TOKEN,
// plus env. It returns stdout; stderr is in the error.
func (p *Production) CLI(ctx context.Context, env []string, args ...string) (string, error) {
	base := []string{"VAULT_ADDR=" + p.Addr, "VAULT_CACERT=" + p.CACert}
	if tok := p.Client.Token(); tok != "" {
		base = append(base, "VAULT_TOKEN="+tok)
	}
	return runCLI(ctx, p.VaultBin, append(base, env...), args...)
}

// Cleanup stops the server and removes its directory.
func (p *Production) Cleanup() {
	p.Stop()
	if p.Dir != "" {
		os.RemoveAll(p.Dir)
	}
}

// writeTLS makes a CA (ca.pem) and a server certificate it signs for
// 127.0.0.1 and localhost (vault.pem, vault-key.pem) in dir, and returns
// the paths of the certificate and key.
func writeTLS(dir string) (cert, key string, err error) {
	now := time.Now()
	ca, caKey, caDER, err := signed(&x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "apikeys test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, nil, nil)
	if err != nil {
		return "", "", fmt.Errorf("create CA certificate: %w", err)
	}
	_, srvKey, srvDER, err := signed(&x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "vault1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}, ca, caKey)
	if err != nil {
		return "", "", fmt.Errorf("create server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return "", "", err
	}
	cert, key = filepath.Join(dir, "vault.pem"), filepath.Join(dir, "vault-key.pem")
	for _, f := range []struct {
		path, kind string
		der        []byte
		mode       os.FileMode
	}{
		{filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER, 0o644},
		{cert, "CERTIFICATE", srvDER, 0o644},
		{key, "PRIVATE KEY", keyDER, 0o600},
	} {
		data := pem.EncodeToMemory(&pem.Block{Type: f.kind, Bytes: f.der})
		if err := os.WriteFile(f.path, data, f.mode); err != nil {
			return "", "", fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return cert, key, nil
}

// signed makes a P-256 key and a certificate of tmpl for it, signed by
// parent's key (nil: self-signed).
func signed(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, der, err
}

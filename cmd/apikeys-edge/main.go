// apikeys-edge verifies API keys next to a gateway from an in-memory copy of
// one apikeys mount, synced from Vault. See docs/edge.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge/extauthz"
)

// version and commit are stamped by scripts/release.sh (-ldflags -X);
// a plain go build reports itself as unstamped.
var (
	version = "(devel)"
	commit  = "unknown"
)

func main() {
	log := hclog.New(&hclog.LoggerOptions{Name: "apikeys-edge", Level: hclog.LevelFromString(env("EDGE_LOG_LEVEL", "info"))})
	if err := run(log, os.Args[1:]); err != nil {
		log.Error("apikeys-edge stopped", "error", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// readSecretID returns the AppRole secret_id from file, or from
// EDGE_SECRET_ID when no file is named, without surrounding whitespace, as
// Vault Agent reads its AppRole files: a file written by echo or a sink, or
// a variable filled from one, ends with a newline. Vault's AppRole login
// (1.21) trims it as well; the edge does not count on that, and names an
// empty file here instead of failing the login with "missing secret_id".
func readSecretID(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("EDGE_SECRET_ID")), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read secret_id file: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("secret_id file %s is empty", file)
	}
	return id, nil
}

// stopGRPC stops g gracefully, cutting the calls still running after
// grace: a stuck call must not keep the edge from exiting.
func stopGRPC(g *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		g.Stop()
		<-done
	}
}

// serveGRPC serves Envoy's ext_authz Check on addr until the returned
// server is stopped; a failure to serve goes to errc.
func serveGRPC(log hclog.Logger, addr string, e *edge.Edge, keyHeader string, errc chan<- error) (*grpc.Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("grpc listen: %w", err)
	}
	g := grpc.NewServer()
	extauthz.New(e, extauthz.Options{KeyHeader: keyHeader}).Register(g)
	go func() {
		log.Info("serving ext_authz gRPC", "listen", addr)
		if err := g.Serve(l); err != nil {
			errc <- fmt.Errorf("grpc serve: %w", err)
		}
	}()
	return g, nil
}

func run(log hclog.Logger, args []string) error {
	fs := flag.NewFlagSet("apikeys-edge", flag.ContinueOnError)
	// VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT… are read by the Vault client
	// itself (api.DefaultConfig); the flags override them.
	addr := fs.String("vault-addr", "", "Vault address (default: VAULT_ADDR)")
	mount := fs.String("mount", env("EDGE_MOUNT", "apikeys"), "apikeys mount path (EDGE_MOUNT)")
	roleID := fs.String("role-id", env("EDGE_ROLE_ID", ""), "AppRole role_id (EDGE_ROLE_ID); without it VAULT_TOKEN is used")
	secretIDFile := fs.String("secret-id-file", env("EDGE_SECRET_ID_FILE", ""), "file holding the AppRole secret_id (EDGE_SECRET_ID_FILE; or EDGE_SECRET_ID)")
	approleMount := fs.String("approle-mount", env("EDGE_APPROLE_MOUNT", "approle"), "AppRole auth mount (EDGE_APPROLE_MOUNT)")
	listen := fs.String("listen", env("EDGE_LISTEN", "127.0.0.1:8089"), "listen address of /check, /healthz, /metrics (EDGE_LISTEN)")
	staleness := fs.Duration("staleness", envDuration("EDGE_STALENESS", 30*time.Second), "serve from memory this long without a sync, then fail closed (EDGE_STALENESS)")
	pollWait := fs.Duration("poll-wait", envDuration("EDGE_POLL_WAIT", 10*time.Second), "long-poll wait of the change feed (EDGE_POLL_WAIT)")
	usageInterval := fs.Duration("usage-interval", envDuration("EDGE_USAGE_INTERVAL", 10*time.Second), "how often use is reported to Vault, quota use included: it bounds how far edges can overshoot a quota together (EDGE_USAGE_INTERVAL)")
	negTTL := fs.Duration("negative-ttl", envDuration("EDGE_NEGATIVE_TTL", 30*time.Second), "how long a NOT_FOUND from Vault is cached (EDGE_NEGATIVE_TTL)")
	keyHeader := fs.String("key-header", env("EDGE_KEY_HEADER", ""), "header holding the key, read before Authorization: Bearer (EDGE_KEY_HEADER), e.g. X-Api-Key")
	grpcListen := fs.String("grpc-listen", env("EDGE_GRPC_LISTEN", ""), "listen address of Envoy's ext_authz gRPC Check (EDGE_GRPC_LISTEN); off when empty")
	trustFwd := fs.Bool("trust-forwarded", os.Getenv("EDGE_TRUST_FORWARDED") == "true", "take the client IP from X-Real-IP / X-Forwarded-For (EDGE_TRUST_FORWARDED=true); only behind a gateway")
	showVersion := fs.Bool("version", false, "print the version, commit and Go version, and exit")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	if *showVersion {
		fmt.Printf("apikeys-edge %s (commit %s, %s)\n", version, commit, runtime.Version())
		return nil
	}

	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return fmt.Errorf("vault client config: %w", cfg.Error)
	}
	if *addr != "" {
		cfg.Address = *addr
	}
	// Long polls last PollWait; leave room for Vault's answer.
	cfg.Timeout = *pollWait + 30*time.Second
	client, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("vault client: %w", err)
	}
	secretID, err := readSecretID(*secretIDFile)
	if err != nil {
		return err
	}
	e, err := edge.New(edge.Config{
		Client: client, Mount: *mount, AppRoleMount: *approleMount, RoleID: strings.TrimSpace(*roleID), SecretID: secretID,
		Staleness: *staleness, PollWait: *pollWait, NegativeTTL: *negTTL, UsageInterval: *usageInterval, Logger: log,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{
		Addr:              *listen,
		Handler:           e.Handler(edge.HTTPOptions{KeyHeader: *keyHeader, TrustForwarded: *trustFwd}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	errc := make(chan error, 3)
	go func() { errc <- e.Run(ctx) }()
	if *grpcListen != "" {
		g, err := serveGRPC(log, *grpcListen, e, *keyHeader, errc)
		if err != nil {
			return err
		}
		// Calls in flight get the HTTP server's shutdown time, then are cut.
		defer stopGRPC(g, 5*time.Second)
	}
	go func() {
		log.Info("serving", "listen", *listen, "mount", *mount, "staleness", *staleness)
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("listen: %w", err)
		}
	}()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			stop()
			return err
		}
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

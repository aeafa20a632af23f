// apikeys-portal is the tenants' self-service portal: sign-in through
// Vault, and keys, roles and more over one apikeys mount, every call made
// with the signed-in user's own Vault token. See docs/portal.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/portal"
)

func main() {
	log := hclog.New(&hclog.LoggerOptions{Name: "apikeys-portal", Level: hclog.LevelFromString(os.Getenv("PORTAL_LOG_LEVEL"))})
	if err := run(log, os.Args[1:]); err != nil {
		log.Error("apikeys-portal stopped", "error", err)
		os.Exit(1)
	}
}

func run(log hclog.Logger, args []string) error {
	fs := flag.NewFlagSet("apikeys-portal", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8300", "listen address")
	// VAULT_ADDR, VAULT_CACERT, VAULT_CLIENT_CERT, VAULT_SKIP_VERIFY… are
	// read by api.DefaultConfig; VAULT_TOKEN is ignored: the portal has no
	// token of its own.
	addr := fs.String("vault-addr", "", "Vault address (default: VAULT_ADDR)")
	mount := fs.String("mount", "apikeys", "apikeys mount path")
	publicURL := fs.String("public-url", "", "the portal's URL as browsers reach it (default http://<listen>); https makes cookies Secure")
	userpass := fs.String("userpass-mount", "userpass", "userpass auth mount path")
	oidcMount := fs.String("oidc-mount", "oidc", "OIDC auth mount path")
	oidcRole := fs.String("oidc-role", "portal", "OIDC auth role; empty: no OIDC sign-in")
	pageSize := fs.Int("page-size", 50, "keys per page of the keys list")
	maxSession := fs.Duration("max-session", 12*time.Hour, "longest session, also for tokens without a TTL")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return fmt.Errorf("vault client config: %w", cfg.Error)
	}
	if *addr != "" {
		cfg.Address = *addr
	}
	cfg.Timeout = 30 * time.Second
	client, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("vault client: %w", err)
	}
	client.ClearToken()
	if *publicURL == "" {
		*publicURL = "http://" + *listen
	}
	p, err := portal.New(portal.Config{
		Vault: client, Mount: *mount, PublicURL: *publicURL, UserpassMount: *userpass,
		OIDCMount: *oidcMount, OIDCRole: *oidcRole, Logger: log, PageSize: *pageSize, MaxSession: *maxSession,
	})
	if err != nil {
		return err
	}
	defer p.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := portal.NewHTTPServer(*listen, p.Handler())
	errc := make(chan error, 1)
	go func() {
		log.Info("serving", "listen", *listen, "public_url", *publicURL, "vault", cfg.Address, "mount", *mount)
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("listen: %w", err)
		}
	}()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// Command apikeys-devidp is the stand-in OpenID Connect identity provider of
// make dev (package idp): Vault's oidc auth method signs people in through
// it, one click per demo identity. For development on one machine only: it
// has no passwords, so it refuses to listen anywhere but loopback.
//
//	apikeys-devidp -listen 127.0.0.1:8202 -issuer http://127.0.0.1:8202 \
//	  -client-id vault-apikeys -client-secret-file secret \
//	  -redirect-uri http://127.0.0.1:8300/auth/oidc/callback \
//	  -redirect-uri http://localhost:8250/oidc/callback
//
// The client secret comes from -client-secret-file or DEVIDP_CLIENT_SECRET,
// never from the command line, which other users of the machine can read.
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/devidp/idp"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "apikeys-devidp:", err)
		os.Exit(1)
	}
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run(args []string) error {
	fs := flag.NewFlagSet("apikeys-devidp", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8202", "loopback address to listen on")
	issuer := fs.String("issuer", "", "issuer URL as Vault reaches it (default http://<listen>)")
	clientID := fs.String("client-id", "vault-apikeys", "the registered client's id")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret (else DEVIDP_CLIENT_SECRET)")
	identities := fs.String("identities", "", "JSON file: [{sub, name, email, tenant, apikeys_tier}] (default: the demo set of acme and globex)")
	alg := fs.String("alg", "RS256", "ID token signature: RS256 or ES256")
	keyFile := fs.String("signing-key", "", "PEM private key (PKCS#8, PKCS#1 or EC) to sign with (default: a new key per start)")
	var redirects listFlag
	fs.Var(&redirects, "redirect-uri", "allowed redirect URI (repeat)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", *listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-listen %q: a sign-in without password must stay on loopback", *listen)
	}
	if *issuer == "" {
		*issuer = "http://" + *listen
	}

	secret := os.Getenv("DEVIDP_CLIENT_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("-client-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	if secret == "" {
		return errors.New("no client secret: give -client-secret-file or DEVIDP_CLIENT_SECRET")
	}

	ids := idp.DemoIdentities()
	if *identities != "" {
		b, err := os.ReadFile(*identities)
		if err != nil {
			return fmt.Errorf("-identities: %w", err)
		}
		ids = nil
		if err := json.Unmarshal(b, &ids); err != nil {
			return fmt.Errorf("-identities %s: %w", *identities, err)
		}
	}

	var key crypto.Signer
	if *keyFile != "" {
		if key, err = readKey(*keyFile); err != nil {
			return fmt.Errorf("-signing-key: %w", err)
		}
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	p, err := idp.New(idp.Config{
		Issuer:     *issuer,
		Client:     idp.Client{ID: *clientID, Secret: secret, RedirectURIs: redirects},
		Identities: ids,
		Alg:        jose.SignatureAlgorithm(*alg),
		Key:        key,
		Logger:     log,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           p.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	log.Info("listening", "addr", ln.Addr().String(), "issuer", p.Issuer(), "client_id", *clientID,
		"redirect_uris", redirects.String(), "identities", len(ids))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func readKey(path string) (crypto.Signer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, PKCS#1 or EC private key")
}

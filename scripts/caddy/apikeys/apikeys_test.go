package apikeys

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`apikeys {
		vault_addr https://vault.internal:8200
		mount apikeys-prod
		token_file /run/secrets/edge-token
		tls_ca_cert /etc/ssl/vault-ca.pem
		staleness 45s
		poll_wait 5s
		key_header X-Api-Key
		scopes read write,billing
		scopes_header X-Required-Scopes
		tenant acme
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.VaultAddr != "https://vault.internal:8200" || h.Mount != "apikeys-prod" || h.TokenFile != "/run/secrets/edge-token" ||
		h.CACert != "/etc/ssl/vault-ca.pem" || time.Duration(h.Staleness) != 45*time.Second || time.Duration(h.PollWait) != 5*time.Second ||
		h.KeyHeader != "X-Api-Key" || !slices.Equal(h.Scopes, []string{"read", "write", "billing"}) ||
		h.ScopesHeader != "X-Required-Scopes" || h.Tenant != "acme" {
		t.Fatalf("parsed %+v", h)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"apikeys {\n mount\n}", "wrong argument count"},
		{"apikeys {\n mount a b\n}", "wrong argument count"},
		{"apikeys {\n staleness soon\n}", "staleness"},
		{"apikeys {\n scopes\n}", "wrong argument count"},
		{"apikeys {\n tokn x\n}", `unknown apikeys option "tokn"`},
		{"apikeys extra", "wrong argument count"},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.in, err, c.want)
		}
	}
}

// A verifier that cannot start (poll wait not below the staleness bound)
// is a provisioning error, named.
func TestStartVerifierChecksTheBounds(t *testing.T) {
	_, err := startVerifier(Sync{VaultAddr: "http://127.0.0.1:1", Token: "t", Staleness: caddy.Duration(time.Second), PollWait: caddy.Duration(2 * time.Second)}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "staleness") {
		t.Fatalf("got %v", err)
	}
}

// Package apikeys is a Caddy HTTP handler (http.handlers.apikeys,
// Caddyfile directive apikeys) that checks API keys in Caddy's own process
// with the edge verifier of backend/edge: synced from Vault like
// apikeys-edge, deciding by the same contract, refusing with the same
// statuses, codes and body, and handing the upstream the same X-Apikeys-*
// headers, without a second HTTP hop per request. See docs/edge.md.
package apikeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("apikeys", parseCaddyfile)
	// An authentication handler: before forward_auth, like basic_auth.
	httpcaddyfile.RegisterDirectiveOrder("apikeys", httpcaddyfile.After, "basic_auth")
}

// Sync says which mount the verifier follows and how it reaches Vault.
// Handlers with the same Sync share one verifier (one snapshot, one change
// feed, one set of rate-limit buckets), across routes and across config
// reloads.
type Sync struct {
	// VaultAddr is Vault's address; default VAULT_ADDR. The other VAULT_*
	// variables (VAULT_CACERT, ...) apply as for the vault CLI.
	VaultAddr string `json:"vault_addr,omitempty"`
	// Mount is the apikeys mount; default "apikeys".
	Mount string `json:"mount,omitempty"`
	// Token, TokenFile: the edge token (placeholders such as
	// {env.EDGE_TOKEN} are replaced at provisioning). Without them,
	// VAULT_TOKEN. Caddy saves its config: prefer a file or a placeholder.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"token_file,omitempty"`
	// RoleID and SecretIDFile log in with AppRole instead of a token.
	RoleID       string `json:"role_id,omitempty"`
	SecretIDFile string `json:"secret_id_file,omitempty"`
	AppRoleMount string `json:"approle_mount,omitempty"`
	// TLS towards Vault.
	CACert             string `json:"tls_ca_cert,omitempty"`
	ClientCert         string `json:"tls_client_cert,omitempty"`
	ClientKey          string `json:"tls_client_key,omitempty"`
	ServerName         string `json:"tls_server_name,omitempty"`
	InsecureSkipVerify bool   `json:"tls_insecure_skip_verify,omitempty"`
	// Staleness, PollWait and NegativeTTL are apikeys-edge's -staleness,
	// -poll-wait and -negative-ttl (defaults 30 s, 10 s, 30 s).
	Staleness   caddy.Duration `json:"staleness,omitempty"`
	PollWait    caddy.Duration `json:"poll_wait,omitempty"`
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`
}

// Handler checks the request's key and passes it on only when VALID.
type Handler struct {
	Sync
	// KeyHeader is read before Authorization: Bearer (e.g. X-Api-Key).
	KeyHeader string `json:"key_header,omitempty"`
	// Scopes the route requires. ScopesHeader, when set, names a header
	// whose comma-separated scopes are required as well: it can only add
	// to Scopes, since a client may send it too.
	Scopes       []string `json:"scopes,omitempty"`
	ScopesHeader string   `json:"scopes_header,omitempty"`
	// Tenant limits the route to one tenant's keys (another tenant's key
	// answers NOT_FOUND); else TenantHeader's value, when set.
	Tenant       string `json:"tenant,omitempty"`
	TenantHeader string `json:"tenant_header,omitempty"`

	v       *verifier
	poolKey string
}

// verifiers holds the running verifiers by their Sync.
var verifiers = caddy.NewUsagePool()

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikeys",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision starts the handler's verifier, or joins the one already
// following the same mount, and registers its metrics in Caddy's registry
// (served by the admin endpoint's /metrics and the metrics handler).
func (h *Handler) Provision(ctx caddy.Context) error {
	key, err := json.Marshal(h.Sync)
	if err != nil {
		return fmt.Errorf("apikeys: %w", err)
	}
	h.poolKey = string(key)
	v, _, err := verifiers.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return startVerifier(h.Sync, ctx.Logger())
	})
	if err != nil {
		return err
	}
	h.v = v.(*verifier)
	// Two handlers of one config that share a verifier register it once.
	if err := ctx.GetMetricsRegistry().Register(h.v.ed.Collector()); err != nil {
		if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
			_, _ = verifiers.Delete(h.poolKey)
			return fmt.Errorf("apikeys: register metrics: %w", err)
		}
	}
	return nil
}

// Validate checks the handler's own settings.
func (h *Handler) Validate() error {
	for _, s := range h.Scopes {
		if s == "" || strings.ContainsAny(s, ", ") {
			return fmt.Errorf("apikeys: scope %q: one scope per entry, no commas or spaces", s)
		}
	}
	return nil
}

// Cleanup lets go of the verifier; the last handler using it stops it.
func (h *Handler) Cleanup() error {
	if h.poolKey == "" {
		return nil
	}
	_, err := verifiers.Delete(h.poolKey)
	return err
}

// ServeHTTP answers a refused request itself, as apikeys-edge's /check
// does (status, X-Apikeys-Code, Retry-After on a 429, the answer as JSON),
// and passes a VALID one on with the answer's X-Apikeys-* headers in place
// of any the client sent. The placeholders {http.vars.apikeys.tenant} and
// {http.vars.apikeys.key_id} are set for logs and later handlers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	req := edge.Request{APIKey: edge.PresentedKey(r.Header.Get, h.KeyHeader), Tenant: h.Tenant, RequiredScopes: h.Scopes}
	if h.ScopesHeader != "" {
		if list := r.Header.Get(h.ScopesHeader); list != "" {
			req.RequiredScopes = edge.ParseScopes(slices.Clip(h.Scopes), list)
		}
	}
	if req.Tenant == "" && h.TenantHeader != "" {
		req.Tenant = r.Header.Get(h.TenantHeader)
	}
	req.ClientIP = clientIP(r)
	a := edge.Check(r.Context(), h.v.ed, &req)
	if !a.Valid {
		hdr := w.Header()
		for _, hv := range edge.AnswerHeaders(a) {
			hdr.Set(hv.Name, hv.Value)
		}
		if ra := edge.RetryAfter(a, time.Now()); ra != "" {
			hdr.Set("Retry-After", ra)
		}
		hdr.Set("Content-Type", "application/json")
		hdr.Set("Cache-Control", "no-store")
		w.WriteHeader(contract.HTTPStatus(a.Code))
		return json.NewEncoder(w).Encode(a)
	}
	edge.SetUpstreamHeaders(r.Header, a)
	caddyhttp.SetVar(r.Context(), "apikeys.tenant", a.Tenant)
	caddyhttp.SetVar(r.Context(), "apikeys.key_id", a.KeyID)
	return next.ServeHTTP(w, r)
}

// clientIP is the client as Caddy determined it (its trusted_proxies
// setting decides whether forwarded headers count), else the peer.
func clientIP(r *http.Request) netip.Addr {
	s, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if s == "" {
		s, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	a, _ := netip.ParseAddr(s)
	return a
}

// verifier is one running edge verifier of the pool.
type verifier struct {
	ed     *edge.Edge
	cancel context.CancelFunc
	done   chan struct{}
}

// Destruct stops the verifier when no handler uses it any more.
func (v *verifier) Destruct() error {
	v.cancel()
	<-v.done
	return nil
}

// startVerifier makes the Vault client and the edge, and runs it until
// Destruct. The edge's Run ends only when its first login fails (Vault
// unreachable when Caddy starts, say); it is started again with backoff,
// and meanwhile the handler fails closed (STALE).
func startVerifier(s Sync, zl *zap.Logger) (*verifier, error) {
	repl := caddy.NewReplacer()
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("apikeys: vault client config: %w", cfg.Error)
	}
	if s.VaultAddr != "" {
		cfg.Address = repl.ReplaceAll(s.VaultAddr, "")
	}
	if s.CACert != "" || s.ClientCert != "" || s.ServerName != "" || s.InsecureSkipVerify {
		if err := cfg.ConfigureTLS(&api.TLSConfig{
			CACert: s.CACert, ClientCert: s.ClientCert, ClientKey: s.ClientKey,
			TLSServerName: s.ServerName, Insecure: s.InsecureSkipVerify,
		}); err != nil {
			return nil, fmt.Errorf("apikeys: vault tls: %w", err)
		}
	}
	pollWait := time.Duration(s.PollWait)
	if pollWait <= 0 {
		pollWait = 10 * time.Second
	}
	// Long polls last PollWait; leave room for Vault's answer.
	cfg.Timeout = pollWait + 30*time.Second
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("apikeys: vault client: %w", err)
	}
	switch {
	case s.Token != "":
		client.SetToken(strings.TrimSpace(repl.ReplaceAll(s.Token, "")))
	case s.TokenFile != "":
		b, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("apikeys: token_file: %w", err)
		}
		client.SetToken(strings.TrimSpace(string(b)))
	}
	var secretID string
	if s.SecretIDFile != "" {
		b, err := os.ReadFile(s.SecretIDFile)
		if err != nil {
			return nil, fmt.Errorf("apikeys: secret_id_file: %w", err)
		}
		if secretID = strings.TrimSpace(string(b)); secretID == "" {
			return nil, fmt.Errorf("apikeys: secret_id_file %s is empty", s.SecretIDFile)
		}
	}
	mount := s.Mount
	if mount == "" {
		mount = "apikeys"
	}
	log := hclog.FromStandardLogger(zap.NewStdLog(zl), &hclog.LoggerOptions{Name: "apikeys", Level: hclog.Info})
	ed, err := edge.New(edge.Config{
		Client: client, Mount: mount, AppRoleMount: s.AppRoleMount,
		RoleID: strings.TrimSpace(repl.ReplaceAll(s.RoleID, "")), SecretID: secretID,
		Staleness: time.Duration(s.Staleness), PollWait: pollWait, NegativeTTL: time.Duration(s.NegativeTTL),
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("apikeys: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	v := &verifier{ed: ed, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		backoff := time.Second
		for {
			err := ed.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			log.Error("verifier stopped; starting it again", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
	return v, nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile reads the directive:
//
//	apikeys [<matcher>] {
//	    vault_addr      <url>
//	    mount           <path>
//	    token           <token>        # or {env.NAME}
//	    token_file      <file>
//	    role_id         <id>
//	    secret_id_file  <file>
//	    approle_mount   <path>
//	    tls_ca_cert     <file>
//	    tls_client_cert <file>
//	    tls_client_key  <file>
//	    tls_server_name <name>
//	    tls_insecure_skip_verify
//	    staleness       <duration>
//	    poll_wait       <duration>
//	    negative_ttl    <duration>
//	    key_header      <header>
//	    scopes          <scope...>
//	    scopes_header   <header>
//	    tenant          <tenant>
//	    tenant_header   <header>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	strs := map[string]*string{
		"vault_addr": &h.VaultAddr, "mount": &h.Mount, "token": &h.Token, "token_file": &h.TokenFile,
		"role_id": &h.RoleID, "secret_id_file": &h.SecretIDFile, "approle_mount": &h.AppRoleMount,
		"tls_ca_cert": &h.CACert, "tls_client_cert": &h.ClientCert, "tls_client_key": &h.ClientKey,
		"tls_server_name": &h.ServerName, "key_header": &h.KeyHeader, "scopes_header": &h.ScopesHeader,
		"tenant": &h.Tenant, "tenant_header": &h.TenantHeader,
	}
	durations := map[string]*caddy.Duration{"staleness": &h.Staleness, "poll_wait": &h.PollWait, "negative_ttl": &h.NegativeTTL}
	for d.NextBlock(0) {
		name := d.Val()
		switch {
		case strs[name] != nil:
			if !d.NextArg() {
				return d.ArgErr()
			}
			*strs[name] = d.Val()
		case durations[name] != nil:
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("%s: %v", name, err)
			}
			*durations[name] = caddy.Duration(dur)
		case name == "scopes":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				h.Scopes = edge.ParseScopes(h.Scopes, a)
			}
			continue
		case name == "tls_insecure_skip_verify":
			h.InsecureSkipVerify = true
			continue
		default:
			return d.Errf("unknown apikeys option %q", name)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
	_ caddy.Destructor            = (*verifier)(nil)
)

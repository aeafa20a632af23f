package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// ErrStale means the edge has not heard from Vault for longer than its
// staleness bound (or not yet at all): it fails closed.
var ErrStale = errors.New("edge verifier is stale: no sync with Vault within the staleness bound")

// ErrUnavailable means a key unknown to the edge could not be checked with
// Vault.
var ErrUnavailable = errors.New("vault verify unavailable")

// Config of an edge verifier. Client must carry the Vault address; its
// token is set by Run (AppRole) or by the caller (token).
type Config struct {
	Client *api.Client
	// Mount is the apikeys mount path, without slashes.
	Mount string
	// AppRole logs in with role_id/secret_id when RoleID is set; otherwise
	// the client's token is used and renewed when renewable.
	AppRoleMount string
	RoleID       string
	SecretID     string
	// Staleness is how long the edge keeps answering from memory without a
	// successful sync; after that it fails closed.
	Staleness time.Duration
	// PollWait is the long-poll wait of sync/changes; keep it well below
	// Staleness.
	PollWait time.Duration
	// NegativeTTL and NegativeMax bound the cache of keys Vault answered
	// NOT_FOUND for, so unknown-key floods do not all reach Vault.
	NegativeTTL time.Duration
	NegativeMax int
	PageSize    int
	// UsageInterval is how often use of locally verified keys is reported
	// to usage/report (Vault never sees those verifications).
	UsageInterval time.Duration
	Logger        hclog.Logger
	// Registry receives the edge's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// Now is the edge's clock (expiry, rate limits, staleness); nil is
	// time.Now. Tests set it to decide at a chosen moment.
	Now func() time.Time
}

// Request is one verify question; Answer has the verify path's shape.
// Both are the verify contract's, shared with the plugin.
type (
	Request = contract.Request
	Answer  = contract.Answer
)

// Edge verifies keys from memory. Create it with New, start Run, serve
// Handler.
type Edge struct {
	cfg    Config
	log    hclog.Logger
	store  *store
	neg    *negCache
	m      *metrics
	client *api.Client

	// lastSync is the unix-nano time of the last successful answer from
	// the sync paths; staleness is measured from it.
	lastSync atomic.Int64
	now      func() time.Time
}

// New checks the config and fills in defaults.
func New(cfg Config) (*Edge, error) {
	if cfg.Client == nil {
		return nil, errors.New("edge: a Vault client is required")
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	if cfg.Mount == "" {
		return nil, errors.New("edge: mount is required")
	}
	if cfg.Staleness <= 0 {
		cfg.Staleness = 30 * time.Second
	}
	if cfg.PollWait <= 0 {
		cfg.PollWait = 10 * time.Second
	}
	if cfg.PollWait >= cfg.Staleness {
		return nil, fmt.Errorf("edge: poll wait (%s) must be shorter than the staleness bound (%s)", cfg.PollWait, cfg.Staleness)
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 30 * time.Second
	}
	if cfg.NegativeMax <= 0 {
		cfg.NegativeMax = 100000
	}
	if cfg.UsageInterval <= 0 {
		cfg.UsageInterval = 10 * time.Second
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 5000
	}
	if cfg.AppRoleMount == "" {
		cfg.AppRoleMount = "approle"
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Edge{cfg: cfg, log: cfg.Logger, store: newStore(), client: cfg.Client, now: cfg.Now}
	e.neg = newNegCache(cfg.NegativeMax, cfg.NegativeTTL)
	e.m = newMetrics(cfg.Registry, e)
	return e, nil
}

// Registry is where the edge's metrics are registered.
func (e *Edge) Registry() *prometheus.Registry { return e.cfg.Registry }

// Token is the Vault token the edge uses now (after an AppRole login, the
// login's).
func (e *Edge) Token() string { return e.client.Token() }

// Stale reports whether the edge fails closed now.
func (e *Edge) Stale() bool {
	last := e.lastSync.Load()
	return last == 0 || e.now().UnixNano()-last > int64(e.cfg.Staleness)
}

func (e *Edge) syncAge() time.Duration {
	last := e.lastSync.Load()
	if last == 0 {
		return -1
	}
	return time.Duration(e.now().UnixNano() - last)
}

// Verify answers like the mount's verify path. It returns ErrStale when the
// edge fails closed and ErrUnavailable when a key it does not hold could not
// be checked with Vault; callers answer both with 503.
func (e *Edge) Verify(ctx context.Context, r *Request) (Answer, error) {
	a, source, err := e.verify(ctx, r)
	if err != nil {
		e.m.unavailable.Inc()
		return a, err
	}
	e.m.verifications.WithLabelValues(a.Code, source).Inc()
	return a, nil
}

func (e *Edge) verify(ctx context.Context, r *Request) (Answer, string, error) {
	// MALFORMED stays offline, even when stale: the answer does not depend
	// on Vault.
	if !contract.WellFormed(r.APIKey) {
		return contract.Refusal(contract.CodeMalformed), "local", nil
	}
	if e.Stale() {
		return Answer{}, "", ErrStale
	}
	now := e.now()
	s := e.store
	s.mu.RLock()
	h := s.hasher
	if h == nil {
		s.mu.RUnlock()
		return Answer{}, "", ErrStale
	}
	sum := h.Sum(r.APIKey)
	k := s.byHash[sum]
	var status string
	var tq *tenantQuota
	if k != nil {
		status = s.tenants[k.w.Tenant]
		if len(s.tenantQuotas) > 0 {
			tq = s.tenantQuotas[k.w.Tenant]
		}
	}
	s.mu.RUnlock()
	if k == nil || !keyformat.Equal(k.hash, sum) {
		a, err := e.fallthroughVerify(ctx, r, sum)
		return a, "vault", err
	}
	// The tenant's status (and quota) was read with the key, under one
	// lock, so the decision sees them from the same moment of the feed.
	v, err := contract.Decide(ctx, edgeStore{status: status, tq: tq}, r, &k.facts, k, now)
	if err != nil {
		return Answer{}, "", err
	}
	if v.Code == contract.CodeQuotaExceeded {
		e.m.quotaExceeded.WithLabelValues(k.w.Tenant).Inc()
	}
	if v.Code != contract.CodeValid {
		if contract.AboutKey(v.Code) {
			k.countRefusal(v.Code, 1)
		}
		a := contract.Refusal(v.Code)
		a.SetQuota(v.Quota)
		return a, "local", nil
	}
	k.markUsed(now)
	w := k.w
	a := Answer{
		Valid: true, Code: contract.CodeValid, KeyID: w.KeyID, Tenant: w.Tenant, Role: w.Role,
		Scopes: w.Scopes, Environment: w.Environment, Metadata: w.Metadata,
		ExpiresAt: contract.Expiry(k.facts.ExpiresAt), Kind: w.Kind, InGrace: w.InGrace,
	}
	a.SetQuota(v.Quota)
	return a, "local", nil
}

// edgeStore is the verify contract's Store over the edge's memory: the
// tenant status and quota read with the key, the key's own token bucket
// (per edge, as the plugin's are per Vault node) and its quota (what the
// cluster used, as this edge knows it: quota.go).
type edgeStore struct {
	status string
	tq     *tenantQuota
}

func (st edgeStore) TenantStatus(context.Context, string) (string, error) { return st.status, nil }

func (st edgeStore) Spend(k *key, now time.Time) (string, contract.Quota) {
	if k.limiter != nil && !k.limiter.AllowN(now, 1) {
		return contract.CodeRateLimited, contract.Quota{}
	}
	return spendQuota(k, st.tq, now)
}

// fallthroughVerify asks Vault about a key the edge does not hold: one
// issued a moment ago, one issued before edge sync existed, or garbage.
func (e *Edge) fallthroughVerify(ctx context.Context, r *Request, sum [32]byte) (Answer, error) {
	nk := negKey{hash: sum, tenant: r.Tenant}
	if e.neg.has(nk, e.now()) {
		e.m.negativeHits.Inc()
		return contract.Refusal(contract.CodeNotFound), nil
	}
	data := map[string]interface{}{"api_key": r.APIKey}
	if r.Tenant != "" {
		data["tenant"] = r.Tenant
	}
	if len(r.RequiredScopes) > 0 {
		data["required_scopes"] = strings.Join(r.RequiredScopes, ",")
	}
	if r.ClientIP.IsValid() {
		data["client_ip"] = r.ClientIP.String()
	}
	sec, err := e.client.Logical().WriteWithContext(ctx, e.cfg.Mount+"/verify", data)
	if err != nil || sec == nil {
		e.m.vaultVerify.WithLabelValues("error").Inc()
		// The error text of a failed request never holds the key: it goes
		// in the body.
		e.log.Warn("fallthrough verify failed", "error", err)
		return Answer{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	e.m.vaultVerify.WithLabelValues("ok").Inc()
	var a Answer
	if err := remarshal(sec.Data, &a); err != nil {
		return Answer{}, fmt.Errorf("%w: decode verify answer: %w", ErrUnavailable, err)
	}
	if a.Code == contract.CodeNotFound {
		e.neg.add(nk, e.now())
	}
	return a, nil
}

// remarshal decodes the api client's generic map (json.Number inside) into
// a typed struct.
func remarshal(in interface{}, out interface{}) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

type negKey struct {
	hash   [32]byte
	tenant string
}

// negCache remembers NOT_FOUND answers for a while, bounded in size: when
// full, an arbitrary entry goes (Go's map order), which is enough to keep
// memory bounded under a flood of random keys.
type negCache struct {
	mu  sync.Mutex
	m   map[negKey]int64
	max int
	ttl time.Duration
}

func newNegCache(max int, ttl time.Duration) *negCache {
	return &negCache{m: make(map[negKey]int64), max: max, ttl: ttl}
}

func (c *negCache) has(k negKey, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[k]
	if ok && now.UnixNano() >= exp {
		delete(c.m, k)
		return false
	}
	return ok
}

func (c *negCache) add(k negKey, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = now.Add(c.ttl).UnixNano()
}

func (c *negCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// reset runs after a snapshot, which may know keys the cache said were
// absent (local entries are looked up first anyway).
func (c *negCache) reset() {
	c.mu.Lock()
	c.m = make(map[negKey]int64)
	c.mu.Unlock()
}

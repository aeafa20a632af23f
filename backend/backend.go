// Package backend is the Vault logical backend of the API key secrets engine.
package backend

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// Version and Commit are set at build time with
// -ldflags "-X github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend.Version=v1.2.3".
// Version's default is the only one: the Makefile reads it from this line.
var (
	Version = "v0.1.0-dev"
	Commit  = "unknown"
)

// operationPrefix keeps the generated OpenAPI operation ids in one family
// (e.g. "apikeys-read-configuration").
const operationPrefix = "apikeys"

type backend struct {
	*framework.Backend

	// tenantLocks serialise the work that must see a consistent tenant:
	// issue (status, environment, max_keys), role writes, static key
	// create, update, rotation (on demand, scheduled, WAL recovery), revoke
	// and delete, tenant update/delete, tidy's per-key checks, and
	// (read-locked) verify's tenant cache fills.
	tenantLocks []*locksutil.LockEntry
	// hashLocks order a verify cache fill against a revoke or an
	// Invalidate of the same key, so a fill can never resurrect a key.
	hashLocks []*locksutil.LockEntry

	cache *verifyCache
	known knownHashes
	// storage is the mount's storage, for background work not tied to a
	// request.
	storage   logical.Storage
	limiter   *rateLimiter
	quotas    *quotaTracker
	rotations *rotationEngine

	// pepperMu serialises loading and resetting the hasher; readers load
	// it without the lock (getHasher).
	pepperMu sync.Mutex
	hasher   atomic.Pointer[hasherState]

	// feed is the edge sync change feed and verifier secret (edge_feed.go).
	feed edgeFeed

	tidy   tidyState
	tidyWG sync.WaitGroup
	// stopCtx ends background work (tidy) when the backend is cleaned up.
	stopCtx context.Context
	stop    context.CancelFunc

	// config is the mount config as the tenant guard reads it.
	config configCache

	// monitoring: usage counters, metrics, notifications (monitoring.go).
	*monitoring
}

// Factory is the plugin's backend factory.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	c := *conf
	c.System = cacheReplicationState(conf.System)
	if err := b.Setup(ctx, &c); err != nil {
		return nil, fmt.Errorf("set up backend: %w", err)
	}
	b.storage = conf.StorageView
	return b, nil
}

func newBackend() *backend {
	b := &backend{
		tenantLocks: locksutil.CreateLocks(),
		hashLocks:   locksutil.CreateLocks(),
		cache:       newVerifyCache(),
		limiter:     newRateLimiter(),
		quotas:      newQuotaTracker(),
		rotations:   newRotationEngine(),
	}
	b.stopCtx, b.stop = context.WithCancel(context.Background())
	b.monitoring = newMonitoring(b)
	b.metrics.reg.MustRegister(b.quotaCollector())
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{
				configPath,
				pepperPath,
				verifierPath,
				staticPrefix,
				notifyTargetPrefix,
				tenantNotifyPrefix,
			},
			LocalStorage: []string{
				framework.WALPrefix,
			},
		},
		Paths: framework.PathAppend(
			b.pathInfo(),
			b.pathMetrics(),
			b.pathUsageHistory(),
			b.pathUsage(),
			b.pathConfigMonitoring(),
			b.pathNotifications(),
			b.pathTidy(),
			b.pathLeaks(),
			b.pathConfig(),
			b.pathVerify(),
			b.pathQuota(),
			b.pathSync(),
			b.pathCreds(),
			b.pathStaticKeys(),
			b.pathOnboard(),
			b.pathKeys(),
			b.pathRoles(),
			b.pathTenants(),
		),
		Secrets: []*framework.Secret{
			b.secretAPIKey(),
		},
		InitializeFunc: b.initialize,
		PeriodicFunc:   b.periodic,
		Invalidate:     b.invalidate,
		Clean:          b.clean,
		RunningVersion: Version,
	}
	b.Backend.Paths = b.guardTenantPaths(b.Backend.Paths)
	return b
}

// invalidate drops the cached state that depends on a storage entry another
// node changed. Vault calls it on performance standbys and performance
// secondaries, never on the node that wrote. Most cases drop exactly that
// entry's state; config/notifications/* drops the whole target list and
// config/monitoring reloads in the background.
func (b *backend) invalidate(ctx context.Context, key string) {
	switch {
	case key == pepperPath:
		b.resetHasher()
	case key == feedHeadPath:
		b.feed.forgetHead()
	case key == verifierPath:
		b.feed.forgetVerifier()
	case key == configPath:
		b.forgetConfig()
	case strings.HasPrefix(key, tenantPrefix):
		b.forgetTenant(strings.TrimPrefix(key, tenantPrefix))
	case strings.HasPrefix(key, hashPrefix):
		b.forgetKey(strings.TrimPrefix(key, hashPrefix))
	case strings.HasPrefix(key, notifyTargetPrefix), strings.HasPrefix(key, tenantNotifyPrefix):
		b.forgetTargets()
	case key == monitorConfigPath:
		b.forgetMonitorConfig()
	case strings.HasPrefix(key, usagePrefix):
		b.usage.invalidate(strings.TrimPrefix(key, usagePrefix))
	case strings.HasPrefix(key, quotaPrefix):
		b.invalidateQuota(strings.TrimPrefix(key, quotaPrefix))
	}
}

func (b *backend) clean(ctx context.Context) {
	b.stopMonitoring(ctx)
	b.rotations.stop()
	b.stop()
	b.tidyWG.Wait()
	b.cache.reset()
	b.known.reset()
	b.limiter.reset()
	b.quotas.reset()
	b.resetHasher()
	b.feed.reset()
}

// periodic runs about once a minute on every node (Vault's rollback
// manager); each task decides whether it belongs on this node.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	b.periodicTidy(req)
	b.periodicMonitoring(ctx, req)
	b.periodicEdgeFeed(ctx, req)
	return nil
}

const backendHelp = `
The API keys secrets engine manages API keys for many tenants.

Tenants own key roles; a role describes the keys issued from it (scopes,
environment, TTLs, allowed CIDRs, rate limit). Reading
tenants/<tenant>/creds/<role> issues a key with a Vault lease, so the key dies
with its lease. API gateways check presented keys through the verify paths.
Only an HMAC of each key is stored; the key itself is shown once, at issue.
`

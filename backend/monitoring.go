package backend

// Monitoring's life cycle: what the backend holds for usage, metrics and
// notifications, and how Initialize, PeriodicFunc and Clean start, drive
// and stop it. The parts live in usage.go, metrics.go, scans.go,
// anomaly.go and notifications.go.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// monitoring is everything of usage, metrics and notifications that a
// backend holds, embedded in backend so the rest of the code reads b.usage,
// b.metrics, b.dispatcher.
type monitoring struct {
	usage      *usageTracker
	metrics    *metrics
	dispatcher *notify.Dispatcher

	anomaliesInFlight atomic.Int64

	// targets caches config/notifications/* for emit; nil until loaded and
	// after any change (locally or through Invalidate).
	targetsMu sync.Mutex
	targets   []*notify.Target

	// monMu guards the active node's background work: the storage it
	// writes, and the scan goroutine.
	monMu      sync.Mutex
	monStorage logical.Storage
	scanCancel context.CancelFunc
	scanDone   chan struct{}

	scanMu sync.Mutex
	scan   scanCursor
}

func newMonitoring(b *backend) *monitoring {
	m := &monitoring{usage: newUsageTracker()}
	m.dispatcher = notify.NewDispatcher(b.lookupTarget, notify.Observer{
		Attempted: func(target string, ok bool) {
			result := "delivered"
			if !ok {
				result = "failed"
			}
			m.metrics.deliveries.WithLabelValues(target, result).Inc()
		},
		DeadLettered: func(target string) { m.metrics.deadLettered.WithLabelValues(target).Inc() },
	})
	m.metrics = newMetrics(m.usage, m.dispatcher.Depth)
	return m
}

// initialize is the backend's InitializeFunc: it starts static key
// rotation, then monitoring.
//
// Monitoring starts even when static key rotation could not (a storage
// error while it recovers or loads its queue): delivery and key scans do
// not depend on it. Vault logs the returned error.
func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	rotErr := b.startRotations(ctx, req)
	if rotErr != nil {
		rotErr = fmt.Errorf("static key rotation not started: %w", rotErr)
	}
	return errors.Join(rotErr, b.startMonitoring(ctx, req.Storage))
}

// startMonitoring loads the monitoring settings everywhere, and where
// storage is writable (the active node) starts notification delivery and
// the key scan. Verify counts and anomaly detection need neither: they run
// on every node that answers verify.
func (b *backend) startMonitoring(ctx context.Context, s logical.Storage) error {
	if err := b.loadMonitorConfig(ctx, s); err != nil {
		b.Logger().Warn("monitoring settings unreadable; using defaults", "error", err)
	}
	if err := b.refreshPrefixes(ctx, s); err != nil {
		b.Logger().Warn("could not map key prefixes to tenants", "error", err)
	}
	if !b.WriteSafeReplicationState() {
		return nil
	}
	if err := b.dispatcher.Start(ctx, s, b.Logger().Named("notify")); err != nil {
		return fmt.Errorf("start notification delivery: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.monMu.Lock()
	b.monStorage, b.scanCancel, b.scanDone = s, cancel, done
	b.monMu.Unlock()
	go b.runScans(runCtx, s, done)
	return nil
}

// stopMonitoring runs from Clean: a last bounded flush of the counters,
// then the background work stops. Outbox entries stay in storage for the
// next active node.
func (b *backend) stopMonitoring(ctx context.Context) {
	b.monMu.Lock()
	s, cancel, done := b.monStorage, b.scanCancel, b.scanDone
	b.monStorage, b.scanCancel, b.scanDone = nil, nil, nil
	b.monMu.Unlock()
	if s != nil {
		b.flushUsage(ctx, s)
		b.flushQuotas(ctx, s)
	}
	if cancel != nil {
		cancel()
		<-done
	}
	b.dispatcher.Stop()
}

// deliveryStorage is the storage the active node's dispatcher writes; nil
// elsewhere.
func (b *backend) deliveryStorage() logical.Storage {
	b.monMu.Lock()
	defer b.monMu.Unlock()
	return b.monStorage
}

// periodicMonitoring is monitoring's share of the PeriodicFunc (about once
// a minute, from Vault's rollback manager): the bounded usage flush where
// storage is writable, and elsewhere a refresh of what verify uses to
// attribute unknown keys (the active node's scan does that there).
func (b *backend) periodicMonitoring(ctx context.Context, req *logical.Request) {
	if err := b.loadMonitorConfig(ctx, req.Storage); err != nil {
		b.Logger().Warn("monitoring settings unreadable", "error", err)
	}
	if !b.WriteSafeReplicationState() {
		if err := b.refreshPrefixes(ctx, req.Storage); err != nil {
			b.Logger().Debug("could not map key prefixes to tenants", "error", err)
		}
		return
	}
	b.flushUsage(ctx, req.Storage)
	b.flushQuotas(ctx, req.Storage)
}

package backend

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// The active node's key scan (config/monitoring scan_interval, scan_batch):
// it walks every key to raise expiry warnings, revoke keys unused for their
// role's revoke_unused_after and drop usage of keys that are gone; and the
// map of key prefixes to tenants that attributes unknown keys.

// refreshPrefixes maps key prefixes to tenants for attributing unknown
// keys. A prefix that several tenants share (the mount's default, usually)
// maps to no tenant: such failures count as unattributed.
func (b *backend) refreshPrefixes(ctx context.Context, s logical.Storage) error {
	names, err := s.List(ctx, tenantPrefix)
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	cfg, err := readConfig(ctx, s)
	if err != nil {
		return err
	}
	owners := map[string]string{}
	shared := map[string]bool{}
	for _, n := range names {
		t, err := readTenant(ctx, s, n)
		if err != nil {
			return err
		}
		if t == nil {
			continue
		}
		p := t.KeyPrefix
		if p == "" {
			p = cfg.KeyPrefix
		}
		if o, ok := owners[p]; ok && o != t.Name {
			shared[p] = true
		}
		owners[p] = t.Name
	}
	for p := range shared {
		delete(owners, p)
	}
	b.usage.prefixes.Store(&owners)
	return nil
}

// scanCursor walks every key of the mount, at most scan_batch key checks
// per step. Opening a tenant still lists all its key ids and usage ids in
// one step (startScanTenant), so that step costs in proportion to the
// tenant's size.
type scanCursor struct {
	tenants []string
	ti      int
	keys    []string
	ki      int
	roles   map[string]*roleEntry
	cfg     *mountConfig
}

func (b *backend) runScans(ctx context.Context, s logical.Storage, done chan struct{}) {
	defer close(done)
	last := time.Now()
	for {
		// Re-read the interval at least every second, so a changed
		// scan_interval applies without waiting out the old one.
		wait := min(time.Until(last.Add(b.usage.cfg.Load().ScanInterval)), time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		if time.Since(last) < b.usage.cfg.Load().ScanInterval {
			continue
		}
		last = time.Now()
		if err := b.scanStep(ctx, s, last); err != nil && ctx.Err() == nil {
			b.Logger().Warn("key scan step failed; will continue", "error", err)
		}
	}
}

// scanStep looks at up to scan_batch keys: key-expiring for keys inside
// the expiry_warning window (a static key's rotated-out key included: its
// expiry is the end of its grace), revocation of keys unused for their
// role's revoke_unused_after, and removal of usage tombstones past
// usage_retention. A new pass over all tenants starts when one ends.
func (b *backend) scanStep(ctx context.Context, s logical.Storage, now time.Time) error {
	b.scanMu.Lock()
	defer b.scanMu.Unlock()
	c := &b.scan
	mcfg := b.usage.cfg.Load()
	budget := mcfg.ScanBatch
	startedPass := false
	for budget > 0 && ctx.Err() == nil {
		if c.ti >= len(c.tenants) {
			if startedPass {
				return nil
			}
			startedPass = true
			if err := b.startScanPass(ctx, s); err != nil {
				return err
			}
			continue
		}
		tenant := c.tenants[c.ti]
		if c.keys == nil {
			if err := b.startScanTenant(ctx, s, tenant, now, mcfg); err != nil {
				return err
			}
		}
		for c.ki < len(c.keys) && budget > 0 {
			budget--
			if err := b.scanKey(ctx, s, tenant, c.keys[c.ki], now); err != nil {
				return err
			}
			c.ki++
		}
		if c.ki >= len(c.keys) {
			c.ti++
			c.keys, c.ki = nil, 0
			if c.ti >= len(c.tenants) {
				// A pass ends a step: a small mount is scanned once per
				// scan_interval, not over and over within one step.
				return nil
			}
		}
	}
	return nil
}

// startScanPass lists the tenants (and the tenants that only have usage
// left) and refreshes what a pass reads once.
func (b *backend) startScanPass(ctx context.Context, s logical.Storage) error {
	c := &b.scan
	// Tenant usage is listed before tenants: usage listed first whose
	// tenant is missing from the later list belongs to a deleted tenant,
	// never to one created in between.
	stored, err := s.List(ctx, usageTenantPrefix)
	if err != nil {
		return fmt.Errorf("list tenant usage: %w", err)
	}
	names, err := s.List(ctx, tenantPrefix)
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	withUsage, err := s.List(ctx, usageKeyPrefix)
	if err != nil {
		return fmt.Errorf("list usage: %w", err)
	}
	all := slices.Clone(names)
	for _, n := range withUsage {
		all = append(all, strings.TrimSuffix(n, "/"))
	}
	slices.Sort(all)
	c.tenants, c.ti, c.keys, c.ki = slices.Compact(all), 0, nil, 0
	c.roles = map[string]*roleEntry{}
	if c.cfg, err = readConfig(ctx, s); err != nil {
		return err
	}
	if err := b.refreshPrefixes(ctx, s); err != nil {
		return err
	}
	// Usage of tenants that are gone: history first, so a failure leaves
	// the totals that bring this back on the next pass.
	for _, n := range stored {
		if slices.Contains(names, n) {
			continue
		}
		if err := deleteHistory(ctx, s, tenantHistoryPrefix(n), fmt.Sprintf("usage history of deleted tenant %q", n)); err != nil {
			return err
		}
		if err := s.Delete(ctx, usageTenantPrefix+n); err != nil {
			return fmt.Errorf("delete usage of deleted tenant %q: %w", n, err)
		}
		b.usage.dropTenant(n)
	}
	return nil
}

// startScanTenant lists one tenant's keys and removes the usage tombstones
// past retention, with the keys' usage history. Usage records are listed before keys: a record listed
// first whose key is missing from the later key list was revoked, never
// merely issued in between.
func (b *backend) startScanTenant(ctx context.Context, s logical.Storage, tenant string, now time.Time, mcfg *monitorConfig) error {
	c := &b.scan
	usageIDs, err := s.List(ctx, usageKeyPrefix+tenant+"/")
	if err != nil {
		return fmt.Errorf("list key usage of tenant %q: %w", tenant, err)
	}
	ids, err := s.List(ctx, keyIndexPrefix(tenant))
	if err != nil {
		return fmt.Errorf("list keys of tenant %q: %w", tenant, err)
	}
	c.keys, c.ki = ids, 0
	if c.keys == nil {
		c.keys = []string{}
	}
	live := make(map[string]bool, len(ids))
	for _, id := range ids {
		live[id] = true
	}
	for _, id := range usageIDs {
		if live[id] {
			continue
		}
		rec, err := readKeyUsage(ctx, s, tenant, id)
		if err != nil {
			return err
		}
		if rec == nil || rec.RevokedAt.IsZero() || now.Sub(rec.RevokedAt) < mcfg.UsageRetention {
			continue
		}
		// The key's history goes with its tombstone, first, so that a
		// failure leaves the tombstone that brings this back.
		if err := deleteHistory(ctx, s, keyHistoryPrefix(tenant, id), fmt.Sprintf("usage history of key %q", id)); err != nil {
			return err
		}
		if err := s.Delete(ctx, usageKeyPath(tenant, id)); err != nil {
			return fmt.Errorf("delete usage tombstone of key %q: %w", id, err)
		}
	}
	return nil
}

func (b *backend) scanRole(ctx context.Context, s logical.Storage, tenant, name string) (*roleEntry, error) {
	c := &b.scan
	k := tenant + "/" + name
	if r, ok := c.roles[k]; ok {
		return r, nil
	}
	r, err := readRole(ctx, s, tenant, name)
	if err != nil {
		return nil, err
	}
	c.roles[k] = r
	return r, nil
}

func (b *backend) scanKey(ctx context.Context, s logical.Storage, tenant, id string, now time.Time) error {
	e, err := readTenantKey(ctx, s, tenant, id)
	if err != nil || e == nil {
		return err
	}
	if warn := b.scan.cfg.ExpiryWarning; warn > 0 && !e.ExpiresAt.IsZero() && now.Before(e.ExpiresAt) && !now.Add(warn).Before(e.ExpiresAt) {
		if err := b.warnExpiring(ctx, s, e, now); err != nil {
			return err
		}
	}
	// Static keys are rotated, not left unused: revoking one would only
	// force a rotation nobody asked for.
	if e.Kind != kindDynamic {
		return nil
	}
	r, err := b.scanRole(ctx, s, tenant, e.Role)
	if err != nil || r == nil || r.RevokeUnusedAfter <= 0 {
		return err
	}
	u, err := b.usage.keyUsageOf(ctx, s, tenant, id)
	if err != nil {
		return err
	}
	last := e.CreatedAt
	if u.LastUsedAt.After(last) {
		last = u.LastUsedAt
	}
	if now.Sub(last) < r.RevokeUnusedAfter {
		return nil
	}
	b.Logger().Info("revoking a key unused for its role's revoke_unused_after", "tenant", tenant, "key_id", id,
		"role", e.Role, "unused_since", last.UTC().Format(time.RFC3339), "revoke_unused_after", r.RevokeUnusedAfter)
	rctx := withRevokeCause(ctx, revokeCause{Reason: "unused", Data: map[string]interface{}{
		"unused_since":        last.UTC().Format(time.RFC3339),
		"revoke_unused_after": int64(r.RevokeUnusedAfter.Seconds()),
		"role":                e.Role,
	}})
	return b.revokeKey(rctx, s, tenant, id)
}

// warnExpiring raises key-expiring once per key and expiry (a renewed
// lease moves the expiry and earns a new warning).
func (b *backend) warnExpiring(ctx context.Context, s logical.Storage, e *keyEntry, now time.Time) error {
	first, err := b.usage.updateKeyUsage(ctx, s, e.Tenant, e.KeyID, func(r *keyUsageRecord) bool {
		if r.ExpiryWarnedFor.Equal(e.ExpiresAt) || !r.RevokedAt.IsZero() {
			return false
		}
		r.ExpiryWarnedFor = e.ExpiresAt
		return true
	})
	if err != nil || !first {
		return err
	}
	u, err := b.usage.keyUsageOf(ctx, s, e.Tenant, e.KeyID)
	if err != nil {
		return err
	}
	b.emit(ctx, s, newEvent(notify.KeyExpiring, e.Tenant, map[string]interface{}{
		"key_id":             e.KeyID,
		"hint":               e.Hint,
		"kind":               e.Kind,
		"role":               e.Role,
		"name":               e.Name,
		"in_grace":           e.InGrace,
		"expires_at":         timeOrNil(e.ExpiresAt),
		"expires_in_seconds": int64(e.ExpiresAt.Sub(now).Seconds()),
		"last_used_at":       timeOrNil(u.LastUsedAt),
	}, notify.StableID(notify.KeyExpiring, e.Tenant, e.KeyID, e.ExpiresAt.UTC().Format(time.RFC3339Nano)), now))
	return nil
}

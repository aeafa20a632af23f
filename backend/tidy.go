package backend

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

const (
	defaultTidyBatch        = 500
	defaultTidySafetyBuffer = 0
	// tidyInterval is how often the active node tidies on its own.
	tidyInterval = time.Hour
)

// tidyStatus is the report of the last (or running) tidy.
type tidyStatus struct {
	State          string    `json:"state"`
	Trigger        string    `json:"trigger"`
	StartedAt      time.Time `json:"started_at"`
	FinishedAt     time.Time `json:"finished_at"`
	KeysChecked    int       `json:"keys_checked"`
	ExpiredRemoved int       `json:"expired_removed"`
	OrphansRemoved int       `json:"orphans_removed"`
	Error          string    `json:"error"`

	// HistoryCompacted counts usage history days whose hours were dropped,
	// HistoryRemoved days removed (usage_history.go).
	HistoryCompacted int `json:"history_compacted"`
	HistoryRemoved   int `json:"history_removed"`
}

type tidyState struct {
	mu      sync.Mutex
	running bool
	status  tidyStatus
	lastRun time.Time
}

// startTidy runs one tidy in the background unless one is running. The
// tidy has its own context: it must outlive the request that started it.
func (b *backend) startTidy(s logical.Storage, trigger string, buffer time.Duration, batch int) bool {
	b.tidy.mu.Lock()
	if b.tidy.running {
		b.tidy.mu.Unlock()
		return false
	}
	b.tidy.running = true
	b.tidy.lastRun = time.Now()
	b.tidy.status = tidyStatus{State: "running", Trigger: trigger, StartedAt: time.Now().UTC()}
	ctx, cancel := context.WithCancel(context.Background())
	b.tidy.mu.Unlock()

	b.tidyWG.Add(1)
	go func() {
		defer b.tidyWG.Done()
		defer cancel()
		stop := context.AfterFunc(b.stopCtx, cancel)
		defer stop()
		err := b.runTidy(ctx, s, buffer, batch, time.Now)
		b.tidy.mu.Lock()
		defer b.tidy.mu.Unlock()
		b.tidy.running = false
		b.tidy.status.FinishedAt = time.Now().UTC()
		b.tidy.status.State = "finished"
		if err != nil {
			b.tidy.status.State, b.tidy.status.Error = "error", err.Error()
			b.Logger().Error("tidy failed", "error", err)
			return
		}
		b.Logger().Info("tidy finished", "keys_checked", b.tidy.status.KeysChecked,
			"expired_removed", b.tidy.status.ExpiredRemoved, "orphans_removed", b.tidy.status.OrphansRemoved,
			"history_compacted", b.tidy.status.HistoryCompacted, "history_removed", b.tidy.status.HistoryRemoved)
	}()
	return true
}

// periodicTidy starts a tidy on the active node once per tidyInterval.
func (b *backend) periodicTidy(req *logical.Request) {
	if !b.WriteSafeReplicationState() {
		return
	}
	b.tidy.mu.Lock()
	due := time.Since(b.tidy.lastRun) >= tidyInterval
	b.tidy.mu.Unlock()
	if due {
		b.startTidy(req.Storage, "periodic", defaultTidySafetyBuffer, defaultTidyBatch)
	}
}

// runTidy walks every tenant's key index: an entry whose record is gone is
// an orphan of an interrupted write and is removed; a key expired longer
// than buffer ago is revoked (a lease that never got revoked, or a
// non-leased key); a record that no index entry points at is removed too.
// Then usage history that aged out goes (tidyHistory).
// Work goes in batches with a pause between, so verify and issue never wait
// on it long.
func (b *backend) runTidy(ctx context.Context, s logical.Storage, buffer time.Duration, batch int, now func() time.Time) error {
	tenants, err := s.List(ctx, keyStoragePrefix)
	if err != nil {
		return fmt.Errorf("list key index: %w", err)
	}
	indexed := make(map[string]bool)
	n := 0
	pause := func() error {
		n++
		if n%batch != 0 {
			return ctx.Err()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
			return nil
		}
	}
	for _, t := range tenants {
		tenant := strings.TrimSuffix(t, "/")
		ids, err := s.List(ctx, keyIndexPrefix(tenant))
		if err != nil {
			return fmt.Errorf("list keys of tenant %q: %w", tenant, err)
		}
		for _, id := range ids {
			if err := pause(); err != nil {
				return err
			}
			if err := b.tidyIndexEntry(ctx, s, tenant, id, now().Add(-buffer), indexed); err != nil {
				return err
			}
		}
	}
	hashes, err := s.List(ctx, hashPrefix)
	if err != nil {
		return fmt.Errorf("list key records: %w", err)
	}
	for _, h := range hashes {
		if indexed[h] {
			continue
		}
		if err := pause(); err != nil {
			return err
		}
		if err := b.tidyRecord(ctx, s, h); err != nil {
			return err
		}
	}
	return b.tidyHistory(ctx, s, now(), pause, historyTidyMaxWrites)
}

// tidyIndexEntry removes one index entry of a tenant when its record is
// gone, or revokes its key when it expired before cutoff; it marks live
// keys in indexed. It holds the tenant's lock, as issue and rotation do
// while they write a key's index entry and then its record: without it a
// key being issued would look orphaned and lose its index entry.
func (b *backend) tidyIndexEntry(ctx context.Context, s logical.Storage, tenant, id string, cutoff time.Time, indexed map[string]bool) error {
	lock := b.tenantLock(tenant)
	lock.Lock()
	defer lock.Unlock()
	p, err := readKeyPointer(ctx, s, tenant, id)
	if err != nil {
		return err
	}
	b.tidyCount(func(st *tidyStatus) { st.KeysChecked++ })
	if p == nil {
		return nil
	}
	rec, err := readKeyRecord(ctx, s, p.Hash)
	if err != nil {
		return err
	}
	switch {
	case rec == nil:
		// A crash between the feed's upsert and the record left edges an
		// entry for this key (putKeyRecord): tell them it is gone.
		if err := b.edgeKeyDeleted(ctx, s, tenant, id); err != nil {
			return fmt.Errorf("tell edges of an orphaned index entry: %w", err)
		}
		if err := s.Delete(ctx, keyIndexPrefix(tenant)+id); err != nil {
			return fmt.Errorf("delete orphaned index entry: %w", err)
		}
		b.tidyCount(func(st *tidyStatus) { st.OrphansRemoved++ })
	case !rec.ExpiresAt.IsZero() && cutoff.After(rec.ExpiresAt) && !b.isStaticCurrent(ctx, s, rec):
		if err := b.revokeKeyByHash(ctx, s, tenant, id, p.Hash); err != nil {
			return err
		}
		b.tidyCount(func(st *tidyStatus) { st.ExpiredRemoved++ })
	default:
		indexed[p.Hash] = true
	}
	return nil
}

// tidyRecord revokes a key record that no index entry points at, looking
// again under its tenant's lock: the key may have been issued since the
// index walk.
func (b *backend) tidyRecord(ctx context.Context, s logical.Storage, h string) error {
	rec, err := readKeyRecord(ctx, s, h)
	if err != nil || rec == nil {
		return err
	}
	lock := b.tenantLock(rec.Tenant)
	lock.Lock()
	defer lock.Unlock()
	if rec, err = readKeyRecord(ctx, s, h); err != nil || rec == nil {
		return err
	}
	if p, err := readKeyPointer(ctx, s, rec.Tenant, rec.KeyID); err != nil || p != nil {
		return err
	}
	if err := b.revokeKeyByHash(ctx, s, rec.Tenant, rec.KeyID, h); err != nil {
		return err
	}
	b.tidyCount(func(st *tidyStatus) { st.OrphansRemoved++ })
	return nil
}

// isStaticCurrent keeps tidy away from a static key's current key; static
// keys are the rotation engine's to manage.
func (b *backend) isStaticCurrent(ctx context.Context, s logical.Storage, rec *keyEntry) bool {
	if rec.Kind != kindStatic {
		return false
	}
	e, err := readStaticKey(ctx, s, rec.Tenant, rec.Name)
	return err != nil || (e != nil && e.CurrentID == rec.KeyID)
}

func (b *backend) tidyCount(f func(*tidyStatus)) {
	b.tidy.mu.Lock()
	f(&b.tidy.status)
	b.tidy.mu.Unlock()
}

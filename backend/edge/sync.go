package edge

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

var errResync = errors.New("feed compacted past our position: resync")

// Run authenticates, loads the snapshot and follows the change feed until
// ctx ends. Errors are retried with backoff: the edge serves what it has
// until the staleness bound.
func (e *Edge) Run(ctx context.Context) error {
	authDone, err := e.startAuth(ctx)
	if err != nil {
		return err
	}
	defer authDone()
	usageDone := e.startUsageReports(ctx)
	defer usageDone()
	needSnapshot := true
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		var err error
		if needSnapshot {
			err = e.loadSnapshot(ctx)
			if err == nil {
				needSnapshot = false
				e.m.resyncs.Inc()
			}
		} else {
			err = e.pollChanges(ctx)
			if errors.Is(err, errResync) {
				e.log.Warn("edge feed position lost; loading the snapshot again", "seq", e.store.currentSeq())
				needSnapshot = true
				continue
			}
		}
		if err == nil {
			backoff = 250 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			break
		}
		e.m.syncErrors.Inc()
		e.log.Warn("edge sync failed; retrying", "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func (e *Edge) markSynced() {
	now := e.now()
	e.lastSync.Store(now.UnixNano())
	e.m.lastSync.Set(float64(now.UnixNano()) / 1e9)
}

func (e *Edge) loadSnapshot(ctx context.Context) error {
	n := newStore()
	after := ""
	first := true
	for {
		q := map[string][]string{"limit": {strconv.Itoa(e.cfg.PageSize)}}
		if after != "" {
			q["after"] = []string{after}
		}
		sec, err := e.client.Logical().ReadWithDataWithContext(ctx, e.cfg.Mount+"/sync/snapshot", q)
		if err != nil {
			return fmt.Errorf("read sync/snapshot: %w", err)
		}
		if sec == nil {
			return errors.New("read sync/snapshot: empty answer")
		}
		var p contract.SnapshotPage
		if err := remarshal(sec.Data, &p); err != nil {
			return fmt.Errorf("sync/snapshot: %w", err)
		}
		if first {
			secret, err := base64.StdEncoding.DecodeString(p.VerifierKey)
			if err != nil {
				return fmt.Errorf("sync/snapshot: verifier_key: %w", err)
			}
			if n.hasher, err = keyformat.NewHasher(secret); err != nil {
				return fmt.Errorf("sync/snapshot: verifier_key: %w", err)
			}
			clear(secret)
			n.seq = p.Seq
			for t, st := range p.Tenants {
				n.tenants[t] = st
			}
			for t, r := range p.TenantQuotas {
				n.setTenantQuotaLocked(t, &r)
			}
			first = false
		}
		for _, w := range p.Keys {
			k, err := newKey(w)
			if err != nil {
				return fmt.Errorf("sync/snapshot: %w", err)
			}
			n.upsertLocked(k)
		}
		n.learnLocked(p.Quotas)
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	e.store.replace(n)
	e.neg.reset()
	e.m.seq.Set(float64(n.seq))
	e.markSynced()
	e.log.Info("edge snapshot loaded", "keys", len(n.byHash), "tenants", len(n.tenants), "seq", n.seq)
	return nil
}

func (e *Edge) pollChanges(ctx context.Context) error {
	since := e.store.currentSeq()
	q := map[string][]string{
		"since": {strconv.FormatUint(since, 10)},
		"wait":  {strconv.Itoa(int(e.cfg.PollWait / time.Second))},
	}
	sec, err := e.client.Logical().ReadWithDataWithContext(ctx, e.cfg.Mount+"/sync/changes", q)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusGone {
			return errResync
		}
		return fmt.Errorf("read sync/changes: %w", err)
	}
	if sec == nil {
		return errors.New("read sync/changes: empty answer")
	}
	var p contract.ChangesPage
	if err := remarshal(sec.Data, &p); err != nil {
		return fmt.Errorf("sync/changes: %w", err)
	}
	if err := e.store.apply(p.Changes, p.Seq); err != nil {
		e.log.Error("edge could not apply a change; resyncing", "error", err)
		return errResync
	}
	e.m.seq.Set(float64(p.Seq))
	e.m.changes.Add(float64(len(p.Changes)))
	e.markSynced()
	return nil
}

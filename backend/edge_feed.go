package backend

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// The edge feed: what an edge verifier (cmd/apikeys-edge) needs to verify
// keys next to a gateway without asking Vault, recorded on every write that
// matters to it (the change feed) and served by the sync paths
// (path_sync.go) as a paged snapshot plus the changes since.
//
// The edge finds a key by an HMAC under the verifier secret, a second
// per-mount secret that the sync paths hand to the edge so it can hash a
// presented key. It is never the storage pepper: whoever holds a gateway
// token can compute verifier hashes (and so confirm a guessed key, which
// 256 random bits make hopeless), but learns nothing that finds a record in
// storage, and no hash can be turned back into a key or into a new key.

// feedKeep is what compaction keeps (periodicEdgeFeed, about once a minute
// on the active node): an edge more than feedKeep changes behind at a
// compaction must load a snapshot again (sync/changes answers 410).
const feedKeep = 10000

// wireKeyOf is a key record as the sync feed sends it.
func wireKeyOf(e *keyEntry) *contract.WireKey {
	k := &contract.WireKey{
		EdgeHash: e.EdgeHash, KeyID: e.KeyID, Tenant: e.Tenant, Role: e.Role, Kind: e.Kind,
		Environment: e.Environment, Scopes: nonNilSlice(e.Scopes), AllowedCIDRs: nonNilSlice(e.AllowedCIDRs),
		RateLimit: e.RateLimit, RateLimitPeriod: int64(e.RateLimitPeriod / time.Second),
		Metadata: nonNilMap(e.Metadata), InGrace: e.InGrace, Disabled: e.Disabled, Quota: e.Quota,
	}
	if !e.ExpiresAt.IsZero() {
		k.ExpiresAt = e.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return k
}

// feedHead is a single entry so that appending is two puts and reading the
// feed's bounds is one get. First is the oldest seq still stored.
type feedHead struct {
	Seq   uint64 `json:"seq"`
	First uint64 `json:"first"`
}

// edgeFeed serialises appends (sequence numbers must not repeat), caches the
// head and wakes long-polling readers (mu guards head and notify), and
// caches the verifier hasher (verifierMu guards verifier and verSecret).
type edgeFeed struct {
	mu     sync.Mutex
	head   *feedHead
	notify chan struct{}

	verifierMu sync.RWMutex
	verifier   *keyformat.Hasher
	verSecret  []byte

	// waiting counts long polls blocked in wait (guarded by mu): a test
	// appends once a poll waits, instead of sleeping first.
	waiting int
}

// waitChan returns a channel closed by the next append (or invalidation).
func (f *edgeFeed) waitChan() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.notify == nil {
		f.notify = make(chan struct{})
	}
	return f.notify
}

func (f *edgeFeed) wakeLocked() {
	if f.notify != nil {
		close(f.notify)
		f.notify = nil
	}
}

// forgetHead drops the cached head and wakes long-polling readers
// (sync/changes) so they re-read it: Invalidate(edge/head) runs it when
// another node appended or compacted, which is how a standby's long polls
// learn of a change.
func (f *edgeFeed) forgetHead() {
	f.mu.Lock()
	f.head = nil
	f.wakeLocked()
	f.mu.Unlock()
}

// forgetVerifier drops the cached verifier hasher, so the next edgeHasher
// reads edge/verifier again. Only Invalidate(edge/verifier) and Clean run
// it, not a head write: the secret is written once, when absent, and
// dropping it on every feed write would make a standby read (and, on
// Enterprise, unwrap) the seal-wrapped entry again for every snapshot page
// after any key write.
func (f *edgeFeed) forgetVerifier() {
	f.verifierMu.Lock()
	f.verifier, f.verSecret = nil, nil
	f.verifierMu.Unlock()
}

// reset drops everything the feed caches; Clean runs it.
func (f *edgeFeed) reset() {
	f.forgetHead()
	f.forgetVerifier()
}

func (f *edgeFeed) loadHeadLocked(ctx context.Context, s logical.Storage) (*feedHead, error) {
	if f.head != nil {
		return f.head, nil
	}
	h, err := getJSON[feedHead](ctx, s, feedHeadPath, "edge feed head")
	if err != nil {
		return nil, err
	}
	if h == nil {
		h = &feedHead{First: 1}
	}
	f.head = h
	return h, nil
}

func (f *edgeFeed) readHead(ctx context.Context, s logical.Storage) (feedHead, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, err := f.loadHeadLocked(ctx, s)
	if err != nil {
		return feedHead{}, err
	}
	return *h, nil
}

// appendChange gives c the next sequence number and stores it. The change
// entry goes first and the head second, so a reader never sees a head that
// points at a missing entry.
func (f *edgeFeed) appendChange(ctx context.Context, s logical.Storage, c *contract.Change) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, err := f.loadHeadLocked(ctx, s)
	if err != nil {
		return err
	}
	c.Seq = h.Seq + 1
	c.At = time.Now().UTC()
	key := feedEntryKey(c.Seq)
	if err := putJSON(ctx, s, key, "edge change", c); err != nil {
		return err
	}
	next := feedHead{Seq: c.Seq, First: h.First}
	if err := putJSON(ctx, s, feedHeadPath, "edge feed head", next); err != nil {
		// Unknown whether the head landed: read it again next time. The
		// entry goes, so a head that did land points at a gap and readers
		// resync rather than miss the change's undo.
		f.head = nil
		if derr := s.Delete(ctx, key); derr != nil {
			return fmt.Errorf("%w (and delete change: %w)", err, derr)
		}
		return err
	}
	f.head = &next
	f.wakeLocked()
	return nil
}

// compact keeps the newest keep changes. The head moves first, so a reader
// asking for a change that is about to go is told to resync rather than
// handed a gap.
func (f *edgeFeed) compact(ctx context.Context, s logical.Storage, keep uint64) (int, error) {
	f.mu.Lock()
	h, err := f.loadHeadLocked(ctx, s)
	if err != nil {
		f.mu.Unlock()
		return 0, err
	}
	if h.Seq < keep || h.Seq-keep+1 <= h.First {
		f.mu.Unlock()
		return 0, nil
	}
	oldFirst, newFirst := h.First, h.Seq-keep+1
	next := feedHead{Seq: h.Seq, First: newFirst}
	if err := putJSON(ctx, s, feedHeadPath, "edge feed head", next); err != nil {
		f.head = nil
		f.mu.Unlock()
		return 0, err
	}
	f.head = &next
	f.mu.Unlock()
	n := 0
	for seq := oldFirst; seq < newFirst; seq++ {
		if err := s.Delete(ctx, feedEntryKey(seq)); err != nil {
			return n, fmt.Errorf("delete edge change %d: %w", seq, err)
		}
		n++
	}
	return n, nil
}

// changesSince returns up to limit changes after since. ok=false means the
// changes right after since were compacted away (or since is from another
// feed): the caller must load a snapshot.
func (f *edgeFeed) changesSince(ctx context.Context, s logical.Storage, since uint64, limit int) ([]*contract.Change, feedHead, bool, error) {
	h, err := f.readHead(ctx, s)
	if err != nil {
		return nil, h, false, err
	}
	if since > h.Seq || since+1 < h.First {
		return nil, h, false, nil
	}
	var out []*contract.Change
	for seq := since + 1; seq <= h.Seq && len(out) < limit; seq++ {
		c, err := getJSON[contract.Change](ctx, s, feedEntryKey(seq), "edge change")
		if err != nil {
			return nil, h, false, err
		}
		if c == nil {
			// Compacted between reading the head and now.
			return nil, h, false, nil
		}
		out = append(out, c)
	}
	return out, h, true, nil
}

type verifierEntry struct {
	Secret []byte `json:"secret"`
}

// edgeHasher returns the verifier hasher and its secret. With create it
// generates the secret on first use (issue, snapshot); without it returns
// nil when there is none yet.
func (b *backend) edgeHasher(ctx context.Context, s logical.Storage, create bool) (*keyformat.Hasher, []byte, error) {
	f := &b.feed
	f.verifierMu.RLock()
	h, sec := f.verifier, f.verSecret
	f.verifierMu.RUnlock()
	if h != nil {
		return h, sec, nil
	}
	f.verifierMu.Lock()
	defer f.verifierMu.Unlock()
	if f.verifier != nil {
		return f.verifier, f.verSecret, nil
	}
	ve, err := getJSON[verifierEntry](ctx, s, verifierPath, "edge verifier secret")
	if err != nil {
		return nil, nil, err
	}
	if ve == nil {
		if !create {
			return nil, nil, nil
		}
		sec, err := keyformat.NewPepper()
		if err != nil {
			return nil, nil, fmt.Errorf("generate edge verifier secret: %w", err)
		}
		ve = &verifierEntry{Secret: sec}
		if err := putJSON(ctx, s, verifierPath, "edge verifier secret", ve); err != nil {
			return nil, nil, err
		}
	}
	h, err = keyformat.NewHasher(ve.Secret)
	if err != nil {
		return nil, nil, fmt.Errorf("load edge verifier secret: %w", err)
	}
	f.verifier, f.verSecret = h, ve.Secret
	return h, ve.Secret, nil
}

// edgeHashOf is called at issue and rotation, the only moments the plugin
// holds the plaintext key.
func (b *backend) edgeHashOf(ctx context.Context, s logical.Storage, apiKey string) (string, error) {
	h, _, err := b.edgeHasher(ctx, s, true)
	if err != nil {
		return "", err
	}
	sum := h.Sum(apiKey)
	return hex.EncodeToString(sum[:]), nil
}

// edgeKeyWritten records a new or changed key record. Keys issued before
// edge sync existed have no edge hash: edges never learn them and ask Vault.
func (b *backend) edgeKeyWritten(ctx context.Context, s logical.Storage, e *keyEntry) error {
	if e.EdgeHash == "" {
		return nil
	}
	return b.feed.appendChange(ctx, s, &contract.Change{Op: contract.OpUpsert, Key: wireKeyOf(e), KeyID: e.KeyID, Tenant: e.Tenant})
}

func (b *backend) edgeKeyDeleted(ctx context.Context, s logical.Storage, tenant, id string) error {
	return b.feed.appendChange(ctx, s, &contract.Change{Op: contract.OpDelete, KeyID: id, Tenant: tenant})
}

func (b *backend) edgeTenantStatus(ctx context.Context, s logical.Storage, tenant, status string, quota *contract.QuotaRule) error {
	return b.feed.appendChange(ctx, s, &contract.Change{Op: contract.OpTenant, Tenant: tenant, TenantStatus: status, TenantQuota: quota})
}

// periodicEdgeFeed compacts on the node that may write.
func (b *backend) periodicEdgeFeed(ctx context.Context, req *logical.Request) {
	if !b.WriteSafeReplicationState() {
		return
	}
	if n, err := b.feed.compact(ctx, req.Storage, feedKeep); err != nil {
		b.Logger().Warn("edge feed compaction failed", "error", err)
	} else if n > 0 {
		b.Logger().Debug("edge feed compacted", "removed", n)
	}
}

// wait blocks until ch is closed (an append or an invalidation), d has
// passed or ctx ends.
func (f *edgeFeed) wait(ctx context.Context, ch chan struct{}, d time.Duration) error {
	f.mu.Lock()
	f.waiting++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

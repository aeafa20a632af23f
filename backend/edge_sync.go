package backend

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// Edge sync: what an edge verifier (cmd/apikeys-edge) needs to verify keys
// next to a gateway without asking Vault, as a paged snapshot plus a change
// feed.
//
// The edge finds a key by an HMAC under the verifier secret, a second
// per-mount secret that the sync paths hand to the edge so it can hash a
// presented key. It is never the storage pepper: whoever holds a gateway
// token can compute verifier hashes (and so confirm a guessed key, which
// 256 random bits make hopeless), but learns nothing that finds a record in
// storage, and no hash can be turned back into a key or into a new key.
const (
	// feedKeep bounds the feed: an edge further behind than this must load
	// a snapshot again (sync/changes answers 410).
	feedKeep = 10000
	// maxFeedWait stays well below Vault's default 90 s request timeout.
	maxFeedWait          = 60 * time.Second
	maxFeedBatch         = 1000
	defaultSnapshotLimit = 500
	maxSnapshotLimit     = 5000
)

// wireKeyOf is a key record as the sync feed sends it.
func wireKeyOf(e *keyEntry) *contract.WireKey {
	k := &contract.WireKey{
		EdgeHash: e.EdgeHash, KeyID: e.KeyID, Tenant: e.Tenant, Role: e.Role, Kind: e.Kind,
		Environment: e.Environment, Scopes: nonNilSlice(e.Scopes), AllowedCIDRs: nonNilSlice(e.AllowedCIDRs),
		RateLimit: e.RateLimit, RateLimitPeriod: int64(e.RateLimitPeriod / time.Second),
		Metadata: nonNilMap(e.Metadata), InGrace: e.InGrace,
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

func (b *backend) edgeTenantStatus(ctx context.Context, s logical.Storage, tenant, status string) error {
	return b.feed.appendChange(ctx, s, &contract.Change{Op: contract.OpTenant, Tenant: tenant, TenantStatus: status})
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

func (b *backend) pathSync() []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "sync/snapshot$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: map[string]*framework.FieldSchema{
				"after": {
					Type:        framework.TypeString,
					Description: "Cursor from the previous page's next; empty for the first page.",
				},
				"limit": {
					Type:        framework.TypeInt,
					Default:     defaultSnapshotLimit,
					Description: fmt.Sprintf("Keys per page, at most %d.", maxSnapshotLimit),
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathSyncSnapshot,
					Summary:      "Read one page of the keys an edge verifier needs.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "sync-snapshot"},
				},
			},
			HelpSynopsis:    pathSyncHelpSyn,
			HelpDescription: pathSyncHelpDesc,
		},
		{
			Pattern: "sync/changes$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: map[string]*framework.FieldSchema{
				"since": {
					Type:        framework.TypeInt,
					Description: "Sequence number already applied (the snapshot's seq, then each answer's seq).",
				},
				"wait": {
					Type:        framework.TypeDurationSecond,
					Description: fmt.Sprintf("Long-poll: wait up to this long (at most %s) for a change when there is none.", maxFeedWait),
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathSyncChanges,
					Summary:      "Read the changes after a sequence number.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "sync-changes"},
				},
			},
			HelpSynopsis:    pathSyncHelpSyn,
			HelpDescription: pathSyncHelpDesc,
		},
	}
}

func (b *backend) pathSyncSnapshot(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	after := d.Get("after").(string)
	limit := d.Get("limit").(int)
	if limit <= 0 || limit > maxSnapshotLimit {
		return logical.ErrorResponse("limit must be between 1 and %d", maxSnapshotLimit), nil
	}
	if after != "" {
		if _, ok := parseHash(after); !ok {
			return logical.ErrorResponse("after must be the next value of the previous page"), nil
		}
	}
	_, secret, err := b.edgeHasher(ctx, req.Storage, true)
	if err != nil {
		return nil, err
	}
	// The seq is read before the keys: whatever changes while the pages are
	// read is replayed from the feed, and replaying is idempotent.
	head, err := b.feed.readHead(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	hashes, err := req.Storage.List(ctx, hashPrefix)
	if err != nil {
		return nil, fmt.Errorf("list key records: %w", err)
	}
	sort.Strings(hashes)
	i := sort.SearchStrings(hashes, after)
	if i < len(hashes) && hashes[i] == after {
		i++
	}
	keys := make([]*contract.WireKey, 0, min(limit, len(hashes)-i))
	next := ""
	for ; i < len(hashes); i++ {
		if len(keys) == limit {
			next = hashes[i-1]
			break
		}
		rec, err := readKeyRecord(ctx, req.Storage, hashes[i])
		if err != nil {
			return nil, err
		}
		if rec == nil || rec.EdgeHash == "" {
			continue
		}
		keys = append(keys, wireKeyOf(rec))
	}
	page := contract.SnapshotPage{
		Seq:         head.Seq,
		VerifierKey: base64.StdEncoding.EncodeToString(secret),
		Keys:        keys,
		Next:        next,
	}
	if after == "" {
		tenants, err := req.Storage.List(ctx, tenantPrefix)
		if err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		status := make(map[string]string, len(tenants))
		for _, name := range tenants {
			if strings.HasSuffix(name, "/") {
				continue
			}
			t, err := readTenant(ctx, req.Storage, name)
			if err != nil {
				return nil, err
			}
			if t != nil {
				status[name] = t.Status
			}
		}
		page.Tenants = status
	}
	return &logical.Response{Data: page.Data()}, nil
}

func (b *backend) pathSyncChanges(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	sinceRaw := d.Get("since").(int)
	if sinceRaw < 0 {
		return logical.ErrorResponse("since must not be negative"), nil
	}
	since := uint64(sinceRaw)
	wait := time.Duration(d.Get("wait").(int)) * time.Second
	if wait < 0 || wait > maxFeedWait {
		return logical.ErrorResponse("wait must be between 0 and %d seconds", int(maxFeedWait.Seconds())), nil
	}
	deadline := time.Now().Add(wait)
	for {
		// Taken before reading, so an append in between still wakes us.
		ch := b.feed.waitChan()
		changes, head, ok, err := b.feed.changesSince(ctx, req.Storage, since, maxFeedBatch)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, logical.CodedError(http.StatusGone, fmt.Sprintf(
				"resync required: changes after %d are no longer kept (oldest kept: %d, latest: %d); load sync/snapshot again",
				since, head.First, head.Seq))
		}
		left := time.Until(deadline)
		if len(changes) > 0 || left <= 0 {
			seq := since
			if len(changes) > 0 {
				seq = changes[len(changes)-1].Seq
			}
			if changes == nil {
				changes = []*contract.Change{}
			}
			page := contract.ChangesPage{Changes: changes, Seq: seq, Head: head.Seq}
			return &logical.Response{Data: page.Data()}, nil
		}
		if err := b.feed.wait(ctx, ch, left); err != nil {
			return nil, fmt.Errorf("wait for edge changes: %w", err)
		}
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

const pathSyncHelpSyn = `Feed edge verifiers (cmd/apikeys-edge): a snapshot of keys and a change feed.`

const pathSyncHelpDesc = `
An edge verifier next to an API gateway verifies keys from memory. It loads
sync/snapshot page by page (after=<next of the previous page>, limit) and then
follows sync/changes?since=<seq>&wait=<seconds>.

Each key comes with edge_hash, an HMAC-SHA256 of the key under the mount's
verifier secret (returned as verifier_key so the edge can hash presented
keys). The verifier secret is not the storage pepper: its holder can confirm
a presented key but cannot find storage records, recover a key, or mint one.
Give these paths to edge verifiers only (bootstrap policy
apikeys-gateway-global).

Changes are recorded on writes only (issue, renew, rotation, revoke, expiry by
tidy, tenant status), never on verify. The newest ` + "10000" + ` are kept; an edge
further behind gets HTTP 410 and must load the snapshot again.
`

package backend

import (
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"sync/atomic"
	"time"

	uuid "github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// A key is two entries (storage.go): its record under hashes/, found by
// verify from the key alone, and its tenant's index entry under keys/,
// pointing at the record. The record is written last and deleted first, so
// a key that verifies is always listed (and so revocable) under its tenant.
const (
	kindDynamic = "dynamic"
	kindStatic  = "static"
)

type keyEntry struct {
	KeyID           string        `json:"key_id"`
	Tenant          string        `json:"tenant"`
	Role            string        `json:"role"`
	Kind            string        `json:"kind"`
	Name            string        `json:"name"`
	Hash            string        `json:"hash"`
	Environment     string        `json:"environment"`
	Scopes          []string      `json:"scopes"`
	AllowedCIDRs    []string      `json:"allowed_cidrs"`
	RateLimit       int           `json:"rate_limit"`
	RateLimitPeriod time.Duration `json:"rate_limit_period"`
	// Quota is the role's quota at issue, nil for none (quota.go).
	Quota     *contract.QuotaRule `json:"quota,omitempty"`
	Metadata  map[string]string   `json:"metadata"`
	CreatedAt time.Time           `json:"created_at"`
	// ExpiresAt is zero for a key that never expires.
	ExpiresAt time.Time `json:"expires_at"`
	// InGrace marks a rotated-out static key: valid until ExpiresAt.
	InGrace bool `json:"in_grace,omitempty"`
	// EdgeHash is the key's HMAC under the edge verifier secret
	// (edge_feed.go); empty for keys issued before edge sync existed.
	EdgeHash string `json:"edge_hash,omitempty"`
	// Hint is what people may see of the key (keyformat.Hint); empty for
	// keys issued before hints existed.
	Hint string `json:"hint,omitempty"`
	// Disabled: parked by its owner (keys/<key_id> status=disabled); it
	// verifies as DISABLED until enabled, its lease and rotation running
	// on meanwhile.
	Disabled bool `json:"disabled,omitempty"`
	// ExpiryPinned: the owner set ExpiresAt (keys/<key_id> expires_at), so
	// a lease renewal never moves it later.
	ExpiryPinned bool `json:"expiry_pinned,omitempty"`
	// UpdatedAt is the last change through keys/<key_id>; zero if none.
	UpdatedAt time.Time `json:"updated_at,omitzero"`

	// locator is the key's verify index position (verifyCache.locate),
	// set where the plaintext is at hand (issue, static rotation) so the
	// new key is cached at once. Memory only, never stored.
	locator uint64
}

type keyPointer struct {
	Hash string `json:"hash"`
}

// cachedKey is what the cache keeps of a key record: the per-key fields;
// the rest is its role's shared profile. The record itself is not kept:
// at 1M keys that is the difference between ~1 KB and ~0.3 KB per key. It
// is read-only once the cache holds it (the cache swaps in the shared
// profile when it stores it).
type cachedKey struct {
	// The first 64 bytes are what verify reads past the key's slot (its
	// rate limit and quota): one cache line, as the struct is 128 bytes
	// (the pad below), a size class whose objects start 128-aligned; at
	// 112 bytes most would straddle two lines.
	profile *keyProfile
	keyID   string
	// quota is the key's quota counters (its meter's state), set before
	// the cache holds a key whose role has a quota (attachKeyQuota): the
	// one field that changes once the cached key exists.
	quota atomic.Pointer[contract.QuotaState]
	// ownQuota holds the counters when this is the first cached key to
	// meet its meter (quotaTracker.key); a later one points at those.
	ownQuota contract.QuotaState
	inGrace  bool

	hash      [32]byte
	expiresAt int64  // unix nanoseconds; 0 never
	loc       uint64 // verifyCache.locate of the plaintext; 0 unknown
	_         [16]byte
}

func newCachedKey(e *keyEntry, hash [32]byte) (*cachedKey, error) {
	k := &cachedKey{hash: hash, keyID: e.KeyID, inGrace: e.InGrace, loc: e.locator}
	if !e.ExpiresAt.IsZero() {
		k.expiresAt = e.ExpiresAt.UnixNano()
	}
	var cidrs []netip.Prefix
	for _, c := range e.AllowedCIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("key %q: stored CIDR %q: %w", e.KeyID, c, err)
		}
		cidrs = append(cidrs, p)
	}
	k.profile = newKeyProfile(e, cidrs)
	return k, nil
}

// slot is the key's line in the verify index.
func (k *cachedKey) slot() verifySlot {
	return verifySlot{hash: k.hash, loc: k.loc, expiresAt: k.expiresAt, profile: k.profile, key: k}
}

func parseHash(s string) ([32]byte, bool) {
	var h [32]byte
	if hex.DecodedLen(len(s)) != len(h) {
		return h, false
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, false
	}
	return h, true
}

func (b *backend) tenantLock(tenant string) *locksutil.LockEntry {
	return locksutil.LockForKey(b.tenantLocks, tenant)
}

func (b *backend) hashLock(hashHex string) *locksutil.LockEntry {
	return locksutil.LockForKey(b.hashLocks, hashHex)
}

func readKeyRecord(ctx context.Context, s logical.Storage, hashHex string) (*keyEntry, error) {
	return getJSON[keyEntry](ctx, s, hashPrefix+hashHex, "key record")
}

func readKeyPointer(ctx context.Context, s logical.Storage, tenant, id string) (*keyPointer, error) {
	return getJSON[keyPointer](ctx, s, keyIndexPrefix(tenant)+id, fmt.Sprintf("key %q of tenant %q", id, tenant))
}

// readTenantKey reads a key's record through its tenant's index, so a
// tenant path can never reach another tenant's key.
func readTenantKey(ctx context.Context, s logical.Storage, tenant, id string) (*keyEntry, error) {
	p, err := readKeyPointer(ctx, s, tenant, id)
	if err != nil || p == nil {
		return nil, err
	}
	k, err := readKeyRecord(ctx, s, p.Hash)
	if err != nil || k == nil || k.Tenant != tenant {
		return nil, err
	}
	return k, nil
}

// mintKey makes the key of a new record whose tenant, environment and the
// rest the caller has set: the plaintext (returned once, never stored), a
// key id, the HMAC under the mount's pepper (created with the first key),
// the edge hash, the hint and the verify index position. It stores nothing; dynamic
// issue and static rotation both mint here, so their keys cannot differ.
func (b *backend) mintKey(ctx context.Context, s logical.Storage, cfg *mountConfig, t *tenantEntry, rec *keyEntry) (string, error) {
	h, err := b.getHasher(ctx, s, true)
	if err != nil {
		return "", err
	}
	prefix := t.KeyPrefix
	if prefix == "" {
		prefix = cfg.KeyPrefix
	}
	apiKey, err := keyformat.Generate(prefix, rec.Environment)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	if rec.KeyID, err = uuid.GenerateUUID(); err != nil {
		return "", fmt.Errorf("generate key id: %w", err)
	}
	sum := h.Sum(apiKey)
	rec.Hash = hex.EncodeToString(sum[:])
	rec.Hint = keyformat.Hint(apiKey)
	if rec.EdgeHash, err = b.edgeHashOf(ctx, s, apiKey); err != nil {
		return "", err
	}
	rec.locator = b.cache.locate(apiKey)
	return apiKey, nil
}

// keyMetadata is a new key's metadata: base (its role's) with its own
// pairs over it; never nil, so a key always answers an object.
func keyMetadata(base, own map[string]string) map[string]string {
	md := maps.Clone(base)
	if md == nil {
		md = map[string]string{}
	}
	maps.Copy(md, own)
	return md
}

// storeNewKey writes a new key: index entry first, record second; when the
// record cannot be written the index entry is removed again, so a failed
// issue leaves nothing behind.
func (b *backend) storeNewKey(ctx context.Context, s logical.Storage, e *keyEntry) error {
	index := keyIndexPrefix(e.Tenant) + e.KeyID
	if err := putJSON(ctx, s, index, "key index", keyPointer{Hash: e.Hash}); err != nil {
		return err
	}
	if err := b.putKeyRecord(ctx, s, e); err != nil {
		if derr := s.Delete(ctx, index); derr != nil {
			b.Logger().Error("could not remove the index entry of a key that failed to issue",
				"tenant", e.Tenant, "key_id", e.KeyID, "error", derr)
		}
		return err
	}
	return nil
}

// putKeyRecord writes a new key record and caches it under the key's hash
// lock, so verify sees the key on its very next call.
func (b *backend) putKeyRecord(ctx context.Context, s logical.Storage, e *keyEntry) error {
	lock := b.hashLock(e.Hash)
	lock.Lock()
	defer lock.Unlock()
	// Edges hear of the key before it exists: a crash in between leaves
	// them an entry for a key whose plaintext nobody ever got (tidy tells
	// them it is gone when it removes the orphan index entry), never a
	// record that tidy cannot tell from a live key.
	if err := b.edgeKeyWritten(ctx, s, e); err != nil {
		return fmt.Errorf("record new key for edges: %w", err)
	}
	if err := b.putKeyRecordLocked(ctx, s, e); err != nil {
		if derr := b.edgeKeyDeleted(ctx, s, e.Tenant, e.KeyID); derr != nil {
			b.Logger().Warn("could not tell edges of a key that failed to issue; they keep an entry for it until their next snapshot",
				"tenant", e.Tenant, "key_id", e.KeyID, "error", derr)
		}
		return err
	}
	return nil
}

// updateKeyRecord changes an existing record under its hash lock, so a
// concurrent revoke can never be undone by the write. It returns nil when
// the key is gone.
func (b *backend) updateKeyRecord(ctx context.Context, s logical.Storage, hashHex string, change func(*keyEntry)) (*keyEntry, error) {
	return b.editKeyRecord(ctx, s, hashHex, func(e *keyEntry) error {
		change(e)
		return nil
	})
}

// editKeyRecord is updateKeyRecord for a change that may refuse: when
// change returns an error nothing is written and the error is returned, so
// a check against the record and the write it allows see one version of
// it (keys/<key_id> checks expires_at against the expiry a renewal may be
// moving).
func (b *backend) editKeyRecord(ctx context.Context, s logical.Storage, hashHex string, change func(*keyEntry) error) (*keyEntry, error) {
	lock := b.hashLock(hashHex)
	lock.Lock()
	defer lock.Unlock()
	e, err := readKeyRecord(ctx, s, hashHex)
	if err != nil || e == nil {
		return nil, err
	}
	if err := change(e); err != nil {
		return nil, err
	}
	if err := b.putKeyRecordLocked(ctx, s, e); err != nil {
		return nil, err
	}
	// An edge that missed this would keep the old expiry or grace, so the
	// caller sees the failure and retries (lease renew, rotation recovery).
	if err := b.edgeKeyWritten(ctx, s, e); err != nil {
		return nil, fmt.Errorf("record key change for edges: %w", err)
	}
	return e, nil
}

func (b *backend) putKeyRecordLocked(ctx context.Context, s logical.Storage, e *keyEntry) error {
	hash, ok := parseHash(e.Hash)
	if !ok {
		return fmt.Errorf("key %q has a malformed hash", e.KeyID)
	}
	ck, err := newCachedKey(e, hash)
	if err != nil {
		return err
	}
	// Known before it is stored, so no verify can take it for absent.
	b.known.add(hash)
	if err := putJSON(ctx, s, hashPrefix+e.Hash, "key record", e); err != nil {
		// The write may or may not have landed: let verify read the truth.
		b.cache.deleteKey(hash)
		return err
	}
	if err := b.attachKeyQuota(ctx, s, ck); err != nil {
		// Not cached without its quota counters: the next verify reads
		// the record and tries again.
		b.cache.deleteKey(hash)
		b.Logger().Warn("quota counters of a written key unreadable; it is verified from storage", "tenant", e.Tenant, "key_id", e.KeyID, "error", err)
		return nil
	}
	b.cache.putKey(ck)
	return nil
}

// revokeKey deletes a key found through its tenant's index. Revoking a key
// that is already gone succeeds.
func (b *backend) revokeKey(ctx context.Context, s logical.Storage, tenant, id string) error {
	p, err := readKeyPointer(ctx, s, tenant, id)
	if err != nil {
		return err
	}
	if p == nil {
		return nil
	}
	return b.revokeKeyByHash(ctx, s, tenant, id, p.Hash)
}

// revokeKeyByHash needs nothing but what a lease carries, so a lease revokes
// its key even after the key's role or tenant was deleted.
func (b *backend) revokeKeyByHash(ctx context.Context, s logical.Storage, tenant, id, hashHex string) error {
	// Edges hear of the revoke first. If that fails, nothing is deleted
	// yet and a retry (Vault's, for a lease, or the caller's) starts over;
	// told last, a failure left the key deleted here, and the retry found
	// no index entry and had nothing left to tell them.
	if err := b.edgeKeyDeleted(ctx, s, tenant, id); err != nil {
		return fmt.Errorf("record revocation of key %q for edges: %w", id, err)
	}
	lock := b.hashLock(hashHex)
	lock.Lock()
	// The hint names the key in key-revoked. A record that cannot be read
	// does not stop the revoke: the event then goes without it.
	var hint string
	if rec, rerr := readKeyRecord(ctx, s, hashHex); rerr == nil && rec != nil {
		hint = rec.Hint
	}
	err := s.Delete(ctx, hashPrefix+hashHex)
	// Forget the cached copy even when the delete failed: a later verify
	// then reads storage, which is the truth either way.
	if h, ok := parseHash(hashHex); ok {
		b.cache.deleteKey(h)
		if err == nil {
			b.known.remove(h)
		}
	}
	lock.Unlock()
	if err != nil {
		return fmt.Errorf("delete key %q of tenant %q: %w", id, tenant, err)
	}
	if err := s.Delete(ctx, keyIndexPrefix(tenant)+id); err != nil {
		return fmt.Errorf("delete index of key %q of tenant %q: %w", id, tenant, err)
	}
	b.limiter.forget(id)
	b.keyQuotaRevoked(ctx, s, tenant, id)
	b.keyRevoked(ctx, s, tenant, id, hint)
	return nil
}

package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/robfig/cron/v3"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// Static keys live in one entry each, which also holds the current key in
// plaintext (Vault Agent must be able to read it), so the prefix is
// seal-wrapped. The keys themselves are ordinary key records (hashes/…,
// keys/<tenant>/…) of kind "static", so verify treats every key alike.
const (
	minRotationPeriod = 5 * time.Second

	walKindRotate = "rotate-static-key"
)

type staticKeyEntry struct {
	Name             string            `json:"name"`
	Tenant           string            `json:"tenant"`
	Role             string            `json:"role"`
	Environment      string            `json:"environment"`
	RotationPeriod   time.Duration     `json:"rotation_period"`
	RotationSchedule string            `json:"rotation_schedule"`
	RotationWindow   time.Duration     `json:"rotation_window"`
	GracePeriod      time.Duration     `json:"grace_period"`
	Metadata         map[string]string `json:"metadata"`
	CreatedAt        time.Time         `json:"created_at"`

	CurrentKey  string `json:"current_key"`
	CurrentID   string `json:"current_id"`
	CurrentHash string `json:"current_hash"`

	PreviousID        string    `json:"previous_id,omitempty"`
	PreviousHash      string    `json:"previous_hash,omitempty"`
	PreviousExpiresAt time.Time `json:"previous_expires_at"`

	LastRotated  time.Time `json:"last_rotated"`
	NextRotation time.Time `json:"next_rotation"`

	// Disabled parks the static key (keys/<key_id> status=disabled on one
	// of its keys): its current and rotated-out keys verify as DISABLED,
	// and so does every key rotation makes until it is enabled. It is kept
	// here rather than on the key records alone so that rotation, which
	// goes on while parked, does not hand out a working key.
	Disabled bool `json:"disabled,omitempty"`
}

// rotateWAL is written before a rotation touches anything. It holds no
// key, only what recovery needs to finish or undo the rotation.
type rotateWAL struct {
	Tenant       string    `json:"tenant"`
	Name         string    `json:"name"`
	NewID        string    `json:"new_id"`
	NewHash      string    `json:"new_hash"`
	OldID        string    `json:"old_id"`
	OldHash      string    `json:"old_hash"`
	DropID       string    `json:"drop_id"`
	DropHash     string    `json:"drop_hash"`
	GraceEndsAt  time.Time `json:"grace_ends_at"`
	StartedAtUTC time.Time `json:"started_at"`
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

func parseSchedule(spec string) (cron.Schedule, error) {
	return cronParser.Parse(spec)
}

// interval is the time between two rotations: the period, or for a
// schedule the gap between its next two firings after from.
func (e *staticKeyEntry) interval(from time.Time) time.Duration {
	if e.RotationSchedule == "" {
		return e.RotationPeriod
	}
	sched, err := parseSchedule(e.RotationSchedule)
	if err != nil {
		return 0
	}
	n1 := sched.Next(from.UTC())
	return sched.Next(n1).Sub(n1)
}

// nextRotation after a rotation (or creation) at from.
func (e *staticKeyEntry) nextRotation(from time.Time) time.Time {
	if e.RotationSchedule == "" {
		return from.Add(e.RotationPeriod)
	}
	sched, err := parseSchedule(e.RotationSchedule)
	if err != nil {
		return from.Add(time.Hour)
	}
	return sched.Next(from.UTC())
}

// dueAt is when the rotation engine must next look at the key: a rotation
// or the end of the previous key's grace, whichever comes first.
func (e *staticKeyEntry) dueAt() time.Time {
	due := e.NextRotation
	if e.PreviousID != "" && e.PreviousExpiresAt.Before(due) {
		due = e.PreviousExpiresAt
	}
	return due
}

func readStaticKey(ctx context.Context, s logical.Storage, tenant, name string) (*staticKeyEntry, error) {
	return getJSON[staticKeyEntry](ctx, s, staticKeyPrefix(tenant)+name, fmt.Sprintf("static key %q of tenant %q", name, tenant))
}

func writeStaticKey(ctx context.Context, s logical.Storage, e *staticKeyEntry) error {
	return putJSON(ctx, s, staticKeyPrefix(e.Tenant)+e.Name, fmt.Sprintf("static key %q of tenant %q", e.Name, e.Tenant), e)
}

// newStaticKeyRecord makes a fresh key for a static key from its role (or,
// when the role is gone, from the current key's snapshot) without storing it.
func (b *backend) newStaticKeyRecord(ctx context.Context, s logical.Storage, t *tenantEntry, e *staticKeyEntry, now time.Time) (*keyEntry, string, error) {
	cfg, err := readConfig(ctx, s)
	if err != nil {
		return nil, "", err
	}
	rec := &keyEntry{Tenant: e.Tenant, Role: e.Role, Kind: kindStatic, Name: e.Name, Environment: e.Environment, CreatedAt: now, Disabled: e.Disabled}
	r, err := readRole(ctx, s, e.Tenant, e.Role)
	if err != nil {
		return nil, "", err
	}
	var roleMetadata map[string]string
	switch {
	case r != nil:
		rec.Scopes, rec.AllowedCIDRs, rec.RateLimit, rec.RateLimitPeriod = r.Scopes, r.AllowedCIDRs, r.RateLimit, r.RateLimitPeriod
		rec.Quota = r.quotaRule()
		roleMetadata = r.Metadata
	case e.CurrentHash != "":
		cur, err := readKeyRecord(ctx, s, e.CurrentHash)
		if err != nil {
			return nil, "", err
		}
		if cur != nil {
			rec.Scopes, rec.AllowedCIDRs, rec.RateLimit, rec.RateLimitPeriod = cur.Scopes, cur.AllowedCIDRs, cur.RateLimit, cur.RateLimitPeriod
			rec.Quota = cur.Quota
			// The role's metadata too: the current key holds it merged
			// with the static key's own, which is applied again below.
			roleMetadata = cur.Metadata
		}
		b.Logger().Warn("role of static key is gone; rotating with the current key's scopes, CIDRs, rate limit and metadata", "tenant", e.Tenant, "static_key", e.Name, "role", e.Role)
	default:
		return nil, "", fmt.Errorf("role %q of tenant %q does not exist", e.Role, e.Tenant)
	}
	rec.Metadata = keyMetadata(roleMetadata, e.Metadata)
	apiKey, err := b.mintKey(ctx, s, cfg, t, rec)
	if err != nil {
		return nil, "", err
	}
	return rec, apiKey, nil
}

// rotateStaticKey replaces the current key of a static key; the old key
// stays valid (in_grace) for the grace period. Caller holds the tenant lock.
//
// Crash safety: a WAL entry goes first; the new key's records are written;
// then the static key entry is switched to the new key in one write, which
// is the commit point; then the old key is put into its grace and the key
// before it removed; then the WAL is deleted. recoverRotations finishes a
// committed rotation and undoes an uncommitted one, so at every instant the
// static key has a valid key and no key is lost.
func (b *backend) rotateStaticKey(ctx context.Context, s logical.Storage, e *staticKeyEntry, now time.Time) error {
	return b.rotateStaticKeyWithGrace(ctx, s, e, now, e.GracePeriod, now)
}

// rotateStaticKeyWithGrace rotates with the given grace for the old key; 0
// revokes the old key at once (a leaked key).
// The next rotation counts from "from": now for a rotation on demand, the
// due time for a scheduled one, so periodic rotations do not drift later by
// the engine's tick each time.
func (b *backend) rotateStaticKeyWithGrace(ctx context.Context, s logical.Storage, e *staticKeyEntry, now time.Time, grace time.Duration, from time.Time) error {
	t, err := readTenant(ctx, s, e.Tenant)
	if err != nil {
		return err
	}
	if t == nil {
		return fmt.Errorf("tenant %q does not exist", e.Tenant)
	}
	rec, apiKey, err := b.newStaticKeyRecord(ctx, s, t, e, now)
	if err != nil {
		return err
	}
	w := &rotateWAL{
		Tenant: e.Tenant, Name: e.Name, NewID: rec.KeyID, NewHash: rec.Hash,
		OldID: e.CurrentID, OldHash: e.CurrentHash, DropID: e.PreviousID, DropHash: e.PreviousHash,
		GraceEndsAt: now.Add(grace), StartedAtUTC: now,
	}
	walID, err := framework.PutWAL(ctx, s, walKindRotate, w)
	if err != nil {
		return fmt.Errorf("write rotation WAL: %w", err)
	}
	// Undo at once what a failed rotation wrote, so no key that was never
	// handed out stays valid; if storage is still failing, the WAL stays
	// and the next retry or restart finishes the job.
	undo := func(err error) error {
		if rerr := b.recoverRotationLocked(ctx, s, walID, w); rerr != nil {
			b.Logger().Warn("could not undo a failed static key rotation yet", "tenant", e.Tenant, "static_key", e.Name, "error", rerr)
		}
		return err
	}
	if err := b.storeNewKey(ctx, s, rec); err != nil {
		return undo(err)
	}
	next := *e
	next.CurrentKey, next.CurrentID, next.CurrentHash = apiKey, rec.KeyID, rec.Hash
	next.PreviousID, next.PreviousHash, next.PreviousExpiresAt = "", "", time.Time{}
	if e.CurrentID != "" && grace > 0 {
		next.PreviousID, next.PreviousHash, next.PreviousExpiresAt = e.CurrentID, e.CurrentHash, w.GraceEndsAt
	}
	next.LastRotated = now
	next.NextRotation = next.nextRotation(from)
	if err := writeStaticKey(ctx, s, &next); err != nil {
		return undo(err)
	}
	previousHint := keyformat.Hint(e.CurrentKey)
	*e = next
	b.staticKeyRotated(ctx, s, e, w, previousHint)
	return b.finishRotation(ctx, s, walID, w)
}

// finishRotation is the part of a rotation after its commit point; it is
// idempotent, so recovery can run it again.
func (b *backend) finishRotation(ctx context.Context, s logical.Storage, walID string, w *rotateWAL) error {
	if w.OldHash != "" {
		if w.GraceEndsAt.After(w.StartedAtUTC) {
			_, err := b.updateKeyRecord(ctx, s, w.OldHash, func(k *keyEntry) {
				k.InGrace = true
				k.ExpiresAt = w.GraceEndsAt
			})
			if err != nil {
				return err
			}
		} else if err := b.revokeKeyByHash(ctx, s, w.Tenant, w.OldID, w.OldHash); err != nil {
			return err
		}
	}
	if w.DropHash != "" {
		if err := b.revokeKeyByHash(ctx, s, w.Tenant, w.DropID, w.DropHash); err != nil {
			return err
		}
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		return fmt.Errorf("delete rotation WAL: %w", err)
	}
	return nil
}

// recoverRotations runs on start: every rotation WAL left by a crash is
// finished (the static key already points at the new key) or undone (it
// does not, so the new key was never handed out).
func (b *backend) recoverRotations(ctx context.Context, s logical.Storage) error {
	ids, err := framework.ListWAL(ctx, s)
	if err != nil {
		return fmt.Errorf("list WAL: %w", err)
	}
	for _, id := range ids {
		we, err := framework.GetWAL(ctx, s, id)
		if err != nil {
			return fmt.Errorf("read WAL %s: %w", id, err)
		}
		if we == nil || we.Kind != walKindRotate {
			continue
		}
		var w rotateWAL
		if err := mapToStruct(we.Data, &w); err != nil {
			return fmt.Errorf("decode WAL %s: %w", id, err)
		}
		if err := b.recoverRotation(ctx, s, id, &w); err != nil {
			return err
		}
	}
	return nil
}

func (b *backend) recoverRotation(ctx context.Context, s logical.Storage, walID string, w *rotateWAL) error {
	lock := b.tenantLock(w.Tenant)
	lock.Lock()
	defer lock.Unlock()
	return b.recoverRotationLocked(ctx, s, walID, w)
}

func (b *backend) recoverRotationLocked(ctx context.Context, s logical.Storage, walID string, w *rotateWAL) error {
	e, err := readStaticKey(ctx, s, w.Tenant, w.Name)
	if err != nil {
		return err
	}
	if e != nil && e.CurrentHash == w.NewHash {
		b.Logger().Info("finishing an interrupted static key rotation", "tenant", w.Tenant, "static_key", w.Name)
		return b.finishRotation(ctx, s, walID, w)
	}
	b.Logger().Info("undoing an interrupted static key rotation", "tenant", w.Tenant, "static_key", w.Name)
	if err := b.revokeKeyByHash(ctx, s, w.Tenant, w.NewID, w.NewHash); err != nil {
		return err
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		return fmt.Errorf("delete rotation WAL: %w", err)
	}
	return nil
}

// expirePrevious removes the previous key once its grace has ended.
// Caller holds the tenant lock.
func (b *backend) expirePrevious(ctx context.Context, s logical.Storage, e *staticKeyEntry, now time.Time) error {
	if e.PreviousID == "" || now.Before(e.PreviousExpiresAt) {
		return nil
	}
	id, hash := e.PreviousID, e.PreviousHash
	e.PreviousID, e.PreviousHash, e.PreviousExpiresAt = "", "", time.Time{}
	// Entry first: a crash after it leaves a key record that verify already
	// refuses as EXPIRED and tidy removes, never an entry pointing at nothing.
	if err := writeStaticKey(ctx, s, e); err != nil {
		return err
	}
	return b.revokeKeyByHash(ctx, s, e.Tenant, id, hash)
}

// deleteStaticKey revokes a static key's current and previous keys and
// removes it. Caller holds the tenant lock.
func (b *backend) deleteStaticKey(ctx context.Context, s logical.Storage, e *staticKeyEntry) error {
	for _, k := range [][2]string{{e.CurrentID, e.CurrentHash}, {e.PreviousID, e.PreviousHash}} {
		if k[0] == "" {
			continue
		}
		if err := b.revokeKeyByHash(ctx, s, e.Tenant, k[0], k[1]); err != nil {
			return err
		}
	}
	if err := s.Delete(ctx, staticKeyPrefix(e.Tenant)+e.Name); err != nil {
		return fmt.Errorf("delete static key %q of tenant %q: %w", e.Name, e.Tenant, err)
	}
	b.rotations.remove(e.Tenant, e.Name)
	return nil
}

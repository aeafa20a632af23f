package backend

import (
	"context"
	"errors"
	"math/bits"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// revokeCause travels in the context of a revocation that the engine
// decides itself, so the key-revoked event can say why.
type revokeCause struct {
	Reason string
	Data   map[string]interface{}
}

type revokeCauseKey struct{}

func withRevokeCause(ctx context.Context, c revokeCause) context.Context {
	return context.WithValue(ctx, revokeCauseKey{}, c)
}

// emit sends an event as a Vault event and, when s is given, stores one
// delivery per interested webhook target in the outbox. The dispatcher
// sends them later, off this goroutine. A failed enqueue is logged and
// counted, never returned: the change that raised the event has happened
// and must not be reported as failed.
func (b *backend) emit(ctx context.Context, s logical.Storage, ev *notify.Event) {
	b.metrics.events.WithLabelValues(ev.Type).Inc()
	b.sendVaultEvent(ctx, ev)
	if s == nil {
		return
	}
	targets, err := b.notificationTargets(ctx, s)
	if err != nil {
		b.metrics.enqueueFailures.Inc()
		b.Logger().Error("notification not queued: targets unreadable", "event", ev.Type, "id", ev.ID, "error", err)
		return
	}
	now := time.Now()
	for _, t := range targets {
		if !t.Wants(ev.Type, ev.Tenant) {
			continue
		}
		del, err := notify.NewDelivery(ev, t.Name, now)
		if err == nil {
			err = b.dispatcher.Enqueue(ctx, s, del)
		}
		if err != nil {
			b.metrics.enqueueFailures.Inc()
			b.Logger().Error("notification not queued", "event", ev.Type, "id", ev.ID, "target", t.Name, "error", err)
		}
	}
}

// sendVaultEvent publishes ev on Vault's event bus as apikeys/<type>, with
// the same id as the webhook body. Servers without an event system (the
// community edition) accept it as a no-op or refuse it; either is fine.
func (b *backend) sendVaultEvent(ctx context.Context, ev *notify.Event) {
	md := map[string]*structpb.Value{
		logical.EventMetadataOperation: structpb.NewStringValue(ev.Type),
		"occurred_at":                  structpb.NewStringValue(ev.OccurredAt.Format(time.RFC3339)),
	}
	if ev.Tenant != "" {
		md["tenant"] = structpb.NewStringValue(ev.Tenant)
		md[logical.EventMetadataPath] = structpb.NewStringValue("tenants/" + ev.Tenant)
		if id, ok := ev.Data["key_id"].(string); ok {
			md[logical.EventMetadataPath] = structpb.NewStringValue("tenants/" + ev.Tenant + "/keys/" + id)
		}
	}
	for k, v := range ev.Data {
		switch v := v.(type) {
		case string:
			md[k] = structpb.NewStringValue(v)
		case []string:
			md[k] = structpb.NewStringValue(strings.Join(v, ","))
		case int64:
			md[k] = structpb.NewStringValue(strconv.FormatInt(v, 10))
		case int:
			md[k] = structpb.NewStringValue(strconv.Itoa(v))
		case bool:
			md[k] = structpb.NewStringValue(strconv.FormatBool(v))
		}
	}
	err := b.SendEvent(ctx, logical.EventType("apikeys/"+ev.Type), &logical.EventData{Id: ev.ID, Metadata: &structpb.Struct{Fields: md}})
	if err != nil && !errors.Is(err, framework.ErrNoEvents) {
		b.Logger().Debug("vault event not sent", "event", ev.Type, "error", err)
	}
}

func newEvent(typ, tenant string, data map[string]interface{}, id string, now time.Time) *notify.Event {
	return &notify.Event{ID: id, Type: typ, OccurredAt: now.UTC(), Tenant: tenant, Data: data}
}

func timeOrNil(t time.Time) interface{} {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

// keyIssued is the issue hook (creds, and the first key of a static key).
func (b *backend) keyIssued(ctx context.Context, s logical.Storage, e *keyEntry) {
	t := b.usage.tenant(e.Tenant)
	t.issued.Add(1)
	t.dirty.Store(true)
	b.emit(ctx, s, newEvent(notify.KeyIssued, e.Tenant, map[string]interface{}{
		"key_id":      e.KeyID,
		"hint":        e.Hint,
		"role":        e.Role,
		"kind":        e.Kind,
		"name":        e.Name,
		"environment": e.Environment,
		"scopes":      nonNilSlice(e.Scopes),
		"expires_at":  timeOrNil(e.ExpiresAt),
	}, notify.StableID(notify.KeyIssued, e.Tenant, e.KeyID), time.Now()))
}

// keyUpdated is the hook after keys/<key_id> changed a key: changed names
// the fields (status, name, metadata, expires_at). One id per change, so a
// receiver deduplicates retries, not later changes.
func (b *backend) keyUpdated(ctx context.Context, s logical.Storage, e *keyEntry, changed []string) {
	status := keyStatusActive
	if e.Disabled {
		status = keyStatusDisabled
	}
	b.emit(ctx, s, newEvent(notify.KeyUpdated, e.Tenant, map[string]interface{}{
		"key_id":     e.KeyID,
		"hint":       e.Hint,
		"role":       e.Role,
		"kind":       e.Kind,
		"name":       e.Name,
		"status":     status,
		"changed":    changed,
		"expires_at": timeOrNil(e.ExpiresAt),
	}, notify.StableID(notify.KeyUpdated, e.Tenant, e.KeyID, e.UpdatedAt.Format(time.RFC3339Nano)), time.Now()))
}

// keyRevoked is the hook at the end of every successful revocation. A key
// can be revoked twice (deleted, then its lease ends); the usage tombstone
// makes the second one silent. hint is the record's, "" when there was
// none.
func (b *backend) keyRevoked(ctx context.Context, s logical.Storage, tenant, id, hint string) {
	now := time.Now()
	cause, _ := ctx.Value(revokeCauseKey{}).(revokeCause)
	if cause.Reason == "" {
		cause.Reason = "revoked"
	}
	first, err := b.usage.tombstone(ctx, s, tenant, id, cause.Reason, now)
	if err != nil {
		// Better a duplicate (same event id) than a revocation nobody hears of.
		b.Logger().Warn("could not record a key's revocation in its usage", "tenant", tenant, "key_id", id, "error", err)
		first = true
	}
	if !first {
		return
	}
	t := b.usage.tenant(tenant)
	t.revoked.Add(1)
	t.dirty.Store(true)
	data := map[string]interface{}{"key_id": id, "hint": hint, "reason": cause.Reason}
	for k, v := range cause.Data {
		data[k] = v
	}
	b.emit(ctx, s, newEvent(notify.KeyRevoked, tenant, data, notify.StableID(notify.KeyRevoked, tenant, id), now))
}

// staticKeyRotated is the hook after a static key's rotation committed. The
// first "rotation" of a static key issues its first key. previousHint is
// the hint of the key rotated out.
func (b *backend) staticKeyRotated(ctx context.Context, s logical.Storage, e *staticKeyEntry, w *rotateWAL, previousHint string) {
	hint := keyformat.Hint(e.CurrentKey)
	if w.OldID == "" {
		b.keyIssued(ctx, s, &keyEntry{KeyID: e.CurrentID, Tenant: e.Tenant, Role: e.Role, Kind: kindStatic, Name: e.Name, Environment: e.Environment, Hint: hint})
		return
	}
	t := b.usage.tenant(e.Tenant)
	t.rotations.Add(1)
	t.dirty.Store(true)
	data := map[string]interface{}{
		"static_key":      e.Name,
		"role":            e.Role,
		"key_id":          e.CurrentID,
		"hint":            hint,
		"previous_key_id": w.OldID,
		"previous_hint":   previousHint,
		"grace_ends_at":   nil,
		"next_rotation":   timeOrNil(e.NextRotation),
	}
	if w.GraceEndsAt.After(w.StartedAtUTC) {
		data["grace_ends_at"] = timeOrNil(w.GraceEndsAt)
	}
	b.emit(ctx, s, newEvent(notify.KeyRotated, e.Tenant, data, notify.StableID(notify.KeyRotated, e.Tenant, e.Name, e.CurrentID), time.Now()))
}

// rotationFailed is the hook of a failed scheduled rotation. Retries come
// every few seconds to minutes, so the event is raised on attempts 1, 2, 4,
// 8, ...: a failing key is reported at once and then ever more rarely.
func (b *backend) rotationFailed(ctx context.Context, s logical.Storage, tenant, name string, attempt int, retryIn time.Duration, cause error) {
	t := b.usage.tenant(tenant)
	t.rotationFailures.Add(1)
	t.dirty.Store(true)
	if attempt < 1 || bits.OnesCount(uint(attempt)) != 1 {
		return
	}
	ev, err := notify.New(notify.RotationFailed, tenant, map[string]interface{}{
		"static_key":       name,
		"attempt":          attempt,
		"retry_in_seconds": int64(retryIn.Seconds()),
		"error":            cause.Error(),
	}, time.Now())
	if err != nil {
		b.Logger().Error("rotation-failed event not raised", "tenant", tenant, "static_key", name, "error", err)
		return
	}
	b.emit(ctx, s, ev)
}

// tenantWritten is the hook after a tenant write. The tenant's usage record
// remembers the status last seen, so the event fires on the change to
// suspended only, and only once even across restarts.
func (b *backend) tenantWritten(ctx context.Context, s logical.Storage, te *tenantEntry) {
	t := b.usage.tenant(te.Name)
	t.mu.Lock()
	if err := b.usage.loadTenantBase(ctx, s, t); err != nil {
		t.mu.Unlock()
		b.Logger().Warn("tenant status change not checked", "tenant", te.Name, "error", err)
		return
	}
	prev := t.base.LastStatus
	if prev == te.Status {
		t.mu.Unlock()
		return
	}
	t.base.LastStatus = te.Status
	err := b.usage.writeTenant(ctx, s, t, time.Now())
	t.mu.Unlock()
	if err != nil {
		b.Logger().Warn("tenant status not recorded in its usage", "tenant", te.Name, "error", err)
	}
	if te.Status != contract.TenantSuspended {
		return
	}
	b.emit(ctx, s, newEvent(notify.TenantSuspended, te.Name, map[string]interface{}{
		"display_name":    te.DisplayName,
		"previous_status": prev,
	}, notify.StableID(notify.TenantSuspended, te.Name, te.UpdatedAt.Format(time.RFC3339Nano)), time.Now()))
}

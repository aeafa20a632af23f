// Package notify delivers the engine's notifications to webhook receivers:
// events, their HMAC signature, the durable outbox in Vault storage and the
// dispatcher that drains it with retries, backoff and a dead-letter list.
//
// It knows nothing of tenants or keys beyond the strings in an event, so the
// backend decides what to send and this package only guarantees how:
// at least once, signed, never on a request's own goroutine.
package notify

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	uuid "github.com/hashicorp/go-uuid"
)

// Event types: the public contract with receivers. Vault events carry the
// same names under the "apikeys/" namespace.
const (
	KeyIssued       = "key-issued"
	KeyRevoked      = "key-revoked"
	KeyRotated      = "key-rotated"
	KeyExpiring     = "key-expiring"
	KeyUpdated      = "key-updated"
	KeyLeaked       = "key-leaked"
	RotationFailed  = "rotation-failed"
	VerifyAnomaly   = "verify-anomaly"
	TenantSuspended = "tenant-suspended"
)

// Types lists every event type, for filters and their validation.
var Types = []string{KeyIssued, KeyRevoked, KeyRotated, KeyExpiring, KeyUpdated, KeyLeaked, RotationFailed, VerifyAnomaly, TenantSuspended}

// ValidType reports whether t is one of Types.
func ValidType(t string) bool { return slices.Contains(Types, t) }

// Event is the JSON body a receiver gets. ID is the idempotency id: every
// attempt and every target sees the same id for the same event, so a
// receiver that remembers ids never acts twice.
type Event struct {
	ID         string                 `json:"id"`
	Type       string                 `json:"type"`
	OccurredAt time.Time              `json:"occurred_at"`
	Tenant     string                 `json:"tenant,omitempty"`
	Data       map[string]interface{} `json:"data"`
}

// New makes an event with a random id.
func New(typ, tenant string, data map[string]interface{}, now time.Time) (*Event, error) {
	id, err := uuid.GenerateUUID()
	if err != nil {
		return nil, fmt.Errorf("generate event id: %w", err)
	}
	return &Event{ID: id, Type: typ, OccurredAt: now.UTC(), Tenant: tenant, Data: data}, nil
}

// StableID derives an event id from what identifies the event, for events
// that more than one code path may raise for the same fact (a key revoked by
// a delete and later again by its lease ending): both then carry one id and
// a receiver deduplicates them like a retry.
func StableID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		// Length-prefixed, so ("ab","c") and ("a","bc") differ.
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	s := h.Sum(nil)
	// Shaped like a version-8 UUID so receivers that store ids as UUIDs cope.
	s[6] = (s[6] & 0x0f) | 0x80
	s[8] = (s[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// Body is the exact byte sequence sent and signed.
func (e *Event) Body() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return b, nil
}

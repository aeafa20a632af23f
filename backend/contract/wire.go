package contract

import "time"

// The sync feed: what an edge verifier needs to verify keys next to a
// gateway without asking Vault. sync/snapshot sends pages of WireKeys,
// sync/changes the Changes after a sequence number.

// WireKey is everything verification needs about one key, and nothing that
// would let its holder find a storage record or forge a key: EdgeHash is an
// HMAC under the verifier secret, never the storage pepper's.
type WireKey struct {
	EdgeHash        string            `json:"edge_hash"`
	KeyID           string            `json:"key_id"`
	Tenant          string            `json:"tenant"`
	Role            string            `json:"role"`
	Kind            string            `json:"kind"`
	Environment     string            `json:"environment"`
	Scopes          []string          `json:"scopes"`
	AllowedCIDRs    []string          `json:"allowed_cidrs"`
	RateLimit       int               `json:"rate_limit"`
	RateLimitPeriod int64             `json:"rate_limit_period"` // seconds
	Metadata        map[string]string `json:"metadata"`
	ExpiresAt       string            `json:"expires_at,omitempty"` // RFC 3339, empty: never
	InGrace         bool              `json:"in_grace"`
	// Disabled: parked by its owner; the edge answers DISABLED (Decide).
	Disabled bool `json:"disabled,omitempty"`
}

// Change operations.
const (
	OpUpsert = "upsert" // Key is new or changed
	OpDelete = "delete" // KeyID is gone
	OpTenant = "tenant" // Tenant's status is TenantStatus (TenantDeleted: gone)
)

// Change is one write that matters to an edge. Deletes name the key id
// only: revoke paths do not read the record first, and an edge maps ids to
// its hashes itself.
type Change struct {
	Seq          uint64    `json:"seq"`
	Op           string    `json:"op"`
	Key          *WireKey  `json:"key,omitempty"`
	KeyID        string    `json:"key_id,omitempty"`
	Tenant       string    `json:"tenant,omitempty"`
	TenantStatus string    `json:"tenant_status,omitempty"`
	At           time.Time `json:"at"`
}

// SnapshotPage is one page of sync/snapshot. Seq is the feed position the
// snapshot starts from; Next the cursor of the following page ("" on the
// last); VerifierKey (base64) comes on every page, Tenants on the first
// (after="") only.
type SnapshotPage struct {
	Seq         uint64            `json:"seq"`
	VerifierKey string            `json:"verifier_key"`
	Keys        []*WireKey        `json:"keys"`
	Next        string            `json:"next"`
	Tenants     map[string]string `json:"tenants,omitempty"`
}

// Data is the page as Vault's response data.
func (p *SnapshotPage) Data() map[string]interface{} {
	d := map[string]interface{}{
		"seq":          p.Seq,
		"verifier_key": p.VerifierKey,
		"keys":         p.Keys,
		"next":         p.Next,
	}
	if p.Tenants != nil {
		d["tenants"] = p.Tenants
	}
	return d
}

// ChangesPage is one answer of sync/changes: Changes after the asked seq,
// Seq the last one sent (the asked seq when none), Head the feed's newest.
type ChangesPage struct {
	Changes []*Change `json:"changes"`
	Seq     uint64    `json:"seq"`
	Head    uint64    `json:"head"`
}

// Data is the page as Vault's response data.
func (p *ChangesPage) Data() map[string]interface{} {
	return map[string]interface{}{"changes": p.Changes, "seq": p.Seq, "head": p.Head}
}

// MaxUsageReports is the most entries one usage/report request may hold.
const MaxUsageReports = 1000

// UsageReport is one entry of usage/report: traffic a gateway or edge
// served with one key since its last report.
type UsageReport struct {
	Tenant               string  `json:"tenant"`
	KeyID                string  `json:"key_id"`
	Requests             uint64  `json:"requests"`
	Errors               uint64  `json:"errors,omitempty"`
	UpstreamLatencyMsSum float64 `json:"upstream_latency_ms_sum,omitempty"`
	UpstreamLatencyMsMax float64 `json:"upstream_latency_ms_max,omitempty"`
	LastUsedAt           int64   `json:"last_used_at,omitempty"` // unix seconds
}

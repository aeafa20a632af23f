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
	// Quota is the key's own quota (its role's at issue); nil: none.
	Quota *QuotaRule `json:"quota,omitempty"`
}

// Change operations.
const (
	OpUpsert = "upsert" // Key is new or changed
	OpDelete = "delete" // KeyID is gone
	OpTenant = "tenant" // Tenant's status is TenantStatus (TenantDeleted: gone), its quota TenantQuota
	// OpQuota: Quotas say where quotas stand on the active node, one
	// change per usage flush (and one per manual refill), not per request.
	OpQuota = "quota"
)

// Change is one write that matters to an edge. Deletes name the key id
// only: revoke paths do not read the record first, and an edge maps ids to
// its hashes itself.
type Change struct {
	Seq          uint64   `json:"seq"`
	Op           string   `json:"op"`
	Key          *WireKey `json:"key,omitempty"`
	KeyID        string   `json:"key_id,omitempty"`
	Tenant       string   `json:"tenant,omitempty"`
	TenantStatus string   `json:"tenant_status,omitempty"`
	// TenantQuota comes with OpTenant: the tenant's quota, nil for none.
	TenantQuota *QuotaRule `json:"tenant_quota,omitempty"`
	// Quotas comes with OpQuota.
	Quotas []*QuotaStanding `json:"quotas,omitempty"`
	At     time.Time        `json:"at"`
}

// SnapshotPage is one page of sync/snapshot. Seq is the feed position the
// snapshot starts from; Next the cursor of the following page ("" on the
// last); VerifierKey (base64) comes on every page, Tenants and
// TenantQuotas on the first (after="") only. Quotas says where the quotas
// of the page's keys stand, and on the first page its tenants' too.
type SnapshotPage struct {
	Seq          uint64               `json:"seq"`
	VerifierKey  string               `json:"verifier_key"`
	Keys         []*WireKey           `json:"keys"`
	Next         string               `json:"next"`
	Tenants      map[string]string    `json:"tenants,omitempty"`
	TenantQuotas map[string]QuotaRule `json:"tenant_quotas,omitempty"`
	Quotas       []*QuotaStanding     `json:"quotas,omitempty"`
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
	if p.TenantQuotas != nil {
		d["tenant_quotas"] = p.TenantQuotas
	}
	if p.Quotas != nil {
		d["quotas"] = p.Quotas
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
	// VerifyByCode is the verify answers an edge gave about the key
	// without Vault, by code (AboutKey codes only; VALID equals Requests),
	// so the key's and its tenant's verify counts and usage history count
	// them as they count Vault's own.
	VerifyByCode map[string]uint64 `json:"verify_by_code,omitempty"`
	// QuotaUsed of the requests spent the key's own quota in the period
	// starting at QuotaPeriodStart (unix seconds); TenantQuotaUsed spent
	// its tenant's quota in the period starting at TenantQuotaPeriodStart.
	// An edge sends them; the active node counts them only in the period
	// it is in itself.
	QuotaPeriodStart       int64 `json:"quota_period_start,omitempty"`
	QuotaUsed              int64 `json:"quota_used,omitempty"`
	TenantQuotaPeriodStart int64 `json:"tenant_quota_period_start,omitempty"`
	TenantQuotaUsed        int64 `json:"tenant_quota_used,omitempty"`
}

// UsageReportAnswer is the part of usage/report's answer an edge reads:
// where the quotas of the reported keys (and their tenants) stand on the
// active node, the report just counted included.
type UsageReportAnswer struct {
	Quotas []*QuotaStanding `json:"quotas"`
}

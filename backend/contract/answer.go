package contract

import "time"

// Answer is the verify answer. Vault's verify path sends Data(); an edge
// sends the struct as JSON. Only VALID answers carry more than valid and
// code.
type Answer struct {
	Valid       bool              `json:"valid"`
	Code        string            `json:"code"`
	KeyID       string            `json:"key_id,omitempty"`
	Tenant      string            `json:"tenant,omitempty"`
	Role        string            `json:"role,omitempty"`
	Scopes      []string          `json:"scopes,omitempty"`
	Environment string            `json:"environment,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	ExpiresAt   *string           `json:"expires_at,omitempty"`
	Kind        string            `json:"kind,omitempty"`
	InGrace     bool              `json:"in_grace,omitempty"`
	// QuotaRemaining and QuotaResetsAt come when a quota applies:
	// remaining on a VALID answer, the reset on VALID and QUOTA_EXCEEDED
	// (a gateway's Retry-After).
	QuotaRemaining *int64  `json:"quota_remaining,omitempty"`
	QuotaResetsAt  *string `json:"quota_resets_at,omitempty"`
}

// Refusal is the answer for a code other than VALID.
func Refusal(code string) Answer { return Answer{Code: code} }

// SetQuota adds the quota's fields to a, when a quota applies.
func (a *Answer) SetQuota(q Quota) {
	if q.Limit == 0 {
		return
	}
	if a.Valid {
		rem := q.Remaining
		a.QuotaRemaining = &rem
	}
	a.QuotaResetsAt = Expiry(q.ResetsAt)
}

// Data is the answer as Vault's verify path returns it: a VALID answer
// names every field, expires_at null for a key that never expires, so
// scripts reading -format=json find them all. TestAnswerDataMatchesJSON
// holds the names to the struct's tags.
func (a *Answer) Data() map[string]interface{} {
	if !a.Valid {
		d := map[string]interface{}{"valid": false, "code": a.Code}
		if a.QuotaResetsAt != nil {
			d["quota_resets_at"] = *a.QuotaResetsAt
		}
		return d
	}
	var expires interface{}
	if a.ExpiresAt != nil {
		expires = *a.ExpiresAt
	}
	d := map[string]interface{}{
		"valid":       true,
		"code":        a.Code,
		"key_id":      a.KeyID,
		"tenant":      a.Tenant,
		"role":        a.Role,
		"scopes":      a.Scopes,
		"environment": a.Environment,
		"metadata":    a.Metadata,
		"expires_at":  expires,
		"kind":        a.Kind,
		"in_grace":    a.InGrace,
	}
	if a.QuotaRemaining != nil {
		d["quota_remaining"] = *a.QuotaRemaining
	}
	if a.QuotaResetsAt != nil {
		d["quota_resets_at"] = *a.QuotaResetsAt
	}
	return d
}

// Expiry formats an expiry in unix nanoseconds for the answer (RFC 3339,
// UTC, whole seconds); nil for 0, a key that never expires.
func Expiry(unixNano int64) *string {
	if unixNano == 0 {
		return nil
	}
	s := time.Unix(0, unixNano).UTC().Format(time.RFC3339)
	return &s
}

package backend

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	uuid "github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

const (
	// maxUsageKeys bounds the keys one usage read looks at; a bigger tenant
	// gets its totals and a truncated key list.
	maxUsageKeys      = 10_000
	defaultUsageLimit = 100
)

func (b *backend) pathUsage() []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "tenants/" + namePattern("tenant") + "/usage$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields: map[string]*framework.FieldSchema{
				"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
				"stale_after": {
					Type:        framework.TypeDurationSecond,
					Description: "Report keys unused (never verified, or not since) this long as stale. Default: config/monitoring stale_after.",
				},
				"limit": {
					Type:        framework.TypeInt,
					Description: "Most keys listed in keys, stale_keys and expiring_keys.",
					Default:     defaultUsageLimit,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathTenantUsageRead,
					Summary:      "Read a tenant's usage: verify counts by code and role, key counts, stale and expiring keys, gateway-reported traffic.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "tenant-usage"},
				},
			},
			HelpSynopsis:    pathTenantUsageHelpSyn,
			HelpDescription: pathTenantUsageHelpDesc,
		},
		{
			Pattern:      "usage/report$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields: map[string]*framework.FieldSchema{
				"reports": {
					Type:        framework.TypeSlice,
					Description: `Batch of up to 1000 objects {"tenant", "key_id", "requests", "errors", "upstream_latency_ms_sum", "upstream_latency_ms_max", "last_used_at", "verify_by_code", "quota_period_start", "quota_used", "tenant_quota_period_start", "tenant_quota_used"} (last_used_at, verify_by_code and the quota fields are sent by edge verifiers: unix seconds, the answers it gave about the key by code, and counts).`,
					Required:    true,
				},
			},
			ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback: b.pathUsageReport,
					Summary:  "Report, per key, requests a gateway served and their upstream latency.",
					// Counted where they are flushed, so gateway figures are
					// durable whichever node the gateway reached.
					ForwardPerformanceStandby: true,
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "report", OperationSuffix: "usage"},
				},
			},
			HelpSynopsis:    pathUsageReportHelpSyn,
			HelpDescription: pathUsageReportHelpDesc,
		},
	}
}

// --- usage/report ---

type gatewayReport struct {
	tenant, keyID        string
	requests, errs       uint64
	latencySumMicro, max uint64
	// lastUsedSec (unix seconds) comes from edge verifiers, whose
	// verifications Vault never sees.
	lastUsedSec uint64
	// quota is what an edge served of the key's and its tenant's quotas.
	quota quotaReport
	// codes is the verify answers an edge gave about the key without
	// Vault (verify_by_code), indexed like contract.VerifyCodes.
	codes [numCodes]uint64
}

func (b *backend) pathUsageReport(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	raw, ok, err := d.GetOkErr("reports")
	if err != nil {
		return fieldError("reports", err), nil
	}
	if !ok {
		return logical.ErrorResponse("missing reports"), nil
	}
	list := raw.([]interface{})
	if len(list) == 0 {
		return logical.ErrorResponse("reports must hold at least one entry"), nil
	}
	if len(list) > contract.MaxUsageReports {
		return logical.ErrorResponse("reports must hold at most %d entries, got %d", contract.MaxUsageReports, len(list)), nil
	}
	reports := make([]gatewayReport, len(list))
	for i, item := range list {
		r, err := parseReport(item)
		if err != nil {
			return logical.ErrorResponse("invalid reports[%d].%s", i, err.Error()), nil
		}
		reports[i] = r
	}
	// All validated before anything is counted: a bad batch counts nothing.
	type rejected struct {
		Index  int    `json:"index"`
		KeyID  string `json:"key_id"`
		Reason string `json:"reason"`
	}
	var rej []rejected
	accepted := 0
	quotas := []*contract.QuotaStanding{}
	tenantQuotas := map[string]*contract.QuotaStanding{}
	now := b.usage.now()
	for i, r := range reports {
		hash, err := b.keyOfTenant(ctx, req.Storage, r.tenant, r.keyID)
		if err != nil {
			return nil, err
		}
		if hash == nil {
			rej = append(rej, rejected{Index: i, KeyID: r.keyID, Reason: "no such key of this tenant"})
			continue
		}
		if err := b.recordReport(ctx, req.Storage, r, hash); err != nil {
			return nil, err
		}
		kq, tq, err := b.reportQuota(ctx, req.Storage, r.tenant, r.keyID, hash, r.quota, now)
		if err != nil {
			return nil, err
		}
		if kq != nil {
			quotas = append(quotas, kq)
		}
		if tq != nil {
			tenantQuotas[r.tenant] = tq
		}
		accepted++
	}
	for _, tq := range tenantQuotas {
		quotas = append(quotas, tq)
	}
	out := make([]interface{}, len(rej))
	for i, r := range rej {
		out[i] = map[string]interface{}{"index": r.Index, "key_id": r.KeyID, "reason": r.Reason}
	}
	return &logical.Response{Data: map[string]interface{}{"accepted": accepted, "rejected": out, "quotas": quotas}}, nil
}

// keyOfTenant finds the key's HMAC if the key exists and belongs to the
// tenant, from memory when this node has seen the key, else from its index
// entry: a gateway can neither invent keys nor book traffic on another
// tenant.
func (b *backend) keyOfTenant(ctx context.Context, s logical.Storage, tenant, id string) (*[32]byte, error) {
	if k := b.usage.peekKey(id); k != nil {
		if k.tenant != tenant {
			return nil, nil
		}
		return &k.hash, nil
	}
	p, err := readKeyPointer(ctx, s, tenant, id)
	if err != nil || p == nil {
		return nil, err
	}
	h, ok := parseHash(p.Hash)
	if !ok {
		return nil, fmt.Errorf("key %q of tenant %q has a malformed hash", id, tenant)
	}
	return &h, nil
}

func (b *backend) recordReport(ctx context.Context, s logical.Storage, r gatewayReport, hash *[32]byte) error {
	k := b.usage.key(r.tenant, r.keyID, "", hash)
	if err := b.countReportedVerifies(ctx, s, k, &r.codes); err != nil {
		return err
	}
	k.requests.Add(r.requests)
	k.errors.Add(r.errs)
	k.latencyMicro.Add(r.latencySumMicro)
	storeMax(&k.latencyMax, r.max)
	storeMax(&k.hist.latencyMax, r.max)
	if r.lastUsedSec > 0 {
		// A reporter's clock may run ahead; never record the future.
		n := min(int64(r.lastUsedSec)*int64(time.Second), b.usage.now().UnixNano())
		for {
			cur := k.lastUsed.Load()
			if n <= cur || k.lastUsed.CompareAndSwap(cur, n) {
				break
			}
		}
	}
	k.dirty.Store(true)
	t := k.tu
	t.requests.Add(r.requests)
	t.errors.Add(r.errs)
	t.latencyMicro.Add(r.latencySumMicro)
	storeMax(&t.hist.latencyMax, r.max)
	t.dirty.Store(true)
	return nil
}

// countReportedVerifies books the verify answers an edge gave about k as
// recordVerify books Vault's: VALID on the key, its tenant and its role,
// refusals on the key's history and the tenant's codes. Anomaly detection
// does not see them (an edge's own metrics count its refusals). A key first
// seen in a report has no role on this node yet: it is read from the key's
// record once.
func (b *backend) countReportedVerifies(ctx context.Context, s logical.Storage, k *keyUsage, codes *[numCodes]uint64) error {
	if n := codes[0]; n > 0 {
		rc := k.role.Load()
		if rc == nil {
			e, err := readKeyRecord(ctx, s, hex.EncodeToString(k.hash[:]))
			if err != nil {
				return err
			}
			if e != nil {
				rc = k.tu.role(e.Role)
				k.role.Store(rc)
			}
		}
		if rc != nil {
			rc.Add(n)
		}
		k.verifies.Add(n)
		k.tu.codes[0].Add(n)
	}
	for i := 1; i < numCodes; i++ {
		if n := codes[i]; n > 0 {
			k.countRefusals(i, n)
			k.tu.codes[i].Add(n)
		}
	}
	return nil
}

// parseReport validates one entry; its error starts with the field name.
func parseReport(item interface{}) (gatewayReport, error) {
	m, ok := item.(map[string]interface{})
	if !ok {
		return gatewayReport{}, fmt.Errorf("entry: must be an object")
	}
	var r gatewayReport
	r.tenant, _ = m["tenant"].(string)
	if err := validateName("tenant", r.tenant); err != nil {
		return r, fmt.Errorf("tenant: %w", err)
	}
	r.keyID, _ = m["key_id"].(string)
	if _, err := uuid.ParseUUID(r.keyID); err != nil {
		// The value is not echoed: a gateway that mixes up its fields
		// would send the API key itself here.
		return r, fmt.Errorf("key_id: not a key id (a UUID)")
	}
	var err error
	if r.requests, err = nonNegative(m, "requests", 1); err != nil {
		return r, err
	}
	if r.errs, err = nonNegative(m, "errors", 1); err != nil {
		return r, err
	}
	if r.errs > r.requests {
		return r, fmt.Errorf("errors: %d exceeds requests (%d)", r.errs, r.requests)
	}
	if r.latencySumMicro, err = nonNegative(m, "upstream_latency_ms_sum", 1000); err != nil {
		return r, err
	}
	if r.max, err = nonNegative(m, "upstream_latency_ms_max", 1000); err != nil {
		return r, err
	}
	if r.lastUsedSec, err = nonNegative(m, "last_used_at", 1); err != nil {
		return r, err
	}
	if r.quota, err = parseQuotaReport(m, r.requests); err != nil {
		return r, err
	}
	if err := parseReportCodes(m, &r.codes); err != nil {
		return r, err
	}
	return r, nil
}

// parseReportCodes reads an entry's optional verify_by_code: an object of
// verify codes about a key (contract.AboutKey) to non-negative counts.
func parseReportCodes(m map[string]interface{}, codes *[numCodes]uint64) error {
	raw, ok := m["verify_by_code"]
	if !ok || raw == nil {
		return nil
	}
	byCode, ok := raw.(map[string]interface{})
	if !ok {
		return fmt.Errorf("verify_by_code: must be an object of verify codes to counts")
	}
	for code := range byCode {
		if !contract.AboutKey(code) {
			// Codes are short constants; a gateway's mistake here is not
			// a secret, but only its length is echoed, as for key_id.
			if len(code) > 32 {
				return fmt.Errorf("verify_by_code: a %d-character name is not a verify code about a key", len(code))
			}
			return fmt.Errorf("verify_by_code: %q is not a verify code about a key (MALFORMED and NOT_FOUND name no key)", code)
		}
		n, err := nonNegative(byCode, code, 1)
		if err != nil {
			return fmt.Errorf("verify_by_code.%w", err)
		}
		codes[codeIndex(code)] = n
	}
	return nil
}

// nonNegative reads an optional number field, times scale, as an integer.
func nonNegative(m map[string]interface{}, field string, scale float64) (uint64, error) {
	raw, ok := m[field]
	if !ok || raw == nil {
		return 0, nil
	}
	var f float64
	switch v := raw.(type) {
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return 0, fmt.Errorf("%s: %q is not a number", field, v)
		}
	case float64:
		f = v
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	case string:
		var err error
		if f, err = strconv.ParseFloat(v, 64); err != nil {
			return 0, fmt.Errorf("%s: %q is not a number", field, v)
		}
	default:
		return 0, fmt.Errorf("%s: must be a number", field)
	}
	if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || f*scale > 1e15 {
		return 0, fmt.Errorf("%s: %v is out of range", field, raw)
	}
	return uint64(math.Round(f * scale)), nil
}

// --- tenants/<tenant>/usage and the key read ---

// keyUsageData is what the key read and the usage read show of a key.
func keyUsageData(u keyUsageRecord) map[string]interface{} {
	data := map[string]interface{}{
		"last_used_at": timeOrNil(u.LastUsedAt),
		"verify_count": u.VerifyCount,
	}
	addGatewayFigures(data, u.Requests, u.Errors, u.LatencyMicro, u.LatencyMax)
	return data
}

// addGatewayFigures sets what gateways reported of a key (or in a usage
// history bucket): requests, errors, and the upstream latency's average
// and maximum in milliseconds, null without requests.
func addGatewayFigures(data map[string]interface{}, requests, errs, latencyMicro, latencyMax uint64) {
	data["requests"], data["errors"] = requests, errs
	data["upstream_latency_ms_avg"], data["upstream_latency_ms_max"] = nil, nil
	if requests > 0 {
		data["upstream_latency_ms_avg"] = math.Round(float64(latencyMicro)/float64(requests)) / 1000
		data["upstream_latency_ms_max"] = float64(latencyMax) / 1000
	}
}

// withKeyUsage adds a key's usage to its read response (the hook of
// tenants/<tenant>/keys/<key_id>). Usage that cannot be read leaves the
// fields out with a warning rather than failing the read.
func (b *backend) withKeyUsage(ctx context.Context, s logical.Storage, e *keyEntry, data map[string]interface{}) *logical.Response {
	resp := &logical.Response{Data: data}
	u, err := b.usage.keyUsageOf(ctx, s, e.Tenant, e.KeyID)
	if err != nil {
		b.Logger().Warn("key usage unreadable", "tenant", e.Tenant, "key_id", e.KeyID, "error", err)
		resp.AddWarning("usage figures unavailable: " + err.Error())
		return resp
	}
	for k, v := range keyUsageData(u) {
		data[k] = v
	}
	return resp
}

func (b *backend) pathTenantUsageRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant := d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return fieldError("tenant", err), nil
	}
	mcfg := b.usage.cfg.Load()
	staleAfter := mcfg.StaleAfter
	if v, ok, err := d.GetOkErr("stale_after"); err != nil {
		return fieldError("stale_after", err), nil
	} else if ok {
		if v.(int) <= 0 {
			return logical.ErrorResponse("stale_after must be positive"), nil
		}
		staleAfter = time.Duration(v.(int)) * time.Second
	}
	limit := d.Get("limit").(int)
	if limit < 0 || limit > maxUsageKeys {
		return logical.ErrorResponse("limit must be between 0 and %d", maxUsageKeys), nil
	}
	t, err := readTenant(ctx, req.Storage, tenant)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return logical.ErrorResponse("unknown tenant %q", tenant), nil
	}
	cfg, err := readConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	tu, err := b.usage.tenantUsageOf(ctx, req.Storage, tenant)
	if err != nil {
		return nil, err
	}
	ids, err := req.Storage.List(ctx, keyIndexPrefix(tenant))
	if err != nil {
		return nil, fmt.Errorf("list keys of tenant %q: %w", tenant, err)
	}
	sort.Strings(ids)
	now := b.usage.now()
	truncated := len(ids) > maxUsageKeys
	if truncated {
		ids = ids[:maxUsageKeys]
	}
	keys := map[string]interface{}{}
	stale, expiring := []string{}, []string{}
	var nStale, nExpiring int
	for _, id := range ids {
		e, err := readTenantKey(ctx, req.Storage, tenant, id)
		if err != nil {
			return nil, err
		}
		if e == nil {
			continue
		}
		u, err := b.usage.keyUsageOf(ctx, req.Storage, tenant, id)
		if err != nil {
			return nil, err
		}
		last := e.CreatedAt
		if u.LastUsedAt.After(last) {
			last = u.LastUsedAt
		}
		kd := keyUsageData(u)
		kd["kind"], kd["role"], kd["hint"] = e.Kind, e.Role, e.Hint
		kd["stale"] = now.Sub(last) >= staleAfter
		kd["expires_at"] = timeOrNil(e.ExpiresAt)
		if kd["stale"].(bool) {
			nStale++
			if len(stale) < limit {
				stale = append(stale, id)
			}
		}
		if !e.ExpiresAt.IsZero() && now.Before(e.ExpiresAt) && !now.Add(cfg.ExpiryWarning).Before(e.ExpiresAt) {
			nExpiring++
			if len(expiring) < limit {
				expiring = append(expiring, id)
			}
		}
		if len(keys) < limit {
			keys[id] = kd
		}
	}
	var verifies uint64
	for _, n := range tu.VerifyByCode {
		verifies += n
	}
	gateway := map[string]interface{}{"requests": tu.Requests, "errors": tu.Errors, "upstream_latency_ms_avg": nil}
	if tu.Requests > 0 {
		gateway["upstream_latency_ms_avg"] = math.Round(float64(tu.LatencyMicro)/float64(tu.Requests)) / 1000
	}
	return &logical.Response{Data: map[string]interface{}{
		"tenant":            tenant,
		"verify_count":      verifies,
		"verify_by_code":    nonNilCounts(tu.VerifyByCode),
		"verify_by_role":    nonNilCounts(tu.VerifyByRole),
		"keys_active":       len(ids),
		"keys_issued":       tu.Issued,
		"keys_revoked":      tu.Revoked,
		"keys_stale":        nStale,
		"keys_expiring":     nExpiring,
		"stale_after":       int64(staleAfter.Seconds()),
		"expiry_warning":    int64(cfg.ExpiryWarning.Seconds()),
		"stale_keys":        stale,
		"expiring_keys":     expiring,
		"keys":              keys,
		"keys_truncated":    truncated || len(ids) > limit,
		"rotations":         tu.Rotations,
		"rotation_failures": tu.RotationFailures,
		"anomalies":         tu.Anomalies,
		"gateway":           gateway,
	}}, nil
}

func nonNilCounts(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return map[string]uint64{}
	}
	return m
}

const pathTenantUsageHelpSyn = `Read a tenant's usage.`

const pathTenantUsageHelpDesc = `
Totals since the tenant's first use (stored by the active node about once a
minute, plus what this node counted since):

  verify_count, verify_by_code, verify_by_role   verify answers
  keys_active, keys_issued, keys_revoked         key counts
  keys_stale, stale_keys                         keys not verified for
                                                 stale_after (default from
                                                 config/monitoring)
  keys_expiring, expiring_keys                   keys inside config's
                                                 expiry_warning
  keys                                           per key: verify_count,
                                                 last_used_at, gateway
                                                 requests/errors/latency
  rotations, rotation_failures, anomalies
  gateway                                        what gateways reported
                                                 through usage/report

Lists hold at most limit keys. A read looks at every key of the tenant (up
to 10000), so it is an operator's read, not a per-request one. On a
performance standby, the figures are storage's plus that node's own counts.
`

const pathUsageReportHelpSyn = `Report per-key traffic seen by a gateway.`

const pathUsageReportHelpDesc = `
Gateways know what verify does not: how many requests a key made and how the
upstream answered. Send them in batches (up to 1000 entries):

  {"reports": [{"tenant": "acme", "key_id": "<uuid>", "requests": 120,
                "errors": 3, "upstream_latency_ms_sum": 5400.5,
                "upstream_latency_ms_max": 250}]}

Edge verifiers also send last_used_at (unix seconds) and verify_by_code, the
answers they gave about the key without Vault ({"VALID": 120, "DISABLED": 2};
any code but MALFORMED and NOT_FOUND): they count in the key's and the
tenant's verify figures and usage history like Vault's own answers.

Entries for keys that do not exist or belong to another tenant are
returned in rejected and not counted; a malformed entry fails the whole
batch with a 400 naming it. Figures show in tenants/<tenant>/usage and
tenants/<tenant>/keys/<key_id>. Give gateways "update" on this path next to
verify.
`

package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func historyFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
		"granularity": {
			Type:          framework.TypeString,
			Description:   "Bucket size: hour (the last 48 hours are kept) or day (config/monitoring usage_retention).",
			Default:       "hour",
			AllowedValues: []interface{}{"hour", "day"},
		},
		"from": {
			Type:        framework.TypeString,
			Description: "First bucket: an RFC 3339 time (the bucket holding it) or a date (2026-12-03: its first bucket). Default: 24 hours or 30 days before to.",
		},
		"to": {
			Type:        framework.TypeString,
			Description: "Last bucket: an RFC 3339 time (the bucket holding it) or a date (its last bucket). Default, and at most: the current bucket.",
		},
	}
}

func (b *backend) pathUsageHistory() []*framework.Path {
	keyFields := historyFields()
	keyFields["key_id"] = &framework.FieldSchema{Type: framework.TypeString, Description: "Id of the key.", Required: true}
	return []*framework.Path{
		{
			Pattern:      "tenants/" + namePattern("tenant") + "/keys/" + namePattern("key_id") + "/usage/history$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:       keyFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathKeyUsageHistoryRead,
					Summary:      "Read a key's usage history: hourly or daily buckets of verify answers by code and gateway traffic.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "key-usage-history"},
				},
			},
			HelpSynopsis:    pathKeyUsageHistoryHelpSyn,
			HelpDescription: pathKeyUsageHistoryHelpDesc,
		},
		{
			Pattern:      "tenants/" + namePattern("tenant") + "/usage/history$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:       historyFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathTenantUsageHistoryRead,
					Summary:      "Read a tenant's usage history: hourly or daily buckets of verify answers by code and gateway traffic.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "tenant-usage-history"},
				},
			},
			HelpSynopsis:    pathTenantUsageHistoryHelpSyn,
			HelpDescription: pathTenantUsageHistoryHelpDesc,
		},
	}
}

func (b *backend) pathTenantUsageHistoryRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant := d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return fieldError("tenant", err), nil
	}
	now := b.usage.now()
	r, resp := historyRangeOf(d, now, b.usage.cfg.Load().UsageRetention)
	if resp != nil {
		return resp, nil
	}
	t, err := readTenant(ctx, req.Storage, tenant)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return logical.ErrorResponse("unknown tenant %q", tenant), nil
	}
	var live *usageBucket
	if b.WriteSafeReplicationState() {
		live = b.usage.liveTenantHistory(tenant)
	}
	buckets, err := readHistory(ctx, req.Storage, tenantHistoryPrefix(tenant), fmt.Sprintf("usage history of tenant %q", tenant), r, live, now)
	if err != nil {
		return nil, err
	}
	data := historyData(r, buckets)
	data["tenant"] = tenant
	return &logical.Response{Data: data}, nil
}

// pathKeyUsageHistoryRead answers for a key of the tenant, or a revoked one
// whose usage tombstone is still kept (its history is kept as long); any
// other key, another tenant's included, is a 404 as on keys/<key_id>.
func (b *backend) pathKeyUsageHistoryRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, id, resp := tenantAndKeyID(d)
	if resp != nil {
		return resp, nil
	}
	now := b.usage.now()
	r, resp := historyRangeOf(d, now, b.usage.cfg.Load().UsageRetention)
	if resp != nil {
		return resp, nil
	}
	p, err := readKeyPointer(ctx, req.Storage, tenant, id)
	if err != nil {
		return nil, err
	}
	if p == nil {
		rec, err := readKeyUsage(ctx, req.Storage, tenant, id)
		if err != nil || rec == nil || rec.RevokedAt.IsZero() {
			return nil, err
		}
	}
	var live *usageBucket
	if b.WriteSafeReplicationState() {
		if live, err = b.usage.liveKeyHistory(ctx, req.Storage, tenant, id); err != nil {
			return nil, err
		}
	}
	buckets, err := readHistory(ctx, req.Storage, keyHistoryPrefix(tenant, id), fmt.Sprintf("usage history of key %q", id), r, live, now)
	if err != nil {
		return nil, err
	}
	data := historyData(r, buckets)
	data["tenant"], data["key_id"] = tenant, id
	return &logical.Response{Data: data}, nil
}

// historyRangeOf validates granularity, from and to against what is kept:
// the current hour and the 48 before it, or the days of usage_retention
// (at most maxHistoryDays in one read).
func historyRangeOf(d *framework.FieldData, now time.Time, retention time.Duration) (historyRange, *logical.Response) {
	r := historyRange{granularity: d.Get("granularity").(string)}
	var oldest time.Time
	var span, most int
	switch r.granularity {
	case "hour":
		r.step, oldest, span, most = time.Hour, oldestHistoryHour(now), defaultHistoryHours, int(historyHourlyKeep/time.Hour)+1
	case "day":
		r.step, oldest, span, most = 24*time.Hour, oldestHistoryDay(now, retention), defaultHistoryDays, maxHistoryDays
	default:
		return r, logical.ErrorResponse("invalid granularity: %q: want hour or day", r.granularity)
	}
	current := now.UTC().Truncate(r.step)
	r.to = current
	if v := d.Get("to").(string); v != "" {
		to, err := historyTime(v, r.step, true)
		if err != nil {
			return r, fieldError("to", err)
		}
		if to.Before(r.to) {
			r.to = to
		}
	}
	if v := d.Get("from").(string); v != "" {
		from, err := historyTime(v, r.step, false)
		if err != nil {
			return r, fieldError("from", err)
		}
		r.from = from
	} else {
		r.from = r.to.Add(-time.Duration(span-1) * r.step)
		if r.from.Before(oldest) {
			r.from = oldest
		}
	}
	kept := "the last 48 hours (granularity=day goes further back)"
	if r.granularity == "day" {
		kept = "usage_retention of config/monitoring"
	}
	switch {
	case r.to.Before(oldest):
		return r, logical.ErrorResponse("invalid to: %s is before the oldest %s bucket kept (%s): %s are kept", r.to.Format(time.RFC3339), r.granularity, oldest.Format(time.RFC3339), kept)
	case r.from.Before(oldest):
		return r, logical.ErrorResponse("invalid from: %s is before the oldest %s bucket kept (%s): %s are kept", r.from.Format(time.RFC3339), r.granularity, oldest.Format(time.RFC3339), kept)
	case r.from.After(current):
		return r, logical.ErrorResponse("invalid from: %s is in the future", r.from.Format(time.RFC3339))
	case r.from.After(r.to):
		return r, logical.ErrorResponse("invalid from: %s is after to (%s)", r.from.Format(time.RFC3339), r.to.Format(time.RFC3339))
	case r.len() > most:
		return r, logical.ErrorResponse("invalid to: at most %d %s buckets per read, %s to %s is %d", most, r.granularity, r.from.Format(time.RFC3339), r.to.Format(time.RFC3339), r.len())
	}
	return r, nil
}

// historyTime reads a from or to value as the start of its bucket. A date
// stands for its whole day: as from its first bucket, as to its last.
func historyTime(v string, step time.Duration, end bool) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC().Truncate(step), nil
	}
	t, err := time.Parse(historyDayFormat, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-03T10:00:00Z) nor a date (2026-12-03)", v)
	}
	if end {
		t = t.Add(24*time.Hour - step)
	}
	return t, nil
}

func historyData(r historyRange, buckets []usageBucket) map[string]interface{} {
	out := make([]interface{}, len(buckets))
	for i := range buckets {
		out[i] = bucketData(r.from.Add(time.Duration(i)*r.step), &buckets[i])
	}
	return map[string]interface{}{
		"granularity": r.granularity,
		"from":        r.from.Format(time.RFC3339),
		"to":          r.to.Format(time.RFC3339),
		"buckets":     out,
	}
}

func bucketData(start time.Time, b *usageBucket) map[string]interface{} {
	codes := make(map[string]uint64, len(b.Codes))
	var total uint64
	for c, n := range b.Codes {
		codes[c] = n
		total += n
	}
	data := map[string]interface{}{
		"start":          start.Format(time.RFC3339),
		"verify_count":   total,
		"verify_by_code": codes,
	}
	addGatewayFigures(data, b.Requests, b.Errors, b.LatencyMicro, b.LatencyMax)
	return data
}

const pathTenantUsageHistoryHelpSyn = `Read a tenant's usage over time.`

const pathTenantUsageHistoryHelpDesc = `
Buckets of the tenant's usage, oldest first, one per hour (granularity=hour,
the default: the last 48 hours are kept) or per UTC day (granularity=day:
kept for config/monitoring usage_retention, 90 days by default). Every
bucket of the range is listed, empty ones included, so a chart needs no
gap filling:

  start                     the bucket's start (RFC 3339, UTC)
  verify_count              verify answers about the tenant's keys
  verify_by_code            the same by code (VALID, NOT_FOUND, ...)
  requests, errors          traffic gateways reported through usage/report
  upstream_latency_ms_avg, upstream_latency_ms_max

from and to take RFC 3339 times or dates (2026-12-03); both are included.
The default range is the last 24 hours, or the last 30 days; to is at most
the current bucket, from no earlier than the oldest bucket kept (a 400
names the field otherwise).

The active node adds its counts to the stored buckets about once a minute,
in the bucket of the time it does so; a read on the active node also shows
what it counted since, in the current bucket.
`

const pathKeyUsageHistoryHelpSyn = `Read a key's usage over time.`

const pathKeyUsageHistoryHelpDesc = `
Buckets of one key's usage, as tenants/<tenant>/usage/history gives the
tenant's: hourly for the last 48 hours, daily for usage_retention, with
verify answers about the key by code (VALID and the refusals of the key:
EXPIRED, INSUFFICIENT_SCOPE, IP_NOT_ALLOWED, RATE_LIMITED, ...) and the
traffic gateways and edges reported for it.

A revoked key's history stays readable while its usage is kept
(usage_retention after the revocation); then it is removed with it. A key
of another tenant is not found here.
`

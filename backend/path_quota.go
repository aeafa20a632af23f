package backend

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// quotaFields are the quota fields of roles (whose keys get the quota at
// issue) and tenants (a cap on all their keys together); whose is said.
func quotaFields(whose string) map[string]*framework.FieldSchema {
	periods := make([]interface{}, 0, 4)
	for _, p := range contract.PeriodNames() {
		periods = append(periods, p)
	}
	return map[string]*framework.FieldSchema{
		"quota": {
			Type: framework.TypeInt,
			Description: fmt.Sprintf("Requests allowed %s per quota_period; 0 means none. Only requests that would otherwise be VALID spend it; "+
				"over it verify answers QUOTA_EXCEEDED. Counted cluster-wide (Vault's active node and edges). At most %d.", whose, int64(contract.MaxQuota)),
		},
		"quota_period": {
			Type:          framework.TypeString,
			Description:   "Calendar period of quota, in UTC: hour, day (from 00:00 UTC), week (ISO: from Monday 00:00 UTC) or month (from the 1st). The quota is whole again at each period's start.",
			Default:       "day",
			AllowedValues: periods,
		},
	}
}

// setQuota reads the quota fields present into limit and period, the
// period defaulting to a day; a 400 names the bad field.
func setQuota(d *framework.FieldData, limit *int64, period *contract.Period) *logical.Response {
	if v, ok, err := d.GetOkErr("quota"); err != nil {
		return fieldError("quota", err)
	} else if ok {
		n := v.(int)
		if n < 0 || int64(n) > contract.MaxQuota {
			return logical.ErrorResponse("quota must be between 0 and %d", int64(contract.MaxQuota))
		}
		*limit = int64(n)
	}
	if v, ok := d.GetOk("quota_period"); ok {
		p, err := contract.ParsePeriod(v.(string))
		if err != nil {
			return fieldError("quota_period", err)
		}
		*period = p
	} else if *period == 0 {
		*period = contract.PeriodDay
	}
	return nil
}

// quotaPeriodName is a role's or tenant's quota_period as read: a day
// for records written before quotas existed.
func quotaPeriodName(p contract.Period) string {
	if p == 0 {
		p = contract.PeriodDay
	}
	return p.String()
}

func (b *backend) pathQuota() []*framework.Path {
	return []*framework.Path{{
		Pattern: "tenants/" + namePattern("tenant") + "/keys/" + namePattern("key_id") + "/quota$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "key-quota",
		},
		Fields: map[string]*framework.FieldSchema{
			"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
			"key_id": {Type: framework.TypeString, Description: "Id of the key.", Required: true},
			"reset": {
				Type:        framework.TypeBool,
				Description: "Make the key's whole quota available again for the current period (what was granted with add is kept). Give reset=true or add, not both.",
			},
			"add": {
				Type:        framework.TypeInt,
				Description: "Grant this many more requests in the current period, on top of the quota. Give reset=true or add, not both.",
			},
		},
		ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathKeyQuotaRead,
				Summary:      "Read where a key's quota stands in the current period.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                  b.pathKeyQuotaRefill,
				Summary:                   "Refill a key's quota by hand: reset=true or add=N.",
				DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "refill"},
				ForwardPerformanceStandby: true,
			},
		},
		HelpSynopsis:    pathKeyQuotaHelpSyn,
		HelpDescription: pathKeyQuotaHelpDesc,
	}}
}

// quotaKey is the path's key, or the 404 error an unknown key gets: another
// tenant's key id answers exactly like one that does not exist.
func quotaKey(ctx context.Context, req *logical.Request, d *framework.FieldData) (*keyEntry, *logical.Response, error) {
	tenant, id, resp := tenantAndKeyID(d)
	if resp != nil {
		return nil, resp, nil
	}
	e, err := readTenantKey(ctx, req.Storage, tenant, id)
	if err != nil {
		return nil, nil, err
	}
	if e == nil {
		return nil, nil, logical.CodedError(http.StatusNotFound, fmt.Sprintf("no key %q in tenant %q", id, tenant))
	}
	return e, nil, nil
}

func (b *backend) pathKeyQuotaRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	e, resp, err := quotaKey(ctx, req, d)
	if resp != nil || err != nil {
		return resp, err
	}
	now := b.usage.now()
	st, err := b.keyStanding(ctx, req.Storage, e, now)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: keyQuotaData(e, st, now)}, nil
}

func (b *backend) pathKeyQuotaRefill(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	reset := d.Get("reset").(bool)
	_, resetGiven := d.GetOk("reset")
	addRaw, addGiven, err := d.GetOkErr("add")
	if err != nil {
		return fieldError("add", err), nil
	}
	switch {
	case resetGiven && addGiven:
		return logical.ErrorResponse("give reset=true or add, not both"), nil
	case addGiven && addRaw.(int) <= 0:
		return logical.ErrorResponse("add must be a positive number of requests"), nil
	case addGiven && int64(addRaw.(int)) > contract.MaxQuota:
		return logical.ErrorResponse("add must be at most %d", int64(contract.MaxQuota)), nil
	case resetGiven && !reset:
		return logical.ErrorResponse("reset must be true (or give add instead)"), nil
	case !resetGiven && !addGiven:
		return logical.ErrorResponse("missing reset or add: give reset=true or add=N"), nil
	}
	e, resp, err := quotaKey(ctx, req, d)
	if resp != nil || err != nil {
		return resp, err
	}
	if e.Quota == nil || !e.Quota.Applies() {
		return logical.ErrorResponse("key %q has no quota of its own (its role had none at issue); a tenant's quota is raised on the tenant", e.KeyID), nil
	}
	var add int64
	if addGiven {
		add = int64(addRaw.(int))
	}
	now := b.usage.now()
	st, err := b.refillKeyQuota(ctx, req.Storage, e, reset, add, now)
	if err != nil {
		return nil, err
	}
	b.Logger().Info("key quota refilled", "tenant", e.Tenant, "key_id", e.KeyID, "reset", reset, "add", add)
	return &logical.Response{Data: keyQuotaData(e, st, now)}, nil
}

func keyQuotaData(e *keyEntry, st *contract.QuotaStanding, now time.Time) map[string]interface{} {
	data := map[string]interface{}{
		"tenant": e.Tenant, "key_id": e.KeyID, "quota": int64(0), "quota_period": nil,
		"used": int64(0), "credit": int64(0), "remaining": nil, "period_start": nil, "resets_at": nil,
	}
	if e.Quota == nil || !e.Quota.Applies() || st == nil {
		return data
	}
	r := *e.Quota
	data["quota"], data["quota_period"] = r.Limit, r.Period.String()
	data["used"], data["credit"] = st.Used, st.Credit
	data["remaining"] = max(r.Limit+st.Credit-st.Used, 0)
	data["period_start"] = time.Unix(st.PeriodStart, 0).UTC().Format(time.RFC3339)
	data["resets_at"] = r.Period.Next(now).Format(time.RFC3339)
	return data
}

const pathKeyQuotaHelpSyn = `Read or refill a key's quota.`

const pathKeyQuotaHelpDesc = `
A key issued from a role with a quota may make that many VALID
verifications per quota_period (UTC calendar periods; ISO weeks start on
Monday). Reading shows where it stands now: used, credit (granted by hand
this period), remaining, period_start and resets_at. The figures are the
active node's, edges' reports included.

An update refills it by hand, for the current period only:

  reset=true   the whole quota is available again
  add=N        N more requests on top of it

Give exactly one. The refill applies to Vault's verify at once and reaches
edge verifiers through the sync feed. Another tenant's key id answers 404,
like one that does not exist. A tenant-wide quota (the tenant's quota field)
is changed on the tenant and applies at once.
`

package backend

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

type roleEntry struct {
	Name            string            `json:"name"`
	Tenant          string            `json:"tenant"`
	Scopes          []string          `json:"scopes"`
	Environment     string            `json:"environment"`
	TTL             time.Duration     `json:"ttl"`
	MaxTTL          time.Duration     `json:"max_ttl"`
	AllowedCIDRs    []string          `json:"allowed_cidrs"`
	RateLimit       int               `json:"rate_limit"`
	RateLimitPeriod time.Duration     `json:"rate_limit_period"`
	Metadata        map[string]string `json:"metadata"`
	// Quota per QuotaPeriod, given to each key at issue; 0 none.
	Quota       int64           `json:"quota,omitempty"`
	QuotaPeriod contract.Period `json:"quota_period,omitempty"`
	// NotLeased keys get no Vault lease (see the leased field).
	NotLeased bool `json:"not_leased,omitempty"`
	// RevokeUnusedAfter revokes the role's dynamic keys once unused this
	// long (scans.go); 0 never.
	RevokeUnusedAfter time.Duration `json:"revoke_unused_after,omitempty"`
	CreatedAt         time.Time     `json:"created_at"`
	UpdatedAt         time.Time     `json:"updated_at"`
}

func (b *backend) pathRoles() []*framework.Path {
	paths := []*framework.Path{
		{
			Pattern: "tenants/" + namePattern("tenant") + "/roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: map[string]*framework.FieldSchema{
				"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     tenantList(rolePrefix, "roles"),
					Summary:      "List a tenant's key roles.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "roles"},
				},
			},
			HelpSynopsis:    pathRolesListHelpSyn,
			HelpDescription: pathRolesListHelpDesc,
		},
		{
			Pattern: "tenants/" + namePattern("tenant") + "/roles/" + namePattern("role") + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "role",
			},
			Fields: map[string]*framework.FieldSchema{
				"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
				"role":   {Type: framework.TypeString, Description: "Name of the role: 1-63 lower-case letters, digits or dashes.", Required: true},
				"scopes": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Scopes granted to keys issued from this role. A key keeps the scopes it was issued with.",
				},
				"environment": {
					Type:        framework.TypeString,
					Description: "Environment tag of the role's keys; one of the tenant's allowed_environments. Defaults to the tenant's first allowed environment.",
				},
				"ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "Default TTL of issued keys. 0 uses the tenant's, then the mount's default.",
				},
				"max_ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "Maximum TTL of issued keys, renewals included. Capped by the tenant's and then the mount's max_ttl.",
				},
				"allowed_cidrs": {
					Type:        framework.TypeCommaStringSlice,
					Description: "If set, verify answers IP_NOT_ALLOWED unless the client_ip the gateway passes is inside one of these CIDR blocks.",
				},
				"rate_limit": {
					Type:        framework.TypeInt,
					Description: "Verifications allowed per key per rate_limit_period; 0 means no limit. Enforced in memory on each Vault node that answers verify, so a cluster allows up to this many per node.",
				},
				"rate_limit_period": {
					Type:        framework.TypeDurationSecond,
					Description: "Period of rate_limit.",
					Default:     60,
				},
				"metadata": {
					Type:        framework.TypeKVPairs,
					Description: "Key/value metadata copied into every key issued from this role.",
				},
				"revoke_unused_after": {
					Type:        framework.TypeDurationSecond,
					Description: "Revoke this role's dynamic keys once they have not verified (or, never used, since issue) for this long, with a key-revoked notification giving reason=unused. Applies to keys already issued. 0 (default) never.",
				},
				"leased": {
					Type:        framework.TypeBool,
					Description: "Whether issued keys get a Vault lease (default true). Keys without a lease cost Vault nothing per key, which matters at millions of keys, but die only through the plugin: revoke them with tenants/<tenant>/keys/<key_id>; once expired they verify as EXPIRED and tidy removes them. vault lease revoke and token revocation do not reach them.",
					Default:     true,
				},
			},
			ExistenceCheck: b.roleExists,
			Operations: crudOperations(b.pathRoleRead, b.pathRoleWrite, b.pathRoleDelete, crudSummaries{
				read:   "Read a key role.",
				create: "Create a key role.",
				update: "Update a key role.",
				delete: "Delete a key role. Keys issued from it stay valid until they expire or are revoked.",
			}),
			HelpSynopsis:    pathRoleHelpSyn,
			HelpDescription: pathRoleHelpDesc,
		},
	}
	for name, f := range quotaFields("per key (each key issued from the role gets it at issue, like the rate limit)") {
		paths[1].Fields[name] = f
	}
	return paths
}

func readRole(ctx context.Context, s logical.Storage, tenant, name string) (*roleEntry, error) {
	return getJSON[roleEntry](ctx, s, rolePrefix(tenant)+name, fmt.Sprintf("role %q of tenant %q", name, tenant))
}

// tenantAndName validates the path's tenant and the named second segment.
func tenantAndName(d *framework.FieldData, field string) (string, string, *logical.Response) {
	tenant := d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return "", "", fieldError("tenant", err)
	}
	name := d.Get(field).(string)
	if err := validateName(field, name); err != nil {
		return "", "", fieldError(field, err)
	}
	return tenant, name, nil
}

func (b *backend) roleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	tenant, name, bad := tenantAndName(d, "role")
	if bad != nil {
		return false, nil
	}
	r, err := readRole(ctx, req.Storage, tenant, name)
	if err != nil {
		return false, err
	}
	return r != nil, nil
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "role")
	if resp != nil {
		return resp, nil
	}
	r, err := readRole(ctx, req.Storage, tenant, name)
	if err != nil || r == nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"tenant":              r.Tenant,
		"role":                r.Name,
		"scopes":              nonNilSlice(r.Scopes),
		"environment":         r.Environment,
		"ttl":                 int64(r.TTL.Seconds()),
		"max_ttl":             int64(r.MaxTTL.Seconds()),
		"allowed_cidrs":       nonNilSlice(r.AllowedCIDRs),
		"rate_limit":          r.RateLimit,
		"rate_limit_period":   int64(r.RateLimitPeriod.Seconds()),
		"quota":               r.Quota,
		"quota_period":        quotaPeriodName(r.QuotaPeriod),
		"metadata":            nonNilMap(r.Metadata),
		"leased":              !r.NotLeased,
		"revoke_unused_after": int64(r.RevokeUnusedAfter.Seconds()),
		"created_at":          r.CreatedAt.Format(time.RFC3339),
		"updated_at":          r.UpdatedAt.Format(time.RFC3339),
	}}, nil
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "role")
	if resp != nil {
		return resp, nil
	}
	// The tenant lock keeps the environment check true against a concurrent
	// tenant update.
	t, unlock, resp, err := b.lockTenant(ctx, req.Storage, tenant)
	if resp != nil || err != nil {
		return resp, err
	}
	defer unlock()
	r, err := readRole(ctx, req.Storage, tenant, name)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	if r == nil {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("role %q of tenant %q does not exist", name, tenant), nil
		}
		r = &roleEntry{Name: name, Tenant: tenant, CreatedAt: now, RateLimitPeriod: time.Minute}
	}

	if v, ok := d.GetOk("scopes"); ok {
		scopes := uniqueSorted(v.([]string))
		for _, s := range scopes {
			if err := validateScope(s); err != nil {
				return fieldError("scopes", err), nil
			}
		}
		r.Scopes = scopes
	}
	if v, ok := d.GetOk("environment"); ok {
		r.Environment = v.(string)
	} else if r.Environment == "" {
		r.Environment = t.AllowedEnvironments[0]
	}
	if err := keyformat.ValidateEnvironment(r.Environment); err != nil {
		return fieldError("environment", err), nil
	}
	if !t.allowsEnvironment(r.Environment) {
		return logical.ErrorResponse("invalid environment %q: tenant %q allows only %v", r.Environment, tenant, t.AllowedEnvironments), nil
	}
	if resp := setDurations(d, map[string]*time.Duration{"ttl": &r.TTL, "max_ttl": &r.MaxTTL, "rate_limit_period": &r.RateLimitPeriod, "revoke_unused_after": &r.RevokeUnusedAfter}); resp != nil {
		return resp, nil
	}
	if r.MaxTTL > 0 && r.TTL > r.MaxTTL {
		return logical.ErrorResponse("ttl (%s) must not exceed max_ttl (%s)", r.TTL, r.MaxTTL), nil
	}
	if v, ok := d.GetOk("allowed_cidrs"); ok {
		cidrs := uniqueSorted(v.([]string))
		for i, c := range cidrs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return fieldError("allowed_cidrs", err), nil
			}
			cidrs[i] = p.Masked().String()
		}
		r.AllowedCIDRs = uniqueSorted(cidrs)
	}
	if v, ok, err := d.GetOkErr("rate_limit"); err != nil {
		return fieldError("rate_limit", err), nil
	} else if ok {
		if v.(int) < 0 {
			return logical.ErrorResponse("rate_limit must not be negative"), nil
		}
		r.RateLimit = v.(int)
	}
	if r.RateLimit > 0 && r.RateLimitPeriod <= 0 {
		return logical.ErrorResponse("rate_limit_period must be positive when rate_limit is set"), nil
	}
	if resp := setQuota(d, &r.Quota, &r.QuotaPeriod); resp != nil {
		return resp, nil
	}
	if v, ok, err := d.GetOkErr("metadata"); err != nil {
		return fieldError("metadata", err), nil
	} else if ok {
		r.Metadata = v.(map[string]string)
	}
	if v, ok, err := d.GetOkErr("leased"); err != nil {
		return fieldError("leased", err), nil
	} else if ok {
		r.NotLeased = !v.(bool)
	}
	r.UpdatedAt = now

	if err := putJSON(ctx, req.Storage, rolePrefix(tenant)+name, fmt.Sprintf("role %q of tenant %q", name, tenant), r); err != nil {
		return nil, err
	}
	return ttlWarnings(t, r), nil
}

// ttlWarnings tells the caller when a role's TTLs will be capped at issue.
func ttlWarnings(t *tenantEntry, r *roleEntry) *logical.Response {
	if t.MaxTTL > 0 && (r.TTL > t.MaxTTL || r.MaxTTL > t.MaxTTL) {
		resp := &logical.Response{}
		resp.AddWarning(fmt.Sprintf("the role's ttl/max_ttl exceed the tenant's max_ttl (%s); keys will be capped at it", t.MaxTTL))
		return resp
	}
	return nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "role")
	if resp != nil {
		return resp, nil
	}
	if err := req.Storage.Delete(ctx, rolePrefix(tenant)+name); err != nil {
		return nil, fmt.Errorf("delete role %q of tenant %q: %w", name, tenant, err)
	}
	return nil, nil
}

// validateScope keeps scopes printable and free of the comma that separates
// them on the command line.
func validateScope(s string) error {
	if len(s) > 128 {
		return fmt.Errorf("scope %q is longer than 128 characters", s)
	}
	for _, c := range s {
		if c <= ' ' || c == ',' || c > '~' {
			return fmt.Errorf("scope %q may contain only printable ASCII without spaces or commas", s)
		}
	}
	return nil
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const pathRolesListHelpSyn = `List a tenant's key roles.`

const pathRolesListHelpDesc = `Lists the names of the key roles of the tenant in the path.`

const pathRoleHelpSyn = `Manage a key role of a tenant.`

const pathRoleHelpDesc = `
A role describes the keys issued from it through tenants/<tenant>/creds/<role>:

  scopes             what the keys may do; verify checks required_scopes
                     against them. A key keeps the role's scopes, CIDRs and
                     rate limit as they were when it was issued.
  environment        the key's environment tag (<prefix>_<env>_...), one of
                     the tenant's allowed_environments.
  ttl, max_ttl       lease TTLs, capped by the tenant's and the mount's.
  allowed_cidrs      client IPs the key may be presented from.
  rate_limit,
  rate_limit_period  verifications per key per period, counted in memory on
                     each node that answers verify (so per node, not
                     cluster-wide); over the limit verify answers RATE_LIMITED.
  quota, quota_period  requests per key per UTC calendar period (hour, day,
                     week from Monday, month), counted cluster-wide; over it
                     verify answers QUOTA_EXCEEDED. A key keeps the quota its
                     role had at issue; refill one with
                     tenants/<tenant>/keys/<key_id>/quota.
  revoke_unused_after  revoke the role's dynamic keys not verified for this
                     long (since issue, if never), with a key-revoked
                     notification (reason "unused"); the active node checks
                     keys in the background (config/monitoring scan_*).
`

package backend

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

var defaultEnvironments = []string{"live", "test"}

type tenantEntry struct {
	Name                string            `json:"name"`
	DisplayName         string            `json:"display_name"`
	KeyPrefix           string            `json:"key_prefix"`
	Status              string            `json:"status"`
	Metadata            map[string]string `json:"metadata"`
	AllowedEnvironments []string          `json:"allowed_environments"`
	MaxKeys             int               `json:"max_keys"`
	DefaultTTL          time.Duration     `json:"default_ttl"`
	MaxTTL              time.Duration     `json:"max_ttl"`
	// Quota per QuotaPeriod over all the tenant's keys together; 0 none.
	Quota       int64           `json:"quota,omitempty"`
	QuotaPeriod contract.Period `json:"quota_period,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

func (t *tenantEntry) allowsEnvironment(env string) bool {
	return slices.Contains(t.AllowedEnvironments, env)
}

func tenantFields() map[string]*framework.FieldSchema {
	fields := map[string]*framework.FieldSchema{
		"tenant": {
			Type:        framework.TypeString,
			Description: "Name of the tenant: 1-63 lower-case letters, digits or dashes.",
			Required:    true,
		},
		"display_name": {
			Type:        framework.TypeString,
			Description: "Human-readable name of the tenant.",
		},
		"key_prefix": {
			Type:        framework.TypeString,
			Description: "Prefix of this tenant's keys (1-16 lower-case letters or digits, starting with a letter). Empty uses the mount's key_prefix.",
		},
		"status": {
			Type:          framework.TypeString,
			Description:   `"active" or "suspended". Every key of a suspended tenant verifies as TENANT_SUSPENDED and no key can be issued.`,
			Default:       contract.TenantActive,
			AllowedValues: []interface{}{contract.TenantActive, contract.TenantSuspended},
		},
		"metadata": {
			Type:        framework.TypeKVPairs,
			Description: "Free-form key/value metadata.",
		},
		"allowed_environments": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Environment tags the tenant's roles may use (1-10 lower-case letters or digits each, starting with a letter).",
			Default:     defaultEnvironments,
		},
		"max_keys": {
			Type:        framework.TypeInt,
			Description: "Most keys the tenant may hold at once; 0 means no limit.",
		},
		"default_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "TTL of the tenant's keys when the role sets none.",
		},
		"max_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Upper bound on the TTL of every key of the tenant.",
		},
		"force": {
			Type:        framework.TypeBool,
			Description: "On delete: revoke all of the tenant's keys first instead of refusing.",
		},
	}
	for name, f := range quotaFields("over all the tenant's keys together (each key's own quota counts too)") {
		fields[name] = f
	}
	return fields
}

func (b *backend) pathTenants() []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tenants/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathTenantsList,
					Summary:      "List tenants.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "tenants"},
				},
			},
			HelpSynopsis:    pathTenantsListHelpSyn,
			HelpDescription: pathTenantsListHelpDesc,
		},
		{
			Pattern: "tenants/" + namePattern("tenant") + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "tenant",
			},
			Fields:         tenantFields(),
			ExistenceCheck: b.tenantExists,
			Operations: crudOperations(b.pathTenantRead, b.pathTenantWrite, b.pathTenantDelete, crudSummaries{
				read:   "Read a tenant.",
				create: "Create a tenant.",
				update: "Update a tenant.",
				delete: "Delete a tenant; refused while it has keys unless force=true.",
			}),
			HelpSynopsis:    pathTenantHelpSyn,
			HelpDescription: pathTenantHelpDesc,
		},
	}
}

func readTenant(ctx context.Context, s logical.Storage, name string) (*tenantEntry, error) {
	return getJSON[tenantEntry](ctx, s, tenantPrefix+name, fmt.Sprintf("tenant %q", name))
}

// lockTenant takes the tenant's write lock and reads the tenant, for the
// writes that must see it unchanged until they are done (environment and
// suspension checks, max_keys). A missing tenant is the 400 to return; on
// success the caller must call unlock.
func (b *backend) lockTenant(ctx context.Context, s logical.Storage, name string) (*tenantEntry, func(), *logical.Response, error) {
	lock := b.tenantLock(name)
	lock.Lock()
	t, err := readTenant(ctx, s, name)
	if err != nil || t == nil {
		lock.Unlock()
		if err != nil {
			return nil, nil, nil, err
		}
		return nil, nil, logical.ErrorResponse("unknown tenant %q", name), nil
	}
	return t, lock.Unlock, nil, nil
}

// tenantExists and the other existence checks answer false for a name the
// handler will refuse: Vault runs them before the handler, and a name such
// as "a..b" reaching storage is a 500 ("relative paths not supported")
// instead of the handler's 400.
func (b *backend) tenantExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("tenant").(string)
	if validateName("tenant", name) != nil {
		return false, nil
	}
	t, err := readTenant(ctx, req.Storage, name)
	if err != nil {
		return false, err
	}
	return t != nil, nil
}

func (b *backend) pathTenantsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, tenantPrefix)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathTenantRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("tenant").(string)
	if err := validateName("tenant", name); err != nil {
		return fieldError("tenant", err), nil
	}
	t, err := readTenant(ctx, req.Storage, name)
	if err != nil || t == nil {
		return nil, err
	}
	return &logical.Response{Data: tenantResponse(t)}, nil
}

func tenantResponse(t *tenantEntry) map[string]interface{} {
	return map[string]interface{}{
		"tenant":               t.Name,
		"display_name":         t.DisplayName,
		"key_prefix":           t.KeyPrefix,
		"status":               t.Status,
		"metadata":             nonNilMap(t.Metadata),
		"allowed_environments": t.AllowedEnvironments,
		"max_keys":             t.MaxKeys,
		"default_ttl":          int64(t.DefaultTTL.Seconds()),
		"max_ttl":              int64(t.MaxTTL.Seconds()),
		"quota":                t.Quota,
		"quota_period":         quotaPeriodName(t.QuotaPeriod),
		"created_at":           t.CreatedAt.Format(time.RFC3339),
		"updated_at":           t.UpdatedAt.Format(time.RFC3339),
	}
}

func (b *backend) pathTenantWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("tenant").(string)
	if err := validateName("tenant", name); err != nil {
		return fieldError("tenant", err), nil
	}
	lock := b.tenantLock(name)
	lock.Lock()
	defer lock.Unlock()

	t, err := readTenant(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	oldStatus := ""
	var oldQuota *contract.QuotaRule
	if t != nil {
		oldStatus, oldQuota = t.Status, t.quotaRule()
	}
	if t == nil {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("tenant %q does not exist", name), nil
		}
		t = &tenantEntry{Name: name, Status: contract.TenantActive, AllowedEnvironments: defaultEnvironments, CreatedAt: now}
	}

	if v, ok := d.GetOk("display_name"); ok {
		t.DisplayName = v.(string)
	}
	if v, ok := d.GetOk("key_prefix"); ok {
		p := v.(string)
		if p != "" {
			if err := keyformat.ValidatePrefix(p); err != nil {
				return fieldError("key_prefix", err), nil
			}
		}
		t.KeyPrefix = p
	}
	if v, ok := d.GetOk("status"); ok {
		s := v.(string)
		if s != contract.TenantActive && s != contract.TenantSuspended {
			return logical.ErrorResponse("invalid status %q: must be %q or %q", s, contract.TenantActive, contract.TenantSuspended), nil
		}
		t.Status = s
	}
	if v, ok, err := d.GetOkErr("metadata"); err != nil {
		return fieldError("metadata", err), nil
	} else if ok {
		t.Metadata = v.(map[string]string)
	}
	if v, ok := d.GetOk("allowed_environments"); ok {
		envs := uniqueSorted(v.([]string))
		if len(envs) == 0 {
			return logical.ErrorResponse("allowed_environments must name at least one environment"), nil
		}
		for _, e := range envs {
			if err := keyformat.ValidateEnvironment(e); err != nil {
				return fieldError("allowed_environments", err), nil
			}
		}
		t.AllowedEnvironments = envs
	}
	if v, ok, err := d.GetOkErr("max_keys"); err != nil {
		return fieldError("max_keys", err), nil
	} else if ok {
		if v.(int) < 0 {
			return logical.ErrorResponse("max_keys must not be negative"), nil
		}
		t.MaxKeys = v.(int)
	}
	if resp := setDurations(d, map[string]*time.Duration{"default_ttl": &t.DefaultTTL, "max_ttl": &t.MaxTTL}); resp != nil {
		return resp, nil
	}
	if t.MaxTTL > 0 && t.DefaultTTL > t.MaxTTL {
		return logical.ErrorResponse("default_ttl (%s) must not exceed max_ttl (%s)", t.DefaultTTL, t.MaxTTL), nil
	}
	if resp := setQuota(d, &t.Quota, &t.QuotaPeriod); resp != nil {
		return resp, nil
	}
	t.UpdatedAt = now

	if err := putJSON(ctx, req.Storage, tenantPrefix+name, fmt.Sprintf("tenant %q", name), t); err != nil {
		return nil, err
	}
	// Suspension must bite on the very next verify: drop the cached copy
	// while still holding the tenant lock so no fill can race it.
	b.cache.deleteTenant(name)
	b.tenantWritten(ctx, req.Storage, t)
	// Also when the request repeats the stored status or quota: it may be
	// the retry of a write whose record landed but whose feed entry did not.
	_, statusSet := d.GetOk("status")
	_, quotaSet := d.GetOk("quota")
	_, periodSet := d.GetOk("quota_period")
	if statusSet || quotaSet || periodSet || t.Status != oldStatus || !equalQuota(t.quotaRule(), oldQuota) {
		if err := b.edgeTenantStatus(ctx, req.Storage, name, t.Status, t.quotaRule()); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func (b *backend) pathTenantDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("tenant").(string)
	if err := validateName("tenant", name); err != nil {
		return fieldError("tenant", err), nil
	}
	lock := b.tenantLock(name)
	lock.Lock()
	defer lock.Unlock()

	ids, err := req.Storage.List(ctx, keyIndexPrefix(name))
	if err != nil {
		return nil, fmt.Errorf("list keys of tenant %q: %w", name, err)
	}
	if len(ids) > 0 && !d.Get("force").(bool) {
		return logical.ErrorResponse("tenant %q still has %d keys: revoke them first or delete with force=true", name, len(ids)), nil
	}
	// Keys go first and the tenant record last, so an interrupted delete
	// leaves a tenant that can be deleted again, never keys without a tenant.
	statics, err := req.Storage.List(ctx, staticKeyPrefix(name))
	if err != nil {
		return nil, fmt.Errorf("list static keys of tenant %q: %w", name, err)
	}
	for _, sk := range statics {
		e, err := readStaticKey(ctx, req.Storage, name, sk)
		if err != nil {
			return nil, err
		}
		if e != nil {
			if err := b.deleteStaticKey(ctx, req.Storage, e); err != nil {
				return nil, err
			}
		}
	}
	for _, id := range ids {
		if err := b.revokeKey(ctx, req.Storage, name, id); err != nil {
			return nil, err
		}
	}
	if err := b.tenantNotificationsDeleted(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	roles, err := req.Storage.List(ctx, rolePrefix(name))
	if err != nil {
		return nil, fmt.Errorf("list roles of tenant %q: %w", name, err)
	}
	for _, r := range roles {
		if err := req.Storage.Delete(ctx, rolePrefix(name)+r); err != nil {
			return nil, fmt.Errorf("delete role %q of tenant %q: %w", r, name, err)
		}
	}
	if err := req.Storage.Delete(ctx, tenantPrefix+name); err != nil {
		return nil, fmt.Errorf("delete tenant %q: %w", name, err)
	}
	b.cache.deleteTenant(name)
	if err := b.edgeTenantStatus(ctx, req.Storage, name, contract.TenantDeleted, nil); err != nil {
		return nil, err
	}
	if err := b.tenantQuotaDeleted(ctx, req.Storage, name); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return &logical.Response{Data: map[string]interface{}{"revoked_keys": len(ids)}}, nil
}

// setDurations reads the named TypeDurationSecond fields that are present into
// dst, returning a 400 naming the first bad one.
func setDurations(d *framework.FieldData, dst map[string]*time.Duration) *logical.Response {
	names := make([]string, 0, len(dst))
	for n := range dst {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v, ok, err := d.GetOkErr(n)
		if err != nil {
			return fieldError(n, err)
		}
		if !ok {
			continue
		}
		if v.(int) < 0 {
			return logical.ErrorResponse("%s must not be negative", n)
		}
		*dst[n] = time.Duration(v.(int)) * time.Second
	}
	return nil
}

func uniqueSorted(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s != "" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

const pathTenantsListHelpSyn = `List tenants.`

const pathTenantsListHelpDesc = `Lists the names of all tenants of this mount.`

const pathTenantHelpSyn = `Manage a tenant.`

const pathTenantHelpDesc = `
A tenant owns key roles and the keys issued from them. Keys of different
tenants never meet: each tenant's roles and keys live under its own storage
prefix, and the tenant-scoped paths (tenants/<tenant>/...) only ever see the
tenant in the path.

  status=suspended   every key of the tenant verifies as TENANT_SUSPENDED on
                     the very next request and no key can be issued;
                     status=active restores them.
  max_keys           enforced when a key is issued.
  default_ttl/max_ttl apply to the tenant's keys, below the mount's limits.
  quota, quota_period  requests per UTC calendar period over all the
                     tenant's keys together, on top of each key's own quota;
                     a change applies at once.

Deleting a tenant is refused while it still has keys, unless force=true, which
revokes every key of the tenant first, then deletes its roles and the tenant.
`

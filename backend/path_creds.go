package backend

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

func (b *backend) pathCreds() []*framework.Path {
	return []*framework.Path{{
		Pattern: "tenants/" + namePattern("tenant") + "/creds/" + namePattern("role") + "$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "issue",
			OperationSuffix: "key",
		},
		Fields: map[string]*framework.FieldSchema{
			"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
			"role":   {Type: framework.TypeString, Description: "Name of the role to issue the key from.", Required: true},
			"name": {
				Type:        framework.TypeString,
				Description: "A label for the key, shown in its metadata (at most 128 characters).",
			},
			"metadata": {
				Type:        framework.TypeKVPairs,
				Description: "Key/value metadata of this key, merged over the role's.",
			},
			"ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "TTL of the key's lease; at most the effective max_ttl. 0 uses the role's default.",
			},
			"scopes": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Narrower scopes for this key: a subset of the role's. Left out, the key gets the role's scopes; an empty value gives it none.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:                  b.pathCredsIssue,
				Summary:                   "Issue an API key with a Vault lease.",
				ForwardPerformanceStandby: true,
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                  b.pathCredsIssue,
				Summary:                   "Issue an API key with a Vault lease, with a name, metadata, TTL or narrower scopes.",
				DisplayAttrs:              &framework.DisplayAttributes{OperationSuffix: "with-parameters"},
				ForwardPerformanceStandby: true,
			},
		},
		HelpSynopsis:    pathCredsHelpSyn,
		HelpDescription: pathCredsHelpDesc,
	}}
}

func (b *backend) pathCredsIssue(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, roleName, resp := tenantAndName(d, "role")
	if resp != nil {
		return resp, nil
	}
	var (
		name      string
		metadata  map[string]string
		scopes    []string
		ttl       time.Duration
		hasScopes bool
	)
	if req.Operation == logical.UpdateOperation {
		name = d.Get("name").(string)
		if len(name) > 128 {
			return logical.ErrorResponse("name must be at most 128 characters"), nil
		}
		v, _, err := d.GetOkErr("metadata")
		if err != nil {
			return fieldError("metadata", err), nil
		}
		if v != nil {
			metadata = v.(map[string]string)
		}
		if v, ok := d.GetOk("scopes"); ok {
			scopes, hasScopes = uniqueSorted(v.([]string)), true
		}
		if resp := setDurations(d, map[string]*time.Duration{"ttl": &ttl}); resp != nil {
			return resp, nil
		}
	}

	t, unlock, resp, err := b.lockTenant(ctx, req.Storage, tenant)
	if resp != nil || err != nil {
		return resp, err
	}
	defer unlock()
	if t.Status == contract.TenantSuspended {
		return logical.ErrorResponse("tenant %q is suspended: no key can be issued", tenant), nil
	}
	r, err := readRole(ctx, req.Storage, tenant, roleName)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return logical.ErrorResponse("unknown role %q of tenant %q", roleName, tenant), nil
	}
	if !t.allowsEnvironment(r.Environment) {
		return logical.ErrorResponse("role %q uses environment %q, which tenant %q no longer allows", roleName, r.Environment, tenant), nil
	}
	if hasScopes {
		for _, s := range scopes {
			if _, ok := slices.BinarySearch(r.Scopes, s); !ok {
				return logical.ErrorResponse("invalid scopes: %q is not granted by role %q (allowed: %v)", s, roleName, r.Scopes), nil
			}
		}
	} else {
		scopes = r.Scopes
	}
	cfg, err := readConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	keyTTL, maxTTL := b.leaseTTLs(cfg, t, r)
	if ttl > 0 {
		if ttl > maxTTL {
			return logical.ErrorResponse("ttl (%s) must be at most max_ttl (%s)", ttl, maxTTL), nil
		}
		keyTTL = ttl
	}
	if t.MaxKeys > 0 {
		ids, err := req.Storage.List(ctx, keyIndexPrefix(tenant))
		if err != nil {
			return nil, fmt.Errorf("count keys of tenant %q: %w", tenant, err)
		}
		if len(ids) >= t.MaxKeys {
			return logical.ErrorResponse("tenant %q already holds max_keys (%d) keys", tenant, t.MaxKeys), nil
		}
	}

	now := time.Now().UTC()
	e := &keyEntry{
		Tenant:          tenant,
		Role:            roleName,
		Kind:            kindDynamic,
		Name:            name,
		Environment:     r.Environment,
		Scopes:          scopes,
		AllowedCIDRs:    r.AllowedCIDRs,
		RateLimit:       r.RateLimit,
		RateLimitPeriod: r.RateLimitPeriod,
		Quota:           r.quotaRule(),
		Metadata:        keyMetadata(r.Metadata, metadata),
		CreatedAt:       now,
		ExpiresAt:       now.Add(keyTTL),
	}
	apiKey, err := b.mintKey(ctx, req.Storage, cfg, t, e)
	if err != nil {
		return nil, err
	}
	if err := b.storeNewKey(ctx, req.Storage, e); err != nil {
		return nil, err
	}
	b.keyIssued(ctx, req.Storage, e)

	data := map[string]interface{}{
		"api_key":     apiKey,
		"key_id":      e.KeyID,
		"hint":        e.Hint,
		"tenant":      tenant,
		"role":        roleName,
		"name":        name,
		"scopes":      nonNilSlice(scopes),
		"environment": r.Environment,
		"metadata":    e.Metadata,
		"expires_at":  e.ExpiresAt.Format(time.RFC3339),
	}
	if r.NotLeased {
		data["ttl"] = int64(keyTTL.Seconds())
		return &logical.Response{Data: data}, nil
	}
	resp = b.Secret(secretAPIKeyType).Response(data, map[string]interface{}{
		"tenant":  tenant,
		"role":    roleName,
		"key_id":  e.KeyID,
		"hash":    e.Hash,
		"ttl":     int64(keyTTL.Seconds()),
		"max_ttl": int64(maxTTL.Seconds()),
	})
	resp.Secret.TTL = keyTTL
	resp.Secret.MaxTTL = maxTTL
	return resp, nil
}

// leaseTTLs resolves a key's default and maximum TTL: the role's, else the
// tenant's, else the mount config's, else Vault's mount tuning; every
// maximum along the way caps the result.
func (b *backend) leaseTTLs(cfg *mountConfig, t *tenantEntry, r *roleEntry) (ttl, maxTTL time.Duration) {
	sys := b.System()
	maxTTL = sys.MaxLeaseTTL()
	for _, m := range []time.Duration{r.MaxTTL, t.MaxTTL, cfg.MaxTTL} {
		if m > 0 && m < maxTTL {
			maxTTL = m
		}
	}
	for _, d := range []time.Duration{r.TTL, t.DefaultTTL, cfg.DefaultTTL, sys.DefaultLeaseTTL()} {
		if d > 0 {
			ttl = d
			break
		}
	}
	if ttl > maxTTL {
		ttl = maxTTL
	}
	return ttl, maxTTL
}

const pathCredsHelpSyn = `Issue an API key from a tenant's role.`

const pathCredsHelpDesc = `
Each read issues a new API key with a Vault lease of type "api_key". The key
is in the response once and never again: only its HMAC is stored. The key
lives as long as its lease: "vault lease renew" extends it up to max_ttl;
"vault lease revoke", "vault lease revoke -prefix <mount>/tenants/<tenant>/",
revoking the token that issued it, or the TTL running out all revoke it, and
it fails the very next verify.

A write issues a key too and accepts:

  name      a label for the key
  metadata  key/value pairs, merged over the role's metadata
  ttl       the lease TTL (at most the effective max_ttl)
  scopes    a subset of the role's scopes; anything wider is refused
`

package backend

import (
	"context"
	"fmt"
	"time"

	uuid "github.com/hashicorp/go-uuid"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathKeys() []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tenants/" + namePattern("tenant") + "/keys/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: map[string]*framework.FieldSchema{
				"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     tenantList(keyIndexPrefix, "keys"),
					Summary:      "List the ids of a tenant's keys.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "keys"},
				},
			},
			HelpSynopsis:    pathKeysListHelpSyn,
			HelpDescription: pathKeysListHelpDesc,
		},
		{
			Pattern: "tenants/" + namePattern("tenant") + "/keys/" + namePattern("key_id") + "$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "key",
			},
			Fields: map[string]*framework.FieldSchema{
				"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
				"key_id": {Type: framework.TypeString, Description: "Id of the key.", Required: true},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathKeyRead,
					Summary:  "Read a key's metadata (never the key).",
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                  b.pathKeyDelete,
					Summary:                   "Revoke a key at once.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "revoke"},
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathKeyHelpSyn,
			HelpDescription: pathKeyHelpDesc,
		},
	}
}

func tenantAndKeyID(d *framework.FieldData) (string, string, *logical.Response) {
	tenant := d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return "", "", fieldError("tenant", err)
	}
	id := d.Get("key_id").(string)
	if _, err := uuid.ParseUUID(id); err != nil {
		return "", "", fieldError("key_id", fmt.Errorf("%q is not a key id", id))
	}
	return tenant, id, nil
}

func (b *backend) pathKeyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, id, resp := tenantAndKeyID(d)
	if resp != nil {
		return resp, nil
	}
	e, err := readTenantKey(ctx, req.Storage, tenant, id)
	if err != nil || e == nil {
		return nil, err
	}
	return b.withKeyUsage(ctx, req.Storage, e, keyResponse(e, time.Now())), nil
}

func keyResponse(e *keyEntry, now time.Time) map[string]interface{} {
	status := "active"
	var expires interface{}
	if !e.ExpiresAt.IsZero() {
		expires = e.ExpiresAt.Format(time.RFC3339)
		switch {
		case !now.Before(e.ExpiresAt):
			status = "expired"
		case e.InGrace:
			status = "in_grace"
		}
	}
	return map[string]interface{}{
		"key_id":            e.KeyID,
		"hint":              e.Hint,
		"tenant":            e.Tenant,
		"role":              e.Role,
		"kind":              e.Kind,
		"name":              e.Name,
		"scopes":            nonNilSlice(e.Scopes),
		"environment":       e.Environment,
		"allowed_cidrs":     nonNilSlice(e.AllowedCIDRs),
		"rate_limit":        e.RateLimit,
		"rate_limit_period": int64(e.RateLimitPeriod.Seconds()),
		"metadata":          nonNilMap(e.Metadata),
		"created_at":        e.CreatedAt.Format(time.RFC3339),
		"expires_at":        expires,
		"status":            status,
	}
}

func (b *backend) pathKeyDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, id, resp := tenantAndKeyID(d)
	if resp != nil {
		return resp, nil
	}
	e, err := readTenantKey(ctx, req.Storage, tenant, id)
	if err != nil {
		return nil, err
	}
	if e != nil && e.Kind == kindStatic {
		return nil, b.revokeStaticKeyNow(ctx, req.Storage, e)
	}
	if err := b.revokeKey(ctx, req.Storage, tenant, id); err != nil {
		return nil, err
	}
	return nil, nil
}

// revokeStaticKeyNow kills one key of a static key at once. The current key
// is replaced by a fresh one with no grace (a leaked key must not linger),
// so the static key is never left without a valid key.
func (b *backend) revokeStaticKeyNow(ctx context.Context, s logical.Storage, k *keyEntry) error {
	lock := b.tenantLock(k.Tenant)
	lock.Lock()
	defer lock.Unlock()
	st, err := readStaticKey(ctx, s, k.Tenant, k.Name)
	if err != nil {
		return err
	}
	switch {
	case st != nil && st.CurrentID == k.KeyID:
		if err := b.rotateStaticKeyWithGrace(ctx, s, st, time.Now().UTC(), 0, time.Now().UTC()); err != nil {
			return err
		}
		b.rotations.schedule(st)
		return nil
	case st != nil && st.PreviousID == k.KeyID:
		st.PreviousID, st.PreviousHash, st.PreviousExpiresAt = "", "", time.Time{}
		if err := writeStaticKey(ctx, s, st); err != nil {
			return err
		}
	}
	return b.revokeKeyByHash(ctx, s, k.Tenant, k.KeyID, k.Hash)
}

const pathKeysListHelpSyn = `List the ids of a tenant's keys.`

const pathKeysListHelpDesc = `
Lists the key ids of every key the tenant holds, dynamic and static. Read
tenants/<tenant>/keys/<key_id> for one key's metadata.
`

const pathKeyHelpSyn = `Read or revoke one key of a tenant.`

const pathKeyHelpDesc = `
Reading returns the key's metadata: hint, role, kind (dynamic or static),
name, scopes, environment, allowed CIDRs, rate limit, created_at, expires_at,
last_used_at and status. The key itself is never returned: only its HMAC is
stored, and the hint shows 8 of its 43 random characters.

Deleting revokes the key at once: it fails the very next verify. Its Vault
lease, if any, stays until it expires or is revoked, which is then a no-op.
Deleting the current key of a static key also rotates the static key at
once, with no grace for the deleted key.
`

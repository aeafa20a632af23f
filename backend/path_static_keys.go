package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

func staticKeyFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
		"name":   {Type: framework.TypeString, Description: "Name of the static key: 1-63 lower-case letters, digits or dashes.", Required: true},
		"role": {
			Type:        framework.TypeString,
			Description: "Role whose scopes, CIDRs and rate limit the keys get; read again at every rotation. Required on create.",
		},
		"environment": {
			Type:        framework.TypeString,
			Description: "Environment tag of the keys; defaults to the role's. Must be one of the tenant's allowed_environments.",
		},
		"rotation_period": {
			Type:        framework.TypeDurationSecond,
			Description: "Rotate every this long (at least 5s). Exactly one of rotation_period and rotation_schedule is required.",
		},
		"rotation_schedule": {
			Type:        framework.TypeString,
			Description: `Rotate on this 5-field cron schedule, in UTC (e.g. "0 3 * * 1" for 03:00 every Monday).`,
		},
		"rotation_window": {
			Type:        framework.TypeDurationSecond,
			Description: "With rotation_schedule: how long after the scheduled time a rotation may still run (e.g. after downtime); past it, the rotation waits for the next firing. 0 means no limit.",
		},
		"grace_period": {
			Type:        framework.TypeDurationSecond,
			Description: "How long a rotated-out key keeps verifying (VALID with in_grace=true). Must be shorter than the rotation interval. Default: half the interval.",
		},
		"metadata": {
			Type:        framework.TypeKVPairs,
			Description: "Key/value metadata of the static key's keys, merged over the role's.",
		},
	}
}

func (b *backend) pathStaticKeys() []*framework.Path {
	tenantOnly := map[string]*framework.FieldSchema{
		"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
	}
	nameFields := map[string]*framework.FieldSchema{
		"tenant": {Type: framework.TypeString, Description: "Name of the tenant.", Required: true},
		"name":   {Type: framework.TypeString, Description: "Name of the static key.", Required: true},
	}
	return []*framework.Path{
		{
			Pattern:      "tenants/" + namePattern("tenant") + "/static-keys/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:       tenantOnly,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     tenantList(staticKeyPrefix, "static keys"),
					Summary:      "List a tenant's static keys.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "static-keys"},
				},
			},
			HelpSynopsis:    pathStaticKeysListHelpSyn,
			HelpDescription: pathStaticKeysListHelpDesc,
		},
		{
			Pattern:        "tenants/" + namePattern("tenant") + "/static-keys/" + namePattern("name") + "/rotate$",
			DisplayAttrs:   &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:         nameFields,
			ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathStaticKeyRotate,
					Summary:                   "Rotate a static key now; the old key stays valid for the grace period.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "rotate", OperationSuffix: "static-key"},
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathStaticRotateHelpSyn,
			HelpDescription: pathStaticRotateHelpDesc,
		},
		{
			Pattern:        "tenants/" + namePattern("tenant") + "/static-keys/" + namePattern("name") + "$",
			DisplayAttrs:   &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationSuffix: "static-key"},
			Fields:         staticKeyFields(),
			ExistenceCheck: b.staticKeyExists,
			Operations: crudOperations(b.pathStaticKeyRead, b.pathStaticKeyWrite, b.pathStaticKeyDelete, crudSummaries{
				read:   "Read a static key's settings and rotation state (not the key).",
				create: "Create a static key; its first key is issued at once.",
				update: "Update a static key's settings.",
				delete: "Delete a static key, revoking its current and previous keys.",
			}),
			HelpSynopsis:    pathStaticKeyHelpSyn,
			HelpDescription: pathStaticKeyHelpDesc,
		},
		{
			Pattern:      "tenants/" + namePattern("tenant") + "/static-creds/" + namePattern("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:       nameFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathStaticCredsRead,
					Summary:      "Read a static key's current key.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "static-credentials"},
				},
			},
			HelpSynopsis:    pathStaticCredsHelpSyn,
			HelpDescription: pathStaticCredsHelpDesc,
		},
	}
}

func (b *backend) staticKeyExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	tenant, name, bad := tenantAndName(d, "name")
	if bad != nil {
		return false, nil
	}
	e, err := readStaticKey(ctx, req.Storage, tenant, name)
	if err != nil {
		return false, err
	}
	return e != nil, nil
}

func (b *backend) pathStaticKeyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "name")
	if resp != nil {
		return resp, nil
	}
	e, err := readStaticKey(ctx, req.Storage, tenant, name)
	if err != nil || e == nil {
		return nil, err
	}
	data := staticKeyInfo(e, time.Now())
	data["metadata"] = nonNilMap(e.Metadata)
	data["created_at"] = e.CreatedAt.Format(time.RFC3339)
	data["grace_period"] = int64(e.GracePeriod.Seconds())
	data["previous_key_id"] = e.PreviousID
	data["next_rotation"] = e.NextRotation.Format(time.RFC3339)
	return &logical.Response{Data: data}, nil
}

// staticKeyInfo is what static-creds and the static key read share.
func staticKeyInfo(e *staticKeyEntry, now time.Time) map[string]interface{} {
	ttl := int64(e.NextRotation.Sub(now).Seconds())
	if ttl < 0 {
		ttl = 0
	}
	var prevExpires interface{}
	if e.PreviousID != "" {
		prevExpires = e.PreviousExpiresAt.Format(time.RFC3339)
	}
	data := map[string]interface{}{
		"tenant":      e.Tenant,
		"name":        e.Name,
		"role":        e.Role,
		"environment": e.Environment,
		"key_id":      e.CurrentID,
		"hint":        keyformat.Hint(e.CurrentKey),
		"disabled":    e.Disabled,
		"ttl":         ttl,
		// Vault Agent (consul-template) re-reads a non-leased secret at ttl+1s
		// only when its data has rotation_period, so it is always present: for
		// a schedule it is the interval between the current firings.
		"rotation_period":         int64(e.interval(now).Seconds()),
		"last_rotated":            e.LastRotated.Format(time.RFC3339Nano),
		"previous_key_expires_at": prevExpires,
	}
	if e.RotationSchedule != "" {
		data["rotation_schedule"] = e.RotationSchedule
		data["rotation_window"] = int64(e.RotationWindow.Seconds())
	}
	return data
}

func (b *backend) pathStaticCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "name")
	if resp != nil {
		return resp, nil
	}
	e, err := readStaticKey(ctx, req.Storage, tenant, name)
	if err != nil || e == nil {
		return nil, err
	}
	data := staticKeyInfo(e, time.Now())
	data["api_key"] = e.CurrentKey
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathStaticKeyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "name")
	if resp != nil {
		return resp, nil
	}
	t, unlock, resp, err := b.lockTenant(ctx, req.Storage, tenant)
	if resp != nil || err != nil {
		return resp, err
	}
	defer unlock()
	e, err := readStaticKey(ctx, req.Storage, tenant, name)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	creating := e == nil
	if creating {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("static key %q of tenant %q does not exist", name, tenant), nil
		}
		e = &staticKeyEntry{Name: name, Tenant: tenant, CreatedAt: now}
	}
	if resp, err := b.applyStaticKeyFields(ctx, req.Storage, t, e, d, creating); resp != nil || err != nil {
		return resp, err
	}

	if !creating {
		// New rotation settings take effect from the last rotation.
		e.NextRotation = e.nextRotation(e.LastRotated)
		if err := writeStaticKey(ctx, req.Storage, e); err != nil {
			return nil, err
		}
		b.rotations.schedule(e)
		return nil, nil
	}
	if t.Status == contract.TenantSuspended {
		return logical.ErrorResponse("tenant %q is suspended: no key can be issued", tenant), nil
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
	// The first key is issued through the same crash-safe rotation.
	if err := b.rotateStaticKey(ctx, req.Storage, e, now); err != nil {
		return nil, err
	}
	b.rotations.schedule(e)
	return &logical.Response{Data: map[string]interface{}{"key_id": e.CurrentID, "next_rotation": e.NextRotation.Format(time.RFC3339)}}, nil
}

// applyStaticKeyFields validates and applies the request's fields. A
// response is the caller's mistake (a 400 naming the field), an error a
// server fault (a 500): storage failing is never the caller's fault.
func (b *backend) applyStaticKeyFields(ctx context.Context, s logical.Storage, t *tenantEntry, e *staticKeyEntry, d *framework.FieldData, creating bool) (*logical.Response, error) {
	if v, ok := d.GetOk("role"); ok {
		e.Role = v.(string)
	} else if creating {
		return logical.ErrorResponse("missing role"), nil
	}
	if err := validateName("role", e.Role); err != nil {
		return fieldError("role", err), nil
	}
	r, err := readRole(ctx, s, e.Tenant, e.Role)
	if err != nil {
		return nil, fmt.Errorf("static key %q of tenant %q: %w", e.Name, e.Tenant, err)
	}
	if r == nil {
		return logical.ErrorResponse("unknown role %q of tenant %q", e.Role, e.Tenant), nil
	}
	if v, ok := d.GetOk("environment"); ok {
		e.Environment = v.(string)
	} else if creating {
		e.Environment = r.Environment
	}
	if err := keyformat.ValidateEnvironment(e.Environment); err != nil {
		return fieldError("environment", err), nil
	}
	if !t.allowsEnvironment(e.Environment) {
		return logical.ErrorResponse("invalid environment %q: tenant %q allows only %v", e.Environment, e.Tenant, t.AllowedEnvironments), nil
	}

	period, hasPeriod, err := d.GetOkErr("rotation_period")
	if err != nil {
		return fieldError("rotation_period", err), nil
	}
	schedule, hasSchedule := d.GetOk("rotation_schedule")
	if hasPeriod && hasSchedule && schedule.(string) != "" {
		return logical.ErrorResponse("rotation_period and rotation_schedule are mutually exclusive"), nil
	}
	if hasPeriod {
		p := time.Duration(period.(int)) * time.Second
		if p < minRotationPeriod {
			return logical.ErrorResponse("rotation_period must be at least %s", minRotationPeriod), nil
		}
		e.RotationPeriod, e.RotationSchedule, e.RotationWindow = p, "", 0
	}
	if hasSchedule && schedule.(string) != "" {
		if _, err := parseSchedule(schedule.(string)); err != nil {
			return fieldError("rotation_schedule", fmt.Errorf("not a 5-field cron schedule: %w", err)), nil
		}
		e.RotationSchedule, e.RotationPeriod = schedule.(string), 0
	}
	if e.RotationPeriod == 0 && e.RotationSchedule == "" {
		return logical.ErrorResponse("one of rotation_period or rotation_schedule is required"), nil
	}
	now := time.Now()
	interval := e.interval(now)
	if v, ok, err := d.GetOkErr("rotation_window"); err != nil {
		return fieldError("rotation_window", err), nil
	} else if ok {
		w := time.Duration(v.(int)) * time.Second
		if w != 0 && e.RotationSchedule == "" {
			return logical.ErrorResponse("rotation_window applies only with rotation_schedule"), nil
		}
		if w < 0 || (w > 0 && w >= interval) {
			return logical.ErrorResponse("rotation_window must be shorter than the schedule's interval (%s)", interval), nil
		}
		e.RotationWindow = w
	}
	if v, ok, err := d.GetOkErr("grace_period"); err != nil {
		return fieldError("grace_period", err), nil
	} else if ok {
		e.GracePeriod = time.Duration(v.(int)) * time.Second
	} else if creating {
		e.GracePeriod = interval / 2
	}
	if e.GracePeriod < 0 || e.GracePeriod >= interval {
		return logical.ErrorResponse("grace_period (%s) must be shorter than the rotation interval (%s)", e.GracePeriod, interval), nil
	}
	if v, ok, err := d.GetOkErr("metadata"); err != nil {
		return fieldError("metadata", err), nil
	} else if ok {
		e.Metadata = v.(map[string]string)
	}
	return nil, nil
}

func (b *backend) pathStaticKeyRotate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "name")
	if resp != nil {
		return resp, nil
	}
	lock := b.tenantLock(tenant)
	lock.Lock()
	defer lock.Unlock()
	e, err := readStaticKey(ctx, req.Storage, tenant, name)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return logical.ErrorResponse("unknown static key %q of tenant %q", name, tenant), nil
	}
	if err := b.rotateStaticKey(ctx, req.Storage, e, time.Now().UTC()); err != nil {
		return nil, err
	}
	b.rotations.schedule(e)
	data := staticKeyInfo(e, time.Now())
	data["previous_key_id"] = e.PreviousID
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathStaticKeyDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantAndName(d, "name")
	if resp != nil {
		return resp, nil
	}
	lock := b.tenantLock(tenant)
	lock.Lock()
	defer lock.Unlock()
	e, err := readStaticKey(ctx, req.Storage, tenant, name)
	if err != nil || e == nil {
		return nil, err
	}
	return nil, b.deleteStaticKey(ctx, req.Storage, e)
}

const pathStaticKeysListHelpSyn = `List a tenant's static keys.`

const pathStaticKeysListHelpDesc = `Lists the names of the static keys of the tenant in the path.`

const pathStaticKeyHelpSyn = `Manage a static key: a long-lived key rotated on a schedule with overlap.`

const pathStaticKeyHelpDesc = `
A static key always has one current key, readable through
tenants/<tenant>/static-creds/<name> (so Vault Agent can deliver it), and
rotates on rotation_period or on the cron rotation_schedule (UTC). After a
rotation the old key keeps verifying as VALID with in_grace=true for
grace_period (shorter than the interval), so apps that have not re-read the
key yet keep working; then it fails.

Creating a static key issues its first key at once. Deleting it revokes its
current and previous keys. Rotations are crash-safe: a write-ahead log lets
a restarted node finish or undo an interrupted rotation, and the static key
never lacks a valid key. Rotation runs on the active node; failures are
retried with backoff and logged with tenant and name.
`

const pathStaticRotateHelpSyn = `Rotate a static key now.`

const pathStaticRotateHelpDesc = `
Issues a new current key at once. The old key enters its grace period (it
verifies as VALID with in_grace=true until grace_period ends); a key still in
grace from an earlier rotation is revoked. To kill a leaked current key
without grace, delete it through tenants/<tenant>/keys/<key_id>, which
rotates the static key and revokes the old key at once.
`

const pathStaticCredsHelpSyn = `Read a static key's current key.`

const pathStaticCredsHelpDesc = `
Returns the current api_key and key_id, ttl (seconds until the next
rotation), rotation_period (always present; for a schedule, the interval
between firings), rotation_schedule and rotation_window when set,
last_rotated and previous_key_expires_at.

Vault Agent and consul-template re-read a non-leased secret whose data
carries rotation_period at ttl+1 seconds, so a template renders the new key
about a second after each rotation. The response is not leased.
`

package backend

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

func (b *backend) pathOnboard() []*framework.Path {
	fields := staticKeyFields()
	delete(fields, "name")
	delete(fields, "environment")
	fields["environments"] = &framework.FieldSchema{
		Type:        framework.TypeCommaStringSlice,
		Description: "Environments to create a static key for, each named <role>-<environment>. Required.",
	}
	return []*framework.Path{{
		Pattern:      "tenants/" + namePattern("tenant") + "/onboard$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
		Fields:       fields,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                  b.pathOnboardWrite,
				Summary:                   "Create one static key per environment from a role and hand all keys over at once.",
				DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "onboard", OperationSuffix: "tenant"},
				ForwardPerformanceStandby: true,
			},
		},
		HelpSynopsis:    pathOnboardHelpSyn,
		HelpDescription: pathOnboardHelpDesc,
	}}
}

// pathOnboardWrite creates the static keys one by one through the static
// key path itself, so every rule and every crash guarantee is the same; on
// a failure the keys created so far are deleted again.
func (b *backend) pathOnboardWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant := d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return fieldError("tenant", err), nil
	}
	role := d.Get("role").(string)
	if err := validateName("role", role); err != nil {
		return fieldError("role", err), nil
	}
	envs := uniqueSorted(d.Get("environments").([]string))
	if len(envs) == 0 {
		return logical.ErrorResponse("missing environments"), nil
	}
	raw := map[string]interface{}{}
	for k, v := range d.Raw {
		if k != "environments" && k != "tenant" {
			raw[k] = v
		}
	}
	created := map[string]interface{}{}
	var names []string
	rollback := func() {
		// Not the request's context: a request cancelled or timed out is
		// exactly when the keys created so far must still go.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		for _, n := range names {
			lock := b.tenantLock(tenant)
			lock.Lock()
			if e, err := readStaticKey(rctx, req.Storage, tenant, n); err == nil && e != nil {
				if err := b.deleteStaticKey(rctx, req.Storage, e); err != nil {
					b.Logger().Error("could not undo onboarding", "tenant", tenant, "static_key", n, "error", err)
				}
			}
			lock.Unlock()
		}
	}
	for _, env := range envs {
		name := role + "-" + env
		if err := validateName("name", name); err != nil {
			rollback()
			return fieldError("environments", err), nil
		}
		if e, err := readStaticKey(ctx, req.Storage, tenant, name); err != nil {
			rollback()
			return nil, err
		} else if e != nil {
			rollback()
			return logical.ErrorResponse("invalid environments: static key %q already exists", name), nil
		}
		data := map[string]interface{}{"environment": env}
		for k, v := range raw {
			data[k] = v
		}
		sub := &framework.FieldData{Raw: data, Schema: staticKeyFields()}
		sub.Raw["tenant"], sub.Raw["name"] = tenant, name
		resp, err := b.pathStaticKeyWrite(ctx, &logical.Request{Operation: logical.CreateOperation, Storage: req.Storage}, sub)
		if err != nil || (resp != nil && resp.IsError()) {
			rollback()
			return resp, err
		}
		names = append(names, name)
		e, err := readStaticKey(ctx, req.Storage, tenant, name)
		if err != nil || e == nil {
			rollback()
			return nil, err
		}
		created[env] = map[string]interface{}{
			"name":          name,
			"api_key":       e.CurrentKey,
			"key_id":        e.CurrentID,
			"hint":          keyformat.Hint(e.CurrentKey),
			"next_rotation": e.NextRotation.Format(time.RFC3339),
		}
	}
	return &logical.Response{Data: map[string]interface{}{"tenant": tenant, "role": role, "keys": created}}, nil
}

const pathOnboardHelpSyn = `Onboard a tenant: one static key per environment, handed over at once.`

const pathOnboardHelpDesc = `
Creates a static key named <role>-<environment> for each of environments,
from the given role and with the given rotation settings (the same fields as
static-keys), and returns every new key in one response. Request it with
-wrap-ttl so the keys travel as a single-use wrapping token:

  vault write -wrap-ttl=15m apikeys/tenants/acme/onboard \
      role=web environments=live,test rotation_period=720h

The receiver runs "vault unwrap <token>" once; a second unwrap fails, so a
stolen token is noticed. Each key can also be fetched on its own, wrapped,
with "vault read -wrap-ttl=15m apikeys/tenants/acme/static-creds/web-live".
If one key cannot be created, the ones created before it are deleted.
`

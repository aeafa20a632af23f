package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

// A tenant's own webhook targets and dead letters. They ride on the mount's
// delivery: one dispatcher, one outbox, one dead-letter list, the same
// signature. What differs is who may configure them (a tenant admin, whom
// the platform trusts less than its own admins), so a tenant's target
//   - receives only its tenant's events,
//   - is named <tenant>.<name> in the outbox and dead letters, so two
//     tenants may each have a target "alerts",
//   - is sent over https to public addresses only, checked when each
//     delivery connects (notify.Target.PublicOnly), unless the mount's
//     tenant_webhook_private_ok says otherwise.

func (b *backend) pathTenantNotifications() []*framework.Path {
	tenant := func() *framework.FieldSchema {
		return &framework.FieldSchema{Type: framework.TypeString, Description: "Name of the tenant.", Required: true}
	}
	failedFields := func() map[string]*framework.FieldSchema {
		return map[string]*framework.FieldSchema{
			"tenant": tenant(),
			"id":     {Type: framework.TypeString, Description: "Id of the dead letter: <event id>.<target name>.", Required: true},
		}
	}
	base := "tenants/" + namePattern("tenant") + "/notifications/"
	return []*framework.Path{
		{
			Pattern:      base + "failed/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:       map[string]*framework.FieldSchema{"tenant": tenant()},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathTenantFailedList,
					Summary:      "List the dead-lettered notifications of a tenant's own targets.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "tenant-failed-notifications"},
				},
			},
			HelpSynopsis:    pathTenantFailedHelpSyn,
			HelpDescription: pathTenantFailedHelpDesc,
		},
		{
			Pattern:        base + "failed/" + namePattern("id") + "/requeue$",
			DisplayAttrs:   &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:         failedFields(),
			ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathTenantFailedRequeue,
					Summary:                   "Queue a tenant's dead-lettered notification again, with a fresh attempt budget.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "requeue", OperationSuffix: "tenant-failed-notification"},
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathFailedRequeueHelpSyn,
			HelpDescription: pathFailedRequeueHelpDesc,
		},
		{
			Pattern:      base + "failed/" + namePattern("id") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationSuffix: "tenant-failed-notification"},
			Fields:       failedFields(),
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathTenantFailedRead,
					Summary:  "Read a tenant's dead-lettered notification: the event, its target, attempts and last error.",
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                  b.pathTenantFailedDelete,
					Summary:                   "Discard a tenant's dead-lettered notification.",
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathTenantFailedHelpSyn,
			HelpDescription: pathTenantFailedHelpDesc,
		},
		{
			Pattern:      base + "?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:       map[string]*framework.FieldSchema{"tenant": tenant()},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     tenantList(tenantTargetPrefix, "notification targets"),
					Summary:      "List a tenant's own webhook notification targets.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "tenant-notification-targets"},
				},
			},
			HelpSynopsis:    pathTenantTargetsListHelpSyn,
			HelpDescription: pathTenantTargetsListHelpDesc,
		},
		{
			Pattern:      base + namePattern("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationSuffix: "tenant-notification-target"},
			Fields: map[string]*framework.FieldSchema{
				"tenant": tenant(),
				"name":   {Type: framework.TypeString, Description: "Name of the target: 1-63 lower-case letters, digits or dashes, not \"failed\".", Required: true},
				"url": {
					Type:        framework.TypeString,
					Description: "https URL that receives a POST per event of this tenant; it must resolve to public addresses (unless the mount's tenant_webhook_private_ok is true). Required on create.",
				},
				"secret": {
					Type:        framework.TypeString,
					Description: "Shared secret (at least 16 characters) of the X-Apikeys-Signature HMAC. Generated and returned once when omitted on create; never returned on read.",
				},
				"events": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Event types to send (" + strings.Join(notify.Types, ", ") + "). Empty sends all of the tenant's.",
				},
			},
			ExistenceCheck: b.tenantTargetExists,
			Operations: crudOperations(b.pathTenantTargetRead, b.pathTenantTargetWrite, b.pathTenantTargetDelete, crudSummaries{
				read:   "Read a tenant's webhook target (never its secret).",
				create: "Create a webhook target for a tenant's events.",
				update: "Update a tenant's webhook target.",
				delete: "Delete a tenant's webhook target; its pending deliveries are dead-lettered.",
			}),
			HelpSynopsis:    pathTenantTargetHelpSyn,
			HelpDescription: pathTenantTargetHelpDesc,
		},
	}
}

// readTenantTarget returns a tenant's target as the dispatcher and emit
// need it: named by its tenantTargetRef and wanting only its tenant's
// events, whatever was stored.
func readTenantTarget(ctx context.Context, s logical.Storage, tenant, name string) (*notify.Target, error) {
	t, err := getJSON[notify.Target](ctx, s, tenantTargetPrefix(tenant)+name, fmt.Sprintf("notification target %q of tenant %q", name, tenant))
	if err != nil || t == nil {
		return nil, err
	}
	t.Name = tenantTargetRef(tenant, name)
	t.Tenants = []string{tenant}
	return t, nil
}

// tenantTargetName reads the tenant and target name of a request. No
// target is called "failed": that path is the dead-letter list's, matched
// first.
func tenantTargetName(d *framework.FieldData) (string, string, *logical.Response) {
	return tenantAndName(d, "name")
}

func (b *backend) tenantTargetExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	tenant, name, resp := tenantTargetName(d)
	if resp != nil {
		return false, nil
	}
	t, err := readTenantTarget(ctx, req.Storage, tenant, name)
	if err != nil {
		return false, err
	}
	return t != nil, nil
}

func tenantTargetResponse(t *notify.Target, name string) map[string]interface{} {
	return map[string]interface{}{
		"name":       name,
		"url":        t.URL,
		"events":     nonNilSlice(t.Events),
		"secret_set": t.Secret != "",
	}
}

func (b *backend) pathTenantTargetRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantTargetName(d)
	if resp != nil {
		return resp, nil
	}
	t, err := readTenantTarget(ctx, req.Storage, tenant, name)
	if err != nil || t == nil {
		return nil, err
	}
	return &logical.Response{Data: tenantTargetResponse(t, name)}, nil
}

// checkTenantURL is the write-time half of the SSRF guard: https, and no
// address literal that delivery would refuse anyway. The half that matters
// runs at dial time (notify's publicOnlyControl), on what a host name
// resolves to then.
func checkTenantURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("scheme must be https for a tenant's target, got %q (the mount's tenant_webhook_private_ok lifts this)", u.Scheme)
	}
	if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
		if err := notify.CheckPublicAddr(a); err != nil {
			var r *notify.RefusedError
			if errors.As(err, &r) {
				return fmt.Errorf("%s (the mount's tenant_webhook_private_ok lifts this)", r.Reason)
			}
			return err
		}
	}
	return nil
}

func (b *backend) pathTenantTargetWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantTargetName(d)
	if resp != nil {
		return resp, nil
	}
	// Under the tenant lock: a target is never written beside a tenant
	// delete, which would leave it behind.
	_, unlock, resp, err := b.lockTenant(ctx, req.Storage, tenant)
	if resp != nil || err != nil {
		return resp, err
	}
	defer unlock()
	cfg, err := b.cachedConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	t, err := getJSON[notify.Target](ctx, req.Storage, tenantTargetPrefix(tenant)+name, fmt.Sprintf("notification target %q of tenant %q", name, tenant))
	if err != nil {
		return nil, err
	}
	if t == nil {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("notification target %q of tenant %q does not exist", name, tenant), nil
		}
		t = &notify.Target{Name: name}
	}
	var check func(string) error
	if !cfg.TenantWebhookPrivateOK {
		check = checkTenantURL
	}
	generated, resp, err := setTargetFields(d, t, check)
	if resp != nil || err != nil {
		return resp, err
	}
	t.Name, t.Tenants = name, []string{tenant}
	if err := putJSON(ctx, req.Storage, tenantTargetPrefix(tenant)+name, fmt.Sprintf("notification target %q of tenant %q", name, tenant), t); err != nil {
		return nil, err
	}
	b.forgetTargets()
	if generated == "" {
		return nil, nil
	}
	data := tenantTargetResponse(t, name)
	// Shown this once, like an API key at issue: the receiver needs it.
	data["secret"] = generated
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathTenantTargetDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, resp := tenantTargetName(d)
	if resp != nil {
		return resp, nil
	}
	if err := req.Storage.Delete(ctx, tenantTargetPrefix(tenant)+name); err != nil {
		return nil, fmt.Errorf("delete notification target %q of tenant %q: %w", name, tenant, err)
	}
	b.forgetTargets()
	return nil, nil
}

// tenantDeliveryIDs returns the ids under prefix (the outbox or the dead
// letters) of deliveries to tenant's own targets, as the stored id and as
// the tenant sees it (<event id>.<name>).
func tenantDeliveryIDs(ctx context.Context, s logical.Storage, prefix, tenant string) (stored, shown []string, err error) {
	ids, err := s.List(ctx, prefix)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", strings.TrimSuffix(prefix, "/"), err)
	}
	for _, id := range ids {
		eventID, ref, ok := strings.Cut(id, ".")
		if !ok {
			continue
		}
		tn, name, ok := splitTargetRef(ref)
		if !ok || tn != tenant {
			continue
		}
		stored = append(stored, id)
		shown = append(shown, eventID+"."+name)
	}
	return stored, shown, nil
}

func (b *backend) pathTenantFailedList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant := d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return fieldError("tenant", err), nil
	}
	_, shown, err := tenantDeliveryIDs(ctx, req.Storage, notify.FailedPrefix, tenant)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(shown), nil
}

// tenantFailedID maps the id a tenant sees, <event id>.<name>, to the
// stored one, <event id>.<tenant>.<name>. The tenant is the path's, so no
// id can name another tenant's dead letter.
func tenantFailedID(d *framework.FieldData) (tenant, name, stored string, resp *logical.Response) {
	tenant = d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return "", "", "", fieldError("tenant", err)
	}
	id := d.Get("id").(string)
	eventID, name, ok := strings.Cut(id, ".")
	if !ok || eventID == "" || strings.ContainsAny(eventID, "/") || validateName("target", name) != nil {
		return "", "", "", logical.ErrorResponse("invalid id %q: expected <event id>.<target name>", id)
	}
	return tenant, name, eventID + "." + tenantTargetRef(tenant, name), nil
}

func (b *backend) pathTenantFailedRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, name, stored, resp := tenantFailedID(d)
	if resp != nil {
		return resp, nil
	}
	del, err := notify.Read(ctx, req.Storage, notify.FailedPrefix, stored)
	if err != nil || del == nil {
		return nil, err
	}
	var event map[string]interface{}
	if err := json.Unmarshal(del.Body, &event); err != nil {
		return nil, fmt.Errorf("decode dead letter %s: %w", stored, err)
	}
	return &logical.Response{Data: map[string]interface{}{
		"id":         del.EventID + "." + name,
		"event_id":   del.EventID,
		"event_type": del.EventType,
		"tenant":     tenant,
		"target":     name,
		"attempts":   del.Attempts,
		"last_error": del.LastError,
		"created_at": timeOrNil(del.CreatedAt),
		"failed_at":  timeOrNil(del.FailedAt),
		"event":      event,
	}}, nil
}

func (b *backend) pathTenantFailedDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	_, _, stored, resp := tenantFailedID(d)
	if resp != nil {
		return resp, nil
	}
	if err := req.Storage.Delete(ctx, notify.FailedPrefix+stored); err != nil {
		return nil, fmt.Errorf("delete dead letter %s: %w", stored, err)
	}
	return nil, nil
}

func (b *backend) pathTenantFailedRequeue(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	_, _, stored, resp := tenantFailedID(d)
	if resp != nil {
		return resp, nil
	}
	ok, err := b.dispatcher.Requeue(ctx, req.Storage, stored)
	if err != nil {
		return nil, err
	}
	if !ok {
		return logical.ErrorResponse("no dead letter %q", d.Get("id").(string)), nil
	}
	return nil, nil
}

// tenantNotificationsDeleted is the tenant delete's share: the tenant's
// targets, what waits in the outbox for them (the dispatcher drops a
// delivery it still holds once its outbox entry and target are gone) and
// their dead letters. The caller holds the tenant lock.
func (b *backend) tenantNotificationsDeleted(ctx context.Context, s logical.Storage, tenant string) error {
	names, err := s.List(ctx, tenantTargetPrefix(tenant))
	if err != nil {
		return fmt.Errorf("list notification targets of tenant %q: %w", tenant, err)
	}
	for _, n := range names {
		if err := s.Delete(ctx, tenantTargetPrefix(tenant)+n); err != nil {
			return fmt.Errorf("delete notification target %q of tenant %q: %w", n, tenant, err)
		}
	}
	if len(names) > 0 {
		b.forgetTargets()
	}
	for _, prefix := range []string{notify.OutboxPrefix, notify.FailedPrefix} {
		ids, _, err := tenantDeliveryIDs(ctx, s, prefix, tenant)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := s.Delete(ctx, prefix+id); err != nil {
				return fmt.Errorf("delete notification %s of tenant %q: %w", id, tenant, err)
			}
		}
	}
	return nil
}

const pathTenantTargetsListHelpSyn = `List a tenant's own webhook notification targets.`

const pathTenantTargetsListHelpDesc = `Lists the names of the tenant's targets under tenants/<tenant>/notifications/.`

const pathTenantTargetHelpSyn = `Configure a webhook that receives one tenant's events.`

const pathTenantTargetHelpDesc = `
A tenant's own target: the tenant's admins manage it without the mount's
config/notifications/ (a platform admin's). It receives the events of this
tenant only (key-issued, key-revoked, key-rotated, key-expiring,
key-updated, key-leaked, rotation-failed, tenant-suspended), filtered by
events, as the same signed JSON POST as the mount's targets:

  X-Apikeys-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

with the same outbox, retries and dead letters (listed under
tenants/<tenant>/notifications/failed/).

Because a tenant admin could otherwise make Vault POST into the network it
runs in, the url must be https, and every delivery is refused at connect
time when the address the host resolves to is loopback, private (RFC 1918,
fc00::/7), link-local, unspecified, multicast, 0.0.0.0/8 or 100.64.0.0/10;
a refused delivery is dead-lettered at once with the reason. The mount's
tenant_webhook_private_ok (config) lifts both rules, for development and
tests. Redirects are not followed, and proxies from the environment are
not used for these deliveries.

The secret is never returned by a read; omit it on create to have one
generated and returned once. Deleting the target dead-letters its pending
deliveries; deleting the tenant removes its targets, their pending
deliveries and their dead letters. The name "failed" is reserved.
`

const pathTenantFailedHelpSyn = `Dead-lettered notifications of a tenant's own targets.`

const pathTenantFailedHelpDesc = `
Deliveries to this tenant's targets that failed their last attempt, were
refused by the address guard, or whose target was deleted. Ids are
<event id>.<target name>. Reading one shows the event, target, attempts
and last error; deleting discards it; .../failed/<id>/requeue sends it
again. Dead letters of the mount's targets and of other tenants' targets
are not listed here.
`

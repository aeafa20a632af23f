package backend

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/notify"
)

const (
	minSecretLen = 16
)

func (b *backend) pathNotifications() []*framework.Path {
	failedID := map[string]*framework.FieldSchema{
		"id": {Type: framework.TypeString, Description: "Id of the dead letter: <event id>.<target>.", Required: true},
	}
	return append([]*framework.Path{
		{
			Pattern:      "config/notifications/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathTargetsList,
					Summary:      "List webhook notification targets.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "notification-targets"},
				},
			},
			HelpSynopsis:    pathTargetsListHelpSyn,
			HelpDescription: pathTargetsListHelpDesc,
		},
		{
			Pattern:      "config/notifications/" + namePattern("name") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationSuffix: "notification-target"},
			Fields: map[string]*framework.FieldSchema{
				"name": {Type: framework.TypeString, Description: "Name of the target: 1-63 lower-case letters, digits or dashes.", Required: true},
				"url": {
					Type:        framework.TypeString,
					Description: "http(s) URL that receives a POST per event. Required on create.",
				},
				"secret": {
					Type:        framework.TypeString,
					Description: "Shared secret (at least 16 characters) of the X-Apikeys-Signature HMAC. Generated and returned once when omitted on create; never returned on read.",
				},
				"events": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Event types to send (" + strings.Join(notify.Types, ", ") + "). Empty sends all.",
				},
				"tenants": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Tenants whose events to send. Empty sends every tenant's, and events that name no tenant.",
				},
			},
			ExistenceCheck: b.targetExists,
			Operations: crudOperations(b.pathTargetRead, b.pathTargetWrite, b.pathTargetDelete, crudSummaries{
				read:   "Read a webhook target (never its secret).",
				create: "Create a webhook target.",
				update: "Update a webhook target.",
				delete: "Delete a webhook target; its pending deliveries are dead-lettered.",
			}),
			HelpSynopsis:    pathTargetHelpSyn,
			HelpDescription: pathTargetHelpDesc,
		},
		{
			Pattern:      "notifications/failed/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathFailedList,
					Summary:      "List dead-lettered notifications.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list", OperationSuffix: "failed-notifications"},
				},
			},
			HelpSynopsis:    pathFailedHelpSyn,
			HelpDescription: pathFailedHelpDesc,
		},
		{
			Pattern:        "notifications/failed/" + namePattern("id") + "/requeue$",
			DisplayAttrs:   &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields:         failedID,
			ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathFailedRequeue,
					Summary:                   "Queue a dead-lettered notification again, with a fresh attempt budget.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "requeue", OperationSuffix: "failed-notification"},
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathFailedRequeueHelpSyn,
			HelpDescription: pathFailedRequeueHelpDesc,
		},
		{
			Pattern:      "notifications/failed/" + namePattern("id") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationSuffix: "failed-notification"},
			Fields:       failedID,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathFailedRead,
					Summary:  "Read a dead-lettered notification: the event, its target, attempts and last error.",
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                  b.pathFailedDelete,
					Summary:                   "Discard a dead-lettered notification.",
					ForwardPerformanceStandby: true,
				},
			},
			HelpSynopsis:    pathFailedHelpSyn,
			HelpDescription: pathFailedHelpDesc,
		},
	}, b.pathTenantNotifications()...)
}

func readTarget(ctx context.Context, s logical.Storage, name string) (*notify.Target, error) {
	return getJSON[notify.Target](ctx, s, notifyTargetPrefix+name, fmt.Sprintf("notification target %q", name))
}

// lookupTarget serves the dispatcher: always fresh from storage, so a
// changed URL or secret applies to the very next attempt. name is a mount
// target's name or a tenant target's tenantTargetRef.
func (b *backend) lookupTarget(ctx context.Context, name string) (*notify.Target, error) {
	s := b.deliveryStorage()
	if s == nil {
		s = b.storage
	}
	tenant, local, ok := splitTargetRef(name)
	if !ok {
		return readTarget(ctx, s, name)
	}
	t, err := readTenantTarget(ctx, s, tenant, local)
	if err != nil || t == nil {
		return nil, err
	}
	cfg, err := b.cachedConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	t.PublicOnly = !cfg.TenantWebhookPrivateOK
	return t, nil
}

// notificationTargets returns every target, the mount's and every
// tenant's, cached until a target changes. A tenant's target is named by
// its tenantTargetRef and wants only its own tenant's events.
func (b *backend) notificationTargets(ctx context.Context, s logical.Storage) ([]*notify.Target, error) {
	b.targetsMu.Lock()
	defer b.targetsMu.Unlock()
	if b.targets != nil {
		return b.targets, nil
	}
	names, err := s.List(ctx, notifyTargetPrefix)
	if err != nil {
		return nil, fmt.Errorf("list notification targets: %w", err)
	}
	list := make([]*notify.Target, 0, len(names))
	for _, n := range names {
		t, err := readTarget(ctx, s, n)
		if err != nil {
			return nil, err
		}
		if t != nil {
			list = append(list, t)
		}
	}
	tenants, err := s.List(ctx, tenantNotifyPrefix)
	if err != nil {
		return nil, fmt.Errorf("list tenants with notification targets: %w", err)
	}
	for _, tn := range tenants {
		tenant := strings.TrimSuffix(tn, "/")
		names, err := s.List(ctx, tenantTargetPrefix(tenant))
		if err != nil {
			return nil, fmt.Errorf("list notification targets of tenant %q: %w", tenant, err)
		}
		for _, n := range names {
			t, err := readTenantTarget(ctx, s, tenant, n)
			if err != nil {
				return nil, err
			}
			if t != nil {
				list = append(list, t)
			}
		}
	}
	b.targets = list
	return list, nil
}

// forgetTargets serves writes and Invalidate of config/notifications/* and
// config/tenant-notifications/*.
func (b *backend) forgetTargets() {
	b.targetsMu.Lock()
	b.targets = nil
	b.targetsMu.Unlock()
}

func (b *backend) targetExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("target", name) != nil {
		return false, nil
	}
	t, err := readTarget(ctx, req.Storage, name)
	if err != nil {
		return false, err
	}
	return t != nil, nil
}

func (b *backend) pathTargetsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, notifyTargetPrefix)
	if err != nil {
		return nil, fmt.Errorf("list notification targets: %w", err)
	}
	return logical.ListResponse(names), nil
}

func targetResponse(t *notify.Target) map[string]interface{} {
	return map[string]interface{}{
		"name":       t.Name,
		"url":        t.URL,
		"events":     nonNilSlice(t.Events),
		"tenants":    nonNilSlice(t.Tenants),
		"secret_set": t.Secret != "",
	}
}

func (b *backend) pathTargetRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("target", name); err != nil {
		return fieldError("name", err), nil
	}
	t, err := readTarget(ctx, req.Storage, name)
	if err != nil || t == nil {
		return nil, err
	}
	return &logical.Response{Data: targetResponse(t)}, nil
}

func (b *backend) pathTargetWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("target", name); err != nil {
		return fieldError("name", err), nil
	}
	t, err := readTarget(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if t == nil {
		if req.Operation == logical.UpdateOperation {
			return logical.ErrorResponse("notification target %q does not exist", name), nil
		}
		t = &notify.Target{Name: name}
	}
	generated, resp, err := setTargetFields(d, t, nil)
	if resp != nil || err != nil {
		return resp, err
	}
	if v, ok := d.GetOk("tenants"); ok {
		tenants := uniqueSorted(v.([]string))
		for _, tn := range tenants {
			if err := validateName("tenant", tn); err != nil {
				return fieldError("tenants", err), nil
			}
		}
		t.Tenants = tenants
	}
	if err := putJSON(ctx, req.Storage, notifyTargetPrefix+name, fmt.Sprintf("notification target %q", name), t); err != nil {
		return nil, err
	}
	b.forgetTargets()
	if generated == "" {
		return nil, nil
	}
	data := targetResponse(t)
	// Shown this once, like an API key at issue: the receiver needs it.
	data["secret"] = generated
	return &logical.Response{Data: data}, nil
}

// setTargetFields applies url, secret and events from d to t, the part of a
// target that the mount's and the tenants' targets share. checkURL, when
// given, adds a rule of its own to the URL (a tenant's target: the SSRF
// guard). generated is the secret made up here, to be returned once.
func setTargetFields(d *framework.FieldData, t *notify.Target, checkURL func(string) error) (generated string, resp *logical.Response, err error) {
	if v, ok := d.GetOk("url"); ok {
		u := v.(string)
		err := notify.ValidateURL(u)
		if err == nil && checkURL != nil {
			err = checkURL(u)
		}
		if err != nil {
			return "", fieldError("url", err), nil
		}
		t.URL = u
	} else if t.URL == "" {
		return "", logical.ErrorResponse("missing url"), nil
	}
	if v, ok := d.GetOk("secret"); ok {
		if len(v.(string)) < minSecretLen {
			return "", logical.ErrorResponse("secret must be at least %d characters", minSecretLen), nil
		}
		t.Secret = v.(string)
	} else if t.Secret == "" {
		buf := make([]byte, 32)
		if _, err := rand.Read(buf); err != nil {
			return "", nil, fmt.Errorf("generate secret: %w", err)
		}
		t.Secret = base64.RawURLEncoding.EncodeToString(buf)
		generated = t.Secret
	}
	if v, ok := d.GetOk("events"); ok {
		events := uniqueSorted(v.([]string))
		for _, e := range events {
			if !notify.ValidType(e) {
				return "", logical.ErrorResponse("invalid events: %q is not one of %s", e, strings.Join(notify.Types, ", ")), nil
			}
		}
		t.Events = events
	}
	return generated, nil, nil
}

func (b *backend) pathTargetDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("target", name); err != nil {
		return fieldError("name", err), nil
	}
	if err := req.Storage.Delete(ctx, notifyTargetPrefix+name); err != nil {
		return nil, fmt.Errorf("delete notification target %q: %w", name, err)
	}
	b.forgetTargets()
	return nil, nil
}

func (b *backend) pathFailedList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ids, err := req.Storage.List(ctx, notify.FailedPrefix)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return logical.ListResponse(ids), nil
}

func failedID(d *framework.FieldData) (string, *logical.Response) {
	id := d.Get("id").(string)
	if id == "" || strings.Contains(id, "..") || !strings.Contains(id, ".") {
		return "", logical.ErrorResponse("invalid id %q: expected <event id>.<target>", id)
	}
	return id, nil
}

func (b *backend) pathFailedRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id, resp := failedID(d)
	if resp != nil {
		return resp, nil
	}
	del, err := notify.Read(ctx, req.Storage, notify.FailedPrefix, id)
	if err != nil || del == nil {
		return nil, err
	}
	var event map[string]interface{}
	if err := json.Unmarshal(del.Body, &event); err != nil {
		return nil, fmt.Errorf("decode dead letter %s: %w", id, err)
	}
	return &logical.Response{Data: map[string]interface{}{
		"id":         del.ID,
		"event_id":   del.EventID,
		"event_type": del.EventType,
		"tenant":     del.Tenant,
		"target":     del.Target,
		"attempts":   del.Attempts,
		"last_error": del.LastError,
		"created_at": timeOrNil(del.CreatedAt),
		"failed_at":  timeOrNil(del.FailedAt),
		"event":      event,
	}}, nil
}

func (b *backend) pathFailedDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id, resp := failedID(d)
	if resp != nil {
		return resp, nil
	}
	if err := req.Storage.Delete(ctx, notify.FailedPrefix+id); err != nil {
		return nil, fmt.Errorf("delete dead letter %s: %w", id, err)
	}
	return nil, nil
}

func (b *backend) pathFailedRequeue(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id, resp := failedID(d)
	if resp != nil {
		return resp, nil
	}
	ok, err := b.dispatcher.Requeue(ctx, req.Storage, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return logical.ErrorResponse("no dead letter %q", id), nil
	}
	return nil, nil
}

const pathTargetsListHelpSyn = `List webhook notification targets.`

const pathTargetsListHelpDesc = `Lists the names of the webhook targets under config/notifications/.`

const pathTargetHelpSyn = `Configure a webhook that receives the engine's events.`

const pathTargetHelpDesc = `
Every event (key-issued, key-revoked, key-rotated, key-expiring,
key-updated, key-leaked, rotation-failed, verify-anomaly, tenant-suspended)
that passes the target's events and tenants filters is POSTed to url as
JSON:

  {"id": "<idempotency id>", "type": "key-revoked", "occurred_at": "...",
   "tenant": "acme", "data": {...}}

with the headers X-Apikeys-Event, X-Apikeys-Delivery and Idempotency-Key
(the event id, the same on every retry) and

  X-Apikeys-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

Deliveries are stored in an outbox before they are sent, retried with
exponential backoff and jitter (config/monitoring), and after the last
attempt moved to notifications/failed. Delivery runs on the active node,
never on the request that raised the event; delivery is at least once, so
receivers deduplicate on the id.

The secret is never returned by a read; omit it on create to have one
generated and returned once. Deleting a target dead-letters its pending
deliveries.
`

const pathFailedHelpSyn = `Dead-lettered notifications.`

const pathFailedHelpDesc = `
Deliveries that failed their last attempt (config/monitoring
delivery_max_attempts), or whose target was deleted. Reading one shows the
event, target, attempts and last error; deleting discards it;
notifications/failed/<id>/requeue sends it again. The metric
apikeys_notification_dead_letters counts them.
`

const pathFailedRequeueHelpSyn = `Send a dead-lettered notification again.`

const pathFailedRequeueHelpDesc = `
Moves the dead letter back into the outbox with a fresh attempt budget and
the same event id, so a receiver that already got it can recognise it.
`

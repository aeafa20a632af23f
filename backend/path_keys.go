package backend

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
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
				"after": {
					Type:        framework.TypeString,
					Description: "key_info covers the keys after this key id (keys are sorted); empty: from the first.",
				},
				"limit": {
					Type:        framework.TypeInt,
					Default:     defaultKeyInfoLimit,
					Description: fmt.Sprintf("Most keys key_info covers, 1-%d; keys always lists every id.", maxKeyInfo),
				},
				"usage": {
					Type:        framework.TypeBool,
					Description: "key_info also holds each key's verify_count and last_used_at (one more storage read per key).",
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathKeysList,
					Summary:      "List a tenant's keys: ids, with each key's hint, name, role, kind, environment, status, created_at and expires_at (and with usage=true its verify_count and last_used_at) in key_info.",
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
				"status": {
					Type:          framework.TypeString,
					Description:   "disabled parks the key: it verifies as DISABLED until set active again; its lease and rotation go on.",
					AllowedValues: []interface{}{keyStatusActive, keyStatusDisabled},
				},
				"name": {
					Type:        framework.TypeString,
					Description: "A new label for the key (at most 128 characters); dynamic keys only.",
				},
				"metadata": {
					Type:        framework.TypeKVPairs,
					Description: "New metadata of the key, replacing what it has; dynamic keys only.",
				},
				"expires_at": {
					Type:        framework.TypeString,
					Description: "An earlier expiry (RFC 3339), in the future and no later than the key's current expiry (its lease's); renewals then never move it. Dynamic keys only.",
				},
			},
			// The path only updates: a key is never created here, so a
			// write is an update whether or not the key exists, and an
			// unknown key answers 404 rather than needing a create
			// capability no policy grants.
			ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathKeyRead,
					Summary:  "Read a key's metadata (never the key).",
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                  b.pathKeyUpdate,
					Summary:                   "Disable or enable a key, or change its name, metadata or expiry.",
					DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "update"},
					ForwardPerformanceStandby: true,
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

// Key statuses, as reads show them; an update sets the first two.
const (
	keyStatusActive   = "active"
	keyStatusDisabled = "disabled"
	keyStatusInGrace  = "in_grace"
	keyStatusExpired  = "expired"
)

// keyStatus is what a key answers to verify, short of its tenant's status:
// expired over disabled (an expired key is gone for good) over in_grace.
func keyStatus(e *keyEntry, now time.Time) string {
	switch {
	case !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt):
		return keyStatusExpired
	case e.Disabled:
		return keyStatusDisabled
	case e.InGrace:
		return keyStatusInGrace
	}
	return keyStatusActive
}

func keyResponse(e *keyEntry, now time.Time) map[string]interface{} {
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
		"expires_at":        timeOrNil(e.ExpiresAt),
		"updated_at":        timeOrNil(e.UpdatedAt),
		"status":            keyStatus(e, now),
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

// keyListWorkers read the records behind a key list in parallel: each read
// is a round trip to Vault, and a list of 10 000 keys is two reads per key.
const keyListWorkers = 8

// key_info is a page of the list: each key in it costs two storage reads
// (through Vault, ~0.1 ms each on the 2-core test machine, 8 at a time), so
// 10 000 keys' info took ~2 s while the ids alone take a few ms. The page
// keeps a list of any size fast; after= walks the rest.
const (
	defaultKeyInfoLimit = 1000
	maxKeyInfo          = maxUsageKeys
)

func (b *backend) pathKeysList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant := d.Get("tenant").(string)
	if err := validateName("tenant", tenant); err != nil {
		return fieldError("tenant", err), nil
	}
	limit := d.Get("limit").(int)
	if limit < 1 || limit > maxKeyInfo {
		return logical.ErrorResponse("limit must be between 1 and %d", maxKeyInfo), nil
	}
	after := d.Get("after").(string)
	ids, err := req.Storage.List(ctx, keyIndexPrefix(tenant))
	if err != nil {
		return nil, fmt.Errorf("list keys of tenant %q: %w", tenant, err)
	}
	sort.Strings(ids)
	from := sort.SearchStrings(ids, after)
	if from < len(ids) && ids[from] == after {
		from++
	}
	page := ids[from:min(len(ids), from+limit)]
	recs, err := readTenantKeys(ctx, req.Storage, tenant, page)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	info := make(map[string]interface{}, len(recs))
	infos := make([]map[string]interface{}, len(recs))
	for i, e := range recs {
		// An index entry whose record is gone (an interrupted issue that
		// tidy has not removed yet) is listed without info.
		if e != nil {
			infos[i] = keyListInfo(e, now)
			info[page[i]] = infos[i]
		}
	}
	if d.Get("usage").(bool) {
		err := forEachParallel(ctx, len(recs), func(ctx context.Context, i int) error {
			if recs[i] == nil {
				return nil
			}
			u, err := b.usage.keyUsageOf(ctx, req.Storage, tenant, page[i])
			if err != nil {
				return fmt.Errorf("usage of key %q: %w", page[i], err)
			}
			infos[i]["verify_count"] = u.VerifyCount
			infos[i]["last_used_at"] = timeOrNil(u.LastUsedAt)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	resp := logical.ListResponseWithInfo(ids, info)
	if rest := len(ids) - from - len(page); rest > 0 {
		resp.AddWarning(fmt.Sprintf("key_info covers %d of %d keys; %d more follow: list again with after=%s", len(page), len(ids), rest, page[len(page)-1]))
	}
	return resp, nil
}

// keyListInfo is a key's entry in key_info: enough to tell keys apart and
// see their state, not the full read.
func keyListInfo(e *keyEntry, now time.Time) map[string]interface{} {
	return map[string]interface{}{
		"hint":        e.Hint,
		"name":        e.Name,
		"role":        e.Role,
		"kind":        e.Kind,
		"environment": e.Environment,
		"status":      keyStatus(e, now),
		"created_at":  e.CreatedAt.Format(time.RFC3339),
		"expires_at":  timeOrNil(e.ExpiresAt),
	}
}

// readTenantKeys reads the records of ids (nil where there is none),
// keyListWorkers at a time; the first error stops it.
func readTenantKeys(ctx context.Context, s logical.Storage, tenant string, ids []string) ([]*keyEntry, error) {
	recs := make([]*keyEntry, len(ids))
	err := forEachParallel(ctx, len(ids), func(ctx context.Context, i int) error {
		e, err := readTenantKey(ctx, s, tenant, ids[i])
		recs[i] = e
		return err
	})
	if err != nil {
		return nil, err
	}
	return recs, nil
}

// forEachParallel calls do for 0..n-1, keyListWorkers at a time: each call
// is a storage round trip. The first error stops it and is returned.
func forEachParallel(ctx context.Context, n int, do func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(keyListWorkers, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := do(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// keyUpdate is a validated update of keys/<key_id>: nil fields are left
// as they are.
type keyUpdate struct {
	disabled  *bool
	name      *string
	metadata  map[string]string // nil: unchanged
	expiresAt *time.Time
}

// inputError is a caller's mistake found under a lock (against the record
// as it is): the handler answers it with a 400.
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func parseKeyUpdate(d *framework.FieldData, now time.Time) (keyUpdate, *logical.Response) {
	var u keyUpdate
	if v, ok := d.GetOk("status"); ok {
		switch v.(string) {
		case keyStatusActive:
			u.disabled = new(false)
		case keyStatusDisabled:
			u.disabled = new(true)
		default:
			return u, logical.ErrorResponse("invalid status %q: must be %q or %q", v, keyStatusActive, keyStatusDisabled)
		}
	}
	if v, ok := d.GetOk("name"); ok {
		name := v.(string)
		if len(name) > 128 {
			return u, logical.ErrorResponse("name must be at most 128 characters")
		}
		u.name = &name
	}
	v, ok, err := d.GetOkErr("metadata")
	if err != nil {
		return u, fieldError("metadata", err)
	}
	if ok {
		u.metadata = nonNilMap(v.(map[string]string))
	}
	if v, ok := d.GetOk("expires_at"); ok {
		t, err := time.Parse(time.RFC3339, v.(string))
		if err != nil {
			return u, logical.ErrorResponse("invalid expires_at %q: must be an RFC 3339 time such as 2030-01-02T15:04:05Z", v)
		}
		if !t.After(now) {
			return u, logical.ErrorResponse("expires_at (%s) must be in the future; to end a key now, delete it", t.UTC().Format(time.RFC3339))
		}
		t = t.UTC()
		u.expiresAt = &t
	}
	if u.disabled == nil && u.name == nil && u.metadata == nil && u.expiresAt == nil {
		return u, logical.ErrorResponse("nothing to update: give status, name, metadata or expires_at")
	}
	return u, nil
}

// apply changes e as u says and names the fields it changed; it refuses an
// expiry later than the key's own, which for a leased key is its lease's.
func (u keyUpdate) apply(e *keyEntry, now time.Time) ([]string, error) {
	var changed []string
	if u.expiresAt != nil {
		if !e.ExpiresAt.IsZero() && u.expiresAt.After(e.ExpiresAt) {
			return nil, &inputError{fmt.Sprintf("expires_at (%s) must not be later than the key's current expiry (%s): a key may be shortened, never extended beyond its lease; renew the lease to extend it",
				u.expiresAt.Format(time.RFC3339), e.ExpiresAt.UTC().Format(time.RFC3339))}
		}
		if !e.ExpiresAt.Equal(*u.expiresAt) || !e.ExpiryPinned {
			changed = append(changed, "expires_at")
		}
		e.ExpiresAt, e.ExpiryPinned = *u.expiresAt, true
	}
	if u.disabled != nil {
		if e.Disabled != *u.disabled {
			changed = append(changed, "status")
		}
		e.Disabled = *u.disabled
	}
	if u.name != nil {
		if e.Name != *u.name {
			changed = append(changed, "name")
		}
		e.Name = *u.name
	}
	if u.metadata != nil {
		if !maps.Equal(e.Metadata, u.metadata) {
			changed = append(changed, "metadata")
		}
		e.Metadata = u.metadata
	}
	if len(changed) > 0 {
		e.UpdatedAt = now
	}
	return changed, nil
}

func (b *backend) pathKeyUpdate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tenant, id, resp := tenantAndKeyID(d)
	if resp != nil {
		return resp, nil
	}
	now := time.Now().UTC()
	u, resp := parseKeyUpdate(d, now)
	if resp != nil {
		return resp, nil
	}
	cur, err := readTenantKey(ctx, req.Storage, tenant, id)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, logical.CodedError(http.StatusNotFound, fmt.Sprintf("no key %q of tenant %q", id, tenant))
	}
	var (
		e       *keyEntry
		changed []string
	)
	if cur.Kind == kindStatic {
		// A static key's keys are its own: their label is its name, their
		// metadata its metadata (static-keys/<name>), their lifetime its
		// rotation and grace periods.
		for _, f := range []struct {
			name string
			set  bool
		}{{"name", u.name != nil}, {"metadata", u.metadata != nil}, {"expires_at", u.expiresAt != nil}} {
			if f.set {
				return logical.ErrorResponse("%s cannot be changed on a key of static key %q: its keys take their name, metadata and lifetime from tenants/%s/static-keys/%s (only status applies here)", f.name, cur.Name, tenant, cur.Name), nil
			}
		}
		e, changed, err = b.setStaticKeyDisabled(ctx, req.Storage, cur, *u.disabled, now)
	} else {
		e, err = b.editKeyRecord(ctx, req.Storage, cur.Hash, func(e *keyEntry) error {
			var err error
			changed, err = u.apply(e, now)
			return err
		})
	}
	if ie := (*inputError)(nil); errors.As(err, &ie) {
		return logical.ErrorResponse("%s", ie.msg), nil
	}
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, logical.CodedError(http.StatusNotFound, fmt.Sprintf("no key %q of tenant %q", id, tenant))
	}
	if len(changed) > 0 {
		b.keyUpdated(ctx, req.Storage, e, changed)
	}
	return b.withKeyUsage(ctx, req.Storage, e, keyResponse(e, time.Now())), nil
}

// setStaticKeyDisabled parks (or unparks) the static key that k belongs to:
// the static key entry first, so that a rotation, which waits for the
// tenant lock held here, makes a key in the new state; then its current and
// rotated-out keys. It returns k's record as written. A failure part way
// leaves a state that the same request, sent again, completes.
func (b *backend) setStaticKeyDisabled(ctx context.Context, s logical.Storage, k *keyEntry, disabled bool, now time.Time) (*keyEntry, []string, error) {
	lock := b.tenantLock(k.Tenant)
	lock.Lock()
	defer lock.Unlock()
	hashes := []string{k.Hash}
	st, err := readStaticKey(ctx, s, k.Tenant, k.Name)
	if err != nil {
		return nil, nil, err
	}
	var changed []string
	if st != nil && (st.CurrentID == k.KeyID || st.PreviousID == k.KeyID) {
		if st.Disabled != disabled {
			changed = []string{"status"}
		}
		st.Disabled = disabled
		if err := writeStaticKey(ctx, s, st); err != nil {
			return nil, nil, err
		}
		hashes = []string{st.CurrentHash}
		if st.PreviousHash != "" {
			hashes = append(hashes, st.PreviousHash)
		}
	}
	var out *keyEntry
	for _, h := range hashes {
		e, err := b.editKeyRecord(ctx, s, h, func(e *keyEntry) error {
			if e.Disabled != disabled {
				e.Disabled, e.UpdatedAt = disabled, now
				changed = []string{"status"}
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		if e != nil && e.KeyID == k.KeyID {
			out = e
		}
	}
	return out, changed, nil
}

const pathKeysListHelpSyn = `List a tenant's keys, with a summary of each.`

const pathKeysListHelpDesc = `
Lists the key ids of every key the tenant holds, dynamic and static, and in
key_info, per key: hint (prefix, environment and the first and last 4
characters of the random part, e.g. acme_live_Xn8I…cQKo; empty for keys
issued before hints existed), name, role, kind, environment, status
(active, disabled, in_grace or expired), created_at and expires_at; with
usage=true also verify_count and last_used_at (as of the last flush, plus
what this node counted since; one more storage read per key).

key_info covers a page of the keys, in id order: the first limit (default
1000, at most 10000) after the key id given as after. Listing the ids is
cheap at any size; each key in key_info costs two storage reads, so a larger
tenant is walked page by page (a warning names the next after). Read
tenants/<tenant>/keys/<key_id> for one key's full metadata and usage.
`

const pathKeyHelpSyn = `Read, update or revoke one key of a tenant.`

const pathKeyHelpDesc = `
Reading returns the key's metadata: hint, role, kind (dynamic or static),
name, scopes, environment, allowed CIDRs, rate limit, created_at,
expires_at, updated_at, last_used_at and status (active, disabled, in_grace
or expired). The key itself is never returned: only its HMAC is stored, and
the hint shows 8 of its 43 random characters.

Updating takes:

  status      disabled parks the key: it verifies as DISABLED, on Vault
              and on every edge verifier, from the very next request, while
              its lease (and, for a static key, its rotation) goes on;
              active makes it VALID again. On a key of a static key it parks
              the whole static key: its current and rotated-out keys, and
              every key a rotation makes until it is set active again.
  name        a new label (dynamic keys)
  metadata    new metadata, replacing the key's (dynamic keys)
  expires_at  an earlier expiry, RFC 3339: in the future and no later than
              the key's current expiry, which for a leased key is its
              lease's. Renewals then extend the lease up to it, never past
              it. Static keys refuse it: their keys live by rotation_period
              and grace_period.

A bad value is a 400 naming the field and changes nothing. A change raises a
key-updated event.

Deleting revokes the key at once: it fails the very next verify. Its Vault
lease, if any, stays until it expires or is revoked, which is then a no-op.
Deleting the current key of a static key also rotates the static key at
once, with no grace for the deleted key.
`

package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const secretAPIKeyType = "api_key"

func (b *backend) secretAPIKey() *framework.Secret {
	return &framework.Secret{
		Type: secretAPIKeyType,
		Fields: map[string]*framework.FieldSchema{
			"api_key": {Type: framework.TypeString, Description: "The API key."},
			"key_id":  {Type: framework.TypeString, Description: "Public id of the key."},
		},
		Renew:  b.secretAPIKeyRenew,
		Revoke: b.secretAPIKeyRevoke,
	}
}

// leaseKey is what a lease carries about its key: enough to find and delete
// the key with no role or tenant record left.
type leaseKey struct {
	tenant, id, hash string
	ttl, maxTTL      time.Duration
}

func leaseKeyFrom(req *logical.Request) (leaseKey, error) {
	if req.Secret == nil {
		return leaseKey{}, fmt.Errorf("request carries no secret")
	}
	in := req.Secret.InternalData
	str := func(k string) string { s, _ := in[k].(string); return s }
	// Numbers come back from the lease store as float64 or json.Number.
	secs := func(k string) time.Duration {
		switch v := in[k].(type) {
		case float64:
			return time.Duration(v) * time.Second
		case int64:
			return time.Duration(v) * time.Second
		case int:
			return time.Duration(v) * time.Second
		case interface{ Int64() (int64, error) }:
			n, _ := v.Int64()
			return time.Duration(n) * time.Second
		}
		return 0
	}
	lk := leaseKey{tenant: str("tenant"), id: str("key_id"), hash: str("hash"), ttl: secs("ttl"), maxTTL: secs("max_ttl")}
	if lk.tenant == "" || lk.id == "" || lk.hash == "" {
		return leaseKey{}, fmt.Errorf("lease internal data lacks tenant, key_id or hash")
	}
	return lk, nil
}

func (b *backend) secretAPIKeyRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	lk, err := leaseKeyFrom(req)
	if err != nil {
		return nil, err
	}
	if err := b.revokeKeyByHash(ctx, req.Storage, lk.tenant, lk.id, lk.hash); err != nil {
		return nil, err
	}
	return nil, nil
}

func (b *backend) secretAPIKeyRenew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	lk, err := leaseKeyFrom(req)
	if err != nil {
		return nil, err
	}
	ttl, warnings, err := framework.CalculateTTL(b.System(), req.Secret.Increment, lk.ttl, 0, lk.maxTTL, 0, req.Secret.IssueTime)
	if err != nil {
		return nil, err
	}
	// The record's expiry follows the lease, so verify's own expiry check
	// agrees with Vault about when the key dies. An expiry its owner set
	// (keys/<key_id> expires_at) is never moved later: the lease is
	// renewed up to it and no further.
	now := time.Now().UTC()
	e, err := b.updateKeyRecord(ctx, req.Storage, lk.hash, func(e *keyEntry) {
		if !e.ExpiryPinned {
			e.ExpiresAt = now.Add(ttl)
		}
	})
	if err != nil {
		return nil, err
	}
	if e == nil {
		return logical.ErrorResponse("key %q was revoked", lk.id), nil
	}
	maxTTL := lk.maxTTL
	if e.ExpiryPinned {
		left := e.ExpiresAt.Sub(now).Truncate(time.Second)
		if left <= 0 {
			return logical.ErrorResponse("key %q expired at %s, the expires_at set on it; it cannot be renewed", lk.id, e.ExpiresAt.Format(time.RFC3339)), nil
		}
		ttl = min(ttl, left)
		// Vault computes the renewed TTL itself from the increment asked,
		// capped only by the lease's issue time plus MaxTTL: that sum is
		// made the pinned expiry.
		if !req.Secret.IssueTime.IsZero() {
			maxTTL = min(maxTTL, e.ExpiresAt.Sub(req.Secret.IssueTime.Truncate(time.Second)).Truncate(time.Second))
		}
	}
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = maxTTL
	for _, w := range warnings {
		resp.AddWarning(w)
	}
	return resp, nil
}

package backend

import (
	"context"
	"net/netip"
	"time"
	"unsafe"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// verifyOutcome carries the key for every answer about a found key of the
// right tenant (usage and metrics attribute it); verifyResponse shows its
// details only when VALID. NOT_FOUND never carries one.
type verifyOutcome struct {
	Code string
	Key  *cachedKey
	// Quota is the key's standing against its quota, when one applies.
	Quota contract.Quota
}

func verifyFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"api_key": {
			Type:        framework.TypeString,
			Description: "The API key presented by the client (POST). On GET it comes in the X-Api-Key header instead.",
		},
		"required_scopes": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Scopes the request needs; the key must hold all of them, else INSUFFICIENT_SCOPE.",
		},
		"client_ip": {
			Type:        framework.TypeString,
			Description: "IP address of the client that presented the key; checked against the key's allowed_cidrs.",
		},
	}
}

func (b *backend) pathVerify() []*framework.Path {
	global := verifyFields()
	global["tenant"] = &framework.FieldSchema{
		Type:        framework.TypeString,
		Description: "If set, only this tenant's keys verify; any other key answers NOT_FOUND.",
	}
	scoped := verifyFields()
	scoped["tenant"] = &framework.FieldSchema{
		Type:        framework.TypeString,
		Description: "Name of the tenant whose keys may verify.",
		Required:    true,
	}
	return []*framework.Path{
		{
			Pattern: "verify$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: global,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:     b.pathVerifyWrite,
					Summary:      "Check an API key.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "verify", OperationSuffix: "key"},
				},
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathVerifyRead,
					Summary:      "Check an API key sent in the X-Api-Key header (mount tuned with passthrough_request_headers=X-Api-Key).",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "verify", OperationSuffix: "key-from-header"},
				},
			},
			HelpSynopsis:    pathVerifyHelpSyn,
			HelpDescription: pathVerifyHelpDesc,
		},
		{
			Pattern: "tenants/" + namePattern("tenant") + "/verify$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
			},
			Fields: scoped,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:     b.pathVerifyWrite,
					Summary:      "Check an API key of one tenant.",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "verify", OperationSuffix: "tenant-key"},
				},
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathVerifyRead,
					Summary:      "Check an API key of one tenant sent in the X-Api-Key header (mount tuned with passthrough_request_headers=X-Api-Key).",
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "verify", OperationSuffix: "tenant-key-from-header"},
				},
			},
			HelpSynopsis:    pathVerifyHelpSyn,
			HelpDescription: pathVerifyHelpDesc,
		},
	}
}

// apiKeyHeader carries the key on a GET verify. Vault hands request headers
// to a plugin only when the mount is tuned with
// passthrough_request_headers=X-Api-Key.
const apiKeyHeader = "X-Api-Key"

func (b *backend) pathVerifyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	return b.handleVerify(ctx, req, d, d.Get("api_key").(string))
}

// pathVerifyRead serves GET verify: one hop from Vault to the plugin instead
// of two (Vault runs an existence check over gRPC before every write), and
// the key arrives in the same header a gateway already forwards. The key is
// never accepted in the URL, where proxies and access logs would keep it.
func (b *backend) pathVerifyRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if _, ok := req.Data["api_key"]; ok {
		return logical.ErrorResponse("api_key must not be sent in the URL: use the %s header or a POST body", apiKeyHeader), nil
	}
	var key string
	if v := req.Headers[apiKeyHeader]; len(v) > 0 {
		key = v[0]
	}
	return b.handleVerify(ctx, req, d, key)
}

func (b *backend) handleVerify(ctx context.Context, req *logical.Request, d *framework.FieldData, key string) (*logical.Response, error) {
	in := contract.Request{APIKey: key}
	if in.APIKey == "" {
		return logical.ErrorResponse("missing api_key (POST body field, or the %s header on GET)", apiKeyHeader), nil
	}
	if t := d.Get("tenant").(string); t != "" {
		if err := validateName("tenant", t); err != nil {
			return fieldError("tenant", err), nil
		}
		in.Tenant = t
	}
	if v, ok := d.GetOk("required_scopes"); ok {
		in.RequiredScopes = v.([]string)
	}
	if ip := d.Get("client_ip").(string); ip != "" {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			return fieldError("client_ip", err), nil
		}
		in.ClientIP = addr
	}

	// One clock read serves the decision and its count in the usage.
	now := b.usage.now()
	out, err := b.verify(ctx, req.Storage, &in, now)
	if err != nil {
		return nil, err
	}
	b.recordVerify(&in, out, now)
	return &logical.Response{Data: verifyResponse(out)}, nil
}

// verify is the plugin's side of the verify contract (contract.Decide),
// free of HTTP and field parsing so that it can be benchmarked alone. A warm
// call reads no storage and writes none, ever.
func (b *backend) verify(ctx context.Context, s logical.Storage, in *contract.Request, now time.Time) (verifyOutcome, error) {
	// Too long to be a key: not worth hashing for its position below.
	if len(in.APIKey) > keyformat.MaxLen {
		return verifyOutcome{Code: contract.CodeMalformed}, nil
	}
	// The key's slot is placed by a cheap hash of the key, not by its
	// HMAC: its memory access runs during the checks and the HMAC below.
	loc := b.cache.locate(in.APIKey)
	b.cache.prefetchKey(loc)
	// Shape and checksum first: garbage and typos cost no storage read.
	if !contract.WellFormed(in.APIKey) {
		return verifyOutcome{Code: contract.CodeMalformed}, nil
	}
	h, err := b.getHasher(ctx, s, false)
	if err != nil || h == nil {
		return verifyOutcome{Code: contract.CodeNotFound}, err
	}
	sum := h.Sum(in.APIKey)
	// Decided from the key's slot alone (see verifySlot); k.key is only
	// handed on, for the answer and usage.
	k, err := b.lookupKey(ctx, s, loc, sum)
	if err != nil {
		return verifyOutcome{}, err
	}
	if k.key == nil || !keyformat.Equal(k.hash, sum) {
		return verifyOutcome{Code: contract.CodeNotFound}, nil
	}
	p := k.profile
	// Spend reads the cached key's first line (see cachedKey) only for a
	// rate limit or a quota: start loading it now, so it arrives while
	// the tenant is read. Without either, the decision reads the slot and
	// the shared profile alone, and no memory of the key's own.
	if p.rateLimit > 0 || p.quota.Limit > 0 {
		prefetch(unsafe.Pointer(k.key))
	}
	f := contract.Key{Tenant: p.tenant, ExpiresAt: k.expiresAt, Disabled: p.disabled, Scopes: p.scopes, CIDRs: p.cidrs}
	v, err := contract.Decide(ctx, pluginStore{b: b, s: s}, in, &f, k, now)
	if err != nil {
		return verifyOutcome{}, err
	}
	// Another tenant's key is not attributed to anyone: it answers like
	// an unknown one in usage and metrics too.
	if v.Code == contract.CodeNotFound {
		return verifyOutcome{Code: v.Code}, nil
	}
	return verifyOutcome{Code: v.Code, Key: k.key, Quota: v.Quota}, nil
}

// pluginStore is the verify contract's Store over the mount: tenants from
// the verify cache (else storage), rate limits from this node's buckets,
// quotas from this node's counters (quota.go).
type pluginStore struct {
	b *backend
	s logical.Storage
}

func (ps pluginStore) TenantStatus(ctx context.Context, tenant string) (string, error) {
	t, err := ps.b.lookupTenant(ctx, ps.s, tenant)
	if err != nil || t == nil {
		return "", err
	}
	return t.Status, nil
}

// Spend is handed the key's slot (a value: no allocation), whose profile
// says whether the key has a rate limit or a quota of its own; only then
// does it read the cached key behind the slot.
func (ps pluginStore) Spend(k verifySlot, now time.Time) (string, contract.Quota) {
	p := k.profile
	if p.rateLimit > 0 && !ps.b.limiter.allow(k.key.keyID, p.rateLimit, p.ratePeriod, now) {
		return contract.CodeRateLimited, contract.Quota{}
	}
	return ps.b.spendQuota(p, k.key, now)
}

func verifyResponse(out verifyOutcome) map[string]interface{} {
	if out.Code != contract.CodeValid {
		a := contract.Refusal(out.Code)
		a.SetQuota(out.Quota)
		return a.Data()
	}
	k, p := out.Key, out.Key.profile
	a := contract.Answer{
		Valid: true, Code: contract.CodeValid, KeyID: k.keyID, Tenant: p.tenant, Role: p.role,
		Scopes: p.scopes, Environment: p.environment, Metadata: p.metadata,
		ExpiresAt: contract.Expiry(k.expiresAt), Kind: p.kind, InGrace: k.inGrace,
	}
	a.SetQuota(out.Quota)
	return a.Data()
}

const pathVerifyHelpSyn = `Check whether an API key is valid and what it may do.`

const pathVerifyHelpDesc = `
API gateways call this for each request. A well-formed request always gets
HTTP 200, so "invalid key" is never confused with "Vault is down"; the body
says valid (true/false) and a code:

  VALID               the key is good; key_id, tenant, role, scopes,
                      environment, metadata, expires_at, kind and in_grace
                      come with it
  MALFORMED           not shaped like a key or a bad checksum (no storage read)
  NOT_FOUND           unknown or revoked key, or another tenant's key on the
                      tenant-scoped path
  EXPIRED             past its expiry, even if its lease was not revoked yet
  TENANT_SUSPENDED    the key's tenant is suspended
  DISABLED            the key is parked by its owner (keys/<key_id>
                      status=disabled) until enabled again
  IP_NOT_ALLOWED      client_ip is missing or outside the key's allowed_cidrs
  INSUFFICIENT_SCOPE  the key lacks one of required_scopes
  RATE_LIMITED        over the role's rate_limit on this node
  QUOTA_EXCEEDED      the role's quota (per key) or the tenant's quota is
                      spent for this quota_period; quota_resets_at says when
                      it is whole again

A VALID answer of a key under a quota also carries quota_remaining and
quota_resets_at: of the role's quota, or of the tenant's when that leaves
less. Only requests that pass every other check spend quota.

tenants/<tenant>/verify answers only for that tenant's keys: give gateways of
one tenant that path and they can learn nothing of other tenants. Verify never
writes storage, so it runs on standby nodes too.

POST (vault write) takes api_key in the body. GET (vault read) takes the key
in the X-Api-Key header and the other fields as query parameters; it saves
the existence-check round trip Vault makes to the plugin before every write.
Tune the mount once for it:

  vault secrets tune -passthrough-request-headers=X-Api-Key apikeys/

A key in the URL (?api_key=) is refused: URLs end up in access logs.
`

package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

const (
	defaultKeyPrefix     = "ak"
	defaultExpiryWarning = 7 * 24 * time.Hour
)

// mountConfig holds the mount-wide settings. It never holds a secret: the
// HMAC pepper lives in its own seal-wrapped entry and is never returned.
type mountConfig struct {
	KeyPrefix     string        `json:"key_prefix"`
	DefaultTTL    time.Duration `json:"default_ttl"`
	MaxTTL        time.Duration `json:"max_ttl"`
	ExpiryWarning time.Duration `json:"expiry_warning"`
	// EnforceEntityTenant and PlatformAdminGroups drive the tenant guard
	// (tenant_guard.go).
	EnforceEntityTenant bool     `json:"enforce_entity_tenant"`
	PlatformAdminGroups []string `json:"platform_admin_groups"`
	// LeakAction is what leaks/report does to a key it matches: revoke,
	// disable or notify.
	LeakAction string `json:"leak_action"`
	// TenantWebhookPrivateOK lifts the guard of tenants' webhook targets
	// (https only, public addresses only) for development and tests.
	TenantWebhookPrivateOK bool `json:"tenant_webhook_private_ok"`
}

func defaultConfig() *mountConfig {
	return &mountConfig{KeyPrefix: defaultKeyPrefix, ExpiryWarning: defaultExpiryWarning, LeakAction: leakRevoke}
}

func (b *backend) pathConfig() []*framework.Path {
	return []*framework.Path{{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields: map[string]*framework.FieldSchema{
			"key_prefix": {
				Type:        framework.TypeLowerCaseString,
				Description: "Prefix of keys issued for tenants that set no key_prefix of their own: 1-16 lower-case letters or digits, starting with a letter.",
				Default:     defaultKeyPrefix,
			},
			"default_ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "TTL of issued keys when neither the role nor the tenant sets one. 0 uses the mount's (Vault's) default lease TTL.",
			},
			"max_ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "Upper bound on the TTL of any key of this mount. 0 uses the mount's (Vault's) max lease TTL.",
			},
			"expiry_warning": {
				Type:        framework.TypeDurationSecond,
				Description: "How long before a key expires it counts as expiring (notifications, usage reports).",
				Default:     int(defaultExpiryWarning.Seconds()),
			},
			"enforce_entity_tenant": {
				Type: framework.TypeBool,
				Description: "Defence in depth behind the policies: when true, every tenants/<tenant> path answers 403 unless the caller's identity entity has metadata tenant=<tenant> " +
					"(on the entity, or as metadata or custom_metadata of one of its aliases, e.g. a JWT claim mapped by claim_mappings), compared exactly, " +
					"or is a member of one of platform_admin_groups. Requests with no entity (root tokens, tokens made directly by the token store) are denied too: " +
					"root can still change this setting. Default false.",
			},
			"platform_admin_groups": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Names of Vault identity groups whose member entities may use every tenant's paths while enforce_entity_tenant is on (platform administrators).",
			},
			"leak_action": {
				Type:          framework.TypeString,
				Description:   "What leaks/report does to a key a secret scanner reports: revoke it (as keys/<key_id> delete), disable it (as keys/<key_id> status=disabled), or notify (the key-leaked event only). Each raises key-leaked.",
				Default:       leakRevoke,
				AllowedValues: []interface{}{leakRevoke, leakDisable, leakNotify},
			},
			"tenant_webhook_private_ok": {
				Type: framework.TypeBool,
				Description: "When true, tenants' own notification targets (tenants/<tenant>/notifications/<name>) may use http and reach loopback, private, link-local and other non-public addresses. " +
					"Default false: they must use https, and every delivery is refused, at dial time, to an address that is not public. For development and tests only; the mount's own targets are never restricted.",
			},
		},
		ExistenceCheck: b.configExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				Summary:      "Read the mount configuration.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "configuration"},
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:                  b.pathConfigWrite,
				Summary:                   "Configure the mount.",
				DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "configure"},
				ForwardPerformanceStandby: true,
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                  b.pathConfigWrite,
				Summary:                   "Configure the mount.",
				DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "configure"},
				ForwardPerformanceStandby: true,
			},
		},
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: pathConfigHelpDesc,
	}}
}

// readConfig returns the stored configuration, or the defaults when none was
// written yet.
func readConfig(ctx context.Context, s logical.Storage) (*mountConfig, error) {
	cfg := defaultConfig()
	if _, err := getJSONInto(ctx, s, configPath, "config", cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (b *backend) configExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	entry, err := req.Storage.Get(ctx, configPath)
	if err != nil {
		return false, fmt.Errorf("read config: %w", err)
	}
	return entry != nil, nil
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := readConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]interface{}{
		"key_prefix":     cfg.KeyPrefix,
		"default_ttl":    int64(cfg.DefaultTTL.Seconds()),
		"max_ttl":        int64(cfg.MaxTTL.Seconds()),
		"expiry_warning": int64(cfg.ExpiryWarning.Seconds()),

		"enforce_entity_tenant": cfg.EnforceEntityTenant,
		"platform_admin_groups": nonNilSlice(cfg.PlatformAdminGroups),
		"leak_action":           cfg.LeakAction,

		"tenant_webhook_private_ok": cfg.TenantWebhookPrivateOK,
	}}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	// Held to the end: the tenant guard's cached copy changes together with
	// storage, so it is never older than the last write.
	b.config.mu.Lock()
	defer b.config.mu.Unlock()
	cfg, err := readConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if v, ok, err := d.GetOkErr("key_prefix"); err != nil {
		return fieldError("key_prefix", err), nil
	} else if ok {
		if err := keyformat.ValidatePrefix(v.(string)); err != nil {
			return fieldError("key_prefix", err), nil
		}
		cfg.KeyPrefix = v.(string)
	}
	for _, f := range []struct {
		name string
		dst  *time.Duration
	}{
		{"default_ttl", &cfg.DefaultTTL},
		{"max_ttl", &cfg.MaxTTL},
		{"expiry_warning", &cfg.ExpiryWarning},
	} {
		v, ok, err := d.GetOkErr(f.name)
		if err != nil {
			return fieldError(f.name, err), nil
		}
		if !ok {
			continue
		}
		if v.(int) < 0 {
			return logical.ErrorResponse("%s must not be negative", f.name), nil
		}
		*f.dst = time.Duration(v.(int)) * time.Second
	}
	if v, ok, err := d.GetOkErr("enforce_entity_tenant"); err != nil {
		return fieldError("enforce_entity_tenant", err), nil
	} else if ok {
		cfg.EnforceEntityTenant = v.(bool)
	}
	if v, ok, err := d.GetOkErr("platform_admin_groups"); err != nil {
		return fieldError("platform_admin_groups", err), nil
	} else if ok {
		// An empty value clears the list.
		cfg.PlatformAdminGroups = uniqueSorted(v.([]string))
	}
	if v, ok, err := d.GetOkErr("leak_action"); err != nil {
		return fieldError("leak_action", err), nil
	} else if ok {
		switch a := v.(string); a {
		case leakRevoke, leakDisable, leakNotify:
			cfg.LeakAction = a
		default:
			return logical.ErrorResponse("invalid leak_action %q: must be %q, %q or %q", a, leakRevoke, leakDisable, leakNotify), nil
		}
	}
	if v, ok, err := d.GetOkErr("tenant_webhook_private_ok"); err != nil {
		return fieldError("tenant_webhook_private_ok", err), nil
	} else if ok {
		cfg.TenantWebhookPrivateOK = v.(bool)
	}
	if cfg.MaxTTL > 0 && cfg.DefaultTTL > cfg.MaxTTL {
		return logical.ErrorResponse("default_ttl (%s) must not exceed max_ttl (%s)", cfg.DefaultTTL, cfg.MaxTTL), nil
	}

	if err := putJSON(ctx, req.Storage, configPath, "config", cfg); err != nil {
		return nil, err
	}
	b.config.cur.Store(cfg)
	return nil, nil
}

// fieldError is the 400 for a field whose value could not be parsed or is
// not allowed; the field is always named so the caller knows what to fix.
func fieldError(field string, err error) *logical.Response {
	return logical.ErrorResponse("invalid %s: %s", field, err.Error())
}

const pathConfigHelpSyn = `Configure the API keys secrets engine.`

const pathConfigHelpDesc = `
Mount-wide settings:

  key_prefix      prefix of issued keys for tenants that set none
                  (keys look like <prefix>_<env>_<random><checksum>)
  default_ttl     TTL of issued keys when the role and tenant set none
  max_ttl         upper bound on every key's TTL on this mount
  expiry_warning  window before expiry in which a key counts as expiring

  enforce_entity_tenant  when true, tenants/<tenant> paths also check that
                  the caller's identity entity carries metadata
                  tenant=<tenant> (entity or alias metadata), or is in one
                  of platform_admin_groups; anything else, including root
                  and other tokens without an entity, gets 403
  platform_admin_groups  identity groups whose members pass that check for
                  every tenant
  leak_action     what leaks/report does to a key a secret scanner
                  reports: revoke (default), disable or notify; each
                  raises a key-leaked event
  tenant_webhook_private_ok  when true, tenants' own webhook targets may
                  use http and private or loopback addresses (development
                  and tests); default false: https and public addresses
                  only, checked when each delivery connects

TTLs are further capped by the mount's tuned max lease TTL. Reading the
configuration never returns secret material: the HMAC pepper that protects
stored key hashes is generated on first use, seal-wrapped, and never leaves
the plugin.
`

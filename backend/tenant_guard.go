package backend

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// The tenant guard is defence in depth behind Vault's ACL policies. Policies
// find the tenant through identity templating
// ({{identity.entity.metadata.tenant}}), which pastes the value into the
// policy path verbatim: a mis-written policy ("tenants/*") or an identity
// value that is a policy glob (a JWT tenant claim of "+") opens every tenant.
// With enforce_entity_tenant on, each request to a tenant's path must also
// come from an entity that belongs to that tenant, compared as an exact
// string, so neither mistake reaches another tenant's data.

// entityTenantKey is the metadata key that names the caller's tenant, on the
// entity (set by operators) or on one of its aliases (set by an auth method,
// e.g. the claim_mappings of a JWT role or of the oidc role people sign in
// through, or by operators as custom_metadata). Any alias counts, whatever
// its mount: the bootstrap policies read the JWT and the OIDC alias alike.
const entityTenantKey = "tenant"

// tenantCapture is the name of the path capture that holds the tenant.
const tenantCapture = "tenant"

// guardTenantPaths wraps every operation of every path that takes a tenant
// from the URL. It works on the patterns, not on a list of handlers, so a
// path added later is guarded without anyone remembering to do it.
func (b *backend) guardTenantPaths(paths []*framework.Path) []*framework.Path {
	for _, p := range paths {
		if !capturesTenant(p.Pattern) {
			continue
		}
		for op, h := range p.Operations {
			p.Operations[op] = &guardedOperation{OperationHandler: h, b: b}
		}
		// Callbacks is deprecated, but a path that still used it must not
		// slip past the guard.
		//lint:ignore SA1019 guarding the deprecated map is the point
		for op, cb := range p.Callbacks {
			//lint:ignore SA1019 as above
			p.Callbacks[op] = b.guard(cb)
		}
	}
	return paths
}

func capturesTenant(pattern string) bool {
	re, err := regexp.Compile(pattern)
	// A pattern that does not compile fails the framework's own setup; it
	// cannot serve requests, so there is nothing to guard.
	return err == nil && re.SubexpIndex(tenantCapture) >= 0
}

// guardedOperation keeps the wrapped operation's properties (summary,
// forwarding, OpenAPI attributes) and checks the tenant before its handler.
type guardedOperation struct {
	framework.OperationHandler
	b *backend
}

func (g *guardedOperation) Handler() framework.OperationFunc {
	return g.b.guard(g.OperationHandler.Handler())
}

func (b *backend) guard(next framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		// The capture, not the body: the framework lets the URL win over a
		// body field of the same name, and the handler reads the same value.
		tenant, _ := d.Raw[tenantCapture].(string)
		if err := b.checkEntityTenant(ctx, req, tenant); err != nil {
			return nil, err
		}
		return next(ctx, req, d)
	}
}

// checkEntityTenant returns nil when the request may act on tenant, and
// logical.ErrPermissionDenied (HTTP 403) when enforcement is on and the
// caller's identity does not belong to the tenant.
func (b *backend) checkEntityTenant(ctx context.Context, req *logical.Request, tenant string) error {
	cfg, err := b.cachedConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	if !cfg.EnforceEntityTenant {
		return nil
	}
	allowed, reason, err := b.entityMayUseTenant(req.EntityID, tenant, cfg.PlatformAdminGroups)
	if err != nil {
		// Fail closed: a caller never gets in because Vault could not say
		// who it is.
		return fmt.Errorf("check the caller's tenant: %w", err)
	}
	if !allowed {
		b.Logger().Warn("tenant guard denied a request", "path", req.Path, "operation", req.Operation,
			"tenant", tenant, "entity_id", req.EntityID, "reason", reason)
		return logical.ErrPermissionDenied
	}
	return nil
}

// entityMayUseTenant decides; reason says why not, for the log.
//
// A request with no entity is denied. Root tokens and tokens minted straight
// from the token store have none, and the plugin cannot tell a root token
// from any other such token, so letting them through would let through
// exactly the unattributed credentials an auditor cares most about. Root
// keeps control: config is not a tenant path, so root can still turn
// enforcement off (an audited, visible act) or name a platform admin group.
func (b *backend) entityMayUseTenant(entityID, tenant string, adminGroups []string) (bool, string, error) {
	if entityID == "" {
		return false, "request has no identity entity (root or token-store token)", nil
	}
	if tenant == "" {
		return false, "path names no tenant", nil
	}
	ent, err := b.System().EntityInfo(entityID)
	if err != nil {
		return false, "", fmt.Errorf("look up entity %q: %w", entityID, err)
	}
	if ent == nil {
		return false, "entity not found", nil
	}
	if ent.Disabled {
		return false, "entity is disabled", nil
	}
	if entityBelongsTo(ent, tenant) {
		return true, "", nil
	}
	if len(adminGroups) > 0 {
		groups, err := b.System().GroupsForEntity(entityID)
		if err != nil {
			return false, "", fmt.Errorf("look up groups of entity %q: %w", entityID, err)
		}
		for _, g := range groups {
			if g != nil && slices.Contains(adminGroups, g.Name) {
				return true, "", nil
			}
		}
	}
	return false, "entity does not belong to the tenant", nil
}

// entityBelongsTo compares exactly: "+", "*" or "acme/x" never equal a
// tenant name, which is the whole point of checking behind the policies.
func entityBelongsTo(ent *logical.Entity, tenant string) bool {
	if ent.Metadata[entityTenantKey] == tenant {
		return true
	}
	for _, a := range ent.Aliases {
		if a == nil {
			continue
		}
		if a.Metadata[entityTenantKey] == tenant || a.CustomMetadata[entityTenantKey] == tenant {
			return true
		}
	}
	return false
}

// configCache holds the mount config for the guard, which runs on every
// tenant request (tenant verify included), so it must not cost a storage
// read. It is exact, not time-based: local writes replace it under mu and
// Invalidate(configPath) drops it when another node wrote.
type configCache struct {
	// mu orders cache fills, local config writes and Invalidate, so a fill
	// that read storage before a change can never store the old value after
	// the change was applied or dropped.
	mu  sync.Mutex
	cur atomic.Pointer[mountConfig]
}

// cachedConfig returns the mount config; callers must not modify it.
func (b *backend) cachedConfig(ctx context.Context, s logical.Storage) (*mountConfig, error) {
	if c := b.config.cur.Load(); c != nil {
		return c, nil
	}
	b.config.mu.Lock()
	defer b.config.mu.Unlock()
	if c := b.config.cur.Load(); c != nil {
		return c, nil
	}
	c, err := readConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	b.config.cur.Store(c)
	return c, nil
}

// forgetConfig serves Invalidate(configPath).
func (b *backend) forgetConfig() {
	b.config.mu.Lock()
	b.config.cur.Store(nil)
	b.config.mu.Unlock()
}

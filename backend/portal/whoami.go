package portal

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// identity is who a fresh token belongs to, as the session records it.
type identity struct {
	user           string
	tenant         string
	ttl            time.Duration
	canListTenants bool
}

// whoami reads what the session needs of a fresh token. The tenant is the
// one the bootstrap policies template on, found in this order:
//
//  1. the auth response's metadata "tenant": a JWT/OIDC role's
//     claim_mappings put the claim there and on the alias, which is what
//     {{identity.entity.aliases.<jwt>.metadata.tenant}} reads;
//  2. the entity's metadata "tenant" (or an alias's), when the token may
//     read identity/entity/id/<entity_id> (tenant policies do not grant it);
//  3. the token's resultant ACL (sys/internal/ui/resultant-acl, in Vault's
//     default policy): the templated policies rendered for this entity, so
//     a path <mount>/tenants/<name>/... names the tenant that
//     {{identity.entity.metadata.tenant}} filled in.
//
// A token with no tenant but the capability to list tenants is a platform
// admin's: it picks a tenant on /tenants.
func (s *Server) whoami(ctx context.Context, c *api.Client, auth *api.SecretAuth) (identity, error) {
	var id identity
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return id, fmt.Errorf("look up the new token: %w", err)
	}
	if self == nil || self.Data == nil {
		return id, fmt.Errorf("look up the new token: empty answer")
	}
	ttl, err := self.TokenTTL()
	if err != nil {
		return id, fmt.Errorf("token ttl: %w", err)
	}
	id.ttl = ttl
	id.user = str(self.Data, "display_name")
	if auth != nil {
		if t := auth.Metadata["tenant"]; nameRE.MatchString(t) {
			id.tenant = t
		}
		if u := auth.Metadata["username"]; u != "" && id.user == "" {
			id.user = u
		}
	}
	if id.tenant == "" {
		id.tenant = entityTenant(ctx, c, str(self.Data, "entity_id"))
	}
	if id.tenant == "" {
		id.tenant = s.aclTenant(ctx, c)
	}
	caps, err := capabilitiesSelf(ctx, c, []string{s.cfg.Mount + "/tenants/"})
	if err != nil {
		return id, fmt.Errorf("capabilities of the new token: %w", err)
	}
	id.canListTenants = hasCap(caps[s.cfg.Mount+"/tenants/"], "list")
	return id, nil
}

// entityTenant is the entity's (or an alias's) tenant metadata, or "" when
// the token may not read its entity.
func entityTenant(ctx context.Context, c *api.Client, entityID string) string {
	if entityID == "" {
		return ""
	}
	e, err := c.Logical().ReadWithContext(ctx, "identity/entity/id/"+url.PathEscape(entityID))
	if err != nil || e == nil {
		return ""
	}
	if md, ok := e.Data["metadata"].(map[string]interface{}); ok {
		if t := str(md, "tenant"); nameRE.MatchString(t) {
			return t
		}
	}
	aliases, _ := e.Data["aliases"].([]interface{})
	for _, a := range aliases {
		am, _ := a.(map[string]interface{})
		for _, key := range []string{"metadata", "custom_metadata"} {
			if md, ok := am[key].(map[string]interface{}); ok {
				if t := str(md, "tenant"); nameRE.MatchString(t) {
					return t
				}
			}
		}
	}
	return ""
}

// aclTenant is the one tenant the token's resultant ACL names under the
// mount, or "" when it names none or several (a glob over tenants is a
// platform admin's, who picks one).
func (s *Server) aclTenant(ctx context.Context, c *api.Client) string {
	acl, err := c.Logical().ReadWithContext(ctx, "sys/internal/ui/resultant-acl")
	if err != nil || acl == nil {
		return ""
	}
	return tenantFromACL(s.cfg.Mount, acl.Data)
}

func tenantFromACL(mount string, data map[string]interface{}) string {
	prefix := mount + "/tenants/"
	found := map[string]bool{}
	for _, kind := range []string{"exact_paths", "glob_paths"} {
		paths, _ := data[kind].(map[string]interface{})
		for p := range paths {
			rest, ok := strings.CutPrefix(p, prefix)
			if !ok {
				continue
			}
			name, _, _ := strings.Cut(rest, "/")
			if nameRE.MatchString(name) {
				found[name] = true
			}
		}
	}
	if len(found) != 1 {
		return ""
	}
	names := make([]string, 0, 1)
	for n := range found {
		names = append(names, n)
	}
	sort.Strings(names)
	return names[0]
}

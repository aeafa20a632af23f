# apikeys-tenant-developer: a developer of one tenant issues keys from the
# roles the developer tier allows, and lists, inspects and revokes the
# tenant's keys.
#
# Which roles: those whose name starts with "dev-" (dev-sandbox,
# dev-staging, ...). The prefix lives in role names, which only platform
# admins write (tenant admins read roles), so a developer cannot widen their
# own reach; a platform admin allows a role to developers by naming it dev-*,
# typically with a test environment, narrow scopes and a short max_ttl.
# A naming rule rather than a list in identity metadata: templated policies
# cannot iterate a list, and a glob in a metadata value would be pasted into
# the path as a wildcard.
#
# Not here: tenant verify (gateways and tenant admins), static keys (long
# lived, for services: tenant admins), changing keys (update on keys/+:
# disabling, enabling, renaming or shortening a key is for tenant admins;
# revoking is not, so a developer can kill a key they leaked), role and
# tenant changes.
#
# The tenant comes from entity metadata "tenant" or the JWT or OIDC alias's
# "tenant" metadata, as in apikeys-tenant-admin.hcl (read its notes on the
# "+" value and enforce_entity_tenant). bootstrap/policies.sh renders this
# file: "apikeys/" at the start of a path becomes the mount path,
# JWT_ACCESSOR and OIDC_ACCESSOR the accessors of the JWT and oidc auth
# mounts.

# ---- tenant from entity metadata ----

# Reading roles tells a developer which dev-* roles exist and their scopes.
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/roles/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/roles/+" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/creds/dev-*" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/keys/+" {
  capabilities = ["read", "delete"]
}
# A key's usage over time, as its metadata read shows its totals; not the
# tenant's usage, which is the tenant admin's.
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/keys/+/usage/history" {
  capabilities = ["read"]
}

# ---- tenant from the JWT alias (claim_mappings tenant=tenant) ----

path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/roles/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/roles/+" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/creds/dev-*" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/keys/+" {
  capabilities = ["read", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/keys/+/usage/history" {
  capabilities = ["read"]
}

# ---- tenant from the OIDC alias (auth-oidc.sh: claim_mappings tenant=tenant) ----

path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/roles/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/roles/+" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/creds/dev-*" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/keys/+" {
  capabilities = ["read", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/keys/+/usage/history" {
  capabilities = ["read"]
}

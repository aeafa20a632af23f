# apikeys-tenant-admin: runs one tenant's keys, and nothing of any other
# tenant.
#
# The tenant comes from the caller's identity, so this one policy serves
# every tenant with no per-tenant Vault configuration:
#   - entity metadata "tenant": people and machines whose entity an
#     operator created with metadata tenant=<name> (bootstrap/users.sh);
#   - the "tenant" metadata of the caller's JWT alias: the JWT role's
#     claim_mappings copies the identity provider's tenant claim there;
#   - the same on the caller's OIDC alias (people signing in through the
#     portal or `vault login -method=oidc`, bootstrap/auth-oidc.sh).
# A block whose template cannot be filled (no such metadata, no JWT or OIDC
# alias) grants nothing.
#
# Vault pastes the metadata value into the path verbatim: a tenant value of
# "+" would be a wildcard over every tenant. Only let trusted parties set it,
# and keep the mount's enforce_entity_tenant on: the plugin then compares the
# path's tenant with the caller's metadata exactly and answers 403 otherwise.
#
# Left out on purpose:
#   - the tenant record tenants/<tenant> (status, max_keys, key prefix, TTL
#     caps: the platform's decisions);
#   - writing roles (scopes, CIDRs and rate limits are what the platform
#     grants the tenant): roles are read-only here;
#   - refilling a key's quota by hand (keys/<key_id>/quota update): the
#     quota is the platform's grant too; its standing is readable;
#   - sys/leases: a templated lease path would give the "+" wildcard above
#     a reach into every tenant that the plugin's guard cannot see. Keys are
#     revoked through tenants/<tenant>/keys/<key_id>; revoking a whole
#     tenant by lease prefix is a platform admin's act.
#
# bootstrap/policies.sh renders this file: "apikeys/" at the start of a path
# becomes the mount path, JWT_ACCESSOR and OIDC_ACCESSOR the accessors of
# the JWT and oidc auth mounts.

# ---- tenant from entity metadata ----

path "apikeys/tenants/{{identity.entity.metadata.tenant}}/roles/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/roles/+" {
  capabilities = ["read"]
}
# Issue dynamic keys (read, or update with name/metadata/ttl/scopes).
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/creds/+" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/static-keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/static-keys/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/static-keys/+/rotate" {
  capabilities = ["update"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/static-creds/+" {
  capabilities = ["read"]
}
# One static key per environment in one response (use -wrap-ttl).
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/onboard" {
  capabilities = ["update"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/keys/" {
  capabilities = ["list"]
}
# Key metadata; update = disable/enable a key, rename it, change its
# metadata or shorten its expiry; delete = revoke at once.
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/keys/+" {
  capabilities = ["read", "update", "delete"]
}
# Usage totals, and usage over time (hourly, daily) of the tenant and of
# each key.
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/usage" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/usage/history" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/keys/+/usage/history" {
  capabilities = ["read"]
}
# Where each key stands against its quota (read only: a refill by hand,
# update, is the platform's).
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/keys/+/quota" {
  capabilities = ["read"]
}
# Verify by POST body or by GET with the X-Api-Key header.
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/verify" {
  capabilities = ["read", "update"]
}
# The tenant's own webhook targets (https, public addresses only) and the
# dead letters of those targets; the mount's config/notifications and
# notifications/failed stay a platform admin's.
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/notifications/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/notifications/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/notifications/failed/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/notifications/failed/+" {
  capabilities = ["read", "delete"]
}
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/notifications/failed/+/requeue" {
  capabilities = ["update"]
}

# ---- tenant from the JWT alias (claim_mappings tenant=tenant) ----

path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/roles/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/roles/+" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/creds/+" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/static-keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/static-keys/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/static-keys/+/rotate" {
  capabilities = ["update"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/static-creds/+" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/onboard" {
  capabilities = ["update"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/keys/+" {
  capabilities = ["read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/usage" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/usage/history" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/keys/+/usage/history" {
  capabilities = ["read"]
}
# Where each key stands against its quota (read only: a refill by hand,
# update, is the platform's).
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/keys/+/quota" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/verify" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/notifications/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/notifications/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/notifications/failed/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/notifications/failed/+" {
  capabilities = ["read", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/notifications/failed/+/requeue" {
  capabilities = ["update"]
}

# ---- tenant from the OIDC alias (auth-oidc.sh: claim_mappings tenant=tenant) ----

path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/roles/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/roles/+" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/creds/+" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/static-keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/static-keys/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/static-keys/+/rotate" {
  capabilities = ["update"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/static-creds/+" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/onboard" {
  capabilities = ["update"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/keys/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/keys/+" {
  capabilities = ["read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/usage" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/usage/history" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/keys/+/usage/history" {
  capabilities = ["read"]
}
# Where each key stands against its quota (read only: a refill by hand,
# update, is the platform's).
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/keys/+/quota" {
  capabilities = ["read"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/verify" {
  capabilities = ["read", "update"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/notifications/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/notifications/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/notifications/failed/" {
  capabilities = ["list"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/notifications/failed/+" {
  capabilities = ["read", "delete"]
}
path "apikeys/tenants/{{identity.entity.aliases.OIDC_ACCESSOR.metadata.tenant}}/notifications/failed/+/requeue" {
  capabilities = ["update"]
}

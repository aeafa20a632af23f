# apikeys-platform-admin: everything on the API keys mount.
#
# For the people who run the engine for every tenant: mount config, tenant
# records (status, quotas, key prefixes, TTL caps), roles, and lease
# revocation across tenants. Give it through the identity group named in the
# mount's platform_admin_groups (bootstrap creates apikeys-platform-admins),
# so one membership grants both this policy and passage through the
# plugin's tenant guard (enforce_entity_tenant).
#
# bootstrap/policies.sh renders this file: "apikeys/" at the start of a path
# becomes the mount path.

path "apikeys/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Kill switch for a whole tenant or role:
#   vault lease revoke -prefix apikeys/tenants/acme/
# revoke-prefix and lease listing are sudo paths in Vault.
path "sys/leases/revoke-prefix/apikeys/*" {
  capabilities = ["update", "sudo"]
}

path "sys/leases/lookup/apikeys/*" {
  capabilities = ["list", "sudo"]
}

# Revoke one lease by path (vault write -f sys/leases/revoke/<lease_id>).
# Not the body form sys/leases/revoke: that one cannot be limited to this
# mount and would revoke any lease of the server.
path "sys/leases/revoke/apikeys/*" {
  capabilities = ["update"]
}

# See how the mount is tuned (TTLs, audit keys); changing it stays with
# the Vault operators.
path "sys/mounts/apikeys/tune" {
  capabilities = ["read"]
}

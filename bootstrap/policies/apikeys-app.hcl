# apikeys-app: a service (typically through Vault Agent) reads the current
# key of one static key of its tenant, and nothing else.
#
# Both the tenant and the static key come from identity: entity metadata
# tenant=<tenant> and static_key=<name>, or the same two as metadata of the
# JWT alias (claim_mappings tenant=tenant, static_key=static_key). As with the
# tenant, the static_key value is pasted into the path verbatim, so "+" would
# open every static key of the tenant: only the workload identity provider
# or an operator may set it, never the workload itself. The plugin's tenant
# guard still keeps such a value inside the tenant.
#
# bootstrap/policies.sh renders this file: "apikeys/" at the start of a path
# becomes the mount path, JWT_ACCESSOR the accessor of the JWT auth mount.

path "apikeys/tenants/{{identity.entity.metadata.tenant}}/static-creds/{{identity.entity.metadata.static_key}}" {
  capabilities = ["read"]
}

path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/static-creds/{{identity.entity.aliases.JWT_ACCESSOR.metadata.static_key}}" {
  capabilities = ["read"]
}

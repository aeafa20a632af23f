# apikeys-gateway: the API gateway of one tenant checks that tenant's keys,
# and can do nothing else.
#
# tenants/<tenant>/verify answers NOT_FOUND for any other tenant's key, so a
# gateway learns nothing about other tenants even when handed their keys.
# A gateway in front of every tenant uses apikeys-gateway-global instead.
#
# The tenant comes from entity metadata "tenant" or the JWT alias's "tenant"
# metadata, as in apikeys-tenant-admin.hcl. bootstrap/policies.sh renders
# this file: "apikeys/" at the start of a path becomes the mount path,
# JWT_ACCESSOR the accessor of the JWT auth mount.

# update: POST with the key in the body; read: GET with the key in the
# X-Api-Key header (mount tuned with passthrough_request_headers).
path "apikeys/tenants/{{identity.entity.metadata.tenant}}/verify" {
  capabilities = ["read", "update"]
}

path "apikeys/tenants/{{identity.entity.aliases.JWT_ACCESSOR.metadata.tenant}}/verify" {
  capabilities = ["read", "update"]
}

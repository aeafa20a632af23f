#!/usr/bin/env bash
# Stands up the API keys engine on a running Vault, idempotently (run it again
# after an upgrade or on a fresh server):
#
#   1. a file audit device (first, so everything after it is audited)
#   2. the plugin, registered in the catalog by SHA-256 and version
#   3. the mount, tuned from mount-tune.json: audit entries show key_id,
#      tenant, role and the like in clear while keys (api_key) stay HMAC'd
#   4. auth: userpass for people, JWT for an identity provider
#   5. the platform admins' identity group, holding apikeys-platform-admin
#   6. OIDC sign-in for people (the portal, vault login -method=oidc), when
#      OIDC_DISCOVERY_URL is set (auth-oidc.sh)
#   7. the tier policies (policies/*.hcl, rendered by policies.sh)
#   8. the mount config of the tenant guard: enforce_entity_tenant and
#      platform_admin_groups
#
# Needs VAULT_ADDR, a VAULT_TOKEN allowed to do all of that (root, or an
# operator token with sudo), the vault CLI, openssl for JWT_DEV_IDP_DIR and
# jq for OIDC.
#
#   PLUGIN_BIN             plugin binary (its SHA-256 is registered); it must
#                          already sit in Vault's plugin_directory
#   PLUGIN_VERSION         version to register (must match the binary's own)
#   APIKEYS_MOUNT          mount path (default apikeys)
#   AUDIT_FILE             file audit device log (default: none is enabled)
#   AUDIT_PATH             path of that audit device (default file)
#   USERPASS_PATH          userpass mount for people (default userpass;
#                          empty: no userpass)
#   JWT_PATH               JWT auth mount (default jwt)
#   JWT_PUBKEY_FILE        PEM public key of your identity provider; or
#   JWT_DEV_IDP_DIR        a directory where a stand-in identity provider's
#                          RSA key pair is generated (signing-key.pem), for
#                          one-machine setups; mint tokens with mint-jwt.sh.
#                          Neither set: no JWT auth
#   JWT_ISSUER, JWT_AUDIENCE  see auth-jwt.sh
#   OIDC_DISCOVERY_URL     issuer URL of an OpenID Connect provider for
#                          people's sign-in (make dev: the stand-in
#                          scripts/devidp); unset: no OIDC auth
#   OIDC_PATH, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET_FILE, OIDC_ROLE,
#   PORTAL_URL             see auth-oidc.sh
#   POLICY_PREFIX          prefix of the policy names (default none)
#   PLATFORM_ADMIN_GROUP   identity group of platform admins (default
#                          apikeys-platform-admins)
#   ENFORCE_ENTITY_TENANT  the plugin's tenant guard (default true): tenant
#                          paths need an entity of that tenant or of the
#                          platform admin group; root tokens get 403 there
set -euo pipefail

: "${PLUGIN_BIN:?set PLUGIN_BIN to the plugin binary}"
: "${PLUGIN_VERSION:?set PLUGIN_VERSION to the plugin version}"
VAULT=${VAULT:-vault}
export VAULT
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
mount=${APIKEYS_MOUNT:-apikeys}
name=vault-plugin-secrets-apikeys
audit_path=${AUDIT_PATH:-file}
userpass_path=${USERPASS_PATH-userpass}
prefix=${POLICY_PREFIX:-}
admin_group=${PLATFORM_ADMIN_GROUP:-apikeys-platform-admins}
enforce=${ENFORCE_ENTITY_TENANT:-true}

case "$enforce" in
  true | false) ;;
  *) echo "ENFORCE_ENTITY_TENANT must be true or false, not $enforce" >&2; exit 1 ;;
esac

if [ -n "${AUDIT_FILE:-}" ]; then
  if mounted audit "$audit_path"; then
    echo "audit device $audit_path/ already enabled"
  else
    "$VAULT" audit enable -path="$audit_path" file file_path="$AUDIT_FILE" >/dev/null
    echo "file audit device $audit_path/ writes to $AUDIT_FILE"
  fi
fi

sha=$(sha256sum "$PLUGIN_BIN" | cut -d' ' -f1)
"$VAULT" plugin register -sha256="$sha" -version="$PLUGIN_VERSION" \
  -command="$(basename "$PLUGIN_BIN")" secret "$name" >/dev/null
echo "registered $name $PLUGIN_VERSION (sha256 $sha)"

if mounted secrets "$mount"; then
  # An existing mount moves to the registered version and reloads it.
  "$VAULT" secrets tune -plugin-version="$PLUGIN_VERSION" "$mount/" >/dev/null
  # The API, not "vault plugin reload -mounts": the 1.21 CLI sends that to
  # sys/plugins/reload/unknown, a 404.
  "$VAULT" write "sys/plugins/reload/backend" mounts="$mount/" >/dev/null
  echo "mount $mount/ now runs $PLUGIN_VERSION"
else
  "$VAULT" secrets enable -path="$mount" -plugin-version="$PLUGIN_VERSION" \
    -description="Multi-tenant API keys" "$name" >/dev/null
  echo "enabled $name at $mount/"
fi
"$VAULT" write "sys/mounts/$mount/tune" @"$here/mount-tune.json" >/dev/null
echo "tuned $mount/: audit shows key_id, tenant, role in clear; keys stay HMAC'd"
# GET verify carries the key in this header: audit it HMAC'd, so that
# sys/audit-hash finds a leaked key's GET verifies as well as its POSTs.
"$VAULT" write sys/config/auditing/request-headers/X-Api-Key hmac=true >/dev/null
echo "audit devices record X-Api-Key request headers, HMAC'd"

if [ -n "$userpass_path" ]; then
  if ! mounted auth "$userpass_path"; then
    "$VAULT" auth enable -path="$userpass_path" -description="API keys: people" userpass >/dev/null
  fi
  echo "userpass auth at $userpass_path/ (add logins with bootstrap/users.sh)"
fi

if [ -z "${JWT_PUBKEY_FILE:-}" ] && [ -n "${JWT_DEV_IDP_DIR:-}" ]; then
  command -v openssl >/dev/null || { echo "JWT_DEV_IDP_DIR needs openssl" >&2; exit 1; }
  mkdir -p "$JWT_DEV_IDP_DIR"
  if [ ! -f "$JWT_DEV_IDP_DIR/signing-key.pem" ]; then
    (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
      -out "$JWT_DEV_IDP_DIR/signing-key.pem" 2>/dev/null)
    echo "generated the stand-in identity provider's key: $JWT_DEV_IDP_DIR/signing-key.pem"
  fi
  openssl pkey -in "$JWT_DEV_IDP_DIR/signing-key.pem" -pubout -out "$JWT_DEV_IDP_DIR/signing-key.pub.pem"
  JWT_PUBKEY_FILE=$JWT_DEV_IDP_DIR/signing-key.pub.pem
fi
if [ -n "${JWT_PUBKEY_FILE:-}" ]; then
  JWT_PUBKEY_FILE=$JWT_PUBKEY_FILE POLICY_PREFIX=$prefix "$here/auth-jwt.sh"
fi

# Before OIDC: its platform admins' group becomes a member of this one.
"$VAULT" write "identity/group/name/$admin_group" type=internal \
  policies="${prefix}apikeys-platform-admin" >/dev/null
echo "identity group $admin_group holds ${prefix}apikeys-platform-admin"

if [ -n "${OIDC_DISCOVERY_URL:-}" ]; then
  POLICY_PREFIX=$prefix PLATFORM_ADMIN_GROUP=$admin_group "$here/auth-oidc.sh"
fi

# After the auth mounts: the policies name their accessors.
APIKEYS_MOUNT=$mount POLICY_PREFIX=$prefix "$here/policies.sh"

"$VAULT" write "$mount/config" enforce_entity_tenant="$enforce" platform_admin_groups="$admin_group" >/dev/null
echo "tenant guard: enforce_entity_tenant=$enforce, platform_admin_groups=$admin_group"

#!/usr/bin/env bash
# Sets up OIDC sign-in for people (the portal and `vault login -method=oidc`):
# Vault's oidc auth method (plugin type jwt) against an OpenID Connect
# provider, with one role, OIDC_ROLE (default portal), for every tier of
# person, so one click signs anyone in.
#
# A Vault OIDC role has fixed token_policies, and the portal cannot know a
# person's tier before they sign in. So the role carries no tier policy of
# its own: its groups_claim is the tier claim, and each tier is an external
# identity group with a group alias named after the tier on this mount:
#
#   apikeys_tier=tenant-admin      group apikeys-tenant-admin-via-<path>
#                                  (policy apikeys-tenant-admin)
#   apikeys_tier=tenant-developer  group apikeys-tenant-developer-via-<path>
#                                  (policy apikeys-tenant-developer)
#   apikeys_tier=platform-admin    group apikeys-platform-admin-via-<path>,
#                                  a member of PLATFORM_ADMIN_GROUP, so the
#                                  policy and the tenant guard's
#                                  platform_admin_groups reach it through
#                                  that one group
#
# bound_claims admits only these tiers (a gateway's or app's identity
# cannot sign in here). The tenant claim is copied to the alias metadata
# (claim_mappings), where the tier policies (OIDC_ACCESSOR blocks) and the
# plugin's tenant guard find it. The provider is trusted with tenant and
# apikeys_tier: only it may set them (see docs/security.md).
#
# make dev points this at the stand-in identity provider, scripts/devidp
# (one button per demo identity, no password; loopback only).
#
#   OIDC_PATH                auth mount path (default oidc)
#   OIDC_DISCOVERY_URL       the provider's issuer URL (required)
#   OIDC_CLIENT_ID           client id registered at the provider (default
#                            vault-apikeys); also the required aud
#   OIDC_CLIENT_SECRET_FILE  file holding the client secret; or
#   OIDC_CLIENT_SECRET       the secret itself (the file is preferred: it
#                            never reaches a command line)
#   OIDC_ROLE                role name (default portal; also default_role)
#   PORTAL_URL               the portal's public URL (default
#                            http://127.0.0.1:8300): its callback
#                            PORTAL_URL/auth/oidc/callback is allowed
#   OIDC_CLI_REDIRECT        the vault CLI's callback (default
#                            http://localhost:8250/oidc/callback; empty: none)
#   OIDC_TIER_CLAIM          claim naming the tier (default apikeys_tier)
#   POLICY_PREFIX            prefix of policy and group names, as for
#                            policies.sh
#   PLATFORM_ADMIN_GROUP     internal group of platform admins (default
#                            apikeys-platform-admins; must exist)
set -euo pipefail

VAULT=${VAULT:-vault}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
oidc_path=${OIDC_PATH:-oidc}
: "${OIDC_DISCOVERY_URL:?set OIDC_DISCOVERY_URL to the identity provider issuer URL}"
client_id=${OIDC_CLIENT_ID:-vault-apikeys}
role=${OIDC_ROLE:-portal}
portal=${PORTAL_URL:-http://127.0.0.1:8300}
cli_redirect=${OIDC_CLI_REDIRECT-http://localhost:8250/oidc/callback}
tier_claim=${OIDC_TIER_CLAIM:-apikeys_tier}
prefix=${POLICY_PREFIX:-}
admin_group=${PLATFORM_ADMIN_GROUP:-apikeys-platform-admins}
command -v jq >/dev/null || { echo "auth-oidc.sh needs jq" >&2; exit 1; }

if [ -n "${OIDC_CLIENT_SECRET_FILE:-}" ]; then
  secret=$(<"$OIDC_CLIENT_SECRET_FILE")
else
  secret=${OIDC_CLIENT_SECRET:-}
fi
[ -n "$secret" ] || { echo "set OIDC_CLIENT_SECRET_FILE (or OIDC_CLIENT_SECRET) to the client secret" >&2; exit 1; }

if ! mounted auth "$oidc_path"; then
  "$VAULT" auth enable -path="$oidc_path" -description="API keys: people (OIDC)" oidc >/dev/null
  echo "enabled oidc auth at $oidc_path/"
fi
# The secret goes to Vault on stdin, never on a command line.
jq -n --arg url "$OIDC_DISCOVERY_URL" --arg id "$client_id" --arg secret "$secret" --arg role "$role" '{
  oidc_discovery_url: $url, oidc_client_id: $id, oidc_client_secret: $secret,
  default_role: $role, jwt_supported_algs: ["RS256", "ES256"]
}' | "$VAULT" write "auth/$oidc_path/config" - >/dev/null
echo "oidc auth at $oidc_path/ trusts $OIDC_DISCOVERY_URL (client $client_id)"

redirects=("${portal%/}/auth/oidc/callback")
[ -z "$cli_redirect" ] || redirects+=("$cli_redirect")
jq -n --arg aud "$client_id" --arg claim "$tier_claim" '{
  role_type: "oidc",
  user_claim: "sub",
  bound_audiences: [$aud],
  allowed_redirect_uris: $ARGS.positional,
  oidc_scopes: ["email", "profile"],
  groups_claim: $claim,
  bound_claims: {($claim): ["tenant-admin", "tenant-developer", "platform-admin"]},
  claim_mappings: {tenant: "tenant", email: "email", name: "name"},
  token_ttl: "1h",
  token_max_ttl: "8h"
}' --args "${redirects[@]}" | "$VAULT" write "auth/$oidc_path/role/$role" - >/dev/null
echo "oidc role $role: redirect URIs ${redirects[*]}"

accessor=$("$VAULT" read -field=accessor "sys/auth/$oidc_path")
# tier_group <tier> <policy or ""> prints the id of the tier's external
# group, made or updated with its group alias on this mount.
tier_group() {
  local tier=$1 policy=$2 name gid alias_id
  name=${prefix}apikeys-$tier-via-${oidc_path//\//-}
  "$VAULT" write "identity/group/name/$name" type=external policies="$policy" >/dev/null
  gid=$("$VAULT" read -format=json "identity/group/name/$name" | jq -r .data.id)
  alias_id=$("$VAULT" read -format=json "identity/group/name/$name" | jq -r '.data.alias.id // empty')
  if [ -n "$alias_id" ]; then
    "$VAULT" write "identity/group-alias/id/$alias_id" name="$tier" mount_accessor="$accessor" canonical_id="$gid" >/dev/null
  else
    "$VAULT" write identity/group-alias name="$tier" mount_accessor="$accessor" canonical_id="$gid" >/dev/null
  fi
  echo "$gid"
}
for tier in tenant-admin tenant-developer; do
  tier_group "$tier" "${prefix}apikeys-$tier" >/dev/null
  echo "oidc $tier_claim=$tier -> group ${prefix}apikeys-$tier-via-${oidc_path//\//-} (${prefix}apikeys-$tier)"
done

admins=$(tier_group platform-admin "")
current=$("$VAULT" read -format=json "identity/group/name/$admin_group" | jq -r '.data.member_group_ids // [] | join(",")')
case ",$current," in
  *",$admins,"*) ;;
  *) "$VAULT" write "identity/group/name/$admin_group" member_group_ids="${current:+$current,}$admins" >/dev/null ;;
esac
echo "oidc $tier_claim=platform-admin -> group ${prefix}apikeys-platform-admin-via-${oidc_path//\//-}, member of $admin_group"

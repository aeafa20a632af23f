#!/usr/bin/env bash
# Sets up JWT auth for the API keys tiers: Vault checks tokens signed by one
# identity provider key (JWT_PUBKEY_FILE, a PEM public key), and one role per
# tier turns a token into that tier's policy.
#
# What a token must carry (mint one for the dev key with mint-jwt.sh):
#   iss           JWT_ISSUER
#   aud           JWT_AUDIENCE
#   sub           the caller; it names the entity alias
#   apikeys_tier  the tier, equal to the role's name (bound_claims): a token
#                 for one tier cannot log in to another tier's role
#   tenant        copied to the alias metadata (claim_mappings), where the
#                 tier policies and the plugin's tenant guard find it
#   static_key    (app tier) the one static key the caller may read
# The identity provider is trusted with tenant and static_key: only it may
# set them, never the subject itself (see docs/security.md).
#
#   JWT_PATH         auth mount path (default jwt)
#   JWT_PUBKEY_FILE  PEM public key of the identity provider (required)
#   JWT_ISSUER       required iss (default apikeys-dev-idp)
#   JWT_AUDIENCE     required aud (default vault-apikeys)
#   POLICY_PREFIX    prefix of the policy names, as given to policies.sh
set -euo pipefail

VAULT=${VAULT:-vault}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
jwt_path=${JWT_PATH:-jwt}
: "${JWT_PUBKEY_FILE:?set JWT_PUBKEY_FILE to the PEM public key of the identity provider}"
issuer=${JWT_ISSUER:-apikeys-dev-idp}
audience=${JWT_AUDIENCE:-vault-apikeys}
prefix=${POLICY_PREFIX:-}

if ! mounted auth "$jwt_path"; then
  "$VAULT" auth enable -path="$jwt_path" -description="API keys tiers (JWT)" jwt >/dev/null
  echo "enabled jwt auth at $jwt_path/"
fi
"$VAULT" write "auth/$jwt_path/config" jwt_validation_pubkeys=@"$JWT_PUBKEY_FILE" \
  bound_issuer="$issuer" jwt_supported_algs=RS256,ES256 >/dev/null

for tier in tenant-admin tenant-developer gateway gateway-global app leak-reporter; do
  "$VAULT" write "auth/$jwt_path/role/$tier" - >/dev/null <<JSON
{
  "role_type": "jwt",
  "bound_audiences": ["$audience"],
  "user_claim": "sub",
  "bound_claims": {"apikeys_tier": "$tier"},
  "claim_mappings": {"tenant": "tenant", "static_key": "static_key"},
  "token_policies": ["${prefix}apikeys-$tier"],
  "token_ttl": "1h",
  "token_max_ttl": "8h"
}
JSON
  echo "jwt role $tier -> ${prefix}apikeys-$tier"
done

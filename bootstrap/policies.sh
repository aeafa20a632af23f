#!/usr/bin/env bash
# Writes the tier policies of bootstrap/policies/ to Vault, rendered for this
# installation, under their file names (plus POLICY_PREFIX):
#
#   "apikeys/ and /apikeys/   become the mount path (APIKEYS_MOUNT)
#   JWT_ACCESSOR              becomes the accessor of the JWT auth mount at
#                             JWT_PATH; without that mount it stays, and the
#                             blocks using it grant nothing
#   OIDC_ACCESSOR             the same for the oidc auth mount at OIDC_PATH
#                             (people signing in through OIDC, auth-oidc.sh)
#
# The acceptance tests run this very script against their own mounts, so what
# they prove holds for what bootstrap installs. Needs VAULT_ADDR and a
# VAULT_TOKEN allowed to write policies and read sys/auth.
#
#   APIKEYS_MOUNT   mount path of the engine (default apikeys)
#   JWT_PATH        path of the JWT auth method (default jwt)
#   OIDC_PATH       path of the oidc auth method (default oidc)
#   POLICY_PREFIX   prefix of the policy names (default none)
set -euo pipefail

VAULT=${VAULT:-vault}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
mount=${APIKEYS_MOUNT:-apikeys}
jwt_path=${JWT_PATH:-jwt}
oidc_path=${OIDC_PATH:-oidc}
prefix=${POLICY_PREFIX:-}

# The mount goes into a sed replacement and into policy paths: plain names only.
if ! [[ $mount =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$ ]]; then
  echo "policies.sh: APIKEYS_MOUNT=$mount is not a plain mount path (letters, digits, . _ - and /)" >&2
  exit 1
fi

render=(-e "s#\"apikeys/#\"$mount/#g" -e "s#/apikeys/#/$mount/#g")
# accessor <placeholder> <auth path>: render the placeholder as that mount's
# accessor, if the mount exists.
accessor() {
  local acc
  if mounted auth "$2"; then
    acc=$("$VAULT" read -field=accessor "sys/auth/$2")
    render+=(-e "s#$1#$acc#g")
  fi
}
accessor JWT_ACCESSOR "$jwt_path"
accessor OIDC_ACCESSOR "$oidc_path"

for file in "$here"/policies/*.hcl; do
  name=$prefix$(basename "$file" .hcl)
  sed "${render[@]}" "$file" | "$VAULT" policy write "$name" - >/dev/null
  echo "policy $name"
done

#!/usr/bin/env bash
# Writes the tier policies of bootstrap/policies/ to Vault, rendered for this
# installation, under their file names (plus POLICY_PREFIX):
#
#   "apikeys/ and /apikeys/   become the mount path (APIKEYS_MOUNT)
#   JWT_ACCESSOR              becomes the accessor of the JWT auth mount at
#                             JWT_PATH; without that mount it stays, and the
#                             blocks using it grant nothing
#
# The acceptance tests run this very script against their own mounts, so what
# they prove holds for what bootstrap installs. Needs VAULT_ADDR and a
# VAULT_TOKEN allowed to write policies and read sys/auth.
#
#   APIKEYS_MOUNT   mount path of the engine (default apikeys)
#   JWT_PATH        path of the JWT auth method (default jwt)
#   POLICY_PREFIX   prefix of the policy names (default none)
set -euo pipefail

VAULT=${VAULT:-vault}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
mount=${APIKEYS_MOUNT:-apikeys}
jwt_path=${JWT_PATH:-jwt}
prefix=${POLICY_PREFIX:-}

# The mount goes into a sed replacement and into policy paths: plain names only.
if ! [[ $mount =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$ ]]; then
  echo "policies.sh: APIKEYS_MOUNT=$mount is not a plain mount path (letters, digits, . _ - and /)" >&2
  exit 1
fi

accessor=""
if mounted auth "$jwt_path"; then
  accessor=$("$VAULT" read -field=accessor "sys/auth/$jwt_path")
fi

render=(-e "s#\"apikeys/#\"$mount/#g" -e "s#/apikeys/#/$mount/#g")
if [ -n "$accessor" ]; then
  render+=(-e "s#JWT_ACCESSOR#$accessor#g")
fi

for file in "$here"/policies/*.hcl; do
  name=$prefix$(basename "$file" .hcl)
  sed "${render[@]}" "$file" | "$VAULT" policy write "$name" - >/dev/null
  echo "policy $name"
done

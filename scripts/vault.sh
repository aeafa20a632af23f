#!/usr/bin/env bash
# Prints the path of the pinned Vault server binary, building it first when
# this machine has not built this pin yet. VAULT_BIN overrides the build.
#
# The binary is cached outside the clone, keyed by the pinned version and a
# hash of scripts/vault/go.mod (go.sum follows from it), so every clone on the machine shares
# one build and a pin change rebuilds.
set -euo pipefail

if [ -n "${VAULT_BIN:-}" ]; then
  if [ ! -x "$VAULT_BIN" ]; then
    echo "VAULT_BIN=$VAULT_BIN is not an executable file" >&2
    exit 1
  fi
  echo "$VAULT_BIN"
  exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
mod="$here/vault"
version=$(awk '$1=="require" && $2=="github.com/hashicorp/vault" {print $3}' "$mod/go.mod")
[ -n "$version" ] || { echo "cannot read the pinned Vault version from $mod/go.mod" >&2; exit 1; }
pin=$(sha256sum < "$mod/go.mod" | cut -c1-12)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-apikeys/vault-$version-$pin"
bin="$cache/vault"

# shellcheck source=SCRIPTDIR/cached-build.sh
. "$here/cached-build.sh"
cached_go_build "Vault $version" "$bin" "$mod" github.com/hashicorp/vault 3600 \
  "once per machine: ~5 min with a warm module cache, ~10 min cold; the binary is ~500 MB"
echo "$bin"

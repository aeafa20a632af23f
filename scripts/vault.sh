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

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
# One build at a time per machine: parallel `make test` runs wait for it.
exec 9>"$cache.lock"
if ! flock -w 3600 9; then
  echo "timed out waiting for another Vault build ($cache.lock)" >&2
  exit 1
fi
if [ ! -x "$bin" ]; then
  {
    echo "==> Building Vault $version from the Go module proxy into $cache"
    echo "    (once per machine: ~5 min with a warm module cache, ~10 min cold; the binary is ~500 MB)"
  } >&2
  start=$(date +%s)
  tmp="$cache/vault.tmp.$$"
  (
    cd "$mod"
    # Progress dots so a long build never looks like a hang.
    while sleep 30; do printf '    ... still building Vault (%ss)\n' $(( $(date +%s) - start )) >&2; done &
    ticker=$!
    trap 'kill $ticker 2>/dev/null || true' EXIT
    # go.mod and go.sum are complete and committed: a readonly build never
    # rewrites them (which would change the pin hash above).
    CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$tmp" github.com/hashicorp/vault
  ) >&2
  mv "$tmp" "$bin"
  echo "==> Vault $version built in $(( $(date +%s) - start ))s: $bin" >&2
fi
echo "$bin"

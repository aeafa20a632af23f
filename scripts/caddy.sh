#!/usr/bin/env bash
# Prints the path of a Caddy binary with the apikeys handler
# (scripts/caddy: a nested module pinning Caddy), building it first when
# this machine has not built these sources yet. CADDY_BIN overrides the
# build.
#
# The binary is cached outside the clone, like the pinned Vault
# (scripts/vault.sh), keyed by the pinned Caddy version and a hash of what
# goes into it: the nested module's go.mod, go.sum and Go files, the
# plugin's go.mod and go.sum, and the Go files of this repository's
# packages the handler imports (the edge verifier and what it uses). Every
# clone on the machine with the same sources shares one build, and a change
# to any of them rebuilds.
set -euo pipefail

if [ -n "${CADDY_BIN:-}" ]; then
  if [ ! -x "$CADDY_BIN" ]; then
    echo "CADDY_BIN=$CADDY_BIN is not an executable file" >&2
    exit 1
  fi
  echo "$CADDY_BIN"
  exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
mod="$here/caddy"
version=$(awk '$1=="github.com/caddyserver/caddy/v2" {print $2; exit}' "$mod/go.mod")
[ -n "$version" ] || { echo "cannot read the pinned Caddy version from $mod/go.mod" >&2; exit 1; }

# This repository's packages in the build: what the handler imports, and
# their imports inside the repository (go list answers from the plugin's
# module, whose dependencies the tests have downloaded already).
repo_pkgs=$(cd "$root"; go list -deps -f '{{if not .Standard}}{{.Dir}}{{end}}' ./backend/edge | grep -F "$root/") || true
[ -n "$repo_pkgs" ] || { echo "cannot list the packages of backend/edge" >&2; exit 1; }
pin=$(
  {
    find "$mod" -name '*.go' ! -name '*_test.go' -print0 | sort -z | xargs -0 sha256sum
    sha256sum "$mod/go.mod" "$mod/go.sum" "$root/go.mod" "$root/go.sum"
    for d in $repo_pkgs; do
      find "$d" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -print0 | sort -z | xargs -0 sha256sum
    done
  } | sed "s|$root/||" | sha256sum | cut -c1-12
)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-apikeys/caddy-$version-$pin"
bin="$cache/caddy"

# shellcheck source=SCRIPTDIR/cached-build.sh
. "$here/cached-build.sh"
cached_go_build "Caddy $version with the apikeys handler" "$bin" "$mod" . 1800 \
  "once per machine and source change: ~6 min cold on 2 cores, ~2 min with a warm module cache, seconds when only the handler changed"
# Builds of older sources are left behind: a clone on another branch may
# still want them, and each is ~50 MB.
echo "$bin"

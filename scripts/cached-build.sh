# shellcheck shell=bash
# cached_go_build builds a Go binary once per machine into a cache folder,
# one build at a time (parallel `make test` runs wait on a lock), with
# progress lines so a long build never looks like a hang. Sourced by
# scripts/vault.sh and scripts/caddy.sh.
#
#   cached_go_build NAME BIN MODDIR PACKAGE LOCK_WAIT_SECONDS NOTE
#
# BIN is the cached binary's path (its folder is the cache); the build runs
# in MODDIR, whose go.mod and go.sum are complete and committed: a readonly
# build never rewrites them (which would change the cache key).
cached_go_build() {
  local name=$1 bin=$2 mod=$3 pkg=$4 wait=$5 note=$6
  local cache
  cache=$(dirname "$bin")
  [ -x "$bin" ] && return 0
  mkdir -p "$cache"
  exec 9>"$cache.lock"
  if ! flock -w "$wait" 9; then
    echo "timed out waiting for another $name build ($cache.lock)" >&2
    return 1
  fi
  if [ ! -x "$bin" ]; then
    {
      echo "==> Building $name into $cache"
      echo "    ($note)"
    } >&2
    local start tmp
    start=$(date +%s)
    tmp="$bin.tmp.$$"
    (
      cd "$mod" || exit 1
      while sleep 30; do printf '    ... still building %s (%ss)\n' "$name" $(( $(date +%s) - start )) >&2; done &
      ticker=$!
      trap 'kill $ticker 2>/dev/null || true' EXIT
      CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$tmp" "$pkg"
    ) >&2
    mv "$tmp" "$bin"
    echo "==> $name built in $(( $(date +%s) - start ))s: $bin" >&2
  fi
}

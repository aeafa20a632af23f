#!/usr/bin/env bash
# `make release`: the plugin and apikeys-edge for every release platform,
# with SHA256SUMS and INSTALL.txt, into DIST (default dist/).
#
#   VERSION            the version stamped and registered (vX.Y.Z[-pre]); required
#   DIST               output directory (default dist); files of an earlier
#                      release there are replaced, nothing else is touched
#   RELEASE_PLATFORMS  space-separated GOOS/GOARCH list
#                      (default: linux/amd64 linux/arm64 darwin/arm64)
#   ALLOW_DIRTY=1      build a tree with uncommitted changes anyway; the
#                      commit is then stamped <sha>-dirty and INSTALL.txt
#                      says it is not a release
#
# Reproducible: the same commit, Go version and platform list give
# byte-identical binaries, whatever the clone's path or the time. What
# could differ is pinned below: -trimpath (no local paths), -buildvcs=false
# (the commit is stamped once, by us, not also by the go command, which
# would add the checkout's modification state), CGO_ENABLED=0 (no host C
# toolchain), the GOAMD64/GOARM64 levels, GOFLAGS and GOEXPERIMENT from the
# caller's environment, and a 12-character commit (git's --short grows with
# the repository, so two clones could stamp different lengths). Go embeds no
# timestamps, and file names carry only name, version and platform.
set -euo pipefail
cd "$(dirname "$0")/.."

module=github.com/vault-apikeys/vault-plugin-secrets-apikeys
plugin=vault-plugin-secrets-apikeys
edge=apikeys-edge

version=${VERSION:-}
dist=${DIST:-dist}
platforms=${RELEASE_PLATFORMS:-linux/amd64 linux/arm64 darwin/arm64}

die() { echo "release: $*" >&2; exit 1; }

# Vault's catalog takes semantic versions only; the leading v is how this
# project writes them everywhere (tags, CHANGELOG, -version).
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$ ]] ||
  die "VERSION=${version:-<unset>} is not a version like v1.2.3 or v1.2.3-rc.1"

commit=$(git rev-parse --short=12 HEAD) || die "not a git checkout"
# Untracked files count: a new .go file is part of the build.
if [ -n "$(git status --porcelain --untracked-files=normal)" ]; then
  if [ "${ALLOW_DIRTY:-}" != 1 ]; then
    git status --short >&2
    die "the tree has uncommitted changes; a release is built from a commit (ALLOW_DIRTY=1 builds anyway, stamped $commit-dirty)"
  fi
  commit=$commit-dirty
  echo "release: building a tree with uncommitted changes, stamped $commit" >&2
fi

# The plugin reports backend.Version (Vault's RunningVersion, apikeys/info);
# the edge has its own main.version, since importing backend would link the
# Vault SDK into it. A -X naming a symbol a binary lacks is ignored, so one
# set of flags serves both.
ldflags="-X $module/backend.Version=$version -X $module/backend.Commit=$commit"
ldflags+=" -X main.version=$version -X main.commit=$commit"

mkdir -p "$dist"
rm -f "$dist/$plugin"_* "$dist/$edge"_* "$dist/SHA256SUMS" "$dist/INSTALL.txt"

files=()
for p in $platforms; do
  [[ $p =~ ^[a-z0-9]+/[a-z0-9]+$ ]] || die "platform $p is not GOOS/GOARCH"
  goos=${p%/*} goarch=${p#*/}
  for bin in "$plugin" "$edge"; do
    out="${bin}_${version}_${goos}_${goarch}"
    env CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch" GOAMD64=v1 GOARM64=v8.0 \
      GOFLAGS=-mod=readonly GOEXPERIMENT= \
      go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$dist/$out" "./cmd/$bin"
    files+=("$out")
  done
done

(cd "$dist" && printf '%s\n' "${files[@]}" | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)

# INSTALL.txt names the linux/amd64 plugin when it was built, else the
# first platform's.
first=${platforms%% *}
case " $platforms " in *" linux/amd64 "*) first=linux/amd64 ;; esac
shown="${plugin}_${version}_${first%/*}_${first#*/}"
sum=$(awk -v f="$shown" '$2 == f {print $1}' "$dist/SHA256SUMS")
installed="${plugin}_${version}"

{
  echo "$plugin $version (commit $commit, $(go env GOVERSION))"
  if [[ $commit == *-dirty ]]; then
    echo "NOT A RELEASE: built from a tree with uncommitted changes."
  fi
  cat <<EOF

Verify the download, copy the plugin for your platform ($first below)
into the plugin_directory of every Vault node, and register it by its
checksum and version (docs/operations.md, "Install"):

  sha256sum --check --ignore-missing SHA256SUMS
  install -m 0755 $shown "\$PLUGIN_DIR/$installed"
  vault plugin register -sha256=$sum \\
      -version=$version -command=$installed \\
      secret $plugin

Another platform: take its line of SHA256SUMS instead, e.g.
  awk '\$2 == "${plugin}_${version}_linux_arm64" {print \$1}' SHA256SUMS

apikeys-edge (docs/edge.md) is the ${edge}_${version}_<os>_<arch> file;
\`apikeys-edge -version\` prints its version and commit.
EOF
} >"$dist/INSTALL.txt"

echo "release: $version ($commit) in $dist:" >&2
cat "$dist/SHA256SUMS" >&2

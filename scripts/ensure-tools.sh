#!/usr/bin/env bash
# Installs the command-line tools that bootstrap/, the docs' replayed
# commands, the tests and `make lint` call, when the machine lacks them
# (Debian/Ubuntu; elsewhere it says what to install).
set -euo pipefail
need=()
for tool in curl openssl jq sha256sum flock setsid nginx shellcheck; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# The portal's browser tests (scripts/browser) drive a headless Chromium;
# Debian names it chromium, Ubuntu chromium-browser, CHROMIUM_BIN overrides.
if [ -z "${CHROMIUM_BIN:-}" ] && ! command -v chromium >/dev/null 2>&1 &&
  ! command -v chromium-browser >/dev/null 2>&1; then
  need+=(chromium)
fi
# Screenshots need a font, and one font everywhere keeps them alike.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ ${#need[@]} -eq 0 ] && exit 0
pkgs=()
for tool in "${need[@]}"; do
  case "$tool" in
    sha256sum) pkgs+=(coreutils) ;;
    flock|setsid) pkgs+=(util-linux) ;;
    # the edge verifier's auth_request test runs a real nginx
    nginx) pkgs+=(nginx-light) ;;
    *) pkgs+=("$tool") ;;
  esac
done
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "==> Installing ${pkgs[*]} (needed by bootstrap/, the tests and make lint)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
else
  echo "missing tools: ${need[*]}; install them (Debian packages: ${pkgs[*]})" >&2
  exit 1
fi

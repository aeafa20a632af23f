#!/usr/bin/env bash
# Stands up the API keys engine on a running Vault: registers the plugin in
# the catalog by SHA-256 and version, enables it, and adds a file audit
# device. Idempotent: run it again after an upgrade or on a fresh server.
#
# Needs VAULT_ADDR and VAULT_TOKEN (a token allowed to manage plugins,
# mounts and audit devices) and the vault CLI. Settings:
#
#   PLUGIN_BIN       path of the plugin binary (its SHA-256 is registered);
#                    the binary must already sit in Vault's plugin_directory
#   PLUGIN_VERSION   version to register (must match the binary's own)
#   APIKEYS_MOUNT    mount path (default apikeys)
#   AUDIT_FILE       file audit device log (default: none is enabled)
set -euo pipefail

: "${PLUGIN_BIN:?set PLUGIN_BIN to the plugin binary}"
: "${PLUGIN_VERSION:?set PLUGIN_VERSION to the plugin version}"
VAULT=${VAULT:-vault}
mount=${APIKEYS_MOUNT:-apikeys}
name=vault-plugin-secrets-apikeys

sha=$(sha256sum "$PLUGIN_BIN" | cut -d' ' -f1)
"$VAULT" plugin register -sha256="$sha" -version="$PLUGIN_VERSION" \
  -command="$(basename "$PLUGIN_BIN")" secret "$name" >/dev/null
echo "registered $name $PLUGIN_VERSION (sha256 $sha)"

if "$VAULT" secrets list -format=json | grep -q "\"$mount/\""; then
  # An existing mount moves to the registered version and reloads it.
  "$VAULT" secrets tune -plugin-version="$PLUGIN_VERSION" "$mount/" >/dev/null
  "$VAULT" plugin reload -mounts="$mount/" >/dev/null
  echo "mount $mount/ now runs $PLUGIN_VERSION"
else
  "$VAULT" secrets enable -path="$mount" -plugin-version="$PLUGIN_VERSION" \
    -description="Multi-tenant API keys" "$name" >/dev/null
  echo "enabled $name at $mount/"
fi

if [ -n "${AUDIT_FILE:-}" ]; then
  if "$VAULT" audit list -format=json 2>/dev/null | grep -q '"file/"'; then
    echo "file audit device already enabled"
  else
    "$VAULT" audit enable file file_path="$AUDIT_FILE" >/dev/null
    echo "file audit device writes to $AUDIT_FILE"
  fi
fi

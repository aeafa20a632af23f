#!/usr/bin/env bash
# `make dev`: a Vault dev server on loopback with the freshly built plugin
# registered, mounted at apikeys/ and bootstrapped. Runs until Ctrl-C, then
# stops Vault and removes its files.
#
#   VAULT_DEV_PORT   listen port (default 8200; the next port is Vault's
#                    cluster port and must be free too)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
plugin_bin=${PLUGIN_BIN:-$root/bin/vault-plugin-secrets-apikeys}
version=${PLUGIN_VERSION:?PLUGIN_VERSION must be set (make dev sets it)}
port=${VAULT_DEV_PORT:-8200}
state=${TMPDIR:-/tmp}/vault-plugin-secrets-apikeys-dev-$(id -u)
token=root

vault_bin=$("$root/scripts/vault.sh")

# A server left by an earlier `make dev` that was killed hard goes first.
if [ -f "$state/vault.pid" ]; then
  old=$(cat "$state/vault.pid")
  if kill -0 "$old" 2>/dev/null && grep -q "vault" "/proc/$old/cmdline" 2>/dev/null; then
    echo "==> Stopping the Vault dev server left by an earlier make dev (pid $old)"
    kill -- "-$old" 2>/dev/null || kill "$old" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.2; done
  fi
fi
rm -rf "$state"
mkdir -p "$state/plugins"

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$port" "$((port + 1))"; do
  if port_taken "$p"; then
    echo "error: port $p on 127.0.0.1 is already in use by another process." >&2
    echo "       Stop it, or pick other ports: VAULT_DEV_PORT=8300 make dev" >&2
    exit 1
  fi
done

cp "$plugin_bin" "$state/plugins/"
export VAULT_ADDR="http://127.0.0.1:$port" VAULT_TOKEN=$token

echo "==> Starting Vault dev server ($("$vault_bin" version | head -1)) on $VAULT_ADDR"
setsid "$vault_bin" server -dev -dev-root-token-id="$token" \
  -dev-listen-address="127.0.0.1:$port" -dev-plugin-dir="$state/plugins" \
  -dev-no-store-token >"$state/vault.log" 2>&1 &
vault_pid=$!
echo "$vault_pid" >"$state/vault.pid"

cleanup() {
  trap - INT TERM EXIT
  echo
  echo "==> Stopping Vault"
  kill -- "-$vault_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$vault_pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 -- "-$vault_pid" 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup INT TERM EXIT

for _ in $(seq 300); do
  if "$vault_bin" status >/dev/null 2>&1; then break; fi
  if ! kill -0 "$vault_pid" 2>/dev/null; then
    echo "error: Vault exited during start:" >&2
    tail -20 "$state/vault.log" >&2
    exit 1
  fi
  sleep 0.2
done

echo "==> Bootstrapping"
VAULT="$vault_bin" PLUGIN_BIN="$state/plugins/$(basename "$plugin_bin")" PLUGIN_VERSION="$version" \
  AUDIT_FILE="$state/audit.log" "$root/bootstrap/apply.sh"

cat <<MSG

Vault is running with the API keys engine at apikeys/.

  export VAULT_ADDR=$VAULT_ADDR
  export VAULT_TOKEN=$token

  vault ($vault_bin)
  audit log: $state/audit.log   server log: $state/vault.log

Try:
  vault read apikeys/config
  vault plugin list secret

Press Ctrl-C to stop.
MSG
wait "$vault_pid"

#!/usr/bin/env bash
# Runs `make dev`'s script unattended, as CI does: waits until it says it is
# ready, checks from "another shell" that the mount answers and the catalog
# shows the plugin's version, then stops it with Ctrl-C (SIGINT) and checks
# that nothing is left behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=${VAULT_DEV_PORT:-$(( 18200 + RANDOM % 1000 * 2 ))}
log=$(mktemp)
vault_bin=$("$root/scripts/vault.sh")

# setsid: dev.sh gets its own process group, as it has in a terminal, so the
# SIGINT below reaches it like a Ctrl-C does.
VAULT_DEV_PORT=$port setsid bash "$root/scripts/dev.sh" >"$log" 2>&1 &
pid=$!
trap 'kill -INT -- -$pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 600); do
  grep -q "Press Ctrl-C to stop" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "dev-smoke: make dev exited early" >&2; exit 1; }
  sleep 0.2
done
grep -q "Press Ctrl-C to stop" "$log" || { cat "$log"; echo "dev-smoke: make dev never became ready" >&2; exit 1; }

export VAULT_ADDR=http://127.0.0.1:$port VAULT_TOKEN=root
# Output is captured first: grep -q closing the pipe early would make the
# writer fail under pipefail.
config=$("$vault_bin" read -format=json apikeys/config)
grep -q '"key_prefix"' <<<"$config"
plugins=$("$vault_bin" plugin list secret)
grep -q "vault-plugin-secrets-apikeys *$PLUGIN_VERSION" <<<"$plugins"
echo "dev-smoke: apikeys/config answers and the catalog lists $PLUGIN_VERSION"

kill -INT -- "-$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then echo "dev-smoke: make dev ignored Ctrl-C" >&2; exit 1; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "dev-smoke: Vault still listening after Ctrl-C" >&2; exit 1; fi
echo "dev-smoke: stopped cleanly"

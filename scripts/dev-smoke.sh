#!/usr/bin/env bash
# Runs `make dev`'s script unattended, as CI does: waits until it says it is
# ready; pastes the export lines and the "Try:" commands it printed into a
# new shell that has nothing else (env -i, a minimal PATH without Vault)
# and checks that the mount answers and the catalog shows the plugin's
# version, and that the oidc role leads to the stand-in provider; then stops it with Ctrl-C (SIGINT) and checks that nothing is
# left behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=${VAULT_DEV_PORT:-$(( 18200 + RANDOM % 1000 * 2 ))}
log=$(mktemp)
# Built (or found) before the start, so the readiness wait below never
# includes a Vault build.
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

# What a developer copies: the first block of export lines, and the
# commands under "Try:".
exports=$(awk '/^  export /{print; seen=1; next} seen{exit}' "$log")
try=$(awk '/^Try:$/{on=1; next} on && /^$/{exit} on' "$log")
for want in VAULT_ADDR= VAULT_TOKEN= PATH=; do
  grep -q "export $want" <<<"$exports" || { cat "$log"; echo "dev-smoke: make dev printed no export $want" >&2; exit 1; }
done
grep -q "vault read apikeys/config" <<<"$try" || { cat "$log"; echo "dev-smoke: make dev printed no vault read apikeys/config" >&2; exit 1; }
# A new shell with the printed exports and nothing else: no exported
# variable of this one, and a PATH without the pinned Vault until the
# printed line adds it.
fresh() {
  env -i PATH=/usr/bin:/bin bash --noprofile --norc -euo pipefail -c "$exports
$1" 2>&1
}
fail() {
  echo "$1"
  printf 'dev-smoke: %s; the printed lines:\n' "$2" >&2
  printf '%s\n' "$exports" "$try" >&2
  exit 1
}
found=$(fresh 'command -v vault') || fail "$found" "vault is not on the printed PATH"
[ "$(readlink -f "$found")" = "$(readlink -f "$vault_bin")" ] ||
  fail "" "vault on the printed PATH is $found, not the pinned $vault_bin"
# Output is captured first: grep -q closing the pipe early would make the
# writer fail under pipefail.
out=$(fresh "$try") || fail "$out" "the printed commands fail in a new shell"
grep -q 'key_prefix' <<<"$out" || fail "$out" "vault read apikeys/config showed no key_prefix"
grep -q "vault-plugin-secrets-apikeys *$PLUGIN_VERSION" <<<"$out" || fail "$out" "the catalog does not list $PLUGIN_VERSION"
echo "dev-smoke: the printed exports and commands work in a new shell: apikeys/config answers and the catalog lists $PLUGIN_VERSION"
# OIDC sign-in: Vault's portal role sends people to the stand-in provider.
idp="http://127.0.0.1:$((port + 2))"
out=$(fresh 'vault write -field=auth_url auth/oidc/oidc/auth_url role=portal redirect_uri=http://127.0.0.1:8300/auth/oidc/callback') ||
  fail "$out" "the oidc portal role gives no auth_url"
[[ $out == "$idp/authorize?"* ]] || fail "$out" "the oidc auth_url does not lead to the stand-in provider at $idp"
echo "dev-smoke: the oidc portal role leads to the stand-in identity provider"

kill -INT -- "-$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then echo "dev-smoke: make dev ignored Ctrl-C" >&2; exit 1; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "dev-smoke: Vault still listening after Ctrl-C" >&2; exit 1; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 2))") 2>/dev/null; then echo "dev-smoke: the identity provider still listening after Ctrl-C" >&2; exit 1; fi
echo "dev-smoke: stopped cleanly"

#!/usr/bin/env bash
# Runs `make dev`'s script unattended, as CI does: waits until it says it is
# ready; pastes the export lines and the "Try:" commands it printed into a
# new shell that has nothing else (env -i, a minimal PATH without Vault)
# and checks that the mount answers and the catalog shows the plugin's
# version, and that the oidc role leads to the stand-in provider; that the
# portal answers its sign-in page at the printed URL, signs a printed demo
# login in and sends "Sign in with your identity provider" to the stand-in
# provider; then stops it with Ctrl-C (SIGINT) and checks that nothing is
# left behind.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=${VAULT_DEV_PORT:-$(( 18200 + RANDOM % 1000 * 2 ))}
# Not the default 8300: another make dev on this machine may hold it.
portal_port=${PORTAL_PORT:-$((port + 10000))}
log=$(mktemp)
jar=$(mktemp)
# Built (or found) before the start, so the readiness wait below never
# includes a Vault build.
vault_bin=$("$root/scripts/vault.sh")

# setsid: dev.sh gets its own process group, as it has in a terminal, so the
# SIGINT below reaches it like a Ctrl-C does.
VAULT_DEV_PORT=$port PORTAL_PORT=$portal_port setsid bash "$root/scripts/dev.sh" >"$log" 2>&1 &
pid=$!
trap 'kill -INT -- -$pid 2>/dev/null || true; rm -f "$log" "$jar"' EXIT
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
portal="http://127.0.0.1:$portal_port"
out=$(fresh "vault write -field=auth_url auth/oidc/oidc/auth_url role=portal redirect_uri=$portal/auth/oidc/callback") ||
  fail "$out" "the oidc portal role gives no auth_url"
[[ $out == "$idp/authorize?"* ]] || fail "$out" "the oidc auth_url does not lead to the stand-in provider at $idp"
echo "dev-smoke: the oidc portal role leads to the stand-in identity provider"

# The portal: its printed URL answers the sign-in page, a printed demo
# login signs in, and the OIDC button leads to the stand-in provider.
grep -q "The self-service portal: $portal " "$log" || { cat "$log"; echo "dev-smoke: make dev printed no portal URL $portal" >&2; exit 1; }
page=$(curl -fsS -c "$jar" "$portal/signin") || { cat "$log"; echo "dev-smoke: the portal does not answer $portal/signin" >&2; exit 1; }
grep -q 'name="username"' <<<"$page" || { echo "$page"; echo "dev-smoke: $portal/signin shows no sign-in form" >&2; exit 1; }
grep -q 'href="/auth/oidc/start"' <<<"$page" || { echo "$page"; echo "dev-smoke: $portal/signin offers no OIDC sign-in" >&2; exit 1; }
csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' <<<"$page" | head -1)
pw=$(awk '$1 == "acme-admin" {print $2; exit}' "$log")
[ -n "$pw" ] || { cat "$log"; echo "dev-smoke: make dev printed no acme-admin password for the portal" >&2; exit 1; }
where=$(curl -sS -b "$jar" -c "$jar" -o /dev/null -w '%{http_code} %{redirect_url}' \
  --data-urlencode "csrf=$csrf" --data-urlencode "username=acme-admin" --data-urlencode "password=$pw" "$portal/signin/userpass")
[ "$where" = "303 $portal/keys" ] || { tail -20 "$log"; echo "dev-smoke: the printed acme-admin login does not sign in to the portal ($where)" >&2; exit 1; }
keys=$(curl -fsS -b "$jar" "$portal/keys")
grep -q "Keys of acme" <<<"$keys" || { echo "$keys"; echo "dev-smoke: acme-admin's portal keys page does not show acme" >&2; exit 1; }
where=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "$portal/auth/oidc/start")
[[ $where == "302 $idp/authorize?"* ]] || { echo "dev-smoke: the portal's OIDC sign-in does not lead to the stand-in provider ($where)" >&2; exit 1; }
echo "dev-smoke: the portal at $portal signs acme-admin in and sends OIDC sign-in to the stand-in provider"

kill -INT -- "-$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$pid" 2>/dev/null; then echo "dev-smoke: make dev ignored Ctrl-C" >&2; exit 1; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "dev-smoke: Vault still listening after Ctrl-C" >&2; exit 1; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 2))") 2>/dev/null; then echo "dev-smoke: the identity provider still listening after Ctrl-C" >&2; exit 1; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$portal_port") 2>/dev/null; then echo "dev-smoke: the portal still listening after Ctrl-C" >&2; exit 1; fi
echo "dev-smoke: stopped cleanly"

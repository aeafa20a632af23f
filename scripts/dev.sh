#!/usr/bin/env bash
# `make dev`: a Vault dev server on loopback with the freshly built plugin
# registered, mounted at apikeys/ and bootstrapped (bootstrap/apply.sh: audit
# device, tier policies, userpass and JWT auth with a stand-in identity
# provider, OIDC sign-in through the stand-in OpenID Connect provider
# scripts/devidp; bootstrap/demo.sh: tenants acme and globex and demo logins),
# and the self-service portal (bin/apikeys-portal) beside it.
# Runs until Ctrl-C, then stops Vault, the provider and the portal and
# removes their files.
#
#   VAULT_DEV_PORT   listen port (default 8200; the next port is Vault's
#                    cluster port and must be free too)
#   DEVIDP_PORT      the stand-in OIDC provider's loopback port (default
#                    VAULT_DEV_PORT + 2)
#   PORTAL_PORT      the portal's loopback port (default 8300)
#   PORTAL_URL       the portal's public URL: Vault's oidc role and the
#                    provider allow its callback PORTAL_URL/auth/oidc/callback
#                    (default http://127.0.0.1:PORTAL_PORT, the portal's -listen)
#   ENFORCE_ENTITY_TENANT  the plugin's tenant guard (default false here, so
#                    the root token can still use every tenant's paths;
#                    bootstrap/apply.sh defaults to true)
set -euo pipefail

# Ctrl-C (SIGINT) must stop Vault and clean up even when this runs as a
# background job of a script or CI step: bash starts those with SIGINT
# ignored, and a shell cannot trap a signal ignored when it started. GNU env
# can hand the shell a default SIGINT again (elsewhere: SIGTERM still works).
if [ -z "${APIKEYS_DEV_SIGINT_RESET:-}" ] && env --default-signal=INT true 2>/dev/null; then
  APIKEYS_DEV_SIGINT_RESET=1 exec env --default-signal=INT bash "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
plugin_bin=${PLUGIN_BIN:-$root/bin/vault-plugin-secrets-apikeys}
version=${PLUGIN_VERSION:?PLUGIN_VERSION must be set (make dev sets it)}
port=${VAULT_DEV_PORT:-8200}
idp_port=${DEVIDP_PORT:-$((port + 2))}
portal_port=${PORTAL_PORT:-8300}
portal_url=${PORTAL_URL:-http://127.0.0.1:$portal_port}
portal_url=${portal_url%/}
devidp_bin=${DEVIDP_BIN:-$root/bin/apikeys-devidp}
[ -x "$devidp_bin" ] || { echo "error: $devidp_bin is missing: run make devidp (make dev does)" >&2; exit 1; }
portal_bin=${PORTAL_BIN:-$root/bin/apikeys-portal}
[ -x "$portal_bin" ] || { echo "error: $portal_bin is missing: run make build (make dev does)" >&2; exit 1; }
# One state folder per port, so two dev servers on different ports never
# take each other for a stale one.
state=${TMPDIR:-/tmp}/vault-plugin-secrets-apikeys-dev-$(id -u)-$port
token=root

vault_bin=$("$root/scripts/vault.sh")
# The printed commands say `vault`: bin/ (git-ignored, next to the plugin)
# gets a link to the pinned binary, and the printed PATH line puts bin/
# first, so they work in a new shell on a machine without Vault installed.
# readlink -f: VAULT_BIN may be relative, or be this very link.
vault_target=$(readlink -f "$vault_bin")
mkdir -p "$root/bin"
ln -sfn "$vault_target" "$root/bin/vault"

# A server left by an earlier `make dev` that was killed hard goes first.
if [ -f "$state/portal.pid" ]; then
  old=$(cat "$state/portal.pid")
  if kill -0 "$old" 2>/dev/null && grep -q "apikeys-portal" "/proc/$old/cmdline" 2>/dev/null; then
    echo "==> Stopping the portal left by an earlier make dev (pid $old)"
    kill -- "-$old" 2>/dev/null || kill "$old" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.2; done
  fi
fi
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
for p in "$port" "$((port + 1))" "$idp_port"; do
  if port_taken "$p"; then
    echo "error: port $p on 127.0.0.1 is already in use by another process." >&2
    echo "       Stop it, or pick other ports: VAULT_DEV_PORT=8400 make dev" >&2
    exit 1
  fi
done
if port_taken "$portal_port"; then
  echo "error: port $portal_port on 127.0.0.1 (the portal's) is already in use by another process." >&2
  echo "       Stop it, or pick another port: PORTAL_PORT=8310 make dev" >&2
  exit 1
fi

cp "$plugin_bin" "$state/plugins/"
export VAULT_ADDR="http://127.0.0.1:$port" VAULT_TOKEN=$token

echo "==> Starting Vault dev server ($("$vault_bin" version | head -1)) on $VAULT_ADDR"
setsid "$vault_bin" server -dev -dev-root-token-id="$token" \
  -dev-listen-address="127.0.0.1:$port" -dev-plugin-dir="$state/plugins" \
  -dev-no-store-token >"$state/vault.log" 2>&1 &
vault_pid=$!
echo "$vault_pid" >"$state/vault.pid"

cleanup() {
  trap - INT TERM HUP EXIT
  # Stop Vault before saying so: stdout may be gone already (terminal
  # closed, or a "| tee" killed by the same Ctrl-C), and a write to it must
  # neither kill this shell (SIGPIPE) nor end the cleanup (set -e).
  trap '' PIPE
  set +e
  kill -- "-$vault_pid" 2>/dev/null
  [ -z "${idp_pid:-}" ] || kill -- "-$idp_pid" 2>/dev/null
  [ -z "${portal_pid:-}" ] || kill -- "-$portal_pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$vault_pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 -- "-$vault_pid" 2>/dev/null
  [ -z "${idp_pid:-}" ] || kill -9 -- "-$idp_pid" 2>/dev/null
  if [ -n "${portal_pid:-}" ]; then
    for _ in $(seq 25); do kill -0 "$portal_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 -- "-$portal_pid" 2>/dev/null
  fi
  rm -rf "$state"
  printf '\n==> Vault, the identity provider and the portal stopped\n' 2>/dev/null
}
trap cleanup INT TERM HUP EXIT

for _ in $(seq 300); do
  if "$vault_bin" status >/dev/null 2>&1; then break; fi
  if ! kill -0 "$vault_pid" 2>/dev/null; then
    echo "error: Vault exited during start:" >&2
    tail -20 "$state/vault.log" >&2
    exit 1
  fi
  sleep 0.2
done

# The stand-in OpenID Connect provider: its client secret, made here, goes
# to it and to Vault in a file, never on a command line.
idp_url="http://127.0.0.1:$idp_port"
mkdir -p "$state/idp"
(umask 077 && tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 >"$state/idp/client-secret") || true
echo "==> Starting the stand-in OIDC identity provider on $idp_url"
setsid "$devidp_bin" -listen="127.0.0.1:$idp_port" -issuer="$idp_url" -client-id=vault-apikeys \
  -client-secret-file="$state/idp/client-secret" \
  -redirect-uri="$portal_url/auth/oidc/callback" -redirect-uri=http://localhost:8250/oidc/callback \
  >"$state/devidp.log" 2>&1 &
idp_pid=$!
for _ in $(seq 100); do
  if curl -fsS "$idp_url/.well-known/openid-configuration" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$idp_pid" 2>/dev/null; then
    echo "error: the identity provider exited during start:" >&2
    tail -20 "$state/devidp.log" >&2
    exit 1
  fi
  sleep 0.1
done

echo "==> Bootstrapping"
enforce=${ENFORCE_ENTITY_TENANT:-false}
VAULT="$vault_bin" PLUGIN_BIN="$state/plugins/$(basename "$plugin_bin")" PLUGIN_VERSION="$version" \
  AUDIT_FILE="$state/audit.log" JWT_DEV_IDP_DIR="$state/idp" ENFORCE_ENTITY_TENANT="$enforce" \
  OIDC_DISCOVERY_URL="$idp_url" OIDC_CLIENT_SECRET_FILE="$state/idp/client-secret" PORTAL_URL="$portal_url" \
  "$root/bootstrap/apply.sh"
echo "==> Demo tenants and logins"
VAULT="$vault_bin" DEMO_CREDENTIALS="$state/demo-logins" "$root/bootstrap/demo.sh"
# On a laptop the webhook receivers a tenant tries are on this machine:
# tenants' targets may reach private addresses here (never in production).
"$vault_bin" write apikeys/config tenant_webhook_private_ok=true >/dev/null
pw() { sed -n "s/^$1=//p" "$state/demo-logins"; }

# The portal holds no token of its own: VAULT_TOKEN (root here) is kept out
# of its environment, so it works only with each signed-in user's token.
echo "==> Starting the self-service portal on $portal_url"
setsid env -u VAULT_TOKEN "$portal_bin" -listen="127.0.0.1:$portal_port" -vault-addr="$VAULT_ADDR" \
  -mount=apikeys -public-url="$portal_url" -userpass-mount=userpass -oidc-mount=oidc -oidc-role=portal \
  >"$state/portal.log" 2>&1 &
portal_pid=$!
echo "$portal_pid" >"$state/portal.pid"
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$portal_port/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$portal_pid" 2>/dev/null; then
    echo "error: the portal exited during start:" >&2
    tail -20 "$state/portal.log" >&2
    exit 1
  fi
  sleep 0.1
done

cat <<MSG

Vault is running with the API keys engine at apikeys/.

  export VAULT_ADDR=$VAULT_ADDR
  export VAULT_TOKEN=$token
  export PATH="$root/bin:\$PATH"

  vault: $root/bin/vault -> $vault_target
  audit log: $state/audit.log   server log: $state/vault.log
  identity provider: $idp_url (log: $state/devidp.log)

Try:
  vault read apikeys/config
  vault plugin list secret

Log in as acme's tenant admin (userpass; the tenant comes from its entity):
  export VAULT_TOKEN=\$(vault login -token-only -method=userpass \\
    username=acme-admin password=$(pw acme-admin))
  vault read apikeys/tenants/acme/creds/web        # issue a key of acme
  vault list apikeys/tenants/globex/keys           # 403: another tenant
Other demo logins: acme-dev (developer: creds/dev-*) password=$(pw acme-dev),
platform-admin password=$(pw platform-admin).

Or through the stand-in identity provider (JWT; the tenant comes from a claim):
  export JWT_SIGNING_KEY=$state/idp/signing-key.pem
  export VAULT_TOKEN=\$(vault write -field=token auth/jwt/login role=tenant-admin \\
    jwt="\$($root/bootstrap/mint-jwt.sh sub=alice tenant=acme apikeys_tier=tenant-admin)")

Or sign in with a click through OIDC (the stand-in identity provider
scripts/devidp: acme's tenant admin, acme's developer, globex's tenant admin
or the platform admin; no password; the tenant and tier come from its claims):
  export VAULT_TOKEN=\$(vault login -token-only -method=oidc role=portal)
  (opens a browser; on a machine without one add skip_browser=true and open
  the printed URL in a browser on this machine)
The portal signs in through the same role; its callback is
$portal_url/auth/oidc/callback (set PORTAL_URL to change it).

The self-service portal: $portal_url (log: $state/portal.log)
  userpass logins:
    acme-admin      $(pw acme-admin)   (acme's tenant admin)
    acme-dev        $(pw acme-dev)   (acme's developer)
    platform-admin  $(pw platform-admin)   (every tenant; Manage tenants, Anomalies)
  or "Sign in with your identity provider": one click at the stand-in provider
  (pick acme's tenant admin, acme's developer, globex's tenant admin or the
  platform admin).

Tenants' webhook targets may reach private addresses here
(tenant_webhook_private_ok=true; off by default elsewhere).

Tenant guard (enforce_entity_tenant) is $enforce.$(
  if [ "$enforce" = true ]; then
    printf '%s' " Root gets 403 on tenants/<tenant> paths: use platform-admin."
  else
    printf '%s' " Turn it on with: vault write apikeys/config enforce_entity_tenant=true
(then root gets 403 on tenants/<tenant> paths: use platform-admin)."
  fi)

Press Ctrl-C to stop.
MSG
wait "$vault_pid"

#!/usr/bin/env bash
# Demo data for `make dev`, on top of apply.sh: userpass logins for each kind
# of person, and two tenants created the way a platform admin would, through
# the platform admin's own login rather than root:
#
#   platform-admin  member of PLATFORM_ADMIN_GROUP (apikeys-platform-admin)
#   acme-admin      apikeys-tenant-admin of acme
#   acme-dev        apikeys-tenant-developer of acme
#   tenants acme (roles web, dev-sandbox; static key checkout) and globex
#   (role web), so that acme's logins have another tenant to be refused by
#
# Passwords are random; they are written as user=password lines to
# DEMO_CREDENTIALS (mode 600).
#
#   APIKEYS_MOUNT, USERPASS_PATH, PLATFORM_ADMIN_GROUP  as for apply.sh
#   DEMO_CREDENTIALS  file for the passwords (required)
set -euo pipefail

: "${DEMO_CREDENTIALS:?set DEMO_CREDENTIALS to a file for the demo passwords}"
VAULT=${VAULT:-vault}
export VAULT
here=$(cd "$(dirname "$0")" && pwd)
mount=${APIKEYS_MOUNT:-apikeys}
up=${USERPASS_PATH:-userpass}
admin_group=${PLATFORM_ADMIN_GROUP:-apikeys-platform-admins}

password() { tr -dc 'a-z0-9' </dev/urandom | head -c 20 || true; }

(umask 077 && : >"$DEMO_CREDENTIALS")
add_user() {
  local user=$1 pw
  shift
  pw=$(password)
  USERPASS_PATH=$up "$here/users.sh" "$user" "$pw" "$@"
  echo "$user=$pw" >>"$DEMO_CREDENTIALS"
}
GROUP=$admin_group add_user platform-admin -
add_user acme-admin apikeys-tenant-admin tenant=acme
add_user acme-dev apikeys-tenant-developer tenant=acme

admin_pw=$(sed -n 's/^platform-admin=//p' "$DEMO_CREDENTIALS")
admin_token=$(printf '%s' "$admin_pw" | "$VAULT" write -field=token "auth/$up/login/platform-admin" password=-)
as_admin() { VAULT_TOKEN=$admin_token "$VAULT" "$@" >/dev/null; }

as_admin write "$mount/tenants/acme" display_name="Acme Corp" allowed_environments=live,test
as_admin write "$mount/tenants/acme/roles/web" scopes=read,write environment=live ttl=1h max_ttl=24h
as_admin write "$mount/tenants/acme/roles/dev-sandbox" scopes=read environment=test ttl=1h max_ttl=8h
as_admin write "$mount/tenants/acme/static-keys/checkout" role=web rotation_period=720h
as_admin write "$mount/tenants/globex" display_name="Globex Corporation"
as_admin write "$mount/tenants/globex/roles/web" scopes=read environment=live ttl=1h
echo "tenants acme and globex created by platform-admin"

# The platform admin's token was only needed for the setup above.
VAULT_TOKEN=$admin_token "$VAULT" token revoke -self >/dev/null

#!/usr/bin/env bash
# Creates or updates a userpass login whose identity entity carries the
# tenant (and, for apps, the static key) that the tier policies and the
# plugin's tenant guard read:
#
#   users.sh <username> <password> <policy|-> [key=value ...]
#
#   users.sh acme-admin s3cret apikeys-tenant-admin tenant=acme
#   GROUP=apikeys-platform-admins users.sh alice s3cret -
#
# The policy is the login's token policy ("-" for none); the metadata is set
# on the entity, replacing what it had. GROUP adds the entity to an identity
# group (platform admins get their policy from the group).
#
# For demo and test installations: the password is an argument, which other
# local users can see in the process list while this runs (it reaches Vault
# on stdin). People of a real installation log in through the identity
# provider (JWT/OIDC) instead.
#
#   USERPASS_PATH   userpass mount path (default userpass)
#   GROUP           identity group to add the entity to (default none)
set -euo pipefail

if [ $# -lt 3 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
fi
VAULT=${VAULT:-vault}
up=${USERPASS_PATH:-userpass}
user=$1 password=$2 policy=$3
shift 3

policies=()
if [ "$policy" != "-" ]; then
  policies=(token_policies="$policy")
fi
metadata=()
for kv in "$@"; do
  metadata+=(metadata="$kv")
done

printf '%s' "$password" | "$VAULT" write "auth/$up/users/$user" password=- "${policies[@]}" >/dev/null
"$VAULT" write -f "identity/entity/name/$user" "${metadata[@]}" >/dev/null
entity=$("$VAULT" read -field=id "identity/entity/name/$user")
accessor=$("$VAULT" read -field=accessor "sys/auth/$up")
"$VAULT" write identity/entity-alias name="$user" canonical_id="$entity" mount_accessor="$accessor" >/dev/null

if [ -n "${GROUP:-}" ]; then
  # A group without members has no member_entity_ids field at all.
  members=$("$VAULT" read -format=json -field=member_entity_ids "identity/group/name/$GROUP" 2>/dev/null | tr -d '[]" \n') || members=""
  case ",$members," in
    *",$entity,"*) ;;
    *) "$VAULT" write "identity/group/name/$GROUP" member_entity_ids="${members:+$members,}$entity" >/dev/null ;;
  esac
fi
echo "user $user (entity $entity${*:+, $*}${GROUP:+, group $GROUP})"

# apikeys-leak-reporter: a secret scanner (or the relay in front of GitHub's
# secret scanning partner program) reports keys it found in public places,
# and can do nothing else.
#
# leaks/report spans tenants on purpose: a scanner does not know whose key it
# found, and holding the key is the proof. The answer names the tenant,
# key_id and hint of each key a token matches, which tells the caller nothing
# the token did not already give it; an unknown token answers "unknown". What
# the engine does to a matched key (revoke, disable, notify) is the mount's
# leak_action, which only platform admins set.
#
# Needs no tenant in identity. bootstrap/policies.sh renders this file:
# "apikeys/" at the start of a path becomes the mount path.

path "apikeys/leaks/report" {
  capabilities = ["update"]
}

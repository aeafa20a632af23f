# shellcheck shell=bash
# Helpers shared by the bootstrap scripts; sourced, not run. Callers set
# VAULT to the vault CLI.

# mounted <audit|auth|secrets> <path>: whether a device or mount is at path.
# (Not "list | grep -q": with pipefail, grep's early exit fails the pipe.)
mounted() {
  local list
  list=$("$VAULT" "$1" list -format=json 2>/dev/null) || true
  [[ $list == *"\"$2/\""* ]]
}

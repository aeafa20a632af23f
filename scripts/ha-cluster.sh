#!/usr/bin/env bash
# A 3-node Vault cluster on loopback with Raft integrated storage and the
# freshly built plugin mounted at apikeys/, to try HA by hand (kill the
# active node, watch a standby take over). Runs until Ctrl-C, then stops
# every node and removes their data.
#
#   HA_BASE_PORT                 first API port (default 8300): node N listens
#                                on HA_BASE_PORT+2(N-1) and uses the next port
#                                as its cluster port, so 8300-8305 must be free
#   PLUGIN_VERSION               version built into the plugin and registered
#                                (default v0.1.0-dev, as make build)
#   RAFT_PERFORMANCE_MULTIPLIER  raft timing multiplier (default: Vault's, 5;
#                                1 makes failover about five times faster)
#
# The same cluster, under load and with assertions, is `make test-ha`
# (backend/hatest).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
base=${HA_BASE_PORT:-8300}
version=${PLUGIN_VERSION:-v0.1.0-dev}
multiplier=${RAFT_PERFORMANCE_MULTIPLIER:-}
name=vault-plugin-secrets-apikeys
nodes=3

vault_bin=$("$root/scripts/vault.sh")

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for ((p = base; p < base + 2 * nodes; p++)); do
  if port_taken "$p"; then
    echo "error: port $p on 127.0.0.1 is already in use." >&2
    echo "       Stop what uses it, or pick other ports: HA_BASE_PORT=8400 $0" >&2
    exit 1
  fi
done

echo "==> Building the plugin ($version)"
make -s -C "$root" build VERSION="$version"
plugin_bin=$root/bin/$name
sha=$(sha256sum "$plugin_bin" | cut -d' ' -f1)

dir=$(mktemp -d "${TMPDIR:-/tmp}/apikeys-ha-XXXXXX")
pids=()
sleeper=
cleanup() {
  trap - INT TERM EXIT
  [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
  echo
  echo "==> Stopping the cluster"
  # Each node leads its own process group (setsid), which holds its plugin
  # processes too.
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

api_port() { echo $((base + 2 * ($1 - 1))); }
addr() { echo "http://127.0.0.1:$(api_port "$1")"; }
vault_at() { VAULT_ADDR=$(addr "$1") "$vault_bin" "${@:2}"; }

for ((n = 1; n <= nodes; n++)); do
  d=$dir/node$n
  mkdir -p "$d/raft" "$d/plugins"
  # Every node runs the plugin from its own plugin_directory, as separate
  # machines would; the catalog entry (SHA-256) is shared through raft.
  cp "$plugin_bin" "$d/plugins/"
  joins=""
  for ((o = 1; o <= nodes; o++)); do
    [ "$o" = "$n" ] || joins+="  retry_join {
    leader_api_addr = \"$(addr "$o")\"
  }
"
  done
  cat >"$d/vault.hcl" <<HCL
ui            = true
disable_mlock = true
api_addr      = "$(addr "$n")"
cluster_addr  = "https://127.0.0.1:$(($(api_port "$n") + 1))"
plugin_directory = "$d/plugins"

listener "tcp" {
  address         = "127.0.0.1:$(api_port "$n")"
  cluster_address = "127.0.0.1:$(($(api_port "$n") + 1))"
  tls_disable     = true
}

storage "raft" {
  path    = "$d/raft"
  node_id = "node$n"
${multiplier:+  performance_multiplier = $multiplier
}$joins}
HCL
  setsid "$vault_bin" server -config="$d/vault.hcl" >"$d/vault.log" 2>&1 &
  pids+=("$!")
done

echo "==> Starting $nodes Vault servers ($("$vault_bin" version | head -1)) in $dir"
for ((n = 1; n <= nodes; n++)); do
  for i in $(seq 300); do
    # `vault status` exits 2 while sealed: that still means it listens.
    rc=0; vault_at "$n" status >/dev/null 2>&1 || rc=$?
    [ "$rc" != 1 ] && break
    if ! kill -0 "${pids[$((n - 1))]}" 2>/dev/null || [ "$i" = 300 ]; then
      echo "error: node$n did not start:" >&2
      tail -20 "$dir/node$n/vault.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done

echo "==> Initializing node1 (1 key share, threshold 1)"
init=$(vault_at 1 operator init -key-shares=1 -key-threshold=1 -format=json)
unseal_key=$(jq -r '.unseal_keys_b64[0]' <<<"$init")
token=$(jq -r '.root_token' <<<"$init")
export VAULT_TOKEN=$token

# A node that joins through retry_join refuses the key ("not initialized")
# until it has fetched the leader's join challenge: retry until unsealed.
unseal() {
  for _ in $(seq 150); do
    vault_at "$1" operator unseal "$unseal_key" >/dev/null 2>&1 || true
    if vault_at "$1" status -format=json 2>/dev/null | jq -e '.sealed == false' >/dev/null; then
      return 0
    fi
    sleep 0.4
  done
  echo "error: node$1 did not unseal:" >&2
  tail -20 "$dir/node$1/vault.log" >&2
  exit 1
}
echo "==> Unsealing"
unseal 1
for _ in $(seq 150); do
  vault_at 1 read -format=json sys/leader 2>/dev/null | jq -e '.is_self == true' >/dev/null 2>&1 && break
  sleep 0.2
done
for ((n = 2; n <= nodes; n++)); do unseal "$n"; done

echo "==> Waiting for $nodes raft voters (autopilot promotes joiners after ~10-20 s)"
for i in $(seq 120); do
  voters=$(vault_at 1 operator raft list-peers -format=json 2>/dev/null |
    jq '[.data.config.servers[] | select(.voter)] | length' 2>/dev/null || echo 0)
  [ "$voters" = "$nodes" ] && break
  if [ "$i" = 120 ]; then
    echo "error: only $voters voters after 60 s" >&2
    exit 1
  fi
  sleep 0.5
done

# One registration is enough: the plugin catalog lives in Vault's barrier,
# which raft replicates to every node. Requests to a standby are forwarded
# to the active node, so node1's address works whichever node is active.
echo "==> Registering the plugin (sha256 $sha) and mounting it at apikeys/"
vault_at 1 plugin register -sha256="$sha" -version="$version" -command="$name" secret "$name" >/dev/null
vault_at 1 secrets enable -path=apikeys -plugin-version="$version" "$name" >/dev/null

cat <<MSG

Vault cluster of $nodes nodes with the API keys engine at apikeys/.

  export VAULT_ADDR=$(addr 1)
  export VAULT_TOKEN=$token

  unseal key: $unseal_key
  vault:      $vault_bin
MSG
for ((n = 1; n <= nodes; n++)); do
  echo "  node$n: $(addr "$n")  pid ${pids[$((n - 1))]}  log $dir/node$n/vault.log"
done
cat <<MSG

Try:
  vault operator raft list-peers
  vault read sys/leader                      # which node is active
  kill -9 -- -<pid of the active node>       # crash it (and its plugin)
  VAULT_ADDR=<a surviving node> vault read sys/leader

A killed node comes back with its data: start it again with
  setsid $vault_bin server -config=$dir/node<N>/vault.hcl
and unseal it with the key above. (Nodes started by hand are not stopped
by Ctrl-C.)

Press Ctrl-C to stop.
MSG
# Any node may be killed while trying things out: wait for Ctrl-C, not for
# a node.
while :; do
  sleep 3600 &
  sleeper=$!
  wait "$sleeper" || true
done

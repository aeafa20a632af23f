# apikeys-gateway-global: a shared gateway in front of every tenant checks
# any key and reports the traffic it served; an edge verifier also loads the
# keys it checks from the sync feed. Nothing else.
#
# Kept apart from apikeys-gateway on purpose: one policy granting both the
# global and the tenant path would let every tenant's gateway verify (and so
# read the metadata of) other tenants' keys. Needs no tenant in identity.
#
# bootstrap/policies.sh renders this file: "apikeys/" at the start of a path
# becomes the mount path.

path "apikeys/verify" {
  capabilities = ["read", "update"]
}

# Report the traffic served per key (requests, errors, upstream latency).
# The engine books a report only on a key of the tenant it names. Not in
# apikeys-gateway: this path is global, so one tenant's gateway could book
# traffic on another tenant's keys.
path "apikeys/usage/report" {
  capabilities = ["update"]
}

# Edge verifiers (cmd/apikeys-edge) load the keys they verify from these.
# The snapshot carries the mount's verifier secret: see docs/edge.md.
path "apikeys/sync/snapshot" {
  capabilities = ["read"]
}

path "apikeys/sync/changes" {
  capabilities = ["read"]
}

#!/usr/bin/env bash
# The stand-in identity provider: prints a JWT signed (RS256) with the local
# key that bootstrap generated, for logging in through JWT auth:
#
#   mint-jwt.sh sub=alice tenant=acme apikeys_tier=tenant-admin
#   vault write auth/jwt/login role=tenant-admin jwt="$(mint-jwt.sh ...)"
#
# Claims are name=value strings; iss, aud, iat, nbf and exp are added.
#
#   JWT_SIGNING_KEY  PEM private key (required; make dev prints its path)
#   JWT_ISSUER       iss (default apikeys-dev-idp)
#   JWT_AUDIENCE     aud (default vault-apikeys)
#   JWT_TTL          seconds until exp (default 600)
set -euo pipefail

: "${JWT_SIGNING_KEY:?set JWT_SIGNING_KEY to the PEM private key of the identity provider}"
issuer=${JWT_ISSUER:-apikeys-dev-idp}
audience=${JWT_AUDIENCE:-vault-apikeys}
ttl=${JWT_TTL:-600}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

now=$(date +%s)
claims=$(printf '"iss":"%s","aud":"%s","iat":%d,"nbf":%d,"exp":%d' "$issuer" "$audience" "$now" "$now" $((now + ttl)))
for kv in "$@"; do
  name=${kv%%=*} value=${kv#*=}
  if [ "$name" = "$kv" ] || ! [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [[ $value == *[\"\\]* ]]; then
    echo "mint-jwt.sh: bad claim $kv (want name=value; no quotes or backslashes)" >&2
    exit 2
  fi
  claims+=$(printf ',"%s":"%s"' "$name" "$value")
done

header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
payload=$(printf '{%s}' "$claims" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$JWT_SIGNING_KEY" -binary | b64url)
echo "$header.$payload.$signature"

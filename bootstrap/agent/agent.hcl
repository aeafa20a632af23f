# Vault Agent delivering an API key of the apikeys engine to an app.
#
# Run from this folder (paths are relative to the working directory), with a
# token of the app's identity in vault-token. The apikeys-app policy is
# templated on the entity's metadata (tenant, static_key), so the token must
# come from a login whose entity carries them, e.g. the JWT "app" role of
# bootstrap/auth-jwt.sh or a user made by bootstrap/users.sh:
#   vault write -field=token auth/jwt/login role=app jwt=<app's JWT> > vault-token
#   vault agent -config=agent.hcl
# In production replace token_file with the app platform's auth method
# (approle, kubernetes, jwt, ...).
#
# The agent renders api-key.ctmpl into api-key.txt and, for a static key,
# re-reads it about one second after each rotation: static-creds carries
# `ttl` (seconds to the next rotation) and `rotation_period`, which is how
# Vault Agent schedules re-reads of rotating, non-leased secrets. For a
# dynamic key (creds/<role>) it renews the lease and renders a new key when
# the lease can no longer be renewed.

vault {
  address = "http://127.0.0.1:8200"
}

auto_auth {
  method "token_file" {
    config = {
      token_file_path = "vault-token"
    }
  }
}

template_config {
  # Fallback for non-leased secrets without rotation data; static-creds
  # never relies on it.
  static_secret_render_interval = "5m"
  exit_on_retry_failure         = true
}

template {
  source      = "api-key.ctmpl"
  destination = "api-key.txt"
  perms       = "0600"
}

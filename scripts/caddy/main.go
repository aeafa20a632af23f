// Command caddy is Caddy with its standard modules and the apikeys handler
// (http.handlers.apikeys, Caddyfile directive apikeys). scripts/caddy.sh
// builds it; docs/edge.md says how to configure it.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/caddy/apikeys"
)

func main() {
	caddycmd.Main()
}

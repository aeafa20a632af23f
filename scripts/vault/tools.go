//go:build tools

// Package vault only pins the Vault server version; scripts/vault.sh builds it.
package vault

import _ "github.com/hashicorp/vault"

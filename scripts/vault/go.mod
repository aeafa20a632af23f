// Nested module that pins the Vault server used by `make dev` and the
// integration tests. It is kept apart so Vault's dependency graph never
// enters the plugin's go.mod.
module github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/vault

go 1.25.1

require github.com/hashicorp/vault v1.21.0

require (
	github.com/godbus/dbus v4.1.0+incompatible // indirect
	github.com/gsterjov/go-libsecret v0.0.0-20161001094733-a6f4afe4910c // indirect
)

// Vault's release replaces the sdk with its in-tree copy, which the module
// proxy does not serve; sdk v0.20.0 matches that copy.
replace github.com/hashicorp/vault/sdk => github.com/hashicorp/vault/sdk v0.20.0

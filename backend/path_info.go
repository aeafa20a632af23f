package backend

import (
	"context"
	"runtime"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathInfo() []*framework.Path {
	return []*framework.Path{{
		Pattern: "info",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathInfoRead,
				Summary:      "Report the plugin's version and build.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "info"},
			},
		},
		HelpSynopsis:    pathInfoHelpSyn,
		HelpDescription: pathInfoHelpDesc,
	}}
}

// pathInfoRead touches no storage: it is also the benchmark baseline for the
// cost of Vault's request path plus the hop to the plugin process.
func (b *backend) pathInfoRead(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	return &logical.Response{Data: map[string]interface{}{
		"version":    Version,
		"commit":     Commit,
		"go_version": runtime.Version(),
	}}, nil
}

const pathInfoHelpSyn = `Report the plugin's version and build.`

const pathInfoHelpDesc = `
Returns the version the plugin was built as (the version Vault's plugin
catalog shows), the source commit and the Go version. It reads no storage, so
it also measures the round trip through Vault to the plugin process.
`

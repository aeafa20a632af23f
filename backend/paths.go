package backend

import (
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// crudSummaries are the OpenAPI summaries of a resource path's operations.
type crudSummaries struct {
	read, create, update, delete string
}

// crudOperations is the operation set of a resource path (tenant, role,
// static key): read, create and update through one write handler, delete.
// Writes are forwarded from performance standbys, whose storage is
// read-only.
func crudOperations(read, write, del framework.OperationFunc, s crudSummaries) map[logical.Operation]framework.OperationHandler {
	writeOp := func(summary string) *framework.PathOperation {
		return &framework.PathOperation{
			Callback:                  write,
			Summary:                   summary,
			DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "write"},
			ForwardPerformanceStandby: true,
		}
	}
	return map[logical.Operation]framework.OperationHandler{
		logical.ReadOperation:   &framework.PathOperation{Callback: read, Summary: s.read},
		logical.CreateOperation: writeOp(s.create),
		logical.UpdateOperation: writeOp(s.update),
		logical.DeleteOperation: &framework.PathOperation{Callback: del, Summary: s.delete, ForwardPerformanceStandby: true},
	}
}

package backend

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// getJSON reads and decodes one storage entry; a missing entry is nil, nil.
// what names the entry in errors ("role \"web\" of tenant \"acme\"").
func getJSON[T any](ctx context.Context, s logical.Storage, key, what string) (*T, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if entry == nil {
		return nil, nil
	}
	v := new(T)
	if err := entry.DecodeJSON(v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", what, err)
	}
	return v, nil
}

// tenantList is the handler of a tenant-scoped list path: the names stored
// under prefix(tenant).
func tenantList(prefix func(tenant string) string, what string) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		tenant := d.Get("tenant").(string)
		if err := validateName("tenant", tenant); err != nil {
			return fieldError("tenant", err), nil
		}
		names, err := req.Storage.List(ctx, prefix(tenant))
		if err != nil {
			return nil, fmt.Errorf("list %s of tenant %q: %w", what, tenant, err)
		}
		return logical.ListResponse(names), nil
	}
}

package backend

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// A name Vault's storage would refuse is a 400 naming the field, never a
// 500 from the existence check Vault runs before the handler.
func TestBadNamesAreRefusedBeforeStorage(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s)
	// Vault's storage refuses keys with ".." ("relative paths not
	// supported"); logical.InmemStorage does not.
	ds := &hookStorage{Storage: s, beforeGet: func(_ context.Context, k string) error {
		if strings.Contains(k, "..") {
			return errors.New("relative paths not supported")
		}
		return nil
	}}
	for path, field := range map[string]string{
		"tenants/a..b":                  "tenant",
		"tenants/acme/roles/x..y":       "role",
		"tenants/acme/static-keys/x..y": "name",
		"tenants/a..b/static-keys/app":  "tenant",
		"config/notifications/x..y":     "name",
		"tenants/a..b/roles/web":        "tenant",
	} {
		req := &logical.Request{Operation: logical.CreateOperation, Path: path, Storage: ds,
			Data: map[string]interface{}{"role": "web", "rotation_period": "1h", "url": "https://example.com/hook"}}
		found, exists, err := b.HandleExistenceCheck(context.Background(), req)
		if err != nil || !found || exists {
			t.Errorf("%s: existence check found=%v exists=%v err=%v, want a clean false", path, found, exists, err)
			continue
		}
		resp, err := b.HandleRequest(context.Background(), req)
		if err != nil || resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), field) {
			t.Errorf("%s: want a 400 naming %q, got %v %v", path, field, resp, err)
		}
	}
}

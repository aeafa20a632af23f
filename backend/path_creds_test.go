package backend

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// An issue's scopes: left out, the role's; a subset, that subset; sent
// empty, none; anything wider, a 400 naming the field.
func TestIssueScopes(t *testing.T) {
	b, s := newTestBackend(t)
	setupAcme(t, b, s) // role web: read, write
	for _, tc := range []struct {
		data map[string]interface{}
		want []string
	}{
		{map[string]interface{}{}, []string{"read", "write"}},
		{map[string]interface{}{"scopes": "read"}, []string{"read"}},
		{map[string]interface{}{"scopes": ""}, []string{}},
	} {
		resp := b.do(t, s, logical.UpdateOperation, "tenants/acme/creds/web", tc.data)
		if got := resp.Data["scopes"].([]string); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%v: scopes %v, want %v", tc.data, got, tc.want)
		}
		key := resp.Data["api_key"].(string)
		wantRead := contract.CodeValid
		if len(tc.want) == 0 {
			wantRead = contract.CodeInsufficientScope
		}
		if c := b.code(t, s, contract.Request{APIKey: key, RequiredScopes: []string{"read"}}, time.Now()); c != wantRead {
			t.Errorf("%v: verify with read: %s, want %s", tc.data, c, wantRead)
		}
	}
	resp, err := request(b, s, logical.UpdateOperation, "tenants/acme/creds/web", map[string]interface{}{"scopes": "read,admin"})
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "scopes") {
		t.Fatalf("wider scopes: %v %v", resp, err)
	}
}

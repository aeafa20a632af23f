package backend

import (
	"context"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

var knownCodes = map[string]bool{
	contract.CodeValid: true, contract.CodeMalformed: true, contract.CodeNotFound: true, contract.CodeExpired: true,
	contract.CodeTenantSuspended: true, contract.CodeInsufficientScope: true, contract.CodeIPNotAllowed: true, contract.CodeRateLimited: true,
}

// FuzzVerifyRequest feeds verify's request decoding arbitrary field values:
// it must never panic or fail with a server error, and must answer either a
// 400 or one of the documented codes (VALID only for the issued key).
func FuzzVerifyRequest(f *testing.F) {
	var (
		once sync.Once
		b    *backend
		s    logical.Storage
		key  string
	)
	setup := func(t *testing.T) {
		once.Do(func() {
			var cs *countingStorage
			b, cs = newTestBackend(t)
			s = cs
			key, _, _ = setupAcme(t, b, s)
		})
	}
	f.Add("", "", "", "")
	f.Add("ak_live_0000000000000000000000000000000000000000000000000", "acme", "read", "10.0.0.1")
	f.Add("ak_live_", "ACME", "read,,write", "::1")
	f.Add("x_y_z", "", " , ", "300.1.1.1")
	f.Add("\x00\xff", "a/b", "read", "fe80::1%eth0")
	f.Fuzz(func(t *testing.T, apiKey, tenant, scopes, clientIP string) {
		setup(t)
		for _, k := range []string{apiKey, key} {
			resp, err := b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.UpdateOperation, Path: "verify", Storage: s,
				Data: map[string]interface{}{"api_key": k, "tenant": tenant, "required_scopes": scopes, "client_ip": clientIP},
			})
			if err != nil {
				t.Fatalf("server error: %v", err)
			}
			if resp.IsError() {
				continue
			}
			code, _ := resp.Data["code"].(string)
			if !knownCodes[code] {
				t.Fatalf("unknown code %q", code)
			}
			if code == contract.CodeValid && k != key {
				t.Fatalf("a key that was never issued verified: %q", k)
			}
		}
	})
}

package backend

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

// storedValues is every storage entry's raw value, for checks that a
// plaintext key is in none of them.
func storedValues(t *testing.T, s *countingStorage) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, k := range snapshot(t, s) {
		e, err := s.Storage.Get(ctx, k)
		if err != nil || e == nil {
			t.Fatalf("read %s: %v", k, err)
		}
		out[k] = string(e.Value)
	}
	return out
}

func TestKeyHintIsStoredAndShownNeverTheKey(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, issued := setupAcme(t, b, s)
	hint := keyformat.Hint(key)
	if hint == "" || issued.Data["hint"] != hint {
		t.Fatalf("issue answer hint %v, want %q", issued.Data["hint"], hint)
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["hint"]; got != hint {
		t.Fatalf("key read hint %v, want %q", got, hint)
	}
	b.do(t, s, logical.UpdateOperation, "verify", map[string]interface{}{"api_key": key})
	usage := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data["keys"].(map[string]interface{})
	if got := usage[id].(map[string]interface{})["hint"]; got != hint {
		t.Fatalf("usage key list hint %v, want %q", got, hint)
	}

	// Static keys: the first key and each rotation's, in static-creds, the
	// static key read and the key record.
	b.do(t, s, logical.CreateOperation, "tenants/acme/static-keys/app", map[string]interface{}{"role": "web", "rotation_period": "1h"})
	b.do(t, s, logical.UpdateOperation, "tenants/acme/static-keys/app/rotate", nil)
	creds := b.do(t, s, logical.ReadOperation, "tenants/acme/static-creds/app", nil).Data
	static := creds["api_key"].(string)
	if creds["hint"] != keyformat.Hint(static) {
		t.Fatalf("static-creds hint %v for %s", creds["hint"], keyformat.Hint(static))
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/static-keys/app", nil).Data["hint"]; got != keyformat.Hint(static) {
		t.Fatalf("static key read hint %v", got)
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+creds["key_id"].(string), nil).Data["hint"]; got != keyformat.Hint(static) {
		t.Fatalf("static key record hint %v", got)
	}

	// A dynamic key lives in storage as its HMAC and hint only.
	for k, v := range storedValues(t, s) {
		if strings.Contains(v, key) {
			t.Errorf("storage entry %s holds the plaintext dynamic key", k)
		}
		// Static keys are kept whole in their (seal-wrapped) entry
		// only: Vault Agent reads them there.
		if strings.Contains(v, static) && !strings.HasPrefix(k, staticPrefix) {
			t.Errorf("storage entry %s holds a static key's plaintext", k)
		}
	}

	// A key issued before hints existed shows an empty hint; nothing is
	// migrated.
	rec, err := readKeyRecord(context.Background(), s, issued.Secret.InternalData["hash"].(string))
	if err != nil {
		t.Fatal(err)
	}
	rec.Hint = ""
	if err := putJSON(context.Background(), s, hashPrefix+rec.Hash, "key record", rec); err != nil {
		t.Fatal(err)
	}
	if got := b.do(t, s, logical.ReadOperation, "tenants/acme/keys/"+id, nil).Data["hint"]; got != "" {
		t.Fatalf("a key without a stored hint shows %v", got)
	}
}

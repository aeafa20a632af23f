package acceptance

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// historySums reads a usage history path and adds up its buckets: verify
// answers by code and reported requests.
func historySums(c *api.Client, path, granularity string) (map[string]int64, int64, error) {
	s, err := c.Logical().ReadWithData(path, map[string][]string{"granularity": {granularity}})
	if err != nil {
		return nil, 0, err
	}
	if s == nil {
		return nil, 0, fmt.Errorf("%s: not found", path)
	}
	codes := map[string]int64{}
	var requests int64
	buckets, _ := s.Data["buckets"].([]interface{})
	for _, b := range buckets {
		m := b.(map[string]interface{})
		for c, n := range m["verify_by_code"].(map[string]interface{}) {
			v, _ := n.(json.Number).Int64()
			codes[c] += v
		}
		v, _ := m["requests"].(json.Number).Int64()
		requests += v
	}
	return codes, requests, nil
}

// TestUsageHistoryThroughVault: verifies through Vault and checks an edge
// answered without Vault (reported through usage/report: the requests it
// served and its answers by code) show in the key's and the tenant's
// history once flushed. The test forces the flush by reloading
// the mount's backend (vault plugin reload -mounts): Clean flushes, and the
// new backend has counted nothing, so what it answers came from storage.
func TestUsageHistoryThroughVault(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	for range 3 {
		e.wantCode(k.key, "VALID")
	}
	e.wantCode(k.key, "INSUFFICIENT_SCOPE", "required_scopes", "admin")
	if d := e.verify("tenants/acme/verify", map[string]interface{}{"api_key": regenerateKey(t, k.key)}); d["code"] != "NOT_FOUND" {
		t.Fatalf("unknown key: %v", d)
	}

	f := startEdge(t, e, 10*time.Second)
	for range 5 {
		if st, _, body := f.check(k.key); st != http.StatusOK {
			t.Fatalf("edge check: %d %s", st, body)
		}
	}
	for range 2 {
		if st, _, body := f.check(k.key, "X-Required-Scopes", "admin"); st != http.StatusForbidden {
			t.Fatalf("edge check without the scope: %d %s", st, body)
		}
	}
	testvault.WaitFor(t, 15*time.Second, "the edge to report its checks", func() error {
		u := read(t, e.c, e.path("tenants/acme/keys/"+k.id))
		if fmt.Sprint(u.Data["requests"]) != "5" || fmt.Sprint(u.Data["verify_count"]) != "8" {
			return fmt.Errorf("key requests %v, verify_count %v", u.Data["requests"], u.Data["verify_count"])
		}
		return nil
	})

	if _, err := srv.Client.Sys().ReloadPlugin(&api.ReloadPluginInput{Mounts: []string{e.mount}}); err != nil {
		t.Fatalf("reload the mount: %v", err)
	}
	keyPath := e.path("tenants/acme/keys/" + k.id + "/usage/history")
	tenantPath := e.path("tenants/acme/usage/history")
	// Hourly and daily sums: a run across an hour (or day) boundary puts
	// counts in the next bucket, never elsewhere.
	for _, g := range []string{"hour", "day"} {
		testvault.WaitFor(t, 30*time.Second, "the "+g+"ly history after the flush", func() error {
			codes, requests, err := historySums(e.c, keyPath, g)
			if err != nil {
				return err
			}
			// Vault's 3 VALID and 1 INSUFFICIENT_SCOPE, the edge's 5 and 2.
			if len(codes) != 2 || codes["VALID"] != 8 || codes["INSUFFICIENT_SCOPE"] != 3 || requests != 5 {
				return fmt.Errorf("key: codes %v, requests %d", codes, requests)
			}
			codes, requests, err = historySums(e.c, tenantPath, g)
			if err != nil {
				return err
			}
			if len(codes) != 3 || codes["VALID"] != 8 || codes["INSUFFICIENT_SCOPE"] != 3 || codes["NOT_FOUND"] != 1 || requests != 5 {
				return fmt.Errorf("tenant: codes %v, requests %d", codes, requests)
			}
			return nil
		})
	}

	// Another tenant's path does not reach acme's key; bad input is a 400
	// naming the field.
	e.tenant("globex", nil)
	if s, err := e.c.Logical().Read(e.path("tenants/globex/keys/" + k.id + "/usage/history")); s != nil || err != nil {
		t.Fatalf("acme's key through globex: %v %v", s, err)
	}
	_, err := e.c.Logical().ReadWithData(keyPath, map[string][]string{"granularity": {"week"}})
	wantStatus(t, err, http.StatusBadRequest, "granularity")
	_, err = e.c.Logical().ReadWithData(tenantPath, map[string][]string{"from": {"last tuesday"}})
	wantStatus(t, err, http.StatusBadRequest, "from")
}

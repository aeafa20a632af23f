package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/vault/api"
)

const benchKeys = 10000

var (
	benchOnce sync.Once
	benchIDs  []string
	benchPW   string
	benchErr  error
)

// benchTenant makes tenant "bench" with benchKeys keys (a role without
// leases, so the keys cost no lease each) and a tenant admin login for it,
// once per run.
func benchTenant(b *testing.B) (string, []string) {
	b.Helper()
	srv := sharedVault(b)
	benchOnce.Do(func() {
		admin := login(b, srv, "platform-admin")
		w := func(c *api.Client, p string, d map[string]interface{}) error {
			_, err := c.Logical().Write(p, d)
			return err
		}
		if benchErr = w(admin, "apikeys/tenants/bench", map[string]interface{}{"display_name": "Bench <b>"}); benchErr != nil {
			return
		}
		if benchErr = w(admin, "apikeys/tenants/bench/roles/bulk", map[string]interface{}{
			"scopes": "read", "environment": "live", "ttl": "24h", "leased": false,
		}); benchErr != nil {
			return
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		var errOnce sync.Once
		for range 16 {
			wg.Go(func() {
				for i := next.Add(1); i <= benchKeys; i = next.Add(1) {
					if err := w(admin, "apikeys/tenants/bench/creds/bulk", map[string]interface{}{"name": fmt.Sprintf("bulk-%05d", i)}); err != nil {
						errOnce.Do(func() { benchErr = err })
						return
					}
				}
			})
		}
		wg.Wait()
		if benchErr != nil {
			return
		}
		benchPW = randomToken()
		if benchErr = bootstrap(srv, "users.sh", nil, "bench-admin", benchPW, "apikeys-tenant-admin", "tenant=bench"); benchErr != nil {
			return
		}
		l, err := admin.Logical().List("apikeys/tenants/bench/keys/")
		if err != nil {
			benchErr = err
			return
		}
		benchIDs = stringList(l.Data["keys"])
		sort.Strings(benchIDs)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	if len(benchIDs) < benchKeys {
		b.Fatalf("tenant bench has %d keys, want %d", len(benchIDs), benchKeys)
	}
	return benchPW, benchIDs
}

// BenchmarkPages is every page a tenant admin is offered, of a tenant with
// 10 000 keys, rendered through the portal against the real Vault: the keys
// list (its first page, a page in the middle, and a filtered page: a name
// substring that matches about one key in ten, so the filter reads a few
// hundred keys' info), a key, and the other nav pages.
func BenchmarkPages(b *testing.B) {
	pw, ids := benchTenant(b)
	tp := newTestPortal(b, sharedVault(b), nil)
	br := newBrowser(b, tp.url)
	br.signIn("bench-admin", pw).want(b, http.StatusOK, "Keys of bench")
	// Vault's share: the list call a page makes, alone.
	b.Run("vault-list", func(b *testing.B) {
		c := login(b, sharedVault(b), "platform-admin")
		for b.Loop() {
			if _, err := c.Logical().ReadWithData("apikeys/tenants/bench/keys/", map[string][]string{
				"list": {"true"}, "limit": {"50"}, "after": {ids[len(ids)/2]},
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for name, path := range map[string]string{
		"keys":          "/keys",
		"page":          "/keys?" + url.Values{"after": {ids[len(ids)/2]}}.Encode(),
		"filtered":      "/keys?name=0",
		"detail":        "/keys/" + ids[len(ids)/3],
		"key-usage":     "/keys/" + ids[len(ids)/3] + "/usage",
		"issue":         "/issue",
		"issue-form":    "/issue?role=bulk",
		"static-keys":   "/static-keys",
		"roles":         "/roles",
		"usage":         "/usage",
		"usage-totals":  "/usage?totals=1",
		"snippets":      "/snippets",
		"notifications": "/notifications",
	} {
		b.Run(name, func(b *testing.B) {
			br.t = b
			for b.Loop() {
				if p := br.get(path); p.status != http.StatusOK {
					b.Fatalf("%s: %d %s", path, p.status, p.body)
				}
			}
		})
	}
}

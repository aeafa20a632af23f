package backend

import (
	"context"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
)

type benchMount struct {
	b    *backend
	s    logical.Storage
	keys []string
	sums [][32]byte
}

var benchMounts = map[benchKind]*benchMount{}

type benchKind struct {
	n     int
	quota bool
}

// benchPopulation builds a mount holding n keys of tenant acme. Records go
// straight to storage and cache (the issue path's own cost is not what
// these benchmarks measure), and are reused across sub-benchmarks.
func benchPopulation(tb testing.TB, n int) *benchMount { return benchPopulationOf(tb, benchKind{n: n}) }

// benchQuota is the quota of the keys of a quota population: one no
// benchmark run exhausts.
var benchQuota = &contract.QuotaRule{Limit: contract.MaxQuota, Period: contract.PeriodMonth}

func benchPopulationOf(tb testing.TB, kind benchKind) *benchMount {
	if m, ok := benchMounts[kind]; ok {
		return m
	}
	n := kind.n
	b, s := newTestBackend(tb)
	setupAcme(tb, b, s)
	ctx := context.Background()
	h, err := b.getHasher(ctx, s, true)
	if err != nil {
		tb.Fatal(err)
	}
	m := &benchMount{b: b, s: s.Storage, keys: make([]string, n), sums: make([][32]byte, n)}
	created := time.Now().UTC()
	for i := range n {
		key, err := keyformat.Generate("ak", "live")
		if err != nil {
			tb.Fatal(err)
		}
		sum := h.Sum(key)
		e := &keyEntry{
			KeyID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), Tenant: "acme", Role: "web",
			Kind: kindDynamic, Hash: hex.EncodeToString(sum[:]), Environment: "live",
			Scopes: []string{"read", "write"}, Metadata: map[string]string{"team": "bench"},
			CreatedAt: created, ExpiresAt: created.Add(24 * time.Hour),
			locator: b.cache.locate(key),
		}
		if kind.quota {
			e.Quota = benchQuota
		}
		if err := b.putKeyRecord(ctx, m.s, e); err != nil {
			tb.Fatal(err)
		}
		m.keys[i], m.sums[i] = key, sum
	}
	// A gateway's key arrives in a request buffer the CPU just wrote. Keys
	// laid out back to back and read in order behave like that; a million
	// separately allocated strings would add a DRAM miss per verify that no
	// server pays.
	var all strings.Builder
	for _, k := range m.keys {
		all.WriteString(k)
	}
	buf, off := all.String(), 0
	for i, k := range m.keys {
		m.keys[i], off = buf[off:off+len(k)], off+len(k)
	}
	benchMounts[kind] = m
	return m
}

// BenchmarkVerify measures the verify decision in process: warm (key and
// tenant cached: no storage round trip) and cold (the key's record read from
// storage, as after a restart or an Invalidate), at 10k and 1M keys.
func BenchmarkVerify(bb *testing.B) {
	ctx := context.Background()
	scopes := []string{"read"}
	// mount builds (once) and warms the population a sub-benchmark runs
	// on, so a filtered run (-bench 'warm/10k') builds only what it needs.
	mount := func(b *testing.B, kind benchKind) *benchMount {
		m := benchPopulationOf(b, kind)
		// Warm the tenant entry, and with a quota every key's counters.
		warmed := m.keys[:1]
		if kind.quota {
			warmed = m.keys
		}
		for _, k := range warmed {
			if _, err := m.b.verify(ctx, m.s, &contract.Request{APIKey: k}, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		return m
	}
	for _, n := range []int{10_000, 1_000_000} {
		// warm verifies every key of m in turn, each answer VALID (and
		// under a quota when quota).
		warm := func(b *testing.B, quota bool) {
			m := mount(b, benchKind{n: n, quota: quota})
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				in := contract.Request{APIKey: m.keys[i%n], RequiredScopes: scopes}
				out, err := m.b.verify(ctx, m.s, &in, now)
				if err != nil || out.Code != contract.CodeValid || quota != (out.Quota.Limit != 0) {
					b.Fatalf("%v %s %+v", err, out.Code, out.Quota)
				}
			}
		}
		bb.Run(fmt.Sprintf("warm/%dk", n/1000), func(b *testing.B) { warm(b, false) })
		// The gradient between the sizes: the same 1M-key index, with only
		// some of its keys verified (their slots fit the CPU caches).
		for _, w := range []int{10_000, 100_000} {
			if w >= n {
				continue
			}
			bb.Run(fmt.Sprintf("warm/%dk-of-%dk", w/1000, n/1000), func(b *testing.B) {
				m := mount(b, benchKind{n: n})
				now := time.Now()
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					in := contract.Request{APIKey: m.keys[i%w], RequiredScopes: scopes}
					if out, err := m.b.verify(ctx, m.s, &in, now); err != nil || out.Code != contract.CodeValid {
						b.Fatalf("%v %s", err, out.Code)
					}
				}
			})
		}
		if n == 10_000 {
			// The same with a quota on every key: one compare-and-swap on
			// the key's counter, found through the cached key.
			bb.Run(fmt.Sprintf("warm-quota/%dk", n/1000), func(b *testing.B) { warm(b, true) })
		}
		bb.Run(fmt.Sprintf("cold/%dk", n/1000), func(b *testing.B) {
			m := mount(b, benchKind{n: n})
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Dropping the entry is part of the timed work (~tens of ns).
				m.b.cache.deleteKey(m.sums[i%n])
				in := contract.Request{APIKey: m.keys[i%n], RequiredScopes: scopes}
				out, err := m.b.verify(ctx, m.s, &in, now)
				if err != nil || out.Code != contract.CodeValid {
					b.Fatalf("%v %s", err, out.Code)
				}
			}
		})
	}
}

// BenchmarkVerifyRequest is the whole in-process request path of verify
// (framework routing, field parsing, response map), for reference.
func BenchmarkVerifyRequest(b *testing.B) {
	m := benchPopulation(b, 10_000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := m.b.HandleRequest(ctx, &logical.Request{
			Operation: logical.UpdateOperation, Path: "verify", Storage: m.s,
			Data: map[string]interface{}{"api_key": m.keys[i%len(m.keys)]},
		})
		if err != nil || resp.Data["code"] != contract.CodeValid {
			b.Fatalf("%v %v", err, resp)
		}
	}
}

// BenchmarkVerifyMalformed is the cost of rejecting garbage and typos.
func BenchmarkVerifyMalformed(b *testing.B) {
	m := benchPopulation(b, 10_000)
	bad := badChecksum(m.keys[0])
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, _ := m.b.verify(ctx, m.s, &contract.Request{APIKey: bad}, time.Now())
		if out.Code != contract.CodeMalformed {
			b.Fatal(out.Code)
		}
	}
}

// BenchmarkVerifyHitVsMiss compares a warm hit with a miss (a well-formed,
// never-issued key, as in a brute-force attempt) once the mount's hashes
// are known: the two should cost about the same.
func BenchmarkVerifyHitVsMiss(bb *testing.B) {
	m := benchPopulation(bb, 10_000)
	ctx := context.Background()
	misses := make([]string, 1000)
	for i := range misses {
		misses[i] = regenerate(bb, m.keys[0])
	}
	m.b.verify(ctx, m.s, &contract.Request{APIKey: misses[0]}, time.Now())
	waitKnownLoaded(bb, m.b)
	for name, keys := range map[string][]string{"hit": m.keys, "miss": misses} {
		bb.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for i := 0; i < b.N; i++ {
				out, err := m.b.verify(ctx, m.s, &contract.Request{APIKey: keys[i%len(keys)]}, now)
				if err != nil || (name == "hit") != (out.Code == contract.CodeValid) {
					b.Fatalf("%v %s", err, out.Code)
				}
			}
		})
	}
}

// BenchmarkPluginMemoryPerKey reports what one key costs the plugin's heap
// when cached for verify (record, parsed form, known hash), at 1M keys: the
// cache is filled by verifying every key once, measured against the same
// mount with the cache dropped. Storage (Vault's side) is not counted.
func BenchmarkPluginMemoryPerKey(b *testing.B) {
	const n = 1_000_000
	m := benchPopulation(b, n)
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	m.b.cache.reset()
	m.b.known.reset()
	without := heap()
	for _, k := range m.keys {
		if out, err := m.b.verify(ctx, m.s, &contract.Request{APIKey: k}, time.Now()); err != nil || out.Code != contract.CodeValid {
			b.Fatalf("%v %s", err, out.Code)
		}
	}
	waitKnownLoaded(b, m.b)
	with := heap()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.b.verify(ctx, m.s, &contract.Request{APIKey: m.keys[i%n]}, time.Now())
	}
	b.ReportMetric(float64(with-without)/n, "heap-B/key")
}

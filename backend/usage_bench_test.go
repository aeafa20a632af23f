package backend

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// BenchmarkVerifyRecorded is BenchmarkVerify's warm case plus the usage
// hook the verify handler runs after the decision (counters, last use,
// latency histogram, anomaly windows): the difference between the two is
// what monitoring costs verify.
func BenchmarkVerifyRecorded(bb *testing.B) {
	ctx := context.Background()
	scopes := []string{"read"}
	m := benchPopulation(bb, 10_000)
	for _, mode := range []string{"decision", "decision+hook"} {
		bb.Run(fmt.Sprintf("warm/10k/%s", mode), func(b *testing.B) {
			hook := mode != "decision"
			// Every key seen once, as on a node that has been up a while.
			for _, k := range m.keys {
				in := contract.Request{APIKey: k}
				out, _ := m.b.verify(ctx, m.s, &in, time.Now())
				m.b.recordVerify(&in, out, time.Now())
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				in := contract.Request{APIKey: m.keys[i%len(m.keys)], RequiredScopes: scopes}
				out, err := m.b.verify(ctx, m.s, &in, start)
				if err != nil || out.Code != contract.CodeValid {
					b.Fatalf("%v %s", err, out.Code)
				}
				if hook {
					m.b.recordVerify(&in, out, start)
				}
			}
		})
	}
	// Misses: failures go through the tenant failure window too.
	miss := regenerate(bb, m.keys[0])
	bb.Run("miss/decision+hook", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			start := time.Now()
			in := contract.Request{APIKey: miss}
			out, _ := m.b.verify(ctx, m.s, &in, start)
			m.b.recordVerify(&in, out, start)
		}
	})
}

// BenchmarkVerifyRecordedParallel runs the hooked verify on every core, to
// show the counters do not contend.
func BenchmarkVerifyRecordedParallel(b *testing.B) {
	ctx := context.Background()
	m := benchPopulation(b, 10_000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			start := time.Now()
			in := contract.Request{APIKey: m.keys[i%len(m.keys)]}
			out, _ := m.b.verify(ctx, m.s, &in, start)
			m.b.recordVerify(&in, out, start)
			i++
		}
	})
}

// BenchmarkRecordVerifyHook is the hook alone, over 10k keys already seen
// (so every call misses the CPU cache the way a real mix of keys does).
func BenchmarkRecordVerifyHook(b *testing.B) {
	benchHook(b, nil, contract.CodeValid)
}

// BenchmarkRecordVerifyHookRefused is the hook alone for refusals about
// found keys (INSUFFICIENT_SCOPE here), over 10k keys already seen: the
// tenant's code counter and the key's refusal counter.
func BenchmarkRecordVerifyHookRefused(b *testing.B) {
	benchHook(b, []string{"nope"}, contract.CodeInsufficientScope)
}

// benchHook runs the hook on the answers verify gave for each of 10k keys
// with these required scopes, which must all be code.
func benchHook(b *testing.B, scopes []string, code string) {
	ctx := context.Background()
	m := benchPopulation(b, 10_000)
	outs := make([]verifyOutcome, len(m.keys))
	ins := make([]contract.Request, len(m.keys))
	for i, k := range m.keys {
		ins[i] = contract.Request{APIKey: k, RequiredScopes: scopes}
		outs[i], _ = m.b.verify(ctx, m.s, &ins[i], time.Now())
		if outs[i].Code != code || outs[i].Key == nil {
			b.Fatalf("setup: %s, want %s", outs[i].Code, code)
		}
		m.b.recordVerify(&ins[i], outs[i], time.Now())
	}
	start := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(m.keys)
		m.b.recordVerify(&ins[j], outs[j], start)
	}
}

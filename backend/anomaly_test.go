package backend

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func TestRollingBaselineAndOneFirePerWindow(t *testing.T) {
	var r rolling
	// Three quiet windows of 10 build a baseline of 10.
	for w := int64(100); w < 103; w++ {
		for range 10 {
			r.add(w)
		}
	}
	if _, ok := r.baseline(); ok {
		t.Fatal("a baseline needs windows that have ended; the third is still open")
	}
	r.add(103)
	base, ok := r.baseline()
	if !ok || base < 5 || base > 10 {
		t.Fatalf("baseline %d %v after windows of 10", base, ok)
	}
	fires := 0
	for range 200 {
		if n := r.add(103); n >= 10*base && r.fire(103) {
			fires++
		}
	}
	if fires != 1 {
		t.Fatalf("%d fires in one window, want 1", fires)
	}
	// The next window may fire again.
	for range 200 {
		if n := r.add(104); n >= 10*base && r.fire(104) {
			fires++
		}
	}
	if fires != 2 {
		t.Fatalf("%d fires after a second window, want 2", fires)
	}
	// A long silence forgets the baseline's size.
	r.add(1000)
	if b, _ := r.baseline(); b > 1 {
		t.Fatalf("baseline %d after 900 empty windows", b)
	}
}

func TestRollingIsSafeUnderConcurrency(t *testing.T) {
	var r rolling
	var wg sync.WaitGroup
	fires := make(chan struct{}, 100)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				if r.add(7) >= 500 && r.fire(7) {
					fires <- struct{}{}
				}
				_ = g + i
			}
		}()
	}
	wg.Wait()
	if len(fires) != 1 || r.n.Load() != 8000 {
		t.Fatalf("%d fires, count %d", len(fires), r.n.Load())
	}
}

func TestIPWindowFiresAtThresholdOnly(t *testing.T) {
	w := ipWindow{counts: map[netip.Addr]int{}}
	ip := netip.MustParseAddr("::ffff:192.0.2.7") // the same client as 192.0.2.7
	var fired []int
	for i := range 10 {
		a := ip
		if i%2 == 0 {
			a = netip.MustParseAddr("192.0.2.7")
		}
		if n, fire := w.add(a, 1, 5); fire {
			fired = append(fired, n)
		}
	}
	if len(fired) != 1 || fired[0] != 5 {
		t.Fatalf("fired at %v, want once at 5", fired)
	}
	if _, fire := w.add(ip, 2, 1); !fire {
		t.Fatal("a new window starts from zero")
	}
}

func TestFailureBurstRaisesOneAnomalyPerTenantAndIP(t *testing.T) {
	b, s := newTestBackend(t)
	key, _, _ := setupAcme(t, b, s)
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{
		"tenant_failure_threshold": 10, "ip_failure_threshold": 4, "anomaly_window": "1h",
	})
	// Rate limiting is no attack: it never counts.
	b.recordVerify(&contract.Request{APIKey: key, Tenant: "acme"}, verifyOutcome{Code: contract.CodeRateLimited}, time.Now())
	for i := range 30 {
		verifyReq(t, b, s, map[string]interface{}{"api_key": regenerate(t, key), "tenant": "acme", "client_ip": "198.51.100.9"})
		_ = i
	}
	testvault.WaitFor(t, 5*time.Second, "the anomalies to be reported", func() bool {
		return b.anomaliesInFlight.Load() == 0 && metricValue(t, b, s, "apikeys_verify_anomalies_total", map[string]string{"kind": anomalyIPFailures}) >= 1
	})
	if n := metricValue(t, b, s, "apikeys_verify_anomalies_total", map[string]string{"tenant": "acme", "kind": anomalyTenantFailures}); n != 1 {
		t.Fatalf("%v tenant-failures anomalies for 30 failures in one window, want 1", n)
	}
	if n := metricValue(t, b, s, "apikeys_verify_anomalies_total", map[string]string{"kind": anomalyIPFailures}); n != 1 {
		t.Fatalf("%v ip-failures anomalies, want 1", n)
	}
	if u := b.do(t, s, logical.ReadOperation, "tenants/acme/usage", nil).Data; u["anomalies"] != uint64(2) {
		t.Fatalf("usage anomalies %v", u["anomalies"])
	}
}

func TestKeySpikeAgainstItsOwnBaseline(t *testing.T) {
	b, s := newTestBackend(t)
	key, id, _ := setupAcme(t, b, s)
	b.do(t, s, logical.UpdateOperation, "config/monitoring", map[string]interface{}{"key_spike_factor": 5, "key_spike_minimum": 20, "anomaly_window": "1h"})
	out, err := b.verify(t.Context(), s, &contract.Request{APIKey: key}, time.Now())
	if err != nil || out.Code != contract.CodeValid {
		t.Fatal(out.Code, err)
	}
	// Give the key a history of 4 quiet windows (about 4 verifies each),
	// as if the last hours had passed.
	k := b.usage.key("acme", id, "web", &out.Key.hash)
	w := time.Now().UnixNano() / int64(time.Hour)
	for past := w - 4; past < w; past++ {
		for range 4 {
			k.spike.add(past)
		}
	}
	for range 30 {
		b.recordVerify(&contract.Request{APIKey: key}, out, time.Now())
	}
	testvault.WaitFor(t, 5*time.Second, "a key-spike anomaly for 30 verifies against a baseline of 4", func() error {
		if n := metricValue(t, b, s, "apikeys_verify_anomalies_total", map[string]string{"kind": anomalyKeySpike}); n != 1 {
			return fmt.Errorf("%v key-spike anomalies", n)
		}
		return nil
	})
}

package backend

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-kms-wrapping/entropy/v2"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// countingView counts the replication-state questions that reach "Vault".
type countingView struct {
	logical.StaticSystemView
	calls atomic.Int32
}

func (v *countingView) ReplicationState() consts.ReplicationState {
	v.calls.Add(1)
	return v.StaticSystemView.ReplicationState()
}

type sourcingView struct{ *countingView }

func (sourcingView) GetRandom(n int) ([]byte, error) { return make([]byte, n), nil }

// TestReplicationStateAskedOncePerTTL checks that requests stop costing a
// call back into Vault each, and that a change of state is seen once the
// cached answer expires.
func TestReplicationStateAskedOncePerTTL(t *testing.T) {
	sys := &countingView{StaticSystemView: logical.StaticSystemView{DefaultLeaseTTLVal: 3600e9, MaxLeaseTTLVal: 7200e9}}
	conf := logical.TestBackendConfig()
	conf.System = sys
	conf.StorageView = &logical.InmemStorage{}
	lb, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	b := lb.(*backend)
	for range 50 {
		b.do(t, conf.StorageView, logical.ReadOperation, "info", nil)
	}
	if n := sys.calls.Load(); n != 1 {
		t.Fatalf("50 requests asked Vault for the replication state %d times, want 1", n)
	}
	if !b.WriteSafeReplicationState() {
		t.Fatal("a node with no replication is write-safe")
	}

	// This node becomes a performance standby: seen after the TTL.
	sys.ReplicationStateVal = consts.ReplicationPerformanceStandby
	view := b.System().(*stateCachingView)
	view.until.Store(0) // the TTL ran out
	if b.WriteSafeReplicationState() {
		t.Fatal("a performance standby still taken for write-safe after the TTL")
	}
	if n := sys.calls.Load(); n != 2 {
		t.Fatalf("%d calls after expiry, want 2", n)
	}
}

// TestReplicationStateCacheKeepsEntropySource checks that Vault's optional
// entropy source stays visible through the wrapper, and is not invented.
func TestReplicationStateCacheKeepsEntropySource(t *testing.T) {
	plain := &countingView{}
	if _, ok := cacheReplicationState(plain).(entropy.Sourcer); ok {
		t.Fatal("wrapper offers an entropy source Vault did not")
	}
	w := cacheReplicationState(sourcingView{plain})
	src, ok := w.(entropy.Sourcer)
	if !ok {
		t.Fatal("wrapper hides Vault's entropy source")
	}
	if b, err := src.GetRandom(4); err != nil || len(b) != 4 {
		t.Fatalf("GetRandom: %v %d", err, len(b))
	}
	w.ReplicationState()
	w.ReplicationState()
	if n := plain.calls.Load(); n != 1 {
		t.Fatalf("%d calls through the sourcing wrapper, want 1", n)
	}
	if cacheReplicationState(nil) != nil {
		t.Fatal("nil view wrapped")
	}
}

package backend

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-kms-wrapping/entropy/v2"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// replicationStateTTL is how long the plugin reuses Vault's answer to
// "what is this node's replication state".
const replicationStateTTL = time.Second

// stateCachingView is Vault's system view with ReplicationState answered
// from memory for up to replicationStateTTL.
//
// framework.Backend.HandleRequest asks for the replication state before
// every request to a path with Operations, to honour per-operation
// forwarding flags: every write of this plugin but verify sets
// ForwardPerformanceStandby (16 PathOperations, and create, update and
// delete of crudOperations for the tenant, role and static key paths), so a
// performance standby forwards them to the active node. For an external
// plugin that question is a gRPC call back into Vault: ~40 µs of CPU per
// request across both processes, about an eighth of a verify's whole cost
// (docs/performance.md). The state changes only when the node's
// replication role changes (Vault Enterprise: performance standby, DR or
// performance secondary). For at most a second after such a change both
// that forwarding decision and the plugin's own WriteSafeReplicationState
// checks (rotation start, tidy, monitoring start, usage flush, edge feed
// compaction) may see the old state; a write refused as read-only in that
// second fails and is retried like any failed write.
type stateCachingView struct {
	logical.SystemView
	// start gives the cache a monotonic clock: a wall clock stepped back
	// would keep a stale state for as long as it was stepped.
	start time.Time
	state atomic.Uint32
	until atomic.Int64 // nanoseconds since start; 0 before the first call
}

func (v *stateCachingView) ReplicationState() consts.ReplicationState {
	now := int64(time.Since(v.start))
	if now < v.until.Load() {
		return consts.ReplicationState(v.state.Load())
	}
	s := v.SystemView.ReplicationState()
	v.state.Store(uint32(s))
	v.until.Store(now + int64(replicationStateTTL))
	return s
}

// stateCachingSourcerView keeps the optional entropy.Sourcer of Vault's view
// (Enterprise entropy augmentation), which framework.Backend looks for.
type stateCachingSourcerView struct {
	*stateCachingView
	entropy.Sourcer
}

// cacheReplicationState wraps a system view; nil stays nil.
func cacheReplicationState(sys logical.SystemView) logical.SystemView {
	if sys == nil {
		return nil
	}
	v := &stateCachingView{SystemView: sys, start: time.Now()}
	if src, ok := sys.(entropy.Sourcer); ok {
		return stateCachingSourcerView{v, src}
	}
	return v
}

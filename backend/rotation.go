package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/queue"
)

const (
	defaultRotationTick = time.Second
	minRetryBackoff     = 5 * time.Second
	maxRetryBackoff     = 5 * time.Minute
)

// rotationEngine rotates static keys when they are due and removes
// rotated-out keys when their grace ends, the database engine's way: a
// priority queue keyed by tenant/name with the due time as priority, and a
// short ticker. It runs only where storage is writable.
type rotationEngine struct {
	mu       sync.Mutex
	q        *queue.PriorityQueue
	failures map[string]int
	cancel   context.CancelFunc
	done     chan struct{}
	tick     time.Duration
	// startRetry is the first wait before initialize tries again.
	startRetry time.Duration
}

func newRotationEngine() *rotationEngine {
	return &rotationEngine{q: queue.New(), failures: map[string]int{}, tick: defaultRotationTick, startRetry: minRetryBackoff}
}

func queueKey(tenant, name string) string { return tenant + "/" + name }

// schedule (re)places a static key in the queue at its due time. It is a
// no-op on nodes where the engine does not run.
func (r *rotationEngine) schedule(e *staticKeyEntry) {
	r.scheduleAt(queueKey(e.Tenant, e.Name), e.dueAt())
}

func (r *rotationEngine) scheduleAt(key string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel == nil {
		return
	}
	_, _ = r.q.PopByKey(key)
	_ = r.q.Push(&queue.Item{Key: key, Priority: at.UnixMilli()})
}

func (r *rotationEngine) remove(tenant, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.q.PopByKey(queueKey(tenant, name))
	delete(r.failures, queueKey(tenant, name))
}

// popDue returns the key of the earliest item if it is due.
func (r *rotationEngine) popDue(now time.Time) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	item, err := r.q.Pop()
	if err != nil {
		return "", false
	}
	if item.Priority > now.UnixMilli() {
		_ = r.q.Push(item)
		return "", false
	}
	return item.Key, true
}

func (r *rotationEngine) stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel = nil
	r.q = queue.New()
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// startRotations is the rotation half of InitializeFunc (initialize). Vault calls it once per
// backend instance on every node that loads the mount; where storage is not
// writable it returns at once. On the active node it finishes or undoes
// rotations a crash interrupted, fills the queue from storage and starts
// the ticker. When storage fails on the way it returns the error (Vault
// logs it) and keeps trying in the background, backing off up to
// maxRetryBackoff, until it succeeds or the backend is cleaned up: Vault
// does not call Initialize again for this instance.
func (b *backend) startRotations(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.WriteSafeReplicationState() {
		b.Logger().Info("storage is not writable here: static key rotation runs elsewhere")
		return nil
	}
	s := req.Storage
	r := b.rotations
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.mu.Lock()
	r.cancel, r.done = cancel, done
	r.mu.Unlock()
	err := b.prepareRotations(ctx, s)
	if err == nil {
		go b.runRotations(runCtx, s, done)
		return nil
	}
	go func() {
		wait := r.startRetry
		for {
			select {
			case <-runCtx.Done():
				close(done)
				return
			case <-time.After(wait):
			}
			err := b.prepareRotations(runCtx, s)
			if err == nil {
				b.Logger().Info("static key rotation started after earlier failures")
				b.runRotations(runCtx, s, done)
				return
			}
			wait = min(2*wait, maxRetryBackoff)
			b.Logger().Warn("static key rotation still not started; will retry", "in", wait, "error", err)
		}
	}()
	return err
}

// prepareRotations recovers interrupted rotations and fills the queue.
func (b *backend) prepareRotations(ctx context.Context, s logical.Storage) error {
	if err := b.recoverRotations(ctx, s); err != nil {
		return err
	}
	if err := b.loadRotationQueue(ctx, s); err != nil {
		return fmt.Errorf("load the rotation queue: %w", err)
	}
	return nil
}

func (b *backend) loadRotationQueue(ctx context.Context, s logical.Storage) error {
	tenants, err := s.List(ctx, staticPrefix)
	if err != nil {
		return err
	}
	n := 0
	for _, t := range tenants {
		t = strings.TrimSuffix(t, "/")
		names, err := s.List(ctx, staticKeyPrefix(t))
		if err != nil {
			return err
		}
		for _, name := range names {
			e, err := readStaticKey(ctx, s, t, name)
			if err != nil {
				return err
			}
			if e != nil {
				b.rotations.schedule(e)
				n++
			}
		}
	}
	b.Logger().Info("static key rotation started", "static_keys", n)
	return nil
}

func (b *backend) runRotations(ctx context.Context, s logical.Storage, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(b.rotations.tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for ctx.Err() == nil {
			key, ok := b.rotations.popDue(time.Now())
			if !ok {
				break
			}
			b.processDue(ctx, s, key)
		}
	}
}

// processDue handles one due static key and puts it back in the queue at
// its next due time, or after a backoff when something failed.
func (b *backend) processDue(ctx context.Context, s logical.Storage, key string) {
	tenant, name, _ := strings.Cut(key, "/")
	r := b.rotations
	r.mu.Lock()
	retry := r.failures[key] > 0
	r.mu.Unlock()
	if retry {
		// Clear what earlier failed attempts may have left before trying again.
		if err := b.recoverRotations(ctx, s); err != nil {
			b.Logger().Warn("recovering interrupted rotations failed", "error", err)
		}
	}
	lock := b.tenantLock(tenant)
	lock.Lock()
	e, err := b.rotateIfDue(ctx, s, tenant, name, time.Now())
	lock.Unlock()

	if err != nil {
		r.mu.Lock()
		r.failures[key]++
		n := r.failures[key]
		r.mu.Unlock()
		backoff := min(minRetryBackoff<<min(n-1, 10), maxRetryBackoff)
		b.Logger().Error("static key rotation failed; will retry", "tenant", tenant, "static_key", name, "attempt", n, "retry_in", backoff, "error", err)
		b.rotationFailed(ctx, s, tenant, name, n, backoff, err)
		r.scheduleAt(key, time.Now().Add(backoff))
		return
	}
	r.mu.Lock()
	delete(r.failures, key)
	r.mu.Unlock()
	if e != nil {
		r.schedule(e)
	}
}

// rotateIfDue does what is due for one static key: drop the previous key
// when its grace has ended, rotate when the rotation time has come (inside
// the rotation window, for schedules). It returns nil when the key is gone.
func (b *backend) rotateIfDue(ctx context.Context, s logical.Storage, tenant, name string, now time.Time) (*staticKeyEntry, error) {
	e, err := readStaticKey(ctx, s, tenant, name)
	if err != nil || e == nil {
		return nil, err
	}
	if err := b.expirePrevious(ctx, s, e, now); err != nil {
		return nil, err
	}
	if now.Before(e.NextRotation) {
		return e, nil
	}
	if e.RotationSchedule != "" && e.RotationWindow > 0 && now.After(e.NextRotation.Add(e.RotationWindow)) {
		// Missed the window (the node was down): wait for the next firing.
		b.Logger().Warn("static key rotation window missed; waiting for the next scheduled time",
			"tenant", tenant, "static_key", name, "missed", e.NextRotation)
		e.NextRotation = e.nextRotation(now)
		return e, writeStaticKey(ctx, s, e)
	}
	from := e.NextRotation
	if e.RotationSchedule != "" || now.Sub(from) >= e.RotationPeriod {
		// A schedule fires by the clock anyway; a period missed entirely
		// (node down) restarts from now rather than rotating in a burst.
		from = now
	}
	if err := b.rotateStaticKeyWithGrace(ctx, s, e, now, e.GracePeriod, from); err != nil {
		return nil, err
	}
	b.Logger().Info("static key rotated", "tenant", tenant, "static_key", name, "key_id", e.CurrentID)
	return e, nil
}

// mapToStruct decodes a WAL entry's data (JSON-decoded into maps) into out.
func mapToStruct(in interface{}, out interface{}) error {
	if in == nil {
		return errors.New("empty WAL data")
	}
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, out)
}

package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

// Storage layout. Each delivery (one event to one target) is one entry, so
// retry state is per target and one slow receiver never holds back another.
const (
	OutboxPrefix = "notifications/outbox/"
	FailedPrefix = "notifications/failed/"
)

// Delivery is one event on its way to one target. Body is the exact JSON
// that is signed and sent on every attempt.
type Delivery struct {
	// ID is EventID + "." + Target: unique per target, and the storage key.
	ID        string          `json:"id"`
	EventID   string          `json:"event_id"`
	EventType string          `json:"event_type"`
	Tenant    string          `json:"tenant,omitempty"`
	Target    string          `json:"target"`
	Body      json.RawMessage `json:"body"`
	Attempts  int             `json:"attempts"`
	NextAt    time.Time       `json:"next_at"`
	LastError string          `json:"last_error,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	FailedAt  time.Time       `json:"failed_at,omitempty"`
}

// NewDelivery addresses an event to a target.
func NewDelivery(ev *Event, target string, now time.Time) (*Delivery, error) {
	body, err := ev.Body()
	if err != nil {
		return nil, err
	}
	return &Delivery{
		ID: ev.ID + "." + target, EventID: ev.ID, EventType: ev.Type, Tenant: ev.Tenant,
		Target: target, Body: body, NextAt: now, CreatedAt: now,
	}, nil
}

// Policy bounds the retries of a delivery.
type Policy struct {
	// MaxAttempts is how many attempts a delivery gets before it is
	// dead-lettered.
	MaxAttempts int
	// BaseDelay is the wait after the first failure; it doubles with each
	// failure up to MaxDelay, and each wait is jittered.
	BaseDelay time.Duration
	MaxDelay  time.Duration
	// Timeout bounds one attempt, so a receiver that hangs costs a bounded
	// share of the dispatcher and nothing of any request.
	Timeout time.Duration
}

// DefaultPolicy makes 12 attempts (2s doubling to a 10 minute cap) before
// dead-lettering: eleven waits of 2 222 s nominal, 19-37 minutes jittered.
func DefaultPolicy() Policy {
	return Policy{MaxAttempts: 12, BaseDelay: 2 * time.Second, MaxDelay: 10 * time.Minute, Timeout: 10 * time.Second}
}

// Backoff is the wait before attempt n+1 after n failed attempts: the
// doubling delay with "equal jitter" (a random point in its upper half), so
// deliveries that failed together do not retry together, yet never retry
// sooner than half the nominal delay.
func Backoff(p Policy, failures int, rnd func() float64) time.Duration {
	d := p.BaseDelay
	for i := 1; i < failures && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}

// Observer receives delivery outcomes (for metrics). Nil funcs are skipped.
type Observer struct {
	Attempted    func(target string, ok bool)
	DeadLettered func(target string)
}

// Dispatcher drains the outbox. It runs where storage is writable (the
// active node); elsewhere deliveries wait in storage until it runs.
type Dispatcher struct {
	logger hclog.Logger
	client *http.Client
	// public serves targets marked PublicOnly (guard.go).
	public   *http.Client
	lookup   func(ctx context.Context, name string) (*Target, error)
	observer Observer
	policy   atomic.Pointer[Policy]
	// now and rnd are replaceable by tests.
	now func() time.Time
	rnd func() float64

	mu       sync.Mutex
	storage  logical.Storage
	q        *pending
	inflight map[string]bool
	cancel   context.CancelFunc
	done     chan struct{}
	wake     chan struct{}
	wg       sync.WaitGroup
}

// NewDispatcher makes a stopped dispatcher. lookup returns a target by name,
// nil when it no longer exists.
func NewDispatcher(lookup func(ctx context.Context, name string) (*Target, error), obs Observer) *Dispatcher {
	tr := cleanhttp.DefaultPooledTransport()
	d := &Dispatcher{
		logger: hclog.NewNullLogger(),
		client: &http.Client{
			Transport: tr,
			// A receiver's redirect is not followed: it could point the
			// signed delivery at a host the operator never configured.
			CheckRedirect: noRedirects,
		},
		public:   newPublicOnlyClient(),
		lookup:   lookup,
		observer: obs,
		now:      time.Now,
		rnd:      rand.Float64,
		q:        newPending(),
		inflight: map[string]bool{},
		wake:     make(chan struct{}, 1),
	}
	p := DefaultPolicy()
	d.policy.Store(&p)
	return d
}

// SetPolicy changes the retry policy; it applies from the next attempt.
func (d *Dispatcher) SetPolicy(p Policy) { d.policy.Store(&p) }

// Policy returns the retry policy in force.
func (d *Dispatcher) Policy() Policy { return *d.policy.Load() }

// Enqueue stores a delivery in the outbox and, when the dispatcher runs,
// queues it. The write is what makes the delivery survive a restart, so an
// error here must fail whatever raised the event, or be logged by it.
func (d *Dispatcher) Enqueue(ctx context.Context, s logical.Storage, del *Delivery) error {
	if err := put(ctx, s, OutboxPrefix, del); err != nil {
		return err
	}
	d.push(del)
	return nil
}

func put(ctx context.Context, s logical.Storage, prefix string, del *Delivery) error {
	entry, err := logical.StorageEntryJSON(prefix+del.ID, del)
	if err != nil {
		return fmt.Errorf("encode delivery %s: %w", del.ID, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("write delivery %s: %w", del.ID, err)
	}
	return nil
}

// Read returns a stored delivery under prefix (OutboxPrefix or
// FailedPrefix), nil when missing.
func Read(ctx context.Context, s logical.Storage, prefix, id string) (*Delivery, error) {
	entry, err := s.Get(ctx, prefix+id)
	if err != nil {
		return nil, fmt.Errorf("read delivery %s: %w", id, err)
	}
	if entry == nil {
		return nil, nil
	}
	del := &Delivery{}
	if err := entry.DecodeJSON(del); err != nil {
		return nil, fmt.Errorf("decode delivery %s: %w", id, err)
	}
	return del, nil
}

// Requeue moves a dead letter back into the outbox with a fresh attempt
// budget. It returns false when there is no such dead letter.
func (d *Dispatcher) Requeue(ctx context.Context, s logical.Storage, id string) (bool, error) {
	del, err := Read(ctx, s, FailedPrefix, id)
	if err != nil || del == nil {
		return false, err
	}
	del.Attempts, del.FailedAt, del.NextAt = 0, time.Time{}, d.now()
	// Outbox first: a crash in between leaves the delivery in both lists,
	// which costs a duplicate with the same id, never a loss.
	if err := d.Enqueue(ctx, s, del); err != nil {
		return false, err
	}
	if err := s.Delete(ctx, FailedPrefix+id); err != nil {
		return false, fmt.Errorf("delete dead letter %s: %w", id, err)
	}
	return true, nil
}

func (d *Dispatcher) push(del *Delivery) {
	d.mu.Lock()
	running := d.cancel != nil
	if running {
		d.q.put(del)
	}
	d.mu.Unlock()
	if running {
		d.signal()
	}
}

func (d *Dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Running reports whether the dispatcher is started.
func (d *Dispatcher) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel != nil
}

// Depth is the number of deliveries waiting or in flight on this node.
func (d *Dispatcher) Depth() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.q.Len() + len(d.inflight)
}

// Start loads the outbox from storage and starts delivering. Deliveries
// keep their attempt counts and next times across restarts.
func (d *Dispatcher) Start(ctx context.Context, s logical.Storage, logger hclog.Logger) error {
	runCtx, cancel := context.WithCancel(context.Background())
	d.mu.Lock()
	if d.cancel != nil {
		d.mu.Unlock()
		cancel()
		return nil
	}
	done := make(chan struct{})
	d.storage, d.cancel, d.done, d.logger = s, cancel, done, logger
	d.q = newPending()
	d.mu.Unlock()
	// fail undoes the start. run never started, so done is closed here:
	// a Stop that came meanwhile waits on it.
	fail := func(err error) error {
		d.mu.Lock()
		if d.done == done {
			d.cancel, d.done = nil, nil
			d.q = newPending()
		}
		d.mu.Unlock()
		cancel()
		close(done)
		return err
	}

	ids, err := s.List(ctx, OutboxPrefix)
	if err != nil {
		return fail(fmt.Errorf("list outbox: %w", err))
	}
	for _, id := range ids {
		del, err := Read(ctx, s, OutboxPrefix, id)
		if err != nil {
			return fail(err)
		}
		if del == nil {
			continue
		}
		d.mu.Lock()
		// An Enqueue since Start may have queued it already, with newer state.
		if !d.q.has(del.ID) {
			d.q.put(del)
		}
		d.mu.Unlock()
	}
	if len(ids) > 0 {
		d.logger.Info("notification outbox loaded", "pending", len(ids))
	}
	go d.run(runCtx, done)
	return nil
}

// Stop ends delivery and waits for attempts in flight to give up. What is
// still pending stays in storage for the next Start.
func (d *Dispatcher) Stop() {
	d.mu.Lock()
	cancel, done := d.cancel, d.done
	d.cancel = nil
	d.q = newPending()
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (d *Dispatcher) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Hour
		if next, ok := d.dispatchDue(ctx); ok {
			wait = max(next.Sub(d.now()), 10*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			d.wg.Wait()
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

// dispatchDue starts every due delivery whose target has none in flight
// (one at a time per target, so a dead receiver is never hit in parallel).
// Deliveries go out in NextAt order, not event order: a failed one waits
// out its backoff while later events to the same target are sent, so
// receivers must not rely on order. It returns when the next one is due.
func (d *Dispatcher) dispatchDue(ctx context.Context) (time.Time, bool) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	var held []*Delivery
	var next time.Time
	found := false
	for d.q.Len() > 0 {
		del := d.q.peek()
		if del.NextAt.After(now) {
			next, found = del.NextAt, true
			break
		}
		d.q.pop()
		if d.inflight[del.Target] {
			// Retried when the target's delivery in flight ends (it wakes us).
			held = append(held, del)
			continue
		}
		d.inflight[del.Target] = true
		d.wg.Add(1)
		go d.deliver(ctx, del)
	}
	for _, del := range held {
		d.q.put(del)
	}
	return next, found
}

func (d *Dispatcher) deliver(ctx context.Context, del *Delivery) {
	defer func() {
		d.mu.Lock()
		delete(d.inflight, del.Target)
		d.mu.Unlock()
		d.signal()
		d.wg.Done()
	}()
	s := d.storageOf()
	t, err := d.lookup(ctx, del.Target)
	switch {
	case ctx.Err() != nil:
		return
	case err != nil:
		d.failed(ctx, s, del, fmt.Errorf("look up target: %w", err))
		return
	case t == nil:
		// A delivery taken out of the outbox with its target (a deleted
		// tenant's) is dropped, not dead-lettered for nobody to read.
		if stored, err := Read(ctx, s, OutboxPrefix, del.ID); err == nil && stored == nil {
			d.logger.Debug("notification dropped with its target", "delivery", del.ID)
			return
		}
		d.deadLetter(ctx, s, del, "target is no longer configured")
		return
	}
	err = d.post(ctx, t, del)
	if ctx.Err() != nil {
		// Stopping (step-down, seal, unmount): the attempt does not count and
		// the stored delivery is untouched, so the next active node sends it.
		return
	}
	if d.observer.Attempted != nil {
		d.observer.Attempted(del.Target, err == nil)
	}
	if r, ok := asRefused(err); ok {
		del.Attempts++
		d.deadLetter(ctx, s, del, r.Error())
		return
	}
	if err != nil {
		d.failed(ctx, s, del, err)
		return
	}
	if err := s.Delete(ctx, OutboxPrefix+del.ID); err != nil {
		// Delivered but still stored: it is sent again after a restart, with
		// the same id. At least once, never lost.
		d.logger.Warn("delivered notification could not be removed from the outbox", "delivery", del.ID, "error", err)
	}
	d.logger.Debug("notification delivered", "target", del.Target, "event", del.EventType, "id", del.EventID, "attempt", del.Attempts+1)
}

func (d *Dispatcher) storageOf() logical.Storage {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.storage
}

func (d *Dispatcher) failed(ctx context.Context, s logical.Storage, del *Delivery, cause error) {
	p := d.Policy()
	del.Attempts++
	del.LastError = cause.Error()
	if del.Attempts >= p.MaxAttempts {
		d.deadLetter(ctx, s, del, del.LastError)
		return
	}
	del.NextAt = d.now().Add(Backoff(p, del.Attempts, d.rnd))
	d.logger.Warn("notification delivery failed; will retry", "target", del.Target, "event", del.EventType,
		"id", del.EventID, "attempt", del.Attempts, "retry_at", del.NextAt.Format(time.RFC3339), "error", del.LastError)
	if err := put(ctx, s, OutboxPrefix, del); err != nil {
		// The stored copy keeps the older attempt count: after a restart
		// the delivery gets a few more attempts, nothing worse.
		d.logger.Warn("could not record a failed notification attempt", "delivery", del.ID, "error", err)
	}
	d.push(del)
}

func (d *Dispatcher) deadLetter(ctx context.Context, s logical.Storage, del *Delivery, reason string) {
	del.LastError = reason
	del.FailedAt = d.now().UTC()
	// Dead-letter list first: a crash in between leaves a duplicate, never a
	// delivery in neither list.
	if err := put(ctx, s, FailedPrefix, del); err != nil {
		d.logger.Error("could not dead-letter a notification; it stays in the outbox", "delivery", del.ID, "error", err)
		del.NextAt = d.now().Add(d.Policy().MaxDelay)
		d.push(del)
		return
	}
	if err := s.Delete(ctx, OutboxPrefix+del.ID); err != nil {
		d.logger.Warn("dead-lettered notification could not be removed from the outbox", "delivery", del.ID, "error", err)
	}
	d.logger.Error("notification dead-lettered", "target", del.Target, "event", del.EventType, "id", del.EventID,
		"attempts", del.Attempts, "error", reason)
	if d.observer.DeadLettered != nil {
		d.observer.DeadLettered(del.Target)
	}
}

// post makes one attempt. Its error never carries the URL: a URL may hold a
// receiver's access token, and the error is logged and stored.
func (d *Dispatcher) post(ctx context.Context, t *Target, del *Delivery) error {
	p := d.Policy()
	rctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, t.URL, bytes.NewReader(del.Body))
	if err != nil {
		return errors.New("cannot build a request for the target's URL")
	}
	client := d.client
	if t.PublicOnly {
		if req.URL.Scheme != "https" {
			return &RefusedError{Reason: "this target may only use https"}
		}
		client = d.public
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vault-plugin-secrets-apikeys")
	req.Header.Set(EventHeader, del.EventType)
	req.Header.Set(DeliveryHeader, del.EventID)
	req.Header.Set(IdempotencyHeader, del.EventID)
	req.Header.Set(AttemptHeader, strconv.Itoa(del.Attempts+1))
	req.Header.Set(SignatureHeader, Sign([]byte(t.Secret), d.now(), del.Body))
	resp, err := client.Do(req)
	if err != nil {
		if rctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			return fmt.Errorf("no answer within %s", p.Timeout)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	}
	return nil
}

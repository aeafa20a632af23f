package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

func TestSignVerifyRoundTripAndTampering(t *testing.T) {
	secret := []byte("s3cret-s3cret-s3cret")
	body := []byte(`{"id":"1","type":"key-issued"}`)
	now := time.Unix(1_700_000_000, 0)
	h := Sign(secret, now, body)
	if !strings.HasPrefix(h, "t=1700000000,v1=") {
		t.Fatalf("header %q", h)
	}
	if err := Verify(secret, h, body, now.Add(time.Minute), DefaultTolerance); err != nil {
		t.Fatalf("valid signature refused: %v", err)
	}
	for name, tc := range map[string]struct {
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		"other body":            {secret, h, []byte(`{"id":"2","type":"key-issued"}`), now, ErrSignatureMismatch},
		"other secret":          {[]byte("another-secret-value"), h, body, now, ErrSignatureMismatch},
		"timestamp moved":       {secret, strings.Replace(h, "t=1700000000", "t=1700000001", 1), body, now, ErrSignatureMismatch},
		"replayed too late":     {secret, h, body, now.Add(DefaultTolerance + time.Second), ErrStaleTimestamp},
		"from the future":       {secret, h, body, now.Add(-DefaultTolerance - time.Second), ErrStaleTimestamp},
		"no timestamp":          {secret, h[strings.Index(h, ",")+1:], body, now, ErrBadSignatureHeader},
		"garbage":               {secret, "nonsense", body, now, ErrBadSignatureHeader},
		"signature not hex":     {secret, "t=1700000000,v1=zz", body, now, ErrBadSignatureHeader},
		"timestamp not numeric": {secret, "t=abc,v1=00", body, now, ErrBadSignatureHeader},
	} {
		t.Run(name, func(t *testing.T) {
			if err := Verify(tc.secret, tc.header, tc.body, tc.now, DefaultTolerance); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestBackoffDoublesWithJitterUpToTheCap(t *testing.T) {
	p := Policy{BaseDelay: time.Second, MaxDelay: 10 * time.Second}
	lo, hi := func() float64 { return 0 }, func() float64 { return 0.999999 }
	for _, tc := range []struct {
		failures int
		nominal  time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {5, 10 * time.Second}, {40, 10 * time.Second}} {
		if got := Backoff(p, tc.failures, lo); got != tc.nominal/2 {
			t.Errorf("failures=%d: shortest wait %s, want %s", tc.failures, got, tc.nominal/2)
		}
		if got := Backoff(p, tc.failures, hi); got < tc.nominal-time.Millisecond || got > tc.nominal {
			t.Errorf("failures=%d: longest wait %s, want ~%s", tc.failures, got, tc.nominal)
		}
	}
}

// The default policy's retry span is what docs/monitoring.md promises:
// eleven waits between twelve attempts, 2 222 s nominal, at least half that.
func TestDefaultPolicyRetrySpan(t *testing.T) {
	p := DefaultPolicy()
	var lo, hi time.Duration
	for failures := 1; failures < p.MaxAttempts; failures++ {
		lo += Backoff(p, failures, func() float64 { return 0 })
		hi += Backoff(p, failures, func() float64 { return 1 })
	}
	if hi != 2222*time.Second || lo != 1111*time.Second {
		t.Fatalf("retry span %s-%s, want 1111s-2222s (19-37 minutes)", lo, hi)
	}
}

func TestStableIDIsDeterministicAndUnambiguous(t *testing.T) {
	a, b := StableID("key-revoked", "acme", "k1"), StableID("key-revoked", "acme", "k1")
	if a != b || len(a) != 36 {
		t.Fatalf("%q %q", a, b)
	}
	if StableID("ab", "c") == StableID("a", "bc") {
		t.Fatal("parts are not delimited")
	}
}

func TestTargetFilters(t *testing.T) {
	all := &Target{}
	if !all.Wants(KeyIssued, "acme") || !all.Wants(VerifyAnomaly, "") {
		t.Fatal("an unfiltered target must want everything")
	}
	f := &Target{Events: []string{KeyRevoked}, Tenants: []string{"acme"}}
	for _, tc := range []struct {
		typ, tenant string
		want        bool
	}{{KeyRevoked, "acme", true}, {KeyIssued, "acme", false}, {KeyRevoked, "globex", false}, {KeyRevoked, "", false}} {
		if got := f.Wants(tc.typ, tc.tenant); got != tc.want {
			t.Errorf("Wants(%s, %q) = %v", tc.typ, tc.tenant, got)
		}
	}
}

func TestValidateURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://hooks.example.com/apikeys": true,
		"http://127.0.0.1:8080/x":           true,
		"ftp://example.com":                 false,
		"/relative":                         false,
		"https://user:pw@example.com/":      false,
		"https://":                          false,
	} {
		if err := ValidateURL(raw); (err == nil) != ok {
			t.Errorf("%q: %v", raw, err)
		}
	}
}

// receiver is a loopback webhook endpoint whose behaviour a test switches.
type receiver struct {
	t      *testing.T
	secret []byte
	srv    *httptest.Server

	mu     sync.Mutex
	status int  // answer; 0 means 200
	hang   bool // never answer (until the request is cancelled)
	got    []Event
	tries  int
	sigErr error
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: []byte(secret)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.tries++
	status, hang := r.status, r.hang
	if err := Verify(r.secret, req.Header.Get(SignatureHeader), body, time.Now(), DefaultTolerance); err != nil {
		r.sigErr = err
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		r.sigErr = err
	}
	if ev.ID != req.Header.Get(IdempotencyHeader) || ev.Type != req.Header.Get(EventHeader) {
		r.sigErr = errors.New("headers disagree with the body")
	}
	if status == 0 && !hang {
		r.got = append(r.got, ev)
	}
	r.mu.Unlock()
	if hang {
		<-req.Context().Done()
		return
	}
	if status != 0 {
		w.WriteHeader(status)
	}
}

func (r *receiver) set(status int, hang bool) {
	r.mu.Lock()
	r.status, r.hang = status, hang
	r.mu.Unlock()
}

func (r *receiver) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sigErr != nil {
		r.t.Fatalf("receiver saw a bad delivery: %v", r.sigErr)
	}
	return append([]Event(nil), r.got...)
}

type harness struct {
	s       logical.Storage
	targets map[string]*Target
	mu      sync.Mutex
	dead    []string
	oks     int
	fails   int
}

func (h *harness) dispatcher(p Policy) *Dispatcher {
	d := NewDispatcher(func(_ context.Context, name string) (*Target, error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.targets[name], nil
	}, Observer{
		Attempted: func(_ string, ok bool) {
			h.mu.Lock()
			if ok {
				h.oks++
			} else {
				h.fails++
			}
			h.mu.Unlock()
		},
		DeadLettered: func(target string) { h.mu.Lock(); h.dead = append(h.dead, target); h.mu.Unlock() },
	})
	d.SetPolicy(p)
	return d
}

func fastPolicy() Policy {
	return Policy{MaxAttempts: 50, BaseDelay: 20 * time.Millisecond, MaxDelay: 50 * time.Millisecond, Timeout: 300 * time.Millisecond}
}

func enqueue(t *testing.T, d *Dispatcher, s logical.Storage, typ, target string) *Event {
	t.Helper()
	ev, err := New(typ, "acme", map[string]interface{}{"key_id": "k"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	del, err := NewDelivery(ev, target, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enqueue(context.Background(), s, del); err != nil {
		t.Fatal(err)
	}
	return ev
}

func outboxLen(t *testing.T, s logical.Storage, prefix string) int {
	t.Helper()
	ids, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

func TestDispatcherRetriesUntilDeliveredWithOneID(t *testing.T) {
	r := newReceiver(t, "secret-one-secret-one")
	h := &harness{s: &logical.InmemStorage{}, targets: map[string]*Target{"ops": {Name: "ops", URL: r.srv.URL, Secret: "secret-one-secret-one"}}}
	d := h.dispatcher(fastPolicy())
	if err := d.Start(context.Background(), h.s, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()

	r.set(http.StatusServiceUnavailable, false)
	ev := enqueue(t, d, h.s, KeyIssued, "ops")
	testvault.WaitFor(t, 10*time.Second, "three failed attempts", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.tries >= 3 })
	if n := outboxLen(t, h.s, OutboxPrefix); n != 1 {
		t.Fatalf("a failing delivery must stay in the outbox, found %d", n)
	}
	stored, err := Read(context.Background(), h.s, OutboxPrefix, ev.ID+".ops")
	if err != nil || stored == nil || stored.Attempts == 0 || !strings.Contains(stored.LastError, "503") {
		t.Fatalf("stored retry state: %+v %v", stored, err)
	}
	r.set(0, false)
	testvault.WaitFor(t, 10*time.Second, "delivery", func() bool { return len(r.events()) == 1 })
	testvault.WaitFor(t, 10*time.Second, "outbox to empty", func() bool { return outboxLen(t, h.s, OutboxPrefix) == 0 })
	if got := r.events()[0]; got.ID != ev.ID || got.Type != KeyIssued || got.Tenant != "acme" {
		t.Fatalf("delivered %+v, want id %s", got, ev.ID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.oks != 1 || h.fails < 3 {
		t.Fatalf("observer saw %d ok, %d failed", h.oks, h.fails)
	}
}

func TestDispatcherDeadLettersAfterMaxAttemptsAndRequeues(t *testing.T) {
	r := newReceiver(t, "secret-two-secret-two")
	r.set(http.StatusInternalServerError, false)
	h := &harness{s: &logical.InmemStorage{}, targets: map[string]*Target{"ops": {Name: "ops", URL: r.srv.URL, Secret: "secret-two-secret-two"}}}
	p := fastPolicy()
	p.MaxAttempts = 3
	d := h.dispatcher(p)
	if err := d.Start(context.Background(), h.s, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	ev := enqueue(t, d, h.s, KeyRevoked, "ops")
	testvault.WaitFor(t, 10*time.Second, "dead letter", func() bool { return outboxLen(t, h.s, FailedPrefix) == 1 })
	testvault.WaitFor(t, 10*time.Second, "outbox to empty", func() bool { return outboxLen(t, h.s, OutboxPrefix) == 0 && d.Depth() == 0 })
	r.mu.Lock()
	tries := r.tries
	r.mu.Unlock()
	if tries != 3 {
		t.Fatalf("%d attempts, want exactly MaxAttempts=3", tries)
	}
	dl, err := Read(context.Background(), h.s, FailedPrefix, ev.ID+".ops")
	if err != nil || dl == nil || dl.Attempts != 3 || dl.FailedAt.IsZero() || !strings.Contains(dl.LastError, "500") {
		t.Fatalf("dead letter %+v %v", dl, err)
	}
	if len(h.dead) != 1 || h.dead[0] != "ops" {
		t.Fatalf("observer dead letters %v", h.dead)
	}

	r.set(0, false)
	ok, err := d.Requeue(context.Background(), h.s, ev.ID+".ops")
	if err != nil || !ok {
		t.Fatalf("requeue: %v %v", ok, err)
	}
	testvault.WaitFor(t, 10*time.Second, "redelivery", func() bool { return len(r.events()) == 1 })
	if outboxLen(t, h.s, FailedPrefix) != 0 || r.events()[0].ID != ev.ID {
		t.Fatal("requeue must empty the dead letter and keep the event id")
	}
	if ok, err := d.Requeue(context.Background(), h.s, "missing"); ok || err != nil {
		t.Fatalf("requeue of nothing: %v %v", ok, err)
	}
}

func TestDispatcherRestartLosesNothing(t *testing.T) {
	r := newReceiver(t, "secret-three-secret-3")
	r.set(http.StatusBadGateway, false)
	h := &harness{s: &logical.InmemStorage{}, targets: map[string]*Target{"ops": {Name: "ops", URL: r.srv.URL, Secret: "secret-three-secret-3"}}}
	d1 := h.dispatcher(fastPolicy())
	// Enqueued while stopped (a standby, or before the active node starts):
	// they wait in storage.
	var ids []string
	for range 3 {
		ids = append(ids, enqueue(t, d1, h.s, KeyRotated, "ops").ID)
	}
	if d1.Depth() != 0 || outboxLen(t, h.s, OutboxPrefix) != 3 {
		t.Fatal("a stopped dispatcher must only store")
	}
	if err := d1.Start(context.Background(), h.s, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, enqueue(t, d1, h.s, KeyRotated, "ops").ID)
	testvault.WaitFor(t, 10*time.Second, "failed attempts", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.tries >= 4 })
	d1.Stop()

	// A new dispatcher over the same storage: the node restarted.
	r.set(0, false)
	d2 := h.dispatcher(fastPolicy())
	if err := d2.Start(context.Background(), h.s, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer d2.Stop()
	// Delivery is at least once: an attempt d1 gave up on while stopping
	// may still reach the receiver after it turned healthy, and d2 sends
	// that event again with the same id. So count distinct ids.
	got := map[string]bool{}
	testvault.WaitFor(t, 10*time.Second, "all four events", func() bool {
		clear(got)
		for _, e := range r.events() {
			got[e.ID] = true
		}
		return len(got) == 4
	})
	testvault.WaitFor(t, 10*time.Second, "outbox to empty", func() bool { return outboxLen(t, h.s, OutboxPrefix) == 0 })
	for _, id := range ids {
		if !got[id] {
			t.Fatalf("event %s lost; got %v", id, got)
		}
	}
}

func TestHangingReceiverDoesNotHoldBackAnotherTarget(t *testing.T) {
	slow := newReceiver(t, "secret-slow-secret-sl")
	slow.set(0, true)
	fast := newReceiver(t, "secret-fast-secret-fa")
	h := &harness{s: &logical.InmemStorage{}, targets: map[string]*Target{
		"slow": {Name: "slow", URL: slow.srv.URL, Secret: "secret-slow-secret-sl"},
		"fast": {Name: "fast", URL: fast.srv.URL, Secret: "secret-fast-secret-fa"},
	}}
	p := fastPolicy()
	p.Timeout = 5 * time.Second
	d := h.dispatcher(p)
	if err := d.Start(context.Background(), h.s, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	enqueue(t, d, h.s, KeyIssued, "slow")
	testvault.WaitFor(t, 10*time.Second, "the slow receiver to hang", func() bool { slow.mu.Lock(); defer slow.mu.Unlock(); return slow.tries == 1 })
	for range 5 {
		enqueue(t, d, h.s, KeyIssued, "fast")
	}
	testvault.WaitFor(t, 10*time.Second, "the fast target's events", func() bool { return len(fast.events()) == 5 })
	// Stop abandons the hanging attempt without counting it.
	d.Stop()
	if n := outboxLen(t, h.s, OutboxPrefix); n != 1 {
		t.Fatalf("the hanging delivery must stay stored, outbox has %d", n)
	}
}

func TestDeliveryToDeletedTargetIsDeadLettered(t *testing.T) {
	h := &harness{s: &logical.InmemStorage{}, targets: map[string]*Target{}}
	d := h.dispatcher(fastPolicy())
	if err := d.Start(context.Background(), h.s, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	enqueue(t, d, h.s, KeyIssued, "gone")
	testvault.WaitFor(t, 10*time.Second, "dead letter", func() bool { return outboxLen(t, h.s, FailedPrefix) == 1 })
}

// failingList is storage whose List fails, as a sealed or unreachable
// backend's does.
type failingList struct{ logical.InmemStorage }

func (*failingList) List(context.Context, string) ([]string, error) {
	return nil, errors.New("storage unavailable")
}

// A Start that cannot load the outbox returns its error and leaves the
// dispatcher startable; it used to wait for a delivery loop that had never
// started, and with it the mount's Initialize.
func TestDispatcherStartFailureReturns(t *testing.T) {
	h := &harness{s: &logical.InmemStorage{}}
	d := h.dispatcher(fastPolicy())
	errc := make(chan error, 1)
	go func() { errc <- d.Start(context.Background(), &failingList{}, hclog.NewNullLogger()) }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "storage unavailable") {
			t.Fatalf("Start on failing storage: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start hung after the outbox failed to load")
	}
	d.Stop() // nothing running: must return at once
	if err := d.Start(context.Background(), h.s, hclog.NewNullLogger()); err != nil {
		t.Fatalf("Start after a failed one: %v", err)
	}
	d.Stop()
}

func TestCheckPublicAddr(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		public bool
	}{
		{"93.184.215.14", true},
		{"2606:2800:21f:cb07:6820:80da:af6b:8b2c", true},
		{"127.0.0.1", false},
		{"127.9.9.9", false},
		{"::1", false},
		{"10.0.0.1", false},
		{"172.16.5.4", false},
		{"172.32.0.1", true},
		{"192.168.1.1", false},
		{"fd00::1", false},
		{"fc00::1", false},
		{"169.254.169.254", false},
		{"fe80::1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"ff02::1", false},
		{"100.64.0.1", false},
		{"255.255.255.255", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
	} {
		err := CheckPublicAddr(netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.public {
			t.Errorf("%s: public=%v, got %v", tc.addr, tc.public, err)
		}
		if err != nil {
			if _, ok := asRefused(err); !ok {
				t.Errorf("%s: %v is not a RefusedError", tc.addr, err)
			}
		}
	}
}

// TestPublicOnlyTargetIsRefusedAtDial: the receiver listens on loopback;
// a public-only target never reaches it and the delivery is dead-lettered
// on its first attempt, while the same target without the flag gets it.
func TestPublicOnlyTargetIsRefusedAtDial(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	d := NewDispatcher(nil, Observer{})
	err := d.post(context.Background(), &Target{URL: srv.URL, Secret: "s", PublicOnly: true}, &Delivery{Body: []byte("{}")})
	if r, ok := asRefused(err); !ok || !strings.Contains(r.Reason, "loopback") {
		t.Fatalf("want a refusal naming loopback, got %v", err)
	}
	err = d.post(context.Background(), &Target{URL: strings.Replace(srv.URL, "https:", "http:", 1), Secret: "s", PublicOnly: true}, &Delivery{Body: []byte("{}")})
	if _, ok := asRefused(err); !ok {
		t.Fatalf("http to a public-only target: %v", err)
	}
	if hits.Load() != 0 {
		t.Fatal("the loopback receiver was reached")
	}
	d.client = srv.Client()
	if err := d.post(context.Background(), &Target{URL: srv.URL, Secret: "s"}, &Delivery{Body: []byte("{}")}); err != nil || hits.Load() != 1 {
		t.Fatalf("unrestricted target: %v, hits %d", err, hits.Load())
	}
}

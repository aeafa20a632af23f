package hatest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

const (
	mount          = "apikeys"
	rotationPeriod = 6 * time.Second
	gracePeriod    = 4 * time.Second
	// rotationTick is the rotation engine's ticker (defaultRotationTick in
	// backend/rotation.go): a due key is rotated at most one tick late.
	rotationTick = time.Second
	// lateSlack absorbs scheduling noise on a busy 2-core machine. It stays
	// well below rotationPeriod, so a skipped rotation (a whole period
	// late) still fails the test.
	lateSlack = 2 * time.Second

	loadWorkers  = 3
	loadPause    = 15 * time.Millisecond
	maxAttempts  = 60000
	samplePeriod = 250 * time.Millisecond
)

// The plugin logs every rotation; the key id tells which node did it.
var rotatedLine = regexp.MustCompile(`static key rotated.*key_id=([0-9a-f-]{36})`)

const engineStartedLine = "static key rotation started"

func TestFailoverUnderLoad(t *testing.T) {
	if os.Getenv("APIKEYS_HA") != "1" {
		t.Skip("starts a 3-node Vault cluster (about a minute): run it with `make test-ha` or `APIKEYS_HA=1 go test -count=1 ./backend/hatest/`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	began := time.Now()
	c, err := testvault.StartCluster(ctx, testvault.ClusterOptions{
		RaftPerformanceMultiplier: raftMultiplier(t),
		Log:                       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- %s log (tail) ---\n%s", n.ID, n.LogTail(40))
			}
		}
		c.Cleanup()
	})
	t.Logf("3 voters, unsealed, plugin registered, %s after start", since(began))
	if err := c.Mount(ctx, mount); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, c)
	oldActive := h.mustActive(ctx)
	t.Logf("active node: %s", oldActive.ID)

	// Keys issued before the failover: dynamic keys with leases, and static
	// keys created two seconds apart, so with a 6 s period one of them is
	// due at any moment, the election window included.
	for _, tenant := range []string{"acme", "globex"} {
		h.write(ctx, "tenants/"+tenant, map[string]interface{}{"display_name": tenant})
		h.write(ctx, "tenants/"+tenant+"/roles/web", map[string]interface{}{"scopes": "read", "ttl": "1h", "max_ttl": "2h"})
		for i := 0; i < 6; i++ {
			h.issue(ctx, tenant)
		}
	}
	// The samplers and the load stop before the test ends, also when it
	// fails half-way: they report through t.
	sampling, stopSampling := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); h.sample(sampling) }()
	loadCtx, stopLoad := context.WithTimeout(ctx, 3*time.Minute)
	var loadWG sync.WaitGroup
	stop := func() {
		stopLoad()
		loadWG.Wait()
		stopSampling()
		<-samplerDone
	}
	t.Cleanup(stop)
	for i, sk := range []struct{ tenant, name string }{{"acme", "app1"}, {"globex", "app2"}, {"acme", "app3"}} {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		h.createStatic(ctx, sk.tenant, sk.name)
	}
	for w := 0; w < loadWorkers; w++ {
		loadWG.Add(1)
		go func(w int) { defer loadWG.Done(); h.verifyLoad(loadCtx, w) }(w)
	}

	// Two rotations of every static key on the first active node.
	h.waitRotations(ctx, time.Time{}, 2, 30*time.Second)
	engineStartsBefore := strings.Count(oldActive.Log(), engineStartedLine)

	// The crash: the load balancer takes the node out first, as a health
	// check would, so only requests already in flight reach a dead node.
	oldIdx := h.index(oldActive)
	h.live[oldIdx].Store(false)
	killAt := time.Now()
	oldActive.Kill()
	newActive, err := c.WaitActive(ctx, 60*time.Second, oldActive)
	if err != nil {
		t.Fatal(err)
	}
	newActiveAt := time.Now()
	newIdx := h.index(newActive)
	t.Logf("killed %s (SIGKILL); %s active %s later (seen through sys/health)", oldActive.ID, newActive.ID, newActiveAt.Sub(killAt).Round(time.Millisecond))

	// Rotation resumes on the new active node: two more rotations each.
	h.waitRotations(ctx, killAt, 2, 40*time.Second)

	// The old active node comes back as a standby; rotation must not start
	// there again.
	restarting := time.Now()
	if err := c.Restart(ctx, oldActive); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitStandby(ctx, oldActive, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	h.live[oldIdx].Store(true)
	t.Logf("%s restarted, unsealed and a standby again in %s", oldActive.ID, restartedAt.Sub(restarting).Round(time.Millisecond))
	h.waitRotations(ctx, restartedAt, 1, 20*time.Second)

	stop()
	if a := h.mustActive(ctx); a != newActive {
		t.Fatalf("active node changed again after the failover: %s", a.ID)
	}

	h.checkVerifyErrors(oldIdx, newIdx, killAt, restartedAt)
	h.checkRotations(oldActive, newActive, killAt, newActiveAt)
	if n := strings.Count(oldActive.Log(), engineStartedLine); n != engineStartsBefore {
		t.Errorf("the rotation engine started on %s after it came back as a standby (%d starts, %d before the kill)", oldActive.ID, n, engineStartsBefore)
	}
	if n := strings.Count(newActive.Log(), engineStartedLine); n != 1 {
		t.Errorf("the rotation engine started %d times on the new active node %s, want 1", n, newActive.ID)
	}
	for _, n := range c.Nodes {
		if n != oldActive && n != newActive && strings.Contains(n.Log(), engineStartedLine) {
			t.Errorf("the rotation engine started on %s, which was never active", n.ID)
		}
	}
	h.checkNoKeyLost(ctx, newActive)
	t.Logf("whole test %s", since(began))
}

func raftMultiplier(t *testing.T) int {
	v := os.Getenv("APIKEYS_HA_RAFT_MULTIPLIER")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("APIKEYS_HA_RAFT_MULTIPLIER=%q: want a non-negative integer", v)
	}
	return n
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

type dynamicKey struct{ tenant, id, key, lease string }

type credSample struct {
	at          time.Time
	keyID       string
	apiKey      string
	lastRotated time.Time
}

type infoSample struct {
	at            time.Time
	keyID, prevID string
}

type staticKey struct {
	tenant, name string

	mu      sync.Mutex
	current string // the key the app presents: the latest one it read
	creds   []credSample
	infos   []infoSample
}

type rotation struct {
	keyID string
	at    time.Time
}

// history is the sequence of keys the static key had, from the samples:
// the first entry is the key it was created with.
func (s *staticKey) history() []rotation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []rotation
	for _, cs := range s.creds {
		if len(out) == 0 || out[len(out)-1].keyID != cs.keyID {
			out = append(out, rotation{cs.keyID, cs.lastRotated})
		}
	}
	return out
}

func (s *staticKey) rotationsAfter(t time.Time) int {
	n := 0
	for i, r := range s.history() {
		if i > 0 && r.at.After(t) {
			n++
		}
	}
	return n
}

// attempt is one verify request of the load.
type attempt struct {
	node       int
	start, end time.Time
	status     int // 0: no HTTP answer
	code       string
	err        string
}

func (a attempt) ok() bool { return a.status == http.StatusOK && a.err == "" }

type harness struct {
	t     *testing.T
	c     *testvault.Cluster
	http  *http.Client
	live  []atomic.Bool
	rr    atomic.Uint64
	token string

	mu       sync.Mutex
	dynamic  []dynamicKey
	static   []*staticKey
	attempts []attempt
}

func newHarness(t *testing.T, c *testvault.Cluster) *harness {
	h := &harness{
		t: t, c: c, token: c.Token,
		live: make([]atomic.Bool, len(c.Nodes)),
		http: &http.Client{
			Timeout:   3 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 8},
			// A standby that cannot forward may answer with a redirect to
			// the active node: that is not an answer, count it as one.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	for i := range h.live {
		h.live[i].Store(true)
	}
	return h
}

func (h *harness) index(n *testvault.Node) int {
	for i, o := range h.c.Nodes {
		if o == n {
			return i
		}
	}
	h.t.Fatalf("unknown node %s", n.ID)
	return -1
}

func (h *harness) mustActive(ctx context.Context) *testvault.Node {
	h.t.Helper()
	n, err := h.c.Active(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// pick returns the next live node, round robin: the load and the samplers
// spread over every node like clients behind a load balancer.
func (h *harness) pick() int {
	for {
		i := int(h.rr.Add(1) % uint64(len(h.live)))
		if h.live[i].Load() {
			return i
		}
	}
}

// do sends one request to one node and returns the HTTP status and the
// response's data.
func (h *harness) do(ctx context.Context, node int, method, path string, body map[string]interface{}) (int, map[string]interface{}, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("encode body: %w", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.c.Nodes[node].Addr+"/v1/"+path, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("new request: %w", err)
	}
	req.Header.Set("X-Vault-Token", h.token)
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, nil, nil
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		return resp.StatusCode, nil, fmt.Errorf("HTTP %d redirect to %s", resp.StatusCode, loc)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	var out struct {
		LeaseID string                 `json:"lease_id"`
		Data    map[string]interface{} `json:"data"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decode body: %w", err)
	}
	if out.LeaseID != "" && out.Data != nil {
		out.Data["lease_id"] = out.LeaseID
	}
	return resp.StatusCode, out.Data, nil
}

// write goes through any live node: a standby forwards it to the active one.
func (h *harness) write(ctx context.Context, path string, body map[string]interface{}) map[string]interface{} {
	h.t.Helper()
	_, data, err := h.do(ctx, h.pick(), http.MethodPost, mount+"/"+path, body)
	if err != nil {
		h.t.Fatalf("write %s: %v", path, err)
	}
	return data
}

func (h *harness) issue(ctx context.Context, tenant string) dynamicKey {
	h.t.Helper()
	d := h.write(ctx, "tenants/"+tenant+"/creds/web", map[string]interface{}{})
	k := dynamicKey{tenant: tenant}
	k.key, _ = d["api_key"].(string)
	k.id, _ = d["key_id"].(string)
	k.lease, _ = d["lease_id"].(string)
	if k.key == "" || k.id == "" || k.lease == "" {
		h.t.Fatalf("issue for %s: %v", tenant, d)
	}
	h.mu.Lock()
	h.dynamic = append(h.dynamic, k)
	h.mu.Unlock()
	return k
}

func (h *harness) createStatic(ctx context.Context, tenant, name string) {
	h.t.Helper()
	h.write(ctx, "tenants/"+tenant+"/static-keys/"+name, map[string]interface{}{
		"role": "web", "rotation_period": int(rotationPeriod.Seconds()), "grace_period": int(gracePeriod.Seconds()),
	})
	sk := &staticKey{tenant: tenant, name: name}
	if !h.sampleOne(ctx, sk) {
		h.t.Fatalf("cannot read static-creds of %s/%s", tenant, name)
	}
	h.mu.Lock()
	h.static = append(h.static, sk)
	h.mu.Unlock()
}

func (h *harness) statics() []*staticKey {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*staticKey(nil), h.static...)
}

// sample reads every static key's static-creds (what Vault Agent reads)
// and its metadata (for previous_key_id) every samplePeriod, from the
// nodes in turn. Failures during the election are expected and skipped.
func (h *harness) sample(ctx context.Context) {
	for ctx.Err() == nil {
		for _, sk := range h.statics() {
			h.sampleOne(ctx, sk)
		}
		select {
		case <-ctx.Done():
		case <-time.After(samplePeriod):
		}
	}
}

func (h *harness) sampleOne(ctx context.Context, sk *staticKey) bool {
	base := mount + "/tenants/" + sk.tenant
	_, d, err := h.do(ctx, h.pick(), http.MethodGet, base+"/static-creds/"+sk.name, nil)
	if err != nil {
		return false
	}
	cs := credSample{at: time.Now()}
	cs.keyID, _ = d["key_id"].(string)
	cs.apiKey, _ = d["api_key"].(string)
	lr, _ := d["last_rotated"].(string)
	if cs.lastRotated, err = time.Parse(time.RFC3339Nano, lr); err != nil || cs.keyID == "" || cs.apiKey == "" {
		h.t.Errorf("static-creds of %s/%s: %v", sk.tenant, sk.name, d)
		return false
	}
	sk.mu.Lock()
	sk.creds = append(sk.creds, cs)
	sk.current = cs.apiKey
	sk.mu.Unlock()

	if _, d, err = h.do(ctx, h.pick(), http.MethodGet, base+"/static-keys/"+sk.name, nil); err == nil {
		is := infoSample{at: time.Now()}
		is.keyID, _ = d["key_id"].(string)
		is.prevID, _ = d["previous_key_id"].(string)
		sk.mu.Lock()
		sk.infos = append(sk.infos, is)
		sk.mu.Unlock()
	}
	return true
}

// waitRotations waits until every static key has rotated n times after t.
func (h *harness) waitRotations(ctx context.Context, t time.Time, n int, timeout time.Duration) {
	h.t.Helper()
	testvault.WaitFor(h.t, timeout, fmt.Sprintf("every static key to rotate %d times after %s", n, t.Format("15:04:05.000")), func() error {
		if err := ctx.Err(); err != nil {
			h.t.Fatalf("waiting for rotations: %v", err)
		}
		var behind []string
		for _, sk := range h.statics() {
			if got := sk.rotationsAfter(t); got < n {
				behind = append(behind, fmt.Sprintf("%s/%s: %d", sk.tenant, sk.name, got))
			}
		}
		if len(behind) > 0 {
			return fmt.Errorf("rotations so far: %s", strings.Join(behind, ", "))
		}
		return nil
	})
}

// verifyLoad is one gateway worker: it verifies the dynamic keys and the
// static keys' current keys in turn, on the live nodes in turn, until ctx
// ends or the attempt cap is reached.
func (h *harness) verifyLoad(ctx context.Context, worker int) {
	for i := worker; ctx.Err() == nil; i += loadWorkers {
		h.mu.Lock()
		if len(h.attempts) >= maxAttempts {
			h.mu.Unlock()
			return
		}
		var key string
		if n := len(h.dynamic); i%2 == 0 && n > 0 {
			key = h.dynamic[(i/2)%n].key
		} else if n := len(h.static); n > 0 {
			sk := h.static[(i/2)%n]
			sk.mu.Lock()
			key = sk.current
			sk.mu.Unlock()
		}
		h.mu.Unlock()

		node := h.pick()
		a := attempt{node: node, start: time.Now()}
		status, d, err := h.do(ctx, node, http.MethodPost, mount+"/verify", map[string]interface{}{"api_key": key})
		a.end, a.status = time.Now(), status
		if ctx.Err() != nil {
			return // cancelled at the end of the test, not a failure
		}
		if err != nil {
			a.err = err.Error()
		} else {
			a.code, _ = d["code"].(string)
		}
		h.mu.Lock()
		h.attempts = append(h.attempts, a)
		h.mu.Unlock()
		time.Sleep(loadPause)
	}
}

// checkVerifyErrors shows that verify failed only between the kill and
// the moment every surviving node answered again, and never gave a wrong
// answer.
func (h *harness) checkVerifyErrors(oldIdx, newIdx int, killAt, restartedAt time.Time) {
	t := h.t
	h.mu.Lock()
	attempts := append([]attempt(nil), h.attempts...)
	h.mu.Unlock()
	sort.Slice(attempts, func(i, j int) bool { return attempts[i].start.Before(attempts[j].start) })

	// First answer of each surviving node to a request sent after the kill.
	recovered := map[int]time.Time{}
	for _, a := range attempts {
		if a.node != oldIdx && a.ok() && !a.start.Before(killAt) {
			if _, seen := recovered[a.node]; !seen {
				recovered[a.node] = a.end
			}
		}
	}
	leaderUp, ok := recovered[newIdx]
	if !ok {
		t.Fatalf("no verify answered by the new active node after the failover")
	}
	recoveredAt := leaderUp
	for _, at := range recovered {
		if at.After(recoveredAt) {
			recoveredAt = at
		}
	}

	var total, okCount, inflightDead, preKill, inWindow, outside, wrong int
	kinds := map[string]int{}
	var firstOutside, firstWrong *attempt
	for i := range attempts {
		a := &attempts[i]
		total++
		if a.node == oldIdx && a.end.After(killAt) && a.start.Before(restartedAt) {
			// Sent to the node before it died, answered (or not) after.
			if !a.ok() {
				inflightDead++
			}
			continue
		}
		if a.ok() {
			okCount++
			if a.code != "VALID" {
				wrong++
				if firstWrong == nil {
					firstWrong = a
				}
			}
			continue
		}
		kinds[h.errKind(a)]++
		switch {
		case a.end.Before(killAt):
			// Failed while every node was up.
			preKill++
		case !a.start.After(recoveredAt):
			// Includes requests sent just before the kill through a
			// standby, whose forwarding to the dying node failed.
			inWindow++
		default:
			outside++
			if firstOutside == nil {
				firstOutside = a
			}
		}
	}
	t.Logf("verify load: %d requests, %d answered, over %d nodes", total, okCount, len(h.c.Nodes))
	t.Logf("election window (kill -> first VALID from the new active node): %s", leaderUp.Sub(killAt).Round(time.Millisecond))
	for idx, at := range recovered {
		t.Logf("  %s answered again %s after the kill", h.c.Nodes[idx].ID, at.Sub(killAt).Round(time.Millisecond))
	}
	t.Logf("verify errors: %d inside the window (in flight at the kill, or sent before every surviving node answered again at +%s), %d outside it, %d before the kill; %d requests in flight to the killed node lost",
		inWindow, recoveredAt.Sub(killAt).Round(time.Millisecond), outside, preKill, inflightDead)
	for k, n := range kinds {
		t.Logf("  %5d × %s", n, k)
	}
	if preKill > 0 {
		t.Errorf("%d verify errors before the kill", preKill)
	}
	if outside > 0 {
		t.Errorf("%d verify errors after every node answered again; first at +%s on %s: %s",
			outside, firstOutside.start.Sub(killAt).Round(time.Millisecond), h.c.Nodes[firstOutside.node].ID, h.errKind(firstOutside))
	}
	if wrong > 0 {
		t.Errorf("%d verify answers were not VALID; first at %s on %s: %s",
			wrong, firstWrong.start.Format("15:04:05.000"), h.c.Nodes[firstWrong.node].ID, firstWrong.code)
	}
	// A bound on the window, not a performance assertion: an election that
	// does not finish in 30 s on loopback has failed.
	if recoveredAt.Sub(killAt) > 30*time.Second {
		t.Errorf("the cluster took %s to answer again", recoveredAt.Sub(killAt))
	}
	if after := countAfter(attempts, recoveredAt); after < 100 {
		t.Errorf("only %d verifies after the failover: the load did not really run", after)
	}
}

func countAfter(attempts []attempt, t time.Time) int {
	n := 0
	for _, a := range attempts {
		if a.start.After(t) && a.ok() {
			n++
		}
	}
	return n
}

// errKind shortens an error to its kind, for the tally, with node
// addresses replaced by node names.
func (h *harness) errKind(a *attempt) string {
	msg := a.err
	for _, n := range h.c.Nodes {
		msg = strings.ReplaceAll(msg, n.Addr+"/v1/"+mount+"/verify", n.ID)
	}
	if i := strings.Index(msg, `"errors":[`); i >= 0 {
		msg = msg[i:]
	}
	for _, s := range []string{"connection refused", "connection reset", "Client.Timeout", "EOF"} {
		if strings.Contains(msg, s) {
			return s
		}
	}
	if len(msg) > 120 {
		msg = msg[:120]
	}
	return fmt.Sprintf("from %s: %s", h.c.Nodes[a.node].ID, msg)
}

// checkRotations shows that rotation moved with the active node and was
// neither skipped nor doubled.
func (h *harness) checkRotations(oldActive, newActive *testvault.Node, killAt, newActiveAt time.Time) {
	t := h.t
	// Which node logged which rotation.
	rotatedBy := map[string][]string{}
	for _, n := range h.c.Nodes {
		for _, m := range rotatedLine.FindAllStringSubmatch(n.Log(), -1) {
			rotatedBy[m[1]] = append(rotatedBy[m[1]], n.ID)
		}
	}
	var rotationsBefore, rotationsAfter, unlogged int
	var worstLate time.Duration
	for _, sk := range h.statics() {
		hist := sk.history()
		label := sk.tenant + "/" + sk.name
		for i := 1; i < len(hist); i++ {
			prev, cur := hist[i-1], hist[i]
			gap := cur.at.Sub(prev.at)
			// Rotations are anchored to the static key's creation: the i-th
			// is due at creation + i periods however late the one before it
			// ran, so the schedule does not drift by the engine's tick.
			scheduled := hist[0].at.Add(time.Duration(i) * rotationPeriod)
			// A key due while no node was active is rotated once the new
			// active node has started its engine, not earlier.
			from := scheduled
			if cur.at.After(killAt) && newActiveAt.After(from) {
				from = newActiveAt
			}
			late := cur.at.Sub(from)
			if late > worstLate {
				worstLate = late
			}
			wantNode := oldActive.ID
			if cur.at.After(killAt) {
				wantNode = newActive.ID
				rotationsAfter++
			} else {
				rotationsBefore++
			}
			if straddles := prev.at.Before(killAt) && cur.at.After(killAt); straddles {
				t.Logf("%s: rotation across the failover: scheduled +%s after the kill, done +%s (%s after the new active node was seen), gap %s",
					label, scheduled.Sub(killAt).Round(time.Millisecond), cur.at.Sub(killAt).Round(time.Millisecond),
					cur.at.Sub(newActiveAt).Round(time.Millisecond), gap.Round(time.Millisecond))
			}
			// Early means a second rotation for one due time: doubled.
			if cur.at.Before(scheduled.Add(-time.Millisecond)) {
				t.Errorf("%s: doubled rotation: %s at %s, %s before its due time (gap after %s: %s)",
					label, cur.keyID, cur.at.Format("15:04:05.000"), scheduled.Sub(cur.at), prev.keyID, gap)
			}
			if late > rotationTick+lateSlack {
				t.Errorf("%s: rotation to %s at %s is %s late (due %s): skipped or stalled",
					label, cur.keyID, cur.at.Format("15:04:05.000"), late, from.Format("15:04:05.000"))
			}
			by := rotatedBy[cur.keyID]
			if len(by) == 0 && wantNode == oldActive.ID && killAt.Sub(cur.at) < 500*time.Millisecond {
				// SIGKILL can beat the log line from the plugin through
				// Vault to the file: the rotation committed, its log line
				// did not.
				t.Logf("%s: rotation to %s just before the kill left no log line", label, cur.keyID)
				unlogged++
				continue
			}
			if len(by) != 1 || by[0] != wantNode {
				t.Errorf("%s: rotation to %s at %s logged by %v, want exactly %s", label, cur.keyID, cur.at.Format("15:04:05.000"), by, wantNode)
			}
		}
		// Every key the static key had was seen by static-creds, in order:
		// a key that lived too briefly to be sampled would show up here as
		// a previous_key_id that is not the key sampled before.
		pos := map[string]int{}
		for i, r := range hist {
			pos[r.keyID] = i
		}
		sk.mu.Lock()
		infos := append([]infoSample(nil), sk.infos...)
		sk.mu.Unlock()
		for _, is := range infos {
			i, seen := pos[is.keyID]
			if !seen {
				t.Errorf("%s: key %s (read at %s) never showed in static-creds", label, is.keyID, is.at.Format("15:04:05.000"))
				continue
			}
			if is.prevID != "" && (i == 0 || hist[i-1].keyID != is.prevID) {
				t.Errorf("%s: key %s follows %s, but static-creds showed %v before it", label, is.keyID, is.prevID, hist[max(i-1, 0)].keyID)
			}
		}
		var offsets []string
		for _, r := range hist {
			offsets = append(offsets, fmt.Sprintf("%+.1fs", r.at.Sub(killAt).Seconds()))
		}
		t.Logf("%s: keys created/rotated at %s (relative to the kill)", label, strings.Join(offsets, " "))
	}
	// Rotations the samples saw must all be in the logs and vice versa:
	// nothing rotated that a client could not see.
	if logged := len(rotatedBy); logged != rotationsBefore+rotationsAfter-unlogged {
		t.Errorf("%d rotations logged by the nodes, %d seen through static-creds", logged, rotationsBefore+rotationsAfter)
	}
	t.Logf("rotations: %d on %s before the kill, %d on %s after it, none elsewhere; latest rotation %s after it was due (bound: tick %s + slack %s)",
		rotationsBefore, oldActive.ID, rotationsAfter, newActive.ID, worstLate.Round(time.Millisecond), rotationTick, lateSlack)
}

// checkNoKeyLost asks every node, the new active one first, about every key
// issued before the failover, and issues one more.
func (h *harness) checkNoKeyLost(ctx context.Context, newActive *testvault.Node) {
	t := h.t
	newIdx := h.index(newActive)
	order := []int{newIdx}
	for i := range h.c.Nodes {
		if i != newIdx {
			order = append(order, i)
		}
	}
	verify := func(node int, key, what string) {
		_, d, err := h.do(ctx, node, http.MethodPost, mount+"/verify", map[string]interface{}{"api_key": key})
		if err != nil {
			t.Errorf("verify %s on %s: %v", what, h.c.Nodes[node].ID, err)
			return
		}
		if d["code"] != "VALID" {
			t.Errorf("%s on %s: %v", what, h.c.Nodes[node].ID, d)
		}
	}
	h.mu.Lock()
	dynamic := append([]dynamicKey(nil), h.dynamic...)
	h.mu.Unlock()
	for _, k := range dynamic {
		for _, node := range order {
			verify(node, k.key, "dynamic key "+k.id)
		}
		// The lease came over too, so the key still dies with it.
		_, d, err := h.do(ctx, newIdx, http.MethodPut, "sys/leases/lookup", map[string]interface{}{"lease_id": k.lease})
		if err != nil || d["id"] != k.lease {
			t.Errorf("lease %s on %s: %v %v", k.lease, newActive.ID, d, err)
		}
		_, d, err = h.do(ctx, newIdx, http.MethodGet, mount+"/tenants/"+k.tenant+"/keys/"+k.id, nil)
		if err != nil || d["status"] != "active" {
			t.Errorf("metadata of key %s on %s: %v %v", k.id, newActive.ID, d, err)
		}
	}
	for _, sk := range h.statics() {
		_, d, err := h.do(ctx, newIdx, http.MethodGet, mount+"/tenants/"+sk.tenant+"/static-creds/"+sk.name, nil)
		if err != nil {
			t.Errorf("static-creds of %s/%s on %s: %v", sk.tenant, sk.name, newActive.ID, err)
			continue
		}
		key, _ := d["api_key"].(string)
		for _, node := range order {
			verify(node, key, "current key of "+sk.tenant+"/"+sk.name)
		}
	}
	// The catalog entry registered once, before the failover, is what the
	// new active node runs the plugin from.
	_, d, err := h.do(ctx, newIdx, http.MethodGet, "sys/plugins/catalog/secret/"+testvault.PluginName+"?version="+h.c.PluginVersion, nil)
	if err != nil || d["sha256"] != h.c.PluginSHA256 {
		t.Errorf("plugin catalog on %s: %v %v", newActive.ID, d, err)
	}
	// Writes work again, also through the standbys.
	k := h.issue(ctx, "acme")
	for _, node := range order {
		verify(node, k.key, "key issued after the failover")
	}
	t.Logf("no key lost: %d dynamic keys (and their leases) and %d static keys verify VALID on all %d nodes", len(dynamic), len(h.statics()), len(h.c.Nodes))
}

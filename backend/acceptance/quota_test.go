package acceptance

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// awayFromMidnight waits, when a test would straddle 00:00 UTC, until the
// new day has begun: a day's quota starts over then.
func awayFromMidnight(t *testing.T, need time.Duration) {
	t.Helper()
	next := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if time.Until(next) > need {
		return
	}
	testvault.WaitFor(t, need+time.Minute, "the UTC day to turn", func() bool { return time.Now().After(next) })
}

func (e *engine) quotaStanding(tenant, id string) map[string]interface{} {
	e.t.Helper()
	return read(e.t, e.c, e.path("tenants/"+tenant+"/keys/"+id+"/quota")).Data
}

func num(t *testing.T, v interface{}) int64 {
	t.Helper()
	n, err := v.(json.Number).Int64()
	if err != nil {
		t.Fatalf("%v is not a number: %v", v, err)
	}
	return n
}

// A key with quota=5 quota_period=day answers VALID five times, then
// QUOTA_EXCEEDED until the next UTC midnight, through Vault and through
// an edge; a refill by hand opens it again on both.
func TestQuotaFiveADayThroughVaultAndEdge(t *testing.T) {
	awayFromMidnight(t, time.Minute)
	e := newEngine(t)
	e.tenant("acme", nil)
	e.role("acme", "metered", map[string]interface{}{"quota": 5, "quota_period": "day", "ttl": "1h"})
	e.tenant("globex", nil)
	viaVault := e.issue("acme", "metered", nil)
	viaEdge := e.issue("acme", "metered", nil)
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)

	for i := int64(4); i >= 0; i-- {
		a := e.verify("verify", map[string]interface{}{"api_key": viaVault.key})
		if a["code"] != contract.CodeValid || num(t, a["quota_remaining"]) != i || a["quota_resets_at"] != midnight.Format(time.RFC3339) {
			t.Fatalf("verify %d: %v", 5-i, a)
		}
	}
	over := e.verify("verify", map[string]interface{}{"api_key": viaVault.key})
	if over["code"] != contract.CodeQuotaExceeded || over["valid"] != false || over["quota_resets_at"] != midnight.Format(time.RFC3339) {
		t.Fatalf("sixth: %v", over)
	}

	f := startEdge(t, e, 30*time.Second)
	for i := 0; i < 5; i++ {
		if st, h, body := f.check(viaEdge.key); st != http.StatusOK || h.Get(edge.HeaderCode) != contract.CodeValid {
			t.Fatalf("edge check %d: %d %s", i+1, st, body)
		}
	}
	st, h, body := f.check(viaEdge.key)
	retry, err := strconv.Atoi(h.Get("Retry-After"))
	if st != http.StatusTooManyRequests || h.Get(edge.HeaderCode) != contract.CodeQuotaExceeded || err != nil ||
		math.Abs(float64(retry)-time.Until(midnight).Seconds()) > 5 {
		t.Fatalf("edge sixth: %d %v %s (midnight in %s)", st, h, body, time.Until(midnight))
	}
	if n := f.metric("apikeys_edge_vault_verify_total"); n != 0 {
		t.Fatalf("the edge asked Vault %v times about a key it holds", n)
	}
	if f.metric("apikeys_edge_quota_exceeded_total", "tenant", "acme") != 1 {
		t.Fatal("apikeys_edge_quota_exceeded_total")
	}

	// Vault learns what the edge served from its usage report.
	testvault.WaitFor(t, 10*time.Second, "Vault to count the edge's five", func() error {
		if s := e.quotaStanding("acme", viaEdge.id); num(t, s["used"]) != 5 {
			return fmt.Errorf("standing %v", s)
		}
		return nil
	})
	if got := e.code(viaEdge.key); got != contract.CodeQuotaExceeded {
		t.Fatalf("Vault after the edge's report: %s", got)
	}

	// Refill by hand: at once on Vault, through the feed on the edge.
	refilled := write(t, e.c, e.path("tenants/acme/keys/"+viaVault.id+"/quota"), map[string]interface{}{"reset": true}).Data
	if num(t, refilled["remaining"]) != 5 {
		t.Fatalf("refill answer: %v", refilled)
	}
	e.wantCode(viaVault.key, contract.CodeValid)
	write(t, e.c, e.path("tenants/acme/keys/"+viaEdge.id+"/quota"), map[string]interface{}{"add": 2})
	lag := f.waitCheck(viaEdge.key, http.StatusOK, contract.CodeValid, 5*time.Second)
	t.Logf("refill visible at the edge after %s", lag)
	if st, _, body := f.check(viaEdge.key); st != http.StatusOK {
		t.Fatalf("second granted request: %d %s", st, body)
	}
	if st, _, _ := f.check(viaEdge.key); st != http.StatusTooManyRequests {
		t.Fatalf("add=2 granted more than 2: %d", st)
	}

	// Bad refills name the field; another tenant's key is unknown there.
	_, err = e.c.Logical().Write(e.path("tenants/acme/keys/"+viaVault.id+"/quota"), map[string]interface{}{"reset": true, "add": 1})
	wantStatus(t, err, http.StatusBadRequest, "reset", "add")
	_, err = e.c.Logical().Write(e.path("tenants/acme/keys/"+viaVault.id+"/quota"), map[string]interface{}{})
	wantStatus(t, err, http.StatusBadRequest, "reset", "add")
	_, err = e.c.Logical().Write(e.path("tenants/globex/keys/"+viaVault.id+"/quota"), map[string]interface{}{"reset": true})
	wantStatus(t, err, http.StatusNotFound, "no key")
}

// loader sends verifies at a steady rate until told to stop and counts
// the answers.
type loader struct {
	name          string
	valid, refuse int
	sent          int
	maxLatency    time.Duration
	elapsed       time.Duration
}

func (l *loader) rate() float64 { return float64(l.sent) / l.elapsed.Seconds() }

func runLoader(ctx context.Context, l *loader, every time.Duration, ask func() (string, error)) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	start := time.Now()
	defer func() { l.elapsed = time.Since(start) }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		t0 := time.Now()
		code, err := ask()
		if err != nil {
			return err
		}
		l.maxLatency = max(l.maxLatency, time.Since(t0))
		l.sent++
		switch code {
		case contract.CodeValid:
			l.valid++
		case contract.CodeQuotaExceeded:
			l.refuse++
		default:
			return fmt.Errorf("%s: unexpected %s", l.name, code)
		}
	}
}

// Two edges and Vault share one key's quota under load. Every participant
// refuses once its own view of the cluster's use reaches the quota; what
// it does not know yet is what the others served since they last told it.
// The test counts the VALID answers of all three and holds the overshoot
// to the bound of docs/monitoring.md:
//
//	overshoot <= sum over participants q of min(quota, rate_q * D_q)
//	D_edge  = 2*I + 2*t   (its report, then the others' next report answers)
//	D_vault = I + t       (the edges' next report answers)
//
// with I the edges' report interval and t the slowest Vault request seen.
func TestQuotaOvershootTwoEdges(t *testing.T) {
	const (
		quota    = 300
		interval = 250 * time.Millisecond
		every    = 10 * time.Millisecond // 100 requests/s per loader
		duration = 4 * time.Second
	)
	awayFromMidnight(t, 2*time.Minute)
	e := newEngine(t)
	e.tenant("acme", nil)
	e.role("acme", "metered", map[string]interface{}{"quota": quota, "quota_period": "day", "ttl": "1h"})
	k := e.issue("acme", "metered", nil)
	tune := func(c *edge.Config) { c.UsageInterval = interval }
	edges := []*edgeFixture{startEdgeWith(t, e, 30*time.Second, tune), startEdgeWith(t, e, 30*time.Second, tune)}

	loaders := []*loader{{name: "vault"}, {name: "edge1"}, {name: "edge2"}}
	asks := []func() (string, error){
		func() (string, error) {
			s, err := e.c.Logical().Write(e.path("verify"), map[string]interface{}{"api_key": k.key})
			if err != nil {
				return "", err
			}
			return s.Data["code"].(string), nil
		},
	}
	for _, f := range edges {
		asks = append(asks, func() (string, error) {
			_, h, _ := f.check(k.key)
			return h.Get(edge.HeaderCode), nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(loaders))
	for i := range loaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = runLoader(ctx, loaders[i], every, asks[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	total := 0
	var slowest time.Duration
	for _, l := range loaders {
		total += l.valid
		slowest = max(slowest, l.maxLatency)
	}
	bound := 0.0
	for _, l := range loaders {
		d := 2*interval + 2*slowest
		if l.name == "vault" {
			d = interval + slowest
		}
		bound += min(quota, l.rate()*d.Seconds())
	}
	overshoot := total - quota
	for _, l := range loaders {
		t.Logf("%s: %d requests in %s (%.0f/s), %d VALID, %d QUOTA_EXCEEDED, slowest %s",
			l.name, l.sent, l.elapsed.Round(time.Millisecond), l.rate(), l.valid, l.refuse, l.maxLatency.Round(time.Millisecond))
	}
	t.Logf("quota %d/day, report interval %s: %d VALID in all, overshoot %d (%.1f%%), bound %.0f",
		quota, interval, total, overshoot, 100*float64(overshoot)/quota, bound)
	if total < quota {
		t.Fatalf("only %d VALID answers: the cluster refused before the quota was spent", total)
	}
	if float64(overshoot) > bound {
		t.Fatalf("overshoot %d exceeds the bound %.0f", overshoot, bound)
	}
	// Once the edges' last reports are in, Vault holds every VALID answer.
	testvault.WaitFor(t, 10*time.Second, "Vault to count every VALID answer", func() error {
		if s := e.quotaStanding("acme", k.id); num(t, s["used"]) != int64(total) {
			return fmt.Errorf("Vault counts %v, the loaders saw %d", s["used"], total)
		}
		return nil
	})
}

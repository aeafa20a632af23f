// Command bench is a load test of the plugin's verify path against a real
// Vault dev server. Verify is measured next to three baselines that share
// Vault's HTTP and request-routing path, so the table tells how much the
// plugin adds rather than how fast this machine is:
//
//   - info:         the plugin's cheapest path (no storage), the ceiling set
//     by the hop from Vault to the plugin process;
//   - kv-v2 read:   a built-in engine reading a record of about verify's size;
//   - token lookup: a built-in path with no secrets engine at all.
//
// Verify runs twice: as POST (key in the body), for which Vault makes an
// existence-check round trip to the plugin before the request itself, and
// as GET with the key in the X-Api-Key header, which takes one round trip
// like info.
//
// Then, with -gateways (on by default), what a key check costs a gateway
// (gateways.go): Caddy proxying alone, Caddy with the apikeys module,
// Caddy forward_auth to the edge and to an empty 200, and the edge's gRPC
// Check, all before one tiny upstream, with the same workers.
//
// Run it as
//
//	go run ./scripts/bench [-duration 10s] [-warmup 2s] [-workers 16] [-rounds 1] [-json out.json] [-gateways=false] [-gateway-duration 5s]
//
// The load generator, Vault and the plugin share the machine, so absolute
// numbers depend on the cores left to each; the ratios are what to compare.
//
// On Linux each row also tells the CPU time per request that Vault, the
// plugin, the edge and the load generator spent, and what the rest of the
// machine spent ("other": near 0 unless something else was running, which
// makes the row worthless). On a saturated machine req/s is about the cores
// divided by the row's CPU time per request, so these columns say which
// process a difference between two rows comes from.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/vault/api"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/keyformat"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

const (
	mount  = "apikeys"
	tenant = "bench"
	role   = "web"

	// maxErrorRatio is the share of failed requests above which a target's
	// numbers are not worth reporting: they would measure error paths.
	maxErrorRatio = 0.01

	// The targets the docs promise for verify, relative to info.
	minVerifyThroughputRatio = 0.95
	maxVerifyP99Ratio        = 1.1
	// The edge verifier's target, relative to a KV v2 read through Vault.
	minEdgeOverKV = 3.0
)

type config struct {
	workers  int
	duration time.Duration
	warmup   time.Duration
	rounds   int
	jsonPath string
	// gateways adds the gateway rows (gateways.go), each measured for
	// gatewayDuration.
	gateways        bool
	gatewayDuration time.Duration
	// onlyGateways measures the edge check and the gateway rows alone.
	onlyGateways bool
}

// target is one endpoint under load. Want must appear in every answer: a
// 200 that carries the wrong answer (say an INVALID verify) measures a
// different code path and counts as an error.
type target struct {
	Name   string `json:"name"`
	Method string `json:"method"`
	Path   string `json:"path"`
	body   []byte
	want   []byte
	// apiKey goes in the X-Api-Key header (GET verify, edge).
	apiKey string
	// url, when set, replaces Vault's address and Path (the edge).
	url string
	// gateway: a gateway row (gateways.go); grpc: sent as Envoy's Check
	// to the gRPC address in url.
	gateway, grpc bool
}

// roundResult is one measured attack on one target.
type roundResult struct {
	Requests   uint64        `json:"requests"`
	OK         uint64        `json:"ok"`
	Errors     uint64        `json:"errors"`
	Throughput float64       `json:"ok_per_second"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	Mean       time.Duration `json:"mean_ns"`
	Max        time.Duration `json:"max_ns"`
	MeanBytes  float64       `json:"mean_response_bytes"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	FirstError string        `json:"first_error,omitempty"`
	// CPU is the CPU time per request, in µs, by process ("vault",
	// "plugin", "edge", "bench") and of everything else on the machine
	// ("other"); a process that could not be measured is absent (see
	// cpuMeter).
	CPU map[string]float64 `json:"cpu_us_per_request,omitempty"`
}

func (r roundResult) success() float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.OK) / float64(r.Requests)
}

type targetReport struct {
	target
	// Median is the round with the median throughput; its latencies are
	// reported with it so that one row is one real measurement.
	Median roundResult   `json:"median"`
	Rounds []roundResult `json:"rounds"`
	// ErrorRatio is over all rounds, so a bad round cannot hide behind the
	// median.
	ErrorRatio float64 `json:"error_ratio"`
}

type machine struct {
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model,omitempty"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	GoVersion     string `json:"go_version"`
	VaultVersion  string `json:"vault_version"`
	PluginVersion string `json:"plugin_version"`
	LoadAvg       string `json:"load_avg_at_start,omitempty"`
}

type check struct {
	Name  string  `json:"name"`
	Ratio float64 `json:"ratio"`
	Pass  bool    `json:"pass"`
}

type report struct {
	Machine  machine        `json:"machine"`
	Command  string         `json:"command"`
	Workers  int            `json:"workers"`
	Duration string         `json:"duration"`
	Warmup   string         `json:"warmup"`
	Rounds   int            `json:"rounds"`
	Targets  []targetReport `json:"targets"`
	// MissMinusHitP50 is verify's p50 on a never-issued key minus on a
	// valid one (GET): the brute-force cost difference.
	MissMinusHitP50 string             `json:"miss_minus_hit_p50"`
	Ratios          map[string]float64 `json:"ratios"`
	Checks          []check            `json:"checks"`
}

func main() {
	os.Exit(run())
}

// run returns the exit code, so that deferred cleanup (the Vault server and
// its temporary directory) happens before the process exits.
func run() int {
	var cfg config
	flag.IntVar(&cfg.workers, "workers", 16, "concurrent requests in flight per target")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured load per target and round")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "load before each measurement whose results are discarded")
	flag.IntVar(&cfg.rounds, "rounds", 1, "run the target sequence this many times, interleaved, and report the median round")
	flag.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.BoolVar(&cfg.gateways, "gateways", true, "also measure the gateway rows: Caddy alone, with the apikeys module, forward_auth to the edge and to an empty 200, and the edge's gRPC Check")
	flag.DurationVar(&cfg.gatewayDuration, "gateway-duration", 0, "measured load per gateway row and round (default: -duration)")
	flag.BoolVar(&cfg.onlyGateways, "only-gateways", false, "measure only the edge check and the gateway rows (more rounds of them in the same time)")
	flag.Parse()
	if cfg.gatewayDuration <= 0 {
		cfg.gatewayDuration = cfg.duration
	}
	if cfg.workers < 1 || cfg.rounds < 1 || cfg.duration <= 0 || cfg.warmup < 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench: -workers and -rounds must be >= 1, -duration > 0, -warmup >= 0, and no arguments")
		flag.Usage()
		return 2
	}
	logger := log.New(os.Stderr, "bench: ", 0)

	// On the first SIGINT/SIGTERM the context ends the running attack and
	// the deferred Cleanup stops Vault; a second signal kills at once (Vault
	// then dies with us through Pdeathsig, but its temp directory stays).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }()

	rep, err := bench(ctx, cfg, logger)
	if err != nil {
		if ctx.Err() != nil {
			logger.Printf("interrupted: %v", err)
			return 130
		}
		logger.Printf("%v", err)
		return 1
	}
	printReport(os.Stdout, rep)
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, rep); err != nil {
			logger.Printf("%v", err)
			return 1
		}
		logger.Printf("wrote %s", cfg.jsonPath)
	}
	// A ratio miss is a finding, not a failure; too many errors means the
	// numbers above are not a measurement of the intended paths.
	code := 0
	for _, t := range rep.Targets {
		if t.ErrorRatio > maxErrorRatio {
			logger.Printf("%s: %.2f%% of requests failed (limit %.0f%%); first error: %s",
				t.Name, 100*t.ErrorRatio, 100*maxErrorRatio, firstError(t))
			code = 1
		}
	}
	return code
}

func bench(ctx context.Context, cfg config, logger *log.Logger) (*report, error) {
	srv, err := testvault.Start(ctx, testvault.Options{Log: logger.Printf})
	if err != nil {
		return nil, fmt.Errorf("start vault: %w", err)
	}
	defer srv.Cleanup()

	targets, err := setup(ctx, srv, logger)
	if err != nil {
		return nil, fmt.Errorf("%w\n--- vault log (tail) ---\n%s", err, srv.LogTail(30))
	}
	edgeURL, edgeGRPC, edgePID, stopEdge, err := startEdge(ctx, srv, logger)
	if err != nil {
		return nil, err
	}
	defer stopEdge()
	// The edge verifier next to the gateway: same key, same load tool,
	// same run, its own process.
	key := targets[4].apiKey
	targets = append(targets, target{Name: "edge check", Method: http.MethodGet, Path: "check", url: edgeURL + "/check",
		apiKey: key, want: []byte(`"code":"VALID"`)})
	caddyPID := 0
	if cfg.gateways {
		g, err := startGateways(ctx, srv, strings.TrimPrefix(edgeURL, "http://"), edgeGRPC, key, logger)
		if err != nil {
			return nil, err
		}
		defer g.stop()
		defer closeGRPC()
		for i := range g.targets {
			g.targets[i].gateway = true
		}
		targets = append(targets, g.targets...)
		caddyPID = g.caddyPID
	}
	vaultRows := !cfg.onlyGateways || !cfg.gateways
	if !vaultRows {
		targets = targets[6:] // from the edge check on
	}
	m, err := describeMachine(ctx, srv)
	if err != nil {
		return nil, err
	}
	cpu := newCPUMeter(srv.VaultBin, edgePID, caddyPID)

	// One transport for all attacks, so the warmup's connections are the
	// ones the measurement uses and no run pays for TCP handshakes.
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil, // loopback; an HTTP_PROXY in the environment must not sit in between
			MaxIdleConns:        4 * cfg.workers,
			MaxIdleConnsPerHost: 4 * cfg.workers,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	defer client.CloseIdleConnections()

	// Each answer must be right before any load: a benchmark of failing
	// requests is worthless, and this shows the body that was wrong.
	for _, t := range targets {
		if t.grpc {
			if err := probeGRPC(ctx, t); err != nil {
				return nil, err
			}
			continue
		}
		if err := probe(ctx, client, srv, t); err != nil {
			return nil, err
		}
	}

	results := make([][]roundResult, len(targets))
	for r := 0; r < cfg.rounds; r++ {
		for i, t := range targets {
			d := cfg.duration
			if t.gateway {
				d = cfg.gatewayDuration
			}
			run := func(d time.Duration) (roundResult, error) {
				if t.grpc {
					return attackGRPC(ctx, t, cfg.workers, d)
				}
				return attack(ctx, client, srv, t, cfg.workers, d)
			}
			logger.Printf("round %d/%d: %s (%s warmup, %s measured)", r+1, cfg.rounds, t.Name, cfg.warmup, d)
			if cfg.warmup > 0 {
				if _, err := run(cfg.warmup); err != nil {
					return nil, fmt.Errorf("%s warmup: %w", t.Name, err)
				}
			}
			before := cpu.sample()
			res, err := run(d)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.Name, err)
			}
			res.CPU = cpu.sample().perRequest(before, res.Requests)
			results[i] = append(results[i], res)
		}
	}

	rep := &report{
		Machine:  m,
		Command:  commandLine(),
		Workers:  cfg.workers,
		Duration: cfg.duration.String(),
		Warmup:   cfg.warmup.String(),
		Rounds:   cfg.rounds,
		Ratios:   map[string]float64{},
	}
	for i, t := range targets {
		rep.Targets = append(rep.Targets, summarize(t, results[i]))
	}
	gatewayRatios(rep)
	if vaultRows {
		verify, info, kv, verifyGet := rep.Targets[0].Median, rep.Targets[1].Median, rep.Targets[2].Median, rep.Targets[4].Median
		rep.Ratios["verify/info req/s"] = ratio(verify.Throughput, info.Throughput)
		rep.Ratios["verify/info p99"] = ratio(float64(verify.P99), float64(info.P99))
		rep.Ratios["verify GET/info req/s"] = ratio(verifyGet.Throughput, info.Throughput)
		rep.Ratios["verify GET/info p99"] = ratio(float64(verifyGet.P99), float64(info.P99))
		rep.Ratios["info/kv req/s"] = ratio(info.Throughput, kv.Throughput)
		miss := rep.Targets[5].Median
		edge := rep.Targets[6].Median
		rep.Ratios["edge/kv req/s"] = ratio(edge.Throughput, kv.Throughput)
		rep.Ratios["edge/verify GET req/s"] = ratio(edge.Throughput, verifyGet.Throughput)
		rep.MissMinusHitP50 = (miss.P50 - verifyGet.P50).String()
		rep.Ratios["verify/kv req/s"] = ratio(verify.Throughput, kv.Throughput)
		rep.Checks = append(rep.Checks, check{
			Name:  fmt.Sprintf("edge req/s >= %.0f x kv-v2 read", minEdgeOverKV),
			Ratio: rep.Ratios["edge/kv req/s"],
			Pass:  rep.Ratios["edge/kv req/s"] >= minEdgeOverKV,
		})
		// POST verify pays a second plugin round trip (Vault's existence check
		// before every write) that GET info does not; GET verify does not.
		for _, v := range []string{"verify", "verify GET"} {
			rep.Checks = append(rep.Checks,
				check{
					Name:  fmt.Sprintf("%s req/s >= %.2f x info", v, minVerifyThroughputRatio),
					Ratio: rep.Ratios[v+"/info req/s"],
					Pass:  rep.Ratios[v+"/info req/s"] >= minVerifyThroughputRatio,
				},
				check{
					Name:  fmt.Sprintf("%s p99 <= %.1f x info p99", v, maxVerifyP99Ratio),
					Ratio: rep.Ratios[v+"/info p99"],
					Pass:  rep.Ratios[v+"/info p99"] > 0 && rep.Ratios[v+"/info p99"] <= maxVerifyP99Ratio,
				})
		}
	}
	return rep, nil
}

// setup mounts the plugin, issues the key verify is measured with, writes
// the KV record, and returns the targets in report order (verify first: the
// ratios index them).
func setup(ctx context.Context, srv *testvault.Server, logger *log.Logger) ([]target, error) {
	c := srv.Client
	if err := srv.Mount(ctx, mount); err != nil {
		return nil, err
	}
	// GET verify reads the key from this header; Vault forwards it only
	// when the mount is tuned for it.
	if err := c.Sys().TuneMountAllowNilWithContext(ctx, mount, api.TuneMountConfigInput{PassthroughRequestHeaders: &[]string{"X-Api-Key"}}); err != nil {
		return nil, fmt.Errorf("tune %s: %w", mount, err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/tenants/"+tenant, map[string]interface{}{}); err != nil {
		return nil, fmt.Errorf("create tenant %s: %w", tenant, err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, mount+"/tenants/"+tenant+"/roles/"+role,
		map[string]interface{}{"scopes": "read,write", "ttl": "1h"}); err != nil {
		return nil, fmt.Errorf("create role %s: %w", role, err)
	}
	s, err := c.Logical().ReadWithContext(ctx, mount+"/tenants/"+tenant+"/creds/"+role)
	if err != nil {
		return nil, fmt.Errorf("issue key: %w", err)
	}
	if s == nil {
		return nil, errors.New("issue key: empty answer")
	}
	key, _ := s.Data["api_key"].(string)
	if key == "" {
		return nil, fmt.Errorf("issue key: no api_key in %v", s.Data)
	}

	// The KV record is built from a real verify answer, so kv-v2 read moves
	// about as many bytes as verify does and the two rows compare fairly.
	v, err := c.Logical().WriteWithContext(ctx, mount+"/verify", map[string]interface{}{"api_key": key})
	if err != nil {
		return nil, fmt.Errorf("verify the issued key: %w", err)
	}
	if v == nil || v.Data["code"] != "VALID" {
		return nil, fmt.Errorf("verify the issued key: want code VALID, got %#v", v)
	}
	if err := ensureKVv2(ctx, c); err != nil {
		return nil, err
	}
	if err := writeKV(ctx, c, kvRecord(v.Data)); err != nil {
		return nil, err
	}
	logger.Printf("tenant %s, role %s, key %s..., secret/data/bench written", tenant, role, key[:min(len(key), 16)])

	verifyBody, err := json.Marshal(map[string]string{"api_key": key})
	if err != nil {
		return nil, fmt.Errorf("encode verify body: %w", err)
	}
	lookupBody, err := json.Marshal(map[string]string{"token": srv.Token})
	if err != nil {
		return nil, fmt.Errorf("encode lookup body: %w", err)
	}
	return []target{
		{Name: "verify", Method: http.MethodPost, Path: mount + "/verify", body: verifyBody, want: []byte(`"code":"VALID"`)},
		{Name: "info", Method: http.MethodGet, Path: mount + "/info", want: []byte(`"version"`)},
		{Name: "kv-v2 read", Method: http.MethodGet, Path: "secret/data/bench", want: []byte(`"key_id"`)},
		{Name: "token lookup", Method: http.MethodPost, Path: "auth/token/lookup", body: lookupBody, want: []byte(`"policies"`)},
		{Name: "verify GET", Method: http.MethodGet, Path: mount + "/verify", apiKey: key, want: []byte(`"code":"VALID"`)},
		// A well-formed key that was never issued: what a brute-force guess
		// costs, next to the hit above.
		{Name: "verify GET miss", Method: http.MethodGet, Path: mount + "/verify", apiKey: neverIssued(key), want: []byte(`"code":"NOT_FOUND"`)},
	}, nil
}

// kvRecord flattens a verify answer to the string fields a KV record holds.
func kvRecord(d map[string]interface{}) map[string]interface{} {
	str := func(v interface{}) string {
		switch x := v.(type) {
		case nil:
			return ""
		case string:
			return x
		case []interface{}:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			return strings.Join(parts, ",")
		default:
			b, err := json.Marshal(x)
			if err != nil {
				return fmt.Sprint(x)
			}
			return string(b)
		}
	}
	rec := map[string]interface{}{}
	for _, f := range []string{"key_id", "tenant", "role", "scopes", "environment", "metadata", "expires_at"} {
		rec[f] = str(d[f])
	}
	return rec
}

// ensureKVv2 enables KV v2 at secret/ unless it is there (dev mode mounts it).
func ensureKVv2(ctx context.Context, c *api.Client) error {
	mounts, err := c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	if m, ok := mounts["secret/"]; ok {
		if m.Type != "kv" || m.Options["version"] != "2" {
			return fmt.Errorf("secret/ is mounted as %s version %q, want kv version 2", m.Type, m.Options["version"])
		}
		return nil
	}
	err = c.Sys().MountWithContext(ctx, "secret", &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}})
	if err != nil {
		return fmt.Errorf("enable kv v2 at secret/: %w", err)
	}
	return nil
}

// writeKV retries for a while because a freshly enabled KV v2 mount refuses
// writes until its background upgrade has finished.
func writeKV(ctx context.Context, c *api.Client, rec map[string]interface{}) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := c.Logical().WriteWithContext(ctx, "secret/data/bench", map[string]interface{}{"data": rec})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("write secret/data/bench: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (t target) targeter(srv *testvault.Server) vegeta.Targeter {
	h := http.Header{"X-Vault-Token": {srv.Token}}
	if t.apiKey != "" {
		h.Set("X-Api-Key", t.apiKey)
	}
	url := srv.Addr + "/v1/" + t.Path
	if t.url != "" {
		url = t.url
	}
	return vegeta.NewStaticTargeter(vegeta.Target{
		Method: t.Method,
		URL:    url,
		Body:   t.body,
		Header: h,
	})
}

// probe sends one request of the target and fails with its answer unless
// the answer is the one the load test counts as success.
func probe(ctx context.Context, client *http.Client, srv *testvault.Server, t target) error {
	var tgt vegeta.Target
	if err := t.targeter(srv)(&tgt); err != nil {
		return fmt.Errorf("%s: %w", t.Name, err)
	}
	req, err := tgt.Request()
	if err != nil {
		return fmt.Errorf("%s: %w", t.Name, err)
	}
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("%s: %w", t.Name, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return fmt.Errorf("%s: read answer: %w", t.Name, err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body.Bytes(), t.want) {
		return fmt.Errorf("%s %s /v1/%s: want HTTP 200 with %s, got HTTP %d: %s",
			t.Name, t.Method, t.Path, t.want, resp.StatusCode, truncate(body.String(), 500))
	}
	return nil
}

// attack runs the target at the highest rate the workers sustain: Freq 0
// means "no pacing", and MaxWorkers = Workers keeps the concurrency fixed so
// that every target is measured at the same load.
func attack(ctx context.Context, client *http.Client, srv *testvault.Server, t target, workers int, d time.Duration) (roundResult, error) {
	a := vegeta.NewAttacker(
		vegeta.Client(client),
		vegeta.Workers(uint64(workers)),
		vegeta.MaxWorkers(uint64(workers)),
	)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			a.Stop()
		case <-done:
		}
	}()

	return measure(ctx, a.Attack(t.targeter(srv), vegeta.Rate{Freq: 0}, d, t.Name), t.want)
}

// measure summarises an attack's results: a success is an HTTP 200 whose
// body holds want; the throughput counts successes only.
func measure(ctx context.Context, results <-chan *vegeta.Result, want []byte) (roundResult, error) {
	var m vegeta.Metrics
	var res roundResult
	for r := range results {
		m.Add(r)
		if r.Error == "" && r.Code == http.StatusOK && bytes.Contains(r.Body, want) {
			res.OK++
			continue
		}
		res.Errors++
		if res.FirstError == "" {
			res.FirstError = fmt.Sprintf("HTTP %d %s: %s", r.Code, r.Error, truncate(string(r.Body), 300))
		}
	}
	m.Close()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Requests = m.Requests
	res.Elapsed = m.Duration + m.Wait
	if s := res.Elapsed.Seconds(); s > 0 {
		res.Throughput = float64(res.OK) / s
	}
	res.P50, res.P99 = m.Latencies.P50, m.Latencies.P99
	res.Mean, res.Max = m.Latencies.Mean, m.Latencies.Max
	res.MeanBytes = m.BytesIn.Mean
	return res, nil
}

func summarize(t target, rounds []roundResult) targetReport {
	sorted := append([]roundResult(nil), rounds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Throughput < sorted[j].Throughput })
	tr := targetReport{target: t, Median: sorted[(len(sorted)-1)/2], Rounds: rounds}
	var reqs, errs uint64
	for _, r := range rounds {
		reqs += r.Requests
		errs += r.Errors
	}
	if reqs == 0 {
		tr.ErrorRatio = 1 // no answer at all is as bad as all errors
	} else {
		tr.ErrorRatio = float64(errs) / float64(reqs)
	}
	return tr
}

func firstError(t targetReport) string {
	for _, r := range t.Rounds {
		if r.FirstError != "" {
			return r.FirstError
		}
	}
	return "no requests completed"
}

// ratio is 0 when there is nothing to divide by, since JSON cannot carry
// the Inf or NaN a division would give.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func describeMachine(ctx context.Context, srv *testvault.Server) (machine, error) {
	h, err := srv.Client.Sys().HealthWithContext(ctx)
	if err != nil {
		return machine{}, fmt.Errorf("vault health: %w", err)
	}
	m := machine{
		CPUs:          runtime.NumCPU(),
		OS:            runtime.GOOS,
		Arch:          runtime.GOARCH,
		GoVersion:     runtime.Version(),
		VaultVersion:  h.Version,
		PluginVersion: srv.PluginVersion,
	}
	// Best effort, Linux only: they help a reader judge the numbers, and
	// their absence is no reason not to benchmark.
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m, nil
}

// commandLine is how to rerun this measurement; under "go run" os.Args[0]
// is a temporary binary, so it is spelled as the go run command.
func commandLine() string {
	parts := []string{"go", "run", "./scripts/bench"}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func printReport(w *os.File, rep *report) {
	m := rep.Machine
	cpu := fmt.Sprintf("%d CPUs", m.CPUs)
	if m.CPUModel != "" {
		cpu += " (" + m.CPUModel + ")"
	}
	fmt.Fprintf(w, "machine:  %s, %s/%s, %s", cpu, m.OS, m.Arch, m.GoVersion)
	if m.LoadAvg != "" {
		fmt.Fprintf(w, ", load avg %s at start", m.LoadAvg)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "vault:    %s dev server (in-memory storage), plugin %s\n", m.VaultVersion, m.PluginVersion)
	fmt.Fprintf(w, "command:  %s\n", rep.Command)
	fmt.Fprintf(w, "load:     %d workers at max rate, %s warmup + %s measured per target, %d round(s)",
		rep.Workers, rep.Warmup, rep.Duration, rep.Rounds)
	if rep.Rounds > 1 {
		fmt.Fprint(w, ", median round by req/s")
	}
	fmt.Fprintln(w, "; load generator, Vault and plugin share the machine")
	fmt.Fprintln(w)

	// Numbers align right; the names are padded by hand to stay left-aligned.
	width := len("target")
	for _, t := range rep.Targets {
		width = max(width, len(t.Name))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\trequests\treq/s\tp50\tp99\terrors\tsuccess\tresp bytes\t", width, "target")
	for _, role := range cpuRoles {
		fmt.Fprintf(tw, "%s µs\t", role)
	}
	fmt.Fprintln(tw)
	for _, t := range rep.Targets {
		r := t.Median
		fmt.Fprintf(tw, "%-*s\t%d\t%.0f\t%s\t%s\t%d\t%.2f%%\t%.0f\t",
			width, t.Name, r.Requests, r.Throughput, ms(r.P50), ms(r.P99), r.Errors, 100*r.success(), r.MeanBytes)
		for _, role := range cpuRoles {
			if us, ok := r.CPU[role]; ok {
				fmt.Fprintf(tw, "%.0f\t", us)
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintln(w, "µs: CPU time (user + system) per request of each process; other: the rest of the machine's busy time (high: something else ran)")
	if rep.Rounds > 1 {
		fmt.Fprintln(w)
		for _, t := range rep.Targets {
			rates := make([]string, len(t.Rounds))
			for i, r := range t.Rounds {
				rates[i] = fmt.Sprintf("%.0f", r.Throughput)
			}
			fmt.Fprintf(w, "%-20s req/s by round: %s\n", t.Name, strings.Join(rates, " "))
		}
	}
	fmt.Fprintln(w)
	for _, k := range []string{"verify/info req/s", "verify/info p99", "verify GET/info req/s", "verify GET/info p99", "info/kv req/s", "verify/kv req/s", "edge/kv req/s", "edge/verify GET req/s"} {
		if v, ok := rep.Ratios[k]; ok {
			fmt.Fprintf(w, "%-22s %.3f\n", k+":", v)
		}
	}
	for _, k := range gatewayRatioNames {
		if v, ok := rep.Ratios[k]; ok {
			fmt.Fprintf(w, "%-34s %.3f\n", k+":", v)
		}
	}
	if rep.MissMinusHitP50 != "" {
		fmt.Fprintf(w, "%-22s %s\n", "miss - hit p50:", rep.MissMinusHitP50)
	}
	fmt.Fprintln(w)
	for _, c := range rep.Checks {
		verdict := "FAIL"
		if c.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "%s: %s (%.3f)\n", c.Name, verdict, c.Ratio)
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func writeJSON(path string, rep *report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// neverIssued derives a key of the same prefix and environment that has a
// valid checksum but was never issued, so verify must look it up.
func neverIssued(key string) string {
	i := strings.LastIndexByte(key, '_')
	k, err := keyformat.Generate(key[:strings.IndexByte(key, '_')], key[strings.IndexByte(key, '_')+1:i])
	if err != nil {
		panic(err)
	}
	return k
}

// startEdge builds cmd/apikeys-edge and runs it against the server with the
// root token, reading the key from X-Api-Key; it returns the edge's base
// URL once /healthz answers, the address of its ext_authz gRPC, its pid,
// and a func that stops it.
func startEdge(ctx context.Context, srv *testvault.Server, logger *log.Logger) (string, string, int, func(), error) {
	root, err := testvault.RepoRoot()
	if err != nil {
		return "", "", 0, nil, err
	}
	bin := filepath.Join(srv.Dir, "apikeys-edge")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/apikeys-edge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", 0, nil, fmt.Errorf("build apikeys-edge: %w: %s", err, out)
	}
	port, err := testvault.FreePortPair()
	if err != nil {
		return "", "", 0, nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", port+1)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+srv.Addr, "VAULT_TOKEN="+srv.Token, "EDGE_MOUNT="+mount,
		"EDGE_LISTEN="+addr, "EDGE_GRPC_LISTEN="+grpcAddr, "EDGE_KEY_HEADER=X-Api-Key", "EDGE_LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Its own process group, killed with us even if we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", "", 0, nil, fmt.Errorf("start apikeys-edge: %w", err)
	}
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				logger.Printf("apikeys-edge serving at %s", url)
				return url, grpcAddr, cmd.Process.Pid, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", "", 0, nil, fmt.Errorf("apikeys-edge not healthy at %s after 30s", url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CPU accounting. Each measured attack reads the CPU time (user + system,
// all threads) that Vault, the plugin, the edge, this process and the whole
// machine have consumed so far, before and after, and reports the
// difference per request: where a target's CPU goes, which req/s alone
// cannot tell on a saturated machine. It reads /proc, so it is Linux only;
// elsewhere, or for a process it cannot find, the figure is absent and the
// table shows "-". /proc counts in clock ticks (10 ms): over a few seconds
// of thousands of requests a second that is about 1 µs per request.

// The processes whose CPU time is reported, in table order. "other" is the
// busy time of all CPUs less that of the processes before it: the kernel's
// own threads and interrupts (a few µs), time the hypervisor took (steal),
// and any other program that ran during the attack. A large "other" means
// the machine was not the benchmark's alone and the row is not to be
// trusted.
const (
	cpuVault  = "vault"
	cpuPlugin = "plugin"
	cpuEdge   = "edge"
	cpuCaddy  = "caddy"
	cpuBench  = "bench"
	cpuOther  = "other"
)

var cpuRoles = []string{cpuVault, cpuPlugin, cpuEdge, cpuCaddy, cpuBench, cpuOther}

// cpuMeter knows the processes serving the load. The plugin processes are
// looked up at every sample, since Vault may restart them.
type cpuMeter struct {
	vaultPID, edgePID, caddyPID int
	// tick is the unit of /proc's CPU times; 0 when /proc is unusable.
	tick time.Duration
}

// cpuProc is one process of a role; role "other" with pid 0 stands for the
// whole machine until perRequest subtracts the processes.
type cpuProc struct {
	role string
	pid  int
}

// cpuSample is the CPU time each process had consumed at one moment.
type cpuSample map[cpuProc]time.Duration

// newCPUMeter finds the Vault server among this process's children by its
// binary; the edge's pid is known from starting it.
func newCPUMeter(vaultBin string, edgePID, caddyPID int) *cpuMeter {
	m := &cpuMeter{edgePID: edgePID, caddyPID: caddyPID, tick: clockTick()}
	if m.tick == 0 {
		return m
	}
	self := os.Getpid()
	for _, pid := range procPIDs() {
		if st, ok := readProcStat(pid); ok && st.ppid == self {
			if args := procArgs(pid); len(args) > 0 && args[0] == vaultBin {
				m.vaultPID = pid
				break
			}
		}
	}
	return m
}

// sample reads the CPU time of every process of interest and the machine's;
// one that cannot be read is left out.
func (m *cpuMeter) sample() cpuSample {
	s := cpuSample{}
	if m.tick == 0 {
		return s
	}
	add := func(role string, pid int, st procStat) {
		s[cpuProc{role, pid}] = time.Duration(st.ticks) * m.tick
	}
	for role, pid := range map[string]int{cpuVault: m.vaultPID, cpuEdge: m.edgePID, cpuCaddy: m.caddyPID, cpuBench: os.Getpid()} {
		if pid == 0 {
			continue
		}
		if st, ok := readProcStat(pid); ok {
			add(role, pid, st)
		}
	}
	// The plugin: Vault's children running the plugin binary (one per
	// mount; more while Vault restarts one).
	if m.vaultPID != 0 {
		for _, pid := range procPIDs() {
			st, ok := readProcStat(pid)
			if !ok || st.ppid != m.vaultPID {
				continue
			}
			if args := procArgs(pid); len(args) > 0 && filepath.Base(args[0]) == testvault.PluginName {
				add(cpuPlugin, pid, st)
			}
		}
	}
	if t, ok := machineTicks(); ok {
		add(cpuOther, 0, procStat{ticks: t})
	}
	return s
}

// perRequest is the CPU time per request, in µs, each role spent between two
// samples. A process that started in between counts from its start; one
// that ended in between is lost (and lands in "other"). A role with no
// process in after is absent.
func (after cpuSample) perRequest(before cpuSample, requests uint64) map[string]float64 {
	if requests == 0 || len(after) == 0 {
		return nil
	}
	use := map[string]time.Duration{}
	var procs time.Duration
	for p, t := range after {
		d := t - before[p]
		use[p.role] += d
		if p.role != cpuOther {
			procs += d
		}
	}
	if _, ok := use[cpuOther]; ok {
		// Both are rounded to ticks, so a quiet machine can come out a
		// little below its processes' sum.
		use[cpuOther] = max(use[cpuOther]-procs, 0)
	}
	out := make(map[string]float64, len(use))
	for role, d := range use {
		out[role] = d.Seconds() * 1e6 / float64(requests)
	}
	return out
}

// procStat is what the bench needs of /proc/<pid>/stat.
type procStat struct {
	ppid  int
	ticks int64 // utime + stime of all threads, living and dead
}

// readProcStat parses /proc/<pid>/stat. Its second field, the command name
// in parentheses, may hold spaces and parentheses, so fields are counted
// from the last ')': ppid is the 4th field, utime and stime the 14th and
// 15th (proc(5)).
func readProcStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, the state
	if len(f) < 13 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{ppid: ppid, ticks: utime + stime}, true
}

// procArgs is a process's command line, nil if it cannot be read.
func procArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// procPIDs lists the processes in /proc.
func procPIDs() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// machineTicks is the busy time of all CPUs from the "cpu" line of
// /proc/stat: every column but idle and iowait, steal included (a CPU taken
// by the hypervisor was not this machine's to use). guest and guest_nice
// are already counted in user and nice.
func machineTicks() (int64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var busy int64
	// user nice system idle iowait irq softirq steal
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy, true
}

// clockTick is the unit of /proc's CPU times, 1/USER_HZ: the kernel hands it
// to every process as AT_CLKTCK in the auxiliary vector, which is where
// sysconf(_SC_CLK_TCK) reads it. 0 when there is no /proc.
func clockTick() time.Duration {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 0
	}
	// The vector is pairs of native words: type, value.
	w := strconv.IntSize / 8
	word := func(b []byte) uint64 {
		if w == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	for i := 0; i+2*w <= len(b); i += 2 * w {
		if word(b[i:]) == atClkTck {
			if hz := word(b[i+w:]); hz > 0 {
				return time.Second / time.Duration(hz)
			}
		}
	}
	return 10 * time.Millisecond // USER_HZ is 100 on every architecture Go runs on
}

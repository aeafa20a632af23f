package main

// The gateway rows: what checking a key costs a gateway, measured as
// requests through Caddy to one tiny upstream, by the same load tool and
// workers as the Vault rows:
//
//   - caddy alone:           reverse_proxy, no check (the ceiling);
//   - caddy + module:        the apikeys handler in Caddy's process;
//   - caddy forward_auth edge:  a second HTTP hop per request, to apikeys-edge;
//   - caddy forward_auth 200:   the same hop to a server that answers 200
//     at once (what the hop itself costs);
//   - edge gRPC Check:       Envoy's ext_authz call to apikeys-edge alone
//     (no gateway: there is no Envoy here), by a gRPC client with the
//     same number of workers, timed into vegeta's metrics.

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// The in-process module's target, relative to Caddy proxying alone.
const minModuleOverCaddy = 0.85

// Names of the gateway rows, for the ratios.
const (
	gwCaddy     = "caddy alone"
	gwModule    = "caddy + module"
	gwFwdEdge   = "caddy fwd_auth edge"
	gwFwdEmpty  = "caddy fwd_auth 200"
	gwGRPCCheck = "edge gRPC Check"
)

// benchCaddyfile: one site per row, all before the same upstream. %[1]d
// %[6]d %[7]d %[8]d the rows' ports, %[2]s upstream, %[3]s edge, %[4]s
// empty auth server, %[5]s Vault; the module reads the token from the
// environment, so it is never in a file.
const benchCaddyfile = `{
	admin off
	auto_https off
	persist_config off
}

http://127.0.0.1:%[1]d {
	reverse_proxy %[2]s
}

http://127.0.0.1:%[6]d {
	apikeys {
		vault_addr %[5]s
		mount apikeys
		token {env.APIKEYS_BENCH_TOKEN}
		key_header X-Api-Key
		scopes read
	}
	reverse_proxy %[2]s
}

http://127.0.0.1:%[7]d {
	forward_auth %[3]s {
		uri /check
		copy_headers X-Apikeys-Tenant X-Apikeys-Key-Id X-Apikeys-Scopes X-Apikeys-Role X-Apikeys-Code
	}
	reverse_proxy %[2]s
}

http://127.0.0.1:%[8]d {
	forward_auth %[4]s {
		uri /check
		copy_headers X-Apikeys-Tenant
	}
	reverse_proxy %[2]s
}
`

// gateways is what startGateways started.
type gateways struct {
	targets  []target
	caddyPID int
	stop     func()
}

// startGateways runs the tiny upstream and empty auth server (in this
// process), and Caddy with the module, and returns the gateway targets.
func startGateways(ctx context.Context, srv *testvault.Server, edgeHost, grpcAddr, key string, logger *log.Logger) (*gateways, error) {
	root, err := testvault.RepoRoot()
	if err != nil {
		return nil, err
	}
	build := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "caddy.sh"))
	build.Stderr = os.Stderr
	out, err := build.Output()
	if err != nil {
		return nil, fmt.Errorf("scripts/caddy.sh: %w", err)
	}
	caddyBin := strings.TrimSpace(string(out))

	var closers []func()
	stop := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	serve := func(h http.HandlerFunc) (string, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = s.Serve(l) }()
		closers = append(closers, func() { _ = s.Close() })
		return l.Addr().String(), nil
	}
	// The upstream names the tenant it was handed, so a row that let a
	// request through without the check's headers counts as an error.
	upstream, err := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "ok tenant=%s\n", r.Header.Get("X-Apikeys-Tenant"))
	})
	if err != nil {
		return nil, err
	}
	empty, err := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Apikeys-Tenant", tenant)
		w.WriteHeader(http.StatusOK)
	})
	if err != nil {
		stop()
		return nil, err
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = testvault.FreePortPair(); err != nil {
			stop()
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "apikeys-bench-caddy-")
	if err != nil {
		stop()
		return nil, err
	}
	closers = append(closers, func() { os.RemoveAll(dir) })
	conf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(benchCaddyfile, ports[0], upstream, edgeHost, empty, srv.Addr, ports[1], ports[2], ports[3])), 0o600); err != nil {
		stop()
		return nil, err
	}
	cmd := exec.Command(caddyBin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir,
		"APIKEYS_BENCH_TOKEN="+srv.Token)
	logFile, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		stop()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		stop()
		return nil, fmt.Errorf("start caddy: %w", err)
	}
	closers = append(closers, func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logFile.Close()
	})
	url := func(i int) string { return fmt.Sprintf("http://127.0.0.1:%d/api/thing", ports[i]) }
	through := []byte("ok tenant=" + tenant + "\n")
	g := &gateways{caddyPID: cmd.Process.Pid, stop: stop, targets: []target{
		{Name: gwCaddy, Method: http.MethodGet, Path: "caddy", url: url(0), want: []byte("ok tenant=\n")},
		{Name: gwModule, Method: http.MethodGet, Path: "caddy module", url: url(1), apiKey: key, want: through},
		{Name: gwFwdEdge, Method: http.MethodGet, Path: "caddy forward_auth edge", url: url(2), apiKey: key, want: through},
		{Name: gwFwdEmpty, Method: http.MethodGet, Path: "caddy forward_auth 200", url: url(3), apiKey: key, want: through},
		{Name: gwGRPCCheck, Method: "gRPC", Path: "envoy.service.auth.v3.Authorization/Check", url: grpcAddr, apiKey: key, grpc: true},
	}}
	// Caddy is up once the module has synced and lets the key through.
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url(1), nil)
		req.Header.Set("X-Api-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				logger.Printf("caddy (%s) serving on ports %v", caddyBin, ports)
				return g, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			b, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("caddy with the module did not let the key through within 60s: %v\n--- caddy log ---\n%s", err, truncate(string(b), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkRequest is the CheckRequest Envoy's ext_authz filter sends for a
// GET of /api/thing with the key in X-Api-Key on a route requiring read.
func checkRequest(key string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/api/thing", Host: "api.example.com", Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority": "api.example.com", ":method": "GET", ":path": "/api/thing", ":scheme": "http",
				"x-api-key": key, "user-agent": "bench", "x-forwarded-proto": "http",
			},
		}},
		ContextExtensions: map[string]string{"apikeys_scopes": "read"},
	}}
}

// grpcConns are the gRPC client connections by address, one per target
// for the whole run, as Envoy keeps its connection to the service.
var (
	grpcMu    sync.Mutex
	grpcConns = map[string]*grpc.ClientConn{}
)

func grpcClient(addr string) (authv3.AuthorizationClient, error) {
	grpcMu.Lock()
	defer grpcMu.Unlock()
	c := grpcConns[addr]
	if c == nil {
		var err error
		if c, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, fmt.Errorf("grpc client %s: %w", addr, err)
		}
		grpcConns[addr] = c
	}
	return authv3.NewAuthorizationClient(c), nil
}

func closeGRPC() {
	grpcMu.Lock()
	defer grpcMu.Unlock()
	for addr, c := range grpcConns {
		c.Close()
		delete(grpcConns, addr)
	}
}

// checkOnce sends one Check and reports it as vegeta would an HTTP request:
// code 200 for an OK answer carrying the key's tenant.
func checkOnce(ctx context.Context, client authv3.AuthorizationClient, req *authv3.CheckRequest) *vegeta.Result {
	start := time.Now()
	resp, err := client.Check(ctx, req)
	r := &vegeta.Result{Timestamp: start, Latency: time.Since(start), Method: "gRPC", URL: "Check"}
	switch {
	case err != nil:
		r.Error = err.Error()
	case codes.Code(resp.GetStatus().GetCode()) != codes.OK:
		r.Code = uint16(resp.GetDeniedResponse().GetStatus().GetCode())
		r.Body = []byte(resp.GetDeniedResponse().GetBody())
	default:
		r.Code = http.StatusOK
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "x-apikeys-tenant" && h.GetHeader().GetValue() == tenant {
				r.Body = []byte("tenant=" + tenant)
			}
		}
		r.BytesIn = uint64(len(r.Body))
	}
	return r
}

// attackGRPC keeps workers Checks in flight for d, like vegeta at max rate
// with a fixed worker count, and summarises them with vegeta's metrics.
func attackGRPC(ctx context.Context, t target, workers int, d time.Duration) (roundResult, error) {
	client, err := grpcClient(t.url)
	if err != nil {
		return roundResult{}, err
	}
	req := checkRequest(t.apiKey)
	want := []byte("tenant=" + tenant)
	results := make(chan *vegeta.Result, 4*workers)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				results <- checkOnce(ctx, client, req)
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()
	return measure(ctx, results, want)
}

// probeGRPC is probe for the gRPC row.
func probeGRPC(ctx context.Context, t target) error {
	client, err := grpcClient(t.url)
	if err != nil {
		return err
	}
	r := checkOnce(ctx, client, checkRequest(t.apiKey))
	if r.Error != "" || r.Code != http.StatusOK || string(r.Body) != "tenant="+tenant {
		return fmt.Errorf("%s: want an OK answer with x-apikeys-tenant %s, got code %d %s %s", t.Name, tenant, r.Code, r.Error, r.Body)
	}
	return nil
}

// gatewayRatios adds the gateway rows' ratios and the module's check.
func gatewayRatios(rep *report) {
	by := map[string]roundResult{}
	for _, t := range rep.Targets {
		by[t.Name] = t.Median
	}
	caddy := by[gwCaddy].Throughput
	if caddy == 0 {
		return
	}
	rep.Ratios["module/caddy req/s"] = ratio(by[gwModule].Throughput, caddy)
	rep.Ratios["fwd_auth edge/caddy req/s"] = ratio(by[gwFwdEdge].Throughput, caddy)
	rep.Ratios["fwd_auth 200/caddy req/s"] = ratio(by[gwFwdEmpty].Throughput, caddy)
	rep.Ratios["fwd_auth edge/fwd_auth 200 req/s"] = ratio(by[gwFwdEdge].Throughput, by[gwFwdEmpty].Throughput)
	rep.Ratios["module/fwd_auth edge req/s"] = ratio(by[gwModule].Throughput, by[gwFwdEdge].Throughput)
	rep.Ratios["gRPC Check/edge check req/s"] = ratio(by[gwGRPCCheck].Throughput, by["edge check"].Throughput)
	rep.Checks = append(rep.Checks, check{
		Name:  fmt.Sprintf("caddy + module req/s >= %.2f x caddy alone", minModuleOverCaddy),
		Ratio: rep.Ratios["module/caddy req/s"],
		Pass:  rep.Ratios["module/caddy req/s"] >= minModuleOverCaddy,
	})
}

// gatewayRatioNames are printed after the Vault rows' ratios.
var gatewayRatioNames = []string{
	"module/caddy req/s", "fwd_auth edge/caddy req/s", "fwd_auth 200/caddy req/s",
	"fwd_auth edge/fwd_auth 200 req/s", "module/fwd_auth edge req/s", "gRPC Check/edge check req/s",
}

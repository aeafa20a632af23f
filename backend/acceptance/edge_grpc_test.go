package acceptance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge/extauthz"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// No Envoy binary can be installed here, so these tests are Envoy's side
// of the conversation, in Envoy's own types (go-control-plane): the
// CheckRequest its ext_authz filter sends (attributes.request.http with
// lower-cased headers, pseudo-headers included, path and method; the
// downstream address in attributes.source; the route's
// context_extensions), and what the filter does with the CheckResponse
// (external_auth.proto): any status but OK is a denial answered with the
// denied response's HTTP status, headers and body; OK sets the ok
// response's headers on the request, removes headers_to_remove, and
// passes it upstream.

type envoySim struct {
	t      *testing.T
	client authv3.AuthorizationClient
	// raw sends headers as header_map, as Envoy does with
	// encode_raw_headers: true.
	raw bool
}

func startExtAuthz(t *testing.T, f *edgeFixture, opts extauthz.Options) authv3.AuthorizationClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extauthz.New(f.ed, opts).Register(g)
	go func() { _ = g.Serve(l) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); g.Stop() })
	return authv3.NewAuthorizationClient(conn)
}

// request is the CheckRequest Envoy sends for GET path: the route for
// /admin/ sets apikeys_scopes=admin in its per-route ext_authz config,
// the one for /api/ apikeys_scopes=read.
func (s envoySim) request(path, key string, hdr map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": path, ":scheme": "http",
		"user-agent": "curl/8.5.0", "accept": "*/*", "x-forwarded-proto": "http",
		"x-request-id": "9b0f6d0e-4f43-4d0e-9d0a-3c1f1f6f7a11",
	}
	if key != "" {
		h["authorization"] = "Bearer " + key
	}
	for k, v := range hdr {
		h[strings.ToLower(k)] = v
	}
	scopes := "read"
	if strings.HasPrefix(path, "/admin/") {
		scopes = "admin"
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id: h["x-request-id"], Method: "GET", Path: path, Host: "api.example.com", Scheme: "http",
		Protocol: "HTTP/1.1", Size: 0,
	}
	if s.raw {
		hm := &corev3.HeaderMap{}
		for k, v := range h {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		hr.HeaderMap = hm
	} else {
		hr.Headers = h
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 53412}},
		}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 10000}},
		}}},
		Request:           &authv3.AttributeContext_Request{Http: hr},
		ContextExtensions: map[string]string{extauthz.DefaultScopesExtension: scopes},
	}}
}

// get is a gatewayGet: Envoy's filter applied to the Check answer.
func (s envoySim) get(path, key string, hdr map[string]string) gatewayAnswer {
	s.t.Helper()
	return s.apply(s.request(path, key, hdr))
}

func (s envoySim) apply(cr *authv3.CheckRequest) gatewayAnswer {
	s.t.Helper()
	resp, err := s.client.Check(context.Background(), cr)
	if err != nil {
		s.t.Fatalf("Check: %v", err)
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		d := resp.GetDeniedResponse()
		if d == nil {
			s.t.Fatalf("denial (grpc %d) without a denied response", resp.GetStatus().GetCode())
		}
		h := http.Header{}
		for _, o := range d.GetHeaders() {
			h.Set(o.GetHeader().GetKey(), o.GetHeader().GetValue())
		}
		return gatewayAnswer{status: int(d.GetStatus().GetCode()), header: h, body: d.GetBody()}
	}
	ok := resp.GetOkResponse()
	up := http.Header{}
	if hm := cr.Attributes.Request.Http.GetHeaderMap(); hm != nil {
		for _, hv := range hm.GetHeaders() {
			up.Add(hv.GetKey(), string(hv.GetRawValue()))
		}
	}
	for k, v := range cr.Attributes.Request.Http.GetHeaders() {
		up.Set(k, v)
	}
	for _, o := range ok.GetHeaders() {
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			s.t.Errorf("ok header %s appended, not set: a client's value would stay", o.GetHeader().GetKey())
		}
		up.Set(o.GetHeader().GetKey(), o.GetHeader().GetValue())
	}
	for _, name := range ok.GetHeadersToRemove() {
		up.Del(name)
	}
	return gatewayAnswer{status: http.StatusOK, header: http.Header{}, upstream: up}
}

// TestGRPCCheck: every answer of the table through Envoy's Check, with the
// headers as a map and as header_map, the key from a configured header,
// the tenant from a context extension, a disabled key enabled and
// disabled again and a revoked key refused within the
// feed's latency, and the check failing closed once the edge is stale.
func TestGRPCCheck(t *testing.T) {
	e := newEngine(t)
	k := setupGatewayKeys(e)
	f := startEdge(t, e, 4*time.Second)
	client := startExtAuthz(t, f, extauthz.Options{KeyHeader: "X-Api-Key"})
	sim := envoySim{t: t, client: client}
	checkGatewayAnswers(t, sim.get, k, true)
	checkDisabledFollowsVault(t, e, sim.get, k)

	fresh := e.issue("acme", "web", nil)
	raw := envoySim{t: t, client: client, raw: true}
	if a := raw.get("/api/x", fresh.key, forgedHeaders); a.status != 200 || a.upstream.Get("X-Apikeys-Tenant") != "acme" || a.upstream.Get("X-Apikeys-Admin") != "" {
		t.Fatalf("header_map encoding: %d %v", a.status, a.upstream)
	}
	if a := raw.get("/admin/x", fresh.key, nil); a.status != 403 {
		t.Fatalf("header_map encoding, scope: %d", a.status)
	}
	// The configured key header comes before Authorization.
	if a := sim.get("/api/x", "acme_live_garbage", map[string]string{"x-api-key": fresh.key}); a.status != 200 {
		t.Fatalf("key in x-api-key: %d %s", a.status, a.body)
	}
	// A route limited to another tenant; a client cannot lift a route's
	// scope with the header, only add to it.
	cr := sim.request("/api/x", fresh.key, nil)
	cr.Attributes.ContextExtensions[extauthz.DefaultTenantExtension] = "globex"
	if a := sim.apply(cr); a.status != 401 || a.header.Get("X-Apikeys-Code") != "NOT_FOUND" {
		t.Fatalf("tenant extension: %d %s", a.status, a.header.Get("X-Apikeys-Code"))
	}
	if a := sim.get("/admin/x", fresh.key, map[string]string{"x-required-scopes": "read"}); a.status != 403 {
		t.Fatalf("scopes header lifted the route's scope: %d", a.status)
	}
	if a := sim.get("/api/x", fresh.key, map[string]string{"x-required-scopes": "admin"}); a.status != 403 {
		t.Fatalf("scopes header not required: %d", a.status)
	}

	e.revokeLease(fresh.lease)
	t.Logf("Check refuses a key revoked with vault lease revoke after %s",
		waitGateway(t, sim.get, fresh.key, 401, "NOT_FOUND", "revoked key", 5*time.Second))

	// Vault lost: a key the edge holds is served within the bound, one it
	// does not hold cannot be checked (503 UNAVAILABLE), and once the
	// bound has passed every check fails closed (503 STALE).
	if err := srv.Client.Auth().Token().RevokeOrphan(f.ed.Token()); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if a := sim.get("/api/x", k.valid.key, nil); a.status != 200 {
		t.Fatalf("within the staleness bound: %d %s", a.status, a.body)
	}
	if a := sim.get("/api/x", regenerateKey(t, k.valid.key), nil); a.status != 503 || a.header.Get("X-Apikeys-Code") != "UNAVAILABLE" {
		t.Fatalf("unknown key without Vault: %d %s", a.status, a.header.Get("X-Apikeys-Code"))
	}
	waitGateway(t, sim.get, k.valid.key, 503, "STALE", "stale edge", 15*time.Second)
	t.Logf("Check failed closed %s after Vault was lost (staleness 4s)", time.Since(cut))
}

// TestGRPCEdgeBinary runs the built apikeys-edge with -grpc-listen (and
// -key-header) against a real Vault, as Envoy's ext_authz cluster would
// reach it, and sends Envoy's CheckRequests through a real gRPC client: a
// valid key (bearer and the configured key header) OK with the upstream
// headers, no key denied 401 MISSING, a route's scope the key lacks
// denied 403 INSUFFICIENT_SCOPE; then SIGTERM, with a client still
// connected, stops it with status 0 and closes the gRPC port.
func TestGRPCEdgeBinary(t *testing.T) {
	e := newEngine(t)
	e.acme()
	k := e.issue("acme", "web", nil)
	bin := buildEdgeBinary(t)
	port, err := testvault.FreePortPair()
	if err != nil {
		t.Fatal(err)
	}
	listen, grpcListen := fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", port+1)
	cmd := exec.Command(bin, "-vault-addr", srv.Addr, "-mount", e.mount, "-listen", listen,
		"-grpc-listen", grpcListen, "-key-header", "X-Api-Key", "-staleness", "10s", "-poll-wait", "1s")
	// Only the gateway token of the caller's VAULT_* and EDGE_* settings.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "EDGE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "VAULT_TOKEN="+gatewayToken(t, e.mount))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("apikeys-edge output:\n%s", out.String())
		}
	})
	testvault.WaitFor(t, 30*time.Second, "apikeys-edge to load its snapshot", func() bool {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("apikeys-edge exited: %v", err)
		default:
		}
		resp, err := http.Get("http://" + listen + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	conn, err := grpc.NewClient(grpcListen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sim := envoySim{t: t, client: authv3.NewAuthorizationClient(conn)}
	a := sim.get("/api/x", k.key, forgedHeaders)
	if a.status != http.StatusOK || a.upstream.Get(edge.HeaderCode) != contract.CodeValid || a.upstream.Get(edge.HeaderTenant) != "acme" ||
		a.upstream.Get(edge.HeaderKeyID) != k.id || a.upstream.Get(edge.HeaderScopes) != "read,write" || a.upstream.Get("X-Apikeys-Admin") != "" {
		t.Fatalf("valid key: %d, upstream %v", a.status, a.upstream)
	}
	if a := sim.get("/api/x", "acme_live_garbage", map[string]string{"x-api-key": k.key}); a.status != http.StatusOK {
		t.Fatalf("key in the -key-header header: %d %s", a.status, a.body)
	}
	for _, c := range []struct {
		name, path, key string
		code            string
		grpc            codes.Code
	}{
		{"no key", "/api/x", "", contract.CodeMissing, codes.Unauthenticated},
		{"scope the key lacks", "/admin/x", k.key, contract.CodeInsufficientScope, codes.PermissionDenied},
	} {
		resp, err := sim.client.Check(context.Background(), sim.request(c.path, c.key, nil))
		if err != nil {
			t.Fatalf("%s: Check: %v", c.name, err)
		}
		if got := codes.Code(resp.GetStatus().GetCode()); got != c.grpc {
			t.Errorf("%s: gRPC status %s, want %s", c.name, got, c.grpc)
		}
		a := sim.get(c.path, c.key, nil)
		if a.status != contract.HTTPStatus(c.code) || a.header.Get(edge.HeaderCode) != c.code || !strings.Contains(a.body, `"code":"`+c.code+`"`) {
			t.Errorf("%s: %d %s %q, want %d %s", c.name, a.status, a.header.Get(edge.HeaderCode), a.body, contract.HTTPStatus(c.code), c.code)
		}
	}

	// SIGTERM with the client's connection open: the edge stops serving,
	// exits 0, and nothing listens on the gRPC port any more.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("apikeys-edge after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("apikeys-edge still running 10s after SIGTERM")
	}
	if c, err := net.DialTimeout("tcp", grpcListen, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the edge stopped", grpcListen)
	}
	if strings.Contains(out.String(), k.key) {
		t.Error("apikeys-edge logged a key")
	}
}

// buildEdgeBinary builds cmd/apikeys-edge into the test's directory.
func buildEdgeBinary(t *testing.T) string {
	t.Helper()
	root, err := testvault.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "apikeys-edge")
	build := exec.Command("go", "build", "-o", bin, "./cmd/apikeys-edge")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build apikeys-edge: %v\n%s", err, out)
	}
	return bin
}

// Package extauthz serves Envoy's external authorization over gRPC
// (envoy.service.auth.v3.Authorization/Check) from an edge verifier: the
// same decision, statuses and headers as the edge's HTTP /check, in the
// messages Envoy's ext_authz filter sends and reads. It is apart from
// backend/edge so that what embeds the verifier without Envoy (the Caddy
// module, Go services) does not carry Envoy's types.
package extauthz

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
)

// Context extensions a route sets in its ext_authz per-route config
// (check_settings.context_extensions), read by default.
const (
	DefaultScopesExtension = "apikeys_scopes"
	DefaultTenantExtension = "apikeys_tenant"
)

// Options say where a CheckRequest carries what the check needs. Header
// names are matched without regard to case (Envoy sends them lower-cased).
type Options struct {
	// KeyHeader, when set, is read before Authorization: Bearer.
	KeyHeader string
	// Required scopes: those of the ScopesExtension context extension
	// (set by the route, so the client cannot change it) and those of the
	// ScopesHeader header (default X-Required-Scopes), both: a header can
	// only add to what the route requires.
	ScopesHeader    string
	ScopesExtension string
	// The tenant filter: the TenantExtension context extension, else the
	// TenantHeader header (default X-Required-Tenant).
	TenantHeader    string
	TenantExtension string
}

// Server answers Check with an edge verifier.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	v    edge.Verifier
	opts Options
	now  func() time.Time
}

// New makes the server; Register puts it on a gRPC server.
func New(v edge.Verifier, opts Options) *Server {
	if opts.ScopesHeader == "" {
		opts.ScopesHeader = edge.DefaultScopesHeader
	}
	if opts.TenantHeader == "" {
		opts.TenantHeader = edge.DefaultTenantHeader
	}
	if opts.ScopesExtension == "" {
		opts.ScopesExtension = DefaultScopesExtension
	}
	if opts.TenantExtension == "" {
		opts.TenantExtension = DefaultTenantExtension
	}
	return &Server{v: v, opts: opts, now: time.Now}
}

// Register serves s as envoy.service.auth.v3.Authorization on g.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// grpcCode is the gRPC status a refusal travels with; Envoy reads any
// status but OK as a denial and answers the client with the denied
// response's HTTP status.
func grpcCode(status int) codes.Code {
	switch status {
	case 200:
		return codes.OK
	case 403:
		return codes.PermissionDenied
	case 429:
		return codes.ResourceExhausted
	case 503:
		return codes.Unavailable
	default:
		return codes.Unauthenticated
	}
}

// Check decides one request. A refusal is an answer, never an RPC error:
// Envoy's failure_mode_allow applies only to errors, and a verifier that
// cannot answer refuses (STALE, UNAVAILABLE, 503) rather than fail open.
func (s *Server) Check(ctx context.Context, cr *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := cr.GetAttributes()
	hr := attrs.GetRequest().GetHttp()
	get := headerGetter(hr)
	ext := attrs.GetContextExtensions()

	req := edge.Request{APIKey: edge.PresentedKey(get, s.opts.KeyHeader)}
	req.RequiredScopes = edge.ParseScopes(edge.ParseScopes(nil, ext[s.opts.ScopesExtension]), get(s.opts.ScopesHeader))
	if req.Tenant = ext[s.opts.TenantExtension]; req.Tenant == "" {
		req.Tenant = get(s.opts.TenantHeader)
	}
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		req.ClientIP, _ = netip.ParseAddr(sa.GetAddress())
	}
	a := edge.Check(ctx, s.v, &req)
	status := contract.HTTPStatus(a.Code)
	headers := make([]*corev3.HeaderValueOption, 0, 6)
	for _, h := range edge.AnswerHeaders(a) {
		headers = append(headers, header(h.Name, h.Value))
	}
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(grpcCode(status))}}
	if a.Valid {
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:         headers,
			HeadersToRemove: clientHeaders(hr, edge.AnswerHeaders(a)),
		}}
		return resp, nil
	}
	if ra := edge.RetryAfter(a, s.now()); ra != "" {
		headers = append(headers, header("Retry-After", ra))
	}
	body, _ := json.Marshal(a)
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Headers: append(headers, header("Content-Type", "application/json"), header("Cache-Control", "no-store")),
		Body:    string(body) + "\n",
	}}
	return resp, nil
}

// header is a header Envoy sets, replacing any value of that name.
func header(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: strings.ToLower(name), Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// clientHeaders are the X-Apikeys-* headers of the client's request that
// the answer does not set (those it sets replace the client's): Envoy
// removes them before the upstream sees the request.
func clientHeaders(hr *authv3.AttributeContext_HttpRequest, set []edge.Header) []string {
	var out []string
	add := func(name string) {
		if len(name) < len(edge.HeaderPrefix) || !strings.EqualFold(name[:len(edge.HeaderPrefix)], edge.HeaderPrefix) {
			return
		}
		name = strings.ToLower(name)
		for _, h := range set {
			if strings.EqualFold(h.Name, name) {
				return
			}
		}
		for _, o := range out {
			if o == name {
				return
			}
		}
		out = append(out, name)
	}
	for name := range hr.GetHeaders() {
		add(name)
	}
	for _, h := range hr.GetHeaderMap().GetHeaders() {
		add(h.GetKey())
	}
	return out
}

// headerGetter reads a request header by name in either of Envoy's
// encodings: the lower-cased map (headers), or header_map when the filter
// sets encode_raw_headers.
func headerGetter(hr *authv3.AttributeContext_HttpRequest) func(string) string {
	if m := hr.GetHeaders(); len(m) > 0 {
		return func(name string) string { return m[strings.ToLower(name)] }
	}
	raw := hr.GetHeaderMap().GetHeaders()
	return func(name string) string {
		for _, h := range raw {
			if strings.EqualFold(h.GetKey(), name) {
				if v := h.GetRawValue(); len(v) > 0 {
					return string(v)
				}
				return h.GetValue()
			}
		}
		return ""
	}
}

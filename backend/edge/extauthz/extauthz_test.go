package extauthz

import (
	"context"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
)

// fakeVerifier answers by key and records the request it was asked.
type fakeVerifier struct {
	answers map[string]edge.Answer
	err     error
	last    edge.Request
}

func (f *fakeVerifier) Verify(_ context.Context, r *edge.Request) (edge.Answer, error) {
	f.last = *r
	if f.err != nil {
		return edge.Answer{}, f.err
	}
	if a, ok := f.answers[r.APIKey]; ok {
		return a, nil
	}
	return contract.Refusal(contract.CodeNotFound), nil
}

func check(t *testing.T, s *Server, headers map[string]string, ext map[string]string) *authv3.CheckResponse {
	t.Helper()
	resp, err := s.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "198.51.100.7"},
		}}},
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: headers}},
		ContextExtensions: ext,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

func TestCheckAllowsWithTheAnswersHeaders(t *testing.T) {
	v := &fakeVerifier{answers: map[string]edge.Answer{"k": {Valid: true, Code: contract.CodeValid, Tenant: "acme", KeyID: "k1", Role: "web", Scopes: []string{"read", "write"}}}}
	s := New(v, Options{})
	resp := check(t, s, map[string]string{
		"authorization": "Bearer k", "x-required-scopes": "write", "x-apikeys-tenant": "globex", "x-apikeys-admin": "1",
	}, map[string]string{DefaultScopesExtension: "read", DefaultTenantExtension: "acme"})
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK || resp.GetOkResponse() == nil {
		t.Fatalf("not allowed: %v", resp)
	}
	if !slices.Equal(v.last.RequiredScopes, []string{"read", "write"}) || v.last.Tenant != "acme" || v.last.ClientIP.String() != "198.51.100.7" {
		t.Fatalf("asked %+v", v.last)
	}
	ok := resp.GetOkResponse()
	h := headerMap(ok.GetHeaders())
	if h["x-apikeys-tenant"] != "acme" || h["x-apikeys-scopes"] != "read,write" || h["x-apikeys-code"] != "VALID" {
		t.Fatalf("headers %v", h)
	}
	for _, o := range ok.GetHeaders() {
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("%s is appended, so a client's value would stay", o.GetHeader().GetKey())
		}
	}
	// The tenant header is replaced by the answer's; the other is removed.
	if !slices.Equal(ok.GetHeadersToRemove(), []string{"x-apikeys-admin"}) {
		t.Fatalf("headers_to_remove %v", ok.GetHeadersToRemove())
	}
}

func TestCheckDenies(t *testing.T) {
	v := &fakeVerifier{answers: map[string]edge.Answer{
		"limited": contract.Refusal(contract.CodeRateLimited),
		"scoped":  contract.Refusal(contract.CodeInsufficientScope),
	}}
	s := New(v, Options{KeyHeader: "X-Api-Key"})
	cases := []struct {
		name    string
		headers map[string]string
		status  int
		grpc    codes.Code
		code    string
	}{
		{"no key", map[string]string{}, 401, codes.Unauthenticated, contract.CodeMissing},
		{"unknown", map[string]string{"x-api-key": "nope"}, 401, codes.Unauthenticated, contract.CodeNotFound},
		{"scope", map[string]string{"x-api-key": "scoped"}, 403, codes.PermissionDenied, contract.CodeInsufficientScope},
		{"rate limited", map[string]string{"authorization": "bearer limited"}, 429, codes.ResourceExhausted, contract.CodeRateLimited},
	}
	for _, c := range cases {
		resp := check(t, s, c.headers, nil)
		d := resp.GetDeniedResponse()
		if codes.Code(resp.GetStatus().GetCode()) != c.grpc || d == nil || int(d.GetStatus().GetCode()) != c.status {
			t.Errorf("%s: %v", c.name, resp)
			continue
		}
		h := headerMap(d.GetHeaders())
		if h["x-apikeys-code"] != c.code || h["content-type"] != "application/json" || d.GetBody() != `{"valid":false,"code":"`+c.code+`"}`+"\n" {
			t.Errorf("%s: headers %v body %q", c.name, h, d.GetBody())
		}
		if (c.status == 429) != (h["retry-after"] == "1") {
			t.Errorf("%s: retry-after %q", c.name, h["retry-after"])
		}
	}
	v.err = edge.ErrStale
	resp := check(t, s, map[string]string{"x-api-key": "limited"}, nil)
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unavailable || resp.GetDeniedResponse().GetStatus().GetCode() != 503 ||
		headerMap(resp.GetDeniedResponse().GetHeaders())["x-apikeys-code"] != contract.CodeStale {
		t.Fatalf("stale: %v", resp)
	}
}

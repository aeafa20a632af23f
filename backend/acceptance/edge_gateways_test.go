package acceptance

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/edge"
	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/testvault"
)

// What the gateway tests share (Caddy with the module, nginx, Envoy's
// gRPC check): the keys of every answer a gateway can be shown, one table
// of what the client must get for each, and an upstream that tells what
// headers reached it.

// gatewayKeys are keys of each kind the table needs.
type gatewayKeys struct {
	valid     issued // acme/web: read, write
	cidr      issued // acme/office: only from 203.0.113.0/24
	metered   issued // acme/metered: one request an hour
	quota     issued // acme/quota: a quota of one request an hour (UTC)
	disabled  issued // acme/web, status=disabled
	suspended issued // globex, suspended
}

func setupGatewayKeys(e *engine) gatewayKeys {
	e.t.Helper()
	e.acme()
	e.role("acme", "office", map[string]interface{}{"scopes": "read", "environment": "live", "allowed_cidrs": "203.0.113.0/24", "ttl": "1h"})
	e.role("acme", "metered", map[string]interface{}{"scopes": "read", "environment": "live", "rate_limit": 1, "rate_limit_period": "1h", "ttl": "1h"})
	e.role("acme", "quota", map[string]interface{}{"scopes": "read", "environment": "live", "quota": 1, "quota_period": "hour", "ttl": "1h"})
	e.tenant("globex", map[string]interface{}{})
	e.role("globex", "web", map[string]interface{}{"scopes": "read", "ttl": "1h"})
	k := gatewayKeys{
		valid: e.issue("acme", "web", nil), cidr: e.issue("acme", "office", nil),
		metered: e.issue("acme", "metered", nil), quota: e.issue("acme", "quota", nil),
		disabled: e.issue("acme", "web", nil), suspended: e.issue("globex", "web", nil),
	}
	write(e.t, e.c, e.path("tenants/globex"), map[string]interface{}{"status": "suspended"})
	write(e.t, e.c, e.path("tenants/acme/keys/"+k.disabled.id), map[string]interface{}{"status": "disabled"})
	return k
}

// gatewayAnswer is what a client got through a gateway: for a request let
// through, the upstream's 200 and the headers that reached the upstream.
type gatewayAnswer struct {
	status   int
	header   http.Header // the gateway's answer
	body     string
	upstream http.Header // nil unless the request reached the upstream
}

// gatewayGet sends one request through a gateway: GET path (/api/...
// requires scope read, /admin/... scope admin) with the key as a bearer
// token (none when empty) and extra headers.
type gatewayGet func(path, key string, hdr map[string]string) gatewayAnswer

// httpGateway is the gatewayGet of a gateway listening at base.
func httpGateway(t *testing.T, base string) gatewayGet {
	return func(path, key string, hdr map[string]string) gatewayAnswer {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return gatewayAnswer{body: err.Error(), header: http.Header{}}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return gatewayAnswer{status: resp.StatusCode, header: resp.Header, body: string(b), upstream: upstreamHeaders(resp.Header, string(b))}
	}
}

// echoUpstream answers 200 with the request's headers as JSON.
func echoUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		_ = json.NewEncoder(w).Encode(r.Header)
	}))
	t.Cleanup(up.Close)
	return up
}

// upstreamHeaders decodes an echoUpstream answer; nil when the answer did
// not come from it.
func upstreamHeaders(h http.Header, body string) http.Header {
	if h.Get("X-Upstream") != "yes" {
		return nil
	}
	var up http.Header
	if err := json.Unmarshal([]byte(body), &up); err != nil {
		return nil
	}
	return up
}

// forgedHeaders are what a client sends to pass itself off as checked.
var forgedHeaders = map[string]string{
	"X-Apikeys-Tenant": "globex", "X-Apikeys-Scopes": "admin", "X-Apikeys-Role": "owner",
	"X-Apikeys-Key-Id": "forged", "X-Apikeys-Code": "VALID", "X-Apikeys-Admin": "true",
}

// checkGatewayAnswers runs the table: a valid key through with the
// answer's headers and none of the client's forged ones, and each refusal
// with its status (contract.HTTPStatus) and code: 429 with Retry-After, 1
// for RATE_LIMITED and the seconds to the quota's reset (the next UTC
// hour) for QUOTA_EXCEEDED. strictStrip: the
// gateway removes every X-Apikeys-* header of the client's; otherwise
// (nginx) it replaces those the contract defines, and the others are
// allowed through.
func checkGatewayAnswers(t *testing.T, get gatewayGet, k gatewayKeys, strictStrip bool) {
	t.Helper()
	a := get("/api/thing", k.valid.key, forgedHeaders)
	if a.status != http.StatusOK || a.upstream == nil {
		t.Fatalf("valid key: %d %s", a.status, a.body)
	}
	want := map[string]string{"X-Apikeys-Code": "VALID", "X-Apikeys-Tenant": "acme", "X-Apikeys-Key-Id": k.valid.id, "X-Apikeys-Scopes": "read,write", "X-Apikeys-Role": "web"}
	for name, v := range want {
		if got := a.upstream.Values(name); len(got) != 1 || got[0] != v {
			t.Errorf("upstream got %s %q, want %q", name, got, v)
		}
	}
	for name, vals := range a.upstream {
		if strings.HasPrefix(http.CanonicalHeaderKey(name), edge.HeaderPrefix) && want[http.CanonicalHeaderKey(name)] == "" && strictStrip {
			t.Errorf("a client-sent %s %q reached the upstream", name, vals)
		}
	}
	// The quota key's two requests must fall in one UTC hour.
	awayFromPeriodEnd(t, contract.PeriodHour, 20*time.Second)
	cases := []struct {
		name, path, key string
		hdr             map[string]string
		status          int
		code            string
	}{
		{"no key", "/api/x", "", nil, 401, "MISSING"},
		{"malformed", "/api/x", "acme_live_garbage", nil, 401, "MALFORMED"},
		{"never issued", "/api/x", regenerateKey(t, k.valid.key), nil, 401, "NOT_FOUND"},
		{"suspended tenant", "/api/x", k.suspended.key, nil, 401, "TENANT_SUSPENDED"},
		{"scope the key lacks", "/admin/x", k.valid.key, forgedHeaders, 403, "INSUFFICIENT_SCOPE"},
		{"client outside the key's CIDRs", "/api/x", k.cidr.key, nil, 403, "IP_NOT_ALLOWED"},
		{"first request of the hour", "/api/x", k.metered.key, nil, 200, "VALID"},
		{"second request of the hour", "/api/x", k.metered.key, nil, 429, "RATE_LIMITED"},
		{"disabled key", "/api/x", k.disabled.key, nil, 401, "DISABLED"},
		{"quota's first request of the hour", "/api/x", k.quota.key, nil, 200, "VALID"},
		{"over the hour's quota", "/api/x", k.quota.key, nil, 429, "QUOTA_EXCEEDED"},
	}
	for _, c := range cases {
		if want := contract.HTTPStatus(c.code); c.status != want {
			t.Fatalf("%s: the table says %d for %s, the contract %d", c.name, c.status, c.code, want)
		}
		a := get(c.path, c.key, c.hdr)
		answered := time.Now()
		if a.status != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, a.status, c.status, a.body)
			continue
		}
		if c.status == 200 {
			continue
		}
		if a.upstream != nil {
			t.Errorf("%s: the request reached the upstream", c.name)
		}
		if got := a.header.Get(edge.HeaderCode); got != c.code {
			t.Errorf("%s: %s %q, want %q", c.name, edge.HeaderCode, got, c.code)
		}
		var body struct {
			Valid bool   `json:"valid"`
			Code  string `json:"code"`
		}
		if err := json.Unmarshal([]byte(a.body), &body); err != nil || body.Valid || body.Code != c.code {
			t.Errorf("%s: body %q, want {valid:false, code:%s}", c.name, a.body, c.code)
		}
		if c.status == 429 {
			checkRetryAfter(t, c.name, a.header.Get("Retry-After"), c.code, answered)
		}
	}
}

// checkRetryAfter: RATE_LIMITED's Retry-After is 1 (edge.RetryAfter);
// QUOTA_EXCEEDED's the seconds from the answer to the next UTC hour, when
// the hourly quota is whole again, within a second.
func checkRetryAfter(t *testing.T, what, got, code string, answered time.Time) {
	t.Helper()
	secs, err := strconv.Atoi(got)
	if err != nil {
		t.Errorf("%s: Retry-After %q is not whole seconds", what, got)
		return
	}
	want := 1.0
	if code == contract.CodeQuotaExceeded {
		want = contract.PeriodHour.Next(answered).Sub(answered).Seconds()
	}
	if math.Abs(float64(secs)-want) > 1 {
		t.Errorf("%s: Retry-After %d, want %.1f (within a second)", what, secs, want)
	}
}

// awayFromPeriodEnd waits, when less than need is left of the current
// period p, until the next one has begun: a quota starts over then.
func awayFromPeriodEnd(t *testing.T, p contract.Period, need time.Duration) {
	t.Helper()
	next := p.Next(time.Now())
	if time.Until(next) > need {
		return
	}
	testvault.WaitFor(t, need+time.Minute, "the quota's "+p.String()+" to turn", func() bool { return !time.Now().Before(next) })
}

// checkDisabledFollowsVault: the key setupGatewayKeys disabled (refused
// DISABLED by the table) is VALID through the gateway again within the
// feed's latency once set status=active, and DISABLED again once
// disabled.
func checkDisabledFollowsVault(t *testing.T, e *engine, get gatewayGet, k gatewayKeys) {
	t.Helper()
	path := e.path("tenants/acme/keys/" + k.disabled.id)
	write(t, e.c, path, map[string]interface{}{"status": "active"})
	t.Logf("an enabled key is VALID again through the gateway after %s",
		waitGateway(t, get, k.disabled.key, http.StatusOK, "", "enabled key", 5*time.Second))
	if a := get("/api/x", k.disabled.key, nil); a.upstream.Get(edge.HeaderCode) != contract.CodeValid || a.upstream.Get(edge.HeaderKeyID) != k.disabled.id {
		t.Errorf("enabled key: the upstream got %s %q, %s %q", edge.HeaderCode, a.upstream.Get(edge.HeaderCode), edge.HeaderKeyID, a.upstream.Get(edge.HeaderKeyID))
	}
	write(t, e.c, path, map[string]interface{}{"status": "disabled"})
	t.Logf("a disabled key is refused through the gateway after %s",
		waitGateway(t, get, k.disabled.key, http.StatusUnauthorized, contract.CodeDisabled, "disabled key", 5*time.Second))
}

// waitGateway waits until the gateway answers key on /api/x with status,
// and returns how long that took.
func waitGateway(t *testing.T, get gatewayGet, key string, status int, code, what string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	testvault.WaitFor(t, limit, fmt.Sprintf("%s: %d %s", what, status, code), func() error {
		a := get("/api/x", key, nil)
		if a.status != status || (code != "" && a.header.Get(edge.HeaderCode) != code) {
			return fmt.Errorf("answered %d %s %s", a.status, a.header.Get(edge.HeaderCode), a.body)
		}
		return nil
	})
	return time.Since(start)
}

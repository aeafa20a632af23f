package chart

import (
	"encoding/json"
	"html/template"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/scripts/browser"
)

// The portal's policy (issue 17): nothing inline may run or style.
const portalCSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"

var chartPage = template.Must(template.New("p").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>Usage</title></head>
<body><h1>Usage of {{.Tenant}}</h1>
<figure id="verify">{{.Verify}}</figure><figure id="gateway">{{.Gateway}}</figure><figure id="latency">{{.Latency}}</figure>
</body></html>`))

// TestChartsRenderUnderTheStrictCSP draws the three charts in a real
// Chromium, in a page with the portal's CSP: no violation (no inline
// style), each chart laid out at the width of the page (it scales), the
// hover title in place.
func TestChartsRenderUnderTheStrictCSP(t *testing.T) {
	h := hours(48)
	for i := 0; i < 48; i++ {
		if i == 20 {
			continue // a gap
		}
		b := Bucket{Start: t0.Add(time.Duration(i) * time.Hour),
			VerifyByCode: map[string]uint64{"VALID": uint64(30 + i), "NOT_FOUND": uint64(i % 5), "RATE_LIMITED": uint64(i % 3)},
			Requests:     uint64(25 + i), Errors: uint64(i % 4)}
		if b.Requests > 0 && i%11 != 0 {
			b.LatencyMsAvg = lat(4 + float64(i%7))
		}
		h.Buckets = append(h.Buckets, b)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", portalCSP)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		err := chartPage.Execute(w, map[string]any{
			"Tenant":  "<b>acme</b>",
			"Verify":  Verifications(h, Options{ID: "v"}),
			"Gateway": Gateway(h, Options{ID: "g"}),
			"Latency": Latency(h, Options{ID: "l"}),
		})
		if err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()

	b := browser.LaunchT(t)
	for _, vp := range []browser.Viewport{browser.Desktop, browser.Phone} {
		p := b.PageT(t, browser.PageOptions{Viewport: vp})
		if _, err := p.Goto(srv.URL, "#latency svg"); err != nil {
			t.Fatal(err)
		}
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		if v := p.CSPViolations(); len(v) != 0 {
			t.Fatalf("%dpx: CSP violations %v", vp.Width, v)
		}
		if e := p.ConsoleErrors(); len(e) != 0 {
			t.Fatalf("%dpx: console errors %v", vp.Width, e)
		}
		raw, err := p.Eval(`Array.from(document.querySelectorAll("svg"), s => [s.getBoundingClientRect().width, s.parentElement.clientWidth, s.querySelectorAll("g.bar").length])`)
		if err != nil {
			t.Fatal(err)
		}
		var got [][3]float64
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("%d charts on the page", len(got))
		}
		for i, g := range got {
			if math.Abs(g[0]-g[1]) > 1 {
				t.Fatalf("%dpx: chart %d is %gpx wide in a %gpx figure: it does not scale", vp.Width, i, g[0], g[1])
			}
		}
		if got[0][2] != 48 || got[1][2] != 48 {
			t.Fatalf("bars %v, want 48 per bar chart", got)
		}
		tip, err := p.Text("#verify g.bar title")
		if err == nil && tip != "" {
			t.Fatalf("a <title> renders as visible text: %q", tip)
		}
		html, err := p.HTML("#verify g.bar")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(html, "<title>") || !strings.Contains(html, "3 Dec 2026 10:00–11:00 UTC") {
			t.Fatalf("first bar %q lacks its tooltip", html)
		}
		if h1, _ := p.Text("h1"); h1 != "Usage of <b>acme</b>" {
			t.Fatalf("h1 %q", h1)
		}
		if _, w, _, err := p.Screenshot(t.TempDir(), "charts"); err != nil || w != int(float64(vp.Width)*vp.Scale) {
			t.Fatalf("screenshot width %d: %v", w, err)
		}
	}
}

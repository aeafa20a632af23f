package chart

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html/template"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// node is a parsed SVG element.
type node struct {
	name     string
	attrs    map[string]string
	children []*node
	text     string // character data directly inside
}

func parse(t *testing.T, svg template.HTML) *node {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	d.Strict = true
	var stack []*node
	var root *node
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &node{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				n.attrs[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text += string(tok)
			}
		}
	}
	if root == nil || root.name != "svg" {
		t.Fatalf("no <svg> root:\n%s", svg)
	}
	return root
}

// all lists the elements under n (n included) for which keep is true.
func (n *node) all(keep func(*node) bool) []*node {
	var out []*node
	if keep(n) {
		out = append(out, n)
	}
	for _, c := range n.children {
		out = append(out, c.all(keep)...)
	}
	return out
}

func (n *node) byClass(class string) []*node {
	return n.all(func(e *node) bool { return e.attrs["class"] == class })
}

func (n *node) child(name string) *node {
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (n *node) float(t *testing.T, attr string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(n.attrs[attr], 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", n.name, attr, n.attrs[attr], err)
	}
	return v
}

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func hours(n int) History {
	return History{Granularity: Hour, From: t0, To: t0.Add(time.Duration(n-1) * time.Hour)}
}

func lat(v float64) *float64 { return &v }

// checkCSPSafe fails on what a strict CSP refuses or a page must not get:
// style attributes or elements, scripts, event handlers, foreign objects.
func checkCSPSafe(t *testing.T, root *node) {
	t.Helper()
	for _, e := range root.all(func(*node) bool { return true }) {
		switch e.name {
		case "style", "script", "foreignObject", "image", "a":
			t.Fatalf("element <%s> in the chart", e.name)
		}
		for a := range e.attrs {
			if a == "style" || strings.HasPrefix(strings.ToLower(a), "on") || a == "href" {
				t.Fatalf("attribute %s on <%s>", a, e.name)
			}
		}
	}
	if root.attrs["role"] != "img" || root.attrs["aria-label"] == "" || root.attrs["viewBox"] == "" {
		t.Fatalf("root attrs %v: want role=img, aria-label, viewBox", root.attrs)
	}
	if _, ok := root.attrs["width"]; ok {
		t.Fatal("fixed width: the chart must scale to its container")
	}
	if root.child("title") == nil || root.child("desc") == nil {
		t.Fatal("no <title> or <desc> at the top of the chart")
	}
	if root.attrs["aria-describedby"] != root.child("desc").attrs["id"] {
		t.Fatalf("aria-describedby %q names no <desc>", root.attrs["aria-describedby"])
	}
}

func TestVerificationsStackByCodeInContractOrder(t *testing.T) {
	h := hours(3)
	h.Buckets = []Bucket{
		{Start: t0, VerifyByCode: map[string]uint64{contract.CodeNotFound: 5, contract.CodeValid: 10}},
		{Start: t0.Add(time.Hour), VerifyByCode: map[string]uint64{contract.CodeValid: 20, contract.CodeRateLimited: 0}},
		{Start: t0.Add(2 * time.Hour), VerifyByCode: map[string]uint64{contract.CodeRateLimited: 40, contract.CodeValid: 40}},
	}
	root := parse(t, Verifications(h, Options{ID: "v"}))
	checkCSPSafe(t, root)

	bars := root.byClass("bar")
	if len(bars) != 3 {
		t.Fatalf("%d bars, want 3", len(bars))
	}
	// Legend: the codes present, in contract order (VALID, NOT_FOUND,
	// RATE_LIMITED), not in map or first-seen order.
	var legend []string
	for _, e := range root.byClass("legend-entry") {
		legend = append(legend, e.attrs["data-series"])
		if txt := e.child("text"); txt == nil || txt.text != e.attrs["data-series"] {
			t.Fatalf("legend entry %v has no text naming it", e.attrs)
		}
		if fill := e.child("rect").attrs["fill"]; fill != CodeColors[e.attrs["data-series"]] {
			t.Fatalf("legend %s colour %s", e.attrs["data-series"], fill)
		}
	}
	if want := []string{"VALID", "NOT_FOUND", "RATE_LIMITED"}; fmt.Sprint(legend) != fmt.Sprint(want) {
		t.Fatalf("legend %v, want %v", legend, want)
	}

	height := map[string]float64{} // "bar/code" -> height
	for i, b := range bars {
		segs := b.byClass("seg")
		bottom := math.Inf(1)
		for j, s := range segs {
			height[fmt.Sprintf("%d/%s", i, s.attrs["data-series"])] = s.float(t, "height")
			if s.attrs["fill"] != CodeColors[s.attrs["data-series"]] {
				t.Fatalf("bar %d %s fill %s", i, s.attrs["data-series"], s.attrs["fill"])
			}
			// Stacked: each segment sits on the one before.
			if j > 0 && math.Abs(s.float(t, "y")+s.float(t, "height")-bottom) > 0.11 {
				t.Fatalf("bar %d segment %d is not stacked on the one below", i, j)
			}
			bottom = s.float(t, "y")
		}
		if b.child("title") == nil || !strings.Contains(b.child("title").text, "UTC") {
			t.Fatalf("bar %d has no tooltip with its time", i)
		}
	}
	// Heights proportional to the counts (±0.1 of rounding).
	for _, c := range []struct {
		a, b  string
		ratio float64
	}{{"1/VALID", "0/VALID", 2}, {"0/VALID", "0/NOT_FOUND", 2}, {"2/VALID", "1/VALID", 2}, {"2/RATE_LIMITED", "2/VALID", 1}} {
		if got := height[c.a] / height[c.b]; math.Abs(got-c.ratio) > 0.02 {
			t.Fatalf("height %s / %s = %.3f, want %g (%v)", c.a, c.b, got, c.ratio, height)
		}
	}
	// A zero count draws no segment.
	if _, ok := height["1/RATE_LIMITED"]; ok {
		t.Fatal("a segment for a count of zero")
	}
	// Order within a bar is the contract's: VALID at the bottom.
	if s := bars[0].byClass("seg"); s[0].attrs["data-series"] != "VALID" || s[1].attrs["data-series"] != "NOT_FOUND" {
		t.Fatalf("bar 0 order %s, %s", s[0].attrs["data-series"], s[1].attrs["data-series"])
	}
	if !strings.Contains(bars[0].child("title").text, "15 verifications") || !strings.Contains(bars[0].child("title").text, "NOT_FOUND: 5") {
		t.Fatalf("tooltip %q", bars[0].child("title").text)
	}
}

func TestYTicksAreRound(t *testing.T) {
	for _, c := range []struct {
		max  float64
		want string
	}{
		{87, "[0 20 40 60 80 100]"},
		{5, "[0 1 2 3 4 5]"},
		{1, "[0 1]"},
		{1234, "[0 500 1000 1500]"},
		{0.37, "[0 0.1 0.2 0.3 0.4]"},
		{100, "[0 20 40 60 80 100]"},
	} {
		ticks, top := niceTicks(c.max)
		if fmt.Sprint(ticks) != c.want || top < c.max {
			t.Errorf("niceTicks(%g) = %v, top %g; want %s", c.max, ticks, top, c.want)
		}
	}
	h := hours(2)
	h.Buckets = []Bucket{{Start: t0, VerifyByCode: map[string]uint64{"VALID": 87}}}
	root := parse(t, Verifications(h, Options{}))
	var labels []string
	for _, g := range root.byClass("y-axis") {
		for _, tk := range g.byClass("tick") {
			labels = append(labels, tk.text)
		}
	}
	if fmt.Sprint(labels) != "[0 20 40 60 80 100]" {
		t.Fatalf("y labels %v", labels)
	}
	// The top tick is the top of the plot: a bar of 87 is 87% of it.
	_, ph := Options{}.withDefaults("", "").plot()
	if got := root.byClass("seg")[0].float(t, "height"); math.Abs(got-0.87*ph) > 0.1 {
		t.Fatalf("bar height %g, want %g", got, 0.87*ph)
	}
}

func TestXTicksAreUTCAndSpaced(t *testing.T) {
	h := hours(48)
	h.From = time.Date(2026, 12, 3, 0, 0, 0, 0, time.FixedZone("CET", 3600)) // 23:00 UTC the day before
	h.To = h.From.Add(47 * time.Hour)
	h.Buckets = []Bucket{{Start: h.From, VerifyByCode: map[string]uint64{"VALID": 1}}}
	root := parse(t, Verifications(h, Options{}))
	if n := len(root.byClass("bar")); n != 48 {
		t.Fatalf("%d bars, want 48", n)
	}
	var labels []string
	for _, tk := range root.byClass("x-axis")[0].byClass("tick") {
		labels = append(labels, strings.TrimSpace(tk.text))
	}
	if len(labels) < 4 || len(labels) > 10 {
		t.Fatalf("%d x labels: %v", len(labels), labels)
	}
	for _, l := range labels {
		hh, err := time.Parse("15:04", l)
		if err != nil || hh.Hour()%6 != 0 {
			t.Fatalf("x label %q is not a round UTC hour (labels %v)", l, labels)
		}
	}
	// The first bucket is 23:00 UTC on 2 Dec, whatever zone From had.
	if got := root.byClass("bar")[0].attrs["data-start"]; got != "2026-12-02T23:00:00Z" {
		t.Fatalf("first bucket %s", got)
	}
	days := parse(t, Verifications(History{Granularity: Day, From: t0.Truncate(24 * time.Hour), To: t0.Truncate(24 * time.Hour).Add(89 * 24 * time.Hour),
		Buckets: []Bucket{{Start: t0, VerifyByCode: map[string]uint64{"VALID": 3}}}}, Options{}))
	if n := len(days.byClass("bar")); n != 90 {
		t.Fatalf("%d daily bars, want 90", n)
	}
	dl := days.byClass("x-axis")[0].byClass("tick")
	if len(dl) < 4 || len(dl) > 10 {
		t.Fatalf("%d daily labels", len(dl))
	}
	if _, err := time.Parse("2 Jan", dl[0].text); err != nil {
		t.Fatalf("daily label %q: %v", dl[0].text, err)
	}
}

func TestMissingBucketsAreZero(t *testing.T) {
	h := hours(5)
	h.Buckets = []Bucket{
		{Start: t0, VerifyByCode: map[string]uint64{"VALID": 4}, Requests: 4},
		{Start: t0.Add(4 * time.Hour), VerifyByCode: map[string]uint64{"VALID": 8}, Requests: 8},
	}
	root := parse(t, Verifications(h, Options{}))
	bars := root.byClass("bar")
	if len(bars) != 5 {
		t.Fatalf("%d bars, want 5 (the range, gaps included)", len(bars))
	}
	for i, want := range []int{1, 0, 0, 0, 1} {
		if got := len(bars[i].byClass("seg")); got != want {
			t.Fatalf("bar %d has %d segments, want %d", i, got, want)
		}
	}
	if !strings.Contains(bars[2].child("title").text, ": 0 verifications") {
		t.Fatalf("gap tooltip %q", bars[2].child("title").text)
	}
	// Bars keep their slot: the last is at 4/5 of the plot, not next to the first.
	x0, x4 := bars[0].byClass("seg")[0].float(t, "x"), bars[4].byClass("seg")[0].float(t, "x")
	pw, _ := Options{}.withDefaults("", "").plot()
	if math.Abs((x4-x0)-4*pw/5) > 0.2 {
		t.Fatalf("bar 4 is %g right of bar 0, want %g", x4-x0, 4*pw/5)
	}
	// Without From/To the range is the buckets'.
	h.From, h.To = time.Time{}, time.Time{}
	if n := len(parse(t, Verifications(h, Options{})).byClass("bar")); n != 5 {
		t.Fatalf("%d bars from the buckets alone", n)
	}
}

func TestEmptyRange(t *testing.T) {
	for name, h := range map[string]History{
		"no buckets":  {Granularity: Hour},
		"all zero":    {Granularity: Day, From: t0, To: t0.Add(48 * time.Hour), Buckets: []Bucket{{Start: t0}}},
		"zero counts": {Granularity: Hour, From: t0, To: t0, Buckets: []Bucket{{Start: t0, VerifyByCode: map[string]uint64{"VALID": 0}}}},
	} {
		for kind, svg := range map[string]template.HTML{"verifications": Verifications(h, Options{}), "gateway": Gateway(h, Options{}), "latency": Latency(h, Options{})} {
			root := parse(t, svg)
			checkCSPSafe(t, root)
			if n := len(root.byClass("bar")) + len(root.byClass("point")); n != 0 {
				t.Fatalf("%s/%s: %d marks in an empty chart", name, kind, n)
			}
			e := root.byClass("empty")
			if len(e) != 1 || e[0].text != EmptyText {
				t.Fatalf("%s/%s: no %q text:\n%s", name, kind, EmptyText, svg)
			}
			if !strings.Contains(root.child("desc").text, EmptyText) {
				t.Fatalf("%s/%s: desc %q", name, kind, root.child("desc").text)
			}
		}
	}
}

func TestMarkupIsEscaped(t *testing.T) {
	const evil = `<script>alert("x")</script>&<b onload=x>`
	h := hours(2)
	h.Buckets = []Bucket{{Start: t0, VerifyByCode: map[string]uint64{evil: 3, "VALID": 1}, Requests: 2, LatencyMsAvg: lat(2)}}
	for kind, svg := range map[string]template.HTML{
		"verifications": Verifications(h, Options{Title: "Acme <i>Corp</i> & co", ID: `x"><script>`}),
		"gateway":       Gateway(h, Options{Title: evil}),
		"latency":       Latency(h, Options{Title: evil}),
	} {
		root := parse(t, svg) // parses only if nothing broke out
		checkCSPSafe(t, root)
		if n := len(root.all(func(e *node) bool { return e.name == "i" || e.name == "b" })); n != 0 {
			t.Fatalf("%s: markup from input became elements", kind)
		}
		if strings.Contains(string(svg), "<script") || strings.Contains(string(svg), "<b ") {
			t.Fatalf("%s: raw markup in output:\n%s", kind, svg)
		}
	}
	root := parse(t, Verifications(h, Options{Title: "Acme <i>Corp</i> & co", ID: `x"><script>`}))
	if got := root.child("title").text; got != "Acme <i>Corp</i> & co" {
		t.Fatalf("title text %q", got)
	}
	if id := root.child("desc").attrs["id"]; id != "xscript-desc" {
		t.Fatalf("desc id %q", id)
	}
	var found bool
	for _, e := range root.byClass("legend-entry") {
		if e.attrs["data-series"] == evil && e.child("text").text == evil && e.child("rect").attrs["fill"] == otherColor {
			found = true
		}
	}
	if !found {
		t.Fatal("the unknown code is not in the legend as text, in the other colour")
	}
	// It stacks after the contract's codes.
	if segs := root.byClass("bar")[0].byClass("seg"); segs[len(segs)-1].attrs["data-series"] != evil {
		t.Fatal("the unknown code is not last in the stack")
	}
}

func TestGatewayRequestsAndErrorsSideBySide(t *testing.T) {
	h := hours(2)
	h.Buckets = []Bucket{
		{Start: t0, Requests: 100, Errors: 25},
		{Start: t0.Add(time.Hour), Requests: 50},
	}
	root := parse(t, Gateway(h, Options{}))
	checkCSPSafe(t, root)
	bars := root.byClass("bar")
	if len(bars) != 2 {
		t.Fatalf("%d bars", len(bars))
	}
	segs := bars[0].byClass("seg")
	if len(segs) != 2 || segs[0].attrs["data-series"] != "Requests" || segs[1].attrs["data-series"] != "Errors" {
		t.Fatalf("bar 0 segments %v", segs)
	}
	if r := segs[0].float(t, "height") / segs[1].float(t, "height"); math.Abs(r-4) > 0.05 {
		t.Fatalf("requests/errors height ratio %g, want 4", r)
	}
	// Side by side: same baseline, errors to the right.
	if math.Abs(segs[0].float(t, "y")+segs[0].float(t, "height")-(segs[1].float(t, "y")+segs[1].float(t, "height"))) > 0.11 ||
		segs[1].float(t, "x") <= segs[0].float(t, "x") {
		t.Fatal("requests and errors are not side by side on one baseline")
	}
	if got := bars[1].child("title").text; !strings.Contains(got, "Requests: 50") || !strings.Contains(got, "Errors: 0") {
		t.Fatalf("tooltip %q", got)
	}
	if !strings.Contains(root.child("desc").text, "Requests: 150 in total") {
		t.Fatalf("desc %q", root.child("desc").text)
	}
}

func TestLatencyLineBreaksWhereNoRequests(t *testing.T) {
	h := hours(5)
	h.Buckets = []Bucket{
		{Start: t0, Requests: 1, LatencyMsAvg: lat(10)},
		{Start: t0.Add(time.Hour), Requests: 1, LatencyMsAvg: lat(20)},
		{Start: t0.Add(2 * time.Hour)}, // no requests: no latency
		{Start: t0.Add(3 * time.Hour), Requests: 1, LatencyMsAvg: lat(40)},
		// 04:00 missing altogether
	}
	root := parse(t, Latency(h, Options{}))
	checkCSPSafe(t, root)
	pts := root.byClass("point")
	if len(pts) != 3 {
		t.Fatalf("%d points, want 3", len(pts))
	}
	d := root.byClass("line")[0].attrs["d"]
	if strings.Count(d, "M") != 2 || strings.Count(d, "L") != 1 {
		t.Fatalf("path %q: want two pieces (10→20, then 40)", d)
	}
	// y is linear in the value: 40 ms is twice as far above the axis as 20.
	_, ph := Options{}.withDefaults("", "").plot()
	base := marginTop + ph
	r := (base - pts[2].float(t, "cy")) / (base - pts[1].float(t, "cy"))
	if math.Abs(r-2) > 0.02 {
		t.Fatalf("point heights ratio %g, want 2", r)
	}
	if got := pts[0].child("title").text; !strings.Contains(got, "10 ms") || !strings.Contains(got, "10:00") {
		t.Fatalf("point tooltip %q", got)
	}
	var unit bool
	for _, e := range root.byClass("unit") {
		unit = unit || e.text == "ms"
	}
	if !unit {
		t.Fatal("no ms unit on the y axis")
	}
}

func TestDeterministic(t *testing.T) {
	h := hours(48)
	for i := 0; i < 48; i++ {
		h.Buckets = append(h.Buckets, Bucket{Start: t0.Add(time.Duration(i) * time.Hour),
			VerifyByCode: map[string]uint64{"VALID": uint64(i * 3), "NOT_FOUND": uint64(i % 7), "EXPIRED": uint64(i % 3), "RATE_LIMITED": 1},
			Requests:     uint64(i * 10), Errors: uint64(i), LatencyMsAvg: lat(float64(i) / 3)})
	}
	for _, f := range []func(History, Options) template.HTML{Verifications, Gateway, Latency} {
		a := f(h, Options{})
		for i := 0; i < 20; i++ {
			if b := f(h, Options{}); a != b {
				t.Fatal("two renderings of one history differ")
			}
		}
	}
}

func TestFromDataDecodesTheHistoryAnswer(t *testing.T) {
	// What Vault's API client hands over: JSON numbers, null latencies.
	raw := `{"granularity":"hour","from":"2026-12-03T10:00:00Z","to":"2026-12-03T11:00:00Z","buckets":[
	 {"start":"2026-12-03T10:00:00Z","verify_count":3,"verify_by_code":{"VALID":2,"EXPIRED":1},"requests":4,"errors":1,"upstream_latency_ms_avg":1.5,"upstream_latency_ms_max":3},
	 {"start":"2026-12-03T11:00:00Z","verify_count":0,"verify_by_code":{},"requests":0,"errors":0,"upstream_latency_ms_avg":null,"upstream_latency_ms_max":null}]}`
	d := json.NewDecoder(bytes.NewReader([]byte(raw)))
	d.UseNumber()
	var data map[string]any
	if err := d.Decode(&data); err != nil {
		t.Fatal(err)
	}
	h, err := FromData(data)
	if err != nil {
		t.Fatal(err)
	}
	if h.Granularity != Hour || len(h.Buckets) != 2 || h.Buckets[0].VerifyByCode["EXPIRED"] != 1 ||
		h.Buckets[0].LatencyMsAvg == nil || *h.Buckets[0].LatencyMsAvg != 1.5 || h.Buckets[1].LatencyMsAvg != nil || !h.To.Equal(t0.Add(time.Hour)) {
		t.Fatalf("decoded %+v", h)
	}
	if _, err := FromData(map[string]any{"buckets": "nope"}); err == nil {
		t.Fatal("a malformed answer decoded")
	}
}

func BenchmarkCharts(b *testing.B) {
	days := History{Granularity: Day, From: t0.Truncate(24 * time.Hour)}
	days.To = days.From.Add(89 * 24 * time.Hour)
	for i := 0; i < 90; i++ {
		days.Buckets = append(days.Buckets, Bucket{Start: days.From.Add(time.Duration(i) * 24 * time.Hour),
			VerifyByCode: map[string]uint64{"VALID": uint64(1000 + i), "NOT_FOUND": uint64(i), "RATE_LIMITED": uint64(i % 5), "EXPIRED": 3},
			Requests:     uint64(900 + i), Errors: uint64(i % 9), LatencyMsAvg: lat(12.5)})
	}
	hrs := hours(48)
	for i := 0; i < 48; i++ {
		hrs.Buckets = append(hrs.Buckets, Bucket{Start: t0.Add(time.Duration(i) * time.Hour),
			VerifyByCode: map[string]uint64{"VALID": uint64(40 + i), "DISABLED": 1}, Requests: uint64(40 + i), LatencyMsAvg: lat(3)})
	}
	for name, h := range map[string]History{"90days": days, "48hours": hrs} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Verifications(h, Options{})
				_ = Gateway(h, Options{})
				_ = Latency(h, Options{})
			}
		})
	}
}

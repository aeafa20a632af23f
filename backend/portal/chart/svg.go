package chart

import (
	"encoding/xml"
	"fmt"
	"html/template"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vault-apikeys/vault-plugin-secrets-apikeys/backend/contract"
)

// Options tune a chart. The zero value is a 720x260 chart titled after
// its kind.
type Options struct {
	// Title names the chart (its <title> and aria-label).
	Title string
	// ID prefixes the ids of the chart's <title> and <desc>, which must be
	// unique in the page; only letters, digits, - and _ are kept.
	ID string
	// Width and Height of the viewBox (the plot and its axes; the legend
	// adds rows below).
	Width, Height int
}

// EmptyText is what a chart with nothing to show says.
const EmptyText = "No data in this range"

// CodeColors is the fixed colour of each verify code: the Okabe–Ito
// palette, which stays distinct under the common colour-vision
// deficiencies, and Tol's wine and a grey for the two it lacks. The legend
// and each bar's tooltip name the code too, so colour is never the only
// cue.
var CodeColors = map[string]string{
	contract.CodeValid:             "#009E73", // bluish green
	contract.CodeMalformed:         "#999999", // grey
	contract.CodeNotFound:          "#E69F00", // orange
	contract.CodeExpired:           "#56B4E9", // sky blue
	contract.CodeTenantSuspended:   "#000000", // black
	contract.CodeDisabled:          "#0072B2", // blue
	contract.CodeInsufficientScope: "#F0E442", // yellow
	contract.CodeIPNotAllowed:      "#CC79A7", // reddish purple
	contract.CodeRateLimited:       "#D55E00", // vermillion
	contract.CodeQuotaExceeded:     "#882255", // wine
}

// otherColor is for a code this build does not know (a newer plugin's).
const otherColor = "#DDDDDD"

const (
	requestsColor = "#0072B2"
	errorsColor   = "#D55E00"
	latencyColor  = "#0072B2"
	inkColor      = "#333333"
	gridColor     = "#DDDDDD"

	marginLeft   = 60.0
	marginRight  = 16.0
	marginTop    = 22.0
	marginBottom = 44.0
	legendRow    = 20.0
	legendItem   = 160.0
	fontSize     = 11
)

// series is one stacked or grouped quantity of a bar chart.
type series struct {
	name, color string
	value       func(*slot) uint64
}

// Verifications is verify answers per bucket, stacked by code: the codes of
// the contract in its order, then any other code in name order.
func Verifications(h History, o Options) template.HTML {
	o = o.withDefaults("Verifications per "+unit(h), "chart-verifications")
	slots := h.slots()
	seen := map[string]bool{}
	for i := range slots {
		for c, v := range slots[i].codes {
			if v > 0 {
				seen[c] = true
			}
		}
	}
	var codes []string
	for _, c := range contract.VerifyCodes {
		if seen[c] {
			codes = append(codes, c)
			delete(seen, c)
		}
	}
	var other []string
	for c := range seen {
		other = append(other, c)
	}
	sort.Strings(other)
	codes = append(codes, other...)
	ss := make([]series, len(codes))
	for i, c := range codes {
		color, ok := CodeColors[c]
		if !ok {
			color = otherColor
		}
		ss[i] = series{name: c, color: color, value: func(s *slot) uint64 { return s.codes[c] }}
	}
	return bars(h, slots, o, ss, true, "verifications")
}

// Gateway is the requests and errors that gateways reported per bucket,
// side by side.
func Gateway(h History, o Options) template.HTML {
	o = o.withDefaults("Gateway requests and errors per "+unit(h), "chart-gateway")
	ss := []series{
		{name: "Requests", color: requestsColor, value: func(s *slot) uint64 { return s.requests }},
		{name: "Errors", color: errorsColor, value: func(s *slot) uint64 { return s.errors }},
	}
	return bars(h, h.slots(), o, ss, false, "requests")
}

// Latency is the average upstream latency per bucket as a line; a bucket
// with no requests has no latency, so the line breaks there.
func Latency(h History, o Options) template.HTML {
	o = o.withDefaults("Average upstream latency per "+unit(h), "chart-latency")
	slots := h.slots()
	var w svgWriter
	var maxV float64
	points := 0
	for i := range slots {
		if v, ok := slots[i].latency(); ok {
			maxV = max(maxV, v)
			points++
		}
	}
	legend := []series{{name: "Average latency (ms)", color: latencyColor}}
	total := o.total(len(legend))
	if points == 0 {
		return empty(o, total, h)
	}
	ticks, top := niceTicks(maxV)
	pw, ph := o.plot()
	w.open(o, total, describeLatency(h, slots))
	w.axes(o, ticks, top, slots, h, func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }, "ms")
	slotW := pw / float64(len(slots))
	y := func(v float64) float64 { return marginTop + ph - v/top*ph }
	x := func(i int) float64 { return marginLeft + slotW*(float64(i)+0.5) }
	var d strings.Builder
	pen := false
	for i := range slots {
		v, ok := slots[i].latency()
		if !ok {
			pen = false
			continue
		}
		if pen {
			d.WriteString(" L")
		} else {
			if d.Len() > 0 {
				d.WriteByte(' ')
			}
			d.WriteString("M")
		}
		d.WriteString(num(x(i)) + " " + num(y(v)))
		pen = true
	}
	w.el("path", "class", "line", "d", d.String(), "fill", "none", "stroke", latencyColor, "stroke-width", "2")
	for i := range slots {
		v, ok := slots[i].latency()
		if !ok {
			continue
		}
		w.raw(`<circle class="point"`)
		w.attrs("cx", num(x(i)), "cy", num(y(v)), "r", "3", "fill", latencyColor, "data-value", strconv.FormatFloat(v, 'f', -1, 64))
		w.raw(">")
		w.title(fmt.Sprintf("%s: %s ms average", slotLabel(h, slots[i].start), strconv.FormatFloat(round3(v), 'f', -1, 64)))
		w.raw("</circle>")
	}
	w.legend(o, legend, "line")
	w.raw("</svg>")
	return template.HTML(w.String())
}

func bars(h History, slots []slot, o Options, ss []series, stacked bool, what string) template.HTML {
	var maxV uint64
	for i := range slots {
		var sum uint64
		for _, s := range ss {
			v := s.value(&slots[i])
			if stacked {
				sum += v
			} else {
				sum = max(sum, v)
			}
		}
		maxV = max(maxV, sum)
	}
	total := o.total(len(ss))
	if maxV == 0 {
		return empty(o, total, h)
	}
	ticks, top := niceTicks(float64(maxV))
	pw, ph := o.plot()
	var w svgWriter
	w.open(o, total, describeBars(h, slots, ss))
	w.axes(o, ticks, top, slots, h, formatCount, "")
	slotW := pw / float64(len(slots))
	barW := max(slotW*0.8, 1)
	if !stacked {
		barW = max(slotW*0.8/float64(len(ss)), 0.5)
	}
	for i := range slots {
		s := &slots[i]
		x0 := marginLeft + slotW*float64(i) + (slotW-barW*float64(groupWidth(stacked, len(ss))))/2
		w.raw(`<g class="bar"`)
		w.attrs("data-start", s.start.Format(time.RFC3339))
		w.raw(">")
		w.title(barTitle(h, s, ss, stacked, what))
		base := marginTop + ph
		for j, se := range ss {
			v := se.value(s)
			if v == 0 {
				continue
			}
			hgt := float64(v) / top * ph
			x := x0
			y := base - hgt
			if stacked {
				base = y
			} else {
				x = x0 + barW*float64(j)
				y = marginTop + ph - hgt
			}
			w.el("rect", "class", "seg", "data-series", se.name, "data-value", strconv.FormatUint(v, 10),
				"x", num(x), "y", num(y), "width", num(barW), "height", num(hgt), "fill", se.color)
		}
		w.raw("</g>")
	}
	w.legend(o, ss, "box")
	w.raw("</svg>")
	return template.HTML(w.String())
}

func groupWidth(stacked bool, n int) int {
	if stacked {
		return 1
	}
	return n
}

func empty(o Options, total float64, h History) template.HTML {
	var w svgWriter
	w.open(o, total, EmptyText+" ("+rangeText(h)+").")
	w.raw(`<text class="empty"`)
	w.attrs("x", num(float64(o.Width)/2), "y", num(total/2), "text-anchor", "middle", "font-size", "14", "fill", inkColor)
	w.raw(">")
	w.text(EmptyText)
	w.raw("</text></svg>")
	return template.HTML(w.String())
}

func (o Options) withDefaults(title, id string) Options {
	if o.Title == "" {
		o.Title = title
	}
	if o.ID == "" {
		o.ID = id
	}
	o.ID = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, o.ID)
	if o.ID == "" {
		o.ID = "chart"
	}
	if o.Width <= 0 {
		o.Width = 720
	}
	if o.Height <= 0 {
		o.Height = 260
	}
	o.Width = max(o.Width, 240)
	o.Height = max(o.Height, 120)
	return o
}

// plot is the size of the plotting area.
func (o Options) plot() (w, h float64) {
	return float64(o.Width) - marginLeft - marginRight, float64(o.Height) - marginTop - marginBottom
}

// total is the height of the chart with a legend of n entries.
func (o Options) total(n int) float64 {
	perRow := max(int((float64(o.Width)-marginLeft)/legendItem), 1)
	rows := (n + perRow - 1) / perRow
	return float64(o.Height) + float64(rows)*legendRow + 4
}

func unit(h History) string {
	if h.Granularity == Day {
		return "day"
	}
	return "hour"
}

// niceTicks gives 4–6 round ticks from 0 to at least v: steps of 1, 2 or 5
// times a power of ten.
func niceTicks(v float64) ([]float64, float64) {
	if v <= 0 {
		v = 1
	}
	raw := v / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	if v >= 1 && step < 1 {
		step = 1
	}
	top := math.Ceil(v/step) * step
	var ticks []float64
	for t := 0.0; t <= top+step/2; t += step {
		ticks = append(ticks, round9(t))
	}
	return ticks, round9(top)
}

func round9(v float64) float64 { return math.Round(v*1e9) / 1e9 }
func round3(v float64) float64 { return math.Round(v*1e3) / 1e3 }

// num formats a coordinate: one decimal, no trailing zero.
func num(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

func formatCount(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// slotLabel names a bucket in a tooltip.
func slotLabel(h History, t time.Time) string {
	if h.Granularity == Day {
		return t.Format("Mon 2 Jan 2006") + " (UTC)"
	}
	return t.Format("2 Jan 2006 15:04") + "–" + t.Add(time.Hour).Format("15:04") + " UTC"
}

func rangeText(h History) string {
	if h.From.IsZero() || h.To.IsZero() {
		return "no buckets"
	}
	layout := "2 Jan 2006 15:04 UTC"
	if h.Granularity == Day {
		layout = "2 Jan 2006"
	}
	return h.From.UTC().Format(layout) + " to " + h.To.UTC().Format(layout)
}

func barTitle(h History, s *slot, ss []series, stacked bool, what string) string {
	var b strings.Builder
	b.WriteString(slotLabel(h, s.start))
	if stacked {
		var sum uint64
		for _, se := range ss {
			sum += se.value(s)
		}
		fmt.Fprintf(&b, ": %d %s", sum, what)
	} else {
		b.WriteString(":")
	}
	for _, se := range ss {
		if v := se.value(s); v > 0 || !stacked {
			fmt.Fprintf(&b, "\n%s: %d", se.name, v)
		}
	}
	return b.String()
}

func describeBars(h History, slots []slot, ss []series) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s buckets, %s.", len(slots), unit(h), rangeText(h))
	for _, se := range ss {
		var sum, peak uint64
		var at time.Time
		for i := range slots {
			v := se.value(&slots[i])
			sum += v
			if v > peak {
				peak, at = v, slots[i].start
			}
		}
		fmt.Fprintf(&b, " %s: %d in total", se.name, sum)
		if peak > 0 {
			fmt.Fprintf(&b, ", at most %d (%s)", peak, slotLabel(h, at))
		}
		b.WriteString(".")
	}
	return b.String()
}

func describeLatency(h History, slots []slot) string {
	var lo, hi float64
	n := 0
	for i := range slots {
		if v, ok := slots[i].latency(); ok {
			if n == 0 || v < lo {
				lo = v
			}
			if n == 0 || v > hi {
				hi = v
			}
			n++
		}
	}
	return fmt.Sprintf("%d %s buckets, %s; %d with requests. Average upstream latency from %s ms to %s ms.",
		len(slots), unit(h), rangeText(h), n, strconv.FormatFloat(round3(lo), 'f', -1, 64), strconv.FormatFloat(round3(hi), 'f', -1, 64))
}

// svgWriter writes markup; every string from outside goes through text or
// attrs, which escape it.
type svgWriter struct{ strings.Builder }

func (w *svgWriter) raw(s string) { w.WriteString(s) }

func (w *svgWriter) text(s string) { _ = xml.EscapeText(w, []byte(s)) }

// attrs writes name="value" pairs; names are this package's constants.
func (w *svgWriter) attrs(kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		w.WriteString(" " + kv[i] + `="`)
		w.text(kv[i+1])
		w.WriteString(`"`)
	}
}

// el writes an empty element.
func (w *svgWriter) el(name string, kv ...string) {
	w.WriteString("<" + name)
	w.attrs(kv...)
	w.WriteString("/>")
}

func (w *svgWriter) title(s string) {
	w.raw("<title>")
	w.text(s)
	w.raw("</title>")
}

func (w *svgWriter) open(o Options, total float64, desc string) {
	w.raw(`<svg xmlns="http://www.w3.org/2000/svg" class="chart"`)
	w.attrs("viewBox", "0 0 "+strconv.Itoa(o.Width)+" "+num(total), "role", "img", "aria-label", o.Title,
		"aria-describedby", o.ID+"-desc", "font-family", "sans-serif", "font-size", strconv.Itoa(fontSize))
	w.raw(">")
	w.raw(`<title`)
	w.attrs("id", o.ID+"-title")
	w.raw(">")
	w.text(o.Title)
	w.raw(`</title><desc`)
	w.attrs("id", o.ID+"-desc")
	w.raw(">")
	w.text(desc)
	w.raw("</desc>")
}

// axes draws the y grid with its labels and the x ticks with UTC labels.
func (w *svgWriter) axes(o Options, ticks []float64, top float64, slots []slot, h History, label func(float64) string, yUnit string) {
	pw, ph := o.plot()
	w.raw(`<g class="y-axis">`)
	for _, t := range ticks {
		y := marginTop + ph - t/top*ph
		w.el("line", "x1", num(marginLeft), "x2", num(marginLeft+pw), "y1", num(y), "y2", num(y), "stroke", gridColor, "stroke-width", "1")
		w.raw(`<text class="tick"`)
		w.attrs("x", num(marginLeft-6), "y", num(y+4), "text-anchor", "end", "fill", inkColor)
		w.raw(">")
		w.text(label(t))
		w.raw("</text>")
	}
	if yUnit != "" {
		w.raw(`<text class="unit"`)
		w.attrs("x", num(marginLeft-6), "y", num(marginTop-10), "text-anchor", "end", "fill", inkColor)
		w.raw(">")
		w.text(yUnit)
		w.raw("</text>")
	}
	w.raw(`</g><g class="x-axis">`)
	base := marginTop + ph
	w.el("line", "x1", num(marginLeft), "x2", num(marginLeft+pw), "y1", num(base), "y2", num(base), "stroke", inkColor, "stroke-width", "1")
	slotW := pw / float64(len(slots))
	every := tickEvery(h, len(slots), pw)
	prevDay := ""
	for i := range slots {
		t := slots[i].start
		if !onTick(h, t, every) {
			continue
		}
		x := marginLeft + slotW*(float64(i)+0.5)
		w.el("line", "x1", num(x), "x2", num(x), "y1", num(base), "y2", num(base+4), "stroke", inkColor, "stroke-width", "1")
		w.raw(`<text class="tick"`)
		w.attrs("x", num(x), "y", num(base+16), "text-anchor", "middle", "fill", inkColor)
		w.raw(">")
		if h.Granularity == Day {
			w.text(t.Format("2 Jan"))
		} else {
			w.text(t.Format("15:04"))
			if day := t.Format("2 Jan"); day != prevDay {
				w.raw(`<tspan`)
				w.attrs("x", num(x), "dy", "13")
				w.raw(">")
				w.text(day)
				w.raw("</tspan>")
				prevDay = day
			}
		}
		w.raw("</text>")
	}
	w.raw(`<text class="axis-title"`)
	w.attrs("x", num(marginLeft+pw), "y", num(base+40), "text-anchor", "end", "fill", inkColor)
	w.raw(">")
	w.text("Time (UTC)")
	w.raw("</text></g>")
}

// tickEvery is the label spacing, in buckets: a round number of hours or
// days that leaves at least 70 units between labels.
func tickEvery(h History, n int, pw float64) int {
	steps := []int{1, 2, 3, 6, 12, 24, 48}
	if h.Granularity == Day {
		steps = []int{1, 2, 7, 14, 28, 56, 112}
	}
	maxLabels := max(int(pw/70), 1)
	for _, s := range steps {
		if (n+s-1)/s <= maxLabels {
			return s
		}
	}
	return (n + maxLabels - 1) / maxLabels
}

// onTick reports whether a bucket gets a label: hours on multiples of the
// step, days every step days counted from the Unix epoch (stable as the
// range moves).
func onTick(h History, t time.Time, every int) bool {
	if h.Granularity == Day {
		return int(t.Unix()/86400)%every == 0
	}
	return every <= 24 && t.Hour()%every == 0 || every > 24 && int(t.Unix()/3600)%every == 0
}

func (w *svgWriter) legend(o Options, ss []series, mark string) {
	perRow := max(int((float64(o.Width)-marginLeft)/legendItem), 1)
	w.raw(`<g class="legend">`)
	for i, se := range ss {
		x := marginLeft + float64(i%perRow)*legendItem
		y := float64(o.Height) + float64(i/perRow)*legendRow
		w.raw(`<g class="legend-entry"`)
		w.attrs("data-series", se.name)
		w.raw(">")
		if mark == "line" {
			w.el("line", "x1", num(x), "x2", num(x+14), "y1", num(y+5), "y2", num(y+5), "stroke", se.color, "stroke-width", "2")
		} else {
			w.el("rect", "x", num(x), "y", num(y), "width", "10", "height", "10", "fill", se.color)
		}
		w.raw(`<text`)
		w.attrs("x", num(x+18), "y", num(y+9), "fill", inkColor)
		w.raw(">")
		w.text(se.name)
		w.raw("</text></g>")
	}
	w.raw("</g>")
}

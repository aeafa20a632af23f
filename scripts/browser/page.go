package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/audits"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// PageOptions tune NewPage. The zero value is a desktop page with
// JavaScript on and DefaultTimeout per helper call.
type PageOptions struct {
	// Viewport defaults to Desktop.
	Viewport Viewport
	// NoJavaScript turns the page's scripts off
	// (Emulation.setScriptExecutionDisabled), as a user who disabled
	// JavaScript sees it. The helpers keep working: they use the DevTools
	// protocol, not the page's scripts.
	NoJavaScript bool
	// Timeout bounds each helper call; default DefaultTimeout.
	Timeout time.Duration
}

// Message is a console message, an uncaught exception or a browser log
// entry (a failed load, a CSP report, ...).
type Message struct {
	// Kind is "console", "exception" or "log".
	Kind string
	// Level is "error", "warning", "info", "debug" ("error" for an
	// exception).
	Level string
	// Source is the log entry's source ("security", "network", ...), or
	// the console call's type.
	Source string
	Text   string
	URL    string
}

func (m Message) String() string {
	return fmt.Sprintf("%s %s/%s: %s (%s)", m.Kind, m.Level, m.Source, m.Text, m.URL)
}

// CSPViolation is one Content-Security-Policy violation that Chromium
// reported for the page (an Audits issue, the structured form of the
// console's "Refused to ..." line).
type CSPViolation struct {
	// Directive is the violated directive, e.g. "script-src-elem".
	Directive string
	// BlockedURL is the resource refused, empty for an inline script or
	// style ("inline" in Type then).
	BlockedURL string
	// Type is Chromium's kind, e.g. "kInlineViolation", "kURLViolation".
	Type string
	// ReportOnly is true for a Content-Security-Policy-Report-Only hit.
	ReportOnly bool
	// SourceURL is the document or script where it happened.
	SourceURL string
}

func (v CSPViolation) String() string {
	return fmt.Sprintf("%s violates %s (%s, at %s)", orInline(v.BlockedURL), v.Directive, v.Type, v.SourceURL)
}

func orInline(u string) string {
	if u == "" {
		return "inline code"
	}
	return u
}

// Link is an <a href> of the page: its visible text and resolved URL.
type Link struct {
	Text string `json:"text"`
	Href string `json:"href"`
}

// Focused describes document.activeElement.
type Focused struct {
	Tag  string `json:"tag"`
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	Href string `json:"href"`
	Text string `json:"text"`
}

func (f Focused) String() string {
	s := "<" + f.Tag
	for _, kv := range [][2]string{{"id", f.ID}, {"name", f.Name}, {"type", f.Type}, {"href", f.Href}} {
		if kv[1] != "" {
			s += fmt.Sprintf(" %s=%q", kv[0], kv[1])
		}
	}
	return s + ">" + f.Text
}

// Page is one browser tab in its own browser context (its own cookies and
// storage). Its helpers are not safe for concurrent use; open one Page per
// goroutine.
type Page struct {
	// Viewport and JavaScript are what the page emulates.
	Viewport   Viewport
	JavaScript bool

	ctx     context.Context
	cancel  context.CancelFunc
	timeout time.Duration
	frame   cdp.FrameID // the main frame (= the target's id)

	mu         sync.Mutex
	status     int
	statusURL  string
	messages   []Message
	violations []CSPViolation
}

// NewPage opens a tab with the options' viewport and script setting.
func (b *Browser) NewPage(opts PageOptions) (*Page, error) {
	if opts.Viewport.Width == 0 {
		opts.Viewport = Desktop
	}
	if opts.Viewport.Scale == 0 {
		opts.Viewport.Scale = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	p := &Page{Viewport: opts.Viewport, JavaScript: !opts.NoJavaScript, ctx: ctx, cancel: cancel, timeout: opts.Timeout}
	// The first Do opens the tab; its context must be the page's own (it
	// bounds the tab's life), so the deadline is a watchdog's.
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx) }()
	// Opening a tab takes over a second on a busy 2-core machine: a page
	// with a short timeout for its waits still gets DefaultTimeout for it.
	open := max(opts.Timeout, DefaultTimeout)
	var err error
	select {
	case err = <-done:
	case <-time.After(open):
		err = fmt.Errorf("no tab after %s", open)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open a tab: %w", err)
	}
	c := chromedp.FromContext(ctx)
	p.frame = cdp.FrameID(c.Target.TargetID)
	if err := chromedp.Listen(ctx, p.record); err != nil {
		cancel()
		return nil, fmt.Errorf("listen: %w", err)
	}
	vp := opts.Viewport
	emu := []chromedp.EmulateViewportOption{chromedp.EmulateScale(vp.Scale)}
	if vp.Mobile {
		emu = append(emu, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	setup := []chromedp.Action[chromedp.Void]{
		chromedp.EmulateViewport(vp.Width, vp.Height, emu...),
		call(audits.Enable, cdp.Empty{}),
		// A headless tab is never the focused window; without this the
		// Clipboard API refuses ("Document is not focused").
		call(emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			for _, name := range []string{"clipboard-read", "clipboard-write"} {
				_, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
					Permission:       &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: name == "clipboard-write"},
					Setting:          browser.PermissionSettingGranted,
					BrowserContextID: c.BrowserContextID,
				})
				if err != nil {
					return fmt.Errorf("grant %s: %w", name, err)
				}
			}
			return nil
		}),
	}
	if opts.NoJavaScript {
		setup = append(setup, call(emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}))
	}
	sctx, scancel := context.WithTimeout(ctx, opts.Timeout)
	defer scancel()
	if err := chromedp.Do(sctx, setup...); err != nil {
		cancel()
		return nil, fmt.Errorf("set up the tab: %w", err)
	}
	return p, nil
}

func call[P, R any](cmd cdp.Command[P, R], params P) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cmd, params)
		return err
	})
}

// Close closes the tab and its browser context.
func (p *Page) Close() { p.cancel() }

// record runs in the tab's event loop (chromedp.Listen): it only appends.
func (p *Page) record(ev any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventResponseReceived:
		if ev.Type == network.ResourceTypeDocument && ev.FrameID == p.frame && ev.Response != nil {
			p.status = int(ev.Response.Status)
			p.statusURL = ev.Response.URL
		}
	case *runtime.EventConsoleAPICalled:
		m := Message{Kind: "console", Level: consoleLevel(ev.Type), Source: string(ev.Type), Text: argsText(ev.Args)}
		if ev.StackTrace != nil && len(ev.StackTrace.CallFrames) > 0 {
			m.URL = ev.StackTrace.CallFrames[0].URL
		}
		p.messages = append(p.messages, m)
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		m := Message{Kind: "exception", Level: "error", Source: "exception", Text: d.Text, URL: d.URL}
		if d.Exception != nil && d.Exception.Description != "" {
			m.Text += " " + strings.SplitN(d.Exception.Description, "\n", 2)[0]
		}
		p.messages = append(p.messages, m)
	case *log.EventEntryAdded:
		e := ev.Entry
		p.messages = append(p.messages, Message{Kind: "log", Level: string(e.Level), Source: string(e.Source), Text: e.Text, URL: e.URL})
	case *audits.EventIssueAdded:
		if ev.Issue == nil || ev.Issue.Details == nil || ev.Issue.Details.ContentSecurityPolicyIssueDetails == nil {
			return
		}
		d := ev.Issue.Details.ContentSecurityPolicyIssueDetails
		v := CSPViolation{Directive: d.ViolatedDirective, BlockedURL: d.BlockedURL, Type: string(d.ContentSecurityPolicyViolationType), ReportOnly: d.IsReportOnly}
		if d.SourceCodeLocation != nil {
			v.SourceURL = d.SourceCodeLocation.URL
		}
		p.violations = append(p.violations, v)
	}
}

func consoleLevel(t runtime.ConsoleAPICalledType) string {
	switch t {
	case runtime.ConsoleAPICalledTypeError, runtime.ConsoleAPICalledTypeAssert:
		return "error"
	case runtime.ConsoleAPICalledTypeWarning:
		return "warning"
	case runtime.ConsoleAPICalledTypeDebug:
		return "debug"
	}
	return "info"
}

func argsText(args []*runtime.RemoteObject) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case a.Type == runtime.RemoteObjectTypeString && len(a.Value) > 0:
			var s string
			if err := unmarshalString(a.Value, &s); err == nil {
				parts = append(parts, s)
				continue
			}
			parts = append(parts, string(a.Value))
		case len(a.Value) > 0:
			parts = append(parts, string(a.Value))
		default:
			parts = append(parts, a.Description)
		}
	}
	return strings.Join(parts, " ")
}

// op is the context of one helper call.
func (p *Page) op() (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.ctx, p.timeout)
}

// fail wraps err with what was tried, the page's URL and the start of its
// text, read under a fresh short deadline (the call's may be spent).
func (p *Page) fail(what string, err error) error {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	url, uerr := chromedp.Run(ctx, chromedp.Location())
	if uerr != nil {
		url = "(unknown: " + uerr.Error() + ")"
	}
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : document.documentElement ? document.documentElement.textContent : ""`))
	text = strings.Join(strings.Fields(text), " ")
	if len(text) > 300 {
		text = text[:300] + "…"
	}
	return fmt.Errorf("%s: %w\n\tpage %s (last document status %d)\n\ttext: %q", what, err, url, p.Status(), text)
}

// Goto loads url and, when waitFor is not "", waits until an element
// matching that CSS selector is visible. It returns the HTTP status of the
// document (after redirects).
func (p *Page) Goto(url, waitFor string) (int, error) {
	ctx, cancel := p.op()
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		return 0, p.fail("navigate to "+url, err)
	}
	if waitFor != "" {
		if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(waitFor))); err != nil {
			return 0, p.fail(fmt.Sprintf("wait for %q after loading %s", waitFor, url), err)
		}
	}
	if resp == nil {
		return p.Status(), nil
	}
	return int(resp.Status), nil
}

// WaitVisible waits until an element matching sel is visible.
func (p *Page) WaitVisible(sel string) error {
	ctx, cancel := p.op()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		return p.fail(fmt.Sprintf("wait for %q", sel), err)
	}
	return nil
}

// Click clicks the first element matching sel with the mouse, and does
// not wait for a navigation (see ClickNav).
func (p *Page) Click(sel string) error {
	ctx, cancel := p.op()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		return p.fail(fmt.Sprintf("click %q", sel), err)
	}
	return nil
}

// ClickNav clicks the first element matching sel and waits for the
// navigation it starts; it returns the new document's status.
func (p *Page) ClickNav(sel string) (int, error) {
	ctx, cancel := p.op()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		return 0, p.fail(fmt.Sprintf("click %q and wait for the page", sel), err)
	}
	if resp == nil {
		return p.Status(), nil
	}
	return int(resp.Status), nil
}

// Fill sets the fields of the form matching form, by field name (input,
// textarea or select; a select takes an option's value). Fields are set in
// name order, each replacing what was there.
func (p *Page) Fill(form string, fields map[string]string) error {
	ctx, cancel := p.op()
	defer cancel()
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sel := fmt.Sprintf("%s [name=%s]", form, cssString(n))
		if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS(sel), fields[n])); err != nil {
			return p.fail(fmt.Sprintf("fill %s", sel), err)
		}
	}
	return nil
}

// Submit fills the form (see Fill), clicks its first submit button as a
// user would (so it works with JavaScript off) and waits for the page the
// submission leads to; it returns that page's status (after redirects).
func (p *Page) Submit(form string, fields map[string]string) (int, error) {
	if err := p.Fill(form, fields); err != nil {
		return 0, err
	}
	return p.ClickNav(form + ` :is(button:not([type=button]):not([type=reset]), input[type=submit])`)
}

// cssString quotes s as a CSS string.
func cssString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\a `).Replace(s) + `"`
}

// Text is the rendered text (innerText) of the first element matching sel.
func (p *Page) Text(sel string) (string, error) {
	ctx, cancel := p.op()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		return "", p.fail(fmt.Sprintf("text of %q", sel), err)
	}
	return s, nil
}

// HTML is the outer HTML of the first element matching sel.
func (p *Page) HTML(sel string) (string, error) {
	ctx, cancel := p.op()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS(sel)))
	if err != nil {
		return "", p.fail(fmt.Sprintf("HTML of %q", sel), err)
	}
	return s, nil
}

// Attr is an attribute of the first element matching sel; ok is false
// when the element lacks it.
func (p *Page) Attr(sel, name string) (value string, ok bool, err error) {
	ctx, cancel := p.op()
	defer cancel()
	r, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil {
		return "", false, p.fail(fmt.Sprintf("attribute %s of %q", name, sel), err)
	}
	return r.Value, r.Exists, nil
}

// Count is how many elements match sel now (no wait).
func (p *Page) Count(sel string) (int, error) {
	ctx, cancel := p.op()
	defer cancel()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%s).length`, jsString(sel))))
	if err != nil {
		return 0, p.fail(fmt.Sprintf("count %q", sel), err)
	}
	return n, nil
}

// Links lists the page's <a href> elements in document order.
func (p *Page) Links() ([]Link, error) {
	ctx, cancel := p.op()
	defer cancel()
	links, err := chromedp.Run(ctx, chromedp.Evaluate[[]Link](
		`Array.from(document.querySelectorAll("a[href]"), a => ({text: a.innerText.trim(), href: a.href}))`))
	if err != nil {
		return nil, p.fail("list the links", err)
	}
	return links, nil
}

// URL is the page's current address.
func (p *Page) URL() (string, error) {
	ctx, cancel := p.op()
	defer cancel()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "", p.fail("read the URL", err)
	}
	return u, nil
}

// Status is the HTTP status of the last document the main frame received
// (from the network events; after a redirect, the final response's), 0
// before any.
func (p *Page) Status() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Cookies are the cookies the browser would send to the page's URL, with
// their flags (HTTPOnly, Secure, SameSite).
func (p *Page) Cookies() ([]*network.Cookie, error) {
	ctx, cancel := p.op()
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		return nil, p.fail("read the cookies", err)
	}
	return res.Cookies, nil
}

// Messages are all console messages, exceptions and log entries so far.
func (p *Page) Messages() []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Message(nil), p.messages...)
}

// ConsoleErrors are the messages of level error so far: console.error
// calls, uncaught exceptions, failed loads, CSP refusals. The browser's own
// unasked request for /favicon.ico is left out: whether it 404s says
// nothing about the page, and it lands at no fixed time.
func (p *Page) ConsoleErrors() []Message {
	var out []Message
	for _, m := range p.Messages() {
		if m.Kind == "log" && m.Source == "network" && strings.HasSuffix(m.URL, "/favicon.ico") {
			continue
		}
		if m.Level == "error" {
			out = append(out, m)
		}
	}
	return out
}

// CSPViolations are the Content-Security-Policy violations so far. Chromium
// reports a violation while it parses or runs the offending code, but the
// report travels on its own; Sync first waits until the browser has sent
// every report of the page so far (see Sync).
func (p *Page) CSPViolations() []CSPViolation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]CSPViolation(nil), p.violations...)
}

// Sync makes sure that every event the page raised before now has been
// recorded: re-enabling the Audits domain makes Chromium send again, before
// its reply, every issue collected so far (Audits.enable's contract), and
// the reply comes after the events that preceded it.
func (p *Page) Sync() error {
	ctx, cancel := p.op()
	defer cancel()
	p.mu.Lock()
	before := p.violations
	p.violations = nil
	p.mu.Unlock()
	if err := chromedp.Do(ctx, call(audits.Disable, cdp.Empty{}), call(audits.Enable, cdp.Empty{})); err != nil {
		p.mu.Lock()
		if p.violations == nil {
			p.violations = before
		}
		p.mu.Unlock()
		return p.fail("sync the page's reports", err)
	}
	return nil
}

// WaitCSPViolation waits until at least one CSP violation was reported.
func (p *Page) WaitCSPViolation() ([]CSPViolation, error) {
	deadline := time.Now().Add(p.timeout)
	for {
		if err := p.Sync(); err != nil {
			return nil, err
		}
		if v := p.CSPViolations(); len(v) > 0 {
			return v, nil
		}
		if time.Now().After(deadline) {
			return nil, p.fail("wait for a CSP violation", context.DeadlineExceeded)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Tab presses Tab n times (Shift+Tab when n < 0) and describes the element
// that has the focus then.
func (p *Page) Tab(n int) (Focused, error) {
	ctx, cancel := p.op()
	defer cancel()
	var opts []chromedp.KeyOption
	if n < 0 {
		n = -n
		opts = append(opts, chromedp.KeyModifiers(chromedp.ModifierShift))
	}
	for i := 0; i < n; i++ {
		if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab, opts...)); err != nil {
			return Focused{}, p.fail(fmt.Sprintf("press Tab (%d of %d)", i+1, n), err)
		}
	}
	f, err := chromedp.Run(ctx, chromedp.Evaluate[Focused](`(() => {
		const e = document.activeElement;
		if (!e) return {tag: ""};
		return {tag: e.tagName.toLowerCase(), id: e.id || "", name: e.getAttribute("name") || "",
			type: e.getAttribute("type") || "", href: e.href || "", text: (e.innerText || e.value || "").trim().slice(0, 80)};
	})()`))
	if err != nil {
		return Focused{}, p.fail("read the focused element", err)
	}
	return f, nil
}

// Screenshot saves a full-page PNG of the page as dir/name.png (dir is
// made when missing) and returns its path and pixel size. The width is
// always the viewport's width times its scale; the height is the page's.
func (p *Page) Screenshot(dir, name string) (path string, width, height int, err error) {
	ctx, cancel := p.op()
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", 0, 0, p.fail("screenshot "+name, err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(buf))
	if err != nil {
		return "", 0, 0, fmt.Errorf("screenshot %s is no PNG: %w", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, 0, fmt.Errorf("screenshot dir: %w", err)
	}
	path = filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		return "", 0, 0, fmt.Errorf("save screenshot: %w", err)
	}
	return path, cfg.Width, cfg.Height, nil
}

// Clipboard is the text on the clipboard (what a copy button wrote). The
// page's origin was granted clipboard access when the page was opened.
func (p *Page) Clipboard() (string, error) {
	ctx, cancel := p.op()
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil {
		return "", p.fail("read the clipboard", err)
	}
	return s, nil
}

// Eval evaluates a JavaScript expression in the page through the DevTools
// protocol (it works with the page's scripts off) and returns its value
// as JSON.
func (p *Page) Eval(expr string) ([]byte, error) {
	ctx, cancel := p.op()
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		return nil, p.fail("evaluate "+expr, err)
	}
	return b, nil
}

func unmarshalString(v []byte, s *string) error { return json.Unmarshal(v, s) }

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

package browser

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
)

// One browser for the package's tests: starting Chromium is the dear part.
var (
	sharedOnce sync.Once
	shared     *Browser
	sharedErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

func testBrowser(t *testing.T) *Browser {
	t.Helper()
	bin := Require(t)
	sharedOnce.Do(func() {
		shared, sharedErr = Launch(context.Background(), Options{Bin: bin})
		if sharedErr == nil {
			t.Logf("Chromium %s started in %s", bin, shared.StartupTime)
		}
	})
	if sharedErr != nil {
		t.Fatalf("launch: %v", sharedErr)
	}
	return shared
}

const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"

// site is a small real site: a form that posts and redirects, pages with a
// strict CSP, a noscript page, a copy button, a keyboard page.
func site(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	page := func(w http.ResponseWriter, title, body string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", csp)
		fmt.Fprintf(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>%s</title></head><body>%s</body></html>`, title, body)
	}
	mux.HandleFunc("GET /form", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Form", `<h1>Issue a key</h1><form id="f" method="post" action="/form">
<label>Name <input name="name"></label>
<label>Role <select name="role"><option value="reader">reader</option><option value="writer">writer</option></select></label>
<button type="button" id="decoy">not me</button><button>Issue</button></form>`)
	})
	mux.HandleFunc("POST /form", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "s3cr3t", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.SetCookie(w, &http.Cookie{Name: "plain", Value: "v", Path: "/"})
		http.Redirect(w, r, "/done?name="+r.PostForm.Get("name")+"&role="+r.PostForm.Get("role"), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Done", `<p id="msg">Issued `+html.EscapeString(r.URL.Query().Get("name"))+` as `+html.EscapeString(r.URL.Query().Get("role"))+`</p><a href="/form">again</a>`)
	})
	mux.HandleFunc("GET /inline", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Inline", `<p id="p">inline script below</p><script>document.title = "inline ran"</script>`)
	})
	mux.HandleFunc("GET /clean", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Clean", `<p id="p">only external script</p><script src="/app.js"></script>`)
	})
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, `document.title = "external ran";
document.querySelectorAll("[data-copy]").forEach(b => b.addEventListener("click", () => {
  navigator.clipboard.writeText(document.getElementById(b.dataset.copy).textContent).then(() => { b.textContent = "Copied"; });
}));`)
	})
	mux.HandleFunc("GET /noscript", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Noscript", `<noscript><p id="ns">Works without JavaScript</p></noscript><p id="p">body</p><script src="/app.js"></script>`)
	})
	mux.HandleFunc("GET /copy", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Copy", `<p>Your key: <code id="key">ak_live_2Xy9QmZ&lt;b&gt;</code></p><button data-copy="key" id="copy">Copy</button><script src="/app.js"></script>`)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Keys", `<nav><a href="/keys" id="home">Keys</a> <a href="/form" id="new">New key</a></nav>
<main><label>Filter <input id="q" name="q"></label><button id="go">Search</button>
<p id="tall">`+strings.Repeat("row<br>", 120)+`</p></main>`)
	})
	mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		page(w, "Console", `<p id="p">x</p><script src="/console.js"></script>`)
	})
	mux.HandleFunc("GET /console.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, `console.error("boom", 42); console.log("fine");`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestFormPostsAndRedirectsWithAndWithoutJavaScript(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	for _, js := range []bool{true, false} {
		t.Run(fmt.Sprintf("javascript=%v", js), func(t *testing.T) {
			p := b.PageT(t, PageOptions{NoJavaScript: !js})
			status, err := p.Goto(srv.URL+"/form", "#f")
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusOK || p.Status() != http.StatusOK {
				t.Fatalf("GET /form status %d, Status() %d", status, p.Status())
			}
			status, err = p.Submit("#f", map[string]string{"name": "ci <bot>", "role": "writer"})
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusOK {
				t.Fatalf("after the 303: status %d, want 200", status)
			}
			u, err := p.URL()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(u, srv.URL+"/done?") {
				t.Fatalf("URL %s, want /done", u)
			}
			msg, err := p.Text("#msg")
			if err != nil {
				t.Fatal(err)
			}
			if msg != "Issued ci <bot> as writer" {
				t.Fatalf("text %q", msg)
			}
			h, err := p.HTML("#msg")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(h, "ci &lt;bot&gt;") {
				t.Fatalf("HTML %q lacks the escaped name", h)
			}
			cookies, err := p.Cookies()
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]*network.Cookie{}
			for _, c := range cookies {
				byName[c.Name] = c
			}
			s, pl := byName["session"], byName["plain"]
			if s == nil || pl == nil {
				t.Fatalf("cookies %v: want session and plain", cookies)
			}
			if !s.HTTPOnly || s.SameSite != network.CookieSameSiteStrict {
				t.Fatalf("session cookie HttpOnly=%v SameSite=%q", s.HTTPOnly, s.SameSite)
			}
			if pl.HTTPOnly || pl.SameSite == network.CookieSameSiteStrict {
				t.Fatalf("plain cookie HttpOnly=%v SameSite=%q", pl.HTTPOnly, pl.SameSite)
			}
			links, err := p.Links()
			if err != nil {
				t.Fatal(err)
			}
			if len(links) != 1 || links[0].Text != "again" || links[0].Href != srv.URL+"/form" {
				t.Fatalf("links %+v", links)
			}
		})
	}
}

func TestStatusOfLastNavigation(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	p := b.PageT(t, PageOptions{})
	status, err := p.Goto(srv.URL+"/nothing-here", "")
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusNotFound || p.Status() != http.StatusNotFound {
		t.Fatalf("status %d, Status() %d, want 404", status, p.Status())
	}
	if _, err := p.Goto(srv.URL+"/done?name=x", "#msg"); err != nil {
		t.Fatal(err)
	}
	if p.Status() != http.StatusOK {
		t.Fatalf("Status() %d after a 200", p.Status())
	}
	// A link followed by a click counts too.
	status, err = p.ClickNav("a")
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK || p.Status() != http.StatusOK {
		t.Fatalf("after the link: %d, %d", status, p.Status())
	}
	if u, _ := p.URL(); u != srv.URL+"/form" {
		t.Fatalf("URL %s after the link", u)
	}
}

func TestInlineScriptIsBlockedAndReported(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	p := b.PageT(t, PageOptions{})
	if _, err := p.Goto(srv.URL+"/inline", "#p"); err != nil {
		t.Fatal(err)
	}
	v, err := p.WaitCSPViolation()
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 || !strings.HasPrefix(v[0].Directive, "script-src") || v[0].BlockedURL != "" {
		t.Fatalf("violations %v, want one inline script-src", v)
	}
	title, err := p.Eval(`document.title`)
	if err != nil {
		t.Fatal(err)
	}
	if string(title) != `"Inline"` {
		t.Fatalf("title %s: the inline script ran", title)
	}
	var refused bool
	for _, m := range p.ConsoleErrors() {
		refused = refused || strings.Contains(m.Text, "Content Security Policy")
	}
	if !refused {
		t.Fatalf("no console error names the policy: %v", p.Messages())
	}
}

func TestCleanPageHasNoViolation(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	p := b.PageT(t, PageOptions{})
	// The inline page first: a violation there must not leak into the
	// next page's count only because the check is blind.
	if _, err := p.Goto(srv.URL+"/inline", "#p"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitCSPViolation(); err != nil {
		t.Fatal(err)
	}
	p2 := b.PageT(t, PageOptions{})
	if _, err := p2.Goto(srv.URL+"/clean", "#p"); err != nil {
		t.Fatal(err)
	}
	if err := p2.Sync(); err != nil {
		t.Fatal(err)
	}
	if v := p2.CSPViolations(); len(v) != 0 {
		t.Fatalf("violations on the clean page: %v", v)
	}
	if e := p2.ConsoleErrors(); len(e) != 0 {
		t.Fatalf("console errors on the clean page: %v", e)
	}
	title, err := p2.Eval(`document.title`)
	if err != nil {
		t.Fatal(err)
	}
	if string(title) != `"external ran"` {
		t.Fatalf("title %s: the allowed script did not run", title)
	}
}

func TestNoScript(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	off := b.PageT(t, PageOptions{NoJavaScript: true})
	if _, err := off.Goto(srv.URL+"/noscript", "#ns"); err != nil {
		t.Fatal(err)
	}
	if title, _ := off.Eval(`document.title`); string(title) != `"Noscript"` {
		t.Fatalf("title %s with scripts off: a script ran", title)
	}
	on := b.PageT(t, PageOptions{})
	if _, err := on.Goto(srv.URL+"/noscript", "#p"); err != nil {
		t.Fatal(err)
	}
	if n, err := on.Count("#ns"); err != nil || n != 0 {
		t.Fatalf("noscript content rendered with scripts on: %d, %v", n, err)
	}
	if title, _ := on.Eval(`document.title`); string(title) != `"external ran"` {
		t.Fatalf("title %s with scripts on", title)
	}
}

func TestConsoleErrorsAreCollected(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	p := b.PageT(t, PageOptions{})
	if _, err := p.Goto(srv.URL+"/console", "#p"); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	errs := p.ConsoleErrors()
	if len(errs) != 1 || errs[0].Text != "boom 42" || errs[0].Kind != "console" {
		t.Fatalf("console errors %v, want boom 42", errs)
	}
	var logged bool
	for _, m := range p.Messages() {
		logged = logged || (m.Text == "fine" && m.Level == "info")
	}
	if !logged {
		t.Fatalf("console.log missing from %v", p.Messages())
	}
}

func TestClipboardReadsWhatTheCopyButtonWrote(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	p := b.PageT(t, PageOptions{})
	if _, err := p.Goto(srv.URL+"/copy", "#copy"); err != nil {
		t.Fatal(err)
	}
	if err := p.Click("#copy"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitVisible(`#copy`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		txt, err := p.Text("#copy")
		if err != nil {
			t.Fatal(err)
		}
		if txt == "Copied" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the copy button never said Copied: %v", p.Messages())
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, err := p.Clipboard()
	if err != nil {
		t.Fatal(err)
	}
	if got != "ak_live_2Xy9QmZ<b>" {
		t.Fatalf("clipboard %q", got)
	}
}

func TestTabReachesTheControlsInOrder(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	p := b.PageT(t, PageOptions{NoJavaScript: true})
	if _, err := p.Goto(srv.URL+"/keys", "#q"); err != nil {
		t.Fatal(err)
	}
	want := []string{"home", "new", "q", "go"}
	for i, id := range want {
		f, err := p.Tab(1)
		if err != nil {
			t.Fatal(err)
		}
		if f.ID != id {
			t.Fatalf("Tab %d focuses %s, want #%s", i+1, f, id)
		}
	}
	f, err := p.Tab(-2)
	if err != nil {
		t.Fatal(err)
	}
	if f.ID != "new" || f.Tag != "a" || f.Href != srv.URL+"/form" {
		t.Fatalf("Shift+Tab twice focuses %s, want the New key link", f)
	}
}

func TestScreenshotsHaveTheViewportsSize(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		vp    Viewport
		width int
	}{{"desktop", Desktop, 1280}, {"phone", Phone, 780}} {
		t.Run(tc.name, func(t *testing.T) {
			p := b.PageT(t, PageOptions{Viewport: tc.vp})
			if _, err := p.Goto(srv.URL+"/keys", "#tall"); err != nil {
				t.Fatal(err)
			}
			path, w, h, err := p.Screenshot(dir, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if w != tc.width {
				t.Fatalf("%s: width %d, want %d", path, w, tc.width)
			}
			// 120 lines are taller than the viewport: the shot is of the
			// whole page, not of the window.
			if min := int(tc.vp.Height * int64(tc.vp.Scale)); h <= min {
				t.Fatalf("%s: height %d, want more than the viewport's %d", path, h, min)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Size() == 0 {
				t.Fatalf("%s: %v", path, err)
			}
			_, w2, h2, err := p.Screenshot(dir, tc.name+"-again")
			if err != nil {
				t.Fatal(err)
			}
			if w2 != w || h2 != h {
				t.Fatalf("second shot %dx%d, first %dx%d", w2, h2, w, h)
			}
			inner, err := p.Eval(`[window.innerWidth, window.devicePixelRatio]`)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("[%d,%g]", tc.vp.Width, tc.vp.Scale); string(inner) != want {
				t.Fatalf("innerWidth, devicePixelRatio = %s, want %s", inner, want)
			}
		})
	}
}

func TestFailureNamesThePage(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	p := b.PageT(t, PageOptions{Timeout: time.Second})
	if _, err := p.Goto(srv.URL+"/done?name=Ada", "#msg"); err != nil {
		t.Fatal(err)
	}
	err := p.WaitVisible("#no-such-thing")
	if err == nil {
		t.Fatal("waiting for a missing element succeeded")
	}
	for _, want := range []string{"#no-such-thing", srv.URL + "/done?name=Ada", "Issued Ada", "status 200"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestTimings logs what a browser test costs here (a figure, not a check).
func TestTimings(t *testing.T) {
	b := testBrowser(t)
	srv := site(t)
	start := time.Now()
	p := b.PageT(t, PageOptions{})
	open := time.Since(start)
	var first, total time.Duration
	const n = 10
	for i := 0; i < n; i++ {
		s := time.Now()
		if _, err := p.Goto(srv.URL+"/done?name=x", "#msg"); err != nil {
			t.Fatal(err)
		}
		d := time.Since(s)
		if i == 0 {
			first = d
		}
		total += d
	}
	t.Logf("browser start %s (first test), new page %s, first navigation %s, mean of %d navigations %s",
		b.StartupTime, open, first, n, total/n)
}

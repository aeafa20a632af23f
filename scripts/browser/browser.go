// Package browser drives a real headless Chromium for the portal's browser
// tests, through the DevTools protocol (github.com/chromedp/chromedp). Like
// scripts/testvault it is test tooling: it lives under scripts/, outside
// the shipped tree, and does not import "testing" (Start takes the small TB
// interface), so TestMain and tools can use it too.
//
// The browser: Debian's chromium package, which `make tools`
// (scripts/ensure-tools.sh) installs; the binary is CHROMIUM_BIN, else
// chromium or chromium-browser on PATH. It runs headless, with
// --no-sandbox when the tests run as root (the sandbox needs user
// namespaces that containers rarely grant), in a profile directory made
// for it and removed after, at a fixed window size and scale so that
// screenshots of one page come out the same size every run.
//
// Use: Launch one Browser per test binary (about 1.2 s here, 2 cores) and
// open a Page per test (a tab in its own browser context, so no cookie
// leaks between tests; about 0.3 s). A Page has a viewport (Desktop
// 1280x900 or Phone 390x844 at device scale 2), JavaScript on or off (off
// is how a test shows that a page works without it), and collects the
// console errors, uncaught exceptions and Content-Security-Policy
// violations of everything it loads. Its helpers (Goto, Submit, Text,
// Links, Cookies, Tab, Screenshot, Clipboard, ...) each run under the
// page's timeout and fail with the page's URL and an excerpt of its text.
//
// A test that needs a browser calls Start(t, ...) or Available: with no
// Chromium installed it skips, unless APIKEYS_REQUIRE_BROWSER is set (make
// test sets it), in which case a missing browser fails the test.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/chromedp/chromedp"
)

const (
	// RequireEnv set to anything but "" or "0" turns a missing Chromium
	// from a skip into a failure.
	RequireEnv = "APIKEYS_REQUIRE_BROWSER"
	// BinEnv names the Chromium binary to run instead of the one on PATH.
	BinEnv = "CHROMIUM_BIN"

	// DefaultTimeout bounds each helper call of a Page.
	DefaultTimeout = 15 * time.Second
	// launchTimeout bounds the start of the browser process.
	launchTimeout = 60 * time.Second
)

// ErrNoBrowser is returned by FindChromium when no binary is found.
var ErrNoBrowser = errors.New("no Chromium binary: set " + BinEnv + " or install Debian's chromium (make tools)")

// Viewport is the size of a page's layout viewport in CSS pixels and its
// device scale factor.
type Viewport struct {
	Width, Height int64
	Scale         float64
	// Mobile turns on the mobile emulation of Chromium (meta viewport,
	// overlay scrollbars, touch).
	Mobile bool
}

var (
	// Desktop is a laptop-size window.
	Desktop = Viewport{Width: 1280, Height: 900, Scale: 1}
	// Phone is a phone-width screen (an iPhone 12-15's CSS size).
	Phone = Viewport{Width: 390, Height: 844, Scale: 2, Mobile: true}
)

// Options tune Launch. The zero value is what tests want.
type Options struct {
	// Bin is the Chromium binary; default FindChromium's.
	Bin string
	// Log receives the browser's own error lines; nil discards them.
	Log func(format string, args ...any)
}

// Browser is a running Chromium process.
type Browser struct {
	// Bin is the binary that runs.
	Bin string
	// StartupTime is how long the process took to start and answer.
	StartupTime time.Duration

	ctx        context.Context // chromedp context that owns the process
	cancel     func()
	profileDir string
	closeOnce  sync.Once
}

// FindChromium returns the Chromium binary to run: CHROMIUM_BIN when set,
// else chromium or chromium-browser on PATH.
func FindChromium() (string, error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		path, err := exec.LookPath(bin)
		if err != nil {
			return "", fmt.Errorf("%s=%q: %w", BinEnv, bin, err)
		}
		return path, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", ErrNoBrowser
}

// Launch starts a headless Chromium that lives until Close or until ctx
// ends. ctx must not carry a short deadline: it bounds the browser's life.
func Launch(ctx context.Context, opts Options) (*Browser, error) {
	bin := opts.Bin
	if bin == "" {
		var err error
		if bin, err = FindChromium(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "apikeys-chromium-")
	if err != nil {
		return nil, fmt.Errorf("profile dir: %w", err)
	}
	alloc := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(int(Desktop.Width), int(Desktop.Height)),
		chromedp.DisableGPU,
		// Scrollbars change a full-page screenshot's pixels from run to run;
		// the blink of the caret does too.
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("disable-caret-blinking", true),
		chromedp.Flag("font-render-hinting", "none"),
		chromedp.Flag("lang", "en-US"),
	)
	if os.Geteuid() == 0 {
		// Chromium refuses to start as root with its sandbox; the pages it
		// loads here are the tests' own.
		alloc = append(alloc, chromedp.NoSandbox)
	}
	actx, acancel := chromedp.NewExecAllocator(ctx, alloc...)
	ctxOpts := []chromedp.ContextOption{}
	if opts.Log != nil {
		ctxOpts = append(ctxOpts, chromedp.WithErrorf(opts.Log))
	}
	bctx, bcancel := chromedp.NewContext(actx, ctxOpts...)
	b := &Browser{Bin: bin, ctx: bctx, profileDir: dir, cancel: func() { bcancel(); acancel() }}

	start := time.Now()
	done := make(chan error, 1)
	// The first Do binds the process to bctx, so it cannot carry the
	// launch timeout itself; a watchdog cancels instead.
	go func() { done <- chromedp.Do(bctx) }()
	select {
	case err = <-done:
	case <-time.After(launchTimeout):
		err = fmt.Errorf("no answer after %s", launchTimeout)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	b.StartupTime = time.Since(start)
	return b, nil
}

// Close stops the browser and removes its profile directory.
func (b *Browser) Close() {
	b.closeOnce.Do(func() {
		b.cancel()
		_ = os.RemoveAll(b.profileDir)
	})
}

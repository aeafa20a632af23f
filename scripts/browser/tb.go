package browser

import (
	"context"
	"errors"
	"os"
)

// TB is the part of testing.TB that Start and Require use (the package
// does not import "testing").
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Required reports whether APIKEYS_REQUIRE_BROWSER asks for a browser.
func Required() bool {
	v := os.Getenv(RequireEnv)
	return v != "" && v != "0"
}

// Require returns the Chromium binary, or skips the test when there is
// none and APIKEYS_REQUIRE_BROWSER is unset, or fails it when it is set.
func Require(tb TB) string {
	tb.Helper()
	bin, err := FindChromium()
	if err == nil {
		return bin
	}
	if errors.Is(err, ErrNoBrowser) && !Required() {
		tb.Skipf("browser test: %v (%s=1 makes this a failure)", err, RequireEnv)
	}
	tb.Fatalf("browser test: %v", err)
	return ""
}

// LaunchT launches a browser for the test (see Require for when it skips)
// and closes it when the test ends.
func LaunchT(tb TB) *Browser {
	tb.Helper()
	bin := Require(tb)
	b, err := Launch(context.Background(), Options{Bin: bin})
	if err != nil {
		tb.Fatalf("launch the browser: %v", err)
	}
	tb.Cleanup(b.Close)
	return b
}

// PageT opens a page that is closed when the test ends.
func (b *Browser) PageT(tb TB, opts PageOptions) *Page {
	tb.Helper()
	p, err := b.NewPage(opts)
	if err != nil {
		tb.Fatalf("open a page: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Start launches a browser of the test's own and opens one page in it:
// the short form for a test that needs one page. Tests that open many
// pages share one LaunchT browser (start-up is the dear part).
func Start(tb TB, opts PageOptions) *Page {
	tb.Helper()
	return LaunchT(tb).PageT(tb, opts)
}

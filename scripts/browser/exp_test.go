package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

func TestExp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>x</title><form method=post action=/p><input name=a value=""><button>go</button></form><script>document.title="js"</script>`)
	}))
	defer srv.Close()
	t0 := time.Now()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath("/usr/bin/chromium"), chromedp.NoSandbox)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatal(err)
	}
	t.Log("start", time.Since(t0))
	t0 = time.Now()
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	t.Log("tab", time.Since(t0))
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	_ = cdp.Empty{}
	t0 = time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL)); err != nil {
		t.Fatal(err)
	}
	t.Log("nav", time.Since(t0))
	title, err := chromedp.Run(ctx, chromedp.Title())
	t.Log("title", title, err)
	v, err := chromedp.Run(ctx, chromedp.Evaluate[int]("1+2"))
	t.Log("eval", v, err)
	err = chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("input[name=a]"), "hi"))
	t.Log("setvalue", err)
	tctx, c2 := context.WithTimeout(ctx, 3*time.Second)
	defer c2()
	err = chromedp.Do(tctx, chromedp.Click(chromedp.CSS("button")))
	t.Log("click", err)
}

package testvault

import (
	"context"
	"time"
)

// T is the part of testing.TB that WaitFor uses. It is declared here so
// that the package need not import "testing", which scripts/bench and
// scripts/leasecost would then link.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// waitPace starts quick, for in-process conditions that hold within
// microseconds, and settles at 20 ms, gentle enough to poll a real Vault
// for a minute.
var waitPace = pace{time.Millisecond, 20 * time.Millisecond}

// WaitFor is the tests' one polling wait: it calls cond until it holds,
// for at most timeout, and otherwise fails t naming what it waited for.
// cond is a func() bool, or a func() error that returns nil once done and
// otherwise says what is still missing, so the failure shows the last
// state seen. cond runs on the caller's goroutine and may call t.Fatal.
//
// WaitFor waits for something to happen. A check that something did not
// happen needs a signal that it would have by then (a later event that
// arrived, a queue seen empty), not a WaitFor that times out.
func WaitFor[C func() bool | func() error](t T, timeout time.Duration, what string, cond C) {
	t.Helper()
	var last error
	try := func() (bool, error) { return false, nil }
	switch c := any(cond).(type) {
	case func() bool:
		try = func() (bool, error) { return c(), nil }
	case func() error:
		try = func() (bool, error) { last = c(); return last == nil, nil }
	}
	if poll(context.Background(), timeout, waitPace, try) == nil {
		return
	}
	if last != nil {
		t.Fatalf("waited %s for %s; last: %v", timeout, what, last)
		return
	}
	t.Fatalf("waited %s for %s", timeout, what)
}

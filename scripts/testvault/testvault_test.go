package testvault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFreePortPairAvoidsEphemeralPorts: both ports bind, and neither is one
// the kernel could hand to an outgoing connection while a killed node is
// down (see FreePortPair).
func TestFreePortPairAvoidsEphemeralPorts(t *testing.T) {
	lo, hi := nonEphemeralPorts()
	if lo < 1024 || hi <= lo {
		t.Fatalf("range [%d, %d)", lo, hi)
	}
	for range 20 {
		p, err := FreePortPair()
		if err != nil {
			t.Fatal(err)
		}
		if p < lo || p+1 > hi {
			t.Fatalf("port pair %d/%d outside [%d, %d]", p, p+1, lo, hi)
		}
		for _, port := range []int{p, p + 1} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatalf("port %d: %v", port, err)
			}
			l.Close()
		}
	}
}

// fakeT records what WaitFor reports instead of failing the test.
type fakeT struct{ failures []string }

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failures = append(f.failures, fmt.Sprintf(format, args...))
}

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	var ft fakeT
	n := 0
	WaitFor(&ft, 5*time.Second, "the third try", func() bool { n++; return n == 3 })
	if len(ft.failures) != 0 || n != 3 {
		t.Fatalf("after %d tries: %v", n, ft.failures)
	}
	n = 0
	WaitFor(&ft, 5*time.Second, "the second try", func() error {
		if n++; n < 2 {
			return errors.New("not yet")
		}
		return nil
	})
	if len(ft.failures) != 0 || n != 2 {
		t.Fatalf("after %d tries: %v", n, ft.failures)
	}
}

func TestWaitForFailsNamingWhatAndTheLastState(t *testing.T) {
	var ft fakeT
	start := time.Now()
	WaitFor(&ft, 50*time.Millisecond, "never", func() bool { return false })
	if time.Since(start) < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before its timeout", time.Since(start))
	}
	n := 0
	WaitFor(&ft, 50*time.Millisecond, "a count of 0", func() error { n++; return fmt.Errorf("count %d", n) })
	if len(ft.failures) != 2 || !strings.Contains(ft.failures[0], "never") ||
		!strings.Contains(ft.failures[1], "a count of 0") || !strings.Contains(ft.failures[1], fmt.Sprintf("last: count %d", n)) {
		t.Fatalf("failures %q", ft.failures)
	}
}

func TestPollEndsOnAnErrorAndOnTheContext(t *testing.T) {
	stop := errors.New("stop")
	tries := 0
	err := poll(context.Background(), time.Minute, every(time.Millisecond), func() (bool, error) { tries++; return false, stop })
	if !errors.Is(err, stop) || tries != 1 {
		t.Fatalf("poll after an error: %v, %d tries", err, tries)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := poll(ctx, time.Minute, every(time.Hour), func() (bool, error) { return false, nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("poll with a cancelled context: %v", err)
	}
}

// TestStopKeepsTheLogAndCleanupRemovesIt: a stopped server's log can still
// be read (its tail is what a failing test prints); Cleanup removes it.
func TestStopKeepsTheLogAndCleanupRemovesIt(t *testing.T) {
	dir, err := os.MkdirTemp("", "testvault-stop-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s := &Server{Dir: dir}
	s.process = process{LogPath: filepath.Join(dir, "vault.log"), name: "sh", bin: "sh",
		args: []string{"-c", "echo one; echo two; echo three; exec sleep 60"}, freshLog: true}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, "the script's output", func() bool { return strings.Contains(s.Log(), "three") })
	s.Stop()
	if s.Running() || s.PID() != 0 {
		t.Fatal("still running after Stop")
	}
	if got := s.LogTail(2); got != "two\nthree" {
		t.Fatalf("log tail after Stop: %q", got)
	}
	s.Cleanup()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory after Cleanup: %v", err)
	}
}

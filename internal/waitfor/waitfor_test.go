package waitfor

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fatal is a testing.TB whose Fatalf records the message and stops the
// goroutine, as the real one does.
type fatal struct {
	testing.TB
	msg string
}

func (f *fatal) Helper() {}
func (f *fatal) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

func run(f func(tb testing.TB)) (failed *fatal) {
	tb := &fatal{}
	defer func() {
		if r := recover(); r != nil {
			failed = r.(*fatal)
		}
	}()
	f(tb)
	return nil
}

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	if f := run(func(tb testing.TB) { True(tb, time.Second, "three polls", func() bool { n++; return n == 3 }) }); f != nil {
		t.Fatalf("failed: %s", f.msg)
	}
	if n != 3 {
		t.Errorf("polled %d times, want 3", n)
	}
}

func TestStateFailsNamingWhatAndTheLastState(t *testing.T) {
	f := run(func(tb testing.TB) {
		State(tb, 30*time.Millisecond, "the moon", func() (bool, string) { return false, "still cheese" })
	})
	if f == nil {
		t.Fatal("a condition that never holds did not fail the test")
	}
	if !strings.Contains(f.msg, "the moon") || !strings.Contains(f.msg, "still cheese") {
		t.Errorf("failure %q does not name what was awaited and the last state", f.msg)
	}
}

package logtest

import (
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps what is logged to it.
type recorder struct {
	testing.TB
	lines   []string
	cleanup []func()
}

func (r *recorder) Log(args ...any)  { r.lines = append(r.lines, args[0].(string)) }
func (r *recorder) Cleanup(f func()) { r.cleanup = append(r.cleanup, f) }

func TestNew(t *testing.T) {
	r := &recorder{TB: t}
	l := New(r)
	l.WithField("node", "m1").Info("ready")
	if len(r.lines) != 1 || !strings.Contains(r.lines[0], "ready") || !strings.Contains(r.lines[0], "node=m1") || strings.HasSuffix(r.lines[0], "\n") {
		t.Fatalf("logged %q, want one line with the message and its field, no newline", r.lines)
	}
	for _, f := range r.cleanup {
		f()
	}
	l.Info("after the test")
	if len(r.lines) != 1 {
		t.Errorf("a line logged after the test ended reached the test: %q", r.lines)
	}
}

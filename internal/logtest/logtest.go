// Package logtest gives a test a logrus logger that writes to the test's own
// log, so that a daemon's lines show beside the failure they explain (and
// under -v) instead of being thrown away.
package logtest

import (
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

// New returns a logger that writes each line to tb.Log until the test ends.
// A goroutine that logs a last line after that (a server still closing) is
// not an error: the line is dropped.
func New(tb testing.TB) *logrus.Logger {
	w := &writer{tb: tb}
	tb.Cleanup(w.stop)
	l := logrus.New()
	l.SetOutput(w)
	return l
}

type writer struct {
	mu      sync.Mutex
	tb      testing.TB
	stopped bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *writer) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

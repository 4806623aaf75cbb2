// Package waitfor is how a test waits: by polling a condition until it
// holds or a deadline passes, never by a bare sleep (tailscale's
// tstest.WaitFor).
package waitfor

import (
	"testing"
	"time"
)

// Interval is how often a condition is polled.
const Interval = 10 * time.Millisecond

// True polls cond until it holds, and fails the test if it still does not
// after timeout.
func True(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	State(tb, timeout, what, func() (bool, string) { return cond(), "" })
}

// State polls cond until it holds; if it still does not after timeout, the
// test fails with the state cond last described.
func State(tb testing.TB, timeout time.Duration, what string, cond func() (ok bool, state string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if state != "" {
				state = ": " + state
			}
			tb.Fatalf("timed out after %v waiting for %s%s", timeout, what, state)
		}
		time.Sleep(Interval) // poll interval, not synchronisation
	}
}

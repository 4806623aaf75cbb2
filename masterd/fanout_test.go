package masterd

import (
	"testing"
	"time"
)

// The pacer lets a burst through at once, then one reply per interval; a
// watcher whose connection closes while it waits gives up its turn.
func TestPacer(t *testing.T) {
	p := newPacer(1000, 10) // 1ms apart, 10 at once
	closed := make(chan struct{})
	close(closed)
	now := time.Unix(1000, 0)
	immediate := 0
	for p.wait(now, closed, func() {}) {
		immediate++
		if immediate > 100 {
			t.Fatal("the pacer never made anyone wait")
		}
	}
	if immediate != 11 {
		t.Fatalf("%d replies went at once, want the burst of 10 and the slot due now", immediate)
	}
	// 12 slots were taken from now-10ms, the last by the watcher that gave
	// up: the next is 2ms from now.
	if want := now.Add(2 * time.Millisecond); !p.next.Equal(want) {
		t.Fatalf("next slot at %v, want %v", p.next.Sub(now), want.Sub(now))
	}
	// Long idle: the credit is back to the burst, not more.
	later := now.Add(time.Hour)
	immediate = 0
	for p.wait(later, closed, func() {}) {
		immediate++
	}
	if immediate != 11 {
		t.Fatalf("after an idle hour %d replies went at once, want 11", immediate)
	}
	// A real wait ends on time.
	open := make(chan struct{})
	start := time.Now()
	p2 := newPacer(100, 0)
	p2.wait(start, open, func() {}) // the slot due now
	if !p2.wait(time.Now(), open, func() {}) {
		t.Fatal("a wait with its connection open failed")
	}
	if el := time.Since(start); el < 5*time.Millisecond {
		t.Fatalf("the second of two replies at 100/s went after %v, want about 10ms", el)
	}
}

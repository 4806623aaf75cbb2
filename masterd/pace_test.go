package masterd

import (
	"fmt"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// TestPaceToBudget: 30 slaves against a budget of 10 heartbeats a second
// are told about 3.3 s, staggered; they heartbeat at that for a minute
// with no suspect or dead event; one that falls silent is dead within the
// scaled ceiling; and with 5 left the interval is back to 1 s.
func TestPaceToBudget(t *testing.T) {
	ms, c := testMembershipClock()
	ms.t.Budget = 10
	const n = 30
	names := make([]string, n)
	next := make([]time.Time, n)
	told := make([]time.Duration, n)
	for i := range n {
		names[i] = fmt.Sprintf("node-%d", i)
		r, err := ms.Join(Caller{Node: names[i], ConnID: uint64(i + 1)}, 1, true)
		if err != nil {
			t.Fatal(err)
		}
		told[i], next[i] = r.HeartbeatInterval, c.t.Add(r.HeartbeatInterval)
	}
	v := ms.Version()
	end := c.t.Add(time.Minute)
	for ; c.t.Before(end); c.t = c.t.Add(50 * time.Millisecond) {
		for i := range n {
			if !c.t.Before(next[i]) {
				r, err := ms.Heartbeat(Caller{Node: names[i], ConnID: uint64(i + 1)}, 1)
				if err != nil {
					t.Fatal(err)
				}
				told[i], next[i] = r.Interval, c.t.Add(r.Interval)
			}
		}
		ms.Tick(c.t)
	}
	if got := ms.t.Detector.Interval; got != 3300*time.Millisecond {
		t.Fatalf("interval %v for %d slaves at 10 a second, want 3.3s", got, n)
	}
	lo, hi := told[0], told[0]
	for _, d := range told {
		lo, hi = min(lo, d), max(hi, d)
		if d < 3300*time.Millisecond || d > 3630*time.Millisecond {
			t.Fatalf("a slave told %v, want 3.3s to 3.63s", d)
		}
	}
	if hi-lo < 100*time.Millisecond {
		t.Fatalf("intervals told from %v to %v: no stagger", lo, hi)
	}
	for _, e := range events(ms, v) {
		if e.Kind == rpcdef.EventSuspect || e.Kind == rpcdef.EventDead {
			t.Fatalf("%s %s (%s) while every slave heartbeats as told", e.Node, e.Kind, e.Reason)
		}
	}
	// node-0 falls silent; the rest go on.
	silentFrom := c.t
	v = ms.Version()
	var deadAt time.Time
	for end := c.t.Add(30 * time.Second); c.t.Before(end) && deadAt.IsZero(); c.t = c.t.Add(50 * time.Millisecond) {
		for i := 1; i < n; i++ {
			if !c.t.Before(next[i]) {
				r, _ := ms.Heartbeat(Caller{Node: names[i], ConnID: uint64(i + 1)}, 1)
				next[i] = c.t.Add(r.Interval)
			}
		}
		ms.Tick(c.t)
		for _, e := range events(ms, v) {
			if e.Node == "node-0" && e.Kind == rpcdef.EventDead {
				deadAt = c.t
			} else if e.Kind == rpcdef.EventDead || e.Kind == rpcdef.EventSuspect && e.Node != "node-0" {
				t.Fatalf("%s %s while node-0 was silent", e.Node, e.Kind)
			}
		}
	}
	if deadAt.IsZero() || deadAt.Sub(silentFrom) > ms.t.Detector.MaxDead+time.Second {
		t.Fatalf("node-0 silent from %v: dead at %v, want within the scaled ceiling %v", silentFrom, deadAt, ms.t.Detector.MaxDead)
	}
	t.Logf("silent node dead %v after it fell silent, at an interval of %v", deadAt.Sub(silentFrom), ms.t.Detector.Interval)
	for i := 5; i < n; i++ {
		ms.Forget(names[i])
	}
	ms.Tick(c.t)
	if got := ms.t.Detector.Interval; got != time.Second {
		t.Fatalf("interval %v with 4 slaves up, want back to 1s", got)
	}
	if r, _ := ms.Heartbeat(Caller{Node: names[1], ConnID: 2}, 1); r.Interval != time.Second {
		t.Fatalf("told %v with the budget to spare, want 1s", r.Interval)
	}
}

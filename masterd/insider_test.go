package masterd

import (
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// events is the feed's events after version after.
func events(ms *Membership, after uint64) []rpcdef.Event {
	var r rpcdef.WatchReply
	ms.Since(after, &r)
	return r.Events
}

func TestReap(t *testing.T) {
	ms, c := testMembershipClock()
	for _, n := range []string{"gone", "dead", "alive"} {
		if _, err := ms.Join(Caller{Node: n, ConnID: 1}, 1, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := ms.Leave(Caller{Node: "gone", ConnID: 1}, 1, ""); err != nil {
		t.Fatal(err)
	}
	if err := ms.Evict("dead", "test"); err != nil {
		t.Fatal(err)
	}
	v := ms.Version()
	c.t = c.t.Add(time.Hour)
	if n := ms.Reap(c.t, 2*time.Hour, 3*time.Hour); n != 0 {
		t.Fatalf("reaped %d an hour in, want none", n)
	}
	c.t = c.t.Add(90 * time.Minute)
	if n := ms.Reap(c.t, 2*time.Hour, 3*time.Hour); n != 1 {
		t.Fatalf("reaped %d at 2.5 h, want the one that left", n)
	}
	c.t = c.t.Add(time.Hour)
	if n := ms.Reap(c.t, 2*time.Hour, 0); n != 0 {
		t.Fatalf("reaped %d with dead kept for ever", n)
	}
	if n := ms.Reap(c.t, 2*time.Hour, 3*time.Hour); n != 1 {
		t.Fatalf("reaped %d at 3.5 h, want the dead one", n)
	}
	r, _ := ms.Members("")
	if len(r.Members) != 1 || r.Members[0].Name != "alive" {
		t.Fatalf("roll after reaping: %+v", r.Members)
	}
	ev := events(ms, v)
	if len(ev) != 2 || ev[0].Node != "gone" || ev[1].Node != "dead" || ev[0].Kind != rpcdef.EventForgotten || ev[1].Kind != rpcdef.EventForgotten {
		t.Fatalf("reap events: %+v", ev)
	}
}

// TestEventBudget: a node joining with a new incarnation in a loop is told
// to the cluster a burst's worth, then once a second, each the latest state.
func TestEventBudget(t *testing.T) {
	ms, c := testMembershipClock()
	ms.Join(Caller{Node: "other", ConnID: 1}, 1, true)
	v := ms.Version()
	for i := range 20000 {
		if _, err := ms.Join(Caller{Node: "mole", ConnID: 2}, uint64(i+1), true); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(events(ms, v)); got != eventBurst {
		t.Fatalf("%d events for 20,000 joins at once, want the burst of %d", got, eventBurst)
	}
	ms.Tick(c.t)
	if got := len(events(ms, v)); got != eventBurst {
		t.Fatalf("a flush before the budget allows: %d events", got)
	}
	c.t = c.t.Add(eventEvery)
	ms.Tick(c.t)
	ev := events(ms, v)
	if len(ev) != eventBurst+1 {
		t.Fatalf("%d events after a second, want one more than the burst", len(ev))
	}
	last := ev[len(ev)-1]
	if last.Node != "mole" || last.Incarnation != 20000 || last.Status != rpcdef.StatusAlive {
		t.Fatalf("the folded event: %+v, want mole alive as incarnation 20000", last)
	}
	// Quiet again: later events are told at once, and other nodes never waited.
	c.t = c.t.Add(time.Minute)
	ms.Tick(c.t)
	before := ms.Version()
	ms.Leave(Caller{Node: "mole", ConnID: 2}, 20000, "bye")
	ms.Evict("other", "test")
	if got := ms.Version() - before; got != 2 {
		t.Fatalf("%d events after a minute's calm, want 2", got)
	}
}

// TestEvidenceIsTheSession: only a connection that joined or heartbeated
// speaks for a slave; a diagnostic's connection closing is no evidence.
func TestEvidenceIsTheSession(t *testing.T) {
	for _, tc := range []struct {
		name    string
		do      func(ms *Membership)
		suspect bool
	}{
		{"a watch's connection closes", func(ms *Membership) { ms.ConnClosed("n", 7) }, false},
		{"a diagnostic heartbeat's connection closes", func(ms *Membership) {
			ms.Heartbeat(Caller{Node: "n", ConnID: 7}, 1)
			ms.ConnClosed("n", 7)
		}, false},
		{"the session closes", func(ms *Membership) { ms.ConnClosed("n", 1) }, true},
		{"the session closes while a diagnostic is open", func(ms *Membership) {
			ms.Heartbeat(Caller{Node: "n", ConnID: 7}, 1)
			ms.ConnClosed("n", 1)
		}, false},
		{"both close", func(ms *Membership) {
			ms.Heartbeat(Caller{Node: "n", ConnID: 7}, 1)
			ms.ConnClosed("n", 1)
			ms.ConnClosed("n", 7)
		}, true},
		{"a reconnect: the new session heartbeats, then the old one's close arrives", func(ms *Membership) {
			ms.Heartbeat(Caller{Node: "n", ConnID: 2}, 1)
			ms.ConnClosed("n", 1)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := testMembership()
			ms.Join(Caller{Node: "n", ConnID: 1}, 1, true)
			tc.do(ms)
			r, _ := ms.Members("n")
			if got := r.Members[0].Status == rpcdef.StatusSuspect; got != tc.suspect {
				t.Fatalf("status %s, want suspect %v", r.Members[0].Status, tc.suspect)
			}
		})
	}
	// The sessions kept are bounded, whatever one certificate opens.
	ms := testMembership()
	for i := range 1000 {
		ms.Heartbeat(Caller{Node: "n", ConnID: uint64(i)}, 1)
		ms.Join(Caller{Node: "n", ConnID: uint64(i)}, 1, true)
	}
	if n := len(ms.nodes["n"].sessions); n > maxSessions {
		t.Fatalf("%d sessions kept, want at most %d", n, maxSessions)
	}
}

// TestSessionsNotPushedOut: four diagnostics with a slave's certificate,
// heartbeating and closing, cannot push its own connection out of the
// evidence and have it suspected (the reviewer's attack on an evicting
// list).
func TestSessionsNotPushedOut(t *testing.T) {
	ms := testMembership()
	ms.Join(Caller{Node: "n", ConnID: 1}, 1, true)
	for round := range 3 {
		for i := range maxSessions {
			ms.Heartbeat(Caller{Node: "n", ConnID: uint64(100*(round+1) + i)}, 1)
		}
		for i := range maxSessions {
			ms.ConnClosed("n", uint64(100*(round+1)+i))
		}
		if r, _ := ms.Members("n"); r.Members[0].Status != rpcdef.StatusAlive {
			t.Fatalf("round %d: n is %s after diagnostics closed, with its own session open", round, r.Members[0].Status)
		}
	}
	ms.ConnClosed("n", 1)
	if r, _ := ms.Members("n"); r.Members[0].Status != rpcdef.StatusSuspect {
		t.Fatalf("its own session closed: n is %s, want suspect", r.Members[0].Status)
	}
}

func TestRollBudget(t *testing.T) {
	var r rollBudgets
	now := time.Unix(1_000_000, 0)
	for i := range rollBurst {
		if err := r.take("mole", now); err != nil {
			t.Fatalf("roll %d of the burst: %v", i+1, err)
		}
	}
	err := r.take("mole", now)
	if err == nil || !strings.Contains(err.Error(), "try again in 5s") {
		t.Fatalf("past the burst: %v, want unavailable, try again in 5s", err)
	}
	if err := r.take("node-1", now); err != nil {
		t.Fatalf("another node's budget: %v", err)
	}
	if err := r.take("mole", now.Add(rollEvery)); err != nil {
		t.Fatalf("a roll every %v: %v", rollEvery, err)
	}
	if err := r.take("mole", now.Add(rollEvery)); err == nil {
		t.Fatal("two rolls in one period past the burst")
	}
}

// TestEvictWhileFolded: an admin's evict of a node whose events are being
// folded tells its state at once, and the flush tells nothing more.
func TestEvictWhileFolded(t *testing.T) {
	ms, c := testMembershipClock()
	for i := range 3 * eventBurst {
		ms.Join(Caller{Node: "mole", ConnID: 1}, uint64(i+1), true)
	}
	ms.Evict("mole", "test")
	v := ms.Version()
	c.t = c.t.Add(time.Minute)
	ms.Tick(c.t)
	if ev := events(ms, v); len(ev) != 0 {
		t.Fatalf("the flush after an evict told %+v", ev)
	}
}

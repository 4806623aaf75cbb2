package masterd

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/rpcdef"
)

// clock is a fake time source the tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func testMembership() *Membership {
	ms, _ := testMembershipClock()
	return ms
}

func testMembershipClock() (*Membership, *clock) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	c := &clock{t: time.Unix(1_000_000, 0)}
	ms := NewMembership(Timing{
		Detector:   DetectorConfig{Interval: time.Second, MinDead: 1500 * time.Millisecond, MaxDead: 5 * time.Second},
		CloseGrace: 500 * time.Millisecond,
		Report:     5 * time.Second,
		Tick:       50 * time.Millisecond,
	}, l)
	ms.now = c.now
	return ms, c
}

// tickUntil runs the detector every tick from from to to, as its loop
// does, moving the clock along.
func tickUntil(ms *Membership, c *clock, from, to time.Time) {
	for now := from; !now.After(to); now = now.Add(ms.t.Tick) {
		c.t = now
		ms.Tick(now)
	}
}

func status(t *testing.T, ms *Membership, node string) rpcdef.Status {
	t.Helper()
	r, err := ms.Members(node)
	if err != nil {
		t.Fatal(err)
	}
	return r.Members[0].Status
}

func TestJoinRejoinAndIncarnations(t *testing.T) {
	ms := testMembership()
	c := Caller{Node: "n1", Addr: "127.0.0.1:1", ConnID: 1}
	if _, err := ms.Join(c, 10, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Heartbeat(c, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Join(c, 20, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Heartbeat(c, 10); !errors.Is(err, rpcdef.ErrStaleIncarnation) {
		t.Fatalf("old incarnation's heartbeat: %v", err)
	}
	if _, err := ms.Heartbeat(c, 30); !errors.Is(err, rpcdef.ErrNotJoined) {
		t.Fatalf("unjoined incarnation's heartbeat: %v", err)
	}
	if _, err := ms.Heartbeat(Caller{Node: "n2"}, 1); !errors.Is(err, rpcdef.ErrNotJoined) {
		t.Fatalf("unknown node's heartbeat: %v", err)
	}
	var r rpcdef.WatchReply
	ms.Since(0, &r)
	kinds := []rpcdef.EventKind{}
	for _, e := range r.Events {
		kinds = append(kinds, e.Kind)
	}
	if len(kinds) != 2 || kinds[0] != rpcdef.EventJoined || kinds[1] != rpcdef.EventRejoined {
		t.Fatalf("events %v, want joined then rejoined", kinds)
	}
	if m, _ := ms.Members(""); len(m.Members) != 1 || m.Members[0].Incarnation != 20 {
		t.Fatalf("roll %+v, want one row with incarnation 20", m.Members)
	}
}

func TestClosedConnection(t *testing.T) {
	ms, clk := testMembershipClock()
	c := Caller{Node: "n1", ConnID: 7}
	ms.Join(c, 1, false)
	ms.ConnClosed("n1", 99) // another connection: no evidence about n1
	if st := status(t, ms, "n1"); st != rpcdef.StatusAlive {
		t.Fatalf("after an unrelated close: %s", st)
	}
	ms.ConnClosed("n1", 7)
	if st := status(t, ms, "n1"); st != rpcdef.StatusSuspect {
		t.Fatalf("after its connection closed: %s, want suspect at once", st)
	}
	now := clk.t
	tickUntil(ms, clk, now, now.Add(400*time.Millisecond))
	if st := status(t, ms, "n1"); st != rpcdef.StatusSuspect {
		t.Fatalf("within the grace: %s", st)
	}
	tickUntil(ms, clk, now.Add(450*time.Millisecond), now.Add(600*time.Millisecond))
	if st := status(t, ms, "n1"); st != rpcdef.StatusDead {
		t.Fatalf("after the grace: %s, want dead", st)
	}

	// Back on a new connection within the grace: alive again, not dead.
	ms.Join(Caller{Node: "n2", ConnID: 8}, 1, false)
	ms.ConnClosed("n2", 8)
	ms.Heartbeat(Caller{Node: "n2", ConnID: 9}, 1)
	tickUntil(ms, clk, now.Add(650*time.Millisecond), now.Add(time.Second))
	if st := status(t, ms, "n2"); st != rpcdef.StatusAlive {
		t.Fatalf("came back within the grace: %s", st)
	}
}

// After a stall of the master itself, nobody is declared dead for max_dead,
// even a node whose connection closed meanwhile; one never heard from again
// is dead once the recovery ends.
func TestStallRecovery(t *testing.T) {
	ms, clk := testMembershipClock()
	ms.Join(Caller{Node: "back", ConnID: 1}, 1, false)
	ms.Join(Caller{Node: "gone", ConnID: 2}, 1, false)
	t0 := clk.t
	ms.Tick(t0)
	woke := t0.Add(15 * time.Second) // no ticks for 15 s: the master was stopped
	clk.t = woke
	ms.Tick(woke)
	ms.ConnClosed("back", 1)
	ms.ConnClosed("gone", 2)
	tickUntil(ms, clk, woke.Add(50*time.Millisecond), woke.Add(time.Second))
	for _, n := range []string{"back", "gone"} {
		if st := status(t, ms, n); st == rpcdef.StatusDead {
			t.Fatalf("%s declared dead %v after the master woke, within the recovery", n, time.Second)
		}
	}
	for s := 1; s <= 5; s++ { // "back" heartbeats every second on a new connection
		ms.Heartbeat(Caller{Node: "back", ConnID: 3}, 1)
		tickUntil(ms, clk, woke.Add(time.Duration(s)*time.Second+50*time.Millisecond), woke.Add(time.Duration(s+1)*time.Second))
	}
	if st := status(t, ms, "back"); st != rpcdef.StatusAlive {
		t.Fatalf("back: %s, want alive", st)
	}
	if st := status(t, ms, "gone"); st != rpcdef.StatusDead {
		t.Fatalf("gone: %s, want dead once the recovery ended", st)
	}
}

// A short lag of the detector's loop is forgiven but does not hold deaths:
// under load, lags of a few ticks are common, and holding every death for
// max_dead at each would stop detection.
func TestShortLagDoesNotHoldDeaths(t *testing.T) {
	ms, clk := testMembershipClock()
	ms.Join(Caller{Node: "n1", ConnID: 1}, 1, false)
	t0 := clk.t
	ms.Tick(t0)
	clk.t = t0.Add(300 * time.Millisecond) // a 300 ms lag
	ms.Tick(clk.t)
	ms.ConnClosed("n1", 1)
	tickUntil(ms, clk, clk.t.Add(50*time.Millisecond), clk.t.Add(600*time.Millisecond))
	if st := status(t, ms, "n1"); st != rpcdef.StatusDead {
		t.Fatalf("after a 300 ms lag a closed connection's node is %s %v later, want dead after the 500 ms grace", st, 600*time.Millisecond)
	}
}

// Versions keep growing across a restart, and known nodes come back unknown.
func TestRosterRestore(t *testing.T) {
	ms := testMembership()
	ms.Join(Caller{Node: "a", Addr: "x:1"}, 5, false)
	ms.Join(Caller{Node: "b"}, 6, false)
	ms.Leave(Caller{Node: "b"}, 6, "")
	v := ms.Version()
	next := testMembership()
	if n := restart(t, ms, next); n != 2 {
		t.Fatal(n)
	}
	if next.Version() != v {
		t.Fatalf("version %d after restart, was %d: versions must carry on", next.Version(), v)
	}
	if st := status(t, next, "a"); st != rpcdef.StatusUnknown {
		t.Fatalf("a: %s, want unknown", st)
	}
	if st := status(t, next, "b"); st != rpcdef.StatusLeft {
		t.Fatalf("b: %s, want left kept", st)
	}
	var r rpcdef.WatchReply
	if news, _ := next.Since(v, &r); news {
		t.Fatalf("a watcher from before the restart got %+v: the events are replicated, it goes on where it was", r)
	}
	if _, err := next.Heartbeat(Caller{Node: "a"}, 5); !errors.Is(err, rpcdef.ErrNotJoined) {
		t.Fatalf("heartbeat of an unknown node: %v, want not joined (join again)", err)
	}
	if _, err := next.Join(Caller{Node: "a"}, 5, false); err != nil {
		t.Fatal(err)
	}
	if st := status(t, next, "a"); st != rpcdef.StatusAlive {
		t.Fatalf("a after joining again: %s", st)
	}
	if next.Version() != v {
		t.Fatalf("a's joining again with the same incarnation wrote events (version %d, was %d): it is alive in the replicated roll already", next.Version(), v)
	}
}

func TestJoinWithoutRoll(t *testing.T) {
	ms := testMembership()
	for i, n := range []string{"a", "b", "c"} {
		if _, err := ms.Join(Caller{Node: n, ConnID: uint64(i)}, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	r, err := ms.Join(Caller{Node: "d", ConnID: 9}, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Members != nil || r.Version != 4 || r.HeartbeatInterval != time.Second {
		t.Fatalf("NoRoll join: %d members, version %d, interval %v; want none, 4, 1s", len(r.Members), r.Version, r.HeartbeatInterval)
	}
	if r, _ := ms.Join(Caller{Node: "a", ConnID: 0}, 1, false); len(r.Members) != 4 {
		t.Fatalf("join with the roll: %d members, want 4", len(r.Members))
	}
}

// TestFeedReadersDuringEvents has watchers read the feed while events are
// made past the trim at maxEvents: each reply must be the unbroken run of
// versions after the one asked for (and the race detector must stay quiet).
func TestFeedReadersDuringEvents(t *testing.T) {
	ms := testMembership()
	ms.Join(Caller{Node: "n", ConnID: 1}, 1, false)
	const events = maxEvents + maxEvents/2
	done := make(chan error, 4)
	for w := range 4 {
		go func() {
			after := uint64(0)
			for after < events {
				var r rpcdef.WatchReply
				ok, changed := ms.Since(after, &r)
				if !ok {
					<-changed
					continue
				}
				if r.Reset {
					after = r.Version // fell behind the trim: the roll instead
					continue
				}
				for i, e := range r.Events {
					if e.Version != after+uint64(i)+1 {
						done <- fmt.Errorf("watcher %d: after %d, event %d has version %d", w, after, i, e.Version)
						return
					}
				}
				if len(r.Events) == 0 || r.Events[len(r.Events)-1].Version != r.Version {
					done <- fmt.Errorf("watcher %d: reply at version %d ends at another", w, r.Version)
					return
				}
				after = r.Version
			}
			done <- nil
		}()
	}
	// An admin's evictions of n, and first joins of new nodes: each is an
	// event whatever the event budget (this is the feed's test, not the
	// budget's).
	for i := 1; i < events; i++ {
		if i%2 == 1 {
			ms.Evict("n", "test")
		} else {
			ms.Join(Caller{Node: fmt.Sprintf("n%d", i), ConnID: uint64(i)}, 1, true)
		}
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := ms.Version(); got != events {
		t.Fatalf("version %d, want %d", got, events)
	}
	if ev, v := ms.Recent(10); len(ev) != 10 || v != events || ev[9].Version != events {
		t.Fatalf("Recent(10): %d events up to %d", len(ev), v)
	}
}

// A crowd of slaves late in the same tick is held as the master's trouble;
// one late slave is judged alone, and a crowd still silent after max_dead
// is judged too.
func TestCrowdLateIsHeld(t *testing.T) {
	ms, c := testMembershipClock()
	const n = 200
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%03d", i)
		ms.Join(Caller{Node: names[i], ConnID: uint64(i + 1)}, 1, true)
	}
	beat := func(skip func(i int) bool) {
		for i, name := range names {
			if !skip(i) {
				if _, err := ms.Heartbeat(Caller{Node: name, ConnID: uint64(i + 1)}, 1); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	start := c.t
	for k := 1; k <= 40; k++ {
		next := start.Add(time.Duration(k) * time.Second)
		tickUntil(ms, c, c.t.Add(ms.t.Tick), next)
		beat(func(int) bool { return false })
	}
	// One slave goes quiet: suspect within a couple of seconds.
	from := c.t
	for k := 1; k <= 3; k++ {
		tickUntil(ms, c, c.t.Add(ms.t.Tick), from.Add(time.Duration(k)*time.Second))
		beat(func(i int) bool { return i == 0 })
	}
	if st := status(t, ms, names[0]); st != rpcdef.StatusDead {
		t.Fatalf("one slave silent for 3s is %s, want dead", st)
	}
	// Now 30 more miss the same beats (a master stall looks like this):
	// held, for as long as max_dead.
	from = c.t
	for k := 1; k <= 3; k++ {
		tickUntil(ms, c, c.t.Add(ms.t.Tick), from.Add(time.Duration(k)*time.Second))
		beat(func(i int) bool { return i <= 30 })
	}
	for i := 1; i <= 30; i++ {
		if st := status(t, ms, names[i]); st != rpcdef.StatusAlive {
			t.Fatalf("%s, one of 30 late together for 3s, is %s; want alive (held)", names[i], st)
		}
	}
	// Still silent past max_dead (5s): judged.
	for k := 4; k <= 8; k++ {
		tickUntil(ms, c, c.t.Add(ms.t.Tick), from.Add(time.Duration(k)*time.Second))
		beat(func(i int) bool { return i <= 30 })
	}
	for i := 1; i <= 30; i++ {
		if st := status(t, ms, names[i]); st != rpcdef.StatusDead {
			t.Fatalf("%s, silent 8s in a crowd, is %s; want dead", names[i], st)
		}
	}
	if st := status(t, ms, names[31]); st != rpcdef.StatusAlive {
		t.Fatalf("a slave that kept heartbeating is %s", st)
	}
}

// When the master handles far fewer heartbeats than its slaves send (its
// CPU taken, a long GC), the lateness is its own: verdicts are held, and
// no slave is suspect once the delayed heartbeats are handled.
func TestMasterBehindHoldsVerdicts(t *testing.T) {
	ms, c := testMembershipClock()
	const n = 1000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%04d", i)
		ms.Join(Caller{Node: names[i], ConnID: uint64(i + 1)}, 1, true)
	}
	start := c.t
	step := 10 * time.Millisecond
	var queue []int // heartbeats sent but not yet handled
	pauseFrom, pauseTo := 30*time.Second, 30*time.Second+500*time.Millisecond
	for at := step; at <= 32*time.Second; at += step {
		c.t = start.Add(at)
		// Node i heartbeats every second at phase i/n.
		for i := range n {
			phase := time.Duration(i) * time.Second / n
			if (at-phase)%time.Second < step && at >= phase {
				queue = append(queue, i)
			}
		}
		if at < pauseFrom || at >= pauseTo {
			for _, i := range queue {
				if _, err := ms.Heartbeat(Caller{Node: names[i], ConnID: uint64(i + 1)}, 1); err != nil {
					t.Fatal(err)
				}
			}
			queue = queue[:0]
		}
		if at%ms.t.Tick == 0 {
			ms.Tick(c.t)
		}
		if at == pauseTo-step && ms.crowd.IsZero() {
			t.Fatal("the master handled no heartbeat for 490ms and did not hold its verdicts")
		}
	}
	r, _ := ms.Members("")
	for _, m := range r.Members {
		if m.Status != rpcdef.StatusAlive {
			t.Fatalf("%s is %s after the master fell 500ms behind", m.Name, m.Status)
		}
	}
	if ev, _ := ms.Recent(maxEvents); len(ev) != n {
		t.Fatalf("%d events, want only the %d joins", len(ev), n)
	}
}

// TestFailoverGraceWaitsForTheFleet: a member a new leader found up is not
// declared dead at the end of the failover grace while the fleet is still
// coming back (another member joined again, or the leader turned
// connections away as too busy, within max_dead): it may be one of them.
// It is once nobody has come back for max_dead, or at three graces
// whatever happens.
func TestFailoverGraceWaitsForTheFleet(t *testing.T) {
	for _, tc := range []struct {
		name string
		// door is when the leader last turned someone away, given now.
		door     func(start, now time.Time) time.Time
		rejoin   time.Duration // when b joins again; 0 for never
		deadFrom time.Duration // a, after the leadership began
	}{
		{"nobody back, never busy", func(start, now time.Time) time.Time { return time.Time{} }, 0, 5 * time.Second},
		{"all back at once", func(start, now time.Time) time.Time { return time.Time{} }, time.Second, 6 * time.Second},
		{"one back late", func(start, now time.Time) time.Time { return time.Time{} }, 4 * time.Second, 9 * time.Second},
		{"busy once in the grace", func(start, now time.Time) time.Time {
			return start.Add(4 * time.Second)
		}, 0, 9 * time.Second},
		{"busy throughout", func(start, now time.Time) time.Time { return now }, 0, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := testMembership()
			old.Join(Caller{Node: "a"}, 1, false)
			old.Join(Caller{Node: "b"}, 1, false)
			next, c := testMembershipClock()
			start := c.t
			next.congested = func() time.Time {
				if at := tc.door(start, c.t); !at.After(c.t) {
					return at
				}
				return time.Time{}
			}
			restart(t, old, next)
			from := start
			if tc.rejoin > 0 {
				tickUntil(next, c, start, start.Add(tc.rejoin))
				if _, err := next.Join(Caller{Node: "b"}, 1, false); err != nil {
					t.Fatal(err)
				}
				from = c.t.Add(next.t.Tick)
			}
			tickUntil(next, c, from, start.Add(tc.deadFrom-next.t.Tick))
			if st := status(t, next, "a"); st != rpcdef.StatusUnknown {
				t.Fatalf("a at +%v: %s, want still unknown", c.t.Sub(start), st)
			}
			tickUntil(next, c, c.t.Add(next.t.Tick), start.Add(tc.deadFrom))
			if st := status(t, next, "a"); st != rpcdef.StatusDead {
				t.Fatalf("a at +%v: %s, want dead", c.t.Sub(start), st)
			}
		})
	}
}

// TestAbandonedConnection: a slave that closed its connection while its
// call waited on the master gave up on the master's slowness: no suspect,
// no close verdict; the heartbeat detector judges it as between two calls,
// so a slave that is gone for good is still dead within max_dead.
func TestAbandonedConnection(t *testing.T) {
	ms, clk := testMembershipClock()
	start := clk.t
	ms.Join(Caller{Node: "n1", ConnID: 7}, 1, false)
	for i := range 5 {
		clk.t = start.Add(time.Duration(i) * time.Second)
		ms.Heartbeat(Caller{Node: "n1", ConnID: 7}, 1)
	}
	ms.ConnAbandoned("n1", 7)
	last := clk.t
	tickUntil(ms, clk, last, last.Add(time.Second))
	if st := status(t, ms, "n1"); st != rpcdef.StatusAlive {
		t.Fatalf("a second after it gave up on the master: %s, want alive (its close is no evidence)", st)
	}
	tickUntil(ms, clk, clk.t.Add(ms.t.Tick), last.Add(ms.t.Detector.MaxDead+time.Second))
	if st := status(t, ms, "n1"); st != rpcdef.StatusDead {
		t.Fatalf("never heard from again: %s, want dead by the heartbeat detector", st)
	}
}

// TestOverloadHoldsCloses: while the master turns connections away as too
// busy, a closed connection is no evidence at once (the slave's call likely
// timed out on the master, and it is redialling): one back within max_dead
// gets no event at all, one never back is dead at max_dead.
func TestOverloadHoldsCloses(t *testing.T) {
	ms, clk := testMembershipClock()
	busy := true
	ms.congested = func() time.Time {
		if busy {
			return clk.t
		}
		return time.Time{}
	}
	ms.Join(Caller{Node: "steady", ConnID: 9}, 1, false)
	ms.Join(Caller{Node: "back", ConnID: 1}, 1, false)
	ms.Join(Caller{Node: "gone", ConnID: 2}, 1, false)
	start := clk.t
	backConn := uint64(1) // 0 while back's connection is closed
	// run ticks to until, with steady and back (while connected)
	// heartbeating every second.
	run := func(until time.Time) {
		for now := clk.t.Add(ms.t.Tick); !now.After(until); now = now.Add(ms.t.Tick) {
			clk.t = now
			if now.Sub(start)%time.Second == 0 {
				ms.Heartbeat(Caller{Node: "steady", ConnID: 9}, 1)
				if backConn != 0 {
					ms.Heartbeat(Caller{Node: "back", ConnID: backConn}, 1)
				}
			}
			ms.Tick(now)
		}
	}
	v := ms.Version()
	run(start.Add(time.Second))
	ms.ConnClosed("back", 1)
	backConn = 0
	ms.ConnClosed("gone", 2)
	for _, n := range []string{"back", "gone"} {
		if st := status(t, ms, n); st != rpcdef.StatusAlive {
			t.Fatalf("%s right after its close on an overloaded master: %s, want alive", n, st)
		}
	}
	closed := clk.t
	run(closed.Add(1500 * time.Millisecond))
	backConn = 3 // redialled: its next heartbeat comes on the new connection
	run(closed.Add(ms.t.Detector.MaxDead - ms.t.Tick))
	if st := status(t, ms, "gone"); st != rpcdef.StatusAlive {
		t.Fatalf("gone within max_dead of its close: %s, want alive still", st)
	}
	run(closed.Add(ms.t.Detector.MaxDead + ms.t.Tick))
	if st := status(t, ms, "gone"); st != rpcdef.StatusDead {
		t.Fatalf("gone at max_dead of its close: %s, want dead", st)
	}
	var r rpcdef.WatchReply
	ms.Since(v, &r)
	for _, e := range r.Events {
		if e.Node != "gone" {
			t.Fatalf("%s, which redialled or heartbeated, got %+v", e.Node, e)
		}
	}

	// Not overloaded: a close is suspect at once, as before.
	busy = false
	run(clk.t.Add(2 * time.Second))
	ms.ConnClosed("steady", 9)
	if st := status(t, ms, "steady"); st != rpcdef.StatusSuspect {
		t.Fatalf("a close on an idle master: %s, want suspect at once", st)
	}
}

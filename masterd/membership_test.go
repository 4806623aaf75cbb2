package masterd

import (
	"errors"
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
	if _, err := ms.Join(c, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Heartbeat(c, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.Join(c, 20); err != nil {
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
	ms.Join(c, 1)
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
	ms.Join(Caller{Node: "n2", ConnID: 8}, 1)
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
	ms.Join(Caller{Node: "back", ConnID: 1}, 1)
	ms.Join(Caller{Node: "gone", ConnID: 2}, 1)
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
	ms.Join(Caller{Node: "n1", ConnID: 1}, 1)
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
	ms.Join(Caller{Node: "a", Addr: "x:1"}, 5)
	ms.Join(Caller{Node: "b"}, 6)
	ms.Leave(Caller{Node: "b"}, 6, "")
	v := ms.Version()
	data, ok, err := ms.Snapshot()
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, again, _ := ms.Snapshot(); again {
		t.Fatal("an unchanged roll was snapshotted twice")
	}
	next := testMembership()
	if n, err := next.Restore(data); err != nil || n != 2 {
		t.Fatal(n, err)
	}
	if next.Version() <= v {
		t.Fatalf("version %d after restart, was %d: versions must keep growing", next.Version(), v)
	}
	if st := status(t, next, "a"); st != rpcdef.StatusUnknown {
		t.Fatalf("a: %s, want unknown", st)
	}
	if st := status(t, next, "b"); st != rpcdef.StatusLeft {
		t.Fatalf("b: %s, want left kept", st)
	}
	var r rpcdef.WatchReply
	if ok, _ := next.Since(v, &r); !ok || !r.Reset {
		t.Fatal("a watcher from before the restart must get the whole roll")
	}
	if _, err := next.Heartbeat(Caller{Node: "a"}, 5); !errors.Is(err, rpcdef.ErrNotJoined) {
		t.Fatalf("heartbeat of an unknown node: %v, want not joined (join again)", err)
	}
	if _, err := next.Join(Caller{Node: "a"}, 5); err != nil {
		t.Fatal(err)
	}
	if st := status(t, next, "a"); st != rpcdef.StatusAlive {
		t.Fatalf("a after joining again: %s", st)
	}
}

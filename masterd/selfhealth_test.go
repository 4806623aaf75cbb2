package masterd

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/muster-lab/muster/rpcdef"
)

// An idle, healthy master never holds its verdicts, however its slaves'
// phases are bunched: here most of them heartbeat within the same 20 ms of
// every second, the rest spread over it, for five simulated minutes.
func TestIdleMasterNeverHolds(t *testing.T) {
	for _, tc := range []struct {
		slaves int
		run    time.Duration
	}{
		{3, 5 * time.Minute},
		{100, 5 * time.Minute},
		{1000, 5 * time.Minute},
		{10000, 10 * time.Second},
	} {
		t.Run(fmt.Sprint(tc.slaves, " slaves"), func(t *testing.T) {
			if testing.Short() && tc.slaves > 1000 {
				t.Skip("10,000 slaves in -short")
			}
			ms, c, m, _ := instrumented(t)
			rng := rand.New(rand.NewPCG(uint64(tc.slaves), 11))
			phase := func(i int) time.Duration {
				if i%5 == 0 { // one in five anywhere in the second
					return time.Duration(rng.Int64N(int64(time.Second)))
				}
				return 300*time.Millisecond + time.Duration(rng.Int64N(int64(20*time.Millisecond)))
			}
			s := newSim(t, ms, c, tc.slaves, phase, func(int) time.Duration { return steadyGap(rng) })
			s.run(c.t.Add(tc.run))
			for _, cause := range []string{holdBehind, holdCrowd, holdQuiet, holdStall} {
				if n := testutil.ToFloat64(m.holds[cause]); n != 0 {
					t.Errorf("%d slaves, idle master: %v holds for %s, want none", tc.slaves, n, cause)
				}
			}
			for _, k := range []rpcdef.EventKind{rpcdef.EventSuspect, rpcdef.EventDead} {
				if n := s.events(k); n != 0 {
					t.Errorf("%d %s events on an idle master, want none", n, k)
				}
			}
		})
	}
}

// The holds metric has every cause from the start, and counts a hold for
// each: a stall, nobody heartbeating, a crowd late at once.
func TestHoldsMetric(t *testing.T) {
	_, _, _, reg := instrumented(t)
	if n := testutil.CollectAndCount(reg, "muster_master_verdict_holds_total"); n != 5 {
		t.Fatalf("%d series of muster_master_verdict_holds_total, want 5 (admission, behind, crowd, quiet, stall)", n)
	}
	for _, tc := range []struct {
		name  string
		cause string
		trip  func(s *sim) // the trouble, from the sim's next tick
	}{
		{"a 10 s stop of the master", holdStall, func(s *sim) {
			s.tick = s.tick.Add(10 * time.Second)
			for i := range s.next {
				s.next[i] = s.next[i].Add(10 * time.Second)
			}
		}},
		{"no heartbeat from anyone for 3 s", holdQuiet, func(s *sim) {
			for i := range s.next {
				s.next[i] = s.next[i].Add(3 * time.Second)
			}
		}},
		{"30 of 40 late together", holdCrowd, func(s *sim) {
			for i := range 30 {
				s.next[i] = s.next[i].Add(1500 * time.Millisecond)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, c, m, _ := instrumented(t)
			rng := rand.New(rand.NewPCG(1, 1))
			// In the same 20 ms of every second, so that they are late
			// together, as a crowd is.
			s := newSim(t, ms, c, 40, func(i int) time.Duration { return time.Duration(i) * time.Millisecond / 2 },
				func(int) time.Duration { return steadyGap(rng) })
			s.run(c.t.Add(30 * time.Second))
			tc.trip(s)
			s.run(s.tick.Add(15 * time.Second))
			if n := testutil.ToFloat64(m.holds[tc.cause]); n != 1 {
				t.Errorf("%s holds = %v, want 1", tc.cause, n)
			}
			if n := s.events(rpcdef.EventDead); n != 0 {
				t.Errorf("%d dead events, want none: every slave came back", n)
			}
		})
	}
}

// A master whose handlers are starved (no heartbeat handled for 500 ms,
// its detector's ticks on time) is behind by the count over a whole
// interval, holds its verdicts, counts a hold for "behind", and declares
// nobody dead once the queued heartbeats are handled.
func TestStarvedHandlersHold(t *testing.T) {
	ms, c, m, _ := instrumented(t)
	const slaves = 1000
	rng := rand.New(rand.NewPCG(2, 2))
	s := newSim(t, ms, c, slaves, func(i int) time.Duration { return time.Duration(i) * time.Second / slaves },
		func(int) time.Duration { return steadyGap(rng) })
	s.run(c.t.Add(30 * time.Second))
	pause := s.tick
	for i := range s.next { // sent during the pause, handled at its end
		if s.next[i].Before(pause.Add(500 * time.Millisecond)) {
			s.next[i] = pause.Add(500 * time.Millisecond)
		}
	}
	s.run(pause.Add(10 * time.Second))
	if n := testutil.ToFloat64(m.holds[holdBehind]); n != 1 {
		t.Errorf("behind holds = %v, want 1", n)
	}
	for _, k := range []rpcdef.EventKind{rpcdef.EventSuspect, rpcdef.EventDead} {
		if n := s.events(k); n != 0 {
			t.Errorf("%d %s events after the master fell 500 ms behind, want none", n, k)
		}
	}
}

// After a 20 s stop of the master, the slaves' calls have timed out and
// they have closed their connections: the master sees the closes as it
// wakes, some before its detector's first tick and some after. No slave
// that comes back gets a suspect event; the one that does not is suspect
// and dead once the recovery is over.
func TestStallThenClosesNoSuspect(t *testing.T) {
	ms, c := testMembershipClock()
	const slaves = 10
	rng := rand.New(rand.NewPCG(3, 3))
	s := newSim(t, ms, c, slaves, func(i int) time.Duration { return time.Duration(i) * 100 * time.Millisecond },
		func(int) time.Duration { return steadyGap(rng) })
	s.run(c.t.Add(20 * time.Second))

	woke := s.tick.Add(20 * time.Second)
	for i := range s.next {
		s.next[i] = time.Time{}
	}
	c.t = woke
	for i := range slaves / 2 { // read before the detector ticks
		ms.ConnClosed(s.names[i], s.conn[i])
	}
	s.tick = woke
	s.run(woke)
	for i := slaves / 2; i < slaves; i++ { // read after
		c.t = woke.Add(time.Millisecond)
		ms.ConnClosed(s.names[i], s.conn[i])
	}
	if n := s.events(rpcdef.EventSuspect); n != 0 {
		t.Fatalf("%d suspect events as the master woke from its stall, want none", n)
	}
	const gone = slaves - 1
	for i := range gone { // the others redial after a backoff and heartbeat
		s.conn[i] += 100
		s.next[i] = woke.Add(200*time.Millisecond + time.Duration(i)*150*time.Millisecond)
	}
	s.run(woke.Add(15 * time.Second))
	ev, _ := ms.Recent(maxEvents)
	for _, e := range ev {
		if (e.Kind == rpcdef.EventSuspect || e.Kind == rpcdef.EventDead) && e.Node != s.names[gone] {
			t.Errorf("%s %s (%s) %v after the master woke", e.Node, e.Kind, e.Reason, e.At.Sub(woke))
		}
	}
	at := s.deadAt(s.names[gone])
	if at.IsZero() {
		t.Fatalf("%s, never back after the stall, is not dead", s.names[gone])
	}
	if n := s.events(rpcdef.EventSuspect); n != 1 {
		t.Errorf("%d suspect events, want 1 (%s's, once the recovery ended)", n, s.names[gone])
	}
	t.Logf("%s dead %v after the master woke (max_dead %v)", s.names[gone], at.Sub(woke), ms.t.Detector.MaxDead)
	if took := at.Sub(woke); took > ms.t.Detector.MaxDead+2*ms.t.Tick {
		t.Errorf("%s dead %v after the master woke, want by max_dead %v", s.names[gone], took, ms.t.Detector.MaxDead)
	}
}

// A close that arrives while the master is not stalled is suspect at once,
// and dead after the grace: the crash detection time is unchanged.
func TestCloseOutsideAStallIsImmediate(t *testing.T) {
	ms, c := testMembershipClock()
	rng := rand.New(rand.NewPCG(4, 4))
	s := newSim(t, ms, c, 3, func(i int) time.Duration { return time.Duration(i) * 300 * time.Millisecond },
		func(int) time.Duration { return steadyGap(rng) })
	s.run(c.t.Add(10 * time.Second))
	s.next[0] = time.Time{}
	closed := s.tick.Add(-ms.t.Tick / 2)
	c.t = closed
	ms.ConnClosed(s.names[0], s.conn[0])
	if st := status(t, ms, s.names[0]); st != rpcdef.StatusSuspect {
		t.Fatalf("after its connection closed: %s, want suspect at once", st)
	}
	s.run(closed.Add(time.Second))
	at := s.deadAt(s.names[0])
	if took := at.Sub(closed); at.IsZero() || took > ms.t.CloseGrace+ms.t.Tick {
		t.Fatalf("dead %v after its connection closed, want within %v", took, ms.t.CloseGrace+ms.t.Tick)
	}
}

func TestSelfMonitorBehindAndOverdue(t *testing.T) {
	tick := 50 * time.Millisecond
	m := NewSelfMonitor(tick)
	if m.Overdue(base) {
		t.Error("overdue before the first tick")
	}
	at := base
	for range 10 {
		at = at.Add(tick)
		m.Tick(at)
	}
	if m.Behind(at, time.Second) || m.Overdue(at.Add(2*tick)) {
		t.Error("on-time ticks: behind or overdue")
	}
	if !m.Overdue(at.Add(2*tick + 1)) {
		t.Error("not overdue after more than two ticks without one")
	}
	at = at.Add(300 * time.Millisecond) // a lag
	if stall := m.Tick(at); stall != 250*time.Millisecond {
		t.Fatalf("stall %v, want 250ms", stall)
	}
	if !m.Behind(at.Add(999*time.Millisecond), time.Second) {
		t.Error("not behind within a second of a lag")
	}
	if m.Behind(at.Add(time.Second), time.Second) {
		t.Error("still behind a second after a lag")
	}
}

func TestSelfMonitorHandled(t *testing.T) {
	tick := 50 * time.Millisecond
	m := NewSelfMonitor(tick)
	at := base
	for i := range 40 {
		if i > 0 {
			at = at.Add(tick)
		}
		for range 5 { // 100 a second
			m.NoteArrival(at)
		}
		n, span := m.Handled(at, time.Second)
		switch {
		case i < 20 && span != 0:
			t.Fatalf("tick %d: a span of %v before the marks cover a second", i, span)
		case i >= 20 && (span != time.Second || n != 100):
			t.Fatalf("tick %d: %d over %v, want 100 over 1s", i, n, span)
		}
	}
	if len(m.marks) > 21 {
		t.Errorf("%d marks kept for a 1 s window at 50 ms ticks, want 21", len(m.marks))
	}
}

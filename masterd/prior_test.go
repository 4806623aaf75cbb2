package masterd

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// steadyGap is a steady slave's gap on a quiet LAN: 1 s ± 5 ms.
func steadyGap(rng *rand.Rand) time.Duration {
	return time.Second + time.Duration(rng.Int64N(int64(10*time.Millisecond)+1)) - 5*time.Millisecond
}

// jitteryGap is the jittery node of the DetectorConfig comment: gaps
// uniform in [0.5 s, 2.5 s].
func jitteryGap(rng *rand.Rand) time.Duration {
	return 500*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)+1))
}

// clusterPrior pools the windows of members whose gaps come from gap(i, rng),
// each with a full window of history.
func clusterPrior(cfg *DetectorConfig, members int, gap func(i int, rng *rand.Rand) time.Duration) Prior {
	rng := rand.New(rand.NewPCG(7, 7))
	var p Prior
	for i := range members {
		gaps := make([]time.Duration, cfg.Window)
		for j := range gaps {
			gaps[j] = gap(i, rng)
		}
		a, _ := observed(cfg, gaps...)
		p.Add(&a, cfg)
	}
	return p
}

// judgeWithCluster is the verdict the tick gives a: the tick's prior holds
// a itself too.
func judgeWithCluster(a *Arrivals, now time.Time, cfg *DetectorConfig, cluster Prior) Verdict {
	p := cluster
	p.Add(a, cfg)
	return a.JudgeWith(now, cfg, &p)
}

// A fresh member of a steady cluster, silent after its join and two
// heartbeats, is dead ≈1.53 s after the last, as an established one is,
// not ≈3.62 s as in the warm-up; with only one gap of its own it is still
// judged tolerantly.
func TestPriorFreshNode(t *testing.T) {
	cfg := defaults(t)
	cluster := clusterPrior(cfg, 20, func(_ int, rng *rand.Rand) time.Duration { return steadyGap(rng) })
	for _, tc := range []struct {
		name string
		gaps []time.Duration
		want time.Duration // dead after this much silence, to the 10 ms step
	}{
		{"join only", nil, 3620 * time.Millisecond},
		{"one heartbeat", []time.Duration{time.Second}, 3620 * time.Millisecond},
		{"two heartbeats", []time.Duration{time.Second, 1002 * time.Millisecond}, 1530 * time.Millisecond},
		{"five heartbeats", []time.Duration{998 * time.Millisecond, time.Second, 1003 * time.Millisecond, time.Second, 999 * time.Millisecond}, 1530 * time.Millisecond},
		// Its gaps are not the cluster's: it is judged as in the warm-up.
		{"unlike the cluster", []time.Duration{1300 * time.Millisecond, 800 * time.Millisecond}, 3620 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, now := observed(cfg, tc.gaps...)
			p := cluster
			p.Add(&a, cfg)
			dead := time.Duration(-1)
			for s := time.Duration(0); s <= cfg.MaxDead; s += 10 * time.Millisecond {
				if a.JudgeWith(now.Add(s), cfg, &p) == VerdictDead {
					dead = s
					break
				}
			}
			t.Logf("dead after %v of silence (DeadAfterWith %v)", dead, a.DeadAfterWith(cfg, &p))
			if dead != tc.want {
				t.Errorf("dead after %v of silence, want %v", dead, tc.want)
			}
			if da := a.DeadAfterWith(cfg, &p); da > dead || dead-da >= 10*time.Millisecond {
				t.Errorf("DeadAfterWith = %v, want within 10ms before the scanned %v", da, dead)
			}
		})
	}

	t.Run("too small a pool", func(t *testing.T) {
		var one Arrivals // the only other member, with 2 gaps: fewer than PriorMinPool
		one.Observe(base, cfg)
		one.Observe(base.Add(time.Second), cfg)
		one.Observe(base.Add(2*time.Second), cfg)
		var p Prior
		p.Add(&one, cfg)
		var a Arrivals
		for i := range 3 {
			a.Observe(base.Add(time.Duration(i)*time.Second), cfg)
		}
		p.Add(&a, cfg)
		if got, want := a.DeadAfterWith(cfg, &p), a.DeadAfter(cfg); got != want {
			t.Errorf("DeadAfterWith = %v with a pool of %d gaps, want the warm-up's %v", got, p.Gaps(), want)
		}
	})
}

// TestPriorJitteryLives is the simulation behind MinSamples, run through
// the prior: a fresh member whose gaps are uniform in [0.5 s, 2.5 s] is
// judged from its join until it has MinSamples gaps of its own, just before
// each heartbeat, in 100,000 lives. It must never be dead where the prior
// has any reason to doubt it: without a cluster, in a jittery cluster, and
// in a steady cluster with one jittery member. In a cluster whose members
// are all steady the jittery newcomer is the one case the prior cannot
// tell from a steady one while its first gaps happen to agree with the
// cluster's: its rate of false deaths is logged and bounded.
func TestPriorJitteryLives(t *testing.T) {
	cfg := defaults(t)
	lives := 100000
	if testing.Short() {
		lives = 10000
	}
	steady := func(_ int, rng *rand.Rand) time.Duration { return steadyGap(rng) }
	for _, tc := range []struct {
		name    string
		cluster *Prior
		bound   float64 // the highest share of lives allowed a false death
	}{
		{"no cluster", nil, 0},
		{"jittery cluster", ptr(clusterPrior(cfg, 20, func(_ int, rng *rand.Rand) time.Duration { return jitteryGap(rng) })), 0},
		{"one jittery member of 100", ptr(clusterPrior(cfg, 100, func(i int, rng *rand.Rand) time.Duration {
			if i == 42 {
				return jitteryGap(rng)
			}
			return steadyGap(rng)
		})), 0},
		// The chance that its first two gaps both fall within the agreement
		// (3 spreads of the cluster's, ±8.7 ms) is about 7.6e-5, and then
		// its next gap is over 1.53 s half the time: ≈4 in 100,000.
		{"steady cluster", ptr(clusterPrior(cfg, 100, steady)), 2e-4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(13, 99))
			falseDeaths := 0
			for range lives {
				var a Arrivals
				now := base
				a.Observe(now, cfg)
				for range cfg.MinSamples + 1 {
					gap := jitteryGap(rng)
					before := now.Add(gap - time.Millisecond)
					var v Verdict
					if tc.cluster == nil {
						v = a.JudgeWith(before, cfg, nil)
					} else {
						v = judgeWithCluster(&a, before, cfg, *tc.cluster)
					}
					if v == VerdictDead {
						falseDeaths++
						break
					}
					now = now.Add(gap)
					a.Observe(now, cfg)
				}
			}
			share := float64(falseDeaths) / float64(lives)
			t.Logf("%d false deaths in %d lives (%.1e)", falseDeaths, lives, share)
			if share > tc.bound {
				t.Errorf("%d false deaths in %d lives, want at most %.0e of them", falseDeaths, lives, tc.bound)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestPriorNoAllocs: the tick builds a Prior and judges with it for every
// member, and must not allocate.
func TestPriorNoAllocs(t *testing.T) {
	cfg := defaults(t)
	a := steadyHistory(cfg, base)
	var fresh Arrivals
	for i := range 3 {
		fresh.Observe(base.Add(time.Duration(i)*time.Second), cfg)
	}
	if n := testing.AllocsPerRun(100, func() {
		var p Prior
		p.Add(&a, cfg)
		p.Add(&fresh, cfg)
		fresh.JudgeWith(base.Add(3200*time.Millisecond), cfg, &p)
	}); n != 0 {
		t.Errorf("%v allocs, want 0", n)
	}
}

// sim drives a Membership with synthetic slaves on a fake clock: each
// heartbeats on its own schedule, and the detector ticks every Timing.Tick,
// after the heartbeats due by then.
type sim struct {
	t     *testing.T
	ms    *Membership
	c     *clock
	names []string
	next  []time.Time // each slave's next heartbeat; zero once silenced
	last  []time.Time // each slave's last heartbeat handled
	conn  []uint64
	beats []int // heartbeats each has sent
	stop  []int // silence each after this many heartbeats; 0 for never
	gap   func(i int) time.Duration
	tick  time.Time // the next tick
}

// newSim joins n slaves at start+phase(i) and has them heartbeat every gap(i).
func newSim(t *testing.T, ms *Membership, c *clock, n int, phase, gap func(i int) time.Duration) *sim {
	s := &sim{t: t, ms: ms, c: c, names: make([]string, n), next: make([]time.Time, n),
		last: make([]time.Time, n), conn: make([]uint64, n), beats: make([]int, n), stop: make([]int, n),
		gap: gap, tick: c.t}
	start := c.t
	for i := range n {
		s.names[i] = fmt.Sprintf("n%05d", i)
		s.conn[i] = uint64(i + 1)
		c.t = start.Add(phase(i))
		if _, err := ms.Join(Caller{Node: s.names[i], ConnID: s.conn[i]}, 1, true); err != nil {
			t.Fatal(err)
		}
		s.last[i] = c.t
		s.next[i] = c.t.Add(gap(i))
	}
	c.t = start
	return s
}

// run plays the cluster until to.
func (s *sim) run(to time.Time) {
	for !s.tick.After(to) {
		for i := range s.names {
			for !s.next[i].IsZero() && !s.next[i].After(s.tick) {
				s.c.t = s.next[i]
				if _, err := s.ms.Heartbeat(Caller{Node: s.names[i], ConnID: s.conn[i]}, 1); err != nil {
					s.t.Fatalf("%s heartbeat at %v: %v", s.names[i], s.c.t, err)
				}
				s.last[i] = s.next[i]
				s.next[i] = s.next[i].Add(s.gap(i))
				if s.beats[i]++; s.beats[i] == s.stop[i] {
					s.next[i] = time.Time{}
				}
			}
		}
		s.c.t = s.tick
		s.ms.Tick(s.tick)
		s.tick = s.tick.Add(s.ms.t.Tick)
	}
}

// deadAt is when the event that made name dead was told, or the zero time.
func (s *sim) deadAt(name string) time.Time {
	ev, _ := s.ms.Recent(maxEvents)
	for _, e := range ev {
		if e.Node == name && e.Kind == rpcdef.EventDead {
			return e.At
		}
	}
	return time.Time{}
}

// events counts the events of kind since the start.
func (s *sim) events(kind rpcdef.EventKind) int {
	ev, _ := s.ms.Recent(maxEvents)
	n := 0
	for _, e := range ev {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// A fresh slave silenced after two heartbeats is dead within ≈1.6 s of its
// last one, counted on the detector's ticks: after a cold start of the
// cluster, and after a master restart (the roster restored, every slave
// joining again with no history).
func TestFreshNodeDetectedAtFullSpeed(t *testing.T) {
	const limit = 1600 * time.Millisecond
	for _, tc := range []struct {
		name    string
		restart bool
		slaves  int
	}{
		{"cold start of 3", false, 3},
		{"cold start of 100", false, 100},
		{"after a master restart, 3", true, 3},
		{"after a master restart, 100", true, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, c := testMembershipClock()
			if tc.restart {
				old, _ := testMembershipClock()
				for i := range tc.slaves {
					old.Join(Caller{Node: fmt.Sprintf("n%05d", i), ConnID: uint64(i + 1)}, 1, true)
				}
				restart(t, old, ms)
			}
			rng := rand.New(rand.NewPCG(uint64(tc.slaves), 5))
			phases := make([]time.Duration, tc.slaves)
			for i := range phases {
				phases[i] = time.Duration(rng.Int64N(int64(time.Second)))
			}
			s := newSim(t, ms, c, tc.slaves, func(i int) time.Duration { return phases[i] },
				func(int) time.Duration { return steadyGap(rng) })
			start := c.t
			const victim = 0
			s.stop[victim] = 2
			s.run(start.Add(10 * time.Second))
			last := s.last[victim]
			if s.beats[victim] != 2 {
				t.Fatalf("the victim sent %d heartbeats, want 2", s.beats[victim])
			}
			at := s.deadAt(s.names[victim])
			if at.IsZero() {
				t.Fatalf("%s silent after its join and two heartbeats was never declared dead", s.names[victim])
			}
			took := at.Sub(last)
			t.Logf("%s: dead %v after its last heartbeat", s.names[victim], took)
			if took > limit {
				t.Errorf("%s: dead %v after its last heartbeat, want at most %v", s.names[victim], took, limit)
			}
			if n := s.events(rpcdef.EventDead); n != 1 {
				t.Errorf("%d dead events, want only the silenced slave's", n)
			}
		})
	}
}

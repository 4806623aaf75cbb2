package masterd

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// base is the synthetic clock's origin: the tests add offsets to it and
// never sleep.
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func defaults(t testing.TB) *DetectorConfig {
	t.Helper()
	cfg := DetectorConfig{}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	return &cfg
}

// scan judges a from its last arrival on, in steps, until limit, and returns
// the first silence at which it is suspect and the first at which it is dead
// (-1 when never). It fails the test if a verdict ever gets better as the
// silence grows.
func scan(t *testing.T, a *Arrivals, cfg *DetectorConfig, step, limit time.Duration) (suspect, dead time.Duration) {
	t.Helper()
	suspect, dead = -1, -1
	worst := VerdictAlive
	for s := time.Duration(0); s <= limit; s += step {
		v := a.Judge(a.Last().Add(s), cfg)
		if v < worst {
			t.Fatalf("verdict went from %v back to %v at %v of silence", worst, v, s)
		}
		worst = v
		if v >= VerdictSuspect && suspect < 0 {
			suspect = s
		}
		if v == VerdictDead && dead < 0 {
			dead = s
		}
	}
	return suspect, dead
}

func TestSteadyNode(t *testing.T) {
	cfg := defaults(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var a Arrivals
	now := base
	a.Observe(now, cfg)
	for now.Sub(base) < 60*time.Second {
		gap := time.Second + time.Duration(rng.Int64N(int64(10*time.Millisecond)+1)) - 5*time.Millisecond
		// Alive all the way to the next heartbeat, checked every 10 ms.
		for s := time.Duration(0); s < gap; s += 10 * time.Millisecond {
			if v := a.Judge(now.Add(s), cfg); v != VerdictAlive {
				t.Fatalf("at %v, %v after the last heartbeat: %v, want alive", now.Sub(base), s, v)
			}
		}
		if v := a.Judge(now.Add(gap-time.Nanosecond), cfg); v != VerdictAlive {
			t.Fatalf("at %v, just before a heartbeat: %v, want alive", now.Sub(base), v)
		}
		now = now.Add(gap)
		a.Observe(now, cfg)
	}

	step := 10 * time.Millisecond
	suspect, dead := scan(t, &a, cfg, step, cfg.MaxDead+time.Second)
	t.Logf("steady node: suspect after %v, dead after %v of silence (DeadAfter %v)", suspect, dead, a.DeadAfter(cfg))
	if dead <= cfg.MinDead || dead > 2*cfg.Interval {
		t.Errorf("dead after %v of silence, want in (%v, %v]", dead, cfg.MinDead, 2*cfg.Interval)
	}
	// The figure the DetectorConfig comment gives: ≈1.52 s, so the first
	// 10 ms step past it.
	if dead != 1530*time.Millisecond {
		t.Errorf("dead after %v of silence, want 1.53s (phi 8 at ≈1.52s)", dead)
	}
	if suspect != 1310*time.Millisecond {
		t.Errorf("suspect after %v of silence, want 1.31s (phi 3 at ≈1.306s)", suspect)
	}
	if da := a.DeadAfter(cfg); da > dead || dead-da >= step {
		t.Errorf("DeadAfter = %v, want within %v before the scanned %v", da, step, dead)
	}
}

func TestJitteryNode(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			cfg := defaults(t)
			rng := rand.New(rand.NewPCG(seed, 99))
			var a Arrivals
			now := base
			a.Observe(now, cfg)
			var arrivals, suspects int
			var maxPhi float64
			for now.Sub(base) < 10*time.Minute {
				gap := 500*time.Millisecond + time.Duration(rng.Int64N(int64(2*time.Second)+1))
				before := now.Add(gap - time.Millisecond)
				switch a.Judge(before, cfg) {
				case VerdictDead:
					t.Fatalf("dead at %v, just before a heartbeat %v after the last one (phi %.2f)",
						before.Sub(base), gap, a.Phi(before, cfg))
				case VerdictSuspect:
					suspects++
				}
				maxPhi = max(maxPhi, a.Phi(before, cfg))
				now = now.Add(gap)
				a.Observe(now, cfg)
				arrivals++
			}
			_, dead := scan(t, &a, cfg, 10*time.Millisecond, cfg.MaxDead+time.Second)
			t.Logf("%d arrivals, %d suspect checks, highest phi before an arrival %.2f; silence: dead after %v",
				arrivals, suspects, maxPhi, dead)
			if dead < cfg.MinDead || dead > cfg.MaxDead {
				t.Errorf("dead after %v of silence, want in [%v, %v]", dead, cfg.MinDead, cfg.MaxDead)
			}
		})
	}
}

func TestStalledMaster(t *testing.T) {
	cfg := defaults(t)
	tick := 100 * time.Millisecond
	m := NewSelfMonitor(tick)
	var a Arrivals
	// Steady heartbeats for 60 s with the loop ticking in between.
	now := base
	for i := 0; i <= 60; i++ {
		beat := base.Add(time.Duration(i) * time.Second)
		for ; now.Before(beat); now = now.Add(tick) {
			if stall := m.Tick(now); stall != 0 {
				t.Fatalf("tick at %v: stall %v, want 0", now.Sub(base), stall)
			}
		}
		a.Observe(beat, cfg)
		m.NoteArrival(beat)
	}
	if stall := m.Tick(now); stall != 0 {
		t.Fatalf("tick at %v: stall %v, want 0", now.Sub(base), stall)
	}

	// The master stops for 10 s: no ticks, no heartbeats processed.
	resume := now.Add(10 * time.Second)
	if q := m.QuietFor(resume); q != 10*time.Second {
		t.Errorf("QuietFor = %v, want 10s", q)
	}
	stall := m.Tick(resume)
	if want := 10*time.Second - tick; stall != want {
		t.Fatalf("Tick after the stall = %v, want %v", stall, want)
	}

	unforgiven := a
	if v := unforgiven.Judge(resume, cfg); v != VerdictDead {
		t.Errorf("without Forgive: %v, want dead (else this test proves nothing)", v)
	}
	a.Forgive(stall)
	if v := a.Judge(resume, cfg); v != VerdictAlive {
		t.Errorf("with Forgive: %v, want alive", v)
	}
	// The queued heartbeat is processed; the stall does not enter the history.
	a.Observe(resume, cfg)
	if mean, _ := a.Estimate(cfg); mean != time.Second {
		t.Errorf("mean after the stall = %v, want 1s", mean)
	}
	// A node that really stops is still caught.
	if _, dead := scan(t, &a, cfg, 10*time.Millisecond, cfg.MaxDead); dead != 1530*time.Millisecond {
		t.Errorf("after the stall, dead after %v of silence, want 1.53s", dead)
	}
}

func TestWarmUp(t *testing.T) {
	cfg := defaults(t)
	// Gaps of 3 s, far from Interval, show whether the history is used.
	const gap = 3 * time.Second
	warmDead := time.Duration(float64(cfg.Interval) + phiInverse(cfg.DeadPhi)*float64(cfg.Interval/2))
	for _, tc := range []struct {
		samples    int
		wantMean   time.Duration
		wantStdDev time.Duration
		wantDead   time.Duration // DeadAfter, to the millisecond
	}{
		{0, time.Second, 500 * time.Millisecond, warmDead},
		{1, time.Second, 500 * time.Millisecond, warmDead},
		{2, time.Second, 500 * time.Millisecond, warmDead},
		{15, time.Second, 500 * time.Millisecond, warmDead},
		{16, gap, 100 * time.Millisecond, gap + 523*time.Millisecond},
	} {
		t.Run(fmt.Sprint(tc.samples, " samples"), func(t *testing.T) {
			a, _ := observed(cfg, slices.Repeat([]time.Duration{gap}, tc.samples)...)
			mean, stddev := a.Estimate(cfg)
			if mean != tc.wantMean || stddev != tc.wantStdDev {
				t.Errorf("Estimate = %v, %v; want %v, %v", mean, stddev, tc.wantMean, tc.wantStdDev)
			}
			if d := a.DeadAfter(cfg); d.Round(time.Millisecond) != tc.wantDead.Round(time.Millisecond) {
				t.Errorf("DeadAfter = %v, want %v", d, tc.wantDead)
			}
		})
	}

	t.Run("first heartbeat then silence", func(t *testing.T) {
		var a Arrivals
		a.Observe(base, cfg)
		suspect, dead := scan(t, &a, cfg, 10*time.Millisecond, cfg.MaxDead+time.Second)
		t.Logf("suspect after %v, dead after %v", suspect, dead)
		if dead < cfg.MinDead || dead > cfg.MaxDead {
			t.Errorf("dead after %v of silence, want in [%v, %v]", dead, cfg.MinDead, cfg.MaxDead)
		}
		if dead != 3620*time.Millisecond {
			t.Errorf("dead after %v of silence, want 3.62s (phi 8 at ≈3.613s)", dead)
		}
	})

	t.Run("no heartbeat yet", func(t *testing.T) {
		var a Arrivals
		if v := a.Judge(base, cfg); v != VerdictAlive {
			t.Errorf("Judge = %v, want alive", v)
		}
		if p := a.Phi(base, cfg); p != 0 {
			t.Errorf("Phi = %v, want 0", p)
		}
		a.Forgive(time.Second)
		if !a.Last().IsZero() {
			t.Errorf("Forgive moved a zero Last to %v", a.Last())
		}
	})
}

func TestObserveWindow(t *testing.T) {
	cfg := &DetectorConfig{MinSamples: 1}
	*cfg = cfg.WithDefaults()
	for _, tc := range []struct {
		name string
		gaps []time.Duration
		want []time.Duration // the gaps the history should hold
	}{
		{"skips long gaps", []time.Duration{time.Second, 6 * time.Second, 2 * time.Second, 3 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{"skips duplicates", []time.Duration{time.Second, 0, 2 * time.Second, 0, 3 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{"keeps the window", ramp(100), ramp(100)[100-cfg.Window:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := observed(cfg, tc.gaps...)
			var sum, sumSq float64
			for _, g := range tc.want {
				sum += g.Seconds()
				sumSq += g.Seconds() * g.Seconds()
			}
			n := float64(len(tc.want))
			wantMean := sum / n
			wantStdDev := max(math.Sqrt(sumSq/n-wantMean*wantMean), cfg.MinStdDev.Seconds())
			mean, stddev := a.Estimate(cfg)
			if int(a.n) != len(tc.want) || math.Abs(mean.Seconds()-wantMean) > 1e-6 || math.Abs(stddev.Seconds()-wantStdDev) > 1e-6 {
				t.Errorf("%d gaps, Estimate = %v, %v; want %d, %.6fs, %.6fs", a.n, mean, stddev, len(tc.want), wantMean, wantStdDev)
			}
		})
	}
}

// ramp is n gaps of 1.000 s, 1.001 s, ...
// observed is the history of a node heard at base and then after each of
// gaps, and the time of its last heartbeat.
func observed(cfg *DetectorConfig, gaps ...time.Duration) (Arrivals, time.Time) {
	var a Arrivals
	now := base
	a.Observe(now, cfg)
	for _, g := range gaps {
		now = now.Add(g)
		a.Observe(now, cfg)
	}
	return a, now
}

func ramp(n int) []time.Duration {
	gaps := make([]time.Duration, n)
	for i := range gaps {
		gaps[i] = time.Second + time.Duration(i)*time.Millisecond
	}
	return gaps
}

func TestForgiveOvershoot(t *testing.T) {
	cfg := defaults(t)
	var a Arrivals
	a.Observe(base, cfg)
	a.Forgive(5 * time.Second)
	at := base.Add(2 * time.Second)
	if v := a.Judge(at, cfg); v != VerdictAlive {
		t.Errorf("Judge before the forgiven last arrival = %v, want alive", v)
	}
	a.Observe(at, cfg)
	if !a.Last().Equal(at) || a.n != 0 {
		t.Errorf("after an arrival before the forgiven one: last %v, %d gaps; want %v, 0", a.Last().Sub(base), a.n, at.Sub(base))
	}
}

func TestPhiInverse(t *testing.T) {
	for _, p := range []float64{0.1, 0.5, 1, 3, 8, 16, 300} {
		if got := phi(phiInverse(p)); math.Abs(got-p) > 1e-9*max(p, 1) {
			t.Errorf("phi(phiInverse(%v)) = %v", p, got)
		}
	}
	// Far past the mean phi is large but finite.
	if p := phi(1e6); math.IsInf(p, 0) || math.IsNaN(p) || p < 1e15 {
		t.Errorf("phi(1e6) = %v, want large and finite", p)
	}
	if p := phi(-1e6); p != 0 {
		t.Errorf("phi(-1e6) = %v, want 0", p)
	}
}

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{
		VerdictAlive: "alive", VerdictSuspect: "suspect", VerdictDead: "dead", Verdict(7): "verdict(7)",
	} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}

func TestWithDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   DetectorConfig
		want DetectorConfig
	}{
		{"zero", DetectorConfig{}, DetectorConfig{
			Interval: time.Second, Window: 32, MinSamples: 16, MinStdDev: 100 * time.Millisecond,
			SuspectPhi: 3, DeadPhi: 8, MinDead: 1500 * time.Millisecond, MaxDead: 5 * time.Second,
		}},
		{"scaled by interval", DetectorConfig{Interval: 2 * time.Second}, DetectorConfig{
			Interval: 2 * time.Second, Window: 32, MinSamples: 16, MinStdDev: 200 * time.Millisecond,
			SuspectPhi: 3, DeadPhi: 8, MinDead: 3 * time.Second, MaxDead: 10 * time.Second,
		}},
		{"set fields kept", DetectorConfig{
			Interval: 500 * time.Millisecond, Window: 16, MinSamples: 5, MinStdDev: time.Millisecond,
			SuspectPhi: 2, DeadPhi: 12, MinDead: time.Second, MaxDead: 4 * time.Second,
		}, DetectorConfig{
			Interval: 500 * time.Millisecond, Window: 16, MinSamples: 5, MinStdDev: time.Millisecond,
			SuspectPhi: 2, DeadPhi: 12, MinDead: time.Second, MaxDead: 4 * time.Second,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.WithDefaults(); got != tc.want {
				t.Errorf("WithDefaults() =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  DetectorConfig
		want string // "" for valid
	}{
		{"zero is the defaults", DetectorConfig{}, ""},
		{"fixed timeout", DetectorConfig{MinDead: 3 * time.Second, MaxDead: 3 * time.Second}, ""},
		{"negative interval", DetectorConfig{Interval: -time.Second, MinStdDev: 1, MinDead: 1, MaxDead: 1},
			"interval -1s must be positive"},
		{"window too big", DetectorConfig{Window: 65}, "window 65 is out of range: want 1 to 64"},
		{"window negative", DetectorConfig{Window: -1}, "window -1 is out of range: want 1 to 64"},
		{"min_samples from a small window", DetectorConfig{Window: 1}, ""},
		{"min_samples over window", DetectorConfig{Window: 8, MinSamples: 9}, "min_samples 9 is more than window 8"},
		{"min_samples negative", DetectorConfig{MinSamples: -1}, "min_samples -1 must be at least 1"},
		{"min_std_dev negative", DetectorConfig{MinStdDev: -time.Millisecond}, "min_std_dev -1ms must be positive"},
		{"suspect_phi negative", DetectorConfig{SuspectPhi: -1}, "suspect_phi -1 must be positive"},
		{"dead_phi equal", DetectorConfig{SuspectPhi: 5, DeadPhi: 5}, "dead_phi 5 must be greater than suspect_phi 5"},
		{"dead_phi below", DetectorConfig{SuspectPhi: 9}, "dead_phi 8 must be greater than suspect_phi 9"},
		{"min_dead equal to interval", DetectorConfig{MinDead: time.Second}, "min_dead 1s must be longer than interval 1s"},
		{"min_dead over max_dead", DetectorConfig{MinDead: 3 * time.Second, MaxDead: 2 * time.Second},
			"min_dead 3s is longer than max_dead 2s"},
		{"max_dead default under min_dead", DetectorConfig{MinDead: 6 * time.Second},
			"min_dead 6s is longer than max_dead 5s"},
		{"max_dead too long", DetectorConfig{MaxDead: 10 * time.Minute}, "max_dead 10m0s is longer than the limit 5m0s"},
		{"every problem", DetectorConfig{Window: 100, SuspectPhi: 9, MinDead: 500 * time.Millisecond},
			"window 100 is out of range: want 1 to 64\ndead_phi 8 must be greater than suspect_phi 9\nmin_dead 500ms must be longer than interval 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Errorf("Validate() = nil, want %q", tc.want)
			case tc.want != "" && err.Error() != tc.want:
				t.Errorf("Validate() = %q, want %q", err, tc.want)
			}
		})
	}
}

func TestSelfMonitorTick(t *testing.T) {
	tick := 100 * time.Millisecond
	m := NewSelfMonitor(tick)
	for _, tc := range []struct {
		at   time.Duration // offset from base
		want time.Duration
	}{
		{0, 0},                      // first tick
		{100 * time.Millisecond, 0}, // on time
		{250 * time.Millisecond, 0}, // late, not a stall
		{450 * time.Millisecond, 0}, // exactly StallFactor ticks
		{650*time.Millisecond + 1, 100*time.Millisecond + 1}, // just over
		{5 * time.Second, 4250*time.Millisecond - 1},
		{4 * time.Second, 0}, // the clock went backwards
		{4100 * time.Millisecond, 0},
	} {
		if got := m.Tick(base.Add(tc.at)); got != tc.want {
			t.Errorf("Tick at %v = %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestQuietFor(t *testing.T) {
	m := NewSelfMonitor(100 * time.Millisecond)
	steps := []struct {
		arrive time.Duration // offset from base; negative for none
		at     time.Duration
		want   time.Duration
	}{
		{-1, 10 * time.Second, 0}, // nothing yet
		{time.Second, 4 * time.Second, 3 * time.Second},
		{500 * time.Millisecond, 4 * time.Second, 3 * time.Second}, // older arrival ignored
		{2 * time.Second, 2500 * time.Millisecond, 500 * time.Millisecond},
		{-1, time.Second, 0}, // never negative
	}
	for i, s := range steps {
		if s.arrive >= 0 {
			m.NoteArrival(base.Add(s.arrive))
		}
		if got := m.QuietFor(base.Add(s.at)); got != s.want {
			t.Errorf("step %d: QuietFor(%v) = %v, want %v", i, s.at, got, s.want)
		}
	}
}

func TestNoteArrivalConcurrent(t *testing.T) {
	m := NewSelfMonitor(100 * time.Millisecond)
	const workers, each = 8, 1000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				m.NoteArrival(base.Add(time.Duration(i*workers+w) * time.Millisecond))
				m.QuietFor(base)
			}
		})
	}
	wg.Wait()
	latest := base.Add((workers*each - 1) * time.Millisecond)
	if got := m.QuietFor(latest.Add(time.Second)); got != time.Second {
		t.Errorf("QuietFor a second after the latest arrival = %v, want 1s", got)
	}
}

func TestNoAllocs(t *testing.T) {
	cfg := defaults(t)
	var a Arrivals
	now := base
	m := NewSelfMonitor(100 * time.Millisecond)
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"Observe", func() { now = now.Add(time.Second); a.Observe(now, cfg) }},
		{"Judge", func() { a.Judge(now.Add(1200*time.Millisecond), cfg) }},
		{"Phi", func() { a.Phi(now.Add(1200*time.Millisecond), cfg) }},
		{"NoteArrival", func() { m.NoteArrival(now) }},
		{"Tick", func() { m.Tick(now) }},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s: %v allocs, want 0", tc.name, n)
		}
	}
}

// steadyHistory is a node that heartbeated every second for a minute,
// ending at last.
func steadyHistory(cfg *DetectorConfig, last time.Time) Arrivals {
	var a Arrivals
	for i := 60; i >= 0; i-- {
		a.Observe(last.Add(-time.Duration(i)*time.Second), cfg)
	}
	return a
}

func BenchmarkObserve(b *testing.B) {
	cfg := defaults(b)
	var a Arrivals
	now := base
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		a.Observe(now, cfg)
	}
}

// BenchmarkJudge judges a node 1.2 s after its last heartbeat, late enough
// that phi is computed.
func BenchmarkJudge(b *testing.B) {
	cfg := defaults(b)
	a := steadyHistory(cfg, base)
	at := base.Add(1200 * time.Millisecond)
	b.ReportAllocs()
	for b.Loop() {
		a.Judge(at, cfg)
	}
}

// BenchmarkJudge10k is the master's scan: one Judge of each of 10,000 nodes.
// "staggered" nodes' last heartbeats are spread over the last second, as in
// a healthy cluster; "all late" nodes are all 1.2 s silent, so every Judge
// computes phi.
func BenchmarkJudge10k(b *testing.B) {
	const nodes = 10000
	cfg := defaults(b)
	for _, bc := range []struct {
		name string
		last func(i int) time.Duration // before the scan
	}{
		{"staggered", func(i int) time.Duration { return time.Duration(i) * time.Second / nodes }},
		{"all late", func(int) time.Duration { return 1200 * time.Millisecond }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			now := base.Add(time.Hour)
			table := make([]Arrivals, nodes)
			for i := range table {
				table[i] = steadyHistory(cfg, now.Add(-bc.last(i)))
			}
			b.ReportAllocs()
			var dead int
			for b.Loop() {
				dead = 0
				for i := range table {
					if table[i].Judge(now, cfg) == VerdictDead {
						dead++
					}
				}
			}
			if dead != 0 {
				b.Fatalf("%d dead nodes in a healthy cluster", dead)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/scan")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/nodes, "ns/node")
		})
	}
}

// A node that comes back after being declared dead keeps its history, and
// the gap that spanned its absence is not a sample: repeated absences do not
// teach the detector that the node is jittery.
func TestResumeDoesNotRecordTheAbsence(t *testing.T) {
	cfg := DetectorConfig{}.WithDefaults()
	base := time.Unix(1000, 0)
	var a Arrivals
	now := base
	for range 40 {
		a.Observe(now, &cfg)
		now = now.Add(time.Second)
	}
	before := a.DeadAfter(&cfg)
	for range 20 { // twenty absences of 1.6 s, each followed by steady heartbeats
		now = now.Add(600 * time.Millisecond)
		a.Resume(now)
		for range 3 {
			now = now.Add(time.Second)
			a.Observe(now, &cfg)
		}
	}
	if after := a.DeadAfter(&cfg); after != before {
		t.Fatalf("dead after %v of silence following the absences, %v before: the absences were learned", after, before)
	}
	// Observe, by contrast, would have learned them.
	var b Arrivals
	now = base
	for range 40 {
		b.Observe(now, &cfg)
		now = now.Add(time.Second)
	}
	for range 20 {
		now = now.Add(600 * time.Millisecond)
		b.Observe(now, &cfg)
		for range 3 {
			now = now.Add(time.Second)
			b.Observe(now, &cfg)
		}
	}
	if b.DeadAfter(&cfg) <= before {
		t.Fatalf("recording the absences did not slow detection (%v vs %v): the test shows nothing", b.DeadAfter(&cfg), before)
	}
}

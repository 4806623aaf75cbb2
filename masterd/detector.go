package masterd

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// MaxWindow is the most inter-arrival times an Arrivals keeps.
const MaxWindow = 64

// MaxDeadLimit is the longest MaxDead allowed. It bounds the inter-arrival
// times kept, so their running sums are exact integers.
const MaxDeadLimit = 5 * time.Minute

// DetectorConfig tunes failure detection. Zero fields take the defaults.
//
// The master keeps, for every slave, the times between its last heartbeats
// and turns the current silence into phi, the accrual failure detector's
// suspicion level (Hayashibara et al., as implemented in Akka):
//
//	phi = -log10(1 - F(silence))
//
// where F is the normal CDF with the mean and standard deviation of the
// node's recent inter-arrival times, approximated by a logistic function:
// F(y) ≈ 1 / (1 + exp(-y(1.5976 + 0.070566y²))), y = (silence-mean)/stddev.
// phi = 1 means a 10% chance that a live node would have been this quiet,
// phi = 8 one in 10⁸.
//
// The verdict for a node whose silence (time since its last heartbeat) is s:
//
//   - Alive while s < Interval: a heartbeat not yet due is never suspicious.
//   - Dead when s >= MaxDead, whatever phi says (the ceiling), or when
//     phi >= DeadPhi and s >= MinDead (the floor: however regular its
//     history, no node is dead with less silence than MinDead).
//   - Suspect when phi >= SuspectPhi and it is not dead.
//   - Alive otherwise.
//
// Until a node has MinSamples inter-arrival times, its mean is Interval and
// its spread max(MinStdDev, Interval/2): the detector knows little yet, so
// it is tolerant. The master's tick does better with what it knows of the
// cluster (JudgeWith and Prior): a node with at least PriorMinOwn gaps, each
// close to the other members' cadence, is judged with that cadence filling
// the samples it lacks, so a steady newcomer is dead ≈1.53 s after its last
// heartbeat from its second gap on. Afterwards the mean and spread are the window's, the spread
// never less than MinStdDev, so a metronomic node is not declared dead by a
// few milliseconds of jitter. MinSamples defaults to half the window because
// the spread of a few samples is too noisy to trust: with 3, a node whose
// gaps are uniform in [0.5 s, 2.5 s] was declared dead falsely, just before
// a heartbeat, in about 5% of simulated lives; with 16, in none of 100,000.
//
// An inter-arrival time longer than MaxDead is not recorded: the node was
// dead (or the master stalled) and its return says nothing about its cadence.
//
// With the defaults at 1 s heartbeats (Window 32, MinSamples 16, MinStdDev
// 100 ms, SuspectPhi 3, DeadPhi 8, MinDead 1.5 s, MaxDead 5 s), phi reaches
// 3 at 3.06 stddevs past the mean and 8 at 5.23 stddevs, so:
//
//   - a steady node (jitter well under 100 ms, spread floored at 100 ms) is
//     suspect after ≈1.31 s of silence and dead after ≈1.52 s
//     (= max(MinDead 1.5 s, 1 s + 5.23×0.1 s));
//   - a node still warming up (its first 16 s: mean 1 s, spread 500 ms) is
//     suspect after ≈2.53 s and dead after ≈3.61 s, unless the cluster's
//     prior vouches for it (see Prior): then as a steady node;
//   - a jittery node with gaps uniform in [0.5 s, 2.5 s] (mean 1.5 s,
//     spread 0.58 s) is dead after ≈4.52 s, while its longest normal gap
//     of 2.5 s gives only phi ≈ 1.4;
//   - anything is dead after 5 s (MaxDead).
//
// Stalls of the master itself are not the slaves' fault (Lifeguard's local
// health): see SelfMonitor, and Arrivals.Forgive.
type DetectorConfig struct {
	Interval   time.Duration // expected heartbeat interval; default 1s; the mean until MinSamples
	Window     int           // inter-arrival times kept per node, 1 to MaxWindow; default 32
	MinSamples int           // below this many inter-arrival times assume mean = Interval; default Window/2
	MinStdDev  time.Duration // floor on the spread; default Interval/10
	SuspectPhi float64       // phi at which a node becomes suspect; default 3
	DeadPhi    float64       // phi at which a node is dead; default 8
	MinDead    time.Duration // floor: never dead with less silence than this; default 1.5×Interval
	MaxDead    time.Duration // ceiling: always dead with this much silence; default 5×Interval
}

// WithDefaults returns c with its zero fields set to the defaults. The
// duration defaults scale with Interval.
func (c DetectorConfig) WithDefaults() DetectorConfig {
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Window == 0 {
		c.Window = 32
	}
	if c.MinSamples == 0 {
		c.MinSamples = max(c.Window/2, 1)
	}
	if c.MinStdDev == 0 {
		c.MinStdDev = c.Interval / 10
	}
	if c.SuspectPhi == 0 {
		c.SuspectPhi = 3
	}
	if c.DeadPhi == 0 {
		c.DeadPhi = 8
	}
	if c.MinDead == 0 {
		c.MinDead = c.Interval * 3 / 2
	}
	if c.MaxDead == 0 {
		c.MaxDead = 5 * c.Interval
	}
	return c
}

// Validate checks c with its defaults filled in, and reports every problem.
func (c DetectorConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Interval <= 0 {
		bad("interval %v must be positive", c.Interval)
	}
	if c.Window < 1 || c.Window > MaxWindow {
		bad("window %d is out of range: want 1 to %d", c.Window, MaxWindow)
	}
	if c.MinSamples < 1 {
		bad("min_samples %d must be at least 1", c.MinSamples)
	} else if c.Window >= 1 && c.MinSamples > c.Window {
		bad("min_samples %d is more than window %d", c.MinSamples, c.Window)
	}
	if c.MinStdDev <= 0 {
		bad("min_std_dev %v must be positive", c.MinStdDev)
	}
	if !(c.SuspectPhi > 0) {
		bad("suspect_phi %v must be positive", c.SuspectPhi)
	}
	if !(c.DeadPhi > c.SuspectPhi) {
		bad("dead_phi %v must be greater than suspect_phi %v", c.DeadPhi, c.SuspectPhi)
	}
	if c.Interval > 0 && c.MinDead <= c.Interval {
		bad("min_dead %v must be longer than interval %v", c.MinDead, c.Interval)
	}
	if c.MinDead > c.MaxDead {
		bad("min_dead %v is longer than max_dead %v", c.MinDead, c.MaxDead)
	}
	if c.MaxDead > MaxDeadLimit {
		bad("max_dead %v is longer than the limit %v", c.MaxDead, MaxDeadLimit)
	}
	return errors.Join(errs...)
}

// Verdict is what the detector says of a node.
type Verdict int

// The verdicts, from best to worst.
const (
	VerdictAlive Verdict = iota
	VerdictSuspect
	VerdictDead
)

func (v Verdict) String() string {
	switch v {
	case VerdictAlive:
		return "alive"
	case VerdictSuspect:
		return "suspect"
	case VerdictDead:
		return "dead"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// Arrivals is one node's heartbeat history: its last arrival and a ring of
// its latest inter-arrival times, in microseconds, with their running sum
// and sum of squares. Its zero value is ready: record the node's join as its
// first arrival. It is not safe for concurrent use; the caller holds a lock.
//
// Every method takes the detector's config, which must have been through
// WithDefaults and Validate and must not change over the Arrivals' life.
type Arrivals struct {
	gaps  [MaxWindow]int32 // microseconds; only the first cfg.Window are used
	sum   int64
	sumSq int64
	head  uint8 // where the next gap goes
	n     uint8 // gaps held, at most cfg.Window
	// forgiven marks that the gap since last spans a forgiven stall, so it
	// is not a sample.
	forgiven bool
	last     time.Time
}

// Observe records a heartbeat that arrived at now, which should come from
// time.Now (monotonic). The gap since the previous arrival joins the history
// unless it is not positive (a duplicate, or a Forgive that overshot), longer
// than MaxDead, or spans a forgiven stall.
func (a *Arrivals) Observe(now time.Time, cfg *DetectorConfig) {
	prev, forgiven := a.last, a.forgiven
	a.last, a.forgiven = now, false
	if prev.IsZero() || forgiven {
		return
	}
	gap := now.Sub(prev)
	if gap <= 0 || gap > cfg.MaxDead || gap > MaxDeadLimit {
		return
	}
	us := gap.Microseconds()
	w := uint8(cfg.Window)
	if a.n == w {
		old := int64(a.gaps[a.head])
		a.sum -= old
		a.sumSq -= old * old
	} else {
		a.n++
	}
	a.gaps[a.head] = int32(us)
	a.sum += us
	a.sumSq += us * us
	a.head++
	if a.head == w {
		a.head = 0
	}
}

// Resume records an arrival from a node coming back after it was declared
// dead (or had left, or was unknown after a master restart). The gap since
// its previous arrival spans that absence and says nothing about its
// cadence, so it is not recorded; the history before it is kept.
func (a *Arrivals) Resume(now time.Time) {
	a.last, a.forgiven = now, false
}

// Restart drops the history, kept in the units of a detector config that
// is being replaced, and keeps the last arrival; the gap after it is not
// recorded either, since it may span the change of cadence.
func (a *Arrivals) Restart() {
	*a = Arrivals{last: a.last, forgiven: !a.last.IsZero()}
}

// Scaled is c for an interval of every instead of c.Interval: the floor,
// the ceiling and the spread's floor scale with it, the rest stays.
func (c DetectorConfig) Scaled(every time.Duration) DetectorConfig {
	k := float64(every) / float64(c.Interval)
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) * k) }
	c.MinStdDev, c.MinDead, c.MaxDead = scale(c.MinStdDev), scale(c.MinDead), min(scale(c.MaxDead), MaxDeadLimit)
	c.Interval = every
	return c
}

// Forgive moves the last arrival d later, so a stall of the master of length
// d is not counted as the node's silence; the next gap, which spans the
// stall, is not recorded. It does nothing before the first arrival.
//
// Heartbeats queued during the stall may then arrive in a burst; their short
// gaps are recorded, and the window dilutes them.
func (a *Arrivals) Forgive(d time.Duration) {
	if d > 0 && !a.last.IsZero() {
		a.last = a.last.Add(d)
		a.forgiven = true
	}
}

// meanGap is the node's mean inter-arrival time in microseconds once it
// has MinSamples gaps, Interval before.
func (a *Arrivals) meanGap(cfg *DetectorConfig) float64 {
	if int(a.n) < cfg.MinSamples {
		return float64(cfg.Interval) / 1e3
	}
	return float64(a.sum) / float64(a.n)
}

// Last is when the latest heartbeat arrived (after any Forgive), or the zero
// time if none did.
func (a *Arrivals) Last() time.Time { return a.last }

// Estimate is the mean and standard deviation of the node's inter-arrival
// time as the detector uses them: Interval and max(MinStdDev, Interval/2)
// during warm-up, then the window's, with the spread floored at MinStdDev.
func (a *Arrivals) Estimate(cfg *DetectorConfig) (mean, stddev time.Duration) {
	m, s := a.estimate(cfg)
	return time.Duration(m * 1e3), time.Duration(s * 1e3)
}

// estimate is Estimate in microseconds.
func (a *Arrivals) estimate(cfg *DetectorConfig) (mean, stddev float64) {
	floor := float64(cfg.MinStdDev) / 1e3
	if int(a.n) < cfg.MinSamples {
		mean = float64(cfg.Interval) / 1e3
		return mean, max(floor, mean/2)
	}
	n := float64(a.n)
	mean = float64(a.sum) / n
	variance := float64(a.sumSq)/n - mean*mean
	return mean, max(floor, math.Sqrt(max(variance, 0)))
}

// Phi is the suspicion level of the node at now: 0 before its first arrival.
// It judges by the node's history alone; see PhiWith for the cluster's prior.
func (a *Arrivals) Phi(now time.Time, cfg *DetectorConfig) float64 {
	return a.PhiWith(now, cfg, nil)
}

// Judge is the node's verdict at now, by the rules in the package comment.
// A node with no arrival yet is Alive. It judges by the node's history
// alone; see JudgeWith for the cluster's prior.
func (a *Arrivals) Judge(now time.Time, cfg *DetectorConfig) Verdict {
	return a.JudgeWith(now, cfg, nil)
}

// DeadAfter is how much silence after the last arrival makes Judge say Dead,
// given the node's history now: the silence at which phi reaches DeadPhi,
// clamped to [MinDead, MaxDead]. It is the node's effective timeout, for
// logs and docs.
func (a *Arrivals) DeadAfter(cfg *DetectorConfig) time.Duration {
	return a.DeadAfterWith(cfg, nil)
}

// deadAfter is the silence at which phi reaches DeadPhi for a mean and
// spread in microseconds, clamped to [MinDead, MaxDead].
func deadAfter(mean, stddev float64, cfg *DetectorConfig) time.Duration {
	us := mean + phiInverse(cfg.DeadPhi)*stddev
	d := time.Duration(math.Ceil(min(us, float64(cfg.MaxDead)/1e3) * 1e3))
	return min(max(d, cfg.MinDead), cfg.MaxDead)
}

// The logistic approximation of the normal CDF: F(y) = 1/(1+exp(-g(y))),
// g(y) = y(phiA + phiB·y²).
const (
	phiA = 1.5976
	phiB = 0.070566
)

// phi is -log10(1-F(y)) = log10(1+exp(g(y))), computed without overflow.
func phi(y float64) float64 {
	g := y * (phiA + phiB*y*y)
	return (max(g, 0) + math.Log1p(math.Exp(-math.Abs(g)))) / math.Ln10
}

// phiInverse is the y at which phi(y) = p, for p > 0: it solves the cubic
// g(y) = ln(10^p - 1) with Cardano's formula (g is increasing, so there is
// one real root).
func phiInverse(p float64) float64 {
	g := p*math.Ln10 + math.Log1p(-math.Exp(-p*math.Ln10))
	q := -g / phiB
	r := phiA / phiB
	d := math.Sqrt(q*q/4 + r*r*r/27)
	return math.Cbrt(-q/2+d) + math.Cbrt(-q/2-d)
}

// StallFactor is how many ticks may pass between two calls of
// SelfMonitor.Tick before the gap counts as a stall of the master.
const StallFactor = 2

// SelfMonitor notices that the master itself stalled, so the gap is not
// counted against the slaves (Lifeguard's local health).
//
// The detector loop calls Tick every tick. A gap between ticks longer than
// StallFactor ticks (a GC pause, SIGSTOP, an overloaded loop) is a stall:
// Tick returns the gap less one tick, and the loop forgives it to every node
// (Arrivals.Forgive) before judging any.
//
// Separately, the heartbeat handler calls NoteArrival for every heartbeat
// from anyone, and QuietFor says how long none arrived. When nobody at all
// has heartbeated for longer than MinDead while two or more nodes are alive,
// the fault is most likely the master's own network: the master should hold
// its dead verdicts and forgive the quiet time once heartbeats resume.
//
// Besides, Overdue says, from any goroutine, that the loop has not
// ticked for longer than a stall: evidence that arrives then (a connection
// closed) is judged at the next tick, once the stall is known; and Behind
// says that the loop itself ran late (a stall, forgiven) within the last
// while, so lateness seen now may still be the master's doing.
type SelfMonitor struct {
	tick     time.Duration
	lastTick time.Time  // the detector loop's alone
	lagAt    time.Time  // the last tick that found a stall; the loop's alone
	marks    []tickMark // the arrival count at recent ticks, oldest first; the loop's alone

	origin  time.Time     // times are kept as offsets from origin to fit an atomic
	ticked  atomic.Int64  // nanoseconds from origin to the latest tick; noArrival before the first
	arrival atomic.Int64  // nanoseconds from origin to the latest arrival; noArrival before the first
	count   atomic.Uint64 // arrivals ever
}

const noArrival = math.MinInt64

// NewSelfMonitor makes a monitor for a detector loop that ticks every tick.
func NewSelfMonitor(tick time.Duration) *SelfMonitor {
	m := &SelfMonitor{tick: tick, origin: time.Now()}
	m.arrival.Store(noArrival)
	m.ticked.Store(noArrival)
	return m
}

// Tick records a tick of the detector loop at now and returns the stall to
// forgive: 0 normally and on the first tick. It is for the loop alone, not
// safe for concurrent use.
func (m *SelfMonitor) Tick(now time.Time) (stall time.Duration) {
	prev := m.lastTick
	m.lastTick = now
	m.ticked.Store(int64(now.Sub(m.origin)))
	if prev.IsZero() {
		return 0
	}
	if gap := now.Sub(prev); gap > StallFactor*m.tick {
		m.lagAt = now
		return gap - m.tick
	}
	return 0
}

// Behind says whether a tick within the last while, up to now, found a
// stall. It measures the master's own lateness, never the slaves': an idle
// master's ticks are on time, whatever its slaves do. For the loop alone.
func (m *SelfMonitor) Behind(now time.Time, while time.Duration) bool {
	return !m.lagAt.IsZero() && now.Sub(m.lagAt) < while
}

// Handled records the arrivals so far at a tick at now and returns how
// many arrived over the shortest span of at least window that ends at now,
// and that span: 0, 0 until the recorded ticks cover a window. With window
// at least one heartbeat interval, every member heartbeating steadily
// falls in it once or more, whatever its phase, so the count does not
// swing with how the members' phases are spread. For the loop alone; it
// allocates only while its marks grow to cover a window.
func (m *SelfMonitor) Handled(now time.Time, window time.Duration) (n uint64, span time.Duration) {
	c := m.count.Load()
	m.marks = append(m.marks, tickMark{now, c})
	i := 0
	for i+1 < len(m.marks) && now.Sub(m.marks[i+1].at) >= window {
		i++
	}
	m.marks = append(m.marks[:0], m.marks[i:]...)
	first := m.marks[0]
	if span = now.Sub(first.at); span < window {
		return 0, 0
	}
	return c - first.n, span
}

type tickMark struct {
	at time.Time
	n  uint64
}

// Overdue says whether at now the loop has gone longer than a stall
// (StallFactor ticks) without ticking: the master is stalled, or has just
// woken from a stall its loop has not yet seen. False before the first
// tick. It is safe for concurrent use.
func (m *SelfMonitor) Overdue(now time.Time) bool {
	t := m.ticked.Load()
	return t != noArrival && now.Sub(m.origin)-time.Duration(t) > StallFactor*m.tick
}

// NoteArrival records a heartbeat from anyone at now. It is safe for
// concurrent use and does not allocate; an arrival older than the latest
// recorded one is ignored.
func (m *SelfMonitor) NoteArrival(now time.Time) {
	m.count.Add(1)
	t := int64(now.Sub(m.origin))
	for {
		old := m.arrival.Load()
		if t <= old || m.arrival.CompareAndSwap(old, t) {
			return
		}
	}
}

// Arrivals is how many heartbeats have arrived since the start.
func (m *SelfMonitor) Arrivals() uint64 { return m.count.Load() }

// QuietFor is how long before now the latest heartbeat from anyone arrived:
// 0 before the first, and never negative. It is safe for concurrent use.
func (m *SelfMonitor) QuietFor(now time.Time) time.Duration {
	t := m.arrival.Load()
	if t == noArrival {
		return 0
	}
	return max(now.Sub(m.origin)-time.Duration(t), 0)
}

package masterd

import (
	"math"
	"time"
)

// A member with fewer than MinSamples gaps of its own is judged with what
// the master knows of the cluster, if its own gaps agree with it: the
// Prior, the inter-arrival times of every other up member's window pooled
// together.
const (
	// PriorMinOwn is the fewest gaps of its own a member needs before it is
	// judged with the prior: with fewer, nothing says it is like the others.
	PriorMinOwn = 2
	// PriorMinPool is the fewest gaps the other members must hold between
	// them for the prior to be used.
	PriorMinPool = 4
	// PriorAgree is how many of the pool's spreads each of the member's own
	// gaps may be from the pool's mean for the member to count as one like
	// the others.
	PriorAgree = 3
	// priorTolShare is the least that agreement allows, as a share of
	// MinStdDev (2 ms at 1 s heartbeats), for a pool so steady that its
	// spread is nearly nil.
	priorTolShare = 0.02
)

// Prior is the cluster's heartbeat cadence as the master sees it: the gaps
// of its up members' windows, pooled, and the worst member's. The detector's
// tick rebuilds it before it judges anyone, one Add per member, so it costs
// no allocation and no state between ticks. Its zero value is an empty pool.
//
// A member judged with it is one whose own gaps number at least PriorMinOwn
// and fewer than MinSamples, and each lie within PriorAgree prior spreads
// of the pool's mean (at least priorTolShare×MinStdDev). Its estimate is
// then the blend of its own gaps with the prior's mean and variance, the
// prior worth the MinSamples−n gaps the member still lacks; the spread is
// floored at MinStdDev as always. A member unlike its cluster, or with too
// few gaps, keeps the tolerant warm-up estimate (mean Interval, spread
// Interval/2), so a jittery member is no worse off than without the prior.
//
// The prior's variance is the larger of the pool's and the worst member's
// mean squared distance from Interval: a newcomer is taken to be as
// irregular as the most irregular member with at least PriorMinOwn gaps,
// not as the average one. So in a cluster where even one member is
// jittery, newcomers are judged as that one is (slowly, and safely), and
// only in a cluster whose members are all steady is a steady newcomer
// judged at full speed from its second gap.
//
// The pool and the worst are every other member's, never this one's: a
// member's own gaps do not vouch for themselves.
type Prior struct {
	n       int64      // gaps pooled
	sum     float64    // their sum, microseconds
	sumSq   float64    // their sum of squares
	worst   [2]float64 // the two largest members' mean squared distances from Interval, µs², largest first
	worstOf *Arrivals  // whose is worst[0]
}

// Add pools a's gaps.
func (p *Prior) Add(a *Arrivals, cfg *DetectorConfig) {
	p.n += int64(a.n)
	p.sum += float64(a.sum)
	p.sumSq += float64(a.sumSq)
	if int(a.n) < PriorMinOwn {
		return
	}
	n := float64(a.n)
	in := float64(cfg.Interval) / 1e3
	msd := max(float64(a.sumSq)/n-2*in*float64(a.sum)/n+in*in, 0)
	switch {
	case msd > p.worst[0]:
		p.worst[1], p.worst[0], p.worstOf = p.worst[0], msd, a
	case msd > p.worst[1]:
		p.worst[1] = msd
	}
}

// Gaps is how many gaps are pooled.
func (p *Prior) Gaps() int64 { return p.n }

// without is the prior's mean and variance in microseconds without a's own
// gaps, and false if too few gaps remain.
func (p *Prior) without(a *Arrivals) (mean, variance float64, ok bool) {
	n := p.n - int64(a.n)
	if n < PriorMinPool {
		return 0, 0, false
	}
	mean = (p.sum - float64(a.sum)) / float64(n)
	variance = max((p.sumSq-float64(a.sumSq))/float64(n)-mean*mean, 0)
	worst := p.worst[0]
	if p.worstOf == a {
		worst = p.worst[1]
	}
	return mean, max(variance, worst), true
}

// estimateWith is estimate, with the prior for a member that has few gaps
// of its own and agrees with it (see Prior). p may be nil.
func (a *Arrivals) estimateWith(cfg *DetectorConfig, p *Prior) (mean, stddev float64) {
	n := int(a.n)
	if p == nil || n >= cfg.MinSamples || n < PriorMinOwn {
		return a.estimate(cfg)
	}
	pm, pv, ok := p.without(a)
	if !ok {
		return a.estimate(cfg)
	}
	floor := float64(cfg.MinStdDev) / 1e3
	tol := max(PriorAgree*math.Sqrt(pv), priorTolShare*floor)
	// While n < MinSamples ≤ Window the ring has not wrapped: its gaps are
	// the first n.
	for _, g := range a.gaps[:n] {
		if math.Abs(float64(g)-pm) > tol {
			return a.estimate(cfg)
		}
	}
	k := float64(cfg.MinSamples - n) // the prior fills the gaps it lacks
	total := k + float64(n)
	mean = (k*pm + float64(a.sum)) / total
	meanSq := (k*(pv+pm*pm) + float64(a.sumSq)) / total
	return mean, max(floor, math.Sqrt(max(meanSq-mean*mean, 0)))
}

// JudgeWith is Judge with the cluster's prior for a member still warming up
// (see Prior). p may be nil, which is Judge.
func (a *Arrivals) JudgeWith(now time.Time, cfg *DetectorConfig, p *Prior) Verdict {
	if a.last.IsZero() {
		return VerdictAlive
	}
	silence := now.Sub(a.last)
	switch {
	case silence < cfg.Interval:
		return VerdictAlive
	case silence >= cfg.MaxDead:
		return VerdictDead
	}
	ph := a.phiWith(silence, cfg, p)
	switch {
	case ph >= cfg.DeadPhi && silence >= cfg.MinDead:
		return VerdictDead
	case ph >= cfg.SuspectPhi:
		return VerdictSuspect
	}
	return VerdictAlive
}

// PhiWith is Phi with the cluster's prior. p may be nil.
func (a *Arrivals) PhiWith(now time.Time, cfg *DetectorConfig, p *Prior) float64 {
	if a.last.IsZero() {
		return 0
	}
	return a.phiWith(now.Sub(a.last), cfg, p)
}

func (a *Arrivals) phiWith(silence time.Duration, cfg *DetectorConfig, p *Prior) float64 {
	mean, stddev := a.estimateWith(cfg, p)
	return phi((float64(silence)/1e3 - mean) / stddev)
}

// DeadAfterWith is DeadAfter with the cluster's prior. p may be nil.
func (a *Arrivals) DeadAfterWith(cfg *DetectorConfig, p *Prior) time.Duration {
	mean, stddev := a.estimateWith(cfg, p)
	return deadAfter(mean, stddev, cfg)
}

package masterd

import (
	"hash/fnv"
	"time"
)

// The heartbeat interval follows the master's budget, as Nomad's does: with
// more slaves up than the budget allows at the configured interval, every
// slave is told max(interval, up / budget), so the master is sent what it
// can serve and its verdicts take proportionally longer, rather than
// collapse. The change is made past a margin either way (paceMargin), so a
// cluster near the budget does not flap between two intervals.
const paceMargin = 1.1

// pace sets the interval for up slaves. ms.mu is held.
func (ms *Membership) pace(now time.Time) {
	if ms.t.Budget <= 0 {
		return
	}
	up := 0
	for _, n := range ms.nodes {
		if n.up() {
			up++
		}
	}
	base, cur := ms.base.Interval, ms.t.Detector.Interval
	want := max(base, time.Duration(float64(up)/float64(ms.t.Budget)*float64(time.Second)))
	var next time.Duration
	switch {
	case float64(want) > paceMargin*float64(cur):
		next = time.Duration(paceMargin * float64(want)) // room to grow before the next change
	case cur > base && float64(want)*paceMargin*paceMargin < float64(cur):
		next = base
		if want > base {
			next = time.Duration(paceMargin * float64(want))
		}
	default:
		return
	}
	next = next.Round(10 * time.Millisecond)
	ms.t.Detector = ms.base.Scaled(next)
	for _, n := range ms.nodes {
		// Their histories are in the old cadence: each starts again, and is
		// judged with the cluster's prior or the warm-up meanwhile.
		n.arr.Restart()
	}
	ms.met.interval(next)
	if next == base {
		ms.log.Infof("%d slaves up, within this master's budget of %d heartbeats a second: every slave is told heartbeat_interval, %v, again", up, ms.t.Budget, next)
		return
	}
	ms.log.Warnf("%d slaves up, past this master's budget of %d heartbeats a second: every slave is told to heartbeat every %v to %v (staggered), and a silent one is dead after %v to %v",
		up, ms.t.Budget, next, next+next/10, ms.t.Detector.MinDead, ms.t.Detector.MaxDead)
}

// interval is what name is told to heartbeat at: the cluster's interval,
// and while it is above the configured one, up to a tenth more, fixed per
// node, so that the slaves' heartbeats spread over the longer period
// instead of arriving in step. ms.mu is held.
func (ms *Membership) interval(name string) time.Duration {
	cur := ms.t.Detector.Interval
	if cur <= ms.base.Interval {
		return cur
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	return cur + cur/10*time.Duration(h.Sum32()%1000)/1000
}

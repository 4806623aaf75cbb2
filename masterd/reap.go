package masterd

import (
	"fmt"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// Reap forgets the members that have been left longer than left, or dead
// longer than dead (zero: never), as Serf reaps its tombstones: without
// it, every node that ever passed through stays in the roll, in every
// Members reply, and on the dashboard. Each is told as a forgotten event,
// so watchers and views drop it too. It returns how many it forgot.
func (ms *Membership) Reap(now time.Time, left, dead time.Duration) int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	n := 0
	for name, nd := range ms.nodes {
		var after time.Duration
		switch nd.m.Status {
		case rpcdef.StatusLeft:
			after = left
		case rpcdef.StatusDead:
			after = dead
		default:
			continue
		}
		since := now.Sub(nd.m.StatusSince)
		if after <= 0 || since < after {
			continue
		}
		delete(ms.nodes, name)
		ms.tell(nd, rpcdef.EventForgotten, fmt.Sprintf("reaped: %s for %v", nd.m.Status, since.Round(time.Second)), now)
		n++
	}
	return n
}

// reapEvery is how often the master looks for members to reap: often
// enough that a retention is kept to within a minute.
func reapEvery(left, dead time.Duration) time.Duration {
	d := time.Minute
	for _, r := range []time.Duration{left, dead} {
		if r > 0 {
			d = min(d, max(r/10, time.Second))
		}
	}
	return d
}

package masterd

import (
	"fmt"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// A node's event budget: each member may cause eventBurst events at once
// and one every eventEvery after that. A healthy node causes a handful in
// its life (joined, then left, or suspect, alive); one that joins with a
// new incarnation in a loop, or flaps, would otherwise make an event, a
// log line and a wake-up of every watcher each time. Past its budget its
// changes still apply to the roll at once, but are told only as one event
// when the budget allows again, carrying the node's state by then, so the
// rest of the cluster hears of a flood once.
const (
	eventBurst = 8
	eventEvery = time.Second
)

// eventBudget is a token bucket of eventBurst tokens, one back each
// eventEvery. The zero value is full.
type eventBudget struct {
	spent int       // tokens taken and not yet back
	at    time.Time // when spent was last brought up to date
}

// take spends a token if there is one.
func (b *eventBudget) take(now time.Time) bool {
	if b.spent > 0 {
		back := int(now.Sub(b.at) / eventEvery)
		b.spent = max(b.spent-back, 0)
		b.at = b.at.Add(time.Duration(back) * eventEvery)
	}
	if b.spent == 0 {
		b.at = now
	}
	if b.spent >= eventBurst {
		return false
	}
	b.spent++
	return true
}

// emit records an event of n, within n's budget: past it, the event is
// folded into the one flush will tell. ms.mu is held.
func (ms *Membership) emit(n *node, kind rpcdef.EventKind, reason string, now time.Time) {
	if n.collapsed == 0 && n.budget.take(now) {
		ms.tell(n, kind, reason, now)
		return
	}
	if n.collapsed == 0 {
		ms.log.WithField("peer", n.m.Name).Warnf("%s changes faster than %d events at once and one a %v: its events are folded into one until it slows down",
			n.m.Name, eventBurst, eventEvery)
		ms.flapping = append(ms.flapping, n)
	}
	n.collapsed++
	ms.dirty = true
	ms.met.collapse()
}

// flush tells, for each node whose events were folded, one event of its
// state now, once its budget allows. ms.mu is held.
func (ms *Membership) flush(now time.Time) {
	keep := ms.flapping[:0]
	for _, n := range ms.flapping {
		if ms.nodes[n.m.Name] != n {
			continue // forgotten meanwhile: that event was told
		}
		if !n.budget.take(now) {
			keep = append(keep, n)
			continue
		}
		ms.tell(n, kindOf(n.m.Status), fmt.Sprintf("%d changes folded into this one: it changed faster than its event budget", n.collapsed), now)
		n.collapsed = 0
	}
	clear(ms.flapping[len(keep):])
	ms.flapping = keep
}

// kindOf is the event that tells a member's status as it is.
func kindOf(st rpcdef.Status) rpcdef.EventKind {
	switch st {
	case rpcdef.StatusSuspect:
		return rpcdef.EventSuspect
	case rpcdef.StatusDead:
		return rpcdef.EventDead
	case rpcdef.StatusLeft:
		return rpcdef.EventLeft
	default:
		return rpcdef.EventRejoined // alive, maybe as a new incarnation
	}
}

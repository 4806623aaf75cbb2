package masterd

import (
	"fmt"
	"sync"
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

// tokens is a token bucket of burst tokens, one back each every. The zero
// value is full. It is not safe for concurrent use.
type tokens struct {
	spent int       // tokens taken and not yet back
	at    time.Time // when spent was last brought up to date
}

// take spends a token if there is one; if not, it says how long until one
// is back.
func (b *tokens) take(now time.Time, burst int, every time.Duration) (bool, time.Duration) {
	b.refill(now, every)
	if b.spent == 0 {
		b.at = now
	}
	if b.spent >= burst {
		return false, b.at.Add(every).Sub(now)
	}
	b.spent++
	return true, 0
}

// refill gives back the tokens due by now.
func (b *tokens) refill(now time.Time, every time.Duration) {
	if b.spent > 0 {
		back := int(now.Sub(b.at) / every)
		b.spent = max(b.spent-back, 0)
		b.at = b.at.Add(time.Duration(back) * every)
	}
}

// eventBudget is a node's: eventBurst tokens, one back each eventEvery.
type eventBudget struct{ tokens }

func (b *eventBudget) take(now time.Time) bool {
	ok, _ := b.tokens.take(now, eventBurst, eventEvery)
	return ok
}

// What one slave certificate may ask of the roll: Members of everyone, a
// Join with the roll, or a Watch answered with it (a reset) cost the
// master O(N) each, for a request of a few bytes. slaved needs one at a
// join and one after falling behind; rollBurst at once and one each
// rollEvery after is far more than that, and bounds what a stolen
// certificate can make the master do. Admins and masters are not held to
// it.
const (
	rollBurst = 4
	rollEvery = 5 * time.Second
	// maxRollBudgets bounds the buckets kept: past it, the full ones are
	// dropped (a full bucket is the same as none).
	maxRollBudgets = 1 << 16
)

// rollBudgets are the slaves' roll buckets, by node name.
type rollBudgets struct {
	mu sync.Mutex
	m  map[string]*tokens
}

// take spends one of node's; past its budget it returns an error that
// says when to try again.
func (r *rollBudgets) take(node string, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]*tokens)
	}
	b, ok := r.m[node]
	if !ok {
		if len(r.m) >= maxRollBudgets {
			for k, v := range r.m {
				if v.refill(now, rollEvery); v.spent == 0 {
					delete(r.m, k)
				}
			}
		}
		b = new(tokens)
		r.m[node] = b
	}
	if ok, wait := b.take(now, rollBurst, rollEvery); !ok {
		return rpcdef.Errorf(rpcdef.CodeUnavailable, "%s asked for the whole roll more than %d times at once and once every %v: try again in %v",
			node, rollBurst, rollEvery, wait.Round(time.Millisecond))
	}
	return nil
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
	ms.met.collapse()
}

// flush tells, for each node whose events were folded, one event of its
// state now, once its budget allows. ms.mu is held.
func (ms *Membership) flush(now time.Time) {
	keep := ms.flapping[:0]
	for _, n := range ms.flapping {
		if ms.nodes[n.m.Name] != n || n.collapsed == 0 {
			continue // forgotten or evicted meanwhile: that event was told
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

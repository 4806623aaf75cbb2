package slaved

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/rpcdef"
)

// View is a slave's picture of the group: every member as the master last
// described it, at an event version, and where this slave stands. It starts
// from a JoinReply, follows Watch events and is replaced wholesale when the
// master resets it. Every change is logged with peer=<member>. It is safe for
// concurrent use.
//
// Events carry no resource reports or heartbeat times: the reports of other
// members are those of the last join or reset, and their LastHeartbeat is
// left zero; this slave's own entry is kept current.
type View struct {
	log  logrus.FieldLogger
	node string
	now  func() time.Time

	mu          sync.Mutex
	incarnation uint64
	master      string // the master's identity
	masterAddr  string
	joined      bool
	version     uint64
	members     map[string]rpcdef.Member
	advanced    time.Time // when the version last moved
}

// newView makes an empty view for node.
func newView(node string, incarnation uint64, log logrus.FieldLogger) *View {
	return &View{log: log, node: node, now: time.Now, incarnation: incarnation, members: map[string]rpcdef.Member{}}
}

// Reply is the view as the View service returns it: members sorted by name.
func (v *View) Reply() rpcdef.ViewReply {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := rpcdef.ViewReply{
		Node:        v.node,
		Incarnation: v.incarnation,
		Master:      v.master,
		MasterAddr:  v.masterAddr,
		Joined:      v.joined,
		Version:     v.version,
		Members:     make([]rpcdef.Member, 0, len(v.members)),
	}
	for _, m := range v.members {
		r.Members = append(r.Members, m)
	}
	slices.SortFunc(r.Members, func(a, b rpcdef.Member) int { return cmp.Compare(a.Name, b.Name) })
	return r
}

// Version is the version of the last event the view holds.
func (v *View) Version() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.version
}

// behind reports whether the master's version is ahead of the view's and the
// view has not moved for at least d: a hint that events are not arriving.
func (v *View) behind(master uint64, d time.Duration) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return master > v.version && v.now().Sub(v.advanced) >= d
}

// setJoined records whether this slave is joined, and to which master.
func (v *View) setJoined(joined bool, master, addr string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.joined = joined
	if joined {
		v.master, v.masterAddr = master, addr
	}
}

// heartbeat records a heartbeat of this slave's that the master took.
func (v *View) heartbeat(at time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m, ok := v.members[v.node]; ok {
		m.LastHeartbeat = at
		v.members[v.node] = m
	}
}

// report records a report of this slave's that the master took.
func (v *View) report(r rpcdef.Resources) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m, ok := v.members[v.node]; ok {
		m.Resources = &r
		v.members[v.node] = m
	}
}

// join replaces the view with the roll of a JoinReply. The first one is
// summarised in one line; later ones (a rejoin, perhaps to a restarted
// master) log how each member differs from what the view held.
func (v *View) join(version uint64, members []rpcdef.Member) {
	v.mu.Lock()
	defer v.mu.Unlock()
	first := v.version == 0 && len(v.members) == 0
	v.replaceLocked(version, members, !first)
	if first {
		v.log.WithField("version", version).Infof("view: %s", summary(v.members))
	}
}

// reset replaces the view with the roll of a Watch reply that has Reset set:
// the master no longer had the events the view was missing.
func (v *View) reset(version uint64, members []rpcdef.Member) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.log.WithFields(logrus.Fields{"version": version, "was": v.version}).Info("the master reset the view: replacing it with its whole roll")
	v.replaceLocked(version, members, true)
}

func (v *View) replaceLocked(version uint64, members []rpcdef.Member, logDiff bool) {
	next := make(map[string]rpcdef.Member, len(members))
	for _, m := range members {
		if m.Name != v.node {
			// Others' heartbeats and reports are not sent to slaves: a
			// time or a figure from the master's roll would only grow
			// stale here (rpc-query members asks the master for them).
			m.LastHeartbeat = time.Time{}
			m.Resources = nil
		}
		next[m.Name] = m
	}
	if logDiff {
		for _, m := range sortedMembers(next) {
			old, ok := v.members[m.Name]
			switch {
			case !ok:
				v.peerLog(m.Name).Infof("%s joined", m.Name)
			case old.Incarnation != m.Incarnation:
				v.peerLog(m.Name).Infof("%s rejoined with incarnation %d", m.Name, m.Incarnation)
			case old.Status != m.Status:
				v.peerLog(m.Name).Infof("%s is now %s", m.Name, m.Status)
			}
		}
		for _, m := range sortedMembers(v.members) {
			if _, ok := next[m.Name]; !ok {
				v.peerLog(m.Name).Infof("%s was forgotten: the master no longer lists it", m.Name)
			}
		}
	}
	v.members = next
	if version != v.version {
		v.advanced = v.now()
	}
	v.version = version
}

// apply applies a Watch reply's events in version order. Events at or below
// the view's version are ignored, so a reply seen twice changes nothing.
// upTo is the reply's Version: the view is at least there afterwards (a
// version without an event for this slave is still seen). It returns how
// many events were applied.
func (v *View) apply(events []rpcdef.Event, upTo uint64) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	events = slices.Clone(events)
	slices.SortStableFunc(events, func(a, b rpcdef.Event) int { return cmp.Compare(a.Version, b.Version) })
	n := 0
	for _, e := range events {
		if e.Version <= v.version {
			continue
		}
		v.applyLocked(e)
		v.version = e.Version
		v.advanced = v.now()
		n++
	}
	if upTo > v.version {
		v.version = upTo
		v.advanced = v.now()
	}
	return n
}

// statusOf is the status an event leaves its member in, for a master that
// leaves Event.Status empty.
func statusOf(e rpcdef.Event) rpcdef.Status {
	if e.Status != "" {
		return e.Status
	}
	switch e.Kind {
	case rpcdef.EventSuspect:
		return rpcdef.StatusSuspect
	case rpcdef.EventDead:
		return rpcdef.StatusDead
	case rpcdef.EventLeft:
		return rpcdef.StatusLeft
	default:
		return rpcdef.StatusAlive
	}
}

func (v *View) applyLocked(e rpcdef.Event) {
	log := v.peerLog(e.Node).WithField("version", e.Version)
	because := ""
	if e.Reason != "" {
		because = " (" + e.Reason + ")"
	}
	old, known := v.members[e.Node]
	if e.Kind == rpcdef.EventForgotten {
		if known {
			delete(v.members, e.Node)
			log.Infof("%s was forgotten%s", e.Node, because)
		}
		return
	}
	m := old
	if !known {
		m = rpcdef.Member{Name: e.Node, JoinedAt: e.At}
	}
	status := statusOf(e)
	if m.Status != status {
		m.StatusSince = e.At
	}
	m.Status = status
	if e.Incarnation != 0 {
		m.Incarnation = e.Incarnation
	}
	if e.Addr != "" {
		m.Addr = e.Addr
	}
	switch {
	case e.Kind == rpcdef.EventJoined || !known && e.Kind != rpcdef.EventRejoined:
		m.JoinedAt = e.At
		if e.Kind == rpcdef.EventJoined {
			log.Infof("%s joined", e.Node)
		} else {
			log.Infof("%s is now %s%s", e.Node, status, because)
		}
	case e.Kind == rpcdef.EventRejoined || known && old.Incarnation != m.Incarnation:
		m.JoinedAt = e.At
		m.Resources = nil // the report of the previous incarnation
		log.Infof("%s rejoined with incarnation %d", e.Node, m.Incarnation)
	case old.Status != status:
		log.Infof("%s is now %s%s", e.Node, status, because)
	default:
		log.Debugf("%s: %s event changed nothing%s", e.Node, e.Kind, because)
	}
	v.members[e.Node] = m
}

func (v *View) peerLog(peer string) logrus.FieldLogger {
	return v.log.WithField("peer", peer)
}

func sortedMembers(ms map[string]rpcdef.Member) []rpcdef.Member {
	out := make([]rpcdef.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b rpcdef.Member) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// summary counts members by status: "3 members: 2 alive, 1 dead".
func summary(ms map[string]rpcdef.Member) string {
	counts := map[rpcdef.Status]int{}
	for _, m := range ms {
		counts[m.Status]++
	}
	s := fmt.Sprintf("%d members", len(ms))
	if len(ms) == 1 {
		s = "1 member"
	}
	sep := ": "
	for _, st := range []rpcdef.Status{rpcdef.StatusAlive, rpcdef.StatusSuspect, rpcdef.StatusDead, rpcdef.StatusLeft, rpcdef.StatusUnknown} {
		if counts[st] > 0 {
			s += fmt.Sprintf("%s%d %s", sep, counts[st], st)
			sep = ", "
		}
	}
	return s
}

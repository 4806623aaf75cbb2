package masterd

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/rpcdef"
)

// maxEvents is how many recent events the master keeps for watchers that
// fall behind; one further back gets the whole roll instead.
const maxEvents = 4096

// maxReplyEvents bounds the events in one Watch reply.
const maxReplyEvents = 256

// Timing is how the master judges its members.
type Timing struct {
	Detector   DetectorConfig
	CloseGrace time.Duration // a closed connection's node is dead unless back within this
	Report     time.Duration // the report interval slaves are told
	Tick       time.Duration // how often the detector runs
	// Budget is the heartbeats a second the master serves at most; past
	// it, slaves are told a longer interval (see pace). 0 is none.
	Budget int
}

type node struct {
	m   rpcdef.Member
	arr Arrivals
	// sessions are its open connections that have carried a Join or a
	// Heartbeat: the only ones whose close is evidence of its death, and
	// only once the last of them has closed. A Watch or a Report on
	// another connection never counts, so no diagnostic with the slave's
	// certificate can get it declared dead. At most maxSessions: past it
	// a new connection is not evidence until one of them closes.
	sessions []uint64
	closedAt time.Time // when its last session closed; zero while one is open
	cpu      cpuRing   // its recent CPU figures, for the dashboard
	// lateTicks counts the detector's ticks in a row that found it late.
	lateTicks int
	budget    eventBudget // how many events it may still cause now
	collapsed int         // its events since the budget ran out, not yet told
	// told is its status as the replicated roll has it (or will, once the
	// events proposed are committed): a node a new leader starts as
	// unknown is still alive there, and its joining again tells nothing.
	told rpcdef.Status
}

// maxSessions bounds the connections kept per node as evidence. slaved
// uses one; a second is its reconnect or a diagnostic.
const maxSessions = 4

// session notes connID as one of n's sessions: it is open and speaks for
// the slave.
func (n *node) session(connID uint64) {
	n.closedAt = time.Time{}
	if slices.Contains(n.sessions, connID) {
		return
	}
	if len(n.sessions) == maxSessions {
		// Full: the sessions it has stay the evidence. Evicting the
		// oldest would let four diagnostics push out slaved's own
		// connection, and their closes would then count against it.
		return
	}
	n.sessions = append(n.sessions, connID)
}

// up says the node counts as running: alive, or suspect and not yet dead.
func (n *node) up() bool {
	return n.m.Status == rpcdef.StatusAlive || n.m.Status == rpcdef.StatusSuspect
}

// cpuHistory is how many CPU figures are kept per node: with reports every
// 5s, the last 4 minutes.
const cpuHistory = 48

// CPUSample is one CPU figure of a node's reports.
type CPUSample struct {
	At      time.Time // when the slave sampled it
	Percent float64   // busy share of all its CPUs, 0 to 100
}

// cpuRing keeps the last cpuHistory figures in place, 12 bytes each: a
// report costs no allocation.
type cpuRing struct {
	at   [cpuHistory]int64   // Unix ms
	pct  [cpuHistory]float32 // 0 to 100
	next int                 // where the next figure goes
	n    int                 // how many are kept
}

func (r *cpuRing) add(at time.Time, pct float64) {
	ms := at.UnixMilli()
	if r.n > 0 && ms <= r.at[(r.next+cpuHistory-1)%cpuHistory] {
		return // a report sent again, or from a clock that went back
	}
	r.at[r.next], r.pct[r.next] = ms, float32(pct)
	r.next = (r.next + 1) % cpuHistory
	r.n = min(r.n+1, cpuHistory)
}

// samples returns the figures oldest first.
func (r *cpuRing) samples() []CPUSample {
	out := make([]CPUSample, 0, r.n)
	for i := range r.n {
		j := (r.next - r.n + i + cpuHistory) % cpuHistory
		out = append(out, CPUSample{At: time.UnixMilli(r.at[j]), Percent: float64(r.pct[j])})
	}
	return out
}

// Membership is the leader's roll: every node, its state and its liveness.
// The state and the events that change it go through raft (propose) into
// the replicated Roll, which every master serves watchers from; liveness
// stays here. A follower's Membership holds no nodes and answers from the
// Roll. All methods are safe for concurrent use.
type Membership struct {
	t    Timing
	base DetectorConfig   // as configured; t.Detector is scaled from it by pace
	now  func() time.Time // time.Now, but for tests
	log  logrus.FieldLogger
	// self is replaced by Lead under mu, and read by the handlers without it.
	self    atomic.Pointer[SelfMonitor]
	started time.Time
	met     *masterMetrics // nil unless a Server made it

	// roll is the replicated state: the events watchers read, without
	// taking mu (at one event, thousands of them wake at once).
	roll *Roll

	mu sync.Mutex
	// leading: this master is the leader and judges. A follower has no
	// nodes; its calls from slaves are refused with errFollower.
	leading bool
	// propose hands an event to raft; it returns at once, and the event
	// is in roll once committed. ms.mu is held.
	propose func(record)
	// grace is how long a node a new leader found up may stay unknown
	// before it is declared dead (see FailoverGrace).
	grace time.Duration
	// congested is when the master last turned a connection away for its
	// own slowness (tlsrpc.Server.Congested); nil where nothing does.
	congested func() time.Time
	// overloaded: at the last tick the master's handlers were starved, or
	// it was turning connections away as busy; a close
	// is then judged by the tick, with up to max_dead to come back.
	overloaded bool
	// lastBack is when a member the failover left unknown last joined
	// again; zero for none since Lead.
	lastBack time.Time
	// graceHeld: the failover grace has run out while members were still
	// coming back, and those not back yet wait on (said once).
	graceHeld bool
	nodes     map[string]*node
	held      time.Time // verdicts are held because nobody heartbeated since then; zero if not
	crowd     time.Time // when verdicts were held because a crowd was late at once; zero if not
	judged    []verdict // Tick's, kept to save the allocation
	stopped   bool      // the master is shutting down: its closing connections say nothing
	// recovering: until then, after a stall of the master itself, nobody is
	// declared dead. The slaves' calls timed out while the master was
	// stalled, they closed their connections and backed off, and need time
	// to come back; one not heard from by then is past max_dead and dead.
	recovering time.Time
	// flapping are the nodes whose events are being folded (see emit).
	// Each is in the roll, so it is bounded by it.
	flapping []*node
}

// feed is the event log at one version. It is replaced at every event,
// never changed: events' backing array is only written past the length of
// every feed made from it, so readers share it without a lock.
type feed struct {
	version uint64
	events  []rpcdef.Event // the last maxEvents at most, oldest first
	changed chan struct{}  // closed when the next feed replaces this one
}

// errFollower is a leader-only call's answer on a follower; the Session
// turns it into rpcdef.NotLeader, naming the leader.
var errFollower = errors.New("this master is not the leader")

// NewMembership makes an empty roll that leads on its own: every event is
// applied to its Roll at once, as a group of one whose commits never wait.
// Unit tests use it; masterd's Server proposes through raft instead (see
// Lead).
func NewMembership(t Timing, log logrus.FieldLogger) *Membership {
	t.Detector = t.Detector.WithDefaults()
	ms := &Membership{
		t: t, base: t.Detector, now: time.Now, log: log, started: time.Now(),
		nodes: make(map[string]*node), roll: NewRoll(), leading: true, grace: t.Detector.MaxDead,
	}
	ms.self.Store(NewSelfMonitor(t.Tick))
	ms.propose = func(rec record) { ms.roll.apply([]record{rec}) }
	return ms
}

// Lead makes this Membership the leader's, over its roll as committed so
// far (the caller has waited for raft's Barrier). Every member the roll
// has up is unknown until it is heard from, and dead if it is not within
// grace; propose is how its events reach raft from now on.
func (ms *Membership) Lead(grace time.Duration, propose func(record)) int {
	members, _ := ms.roll.Members()
	now := ms.now()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.nodes = make(map[string]*node, len(members))
	for _, m := range members {
		n := &node{m: m, told: m.Status}
		if n.up() || m.Status == rpcdef.StatusUnknown {
			ms.setStatus(n, rpcdef.StatusUnknown, now)
		}
		ms.nodes[m.Name] = n
	}
	ms.leading, ms.propose, ms.grace, ms.stopped = true, propose, grace, false
	ms.held, ms.crowd, ms.recovering, ms.flapping, ms.graceHeld, ms.lastBack, ms.overloaded = time.Time{}, time.Time{}, time.Time{}, nil, false, time.Time{}, false
	ms.self.Store(NewSelfMonitor(ms.t.Tick))
	ms.started = now
	return len(members)
}

// Follow makes this Membership a follower's: it stops judging at once,
// forgets what only the leader keeps, and refuses slaves' calls.
func (ms *Membership) Follow() {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.leading = false
	ms.propose = func(record) {}
	ms.nodes = make(map[string]*node)
	ms.flapping = nil
}

// Leading says whether this master judges.
func (ms *Membership) Leading() bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.leading
}

// Roll is the replicated state this Membership proposes to.
func (ms *Membership) Roll() *Roll { return ms.roll }

// tell records an event: it is proposed to raft, and watchers see it once
// it is committed. Most callers go through emit, which keeps each node to
// its budget. ms.mu is held.
func (ms *Membership) tell(n *node, kind rpcdef.EventKind, reason string, now time.Time) {
	e := rpcdef.Event{Kind: kind, Node: n.m.Name, Incarnation: n.m.Incarnation,
		Addr: n.m.Addr, Status: n.m.Status, At: now, Reason: reason}
	m := n.m
	m.Resources, m.LastHeartbeat = nil, time.Time{}
	n.told = n.m.Status
	ms.propose(record{Event: e, Member: m})
	ms.met.event(kind)
	f := ms.log.WithFields(logrus.Fields{"peer": n.m.Name, "event": kind})
	if reason != "" {
		f.Infof("%s %s: %s", n.m.Name, describe(kind), reason)
	} else {
		f.Infof("%s %s", n.m.Name, describe(kind))
	}
}

// describe puts an event in words: "node-1 joined", "node-2 is now dead".
func describe(k rpcdef.EventKind) string {
	switch k {
	case rpcdef.EventJoined, rpcdef.EventRejoined, rpcdef.EventLeft:
		return string(k)
	case rpcdef.EventForgotten:
		return "was forgotten"
	}
	return "is now " + string(k)
}

func (ms *Membership) setStatus(n *node, st rpcdef.Status, now time.Time) {
	n.m.Status = st
	n.m.StatusSince = now
}

// Caller is a slave making a call, as the connection knows it.
type Caller struct {
	Node         string
	Addr         string
	ConnID       uint64
	CertNotAfter time.Time
}

// Join admits a slave. A new incarnation replaces the old one at once. The
// reply carries the roll unless noRoll.
func (ms *Membership) Join(c Caller, inc uint64, noRoll bool) (rpcdef.JoinReply, error) {
	ms.mu.Lock()
	r, err := ms.joinLocked(c, inc)
	ms.mu.Unlock()
	if err == nil && !noRoll {
		// The replicated roll, at the version it is at: what watchers
		// see, and never the unknowns of a leader that just took over.
		r.Members, r.Version = ms.roll.Members()
		sortMembers(r.Members) // outside the lock: joins come by the thousand
	}
	return r, err
}

func (ms *Membership) joinLocked(c Caller, inc uint64) (rpcdef.JoinReply, error) {
	if !ms.leading {
		return rpcdef.JoinReply{}, errFollower
	}
	now := ms.now()
	n, ok := ms.nodes[c.Node]
	if ok && n.m.Status == rpcdef.StatusUnknown && inc >= n.m.Incarnation {
		ms.lastBack = now // the fleet is still coming back (see comingBack)
	}
	switch {
	case !ok:
		n = &node{m: rpcdef.Member{Name: c.Node, JoinedAt: now}}
		ms.nodes[c.Node] = n
		ms.admit(n, c, inc, now)
		ms.emit(n, rpcdef.EventJoined, "", now)
	case inc < n.m.Incarnation:
		return rpcdef.JoinReply{}, rpcdef.Errorf(rpcdef.CodeStaleIncarnation,
			"%s incarnation %d is older than the one that joined (%d): this process was replaced", c.Node, inc, n.m.Incarnation)
	case inc > n.m.Incarnation:
		old := n.m.Incarnation
		n.arr = Arrivals{}
		n.m.Resources = nil
		n.cpu = cpuRing{}
		n.m.JoinedAt = now
		ms.admit(n, c, inc, now)
		ms.emit(n, rpcdef.EventRejoined, fmt.Sprintf("new incarnation %d replaces %d", inc, old), now)
	default: // the same process again: after a master restart, a false death or a lost connection
		was := n.m.Status
		ms.admit(n, c, inc, now)
		// Unknown to a new leader but alive in the replicated roll: back
		// as everyone believes it is, so nothing is written.
		if was != rpcdef.StatusAlive && n.told != rpcdef.StatusAlive {
			ms.emit(n, rpcdef.EventAlive, fmt.Sprintf("joined again (was %s)", was), now)
		}
	}
	r := rpcdef.JoinReply{
		Version:           ms.roll.Version(),
		HeartbeatInterval: ms.interval(c.Node),
		ReportInterval:    ms.t.Report,
	}
	return r, nil
}

// admit marks n alive on c's connection. ms.mu is held.
func (ms *Membership) admit(n *node, c Caller, inc uint64, now time.Time) {
	n.m.Incarnation = inc
	n.m.Addr = c.Addr
	n.m.CertNotAfter = c.CertNotAfter
	n.m.LastHeartbeat = now
	n.session(c.ConnID)
	if n.m.Status == rpcdef.StatusAlive || n.m.Status == rpcdef.StatusSuspect {
		n.arr.Observe(now, &ms.t.Detector)
	} else {
		n.arr.Resume(now) // back from dead, left or unknown: that gap is no sample
	}
	ms.self.Load().NoteArrival(now)
	if n.m.Status != rpcdef.StatusAlive {
		ms.setStatus(n, rpcdef.StatusAlive, now)
	}
}

// current finds the node a slave's call is about and checks its incarnation.
// ms.mu is held.
func (ms *Membership) current(name string, inc uint64) (*node, error) {
	if !ms.leading {
		return nil, errFollower
	}
	n, ok := ms.nodes[name]
	if !ok {
		return nil, rpcdef.Errorf(rpcdef.CodeNotJoined, "%s has not joined: call Join first", name)
	}
	if inc < n.m.Incarnation {
		return nil, rpcdef.Errorf(rpcdef.CodeStaleIncarnation,
			"%s incarnation %d was replaced by incarnation %d: this process must join again", name, inc, n.m.Incarnation)
	}
	if inc > n.m.Incarnation {
		return nil, rpcdef.Errorf(rpcdef.CodeNotJoined, "%s incarnation %d has not joined: call Join first", name, inc)
	}
	switch n.m.Status {
	case rpcdef.StatusDead, rpcdef.StatusLeft, rpcdef.StatusUnknown:
		return nil, rpcdef.Errorf(rpcdef.CodeNotJoined, "%s is %s: join again", name, n.m.Status)
	}
	return n, nil
}

// Heartbeat records a heartbeat and returns the current event version and
// the interval the slave is to heartbeat at.
func (ms *Membership) Heartbeat(c Caller, inc uint64) (rpcdef.HeartbeatReply, error) {
	now := ms.now()
	ms.self.Load().NoteArrival(now)
	ms.mu.Lock()
	defer ms.mu.Unlock()
	n, err := ms.current(c.Node, inc)
	if err != nil {
		return rpcdef.HeartbeatReply{Version: ms.roll.Version()}, err
	}
	n.arr.Observe(now, &ms.t.Detector)
	if !n.m.LastHeartbeat.IsZero() {
		ms.met.arrival(now.Sub(n.m.LastHeartbeat))
	}
	n.m.LastHeartbeat = now
	n.session(c.ConnID)
	if n.m.Status == rpcdef.StatusSuspect {
		ms.setStatus(n, rpcdef.StatusAlive, now)
		ms.emit(n, rpcdef.EventAlive, "heartbeat arrived", now)
	}
	return rpcdef.HeartbeatReply{Version: ms.roll.Version(), Interval: ms.interval(c.Node)}, nil
}

// Report stores a resource report.
func (ms *Membership) Report(c Caller, inc uint64, r rpcdef.Resources) (uint64, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	n, err := ms.current(c.Node, inc)
	if err != nil {
		return ms.roll.Version(), err
	}
	n.m.Resources = &r
	n.cpu.add(r.SampledAt, r.CPUPercent)
	return ms.roll.Version(), nil
}

// Leave marks a slave as gone on purpose.
func (ms *Membership) Leave(c Caller, inc uint64, reason string) error {
	now := ms.now()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	n, err := ms.current(c.Node, inc)
	if err != nil {
		return err
	}
	ms.setStatus(n, rpcdef.StatusLeft, now)
	if reason == "" {
		reason = "graceful leave"
	}
	ms.emit(n, rpcdef.EventLeft, reason, now)
	ms.met.detected(detectLeft)
	return nil
}

// ConnClosed is the evidence of a closed connection: the kernel of a killed
// process closes its sockets at once. Once the last of a node's sessions
// has closed, the node is suspect, and dead unless it is back within the
// close grace.
func (ms *Membership) ConnClosed(name string, connID uint64) { ms.connClosed(name, connID, false) }

// ConnAbandoned is ConnClosed for a connection the slave closed while one of
// its calls was being served or waiting to be read (tlsrpc.Peer.GaveUp): it
// gave up waiting on this master, and is most likely redialling. That is
// the master's slowness, not evidence against the slave: the session ends
// and the heartbeat detector judges it, as any slave between two calls. A
// slave killed in the middle of a call is found that way too, within
// max_dead.
func (ms *Membership) ConnAbandoned(name string, connID uint64) { ms.connClosed(name, connID, true) }

func (ms *Membership) connClosed(name string, connID uint64, abandoned bool) {
	now := ms.now()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	n, ok := ms.nodes[name]
	if !ok || ms.stopped || !ms.leading {
		return
	}
	i := slices.Index(n.sessions, connID)
	if i < 0 {
		return // not one of its sessions: a watch, a view, a diagnostic
	}
	n.sessions = slices.Delete(n.sessions, i, i+1)
	if len(n.sessions) > 0 || !n.closedAt.IsZero() {
		return
	}
	if abandoned {
		ms.log.WithField("peer", name).Debugf("%s closed its connection while a call of its was waiting on this master: left to the heartbeat detector", name)
		return
	}
	switch n.m.Status {
	case rpcdef.StatusAlive:
		n.closedAt = now
		// Stall first, evidence second: a close that arrives while the
		// master is stalled, or recovering from a stall, is most likely the
		// slave giving up on it. Tick judges it once the stall is known.
		if ms.self.Load().Overdue(now) || now.Before(ms.recovering) || ms.overloaded {
			return
		}
		ms.setStatus(n, rpcdef.StatusSuspect, now)
		ms.emit(n, rpcdef.EventSuspect, "connection closed", now)
	case rpcdef.StatusSuspect:
		n.closedAt = now
	}
}

// Stop is called as the master shuts down, before it closes the slaves'
// connections: those closes are its own doing, not evidence against them.
func (ms *Membership) Stop() {
	ms.mu.Lock()
	ms.stopped = true
	ms.mu.Unlock()
}

// Forget removes a node from the roll.
func (ms *Membership) Forget(name string) error {
	now := ms.now()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if !ms.leading {
		return errFollower
	}
	n, ok := ms.nodes[name]
	if !ok {
		return rpcdef.Errorf(rpcdef.CodeNotFound, "no node %s", name)
	}
	delete(ms.nodes, name)
	ms.tell(n, rpcdef.EventForgotten, "forgotten by an admin", now)
	return nil
}

// Evict declares a node dead now.
func (ms *Membership) Evict(name, reason string) error {
	now := ms.now()
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if !ms.leading {
		return errFollower
	}
	n, ok := ms.nodes[name]
	if !ok {
		return rpcdef.Errorf(rpcdef.CodeNotFound, "no node %s", name)
	}
	ms.setStatus(n, rpcdef.StatusDead, now)
	ms.tell(n, rpcdef.EventDead, "evicted by an admin: "+reason, now)
	n.collapsed = 0 // told now, with its state
	return nil
}

// Tick runs the detector over every node. It is called every Timing.Tick.
func (ms *Membership) Tick(now time.Time) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if !ms.leading {
		return // a follower judges nobody
	}
	stall := ms.self.Load().Tick(now)
	ms.flush(now)
	ms.pace(now)
	if stall > 0 {
		ms.forgive(stall, now)
		// A short lag (a busy moment, a GC) is only forgiven. A stall long
		// enough for the slaves' calls to have failed also gives them
		// max_dead to come back before anyone is declared dead.
		if stall >= ms.t.Detector.MinDead {
			ms.recovering = now.Add(ms.t.Detector.MaxDead)
			ms.log.Warnf("the master itself stalled for %v: that gap is not counted against the slaves, and nobody is declared dead for %v while they come back",
				stall.Round(time.Millisecond), ms.t.Detector.MaxDead)
		} else {
			ms.log.Debugf("the master's detector lagged %v behind: forgiven", stall.Round(time.Millisecond))
		}
	}
	// Nobody at all heartbeating is the master's problem (its network), not
	// every slave's: hold heartbeat verdicts until someone is heard again
	// (below). A stall long enough to start a recovery is a hold too.
	if stall >= ms.t.Detector.MinDead {
		ms.met.hold(holdStall)
	}
	// The heartbeats handled over the last interval or a little more, and
	// how many the members alive for all of it send in that time.
	got, span := ms.self.Load().Handled(now, ms.t.Detector.Interval)
	var want float64
	up := 0
	var prior Prior // the cluster's cadence, for the nodes still warming up
	for _, n := range ms.nodes {
		if n.up() {
			up++
			prior.Add(&n.arr, &ms.t.Detector)
			if span > 0 && n.m.Status == rpcdef.StatusAlive && now.Sub(n.m.StatusSince) >= span {
				want += float64(span.Microseconds()) / n.arr.meanGap(&ms.t.Detector)
			}
		}
	}
	// Suspects count as up: a steady node is suspect before it can be dead.
	quiet := ms.self.Load().QuietFor(now)
	if up >= 2 && quiet > ms.t.Detector.MinDead {
		if ms.held.IsZero() {
			// From the start of the quiet: once heartbeats resume, all of
			// it is forgiven, so the slaves heard from a little after the
			// first are not late by the quiet's first min_dead.
			ms.held = now.Add(-quiet)
			ms.met.hold(holdQuiet)
			ms.log.Warnf("no heartbeat from any of %d slaves for %v: suspecting the master's own network, holding verdicts", up, quiet.Round(time.Millisecond))
		}
	} else if !ms.held.IsZero() {
		ms.forgive(now.Sub(ms.held), now)
		ms.log.Infof("heartbeats arrive again after %v; verdicts resume", now.Sub(ms.held).Round(time.Millisecond))
		ms.held = time.Time{}
	}
	// Every node gets max_dead to be heard from again after a stall.
	recovering := now.Before(ms.recovering)
	// Judge the silent first, then act: a crowd of slaves late in the same
	// tick is held as the master's own trouble (see massLate).
	judged := ms.judged[:0]
	late := 0
	for _, n := range ms.nodes {
		if !n.up() || !n.closedAt.IsZero() {
			continue
		}
		v := n.arr.JudgeWith(now, &ms.t.Detector, &prior)
		if v == VerdictAlive {
			n.lateTicks = 0
			continue
		}
		late++
		// A verdict stands from its second tick on: by then the count
		// above has seen whether a crowd is late, not just its first few.
		if n.lateTicks++; n.lateTicks >= 2 {
			judged = append(judged, verdict{n, v})
		}
	}
	ms.judged = judged[:0]
	// The master is behind when its own loop ran late within the last
	// interval (see SelfMonitor.Behind), or when it handled far fewer
	// heartbeats over a whole interval than its members send (its handlers
	// starved of CPU): lateness seen now may be its doing. Either holds
	// only while someone is late. Neither fires on an idle master: its
	// ticks are on time, and over a whole interval every member's phase is
	// counted once, however the phases are spread.
	lagged := ms.self.Load().Behind(now, ms.t.Detector.Interval)
	starved := want >= minHandledCheck && float64(got) < behindShare*want
	behind := late > 0 && (lagged || starved)
	// Overloaded, whether or not anyone is late: its handlers starved, or
	// turning connections away. Closed connections are then likely slaves
	// whose calls timed out on this master (see below). A lag of its own
	// loop alone (a GC) is not: it is forgiven, and a crash is still dead
	// after close_grace (TestShortLagDoesNotHoldDeaths).
	ms.overloaded = starved || ms.congestedWithin(now, ms.t.Detector.Interval)
	// Once held, the hold lasts until the crowd is down to a quarter and
	// an interval has passed for the late ones to be heard from.
	crowded := late >= massLate(up) || behind ||
		!ms.crowd.IsZero() && (late >= massLate(up)/4 || now.Sub(ms.crowd) < ms.t.Detector.Interval)
	if crowded && ms.held.IsZero() && !recovering {
		if ms.crowd.IsZero() {
			ms.crowd = now
			if behind {
				ms.met.hold(holdBehind)
				cause := fmt.Sprintf("its own detector ran late within the last %v", ms.t.Detector.Interval)
				if !lagged {
					cause = fmt.Sprintf("%d heartbeats handled in the last %v where its slaves send %.0f",
						got, span.Round(time.Millisecond), want)
				}
				ms.log.Warnf("this master is behind (%s: its CPU, a garbage collection), not its %d late slaves; holding heartbeat verdicts for up to %v",
					cause, late, ms.t.Detector.MaxDead)
			} else {
				ms.met.hold(holdCrowd)
				ms.log.Warnf("%d of %d slaves late in the same instant: more likely this master's host or network than theirs; holding heartbeat verdicts for up to %v",
					late, up, ms.t.Detector.MaxDead)
			}
		}
		if now.Sub(ms.crowd) < ms.t.Detector.MaxDead {
			judged = judged[:0]
		}
	} else if !ms.crowd.IsZero() {
		ms.log.Infof("heartbeat verdicts resume after %v held: %d slaves late now", now.Sub(ms.crowd).Round(time.Millisecond), late)
		ms.crowd = time.Time{}
	}
	back := ms.comingBack(now)
	for _, n := range ms.nodes {
		if n.m.Status == rpcdef.StatusUnknown {
			if waited := now.Sub(n.m.StatusSince); waited >= ms.grace {
				if back && waited < maxGraceHeld*ms.grace {
					ms.holdGrace(now)
					continue
				}
				ms.setStatus(n, rpcdef.StatusDead, now)
				ms.emit(n, rpcdef.EventDead, fmt.Sprintf("not heard from within %v of this master becoming the leader", waited.Round(time.Millisecond)), now)
			}
			continue
		}
		// A close that ConnClosed left to this tick, because it arrived
		// while the master was stalled, recovering or overloaded: suspect
		// now, unless that still covers it (the slave is likely
		// redialling, its handshake waiting its turn). Overload covers a
		// close for max_dead at most: a slave that crashed under it is
		// dead by then, later but not never.
		if n.closedAt.IsZero() {
			continue
		}
		closed := now.Sub(n.closedAt)
		held := recovering || ms.overloaded && closed < ms.t.Detector.MaxDead
		if !held && n.m.Status == rpcdef.StatusAlive {
			ms.setStatus(n, rpcdef.StatusSuspect, now)
			ms.emit(n, rpcdef.EventSuspect, "connection closed", now)
		}
		if !held && n.up() && closed >= ms.t.CloseGrace {
			ms.setStatus(n, rpcdef.StatusDead, now)
			within := ms.t.CloseGrace
			if closed > ms.t.CloseGrace+2*ms.t.Tick {
				within = closed.Round(time.Millisecond) // held by an overload
			}
			ms.emit(n, rpcdef.EventDead, fmt.Sprintf("connection closed and not back within %v", within), now)
			ms.met.detected(detectCrash)
		}
	}
	if recovering || !ms.held.IsZero() {
		return
	}
	for _, j := range judged { // up, and their connections open
		n := j.n
		switch j.v {
		case VerdictDead:
			silence := now.Sub(n.arr.Last())
			ms.setStatus(n, rpcdef.StatusDead, now)
			ms.emit(n, rpcdef.EventDead, fmt.Sprintf("no heartbeat for %v (phi %.1f)", silence.Round(time.Millisecond), n.arr.PhiWith(now, &ms.t.Detector, &prior)), now)
			ms.met.detected(detectSilent)
		case VerdictSuspect:
			if n.m.Status == rpcdef.StatusAlive {
				ms.setStatus(n, rpcdef.StatusSuspect, now)
				ms.emit(n, rpcdef.EventSuspect, fmt.Sprintf("no heartbeat for %v", now.Sub(n.arr.Last()).Round(time.Millisecond)), now)
			}
		}
	}
}

// The master counts the heartbeats it handled over the last interval (at
// least one whole one, so every member's phase falls in it) against those
// its members alive for all of it send: each one interval over its mean
// gap. Below behindShare of that, it is behind. Checked only where
// minHandledCheck are due, so that the few slaves of a lab, whose
// heartbeats come in ones and twos, are never held for it.
const (
	behindShare     = 0.75
	minHandledCheck = 50
)

// maxGraceHeld bounds how long the members a failover left unknown may be
// held past the grace: that many graces in all, however the fleet comes
// back, so that peers holding handshakes open, or joining again and again,
// cannot keep a dead member alive.
const maxGraceHeld = 3

// comingBack says whether the fleet is still coming back to this leader:
// within the last max_dead a member the failover left unknown joined
// again, or the master turned a connection away for its own slowness
// (busy, or a handshake past its deadline). The grace is an estimate of
// how fast a master admits joins; one slower than that (a busy host) is
// still admitting them, and the members not back yet may be alive and
// waiting their turn, not dead.
func (ms *Membership) comingBack(now time.Time) bool {
	back := !ms.lastBack.IsZero() && now.Sub(ms.lastBack) < ms.t.Detector.MaxDead
	return back || ms.congestedWithin(now, ms.t.Detector.MaxDead)
}

// congestedWithin says whether the master turned a connection away for its
// own slowness within the last d.
func (ms *Membership) congestedWithin(now time.Time, d time.Duration) bool {
	if ms.congested == nil {
		return false
	}
	at := ms.congested()
	return !at.IsZero() && now.Sub(at) < d
}

// holdGrace says, once a leadership, that the failover grace is extended,
// and counts it. ms.mu is held.
func (ms *Membership) holdGrace(now time.Time) {
	if ms.graceHeld {
		return
	}
	ms.graceHeld = true
	ms.met.hold(holdAdmission)
	unknown := 0
	for _, n := range ms.nodes {
		if n.m.Status == rpcdef.StatusUnknown {
			unknown++
		}
	}
	ms.log.Warnf("%d members not back within the failover grace of %v while the others are still coming back (or being turned away as this master is too busy): each waits until nobody has come back for %v (at most %v in all)",
		unknown, ms.grace, ms.t.Detector.MaxDead, maxGraceHeld*ms.grace)
}

// The causes of a hold of heartbeat verdicts, as the holds metric labels
// them.
const (
	holdBehind = "behind" // the master's own loop ran late
	holdCrowd  = "crowd"  // too many slaves late at once
	holdQuiet  = "quiet"  // no heartbeat from anyone
	holdStall  = "stall"  // the master stalled long enough for the slaves' calls to fail
	// holdAdmission: a failover's grace ran out while the fleet was still
	// coming back, or being turned away as busy (see holdGrace).
	holdAdmission = "admission"
)

type verdict struct {
	n *node
	v Verdict
}

// massLate is how many slaves late at once (alive or already suspect) are held to be
// the master's trouble rather than theirs: its host stalled (a long GC, a
// neighbour taking the CPU) or its network dropped. Hosts fail one at a
// time; a thousand do not miss the same heartbeat together. Lifeguard
// (HashiCorp, 2017) makes the same argument for memberlist. Never fewer
// than 10, so that a lab of a few slaves judges each one alone; a crowd
// still late after max_dead is judged as usual.
func massLate(up int) int { return max(10, up/50) }

// forgive moves every node's last sign of life forward by d, a stall of
// the master that ended at now. ms.mu is held. A connection that closed
// during the stall (the slave's call timed out while the master could not
// answer) counts as closed at its end, not d later still.
func (ms *Membership) forgive(d time.Duration, now time.Time) {
	for _, n := range ms.nodes {
		n.arr.Forgive(d)
		if !n.closedAt.IsZero() {
			n.closedAt = minTime(n.closedAt.Add(d), now)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Members returns the roll sorted by name, or one member. A follower
// answers from the replicated roll: no resources, no heartbeat times.
func (ms *Membership) Members(name string) (rpcdef.MembersReply, error) {
	ms.mu.Lock()
	if !ms.leading {
		ms.mu.Unlock()
		return ms.replicated(name)
	}
	if name != "" {
		defer ms.mu.Unlock()
		n, ok := ms.nodes[name]
		if !ok {
			return rpcdef.MembersReply{}, rpcdef.Errorf(rpcdef.CodeNotFound, "no node %s in the cluster", name)
		}
		return rpcdef.MembersReply{Version: ms.roll.Version(), Members: []rpcdef.Member{n.m}}, nil
	}
	r := rpcdef.MembersReply{Version: ms.roll.Version(), Members: make([]rpcdef.Member, 0, len(ms.nodes))}
	for _, n := range ms.nodes {
		r.Members = append(r.Members, n.m)
	}
	ms.mu.Unlock()
	sortMembers(r.Members)
	return r, nil
}

// replicated is Members from the replicated roll.
func (ms *Membership) replicated(name string) (rpcdef.MembersReply, error) {
	if name != "" {
		m, v, ok := ms.roll.Member(name)
		if !ok {
			return rpcdef.MembersReply{}, rpcdef.Errorf(rpcdef.CodeNotFound, "no node %s in the cluster", name)
		}
		return rpcdef.MembersReply{Version: v, Members: []rpcdef.Member{m}}, nil
	}
	members, v := ms.roll.Members()
	sortMembers(members)
	return rpcdef.MembersReply{Version: v, Members: members}, nil
}

func sortMembers(ms []rpcdef.Member) {
	slices.SortFunc(ms, func(a, b rpcdef.Member) int { return cmp.Compare(a.Name, b.Name) })
}

// Since fills reply with the events after version after and returns true,
// or returns false and a channel that is closed at the next event. It takes
// no lock unless the watcher is too far behind and gets the whole roll.
func (ms *Membership) Since(after uint64, reply *rpcdef.WatchReply) (bool, <-chan struct{}) {
	f := ms.roll.feed.Load()
	if after == f.version {
		reply.Version = f.version
		return false, f.changed
	}
	if f.resets(after) {
		reply.Reset = true
		reply.Members, reply.Version = ms.roll.Members()
		sortMembers(reply.Members)
		return true, nil
	}
	i, _ := slices.BinarySearchFunc(f.events, after+1, func(e rpcdef.Event, v uint64) int {
		return cmp.Compare(e.Version, v)
	})
	// At most maxReplyEvents at a time: after a storm of events, thousands
	// of watchers each taking the whole backlog in one reply would need
	// that much memory at once. The watcher asks again at once for the rest.
	j := min(len(f.events), i+maxReplyEvents)
	reply.Version = f.events[j-1].Version
	reply.Events = slices.Clone(f.events[i:j])
	return true, nil
}

// resets says whether a watcher that has seen up to version after gets the
// whole roll instead of events: it is ahead of the feed, or behind what the
// feed still holds.
func (f *feed) resets(after uint64) bool {
	return after != f.version && (after > f.version || len(f.events) == 0 || after+1 < f.events[0].Version)
}

// Resets says whether a Watch after version after would be answered with
// the whole roll.
func (ms *Membership) Resets(after uint64) bool { return ms.roll.feed.Load().resets(after) }

// Pending says whether there is news for a watcher that has seen up to
// version after (events, or a roll), and if not, returns the channel closed
// at the next event and the current version.
func (ms *Membership) Pending(after uint64) (bool, <-chan struct{}, uint64) {
	f := ms.roll.feed.Load()
	if after == f.version {
		return false, f.changed, f.version
	}
	return true, nil, f.version
}

// Recent returns the last n events (fewer if it holds fewer), oldest first,
// and the version they lead up to: a watcher that starts from it misses
// nothing.
func (ms *Membership) Recent(n int) ([]rpcdef.Event, uint64) {
	f := ms.roll.feed.Load()
	return slices.Clone(f.events[max(0, len(f.events)-n):]), f.version
}

// CPUHistory returns each node's recent CPU figures, oldest first: those of
// its current incarnation, at most the last cpuHistory.
func (ms *Membership) CPUHistory() map[string][]CPUSample {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	out := make(map[string][]CPUSample, len(ms.nodes))
	for name, n := range ms.nodes {
		if n.cpu.n > 0 {
			out[name] = n.cpu.samples()
		}
	}
	return out
}

// Version is the current event version.
func (ms *Membership) Version() uint64 { return ms.roll.Version() }

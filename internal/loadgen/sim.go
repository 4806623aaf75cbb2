package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/rpcdef"
)

const (
	// joinCallTimeout bounds one Join: under a cold join of thousands the
	// master's reply (the whole roll) is large and slow to come.
	joinCallTimeout = 15 * time.Second
	// minWatchGap: a Watch answered sooner than this with nothing new
	// makes the next one wait, as slaved does.
	minWatchGap = 100 * time.Millisecond
	// warmBeats is over how many heartbeats a simulated slave moves from
	// the phase its join gave it to its own random phase. Each step is at
	// most interval/(2·warmBeats), so the gaps the master's detector
	// learns from stay within its 100ms spread floor.
	warmBeats = 16
)

// A simulated slave's states.
const (
	simRunning int32 = iota
	simSilenced
	simKilled
	simStopping
)

var errKilled = errors.New("simulated slave was killed")

// sim is one simulated slave: its own certificate, its own TLS connection
// (one rpcdef.ClusterClient carries Join, Heartbeat, Report, Watch and
// Leave, as in slaved), one goroutine for heartbeats and reports, and one
// for its Watch.
type sim struct {
	r       *run
	idx     int
	name    string
	inc     uint64
	tls     *tls.Config
	cl      *rpcdef.ClusterClient
	watcher bool
	phase   float64 // where in the interval its heartbeats go, from r.epoch: 0 to 1

	mu     sync.Mutex
	addr   string   // the master cl dials: moveTo changes it
	raw    net.Conn // the TCP connection under cl, to kill it without a TLS goodbye
	dials  int
	killed bool

	state    atomic.Int32
	halt     chan struct{} // closed when its heartbeats stop: silenced, killed or the end
	haltOnce sync.Once
	loops    sync.WaitGroup

	joinedAt time.Time
	every    time.Duration // heartbeat interval, from JoinReply
	report   time.Duration // report interval, from JoinReply
	version  uint64        // the event version of its join
	joined   atomic.Bool
	seq      uint64       // the heartbeat loop's alone
	lastBeat atomic.Int64 // when its latest answered heartbeat was sent, unix ns
	// resync, set by failover in the heartbeat loop's goroutine: the beats
	// missed while it looked for a master are not counted as skipped.
	resync bool
}

func newSim(r *run, idx int, tlsConf *tls.Config) *sim {
	s := &sim{
		r: r, idx: idx, name: r.cfg.name(idx), inc: r.incarnation + uint64(idx), tls: tlsConf,
		watcher: r.cfg.watcher(idx), phase: rand.Float64(), halt: make(chan struct{}), addr: r.addr,
	}
	// The client names no address: the master it dials changes, and the
	// dial's errors name it.
	s.cl = rpcdef.NewClusterClient("the master", s.dial)
	return s
}

// master is the address the slave dials now.
func (s *sim) master() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// moveTo makes the slave's calls go to the master at addr from now on:
// the connection to another is closed, and the next call dials addr.
func (s *sim) moveTo(addr string) {
	s.mu.Lock()
	moved := s.addr != addr
	s.addr = addr
	s.mu.Unlock()
	if moved {
		s.cl.Close()
	}
}

// The election's retry, as slaved's (slaved.electionWait and
// maxElectionWait): a raft election on a LAN takes about a second.
const (
	electionWait    = 200 * time.Millisecond
	maxElectionWait = 800 * time.Millisecond
)

// errMoved: the slave moved to another master while a dial to the old one
// was under way.
var errMoved = errors.New("the simulated slave moved to another master during the dial")

// dial is the client's Dialer: TLS to the master, keeping the TCP
// connection so that kill can close it as the kernel of a killed process
// would. A killed slave never dials again.
//
// Its dial and handshake wait for one of the run's JoinRate turns. Real
// slaves each have their own CPU; loadgen's all share one process, and a
// thousand that lose their master at once would otherwise run a thousand
// client handshakes together, each too slow to finish in time, and time
// the master's side out with them.
func (s *sim) dial(ctx context.Context) (net.Conn, error) {
	if t := s.r.handshakes; t != nil {
		select {
		case t <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to %s: waiting for a handshake turn: %w", s.master(), ctx.Err())
		}
		defer func() { <-t }()
	}
	addr := s.master()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, s.tls)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.killed {
		raw.Close()
		return nil, errKilled
	}
	if s.addr != addr {
		raw.Close()
		return nil, fmt.Errorf("connect to %s: %w", addr, errMoved)
	}
	if s.dials++; s.dials > 1 {
		s.r.stats.reconnects.Add(1)
	}
	s.raw = raw
	return c, nil
}

// joinCall sends Join to the slave's master, always with the same
// incarnation, and takes the reply's masters list. A follower's answer
// naming the leader is followed, hops times at most: the slave moves
// there and joins again.
func (s *sim) joinCall(ctx context.Context, hops int) (rpcdef.JoinReply, error) {
	for {
		cctx, cancel := context.WithTimeout(ctx, joinCallTimeout)
		args := rpcdef.JoinArgs{Node: s.name, Incarnation: s.inc, Protocol: rpcdef.ProtocolVersion, NoRoll: !s.r.cfg.Roll}
		if s.joined.Load() {
			// As slaved does: joining again, the roll it had is brought on
			// by events if the master still can.
			args.Have = s.version
		}
		r, err := s.cl.Join(cctx, args)
		cancel()
		if err == nil {
			s.r.setMasters(r.Masters, r.MastersVersion, "the join reply of "+s.master())
			s.r.joinedAt(s.master())
			return r, nil
		}
		_, leader, ok := rpcdef.LeaderOf(err)
		if !ok || hops == 0 {
			return r, err
		}
		if cerr := s.r.cfg.checkAddr(leader); cerr != nil {
			return r, fmt.Errorf("%w; the leader named: %v", err, cerr)
		}
		hops--
		s.r.stats.redirects.Add(1)
		s.moveTo(leader)
	}
}

// join sends Join, following a follower's redirect once, and notes the
// intervals the master sets.
func (s *sim) join(ctx context.Context) error {
	r, err := s.joinCall(ctx, 1)
	if err != nil {
		return err
	}
	s.joinedAt = time.Now()
	s.version = r.Version
	s.every, s.report = r.HeartbeatInterval, r.ReportInterval
	if s.every <= 0 {
		s.every = time.Second
	}
	if s.report <= 0 {
		s.report = 5 * time.Second
	}
	s.joined.Store(true)
	return nil
}

// start runs the heartbeat loop, and the watch loop if watch says so.
func (s *sim) start(watch bool, after uint64) {
	s.loops.Add(1)
	go s.beatLoop()
	if watch {
		s.startWatch(after)
	}
}

func (s *sim) startWatch(after uint64) {
	s.loops.Add(1)
	go s.watchLoop(after)
}

// phaseShift is how far to move the heartbeat at first (due at first) to
// put it at target modulo every: in (-every/2, every/2].
func phaseShift(first, target time.Time, every time.Duration) time.Duration {
	d := target.Sub(first) % every
	if d < 0 {
		d += every
	}
	if d > every/2 {
		d -= every
	}
	return d
}

// beatLoop heartbeats every interval (the first one interval after the
// join, as slaved does) and reports every report interval, half an
// interval away from the heartbeats, until the slave is halted.
func (s *sim) beatLoop() {
	defer s.loops.Done()
	every := s.every
	next := s.joinedAt.Add(every)
	shift := phaseShift(next, s.r.epoch.Add(time.Duration(s.phase*float64(every))), every)
	step := shift / warmBeats
	// Reports go half an interval away from where the heartbeats settle.
	nextReport := next.Add(shift + every/2 + rand.N(max(s.report/every, 1))*every)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for beats := 0; ; {
		if nextReport.Before(next) {
			timer.Reset(time.Until(nextReport))
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-s.halt:
			return
		case <-timer.C:
		}
		if s.state.Load() != simRunning {
			return
		}
		now := time.Now()
		if !next.After(now) {
			if told := s.heartbeat(); told > 0 && told != every {
				every = told // the master's budget, as slaved follows it
			}
			beats++
			next = next.Add(every)
			if beats <= warmBeats {
				next = next.Add(step)
			}
			if s.resync {
				// Back from a failover: beat on from now, the beats
				// missed while no master answered not counted as skipped.
				s.resync = false
				next = time.Now().Add(every)
				nextReport = next.Add(every / 2)
				continue
			}
			if now := time.Now(); now.Sub(next) > every {
				// Fell a whole interval behind: skip the missed beats
				// rather than send them in a burst, as a ticker does.
				s.r.stats.beatsSkipped.Add(1)
				next = now.Add(every)
			}
			continue
		}
		s.sendReport()
		nextReport = nextReport.Add(s.report)
		if now := time.Now(); now.After(nextReport) {
			nextReport = now.Add(s.report)
		}
	}
}

// heartbeat sends one heartbeat, and returns the interval the master asks
// for (0 if none came back). One that fails on a broken connection is sent
// again at once on a new one, as slaved does; if that gets no answer
// either, the master is gone and failover finds another. A follower's
// answer naming the leader is followed: the slave joins there.
func (s *sim) heartbeat() time.Duration {
	s.seq++
	args := rpcdef.HeartbeatArgs{Node: s.name, Incarnation: s.inc, Seq: s.seq, MastersVersion: s.r.masters.version()}
	st := &s.r.stats
	for attempt := 0; attempt < 2; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.r.cfg.CallTimeout)
		t0 := time.Now()
		r, err := s.cl.Heartbeat(ctx, args)
		lat := time.Since(t0)
		cancel()
		if err == nil {
			s.lastBeat.Store(t0.UnixNano())
			if s.r.measuring.Load() {
				s.r.beats.Record(lat)
				st.beats.Add(1)
			}
			if r.Masters != nil {
				s.r.setMasters(r.Masters, r.MastersVersion, "the heartbeat reply of "+s.master())
			}
			return r.Interval
		}
		if s.state.Load() != simRunning {
			return 0 // killed or stopped under the call: not the master's failure
		}
		st.beatsFailed.Add(1)
		if _, leader, ok := rpcdef.LeaderOf(err); ok {
			s.follow(leader, err)
			return 0
		}
		switch {
		case rpcdef.MustRejoin(err):
			// The master does not count this slave: a new leader it has not
			// joined yet, a master that restarted, or one that declared it
			// dead (a false death, which the tracker counts from the
			// event). Join again with the same incarnation, as slaved does.
			st.rejoins.Add(1)
			s.r.log.WithField("peer", s.name).Debugf("heartbeat refused: %v; joining again", err)
			if err := s.rejoin(); err != nil {
				s.r.log.WithField("peer", s.name).Warnf("join again: %v", err)
			}
			return 0
		case errors.Is(err, rpcdef.ErrNotLeader):
			// A follower during an election: the next beat asks again.
			return 0
		case errors.Is(err, context.DeadlineExceeded):
			// The deadline closed the connection; the next call redials.
			st.beatsTimedOut.Add(1)
			return 0
		case !rpcdef.NoAnswer(err):
			s.r.log.WithField("peer", s.name).Warnf("heartbeat: %v", err)
			return 0
		}
		st.beatsLost.Add(1)
	}
	s.failover(s.master())
	return 0
}

// follow moves the slave to the leader a follower named in err, and joins
// there: one hop, not followed further.
func (s *sim) follow(leader string, err error) {
	if cerr := s.r.cfg.checkAddr(leader); cerr != nil {
		s.r.log.WithField("peer", s.name).Warnf("%v; not following the leader it names: %v", err, cerr)
		return
	}
	s.r.stats.redirects.Add(1)
	s.moveTo(leader)
	if _, err := s.joinCall(context.Background(), 0); err != nil {
		s.r.log.WithField("peer", s.name).Debugf("join at the leader %s: %v", leader, err)
	}
}

// failover finds the slave a master after the one at lost stopped
// answering: each of r.targets in turn, joined with one redirect, round
// after round with backoff and jitter, until one takes the join or the
// slave is halted. It runs in the heartbeat loop's goroutine.
func (s *sim) failover(lost string) {
	b := daemon.NewBackoff(daemon.InitialBackoff, 2*time.Second)
	// As slaved's: while a master says an election is under way, retry
	// within electionWait to maxElectionWait, not the full backoff.
	election := daemon.NewBackoff(electionWait, maxElectionWait)
	log := s.r.log.WithField("peer", s.name)
	log.Debugf("the master at %s does not answer; looking for another", lost)
	for s.state.Load() == simRunning {
		var last error
		inElection := false
		for _, addr := range s.r.targets(lost) {
			if s.state.Load() != simRunning {
				return
			}
			s.moveTo(addr)
			_, err := s.joinCall(context.Background(), 1)
			if err == nil {
				s.r.stats.failovers.Add(1)
				s.resync = true
				log.Debugf("joined at %s after %s stopped answering", s.master(), lost)
				return
			}
			last = err
			if _, _, named := rpcdef.LeaderOf(err); !named && errors.Is(err, rpcdef.ErrNotLeader) {
				inElection = true
			}
		}
		wait := b.Next()
		if inElection {
			wait = min(wait, election.Next())
		} else {
			election.Reset()
		}
		log.Debugf("no master took the join (the last said: %v); trying again in %v", last, wait.Round(time.Millisecond))
		if !s.sleep(wait) {
			return
		}
	}
}

// rejoin joins again with the same incarnation, following a redirect once.
func (s *sim) rejoin() error {
	_, err := s.joinCall(context.Background(), 1)
	return err
}

// sendReport sends the fixed resource report.
func (s *sim) sendReport() {
	res := s.r.resources
	res.SampledAt = time.Now()
	res.Uptime = time.Since(s.r.epoch) + time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), s.r.cfg.CallTimeout)
	defer cancel()
	_, err := s.cl.Report(ctx, rpcdef.ReportArgs{Node: s.name, Incarnation: s.inc, Resources: res})
	switch {
	case err == nil:
		s.r.stats.reports.Add(1)
	case s.state.Load() == simRunning:
		s.r.stats.reportsFailed.Add(1)
		if _, leader, ok := rpcdef.LeaderOf(err); ok {
			s.follow(leader, err)
		}
	}
}

// watchLoop keeps a Watch pending at the master, as slaved does, and hands
// every reply to the tracker, until the slave is halted.
func (s *sim) watchLoop(after uint64) {
	defer s.loops.Done()
	b := daemon.NewBackoff(daemon.InitialBackoff, 2*time.Second)
	for s.state.Load() == simRunning && !s.r.watchStop.Load() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), rpcdef.WatchTimeout(s.r.cfg.CallTimeout))
		r, err := s.cl.Watch(ctx, after, rpcdef.WatchWait)
		recv := time.Now()
		cancel()
		if s.state.Load() != simRunning {
			return // a frozen or dead process reads nothing more
		}
		if err != nil {
			s.r.stats.watchesFailed.Add(1)
			if !s.sleep(b.Next()) {
				return
			}
			continue
		}
		b.Reset()
		s.r.stats.watches.Add(1)
		s.r.tr.observe(s.idx, &r, recv)
		if r.Version == after && !r.Reset && time.Since(start) < minWatchGap && !s.sleep(minWatchGap) {
			return
		}
		after = r.Version
	}
}

// sleep waits d unless the slave is halted first.
func (s *sim) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.halt:
		return false
	case <-t.C:
		return true
	}
}

func (s *sim) stopBeats(state int32) bool {
	if !s.state.CompareAndSwap(simRunning, state) {
		return false
	}
	s.haltOnce.Do(func() { close(s.halt) })
	return true
}

// kill closes the TCP connection at once, as the kernel does for a killed
// process: no Leave, no TLS close_notify.
func (s *sim) kill() {
	s.stopBeats(simKilled)
	s.mu.Lock()
	s.killed = true
	raw := s.raw
	s.mu.Unlock()
	if raw != nil {
		raw.Close()
	}
}

// silence stops heartbeats and reports and leaves the connection open, as
// a stopped process (SIGSTOP) or a hung one does.
func (s *sim) silence() { s.stopBeats(simSilenced) }

// leave stops a running slave's heartbeats and leaves the cluster.
func (s *sim) leave() {
	if !s.stopBeats(simStopping) || !s.joined.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.r.cfg.CallTimeout)
	defer cancel()
	args := rpcdef.LeaveArgs{Node: s.name, Incarnation: s.inc, Reason: "loadgen finished"}
	err := s.cl.Leave(ctx, args)
	if _, leader, ok := rpcdef.LeaderOf(err); ok && s.r.cfg.checkAddr(leader) == nil {
		s.r.stats.redirects.Add(1)
		s.moveTo(leader)
		err = s.cl.Leave(ctx, args)
	}
	if err != nil {
		s.r.stats.leavesFailed.Add(1)
	}
}

// close ends the slave: its connection, then its loops.
func (s *sim) close() {
	s.stopBeats(simStopping)
	s.mu.Lock()
	s.killed = true // no more dials
	s.mu.Unlock()
	s.cl.Close()
}

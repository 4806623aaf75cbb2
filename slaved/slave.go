// Package slaved is muster's slave: it finds the master through the registry,
// joins the cluster, heartbeats and reports its resources, follows membership
// events, and serves its view of the group on a local socket.
//
// With several masters, only the raft leader takes slaves: a follower's
// answer names the leader, and the slave joins it in one hop. The slave keeps
// the masters list of its Join and Heartbeat replies and, when its master
// goes, tries those masters first and the registries after (masters.go).
//
// One ClusterClient (one TLS connection) carries every call to the master:
// the master reads the close of that connection as evidence of a crash, so a
// call is never cancelled while the slave means to stay, and a heartbeat that
// finds the connection broken is sent again at once on a new one.
package slaved

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/tlsrpc"
	"github.com/muster-lab/muster/rpcdef"
)

const (
	// minWatchGap: a Watch answered sooner than this with nothing new makes
	// the next one wait, so a master that does not block is not spun on.
	minWatchGap = 100 * time.Millisecond
	// Intervals used if the master's JoinReply leaves them out.
	fallbackHeartbeat = time.Second
	fallbackReport    = 5 * time.Second
	// leaveReason is what the master records when this slave stops.
	leaveReason = "slaved stopped"
	// electionWait is the first wait after a master said that an election
	// is under way; the waits double, with jitter, to maxElectionWait. A
	// raft election takes a second or two: the slave asks again soon.
	electionWait    = 200 * time.Millisecond
	maxElectionWait = 800 * time.Millisecond
)

// Slave is slaved: its membership of the cluster and its local socket.
type Slave struct {
	cfg     *conf.Slave
	log     logrus.FieldLogger
	node    string
	inc     uint64
	key     rpcdef.ServiceKey
	sampler *Sampler
	view    *View
	local   *tlsrpc.Server // nil when cfg.Socket is ""
	masters masters        // as the masters last told, leader first

	// nextRegistry is the registry to ask first, by index in cfg.Addrs();
	// -1 until the first lookup picks one at random. Only loop uses it.
	nextRegistry int

	seq     atomic.Uint64 // heartbeat sequence number
	running atomic.Bool
	ready   atomic.Bool   // the readiness line was logged
	joins   atomic.Uint64 // successful joins

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error
}

// New checks cfg, opens the resource sampler and binds the local socket. The
// incarnation is taken from the clock, so it is new at every start and grows
// across restarts.
func New(cfg *conf.Slave, log logrus.FieldLogger) (*Slave, error) {
	if cfg == nil {
		return nil, errors.New("no slave config")
	}
	if cfg.Store == nil {
		return nil, errors.New("slave config has no loaded certificates: use conf.LoadSlave")
	}
	if err := cfg.Validate("slave config"); err != nil {
		return nil, err
	}
	node := cfg.Node
	if node == "" {
		node = cfg.Store.Identity().Name
	}
	log = log.WithField("node", node)
	sampler, err := NewSampler(cfg.ProcRoot, cfg.Mounts)
	if err != nil {
		return nil, fmt.Errorf("resource sampler: %w", err)
	}
	inc := uint64(time.Now().UnixNano())
	s := &Slave{
		cfg:     cfg,
		log:     log,
		node:    node,
		inc:     inc,
		key:     rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: cfg.Cluster},
		sampler: sampler,
		view:    newView(node, inc, log),
		closed:  make(chan struct{}),

		nextRegistry: -1,
	}
	if cfg.Socket != "" {
		ln, err := tlsrpc.ListenUnix(cfg.Socket, "slaved")
		if err != nil {
			return nil, err
		}
		// Any local user may connect (mode 0666), and View.Get takes
		// Empty: a request is a few dozen bytes, so 4 KiB is plenty.
		s.local, err = tlsrpc.New(ln, nil, tlsrpc.Options{MaxMessage: 4 << 10}, attachView(s.view, &s.masters), log.WithField("listener", "unix"))
		if err != nil {
			ln.Close()
			return nil, err
		}
	}
	return s, nil
}

// Incarnation is this process's incarnation number.
func (s *Slave) Incarnation() uint64 { return s.inc }

// Run joins the cluster and stays in it until ctx ends (or Close is called);
// then it leaves the cluster gracefully and returns nil. Failures to reach
// the registry or the master are retried with backoff, never returned.
func (s *Slave) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("slave is already running: Run may be called once")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	if s.local != nil {
		g.Go(func() error {
			if err := s.local.Serve(gctx); err != nil {
				return fmt.Errorf("serve %s: %w", s.cfg.Socket, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		s.loop(gctx)
		return nil
	})
	return g.Wait()
}

// Close releases the local socket and stops Run. It is safe to call twice.
func (s *Slave) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		if s.local != nil {
			s.closeErr = s.local.Close()
		}
	})
	return s.closeErr
}

// Reload reads the certificates again (on SIGHUP). Connections made
// afterwards use them.
func (s *Slave) Reload() error {
	return s.cfg.Store.Reload()
}

// loop finds the master and stays joined to it, until ctx ends. Each round
// tries the masters it was told and then the registries; between rounds it
// waits with backoff and jitter, and only briefly while masters say that an
// election is under way.
func (s *Slave) loop(ctx context.Context) {
	b := daemon.NewBackoff(daemon.InitialBackoff, s.cfg.MaxBackoff.D())
	election := daemon.NewBackoff(electionWait, min(maxElectionWait, s.cfg.MaxBackoff.D()))
	var quiet repeats
	var lost target // the master joined last and lost: tried last
	failover := false
	for ctx.Err() == nil {
		joins := s.joins.Load()
		r := s.round(ctx, lost, failover, b, !quiet.repeating())
		if r.left {
			return
		}
		if ctx.Err() != nil {
			break
		}
		if s.joins.Load() != joins {
			quiet.reset()
		}
		failover = r.lost.addr != ""
		if failover {
			lost = r.lost
		}
		d := b.Next()
		if r.election {
			d = min(d, election.Next())
		} else {
			election.Reset()
		}
		s.logFailure(r.attempts, d, &quiet)
		daemon.Sleep(ctx, d)
	}
	s.log.Info("stopping: not joined to a master, so there is nothing to leave")
}

// attempt is one master tried, or one lookup in the registries, that failed.
type attempt struct {
	t   target
	err error
}

// roundResult is how a round ended.
type roundResult struct {
	attempts []attempt
	left     bool   // ctx ended while joined, and the slave left
	lost     target // the master this round joined and lost
	election bool   // a master said it is not the leader, and named none to join
}

// round tries, in order, the masters listed (leader first, lost last) and
// the master the registries name, and stays with the first that takes the
// slave until that membership ends. The registries are not asked when a
// listed master says that an election is under way: they know no better.
// failover says that lost was lost just now, for the log.
func (s *Slave) round(ctx context.Context, lost target, failover bool, b *daemon.Backoff, loud bool) roundResult {
	var r roundResult
	tried := make(map[string]bool)
	list := s.listTargets(lost.addr)
	if failover && len(list) > 0 && list[0].addr != lost.addr {
		names := make([]string, len(list))
		for i, t := range list {
			names[i] = t.name + " at " + t.addr
		}
		s.log.WithField("addr", lost.addr).Infof("failing over from master %s at %s: trying the masters it listed, then the registry: %s",
			lost.name, lost.addr, strings.Join(names, ", "))
	}
	for _, t := range list {
		if s.try(ctx, t, b, tried, &r) {
			return r
		}
	}
	if r.election || ctx.Err() != nil {
		return r
	}
	t, err := s.resolve(ctx, loud)
	switch {
	case err != nil:
		r.attempts = append(r.attempts, attempt{t: target{src: fromRegistry}, err: err})
	case tried[t.addr]:
		r.attempts = append(r.attempts, attempt{t: t, err: fmt.Errorf("the registry at %s names %s at %s, tried just now", t.registry, s.key, t.addr)})
	default:
		s.try(ctx, t, b, tried, &r)
	}
	return r
}

// try joins the master t and stays joined until the membership ends. A
// follower's answer that names the leader is followed at once, one hop and
// no registry. It reports whether the round is over: the slave left, ctx
// ended, or it joined and then lost the master.
func (s *Slave) try(ctx context.Context, t target, b *daemon.Backoff, tried map[string]bool, r *roundResult) bool {
	var joined target // the last master of this try that took the slave
	for hop := 0; ; hop++ {
		tried[t.addr] = true
		if t.src != fromRegistry {
			s.log.WithField("addr", t.addr).Debugf("trying master %s at %s", t.name, t.addr)
		}
		joins := s.joins.Load()
		err := s.connected(ctx, &t, b)
		if err == nil {
			r.left = true
			return true
		}
		if ctx.Err() != nil {
			return true
		}
		if s.joins.Load() != joins {
			joined = t
		}
		name, addr, named := rpcdef.LeaderOf(err)
		if named && hop == 0 {
			leader := rpcdef.MasterAddr{Name: name, Addr: addr}
			if bad := checkMaster(leader); bad != nil {
				err = fmt.Errorf("%w; not dialling the leader it names: %v", err, bad)
			} else if addr == t.addr {
				err = fmt.Errorf("%w; but that is its own address", err)
			} else {
				s.log.WithFields(logrus.Fields{"addr": addr, "follower": t.name, "leader": name}).
					Infof("master %s is a follower; the leader is %s at %s: joining there", t.name, name, addr)
				t = target{addr: addr, name: name, src: fromLeader, by: t.name}
				continue
			}
		}
		r.attempts = append(r.attempts, attempt{t: t, err: err})
		if errors.Is(err, rpcdef.ErrNotLeader) {
			r.election = true
		}
		if joined.addr != "" {
			r.lost = joined
			return true
		}
		// Logged in full if the whole round fails; here only in passing.
		s.log.WithField("addr", t.addr).Debugf("%s%v; trying the next", t.prefix(), err)
		return false
	}
}

// notMasterError says the server reached for ClusterService does not hold a
// master certificate.
type notMasterError struct {
	id  pki.Identity
	err error
}

func (e *notMasterError) Error() string { return e.err.Error() }
func (e *notMasterError) Unwrap() error { return e.err }

// expectMaster accepts only a master's certificate: a slave's stolen
// certificate must not be able to pose as the master.
func expectMaster(id pki.Identity) error {
	if err := pki.ExpectRole(pki.RoleMaster)(id); err != nil {
		return &notMasterError{id: id, err: err}
	}
	return nil
}

// connected joins the master t and stays joined through one ClusterClient
// until the connection cannot be restored or the master answers that it is
// not the leader (returned), or ctx ends (it leaves and returns nil). A
// master that asks for a new join gets one on the same connection. t.name is
// set from the master's certificate once it is dialled.
func (s *Slave) connected(ctx context.Context, t *target, b *daemon.Backoff) error {
	addr := t.addr
	kick := make(chan struct{}, 1)
	var peer atomic.Pointer[pki.Identity]
	defer func() {
		if id := peer.Load(); id != nil {
			t.name = id.Name
		}
	}()
	cl := rpcdef.NewClusterClient("master "+addr, s.dialMaster(addr, kick, &peer))
	defer cl.Close()
	// The watch outlives rejoins on this connection, and is stopped only
	// after Leave: cancelling a call closes the connection.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var watch sync.WaitGroup
	defer func() {
		stopWatch()
		watch.Wait()
	}()
	watching := false
	for ctx.Err() == nil {
		r, err := s.join(ctx, cl, addr)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			s.leave(cl)
			return nil
		}
		if !watching {
			watching = true
			watch.Go(func() { s.watchLoop(watchCtx, cl, kick) })
		}
		progressed, err := s.member(ctx, cl, r, kick)
		if progressed {
			b.Reset()
		}
		if ctx.Err() != nil {
			s.leave(cl)
			return nil
		}
		s.view.setJoined(false, "", "")
		if !rpcdef.MustRejoin(err) {
			return err
		}
		s.log.WithField("incarnation", s.inc).Warnf("%v: joining again", err)
		if !progressed {
			daemon.Sleep(ctx, b.Next())
		}
	}
	return ctx.Err()
}

// heartbeatCall marks the context of a heartbeat, for dialMaster.
type heartbeatCall struct{}

// dialMaster dials the master at addr over mutual TLS, accepting only a
// master's certificate of this cluster (whoever named the address: a
// registry, a masters list or a follower), and records its identity in peer.
// A call may find the connection broken and make a new
// one without failing (the rpcdef.Conn redials); the master saw the old one
// close and counts the slave suspect until it hears from it, so every new
// connection after the first that was not made by a heartbeat pokes the
// heartbeat loop.
func (s *Slave) dialMaster(addr string, kick chan<- struct{}, peer *atomic.Pointer[pki.Identity]) rpcdef.Dialer {
	dial := rpcdef.DialTLS(addr, s.cfg.Store.ClientConfig(func(id pki.Identity) error {
		if err := expectMaster(id); err != nil {
			return err
		}
		peer.Store(&id)
		return nil
	}))
	var dials atomic.Uint64
	return func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		if n := dials.Add(1); n > 1 {
			s.log.WithField("addr", addr).Debugf("new connection to the master (number %d)", n)
			if ctx.Value(heartbeatCall{}) == nil {
				poke(kick)
			}
		}
		return c, nil
	}
}

// join sends Join and takes the master's roll as the view.
func (s *Slave) join(ctx context.Context, cl *rpcdef.ClusterClient, addr string) (rpcdef.JoinReply, error) {
	// Not cut short when ctx ends: cancelling would close the connection,
	// and a join that got through is followed by a Leave.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CallTimeout.D())
	defer cancel()
	// Joining again, the view is kept if the master can bring it on by
	// events (the watch goes on from its version): after a failover, a
	// fleet does not fetch N rolls of N members.
	args := rpcdef.JoinArgs{Node: s.node, Incarnation: s.inc, Protocol: rpcdef.ProtocolVersion}
	if s.ready.Load() {
		args.Have = s.view.Version()
	}
	r, err := cl.Join(cctx, args)
	if err != nil {
		return r, fmt.Errorf("join %s at %s: %w", s.key, addr, err)
	}
	log := s.log.WithFields(logrus.Fields{"addr": addr, "master": r.Master, "incarnation": s.inc, "version": r.Version})
	s.joins.Add(1)
	first := s.ready.CompareAndSwap(false, true)
	if first {
		log.Infof("joined %s at %s as %s, incarnation %d", s.key, addr, s.node, s.inc)
	} else {
		log.Infof("joined %s again at %s as %s, incarnation %d", s.key, addr, s.node, s.inc)
	}
	s.masters.set(r.Masters, r.MastersVersion, "the master at "+addr, s.log)
	if r.Members != nil || args.Have == 0 {
		s.view.join(r.Version, r.Members)
	} else {
		log.Debugf("the view at version %d is kept: the watch brings it on to %d", args.Have, r.Version)
	}
	s.view.setJoined(true, r.Master, addr)
	if first {
		daemon.Ready(s.log, logrus.Fields{"addr": addr, "socket": s.cfg.Socket, "incarnation": s.inc})
	}
	return r, nil
}

// member heartbeats and reports until the master asks for a new join, the
// connection is lost for good, or ctx ends (nil). progressed says whether a
// heartbeat got through.
func (s *Slave) member(ctx context.Context, cl *rpcdef.ClusterClient, r rpcdef.JoinReply, kick chan struct{}) (progressed bool, err error) {
	hb, rep := r.HeartbeatInterval, r.ReportInterval
	if hb <= 0 {
		s.log.Warnf("the master gave no heartbeat interval; using %v", fallbackHeartbeat)
		hb = fallbackHeartbeat
	}
	if rep <= 0 {
		s.log.Warnf("the master gave no report interval; using %v", fallbackReport)
		rep = fallbackReport
	}
	s.log.WithFields(logrus.Fields{"heartbeat_interval": hb, "report_interval": rep}).Debug("intervals set by the master")
	var ok atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.heartbeatLoop(gctx, cl, hb, kick, &ok) })
	g.Go(func() error { return s.reportLoop(gctx, cl, rep, kick) })
	err = g.Wait()
	return ok.Load(), err
}

// heartbeatLoop sends a heartbeat every interval, and at once when kicked (a
// call on the connection failed). A heartbeat that fails on a broken
// connection is sent again at once on a new one: the master declares a
// slave whose connection closed dead after a short grace.
func (s *Slave) heartbeatLoop(ctx context.Context, cl *rpcdef.ClusterClient, every time.Duration, kick <-chan struct{}, ok *atomic.Bool) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-kick:
		}
		told, err := s.heartbeat(ctx, cl, every)
		if err != nil && rpcdef.NoAnswer(err) && ctx.Err() == nil {
			s.log.WithError(err).Warn("heartbeat failed; sending it again at once on a new connection")
			told, err = s.heartbeat(ctx, cl, every)
		}
		switch {
		case err == nil:
			ok.Store(true)
			if told > 0 && told != every {
				// The master has more slaves than its heartbeat budget, or
				// fewer again: it says how often it wants to hear from us.
				s.log.WithFields(logrus.Fields{"was": every, "now": told}).Infof("the master asks for a heartbeat every %v", told.Round(time.Millisecond))
				every = told
				t.Reset(every)
			}
		case ctx.Err() != nil && rpcdef.NoAnswer(err):
			return nil
		default:
			return fmt.Errorf("heartbeat to %s: %w", cl.Target(), err)
		}
	}
}

// heartbeat sends one heartbeat, and returns the interval the master wants
// (0 from a master that does not say). The call is not cut short when ctx
// ends: that would close the connection the master watches.
func (s *Slave) heartbeat(ctx context.Context, cl *rpcdef.ClusterClient, every time.Duration) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(context.WithValue(context.WithoutCancel(ctx), heartbeatCall{}, true), s.cfg.CallTimeout.D())
	defer cancel()
	r, err := cl.Heartbeat(cctx, rpcdef.HeartbeatArgs{Node: s.node, Incarnation: s.inc, Seq: s.seq.Add(1), MastersVersion: s.masters.version()})
	if err != nil {
		return 0, err
	}
	if r.Masters != nil {
		s.masters.set(r.Masters, r.MastersVersion, cl.Target(), s.log)
	}
	s.view.heartbeat(time.Now())
	if s.view.behind(r.Version, 2*every) {
		// The watch loop catches up; this is only worth a note.
		s.log.WithField("master_version", r.Version).Debugf("view at version %d is behind the master's", s.view.Version())
	}
	return r.Interval, nil
}

// reportLoop sends a resource report at once and then every interval. A
// report lost to the connection pokes the heartbeat, which decides about the
// connection.
func (s *Slave) reportLoop(ctx context.Context, cl *rpcdef.ClusterClient, every time.Duration, kick chan<- struct{}) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		err := s.report(ctx, cl)
		switch {
		case err == nil:
		case rpcdef.MustRejoin(err), errors.Is(err, rpcdef.ErrNotLeader):
			return fmt.Errorf("report to %s: %w", cl.Target(), err)
		case rpcdef.NoAnswer(err):
			poke(kick)
			if ctx.Err() == nil {
				s.log.WithError(err).Warn("report failed on the connection to the master")
			}
		default:
			s.log.WithError(err).Warn("report failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Slave) report(ctx context.Context, cl *rpcdef.ClusterClient) error {
	res, err := s.sampler.Sample()
	if err != nil {
		return fmt.Errorf("sample resources: %w", err)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CallTimeout.D())
	defer cancel()
	if _, err := cl.Report(cctx, rpcdef.ReportArgs{Node: s.node, Incarnation: s.inc, Resources: res}); err != nil {
		return err
	}
	s.view.report(res)
	return nil
}

// watchLoop keeps a Watch call pending at the master, so membership changes
// reach the view at once, until ctx ends. Failures poke the heartbeat, which
// decides about the connection and the join; the watch only tries again.
func (s *Slave) watchLoop(ctx context.Context, cl *rpcdef.ClusterClient, kick chan<- struct{}) {
	b := daemon.NewBackoff(daemon.InitialBackoff, s.cfg.MaxBackoff.D())
	for {
		after := s.view.Version()
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, rpcdef.WatchTimeout(s.cfg.CallTimeout.D()))
		r, err := cl.Watch(cctx, after, rpcdef.WatchWait)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d := b.Next()
			log := s.log.WithError(err).WithField("retry_in", d.Round(time.Millisecond))
			if rpcdef.NoAnswer(err) || rpcdef.MustRejoin(err) {
				poke(kick)
				log.Debug("watch failed")
			} else {
				log.Warn("watch failed")
			}
			if !daemon.Sleep(ctx, d) {
				return
			}
			continue
		}
		if r.Reset {
			s.view.reset(r.Version, r.Members)
		} else {
			s.view.apply(r.Events, r.Version)
		}
		if r.Reset || s.view.Version() != after {
			b.Reset()
			continue
		}
		if time.Since(start) < minWatchGap && !daemon.Sleep(ctx, b.Next()) {
			return
		}
	}
}

// leave tells the master this slave is going, with a short deadline.
func (s *Slave) leave(cl *rpcdef.ClusterClient) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout.D())
	defer cancel()
	err := cl.Leave(ctx, rpcdef.LeaveArgs{Node: s.node, Incarnation: s.inc, Reason: leaveReason})
	s.view.setJoined(false, "", "")
	if err != nil {
		s.log.WithError(err).Warn("could not leave the cluster gracefully; the master will declare this node dead instead")
		return
	}
	s.log.WithField("incarnation", s.inc).Info("left the cluster")
}

// logFailure logs why a round found no master to stay with, attempt by
// attempt, saying what to do where the slave cannot fix it alone. A run of
// identical failures is logged in full at first, then every 30th time.
func (s *Slave) logFailure(attempts []attempt, d time.Duration, q *repeats) {
	log := s.log.WithField("retry_in", d.Round(time.Millisecond))
	if len(attempts) == 1 && attempts[0].t.addr != "" {
		log = log.WithField("addr", attempts[0].t.addr)
	}
	level := logrus.WarnLevel
	msgs := make([]string, 0, len(attempts))
	for _, a := range attempts {
		l, msg := s.describe(a)
		level = min(level, l) // logrus: the more severe, the lower
		msgs = append(msgs, a.t.prefix()+msg)
	}
	msg := strings.Join(msgs, "; ")
	if msg == "" {
		msg = "no master to try"
	}
	if n, loud := q.seen(msg); !loud {
		level = logrus.DebugLevel
	} else if n > 1 {
		msg = fmt.Sprintf("%s (%d times in a row)", msg, n)
	}
	log.Logf(level, "%s; looking up the master again in %v", msg, d.Round(time.Millisecond))
}

// describe says why one attempt failed, and how loudly.
func (s *Slave) describe(a attempt) (logrus.Level, string) {
	err, addr := a.err, a.t.addr
	var nm *notMasterError
	switch {
	case errors.As(err, &nm) && a.t.src == fromRegistry:
		return logrus.ErrorLevel, fmt.Sprintf("%s resolved to %s, which is served by %s, not a master: refusing to join it (a slave checks the master's certificate so that a stolen certificate cannot pose as the master); find out what registered %s there (rpc-query services)", s.key, addr, nm.id, s.key)
	case errors.As(err, &nm):
		return logrus.ErrorLevel, fmt.Sprintf("%s is served by %s, not a master: refusing to join it (a slave checks the master's certificate so that a stolen certificate cannot pose as the master); check the address master %s advertises", addr, nm.id, a.t.name)
	case errors.Is(err, pki.ErrWrongCluster) && a.t.src == fromRegistry:
		return logrus.ErrorLevel, fmt.Sprintf("%v: the registry points at a server of another cluster; check the registry this slave uses", err)
	case errors.Is(err, pki.ErrWrongCluster):
		return logrus.ErrorLevel, fmt.Sprintf("%v: a master named a server of another cluster; check the address master %s advertises", err, a.t.name)
	case errors.Is(err, rpcdef.ErrPermission):
		return logrus.ErrorLevel, fmt.Sprintf("the master refused %s: %v; fix the master's configuration or this node's certificate (certgen issue --role slave --name %s); still trying", s.node, err, s.node)
	case errors.Is(err, rpcdef.ErrIncompatible):
		return logrus.ErrorLevel, fmt.Sprintf("%v: this slaved speaks protocol %d; upgrade the older side", err, rpcdef.ProtocolVersion)
	}
	return logrus.WarnLevel, err.Error()
}

// repeats counts a run of identical failure messages.
type repeats struct {
	last string
	n    int
}

// seen records msg and says how many times in a row it has been seen and
// whether to log it loudly: the first three times, then every 30th.
func (r *repeats) seen(msg string) (int, bool) {
	if msg == r.last {
		r.n++
	} else {
		r.last, r.n = msg, 1
	}
	return r.n, r.n <= 3 || r.n%30 == 0
}

// repeating says whether the last failure has been logged loudly enough.
func (r *repeats) repeating() bool { return r.n >= 3 }

// reset forgets the run, after a success.
func (r *repeats) reset() { r.last, r.n = "", 0 }

// poke asks the heartbeat loop to send a heartbeat now.
func poke(kick chan<- struct{}) {
	select {
	case kick <- struct{}{}:
	default:
	}
}

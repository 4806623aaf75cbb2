package masterd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/masterd/raftgroup"
	"github.com/muster-lab/muster/rpcdef"
)

// The masters are one raft group (masterd/raftgroup); a single master is a
// group of one, so there is one code path. The leader judges and serves
// slaves; its events go through raft into every master's Roll, and
// followers serve Members and Watch from theirs. See docs/PROTOCOL.md,
// "Several masters".

// FailoverGrace is how long a new leader gives every member that was up to
// be heard from again before it may be declared dead: the slaves must
// notice their master is gone (at once for a crash, whose sockets the
// kernel closes; a call timeout for a host that vanished), find the new
// leader (their masters list, a redirect), and join again, all N of them,
// at the rate the new leader admits joins. So
//
//	grace = max_dead + reconnect + N / joinRate
//
// with reconnect = 2 s (a call timeout of 2 heartbeat intervals, a
// backoff's first steps) and joinRate = 500 joins a second (a cold join
// of 10,000 on two cores takes 15 s, docs/BENCHMARKS.md). For 3 slaves at
// 1 s heartbeats it is 7 s, for 1,000 9 s, for 10,000 27 s. A member that
// died during the failover is dead that long after the new leader took
// over: failover costs detection time, never a false death
// (kubernetes#32510). raft.failover_grace sets it instead.
func FailoverGrace(maxDead time.Duration, members int) time.Duration {
	const reconnect, joinRate = 2 * time.Second, 500
	return maxDead + reconnect + time.Duration(members)*time.Second/joinRate
}

// mastersList is the masters slaves are told, leader first.
type mastersList struct {
	list    []rpcdef.MasterAddr
	version uint64
}

// group is the Server's part in the raft group.
type group struct {
	g        *raftgroup.Group
	roll     *Roll
	self     string // this master's name, its raft server ID
	proposer atomic.Pointer[proposer]
	// leaderClient dials the leader's ClusterService, for Announce.
	leaderMu     sync.Mutex
	leaderClient *rpcdef.ClusterClient
	leaderAddr   string
}

// startGroup opens this master's raft state under state_dir/raft and
// starts raft.
func startGroup(cfg *conf.Master, roll *Roll, s *Server) (*group, error) {
	peers := make([]raftgroup.Peer, 0, len(cfg.Raft.Peers))
	for _, p := range cfg.Raft.Peers {
		peer, err := raftgroup.ParsePeer(p)
		if err != nil {
			return nil, err
		}
		peers = append(peers, peer)
	}
	self := cfg.Store.Identity().Name
	hb := cfg.Raft.HeartbeatTimeout.D() // 0: raftgroup's default for each
	g, err := raftgroup.New(raftgroup.Config{
		ID: self, Dir: filepath.Join(cfg.StateDir, "raft"), Listen: cfg.Raft.Listen, Advertise: cfg.Raft.Advertise,
		Peers: peers, Join: cfg.Raft.Join, Store: cfg.Store, FSM: roll, Logger: s.log.WithField("raft", self),
		// One timeout for all three: the lease as long as raft allows.
		HeartbeatTimeout: hb, ElectionTimeout: hb, LeaderLeaseTimeout: hb,
	})
	if err != nil {
		return nil, fmt.Errorf("raft: %w", err)
	}
	return &group{g: g, roll: roll, self: self}, nil
}

// leaderOnly turns a follower's refusal into the redirect slaves follow.
func (s *Server) leaderOnly(err error) error {
	if errors.Is(err, errFollower) {
		return s.notLeader()
	}
	return err
}

// notLeader names the leader and its ClusterService address, if known.
func (s *Server) notLeader() error {
	id, _ := s.group.g.Leader()
	if id == s.group.self {
		id = "" // leader in raft, not serving yet (or no longer): retry
	}
	return rpcdef.NotLeader(id, s.group.roll.MasterAddr(id))
}

// committed waits for an admin's change to be replicated before answering.
func (s *Server) committed(err error) error {
	if err != nil {
		return s.leaderOnly(err)
	}
	p := s.group.proposer.Load()
	if p == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.sync(ctx); err != nil {
		return rpcdef.Errorf(rpcdef.CodeUnavailable, "%v", err)
	}
	return nil
}

// lead follows raft's leadership until ctx ends: on gaining it, it
// establishes this master as the leader under a context of the term; on
// losing it, it stops judging at once, then ends the term's work.
func (s *Server) lead(ctx context.Context) {
	stop := func() {}
	var term sync.WaitGroup
	defer func() { s.ms.Follow(); stop(); term.Wait() }()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-s.group.g.Leadership():
			s.ms.Follow() // first: no verdict of a deposed leader
			s.group.proposer.Store(nil)
			stop()
			term.Wait()
			if !leader {
				id, _ := s.group.g.Leader()
				s.log.WithField("leader", id).Warn("this master is no longer the leader: it stops judging and renewing, and redirects slaves to the leader")
				continue
			}
			tctx, cancel := context.WithCancel(ctx)
			stop = cancel
			term.Add(1)
			go func() { defer term.Done(); s.establish(tctx) }()
		}
	}
}

// establish makes this master the leader of its term, as Consul's and
// Nomad's leader loops do: a Barrier first, so that it acts on everything
// committed; then the judging, then the registries. It returns when the
// term's context ends.
func (s *Server) establish(ctx context.Context) {
	term := s.group.g.Raft().CurrentTerm()
	log := s.log.WithField("term", term)
	b := daemon.NewBackoff(50*time.Millisecond, time.Second)
	for {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.group.g.Barrier(bctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		log.WithError(err).Warn("raft barrier failed; retrying")
		if !daemon.Sleep(ctx, b.Next()) {
			return
		}
	}
	apply := func(ctx context.Context, cmd []byte) error {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := s.group.g.Apply(actx, cmd)
		return err
	}
	if err := s.importRoster(ctx, apply); err != nil {
		log.WithError(err).Error("import the roster of an older version")
	}
	if s.group.roll.MasterAddr(s.group.self) != s.advertise {
		cmd, _ := encode(cmdMaster, masterCmd{Name: s.group.self, Addr: s.advertise})
		if err := apply(ctx, cmd); err != nil {
			log.WithError(err).Warn("record this master's address in the group")
		}
	}
	p := newProposer(apply, log)
	go p.run(ctx)
	grace := s.cfg.Raft.FailoverGrace.D()
	if grace == 0 {
		grace = FailoverGrace(s.ms.t.Detector.MaxDead, s.group.roll.Len())
	}
	n := s.ms.Lead(grace, p.add)
	s.group.proposer.Store(p)
	s.refreshMasters()
	log.Infof("this master leads the group in term %d: %d members; those that were up are unknown until they join again, and dead if not within %v",
		term, n, grace.Round(time.Millisecond))
	s.keepLeases(ctx, term)
}

// importRoster imports an older version's roster.json into an empty roll,
// once: the file is renamed roster.json.imported after.
func (s *Server) importRoster(ctx context.Context, apply func(context.Context, []byte) error) error {
	data, err := os.ReadFile(s.roster)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !s.group.roll.Empty() {
		s.log.Warnf("%s is left alone: the group's roll is not empty (move it aside to silence this)", s.roster)
		return nil
	}
	im, err := decodeRoster(data)
	if err != nil {
		return fmt.Errorf("%s: %w (move it aside to start with an empty roll)", s.roster, err)
	}
	cmd, err := encode(cmdImport, im)
	if err != nil {
		return err
	}
	if err := apply(ctx, cmd); err != nil {
		return err
	}
	s.log.Infof("imported %d members from %s of an older version", len(im.Members), s.roster)
	return os.Rename(s.roster, s.roster+".imported")
}

// follow runs on every master: it keeps the masters list fresh and, on a
// follower, announces this master's address to the leader until the roll
// has it, and says ready once it knows its leader.
func (s *Server) follow(ctx context.Context) {
	daemon.Every(ctx, 500*time.Millisecond, func(time.Time) {
		s.refreshMasters()
		if s.ms.Leading() {
			return
		}
		id, _ := s.group.g.Leader()
		if id == "" || id == s.group.self {
			return
		}
		if s.group.roll.MasterAddr(s.group.self) != s.advertise {
			s.announceTo(ctx, id)
			return
		}
		s.ready.Do(func() { s.logReady("follower") })
	})
}

// announceTo tells the leader this master's address.
func (s *Server) announceTo(ctx context.Context, leader string) {
	addr := s.group.roll.MasterAddr(leader)
	if addr == "" {
		return // the leader records its own first
	}
	s.group.leaderMu.Lock()
	if s.group.leaderAddr != addr {
		if s.group.leaderClient != nil {
			s.group.leaderClient.Close()
		}
		s.group.leaderClient = rpcdef.NewClusterClient("master "+leader+" at "+addr,
			rpcdef.DialTLS(addr, s.cfg.Store.ClientConfig(pki.ExpectRole(pki.RoleMaster))))
		s.group.leaderAddr = addr
	}
	c := s.group.leaderClient
	s.group.leaderMu.Unlock()
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.Announce(actx, rpcdef.AnnounceArgs{Name: s.group.self, Addr: s.advertise}); err != nil {
		s.log.WithError(err).Debug("announce this master's address to the leader")
	}
}

// announce records a master's ClusterService address (on the leader).
func (s *Server) announce(name, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil || len(addr) > 255 {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "address %q: want HOST:PORT", clip(addr))
	}
	if !s.ms.Leading() {
		return s.notLeader()
	}
	if !s.inGroup(name) {
		return rpcdef.Errorf(rpcdef.CodePermission, "%s is not a server of the group: add it first (rpc-query masters add)", name)
	}
	if s.group.roll.MasterAddr(name) == addr {
		return nil
	}
	return s.applyMaster(name, addr)
}

func (s *Server) applyMaster(name, addr string) error {
	cmd, err := encode(cmdMaster, masterCmd{Name: name, Addr: addr})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.group.g.Apply(ctx, cmd); err != nil {
		return s.raftError(err)
	}
	s.refreshMasters()
	return nil
}

// raftError is a raft failure as a caller sees it.
func (s *Server) raftError(err error) error {
	var nl *raftgroup.NotLeaderError
	if errors.As(err, &nl) {
		return s.notLeader()
	}
	return rpcdef.Errorf(rpcdef.CodeUnavailable, "%v", err)
}

func (s *Server) inGroup(name string) bool {
	for _, sv := range s.group.g.Status().Servers {
		if sv.ID == name {
			return true
		}
	}
	return false
}

// addMaster adds a voter (on the leader).
func (s *Server) addMaster(name, raftAddr string) error {
	if err := pki.ValidName(name); err != nil {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "master name: %v", err)
	}
	if _, _, err := net.SplitHostPort(raftAddr); err != nil || len(raftAddr) > 255 {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "raft address %q: want HOST:PORT", clip(raftAddr))
	}
	if !s.ms.Leading() {
		return s.notLeader()
	}
	if st := s.group.g.Status(); len(st.Servers) >= conf.MaxPeers {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "the group has %d masters already, the most it may have", len(st.Servers))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.group.g.AddVoter(ctx, name, raftAddr); err != nil {
		return s.raftError(err)
	}
	s.log.Infof("master %s at %s added to the group", name, raftAddr)
	return nil
}

// removeMaster removes a server (on the leader).
func (s *Server) removeMaster(name string) error {
	if err := pki.ValidName(name); err != nil {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "master name: %v", err)
	}
	if !s.ms.Leading() {
		return s.notLeader()
	}
	if !s.inGroup(name) {
		return rpcdef.Errorf(rpcdef.CodeNotFound, "no master %s in the group", name)
	}
	if name == s.group.self {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "%s is the leader: stop it (SIGTERM hands leadership over) and remove it from the new leader", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.group.g.RemoveServer(ctx, name); err != nil {
		return s.raftError(err)
	}
	if err := s.applyMaster(name, ""); err != nil {
		s.log.WithError(err).Warnf("forget master %s's address", name)
	}
	s.log.Infof("master %s removed from the group", name)
	return nil
}

// refreshMasters recomputes the masters list slaves are told.
func (s *Server) refreshMasters() {
	st := s.group.g.Status()
	names := make([]string, 0, len(st.Servers))
	for _, sv := range st.Servers {
		names = append(names, sv.ID)
	}
	list, v := s.group.roll.Masters(st.LeaderID, names)
	if old := s.masters.Load(); old == nil || old.version != v {
		s.masters.Store(&mastersList{list: list, version: v})
	}
}

// Status is this master's state in the group.
func (s *Server) Status() rpcdef.MasterStatus {
	st := s.group.g.Status()
	out := rpcdef.MasterStatus{
		Name: s.group.self, Addr: s.advertise, RaftAddr: st.Addr, State: st.State, Term: st.Term,
		Leader: st.LeaderID, LastContact: st.LastContact, AppliedIndex: st.AppliedIndex, CommitIndex: st.CommitIndex,
		Version: s.group.roll.Version(),
	}
	for _, sv := range st.Servers {
		out.Servers = append(out.Servers, rpcdef.MasterServer{Name: sv.ID, RaftAddr: sv.Addr, Addr: s.group.roll.MasterAddr(sv.ID), Voter: sv.Voter})
	}
	return out
}

// handOver, on SIGTERM, passes leadership to a follower before this master
// exits, so that the cluster does not wait out an election timeout.
func (s *Server) handOver(ctx context.Context) {
	if !s.group.g.IsLeader() || len(s.group.g.Status().Servers) < 2 {
		return
	}
	if err := s.group.g.TransferLeadership(ctx); err != nil {
		s.log.WithError(err).Warn("hand leadership over before exiting")
		return
	}
	id, _ := s.group.g.Leader()
	s.log.WithField("leader", id).Infof("leadership handed over to %s", id)
}

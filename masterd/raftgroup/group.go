package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/sirupsen/logrus"
	"go.etcd.io/bbolt"

	"github.com/muster-lab/muster/internal/pki"
)

// Default timings, for masters on one LAN (see the package comment).
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
	DefaultCommitTimeout      = 50 * time.Millisecond
	DefaultTransportTimeout   = 5 * time.Second
	DefaultSnapshotInterval   = 120 * time.Second
	DefaultSnapshotThreshold  = 8192
	DefaultTrailingLogs       = 10240
	// SnapshotsRetained is how many snapshots the snapshot store keeps.
	SnapshotsRetained = 2
)

// Peer is one server of the group: its ID is the name in its master
// certificate, and Addr is its raft address.
type Peer struct {
	ID   string
	Addr string
}

func (p Peer) String() string { return p.ID + "=" + p.Addr }

// ParsePeer reads a peer written as "ID=HOST:PORT", as configs write them.
func ParsePeer(s string) (Peer, error) {
	id, addr, ok := strings.Cut(s, "=")
	if !ok || id == "" || addr == "" {
		return Peer{}, fmt.Errorf("raft peer %q: want NAME=HOST:PORT, such as m1=10.0.0.1:7000", s)
	}
	return Peer{ID: id, Addr: addr}, nil
}

// Config describes one server of a raft group.
type Config struct {
	// ID is this server's ID: the name in its master certificate.
	ID string
	// Dir holds the raft log, the stable store (raft.db) and the snapshots.
	Dir string
	// Listen is the raft address to bind, used when Stream is nil.
	Listen string
	// Advertise is the address the other masters dial, used when Stream is
	// nil; empty: this server's address in Peers, or else the bound one.
	Advertise string
	// Stream, if not nil, is a stream layer already bound (tests bind every
	// server's first, to learn the addresses the peers list needs). The
	// group owns it from then on and closes it on Shutdown.
	Stream *StreamLayer
	// Peers is the group bootstrapped at the first start, this server
	// included. Empty: a group of one, this server alone. Once the
	// directory holds raft state, membership comes from the log instead and
	// Peers only helps dial servers the log does not name yet.
	Peers []Peer
	// Join, at the first start, skips the bootstrap: this server waits for
	// the leader to add it (AddVoter). A server joining a running group
	// must not bootstrap, or its first log entry would contradict the
	// group's.
	Join bool
	// Store holds this master's certificate, key, CAs and revocation list.
	Store *pki.Store
	// FSM is the replicated state machine.
	FSM raft.FSM
	// Logger receives this package's lines and raft's (see hclogAdapter).
	Logger logrus.FieldLogger

	// Timings; zero means the default above. raft.ValidateConfig's rules
	// apply: LeaderLeaseTimeout <= HeartbeatTimeout <= ElectionTimeout.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// TransportTimeout bounds a dial and the I/O of one raft RPC.
	TransportTimeout time.Duration
	// HandshakeTimeout bounds an incoming TLS handshake when Stream is nil.
	HandshakeTimeout time.Duration

	// Snapshots: one is taken every SnapshotInterval (jittered) if at
	// least SnapshotThreshold entries were written since the last one,
	// and TrailingLogs entries are kept after it for slow followers.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
}

func (c *Config) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	set(&c.ElectionTimeout, DefaultElectionTimeout)
	set(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	set(&c.CommitTimeout, DefaultCommitTimeout)
	set(&c.TransportTimeout, DefaultTransportTimeout)
	set(&c.SnapshotInterval, DefaultSnapshotInterval)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
}

// validate checks what raft does not: names, the peers list, and that the
// certificate is this server's.
func (c *Config) validate() error {
	if err := pki.ValidName(c.ID); err != nil {
		return fmt.Errorf("raft server ID: %w", err)
	}
	if c.Dir == "" {
		return errors.New("raft: no state directory given")
	}
	if c.Store == nil {
		return errors.New("raft: no certificate store given")
	}
	if c.FSM == nil {
		return errors.New("raft: no FSM given")
	}
	if c.Logger == nil {
		return errors.New("raft: no logger given")
	}
	if c.Stream == nil && c.Listen == "" {
		return errors.New("raft: no listen address given: set the raft listen address, such as 10.0.0.1:7000")
	}
	if id := c.Store.Identity(); id.Role != pki.RoleMaster || id.Name != c.ID {
		return fmt.Errorf("raft server ID is %s but the certificate is %s: the other masters check that the name in the certificate is the ID; issue a master certificate named %s or fix the ID", c.ID, id, c.ID)
	}
	ids := map[string]bool{}
	addrs := map[string]string{}
	self := false
	for _, p := range c.Peers {
		if err := pki.ValidName(p.ID); err != nil {
			return fmt.Errorf("raft peer %s: ID: %w", p, err)
		}
		if p.Addr == "" {
			return fmt.Errorf("raft peer %s has no address: want NAME=HOST:PORT", p.ID)
		}
		if ids[p.ID] {
			return fmt.Errorf("raft peer %s is listed twice", p.ID)
		}
		if other, ok := addrs[p.Addr]; ok {
			return fmt.Errorf("raft peers %s and %s have the same address %s", other, p.ID, p.Addr)
		}
		ids[p.ID], addrs[p.Addr] = true, p.ID
		self = self || p.ID == c.ID
	}
	if len(c.Peers) > 0 && !self {
		return fmt.Errorf("raft peers %v do not include this server, %s: list every server of the group, this one too", c.Peers, c.ID)
	}
	return nil
}

// Group is this server's member of a raft group.
type Group struct {
	cfg    Config
	log    logrus.FieldLogger
	raft   atomic.Pointer[raft.Raft]
	stream *StreamLayer
	trans  *raft.NetworkTransport
	store  *raftboltdb.BoltStore

	peers    map[raft.ServerAddress]raft.ServerID // from Config.Peers and AddVoter
	peersMu  sync.Mutex
	notify   chan bool // raft's Config.NotifyCh
	leaderCh chan bool // Leadership's
	obs      chan raft.Observation
	observer *raft.Observer

	failMu  sync.Mutex
	failing map[raft.ServerID]time.Time // on the leader: followers not answering, since when

	done     chan struct{}
	wg       sync.WaitGroup
	shutdown sync.Once
	err      error
}

// New opens (or creates) the state in cfg.Dir, binds the raft port unless
// cfg.Stream is given, and starts raft. At the first start, with no state
// in the directory, it bootstraps the group cfg.Peers names; a group of
// one elects itself at once.
func New(cfg Config) (g *Group, err error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		if cfg.Stream != nil {
			cfg.Stream.Close()
		}
		return nil, err
	}
	g = &Group{
		cfg: cfg, log: cfg.Logger, stream: cfg.Stream,
		peers:    map[raft.ServerAddress]raft.ServerID{},
		notify:   make(chan bool, 16),
		leaderCh: make(chan bool),
		obs:      make(chan raft.Observation, 64),
		failing:  map[raft.ServerID]time.Time{},
		done:     make(chan struct{}),
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for _, c := range slices.Backward(closers) {
				c()
			}
		}
	}()
	if g.stream == nil {
		adv := cfg.Advertise
		if adv == "" {
			for _, p := range cfg.Peers {
				if p.ID == cfg.ID {
					adv = p.Addr
				}
			}
		}
		g.stream, err = NewStreamLayer(StreamConfig{Listen: cfg.Listen, Advertise: adv, Store: cfg.Store,
			Logger: cfg.Logger, HandshakeTimeout: cfg.HandshakeTimeout})
		if err != nil {
			return nil, err
		}
	}
	closers = append(closers, g.stream.Close)
	local := raft.ServerAddress(g.stream.Addr().String())
	for _, p := range cfg.Peers {
		if p.ID == cfg.ID && raft.ServerAddress(p.Addr) != local {
			return nil, fmt.Errorf("raft peers say %s is at %s, but it listens at %s: make them agree (or set the advertise address)", p.ID, p.Addr, local)
		}
		g.peers[raft.ServerAddress(p.Addr)] = raft.ServerID(p.ID)
	}
	g.stream.SetResolver(g.resolve)

	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft state directory: %w", err)
	}
	dbPath := filepath.Join(cfg.Dir, "raft.db")
	g.store, err = raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("raft store %s is locked by another process: is another masterd running with this state directory?", dbPath)
		}
		return nil, fmt.Errorf("raft store %s: %w", dbPath, err)
	}
	closers = append(closers, g.store.Close)
	logs, err := raft.NewLogCache(512, g.store)
	if err != nil {
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, SnapshotsRetained, newHCLog(cfg.Logger, "raft-snapshot"))
	if err != nil {
		return nil, fmt.Errorf("raft snapshot store in %s: %w", cfg.Dir, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NotifyCh = g.notify
	rc.Logger = newHCLog(cfg.Logger, "raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft timings: %w", err)
	}

	existing, err := raft.HasExistingState(logs, g.store, snaps)
	if err != nil {
		return nil, fmt.Errorf("raft state in %s: %w", cfg.Dir, err)
	}

	g.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  g.stream,
		MaxPool: 3,
		Timeout: cfg.TransportTimeout,
		Logger:  newHCLog(cfg.Logger, "raft-net"),
	})
	closers = append(closers, g.trans.Close)

	r, err := raft.NewRaft(rc, cfg.FSM, logs, g.store, snaps, g.trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	g.raft.Store(r)
	closers = append(closers, func() error { return r.Shutdown().Error() })
	g.observer = raft.NewObserver(g.obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(g.observer)

	if !existing && !cfg.Join {
		servers := []raft.Server{{ID: rc.LocalID, Address: local, Suffrage: raft.Voter}}
		if len(cfg.Peers) > 0 {
			servers = servers[:0]
			for _, p := range cfg.Peers {
				servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
			}
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			return nil, fmt.Errorf("bootstrap raft group: %w", err)
		}
		g.log.WithField("servers", len(servers)).Infof("raft group bootstrapped in %s", cfg.Dir)
	} else if existing {
		g.log.Infof("raft state found in %s: membership comes from the log, the configured peers are not bootstrapped again", cfg.Dir)
	}
	g.wg.Add(1)
	go g.forward()
	return g, nil
}

// resolve says which server an address belongs to: raft's latest
// configuration first, then the configured peers and those added since.
func (g *Group) resolve(addr raft.ServerAddress) (raft.ServerID, bool) {
	if r := g.raft.Load(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if s.Address == addr {
					return s.ID, true
				}
			}
		}
	}
	g.peersMu.Lock()
	defer g.peersMu.Unlock()
	id, ok := g.peers[addr]
	return id, ok
}

// forward reads raft's leadership notifications as they come, so raft never
// waits on this package's reader, and passes them on to Leadership. A
// reader that falls behind gets the transitions it missed with every
// lost-then-regained pair of them folded away except the last: it never
// sees two trues or two falses in a row, and never misses a loss of
// leadership that a later gain would hide.
func (g *Group) forward() {
	defer g.wg.Done()
	defer close(g.leaderCh)
	last := false // what the reader last got
	var queue []bool
	for {
		var out chan bool
		var next bool
		if len(queue) > 0 {
			out, next = g.leaderCh, queue[0]
		}
		select {
		case v := <-g.notify:
			g.failMu.Lock()
			clear(g.failing)
			g.failMu.Unlock()
			queue = push(queue, last, v)
		case out <- next:
			last = next
			queue = queue[1:]
		case o := <-g.obs:
			g.failMu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				if _, ok := g.failing[d.PeerID]; !ok {
					g.failing[d.PeerID] = d.LastContact
				}
			case raft.ResumedHeartbeatObservation:
				delete(g.failing, d.PeerID)
			}
			g.failMu.Unlock()
		case <-g.done:
			return
		}
	}
}

// push adds a leadership transition v to the queue of those the reader,
// who last got last, has yet to get. The queue alternates, starts with the
// opposite of last, and holds at most two: [x, !x, x] becomes [x], as the
// reader at !x needs only x.
func push(queue []bool, last, v bool) []bool {
	tail := last
	if len(queue) > 0 {
		tail = queue[len(queue)-1]
	}
	if v == tail {
		return queue
	}
	queue = append(queue, v)
	if len(queue) > 2 {
		queue = queue[2:]
	}
	return queue
}

// Leadership delivers true when this server becomes the leader and false
// when it stops being the leader. It has one reader. A true comes as soon
// as raft elects this server, before its log is known to be current: call
// Barrier before acting on the state, as Consul's and Nomad's leader loops
// do. The channel is closed by Shutdown (a receive then yields false).
func (g *Group) Leadership() <-chan bool { return g.leaderCh }

// Raft is the raft instance, for what this package does not wrap.
func (g *Group) Raft() *raft.Raft { return g.raft.Load() }

// ID is this server's ID.
func (g *Group) ID() string { return g.cfg.ID }

// Addr is this server's raft address, as the others dial it.
func (g *Group) Addr() string { return g.stream.Addr().String() }

// IsLeader says whether this server is the leader now. Guard every
// leader-only effect with it (or with a context cancelled on the false
// from Leadership): an old leader may not know yet that it was deposed.
func (g *Group) IsLeader() bool { return g.Raft().State() == raft.Leader }

// Leader is the current leader's ID and raft address, both empty when no
// leader is known.
func (g *Group) Leader() (id, addr string) {
	a, i := g.Raft().LeaderWithID()
	return string(i), string(a)
}

// Refused counts the raft connections refused since the start, both ways
// (for a metric: a steady rise is a misconfigured or revoked master, or
// someone knocking).
func (g *Group) Refused() uint64 { return g.stream.Refused() }

// CloseRevoked closes the raft connections of certificates the reloaded
// revocation list now names; call it after Store.Reload.
func (g *Group) CloseRevoked() int { return g.stream.CloseRevoked() }

// NotLeaderError is returned for a request only the leader can carry out.
// errors.Is(err, raft.ErrNotLeader) holds for it.
type NotLeaderError struct {
	LeaderID   string // empty when no leader is known
	LeaderAddr string // the leader's raft address
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the raft leader, and no leader is known now (an election may be under way): try again shortly"
	}
	return fmt.Sprintf("not the raft leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return raft.ErrNotLeader }

// explain turns raft's error for a request into what a caller can act on.
func (g *Group) explain(what string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		id, addr := g.Leader()
		return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("raft %s: %w: the entry may or may not be committed", what, err)
	}
	return fmt.Errorf("raft %s: %w", what, err)
}

// wait runs start on its own goroutine (raft's calls block until they are
// queued) and waits for its future or for ctx. Its errors say what failed.
func wait[F raft.Future](ctx context.Context, g *Group, what string, start func(timeout time.Duration) F) (F, error) {
	var zero F
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("raft %s: %w", what, err)
	}
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return zero, fmt.Errorf("raft %s: %w", what, context.DeadlineExceeded)
		}
	}
	done := make(chan F, 1)
	go func() {
		f := start(timeout)
		f.Error() // waits
		done <- f
	}()
	select {
	case f := <-done:
		if err := f.Error(); err != nil {
			return zero, g.explain(what, err)
		}
		return f, nil
	case <-ctx.Done():
		return zero, fmt.Errorf("raft %s: %w (it may still be carried out)", what, ctx.Err())
	}
}

// Apply commits cmd through the log and returns what the FSM's Apply
// returned for it; an error the FSM returned is returned as the error. On
// a follower it returns a *NotLeaderError. If ctx ends first, Apply
// returns ctx's error, and the entry may still be committed later.
func (g *Group) Apply(ctx context.Context, cmd []byte) (any, error) {
	r := g.Raft()
	f, err := wait(ctx, g, "apply", func(t time.Duration) raft.ApplyFuture { return r.Apply(cmd, t) })
	if err != nil {
		return nil, err
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// Barrier returns once every entry committed before it has been applied to
// this server's FSM. Only the leader can do it: a new leader calls it
// before it acts on the state.
func (g *Group) Barrier(ctx context.Context) error {
	r := g.Raft()
	_, err := wait(ctx, g, "barrier", func(t time.Duration) raft.Future { return r.Barrier(t) })
	return err
}

// TransferLeadership hands leadership to the most up-to-date follower and
// returns once it has it (SIGTERM on the leader does this before exiting).
func (g *Group) TransferLeadership(ctx context.Context) error {
	r := g.Raft()
	_, err := wait(ctx, g, "leadership transfer", func(time.Duration) raft.Future { return r.LeadershipTransfer() })
	return err
}

// AddVoter adds a server to the group, or changes its address; only the
// leader can. Start the new server first with Join set, so that it waits
// to be added instead of bootstrapping a group of its own.
func (g *Group) AddVoter(ctx context.Context, id, addr string) error {
	if err := pki.ValidName(id); err != nil {
		return fmt.Errorf("raft add voter: ID: %w", err)
	}
	if addr == "" {
		return fmt.Errorf("raft add voter %s: no address given", id)
	}
	g.peersMu.Lock()
	g.peers[raft.ServerAddress(addr)] = raft.ServerID(id)
	g.peersMu.Unlock()
	r := g.Raft()
	_, err := wait(ctx, g, "add voter "+id, func(t time.Duration) raft.IndexFuture {
		return r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
	return err
}

// RemoveServer removes a server from the group; only the leader can. A
// leader that removes itself shuts its raft down; a removed follower may
// never learn of it (the leader stops writing to it) and is to be stopped
// by whoever removed it.
func (g *Group) RemoveServer(ctx context.Context, id string) error {
	r := g.Raft()
	_, err := wait(ctx, g, "remove server "+id, func(t time.Duration) raft.IndexFuture {
		return r.RemoveServer(raft.ServerID(id), 0, t)
	})
	return err
}

// Status is what an operator wants to know of one server's raft.
type Status struct {
	ID    string
	Addr  string
	State string // "leader", "follower", "candidate" or "shutdown"
	Term  uint64
	// LeaderID and LeaderAddr are empty when no leader is known.
	LeaderID   string
	LeaderAddr string
	// LastContact is when a follower last heard from the leader; zero on
	// the leader, and before any contact.
	LastContact  time.Time
	AppliedIndex uint64
	CommitIndex  uint64
	LastIndex    uint64
	Servers      []ServerStatus
}

// ServerStatus is one server of the group's configuration.
type ServerStatus struct {
	ID     string
	Addr   string
	Voter  bool
	Leader bool
	Self   bool
	// FailingSince is known on the leader only: when a follower that is
	// not answering heartbeats last answered one. Zero if it answers.
	FailingSince time.Time
}

// Status reads this server's raft state. It never blocks on raft's loop.
func (g *Group) Status() Status {
	r := g.Raft()
	leaderID, leaderAddr := g.Leader()
	st := Status{
		ID:           g.cfg.ID,
		Addr:         g.Addr(),
		State:        strings.ToLower(r.State().String()),
		Term:         r.CurrentTerm(),
		LeaderID:     leaderID,
		LeaderAddr:   leaderAddr,
		AppliedIndex: r.AppliedIndex(),
		LastIndex:    r.LastIndex(),
	}
	if st.State != "leader" {
		st.LastContact = r.LastContact()
	}
	if v, err := strconv.ParseUint(r.Stats()["commit_index"], 10, 64); err == nil {
		st.CommitIndex = v
	}
	if f := r.GetConfiguration(); f.Error() == nil {
		g.failMu.Lock()
		for _, s := range f.Configuration().Servers {
			st.Servers = append(st.Servers, ServerStatus{
				ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter,
				Leader: string(s.ID) == leaderID, Self: string(s.ID) == g.cfg.ID,
				FailingSince: g.failing[s.ID],
			})
		}
		g.failMu.Unlock()
	}
	return st
}

// Shutdown stops raft, closes the raft port and the store. It is safe to
// call twice; the second call returns the first's error.
func (g *Group) Shutdown() error {
	g.shutdown.Do(func() {
		r := g.Raft()
		var errs []error
		if err := r.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		r.DeregisterObserver(g.observer)
		if err := g.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft transport: %w", err))
		}
		g.stream.Close()
		if err := g.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft store: %w", err))
		}
		close(g.done)
		g.wg.Wait()
		g.err = errors.Join(errs...)
	})
	return g.err
}

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/tlsrpc"
	"github.com/muster-lab/muster/rpcdef"
)

func TestSplitAddrs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  ", nil},
		{"127.0.0.1:7111", []string{"127.0.0.1:7111"}},
		{"a:1,b:2,c:3", []string{"a:1", "b:2", "c:3"}},
		{" a:1 , b:2 ", []string{"a:1", "b:2"}},
		{"a:1,,b:2", []string{"a:1", "", "b:2"}},
		{"a:1,", []string{"a:1", ""}},
	} {
		if got := splitAddrs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitAddrs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCandidates(t *testing.T) {
	for _, tc := range []struct {
		name           string
		list           []string
		fallback, lost string
		want           []string
	}{
		{"nothing known", nil, "", "", []string{}},
		{"one master restarting", nil, "m:1", "m:1", []string{"m:1"}},
		{"the list, the lost leader last", []string{"m1:1", "m2:2", "m3:3"}, "", "m1:1", []string{"m2:2", "m3:3", "m1:1"}},
		{"the registry after the list", []string{"m1:1", "m2:2"}, "m9:9", "m1:1", []string{"m2:2", "m9:9", "m1:1"}},
		{"the registry still lists the lost one", []string{"m1:1", "m2:2"}, "m1:1", "m1:1", []string{"m2:2", "m1:1"}},
		{"the registry names a listed one", []string{"m1:1", "m2:2", "m3:3"}, "m3:3", "m2:2", []string{"m1:1", "m3:3", "m2:2"}},
		{"nothing lost", []string{"m1:1", "m2:2"}, "m2:2", "", []string{"m1:1", "m2:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := candidates(tc.list, tc.fallback, tc.lost); !slices.Equal(got, tc.want) {
				t.Errorf("candidates(%q, %q, %q) = %q, want %q", tc.list, tc.fallback, tc.lost, got, tc.want)
			}
		})
	}
}

func TestMasterList(t *testing.T) {
	c := DefaultConfig()
	var m masterList
	if m.version() != 0 || len(m.list()) != 0 || m.String() != "" {
		t.Fatalf("empty list: version %d, %q", m.version(), m.list())
	}
	l := []rpcdef.MasterAddr{{Name: "m2", Addr: "127.0.0.1:7002"}, {Name: "m1", Addr: "127.0.0.1:7001"}}
	if changed, bad := m.set(l, 4, c.checkAddr); !changed || len(bad) > 0 {
		t.Fatalf("set = %v, %q; want changed, nothing left out", changed, bad)
	}
	if m.version() != 4 || !slices.Equal(m.list(), []string{"127.0.0.1:7002", "127.0.0.1:7001"}) {
		t.Errorf("list %q version %d", m.list(), m.version())
	}
	if got, want := m.String(), "m2 at 127.0.0.1:7002 (leader), m1 at 127.0.0.1:7001"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if changed, _ := m.set(slices.Clone(l), 4, c.checkAddr); changed {
		t.Error("the same list again is a change")
	}
	// A reply naming a master off this host, one twice, or garbage: those
	// entries are left out, the rest kept in order.
	bad := []rpcdef.MasterAddr{
		{Name: "m3", Addr: "127.0.0.1:7003"}, {Name: "far", Addr: "10.0.0.9:7112"},
		{Name: "m3again", Addr: "127.0.0.1:7003"}, {Name: "junk", Addr: "no port"}, {Name: "m1", Addr: "127.0.0.1:7001"},
	}
	changed, left := m.set(bad, 5, c.checkAddr)
	if !changed || len(left) != 3 || !slices.Equal(m.list(), []string{"127.0.0.1:7003", "127.0.0.1:7001"}) {
		t.Errorf("set(bad) = %v, left out %q; list %q", changed, left, m.list())
	}
	for i, want := range []string{"--allow-remote", "repeats an address", "want HOST:PORT"} {
		if i >= len(left) || !strings.Contains(left[i], want) {
			t.Errorf("left out %q: entry %d does not say %q", left, i, want)
		}
	}
	// At most MaxMasters.
	var many []rpcdef.MasterAddr
	for i := range rpcdef.MaxMasters + 3 {
		many = append(many, rpcdef.MasterAddr{Name: fmt.Sprintf("m%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", 7000+i)})
	}
	if _, left := m.set(many, 6, c.checkAddr); len(m.list()) != rpcdef.MaxMasters || len(left) != 1 || !strings.Contains(left[0], "3 entries past the first 9") {
		t.Errorf("set(%d masters) kept %d, left out %q", len(many), len(m.list()), left)
	}
}

// fakeClock moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestFinder(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Registry = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	var mu sync.Mutex
	var asked []string
	answers := map[string]func() (rpcdef.Entry, error){}
	f := newFinder(cfg, "lab", nil)
	f.now = clock.now
	f.lookup = func(_ context.Context, reg string) (rpcdef.Entry, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, reg)
		if a := answers[reg]; a != nil {
			return a()
		}
		return rpcdef.Entry{}, fmt.Errorf("dial tcp %s: connection refused", reg)
	}
	ask := func(want string, wantAsked ...string) error {
		t.Helper()
		mu.Lock()
		asked = nil
		mu.Unlock()
		addr, err := f.master(context.Background())
		mu.Lock()
		defer mu.Unlock()
		if addr != want || !slices.Equal(asked, wantAsked) {
			t.Errorf("master() = %q, %v after asking %q; want %q after asking %q", addr, err, asked, want, wantAsked)
		}
		return err
	}
	found := func(addr string) func() (rpcdef.Entry, error) {
		return func() (rpcdef.Entry, error) {
			return rpcdef.Entry{Service: rpcdef.Service{Addr: addr, Epoch: 3}}, nil
		}
	}

	f.next = 1 // the random start
	answers["127.0.0.1:3"] = found("127.0.0.1:7112")
	ask("127.0.0.1:7112", "127.0.0.1:2", "127.0.0.1:3")
	// Within registryLookupFresh every slave gets that answer, none asks.
	clock.advance(registryLookupFresh / 2)
	ask("127.0.0.1:7112")
	// Then the one that answered is asked first.
	clock.advance(registryLookupFresh)
	answers["127.0.0.1:3"] = found("127.0.0.1:7113")
	ask("127.0.0.1:7113", "127.0.0.1:3")

	// None answers: every one was asked, each named in the error, and the
	// failure too is shared for a while.
	clock.advance(registryLookupFresh)
	answers["127.0.0.1:3"] = func() (rpcdef.Entry, error) {
		return rpcdef.Entry{}, rpcdef.Errorf(rpcdef.CodeNotFound, "ClusterService/lab is not registered")
	}
	err := ask("", "127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2")
	for _, want := range []string{"no registry of 3 answered", "127.0.0.1:1", "127.0.0.1:2", "is masterd running?"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	if !errors.Is(err, rpcdef.ErrNotFound) {
		t.Errorf("error %v is not ErrNotFound", err)
	}
	ask("")

	// A registry that lists the master off this host is not followed there.
	clock.advance(registryLookupFresh)
	answers["127.0.0.1:1"] = found("10.0.0.8:7112")
	if err := ask("", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"); err == nil || !strings.Contains(err.Error(), "--allow-remote") {
		t.Errorf("a remote master listed: %v", err)
	}

	// --master: no registry to ask.
	if _, err := newFinder(DefaultConfig(), "lab", nil).master(context.Background()); !errors.Is(err, errNoRegistry) {
		t.Errorf("a finder without registries: %v", err)
	}
}

// fakeMaster is a Cluster service on 127.0.0.1:0 that answers Join and
// Heartbeat as a leader, or, given a leader, as a follower.
type fakeMaster struct {
	name string
	srv  *tlsrpc.Server
	stop func()

	mu        sync.Mutex
	leader    *fakeMaster // nil: this one leads
	electing  bool        // a follower that knows no leader yet
	masters   []rpcdef.MasterAddr
	version   uint64
	notJoined int // heartbeats to refuse with CodeNotJoined
	joins     []rpcdef.JoinArgs
	beats     []rpcdef.HeartbeatArgs
}

func (m *fakeMaster) addr() string { return m.srv.Addr().String() }

// fakeCluster is the net/rpc receiver of a fakeMaster.
type fakeCluster struct{ m *fakeMaster }

func (c fakeCluster) Join(args *rpcdef.JoinArgs, reply *rpcdef.JoinReply) error {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.joins = append(m.joins, *args)
	switch {
	case m.electing:
		return rpcdef.NotLeader("", "")
	case m.leader != nil:
		return rpcdef.NotLeader(m.leader.name, m.leader.addr())
	}
	*reply = rpcdef.JoinReply{Version: 1, HeartbeatInterval: 100 * time.Millisecond, ReportInterval: time.Second,
		Masters: m.masters, MastersVersion: m.version}
	return nil
}

func (c fakeCluster) Heartbeat(args *rpcdef.HeartbeatArgs, reply *rpcdef.HeartbeatReply) error {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.beats = append(m.beats, *args)
	switch {
	case m.leader != nil:
		return rpcdef.NotLeader(m.leader.name, m.leader.addr())
	case m.notJoined > 0:
		m.notJoined--
		return rpcdef.Errorf(rpcdef.CodeNotJoined, "%s has not joined this master", args.Node)
	}
	*reply = rpcdef.HeartbeatReply{Version: 1, Interval: 100 * time.Millisecond}
	if args.MastersVersion != m.version {
		reply.Masters, reply.MastersVersion = m.masters, m.version
	}
	return nil
}

// set changes the fake under its lock.
func (m *fakeMaster) set(f func(m *fakeMaster)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m)
}

func (m *fakeMaster) calls() (joins []rpcdef.JoinArgs, beats []rpcdef.HeartbeatArgs) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.joins), slices.Clone(m.beats)
}

func startFakeMaster(t *testing.T, ca *pki.CA, name string) *fakeMaster {
	t.Helper()
	is, err := ca.Issue(pki.IssueRequest{Role: pki.RoleMaster, Name: name, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := pki.FromPEM(ca.CertPEM(), is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMaster{name: name}
	log := logrus.New()
	log.SetOutput(io.Discard)
	attach := func(srv *rpc.Server, _ tlsrpc.Peer) (func(), error) {
		return func() {}, srv.RegisterName(rpcdef.ClusterService, fakeCluster{m})
	}
	if m.srv, err = tlsrpc.New(ln, st.ServerConfig(), tlsrpc.Options{}, attach, log); err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.srv.Serve(ctx) }()
	var once sync.Once
	m.stop = func() {
		once.Do(func() {
			cancel()
			m.srv.Close()
			<-done
		})
	}
	t.Cleanup(m.stop)
	return m
}

// A simulated slave follows a follower's redirect in one hop, heartbeats
// with the masters version it holds, takes a new list from a heartbeat
// reply, and when its leader is gone tries the listed masters, the lost
// one last, and follows the redirect of the one that answers. A heartbeat
// refused as not joined makes it join again with the same incarnation.
func TestSimFollowsTheLeader(t *testing.T) {
	ca, err := pki.NewCA("lab", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m1, m2, m3 := startFakeMaster(t, ca, "m1"), startFakeMaster(t, ca, "m2"), startFakeMaster(t, ca, "m3")
	list := func(ms ...*fakeMaster) []rpcdef.MasterAddr {
		var out []rpcdef.MasterAddr
		for _, m := range ms {
			out = append(out, rpcdef.MasterAddr{Name: m.name, Addr: m.addr()})
		}
		return out
	}
	// m2 leads; m1 follows it; m3 is not in the group yet.
	m2.set(func(m *fakeMaster) { m.masters, m.version = list(m2, m1), 5 })
	m1.set(func(m *fakeMaster) { m.leader = m2 })

	cfg := DefaultConfig()
	cfg.Master = m1.addr() // as a registry that lists a follower would
	cfg.CallTimeout = 2 * time.Second
	log := logrus.New()
	log.SetOutput(io.Discard)
	r := &run{cfg: cfg, log: log, addr: cfg.Master, leader: cfg.Master, find: newFinder(cfg, "lab", nil), incarnation: 42, epoch: time.Now()}
	confs, err := issue(ca, []string{cfg.name(0)})
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(r, 0, confs[0])
	t.Cleanup(s.close)
	st := &r.stats
	counts := func(what string, redirects, failovers, rejoins, leaderChanges uint64) {
		t.Helper()
		if got := [4]uint64{st.redirects.Load(), st.failovers.Load(), st.rejoins.Load(), st.leaderChanges.Load()}; got != [4]uint64{redirects, failovers, rejoins, leaderChanges} {
			t.Errorf("%s: redirects, failovers, rejoins, leader changes = %v, want %v", what, got, [4]uint64{redirects, failovers, rejoins, leaderChanges})
		}
	}

	// The follower names the leader: one hop, and the join is taken there.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.join(ctx); err != nil {
		t.Fatalf("join: %v", err)
	}
	if s.master() != m2.addr() {
		t.Fatalf("joined at %s, want the leader m2 at %s", s.master(), m2.addr())
	}
	if got := r.masters.list(); !slices.Equal(got, []string{m2.addr(), m1.addr()}) || r.masters.version() != 5 {
		t.Errorf("masters %q version %d, want m2, m1 at version 5", got, r.masters.version())
	}
	counts("after the redirected join", 1, 0, 0, 1)

	// Heartbeats carry the version held; a reply with a new list replaces it.
	m2.set(func(m *fakeMaster) { m.masters, m.version = list(m2, m1, m3), 6 })
	if s.heartbeat() == 0 {
		t.Error("the heartbeat got no interval")
	}
	if _, beats := m2.calls(); len(beats) != 1 || beats[0].MastersVersion != 5 || beats[0].Incarnation != s.inc {
		t.Errorf("m2's heartbeats %+v, want one with masters version 5", beats)
	}
	if got := r.masters.list(); !slices.Equal(got, []string{m2.addr(), m1.addr(), m3.addr()}) || r.masters.version() != 6 {
		t.Errorf("masters after the heartbeat %q version %d, want m2, m1, m3 at 6", got, r.masters.version())
	}
	s.heartbeat()
	if _, beats := m2.calls(); len(beats) != 2 || beats[1].MastersVersion != 6 {
		t.Errorf("m2's heartbeats %+v, want the second with masters version 6", beats)
	}

	// m2 dies; m3 wins the election and m1 follows it. The slave tries m1
	// first (the list, the lost leader last), which names m3.
	m3.set(func(m *fakeMaster) { m.masters, m.version = list(m3, m1, m2), 7 })
	m1.set(func(m *fakeMaster) { m.leader = m3 })
	m2.stop()
	s.heartbeat()
	if s.master() != m3.addr() {
		t.Fatalf("after the leader died the slave is at %s, want m3 at %s", s.master(), m3.addr())
	}
	if !s.resync {
		t.Error("the heartbeat loop is not told to beat on from now")
	}
	if joins, _ := m3.calls(); len(joins) != 1 || joins[0].Incarnation != s.inc || joins[0].Node != s.name {
		t.Errorf("m3's joins %+v, want one of %s with incarnation %d", joins, s.name, s.inc)
	}
	if joins, _ := m1.calls(); len(joins) != 2 {
		t.Errorf("m1 saw %d joins, want 2: the first one's, and the failover's first try", len(joins))
	}
	if got := r.masters.list(); !slices.Equal(got, []string{m3.addr(), m1.addr(), m2.addr()}) {
		t.Errorf("masters after the failover %q", got)
	}
	counts("after the failover", 2, 1, 0, 2)

	// The new leader does not count the slave: it joins again, same
	// incarnation, and beats on.
	m3.set(func(m *fakeMaster) { m.notJoined = 1 })
	s.heartbeat()
	if joins, _ := m3.calls(); len(joins) != 2 || joins[1].Incarnation != s.inc {
		t.Errorf("m3's joins %+v, want a second with incarnation %d", joins, s.inc)
	}
	if s.heartbeat() == 0 {
		t.Error("no heartbeat answered after the rejoin")
	}
	counts("after the rejoin", 2, 1, 1, 2)

	// A heartbeat that reaches a follower (the leader moved without dying)
	// follows it to the leader and joins there.
	m3.set(func(m *fakeMaster) { m.leader = m1 })
	m1.set(func(m *fakeMaster) { m.leader, m.masters, m.version = nil, list(m1, m3), 8 })
	s.heartbeat()
	if s.master() != m1.addr() {
		t.Errorf("after a follower's redirect the slave is at %s, want m1 at %s", s.master(), m1.addr())
	}
	counts("after the heartbeat's redirect", 3, 1, 1, 3)
}

// During an election no master takes the join: the slave keeps trying,
// with backoff, until one does.
func TestSimFailoverWaitsOutAnElection(t *testing.T) {
	ca, err := pki.NewCA("lab", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m1, m2 := startFakeMaster(t, ca, "m1"), startFakeMaster(t, ca, "m2")
	m1.set(func(m *fakeMaster) { m.electing = true })
	cfg := DefaultConfig()
	cfg.Master = m2.addr()
	log := logrus.New()
	log.SetOutput(io.Discard)
	r := &run{cfg: cfg, log: log, addr: cfg.Master, leader: cfg.Master, find: newFinder(cfg, "lab", nil), incarnation: 42, epoch: time.Now()}
	r.masters.set([]rpcdef.MasterAddr{{Name: "m2", Addr: m2.addr()}, {Name: "m1", Addr: m1.addr()}}, 3, cfg.checkAddr)
	confs, err := issue(ca, []string{cfg.name(0)})
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(r, 0, confs[0])
	t.Cleanup(s.close)
	m2.stop()

	done := make(chan struct{})
	go func() { defer close(done); s.failover(m2.addr()) }()
	// m1 is asked again and again while it knows no leader.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if joins, _ := m1.calls(); len(joins) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("m1 was not asked twice during the election")
		}
		time.Sleep(5 * time.Millisecond)
	}
	m1.set(func(m *fakeMaster) { m.electing = false })
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the failover did not end once m1 led")
	}
	if s.master() != m1.addr() || r.stats.failovers.Load() != 1 {
		t.Errorf("the slave is at %s after %d failovers, want m1 at %s after 1", s.master(), r.stats.failovers.Load(), m1.addr())
	}
}

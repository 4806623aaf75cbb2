package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/waitfor"
)

// member is one server of a test group.
type member struct {
	id    string
	addr  string
	dir   string
	certs *node
	fsm   *logFSM
	g     *Group
	lead  *leadership
}

// leadership records what a Group's Leadership channel delivered.
type leadership struct {
	got  chan bool
	done chan struct{} // closed when the channel is
}

func watchLeadership(g *Group) *leadership {
	l := &leadership{got: make(chan bool, 64), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for v := range g.Leadership() {
			l.got <- v
		}
	}()
	return l
}

// next waits for the next value delivered; the channel's close counts as
// false, as it does for a reader of Leadership.
func (l *leadership) next(t *testing.T, within time.Duration) bool {
	t.Helper()
	select {
	case v := <-l.got:
		return v
	case <-l.done:
		select {
		case v := <-l.got:
			return v
		default:
			return false
		}
	case <-time.After(within):
		t.Fatalf("no leadership change within %v", within)
	}
	return false
}

// testGroup makes n masters of one cluster, binds their stream layers,
// then starts the group with every one's address in the peers list.
func testGroup(t *testing.T, n int) []*member {
	t.Helper()
	ca := newCA(t, "lab")
	var ms []*member
	var peers []Peer
	var streams []*StreamLayer
	for i := range n {
		id := fmt.Sprintf("m%d", i+1)
		certs := newNode(t, ca, pki.RoleMaster, id)
		sl, err := NewStreamLayer(StreamConfig{Listen: "127.0.0.1:0", Store: certs.store, Logger: testLog(t, id)})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, sl)
		m := &member{id: id, addr: sl.Addr().String(), dir: t.TempDir(), certs: certs}
		ms = append(ms, m)
		peers = append(peers, Peer{ID: id, Addr: m.addr})
	}
	for i, m := range ms {
		m.start(t, streams[i], peers)
	}
	return ms
}

// start runs the member's raft, on sl if given, else binding its address.
func (m *member) start(t *testing.T, sl *StreamLayer, peers []Peer) {
	t.Helper()
	m.fsm = &logFSM{}
	cfg := Config{ID: m.id, Dir: m.dir, Stream: sl, Peers: peers, Store: m.certs.store, FSM: m.fsm, Logger: testLog(t, m.id)}
	if sl == nil {
		cfg.Listen = m.addr
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", m.id, err)
	}
	m.g = g
	m.lead = watchLeadership(g)
	t.Cleanup(func() { g.Shutdown() })
}

// leader waits until the running members agree on one leader, and returns it.
func leader(t *testing.T, ms []*member) *member {
	t.Helper()
	var found *member
	waitfor.True(t, 10*time.Second, "one leader all agree on", func() bool {
		found = nil
		for _, m := range ms {
			if m.g.IsLeader() {
				if found != nil {
					return false
				}
				found = m
			}
		}
		if found == nil {
			return false
		}
		for _, m := range ms {
			if id, addr := m.g.Leader(); id != found.id || addr != found.addr {
				return false
			}
		}
		return true
	})
	return found
}

// apply applies cmd on the leader, looking for it again if leadership
// moves meanwhile (the test machine is slow and shared).
func apply(t *testing.T, ms []*member, cmd string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := leader(t, ms)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := l.g.Apply(ctx, []byte(cmd))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) {
			t.Fatalf("apply %q on %s: %v", cmd, l.id, err)
		}
		t.Logf("apply %q on %s: %v; again", cmd, l.id, err)
	}
}

// replicated waits until every member's FSM holds want.
func replicated(t *testing.T, ms []*member, want ...string) {
	t.Helper()
	for _, m := range ms {
		waitfor.True(t, 10*time.Second, fmt.Sprintf("%s to hold %v (has %v)", m.id, want, m.fsm.get()), func() bool {
			return slices.Equal(m.fsm.get(), want)
		})
	}
}

func without(ms []*member, x *member) []*member {
	return slices.DeleteFunc(slices.Clone(ms), func(m *member) bool { return m == x })
}

func TestGroupOfThree(t *testing.T) {
	ms := testGroup(t, 3)
	l := leader(t, ms)
	t.Logf("leader %s at %s", l.id, l.addr)
	if !l.lead.next(t, 5*time.Second) {
		t.Fatal("the leader's first leadership value is false")
	}
	ctx := context.Background()
	if err := l.g.Barrier(ctx); err != nil {
		t.Fatalf("barrier on the leader: %v", err)
	}

	apply(t, ms, "a")
	replicated(t, ms, "a")

	// The FSM's answer, and its refusal, come back from Apply.
	l = leader(t, ms)
	if n, err := l.g.Apply(ctx, []byte("b")); err != nil || n != 2 {
		t.Fatalf("apply b = %v, %v; want 2, nil", n, err)
	}
	if _, err := l.g.Apply(ctx, []byte("fail")); !errors.Is(err, errFail) {
		t.Fatalf("apply fail: err = %v, want the FSM's error", err)
	}
	replicated(t, ms, "a", "b")

	// A follower says who leads.
	f := without(ms, l)[0]
	_, err := f.g.Apply(ctx, []byte("c"))
	var nle *NotLeaderError
	if !errors.Is(err, raft.ErrNotLeader) || !errors.As(err, &nle) || nle.LeaderID != l.id || nle.LeaderAddr != l.addr {
		t.Fatalf("apply on follower %s: err = %v, want not leader, leader %s at %s", f.id, err, l.id, l.addr)
	}
	t.Logf("follower: %v", err)
	if err := f.g.Barrier(ctx); !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("barrier on follower: err = %v", err)
	}
	// An ended context ends the wait.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.g.Apply(done, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply with a cancelled context: err = %v", err)
	}

	st := l.g.Status()
	t.Logf("leader status %+v", st)
	if st.State != "leader" || st.LeaderID != l.id || st.Term == 0 || len(st.Servers) != 3 || st.AppliedIndex < 3 || st.CommitIndex < st.AppliedIndex {
		t.Fatalf("leader status %+v", st)
	}
	for _, s := range st.Servers {
		if !s.Voter || s.Leader != (s.ID == l.id) || s.Self != (s.ID == l.id) {
			t.Fatalf("server %+v", s)
		}
	}
	fst := f.g.Status()
	if fst.State != "follower" || fst.LeaderID != l.id || fst.LastContact.IsZero() {
		t.Fatalf("follower status %+v", fst)
	}

	// A follower snapshots, and is restarted from its directory: it
	// restores the snapshot, rejoins as a follower and catches up.
	if err := f.g.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot on %s: %v", f.id, err)
	}
	if err := f.g.Shutdown(); err != nil {
		t.Fatalf("shutdown %s: %v", f.id, err)
	}
	if err := f.g.Shutdown(); err != nil {
		t.Fatalf("second shutdown of %s: %v", f.id, err)
	}
	apply(t, without(ms, f), "c")
	f.start(t, nil, nil) // no peers: the log knows the group
	if f.fsm.restored != 1 {
		t.Fatalf("%s restored %d snapshots at restart, want 1", f.id, f.fsm.restored)
	}
	replicated(t, ms, "a", "b", "c")
	if st := f.g.Status(); st.State != "follower" {
		t.Fatalf("restarted %s is %s", f.id, st.State)
	}

	// The leader goes: another is elected, and Apply works again.
	old := l
	term := old.g.Status().Term
	start := time.Now()
	if err := old.g.Shutdown(); err != nil {
		t.Fatalf("shutdown leader: %v", err)
	}
	rest := without(ms, old)
	nl := leader(t, rest)
	t.Logf("new leader %s after %v", nl.id, time.Since(start))
	if st := nl.g.Status(); st.Term <= term {
		t.Fatalf("new leader's term %d, old %d", st.Term, term)
	}
	apply(t, rest, "d")
	replicated(t, rest, "a", "b", "c", "d")
	// The old leader's channel said it lost leadership, then closed.
	if v := old.lead.next(t, 5*time.Second); v {
		t.Fatal("old leader's channel gave true after true")
	}
	select {
	case <-old.lead.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Leadership not closed by Shutdown")
	}

	// The old leader comes back as a follower, its state kept.
	old.start(t, nil, []Peer{{ms[0].id, ms[0].addr}, {ms[1].id, ms[1].addr}, {ms[2].id, ms[2].addr}})
	replicated(t, ms, "a", "b", "c", "d")
	if leader(t, ms) == old {
		t.Logf("%s was elected again after its restart", old.id)
	} else if st := old.g.Status(); st.State != "follower" {
		t.Fatalf("restarted old leader is %s", st.State)
	}
	apply(t, ms, "e")
	replicated(t, ms, "a", "b", "c", "d", "e")
}

// alone starts m1 of ca on 127.0.0.1:0 as a group of one, and waits until
// it has elected itself.
func alone(t *testing.T, ca *pki.CA) *member {
	t.Helper()
	m := &member{id: "m1", addr: "127.0.0.1:0", dir: t.TempDir(), certs: newNode(t, ca, pki.RoleMaster, "m1")}
	m.start(t, nil, nil)
	if !m.lead.next(t, 5*time.Second) {
		t.Fatal("a group of one did not elect itself")
	}
	return m
}

func TestGroupOfOne(t *testing.T) {
	m := alone(t, newCA(t, "lab"))
	ctx := context.Background()
	if err := m.g.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.g.Apply(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if got := m.fsm.get(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("fsm holds %v", got)
	}
	st := m.g.Status()
	if st.State != "leader" || len(st.Servers) != 1 || !st.Servers[0].Self || st.Servers[0].Addr != m.g.Addr() {
		t.Fatalf("status %+v", st)
	}
	// Restarted on its own address, it elects itself again with its state.
	m.addr = m.g.Addr()
	if err := m.g.Shutdown(); err != nil {
		t.Fatal(err)
	}
	m.start(t, nil, nil)
	if !m.lead.next(t, 5*time.Second) {
		t.Fatal("restarted group of one did not elect itself")
	}
	if err := m.g.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := m.fsm.get(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after restart the fsm holds %v", got)
	}
}

func TestConfigRefusals(t *testing.T) {
	ca := newCA(t, "lab")
	m1 := newNode(t, ca, pki.RoleMaster, "m1")
	base := Config{ID: "m1", Dir: t.TempDir(), Listen: "127.0.0.1:0", Store: m1.store, FSM: &logFSM{}, Logger: testLog(t, "m1")}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"ID not the certificate's", func(c *Config) { c.ID = "m2" }, "issue a master certificate named m2"},
		{"peers without this server", func(c *Config) { c.Peers = []Peer{{"m2", "127.0.0.1:1"}} }, "do not include this server"},
		{"peer twice", func(c *Config) { c.Peers = []Peer{{"m1", "127.0.0.1:1"}, {"m1", "127.0.0.1:2"}} }, "listed twice"},
		{"same address", func(c *Config) { c.Peers = []Peer{{"m1", "127.0.0.1:1"}, {"m2", "127.0.0.1:1"}} }, "same address"},
		{"peers disagree with the listener", func(c *Config) { c.Advertise = "127.0.0.1:1"; c.Peers = []Peer{{"m1", "127.0.0.1:2"}} }, "make them agree"},
		{"lease longer than heartbeat", func(c *Config) { c.LeaderLeaseTimeout = time.Second }, "LeaderLeaseTimeout"},
		{"wildcard without advertise", func(c *Config) { c.Listen = "0.0.0.0:0" }, "wildcard"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Dir = t.TempDir()
			tc.edit(&c)
			g, err := New(c)
			if err == nil {
				g.Shutdown()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("directory in use", func(t *testing.T) {
		c := base
		g, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Shutdown()
		if g2, err := New(c); err == nil || !strings.Contains(err.Error(), "locked by another process") {
			if g2 != nil {
				g2.Shutdown()
			}
			t.Fatalf("second New on one directory: err = %v", err)
		}
	})
}

func TestParsePeer(t *testing.T) {
	p, err := ParsePeer("m1=10.0.0.1:7000")
	if err != nil || p != (Peer{"m1", "10.0.0.1:7000"}) {
		t.Fatalf("ParsePeer = %v, %v", p, err)
	}
	for _, s := range []string{"m1", "=1:2", "m1="} {
		if _, err := ParsePeer(s); err == nil {
			t.Fatalf("ParsePeer(%q) succeeded", s)
		}
	}
}

func TestPush(t *testing.T) {
	for _, tc := range []struct {
		last bool
		in   []bool
		want []bool
	}{
		{false, []bool{true}, []bool{true}},
		{false, []bool{false}, nil},
		{false, []bool{true, true}, []bool{true}},
		{false, []bool{true, false}, []bool{true, false}},
		{false, []bool{true, false, true}, []bool{true}},
		{false, []bool{true, false, true, false}, []bool{true, false}},
		{true, []bool{false, true}, []bool{false, true}}, // a loss is never hidden
		{true, []bool{false, true, false, true, false, true}, []bool{false, true}},
		{true, []bool{true}, nil},
	} {
		var q []bool
		for _, v := range tc.in {
			q = push(q, tc.last, v)
		}
		if !slices.Equal(q, tc.want) {
			t.Errorf("last %v, in %v: queue %v, want %v", tc.last, tc.in, q, tc.want)
		}
	}
}

// TestGroupMembershipChanges grows a group of one by a server that joins,
// hands it leadership, and removes the first.
func TestGroupMembershipChanges(t *testing.T) {
	ca := newCA(t, "lab")
	m1 := alone(t, ca)
	m1.addr = m1.g.Addr()
	ctx := context.Background()
	if _, err := m1.g.Apply(ctx, []byte("a")); err != nil {
		t.Fatal(err)
	}

	certs := newNode(t, ca, pki.RoleMaster, "m2")
	m2 := &member{id: "m2", dir: t.TempDir(), certs: certs}
	m2.fsm = &logFSM{}
	g, err := New(Config{ID: "m2", Dir: m2.dir, Listen: "127.0.0.1:0", Join: true, Store: certs.store, FSM: m2.fsm, Logger: testLog(t, "m2")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Shutdown() })
	m2.g, m2.addr, m2.lead = g, g.Addr(), watchLeadership(g)
	if st := g.Status(); st.State != "follower" || len(st.Servers) != 0 {
		t.Fatalf("joining server before it is added: %+v", st)
	}
	if err := m2.g.AddVoter(ctx, "m2", m2.addr); !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("AddVoter on a server that leads nothing: err = %v", err)
	}
	if err := m1.g.AddVoter(ctx, "m2", m2.addr); err != nil {
		t.Fatalf("add m2: %v", err)
	}
	ms := []*member{m1, m2}
	replicated(t, ms, "a")

	if err := m1.g.TransferLeadership(ctx); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	if l := leader(t, ms); l != m2 {
		t.Fatalf("leader after the transfer is %s", l.id)
	}
	if m1.lead.next(t, 5*time.Second) || !m2.lead.next(t, 5*time.Second) {
		t.Fatal("leadership channels disagree with the transfer")
	}
	apply(t, ms, "b")
	replicated(t, ms, "a", "b")

	if err := m2.g.RemoveServer(ctx, "m1"); err != nil {
		t.Fatalf("remove m1: %v", err)
	}
	// A removed follower may never hear of its removal (the leader stops
	// sending to it): it is the admin's to stop.
	m1.g.Shutdown()
	apply(t, []*member{m2}, "c")
	if st := m2.g.Status(); len(st.Servers) != 1 || st.Servers[0].ID != "m2" {
		t.Fatalf("servers after removing m1: %+v", st.Servers)
	}
}

// TestGroupRevokedMasterIsCutOff revokes one master of three: once the
// others reload their revocation list, it gets no raft RPC through, either
// way, and falls behind while they go on.
func TestGroupRevokedMasterIsCutOff(t *testing.T) {
	ms := testGroup(t, 3)
	apply(t, ms, "a")
	replicated(t, ms, "a")

	// Revoke whichever is not the leader, so the test need not wait for a
	// new election.
	l := leader(t, ms)
	bad := without(ms, l)[0]
	crl, _, err := bad.certs.issuedBy.Revoke(nil, bad.certs.issued.Cert)
	if err != nil {
		t.Fatal(err)
	}
	good := without(ms, bad)
	var before []uint64
	for _, m := range good {
		if err := os.WriteFile(m.certs.files.CRL, crl, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := m.certs.store.Reload(); err != nil {
			t.Fatal(err)
		}
		before = append(before, m.g.Refused())
		n := m.g.CloseRevoked()
		t.Logf("%s closed %d connections of %s", m.id, n, bad.id)
	}
	apply(t, good, "b")
	replicated(t, good, "a", "b")
	// The leader's heartbeats to the revoked master are refused, and so
	// are the revoked master's vote requests once it gives up on the leader.
	for i, m := range good {
		waitfor.True(t, 10*time.Second, m.id+" to refuse "+bad.id, func() bool { return m.g.Refused() > before[i] })
	}
	if got := bad.fsm.get(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("revoked %s holds %v, want only what it had before", bad.id, got)
	}
	if id, _ := bad.g.Leader(); id != "" {
		t.Logf("revoked %s still names %s as leader", bad.id, id)
	}
	if l := leader(t, good); l == bad {
		t.Fatal("revoked master leads")
	}
}

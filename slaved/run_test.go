package slaved

import (
	"context"
	"errors"
	"io"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/pki/pkitest"
	"github.com/muster-lab/muster/internal/tlsrpc"
	"github.com/muster-lab/muster/internal/tlsrpc/tlsrpctest"
	"github.com/muster-lab/muster/internal/waitfor"
	"github.com/muster-lab/muster/rpcdef"
)

// These tests run a Slave against a fake registry and a fake master that
// speak the real wire contract over real sockets and mutual TLS.

// lab is where most Run tests start: a CA, the fake registry on a UNIX
// socket in a temp dir, and fake masters with certificates of the CA.
type lab struct {
	t         *testing.T
	ca        *pkitest.CA
	dir       string
	reg       *fakeRegistry
	regSocket string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t, ca: pkitest.New(t, "lab"), dir: t.TempDir()}
	l.reg, l.regSocket = startRegistry(t, l.dir)
	return l
}

// master starts a fake master on 127.0.0.1:0 with a master certificate for name.
func (l *lab) master(name string) *fakeMaster {
	l.t.Helper()
	return startMaster(l.t, l.ca.NodeStore(pki.RoleMaster, name), "")
}

// config is a config for node-1 that looks the master up in l's registry.
func (l *lab) config() *conf.Slave { return slaveConfig(l.ca, l.dir, l.regSocket) }

// fakeRegistry answers Lookup with the address it is told.
type fakeRegistry struct {
	mu   sync.Mutex
	addr string
	n    int
	at   []time.Time // when each lookup came
}

func (r *fakeRegistry) set(addr string) {
	r.mu.Lock()
	r.addr = addr
	r.mu.Unlock()
}

func (r *fakeRegistry) lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

type registrySession struct{ r *fakeRegistry }

func (x *registrySession) Lookup(args *rpcdef.LookupArgs, reply *rpcdef.LookupReply) error {
	x.r.mu.Lock()
	defer x.r.mu.Unlock()
	x.r.n++
	x.r.at = append(x.r.at, time.Now())
	if args.Key.Name != rpcdef.ClusterService || args.Key.Instance != "lab" || x.r.addr == "" {
		return rpcdef.Errorf(rpcdef.CodeNotFound, "%s is not registered", args.Key)
	}
	reply.Entry = rpcdef.Entry{Service: rpcdef.Service{ServiceKey: args.Key, Version: rpcdef.ClusterVersion, Addr: x.r.addr}, State: rpcdef.StateLive}
	return nil
}

func (x *registrySession) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

// startRegistry serves the fake registry on a UNIX socket.
func startRegistry(t *testing.T, dir string) (*fakeRegistry, string) {
	t.Helper()
	r := &fakeRegistry{}
	path := filepath.Join(dir, "registry.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	tlsrpctest.Serve(t, ln, nil, tlsrpctest.Receiver(rpcdef.RegistryReceiver, &registrySession{r: r}))
	return r, path
}

// lookupTimes are when the lookups came.
func (r *fakeRegistry) lookupTimes() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.at...)
}

// startTLSRegistry serves the fake registry on 127.0.0.1:0 over mutual TLS
// with st, a registry's certificate.
func startTLSRegistry(t *testing.T, st *pki.Store) (*fakeRegistry, string) {
	t.Helper()
	r := &fakeRegistry{}
	ln := tlsrpctest.Listen(t)
	tlsrpctest.Serve(t, ln, st.ServerConfig(), tlsrpctest.Receiver(rpcdef.RegistryReceiver, &registrySession{r: r}))
	return r, ln.Addr().String()
}

// call is one call the fake master received.
type call struct {
	method string
	node   string
	inc    uint64
	conn   uint64
	at     time.Time
	mv     uint64 // a heartbeat's MastersVersion
}

// fakeMaster serves ClusterService with just enough logic for a slave:
// a roll, events and long-poll Watch. Its behaviour is set by the test.
type fakeMaster struct {
	t     *testing.T
	addr  string
	id    string // its certificate's identity
	srv   *tlsrpc.Server
	hb    time.Duration
	rep   time.Duration
	mu    sync.Mutex
	calls []call
	// joinErrs are returned by the next joins, one each, and then joinErr,
	// if set, by every one; hbErrs are returned by the next heartbeats, one
	// each, and then hbErr, if set, by every one.
	joinErrs []error
	joinErr  error
	hbErrs   []error
	hbErr    error
	// masters and mastersVersion are the masters list it sends.
	masters        []rpcdef.MasterAddr
	mastersVersion uint64
	version        uint64
	events         []rpcdef.Event
	members        []rpcdef.Member
	changed        chan struct{}
}

// startMaster serves a fake master on 127.0.0.1:0 (or addr) with st.
func startMaster(t *testing.T, st *pki.Store, addr string) *fakeMaster {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMaster{t: t, addr: ln.Addr().String(), id: st.Identity().String(), hb: 50 * time.Millisecond, rep: 100 * time.Millisecond, version: 1, changed: make(chan struct{})}
	m.members = []rpcdef.Member{{Name: "node-a", Status: rpcdef.StatusAlive, Incarnation: 1, Addr: "127.0.0.9:1"}}
	m.srv = tlsrpctest.Serve(t, ln, st.ServerConfig(), func(srv *rpc.Server, p tlsrpc.Peer) (func(), error) {
		return nil, srv.RegisterName(rpcdef.ClusterService, &masterSession{m: m, peer: p})
	})
	return m
}

// begin locks the master and records a call of method on x's connection;
// the caller unlocks.
func (x *masterSession) begin(method, node string, inc uint64) *fakeMaster {
	m := x.m
	m.mu.Lock()
	m.calls = append(m.calls, call{method: method, node: node, inc: inc, conn: x.peer.ConnID, at: time.Now()})
	return m
}

// scripted is the error a call answers: the next of *errs, one each, and
// then always.
func scripted(errs *[]error, always error) error {
	if len(*errs) > 0 {
		err := (*errs)[0]
		*errs = (*errs)[1:]
		return err
	}
	return always
}

// count is how many calls of method arrived.
func (m *fakeMaster) count(method string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.calls {
		if c.method == method {
			n++
		}
	}
	return n
}

// callsOf lists the calls of method, or every call if method is "".
func (m *fakeMaster) callsOf(method string) []call {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []call
	for _, c := range m.calls {
		if method == "" || c.method == method {
			out = append(out, c)
		}
	}
	return out
}

// push records an event and wakes the watchers.
func (m *fakeMaster) push(e rpcdef.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.version++
	e.Version = m.version
	m.events = append(m.events, e)
	close(m.changed)
	m.changed = make(chan struct{})
}

type masterSession struct {
	m    *fakeMaster
	peer tlsrpc.Peer
}

func (x *masterSession) Join(args *rpcdef.JoinArgs, reply *rpcdef.JoinReply) error {
	m := x.begin("Join", args.Node, args.Incarnation)
	defer m.mu.Unlock()
	if err := scripted(&m.joinErrs, m.joinErr); err != nil {
		return err
	}
	if args.Node != x.peer.Identity.Name || args.Protocol != rpcdef.ProtocolVersion {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "bad join %+v from %s", args, x.peer.Identity)
	}
	members := append([]rpcdef.Member(nil), m.members...)
	members = append(members, rpcdef.Member{Name: args.Node, Status: rpcdef.StatusAlive, Incarnation: args.Incarnation, Addr: x.peer.Addr})
	*reply = rpcdef.JoinReply{Version: m.version, Members: members, HeartbeatInterval: m.hb, ReportInterval: m.rep, Master: m.id,
		Masters: m.masters, MastersVersion: m.mastersVersion}
	return nil
}

func (x *masterSession) Heartbeat(args *rpcdef.HeartbeatArgs, reply *rpcdef.HeartbeatReply) error {
	m := x.begin("Heartbeat", args.Node, args.Incarnation)
	defer m.mu.Unlock()
	m.calls[len(m.calls)-1].mv = args.MastersVersion
	reply.Version = m.version
	if err := scripted(&m.hbErrs, m.hbErr); err != nil {
		return err
	}
	if args.MastersVersion != m.mastersVersion {
		reply.Masters, reply.MastersVersion = m.masters, m.mastersVersion
	}
	return nil
}

func (x *masterSession) Report(args *rpcdef.ReportArgs, reply *rpcdef.ReportReply) error {
	m := x.begin("Report", args.Node, args.Incarnation)
	defer m.mu.Unlock()
	if m.hbErr != nil && errors.Is(m.hbErr, rpcdef.ErrNotLeader) {
		return m.hbErr
	}
	if args.Resources.CPUCount == 0 {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "empty report")
	}
	reply.Version = m.version
	return nil
}

func (x *masterSession) Leave(args *rpcdef.LeaveArgs, _ *rpcdef.Empty) error {
	m := x.begin("Leave", args.Node, args.Incarnation)
	defer m.mu.Unlock()
	return nil
}

func (x *masterSession) Watch(args *rpcdef.WatchArgs, reply *rpcdef.WatchReply) error {
	m := x.m
	timer := time.NewTimer(min(args.Wait, 30*time.Second))
	defer timer.Stop()
	for {
		var changed <-chan struct{}
		reply.Version, reply.Events, changed = m.since(args.After)
		if len(reply.Events) > 0 {
			return nil
		}
		select {
		case <-changed:
			continue
		case <-timer.C:
		case <-x.peer.Done:
		}
		return nil
	}
}

// since is the master's version, its events after version after, and the
// channel closed at the next event.
func (m *fakeMaster) since(after uint64) (uint64, []rpcdef.Event, chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var evs []rpcdef.Event
	for _, e := range m.events {
		if e.Version > after {
			evs = append(evs, e)
		}
	}
	return m.version, evs, m.changed
}

func (x *masterSession) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

// slaveConfig is a config for node-1 using the registry's socket.
func slaveConfig(ca *pkitest.CA, dir, regSocket string) *conf.Slave {
	cfg := conf.DefaultSlave()
	cfg.Node = "node-1"
	cfg.Registry = ""
	cfg.RegistrySocket = regSocket
	cfg.Socket = filepath.Join(dir, "slaved.sock")
	cfg.Mounts = nil
	cfg.ProcRoot = "testdata/proc-a"
	cfg.CallTimeout = conf.Duration(time.Second)
	cfg.MaxBackoff = conf.Duration(200 * time.Millisecond)
	cfg.Store = ca.NodeStore(pki.RoleSlave, "node-1")
	return cfg
}

// running is a Slave run in the background.
type running struct {
	s      *Slave
	hook   *test.Hook
	cancel context.CancelFunc
	done   chan error
}

func runSlave(t *testing.T, cfg *conf.Slave) *running {
	t.Helper()
	l := logtest.New(t)
	l.SetLevel(logrus.DebugLevel)
	hook := test.NewLocal(l)
	s, err := New(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, hook: hook, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
		s.Close()
	})
	return r
}

// logged finds a log entry whose message contains sub.
func (r *running) logged(sub string) *logrus.Entry {
	for _, e := range r.hook.AllEntries() {
		if strings.Contains(e.Message, sub) {
			return e
		}
	}
	return nil
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
		r.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of the context's end")
	}
}

func TestRunJoinsWatchesAndLeaves(t *testing.T) {
	l := newLab(t)
	m := l.master("m1")
	l.reg.set(m.addr)
	cfg := l.config()
	r := runSlave(t, cfg)

	waitfor.True(t, 10*time.Second, "the readiness line", func() bool { return r.logged("ready") != nil })
	ready := r.logged("ready")
	if ready.Data["addr"] != m.addr || ready.Data["socket"] != cfg.Socket || ready.Data["incarnation"] != r.s.Incarnation() {
		t.Errorf("ready fields = %v, want addr %s, socket %s, incarnation %d", ready.Data, m.addr, cfg.Socket, r.s.Incarnation())
	}
	if r.logged("looking up ClusterService/lab in the registry at "+l.regSocket) == nil {
		t.Error("no progress line for the registry lookup")
	}
	if r.logged("joined ClusterService/lab at "+m.addr+" as node-1, incarnation ") == nil {
		t.Error("no progress line for the join")
	}
	joins := m.callsOf("Join")
	if len(joins) != 1 || joins[0].node != "node-1" || joins[0].inc != r.s.Incarnation() {
		t.Fatalf("joins = %+v, want one as node-1 with incarnation %d", joins, r.s.Incarnation())
	}
	if now := uint64(time.Now().UnixNano()); r.s.Incarnation() > now || now-r.s.Incarnation() > uint64(time.Minute) {
		t.Errorf("incarnation %d is not the start time", r.s.Incarnation())
	}
	waitfor.True(t, 5*time.Second, "a report and heartbeats", func() bool { return m.count("Report") >= 2 && m.count("Heartbeat") >= 3 })

	// Every call went over one connection.
	m.mu.Lock()
	for _, c := range m.calls {
		if c.conn != joins[0].conn {
			t.Errorf("%s came on connection %d, the join on %d: want one connection", c.method, c.conn, joins[0].conn)
		}
	}
	m.mu.Unlock()

	vc := rpcdef.NewViewClient(cfg.Socket)
	defer vc.Close()
	get := func() rpcdef.ViewReply {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v, err := vc.Get(ctx)
		if err != nil {
			t.Fatalf("view: %v", err)
		}
		return v
	}
	v := get()
	if !v.Joined || v.Node != "node-1" || v.MasterAddr != m.addr || v.Incarnation != r.s.Incarnation() || v.Master != "spiffe://lab/master/m1" {
		t.Errorf("view header = %+v", v)
	}
	if got := states(v); got != "node-1=alive/"+strconv.FormatUint(r.s.Incarnation(), 10)+" node-a=alive/1" {
		t.Errorf("view members = %s", got)
	}
	if fi, err := os.Stat(cfg.Socket); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode: %v %v, want 0666", fi.Mode(), err)
	}

	// Membership changes reach the view through the pending Watch.
	m.push(rpcdef.Event{Kind: rpcdef.EventJoined, Node: "node-c", Status: rpcdef.StatusAlive, Incarnation: 5, Addr: "127.0.0.9:3"})
	m.push(rpcdef.Event{Kind: rpcdef.EventDead, Node: "node-a", Status: rpcdef.StatusDead, Incarnation: 1, Reason: "connection closed"})
	waitfor.True(t, 5*time.Second, "the events in the view", func() bool {
		return strings.Contains(states(get()), "node-a=dead/1 node-c=alive/5")
	})
	for _, msg := range []string{"node-c joined", "node-a is now dead (connection closed)"} {
		e := r.logged(msg)
		if e == nil {
			t.Errorf("no log line %q", msg)
			continue
		}
		if e.Data["node"] != "node-1" || e.Data["peer"] == nil {
			t.Errorf("log line %q has fields %v, want node=node-1 and peer", msg, e.Data)
		}
	}

	r.stop(t)
	leaves := m.callsOf("Leave")
	if len(leaves) != 1 || leaves[0].inc != r.s.Incarnation() {
		t.Errorf("leaves = %+v, want one with the incarnation", leaves)
	}
	if r.logged("left the cluster") == nil {
		t.Error("no 'left the cluster' line")
	}
	for _, e := range r.hook.AllEntries() {
		if e.Data["node"] != "node-1" {
			t.Errorf("log line %q has no node=node-1: %v", e.Message, e.Data)
		}
	}
	if err := r.s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := r.s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
		t.Errorf("socket file still there after Close: %v", err)
	}
}

func TestRunRefusesAServerThatIsNotAMaster(t *testing.T) {
	l := newLab(t)
	// A stolen slave certificate serving ClusterService.
	m := startMaster(t, l.ca.NodeStore(pki.RoleSlave, "node-9"), "")
	l.reg.set(m.addr)
	r := runSlave(t, l.config())
	waitfor.True(t, 10*time.Second, "the refusal", func() bool { return r.logged("not a master") != nil })
	e := r.logged("not a master")
	if e.Level != logrus.ErrorLevel || !strings.Contains(e.Message, "spiffe://lab/slave/node-9") {
		t.Errorf("refusal logged at %s: %q", e.Level, e.Message)
	}
	// It keeps looking, and never sends the fake master anything.
	waitfor.True(t, 10*time.Second, "another lookup", func() bool { return l.reg.lookups() >= 3 })
	if n := m.count("Join"); n != 0 {
		t.Errorf("%d joins reached a server with a slave certificate", n)
	}
	r.stop(t)
}

func TestRunRetriesAJoinRefused(t *testing.T) {
	l := newLab(t)
	m := l.master("m1")
	m.joinErr = rpcdef.Errorf(rpcdef.CodePermission, "spiffe://lab/slave/node-1 may only join as node-1")
	l.reg.set(m.addr)
	r := runSlave(t, l.config())
	waitfor.True(t, 10*time.Second, "two refused joins", func() bool { return m.count("Join") >= 2 })
	e := r.logged("the master refused node-1")
	if e == nil || e.Level != logrus.ErrorLevel || !strings.Contains(e.Message, "may only join as node-1") {
		t.Fatalf("refusal log = %v", e)
	}
	// The operator fixes the master: the slave joins without a restart.
	m.mu.Lock()
	m.joinErr = nil
	m.mu.Unlock()
	waitfor.True(t, 10*time.Second, "the readiness line", func() bool { return r.logged("ready") != nil })
	r.stop(t)
}

func TestRunRejoinsWhenTheMasterForgot(t *testing.T) {
	l := newLab(t)
	m := l.master("m1")
	l.reg.set(m.addr)
	r := runSlave(t, l.config())
	waitfor.True(t, 10*time.Second, "the first heartbeat", func() bool { return m.count("Heartbeat") >= 1 })
	m.mu.Lock()
	m.hbErrs = []error{rpcdef.Errorf(rpcdef.CodeNotJoined, "node-1 was declared dead")}
	m.mu.Unlock()
	waitfor.True(t, 10*time.Second, "a second join", func() bool { return m.count("Join") >= 2 })
	joins := m.callsOf("Join")
	if joins[1].inc != joins[0].inc || joins[1].conn != joins[0].conn {
		t.Errorf("rejoin %+v after %+v: want the same incarnation on the same connection", joins[1], joins[0])
	}
	if m.count("Report") < 2 {
		waitfor.True(t, 5*time.Second, "a report after the rejoin", func() bool { return m.count("Report") >= 2 })
	}
	if l.reg.lookups() != 1 {
		t.Errorf("%d registry lookups; a rejoin should not look the master up again", l.reg.lookups())
	}
	r.stop(t)
}

// proxy forwards TCP connections to a target until cut.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.Close() })
			wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

// cut closes every connection through the proxy, as a network fault would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestRunHeartbeatsAtOnceOnANewConnection: when the connection breaks, a
// heartbeat goes out on a new one at once, not an interval later.
func TestRunHeartbeatsAtOnceOnANewConnection(t *testing.T) {
	l := newLab(t)
	m := l.master("m1")
	m.hb = time.Hour // only the reaction to the broken connection can send one
	p := startProxy(t, m.addr)
	l.reg.set(p.ln.Addr().String())
	r := runSlave(t, l.config())
	waitfor.True(t, 10*time.Second, "the join", func() bool { return m.count("Join") == 1 })
	waitfor.True(t, 10*time.Second, "the first report", func() bool { return m.count("Report") >= 1 })

	for range 3 {
		old := map[uint64]bool{}
		for _, c := range m.callsOf("") {
			old[c.conn] = true
		}
		p.cut()
		waitfor.True(t, 5*time.Second, "a heartbeat on a new connection", func() bool {
			for _, hb := range m.callsOf("Heartbeat") {
				if !old[hb.conn] {
					return true
				}
			}
			return false
		})
	}
	if n := m.count("Join"); n != 1 {
		t.Errorf("%d joins: the master still knew the slave, no new join was needed", n)
	}
	if l.reg.lookups() != 1 {
		t.Errorf("%d lookups: the master did not move, no new lookup was needed", l.reg.lookups())
	}
	r.stop(t)
}

// TestRunFindsAMovedMaster: the master comes back on another port; the
// slave looks it up again and joins it.
func TestRunFindsAMovedMaster(t *testing.T) {
	l := newLab(t)
	st := l.ca.NodeStore(pki.RoleMaster, "m1")
	m := startMaster(t, st, "")
	l.reg.set(m.addr)
	r := runSlave(t, l.config())
	waitfor.True(t, 10*time.Second, "the join", func() bool { return m.count("Join") == 1 })

	m.srv.Close()
	m2 := startMaster(t, st, "")
	l.reg.set(m2.addr)
	waitfor.True(t, 10*time.Second, "a join at the new address", func() bool { return m2.count("Join") == 1 })
	waitfor.True(t, 5*time.Second, "the view to name the new master", func() bool {
		v := r.s.view.Reply()
		return v.Joined && v.MasterAddr == m2.addr
	})
	if n := m2.callsOf("Join")[0].inc; n != r.s.Incarnation() {
		t.Errorf("joined the new master with incarnation %d, want the same %d", n, r.s.Incarnation())
	}
	r.stop(t)
	if m2.count("Leave") != 1 {
		t.Errorf("no Leave at the new master")
	}
}

func TestRunWithoutMasterStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	ca := pkitest.New(t, "lab")
	_, regSocket := startRegistry(t, dir) // nothing registered
	r := runSlave(t, slaveConfig(ca, dir, regSocket))
	waitfor.True(t, 10*time.Second, "the lookup failure", func() bool { return r.logged("is not registered (is masterd running?)") != nil })
	r.stop(t)
	if r.logged("nothing to leave") == nil {
		t.Error("no line saying there was nothing to leave")
	}
}

func TestNewSocket(t *testing.T) {
	dir := t.TempDir()
	ca := pkitest.New(t, "lab")
	log, _ := testLog(t)

	t.Run("stale socket file is replaced", func(t *testing.T) {
		cfg := slaveConfig(ca, dir, filepath.Join(dir, "none.sock"))
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // the file stays, nobody listens: a crashed slaved
		s, err := New(cfg, log)
		if err != nil {
			t.Fatalf("New over a stale socket: %v", err)
		}
		s.Close()
	})
	t.Run("socket in use is refused", func(t *testing.T) {
		cfg := slaveConfig(ca, dir, filepath.Join(dir, "none.sock"))
		s, err := New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = New(cfg, log)
		if err == nil || !strings.Contains(err.Error(), "another slaved") {
			t.Fatalf("second New = %v, want an error naming another slaved", err)
		}
	})
	t.Run("a file that is not a socket is left alone", func(t *testing.T) {
		cfg := slaveConfig(ca, dir, filepath.Join(dir, "none.sock"))
		cfg.Socket = filepath.Join(dir, "plain")
		if err := os.WriteFile(cfg.Socket, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg, log); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("New = %v, want a not-a-socket error", err)
		}
	})
	t.Run("wrong certificate", func(t *testing.T) {
		cfg := slaveConfig(ca, dir, filepath.Join(dir, "none.sock"))
		cfg.Store = ca.NodeStore(pki.RoleMaster, "m1")
		if _, err := New(cfg, log); err == nil || !strings.Contains(err.Error(), "slave certificate") {
			t.Fatalf("New = %v, want a certificate error", err)
		}
	})
}

package slaved

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/pki/pkitest"
	"github.com/muster-lab/muster/internal/tlsrpc/tlsrpctest"
	"github.com/muster-lab/muster/internal/waitfor"
	"github.com/muster-lab/muster/rpcdef"
)

// These tests run a Slave against several fake masters, as a raft group of
// masters answers it: followers name the leader, replies carry the masters
// list, and a lost master is replaced by a listed one before the registry.

// setMasters sets the masters list m sends, at version v.
func (m *fakeMaster) setMasters(v uint64, list ...*fakeMaster) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.masters = nil
	for _, o := range list {
		m.masters = append(m.masters, rpcdef.MasterAddr{Name: o.name(), Addr: o.addr})
	}
	m.mastersVersion = v
}

// name is the master's name, from its identity.
func (m *fakeMaster) name() string { return m.id[strings.LastIndex(m.id, "/")+1:] }

// setJoinErr makes every join answer err (nil: accept).
func (m *fakeMaster) setJoinErr(err error) {
	m.mu.Lock()
	m.joinErr = err
	m.mu.Unlock()
}

// joinedAt waits until the slave's view says it is joined at m.
func joinedAt(t *testing.T, r *running, m *fakeMaster) {
	t.Helper()
	waitfor.True(t, 10*time.Second, "the view to name "+m.addr, func() bool {
		v := r.s.view.Reply()
		return v.Joined && v.MasterAddr == m.addr && v.Master == m.id
	})
}

// sameIncarnation checks that every join m saw carried the slave's incarnation.
func sameIncarnation(t *testing.T, r *running, ms ...*fakeMaster) {
	t.Helper()
	for _, m := range ms {
		for _, c := range m.callsOf("Join") {
			if c.inc != r.s.Incarnation() {
				t.Errorf("%s: join with incarnation %d, want %d", m.name(), c.inc, r.s.Incarnation())
			}
		}
	}
}

// TestRunFollowsTheLeader: the registry names a follower; its answer names
// the leader, and the slave joins there in one hop, without the registry.
func TestRunFollowsTheLeader(t *testing.T) {
	l := newLab(t)
	m1, m2 := l.master("m1"), l.master("m2")
	m1.setJoinErr(rpcdef.NotLeader("m2", m2.addr))
	m2.setMasters(4, m2, m1)
	l.reg.set(m1.addr)
	r := runSlave(t, l.config())

	joinedAt(t, r, m2)
	want := fmt.Sprintf("master m1 is a follower; the leader is m2 at %s: joining there", m2.addr)
	if e := r.logged(want); e == nil || e.Level != logrus.InfoLevel {
		t.Errorf("redirect line %q = %v, want it at info", want, e)
	}
	if n := m1.count("Join"); n != 1 {
		t.Errorf("%d joins at the follower, want 1", n)
	}
	if n := l.reg.lookups(); n != 1 {
		t.Errorf("%d lookups: a redirect is followed without the registry", n)
	}
	sameIncarnation(t, r, m1, m2)
	list, v := r.s.masters.get()
	if v != 4 || describeMasters(list) != describeMasters(m2.masters) {
		t.Errorf("masters = %s at version %d, want %s at 4", describeMasters(list), v, describeMasters(m2.masters))
	}
	waitfor.True(t, 5*time.Second, "a heartbeat with the masters version", func() bool {
		hbs := m2.callsOf("Heartbeat")
		return len(hbs) > 0 && hbs[len(hbs)-1].mv == 4
	})
	r.stop(t)
	if m2.count("Leave") != 1 {
		t.Error("no Leave at the leader")
	}
}

// TestRunFollowsANewLeader: the master the slave is joined to loses the
// leadership; its heartbeat answer names the new leader, which the slave
// joins with the same incarnation.
func TestRunFollowsANewLeader(t *testing.T) {
	l := newLab(t)
	m1, m2 := l.master("m1"), l.master("m2")
	m1.setMasters(1, m1, m2)
	l.reg.set(m1.addr)
	r := runSlave(t, l.config())
	joinedAt(t, r, m1)
	waitfor.True(t, 5*time.Second, "a heartbeat", func() bool { return m1.count("Heartbeat") >= 1 })

	m2.setMasters(2, m2, m1)
	m1.mu.Lock()
	m1.hbErr = rpcdef.NotLeader("m2", m2.addr)
	m1.mu.Unlock()
	joinedAt(t, r, m2)
	if r.logged("master m1 is a follower; the leader is m2 at "+m2.addr+": joining there") == nil {
		t.Error("no redirect line")
	}
	if n := l.reg.lookups(); n != 1 {
		t.Errorf("%d lookups: a redirect is followed without the registry", n)
	}
	sameIncarnation(t, r, m1, m2)
	r.stop(t)
}

// TestRunFailsOverToAListedMaster: the leader goes; the slave tries the
// masters it listed, the lost one last, and a follower's answer takes it
// to the new leader, all without the registry.
func TestRunFailsOverToAListedMaster(t *testing.T) {
	l := newLab(t)
	m1, m2, m3 := l.master("m1"), l.master("m2"), l.master("m3")
	m1.setMasters(7, m1, m2, m3)
	m2.setJoinErr(rpcdef.NotLeader("m3", m3.addr))
	m3.setMasters(8, m3, m2)
	l.reg.set(m1.addr)
	r := runSlave(t, l.config())
	joinedAt(t, r, m1)

	m1.srv.Close()
	joinedAt(t, r, m3)
	if n := l.reg.lookups(); n != 1 {
		t.Errorf("%d lookups: the listed masters should have been enough", n)
	}
	if n := m2.count("Join"); n != 1 {
		t.Errorf("%d joins at m2, want the one it redirected", n)
	}
	want := fmt.Sprintf("failing over from master m1 at %s: trying the masters it listed, then the registry: m2 at %s, m3 at %s, m1 at %s",
		m1.addr, m2.addr, m3.addr, m1.addr)
	if r.logged(want) == nil {
		t.Errorf("no line %q", want)
	}
	sameIncarnation(t, r, m1, m2, m3)
	if _, v := r.s.masters.get(); v != 8 {
		t.Errorf("masters version %d, want m3's 8", v)
	}
	r.stop(t)
}

// TestRunFailsOverToTheRegistryLast: when no listed master takes the slave,
// the registry is asked, and only then.
func TestRunFailsOverToTheRegistryLast(t *testing.T) {
	l := newLab(t)
	m1, m2, m3 := l.master("m1"), l.master("m2"), l.master("m3")
	m1.setMasters(1, m1, m2)
	m2.setJoinErr(rpcdef.Errorf(rpcdef.CodeUnavailable, "m2 is shutting down"))
	l.reg.set(m1.addr)
	r := runSlave(t, l.config())
	joinedAt(t, r, m1)

	l.reg.set(m3.addr)
	m1.srv.Close()
	joinedAt(t, r, m3)
	lookups := l.reg.lookupTimes()
	m2joins := m2.callsOf("Join")
	if len(lookups) < 2 || len(m2joins) == 0 {
		t.Fatalf("%d lookups and %d joins at m2: want m2 tried, then the registry", len(lookups), len(m2joins))
	}
	if !m2joins[0].at.Before(lookups[1]) {
		t.Errorf("the registry was asked at %v, before the listed m2 at %v", lookups[1], m2joins[0].at)
	}
	want := "listed master m2: join ClusterService/lab at " + m2.addr + ": unavailable: m2 is shutting down; trying the next"
	if r.logged(want) == nil {
		t.Errorf("no line %q", want)
	}
	sameIncarnation(t, r, m1, m2, m3)
	r.stop(t)
}

// TestRunWaitsOutAnElection: a listed master that knows no leader yet is
// asked again soon, and the registry is not asked meanwhile.
func TestRunWaitsOutAnElection(t *testing.T) {
	l := newLab(t)
	m1, m2 := l.master("m1"), l.master("m2")
	m1.setMasters(1, m1, m2)
	m2.joinErrs = []error{rpcdef.NotLeader("", ""), rpcdef.NotLeader("", ""), rpcdef.NotLeader("", "")}
	l.reg.set(m1.addr)
	cfg := l.config()
	cfg.MaxBackoff = conf.Duration(10 * time.Second) // an election's waits are shorter than this
	r := runSlave(t, cfg)
	joinedAt(t, r, m1)

	lost := time.Now()
	m1.srv.Close()
	joinedAt(t, r, m2)
	if n := m2.count("Join"); n != 4 {
		t.Errorf("%d joins at m2, want 3 refused during the election and 1 accepted", n)
	}
	if n := l.reg.lookups(); n != 1 {
		t.Errorf("%d lookups: the registry knows no better during an election", n)
	}
	// Three election waits of at most maxElectionWait each, and the rest.
	if d := time.Since(lost); d > 3*maxElectionWait+3*time.Second {
		t.Errorf("joined m2 %v after losing m1: election waits are short", d)
	}
	var e *logrus.Entry
	for _, x := range r.hook.AllEntries() {
		if strings.Contains(x.Message, "listed master m2: join ClusterService/lab at "+m2.addr+": not the leader: no leader is known yet") &&
			strings.Contains(x.Message, "; looking up the master again in ") {
			e = x
			break
		}
	}
	if e == nil || e.Level != logrus.WarnLevel {
		t.Errorf("election line = %v, want the round's failure at warn", e)
	}
	r.stop(t)
}

// TestRunRefusesABadRedirect: a redirect to an address that is not
// HOST:PORT is not dialled, and one to a server without a master
// certificate is refused at the handshake.
func TestRunRefusesABadRedirect(t *testing.T) {
	t.Run("not HOST:PORT", func(t *testing.T) {
		l := newLab(t)
		m1 := l.master("m1")
		m1.setJoinErr(rpcdef.NotLeader("m2", "nowhere"))
		l.reg.set(m1.addr)
		r := runSlave(t, l.config())
		waitfor.True(t, 10*time.Second, "the refusal", func() bool { return r.logged("not dialling the leader it names") != nil })
		r.stop(t)
	})
	t.Run("not a master", func(t *testing.T) {
		l := newLab(t)
		m1 := l.master("m1")
		m9 := startMaster(t, l.ca.NodeStore(pki.RoleSlave, "node-9"), "")
		m1.setJoinErr(rpcdef.NotLeader("m2", m9.addr))
		l.reg.set(m1.addr)
		r := runSlave(t, l.config())
		want := fmt.Sprintf("leader m2 (named by m1): %s is served by spiffe://lab/slave/node-9, not a master", m9.addr)
		waitfor.True(t, 10*time.Second, "the refusal", func() bool { return r.logged(want) != nil })
		if e := r.logged(want); e.Level != logrus.ErrorLevel {
			t.Errorf("refusal at %s, want error", e.Level)
		}
		if n := m9.count("Join"); n != 0 {
			t.Errorf("%d joins reached a server with a slave certificate", n)
		}
		r.stop(t)
	})
}

// TestRunAsksTheRegistriesInTurn: with several registries, one that fails
// is skipped, and the one that answered is asked first next time.
func TestRunAsksTheRegistriesInTurn(t *testing.T) {
	dir := t.TempDir()
	ca := pkitest.New(t, "lab")
	down := tlsrpctest.ClosedAddr(t)
	reg, up := startTLSRegistry(t, ca.NodeStore(pki.RoleRegistry, "reg1"))
	st := ca.NodeStore(pki.RoleMaster, "m1")
	m1 := startMaster(t, st, "")
	reg.set(m1.addr)
	cfg := slaveConfig(ca, dir, "")
	cfg.Registries = []string{down, up}
	r := runSlave(t, cfg)
	joinedAt(t, r, m1)

	m2 := startMaster(t, st, "")
	reg.set(m2.addr)
	m1.srv.Close()
	joinedAt(t, r, m2)
	if n := reg.lookups(); n != 2 {
		t.Errorf("%d lookups at %s, want 2", n, up)
	}
	n := 0
	for _, e := range r.hook.AllEntries() {
		if strings.Contains(e.Message, "looking up ClusterService/lab in the registry at "+down) {
			n++
		}
	}
	if n > 1 {
		t.Errorf("the registry at %s that failed was asked %d times, want it skipped after the first", down, n)
	}
	r.stop(t)
}

// TestRunNamesEveryRegistry: when no registry answers, the line says what
// each said.
func TestRunNamesEveryRegistry(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		dir := t.TempDir()
		ca := pkitest.New(t, "lab")
		a, b := tlsrpctest.ClosedAddr(t), tlsrpctest.ClosedAddr(t)
		cfg := slaveConfig(ca, dir, "")
		cfg.Registries = []string{a, b}
		r := runSlave(t, cfg)
		waitfor.True(t, 10*time.Second, "the lookup failure", func() bool { return r.logged("in 2 registries: the registry at ") != nil })
		e := r.logged("in 2 registries: the registry at ")
		for _, addr := range []string{a, b} {
			if !strings.Contains(e.Message, "the registry at "+addr+": connect to registry "+addr) {
				t.Errorf("line %q does not say what the registry at %s said", e.Message, addr)
			}
		}
		r.stop(t)
	})
	t.Run("not registered", func(t *testing.T) {
		dir := t.TempDir()
		ca := pkitest.New(t, "lab")
		_, a := startTLSRegistry(t, ca.NodeStore(pki.RoleRegistry, "reg1"))
		_, b := startTLSRegistry(t, ca.NodeStore(pki.RoleRegistry, "reg2"))
		cfg := slaveConfig(ca, dir, "")
		cfg.Registries = []string{a, b}
		r := runSlave(t, cfg)
		want := "is not registered (is masterd running?); looking up the master again"
		waitfor.True(t, 10*time.Second, "the lookup failure", func() bool { return r.logged(want) != nil })
		if e := r.logged(want); !strings.Contains(e.Message, a) || !strings.Contains(e.Message, b) {
			t.Errorf("line %q does not name both registries", e.Message)
		}
		r.stop(t)
	})
}

// TestRunTakesNewMastersLists: a heartbeat reply with a list replaces the
// one held, and later heartbeats carry its version.
func TestRunTakesNewMastersLists(t *testing.T) {
	l := newLab(t)
	m1, m2 := l.master("m1"), l.master("m2")
	m1.setMasters(1, m1)
	l.reg.set(m1.addr)
	r := runSlave(t, l.config())
	joinedAt(t, r, m1)

	m1.setMasters(2, m1, m2)
	waitfor.True(t, 5*time.Second, "heartbeats at version 2", func() bool {
		hbs := m1.callsOf("Heartbeat")
		return len(hbs) > 0 && hbs[len(hbs)-1].mv == 2
	})
	if list, _ := r.s.masters.get(); describeMasters(list) != "m1 at "+m1.addr+" (leader), m2 at "+m2.addr {
		t.Errorf("masters = %s", describeMasters(list))
	}

	// A list with entries no slave should dial keeps only the good ones.
	m1.mu.Lock()
	m1.masters = []rpcdef.MasterAddr{{Name: "M1!", Addr: m1.addr}, {Name: "m2", Addr: "nowhere"}, {Name: "m3", Addr: "127.0.0.1:0"}, {Name: "m1", Addr: m1.addr}}
	m1.mastersVersion = 3
	m1.mu.Unlock()
	waitfor.True(t, 5*time.Second, "heartbeats at version 3", func() bool {
		hbs := m1.callsOf("Heartbeat")
		return len(hbs) > 0 && hbs[len(hbs)-1].mv == 3
	})
	if list, _ := r.s.masters.get(); describeMasters(list) != "m1 at "+m1.addr+" (leader)" {
		t.Errorf("masters = %s, want m1 alone", describeMasters(list))
	}
	if e := r.logged("sent a masters list with entries this slave will not dial"); e == nil || e.Level != logrus.WarnLevel {
		t.Errorf("bad list line = %v", e)
	}
	r.stop(t)
}

func ma(name, addr string) rpcdef.MasterAddr { return rpcdef.MasterAddr{Name: name, Addr: addr} }

func TestCleanMasters(t *testing.T) {
	many := make([]rpcdef.MasterAddr, rpcdef.MaxMasters+2)
	for i := range many {
		many[i] = rpcdef.MasterAddr{Name: fmt.Sprintf("m%d", i), Addr: fmt.Sprintf("10.0.0.%d:7112", i+1)}
	}
	tests := []struct {
		name string
		in   []rpcdef.MasterAddr
		keep int
		bad  string
	}{
		{"good", []rpcdef.MasterAddr{ma("m1", "10.0.0.1:7112"), ma("m2", "master-2.lab:7112"), ma("m3", "[2001:db8::1]:7112")}, 3, ""},
		{"bad name", []rpcdef.MasterAddr{ma("M1", "10.0.0.1:7112")}, 0, "entry 0: name \"M1\""},
		{"empty name", []rpcdef.MasterAddr{ma("", "10.0.0.1:7112")}, 0, "entry 0: name is empty"},
		{"no port", []rpcdef.MasterAddr{ma("m1", "10.0.0.1")}, 0, "is not HOST:PORT"},
		{"no host", []rpcdef.MasterAddr{ma("m1", ":7112")}, 0, "has no host"},
		{"port 0", []rpcdef.MasterAddr{ma("m1", "10.0.0.1:0")}, 0, "is not a number from 1 to 65535"},
		{"port name", []rpcdef.MasterAddr{ma("m1", "10.0.0.1:http")}, 0, "is not a number from 1 to 65535"},
		{"control character", []rpcdef.MasterAddr{ma("m1", "10.0.0.1\n:7112")}, 0, "in the host is not allowed"},
		{"long", []rpcdef.MasterAddr{ma("m1", strings.Repeat("a", 300)+":7112")}, 0, "bytes, at most"},
		{"repeated name", []rpcdef.MasterAddr{ma("m1", "10.0.0.1:7112"), ma("m1", "10.0.0.2:7112")}, 1, "entry 1: m1 at 10.0.0.2:7112 repeats"},
		{"repeated address", []rpcdef.MasterAddr{ma("m1", "10.0.0.1:7112"), ma("m2", "10.0.0.1:7112")}, 1, "entry 1: m2 at 10.0.0.1:7112 repeats"},
		{"too many", many, rpcdef.MaxMasters, "2 entries past the first 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, bad := cleanMasters(tt.in)
			if len(out) != tt.keep {
				t.Errorf("kept %d: %v, want %d", len(out), out, tt.keep)
			}
			got := strings.Join(bad, "; ")
			if (tt.bad == "") != (got == "") || !strings.Contains(got, tt.bad) {
				t.Errorf("bad = %q, want %q", got, tt.bad)
			}
		})
	}
}

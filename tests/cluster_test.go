package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// cluster is a registry, a master and slaves, each a real process.
type cluster struct {
	t      testing.TB
	l      *lab
	reg    *registryd
	master *proc
	mcfg   string
	slaves map[string]*slave
}

type slave struct {
	*proc
	name   string
	socket string
	config string
}

func newCluster(t *testing.T, masterSet map[string]string, slaves ...string) *cluster {
	t.Helper()
	return newClusterTB(t, masterSet, slaves...)
}

func newClusterTB(t testing.TB, masterSet map[string]string, slaves ...string) *cluster {
	t.Helper()
	l := newLab(t)
	c := &cluster{t: t, l: l, slaves: map[string]*slave{}}
	c.reg = startRegistryTB(t, l, map[string]string{"lease_ttl": `"3s"`})
	l.issue(pki.RoleMaster, "m1", "--host", "127.0.0.1")
	set := map[string]string{
		"listen":    `"127.0.0.1:0"`,
		"registry":  fmt.Sprintf("%q", c.reg.addr),
		"state_dir": fmt.Sprintf("%q", filepath.Join(l.dir, "state", "master")),
	}
	for k, v := range masterSet {
		set[k] = v
	}
	c.mcfg = l.config("master.toml", l.dir, set)
	c.startMaster()
	for _, n := range slaves {
		c.startSlave(n)
	}
	return c
}

func (c *cluster) startMaster() {
	c.t.Helper()
	c.master = start(c.t, "masterd", "--config", c.mcfg)
	c.master.ready() // logged once it has registered ClusterService/lab
}

// rollKept starts the stopped master again and returns how many members
// its raft state kept, as it logs them on taking the lead; then stops it.
// The registry may be gone: the master leads before it registers.
func (c *cluster) rollKept() int {
	c.t.Helper()
	p := start(c.t, "masterd", "--config", c.mcfg)
	m := p.waitLine(`leads the group in term \d+: (\d+) members`, 20*time.Second)
	p.kill()
	var n int
	fmt.Sscan(m[1], &n)
	return n
}

func (c *cluster) startSlave(name string) *slave {
	c.t.Helper()
	if _, err := os.Stat(c.l.files(pki.RoleSlave, name).Cert); err != nil {
		c.l.issue(pki.RoleSlave, name)
	}
	dir := filepath.Join(c.l.dir, name)
	s := &slave{name: name, socket: filepath.Join(c.l.dir, "run", "slaved-"+name+".sock")}
	s.config = c.l.config("slave.toml", dir, map[string]string{
		"node":     fmt.Sprintf("%q", name),
		"registry": fmt.Sprintf("%q", c.reg.addr),
		"socket":   fmt.Sprintf("%q", s.socket),
		"ca":       fmt.Sprintf("%q", filepath.Join(c.l.certs, "ca.pem")),
		"cert":     fmt.Sprintf("%q", c.l.files(pki.RoleSlave, name).Cert),
		"key":      fmt.Sprintf("%q", c.l.files(pki.RoleSlave, name).Key),
	})
	s.proc = start(c.t, "slaved", "--config", s.config)
	s.ready()
	c.slaves[name] = s
	return s
}

// view is a slave's own view, read over its local socket.
func (s *slave) view(t testing.TB) rpcdef.ViewReply {
	t.Helper()
	vc := rpcdef.NewViewClient(s.socket)
	defer vc.Close()
	v, err := vc.Get(ctx(t))
	if err != nil {
		t.Fatalf("view of %s: %v", s.name, err)
	}
	return v
}

func member(ms []rpcdef.Member, name string) (rpcdef.Member, int) {
	var found rpcdef.Member
	n := 0
	for _, m := range ms {
		if m.Name == name {
			found = m
			n++
		}
	}
	return found, n
}

// admin is a ClusterService client with an admin certificate.
func (c *cluster) client(role pki.Role, name string) *rpcdef.ClusterClient {
	c.t.Helper()
	f := c.l.files(role, name)
	if _, err := os.Stat(f.Cert); err != nil {
		c.l.issue(role, name)
	}
	st := c.l.store(f)
	e, err := tlsRegistry(c.t, st, c.reg.addr).Lookup(ctx(c.t), rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"})
	if err != nil {
		c.t.Fatalf("look up ClusterService/lab: %v", err)
	}
	cc := rpcdef.NewClusterClient("master", rpcdef.DialTLS(e.Addr, st.ClientConfig(pki.ExpectRole(pki.RoleMaster))))
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

// waitStatus waits until the master says node has status.
func (c *cluster) waitStatus(cc *rpcdef.ClusterClient, node string, st rpcdef.Status, timeout time.Duration) rpcdef.Member {
	c.t.Helper()
	var m rpcdef.Member
	waitFor(c.t, timeout, fmt.Sprintf("master to say %s is %s", node, st), func() (bool, string) {
		r, err := cc.Members(ctx(c.t), "")
		if err != nil {
			return false, err.Error()
		}
		var n int
		m, n = member(r.Members, node)
		return n == 1 && m.Status == st, fmt.Sprintf("%+v (%d rows)", m.Status, n)
	})
	return m
}

// waitAlive waits until the master says n members are alive, and returns
// when they were.
func (c *cluster) waitAlive(cc *rpcdef.ClusterClient, n int, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, fmt.Sprintf("%d alive members", n), func() (bool, string) {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := cc.Members(cctx, "")
		if err != nil {
			return false, err.Error()
		}
		alive := 0
		for _, m := range r.Members {
			if m.Status == rpcdef.StatusAlive {
				alive++
			}
		}
		return alive == n, fmt.Sprintf("%d of %d alive", alive, len(r.Members))
	})
}

// waitView waits until a slave's own view says node has status.
func (c *cluster) waitView(s *slave, node string, st rpcdef.Status, timeout time.Duration) rpcdef.Member {
	c.t.Helper()
	var m rpcdef.Member
	waitFor(c.t, timeout, fmt.Sprintf("%s's view to say %s is %s", s.name, node, st), func() (bool, string) {
		var n int
		m, n = member(s.view(c.t).Members, node)
		return n == 1 && m.Status == st, fmt.Sprintf("%s (%d rows)", m.Status, n)
	})
	return m
}

func TestClusterJoinCrashRejoinLeave(t *testing.T) {
	c := newCluster(t, nil, "node-1", "node-2", "node-3")
	admin := c.client(pki.RoleAdmin, "ops")

	// Three slaves join and show alive with real resource figures.
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 10*time.Second)
	}
	waitFor(t, 15*time.Second, "every slave's first report", func() (bool, string) {
		r, err := admin.Members(ctx(t), "")
		if err != nil {
			return false, err.Error()
		}
		for _, m := range r.Members {
			if m.Resources == nil {
				return false, m.Name + " has not reported"
			}
		}
		return len(r.Members) == 3, fmt.Sprintf("%d members", len(r.Members))
	})
	r, _ := admin.Members(ctx(t), "")
	for _, m := range r.Members {
		res := m.Resources
		if res.CPUCount <= 0 || res.MemTotal == 0 || res.MemUsedPercent <= 0 || res.Uptime <= 0 || res.Procs <= 0 || len(res.Disks) == 0 || res.Disks[0].Total == 0 {
			t.Fatalf("%s reported %+v: want real, non-zero figures", m.Name, res)
		}
		if m.Incarnation == 0 || !strings.HasPrefix(m.Addr, "127.0.0.1:") {
			t.Fatalf("%s: incarnation %d, address %q", m.Name, m.Incarnation, m.Addr)
		}
	}
	// Every slave sees the whole group.
	for _, s := range c.slaves {
		for _, n := range []string{"node-1", "node-2", "node-3"} {
			c.waitView(s, n, rpcdef.StatusAlive, 10*time.Second)
		}
	}

	// SIGKILL one: the other two slaves' views mark it dead.
	before, _ := member(r.Members, "node-2")
	c.slaves["node-2"].kill()
	killed := time.Now()
	c.waitView(c.slaves["node-1"], "node-2", rpcdef.StatusDead, 10*time.Second)
	c.waitView(c.slaves["node-3"], "node-2", rpcdef.StatusDead, 10*time.Second)
	t.Logf("node-2 SIGKILLed: dead in the other slaves' views after %v", time.Since(killed).Round(time.Millisecond))
	c.master.waitLine(`node-2 is now dead: connection closed`, 5*time.Second)

	// Restart it: rejoined with a higher incarnation, and no duplicate row.
	c.startSlave("node-2")
	m := c.waitStatus(admin, "node-2", rpcdef.StatusAlive, 10*time.Second)
	if m.Incarnation <= before.Incarnation {
		t.Fatalf("restarted node-2 has incarnation %d, want more than %d", m.Incarnation, before.Incarnation)
	}
	c.master.waitLine(`node-2 rejoined`, 5*time.Second)
	v := c.waitView(c.slaves["node-1"], "node-2", rpcdef.StatusAlive, 10*time.Second)
	if v.Incarnation != m.Incarnation {
		t.Fatalf("node-1's view has node-2 incarnation %d, the master %d", v.Incarnation, m.Incarnation)
	}
	r, _ = admin.Members(ctx(t), "")
	if _, n := member(r.Members, "node-2"); n != 1 || len(r.Members) != 3 {
		t.Fatalf("after the rejoin the roll has %d members and %d rows for node-2", len(r.Members), n)
	}

	// SIGTERM one: left, not dead.
	c.slaves["node-3"].stop()
	c.waitStatus(admin, "node-3", rpcdef.StatusLeft, 10*time.Second)
	c.waitView(c.slaves["node-1"], "node-3", rpcdef.StatusLeft, 10*time.Second)
	if c.master.count("node-3 is now dead") != 0 {
		t.Fatalf("node-3 left gracefully but was declared dead")
	}
	c.slaves["node-1"].stop()
	c.slaves["node-2"].stop()
	c.master.stop()
	c.master.waitLine(`unregistered`, time.Second)
	c.reg.stop()
}

func TestClusterIdentityRule(t *testing.T) {
	c := newCluster(t, nil, "node-b")
	admin := c.client(pki.RoleAdmin, "ops")
	c.waitStatus(admin, "node-b", rpcdef.StatusAlive, 10*time.Second)
	nodeA := c.client(pki.RoleSlave, "node-a")

	// node-a's certificate speaking as node-b.
	_, err := nodeA.Heartbeat(ctx(t), rpcdef.HeartbeatArgs{Node: "node-b", Incarnation: 1})
	if !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("Heartbeat as node-b with node-a's certificate: err = %v, want permission denied", err)
	}
	if _, err := nodeA.Join(ctx(t), rpcdef.JoinArgs{Node: "node-b", Incarnation: 1, Protocol: rpcdef.ProtocolVersion}); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("Join as node-b with node-a's certificate: err = %v, want permission denied", err)
	}
	if err := nodeA.Leave(ctx(t), rpcdef.LeaveArgs{Node: "node-b"}); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("Leave as node-b with node-a's certificate: err = %v, want permission denied", err)
	}
	c.master.waitLine(`impersonation attempt: spiffe://lab/slave/node-a sent Heartbeat as node-b`, 5*time.Second)

	// A slave certificate calling admin methods.
	if err := nodeA.Evict(ctx(t), "node-b", "test"); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("Evict with a slave certificate: err = %v, want permission denied", err)
	}
	if err := nodeA.Forget(ctx(t), "node-b"); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("Forget with a slave certificate: err = %v, want permission denied", err)
	}
	// An admin certificate may not pose as a slave either.
	if _, err := admin.Heartbeat(ctx(t), rpcdef.HeartbeatArgs{Node: "ops", Incarnation: 1}); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("Heartbeat with an admin certificate: err = %v, want permission denied", err)
	}
	// node-b was never disturbed.
	if m := c.waitStatus(admin, "node-b", rpcdef.StatusAlive, time.Second); m.Status != rpcdef.StatusAlive {
		t.Fatal(m)
	}
	if err := admin.Evict(ctx(t), "node-b", "test"); err != nil {
		t.Fatalf("admin Evict: %v", err)
	}
	// An evicted but running slave joins again by itself.
	c.waitStatus(admin, "node-b", rpcdef.StatusAlive, 10*time.Second)
	c.slaves["node-b"].stop()
	c.master.stop()
}

func TestClusterStaleIncarnation(t *testing.T) {
	c := newCluster(t, nil)
	admin := c.client(pki.RoleAdmin, "ops")
	nodeX := c.client(pki.RoleSlave, "node-x")
	join := func(inc uint64) error {
		_, err := nodeX.Join(ctx(t), rpcdef.JoinArgs{Node: "node-x", Incarnation: inc, Protocol: rpcdef.ProtocolVersion})
		return err
	}
	if err := join(100); err != nil {
		t.Fatal(err)
	}
	if err := join(200); err != nil { // a restarted process
		t.Fatal(err)
	}
	_, err := nodeX.Heartbeat(ctx(t), rpcdef.HeartbeatArgs{Node: "node-x", Incarnation: 100})
	if !errors.Is(err, rpcdef.ErrStaleIncarnation) || !strings.Contains(err.Error(), "must join again") {
		t.Fatalf("heartbeat from the old incarnation: err = %v, want stale incarnation telling it to join again", err)
	}
	if err := join(100); !errors.Is(err, rpcdef.ErrStaleIncarnation) {
		t.Fatalf("join of the old incarnation: err = %v, want stale incarnation", err)
	}
	m := c.waitStatus(admin, "node-x", rpcdef.StatusAlive, time.Second)
	if m.Incarnation != 200 {
		t.Fatalf("incarnation %d, want 200", m.Incarnation)
	}
	c.master.waitLine(`node-x rejoined: new incarnation 200 replaces 100`, time.Second)
}

func TestClusterMasterRestart(t *testing.T) {
	c := newCluster(t, nil, "node-1", "node-2", "node-3")
	admin := c.client(pki.RoleAdmin, "ops")
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 10*time.Second)
	}
	// Once the joins are committed (the views show them: they follow the
	// replicated events), kill the master without warning.
	c.waitView(c.slaves["node-1"], "node-3", rpcdef.StatusAlive, 10*time.Second)
	c.master.kill()
	// node-3 dies while the master is down.
	c.slaves["node-3"].kill()
	c.startMaster()
	c.master.waitLine(`leads the group in term \d+: 3 members`, 10*time.Second)

	admin = c.client(pki.RoleAdmin, "ops")
	c.waitStatus(admin, "node-1", rpcdef.StatusAlive, 15*time.Second)
	c.waitStatus(admin, "node-2", rpcdef.StatusAlive, 15*time.Second)
	m := c.waitStatus(admin, "node-3", rpcdef.StatusDead, 15*time.Second)
	if !strings.Contains(c.master.log.String(), "node-3 is now dead: not heard from") {
		t.Fatalf("node-3 dead for another reason: %+v", m)
	}
	c.waitView(c.slaves["node-1"], "node-3", rpcdef.StatusDead, 10*time.Second)
	c.waitView(c.slaves["node-1"], "node-2", rpcdef.StatusAlive, 10*time.Second)
	c.slaves["node-1"].stop()
	c.slaves["node-2"].stop()
	c.master.stop()
}

func TestClusterRegistryRestart(t *testing.T) {
	c := newCluster(t, nil, "node-1")
	admin := c.client(pki.RoleAdmin, "ops")
	c.waitStatus(admin, "node-1", rpcdef.StatusAlive, 10*time.Second)

	// Warm restart: the master's lease comes back stale and its renewal makes it live.
	c.reg.kill()
	c.reg.restart(t)
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	reg := tlsRegistry(t, c.l.store(c.l.files(pki.RoleAdmin, "ops")), c.reg.addr)
	waitFor(t, 10*time.Second, "the master's entry to be live again", func() (bool, string) {
		e, err := reg.Lookup(ctx(t), key)
		return err == nil && e.State == rpcdef.StateLive, fmt.Sprintf("%+v %v", e, err)
	})
	c.startSlave("node-2")
	c.waitStatus(admin, "node-2", rpcdef.StatusAlive, 10*time.Second)

	// Cold restart: the registry lost its table; the master registers again.
	c.reg.kill()
	if err := os.RemoveAll(filepath.Join(c.l.dir, "state", "registry")); err != nil {
		t.Fatal(err)
	}
	c.reg.restart(t)
	c.master.waitLine(`registering again`, 15*time.Second)
	waitFor(t, 10*time.Second, "the master to register again", func() (bool, string) {
		e, err := reg.Lookup(ctx(t), key)
		return err == nil && e.State == rpcdef.StateLive, fmt.Sprintf("%+v %v", e, err)
	})
	c.startSlave("node-3")
	c.waitStatus(admin, "node-3", rpcdef.StatusAlive, 10*time.Second)
	c.master.stop()
}

package tests

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// blackhole forwards TCP to target until Drop, after which it reads and
// discards in both directions and closes nothing: no FIN, no RST, as a
// partitioned network behaves.
type blackhole struct {
	ln      net.Listener
	target  string
	dropped atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	go func() {
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
			b.mu.Lock()
			b.conns = append(b.conns, c, up)
			b.mu.Unlock()
			go b.pipe(c, up)
			go b.pipe(up, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			if !b.dropped.Load() {
				dst.Close()
			}
			return
		}
		if !b.dropped.Load() {
			dst.Write(buf[:n])
		}
	}
}

func (b *blackhole) Drop() { b.dropped.Store(true) }

// A slave whose connection is black-holed is declared dead by the heartbeat
// detector: nothing closes, so only its silence tells.
func TestFaultBlackHoledSlave(t *testing.T) {
	c := newCluster(t, nil, "node-1")
	admin := c.client(pki.RoleAdmin, "ops")
	w := c.watch(t)
	masterAddr := c.master.waitLine(`msg=ready addr="?([^" ]+)"?`, time.Second)[1]
	bh := newBlackhole(t, masterAddr)

	// A slave of the test's own, whose heartbeats go through the proxy.
	c.l.issue(pki.RoleSlave, "node-bh")
	st := c.l.store(c.l.files(pki.RoleSlave, "node-bh"))
	sc := rpcdef.NewClusterClient("master via proxy", rpcdef.DialTLS(bh.ln.Addr().String(), st.ClientConfig(pki.ExpectRole(pki.RoleMaster))))
	defer sc.Close()
	if _, err := sc.Join(ctx(t), rpcdef.JoinArgs{Node: "node-bh", Incarnation: 1, Protocol: rpcdef.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	hbCtx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for seq := uint64(1); seq < 120; seq++ {
			select {
			case <-hbCtx.Done():
				return
			case <-tick.C:
			}
			cctx, cancel := context.WithTimeout(hbCtx, 2*time.Second)
			sc.Heartbeat(cctx, rpcdef.HeartbeatArgs{Node: "node-bh", Incarnation: 1, Seq: seq})
			cancel()
		}
	}()
	c.waitStatus(admin, "node-bh", rpcdef.StatusAlive, 5*time.Second)
	waitFor(t, 10*time.Second, "a few heartbeats through the proxy", func() (bool, string) {
		m := c.waitStatus(admin, "node-bh", rpcdef.StatusAlive, time.Second)
		return time.Since(m.JoinedAt) > 4*time.Second, "warming up"
	})
	bh.Drop()
	dropped := time.Now()
	e := w.next(t, "node-bh", rpcdef.EventDead, 10*time.Second)
	if !strings.Contains(e.Reason, "no heartbeat for") {
		t.Fatalf("black-holed slave dead for %q, want the heartbeat detector", e.Reason)
	}
	// Still warming up (fewer than 16 heartbeats): the detector is tolerant, but bounded by max_dead.
	if d := e.At.Sub(dropped); d > 5*time.Second+500*time.Millisecond {
		t.Fatalf("black-holed slave declared dead %v after the drop, past max_dead", d)
	}
	c.waitView(c.slaves["node-1"], "node-bh", rpcdef.StatusDead, 5*time.Second)
	c.waitStatus(admin, "node-1", rpcdef.StatusAlive, time.Second)
}

// A master paused for three times max_dead does not declare the cluster dead
// when it wakes: its own stall is not the slaves' failure.
func TestFaultMasterStalled(t *testing.T) {
	c := newCluster(t, nil, "node-1", "node-2", "node-3")
	admin := c.client(pki.RoleAdmin, "ops")
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 10*time.Second)
	}
	stopped := time.Now()
	c.master.cmd.Process.Signal(syscall.SIGSTOP)
	waitFor(t, 30*time.Second, "3 x max_dead with the master stopped", func() (bool, string) {
		return time.Since(stopped) > 15*time.Second, ""
	})
	c.master.cmd.Process.Signal(syscall.SIGCONT)
	c.master.waitLine(`the master itself stalled for 1[0-9][.s]`, 5*time.Second)
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 15*time.Second)
	}
	// Past the recovery window, still nobody dead.
	waitFor(t, 15*time.Second, "the recovery window to pass", func() (bool, string) {
		return time.Since(stopped) > 15*time.Second+7*time.Second, ""
	})
	if n := c.master.count("is now dead"); n != 0 {
		t.Fatalf("the master declared %d deaths after its own stall:\n%s", n, c.master.log.String())
	}
	// And detection still works afterwards.
	c.slaves["node-2"].kill()
	c.waitStatus(admin, "node-2", rpcdef.StatusDead, 10*time.Second)
}

// The registry gone for 30 s while slaves come and go: the cluster goes on,
// crashes are still detected, and newcomers join once it is back.
func TestFaultRegistryGone(t *testing.T) {
	c := newCluster(t, nil, "node-1", "node-2", "node-3")
	admin := c.client(pki.RoleAdmin, "ops")
	w := c.watch(t)
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 10*time.Second)
	}
	c.reg.kill()
	gone := time.Now()

	c.slaves["node-2"].kill() // a crash: detected without the registry
	w.next(t, "node-2", rpcdef.EventDead, 5*time.Second)
	c.slaves["node-3"].stop() // a leave
	w.next(t, "node-3", rpcdef.EventLeft, 5*time.Second)
	// A newcomer cannot find the master yet, and says so.
	c.l.issue(pki.RoleSlave, "node-4")
	s4 := &slave{name: "node-4"}
	s4.socket = c.l.dir + "/run/slaved-node-4.sock"
	s4.config = c.l.config("slave.toml", c.l.dir+"/node-4", map[string]string{
		"node": `"node-4"`, "registry": `"` + c.reg.addr + `"`, "socket": `"` + s4.socket + `"`,
		"ca": `"` + c.l.files(pki.RoleSlave, "node-4").CA + `"`, "cert": `"` + c.l.files(pki.RoleSlave, "node-4").Cert + `"`,
		"key": `"` + c.l.files(pki.RoleSlave, "node-4").Key + `"`,
	})
	s4.proc = start(t, "slaved", "--config", s4.config)
	s4.waitLine(`registry`, 10*time.Second)

	waitFor(t, 40*time.Second, "30 s without a registry", func() (bool, string) {
		return time.Since(gone) > 30*time.Second, ""
	})
	m := c.waitStatus(admin, "node-1", rpcdef.StatusAlive, time.Second)
	if m.Status != rpcdef.StatusAlive {
		t.Fatal(m)
	}
	c.reg.restart(t)
	s4.ready()
	c.waitStatus(admin, "node-4", rpcdef.StatusAlive, 15*time.Second)
	c.waitView(c.slaves["node-1"], "node-4", rpcdef.StatusAlive, 5*time.Second)
	if n := c.master.count("node-1 is now dead"); n != 0 {
		t.Fatal("node-1 was declared dead while the registry was away")
	}
	s4.stop()
	c.slaves["node-1"].stop()
	c.master.stop()
}

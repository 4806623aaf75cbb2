package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// insider is a cluster of three real slaves, and an attacker holding one
// valid slave certificate of its own (mole), as issue 12 asks: whatever the
// mole does, only its own row may change.
type insider struct {
	*cluster
	admin         *rpcdef.ClusterClient
	watch         *watcher
	moleSt        *pki.Store
	masterAddr    string
	masterPprof   string
	regPprof      string
	base, regBase health
}

var honest = []string{"node-1", "node-2", "node-3"}

func newInsider(t *testing.T) *insider {
	l := newLab(t)
	x := &insider{masterPprof: freePort(t), regPprof: freePort(t)}
	r := startRegistry(t, l, map[string]string{"lease_ttl": `"3s"`, "pprof": fmt.Sprintf("%q", x.regPprof)})
	c := &cluster{t: t, l: l, reg: r, slaves: map[string]*slave{}}
	l.issue(pki.RoleMaster, "m1", "--host", "127.0.0.1")
	c.mcfg = l.config("master.toml", l.dir, map[string]string{
		"listen": `"127.0.0.1:0"`, "registry": fmt.Sprintf("%q", r.addr),
		"state_dir": fmt.Sprintf("%q", l.dir+"/state/master"), "pprof": fmt.Sprintf("%q", x.masterPprof),
	})
	c.startMaster()
	x.cluster = c
	x.masterAddr = c.master.waitLine(`msg=ready addr="?([^" ]+)"?`, time.Second)[1]
	for _, n := range honest {
		c.startSlave(n)
	}
	x.admin = c.client(pki.RoleAdmin, "ops")
	for _, n := range honest {
		c.waitStatus(x.admin, n, rpcdef.StatusAlive, 10*time.Second)
	}
	x.moleSt = l.store(l.issue(pki.RoleSlave, "mole"))
	x.watch = c.watch(t)
	x.base, x.regBase = readHealth(t, x.masterPprof), readHealth(t, x.regPprof)
	return x
}

// dial opens a raw TLS connection to addr with the mole's certificate.
func (x *insider) dial(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, x.moleSt.ClientConfig(nil))
	if err != nil {
		t.Fatalf("dial %s as the mole: %v", addr, err)
	}
	return conn
}

// masterClient is a ClusterService client of the master with st's certificate.
func (x *insider) masterClient(st *pki.Store) *rpcdef.ClusterClient {
	return rpcdef.NewClusterClient("master", rpcdef.DialTLS(x.masterAddr, st.ClientConfig(pki.ExpectRole(pki.RoleMaster))))
}

// calm checks for d that no honest member is suspected meanwhile.
func (x *insider) calm(t *testing.T, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		x.unharmedQuick(t)
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// mole is a ClusterService client with the mole's certificate, joined.
func (x *insider) mole(t *testing.T, inc uint64) *rpcdef.ClusterClient {
	t.Helper()
	cc := x.masterClient(x.moleSt)
	t.Cleanup(func() { cc.Close() })
	if _, err := cc.Join(ctx(t), rpcdef.JoinArgs{Node: "mole", Incarnation: inc, Protocol: rpcdef.ProtocolVersion, NoRoll: true}); err != nil {
		t.Fatalf("the mole's join: %v", err)
	}
	return cc
}

// unharmed checks what issue 12 asks after every attack: no honest member
// was suspected or declared dead, each slave's own view has all three
// alive, rpc-query members and top answer, and both daemons are back near
// their baseline of goroutines and heap.
func (x *insider) unharmed(t *testing.T) {
	t.Helper()
	x.unharmedQuick(t)
	for _, s := range x.slaves {
		for _, n := range honest {
			if m, k := member(s.view(t).Members, n); k != 1 || m.Status != rpcdef.StatusAlive {
				t.Fatalf("%s's view says %s is %q (%d rows)", s.name, n, m.Status, k)
			}
		}
	}
	env := x.adminEnv()
	for _, cmd := range []string{"members", "top"} {
		waitFor(t, 10*time.Second, "rpc-query "+cmd+" to answer", func() (bool, string) {
			out, code := run(t, env, "rpc-query", cmd)
			return code == 0 && strings.Contains(out, "node-1"), fmt.Sprintf("exit %d: %.300s", code, out)
		})
	}
	settled(t, x.masterPprof, x.base)
	settled(t, x.regPprof, x.regBase)
}

// expectClosedWithin reads conn until the peer closes it, and fails if
// that takes longer than d.
func expectClosedWithin(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the daemon kept the connection open for more than %v", d)
	}
}

// TestInsider runs each finding of issue 12 in turn against one cluster.
func TestInsider(t *testing.T) {
	x := newInsider(t)

	t.Run("1 huge leave reasons", func(t *testing.T) {
		x.mole(t, 1)
		// Each oversized request costs the mole its connection: a new
		// client for each, as an attacker would.
		leave := func(reason string) error {
			cc := x.masterClient(x.moleSt)
			defer cc.Close()
			return cc.Leave(ctx(t), rpcdef.LeaveArgs{Node: "mole", Incarnation: 1, Reason: reason})
		}
		if err := leave(strings.Repeat("x", 16<<20-4096)); err == nil {
			t.Fatal("a leave with a 16 MiB reason was taken")
		}
		for range 25 {
			if err := leave(strings.Repeat("x", 4<<20)); err == nil {
				t.Fatal("a leave with a 4 MiB reason was taken")
			}
		}
		err := leave(strings.Repeat("x", rpcdef.MaxReasonLen+1))
		if !errors.Is(err, rpcdef.ErrInvalid) || !strings.Contains(err.Error(), "Reason") {
			t.Fatalf("a reason one byte over the limit: %v, want an invalid argument naming Reason", err)
		}
		// The oversized ones closed connections of the mole: it may be
		// dead by now, which is its own business. Back, and gone politely.
		cc := x.mole(t, 1)
		if err := cc.Leave(ctx(t), rpcdef.LeaveArgs{Node: "mole", Incarnation: 1, Reason: "done"}); err != nil {
			t.Fatalf("a short reason: %v", err)
		}
		x.watch.next(t, "mole", rpcdef.EventLeft, 5*time.Second)
		x.unharmed(t)
	})

	t.Run("2 pipelined watches on one connection", func(t *testing.T) {
		conn := x.dial(t, x.masterAddr)
		defer conn.Close()
		w := bufio.NewWriterSize(conn, 64<<10)
		enc := gob.NewEncoder(w)
		conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		sent := 0
		for i := range 100000 {
			if enc.Encode(&rpc.Request{ServiceMethod: rpcdef.ClusterWatch, Seq: uint64(i)}) != nil ||
				enc.Encode(&rpcdef.WatchArgs{After: math.MaxUint64 - 1, Wait: 20 * time.Second}) != nil {
				break // the master stopped reading us: what it should do
			}
			sent++
		}
		w.Flush()
		t.Logf("%d Watch calls pipelined, never read", sent)
		// The mole reads nothing: the master's replies back up, and its
		// write timeout ends the connection.
		x.unharmed(t)
	})

	t.Run("3 a length prefix and a drip", func(t *testing.T) {
		for _, target := range []string{x.masterAddr, x.reg.addr} {
			var conns []*tls.Conn
			for range 50 {
				conn := x.dial(t, target)
				conns = append(conns, conn)
				// gob's length prefix for 16,777,216 bytes: 0xfc, then 4 bytes.
				conn.Write([]byte{0xfc, 0x01, 0x00, 0x00, 0x00})
				conn.Write(make([]byte, 64<<10))
			}
			var wg sync.WaitGroup
			for _, conn := range conns {
				wg.Go(func() {
					defer conn.Close()
					// One byte every 2 s while the daemon lets us: it must
					// close within the whole-message deadline.
					done := make(chan struct{})
					go func() {
						defer close(done)
						for range 15 {
							if _, err := conn.Write([]byte{0}); err != nil {
								return
							}
							select {
							case <-time.After(2 * time.Second): // the drip's pace
							case <-done:
								return
							}
						}
					}()
					expectClosedWithin(t, conn, 25*time.Second)
				})
			}
			wg.Wait()
		}
		x.unharmed(t)
	})

	t.Run("4 huge and poisoned reports", func(t *testing.T) {
		cc := x.mole(t, 2)
		good := rpcdef.Resources{SampledAt: time.Now(), CPUCount: 1, CPUModel: "x", Disks: []rpcdef.DiskUsage{{Mount: "/"}}}
		bad := map[string]func(r *rpcdef.Resources){
			"16 MiB CPU model": func(r *rpcdef.Resources) { r.CPUModel = strings.Repeat("x", 16<<20-4096) },
			"long CPU model":   func(r *rpcdef.Resources) { r.CPUModel = strings.Repeat("x", rpcdef.MaxCPUModelLen+1) },
			"many disks": func(r *rpcdef.Resources) {
				r.Disks = make([]rpcdef.DiskUsage, rpcdef.MaxDisks+1)
			},
			"long mount":  func(r *rpcdef.Resources) { r.Disks[0].Mount = "/" + strings.Repeat("m", rpcdef.MaxMountLen) },
			"NaN CPU":     func(r *rpcdef.Resources) { r.CPUPercent = math.NaN() },
			"infinite":    func(r *rpcdef.Resources) { r.Load1 = math.Inf(1) },
			"150% memory": func(r *rpcdef.Resources) { r.MemUsedPercent = 150 },
		}
		for name, spoil := range bad {
			r := good
			r.Disks = append([]rpcdef.DiskUsage(nil), good.Disks...)
			spoil(&r)
			if _, err := cc.Report(ctx(t), rpcdef.ReportArgs{Node: "mole", Incarnation: 2, Resources: r}); err == nil {
				t.Fatalf("%s: the report was taken", name)
			}
		}
		if _, err := cc.Report(ctx(t), rpcdef.ReportArgs{Node: "mole", Incarnation: 2, Resources: good}); err != nil {
			// The connection may have been closed by an oversized one: a
			// new one must work.
			if _, err := cc.Report(ctx(t), rpcdef.ReportArgs{Node: "mole", Incarnation: 2, Resources: good}); err != nil {
				t.Fatalf("a good report: %v", err)
			}
		}
		r, err := x.admin.Members(ctx(t), "")
		if err != nil {
			t.Fatalf("the roll after the attack: %v", err)
		}
		if m, _ := member(r.Members, "mole"); m.Resources == nil || len(m.Resources.CPUModel) > rpcdef.MaxCPUModelLen {
			t.Fatalf("the mole's row: %+v", m.Resources)
		}
		x.unharmed(t)
	})

	t.Run("5 diagnostics with a slave's own certificate", func(t *testing.T) {
		f := x.l.files(pki.RoleSlave, "node-1")
		env := []string{"MUSTER_REGISTRY_SOCKET=" + x.reg.socket, "MUSTER_CA=" + f.CA, "MUSTER_CERT=" + f.Cert, "MUSTER_KEY=" + f.Key}
		for range 6 {
			// rpc-query watch for 0.4 s, and a heartbeat, with node-1's
			// certificate: the issue's reproduction.
			wctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
			w := exec.CommandContext(wctx, bin("rpc-query"), "watch")
			w.Env = append(os.Environ(), env...)
			w.Run()
			cancel()
			run(t, env, "rpc-query", "heartbeat", "node-1")
			// A watch for 0.4 s with node-1's certificate, then gone.
			cc := x.masterClient(x.l.store(f))
			cc.Watch(ctx(t), 0, 400*time.Millisecond)
			cc.Close()
		}
		// Evidence would have had node-1 dead within the close grace
		// (500 ms) and a heartbeat; give it three.
		x.calm(t, 3*time.Second)
		x.unharmed(t)
	})

	t.Run("5 four diagnostics at once", func(t *testing.T) {
		st := x.l.store(x.l.files(pki.RoleSlave, "node-1"))
		r, err := x.admin.Members(ctx(t), "node-1")
		if err != nil {
			t.Fatal(err)
		}
		inc := r.Members[0].Incarnation
		for range 3 {
			var ccs []*rpcdef.ClusterClient
			for range 4 {
				cc := x.masterClient(st)
				if _, err := cc.Heartbeat(ctx(t), rpcdef.HeartbeatArgs{Node: "node-1", Incarnation: inc}); err != nil {
					t.Fatalf("a diagnostic heartbeat: %v", err)
				}
				ccs = append(ccs, cc)
			}
			for _, cc := range ccs {
				cc.Close()
			}
		}
		x.calm(t, 2*time.Second)
		x.unharmed(t)
	})

	t.Run("8 the roll in a loop, and refusals with huge names", func(t *testing.T) {
		cc := x.mole(t, 50000)
		refused := 0
		for range 100 {
			if _, err := cc.Members(ctx(t), ""); errors.Is(err, rpcdef.ErrUnavailable) {
				refused++
			}
		}
		if refused < 90 {
			t.Fatalf("%d of 100 rolls in a row refused to one slave certificate, want all but its burst", refused)
		}
		logBefore := len(x.master.log.String())
		conn := x.dial(t, x.masterAddr)
		cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(conn, 0))
		defer cl.Close()
		big := strings.Repeat("n", 60<<10)
		var calls []*rpc.Call
		for range 1000 {
			calls = append(calls, cl.Go(rpcdef.ClusterHeartbeat, &rpcdef.HeartbeatArgs{Node: big, Incarnation: 1}, &rpcdef.HeartbeatReply{}, nil))
		}
		for _, c := range calls {
			<-c.Done
			if c.Error == nil {
				t.Fatal("a heartbeat as another node was taken")
			}
		}
		if grew := len(x.master.log.String()) - logBefore; grew > 16<<10 {
			t.Fatalf("1,000 refused impersonations with 60 KiB names grew masterd's log by %d bytes", grew)
		}
		x.unharmed(t)
	})

	t.Run("6 a join flood", func(t *testing.T) {
		conn := x.dial(t, x.masterAddr)
		cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(conn, 0))
		defer cl.Close()
		const joins = 20000
		before := map[string]int{}
		for _, s := range x.slaves {
			before[s.name] = s.count("mole")
		}
		calls := make([]*rpc.Call, 0, joins)
		start := time.Now()
		for i := range joins {
			calls = append(calls, cl.Go(rpcdef.ClusterJoin, &rpcdef.JoinArgs{Node: "mole", Incarnation: uint64(1_000_000 + i), Protocol: rpcdef.ProtocolVersion, NoRoll: true}, &rpcdef.JoinReply{}, nil))
		}
		accepted := 0
		for _, c := range calls {
			select {
			case <-c.Done:
				if c.Error == nil {
					accepted++
				}
			case <-time.After(30 * time.Second):
				t.Fatal("a join of the flood got no answer in 30 s")
			}
		}
		took := time.Since(start)
		t.Logf("%d of %d joins accepted in %v", accepted, joins, took)
		if accepted != joins {
			t.Fatalf("%d of %d joins with fresh incarnations accepted: the flood did not reach the roll", accepted, joins)
		}
		// The rest of the cluster hears of the mole at most its budget's
		// worth: a burst of 8, one a second after, and the one that
		// folds the rest.
		most := 8 + int(took.Seconds()+2) + 2
		waitFor(t, 5*time.Second, "the folded event", func() (bool, string) {
			n := x.slaves["node-1"].count("mole") - before["node-1"]
			return n > 0, fmt.Sprint(n)
		})
		for _, s := range x.slaves {
			if n := s.count("mole") - before[s.name]; n > most {
				t.Fatalf("%s logged %d lines about the mole, for %d joins in %v; want at most %d", s.name, n, joins, took, most)
			}
		}
		x.unharmed(t)
	})

	t.Run("6 idle connections from one certificate", func(t *testing.T) {
		for _, target := range []string{x.masterAddr, x.reg.addr} {
			var conns []net.Conn
			refused := 0
			for range 200 {
				conn, err := tls.Dial("tcp", target, x.moleSt.ClientConfig(nil))
				if err != nil {
					refused++
					continue
				}
				// A refused one is closed at once after its handshake.
				conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := conn.Read(make([]byte, 1)); err != nil && !errors_isTimeout(err) {
					refused++
					conn.Close()
					continue
				}
				conns = append(conns, conn)
			}
			t.Logf("%s: %d of 200 idle connections kept, %d refused", target, len(conns), refused)
			if len(conns) > 64 {
				t.Fatalf("%s kept %d idle connections of one certificate", target, len(conns))
			}
			// Another identity still gets in, and is served.
			x.unharmedQuick(t)
			if _, err := x.admin.Members(ctx(t), ""); err != nil {
				t.Fatalf("an admin while the mole holds its connections: %v", err)
			}
			for _, c := range conns {
				c.Close()
			}
		}
		x.unharmed(t)
	})

	t.Run("7 another cluster's instance", func(t *testing.T) {
		m1 := tlsRegistry(t, x.l.store(x.l.files(pki.RoleMaster, "m1")), x.reg.addr)
		_, err := m1.Register(ctx(t), rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "prod"}, Version: rpcdef.ClusterVersion, Addr: "127.0.0.1:9"})
		if !errors.Is(err, rpcdef.ErrPermission) || !strings.Contains(err.Error(), "registers only the instance ClusterService/lab") {
			t.Fatalf("a master of lab registering ClusterService/prod: %v", err)
		}
		x.unharmed(t)
	})
}

// unharmedQuick is unharmed's first check alone: no honest member suspected
// or dead so far.
func (x *insider) unharmedQuick(t *testing.T) {
	t.Helper()
	for {
		select {
		case e := <-x.watch.events:
			if e.Node != "mole" && (e.Kind == rpcdef.EventSuspect || e.Kind == rpcdef.EventDead) {
				t.Fatalf("an honest member was harmed: %s %s (%s)", e.Node, e.Kind, e.Reason)
			}
			if len(e.Reason) > rpcdef.MaxReasonLen+128 {
				t.Fatalf("an event of %s carries a reason of %d bytes", e.Node, len(e.Reason))
			}
		default:
			return
		}
	}
}

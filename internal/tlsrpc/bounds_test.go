package tlsrpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/pki/pkitest"
	"github.com/muster-lab/muster/internal/waitfor"
	"github.com/muster-lab/muster/rpcdef"
)

// lab is a cluster CA that issues the certificates a test needs.
type lab struct{ *pkitest.CA }

func newLab(tb testing.TB) *lab { return &lab{pkitest.New(tb, "lab")} }

// store is a store for a certificate of role/name on 127.0.0.1.
func (l *lab) store(role pki.Role, name string) *pki.Store { return l.NodeStore(role, name) }

// serve serves attach's receivers on ln with tlsConf (nil: a UNIX socket)
// until the test ends, with its log in the test's.
func serve(tb testing.TB, ln net.Listener, tlsConf *tls.Config, opts Options, attach Attach) *Server {
	tb.Helper()
	srv, err := New(ln, tlsConf, opts, attach, logtest.New(tb))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return srv
}

// serveTLS serves attach's receivers over mutual TLS on 127.0.0.1:0, with a
// registry certificate of l, until the test ends.
func serveTLS(tb testing.TB, l *lab, opts Options, attach Attach) (string, *Server) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln.Addr().String(), serve(tb, ln, l.store(pki.RoleRegistry, "reg").ServerConfig(), opts, attach)
}

// dialTLS opens a connection to addr with st's certificate, handshake done.
func dialTLS(tb testing.TB, addr string, st *pki.Store) *tls.Conn {
	c, err := tls.Dial("tcp", addr, st.ClientConfig(nil))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// sink's methods take what they are sent, and Wait blocks as a long poll
// does, until released or its connection ends.
type sink struct {
	peer    Peer
	release chan struct{}
	waiting chan struct{}
}

type Blob struct{ B []byte }

func (s *sink) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }
func (s *sink) Take(_ *Blob, _ *rpcdef.Empty) error         { return nil }

func (s *sink) Wait(_ *rpcdef.Empty, _ *rpcdef.Empty) error {
	return longPoll(s.peer, s.waiting, s.release)
}

// longPoll is a handler that waits as a long poll does: it calls Block,
// says it waits, and returns once released or when its connection ends.
func longPoll(p Peer, waiting, release chan struct{}) error {
	if err := p.Block(); err != nil {
		return err
	}
	waiting <- struct{}{}
	select {
	case <-release:
		return nil
	case <-p.Done:
		return errors.New("connection closed")
	}
}

// sinks attaches a sink to every connection, and hands each to the test.
func sinks(ch chan *sink) Attach {
	return func(srv *rpc.Server, p Peer) (func(), error) {
		s := &sink{peer: p, release: make(chan struct{}), waiting: make(chan struct{}, 1024)}
		if ch != nil {
			ch <- s
		}
		return nil, srv.RegisterName("S", s)
	}
}

// waitFor polls cond until it holds, or fails the test after d.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	waitfor.State(tb, d, what, cond)
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// call makes one call on cl, bounded by a deadline.
func call(tb testing.TB, cl *rpc.Client, method string, args any) error {
	tb.Helper()
	c := cl.Go(method, args, &rpcdef.Empty{}, make(chan *rpc.Call, 1))
	select {
	case <-c.Done:
		return c.Error
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s: no reply in 10s", method)
		return nil
	}
}

// The drip attack of issue 12: after a good call, a length prefix claiming
// 16 MiB, 1 MiB of it, then a byte every few milliseconds. Each byte used
// to move the idle deadline, holding the message's buffer for ever; now the
// message must be whole MessageTimeout after its first byte, and the
// server's heap and goroutines come back once it is closed.
func TestDripClosedAfterMessageTimeout(t *testing.T) {
	l := newLab(t)
	const timeout = 2 * time.Second
	addr, srv := serveTLS(t, l, Options{Inline: true, MessageTimeout: timeout, IdleTimeout: time.Minute}, sinks(nil))
	slave := l.store(pki.RoleSlave, "node-1")
	baseHeap, baseG := liveHeap(), runtime.NumGoroutine()

	const attackers = 4
	stop := make(chan struct{})
	defer close(stop)
	dripped := make(chan int, attackers)
	start := time.Now()
	for range attackers {
		tc := dialTLS(t, addr, slave)
		cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(tc, 0))
		if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
			t.Fatalf("a good call first: %v", err)
		}
		// gob's count: 0xfc is "4 bytes follow", then 16 MiB big-endian.
		if _, err := tc.Write(append([]byte{0xfc, 0x01, 0x00, 0x00, 0x00}, make([]byte, 1<<20)...)); err != nil {
			t.Fatal(err)
		}
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					dripped <- n
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := tc.Write([]byte{0}); err != nil {
					dripped <- n
					return
				}
				n++
			}
		}()
	}
	// The claim is believed (gob allocates up to 10 MiB for it at once):
	// what the deadline must give back.
	waitFor(t, timeout, "the attack to pin memory", func() (bool, string) {
		h := liveHeap()
		return h > baseHeap+attackers*8<<20, fmt.Sprintf("live heap %d MiB, %d MiB before", h>>20, baseHeap>>20)
	})
	waitFor(t, 10*time.Second, "the dripping connections to be closed", func() (bool, string) {
		return srv.Refused(RefusedSlow) == attackers && srv.Conns() == 0,
			fmt.Sprintf("%d refused as slow, %d open", srv.Refused(RefusedSlow), srv.Conns())
	})
	took := time.Since(start)
	t.Logf("closed %d dripping connections %v after their first byte (MessageTimeout %v, IdleTimeout 1m)", attackers, took.Round(time.Millisecond), timeout)
	if took < timeout {
		t.Fatalf("closed after %v, before the message timeout of %v", took, timeout)
	}
	for range attackers {
		if n := <-dripped; n == 0 {
			t.Fatal("an attacker dripped no byte: the test did not try the drip")
		}
	}
	waitFor(t, 10*time.Second, "the heap and goroutines to come back", func() (bool, string) {
		h, g := liveHeap(), runtime.NumGoroutine()
		return h < baseHeap+4<<20 && g <= baseG+2,
			fmt.Sprintf("live heap %d MiB (%d before), %d goroutines (%d before)", h>>20, baseHeap>>20, g, baseG)
	})
	if n := srv.Refused(RefusedMessage); n != 0 {
		t.Fatalf("%d counted as bad messages too", n)
	}
}

// A message that takes its time, but less than MessageTimeout, is served;
// and so is a connection idle between messages for longer than it.
func TestSlowButTimelyMessageServed(t *testing.T) {
	l := newLab(t)
	const timeout = time.Second
	addr, srv := serveTLS(t, l, Options{Inline: true, MessageTimeout: timeout, IdleTimeout: time.Minute}, sinks(nil))
	tc := dialTLS(t, addr, l.store(pki.RoleAdmin, "ops"))
	cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(&slowWriter{Conn: tc, chunk: 64 << 10, pause: 20 * time.Millisecond}, 0))
	if err := call(t, cl, "S.Take", &Blob{B: make([]byte, 1<<20)}); err != nil {
		t.Fatalf("a 1 MiB request sent over ~%v: %v", 16*20*time.Millisecond, err)
	}
	// Waiting is what is tested: longer than the message timeout, between messages.
	time.Sleep(2 * timeout)
	if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
		t.Fatalf("a call after %v idle: %v", 2*timeout, err)
	}
	if n := srv.Refused(RefusedSlow); n != 0 {
		t.Fatalf("%d connections refused as slow", n)
	}
}

// slowWriter sends what it is given chunk bytes at a time, pausing between.
type slowWriter struct {
	net.Conn
	chunk int
	pause time.Duration
}

func (w *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(w.chunk, len(p))
		m, err := w.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
		if len(p) > 0 {
			time.Sleep(w.pause) // the slowness is the point
		}
	}
	return n, nil
}

// A connection that sends no request is closed FirstRequestTimeout after
// its handshake, on TLS and on the local socket; one that has sent one is
// then held to the idle timeout.
func TestFirstRequestTimeout(t *testing.T) {
	const first = 300 * time.Millisecond
	opts := Options{FirstRequestTimeout: first, IdleTimeout: time.Minute}
	l := newLab(t)
	tlsAddr, tlsSrv := serveTLS(t, l, opts, sinks(nil))
	unixPath, unixSrv := serveUnix(t, opts, sinks(nil))
	admin := l.store(pki.RoleAdmin, "ops")
	for _, tc := range []struct {
		name string
		srv  *Server
		dial func() net.Conn
	}{
		{"tls", tlsSrv, func() net.Conn { return dialTLS(t, tlsAddr, admin) }},
		{"unix", unixSrv, func() net.Conn {
			c, err := net.Dial("unix", unixPath)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			silent := tc.dial()
			start := time.Now()
			silent.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a silent connection got %d bytes, err %v: not closed", n, err)
			}
			took := time.Since(start)
			t.Logf("silent connection closed after %v (FirstRequestTimeout %v)", took.Round(time.Millisecond), first)
			if took < first*3/4 {
				t.Fatalf("closed after %v, before the first request's %v", took, first)
			}
			waitFor(t, 5*time.Second, "the refusal to be counted", func() (bool, string) {
				return tc.srv.Refused(RefusedSilent) == 1, fmt.Sprint(tc.srv.Refused(RefusedSilent))
			})

			cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(tc.dial(), 0))
			defer cl.Close()
			if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
				t.Fatal(err)
			}
			// Waiting is what is tested: past the first request's deadline.
			time.Sleep(2 * first)
			if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
				t.Fatalf("a connection that made a request was closed within the first request's deadline: %v", err)
			}
			if n := tc.srv.Refused(RefusedSilent); n != 1 {
				t.Fatalf("%d refused for silence, want the one", n)
			}
		})
	}
}

// One identity may hold MaxConnsPerIdentity connections: the next is
// refused, while another identity still connects, and a slot given back is
// taken again.
func TestConnectionsPerIdentity(t *testing.T) {
	const most = 3
	l := newLab(t)
	addr, srv := serveTLS(t, l, Options{Inline: true, MaxConnsPerIdentity: most}, sinks(nil))
	node1, node2 := l.store(pki.RoleSlave, "node-1"), l.store(pki.RoleSlave, "node-2")
	var held []*rpc.Client
	for i := range most {
		cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, node1), 0))
		if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, most, err)
		}
		held = append(held, cl)
	}
	over := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, node1), 0))
	if err := call(t, over, "S.Null", &rpcdef.Empty{}); err == nil {
		t.Fatalf("connection %d of one identity was served; the budget is %d", most+1, most)
	}
	if n := srv.Refused(RefusedIdentity); n != 1 {
		t.Fatalf("%d refused for the identity budget, want 1", n)
	}
	other := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, node2), 0))
	if err := call(t, other, "S.Null", &rpcdef.Empty{}); err != nil {
		t.Fatalf("another identity, while node-1 is at its budget: %v", err)
	}
	held[0].Close()
	waitFor(t, 5*time.Second, "the closed connection to be released", func() (bool, string) {
		return srv.Conns() == most, fmt.Sprintf("%d open", srv.Conns())
	})
	again := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, node1), 0))
	if err := call(t, again, "S.Null", &rpcdef.Empty{}); err != nil {
		t.Fatalf("node-1 again, below its budget: %v", err)
	}
}

// budget's rules, peer by peer: identities and uids each have their own
// count, root has none on the local socket, and non-root users together
// leave RootReserve of the cap to root.
func TestBudget(t *testing.T) {
	slave := func(name string) Peer {
		return Peer{Identity: pki.Identity{Cluster: "lab", Role: pki.RoleSlave, Name: name}}
	}
	user := func(uid uint32) Peer { return Peer{Local: true, UID: uid} }
	for _, tc := range []struct {
		name    string
		local   bool
		opts    Options
		peers   []Peer
		refused map[int]string // index -> reason
	}{
		{"one identity past its budget", false, Options{MaxConnsPerIdentity: 2},
			[]Peer{slave("a"), slave("a"), slave("b"), slave("a"), slave("b")}, map[int]string{3: RefusedIdentity}},
		{"one uid past its budget", true, Options{MaxConnsPerIdentity: 2, MaxConns: 100},
			[]Peer{user(1000), user(1000), user(1001), user(1000)}, map[int]string{3: RefusedIdentity}},
		{"root has no budget", true, Options{MaxConnsPerIdentity: 1, MaxConns: 100},
			[]Peer{user(0), user(0), user(0)}, nil},
		{"non-root users leave the reserve to root", true, Options{MaxConnsPerIdentity: 2, MaxConns: 6, RootReserve: 2},
			[]Peer{user(1), user(1), user(2), user(2), user(3), user(0), user(0)}, map[int]string{4: RefusedCap}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{opts: tc.opts, held: map[string]int{}}
			s.opts.defaults(tc.local)
			var kept []*conn
			for i, p := range tc.peers {
				c := &conn{peer: p}
				reason, err := s.budget(c)
				if want := tc.refused[i]; reason != want {
					t.Fatalf("peer %d (%+v): refused for %q (%v), want %q", i, p, reason, err, want)
				}
				if err != nil {
					t.Logf("peer %d: %v", i, err)
					continue
				}
				kept = append(kept, c)
			}
			for _, c := range kept {
				s.unbudget(c)
			}
			if len(s.held) != 0 || s.nonRoot != 0 {
				t.Fatalf("after every connection ended: held %v, %d non-root", s.held, s.nonRoot)
			}
		})
	}
}

// asUser connects to a UNIX socket as uid (its effective uid, on this
// thread alone): SO_PEERCRED reports what connect saw.
func asUser(t *testing.T, path string, uid int) net.Conn {
	t.Helper()
	runtime.LockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		runtime.UnlockOSThread()
		t.Skipf("cannot take uid %d on a thread: %v", uid, e)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		// Leave the thread locked: it ends with this goroutine.
		t.Fatalf("cannot take uid 0 back: %v", e)
	}
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("connect as uid %d: %v", uid, err)
	}
	f := os.NewFile(uintptr(fd), "unix")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// On the local socket, a non-root user past its budget is refused and root
// is not (the lock-out of issue 12), from real connections whose peer
// credentials say so. It needs root, to connect as another user.
func TestLocalUserBudget(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to connect as another uid")
	}
	const most = 2
	path, srv := serveUnix(t, Options{Inline: true, MaxConnsPerIdentity: most, MaxConns: 8, RootReserve: 3}, sinks(nil))
	// The socket's directory must be reachable by the other users.
	for dir := filepath.Dir(path); dir != filepath.Dir(dir) && strings.HasPrefix(dir, os.TempDir()+"/"); dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	serve := func(c net.Conn) error {
		cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(c, 0))
		return call(t, cl, "S.Null", &rpcdef.Empty{})
	}
	for i := range most {
		if err := serve(asUser(t, path, 65534)); err != nil {
			t.Fatalf("connection %d of uid 65534: %v", i+1, err)
		}
	}
	if err := serve(asUser(t, path, 65534)); err == nil {
		t.Fatalf("connection %d of uid 65534 served; the budget is %d", most+1, most)
	}
	if n := srv.Refused(RefusedIdentity); n != 1 {
		t.Fatalf("%d refused for the uid budget, want 1", n)
	}
	// Three more users fill what non-root users may take, 5 of the cap of
	// 8; a fourth is refused.
	for _, uid := range []int{65533, 65532, 65531} {
		if err := serve(asUser(t, path, uid)); err != nil {
			t.Fatalf("uid %d: %v", uid, err)
		}
	}
	if err := serve(asUser(t, path, 65530)); err == nil {
		t.Fatal("a sixth non-root connection was served, into root's reserve of 3")
	}
	if n := srv.Refused(RefusedCap); n != 1 {
		t.Fatalf("%d refused for the cap, want 1", n)
	}
	for i := range 3 {
		// A refused connection gives its slot back just after it is closed.
		waitFor(t, 5*time.Second, fmt.Sprintf("root's connection %d, in the reserve, to be served", i+1), func() (bool, string) {
			c, err := net.Dial("unix", path)
			if err != nil {
				return false, err.Error()
			}
			t.Cleanup(func() { c.Close() })
			err = serve(c)
			return err == nil, fmt.Sprint(err)
		})
	}
}

// fillWaits serves sinks with opts, connects as a slave, and starts n waits
// that each reach the handler before the next is sent; the client is closed
// when the test ends.
func fillWaits(t *testing.T, opts Options, n int) (*Server, *rpc.Client, *sink, []*rpc.Call) {
	t.Helper()
	l := newLab(t)
	got := make(chan *sink, 1)
	addr, srv := serveTLS(t, l, opts, sinks(got))
	cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, l.store(pki.RoleSlave, "node-1")), 0))
	t.Cleanup(func() { cl.Close() })
	if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
		t.Fatal(err)
	}
	s := <-got
	var waits []*rpc.Call
	for range n {
		waits = append(waits, cl.Go("S.Wait", &rpcdef.Empty{}, &rpcdef.Empty{}, make(chan *rpc.Call, 1)))
		<-s.waiting
	}
	return srv, cl, s, waits
}

// With Inline, MaxBlocked calls of a connection may wait at once: the next
// one's Block fails, its caller gets the error at once, and the connection
// goes on. 1,000 pipelined waits cost no more goroutines than the cap.
func TestMaxBlocked(t *testing.T) {
	const most = 2
	srv, cl, s, waits := fillWaits(t, Options{Inline: true, MaxBlocked: most}, most)
	err := call(t, cl, "S.Wait", &rpcdef.Empty{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("unavailable: %d calls already waiting on this connection (the limit)", most)) {
		t.Fatalf("wait %d: err = %v, want the limit's error", most+1, err)
	}
	t.Logf("wait %d: %v", most+1, err)
	if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
		t.Fatalf("a call after the refused one: %v", err)
	}
	s.release <- struct{}{}
	i := oneDone(t, waits)
	waits[i] = cl.Go("S.Wait", &rpcdef.Empty{}, &rpcdef.Empty{}, make(chan *rpc.Call, 1))
	select {
	case <-s.waiting: // a slot given back is taken again
	case c := <-waits[i].Done:
		t.Fatalf("a wait after one returned: %v", c.Error)
	}

	baseG := runtime.NumGoroutine()
	const pipelined = 1000
	for range pipelined {
		cl.Go("S.Wait", &rpcdef.Empty{}, &rpcdef.Empty{}, make(chan *rpc.Call, 1))
	}
	waitFor(t, 30*time.Second, "every pipelined wait to be refused", func() (bool, string) {
		return srv.Refused(RefusedCalls) == 1+pipelined, fmt.Sprint(srv.Refused(RefusedCalls))
	})
	if g := runtime.NumGoroutine(); g > baseG+2 {
		t.Fatalf("%d goroutines after %d pipelined waits, %d before", g, pipelined, baseG)
	}
}

// oneDone waits for one of calls to return nil, and says which.
func oneDone(tb testing.TB, calls []*rpc.Call) int {
	tb.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for i, c := range calls {
			select {
			case <-c.Done:
				if c.Error != nil {
					tb.Fatalf("call %d: %v", i, c.Error)
				}
				return i
			default:
			}
		}
		select {
		case <-deadline:
			tb.Fatal("no call returned in 10s")
		case <-time.After(5 * time.Millisecond): // poll interval
		}
	}
}

// Without Inline, MaxInflight calls of a connection may run at once: past
// it a call is answered at once with an error, and served again once one
// returns.
func TestMaxInflight(t *testing.T) {
	const most = 3
	srv, cl, s, waits := fillWaits(t, Options{MaxInflight: most}, most)
	for _, m := range []string{"S.Wait", "S.Null"} {
		err := call(t, cl, m, &rpcdef.Empty{})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("unavailable: %d calls already in flight on this connection (the limit)", most)) {
			t.Fatalf("%s with %d in flight: err = %v, want the limit's error", m, most, err)
		}
	}
	if n := srv.Refused(RefusedCalls); n != 2 {
		t.Fatalf("%d calls refused, want 2", n)
	}
	s.release <- struct{}{}
	i := oneDone(t, waits)
	if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
		t.Fatalf("a call once one of %d returned: %v", most, err)
	}
	cl.Close()
	for j, w := range waits {
		if j == i {
			continue // oneDone took its reply
		}
		if c := <-w.Done; c.Error == nil {
			t.Fatal("a wait returned nil after its connection closed")
		}
	}
}

// MaxMessageFor gives each connection its request limit from its peer:
// with SlaveRequestLimit, a slave's 100 KiB request closes its connection,
// an admin's is served.
func TestMaxMessageFor(t *testing.T) {
	l := newLab(t)
	addr, srv := serveTLS(t, l, Options{Inline: true, MaxMessageFor: SlaveRequestLimit}, sinks(nil))
	big := &Blob{B: make([]byte, 100<<10)}
	admin := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, l.store(pki.RoleAdmin, "ops")), 0))
	if err := call(t, admin, "S.Take", big); err != nil {
		t.Fatalf("an admin's 100 KiB request: %v", err)
	}
	slave := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, l.store(pki.RoleSlave, "node-1")), 0))
	if err := call(t, slave, "S.Take", &Blob{B: make([]byte, 1<<10)}); err != nil {
		t.Fatalf("a slave's 1 KiB request: %v", err)
	}
	if err := call(t, slave, "S.Take", big); err == nil {
		t.Fatalf("a slave's 100 KiB request was served; its limit is %d", DefaultSlaveMaxMessage)
	}
	waitFor(t, 5*time.Second, "the refusal to be counted", func() (bool, string) {
		return srv.Refused(RefusedMessage) == 1, fmt.Sprint(srv.Refused(RefusedMessage))
	})
}

// Refusal reasons are label values of a metric: snake_case, each once.
func TestRefusalReasons(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range RefusalReasons() {
		if !regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`).MatchString(r) {
			t.Errorf("reason %q is not snake_case", r)
		}
		if seen[r] {
			t.Errorf("reason %q listed twice", r)
		}
		seen[r] = true
	}
	if len(seen) != 9 {
		t.Errorf("%d reasons, want 9", len(seen))
	}
}

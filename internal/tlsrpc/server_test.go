package tlsrpc

import (
	"context"
	"net"
	"net/rpc"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/muster-lab/muster/rpcdef"
)

type echo struct{}

func (echo) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

// startUnix serves an Echo receiver on a socket in a temp dir.
func startUnix(tb testing.TB) string {
	path, _ := serveUnix(tb, Options{}, func(s *rpc.Server, p Peer) (func(), error) {
		return nil, s.RegisterName("Echo", echo{})
	})
	return path
}

// serveUnix serves attach's receivers on a socket in a temp dir until the
// test ends.
func serveUnix(tb testing.TB, opts Options, attach Attach) (string, *Server) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	return path, serve(tb, ln, nil, opts, attach)
}

// BenchmarkNullUnix is one Null round trip through the client helper and the server, in one process.
func BenchmarkNullUnix(b *testing.B) {
	c := rpcdef.NewConn("echo", rpcdef.DialUnix(startUnix(b)))
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Call(ctx, "Echo.Null", &rpcdef.Empty{}, &rpcdef.Empty{}); err != nil {
			b.Fatal(err)
		}
	}
}

// An inline server answers a call to an unknown method with an error and
// keeps serving the connection, as net/rpc's ServeCodec does.
func TestInlineUnknownMethodKeepsConnection(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(map[bool]string{false: "goroutine per call", true: "inline"}[inline], func(t *testing.T) {
			path, srv := serveUnix(t, Options{Inline: inline}, func(s *rpc.Server, p Peer) (func(), error) {
				return nil, s.RegisterName("Echo", echo{})
			})
			ctx := context.Background()

			c := rpcdef.NewConn("echo", rpcdef.DialUnix(path))
			defer c.Close()
			if err := c.Call(ctx, "Echo.Nope", &rpcdef.Empty{}, &rpcdef.Empty{}); err == nil || !strings.Contains(err.Error(), "can't find method") {
				t.Fatalf("unknown method: err = %v", err)
			}
			if err := c.Call(ctx, "Nope.Null", &rpcdef.Empty{}, &rpcdef.Empty{}); err == nil || !strings.Contains(err.Error(), "can't find service") {
				t.Fatalf("unknown service: err = %v", err)
			}
			if err := c.Call(ctx, "Echo.Null", &rpcdef.Empty{}, &rpcdef.Empty{}); err != nil {
				t.Fatalf("good call after bad ones: %v", err)
			}
			if n := srv.Conns(); n != 1 {
				t.Fatalf("%d connections open, want the one kept", n)
			}
		})
	}
}

// waiter's Wait blocks, as a long poll does, until released or its
// connection ends.
type waiter struct {
	peer     Peer
	release  chan struct{}
	waiting  chan struct{}
	returned *atomic.Int32 // handlers that have returned
}

func (w *waiter) Wait(_ *rpcdef.Empty, _ *rpcdef.Empty) error {
	defer w.returned.Add(1)
	return longPoll(w.peer, w.waiting, w.release)
}

func (w *waiter) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

// On an inline server, calls go on while a handler that called Block
// waits; the connection's detach runs only after that handler returned.
func TestInlineBlockingHandler(t *testing.T) {
	waiters := make(chan *waiter, 1)
	var returned, detachedEarly atomic.Int32
	detached := make(chan struct{})
	path, _ := serveUnix(t, Options{Inline: true}, func(s *rpc.Server, p Peer) (func(), error) {
		w := &waiter{peer: p, release: make(chan struct{}), waiting: make(chan struct{}, 4), returned: &returned}
		waiters <- w
		return func() {
			if returned.Load() != 2 {
				detachedEarly.Store(1)
			}
			close(detached)
		}, s.RegisterName("W", w)
	})
	ctx := context.Background()

	c := rpcdef.NewConn("w", rpcdef.DialUnix(path))
	defer c.Close()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			errs <- c.Call(ctx, "W.Wait", &rpcdef.Empty{}, &rpcdef.Empty{})
		}()
	}
	w := <-waiters
	<-w.waiting
	<-w.waiting // both wait at once, on one connection
	for range 3 {
		if err := c.Call(ctx, "W.Null", &rpcdef.Empty{}, &rpcdef.Empty{}); err != nil {
			t.Fatalf("a call while two wait: %v", err)
		}
	}
	w.release <- struct{}{}
	if err := <-errs; err != nil {
		t.Fatalf("released wait: %v", err)
	}
	c.Close() // the other ends with the connection
	if err := <-errs; err == nil {
		t.Fatal("a wait returned nil after its connection closed")
	}
	<-detached
	if detachedEarly.Load() != 0 {
		t.Fatal("detach ran before every handler had returned")
	}
}

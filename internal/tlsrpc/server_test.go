package tlsrpc

import (
	"context"
	"io"
	"net"
	"net/rpc"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/rpcdef"
)

type echo struct{}

func (echo) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// startUnix serves an Echo receiver on a socket in a temp dir.
func startUnix(tb testing.TB) string {
	path := filepath.Join(tb.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := New(ln, nil, Options{}, func(s *rpc.Server, p Peer) (func(), error) {
		return nil, s.RegisterName("Echo", echo{})
	}, quietLog())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return path
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
			path := filepath.Join(t.TempDir(), "s.sock")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			srv, err := New(ln, nil, Options{Inline: inline}, func(s *rpc.Server, p Peer) (func(), error) {
				return nil, s.RegisterName("Echo", echo{})
			}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { srv.Serve(ctx); close(done) }()
			defer func() { cancel(); <-done }()

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

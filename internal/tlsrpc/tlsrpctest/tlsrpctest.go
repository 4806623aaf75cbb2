// Package tlsrpctest runs a real tlsrpc server for a test, on 127.0.0.1:0
// or a socket in the test's temp dir, with its log going to the test's log,
// until the test ends: what a test needs instead of a fake listener.
package tlsrpctest

import (
	"context"
	"crypto/tls"
	"net"
	"net/rpc"
	"path/filepath"
	"testing"

	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/internal/tlsrpc"
)

// Listen listens on 127.0.0.1:0.
func Listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

// ListenUnix listens on a UNIX socket in a temp dir of the test.
func ListenUnix(tb testing.TB) *net.UnixListener {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

// ClosedAddr is a 127.0.0.1 address nothing listens on.
func ClosedAddr(tb testing.TB) string {
	tb.Helper()
	ln := Listen(tb)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Receiver is an Attach that registers rcvr as name for every connection.
func Receiver(name string, rcvr any) tlsrpc.Attach {
	return func(srv *rpc.Server, _ tlsrpc.Peer) (func(), error) {
		return nil, srv.RegisterName(name, rcvr)
	}
}

// Serve serves attach's receivers on ln with default options, over mutual
// TLS with tlsConf (nil: ln must be a UNIX socket), until the test ends,
// and fails the test if Serve returns an error. Closing the server earlier
// (a master that goes away) is allowed.
func Serve(tb testing.TB, ln net.Listener, tlsConf *tls.Config, attach tlsrpc.Attach) *tlsrpc.Server {
	tb.Helper()
	srv, err := tlsrpc.New(ln, tlsConf, tlsrpc.Options{}, attach, logtest.New(tb).WithField("addr", ln.Addr().String()))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		srv.Close()
		if err := <-done; err != nil {
			tb.Errorf("serve on %s: %v", ln.Addr(), err)
		}
	})
	return srv
}

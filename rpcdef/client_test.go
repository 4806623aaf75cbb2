package rpcdef

import (
	"context"
	"errors"
	"net"
	"net/rpc"
	"strings"
	"testing"
	"time"
)

// slow answers Wait after the given time.
type slow struct{}

func (s *slow) Wait(d *time.Duration, reply *[]byte) error {
	time.Sleep(*d) // the server side of a long poll, not synchronisation in the test
	*reply = make([]byte, 64<<10)
	return nil
}

// A call whose deadline passes returns only once nothing can write to its
// reply any more: the caller may read it (run under -race).
func TestCallDeadlineLeavesReplyAlone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := rpc.NewServer()
	srv.RegisterName("Slow", &slow{})
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeCodec(NewServerCodec(conn, 0))
		}
	}()
	c := NewConn("slow", func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	})
	defer c.Close()
	for i := range 20 {
		wait := time.Duration(i%5) * time.Millisecond
		var reply []byte
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		err := c.Call(ctx, "Slow.Wait", &wait, &reply)
		cancel()
		_ = len(reply) // read after return: a race if the reader still writes
		var ne net.Error
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

// Server errors come back as coded errors that errors.Is recognises.
func TestFromWire(t *testing.T) {
	for _, tc := range []struct {
		wire string
		is   error
		msg  string
	}{
		{"permission denied: spiffe://lab/slave/a may only Join as a", ErrPermission, "permission denied: spiffe://lab/slave/a may only Join as a"},
		{"unknown lease", ErrUnknownLease, "unknown lease"},
		{"stale incarnation: node-1 incarnation 1 was replaced", ErrStaleIncarnation, "stale incarnation: node-1 incarnation 1 was replaced"},
	} {
		err := fromWire(rpc.ServerError(tc.wire))
		if !errors.Is(err, tc.is) || err.Error() != tc.msg {
			t.Errorf("fromWire(%q) = %v; want Is(%v)", tc.wire, err, tc.is)
		}
		if errors.Is(err, ErrNotFound) {
			t.Errorf("fromWire(%q) matches ErrNotFound", tc.wire)
		}
	}
	if err := fromWire(rpc.ServerError("rpc: can't find method X.Y")); errors.Is(err, ErrInvalid) {
		t.Errorf("an uncoded error got a code: %v", err)
	}
}

// TestConnDropsABrokenConnection: a write that fails (the server closed the
// connection after a request over its limit) drops the connection, and the
// next call dials again instead of failing the same way.
func TestConnDropsABrokenConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", new(echo)); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted++
			if accepted == 1 {
				c.Close() // the first connection: closed under the caller
				continue
			}
			go srv.ServeCodec(NewServerCodec(c, 1<<10))
		}
	}()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	}
	conn := NewConn("test", dial)
	defer conn.Close()
	big := strings.Repeat("x", 8<<20)
	var reply string
	if err := conn.Call(context.Background(), "Echo.Echo", &big, &reply); err == nil {
		t.Fatal("a call on a closed connection succeeded")
	}
	small := "hi"
	if err := conn.Call(context.Background(), "Echo.Echo", &small, &reply); err != nil || reply != "hi" {
		t.Fatalf("the call after a broken one: %q, %v; want it redialled and answered", reply, err)
	}
}

type echo struct{}

func (echo) Echo(in *string, out *string) error { *out = *in; return nil }

func TestLeaderOf(t *testing.T) {
	for _, c := range []struct {
		err        error
		name, addr string
		ok         bool
	}{
		{NotLeader("m2", "10.0.0.2:7112"), "m2", "10.0.0.2:7112", true},
		{fromWire(rpc.ServerError(NotLeader("m3", "[::1]:7112").Error())), "m3", "[::1]:7112", true},
		{NotLeader("", ""), "", "", false},
		{Errorf(CodeNotFound, "the leader is m2 at x:1"), "", "", false},
		{errors.New("not the leader: the leader is m2 at x:1"), "", "", false},
	} {
		name, addr, ok := LeaderOf(c.err)
		if name != c.name || addr != c.addr || ok != c.ok {
			t.Errorf("LeaderOf(%v) = %q, %q, %v; want %q, %q, %v", c.err, name, addr, ok, c.name, c.addr, c.ok)
		}
	}
	if !errors.Is(NotLeader("", ""), ErrNotLeader) {
		t.Error("NotLeader is not ErrNotLeader")
	}
}

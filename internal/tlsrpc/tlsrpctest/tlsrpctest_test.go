package tlsrpctest

import (
	"context"
	"net"
	"testing"

	"github.com/muster-lab/muster/rpcdef"
)

type echo struct{}

func (echo) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

func TestServeAnswersOnASocket(t *testing.T) {
	ln := ListenUnix(t)
	Serve(t, ln, nil, Receiver("Echo", echo{}))
	c := rpcdef.NewConn("echo", rpcdef.DialUnix(ln.Addr().String()))
	defer c.Close()
	if err := c.Call(context.Background(), "Echo.Null", &rpcdef.Empty{}, &rpcdef.Empty{}); err != nil {
		t.Fatal(err)
	}
}

func TestClosedAddrRefuses(t *testing.T) {
	addr := ClosedAddr(t)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("dial %s: connected, want refused", addr)
	}
}

package tlsrpc

import (
	"net/rpc"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// busy's Slow holds its caller until released, as a master too busy to
// answer in time does.
type busy struct{ release chan struct{} }

func (b *busy) Slow(_ *rpcdef.Empty, _ *rpcdef.Empty) error { <-b.release; return nil }
func (b *busy) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

// TestPeerGaveUp: a peer that closes its connection while its call waits on
// the server gave up (Peer.GaveUp), one that goes away a while after its
// last call did not.
func TestPeerGaveUp(t *testing.T) {
	l := newLab(t)
	b := &busy{release: make(chan struct{})}
	ended := make(chan bool, 4)
	addr, _ := serveTLS(t, l, Options{Inline: true}, func(srv *rpc.Server, p Peer) (func(), error) {
		return func() { ended <- p.GaveUp() }, srv.RegisterName("B", b)
	})
	node := l.store(pki.RoleSlave, "node-1")
	wait := func(what string) bool {
		t.Helper()
		select {
		case g := <-ended:
			return g
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the connection did not end", what)
			return false
		}
	}

	c := dialTLS(t, addr, node)
	cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(c, 0))
	cl.Go("B.Slow", &rpcdef.Empty{}, &rpcdef.Empty{}, make(chan *rpc.Call, 1))
	c.Close() // its deadline passed: it gives up
	close(b.release)
	if !wait("a call given up") {
		t.Fatal("a peer that closed while its call waited on the server: GaveUp false, want true")
	}

	c = dialTLS(t, addr, node)
	cl = rpc.NewClientWithCodec(rpcdef.NewClientCodec(c, 0))
	if err := call(t, cl, "B.Null", &rpcdef.Empty{}); err != nil {
		t.Fatal(err)
	}
	// The scenario, not a synchronisation: the peer dies a while after its
	// last call, as a slave killed between two heartbeats does.
	time.Sleep(100 * time.Millisecond)
	c.Close()
	if wait("a peer gone between calls") {
		t.Fatal("a peer that went away between calls: GaveUp true, want false")
	}
}

package tlsrpc

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/rpc"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// TestHandshakeTurns: past MaxHandshakes running at once, a new connection
// waits HandshakeQueue for its turn and is then closed fast, as busy, long
// before the handshake deadline; once a turn frees, connections are served.
func TestHandshakeTurns(t *testing.T) {
	l := newLab(t)
	addr, srv := serveTLS(t, l, Options{Inline: true, MaxHandshakes: 2, HandshakeQueue: 100 * time.Millisecond,
		HandshakeTimeout: 20 * time.Second}, sinks(nil))
	// Two peers that connect and never say hello hold both turns.
	var stuck []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		stuck = append(stuck, c)
	}
	waitFor(t, 5*time.Second, "both turns taken", func() (bool, string) {
		return len(srv.turns) == 2, fmt.Sprintf("%d taken", len(srv.turns))
	})
	node1 := l.store(pki.RoleSlave, "node-1")
	if at := srv.Congested(); !at.IsZero() {
		t.Fatalf("congested at %v before any connection was turned away", at)
	}
	start := time.Now()
	c, err := tls.Dial("tcp", addr, node1.ClientConfig(nil))
	if err == nil {
		c.Close()
		t.Fatal("a handshake past the turns went through")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the busy refusal took %v; want about the queue's 100ms, far below the 20s handshake deadline", took)
	}
	if n := srv.Refused(RefusedBusy); n != 1 {
		t.Fatalf("%d refused as busy, want 1", n)
	}
	if at := srv.Congested(); at.Before(start) {
		t.Fatalf("congested at %v after a busy refusal at %v", at, start)
	}
	// A turn frees: the next one is served.
	stuck[0].Close()
	waitFor(t, 5*time.Second, "a turn to free", func() (bool, string) {
		return len(srv.turns) < 2, fmt.Sprintf("%d taken", len(srv.turns))
	})
	cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(dialTLS(t, addr, node1), 0))
	defer cl.Close()
	if err := call(t, cl, "S.Null", &rpcdef.Empty{}); err != nil {
		t.Fatalf("after a turn freed: %v", err)
	}
	stuck[1].Close()
}

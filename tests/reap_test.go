package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// TestReapLeftAndDead: a member that left, or died, is forgotten after its
// retention, as an event every view follows; the others stay.
func TestReapLeftAndDead(t *testing.T) {
	c := newCluster(t, map[string]string{"reap_left_after": `"2s"`, "reap_dead_after": `"3s"`}, "node-1", "node-2", "node-3")
	admin := c.client(pki.RoleAdmin, "ops")
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 10*time.Second)
	}
	w := c.watch(t)
	c.slaves["node-1"].stop() // leaves
	c.slaves["node-2"].kill() // dies
	left := w.next(t, "node-1", rpcdef.EventLeft, 5*time.Second)
	dead := w.next(t, "node-2", rpcdef.EventDead, 5*time.Second)
	for _, gone := range []struct {
		node  string
		since time.Time
		keep  time.Duration
	}{{"node-1", left.At, 2 * time.Second}, {"node-2", dead.At, 3 * time.Second}} {
		e := w.next(t, gone.node, rpcdef.EventForgotten, 10*time.Second)
		if after := e.At.Sub(gone.since); after < gone.keep || after > gone.keep+2*time.Second {
			t.Errorf("%s reaped %v after it went, want %v to %v", gone.node, after, gone.keep, gone.keep+2*time.Second)
		}
		if !strings.HasPrefix(e.Reason, "reaped: ") {
			t.Errorf("%s's forgotten event says %q", gone.node, e.Reason)
		}
	}
	waitFor(t, 5*time.Second, "node-3's view to drop both", func() (bool, string) {
		v := c.slaves["node-3"].view(t)
		_, one := member(v.Members, "node-1")
		_, two := member(v.Members, "node-2")
		return one == 0 && two == 0 && len(v.Members) == 1, fmt.Sprintf("%d members: %+v", len(v.Members), v.Members)
	})
	out, code := run(t, c.adminEnv(), "rpc-query", "members")
	if code != 0 || strings.Contains(out, "node-1") || strings.Contains(out, "node-2") || !strings.Contains(out, "node-3") {
		t.Fatalf("rpc-query members after reaping: exit %d\n%s", code, out)
	}
}

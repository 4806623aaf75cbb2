package tests

import (
	"testing"

	"github.com/muster-lab/muster/rpcdef"
)

// TestRejoinKeepsTheRoll: a slave joining again with the version of the
// roll it holds gets no roll when the master's events reach that version
// (its Watch brings it on), and the whole roll when they do not: a version
// the master has not reached, from another history.
func TestRejoinKeepsTheRoll(t *testing.T) {
	x := newInsider(t)
	cc := x.masterClient(x.moleSt)
	defer cc.Close()
	join := func(have uint64) rpcdef.JoinReply {
		t.Helper()
		r, err := cc.Join(ctx(t), rpcdef.JoinArgs{Node: "mole", Incarnation: 7, Protocol: rpcdef.ProtocolVersion, Have: have})
		if err != nil {
			t.Fatalf("join with have=%d: %v", have, err)
		}
		return r
	}
	first := join(0)
	want := len(first.Members)
	if want < 2 {
		t.Fatalf("the first join's roll has %d members, want the slaves and the mole", want)
	}
	if again := join(first.Version); again.Members != nil {
		t.Fatalf("joining again at version %d (the master at %d) got a roll of %d: the events reach it", first.Version, again.Version, len(again.Members))
	}
	if ahead := join(first.Version + 1000); len(ahead.Members) < want {
		t.Fatalf("joining again at version %d, ahead of the master's %d, got %d members: want the whole roll", first.Version+1000, ahead.Version, len(ahead.Members))
	}
}

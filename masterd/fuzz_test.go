package masterd

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// fuzzRosterNow is the restoring master's clock: fixed, so that two restores
// give the nodes they make unknown the same StatusSince.
var fuzzRosterNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// fuzzMembership is testMembership on fuzzRosterNow's clock.
func fuzzMembership() *Membership {
	ms, _ := testMembershipClock()
	ms.now = func() time.Time { return fuzzRosterNow }
	return ms
}

func roll(t *testing.T, ms *Membership) []rpcdef.Member {
	t.Helper()
	r, err := ms.Members("")
	if err != nil {
		t.Fatalf("Members: %v", err)
	}
	return r.Members
}

// restart is a master restart or a failover: next takes old's replicated
// roll, through the bytes of a raft snapshot, and leads with it.
func restart(t testing.TB, old, next *Membership) int {
	t.Helper()
	var buf bytes.Buffer
	snapshotTo(t, old.roll, &buf)
	if err := next.roll.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatalf("restore the roll's snapshot: %v", err)
	}
	return next.Lead(next.t.Detector.MaxDead, func(rec record) { next.roll.apply([]record{rec}) })
}

// sink is a raft.SnapshotSink into a buffer.
type sink struct{ *bytes.Buffer }

func (sink) ID() string    { return "test" }
func (sink) Cancel() error { return nil }
func (sink) Close() error  { return nil }

func snapshotTo(t testing.TB, r *Roll, buf *bytes.Buffer) {
	t.Helper()
	snap, err := r.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := snap.Persist(sink{buf}); err != nil {
		t.Fatalf("persist: %v", err)
	}
	snap.Release()
}

// FuzzRosterRestore reads the fuzzed bytes as an older version's
// roster.json, imported into the replicated roll. A roll that takes them
// holds valid names and, once a master leads with it, only the statuses a
// restart leaves (unknown, dead, left); its raft snapshot restores to the
// same roll, at a version that has not gone back.
func FuzzRosterRestore(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := decodeRoster(data)
		if err != nil {
			return
		}
		ms := fuzzMembership()
		if err := ms.roll.load(im.Version, im.Members, nil); err != nil {
			t.Fatalf("decodeRoster accepted a roster the roll refuses: %v", err)
		}
		next := fuzzMembership()
		n := restart(t, ms, next)
		members := roll(t, next)
		if n != len(members) || n != len(im.Members) {
			t.Fatalf("a roster of %d distinct members led as %d, listed as %d", len(im.Members), n, len(members))
		}
		for _, m := range members {
			if err := pki.ValidName(m.Name); err != nil {
				t.Fatalf("the roll accepts a node name no certificate can carry: %v", err)
			}
			switch m.Status {
			case rpcdef.StatusUnknown:
				if !m.StatusSince.Equal(fuzzRosterNow) {
					t.Errorf("restored %s is unknown since %v, not since the new leader took over", m.Name, m.StatusSince)
				}
			case rpcdef.StatusDead, rpcdef.StatusLeft:
			default:
				t.Errorf("restored %s with status %q", m.Name, m.Status)
			}
			if m.Resources != nil || !m.LastHeartbeat.IsZero() {
				t.Errorf("restored %s with resources or a heartbeat: %+v", m.Name, m)
			}
		}
		// The replicated roll through its snapshot: the same members, and
		// a version that has not gone back.
		again := fuzzMembership()
		restart(t, next, again)
		a, av := next.roll.Members()
		b, bv := again.roll.Members()
		sortMembers(a)
		sortMembers(b)
		if len(a) != len(b) || av != bv || bv < im.Version {
			t.Fatalf("%d members at version %d (imported at %d), restored from their snapshot as %d at %d", len(a), av, im.Version, len(b), bv)
		}
		for i := range a {
			x, y := a[i], b[i]
			if x.Name != y.Name || x.Incarnation != y.Incarnation || x.Status != y.Status || x.Addr != y.Addr ||
				!x.JoinedAt.Equal(y.JoinedAt) || !x.StatusSince.Equal(y.StatusSince) || !x.CertNotAfter.Equal(y.CertNotAfter) {
				t.Fatalf("member %d: %+v, restored from its snapshot as %+v", i, x, y)
			}
		}
	})
}

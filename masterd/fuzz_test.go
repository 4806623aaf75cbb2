package masterd

import (
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// fuzzRosterNow is the restoring master's clock: fixed, so that two restores
// give the nodes they make unknown the same StatusSince.
var fuzzRosterNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func fuzzMembership() *Membership {
	l := logrus.New()
	l.SetOutput(io.Discard)
	ms := NewMembership(Timing{
		Detector:   DetectorConfig{Interval: time.Second, MinDead: 1500 * time.Millisecond, MaxDead: 5 * time.Second},
		CloseGrace: 500 * time.Millisecond,
		Report:     5 * time.Second,
		Tick:       50 * time.Millisecond,
	}, l)
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

// FuzzRosterRestore reads the fuzzed bytes as roster.json. A roll that takes
// them holds valid names and only the statuses a restart leaves (unknown,
// dead, left), and saves a roster that restores to the same roll.
func FuzzRosterRestore(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ms := fuzzMembership()
		n, err := ms.Restore(data)
		if err != nil {
			if n != 0 {
				t.Fatalf("Restore failed (%v) but returned %d", err, n)
			}
			if got := roll(t, ms); len(got) != 0 {
				t.Fatalf("Membership.Restore failed (%v) but kept the %d entries before the bad one: "+
					"it adds each entry to ms.nodes as it checks it", err, len(got))
			}
			return
		}
		members := roll(t, ms)
		for _, m := range members {
			switch m.Status {
			case rpcdef.StatusUnknown:
				if !m.StatusSince.Equal(fuzzRosterNow) {
					t.Errorf("restored %s is unknown since %v, not since the restore", m.Name, m.StatusSince)
				}
			case rpcdef.StatusDead, rpcdef.StatusLeft:
			default:
				t.Errorf("restored %s with status %q", m.Name, m.Status)
			}
			if m.Resources != nil || !m.LastHeartbeat.IsZero() {
				t.Errorf("restored %s with resources or a heartbeat: %+v", m.Name, m)
			}
		}

		// Save and restore again: the same roll, and a version that has not gone back.
		ms.MarkDirty()
		saved, ok, err := ms.Snapshot()
		if err != nil || !ok {
			t.Fatalf("a restored roll does not save: %v (saved: %v)", err, ok)
		}
		again := fuzzMembership()
		if n2, err := again.Restore(saved); err != nil || n2 != len(members) {
			t.Fatalf("the roll restored from its own save: %d nodes, %v; want %d\n%s", n2, err, len(members), saved)
		}
		members2 := roll(t, again)
		if len(members2) != len(members) {
			t.Fatalf("%d members, restored from their save as %d", len(members), len(members2))
		}
		for i, a := range members {
			b := members2[i]
			if a.Name != b.Name || a.Incarnation != b.Incarnation || a.Status != b.Status || a.Addr != b.Addr ||
				!a.JoinedAt.Equal(b.JoinedAt) || !a.StatusSince.Equal(b.StatusSince) || !a.CertNotAfter.Equal(b.CertNotAfter) {
				t.Fatalf("member %d: %+v, restored from its save as %+v", i, a, b)
			}
		}

		// Known bugs, once everything else has been checked.
		for _, m := range members {
			if err := pki.ValidName(m.Name); err != nil {
				t.Fatalf("Membership.Restore accepts a node name no certificate can carry: %v", err)
			}
		}
		if n != len(members) {
			t.Fatalf("Membership.Restore returned %d for a roster of %d distinct nodes: it counts entries, and a later duplicate replaces an earlier one",
				n, len(members))
		}
		if again.Version() < ms.Version() {
			t.Fatalf("a roster of version %d saves as version %d: Snapshot adds versionReserve without checking for overflow, so versions go back after the next restart",
				ms.Version(), again.Version())
		}
	})
}

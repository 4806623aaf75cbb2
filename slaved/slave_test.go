package slaved

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/rpcdef"
)

// testLog is a logger whose entries the test reads back.
func testLog(t *testing.T) (logrus.FieldLogger, *test.Hook) {
	t.Helper()
	l := logtest.New(t)
	l.SetLevel(logrus.DebugLevel)
	return l.WithField("node", "node-1"), test.NewLocal(l)
}

// messages are the info-level (and louder) log lines, in order.
func messages(hook *test.Hook) []string {
	var out []string
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.InfoLevel {
			out = append(out, e.Message)
		}
	}
	return out
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func member(name string, st rpcdef.Status, inc uint64) rpcdef.Member {
	return rpcdef.Member{Name: name, Status: st, Incarnation: inc, Addr: "10.0.0.1:5000", JoinedAt: t0, StatusSince: t0}
}

func event(v uint64, kind rpcdef.EventKind, node string, st rpcdef.Status, inc uint64, reason string) rpcdef.Event {
	return rpcdef.Event{Version: v, Kind: kind, Node: node, Status: st, Incarnation: inc, Addr: "10.0.0.2:6000", At: t0.Add(time.Duration(v) * time.Second), Reason: reason}
}

// states renders a view's members as "name=status/incarnation", sorted by name.
func states(r rpcdef.ViewReply) string {
	var parts []string
	for _, m := range r.Members {
		parts = append(parts, fmt.Sprintf("%s=%s/%d", m.Name, m.Status, m.Incarnation))
	}
	return strings.Join(parts, " ")
}

func TestViewEvents(t *testing.T) {
	start := []rpcdef.Member{member("node-1", rpcdef.StatusAlive, 7), member("node-b", rpcdef.StatusAlive, 3)}
	// Each case joins the view at version 10 with start, applies events up
	// to upTo, and wants applied events, the members and version after, and
	// the lines logged.
	tests := []struct {
		name    string
		events  []rpcdef.Event
		upTo    uint64
		applied int
		want    string
		version uint64
		logs    []string
	}{
		{"new member joins", []rpcdef.Event{event(11, rpcdef.EventJoined, "node-c", rpcdef.StatusAlive, 5, "")}, 11, 1, "node-1=alive/7 node-b=alive/3 node-c=alive/5", 11, []string{"node-c joined"}},
		{"suspect then dead, with reasons",
			[]rpcdef.Event{
				event(11, rpcdef.EventSuspect, "node-b", rpcdef.StatusSuspect, 3, "connection closed"),
				event(12, rpcdef.EventDead, "node-b", rpcdef.StatusDead, 3, "connection closed")},
			12, 2, "node-1=alive/7 node-b=dead/3", 12, []string{"node-b is now suspect (connection closed)", "node-b is now dead (connection closed)"}},
		{"rejoin with a new incarnation", []rpcdef.Event{event(11, rpcdef.EventRejoined, "node-b", rpcdef.StatusAlive, 9, "")}, 11, 1, "node-1=alive/7 node-b=alive/9", 11, []string{"node-b rejoined with incarnation 9"}},
		{"left", []rpcdef.Event{event(11, rpcdef.EventLeft, "node-b", rpcdef.StatusLeft, 3, "slaved stopped")}, 11, 1, "node-1=alive/7 node-b=left/3", 11, []string{"node-b is now left (slaved stopped)"}},
		{"forgotten", []rpcdef.Event{event(11, rpcdef.EventForgotten, "node-b", "", 0, "removed by admin")}, 11, 1, "node-1=alive/7", 11, []string{"node-b was forgotten (removed by admin)"}},
		{"unknown member is added from a status event", []rpcdef.Event{event(11, rpcdef.EventSuspect, "node-x", rpcdef.StatusSuspect, 4, "late")}, 11, 1, "node-1=alive/7 node-b=alive/3 node-x=suspect/4", 11, []string{"node-x is now suspect (late)"}},
		{"status missing: taken from the kind", []rpcdef.Event{event(11, rpcdef.EventDead, "node-b", "", 3, "")}, 11, 1, "node-1=alive/7 node-b=dead/3", 11, []string{"node-b is now dead"}},
		{"events at or below the version are ignored",
			[]rpcdef.Event{
				event(9, rpcdef.EventDead, "node-b", rpcdef.StatusDead, 3, "old"),
				event(10, rpcdef.EventDead, "node-b", rpcdef.StatusDead, 3, "old")},
			10, 0, "node-1=alive/7 node-b=alive/3", 10, nil},
		{"out of order events are applied in version order",
			[]rpcdef.Event{
				event(13, rpcdef.EventAlive, "node-b", rpcdef.StatusAlive, 3, ""),
				event(11, rpcdef.EventSuspect, "node-b", rpcdef.StatusSuspect, 3, "late"),
				event(12, rpcdef.EventJoined, "node-c", rpcdef.StatusAlive, 5, "")},
			13, 3, "node-1=alive/7 node-b=alive/3 node-c=alive/5", 13, []string{"node-b is now suspect (late)", "node-c joined", "node-b is now alive"}},
		{"reply version past the last event moves the view",
			nil, 15, 0, "node-1=alive/7 node-b=alive/3", 15, nil},
		{"a reply behind the view does not move it back",
			nil, 4, 0, "node-1=alive/7 node-b=alive/3", 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, hook := testLog(t)
			v := newView("node-1", 7, log)
			v.join(10, start)
			hook.Reset()
			if n := v.apply(tt.events, tt.upTo); n != tt.applied {
				t.Errorf("apply = %d events, want %d", n, tt.applied)
			}
			r := v.Reply()
			if got := states(r); got != tt.want {
				t.Errorf("members = %s\nwant      %s", got, tt.want)
			}
			if r.Version != tt.version {
				t.Errorf("version = %d, want %d", r.Version, tt.version)
			}
			if got := messages(hook); strings.Join(got, "|") != strings.Join(tt.logs, "|") {
				t.Errorf("logged %q, want %q", got, tt.logs)
			}
			for _, e := range hook.AllEntries() {
				if e.Data["node"] != "node-1" || e.Data["peer"] == nil {
					t.Errorf("log line %q has fields %v, want node=node-1 and a peer", e.Message, e.Data)
				}
			}
		})
	}
}

// TestViewApplyIdempotent applies the same reply twice, and a stale one
// after a newer one: nothing changes the second time.
func TestViewApplyIdempotent(t *testing.T) {
	log, hook := testLog(t)
	v := newView("node-1", 7, log)
	v.join(10, []rpcdef.Member{member("node-1", rpcdef.StatusAlive, 7), member("node-b", rpcdef.StatusAlive, 3)})
	first := []rpcdef.Event{
		event(11, rpcdef.EventSuspect, "node-b", rpcdef.StatusSuspect, 3, "late"),
		event(12, rpcdef.EventDead, "node-b", rpcdef.StatusDead, 3, "no heartbeat for 1.6s"),
	}
	if n := v.apply(first, 12); n != 2 {
		t.Fatalf("first apply = %d, want 2", n)
	}
	want := states(v.Reply())
	hook.Reset()
	if n := v.apply(first, 12); n != 0 {
		t.Errorf("second apply = %d, want 0", n)
	}
	if n := v.apply(first[:1], 11); n != 0 {
		t.Errorf("stale apply = %d, want 0", n)
	}
	if got := states(v.Reply()); got != want {
		t.Errorf("members changed to %s, want %s", got, want)
	}
	if v.Version() != 12 {
		t.Errorf("version = %d, want 12", v.Version())
	}
	if got := messages(hook); len(got) != 0 {
		t.Errorf("logged %q for events already applied", got)
	}
}

func TestViewReset(t *testing.T) {
	log, hook := testLog(t)
	v := newView("node-1", 7, log)
	v.join(10, []rpcdef.Member{
		member("node-1", rpcdef.StatusAlive, 7),
		member("node-b", rpcdef.StatusAlive, 3),
		member("node-c", rpcdef.StatusAlive, 4),
		member("node-d", rpcdef.StatusAlive, 5),
	})
	if got := messages(hook); len(got) != 1 || got[0] != "view: 4 members: 4 alive" {
		t.Errorf("first join logged %q, want one summary line", got)
	}
	hook.Reset()
	// The master restarted: its versions start again, lower than the view's.
	v.reset(3, []rpcdef.Member{
		member("node-1", rpcdef.StatusAlive, 7),
		member("node-b", rpcdef.StatusDead, 3),
		member("node-c", rpcdef.StatusAlive, 8),
		member("node-e", rpcdef.StatusUnknown, 1),
	})
	r := v.Reply()
	if got, want := states(r), "node-1=alive/7 node-b=dead/3 node-c=alive/8 node-e=unknown/1"; got != want {
		t.Errorf("members = %s\nwant      %s", got, want)
	}
	if r.Version != 3 {
		t.Errorf("version = %d, want 3: a reset replaces the version too", r.Version)
	}
	want := []string{
		"the master reset the view: replacing it with its whole roll",
		"node-b is now dead",
		"node-c rejoined with incarnation 8",
		"node-e joined",
		"node-d was forgotten: the master no longer lists it",
	}
	if got := messages(hook); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("logged %q\nwant   %q", got, want)
	}
	// Events of the new master apply after the reset.
	if n := v.apply([]rpcdef.Event{event(4, rpcdef.EventAlive, "node-e", rpcdef.StatusAlive, 1, "")}, 4); n != 1 {
		t.Errorf("apply after reset = %d, want 1", n)
	}
}

func TestViewReplyIsACopy(t *testing.T) {
	log, _ := testLog(t)
	v := newView("node-1", 7, log)
	v.join(1, []rpcdef.Member{member("node-b", rpcdef.StatusAlive, 3), member("node-1", rpcdef.StatusAlive, 7)})
	v.setJoined(true, "spiffe://lab/master/m1", "127.0.0.1:7112")
	r := v.Reply()
	if r.Node != "node-1" || r.Incarnation != 7 || !r.Joined || r.MasterAddr != "127.0.0.1:7112" || r.Master != "spiffe://lab/master/m1" {
		t.Errorf("reply header = %+v", r)
	}
	if r.Members[0].Name != "node-1" || r.Members[1].Name != "node-b" {
		t.Errorf("members not sorted by name: %s", states(r))
	}
	r.Members[0].Status = rpcdef.StatusDead
	if got := states(v.Reply()); got != "node-1=alive/7 node-b=alive/3" {
		t.Errorf("changing a reply changed the view: %s", got)
	}
	v.setJoined(false, "", "")
	if r := v.Reply(); r.Joined || r.MasterAddr != "127.0.0.1:7112" {
		t.Errorf("after leaving: joined=%v master addr %q; want not joined, last master kept", r.Joined, r.MasterAddr)
	}
}

func TestViewBehind(t *testing.T) {
	log, _ := testLog(t)
	v := newView("node-1", 7, log)
	now := t0
	v.now = func() time.Time { return now }
	v.join(10, nil)
	if v.behind(10, time.Second) {
		t.Error("behind at the same version")
	}
	if v.behind(12, time.Second) {
		t.Error("behind right after the view moved")
	}
	now = now.Add(2 * time.Second)
	if !v.behind(12, time.Second) {
		t.Error("not behind after 2s without progress and the master ahead")
	}
	v.apply(nil, 12)
	if v.behind(12, time.Second) {
		t.Error("behind after catching up")
	}
}

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		lost   bool
		rejoin bool
	}{
		{"connection lost", fmt.Errorf("call X on master: connection lost: %w", errors.New("EOF")), true, false},
		{"deadline", fmt.Errorf("call X: %w", context.DeadlineExceeded), true, false},
		{"not joined", fmt.Errorf("heartbeat: %w", &rpcdef.Error{Code: rpcdef.CodeNotJoined, Msg: "node-1 is dead"}), false, true},
		{"stale incarnation", &rpcdef.Error{Code: rpcdef.CodeStaleIncarnation}, false, true},
		{"permission", &rpcdef.Error{Code: rpcdef.CodePermission, Msg: "no"}, false, false},
		{"uncoded server error", rpc.ServerError("rpc: can't find method"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rpcdef.NoAnswer(tt.err); got != tt.lost {
				t.Errorf("lostConnection = %v, want %v", got, tt.lost)
			}
			if got := rpcdef.MustRejoin(tt.err); got != tt.rejoin {
				t.Errorf("mustRejoin = %v, want %v", got, tt.rejoin)
			}
		})
	}
}

func TestRepeats(t *testing.T) {
	var r repeats
	var loud []int
	for i := 1; i <= 61; i++ {
		if n, ok := r.seen("same"); ok {
			loud = append(loud, n)
		}
	}
	if fmt.Sprint(loud) != "[1 2 3 30 60]" {
		t.Errorf("loud at %v, want [1 2 3 30 60]", loud)
	}
	if n, ok := r.seen("other"); n != 1 || !ok {
		t.Errorf("a new message: n=%d loud=%v, want 1 true", n, ok)
	}
}

// TestViewOwnEntry: this slave's heartbeats and reports keep its own entry
// current; other members' heartbeat times from the roll are not kept, since
// they would only grow stale.
func TestViewOwnEntry(t *testing.T) {
	log, _ := testLog(t)
	v := newView("node-1", 7, log)
	self, other := member("node-1", rpcdef.StatusAlive, 7), member("node-b", rpcdef.StatusAlive, 3)
	self.LastHeartbeat, other.LastHeartbeat = t0, t0
	other.Resources = &rpcdef.Resources{CPUCount: 2}
	v.join(1, []rpcdef.Member{self, other})
	v.heartbeat(t0.Add(time.Minute))
	v.report(rpcdef.Resources{CPUCount: 8})
	r := v.Reply()
	if m := r.Members[0]; !m.LastHeartbeat.Equal(t0.Add(time.Minute)) || m.Resources == nil || m.Resources.CPUCount != 8 {
		t.Errorf("own entry = %+v, want the latest heartbeat and report", m)
	}
	if m := r.Members[1]; !m.LastHeartbeat.IsZero() || m.Resources != nil {
		t.Errorf("other entry = %+v, want no heartbeat time and no report: those of the roll at join would only grow stale", m)
	}
}

package loadgen

import (
	"sync"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// observer is the watcher index of the admin observer: its events count for
// detection and false deaths, not for fan-out.
const observer = -1

// victim is a simulated slave the run kills or silences.
type victim struct {
	idx  int
	node string
	how  string // howKill or howSilence

	at time.Time // when it was killed or silenced; zero before

	suspectAt time.Time // the master's suspect event, by the master's clock
	deadAt    time.Time // the master's dead event
	seen      []int64   // per simulated slave: when its Watch returned the death (unix ns); 0 if not yet
}

const (
	howKill    = "kill"
	howSilence = "silence"
)

// FalseDeath is a live simulated slave the master called suspect or dead.
type FalseDeath struct {
	Node   string    `json:"node"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// tracker reads every Watch reply, the observer's and the simulated
// slaves', for false deaths, detections and fan-out.
type tracker struct {
	mu       sync.Mutex
	ours     map[string]int     // simulated slave name -> index
	victims  map[string]*victim // by name
	versions map[uint64]bool    // events already judged
	rolls    map[string]bool    // node/status pairs already judged from a roll
	falses   []FalseDeath
	until    time.Time // events at or after this are not judged (the teardown)
}

func newTracker(names []string) *tracker {
	t := &tracker{ours: make(map[string]int, len(names)), victims: map[string]*victim{},
		versions: map[uint64]bool{}, rolls: map[string]bool{}}
	for i, n := range names {
		t.ours[n] = i
	}
	return t
}

// addVictim makes node a victim to be killed or silenced later.
func (t *tracker) addVictim(idx int, node, how string, sims int) *victim {
	v := &victim{idx: idx, node: node, how: how, seen: make([]int64, sims)}
	t.mu.Lock()
	t.victims[node] = v
	t.mu.Unlock()
	return v
}

// struck records the moment v was killed or silenced.
func (t *tracker) struck(v *victim, at time.Time) {
	t.mu.Lock()
	v.at = at
	t.mu.Unlock()
}

// stop ends judging: events the master makes from now on (the teardown's)
// are not counted.
func (t *tracker) stop(at time.Time) {
	t.mu.Lock()
	t.until = at
	t.mu.Unlock()
}

// interesting says whether a reply holds anything the tracker judges, so
// the common case (a batch of join events) takes no lock.
func interesting(r *rpcdef.WatchReply) bool {
	if r.Reset {
		return true
	}
	for i := range r.Events {
		switch r.Events[i].Kind {
		case rpcdef.EventSuspect, rpcdef.EventDead:
			return true
		}
	}
	return false
}

// observe judges one Watch reply that watcher (a simulated slave's index,
// or observer) received at recv.
func (t *tracker) observe(watcher int, r *rpcdef.WatchReply, recv time.Time) {
	if !interesting(r) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range r.Events {
		e := &r.Events[i]
		if e.Kind != rpcdef.EventSuspect && e.Kind != rpcdef.EventDead {
			continue
		}
		t.judge(watcher, e.Node, e.Status, e.At, e.Reason, recv, e.Version)
	}
	if r.Reset {
		for i := range r.Members {
			m := &r.Members[i]
			if m.Status == rpcdef.StatusSuspect || m.Status == rpcdef.StatusDead {
				t.judge(watcher, m.Name, m.Status, m.StatusSince, "seen in a reset roll", recv, 0)
			}
		}
	}
}

// judge handles one member found suspect or dead at (the master's clock).
// version is the event's, or 0 for a member of a roll. t.mu is held.
func (t *tracker) judge(watcher int, node string, st rpcdef.Status, at time.Time, reason string, recv time.Time, version uint64) {
	if _, ok := t.ours[node]; !ok {
		return
	}
	if !t.until.IsZero() && !at.Before(t.until) {
		return
	}
	v := t.victims[node]
	if v == nil || v.at.IsZero() || at.Before(v.at) {
		// Not struck (yet): a false death, counted once per event, or once
		// per node and status when only a roll shows it.
		if version != 0 {
			if t.versions[version] {
				return
			}
			t.versions[version] = true
		} else {
			key := node + "/" + string(st)
			if t.rolls[key] {
				return
			}
			t.rolls[key] = true
		}
		t.falses = append(t.falses, FalseDeath{Node: node, Status: string(st), At: at, Reason: reason})
		return
	}
	switch st {
	case rpcdef.StatusSuspect:
		if v.suspectAt.IsZero() {
			v.suspectAt = at
		}
	case rpcdef.StatusDead:
		if v.deadAt.IsZero() {
			v.deadAt = at
		}
		if watcher >= 0 && v.seen[watcher] == 0 {
			v.seen[watcher] = recv.UnixNano()
		}
	}
}

// falseDeaths is a copy of the false deaths so far.
func (t *tracker) falseDeaths() []FalseDeath {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]FalseDeath(nil), t.falses...)
}

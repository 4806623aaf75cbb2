package masterd

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// Roll is what the masters replicate through raft: the roster (every
// member's name, incarnation, status and since, last address and
// certificate expiry), the event log, and the masters' ClusterService
// addresses. It is the raft.FSM. Liveness (heartbeat arrivals, phi
// history, connection evidence, resource reports) is never in it: it stays
// in the leader's Membership, as Nomad keeps its heartbeat timers.
//
// Every master applies the same commands in the same order, so each
// assigns the same versions to the same events: a watcher's After is valid
// on any master, and across failovers.
type Roll struct {
	// feed is what watchers read, without taking mu.
	feed atomic.Pointer[feed]

	mu      sync.Mutex
	members map[string]rpcdef.Member // no Resources, no LastHeartbeat
	masters map[string]string        // announced ClusterService addresses by master name
	version uint64                   // the last event's
}

// NewRoll makes an empty roll.
func NewRoll() *Roll {
	r := &Roll{members: make(map[string]rpcdef.Member), masters: make(map[string]string)}
	r.feed.Store(&feed{changed: make(chan struct{})})
	return r
}

// A command is one type byte and a JSON body.
const (
	cmdEvents byte = 1 + iota // record: events and the members they leave
	cmdMaster                 // masterCmd: a master's address, or its removal
	cmdImport                 // importCmd: a roster.json of an older version
)

// record is one event and the member as it leaves it; for a forgotten
// event, the member is removed.
type record struct {
	Event  rpcdef.Event  `json:"e"`
	Member rpcdef.Member `json:"m"`
}

type masterCmd struct {
	Name string `json:"name"`
	Addr string `json:"addr"` // "" removes it
}

type importCmd struct {
	Version uint64          `json:"version"`
	Members []rpcdef.Member `json:"members"`
}

func encode(kind byte, body any) ([]byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return append([]byte{kind}, data...), nil
}

// Apply applies one committed command. A command it cannot read is
// refused whole (the error is raft's future's response), never half
// applied: every master refuses it alike.
func (r *Roll) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	body := l.Data[1:]
	switch l.Data[0] {
	case cmdEvents:
		var recs []record
		if err := json.Unmarshal(body, &recs); err != nil {
			return fmt.Errorf("events at raft index %d: %w", l.Index, err)
		}
		for i := range recs {
			if err := recs[i].check(); err != nil {
				return fmt.Errorf("events at raft index %d, record %d: %w", l.Index, i, err)
			}
		}
		r.apply(recs)
	case cmdMaster:
		var m masterCmd
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("master at raft index %d: %w", l.Index, err)
		}
		if err := pki.ValidName(m.Name); err != nil {
			return fmt.Errorf("master at raft index %d: %w", l.Index, err)
		}
		r.mu.Lock()
		if m.Addr == "" {
			delete(r.masters, m.Name)
		} else {
			r.masters[m.Name] = m.Addr
		}
		r.mu.Unlock()
	case cmdImport:
		var im importCmd
		if err := json.Unmarshal(body, &im); err != nil {
			return fmt.Errorf("roster import at raft index %d: %w", l.Index, err)
		}
		return r.load(im.Version, im.Members, nil)
	default:
		return fmt.Errorf("raft index %d: unknown command type %d", l.Index, l.Data[0])
	}
	return nil
}

// check refuses a record no master could have written.
func (rec *record) check() error {
	if err := pki.ValidName(rec.Member.Name); err != nil {
		return err
	}
	if rec.Event.Node != rec.Member.Name {
		return fmt.Errorf("event of %q carries member %q", rec.Event.Node, rec.Member.Name)
	}
	switch rec.Member.Status {
	case rpcdef.StatusAlive, rpcdef.StatusSuspect, rpcdef.StatusDead, rpcdef.StatusLeft, rpcdef.StatusUnknown:
	default:
		return fmt.Errorf("%s has status %q", rec.Member.Name, rec.Member.Status)
	}
	return nil
}

// apply numbers recs' events and applies them, waking the watchers once.
func (r *Roll) apply(recs []record) {
	if len(recs) == 0 {
		return
	}
	r.mu.Lock()
	old := r.feed.Load()
	events := old.events
	for _, rec := range recs {
		r.version++
		e := rec.Event
		e.Version = r.version
		if e.Kind == rpcdef.EventForgotten {
			delete(r.members, rec.Member.Name)
		} else {
			m := rec.Member
			m.Resources, m.LastHeartbeat = nil, time.Time{}
			r.members[m.Name] = m
		}
		if len(events) == maxEvents {
			// A new array: readers of the old one keep it as it is.
			events = append(make([]rpcdef.Event, 0, maxEvents), events[maxEvents/4:]...)
		}
		events = append(events, e)
	}
	r.feed.Store(&feed{version: r.version, events: events, changed: make(chan struct{})})
	r.mu.Unlock()
	close(old.changed)
}

// load replaces the roster and, if events is not nil, the feed; versions
// go on from version.
func (r *Roll) load(version uint64, members []rpcdef.Member, events []rpcdef.Event) error {
	if version > math.MaxUint64/2 {
		return fmt.Errorf("version %d is out of range", version)
	}
	ms := make(map[string]rpcdef.Member, len(members))
	for i, m := range members {
		if err := pki.ValidName(m.Name); err != nil {
			return fmt.Errorf("member %d: %w", i, err)
		}
		if _, dup := ms[m.Name]; dup {
			return fmt.Errorf("member %d: %s is listed twice", i, m.Name)
		}
		switch m.Status {
		case rpcdef.StatusAlive, rpcdef.StatusSuspect, rpcdef.StatusDead, rpcdef.StatusLeft, rpcdef.StatusUnknown:
		default:
			return fmt.Errorf("member %s has status %q", m.Name, m.Status)
		}
		m.Resources, m.LastHeartbeat = nil, time.Time{}
		ms[m.Name] = m
	}
	if len(events) > maxEvents {
		events = events[len(events)-maxEvents:]
	}
	for i := range events {
		if events[i].Version > version || i > 0 && events[i].Version <= events[i-1].Version {
			return fmt.Errorf("event %d: version %d out of order", i, events[i].Version)
		}
	}
	r.mu.Lock()
	r.members = ms
	if version < r.version {
		version = r.version // versions never go back
	}
	r.version = version
	old := r.feed.Load()
	r.feed.Store(&feed{version: version, events: slices.Clone(events), changed: make(chan struct{})})
	r.mu.Unlock()
	close(old.changed)
	return nil
}

// Members returns the replicated roster, unsorted, and its version.
func (r *Roll) Members() ([]rpcdef.Member, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]rpcdef.Member, 0, len(r.members))
	for _, m := range r.members {
		out = append(out, m)
	}
	return out, r.version
}

// Member returns one member of the replicated roster.
func (r *Roll) Member(name string) (rpcdef.Member, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.members[name]
	return m, r.version, ok
}

// Len is how many members the roster has.
func (r *Roll) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.members)
}

// Empty says whether nothing was ever recorded.
func (r *Roll) Empty() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version == 0 && len(r.members) == 0
}

// Version is the last event's version.
func (r *Roll) Version() uint64 { return r.feed.Load().version }

// MasterAddr is a master's announced ClusterService address.
func (r *Roll) MasterAddr(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.masters[name]
}

// Masters lists the announced masters among servers (the raft
// configuration's names), leader first, then by name, and the list's
// version.
func (r *Roll) Masters(leader string, servers []string) ([]rpcdef.MasterAddr, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]rpcdef.MasterAddr, 0, len(servers))
	for _, name := range servers {
		if a, ok := r.masters[name]; ok {
			out = append(out, rpcdef.MasterAddr{Name: name, Addr: a})
		}
	}
	slices.SortFunc(out, func(a, b rpcdef.MasterAddr) int {
		switch {
		case a.Name == leader:
			return -1
		case b.Name == leader:
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	if len(out) > rpcdef.MaxMasters {
		out = out[:rpcdef.MaxMasters]
	}
	return out, listVersion(out)
}

// listVersion names a masters list by its contents, leader first: a
// failover is a new list even when no address changed. Never 0, which a
// slave sends when it holds none.
func listVersion(ms []rpcdef.MasterAddr) uint64 {
	h := fnv.New64a()
	for _, m := range ms {
		h.Write([]byte(m.Name))
		h.Write([]byte{0})
		h.Write([]byte(m.Addr))
		h.Write([]byte{0})
	}
	return h.Sum64() | 1
}

// snapshot is the roll's form in a raft snapshot.
type snapshot struct {
	Version uint64            `json:"version"`
	Members []rpcdef.Member   `json:"members"`
	Events  []rpcdef.Event    `json:"events"`
	Masters map[string]string `json:"masters"`
}

// Snapshot copies the roll; raft writes it out on its own goroutine.
func (r *Roll) Snapshot() (raft.FSMSnapshot, error) {
	r.mu.Lock()
	s := &snapshot{Version: r.version, Members: make([]rpcdef.Member, 0, len(r.members)),
		Events: r.feed.Load().events, Masters: make(map[string]string, len(r.masters))}
	for _, m := range r.members {
		s.Members = append(s.Members, m)
	}
	for k, v := range r.masters {
		s.Masters[k] = v
	}
	r.mu.Unlock()
	slices.SortFunc(s.Members, func(a, b rpcdef.Member) int { return cmp.Compare(a.Name, b.Name) })
	return s, nil
}

// Persist writes the snapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("write roll snapshot: %w", err)
	}
	return sink.Close()
}

// Release is a no-op: the snapshot holds only copies (events' backing
// array is never written below its length).
func (s *snapshot) Release() {}

// maxSnapshot bounds a snapshot read back: far above any roll's (3.7 KB
// a member, 20,000 members, and the events).
const maxSnapshot = 256 << 20

// Restore replaces the roll with a snapshot's.
func (r *Roll) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s snapshot
	if err := json.NewDecoder(io.LimitReader(rc, maxSnapshot)).Decode(&s); err != nil {
		return fmt.Errorf("read roll snapshot: %w", err)
	}
	for name, addr := range s.Masters {
		if err := pki.ValidName(name); err != nil {
			return fmt.Errorf("roll snapshot: master %w", err)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("roll snapshot: master %s: %w", name, err)
		}
	}
	r.mu.Lock()
	r.version = 0 // a snapshot may restore an earlier state (raft's choice)
	r.mu.Unlock()
	if err := r.load(s.Version, s.Members, s.Events); err != nil {
		return fmt.Errorf("roll snapshot: %w", err)
	}
	r.mu.Lock()
	if s.Masters == nil {
		s.Masters = make(map[string]string)
	}
	r.masters = s.Masters
	r.mu.Unlock()
	return nil
}

// decodeRoster reads a roster.json of an older masterd, to import it once.
func decodeRoster(data []byte) (importCmd, error) {
	var old struct {
		Version uint64 `json:"version"`
		Nodes   []struct {
			Name         string        `json:"name"`
			Incarnation  uint64        `json:"incarnation"`
			Addr         string        `json:"addr"`
			Status       rpcdef.Status `json:"status"`
			JoinedAt     time.Time     `json:"joined_at"`
			StatusSince  time.Time     `json:"status_since"`
			CertNotAfter time.Time     `json:"cert_not_after"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(data, &old); err != nil {
		return importCmd{}, fmt.Errorf("decode roster: %w", err)
	}
	im := importCmd{Version: old.Version}
	for _, n := range old.Nodes {
		im.Members = append(im.Members, rpcdef.Member{Name: n.Name, Incarnation: n.Incarnation, Addr: n.Addr, Status: n.Status,
			JoinedAt: n.JoinedAt, StatusSince: n.StatusSince, CertNotAfter: n.CertNotAfter})
	}
	// The same checks as a command's, before it is proposed.
	if err := NewRoll().load(im.Version, im.Members, nil); err != nil {
		return importCmd{}, fmt.Errorf("roster: %w", err)
	}
	return im, nil
}

// Package registry is muster's portmapper: a table of service name ->
// address leases, served over mutual TLS and a local UNIX-domain socket, and
// kept on disk across restarts.
package registry

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// Owner says who asks for a change to the table.
type Owner struct {
	ID string // the identity that owns what it registers
	// Admin may replace or remove another owner's live entry.
	Admin bool
}

type lease struct {
	svc     rpcdef.Service
	owner   string
	id      string
	since   time.Time
	expires time.Time
	stale   bool // restored from disk, not yet renewed
}

// Table holds the registrations. Changes to which entries exist go through
// save before they take effect, so that what a caller was told is on disk.
// Renewals only move expiry times and are not saved: after a restart every
// entry gets one fresh TTL anyway.
type Table struct {
	ttl  time.Duration
	now  func() time.Time
	save func([]byte) error

	wmu sync.Mutex // serialises changes, so snapshots are saved in order
	mu  sync.RWMutex
	m   map[rpcdef.ServiceKey]*lease
}

// NewTable makes an empty table. save, if not nil, is given the whole table
// as JSON before each change takes effect; if it fails, the change does not.
func NewTable(ttl time.Duration, now func() time.Time, save func([]byte) error) *Table {
	if now == nil {
		now = time.Now
	}
	return &Table{ttl: ttl, now: now, save: save, m: make(map[rpcdef.ServiceKey]*lease)}
}

// TTL is the length of every lease.
func (t *Table) TTL() time.Duration { return t.ttl }

// snapshot is the table's form on disk.
type snapshot struct {
	Version int         `json:"version"`
	Entries []savedItem `json:"entries"`
}

type savedItem struct {
	Service rpcdef.Service `json:"service"`
	Owner   string         `json:"owner"`
	Lease   string         `json:"lease"`
	Since   time.Time      `json:"since"`
}

const snapshotVersion = 1

// change saves next and then makes it the table. The caller holds t.wmu and
// built next as a copy: leases are never modified in place, only replaced.
func (t *Table) change(next map[rpcdef.ServiceKey]*lease) error {
	if t.save != nil {
		data, err := encodeSnapshot(next)
		if err != nil {
			return err
		}
		if err := t.save(data); err != nil {
			return rpcdef.Errorf(rpcdef.CodeUnavailable, "registry could not save its table: %v", err)
		}
	}
	t.mu.Lock()
	// A Renew may have run while the snapshot was saved: keep its expiry.
	for k, l := range next {
		if cur, ok := t.m[k]; ok && cur.id == l.id {
			next[k] = cur
		}
	}
	t.m = next
	t.mu.Unlock()
	return nil
}

func encodeSnapshot(m map[rpcdef.ServiceKey]*lease) ([]byte, error) {
	s := snapshot{Version: snapshotVersion, Entries: make([]savedItem, 0, len(m))}
	for _, l := range m {
		s.Entries = append(s.Entries, savedItem{Service: l.svc, Owner: l.owner, Lease: l.id, Since: l.since})
	}
	slices.SortFunc(s.Entries, func(a, b savedItem) int { return compareKeys(a.Service.ServiceKey, b.Service.ServiceKey) })
	return json.MarshalIndent(s, "", "  ")
}

// Restore loads a saved table. Every entry comes back stale with one TTL to
// be renewed by its owner.
func (t *Table) Restore(data []byte) (int, error) {
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return 0, fmt.Errorf("decode saved table: %w", err)
	}
	if s.Version != snapshotVersion {
		return 0, fmt.Errorf("saved table has version %d, this registry reads version %d", s.Version, snapshotVersion)
	}
	exp := t.now().Add(t.ttl)
	m := make(map[rpcdef.ServiceKey]*lease, len(s.Entries))
	for i, e := range s.Entries {
		if err := validService(e.Service); err != nil {
			return 0, fmt.Errorf("saved entry %d: %w", i, err)
		}
		if e.Owner == "" || e.Lease == "" {
			return 0, fmt.Errorf("saved entry %d (%s): no owner or lease", i, e.Service.ServiceKey)
		}
		m[e.Service.ServiceKey] = &lease{svc: e.Service, owner: e.Owner, id: e.Lease, since: e.Since, expires: exp, stale: true}
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	t.m = m
	t.mu.Unlock()
	return len(m), nil
}

func validService(s rpcdef.Service) error {
	if err := rpcdef.ValidServiceName(s.Name); err != nil {
		return err
	}
	if err := rpcdef.ValidInstance(s.Instance); err != nil {
		return err
	}
	if s.Version < 0 {
		return fmt.Errorf("version %d is negative", s.Version)
	}
	if _, port, err := net.SplitHostPort(s.Addr); err != nil || port == "" || len(s.Addr) > 255 {
		return fmt.Errorf("address %q: want HOST:PORT", s.Addr)
	}
	return nil
}

// copyMap copies the map. With live set it leaves out entries that have
// expired by now; only Expire does that, so that it reports each of them.
func (t *Table) copyMap(now time.Time, live bool) map[rpcdef.ServiceKey]*lease {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m := make(map[rpcdef.ServiceKey]*lease, len(t.m)+1)
	for k, l := range t.m {
		if !live || now.Before(l.expires) {
			m[k] = l
		}
	}
	return m
}

// Register grants a lease on svc to owner. A live entry is replaced at
// once by a higher epoch, whoever owns it, and refused to a lower one;
// with equal epochs (0 for services without terms) a live entry of another
// owner is refused unless owner is an admin, and the same owner
// registering again replaces its entry with a new lease. A replaced
// entry's lease is unknown from then on.
func (t *Table) Register(svc rpcdef.Service, owner Owner) (string, error) {
	id, _, err := t.register(svc, owner)
	return id, err
}

// register is Register, and also returns the live entry of a lower epoch
// it replaced, if it replaced one.
func (t *Table) register(svc rpcdef.Service, owner Owner) (string, *rpcdef.Entry, error) {
	if err := validService(svc); err != nil {
		return "", nil, rpcdef.Errorf(rpcdef.CodeInvalid, "%v", err)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	now := t.now()
	next := t.copyMap(now, false)
	var replaced *rpcdef.Entry
	if cur, ok := next[svc.ServiceKey]; ok && now.Before(cur.expires) {
		switch {
		case svc.Epoch > cur.svc.Epoch:
			e := t.entry(cur, now)
			replaced = &e
		case svc.Epoch < cur.svc.Epoch:
			return "", nil, rpcdef.OlderEpochError(svc.ServiceKey, svc.Epoch, cur.svc.Epoch, cur.owner, cur.svc.Addr)
		case cur.owner != owner.ID && !owner.Admin:
			return "", nil, rpcdef.Errorf(rpcdef.CodeConflict, "%s is registered by %s for another %v; only its owner or an admin may replace it",
				svc.ServiceKey, cur.owner, cur.expires.Sub(now).Round(time.Millisecond))
		}
	}
	l := &lease{svc: svc, owner: owner.ID, id: newLeaseID(), since: now, expires: now.Add(t.ttl)}
	next[svc.ServiceKey] = l
	if err := t.change(next); err != nil {
		return "", nil, err
	}
	return l.id, replaced, nil
}

// Renew extends a lease by one TTL.
func (t *Table) Renew(key rpcdef.ServiceKey, leaseID string, owner Owner) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now() // read under the lock, so an Expire in progress sees the renewal
	l, ok := t.m[key]
	if !ok || !now.Before(l.expires) || l.id != leaseID {
		return rpcdef.Errorf(rpcdef.CodeUnknownLease, "no lease %.8s… on %s: it expired or was replaced (by a newer epoch, or a new registration); register again", leaseID, key)
	}
	if l.owner != owner.ID {
		return rpcdef.Errorf(rpcdef.CodePermission, "lease on %s belongs to %s", key, l.owner)
	}
	// Copies of the map made by a change in progress share the old lease: replace it.
	nl := *l
	nl.expires = now.Add(t.ttl)
	nl.stale = false
	t.m[key] = &nl
	return nil
}

// Unregister removes an entry. Only its owner or an admin may.
func (t *Table) Unregister(key rpcdef.ServiceKey, owner Owner) error {
	return t.unregister(key, "", owner)
}

// Release removes the entry only if it is still the given lease.
func (t *Table) Release(key rpcdef.ServiceKey, leaseID string, owner Owner) error {
	return t.unregister(key, leaseID, owner)
}

func (t *Table) unregister(key rpcdef.ServiceKey, leaseID string, owner Owner) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	now := t.now()
	next := t.copyMap(now, false)
	cur, ok := next[key]
	if !ok || !now.Before(cur.expires) {
		return rpcdef.Errorf(rpcdef.CodeNotFound, "%s is not registered", key)
	}
	if leaseID != "" && cur.id != leaseID {
		return rpcdef.Errorf(rpcdef.CodeUnknownLease, "lease %.8s… on %s was replaced; the entry is left alone", leaseID, key)
	}
	if cur.owner != owner.ID && !owner.Admin {
		return rpcdef.Errorf(rpcdef.CodePermission, "%s belongs to %s; only its owner or an admin may remove it", key, cur.owner)
	}
	delete(next, key)
	return t.change(next)
}

// Lookup finds a live entry. An empty instance matches the name's only instance.
func (t *Table) Lookup(key rpcdef.ServiceKey) (rpcdef.Entry, error) {
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	if key.Instance != "" {
		l, ok := t.m[key]
		if !ok || !now.Before(l.expires) {
			return rpcdef.Entry{}, rpcdef.Errorf(rpcdef.CodeNotFound, "%s is not registered", key)
		}
		return t.entry(l, now), nil
	}
	var found []*lease
	for k, l := range t.m {
		if k.Name == key.Name && now.Before(l.expires) {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 0:
		return rpcdef.Entry{}, rpcdef.Errorf(rpcdef.CodeNotFound, "%s is not registered", key)
	case 1:
		return t.entry(found[0], now), nil
	}
	names := make([]string, len(found))
	for i, l := range found {
		names[i] = l.svc.ServiceKey.String()
	}
	slices.Sort(names)
	return rpcdef.Entry{}, rpcdef.Errorf(rpcdef.CodeInvalid, "%s has %d instances (%v): name one as NAME/INSTANCE", key.Name, len(found), names)
}

// List returns every live entry, sorted.
func (t *Table) List() []rpcdef.Entry {
	now := t.now()
	t.mu.RLock()
	out := make([]rpcdef.Entry, 0, len(t.m))
	for _, l := range t.m {
		if now.Before(l.expires) {
			out = append(out, t.entry(l, now))
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b rpcdef.Entry) int { return compareKeys(a.ServiceKey, b.ServiceKey) })
	return out
}

// Expire drops entries whose lease has run out and returns them.
func (t *Table) Expire() ([]rpcdef.Entry, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	now := t.now()
	var gone []rpcdef.Entry
	t.mu.RLock()
	for _, l := range t.m {
		if !now.Before(l.expires) {
			gone = append(gone, t.entry(l, now))
		}
	}
	t.mu.RUnlock()
	if len(gone) == 0 {
		return nil, nil
	}
	if err := t.change(t.copyMap(now, true)); err != nil {
		return nil, err
	}
	return gone, nil
}

func (t *Table) entry(l *lease, now time.Time) rpcdef.Entry {
	st := rpcdef.StateLive
	if l.stale {
		st = rpcdef.StateStale
	}
	return rpcdef.Entry{Service: l.svc, Owner: l.owner, TTL: t.ttl, Remaining: max(l.expires.Sub(now), 0), State: st, Since: l.since}
}

func compareKeys(a, b rpcdef.ServiceKey) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Instance, b.Instance))
}

func newLeaseID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

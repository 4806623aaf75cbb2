package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// update rewrites the golden files under testdata instead of comparing with
// them: go test ./registry/ -run Golden -update. It is the package's only
// -update flag; other test files of package registry should use it too.
var update = flag.Bool("update", false, "rewrite golden files")

const ttl = 10 * time.Second

// start is where every fake clock begins.
var start = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is the table's clock in tests: it moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: start} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// saver records what a table saves and can be made to fail.
type saver struct {
	mu    sync.Mutex
	saves [][]byte
	fail  error
	// during, if set, runs inside the save, before the change takes effect.
	during func()
}

func (s *saver) save(b []byte) error {
	s.mu.Lock()
	fail, during := s.fail, s.during
	if fail == nil {
		s.saves = append(s.saves, bytes.Clone(b))
	}
	s.mu.Unlock()
	if during != nil {
		during()
	}
	return fail
}

func (s *saver) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.saves)
}

func (s *saver) last(t *testing.T) snapshot {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.saves) == 0 {
		t.Fatal("nothing was saved")
	}
	var snap snapshot
	if err := json.Unmarshal(s.saves[len(s.saves)-1], &snap); err != nil {
		t.Fatalf("saved table is not JSON: %v", err)
	}
	return snap
}

func (s *saver) setFail(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

func newTable(t *testing.T) (*Table, *fakeClock, *saver) {
	t.Helper()
	c := newClock()
	s := &saver{}
	return NewTable(ttl, c.Now, s.save), c, s
}

func svc(name, inst, addr string) rpcdef.Service {
	return rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: name, Instance: inst}, Version: 1, Addr: addr}
}

func key(name, inst string) rpcdef.ServiceKey { return rpcdef.ServiceKey{Name: name, Instance: inst} }

var (
	alice = Owner{ID: "spiffe://lab/master/alice"}
	bob   = Owner{ID: "spiffe://lab/master/bob"}
	admin = Owner{ID: "spiffe://lab/admin/root", Admin: true}
)

func mustRegister(t *testing.T, tb *Table, s rpcdef.Service, o Owner) string {
	t.Helper()
	id, err := tb.Register(s, o)
	if err != nil {
		t.Fatalf("Register(%s, %s): %v", s.ServiceKey, o.ID, err)
	}
	return id
}

// keys lists the keys of entries in order.
func keys(es []rpcdef.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ServiceKey.String()
	}
	return out
}

// show prints an entry in full: Entry embeds ServiceKey, whose String method
// would make %v print only the key.
func show(e rpcdef.Entry) string {
	return fmt.Sprintf("{%s v%d %s owner=%s ttl=%v remaining=%v %s since=%s}",
		e.ServiceKey, e.Version, e.Addr, e.Owner, e.TTL, e.Remaining, e.State, e.Since.Format(time.RFC3339Nano))
}

func showAll(es []rpcdef.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = show(e)
	}
	return out
}

func savedKeys(s snapshot) []string {
	out := make([]string, len(s.Entries))
	for i, e := range s.Entries {
		out[i] = e.Service.ServiceKey.String()
	}
	return out
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: %v, want no error", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func TestRegisterLookupList(t *testing.T) {
	tb, clock, _ := newTable(t)
	regs := []struct {
		svc   rpcdef.Service
		owner Owner
	}{
		{svc("metrics", "node-2", "10.0.0.2:9100"), bob},
		{svc("ClusterService", "lab", "10.0.0.1:7000"), alice},
		{svc("metrics", "node-1", "10.0.0.1:9100"), bob},
		{svc("Alpha", "z", "10.0.0.9:1"), alice},
		{svc("metrics", "node-10", "10.0.0.10:9100"), bob},
	}
	ids := map[string]bool{}
	for _, r := range regs {
		id := mustRegister(t, tb, r.svc, r.owner)
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
			t.Errorf("lease id %q: want 32 hex digits", id)
		}
		if ids[id] {
			t.Errorf("lease id %q given twice", id)
		}
		ids[id] = true
	}
	if tb.TTL() != ttl {
		t.Errorf("TTL() = %v, want %v", tb.TTL(), ttl)
	}

	clock.Advance(3 * time.Second)
	list := tb.List()
	want := []string{"Alpha/z", "ClusterService/lab", "metrics/node-1", "metrics/node-10", "metrics/node-2"}
	if got := keys(list); !slices.Equal(got, want) {
		t.Fatalf("List() keys = %v, want %v (sorted by name, then instance)", got, want)
	}
	for _, r := range regs {
		wantEntry := rpcdef.Entry{Service: r.svc, Owner: r.owner.ID, TTL: ttl, Remaining: ttl - 3*time.Second, State: rpcdef.StateLive, Since: start}
		got, err := tb.Lookup(r.svc.ServiceKey)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", r.svc.ServiceKey, err)
		}
		if got != wantEntry {
			t.Errorf("Lookup(%s) = %v, want %v", r.svc.ServiceKey, show(got), show(wantEntry))
		}
		i := slices.IndexFunc(list, func(e rpcdef.Entry) bool { return e.ServiceKey == r.svc.ServiceKey })
		if list[i] != wantEntry {
			t.Errorf("List() has %v, want %v", show(list[i]), show(wantEntry))
		}
	}
}

func TestLookup(t *testing.T) {
	tb, _, _ := newTable(t)
	mustRegister(t, tb, svc("Solo", "only", "10.0.0.1:1"), alice)
	mustRegister(t, tb, svc("Multi", "y", "10.0.0.2:2"), alice)
	mustRegister(t, tb, svc("Multi", "x", "10.0.0.3:3"), bob)

	tests := []struct {
		name     string
		key      rpcdef.ServiceKey
		wantAddr string
		wantErr  error
		wantMsg  []string // each must appear in the error
	}{
		{name: "exact", key: key("Multi", "x"), wantAddr: "10.0.0.3:3"},
		{name: "exact other", key: key("Multi", "y"), wantAddr: "10.0.0.2:2"},
		{name: "only instance", key: key("Solo", ""), wantAddr: "10.0.0.1:1"},
		{name: "exact only instance", key: key("Solo", "only"), wantAddr: "10.0.0.1:1"},
		{name: "several instances", key: key("Multi", ""), wantErr: rpcdef.ErrInvalid, wantMsg: []string{"Multi/x", "Multi/y", "2 instances"}},
		{name: "unknown name", key: key("Nope", ""), wantErr: rpcdef.ErrNotFound, wantMsg: []string{"Nope"}},
		{name: "unknown instance", key: key("Solo", "other"), wantErr: rpcdef.ErrNotFound, wantMsg: []string{"Solo/other"}},
		{name: "unknown name with instance", key: key("Nope", "x"), wantErr: rpcdef.ErrNotFound},
		{name: "name is case sensitive", key: key("solo", ""), wantErr: rpcdef.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := tb.Lookup(tt.key)
			wantErr(t, fmt.Sprintf("Lookup(%s)", tt.key), err, tt.wantErr)
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Lookup(%s) error %q does not mention %q", tt.key, err, m)
				}
			}
			if e.Addr != tt.wantAddr {
				t.Errorf("Lookup(%s).Addr = %q, want %q", tt.key, e.Addr, tt.wantAddr)
			}
		})
	}
}

func TestRegisterValidation(t *testing.T) {
	tests := []struct {
		name string
		svc  rpcdef.Service
	}{
		{"empty name", svc("", "a", "h:1")},
		{"name starts with digit", svc("1svc", "a", "h:1")},
		{"name starts with dash", svc("-svc", "a", "h:1")},
		{"name with space", svc("my svc", "a", "h:1")},
		{"name with slash", svc("a/b", "a", "h:1")},
		{"name too long", svc(strings.Repeat("a", 64), "a", "h:1")},
		{"empty instance", svc("svc", "", "h:1")},
		{"upper-case instance", svc("svc", "Node1", "h:1")},
		{"instance with slash", svc("svc", "a/b", "h:1")},
		{"instance too long", svc("svc", strings.Repeat("a", 64), "h:1")},
		{"empty addr", svc("svc", "a", "")},
		{"addr too long", svc("svc", "a", strings.Repeat("h", 250)+":12345")},
		{"negative version", rpcdef.Service{ServiceKey: key("svc", "a"), Version: -1, Addr: "h:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _, s := newTable(t)
			id, err := tb.Register(tt.svc, alice)
			wantErr(t, "Register", err, rpcdef.ErrInvalid)
			if id != "" {
				t.Errorf("Register returned lease %q with an error", id)
			}
			if n := len(tb.List()); n != 0 {
				t.Errorf("List() has %d entries after a refused Register", n)
			}
			if s.count() != 0 {
				t.Errorf("a refused Register saved the table")
			}
		})
	}
	t.Run("longest valid", func(t *testing.T) {
		tb, _, _ := newTable(t)
		mustRegister(t, tb, svc(strings.Repeat("a", 63), strings.Repeat("b", 63), strings.Repeat("h", 249)+":12345"), alice)
	})
}

func TestOwnership(t *testing.T) {
	k := key("ClusterService", "lab")
	other := key("ClusterService", "other")
	tests := []struct {
		name string
		// act runs after alice registered k with lease aliceLease.
		act       func(tb *Table) error
		wantErr   error
		wantOwner string // owner of k afterwards; "" if k is gone
		// aliceLease is what Renew with alice's original lease gives afterwards.
		aliceLease error
	}{
		{"other owner registers live name", registerAct(svc("ClusterService", "lab", "10.9.9.9:1"), bob), rpcdef.ErrConflict, alice.ID, nil},
		{"same owner re-registers", registerAct(svc("ClusterService", "lab", "10.0.0.2:7000"), alice), nil, alice.ID, rpcdef.ErrUnknownLease},
		{"admin replaces", registerAct(svc("ClusterService", "lab", "10.0.0.2:7000"), admin), nil, admin.ID, rpcdef.ErrUnknownLease},
		{"other owner registers another instance", registerAct(svc("ClusterService", "other", "10.0.0.2:7000"), bob), nil, alice.ID, nil},
		{"non-owner unregisters", func(tb *Table) error { return tb.Unregister(k, bob) }, rpcdef.ErrPermission, alice.ID, nil},
		{"owner unregisters", func(tb *Table) error { return tb.Unregister(k, alice) }, nil, "", rpcdef.ErrUnknownLease},
		{"admin unregisters", func(tb *Table) error { return tb.Unregister(k, admin) }, nil, "", rpcdef.ErrUnknownLease},
		{"unregister unknown", func(tb *Table) error { return tb.Unregister(other, alice) }, rpcdef.ErrNotFound, alice.ID, nil},
		{"admin unregisters unknown", func(tb *Table) error { return tb.Unregister(other, admin) }, rpcdef.ErrNotFound, alice.ID, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _, _ := newTable(t)
			lease := mustRegister(t, tb, svc("ClusterService", "lab", "10.0.0.1:7000"), alice)
			wantErr(t, "act", tt.act(tb), tt.wantErr)
			e, err := tb.Lookup(k)
			switch {
			case tt.wantOwner == "" && !errors.Is(err, rpcdef.ErrNotFound):
				t.Errorf("Lookup(%s) = %v, %v; want it gone", k, show(e), err)
			case tt.wantOwner != "" && err != nil:
				t.Errorf("Lookup(%s): %v", k, err)
			case e.Owner != tt.wantOwner:
				t.Errorf("owner of %s is %q, want %q", k, e.Owner, tt.wantOwner)
			}
			wantErr(t, "Renew with alice's first lease", tb.Renew(k, lease, alice), tt.aliceLease)
		})
	}

	t.Run("re-register gives a new lease", func(t *testing.T) {
		tb, _, _ := newTable(t)
		first := mustRegister(t, tb, svc("ClusterService", "lab", "10.0.0.1:7000"), alice)
		second := mustRegister(t, tb, svc("ClusterService", "lab", "10.0.0.2:7000"), alice)
		if first == second {
			t.Fatalf("re-register kept lease %q", first)
		}
		wantErr(t, "Renew(old)", tb.Renew(k, first, alice), rpcdef.ErrUnknownLease)
		wantErr(t, "Renew(new)", tb.Renew(k, second, alice), nil)
		if e, _ := tb.Lookup(k); e.Addr != "10.0.0.2:7000" {
			t.Errorf("address after re-register = %q, want the new one", e.Addr)
		}
	})

	t.Run("conflict names the owner", func(t *testing.T) {
		tb, _, _ := newTable(t)
		mustRegister(t, tb, svc("ClusterService", "lab", "10.0.0.1:7000"), alice)
		_, err := tb.Register(svc("ClusterService", "lab", "10.0.0.1:7000"), bob)
		if err == nil || !strings.Contains(err.Error(), alice.ID) {
			t.Errorf("conflict error %v does not name the owner %s", err, alice.ID)
		}
	})
}

func TestLeases(t *testing.T) {
	k := key("ClusterService", "lab")
	s := svc("ClusterService", "lab", "10.0.0.1:7000")

	t.Run("expired entry is invisible before Expire runs", func(t *testing.T) {
		tb, clock, _ := newTable(t)
		lease := mustRegister(t, tb, s, alice)
		clock.Advance(ttl - time.Nanosecond)
		if e, err := tb.Lookup(k); err != nil || e.Remaining != time.Nanosecond {
			t.Fatalf("Lookup 1ns before expiry = %v, %v; want live with 1ns left", show(e), err)
		}
		clock.Advance(time.Nanosecond)
		if _, err := tb.Lookup(k); !errors.Is(err, rpcdef.ErrNotFound) {
			t.Errorf("Lookup at expiry: %v, want not found", err)
		}
		if _, err := tb.Lookup(key("ClusterService", "")); !errors.Is(err, rpcdef.ErrNotFound) {
			t.Errorf("Lookup of the name at expiry: %v, want not found", err)
		}
		if l := tb.List(); len(l) != 0 {
			t.Errorf("List at expiry = %v, want empty", keys(l))
		}
		wantErr(t, "Renew at expiry", tb.Renew(k, lease, alice), rpcdef.ErrUnknownLease)

		gone, err := tb.Expire()
		if err != nil {
			t.Fatalf("Expire: %v", err)
		}
		want := []rpcdef.Entry{{Service: s, Owner: alice.ID, TTL: ttl, Remaining: 0, State: rpcdef.StateLive, Since: start}}
		if !slices.Equal(gone, want) {
			t.Errorf("Expire() = %v, want %v", showAll(gone), showAll(want))
		}
		if gone, err := tb.Expire(); gone != nil || err != nil {
			t.Errorf("second Expire() = %v, %v; want nothing", gone, err)
		}
	})

	t.Run("Expire keeps live entries", func(t *testing.T) {
		tb, clock, _ := newTable(t)
		mustRegister(t, tb, svc("Old", "a", "h:1"), alice)
		clock.Advance(ttl / 2)
		mustRegister(t, tb, svc("New", "a", "h:1"), alice)
		clock.Advance(ttl / 2)
		gone, err := tb.Expire()
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(gone); !slices.Equal(got, []string{"Old/a"}) {
			t.Errorf("Expire() = %v, want [Old/a]", got)
		}
		if got := keys(tb.List()); !slices.Equal(got, []string{"New/a"}) {
			t.Errorf("List() after Expire = %v, want [New/a]", got)
		}
	})

	t.Run("Renew extends by one TTL from the renewal", func(t *testing.T) {
		tb, clock, _ := newTable(t)
		lease := mustRegister(t, tb, s, alice)
		clock.Advance(7 * time.Second)
		wantErr(t, "Renew", tb.Renew(k, lease, alice), nil)
		e, err := tb.Lookup(k)
		if err != nil || e.Remaining != ttl || e.Since != start {
			t.Fatalf("after Renew: %v, %v; want %v remaining, since %v", show(e), err, ttl, start)
		}
		clock.Advance(ttl - time.Nanosecond) // 17s - 1ns after registering
		if _, err := tb.Lookup(k); err != nil {
			t.Fatalf("renewed entry gone before its new expiry: %v", err)
		}
		if gone, _ := tb.Expire(); len(gone) != 0 {
			t.Fatalf("Expire dropped a renewed entry: %v", keys(gone))
		}
		clock.Advance(time.Nanosecond)
		if _, err := tb.Lookup(k); !errors.Is(err, rpcdef.ErrNotFound) {
			t.Fatalf("renewed entry still there one TTL after its renewal: %v", err)
		}
	})

	t.Run("Renew refusals", func(t *testing.T) {
		tests := []struct {
			name    string
			advance time.Duration
			key     rpcdef.ServiceKey
			lease   func(real string) string
			owner   Owner
			wantErr error
		}{
			{name: "ok", key: k, lease: same, owner: alice},
			{name: "wrong lease", key: k, lease: func(string) string { return "0123456789abcdef0123456789abcdef" }, owner: alice, wantErr: rpcdef.ErrUnknownLease},
			{name: "empty lease", key: k, lease: func(string) string { return "" }, owner: alice, wantErr: rpcdef.ErrUnknownLease},
			{name: "wrong key", key: key("ClusterService", "other"), lease: same, owner: alice, wantErr: rpcdef.ErrUnknownLease},
			{name: "after expiry", advance: ttl, key: k, lease: same, owner: alice, wantErr: rpcdef.ErrUnknownLease},
			{name: "other owner", key: k, lease: same, owner: bob, wantErr: rpcdef.ErrPermission},
			{name: "admin", key: k, lease: same, owner: admin, wantErr: rpcdef.ErrPermission},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tb, clock, _ := newTable(t)
				lease := mustRegister(t, tb, s, alice)
				clock.Advance(tt.advance + time.Second)
				err := tb.Renew(tt.key, tt.lease(lease), tt.owner)
				wantErr(t, "Renew", err, tt.wantErr)
				if tt.wantErr == nil || tt.advance > 0 {
					return
				}
				// A refused renewal does not extend the lease.
				if e, err := tb.Lookup(k); err != nil || e.Remaining != ttl-time.Second {
					t.Errorf("after refused Renew: %v, %v; want %v remaining", show(e), err, ttl-time.Second)
				}
			})
		}
	})

	t.Run("another owner may take an expired name", func(t *testing.T) {
		for _, expire := range []bool{false, true} {
			t.Run(fmt.Sprintf("Expire ran=%v", expire), func(t *testing.T) {
				tb, clock, _ := newTable(t)
				aliceLease := mustRegister(t, tb, s, alice)
				clock.Advance(ttl)
				if expire {
					if _, err := tb.Expire(); err != nil {
						t.Fatal(err)
					}
				}
				mustRegister(t, tb, svc("ClusterService", "lab", "10.0.0.2:7000"), bob)
				if e, _ := tb.Lookup(k); e.Owner != bob.ID {
					t.Errorf("owner = %q, want %q", e.Owner, bob.ID)
				}
				wantErr(t, "Renew by the old owner", tb.Renew(k, aliceLease, alice), rpcdef.ErrUnknownLease)
			})
		}
	})
}

func same(s string) string { return s }

// registerAct is a table case's action that registers s as o.
func registerAct(s rpcdef.Service, o Owner) func(*Table) error {
	return func(tb *Table) error {
		_, err := tb.Register(s, o)
		return err
	}
}

// An entry whose lease ran out is reported by Expire, even when some other
// change to the table happened between its expiry and the Expire call; the
// server logs "lease expired" from what Expire returns.
func TestExpireReportsEntriesDroppedByOtherChanges(t *testing.T) {
	changes := []struct {
		name string
		do   func(tb *Table) error
	}{
		{"Register", registerAct(svc("Other", "a", "h:1"), bob)},
		{"Unregister", func(tb *Table) error { return tb.Unregister(key("Keep", "a"), bob) }},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			tb, clock, _ := newTable(t)
			mustRegister(t, tb, svc("Gone", "a", "h:1"), alice)
			clock.Advance(time.Second)
			mustRegister(t, tb, svc("Keep", "a", "h:1"), bob)
			clock.Advance(ttl - time.Second) // Gone/a has expired, Keep/a has not
			if err := c.do(tb); err != nil {
				t.Fatal(err)
			}
			gone, err := tb.Expire()
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(gone); !slices.Equal(got, []string{"Gone/a"}) {
				t.Errorf("Expire() after %s = %v, want [Gone/a]", c.name, got)
			}
		})
	}
}

func TestSave(t *testing.T) {
	tb, clock, s := newTable(t)
	var inSave []string // what List showed while the table was being saved
	s.during = func() { inSave = keys(tb.List()) }

	steps := []struct {
		name      string
		do        func() error
		wantSaved []string // the saved table's keys; nil: no save
		wantList  []string // List while saving
	}{
		{
			name:      "register",
			do:        func() error { _, err := tb.Register(svc("B", "b", "h:1"), alice); return err },
			wantSaved: []string{"B/b"},
			wantList:  []string{},
		},
		{
			name:      "register another",
			do:        func() error { _, err := tb.Register(svc("A", "a", "h:1"), bob); return err },
			wantSaved: []string{"A/a", "B/b"},
			wantList:  []string{"B/b"},
		},
		{
			name: "renew",
			do: func() error {
				clock.Advance(ttl / 2)
				l := s.last(t)
				return tb.Renew(key("B", "b"), l.Entries[1].Lease, alice)
			},
		},
		{
			name: "lookup and list",
			do: func() error {
				tb.List()
				_, err := tb.Lookup(key("A", "a"))
				return err
			},
		},
		{
			name: "refused register",
			do: func() error {
				if _, err := tb.Register(svc("A", "a", "h:2"), alice); !errors.Is(err, rpcdef.ErrConflict) {
					return fmt.Errorf("got %v, want conflict", err)
				}
				return nil
			},
		},
		{
			name: "refused unregister",
			do: func() error {
				if err := tb.Unregister(key("A", "a"), alice); !errors.Is(err, rpcdef.ErrPermission) {
					return fmt.Errorf("got %v, want permission denied", err)
				}
				return nil
			},
		},
		{
			name: "expire with nothing expired",
			do:   func() error { _, err := tb.Expire(); return err },
		},
		{
			name: "expire",
			do: func() error {
				clock.Advance(ttl / 2) // A/a expires; B/b was renewed
				_, err := tb.Expire()
				return err
			},
			wantSaved: []string{"B/b"},
			wantList:  []string{"B/b"},
		},
		{
			name:      "unregister",
			do:        func() error { return tb.Unregister(key("B", "b"), alice) },
			wantSaved: []string{},
			wantList:  []string{"B/b"},
		},
	}
	for _, st := range steps {
		n := s.count()
		inSave = nil
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.wantSaved == nil {
			if s.count() != n {
				t.Errorf("%s saved the table", st.name)
			}
			continue
		}
		if s.count() != n+1 {
			t.Fatalf("%s saved %d times, want once", st.name, s.count()-n)
		}
		if got := savedKeys(s.last(t)); !slices.Equal(got, st.wantSaved) {
			t.Errorf("%s saved %v, want %v", st.name, got, st.wantSaved)
		}
		if !slices.Equal(inSave, st.wantList) {
			t.Errorf("%s: List during the save = %v, want %v (the change must not show before it is saved)", st.name, inSave, st.wantList)
		}
	}
}

func TestSaveFailure(t *testing.T) {
	k := key("ClusterService", "lab")
	tests := []struct {
		name string
		// do runs with a failing save, after alice registered k (lease
		// given) and the clock moved by advance.
		advance time.Duration
		do      func(tb *Table) error
	}{
		{"register new", 0, registerAct(svc("Other", "a", "h:1"), bob)},
		{"owner re-registers", 0, registerAct(svc("ClusterService", "lab", "10.0.0.2:1"), alice)},
		{"admin replaces", 0, registerAct(svc("ClusterService", "lab", "10.0.0.2:1"), admin)},
		{"unregister", 0, func(tb *Table) error { return tb.Unregister(k, alice) }},
		{"expire", ttl, func(tb *Table) error {
			gone, err := tb.Expire()
			if gone != nil {
				return fmt.Errorf("Expire returned %v with error %v", keys(gone), err)
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, clock, s := newTable(t)
			lease := mustRegister(t, tb, svc("ClusterService", "lab", "10.0.0.1:1"), alice)
			clock.Advance(tt.advance)
			before := tb.List()

			s.setFail(errors.New("disk full"))
			err := tt.do(tb)
			if !errors.Is(err, rpcdef.ErrUnavailable) {
				t.Fatalf("error %v, want unavailable", err)
			}
			if !strings.Contains(err.Error(), "disk full") {
				t.Errorf("error %q does not say why the save failed", err)
			}
			if after := tb.List(); !slices.Equal(after, before) {
				t.Errorf("List() after a failed save = %v, want unchanged %v", showAll(after), showAll(before))
			}
			s.setFail(nil)
			if tt.advance == 0 {
				wantErr(t, "Renew of the untouched lease", tb.Renew(k, lease, alice), nil)
				return
			}
			// The expired entry is still there to expire once saving works.
			gone, err := tb.Expire()
			if err != nil || !slices.Equal(keys(gone), []string{k.String()}) {
				t.Errorf("Expire() once saving works = %v, %v; want [%s]", keys(gone), err, k)
			}
		})
	}
}

func TestRestore(t *testing.T) {
	// A first registry life: alice and bob register, and it stops.
	old, oldClock, s := newTable(t)
	aliceLease := mustRegister(t, old, svc("ClusterService", "lab", "10.0.0.1:7000"), alice)
	oldClock.Advance(time.Second)
	bobLease := mustRegister(t, old, svc("metrics", "node-1", "10.0.0.2:9100"), bob)
	s.mu.Lock()
	data := s.saves[len(s.saves)-1]
	s.mu.Unlock()

	restore := func(t *testing.T) (*Table, *fakeClock) {
		t.Helper()
		clock := &fakeClock{t: start.Add(time.Hour)}
		tb := NewTable(ttl, clock.Now, nil)
		n, err := tb.Restore(data)
		if err != nil || n != 2 {
			t.Fatalf("Restore() = %d, %v; want 2 entries", n, err)
		}
		return tb, clock
	}

	t.Run("entries come back stale", func(t *testing.T) {
		tb, _ := restore(t)
		want := []rpcdef.Entry{
			{Service: svc("ClusterService", "lab", "10.0.0.1:7000"), Owner: alice.ID, TTL: ttl, Remaining: ttl, State: rpcdef.StateStale, Since: start},
			{Service: svc("metrics", "node-1", "10.0.0.2:9100"), Owner: bob.ID, TTL: ttl, Remaining: ttl, State: rpcdef.StateStale, Since: start.Add(time.Second)},
		}
		if got := tb.List(); !slices.Equal(got, want) {
			t.Errorf("List() after Restore =\n%v\nwant\n%v", showAll(got), showAll(want))
		}
	})

	t.Run("owner renews with its old lease", func(t *testing.T) {
		tb, clock := restore(t)
		clock.Advance(4 * time.Second)
		wantErr(t, "Renew", tb.Renew(key("ClusterService", "lab"), aliceLease, alice), nil)
		e, err := tb.Lookup(key("ClusterService", "lab"))
		if err != nil || e.State != rpcdef.StateLive || e.Remaining != ttl {
			t.Errorf("after Renew: %v, %v; want live with %v left", show(e), err, ttl)
		}

		clock.Advance(ttl - 4*time.Second) // one TTL after the restore
		if got := keys(tb.List()); !slices.Equal(got, []string{"ClusterService/lab"}) {
			t.Errorf("List() one TTL after restore = %v, want only the renewed entry", got)
		}
		gone, err := tb.Expire()
		if err != nil {
			t.Fatal(err)
		}
		if len(gone) != 1 || gone[0].ServiceKey != key("metrics", "node-1") || gone[0].State != rpcdef.StateStale {
			t.Errorf("Expire() = %v, want the stale metrics/node-1", showAll(gone))
		}
		wantErr(t, "Renew of the dropped stale entry", tb.Renew(key("metrics", "node-1"), bobLease, bob), rpcdef.ErrUnknownLease)
		mustRegister(t, tb, svc("metrics", "node-1", "10.0.0.3:9100"), alice)
	})

	t.Run("stale entry is still owned", func(t *testing.T) {
		tb, _ := restore(t)
		k := key("metrics", "node-1")
		if _, err := tb.Register(svc("metrics", "node-1", "10.0.0.3:9100"), alice); !errors.Is(err, rpcdef.ErrConflict) {
			t.Errorf("other owner's Register of a stale entry: %v, want conflict", err)
		}
		wantErr(t, "other owner's Renew", tb.Renew(k, bobLease, alice), rpcdef.ErrPermission)
		wantErr(t, "other owner's Unregister", tb.Unregister(k, alice), rpcdef.ErrPermission)
		wantErr(t, "wrong lease", tb.Renew(k, aliceLease, bob), rpcdef.ErrUnknownLease)
		if e, _ := tb.Lookup(k); e.State != rpcdef.StateStale {
			t.Errorf("state after refused changes = %q, want stale", e.State)
		}
		wantErr(t, "owner's Renew", tb.Renew(k, bobLease, bob), nil)
	})

	t.Run("owner re-registers a stale entry", func(t *testing.T) {
		tb, _ := restore(t)
		k := key("metrics", "node-1")
		mustRegister(t, tb, svc("metrics", "node-1", "10.0.0.2:9100"), bob)
		if e, _ := tb.Lookup(k); e.State != rpcdef.StateLive {
			t.Errorf("state after re-register = %q, want live", e.State)
		}
		wantErr(t, "Renew with the old lease", tb.Renew(k, bobLease, bob), rpcdef.ErrUnknownLease)
	})
}

func TestRestoreErrors(t *testing.T) {
	entry := func(name, inst, owner, lease string) string {
		return fmt.Sprintf(`{"service":{"Name":%q,"Instance":%q,"Version":1,"Addr":"h:1"},"owner":%q,"lease":%q,"since":"2025-01-02T03:04:05Z"}`,
			name, inst, owner, lease)
	}
	snap := func(version int, entries ...string) string {
		return fmt.Sprintf(`{"version":%d,"entries":[%s]}`, version, strings.Join(entries, ","))
	}
	good := entry("Good", "a", "o", "l")
	tests := []struct {
		name    string
		data    string
		wantN   int
		wantErr string // "" for success
	}{
		{name: "empty table", data: snap(1), wantN: 0},
		{name: "null entries", data: `{"version":1,"entries":null}`, wantN: 0},
		{name: "one entry", data: snap(1, good), wantN: 1},
		{name: "garbage", data: `{not json`, wantErr: "decode saved table"},
		{name: "empty file", data: ``, wantErr: "decode saved table"},
		{name: "array", data: `[]`, wantErr: "decode saved table"},
		{name: "no version", data: `{"entries":[]}`, wantErr: "version 0"},
		{name: "newer version", data: snap(2, good), wantErr: "version 2"},
		{name: "bad service name", data: snap(1, good, entry("bad name", "a", "o", "l")), wantErr: "saved entry 1"},
		{name: "bad instance", data: snap(1, entry("Svc", "A/B", "o", "l")), wantErr: "saved entry 0"},
		{name: "no owner", data: snap(1, entry("Svc", "a", "", "l")), wantErr: "no owner or lease"},
		{name: "no lease", data: snap(1, entry("Svc", "a", "o", "")), wantErr: "no owner or lease"},
		{name: "no addr", data: snap(1, `{"service":{"Name":"Svc","Instance":"a"},"owner":"o","lease":"l"}`), wantErr: "address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _, _ := newTable(t)
			mustRegister(t, tb, svc("Before", "a", "h:1"), alice)
			n, err := tb.Restore([]byte(tt.data))
			if tt.wantErr == "" {
				if err != nil || n != tt.wantN {
					t.Fatalf("Restore() = %d, %v; want %d", n, err, tt.wantN)
				}
				if got := len(tb.List()); got != tt.wantN {
					t.Errorf("List() has %d entries, want %d (Restore replaces the table)", got, tt.wantN)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Restore() = %d, %v; want an error mentioning %q", n, err, tt.wantErr)
			}
			if got := keys(tb.List()); !slices.Equal(got, []string{"Before/a"}) {
				t.Errorf("List() after a failed Restore = %v, want the table unchanged", got)
			}
		})
	}
}

// TestSnapshotGolden pins the on-disk form of the table, so that a change to
// it is seen in review; registryd reads this file back after a restart.
func TestSnapshotGolden(t *testing.T) {
	tb, clock, s := newTable(t)
	mustRegister(t, tb, svc("metrics", "node-1", "10.0.0.2:9100"), bob)
	clock.Advance(1500 * time.Millisecond)
	mustRegister(t, tb, rpcdef.Service{ServiceKey: key("ClusterService", "lab"), Version: 2, Addr: "10.0.0.1:7000", Epoch: 3}, alice)
	s.mu.Lock()
	data := s.saves[len(s.saves)-1]
	s.mu.Unlock()
	got := regexp.MustCompile(`"lease": "[0-9a-f]{32}"`).ReplaceAll(data, []byte(`"lease": "LEASE"`))
	got = append(got, '\n')

	golden := filepath.Join("testdata", "snapshot.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to make it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("saved table differs from %s (run with -update if the change is meant):\n got:\n%s\nwant:\n%s", golden, got, want)
	}

	// What is on disk today must load.
	n, err := NewTable(ttl, clock.Now, nil).Restore(want)
	if err != nil || n != 2 {
		t.Errorf("Restore(%s) = %d, %v; want 2 entries", golden, n, err)
	}
}

// gate is a save hook that, once armed, stops the next save until released.
type gate struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) save([]byte) error {
	if g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return nil
}

// waitFor fails the test if ch does not close or send before a generous
// deadline; it is a guard against a hang, not a timing assertion.
func waitFor(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestRenewDuringChange checks that a renewal made while another key's
// change is being saved survives that change: change() builds the next table
// from a copy taken before the save, and must keep the newer expiry.
func TestRenewDuringChange(t *testing.T) {
	a := key("A", "a")
	tests := []struct {
		name   string
		change func(tb *Table) error
	}{
		{"Register", registerAct(svc("B", "b", "h:1"), bob)},
		{"Unregister", func(tb *Table) error { return tb.Unregister(key("C", "c"), bob) }},
		{"Expire", func(tb *Table) error {
			gone, err := tb.Expire()
			if err == nil && !slices.Equal(keys(gone), []string{"D/d"}) {
				err = fmt.Errorf("Expire() = %v, want [D/d]", keys(gone))
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			g := newGate()
			tb := NewTable(ttl, clock.Now, g.save)
			mustRegister(t, tb, svc("D", "d", "h:1"), bob) // expires at +10s
			clock.Advance(5 * time.Second)
			lease := mustRegister(t, tb, svc("A", "a", "h:1"), alice) // expires at +15s
			mustRegister(t, tb, svc("C", "c", "h:1"), bob)
			clock.Advance(5 * time.Second) // +10s: D has expired

			g.armed.Store(true)
			done := make(chan error, 1)
			go func() { done <- tt.change(tb) }()
			waitFor(t, "the change to reach save", g.entered)

			clock.Advance(2 * time.Second) // +12s
			renewed := make(chan struct{})
			go func() {
				defer close(renewed)
				if err := tb.Renew(a, lease, alice); err != nil {
					t.Errorf("Renew during the save: %v", err)
				}
			}()
			waitFor(t, "Renew while a change is being saved", renewed)

			close(g.release)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("change: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("timed out waiting for the change")
			}

			clock.Advance(5 * time.Second) // +17s: past A's first expiry, inside its renewal
			e, err := tb.Lookup(a)
			if err != nil {
				t.Fatalf("renewal made during the %s was lost: %v", tt.name, err)
			}
			if e.Remaining != 5*time.Second {
				t.Errorf("A has %v left, want 5s", e.Remaining)
			}
		})
	}
}

// TestConcurrent is for the race detector: every operation from several
// goroutines at once, with a clock that moves.
func TestConcurrent(t *testing.T) {
	const (
		workers = 8
		iters   = 200
	)
	clock := newClock()
	var saves atomic.Int64
	tb := NewTable(ttl, clock.Now, func(b []byte) error {
		var s snapshot
		if err := json.Unmarshal(b, &s); err != nil {
			t.Errorf("saved table is not JSON: %v", err)
		}
		saves.Add(1)
		return nil
	})

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := Owner{ID: fmt.Sprintf("worker-%d", w)}
			leases := map[rpcdef.ServiceKey]string{}
			for i := range iters {
				k := key("Svc", fmt.Sprintf("w%d-%d", w, i%10))
				if _, ok := leases[k]; ok && i%7 == 6 {
					if err := tb.Unregister(k, owner); err != nil {
						t.Errorf("Unregister(%s): %v", k, err)
					}
					delete(leases, k)
					continue
				}
				if l, ok := leases[k]; ok {
					if err := tb.Renew(k, l, owner); err != nil {
						t.Errorf("Renew(%s): %v", k, err)
					}
				} else {
					l, err := tb.Register(rpcdef.Service{ServiceKey: k, Version: 1, Addr: "h:1"}, owner)
					if err != nil {
						t.Errorf("Register(%s): %v", k, err)
						continue
					}
					leases[k] = l
				}
				if e, err := tb.Lookup(k); err != nil || e.Owner != owner.ID {
					t.Errorf("Lookup(%s) = %v, %v", k, show(e), err)
				}
				if _, err := tb.Lookup(key("Svc", "")); !errors.Is(err, rpcdef.ErrInvalid) && !errors.Is(err, rpcdef.ErrNotFound) && err != nil {
					t.Errorf("Lookup(Svc): %v", err)
				}
				tb.List()
			}
			// Every lease this worker holds is still its own.
			for k, l := range leases {
				if err := tb.Renew(k, l, owner); err != nil {
					t.Errorf("final Renew(%s): %v", k, err)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range iters {
			clock.Advance(time.Millisecond) // far less than a TTL in all
			if _, err := tb.Expire(); err != nil {
				t.Errorf("Expire: %v", err)
			}
		}
	}()
	wg.Wait()
	if saves.Load() == 0 {
		t.Error("nothing was saved")
	}
	for _, e := range tb.List() {
		if e.State != rpcdef.StateLive {
			t.Errorf("%s is %s", e.ServiceKey, e.State)
		}
	}
}

// An owner releasing its lease removes only that lease: an entry replaced
// since (by an admin, or the same identity registering again elsewhere)
// is left alone.
func TestReleaseOnlyItsOwnLease(t *testing.T) {
	tb := NewTable(10*time.Second, nil, nil)
	k := rpcdef.ServiceKey{Name: "ClusterService", Instance: "lab"}
	me := Owner{ID: "spiffe://lab/master/m1"}
	old, err := tb.Register(rpcdef.Service{ServiceKey: k, Version: 1, Addr: "h:1"}, me)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Register(rpcdef.Service{ServiceKey: k, Version: 1, Addr: "h:2"}, me); err != nil {
		t.Fatal(err)
	}
	if err := tb.Release(k, old, me); !errors.Is(err, rpcdef.ErrUnknownLease) {
		t.Fatalf("releasing a replaced lease: %v, want unknown lease", err)
	}
	if e, err := tb.Lookup(k); err != nil || e.Addr != "h:2" {
		t.Fatalf("after the refused release: %+v, %v", e, err)
	}
}

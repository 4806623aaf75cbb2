package registry

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/pki/pkitest"
	"github.com/muster-lab/muster/rpcdef"
)

func epochSvc(addr string, epoch uint64) rpcdef.Service {
	s := svc("ClusterService", "lab", addr)
	s.Epoch = epoch
	return s
}

// A registration's epoch decides before its owner: higher replaces a live
// entry at once, lower is refused, equal (and 0) follows the owner rules.
func TestRegisterEpochs(t *testing.T) {
	k := key("ClusterService", "lab")
	tests := []struct {
		name string
		// alice holds k with epoch first; then who registers with epoch second.
		first, second uint64
		who           Owner
		wantErr       error
		wantOlder     bool   // the refusal is OlderEpoch
		wantOwner     string // k's owner afterwards
		wantEpoch     uint64 // k's epoch afterwards
		replaced      bool   // register reports alice's entry as replaced
		// aliceLease is what Renew and Release with alice's lease give afterwards.
		aliceLease error
	}{
		{name: "higher epoch of another owner replaces", first: 3, second: 4, who: bob,
			wantOwner: bob.ID, wantEpoch: 4, replaced: true, aliceLease: rpcdef.ErrUnknownLease},
		{name: "higher epoch over epoch 0", first: 0, second: 1, who: bob,
			wantOwner: bob.ID, wantEpoch: 1, replaced: true, aliceLease: rpcdef.ErrUnknownLease},
		{name: "higher epoch of the same owner replaces", first: 3, second: 7, who: alice,
			wantOwner: alice.ID, wantEpoch: 7, replaced: true, aliceLease: rpcdef.ErrUnknownLease},
		{name: "lower epoch of another owner is refused", first: 4, second: 3, who: bob,
			wantErr: rpcdef.ErrConflict, wantOlder: true, wantOwner: alice.ID, wantEpoch: 4},
		{name: "lower epoch of the same owner is refused", first: 4, second: 3, who: alice,
			wantErr: rpcdef.ErrConflict, wantOlder: true, wantOwner: alice.ID, wantEpoch: 4},
		{name: "lower epoch of an admin is refused", first: 4, second: 0, who: admin,
			wantErr: rpcdef.ErrConflict, wantOlder: true, wantOwner: alice.ID, wantEpoch: 4},
		{name: "equal epoch of another owner is refused as today", first: 5, second: 5, who: bob,
			wantErr: rpcdef.ErrConflict, wantOwner: alice.ID, wantEpoch: 5},
		{name: "equal epoch of the same owner replaces as today", first: 5, second: 5, who: alice,
			wantOwner: alice.ID, wantEpoch: 5, aliceLease: rpcdef.ErrUnknownLease},
		{name: "equal epoch of an admin replaces as today", first: 5, second: 5, who: admin,
			wantOwner: admin.ID, wantEpoch: 5, aliceLease: rpcdef.ErrUnknownLease},
		{name: "epoch 0 of another owner is refused as today", first: 0, second: 0, who: bob,
			wantErr: rpcdef.ErrConflict, wantOwner: alice.ID},
		{name: "epoch 0 of the same owner replaces as today", first: 0, second: 0, who: alice,
			wantOwner: alice.ID, aliceLease: rpcdef.ErrUnknownLease},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, _, _ := newTable(t)
			lease := mustRegister(t, tb, epochSvc("10.0.0.1:7000", tt.first), alice)
			_, replaced, err := tb.register(epochSvc("10.0.0.2:7000", tt.second), tt.who)
			wantErr(t, "register", err, tt.wantErr)
			if got := rpcdef.OlderEpoch(err); got != tt.wantOlder {
				t.Errorf("OlderEpoch(%v) = %v, want %v", err, got, tt.wantOlder)
			}
			switch {
			case tt.replaced && (replaced == nil || replaced.Owner != alice.ID || replaced.Epoch != tt.first || replaced.Addr != "10.0.0.1:7000"):
				t.Errorf("replaced = %+v, want alice's entry of epoch %d", replaced, tt.first)
			case !tt.replaced && replaced != nil:
				t.Errorf("replaced = %+v, want none", show(*replaced))
			}
			e, err := tb.Lookup(k)
			if err != nil || e.Owner != tt.wantOwner || e.Epoch != tt.wantEpoch {
				t.Errorf("Lookup = %s epoch %d, %v; want owner %s, epoch %d", show(e), e.Epoch, err, tt.wantOwner, tt.wantEpoch)
			}
			wantErr(t, "Renew with alice's lease", tb.Renew(k, lease, alice), tt.aliceLease)
			want := tt.aliceLease
			if want == nil {
				// The lease is still alice's: Release removes the entry.
				wantErr(t, "Release with alice's lease", tb.Release(k, lease, alice), nil)
				return
			}
			wantErr(t, "Release with alice's lease", tb.Release(k, lease, alice), want)
			if _, err := tb.Lookup(k); err != nil {
				t.Errorf("after the refused Release: %v, want the entry kept", err)
			}
		})
	}
}

// The refusal of an older epoch says what happened in words an operator
// reads in the master's log.
func TestOlderEpochMessage(t *testing.T) {
	tb, _, _ := newTable(t)
	mustRegister(t, tb, epochSvc("10.0.0.1:7000", 9), alice)
	_, err := tb.Register(epochSvc("10.0.0.2:7000", 8), bob)
	want := "epoch 8 is older than the registered epoch 9: a newer leader holds this service"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), alice.ID) {
		t.Fatalf("Register with an older epoch: %v; want it to say %q and name %s", err, want, alice.ID)
	}
	if rpcdef.OlderEpoch(rpcdef.Errorf(rpcdef.CodeConflict, "ClusterService/lab is registered by m1 for another 3s")) {
		t.Error("OlderEpoch is true for an owner conflict")
	}
	if rpcdef.OlderEpoch(nil) {
		t.Error("OlderEpoch(nil) is true")
	}
}

// Epochs order live entries only: once a lease runs out, any epoch may
// register the key again.
func TestEpochOfExpiredEntry(t *testing.T) {
	tb, clock, _ := newTable(t)
	mustRegister(t, tb, epochSvc("10.0.0.1:7000", 9), alice)
	clock.Advance(ttl)
	_, replaced, err := tb.register(epochSvc("10.0.0.2:7000", 2), bob)
	if err != nil || replaced != nil {
		t.Fatalf("register over an expired entry of a higher epoch: replaced %v, %v; want it granted, nothing replaced", replaced, err)
	}
	if e, _ := tb.Lookup(key("ClusterService", "lab")); e.Epoch != 2 || e.Owner != bob.ID {
		t.Errorf("Lookup = %s epoch %d, want bob's epoch 2", show(e), e.Epoch)
	}
}

// The epoch is saved with the entry and restored: a registry that
// restarted still refuses an older leader, and a newer one replaces the
// stale entry at once.
func TestEpochSavedAndRestored(t *testing.T) {
	old, _, s := newTable(t)
	aliceLease := mustRegister(t, old, epochSvc("10.0.0.1:7000", 6), alice)
	mustRegister(t, old, svc("metrics", "node-1", "10.0.0.2:9100"), bob)
	snap := s.last(t)
	for _, e := range snap.Entries {
		want := map[string]uint64{"ClusterService/lab": 6, "metrics/node-1": 0}[e.Service.ServiceKey.String()]
		if e.Service.Epoch != want {
			t.Errorf("saved %s with epoch %d, want %d", e.Service.ServiceKey, e.Service.Epoch, want)
		}
	}
	s.mu.Lock()
	data := s.saves[len(s.saves)-1]
	s.mu.Unlock()
	if strings.Count(string(data), `"epoch"`) != 1 {
		t.Errorf("saved table has %d epoch fields, want 1 (epoch 0 is left out):\n%s", strings.Count(string(data), `"epoch"`), data)
	}

	tb, _, _ := newTable(t)
	if _, err := tb.Restore(data); err != nil {
		t.Fatal(err)
	}
	k := key("ClusterService", "lab")
	if e, err := tb.Lookup(k); err != nil || e.Epoch != 6 || e.State != rpcdef.StateStale {
		t.Fatalf("restored %s epoch %d, %v; want stale with epoch 6", show(e), e.Epoch, err)
	}
	if _, err := tb.Register(epochSvc("10.0.0.3:7000", 5), bob); !rpcdef.OlderEpoch(err) {
		t.Errorf("older epoch after a restore: %v, want refused as older", err)
	}
	if _, err := tb.Register(epochSvc("10.0.0.3:7000", 7), bob); err != nil {
		t.Fatalf("newer epoch after a restore: %v", err)
	}
	wantErr(t, "Renew of the replaced restored lease", tb.Renew(k, aliceLease, alice), rpcdef.ErrUnknownLease)
}

// registryLab is a CA of cluster "lab" and what it issued.
type registryLab struct {
	ca *pkitest.CA
}

func newRegistryLab(t *testing.T) *registryLab {
	t.Helper()
	return &registryLab{ca: pkitest.New(t, "lab")}
}

// startRegistry runs a real registry on 127.0.0.1:0 with its table in dir,
// and returns it with its log. stop ends it and waits for Run to return.
func (l *registryLab) startRegistry(t *testing.T, dir string) (srv *Server, out *syncBuffer, stop func()) {
	t.Helper()
	cfg := conf.DefaultRegistry()
	cfg.Listen = "127.0.0.1:0"
	cfg.Socket = ""
	cfg.HTTPListen = "" // no fixed port: other tests run beside this one
	cfg.StateDir = dir
	cfg.Store = l.ca.NodeStore(pki.RoleRegistry, "reg1")
	out = &syncBuffer{}
	log := logrus.New()
	log.SetOutput(out)
	srv, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("registry: %v", err)
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("the registry's log:\n%s", out.String())
		}
	})
	return srv, out, stop
}

// client is a registry client with a master's certificate.
func (l *registryLab) client(t *testing.T, addr, master string) *rpcdef.RegistryClient {
	t.Helper()
	st := l.ca.NodeStore(pki.RoleMaster, master)
	c := rpcdef.NewRegistryClient("registry "+addr, rpcdef.DialTLS(addr, st.ClientConfig(pki.ExpectRole(pki.RoleRegistry))))
	t.Cleanup(func() { c.Close() })
	return c
}

// The epochs over the wire, between two masters of one cluster, and
// across a restart of the registry: a failover and its fence.
func TestServerEpochs(t *testing.T) {
	lab := newRegistryLab(t)
	dir := filepath.Join(t.TempDir(), "state")
	srv, out, stop := lab.startRegistry(t, dir)
	addr := srv.Addr().String()
	m1, m2 := lab.client(t, addr, "m1"), lab.client(t, addr, "m2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	at := func(addr string, epoch uint64) rpcdef.Service {
		return rpcdef.Service{ServiceKey: k, Version: rpcdef.ClusterVersion, Addr: addr, Epoch: epoch}
	}

	// m1 leads in term 3.
	r1, err := m1.Register(ctx, at("127.0.0.1:7001", 3))
	if err != nil {
		t.Fatal(err)
	}
	// m2 of the same term may not take it (today's owner rule).
	if _, err := m2.Register(ctx, at("127.0.0.1:7002", 3)); !errors.Is(err, rpcdef.ErrConflict) || rpcdef.OlderEpoch(err) {
		t.Fatalf("m2 registering in the same term: %v, want an owner conflict", err)
	}
	// m2 wins term 4: it replaces m1's live entry at once.
	r2, err := m2.Register(ctx, at("127.0.0.1:7002", 4))
	if err != nil {
		t.Fatalf("m2 registering in a newer term: %v", err)
	}
	e, err := m1.Lookup(ctx, k)
	if err != nil || e.Addr != "127.0.0.1:7002" || e.Epoch != 4 {
		t.Fatalf("Lookup after the failover: %+v, %v; want m2's address with epoch 4", e, err)
	}
	if es, err := m1.List(ctx); err != nil || len(es) != 1 || es[0].Epoch != 4 {
		t.Fatalf("List after the failover: %+v, %v; want one entry of epoch 4", es, err)
	}
	// m1, partitioned, renews late: its lease is unknown; it registers again
	// and its term is refused. That is the fence.
	if _, err := m1.Renew(ctx, k, r1.Lease); !errors.Is(err, rpcdef.ErrUnknownLease) {
		t.Fatalf("m1's renewal after the replacement: %v, want unknown lease", err)
	}
	_, err = m1.Register(ctx, at("127.0.0.1:7001", 3))
	if !rpcdef.OlderEpoch(err) || !strings.Contains(err.Error(), "epoch 3 is older than the registered epoch 4: a newer leader holds this service") {
		t.Fatalf("m1 registering its old term again: %v, want refused as older", err)
	}
	if err := m1.Release(ctx, k, r1.Lease); !errors.Is(err, rpcdef.ErrUnknownLease) {
		t.Fatalf("m1 releasing its replaced lease: %v, want unknown lease", err)
	}
	// The line is written before the reply.
	if want := "replaced the live entry at 127.0.0.1:7001, epoch 3, owner spiffe://lab/master/m1"; !strings.Contains(out.String(), want) {
		t.Errorf("the registry did not log %q:\n%s", want, out.String())
	}
	if n := strings.Count(out.String(), "replaced the live entry"); n != 1 {
		t.Errorf("the replacement is logged %d times, want once:\n%s", n, out.String())
	}
	for _, f := range []string{"epoch=4", "old_epoch=3", "owner=\"spiffe://lab/master/m2\"", "old_owner=\"spiffe://lab/master/m1\""} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("the replacement's line has no %s:\n%s", f, out.String())
		}
	}

	// The registry restarts: the entry comes back stale with its epoch.
	stop()
	srv, _, _ = lab.startRegistry(t, dir)
	addr = srv.Addr().String()
	m1, m2 = lab.client(t, addr, "m1"), lab.client(t, addr, "m2")
	e, err = m1.Lookup(ctx, k)
	if err != nil || e.Epoch != 4 || e.State != rpcdef.StateStale || e.Addr != "127.0.0.1:7002" {
		t.Fatalf("Lookup after the restart: %+v, %v; want m2's stale entry of epoch 4", e, err)
	}
	if _, err := m1.Register(ctx, at("127.0.0.1:7001", 3)); !rpcdef.OlderEpoch(err) {
		t.Fatalf("m1's old term after the restart: %v, want refused as older", err)
	}
	if _, err := m2.Renew(ctx, k, r2.Lease); err != nil {
		t.Fatalf("m2 renewing its lease after the restart: %v", err)
	}

	// Epoch 0, as an old master registers: today's owner rules.
	if err := m2.Unregister(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Register(ctx, at("127.0.0.1:7001", 0)); err != nil {
		t.Fatalf("m1 registering epoch 0 on a free name: %v", err)
	}
	if _, err := m2.Register(ctx, at("127.0.0.1:7002", 0)); !errors.Is(err, rpcdef.ErrConflict) || rpcdef.OlderEpoch(err) {
		t.Fatalf("m2 registering epoch 0 over m1's: %v, want an owner conflict", err)
	}
	if _, err := m1.Register(ctx, at("127.0.0.1:7003", 0)); err != nil {
		t.Fatalf("m1 registering epoch 0 again: %v", err)
	}
	if e, err := m2.Lookup(ctx, k); err != nil || e.Addr != "127.0.0.1:7003" || e.Epoch != 0 {
		t.Fatalf("Lookup of the epoch 0 entry: %+v, %v", e, err)
	}
}

package registry

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/metrics"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/tlsrpc"
	"github.com/muster-lab/muster/rpcdef"
)

// syncBuffer is a log's output, safe for the sessions writing it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is a Server without listeners, for calling Sessions directly,
// and the log it writes. Its own uid is 1000.
func testServer(t *testing.T) (*Server, *syncBuffer) {
	t.Helper()
	out := &syncBuffer{}
	l := logrus.New()
	l.SetOutput(out)
	s := &Server{
		cfg:    conf.DefaultRegistry(),
		log:    l,
		table:  NewTable(10*time.Second, nil, nil),
		uid:    1000,
		prom:   metrics.NewRegistry(),
		budget: logBudget{burst: registryLogBurst, every: registryLogEvery},
	}
	s.met = newRegistryMetrics(s.prom)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the registry's log:\n%s", out.String())
		}
	})
	return s, out
}

var (
	slavePeer  = tlsrpc.Peer{Addr: "127.0.0.1:5000", Identity: pki.Identity{Role: pki.RoleSlave, Cluster: "lab", Name: "mole"}}
	masterPeer = tlsrpc.Peer{Addr: "127.0.0.1:5001", Identity: pki.Identity{Role: pki.RoleMaster, Cluster: "lab", Name: "m1"}}
	nobodyPeer = tlsrpc.Peer{Addr: "unix", Local: true, UID: 65534}
	rootPeer   = tlsrpc.Peer{Addr: "unix", Local: true, UID: 0}
)

// maxErrorLen bounds the message of any refusal, whatever was sent.
const maxErrorLen = 512

// A key no registration can have is refused as an invalid argument, before
// any check that logs, with a message that quotes only a little of it, and
// nothing is logged.
func TestSessionRefusesBadKeys(t *testing.T) {
	huge := strings.Repeat("n", 60<<10)
	good := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	for _, tc := range []struct {
		name string
		peer tlsrpc.Peer
		call func(x *Session) error
	}{
		{"slave registers a 60 KB name", slavePeer, func(x *Session) error {
			return x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: huge, Instance: "lab"}, Addr: "127.0.0.1:1"}}, &rpcdef.RegisterReply{})
		}},
		{"slave registers a 60 KB instance", slavePeer, func(x *Session) error {
			return x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: "Foo", Instance: huge}, Addr: "127.0.0.1:1"}}, &rpcdef.RegisterReply{})
		}},
		{"local user registers a 4 MB name", nobodyPeer, func(x *Session) error {
			return x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: strings.Repeat("x", 4<<20)}}}, &rpcdef.RegisterReply{})
		}},
		{"slave registers a name with a newline", slavePeer, func(x *Session) error {
			return x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: "Foo\nlevel=error msg=forged", Instance: "lab"}, Addr: "127.0.0.1:1"}}, &rpcdef.RegisterReply{})
		}},
		{"slave registers with no instance", slavePeer, func(x *Session) error {
			return x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: "Foo"}, Addr: "127.0.0.1:1"}}, &rpcdef.RegisterReply{})
		}},
		{"master registers a 60 KB address", masterPeer, func(x *Session) error {
			return x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: good, Addr: huge + ":1"}}, &rpcdef.RegisterReply{})
		}},
		{"local user renews a 60 KB key", nobodyPeer, func(x *Session) error {
			return x.Renew(&rpcdef.RenewArgs{Key: rpcdef.ServiceKey{Name: huge, Instance: huge}, Lease: huge}, &rpcdef.RenewReply{})
		}},
		{"slave renews a 60 KB key", slavePeer, func(x *Session) error {
			return x.Renew(&rpcdef.RenewArgs{Key: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: huge}}, &rpcdef.RenewReply{})
		}},
		{"local user unregisters a 60 KB key", nobodyPeer, func(x *Session) error {
			return x.Unregister(&rpcdef.UnregisterArgs{Key: rpcdef.ServiceKey{Name: huge}}, &rpcdef.Empty{})
		}},
		{"slave unregisters a 60 KB key", slavePeer, func(x *Session) error {
			return x.Unregister(&rpcdef.UnregisterArgs{Key: rpcdef.ServiceKey{Name: "Foo", Instance: huge}}, &rpcdef.Empty{})
		}},
		{"slave looks up a 60 KB name", slavePeer, func(x *Session) error {
			return x.Lookup(&rpcdef.LookupArgs{Key: rpcdef.ServiceKey{Name: huge}}, &rpcdef.LookupReply{})
		}},
		{"slave looks up a 60 KB instance", slavePeer, func(x *Session) error {
			return x.Lookup(&rpcdef.LookupArgs{Key: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: huge}}, &rpcdef.LookupReply{})
		}},
		{"slave looks up an empty name", slavePeer, func(x *Session) error {
			return x.Lookup(&rpcdef.LookupArgs{}, &rpcdef.LookupReply{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, out := testServer(t)
			err := tc.call(s.session(tc.peer))
			if !errors.Is(err, rpcdef.ErrInvalid) {
				t.Fatalf("got %v, want an invalid argument", err)
			}
			if n := len(err.Error()); n > maxErrorLen {
				t.Fatalf("the refusal is %d bytes, want at most %d: %.200s...", n, maxErrorLen, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("the refusal carries a raw newline: %q", err)
			}
			t.Logf("%v", err)
			if log := out.String(); log != "" {
				t.Fatalf("an invalid argument was logged:\n%.500s", log)
			}
		})
	}
}

// A cut quote says how long the whole was; a short one is whole.
func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"lab", `"lab"`},
		{strings.Repeat("a", quoteMax), `"` + strings.Repeat("a", quoteMax) + `"`},
		{strings.Repeat("a", 60<<10), `"` + strings.Repeat("a", quoteMax) + `"… (61440 bytes)`},
		{"a\nb", `"a\nb"`},
	} {
		if got := quote(tc.in); got != tc.want {
			t.Errorf("quote(%.50q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// Valid keys still get their usual answers: the checks refuse only what
// no registration can have.
func TestSessionGoodKeys(t *testing.T) {
	s, _ := testServer(t)
	m := s.session(masterPeer)
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	var reg rpcdef.RegisterReply
	if err := m.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: key, Addr: "127.0.0.1:7112"}}, &reg); err != nil {
		t.Fatalf("the master's register: %v", err)
	}
	x := s.session(slavePeer)
	var r rpcdef.LookupReply
	if err := x.Lookup(&rpcdef.LookupArgs{Key: rpcdef.ServiceKey{Name: rpcdef.ClusterService}}, &r); err != nil || r.Entry.Addr != "127.0.0.1:7112" {
		t.Fatalf("lookup of the only instance: %+v, %v", r.Entry, err)
	}
	if err := x.Lookup(&rpcdef.LookupArgs{Key: rpcdef.ServiceKey{Name: "Nothing", Instance: "lab"}}, &r); !errors.Is(err, rpcdef.ErrNotFound) {
		t.Fatalf("lookup of a name not registered: %v, want not found", err)
	}
	if err := x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: key, Addr: "127.0.0.1:1"}}, &rpcdef.RegisterReply{}); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("a slave registering: %v, want permission denied", err)
	}
	if err := m.Renew(&rpcdef.RenewArgs{Key: key, Lease: reg.Lease}, &rpcdef.RenewReply{}); err != nil {
		t.Fatalf("the master's renew: %v", err)
	}
	if err := s.session(nobodyPeer).Unregister(&rpcdef.UnregisterArgs{Key: key}, &rpcdef.Empty{}); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("a local user unregistering: %v, want permission denied", err)
	}
	if err := s.session(rootPeer).Unregister(&rpcdef.UnregisterArgs{Key: key}, &rpcdef.Empty{}); err != nil {
		t.Fatalf("root unregistering: %v", err)
	}
}

// A flood of refusals on one connection, valid keys and invalid ones mixed,
// logs a handful of short lines, and the count of the rest is told by the
// next line logged, on another connection once this one has ended.
func TestSessionLogBudget(t *testing.T) {
	huge := strings.Repeat("n", 60<<10)
	for _, tc := range []struct {
		name string
		peer tlsrpc.Peer
		args func(i int) *rpcdef.RegisterArgs
	}{
		{"slave, names not allowed", slavePeer, func(i int) *rpcdef.RegisterArgs {
			return &rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: fmt.Sprintf("Foo%d", i), Instance: "lab"}, Addr: "127.0.0.1:1"}}
		}},
		{"slave, 60 KB names and names not allowed", slavePeer, func(i int) *rpcdef.RegisterArgs {
			name := huge
			if i%2 == 0 {
				name = fmt.Sprintf("Foo%d", i)
			}
			return &rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: name, Instance: "lab"}, Addr: "127.0.0.1:1"}}
		}},
		{"master, another cluster", masterPeer, func(i int) *rpcdef.RegisterArgs {
			return &rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: fmt.Sprintf("prod%d", i)}, Addr: "127.0.0.1:1"}}
		}},
		{"local user", nobodyPeer, func(i int) *rpcdef.RegisterArgs {
			return &rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}, Addr: "127.0.0.1:1"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, out := testServer(t)
			x := s.session(tc.peer)
			const calls = 1000
			start := time.Now()
			for i := range calls {
				if err := x.Register(tc.args(i), &rpcdef.RegisterReply{}); err == nil {
					t.Fatalf("register %d was granted", i)
				} else if n := len(err.Error()); n > maxErrorLen {
					t.Fatalf("refusal %d is %d bytes: %.200s...", i, n, err)
				}
			}
			took := time.Since(start)
			log := out.String()
			lines := strings.Count(log, "\n")
			// The burst, and one per sessionLogEvery of the run.
			most := sessionLogBurst + int(took/sessionLogEvery) + 1
			t.Logf("%d refusals in %v: %d lines, %d bytes of log", calls, took, lines, len(log))
			if lines > most || lines > 20 || len(log) > 20<<10 {
				t.Fatalf("%d refusals logged %d lines, %d bytes; want at most %d lines and 20 KiB", calls, lines, len(log), most)
			}
			held := calls - lines
			if tc.name == "slave, 60 KB names and names not allowed" {
				held = calls/2 - lines // invalid names are refused unlogged
			}
			x.end()
			// The next line, of another connection, tells of the rest.
			y := s.session(masterPeer)
			if err := y.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}, Addr: "127.0.0.1:7112"}}, &rpcdef.RegisterReply{}); err != nil {
				t.Fatalf("the master's register after the flood: %v", err)
			}
			last := strings.TrimSpace(out.String()[len(log):])
			if want := fmt.Sprintf("not_logged_registry=%d", held); !strings.Contains(last, want) || !strings.Contains(last, "registered ClusterService/lab") {
				t.Fatalf("the line after the flood is %q; want it to have %s", last, want)
			}
		})
	}
}

// Many connections refused at once share the registry's budget too.
func TestRegistryLogBudget(t *testing.T) {
	s, out := testServer(t)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range 200 {
		wg.Go(func() {
			x := s.session(tlsrpc.Peer{Addr: fmt.Sprintf("127.0.0.1:%d", 6000+c), Identity: pki.Identity{Role: pki.RoleSlave, Cluster: "lab", Name: fmt.Sprintf("mole-%d", c)}})
			defer x.end()
			for i := range 5 {
				x.Register(&rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: fmt.Sprintf("Foo%d", i), Instance: "lab"}, Addr: "127.0.0.1:1"}}, &rpcdef.RegisterReply{})
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	lines := strings.Count(out.String(), "\n")
	most := registryLogBurst + int(took/registryLogEvery) + 1
	t.Logf("1000 refusals on 200 connections in %v: %d lines", took, lines)
	if lines > most {
		t.Fatalf("%d lines logged in %v; the registry's budget is %d, then one per %v", lines, took, registryLogBurst, registryLogEvery)
	}
}

// The bucket: a burst, then one line per interval, and the count of those
// held back on the next line let through.
func TestLogBudget(t *testing.T) {
	b := logBudget{burst: 5, every: 10 * time.Second}
	t0 := time.Unix(1_000_000, 0)
	type step struct {
		at       time.Duration
		ok       bool
		held     int
		comments string
	}
	steps := []step{
		{0, true, 0, "burst 1"}, {0, true, 0, "burst 2"}, {0, true, 0, "burst 3"}, {0, true, 0, "burst 4"}, {0, true, 0, "burst 5"},
		{0, false, 0, "past the burst"}, {time.Second, false, 0, "a tenth of a token"}, {9 * time.Second, false, 0, "nine tenths"},
		{10 * time.Second, true, 3, "one token: the three held back are told"},
		{10 * time.Second, false, 0, "spent"},
		{time.Hour, true, 1, "refilled"}, {time.Hour, true, 0, "burst 2 again"},
	}
	for i, st := range steps {
		ok, held := b.take(t0.Add(st.at))
		if ok != st.ok || held != st.held {
			t.Fatalf("step %d (%s): take = %v, %d; want %v, %d", i, st.comments, ok, held, st.ok, st.held)
		}
	}
	b.hold(7)
	if n := b.drain(); n != 7 {
		t.Fatalf("drain = %d after hold(7), want 7", n)
	}
	if n := b.drain(); n != 0 {
		t.Fatalf("drain twice = %d, want 0", n)
	}
}

// On the socket, only the users who act as admins keep the listener's
// limit; anyone else gets a slave's.
func TestLocalRequestLimit(t *testing.T) {
	s, _ := testServer(t)
	for _, tc := range []struct {
		uid  uint32
		want int
	}{
		{0, 0},
		{1000, 0}, // the registry's own user
		{65534, tlsrpc.DefaultSlaveMaxMessage},
		{1001, tlsrpc.DefaultSlaveMaxMessage},
	} {
		if got := s.localRequestLimit(tlsrpc.Peer{Local: true, UID: tc.uid}); got != tc.want {
			t.Errorf("uid %d: limit %d, want %d", tc.uid, got, tc.want)
		}
	}
}

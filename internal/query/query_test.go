package query

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/pki/pkitest"
	"github.com/muster-lab/muster/internal/tlsrpc/tlsrpctest"
	"github.com/muster-lab/muster/rpcdef"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update if the change is meant):\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

// fitsTerminal checks that every line fits an 80-column terminal.
func fitsTerminal(t *testing.T, name string, out []byte) {
	t.Helper()
	for i, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("%s line %d is %d columns, more than 80:\n%s", name, i+1, n, line)
		}
	}
}

// now is the fixed time every formatting test runs at.
var now = time.Date(2024, 6, 10, 15, 5, 0, 0, time.UTC)

const (
	gib = 1 << 30
	mib = 1 << 20
)

// lab is a typical three-node lab cluster, as the master reports it.
// Incarnations are start times in nanoseconds, the longest they can be.
func lab() []rpcdef.Member {
	return []rpcdef.Member{
		{
			Name: "node-3", Addr: "127.0.0.1:43212", Status: rpcdef.StatusDead, Incarnation: 1718020000555555555,
			JoinedAt: now.Add(-49 * time.Hour), StatusSince: now.Add(-time.Minute), LastHeartbeat: now.Add(-75 * time.Second),
			CertNotAfter: now.Add(300 * 24 * time.Hour),
		},
		{
			Name: "node-1", Addr: "127.0.0.1:43210", Status: rpcdef.StatusAlive, Incarnation: 1718031600123456789,
			JoinedAt: now.Add(-3 * time.Hour), StatusSince: now.Add(-3 * time.Hour), LastHeartbeat: now.Add(-400 * time.Millisecond),
			CertNotAfter: now.Add(364 * 24 * time.Hour),
			Resources: &rpcdef.Resources{
				SampledAt: now.Add(-1200 * time.Millisecond),
				CPUCount:  4, CPUModel: "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", CPUPercent: 12.5,
				Load1: 0.52, Load5: 0.48, Load15: 0.4,
				MemTotal: 16 * gib, MemAvailable: 8600 * mib, MemUsedPercent: 47.5,
				SwapTotal: 2 * gib, SwapFree: 1946 * mib,
				Disks: []rpcdef.DiskUsage{
					{Mount: "/", Total: 100 * gib, Free: 40 * gib, UsedPercent: 60},
					{Mount: "/home", Total: 500 * gib, Free: 450 * gib, UsedPercent: 10},
				},
				NetRxBytesPerSec: 1234.5, NetTxBytesPerSec: 3.5 * mib,
				Uptime: 76*time.Hour + 12*time.Minute, Procs: 312,
			},
		},
		{
			Name: "node-2", Addr: "127.0.0.1:43211", Status: rpcdef.StatusSuspect, Incarnation: 1718031700987654321,
			JoinedAt: now.Add(-5*time.Minute - 30*time.Second), StatusSince: now.Add(-2 * time.Second), LastHeartbeat: now.Add(-2440 * time.Millisecond),
			CertNotAfter: now.Add(-24 * time.Hour),
			Resources: &rpcdef.Resources{
				SampledAt: now.Add(-3 * time.Second),
				CPUCount:  2, CPUModel: "AMD EPYC 7B13", CPUPercent: 87.5,
				Load1: 3.14, Load5: 2.5, Load15: 1.75,
				MemTotal: 8 * gib, MemAvailable: 2 * gib, MemUsedPercent: 75,
				Disks:            []rpcdef.DiskUsage{{Mount: "/", Total: 50 * gib, Free: 5 * gib, UsedPercent: 90}},
				NetRxBytesPerSec: 120 * 1024, NetTxBytesPerSec: 512,
				Uptime: 12*time.Minute + 3*time.Second, Procs: 98,
			},
		},
	}
}

// fakeMaster is a scripted master for the command tests.
type fakeMaster struct {
	mu      sync.Mutex
	members []rpcdef.Member
	version uint64
	steps   []watchStep     // what successive Watch calls return
	done    func()          // called when the steps run out: the user's ^C
	afters  []uint64        // the After of each Watch call
	waits   []time.Duration // the Wait of each Watch call

	calls     int                // Members calls so far
	onMembers func(calls int)    // called under mu at each Members call, to change the roll
	forgot    []string           // Forget calls
	evicted   []rpcdef.EvictArgs // Evict calls
	adminErr  error              // what Forget and Evict return
}

type watchStep struct {
	reply rpcdef.WatchReply
	err   error
}

func (f *fakeMaster) Members(ctx context.Context, node string) (rpcdef.MembersReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.onMembers != nil {
		f.onMembers(f.calls)
	}
	if node == "" {
		return rpcdef.MembersReply{Version: f.version, Members: f.members}, nil
	}
	for _, m := range f.members {
		if m.Name == node {
			return rpcdef.MembersReply{Version: f.version, Members: []rpcdef.Member{m}}, nil
		}
	}
	return rpcdef.MembersReply{}, rpcdef.Errorf(rpcdef.CodeNotFound, "no member %q", node)
}

func (f *fakeMaster) Watch(ctx context.Context, after uint64, wait time.Duration) (rpcdef.WatchReply, error) {
	if _, ok := ctx.Deadline(); !ok {
		return rpcdef.WatchReply{}, errors.New("watch called without a deadline")
	}
	f.mu.Lock()
	f.afters = append(f.afters, after)
	f.waits = append(f.waits, wait)
	if len(f.steps) == 0 {
		f.mu.Unlock()
		f.done()
		<-ctx.Done()
		return rpcdef.WatchReply{}, ctx.Err()
	}
	s := f.steps[0]
	f.steps = f.steps[1:]
	f.mu.Unlock()
	return s.reply, s.err
}

func (f *fakeMaster) Close() error { return nil }

// fakeQuery is a query whose master is f, found at 127.0.0.1:7200, at a
// fixed time in UTC. connectErrs fail the first connections.
func fakeQuery(f *fakeMaster, connectErrs ...error) (*query, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	q := newQuery(&out, &errOut)
	q.now = func() time.Time { return now }
	q.loc = time.UTC
	q.backoffMin, q.backoffMax = time.Millisecond, 4*time.Millisecond
	q.connect = func(ctx context.Context) (*master, error) {
		if len(connectErrs) > 0 {
			err := connectErrs[0]
			connectErrs = connectErrs[1:]
			return nil, err
		}
		e := rpcdef.Entry{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}, Version: 1, Addr: "127.0.0.1:7200"}, State: rpcdef.StateLive}
		return &master{clusterAPI: f, entry: e}, nil
	}
	return q, &out, &errOut
}

func TestCommandsGolden(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
		width  bool // must fit 80 columns
		code   int
	}{
		{"members.golden", []string{"members"}, true, exitOK},
		{"members-status.golden", []string{"members", "--status", "dead,suspect"}, true, exitOK},
		{"members-none.golden", []string{"--status", "left", "members"}, false, exitOK},
		{"members-node-1.golden", []string{"members", "node-1"}, false, exitOK},
		{"members-node-2.golden", []string{"members", "node-2"}, false, exitNotAlive},
		{"members-node-3.golden", []string{"members", "node-3"}, false, exitNotAlive},
		{"members.json.golden", []string{"members", "--json"}, false, exitOK},
		{"members-node-3.json.golden", []string{"--json", "members", "node-3"}, false, exitNotAlive},
		{"top.golden", []string{"top"}, true, exitOK},
		{"top.json.golden", []string{"top", "--json"}, false, exitOK},
		{"members-wide.golden", []string{"members", "-o", "wide"}, false, exitOK},
		{"members-name.golden", []string{"members", "-o", "name", "--sort-by", "status"}, false, exitOK},
		{"members-glob.golden", []string{"members", "node-[12]", "--no-headers", "--sort-by", "cpu"}, true, exitOK},
		{"members-stale.golden", []string{"members", "--stale-after", "2s"}, true, exitOK},
		{"members-age.golden", []string{"members", "--sort-by", "age", "--no-headers"}, true, exitOK},
		{"top-mem.golden", []string{"top", "--sort", "mem"}, true, exitOK},
		{"top-stale.golden", []string{"top", "--stale-after", "2s"}, true, exitOK},
		{"top-wide.golden", []string{"top", "-o", "wide", "--no-headers"}, false, exitOK},
		{"top-name.golden", []string{"top", "-o", "name", "--name", "node-*"}, false, exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			q, out, errOut := fakeQuery(&fakeMaster{members: lab(), version: 41})
			if code := q.main(context.Background(), tt.args); code != tt.code {
				t.Fatalf("rpc-query %s: exit %d, want %d; stderr:\n%s", strings.Join(tt.args, " "), code, tt.code, errOut)
			}
			golden(t, tt.golden, out.Bytes())
			if tt.width {
				fitsTerminal(t, tt.golden, out.Bytes())
			}
		})
	}
}

func TestMemberNotFound(t *testing.T) {
	q, out, errOut := fakeQuery(&fakeMaster{members: lab(), version: 41})
	if code := q.main(context.Background(), []string{"members", "node-9"}); code != exitFail {
		t.Fatalf("exit %d, want %d", code, exitFail)
	}
	want := "rpc-query: no member node-9 in cluster lab (rpc-query members lists them)\n"
	if errOut.String() != want || out.Len() != 0 {
		t.Errorf("stderr %q, stdout %q; want stderr %q", errOut, out, want)
	}
}

// refusedAsUsage runs args, which must be refused as a usage error: exit 2
// before dialling anything, with one line on stderr that contains want.
func refusedAsUsage(t *testing.T, args []string, want string) {
	t.Helper()
	var out, errOut bytes.Buffer
	q := newQuery(&out, &errOut)
	q.connect = func(context.Context) (*master, error) {
		t.Fatal("a usage error dialled the master")
		return nil, nil
	}
	if code := q.main(context.Background(), args); code != exitUsage {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, errOut.String())
	}
	if n := strings.Count(errOut.String(), "\n"); n != 1 || out.Len() != 0 {
		t.Errorf("a usage error printed %d lines to stderr and %d bytes to stdout, want one line and nothing:\n%s", n, out.Len(), errOut.String())
	}
	if !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr:\n%s\nwant it to contain %q", errOut.String(), want)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"members", "--status", "sleepy"}, `--status "sleepy": unknown state "sleepy": want a comma-separated list of alive, suspect, dead, left, unknown`},
		{[]string{"--status", "alive,zombie", "members"}, `unknown state "zombie"`},
		{[]string{"members", "--status", "alive,"}, `unknown state ""`},
		{[]string{"members", "node-1", "--status", "dead"}, "--status filters the list of members: give it without a NODE"},
		{[]string{"services", "--status", "dead"}, "--status applies to members, top and view, not services"},
		{[]string{"watch", "--status", "dead"}, "--status applies to members, top and view, not watch"},
		{[]string{"members", "node-1", "node-2"}, "usage: rpc-query members [NODE|GLOB]"},
		{[]string{"members", "Node_1!"}, "members Node_1!: name"},
		{[]string{"top", "node-1"}, "usage: rpc-query top"},
		{[]string{"watch", "now"}, "usage: rpc-query watch"},
		{[]string{"view", "node-1"}, "usage: rpc-query view [--slave-socket PATH]"},
		{[]string{"--cluster", "Lab!", "members"}, "--cluster: name"},
		{[]string{"--timeout", "0s", "members"}, "--timeout 0s: want a positive duration"},
		{[]string{"top", "--bogus"}, "rpc-query: unknown flag --bogus (run 'rpc-query --help')\n"},
		{[]string{"-o", "yaml", "members"}, "-o yaml: members takes -o wide, json, name, or no -o"},
		{[]string{"-o", "wide", "ping", "x/y"}, "-o wide: ping takes -o json, or no -o"},
		{[]string{"members", "--sort-by", "colour"}, `--sort-by "colour": members sorts by name, status, cpu, mem, age`},
		{[]string{"top", "--sort", "age"}, `--sort-by "age": top sorts by cpu, mem, name`},
		{[]string{"services", "--sort-by", "name"}, "--sort-by applies to members, top and view, not services"},
		{[]string{"members", "node-1", "--name", "n*"}, "--name filters the members of members, top and view, not members node-1"},
		{[]string{"members", "n*", "--name", "m*"}, "give the pattern once"},
		{[]string{"top", "--name", "["}, `--name "[": not a valid pattern`},
		{[]string{"watch", "--kind", "dead,exploded"}, `--kind "dead,exploded": unknown event kind "exploded": want a comma-separated list of joined, rejoined, suspect, alive, dead, left, forgotten`},
		{[]string{"members", "--kind", "dead"}, "--node and --kind filter the events of watch, not members"},
		{[]string{"members", "node-1", "--no-headers"}, "--no-headers applies to the tables of members, top, services, view and masters, not members node-1"},
		{[]string{"--json", "-o", "wide", "top"}, "--json and -o wide disagree"},
		{[]string{"wait"}, "usage: rpc-query wait service NAME[/INSTANCE] | wait member NODE --for STATE | wait members --alive N"},
		{[]string{"wait", "member", "node-1"}, "wait member node-1: say which state with --for: alive, suspect, dead, left, gone"},
		{[]string{"wait", "member", "node-1", "--for", "asleep"}, `--for "asleep": want one of alive, suspect, dead, left, gone`},
		{[]string{"wait", "members"}, "wait members: say how many with --alive N"},
		{[]string{"wait", "members", "--alive", "two"}, `invalid value "two" for flag -alive`},
		{[]string{"wait", "service", "x/y", "--alive", "2"}, "--alive applies to wait members, not wait service"},
		{[]string{"wait", "cluster"}, "wait cluster: want wait service, wait member or wait members"},
		{[]string{"wait", "service", "x/y", "-o", "json"}, "-o json: wait has only its one line of text"},
		{[]string{"members", "--for", "alive"}, "--for and --alive apply to wait, not members"},
		{[]string{"forget"}, "usage: rpc-query forget NODE"},
		{[]string{"evict", "Node!"}, "evict Node!: name"},
		{[]string{"forget", "node-1", "--reason", "gone"}, "--reason applies to evict, not forget"},
		{[]string{"--master", "nowhere", "members"}, `--master "nowhere": want HOST:PORT`},
		{[]string{"--stale-after", "0s", "top"}, "--stale-after 0s: want a positive duration"},
		{[]string{}, "rpc-query: no command given (run 'rpc-query --help' for the list)\n"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"heartbeat"}, "usage: rpc-query heartbeat NODE [--incarnation N]"},
		{[]string{"heartbeat", "Node_1!"}, "heartbeat Node_1!: name"},
		{[]string{"heartbeat", "node-1", "--incarnation", "-1"}, `invalid value "-1" for flag -incarnation: want a whole number`},
		{[]string{"members", "--incarnation", "5"}, "--incarnation applies to heartbeat, not members"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { refusedAsUsage(t, tt.args, tt.want) })
	}
}

func TestStatusFilterCaseAndSpaces(t *testing.T) {
	q, out, errOut := fakeQuery(&fakeMaster{members: lab(), version: 41})
	if code := q.main(context.Background(), []string{"members", "--status", "Alive, dead"}); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := out.String(); !strings.Contains(got, "node-1") || !strings.Contains(got, "node-3") || strings.Contains(got, "node-2") {
		t.Errorf("--status 'Alive, dead' printed:\n%s", got)
	}
}

// watchScript is a session of watch: three events, a lost connection, a
// failed lookup, a master that lost its history, one more event, and an
// answer with nothing new; then the user presses ^C.
func watchScript() []watchStep {
	at := time.Date(2024, 6, 10, 15, 4, 5, 0, time.UTC)
	roll := lab()
	roll[2].Status, roll[2].StatusSince = rpcdef.StatusUnknown, at.Add(4*time.Second)
	return []watchStep{
		{reply: rpcdef.WatchReply{Version: 43, Events: []rpcdef.Event{
			{Version: 42, Kind: rpcdef.EventSuspect, Node: "node-2", Incarnation: 1718031700987654321, Addr: "127.0.0.1:43211", Status: rpcdef.StatusSuspect, At: at, Reason: "no heartbeat for 1.6s"},
			{Version: 43, Kind: rpcdef.EventDead, Node: "node-2", Incarnation: 1718031700987654321, Addr: "127.0.0.1:43211", Status: rpcdef.StatusDead, At: at.Add(1500 * time.Millisecond), Reason: "connection closed"},
		}}},
		{reply: rpcdef.WatchReply{Version: 44, Events: []rpcdef.Event{
			{Version: 44, Kind: rpcdef.EventJoined, Node: "node-10", Incarnation: 7, Addr: "127.0.0.1:43213", Status: rpcdef.StatusAlive, At: at.Add(2 * time.Second)},
		}}},
		{err: fmt.Errorf("call ClusterService.Watch on master at 127.0.0.1:7200: connection lost: %w", io.ErrUnexpectedEOF)},
		{reply: rpcdef.WatchReply{Version: 3, Reset: true, Members: roll}},
		{reply: rpcdef.WatchReply{Version: 4, Events: []rpcdef.Event{
			{Version: 4, Kind: rpcdef.EventRejoined, Node: "node-2", Incarnation: 1718031800111111111, Addr: "127.0.0.1:43214", Status: rpcdef.StatusAlive, At: at.Add(5 * time.Second), Reason: "new incarnation"},
		}}},
		{reply: rpcdef.WatchReply{Version: 4}},
	}
}

func TestWatch(t *testing.T) {
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"watch.golden", []string{"watch"}},
		{"watch.json.golden", []string{"watch", "--json"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := &fakeMaster{members: lab(), version: 41, steps: watchScript(), done: cancel}
			lookup := fmt.Errorf("no master of cluster lab in the registry: ClusterService/lab is not registered")
			q, out, errOut := fakeQuery(f)
			q.o.timeout = time.Hour // must not bound watch
			connects := 0
			connect := q.connect
			q.connect = func(ctx context.Context) (*master, error) {
				connects++
				if connects == 2 || connects == 3 { // the registry has no master yet, twice
					return nil, lookup
				}
				return connect(ctx)
			}
			// --timeout is parsed as given; give a small one, to show it
			// bounds each call and not the command.
			args := append(tt.args, "--timeout", "50ms")
			q.watchWait = 10 * time.Millisecond
			if code := q.main(ctx, args); code != exitOK {
				t.Fatalf("exit %d, stderr:\n%s", code, errOut)
			}
			golden(t, tt.golden, out.Bytes())
			if want := []uint64{41, 43, 44, 44, 3, 4, 4}; fmt.Sprint(f.afters) != fmt.Sprint(want) {
				t.Errorf("Watch was asked for events after %v, want %v", f.afters, want)
			}
			for _, w := range f.waits {
				if w != q.watchWait {
					t.Errorf("Watch waited %v, want %v", w, q.watchWait)
				}
			}
			if connects != 4 {
				t.Errorf("connected %d times, want 4 (start, two failed lookups, success)", connects)
			}
			// The failed lookup is told once, though it happened twice.
			if n := strings.Count(errOut.String(), "no master of cluster lab"); n != 1 {
				t.Errorf("stderr tells the lookup failure %d times, want once:\n%s", n, errOut)
			}
			if tt.golden == "watch.json.golden" {
				for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
					var v map[string]any
					if err := json.Unmarshal([]byte(line), &v); err != nil {
						t.Errorf("line %d is not one JSON object: %v\n%s", i+1, err, line)
					}
				}
			}
		})
	}
}

func TestWatchOutlivesTimeout(t *testing.T) {
	// Three calls of 30ms each take longer than --timeout 50ms; watch must
	// go on all the same, ending only at ^C.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := &slowMaster{fakeMaster: fakeMaster{members: lab(), version: 41, done: cancel}, calls: 3, delay: 30 * time.Millisecond}
	q, _, errOut := fakeQuery(&slow.fakeMaster)
	q.connect = func(context.Context) (*master, error) {
		return &master{clusterAPI: slow, entry: rpcdef.Entry{Service: rpcdef.Service{Addr: "127.0.0.1:7200"}}}, nil
	}
	q.watchWait = 30 * time.Millisecond
	if code := q.main(ctx, []string{"watch", "--timeout", "50ms"}); code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut)
	}
	if slow.calls != 0 {
		t.Errorf("watch ended with %d calls left", slow.calls)
	}
	if errOut.Len() != 0 {
		t.Errorf("stderr:\n%s", errOut)
	}
}

// slowMaster answers each Watch with nothing after delay, calls times.
type slowMaster struct {
	fakeMaster
	calls int
	delay time.Duration
}

func (s *slowMaster) Watch(ctx context.Context, after uint64, wait time.Duration) (rpcdef.WatchReply, error) {
	if s.calls == 0 {
		return s.fakeMaster.Watch(ctx, after, wait)
	}
	s.calls--
	select {
	case <-time.After(s.delay):
		return rpcdef.WatchReply{Version: after}, nil
	case <-ctx.Done():
		return rpcdef.WatchReply{}, ctx.Err()
	}
}

func TestWatchFatalError(t *testing.T) {
	f := &fakeMaster{members: lab(), version: 41, steps: []watchStep{{err: rpcdef.Errorf(rpcdef.CodePermission, "slave certificates may not watch")}}}
	q, _, errOut := fakeQuery(f)
	if code := q.main(context.Background(), []string{"watch"}); code != exitFail {
		t.Fatalf("exit %d, want %d", code, exitFail)
	}
	want := "rpc-query: the master at 127.0.0.1:7200 refused: permission denied: slave certificates may not watch\n"
	if errOut.String() != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
}

func TestFormatting(t *testing.T) {
	p := printer{now: now, loc: time.UTC}
	var b bytes.Buffer
	roll := lab()
	fmt.Fprintln(&b, "# event lines")
	for _, ev := range []rpcdef.Event{
		{Version: 42, Kind: rpcdef.EventDead, Node: "node-2", At: now, Reason: "connection closed"},
		{Version: 43, Kind: rpcdef.EventLeft, Node: "node-3", At: now.Add(1234 * time.Millisecond), Reason: "shutting down"},
		{Version: 44, Kind: rpcdef.EventForgotten, Node: "node-3", At: now.Add(2 * time.Second), Reason: "removed by spiffe://lab/admin/ops"},
		{Version: 45, Kind: rpcdef.EventAlive, Node: "node-2", At: now.Add(3 * time.Second)},
		{Version: 46, Kind: rpcdef.EventJoined, Node: "node-4", Incarnation: 1, Addr: "127.0.0.1:40000"},
		{Version: 47, Kind: rpcdef.EventRejoined, Node: "node-4", Incarnation: 1795500639338614030, Addr: "127.0.0.1:40001", At: now.Add(5 * time.Second),
			Reason: "new incarnation 1795500639338614030 replaces 1795500624844941107"},
	} {
		fmt.Fprintln(&b, p.event(ev, 6))
	}
	fmt.Fprintln(&b, "# reset")
	p.reset(&b, 7, roll)
	fmt.Fprintln(&b, "# view headers")
	for _, v := range []rpcdef.ViewReply{
		{Node: "node-1", Incarnation: 1718031600123456789, Master: "spiffe://lab/master/m1", MasterAddr: "127.0.0.1:7200", Joined: true, Version: 42},
		{Node: "node-1", Incarnation: 1718031600123456789, Master: "spiffe://lab/master/m1", MasterAddr: "127.0.0.1:7200", Version: 42},
		{Node: "node-1", Incarnation: 5},
	} {
		fmt.Fprintln(&b, viewHeader(v))
	}
	fmt.Fprintln(&b, "# watch start")
	fmt.Fprintln(&b, watchStart("lab", "127.0.0.1:7200", 41, roll))
	golden(t, "lines.golden", b.Bytes())
}

// formatCase is an input of a formatting function and the text it must give.
type formatCase[T any] struct {
	in   T
	want string
}

// testFormat checks the function called name against cases.
func testFormat[T any](t *testing.T, name string, f func(T) string, cases []formatCase[T]) {
	t.Helper()
	for _, c := range cases {
		if got := f(c.in); got != c.want {
			t.Errorf("%s(%v) = %q, want %q", name, c.in, got, c.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	testFormat(t, "humanBytes", humanBytes, []formatCase[uint64]{
		{0, "0 B"},
		{512, "512 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{10188, "9.9 KiB"},
		{10189, "10 KiB"},
		{1023 * 1024, "1023 KiB"},
		{1<<20 - 1, "1.0 MiB"},
		{16 * gib, "16 GiB"},
		{8600 * mib, "8.4 GiB"},
		{5 << 40, "5.0 TiB"},
		{math.MaxUint64, "16 EiB"},
	})
}

func TestHumanRate(t *testing.T) {
	testFormat(t, "humanRate", humanRate, []formatCase[float64]{
		{0, "0 B/s"},
		{-5, "0 B/s"},
		{math.NaN(), "0 B/s"},
		{0.4, "0 B/s"},
		{999.6, "1000 B/s"},
		{1234.5, "1.2 KiB/s"},
		{120 * 1024, "120 KiB/s"},
		{3.5 * mib, "3.5 MiB/s"},
		{1.3 * gib, "1.3 GiB/s"},
	})
}

func TestBytesPair(t *testing.T) {
	tests := []struct {
		part, whole uint64
		want        string
	}{
		{7*gib + 300*mib, 16 * gib, "7.3/16 GiB"},
		{500 * mib, 16 * gib, "0.5/16 GiB"},
		{6 * gib, 8 * gib, "6.0/8.0 GiB"},
		{512, 1024, "0.5/1.0 KiB"},
		{0, 0, "0/0 B"},
	}
	for _, tt := range tests {
		if got := bytesPair(tt.part, tt.whole); got != tt.want {
			t.Errorf("bytesPair(%d, %d) = %q, want %q", tt.part, tt.whole, got, tt.want)
		}
	}
}

func TestAges(t *testing.T) {
	tests := []struct {
		in                time.Duration
		age, ago, uptime_ string
	}{
		{0, "0s", "0.0s ago", "0s"},
		{-300 * time.Millisecond, "0s", "0.0s ago", "0s"},
		{400 * time.Millisecond, "0s", "0.4s ago", "0s"},
		{2440 * time.Millisecond, "2s", "2.4s ago", "2s"},
		{9960 * time.Millisecond, "9s", "10s ago", "9s"},
		{12 * time.Second, "12s", "12s ago", "12s"},
		{59900 * time.Millisecond, "59s", "59s ago", "59s"},
		{12*time.Minute + 3*time.Second, "12m", "12m ago", "12m 3s"},
		{time.Hour, "1h", "1h ago", "1h 0m"},
		{5*time.Hour + 12*time.Minute, "5h", "5h ago", "5h 12m"},
		{49 * time.Hour, "2d", "2d ago", "2d 1h"},
		{76*time.Hour + 12*time.Minute, "3d", "3d ago", "3d 4h"},
		{400 * 24 * time.Hour, "400d", "400d ago", "400d 0h"},
	}
	for _, tt := range tests {
		if got := age(tt.in); got != tt.age {
			t.Errorf("age(%v) = %q, want %q", tt.in, got, tt.age)
		}
		if got := ago(tt.in); got != tt.ago {
			t.Errorf("ago(%v) = %q, want %q", tt.in, got, tt.ago)
		}
		if tt.in >= 0 {
			if got := uptime(tt.in); got != tt.uptime_ {
				t.Errorf("uptime(%v) = %q, want %q", tt.in, got, tt.uptime_)
			}
		}
	}
}

func TestShortIncarnation(t *testing.T) {
	tests := []formatCase[uint64]{
		{0, "0"},
		{7, "7"},
		{1234567, "1234567"},
		{12345678, "…345678"},
		{1718031600123456789, "…456789"},
	}
	for _, tt := range tests {
		got := shortIncarnation(tt.in)
		if got != tt.want {
			t.Errorf("shortIncarnation(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if n := utf8.RuneCountInString(got); n > incarnationDigits+1 {
			t.Errorf("shortIncarnation(%d) is %d columns, wider than its header", tt.in, n)
		}
	}
}

func TestSummary(t *testing.T) {
	roll := lab()
	tests := []struct {
		ms    []rpcdef.Member
		total int
		want  string
	}{
		{nil, 0, "0 members"},
		{nil, 3, "0 members (of 3)"},
		{roll[1:2], 0, "1 member: 1 alive"},
		{roll, 3, "3 members: 1 alive, 1 suspect, 1 dead"},
		{roll[:1], 3, "1 member: 1 dead (of 3)"},
		{[]rpcdef.Member{{Status: "left"}, {Status: "unknown"}, {Status: "sleeping"}, {Status: "alive"}}, 0, "4 members: 1 alive, 1 left, 1 unknown, 1 sleeping"},
	}
	for _, tt := range tests {
		if got := summary(tt.ms, tt.total); got != tt.want {
			t.Errorf("summary = %q, want %q", got, tt.want)
		}
	}
}

func TestRanked(t *testing.T) {
	r := func(cpu, mem float64, age time.Duration) *rpcdef.Resources {
		return &rpcdef.Resources{CPUPercent: cpu, MemUsedPercent: mem, SampledAt: now.Add(-age)}
	}
	ms := []rpcdef.Member{
		{Name: "e", Status: rpcdef.StatusAlive},
		{Name: "d", Status: rpcdef.StatusAlive, Resources: r(10, 20, time.Second)},
		{Name: "c", Status: rpcdef.StatusAlive, Resources: r(10, 50, time.Second)},
		{Name: "a", Status: rpcdef.StatusAlive},
		{Name: "b", Status: rpcdef.StatusAlive, Resources: r(90, 5, time.Second)},
		{Name: "f", Status: rpcdef.StatusSuspect, Resources: r(10, 20, time.Second)},
		{Name: "g", Status: rpcdef.StatusLeft, Resources: r(100, 100, time.Second)},     // left: no current figures
		{Name: "h", Status: rpcdef.StatusAlive, Resources: r(100, 100, 11*time.Second)}, // stale
		{Name: "i", Status: rpcdef.StatusDead, Resources: r(99, 99, time.Second)},
	}
	p := printer{now: now, loc: time.UTC, staleAfter: defaultStaleAfter}
	for _, tt := range []struct{ key, want string }{
		{"cpu", "b c d f a e h g i"},
		{"mem", "c d f b a e h g i"},
		{"name", "b c d f a e h g i"},
	} {
		var got []string
		for _, m := range p.ranked(ms, tt.key) {
			got = append(got, m.Name)
		}
		if tt.key == "name" {
			tt.want = "b c d f a e h g i"
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("ranked by %s: %v, want %s", tt.key, got, tt.want)
		}
	}
}

// The tests below go over real sockets: a fake registry on a UNIX socket,
// a fake master behind mutual TLS, a fake slaved.

// Registry answers Lookup and List from a map, as registryd would.
type Registry struct {
	mu      sync.Mutex
	entries map[rpcdef.ServiceKey]rpcdef.Entry
	n       int // Lookup calls
}

func (r *Registry) lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func (r *Registry) Lookup(args *rpcdef.LookupArgs, reply *rpcdef.LookupReply) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	e, ok := r.entries[args.Key]
	if !ok {
		return rpcdef.Errorf(rpcdef.CodeNotFound, "%s is not registered", args.Key)
	}
	reply.Entry = e
	return nil
}

func (r *Registry) List(_ *rpcdef.ListArgs, reply *rpcdef.ListReply) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		reply.Entries = append(reply.Entries, e)
	}
	return nil
}

// Cluster answers Members from a fixed roll, and Null.
type Cluster struct{ f *fakeMaster }

func (c *Cluster) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

func (c *Cluster) Members(args *rpcdef.MembersArgs, reply *rpcdef.MembersReply) error {
	r, err := c.f.Members(context.Background(), args.Node)
	*reply = r
	return err
}

// View answers Get with a fixed view.
type View struct{ v rpcdef.ViewReply }

func (v *View) Get(_ *rpcdef.Empty, reply *rpcdef.ViewReply) error {
	*reply = v.v
	return nil
}

// testLab is a CA, an admin certificate on disk, and a registry socket.
type testLab struct {
	dir    string
	ca     *pkitest.CA
	admin  pki.Files
	reg    *Registry
	socket string
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	dir := t.TempDir()
	ca := pkitest.New(t, "lab")
	l := &testLab{dir: dir, ca: ca, reg: &Registry{entries: map[rpcdef.ServiceKey]rpcdef.Entry{}}, socket: filepath.Join(dir, "reg.sock")}
	l.admin = ca.WriteNode(dir, pki.RoleAdmin, "ops")
	ln, err := net.Listen("unix", l.socket)
	if err != nil {
		t.Fatal(err)
	}
	tlsrpctest.Serve(t, ln, nil, tlsrpctest.Receiver(rpcdef.RegistryReceiver, l.reg))
	return l
}

// startMaster serves f's roll over mutual TLS with a certificate of role,
// and registers it as ClusterService/lab.
func (l *testLab) startMaster(t *testing.T, role pki.Role, f *fakeMaster) string {
	t.Helper()
	addr := l.serveMaster(t, role, f)
	l.register(addr)
	return addr
}

// serveMaster serves f's roll over mutual TLS with a certificate of role,
// without registering it.
func (l *testLab) serveMaster(t *testing.T, role pki.Role, f *fakeMaster) string {
	t.Helper()
	ln := tlsrpctest.Listen(t)
	tlsrpctest.Serve(t, ln, l.ca.NodeStore(role, "m1").ServerConfig(), tlsrpctest.Receiver(rpcdef.ClusterService, &Cluster{f: f}))
	return ln.Addr().String()
}

func (l *testLab) register(addr string) {
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	l.reg.mu.Lock()
	defer l.reg.mu.Unlock()
	l.reg.entries[key] = rpcdef.Entry{Service: rpcdef.Service{ServiceKey: key, Version: rpcdef.ClusterVersion, Addr: addr}, Owner: "spiffe://lab/master/m1", State: rpcdef.StateLive}
}

// run runs rpc-query against the lab with the admin certificate.
func (l *testLab) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	q := newQuery(&out, &errOut)
	q.now = func() time.Time { return now }
	q.loc = time.UTC
	all := append(l.flags(), args...)
	code := q.main(context.Background(), all)
	return code, out.String(), errOut.String()
}

func TestMembersOverTLS(t *testing.T) {
	l := newTestLab(t)
	l.startMaster(t, pki.RoleMaster, &fakeMaster{members: lab(), version: 41})

	code, out, errOut := l.run(t, "members")
	if code != exitOK {
		t.Fatalf("members: exit %d: %s", code, errOut)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "members.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("members over TLS printed:\n%s\nwant testdata/members.golden:\n%s", out, want)
	}

	code, _, errOut = l.run(t, "members", "node-9")
	if want := "rpc-query: no member node-9 in cluster lab (rpc-query members lists them)\n"; code != exitFail || errOut != want {
		t.Errorf("members node-9: exit %d, stderr %q; want exit 1, %q", code, errOut, want)
	}
}

func TestMasterErrors(t *testing.T) {
	t.Run("not a master", func(t *testing.T) {
		l := newTestLab(t)
		addr := l.startMaster(t, pki.RoleSlave, &fakeMaster{members: lab()})
		code, out, errOut := l.run(t, "top")
		wantErr := fmt.Sprintf("rpc-query: cannot reach the master at %s: ", addr)
		if code != exitFail || out != "" || !strings.HasPrefix(errOut, wantErr) || !strings.Contains(errOut, "want a master certificate") {
			t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and an error starting %q about the role", code, out, errOut, wantErr)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		l := newTestLab(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		l.register(addr)
		code, _, errOut := l.run(t, "members")
		want := fmt.Sprintf("rpc-query: cannot reach the master at %s: connection refused (is masterd running? the registry's entry ClusterService/lab is live; rpc-query services shows it)\n", addr)
		if code != exitFail || errOut != want {
			t.Errorf("exit %d, stderr %q; want exit 1, %q", code, errOut, want)
		}
	})
	t.Run("not registered", func(t *testing.T) {
		l := newTestLab(t)
		code, _, errOut := l.run(t, "watch", "--cluster", "prod")
		want := "rpc-query: no master of cluster prod in the registry: ClusterService/prod is not registered (is masterd running? --cluster names another cluster; rpc-query services lists what is registered; --master HOST:PORT skips the registry)\n"
		if code != exitFail || errOut != want {
			t.Errorf("exit %d, stderr %q; want exit 1, %q", code, errOut, want)
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		var out, errOut bytes.Buffer
		t.Setenv("MUSTER_CA", "")
		t.Setenv("MUSTER_CERT", "")
		t.Setenv("MUSTER_KEY", "")
		code := newQuery(&out, &errOut).main(context.Background(), []string{"members"})
		want := "rpc-query: members needs a certificate: give --ca, --cert and --key (or MUSTER_CA, MUSTER_CERT, MUSTER_KEY)\n"
		if code != exitFail || errOut.String() != want {
			t.Errorf("exit %d, stderr %q; want exit 1, %q", code, errOut.String(), want)
		}
	})
}

func TestExplainMaster(t *testing.T) {
	q := newQuery(io.Discard, io.Discard)
	q.o.timeout = 5 * time.Second
	m := &master{entry: rpcdef.Entry{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}, Addr: "127.0.0.1:7200"}, State: rpcdef.StateStale}}
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("connect to master at 127.0.0.1:7200: %w", syscall.ECONNREFUSED),
			"cannot reach the master at 127.0.0.1:7200: connection refused (is masterd running? the registry's entry ClusterService/lab is stale; rpc-query services shows it)"},
		{fmt.Errorf("call ClusterService.Members on master at 127.0.0.1:7200: %w", context.DeadlineExceeded),
			"the master at 127.0.0.1:7200 did not answer within 5s (is it up and reachable from here? --timeout sets the limit)"},
		{rpcdef.Errorf(rpcdef.CodePermission, "slaves may not list members"),
			"the master at 127.0.0.1:7200 refused: permission denied: slaves may not list members"},
	}
	for _, tt := range tests {
		if got := q.explainMaster(m, tt.err).Error(); got != tt.want {
			t.Errorf("explainMaster(%v) =\n%s\nwant\n%s", tt.err, got, tt.want)
		}
	}
}

func TestView(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "slaved.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	roll := lab()
	for i := range roll { // a slave hears of joins and statuses, not of resources
		roll[i].Resources, roll[i].LastHeartbeat, roll[i].CertNotAfter = nil, time.Time{}, time.Time{}
	}
	tlsrpctest.Serve(t, ln, nil, tlsrpctest.Receiver(rpcdef.ViewName, &View{v: rpcdef.ViewReply{Node: "node-1", Incarnation: 1718031600123456789,
		Master: "spiffe://lab/master/m1", MasterAddr: "127.0.0.1:7200", Joined: true, Version: 42, Members: roll}}))

	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"view.golden", []string{"view", "--slave-socket", socket}},
		{"view.json.golden", []string{"--json", "view", "--slave-socket", socket}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			var out, errOut bytes.Buffer
			q := newQuery(&out, &errOut)
			q.now = func() time.Time { return now }
			q.loc = time.UTC
			if code := q.main(context.Background(), tt.args); code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			golden(t, tt.golden, out.Bytes())
			if tt.golden == "view.golden" {
				// The header is as long as the master's identity makes it; the table must fit.
				_, table, _ := bytes.Cut(out.Bytes(), []byte("\n"))
				fitsTerminal(t, tt.golden, table)
			}
		})
	}

	t.Run("env", func(t *testing.T) {
		t.Setenv("MUSTER_SLAVE_SOCKET", socket)
		var out, errOut bytes.Buffer
		if code := newQuery(&out, &errOut).main(context.Background(), []string{"view"}); code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
	})
	t.Run("no slaved", func(t *testing.T) {
		var out, errOut bytes.Buffer
		missing := filepath.Join(dir, "none.sock")
		code := newQuery(&out, &errOut).main(context.Background(), []string{"view", "--slave-socket", missing})
		want := fmt.Sprintf("rpc-query: cannot reach slaved: nothing listens on %s (is slaved running on this host? use --slave-socket PATH or MUSTER_SLAVE_SOCKET)\n", missing)
		if code != exitFail || errOut.String() != want {
			t.Errorf("exit %d, stderr %q; want exit 1, %q", code, errOut.String(), want)
		}
	})
}

// slaveMaster is a master as a caller holding node-1's slave certificate
// sees it: it answers Heartbeat as masterd does.
type slaveMaster struct {
	*fakeMaster
	sent []rpcdef.HeartbeatArgs
}

func (m *slaveMaster) Heartbeat(ctx context.Context, args rpcdef.HeartbeatArgs) (rpcdef.HeartbeatReply, error) {
	m.sent = append(m.sent, args)
	r := rpcdef.HeartbeatReply{Version: m.version}
	if args.Node != "node-1" {
		return r, rpcdef.Errorf(rpcdef.CodePermission, "spiffe://lab/slave/node-1 may only Heartbeat as node-1, not as %s", args.Node)
	}
	if args.Incarnation != 1718031600123456789 {
		return r, rpcdef.Errorf(rpcdef.CodeStaleIncarnation, "node-1 incarnation %d was replaced by incarnation 1718031600123456789: this process must join again", args.Incarnation)
	}
	return r, nil
}

func TestHeartbeat(t *testing.T) {
	tests := []struct {
		args           []string
		code           int
		stdout, stderr string
		sentInc        uint64 // the incarnation the heartbeat carried
	}{
		{
			args:    []string{"heartbeat", "node-1"},
			stdout:  "heartbeat for node-1 (incarnation 1718031600123456789) accepted at version 41\n",
			sentInc: 1718031600123456789,
		},
		{
			args:    []string{"--json", "heartbeat", "node-1"},
			stdout:  "{\n  \"node\": \"node-1\",\n  \"incarnation\": \"1718031600123456789\",\n  \"accepted\": true,\n  \"version\": 41\n}\n",
			sentInc: 1718031600123456789,
		},
		{
			// node-2's own incarnation is sent: only the certificate is judged.
			args:    []string{"heartbeat", "node-2"},
			code:    exitFail,
			stderr:  "rpc-query: heartbeat for node-2 refused: permission denied: spiffe://lab/slave/node-1 may only Heartbeat as node-1, not as node-2\n",
			sentInc: 1718031700987654321,
		},
		{
			args:    []string{"heartbeat", "node-1", "--incarnation", "5"},
			code:    exitFail,
			stderr:  "rpc-query: heartbeat for node-1 refused: stale incarnation: node-1 incarnation 5 was replaced by incarnation 1718031600123456789: this process must join again\n",
			sentInc: 5,
		},
		{
			// Not a member: incarnation 0, and the master has its say.
			args:    []string{"heartbeat", "node-9"},
			code:    exitFail,
			stderr:  "rpc-query: heartbeat for node-9 refused: permission denied: spiffe://lab/slave/node-1 may only Heartbeat as node-1, not as node-9\n",
			sentInc: 0,
		},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			m := &slaveMaster{fakeMaster: &fakeMaster{members: lab(), version: 41}}
			q, out, errOut := fakeQuery(m.fakeMaster)
			connect := q.connect
			q.connect = func(ctx context.Context) (*master, error) {
				c, err := connect(ctx)
				if err != nil {
					return nil, err
				}
				c.clusterAPI = m
				return c, nil
			}
			if code := q.main(context.Background(), tt.args); code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errOut)
			}
			if out.String() != tt.stdout || errOut.String() != tt.stderr {
				t.Errorf("stdout %q\nstderr %q\nwant stdout %q\nstderr %q", out, errOut, tt.stdout, tt.stderr)
			}
			if len(m.sent) != 1 || m.sent[0].Incarnation != tt.sentInc {
				t.Errorf("sent %+v, want one heartbeat with incarnation %d", m.sent, tt.sentInc)
			}
		})
	}

	t.Run("a client without Heartbeat", func(t *testing.T) {
		q, _, errOut := fakeQuery(&fakeMaster{members: lab(), version: 41})
		if code := q.main(context.Background(), []string{"heartbeat", "node-1"}); code != exitFail {
			t.Fatalf("exit %d, want %d", code, exitFail)
		}
		if want := "rpc-query: the client of the master at 127.0.0.1:7200 cannot send heartbeats\n"; errOut.String() != want {
			t.Errorf("stderr %q, want %q", errOut, want)
		}
	})
}

package query

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/buildinfo"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/tlsrpc/tlsrpctest"
	"github.com/muster-lab/muster/rpcdef"
)

// admin finds node in the roll for an admin call, or says what the call
// answers instead: adminErr if set, else not found. f.mu is held.
func (f *fakeMaster) admin(node string) (int, error) {
	if f.adminErr != nil {
		return 0, f.adminErr
	}
	for i, m := range f.members {
		if m.Name == node {
			return i, nil
		}
	}
	return 0, rpcdef.Errorf(rpcdef.CodeNotFound, "no node %s", node)
}

func (f *fakeMaster) Forget(ctx context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.admin(node)
	if err != nil {
		return err
	}
	f.members = append(f.members[:i:i], f.members[i+1:]...)
	f.forgot = append(f.forgot, node)
	return nil
}

func (f *fakeMaster) Evict(ctx context.Context, node, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.admin(node)
	if err != nil {
		return err
	}
	f.members[i].Status = rpcdef.StatusDead
	f.evicted = append(f.evicted, rpcdef.EvictArgs{Node: node, Reason: reason})
	return nil
}

func (c *Cluster) Forget(args *rpcdef.ForgetArgs, _ *rpcdef.Empty) error {
	return c.f.Forget(context.Background(), args.Node)
}

func (c *Cluster) Evict(args *rpcdef.EvictArgs, _ *rpcdef.Empty) error {
	return c.f.Evict(context.Background(), args.Node, args.Reason)
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"members", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := newQuery(&out, &errOut).main(context.Background(), args)
			if code != exitOK || errOut.Len() != 0 {
				t.Fatalf("exit %d, stderr %q; want exit 0 and nothing on stderr", code, errOut.String())
			}
			for _, want := range []string{"usage: rpc-query", "exit status:", "3  wait timed out", "-o json", "-no-headers", "-master HOST:PORT"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("help lacks %q", want)
				}
			}
		})
	}
	t.Run("version", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code := newQuery(&out, &errOut).main(context.Background(), []string{"--version"})
		if want := buildinfo.Read().String() + "\n"; code != exitOK || out.String() != want || errOut.Len() != 0 {
			t.Errorf("--version: exit %d, stdout %q, stderr %q; want 0, %q", code, out.String(), errOut.String(), want)
		}
	})
	t.Run("help fits 80 columns", func(t *testing.T) {
		var out bytes.Buffer
		newQuery(&out, io.Discard).main(context.Background(), []string{"help"})
		fitsTerminal(t, "help", []byte(expandTabs(out.String())))
	})
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		stderr string // the whole of it
	}{
		{[]string{"members", "node-1"}, exitOK, ""},
		{[]string{"members", "node-2", "-o", "name"}, exitNotAlive, "rpc-query: node-2 is suspect, not alive\n"},
		{[]string{"members", "node-3", "-o", "json"}, exitNotAlive, "rpc-query: node-3 is dead, not alive\n"},
		{[]string{"members", "node-9"}, exitFail, "rpc-query: no member node-9 in cluster lab (rpc-query members lists them)\n"},
		{[]string{"members", "--bogus"}, exitUsage, "rpc-query: unknown flag --bogus (run 'rpc-query --help')\n"},
		{[]string{"wait", "member", "node-3", "--for", "alive", "--timeout", "30ms"}, exitTimeout, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			q, _, errOut := fakeQuery(&fakeMaster{members: lab(), version: 41})
			q.pollEvery = time.Millisecond
			if code := q.main(context.Background(), tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, errOut)
			}
			if tt.stderr != "" && errOut.String() != tt.stderr {
				t.Errorf("stderr %q, want %q", errOut.String(), tt.stderr)
			}
		})
	}
}

func TestWait(t *testing.T) {
	notYet := errors.New("no master of cluster lab in the registry: ClusterService/lab is not registered")
	tests := []struct {
		name      string
		args      []string
		change    func(f *fakeMaster, calls int) // at each Members call
		connErrs  []error
		code      int
		stdout    string // a regexp
		stderr    string // a regexp
		minCalls  int
		wantCalls int // exact, if not 0
	}{
		{
			name: "member becomes alive",
			args: []string{"wait", "member", "node-2", "--for", "alive"},
			change: func(f *fakeMaster, calls int) {
				if calls == 3 {
					f.members[1].Status = rpcdef.StatusAlive
				}
			},
			stdout:    `^waited \d+\.\ds for member node-2 to be alive: node-2 is alive\n$`,
			wantCalls: 3,
		},
		{
			name:     "the master is not registered yet",
			args:     []string{"wait", "member", "node-1", "--for", "alive"},
			connErrs: []error{notYet, notYet},
			stdout:   `^waited \d+\.\ds for member node-1 to be alive: node-1 is alive\n$`,
		},
		{
			name:   "gone",
			args:   []string{"wait", "member", "node-9", "--for", "gone"},
			stdout: `^waited \d+\.\ds for member node-9 to be gone from the roll: node-9 is not in the roll\n$`,
		},
		{
			name: "members alive",
			args: []string{"wait", "members", "--alive", "2"},
			change: func(f *fakeMaster, calls int) {
				if calls == 2 {
					f.members[1].Status = rpcdef.StatusAlive
				}
			},
			stdout:    `^waited \d+\.\ds for at least 2 members alive: 3 members: 2 alive, 1 dead\n$`,
			wantCalls: 2,
		},
		{
			name:     "timeout",
			args:     []string{"wait", "member", "node-3", "--for", "left", "--timeout", "50ms"},
			code:     exitTimeout,
			stderr:   `^rpc-query: timed out after 50ms waiting for member node-3 to be left \(\d+ attempts\); last: node-3 is dead\n$`,
			minCalls: 2,
		},
		{
			name:     "timeout while the master is not there",
			args:     []string{"wait", "members", "--alive", "1", "--timeout", "20ms"},
			connErrs: []error{notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet, notYet},
			code:     exitTimeout,
			stderr:   `^rpc-query: timed out after 20ms waiting for at least 1 member alive \(\d+ attempts\); last: no master of cluster lab in the registry: ClusterService/lab is not registered\n$`,
		},
		{
			name:     "a refusal is not waited out",
			args:     []string{"wait", "member", "node-1", "--for", "alive"},
			connErrs: []error{rpcdef.Errorf(rpcdef.CodePermission, "no")},
			code:     exitFail,
			stderr:   `^rpc-query: gave up waiting for member node-1 to be alive: permission denied: no\n$`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeMaster{members: byName(lab()), version: 41}
			if tt.change != nil {
				f.onMembers = func(calls int) { tt.change(f, calls) }
			}
			q, out, errOut := fakeQuery(f, tt.connErrs...)
			q.pollEvery = time.Millisecond
			args := tt.args
			if !slices.Contains(args, "--timeout") {
				args = append(args, "--timeout", "10s")
			}
			code := q.main(context.Background(), args)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, tt.code, out, errOut)
			}
			if tt.stdout != "" && !regexp.MustCompile(tt.stdout).MatchString(out.String()) {
				t.Errorf("stdout %q, want it to match %s", out, tt.stdout)
			}
			if tt.stderr != "" && !regexp.MustCompile(tt.stderr).MatchString(errOut.String()) {
				t.Errorf("stderr %q, want it to match %s", errOut, tt.stderr)
			}
			if tt.code == exitOK && errOut.Len() != 0 {
				t.Errorf("stderr %q, want nothing", errOut)
			}
			if tt.wantCalls != 0 && f.calls != tt.wantCalls {
				t.Errorf("%d Members calls, want %d", f.calls, tt.wantCalls)
			}
			if f.calls < tt.minCalls {
				t.Errorf("%d Members calls, want at least %d", f.calls, tt.minCalls)
			}
		})
	}
}

func TestWaitDefaultTimeout(t *testing.T) {
	q, _, _ := fakeQuery(&fakeMaster{members: lab(), version: 41})
	q.main(context.Background(), []string{"wait", "member", "node-1", "--for", "alive"})
	if q.o.timeout != defaultWaitTimeout {
		t.Errorf("wait without --timeout waits %v, want %v", q.o.timeout, defaultWaitTimeout)
	}
}

// TestWaitService waits over real sockets for a service that registers
// only after wait has started, and answers Null.
func TestWaitService(t *testing.T) {
	l := newTestLab(t)
	addr := l.serveMaster(t, pki.RoleMaster, &fakeMaster{members: lab()})
	var out, errOut bytes.Buffer
	q := newQuery(&out, &errOut)
	q.pollEvery = time.Millisecond
	q.now = func() time.Time { return now }
	done := make(chan int, 1)
	go func() {
		done <- q.main(context.Background(), append(l.flags(), "wait", "service", "ClusterService/lab", "--timeout", "20s"))
	}()
	// Register once wait has seen the service missing, so the test shows
	// that wait outlasts it. The registry counts lookups.
	deadline := time.Now().Add(10 * time.Second)
	for l.reg.lookups() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("wait never looked the service up")
		}
		time.Sleep(time.Millisecond) // poll interval, not synchronisation
	}
	l.register(addr)
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d; stderr %s", code, errOut.String())
	}
	want := fmt.Sprintf(`^waited \d+\.\ds for ClusterService/lab to answer: version 1 at %s\n$`, regexp.QuoteMeta(addr))
	if !regexp.MustCompile(want).MatchString(out.String()) {
		t.Errorf("stdout %q, want it to match %s", out.String(), want)
	}

	// Without a certificate there is nothing to wait for: exit 1 at once.
	var out2, errOut2 bytes.Buffer
	code := newQuery(&out2, &errOut2).main(context.Background(), []string{"--socket", l.socket, "--ca", "", "--cert", "", "--key", "", "wait", "service", "ClusterService/lab"})
	if code != exitFail || !strings.Contains(errOut2.String(), "ping needs a certificate: give --ca, --cert and --key") {
		t.Errorf("wait service without a certificate: exit %d, stderr %q", code, errOut2.String())
	}
}

// flags are the flags that reach the lab with the admin certificate.
func (l *testLab) flags() []string {
	return []string{"--socket", l.socket, "--ca", l.admin.CA, "--cert", l.admin.Cert, "--key", l.admin.Key}
}

func TestForgetEvict(t *testing.T) {
	tests := []struct {
		args     []string
		adminErr error
		code     int
		stdout   string
		stderr   string
		forgot   string
		evicted  string
	}{
		{args: []string{"forget", "node-3"}, stdout: "node-3 forgotten: removed from the roll of cluster lab\n", forgot: "[node-3]", evicted: "[]"},
		{args: []string{"forget", "node-3", "-o", "json"}, stdout: "{\n  \"node\": \"node-3\",\n  \"done\": \"forgotten\"\n}\n", forgot: "[node-3]", evicted: "[]"},
		{args: []string{"evict", "node-2", "--reason", "disk gone"}, stdout: "node-2 evicted: declared dead in cluster lab (disk gone)\n", forgot: "[]", evicted: "[{node-2 disk gone}]"},
		{args: []string{"evict", "node-2"}, stdout: "node-2 evicted: declared dead in cluster lab (rpc-query evict)\n", forgot: "[]", evicted: "[{node-2 rpc-query evict}]"},
		{args: []string{"forget", "node-9"}, code: exitFail, stderr: "rpc-query: no member node-9 in cluster lab (rpc-query members lists them)\n", forgot: "[]", evicted: "[]"},
		{args: []string{"evict", "node-1"}, adminErr: rpcdef.Errorf(rpcdef.CodePermission, "only admin certificates may call Evict"), code: exitFail,
			stderr: "rpc-query: evict node-1: the master at 127.0.0.1:7200 refused: permission denied: only admin certificates may call Evict (it takes an admin certificate)\n", forgot: "[]", evicted: "[]"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f := &fakeMaster{members: lab(), version: 41, adminErr: tt.adminErr}
			q, out, errOut := fakeQuery(f)
			if code := q.main(context.Background(), tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, errOut)
			}
			if out.String() != tt.stdout || errOut.String() != tt.stderr {
				t.Errorf("stdout %q, stderr %q; want %q, %q", out, errOut, tt.stdout, tt.stderr)
			}
			if got := fmt.Sprint(f.forgot); got != tt.forgot {
				t.Errorf("forgot %s, want %s", got, tt.forgot)
			}
			if got := fmt.Sprint(f.evicted); got != tt.evicted {
				t.Errorf("evicted %s, want %s", got, tt.evicted)
			}
		})
	}
}

// TestForgetOverTLS forgets over real mutual TLS, and refuses a slave's
// certificate before dialling.
func TestForgetOverTLS(t *testing.T) {
	l := newTestLab(t)
	f := &fakeMaster{members: lab()}
	l.startMaster(t, pki.RoleMaster, f)
	code, out, errOut := l.run(t, "forget", "node-3")
	if code != exitOK || out != "node-3 forgotten: removed from the roll of cluster lab\n" {
		t.Fatalf("forget over TLS: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if fmt.Sprint(f.forgot) != "[node-3]" {
		t.Errorf("the master forgot %v, want [node-3]", f.forgot)
	}

	slave := l.ca.WriteNode(l.dir, pki.RoleSlave, "node-1")
	cert, key := slave.Cert, slave.Key
	code, out, errOut = l.run(t, "--cert", cert, "--key", key, "evict", "node-1")
	want := fmt.Sprintf("rpc-query: evict needs an admin certificate, and %s is spiffe://lab/slave/node-1's (make one with certgen issue --role admin --name NAME)\n", cert)
	if code != exitFail || out != "" || errOut != want {
		t.Errorf("evict with a slave certificate: exit %d, stdout %q, stderr %q; want exit 1, %q", code, out, errOut, want)
	}
	if len(f.evicted) != 0 {
		t.Errorf("the master evicted %v for a slave certificate", f.evicted)
	}
}

// TestMasterFlag reaches a master that is not registered, with --master,
// and pings it by address; the registry's socket is not even there.
func TestMasterFlag(t *testing.T) {
	l := newTestLab(t)
	addr := l.serveMaster(t, pki.RoleMaster, &fakeMaster{members: lab(), version: 41})
	gone := filepath.Join(l.dir, "no-registry.sock")

	code, out, errOut := l.run(t, "--socket", gone, "--master", addr, "members", "-o", "name")
	if code != exitOK || out != "node-1\nnode-2\nnode-3\n" {
		t.Errorf("members --master: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = l.run(t, "--socket", gone, "ping", addr)
	want := fmt.Sprintf(`^ClusterService ready and waiting at %s \(rtt [0-9.]+[µm]s, spiffe://lab/master/m1\)\n$`, regexp.QuoteMeta(addr))
	if code != exitOK || !regexp.MustCompile(want).MatchString(out) {
		t.Errorf("ping %s: exit %d, stdout %q, stderr %q; want %s", addr, code, out, errOut, want)
	}
	code, out, errOut = l.run(t, "--socket", gone, "ping", addr, "-o", "json")
	var pj pingJSON
	if code != exitOK || strictDecode([]byte(out), &pj) != nil || pj.Address != addr || pj.Server != "spiffe://lab/master/m1" || pj.Service != "ClusterService" {
		t.Errorf("ping -o json: exit %d, %q, stderr %q", code, out, errOut)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	code, _, errOut = l.run(t, "--socket", gone, "--master", closed, "top")
	wantErr := fmt.Sprintf("rpc-query: cannot reach the master at %s: connection refused (is masterd running there? --master %s skips the registry)\n", closed, closed)
	if code != exitFail || errOut != wantErr {
		t.Errorf("top --master %s: exit %d, stderr %q; want %q", closed, code, errOut, wantErr)
	}
}

// TestWrongSocket puts net/rpc's "can't find service" into words.
func TestWrongSocket(t *testing.T) {
	l := newTestLab(t)
	code, _, errOut := l.run(t, "view", "--slave-socket", l.socket)
	want := fmt.Sprintf("rpc-query: the socket %s does not serve a slave's view: is it slaved's socket? (--slave-socket; the registry's socket is --socket)\n", l.socket)
	if code != exitFail || errOut != want {
		t.Errorf("view of the registry's socket: exit %d, stderr %q; want %q", code, errOut, want)
	}
	for _, bad := range []string{"float64", "slice", "rpc:", "View.Get"} {
		if strings.Contains(errOut, bad) {
			t.Errorf("the error shows %q: %s", bad, errOut)
		}
	}
}

func TestWatchFilters(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeMaster{members: lab(), version: 41, steps: watchScript(), done: cancel}
	q, out, errOut := fakeQuery(f)
	q.watchWait = 10 * time.Millisecond
	if code := q.main(ctx, []string{"watch", "-o", "json", "--node", "node-?", "--kind", "dead,rejoined"}); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var kinds []string
	for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var w watchJSON
		if err := strictDecode([]byte(line), &w); err != nil {
			t.Fatalf("line %d: %v\n%s", i+1, err, line)
		}
		kinds = append(kinds, w.Type+":"+string(w.Kind)+":"+w.Node)
	}
	// node-10's join does not match node-?, node-2's suspect is not asked for;
	// a reset is always shown.
	if want := "[snapshot:: event:dead:node-2 reset:: event:rejoined:node-2]"; fmt.Sprint(kinds) != want {
		t.Errorf("watch printed %v, want %s", kinds, want)
	}
}

// expandTabs expands tabs to every eighth column, as a terminal shows them.
func expandTabs(s string) string {
	var b strings.Builder
	col := 0
	for _, r := range s {
		switch r {
		case '\t':
			n := 8 - col%8
			b.WriteString(strings.Repeat(" ", n))
			col += n
		case '\n':
			b.WriteRune(r)
			col = 0
		default:
			b.WriteRune(r)
			col++
		}
	}
	return b.String()
}

// strictDecode decodes one JSON value into v, refusing unknown fields and
// anything after it.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// TestJSONSchema decodes every command's JSON strictly into the documented
// types, checks that incarnations survive as strings, and feeds one back
// to heartbeat --incarnation.
func TestJSONSchema(t *testing.T) {
	want := map[string]uint64{}
	for _, m := range lab() {
		want[m.Name] = m.Incarnation
	}
	checkMembers := func(t *testing.T, ms []memberJSON) {
		t.Helper()
		if len(ms) == 0 {
			t.Fatal("no members")
		}
		for _, m := range ms {
			if m.Incarnation != want[m.Name] {
				t.Errorf("%s: incarnation %d, want %d", m.Name, m.Incarnation, want[m.Name])
			}
		}
	}
	run := func(t *testing.T, args ...string) []byte {
		t.Helper()
		q, out, errOut := fakeQuery(&fakeMaster{members: lab(), version: 41})
		if code := q.main(context.Background(), args); code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out.Bytes()
	}
	// Every incarnation is a quoted string of digits, wherever it is.
	quoted := regexp.MustCompile(`"incarnation": ?"\d+"`)
	bare := regexp.MustCompile(`"incarnation": ?\d`)
	shape := func(t *testing.T, out []byte) {
		t.Helper()
		if bare.Match(out) || !quoted.Match(out) {
			t.Errorf("incarnations are not strings:\n%s", out)
		}
	}

	t.Run("members", func(t *testing.T) {
		out := run(t, "members", "-o", "json")
		shape(t, out)
		var r rollJSON
		if err := strictDecode(out, &r); err != nil {
			t.Fatal(err)
		}
		checkMembers(t, r.Members)
		if r.Members[0].Resources == nil || r.Members[0].Resources.AgeSeconds == nil || *r.Members[0].Resources.AgeSeconds != 1.2 || r.Members[0].Resources.Stale {
			t.Errorf("node-1's report: %+v, want age 1.2s, not stale", r.Members[0].Resources)
		}
	})
	t.Run("member", func(t *testing.T) {
		out := run(t, "members", "node-1", "-o", "json")
		shape(t, out)
		var m memberJSON
		if err := strictDecode(out, &m); err != nil {
			t.Fatal(err)
		}
		checkMembers(t, []memberJSON{m})
	})
	t.Run("top", func(t *testing.T) {
		out := run(t, "top", "-o", "json", "--stale-after", "2s")
		var rows []topJSON
		if err := strictDecode(out, &rows); err != nil {
			t.Fatal(err)
		}
		got := map[string]topJSON{}
		for _, r := range rows {
			got[r.Name] = r
		}
		if r := got["node-2"]; !r.Stale || r.CPUPercent != nil || r.ReportAgeSeconds == nil || *r.ReportAgeSeconds != 3 {
			t.Errorf("node-2's 3s-old report with --stale-after 2s: %+v; want stale, no figures, age 3", r)
		}
		if r := got["node-1"]; r.Stale || r.CPUPercent == nil {
			t.Errorf("node-1's fresh report: %+v", r)
		}
	})
	t.Run("watch", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		q, out, errOut := fakeQuery(&fakeMaster{members: lab(), version: 41, steps: watchScript(), done: cancel})
		q.watchWait = 10 * time.Millisecond
		if code := q.main(ctx, []string{"watch", "-o", "json"}); code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		shape(t, out.Bytes())
		for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var w watchJSON
			if err := strictDecode([]byte(line), &w); err != nil {
				t.Fatalf("line %d: %v\n%s", i+1, err, line)
			}
			if w.Type == "event" && w.Node == "node-2" && w.Kind == rpcdef.EventSuspect && w.Incarnation != want["node-2"] {
				t.Errorf("event incarnation %d, want %d", w.Incarnation, want["node-2"])
			}
			if w.Type == "snapshot" {
				checkMembers(t, w.Members)
			}
		}
	})
	t.Run("forget", func(t *testing.T) {
		var a adminJSON
		if err := strictDecode(run(t, "forget", "node-3", "-o", "json"), &a); err != nil || a.Done != "forgotten" {
			t.Errorf("%+v, %v", a, err)
		}
	})
	t.Run("view", func(t *testing.T) {
		socket := filepath.Join(t.TempDir(), "slaved.sock")
		ln, err := net.Listen("unix", socket)
		if err != nil {
			t.Fatal(err)
		}
		tlsrpctest.Serve(t, ln, nil, tlsrpctest.Receiver(rpcdef.ViewName, &View{v: rpcdef.ViewReply{Node: "node-1", Incarnation: want["node-1"], Joined: true, Version: 42, Members: lab()}}))
		out := run(t, "view", "--slave-socket", socket, "-o", "json")
		shape(t, out)
		var v viewJSON
		if err := strictDecode(out, &v); err != nil {
			t.Fatal(err)
		}
		if v.Incarnation != want["node-1"] {
			t.Errorf("view incarnation %d, want %d", v.Incarnation, want["node-1"])
		}
		checkMembers(t, v.Members)
		if out := run(t, "view", "--slave-socket", socket, "-o", "name", "--status", "alive,suspect"); string(out) != "node-1\nnode-2\n" {
			t.Errorf("view -o name --status alive,suspect: %q", out)
		}
	})
	t.Run("services, lookup, ping", func(t *testing.T) {
		l := newTestLab(t)
		addr := l.startMaster(t, pki.RoleMaster, &fakeMaster{members: lab()})
		code, out, errOut := l.run(t, "services", "-o", "json")
		var es []entryJSON
		if code != exitOK || strictDecode([]byte(out), &es) != nil || len(es) != 1 || es[0].Address != addr {
			t.Errorf("services -o json: exit %d, %s %s", code, out, errOut)
		}
		code, out, errOut = l.run(t, "lookup", "ClusterService/lab", "-o", "json")
		var e entryJSON
		if code != exitOK || strictDecode([]byte(out), &e) != nil || e.Address != addr {
			t.Errorf("lookup -o json: exit %d, %s %s", code, out, errOut)
		}
		code, out, errOut = l.run(t, "ping", "ClusterService/lab", "-o", "json")
		var p pingJSON
		if code != exitOK || strictDecode([]byte(out), &p) != nil || p.Address != addr || p.Version != rpcdef.ClusterVersion {
			t.Errorf("ping -o json: exit %d, %s %s", code, out, errOut)
		}
		code, out, _ = l.run(t, "services", "-o", "name")
		if code != exitOK || out != "ClusterService/lab\n" {
			t.Errorf("services -o name: exit %d, %q", code, out)
		}
		code, out, _ = l.run(t, "services", "--no-headers")
		if code != exitOK || !regexp.MustCompile(`^ClusterService +lab +1 +`+regexp.QuoteMeta(addr)+` +lab/master/m1 +0\.0s +live\n$`).MatchString(out) {
			t.Errorf("services --no-headers: exit %d, %q", code, out)
		}
		code, out, _ = l.run(t, "services", "-o", "wide")
		if code != exitOK || !strings.HasPrefix(out, "NAME ") || !strings.Contains(out, " spiffe://lab/master/m1 ") {
			t.Errorf("services -o wide: exit %d, %q; want the owner whole", code, out)
		}
	})

	// The incarnation read back from members -o json, as jq -r and as jq
	// print it, is the one heartbeat sends, to the last digit.
	t.Run("heartbeat --incarnation", func(t *testing.T) {
		var r rollJSON
		if err := strictDecode(run(t, "members", "-o", "json"), &r); err != nil {
			t.Fatal(err)
		}
		var raw map[string]any
		json.Unmarshal(run(t, "members", "node-1", "-o", "json"), &raw)
		s, ok := raw["incarnation"].(string)
		if !ok || s != strconv.FormatUint(want["node-1"], 10) {
			t.Fatalf("incarnation read back as %#v", raw["incarnation"])
		}
		for _, arg := range []string{s, `"` + s + `"`} {
			m := &slaveMaster{fakeMaster: &fakeMaster{members: lab(), version: 41}}
			q, out, errOut := fakeQuery(m.fakeMaster)
			connect := q.connect
			q.connect = func(ctx context.Context) (*master, error) {
				mm, err := connect(ctx)
				if err == nil {
					mm.clusterAPI = m
				}
				return mm, err
			}
			if code := q.main(context.Background(), []string{"heartbeat", "node-1", "--incarnation", arg, "-o", "json"}); code != exitOK {
				t.Fatalf("heartbeat --incarnation %s: exit %d: %s", arg, code, errOut)
			}
			if len(m.sent) != 1 || m.sent[0].Incarnation != want["node-1"] {
				t.Errorf("heartbeat --incarnation %s sent %+v, want incarnation %d", arg, m.sent, want["node-1"])
			}
			var hb heartbeatJSON
			if err := strictDecode(out.Bytes(), &hb); err != nil || hb.Incarnation != want["node-1"] {
				t.Errorf("heartbeat -o json: %+v, %v", hb, err)
			}
		}
	})
}

// TestStaleFigures shows a stale report and a dead node's last one as not
// current, in every form.
func TestStaleFigures(t *testing.T) {
	roll := lab()
	old := &rpcdef.Resources{SampledAt: now.Add(-15 * time.Minute), CPUCount: 2, CPUPercent: 100, MemUsedPercent: 99, Load1: 7}
	// node-3 is dead, its last report 15 minutes old; node-4 is alive, but
	// its reports stopped 11s ago.
	roll[0].Resources = old
	roll = append(roll, rpcdef.Member{Name: "node-4", Status: rpcdef.StatusAlive,
		Resources: &rpcdef.Resources{SampledAt: now.Add(-11 * time.Second), CPUPercent: 95}})
	run := func(args ...string) string {
		t.Helper()
		q, out, errOut := fakeQuery(&fakeMaster{members: roll, version: 41})
		code := q.main(context.Background(), args)
		if code != exitOK && code != exitNotAlive {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		return out.String()
	}

	top := run("top", "-o", "name")
	if top != "node-2\nnode-1\nnode-4\nnode-3\n" {
		t.Errorf("top ranks\n%s\nwant the fresh ones busiest first, then the stale node-4, then the dead node-3", top)
	}
	table := run("members")
	for _, re := range []string{`(?m)^node-3 .* dead +…\d+ +1m +- +- +- `, `(?m)^node-4 .* alive .* - +- +- `, `(?m)^4 members: 2 alive, 1 suspect, 1 dead; 1 report stale \(older than 10s\)$`} {
		if !regexp.MustCompile(re).MatchString(table) {
			t.Errorf("members:\n%s\nwant a line matching %s", table, re)
		}
	}
	if out := run("members", "node-3"); !strings.Contains(out, "report sampled:       2024-06-10 14:50:00.000 UTC (15m ago) (the last before it was dead: not current)") {
		t.Errorf("members node-3:\n%s", out)
	}
	if out := run("members", "node-4"); !strings.Contains(out, "(11s ago) (STALE: older than 10s)") {
		t.Errorf("members node-4:\n%s", out)
	}
	var m memberJSON
	if err := strictDecode([]byte(run("members", "node-3", "-o", "json")), &m); err != nil || m.Resources == nil || !m.Resources.Stale || *m.Resources.AgeSeconds != 900 {
		t.Errorf("members node-3 -o json: %+v, %v; want its report stale, 900s old", m.Resources, err)
	}
}

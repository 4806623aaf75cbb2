package query

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/tlsrpc/tlsrpctest"
	"github.com/muster-lab/muster/rpcdef"
)

// groupMaster is one master of a scripted raft group: it answers Status
// with status, and the calls only a leader serves with notLeader when it
// is a follower. Members, Watch, Forget and Evict are its fakeMaster's.
type groupMaster struct {
	*fakeMaster
	mu        sync.Mutex
	status    rpcdef.MasterStatus
	statusErr error
	hang      bool  // Status waits for the caller to give up
	notLeader error // what AddMaster and RemoveMaster answer on a follower
	added     []string
	removed   []string
	groupErr  error // what AddMaster and RemoveMaster answer on the leader
}

func (g *groupMaster) Status(ctx context.Context) (rpcdef.MasterStatus, error) {
	g.mu.Lock()
	hang := g.hang
	st, err := g.status, g.statusErr
	g.mu.Unlock()
	if hang {
		<-ctx.Done()
		return rpcdef.MasterStatus{}, fmt.Errorf("call ClusterService.Status on master at %s: %w", st.Addr, ctx.Err())
	}
	return st, err
}

// refusal is what AddMaster and RemoveMaster answer before doing anything:
// notLeader on a follower, else groupErr. g.mu is held.
func (g *groupMaster) refusal() error {
	if g.notLeader != nil {
		return g.notLeader
	}
	return g.groupErr
}

func (g *groupMaster) AddMaster(ctx context.Context, name, raftAddr string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.refusal(); err != nil {
		return err
	}
	g.added = append(g.added, name+"="+raftAddr)
	return nil
}

func (g *groupMaster) RemoveMaster(ctx context.Context, name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.refusal(); err != nil {
		return err
	}
	for _, sv := range g.status.Servers {
		if sv.Name == name {
			g.removed = append(g.removed, name)
			return nil
		}
	}
	return rpcdef.Errorf(rpcdef.CodeNotFound, "no master %s in the group", name)
}

// servers is the configuration of the test group: m1, m2 and m3 on
// 127.0.0.1, ClusterService on 72xx and raft on 73xx.
func servers() []rpcdef.MasterServer {
	return []rpcdef.MasterServer{
		{Name: "m3", RaftAddr: "127.0.0.1:7302", Addr: "127.0.0.1:7202", Voter: true},
		{Name: "m1", RaftAddr: "127.0.0.1:7300", Addr: "127.0.0.1:7200", Voter: true},
		{Name: "m2", RaftAddr: "127.0.0.1:7301", Addr: "127.0.0.1:7201", Voter: true},
	}
}

// threeMasters is a healthy group: m1 leads in term 7, m2 and m3 follow.
func threeMasters() map[string]*groupMaster {
	g := map[string]*groupMaster{}
	for i, sv := range servers() {
		st := rpcdef.MasterStatus{Name: sv.Name, Addr: sv.Addr, RaftAddr: sv.RaftAddr, State: "follower", Term: 7, Leader: "m1",
			AppliedIndex: 1041, CommitIndex: 1042, Version: 41, Servers: servers()}
		st.LastContact = now.Add(-time.Duration(40*(i+1)) * time.Millisecond)
		gm := &groupMaster{fakeMaster: &fakeMaster{members: lab(), version: 41}, status: st,
			notLeader: rpcdef.NotLeader("m1", "127.0.0.1:7200")}
		if sv.Name == "m1" {
			gm.status.State, gm.status.LastContact, gm.status.AppliedIndex = "leader", time.Time{}, 1042
			gm.notLeader = nil
		} else {
			gm.fakeMaster.adminErr = gm.notLeader
		}
		g[sv.Addr] = gm
	}
	return g
}

// groupQuery is a query that finds the master at first (the registry's
// entry, or --master), and reaches every other master of group by its
// address; an address not in group refuses connections.
func groupQuery(group map[string]*groupMaster, first string) (*query, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	q := newQuery(&out, &errOut)
	q.now = func() time.Time { return now }
	q.loc = time.UTC
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	q.connectAt = func(_ context.Context, e rpcdef.Entry) (*master, error) {
		g, ok := group[e.Addr]
		if !ok {
			return &master{clusterAPI: refusing{e.Addr}, entry: e}, nil
		}
		return &master{clusterAPI: g, entry: e}, nil
	}
	q.connect = func(ctx context.Context) (*master, error) {
		return q.connectAt(ctx, rpcdef.Entry{Service: rpcdef.Service{ServiceKey: key, Version: 1, Addr: first}, State: rpcdef.StateLive})
	}
	return q, &out, &errOut
}

// refusing is a master whose address refuses connections.
type refusing struct{ addr string }

func (r refusing) err() error {
	return fmt.Errorf("connect to master at %s: dial tcp %s: connect: %w", r.addr, r.addr, syscall.ECONNREFUSED)
}

func (r refusing) Members(context.Context, string) (rpcdef.MembersReply, error) {
	return rpcdef.MembersReply{}, r.err()
}

func (r refusing) Watch(context.Context, uint64, time.Duration) (rpcdef.WatchReply, error) {
	return rpcdef.WatchReply{}, r.err()
}

func (r refusing) Status(context.Context) (rpcdef.MasterStatus, error) {
	return rpcdef.MasterStatus{}, r.err()
}

func (r refusing) Forget(context.Context, string) error { return r.err() }

func (r refusing) Evict(context.Context, string, string) error { return r.err() }

func (r refusing) AddMaster(context.Context, string, string) error { return r.err() }

func (r refusing) RemoveMaster(context.Context, string) error { return r.err() }

func (r refusing) Close() error { return nil }

func TestMastersGolden(t *testing.T) {
	trouble := func() map[string]*groupMaster {
		g := threeMasters()
		delete(g, "127.0.0.1:7202") // m3's host is down
		// m4 was added but has not announced its address yet.
		for _, gm := range g {
			gm.status.Servers = append(gm.status.Servers, rpcdef.MasterServer{Name: "m4", RaftAddr: "127.0.0.1:7303", Voter: true})
		}
		return g
	}
	election := func() map[string]*groupMaster {
		g := threeMasters()
		delete(g, "127.0.0.1:7200") // the leader died; m2 and m3 stand
		for _, gm := range g {
			gm.status.State, gm.status.Term, gm.status.Leader = "candidate", 9, ""
		}
		return g
	}
	tests := []struct {
		golden string
		group  map[string]*groupMaster
		first  string
		args   []string
		width  bool
		code   int
		stderr string
	}{
		{"masters.golden", threeMasters(), "127.0.0.1:7201", []string{"masters"}, true, exitOK, ""},
		{"masters-wide.golden", threeMasters(), "127.0.0.1:7200", []string{"masters", "-o", "wide"}, false, exitOK, ""},
		{"masters.json.golden", threeMasters(), "127.0.0.1:7202", []string{"masters", "--json"}, false, exitOK, ""},
		{"masters-name.golden", threeMasters(), "127.0.0.1:7202", []string{"masters", "-o", "name"}, false, exitOK, ""},
		{"masters-trouble.golden", trouble(), "127.0.0.1:7201", []string{"masters"}, true, exitNotAlive,
			"rpc-query: m3 and m4 are unreachable\n"},
		{"masters-trouble.json.golden", trouble(), "127.0.0.1:7201", []string{"masters", "-o", "json"}, false, exitNotAlive,
			"rpc-query: m3 and m4 are unreachable\n"},
		{"masters-election.golden", election(), "127.0.0.1:7202", []string{"masters"}, true, exitNotAlive,
			"rpc-query: m1 is unreachable; no leader is known (an election is under way, or a majority of the masters is down)\n"},
		{"masters-no-headers.golden", trouble(), "127.0.0.1:7201", []string{"masters", "--no-headers"}, true, exitNotAlive,
			"rpc-query: m3 and m4 are unreachable\n"},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			q, out, errOut := groupQuery(tt.group, tt.first)
			if code := q.main(context.Background(), tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, errOut)
			}
			if errOut.String() != tt.stderr {
				t.Errorf("stderr %q, want %q", errOut, tt.stderr)
			}
			golden(t, tt.golden, out.Bytes())
			if tt.width {
				fitsTerminal(t, tt.golden, out.Bytes())
			}
			if strings.HasSuffix(tt.golden, ".json.golden") {
				var j mastersJSON
				if err := strictDecode(out.Bytes(), &j); err != nil || j.Leader != "m1" || len(j.Masters) == 0 || j.Masters[0].Name != "m1" {
					t.Errorf("masters -o json decoded to %+v, %v", j, err)
				}
			}
		})
	}
}

func TestMastersErrors(t *testing.T) {
	t.Run("the first master does not answer", func(t *testing.T) {
		q, out, errOut := groupQuery(threeMasters(), "127.0.0.1:7209")
		if code := q.main(context.Background(), []string{"masters"}); code != exitFail {
			t.Fatalf("exit %d, want %d", code, exitFail)
		}
		want := "rpc-query: cannot reach the master at 127.0.0.1:7209: connection refused (is masterd running? the registry's entry ClusterService/lab is live; rpc-query services shows it)\n"
		if out.Len() != 0 || errOut.String() != want {
			t.Errorf("stdout %q, stderr %q; want only %q", out, errOut, want)
		}
	})
	t.Run("a master that hangs", func(t *testing.T) {
		g := threeMasters()
		g["127.0.0.1:7202"].hang = true
		q, out, errOut := groupQuery(g, "127.0.0.1:7200")
		q.statusWait = 20 * time.Millisecond
		if code := q.main(context.Background(), []string{"masters"}); code != exitNotAlive {
			t.Fatalf("exit %d, want %d; stderr %s", code, exitNotAlive, errOut)
		}
		if want := "  m3: no answer from 127.0.0.1:7202 within 20ms\n"; !strings.HasSuffix(out.String(), want) {
			t.Errorf("stdout:\n%s\nwant it to end with %q", out, want)
		}
	})
	t.Run("a master that answers as another", func(t *testing.T) {
		g := threeMasters()
		g["127.0.0.1:7202"].status.Name = "m9"
		q, out, _ := groupQuery(g, "127.0.0.1:7200")
		q.main(context.Background(), []string{"masters"})
		if want := "  m3: the master at 127.0.0.1:7202 answers as m9\n"; !strings.HasSuffix(out.String(), want) {
			t.Errorf("stdout:\n%s\nwant it to end with %q", out, want)
		}
	})
	t.Run("a master not in its own configuration", func(t *testing.T) {
		g := threeMasters()
		g["127.0.0.1:7202"].status.Servers = servers()[1:] // m3 was removed, and still runs
		q, out, _ := groupQuery(g, "127.0.0.1:7202")
		if code := q.main(context.Background(), []string{"masters", "-o", "name"}); code != exitOK || out.String() != "m1\nm2\nm3\n" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
		q, out, _ = groupQuery(g, "127.0.0.1:7202")
		q.main(context.Background(), []string{"masters"})
		if want := "  m3: it answered at 127.0.0.1:7202 but is not in its own configuration of the group (removed?)\n"; !strings.HasSuffix(out.String(), want) {
			t.Errorf("stdout:\n%s\nwant it to end with %q", out, want)
		}
	})
}

// TestLeaderOnly sends the calls only the leader serves to a follower, to
// the leader, and during an election.
func TestLeaderOnly(t *testing.T) {
	const election = "rpc-query: no leader is known (an election is under way): retry in a moment\n"
	tests := []struct {
		name   string
		first  string
		args   []string
		setup  func(g map[string]*groupMaster)
		code   int
		stdout string
		stderr string
		check  func(t *testing.T, g map[string]*groupMaster)
	}{
		{name: "forget at a follower goes to the leader", first: "127.0.0.1:7201", args: []string{"forget", "node-3"},
			stdout: "node-3 forgotten: removed from the roll of cluster lab\n",
			check: func(t *testing.T, g map[string]*groupMaster) {
				if got := fmt.Sprint(g["127.0.0.1:7200"].forgot); got != "[node-3]" {
					t.Errorf("the leader forgot %s, want [node-3]", got)
				}
			}},
		{name: "evict at a follower goes to the leader", first: "127.0.0.1:7202", args: []string{"evict", "node-2", "--reason", "disk gone"},
			stdout: "node-2 evicted: declared dead in cluster lab (disk gone)\n",
			check: func(t *testing.T, g map[string]*groupMaster) {
				if got := fmt.Sprint(g["127.0.0.1:7200"].evicted); got != "[{node-2 disk gone}]" {
					t.Errorf("the leader evicted %s", got)
				}
			}},
		{name: "masters add at a follower", first: "127.0.0.1:7201", args: []string{"masters", "add", "m4", "10.0.0.14:7114"},
			stdout: "m4 added to the group of cluster lab; it is a follower once it has caught up (rpc-query masters shows it)\n",
			check: func(t *testing.T, g map[string]*groupMaster) {
				if got := fmt.Sprint(g["127.0.0.1:7200"].added); got != "[m4=10.0.0.14:7114]" {
					t.Errorf("the leader added %s", got)
				}
				if got := fmt.Sprint(g["127.0.0.1:7201"].added); got != "[]" {
					t.Errorf("the follower added %s", got)
				}
			}},
		{name: "masters add -o json", first: "127.0.0.1:7200", args: []string{"masters", "add", "m4", "10.0.0.14:7114", "-o", "json"},
			stdout: "{\n  \"master\": \"m4\",\n  \"raft_address\": \"10.0.0.14:7114\",\n  \"done\": \"added\"\n}\n"},
		{name: "masters remove at the leader", first: "127.0.0.1:7200", args: []string{"masters", "remove", "m3"},
			stdout: "m3 removed from the group of cluster lab; it no longer votes: stop its masterd\n",
			check: func(t *testing.T, g map[string]*groupMaster) {
				if got := fmt.Sprint(g["127.0.0.1:7200"].removed); got != "[m3]" {
					t.Errorf("the leader removed %s", got)
				}
			}},
		{name: "masters remove, not in the group", first: "127.0.0.1:7202", args: []string{"masters", "remove", "m9"}, code: exitFail,
			stderr: "rpc-query: no master m9 in the group of cluster lab (rpc-query masters lists them)\n"},
		{name: "masters remove, refused", first: "127.0.0.1:7201", args: []string{"masters", "remove", "m1"}, code: exitFail,
			setup: func(g map[string]*groupMaster) {
				g["127.0.0.1:7200"].groupErr = rpcdef.Errorf(rpcdef.CodeInvalid, "m1 is the leader: stop it (SIGTERM hands leadership over) and remove it from the new leader")
			},
			stderr: "rpc-query: the master at 127.0.0.1:7200 refused: invalid argument: m1 is the leader: stop it (SIGTERM hands leadership over) and remove it from the new leader\n"},
		{name: "masters add, not an admin", first: "127.0.0.1:7200", args: []string{"masters", "add", "m4", "10.0.0.14:7114"}, code: exitFail,
			setup: func(g map[string]*groupMaster) {
				g["127.0.0.1:7200"].groupErr = rpcdef.Errorf(rpcdef.CodePermission, "AddMaster needs an admin certificate")
			},
			stderr: "rpc-query: masters add m4: the master at 127.0.0.1:7200 refused: permission denied: AddMaster needs an admin certificate (it takes an admin certificate)\n"},
		{name: "election: masters add", first: "127.0.0.1:7201", args: []string{"masters", "add", "m4", "10.0.0.14:7114"}, code: exitFail,
			setup: func(g map[string]*groupMaster) { g["127.0.0.1:7201"].notLeader = rpcdef.NotLeader("", "") }, stderr: election},
		{name: "election: forget", first: "127.0.0.1:7201", args: []string{"forget", "node-3"}, code: exitFail,
			setup: func(g map[string]*groupMaster) { g["127.0.0.1:7201"].adminErr = rpcdef.NotLeader("", "") }, stderr: election},
		{name: "the named leader is not the leader", first: "127.0.0.1:7201", args: []string{"masters", "remove", "m3"}, code: exitFail,
			setup: func(g map[string]*groupMaster) {
				g["127.0.0.1:7201"].notLeader = rpcdef.NotLeader("m3", "127.0.0.1:7202")
			},
			stderr: "rpc-query: the master at 127.0.0.1:7201 named m3 at 127.0.0.1:7202 the leader, but it is not the leader either (not the leader: the leader is m1 at 127.0.0.1:7200): leadership is changing hands; retry in a moment\n",
			check: func(t *testing.T, g map[string]*groupMaster) {
				if got := fmt.Sprint(g["127.0.0.1:7200"].removed); got != "[]" {
					t.Errorf("a second hop was taken: the leader removed %s", got)
				}
			}},
		{name: "the named leader is down", first: "127.0.0.1:7201", args: []string{"forget", "node-3"}, code: exitFail,
			setup:  func(g map[string]*groupMaster) { delete(g, "127.0.0.1:7200") },
			stderr: "rpc-query: cannot reach the leader at 127.0.0.1:7200: connection refused (the master at 127.0.0.1:7201 named it the leader; rpc-query masters shows the group)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := threeMasters()
			if tt.setup != nil {
				tt.setup(g)
			}
			q, out, errOut := groupQuery(g, tt.first)
			if code := q.main(context.Background(), tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, errOut)
			}
			if out.String() != tt.stdout || errOut.String() != tt.stderr {
				t.Errorf("stdout %q\nstderr %q\nwant stdout %q\nstderr %q", out, errOut, tt.stdout, tt.stderr)
			}
			if tt.check != nil {
				tt.check(t, g)
			}
		})
	}
}

func TestMastersUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"masters", "add"}, "usage: rpc-query masters add NAME HOST:PORT (the new master's raft address)"},
		{[]string{"masters", "add", "m4"}, "usage: rpc-query masters add NAME HOST:PORT"},
		{[]string{"masters", "remove"}, "usage: rpc-query masters remove NAME"},
		{[]string{"masters", "remove", "m3", "m4"}, "usage: rpc-query masters remove NAME"},
		{[]string{"masters", "list"}, "masters list: usage: rpc-query masters | masters add NAME HOST:PORT | masters remove NAME"},
		{[]string{"masters", "add", "M4!", "10.0.0.14:7114"}, "masters add M4!: name"},
		{[]string{"masters", "remove", "M4!"}, "masters remove M4!: name"},
		{[]string{"masters", "add", "m4", "nowhere"}, "masters add m4 nowhere: the raft address: want HOST:PORT, like 10.0.0.1:7111 (its [raft] listen, or advertise)"},
		{[]string{"masters", "add", "m4", ":7114"}, "the raft address: want HOST:PORT"},
		{[]string{"masters", "add", "m4", "10.0.0.14:0"}, `the raft address: port "0": want a number from 1 to 65535`},
		{[]string{"masters", "add", "m4", "10.0.0.14:7114", "-o", "wide"}, "-o wide: masters add takes -o json, or no -o"},
		{[]string{"masters", "-o", "yaml"}, "-o yaml: masters takes -o wide, json, name, or no -o"},
		{[]string{"masters", "remove", "m3", "--no-headers"}, "--no-headers applies to the tables of members, top, services, view and masters, not masters remove m3"},
		{[]string{"masters", "--sort-by", "name"}, "--sort-by applies to members, top and view, not masters"},
		{[]string{"masters", "--cluster", "Lab!"}, "--cluster: name"},
		{[]string{"--registry", "10.0.0.1:7111,,10.0.0.2:7111", "services"}, `--registry "10.0.0.1:7111,,10.0.0.2:7111": an empty entry: want HOST:PORT, or several comma-separated`},
		{[]string{"--registry", "10.0.0.1:7111, 10.0.0.1:7111", "members"}, "10.0.0.1:7111 is listed twice"},
		{[]string{"--registry", "nowhere", "services"}, `--registry "nowhere": nowhere: want HOST:PORT, like 10.0.0.1:7111`},
		{[]string{"--registry", "10.0.0.1:http", "services"}, `port "http": want a number from 1 to 65535`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) { refusedAsUsage(t, tt.args, tt.want) })
	}
	t.Run("too many registries", func(t *testing.T) {
		var list []string
		for i := range 10 {
			list = append(list, fmt.Sprintf("10.0.0.%d:7111", i+1))
		}
		if _, err := parseRegistries(strings.Join(list, ",")); err == nil || !strings.Contains(err.Error(), "10 registries given: at most 9 (one per master host)") {
			t.Errorf("parseRegistries of 10: %v", err)
		}
	})
}

// serveRegistry serves reg over mutual TLS with a registry certificate,
// as registryd's TCP listener does, and returns its address.
func (l *testLab) serveRegistry(t *testing.T, name string, reg *Registry) string {
	t.Helper()
	ln := tlsrpctest.Listen(t)
	tlsrpctest.Serve(t, ln, l.ca.NodeStore(pki.RoleRegistry, name).ServerConfig(), tlsrpctest.Receiver(rpcdef.RegistryReceiver, reg))
	return ln.Addr().String()
}

// TestRegistries asks several registries over TLS: a dead one, one that
// does not know the master (it restarted without its state), and one that
// does.
func TestRegistries(t *testing.T) {
	l := newTestLab(t)
	addr := l.serveMaster(t, pki.RoleMaster, &fakeMaster{members: lab(), version: 41})
	l.register(addr)
	empty := l.serveRegistry(t, "reg1", &Registry{entries: map[rpcdef.ServiceKey]rpcdef.Entry{}})
	full := l.serveRegistry(t, "reg2", l.reg)
	dead := tlsrpctest.ClosedAddr(t)

	t.Run("the third answers", func(t *testing.T) {
		code, out, errOut := l.run(t, "--registry", dead+","+empty+","+full, "members", "-o", "name")
		if code != exitOK || out != "node-1\nnode-2\nnode-3\n" || errOut != "" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("from MUSTER_REGISTRY", func(t *testing.T) {
		t.Setenv("MUSTER_REGISTRY", empty+", "+full)
		code, out, errOut := l.run(t, "lookup", "ClusterService/lab", "-o", "name")
		if code != exitOK || out != "ClusterService/lab\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("services from the first that answers", func(t *testing.T) {
		code, out, errOut := l.run(t, "--registry", dead+","+full, "services", "-o", "name")
		if code != exitOK || out != "ClusterService/lab\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("none knows it", func(t *testing.T) {
		code, _, errOut := l.run(t, "--registry", empty+","+empty2(t, l), "lookup", "ClusterService/lab")
		if want := "rpc-query: ClusterService/lab is not registered (rpc-query services lists what is)\n"; code != exitFail || errOut != want {
			t.Errorf("exit %d, stderr %q; want %q", code, errOut, want)
		}
	})
	t.Run("none answers", func(t *testing.T) {
		dead2 := tlsrpctest.ClosedAddr(t)
		code, out, errOut := l.run(t, "--registry", dead+","+empty+","+dead2, "members")
		want := fmt.Sprintf("rpc-query: no registry answered (3 asked): cannot reach the registry at %s: connection refused (is registryd running there?); "+
			"the registry at %s: not found: ClusterService/lab is not registered; "+
			"cannot reach the registry at %s: connection refused (is registryd running there?)\n", dead, empty, dead2)
		if code != exitFail || out != "" || errOut != want {
			t.Errorf("exit %d, stdout %q, stderr\n%s\nwant\n%s", code, out, errOut, want)
		}
	})
	t.Run("one, as before", func(t *testing.T) {
		code, _, errOut := l.run(t, "--registry", dead, "services")
		if want := fmt.Sprintf("rpc-query: cannot reach the registry at %s: connection refused (is registryd running there?)\n", dead); code != exitFail || errOut != want {
			t.Errorf("exit %d, stderr %q; want %q", code, errOut, want)
		}
	})
	t.Run("a registry that hangs gets its share", func(t *testing.T) {
		// A listener that accepts and never answers: the first registry's
		// share of --timeout runs out, and the second answers in time.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		code, out, errOut := l.run(t, "--registry", ln.Addr().String()+","+full, "--timeout", "2s", "lookup", "ClusterService/lab", "-o", "name")
		if code != exitOK || out != "ClusterService/lab\n" {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
}

// empty2 is a second registry that knows nothing.
func empty2(t *testing.T, l *testLab) string {
	return l.serveRegistry(t, "reg3", &Registry{entries: map[rpcdef.ServiceKey]rpcdef.Entry{}})
}

// GroupCluster is ClusterService of one master of a group: Members and the
// rest from Cluster, Status, AddMaster and RemoveMaster from g.
type GroupCluster struct {
	*Cluster
	g *groupMaster
}

func (c *GroupCluster) Status(_ *rpcdef.StatusArgs, reply *rpcdef.MasterStatus) error {
	st, err := c.g.Status(context.Background())
	*reply = st
	return err
}

func (c *GroupCluster) AddMaster(args *rpcdef.AddMasterArgs, _ *rpcdef.Empty) error {
	return c.g.AddMaster(context.Background(), args.Name, args.RaftAddr)
}

func (c *GroupCluster) RemoveMaster(args *rpcdef.RemoveMasterArgs, _ *rpcdef.Empty) error {
	return c.g.RemoveMaster(context.Background(), args.Name)
}

// TestMastersOverTLS runs masters, and masters remove and add at a
// follower, against a group of masters served over mutual TLS: m1 leads,
// m2 follows, m3's host is down. The registry's entry is m2's.
func TestMastersOverTLS(t *testing.T) {
	l := newTestLab(t)
	names := []string{"m1", "m2"}
	lns := map[string]net.Listener{}
	addrs := map[string]string{"m3": tlsrpctest.ClosedAddr(t)}
	for _, n := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[n], addrs[n] = ln, ln.Addr().String()
	}
	var group []rpcdef.MasterServer
	for i, n := range []string{"m1", "m2", "m3"} {
		group = append(group, rpcdef.MasterServer{Name: n, Addr: addrs[n], RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7300+i), Voter: true})
	}
	gs := map[string]*groupMaster{}
	for _, n := range names {
		g := &groupMaster{fakeMaster: &fakeMaster{members: lab(), version: 41},
			status: rpcdef.MasterStatus{Name: n, Addr: addrs[n], State: "follower", Term: 3, Leader: "m1", LastContact: time.Now(), AppliedIndex: 17, Servers: group}}
		if n == "m1" {
			g.status.State, g.status.LastContact = "leader", time.Time{}
		} else {
			g.notLeader = rpcdef.NotLeader("m1", addrs["m1"])
		}
		gs[n] = g
		tlsrpctest.Serve(t, lns[n], l.ca.NodeStore(pki.RoleMaster, n).ServerConfig(), tlsrpctest.Receiver(rpcdef.ClusterService, &GroupCluster{Cluster: &Cluster{f: g.fakeMaster}, g: g}))
	}
	l.register(addrs["m2"])

	code, out, errOut := l.run(t, "masters")
	if code != exitNotAlive || errOut != "rpc-query: m3 is unreachable\n" {
		t.Errorf("masters: exit %d, stderr %q; want exit 4, m3 unreachable", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[1], "m1 ") || !strings.Contains(lines[1], " leader ") ||
		!strings.HasPrefix(lines[2], "m2 ") || !strings.Contains(lines[2], " follower ") || !strings.Contains(lines[3], " unreachable ") {
		t.Errorf("masters printed:\n%s", out)
	}
	if want := fmt.Sprintf("  m3: connection refused at %s (is its masterd running?)\n", addrs["m3"]); !strings.HasSuffix(out, want) {
		t.Errorf("masters printed:\n%s\nwant it to end with %q", out, want)
	}

	code, out, errOut = l.run(t, "masters", "remove", "m3")
	if code != exitOK || errOut != "" || !strings.HasPrefix(out, "m3 removed from the group") {
		t.Errorf("masters remove m3: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = l.run(t, "masters", "add", "m3", "127.0.0.1:7303")
	if code != exitOK || errOut != "" || !strings.HasPrefix(out, "m3 added to the group") {
		t.Errorf("masters add m3: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got := fmt.Sprint(gs["m1"].removed, gs["m1"].added, gs["m2"].removed, gs["m2"].added); got != "[m3] [m3=127.0.0.1:7303] [] []" {
		t.Errorf("removed and added at m1, then at m2: %s", got)
	}

	// A slave's certificate is refused before anything is dialled.
	slave := l.ca.WriteNode(l.dir, pki.RoleSlave, "node-1")
	cert, key := slave.Cert, slave.Key
	code, _, errOut = l.run(t, "--cert", cert, "--key", key, "masters", "remove", "m2")
	if want := "rpc-query: masters remove needs an admin certificate"; code != exitFail || !strings.HasPrefix(errOut, want) {
		t.Errorf("masters remove with a slave certificate: exit %d, stderr %q", code, errOut)
	}
	// Any certificate of the cluster may look.
	code, _, errOut = l.run(t, "--cert", cert, "--key", key, "masters", "-o", "name")
	if code != exitNotAlive {
		t.Errorf("masters with a slave certificate: exit %d, stderr %q", code, errOut)
	}
}

// TestEpoch shows the epoch a leader registered with (its raft term) in
// services -o wide, services -o json and lookup.
func TestEpoch(t *testing.T) {
	l := newTestLab(t)
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	l.reg.entries[key] = rpcdef.Entry{Service: rpcdef.Service{ServiceKey: key, Version: rpcdef.ClusterVersion, Addr: "127.0.0.1:7200", Epoch: 7},
		Owner: "spiffe://lab/master/m1", State: rpcdef.StateLive}
	probe := rpcdef.ServiceKey{Name: "Probe", Instance: "p1"}
	l.reg.entries[probe] = rpcdef.Entry{Service: rpcdef.Service{ServiceKey: probe, Version: 1, Addr: "127.0.0.1:7400"}, Owner: "spiffe://lab/admin/ops", State: rpcdef.StateLive}

	code, out, errOut := l.run(t, "services", "-o", "wide")
	if code != exitOK || !strings.Contains(out, " EPOCH ") || !regexp.MustCompile(`(?m)^ClusterService +lab +1 +127\.0\.0\.1:7200 +spiffe://lab/master/m1 +7 `).MatchString(out) ||
		!regexp.MustCompile(`(?m)^Probe +p1 +1 +127\.0\.0\.1:7400 +spiffe://lab/admin/ops +- `).MatchString(out) {
		t.Errorf("services -o wide: exit %d, stderr %q:\n%s", code, errOut, out)
	}
	code, out, _ = l.run(t, "lookup", "ClusterService/lab")
	if want := "ClusterService/lab version 1 at 127.0.0.1:7200 (owner spiffe://lab/master/m1, epoch 7, live, lease 0.0s left)\n"; code != exitOK || out != want {
		t.Errorf("lookup: exit %d, %q; want %q", code, out, want)
	}
	code, out, _ = l.run(t, "lookup", "ClusterService/lab", "-o", "json")
	var e entryJSON
	if err := strictDecode([]byte(out), &e); code != exitOK || err != nil || e.Epoch != 7 {
		t.Errorf("lookup -o json: exit %d, %v: %s", code, err, out)
	}
}

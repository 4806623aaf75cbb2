package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/rpcdef"
)

// roll is a fake Source: a roll and its events, changed by the test.
type roll struct {
	mu       sync.Mutex
	nodes    []Node
	events   []rpcdef.Event
	changed  chan struct{}
	history  map[string][]Sample
	services []rpcdef.Entry // nil: the registry does not answer
	asked    int            // Services calls
	group    Group
}

func newRoll() *roll { return &roll{changed: make(chan struct{})} }

func (r *roll) emit(e rpcdef.Event, status rpcdef.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e.Version = uint64(len(r.events) + 1)
	e.Status = status
	r.events = append(r.events, e)
	i := slices.IndexFunc(r.nodes, func(n Node) bool { return n.Name == e.Node })
	if i < 0 {
		r.nodes = append(r.nodes, Node{Member: rpcdef.Member{Name: e.Node}})
		i = len(r.nodes) - 1
	}
	r.nodes[i].Status = status
	r.nodes[i].Incarnation = e.Incarnation
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *roll) Nodes() ([]Node, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.nodes), uint64(len(r.events))
}

func (r *roll) History(node string) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.history[node])
}

func (r *roll) Recent(n int) ([]rpcdef.Event, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events[max(0, len(r.events)-n):]), uint64(len(r.events))
}

func (r *roll) Since(after uint64, reply *rpcdef.WatchReply) (bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reply.Version = uint64(len(r.events))
	if after == reply.Version {
		return false, r.changed
	}
	reply.Events = slices.Clone(r.events[after:])
	return true, nil
}

func (r *roll) Services(context.Context) ([]rpcdef.Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked++
	if r.services == nil {
		return nil, errors.New("no registry in this test")
	}
	return slices.Clone(r.services), nil
}

func (r *roll) Group() Group {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.group
	g.Servers = slices.Clone(g.Servers)
	return g
}

func serve(t *testing.T, r *roll) (*Dashboard, *httptest.Server) {
	t.Helper()
	d := New(r, Info{Cluster: "lab", Master: "spiffe://lab/master/m1", HeartbeatInterval: time.Second}, logtest.New(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	ts := httptest.NewServer(d.Handler())
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		cancel()
		<-done
	})
	return d, ts
}

func TestPage(t *testing.T) {
	_, ts := serve(t, newRoll())
	for _, tt := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script type="module" src="app.js">`},
		{"/app.js", "text/javascript", `new EventSource("events")`},
		{"/style.css", "text/css", "--dead:"},
	} {
		resp, err := http.Get(ts.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.ctype) {
			t.Errorf("GET %s: %s, %s", tt.path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(body), tt.contains) {
			t.Errorf("GET %s: no %q in\n%s", tt.path, tt.contains, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tt.path, csp)
		}
	}
	// Nothing on the page comes from elsewhere.
	for _, f := range []string{"static/index.html", "static/app.js", "static/style.css"} {
		data, err := static.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(string(data), s) && !(s == "http://" && strings.Contains(string(data), `"http://www.w3.org/2000/svg"`)) {
				t.Errorf("%s refers to %q: the page must load nothing from elsewhere", f, s)
			}
		}
	}
}

// sse reads Server-Sent Events from a response.
type sse struct {
	t    *testing.T
	sc   *bufio.Scanner
	body io.Closer
}

// stream opens ts's /events for 20s at most, and checks it is an event
// stream; it is closed when the test ends, or by close.
func stream(t *testing.T, ts *httptest.Server) *sse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return &sse{t: t, sc: bufio.NewScanner(resp.Body), body: resp.Body}
}

func (s *sse) close() { s.body.Close() }

func (s *sse) next() (event string, data []byte) {
	s.t.Helper()
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "" && event != "":
			return event, data
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = []byte(strings.TrimPrefix(line, "data: "))
		}
	}
	s.t.Fatalf("event stream ended: %v", s.sc.Err())
	return "", nil
}

// nextOf skips to the next message of one kind.
func (s *sse) nextOf(kind string, v any) {
	s.t.Helper()
	for {
		ev, data := s.next()
		if ev == kind {
			if err := json.Unmarshal(data, v); err != nil {
				s.t.Fatalf("%s: %v\n%s", kind, err, data)
			}
			return
		}
	}
}

func TestStream(t *testing.T) {
	r := newRoll()
	r.emit(rpcdef.Event{Kind: rpcdef.EventJoined, Node: "node-1", Incarnation: 1 << 62, At: time.Now()}, rpcdef.StatusAlive)
	r.emit(rpcdef.Event{Kind: rpcdef.EventJoined, Node: "node-2", Incarnation: 7, At: time.Now()}, rpcdef.StatusAlive)
	_, ts := serve(t, r)

	s := stream(t, ts)

	var snap snapshotView
	s.nextOf("snapshot", &snap)
	if snap.Cluster != "lab" || len(snap.Nodes) != 2 || snap.Nodes[0].Incarnation != "4611686018427387904" || snap.Version != 2 {
		t.Fatalf("first snapshot: %+v", snap)
	}
	var ev eventsView
	s.nextOf("events", &ev)
	if !ev.Reset || len(ev.Events) != 2 || ev.Events[1].Node != "node-2" {
		t.Fatalf("first events: %+v", ev)
	}

	// node-2 dies: the event comes at once, then a snapshot that shows it.
	r.emit(rpcdef.Event{Kind: rpcdef.EventDead, Node: "node-2", Incarnation: 7, At: time.Now(), Reason: "connection closed"}, rpcdef.StatusDead)
	s.nextOf("events", &ev)
	if ev.Reset || len(ev.Events) != 1 || ev.Events[0].Kind != "dead" || ev.Events[0].Status != "dead" || ev.Version != 3 {
		t.Fatalf("events after the death: %+v", ev)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.nextOf("snapshot", &snap)
		if snap.Version == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot at version 3: %+v", snap)
		}
	}
	if snap.Nodes[1].Status != "dead" {
		t.Fatalf("snapshot at version 3 has node-2 %s", snap.Nodes[1].Status)
	}
}

// TestStreamCap: past maxClients open streams, a new one is turned away.
func TestStreamCap(t *testing.T) {
	d, ts := serve(t, newRoll())
	for range maxClients {
		d.clients <- struct{}{} // as if that many pages were open
	}
	resp, err := http.Get(ts.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("stream past the cap: %s", resp.Status)
	}
}

// TestNodeDetail: api/node has all the master knows of one node, its
// incarnation as a string, and says what to do about an unknown name.
func TestNodeDetail(t *testing.T) {
	r := newRoll()
	r.emit(rpcdef.Event{Kind: rpcdef.EventJoined, Node: "node-1", Incarnation: 1<<62 + 1, At: time.Now()}, rpcdef.StatusAlive)
	notAfter := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Millisecond)
	r.mu.Lock()
	r.nodes[0].CertNotAfter = notAfter
	r.nodes[0].Resources = &rpcdef.Resources{
		SampledAt: time.Now(), CPUCount: 4, CPUPercent: 37.5, MemTotal: 8 << 30, MemAvailable: 2 << 30, MemUsedPercent: 75,
		Disks:            []rpcdef.DiskUsage{{Mount: "/", Total: 100 << 30, Free: 40 << 30, UsedPercent: 60}},
		NetRxBytesPerSec: 1500, NetTxBytesPerSec: 700, Uptime: 3 * time.Hour, Procs: 123,
	}
	r.history = map[string][]Sample{"node-1": {{At: time.Now().Add(-time.Second), Percent: 30}, {At: time.Now(), Percent: 37.5}}}
	r.mu.Unlock()
	_, ts := serve(t, r)

	resp, err := http.Get(ts.URL + "/api/node?name=node-1")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Name         string `json:"name"`
		Incarnation  string `json:"incarnation"`
		CertNotAfter int64  `json:"certNotAfter"`
		ReportMs     int64  `json:"reportMs"`
		Report       *struct {
			CPUPercent float64 `json:"cpuPercent"`
		} `json:"report"`
		Full *struct {
			NetRx  float64 `json:"netRxBytesPerSec"`
			Uptime int64   `json:"uptimeMs"`
			Procs  int     `json:"procs"`
			Disks  []struct {
				Mount string `json:"mount"`
				Free  uint64 `json:"free"`
			} `json:"disks"`
		} `json:"full"`
		CPU [][2]float64 `json:"cpu"`
	}
	err = json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/node: %s, %v", resp.Status, err)
	}
	if v.Name != "node-1" || v.Incarnation != "4611686018427387905" || v.CertNotAfter != notAfter.UnixMilli() || v.ReportMs != 5000 {
		t.Errorf("detail %+v", v)
	}
	if v.Report == nil || v.Report.CPUPercent != 37.5 || v.Full == nil || v.Full.NetRx != 1500 || v.Full.Uptime != (3*time.Hour).Milliseconds() ||
		v.Full.Procs != 123 || len(v.Full.Disks) != 1 || v.Full.Disks[0].Mount != "/" || v.Full.Disks[0].Free != 40<<30 || len(v.CPU) != 2 {
		t.Errorf("detail figures: report %+v, full %+v, %d CPU figures", v.Report, v.Full, len(v.CPU))
	}

	resp, err = http.Get(ts.URL + "/api/node?name=node-9")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `no member "node-9"`) {
		t.Errorf("GET /api/node for an unknown node: %s %q", resp.Status, body)
	}
}

// TestSnapshotIsLean: the roll sent every second carries the table's
// figures, the master's build and start, and no per-node history.
func TestSnapshotIsLean(t *testing.T) {
	r := newRoll()
	r.emit(rpcdef.Event{Kind: rpcdef.EventJoined, Node: "node-1", Incarnation: 1, At: time.Now()}, rpcdef.StatusAlive)
	r.mu.Lock()
	r.history = map[string][]Sample{"node-1": {{At: time.Now(), Percent: 1}}}
	r.nodes[0].Resources = &rpcdef.Resources{Disks: []rpcdef.DiskUsage{{Mount: "/"}}}
	r.mu.Unlock()
	_, ts := serve(t, r)
	snap, body := snapshotOf(t, ts)
	if !strings.HasPrefix(snap.Build, "muster ") || snap.StartedAt == 0 || snap.StartedAt > snap.Now || snap.Report != 5000 {
		t.Errorf("build %q, started %d, now %d, report %dms", snap.Build, snap.StartedAt, snap.Now, snap.Report)
	}
	for _, k := range []string{`"cpu":`, `"disks"`} {
		if strings.Contains(string(body), k) {
			t.Errorf("the snapshot has %s: per-node history belongs in api/node\n%s", k, body)
		}
	}
}

// TestFirstFrameNoStaleLease: a page opened while the registry's list is
// old is told the registry is being asked, not shown the old lease; the
// next snapshot has the fresh one.
func TestFirstFrameNoStaleLease(t *testing.T) {
	r := newRoll()
	r.services = []rpcdef.Entry{{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: "ClusterService", Instance: "lab"}, Addr: "127.0.0.1:1"},
		Owner: "spiffe://lab/master/m1", State: "live", TTL: 3 * time.Second, Remaining: 2900 * time.Millisecond}}
	d, ts := serve(t, r)
	// What an earlier page left: a list read a minute ago, its lease long gone.
	old := time.Now().Add(-time.Minute).UnixMilli()
	d.mu.Lock()
	d.services = servicesView{At: old, ListedAt: old, List: []serviceView{{Name: "ClusterService", Instance: "lab", State: "live", Remaining: 2900}}}
	d.mu.Unlock()

	opened := time.Now().UnixMilli()
	s := stream(t, ts)
	var snap snapshotView
	s.nextOf("snapshot", &snap)
	if snap.Services.At != 0 || len(snap.Services.List) != 0 {
		t.Fatalf("the first frame shows a list from %v ago: %+v", time.Duration(snap.Now-snap.Services.At)*time.Millisecond, snap.Services)
	}
	deadline := time.Now().Add(10 * time.Second)
	for snap.Services.At == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no snapshot with the registry's fresh list")
		}
		s.nextOf("snapshot", &snap)
	}
	if snap.Services.At < opened || len(snap.Services.List) != 1 || snap.Services.List[0].Remaining != 2900 || snap.Services.Error != "" {
		t.Errorf("the next list: %+v (page opened at %d)", snap.Services, opened)
	}
}

func snapshotOf(t *testing.T, ts *httptest.Server) (snapshotView, string) {
	t.Helper()
	resp, err := http.Get(ts.URL + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var snap snapshotView
	if err := json.Unmarshal(body, &snap); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return snap, string(body)
}

// TestGroupFrame: every snapshot says who the masters are, who leads in
// which term, and, from the leader, which follower does not answer.
func TestGroupFrame(t *testing.T) {
	failing := time.Now().Add(-3 * time.Second).Truncate(time.Millisecond)
	r := newRoll()
	r.group = Group{Self: "m1", State: "leader", Term: 1<<60 + 3, Leader: "m1", Servers: []Master{
		{Name: "m1", Addr: "127.0.0.1:7001", RaftAddr: "127.0.0.1:7101", Voter: true},
		{Name: "m2", Addr: "127.0.0.1:7002", RaftAddr: "127.0.0.1:7102", Voter: true, FailingSince: failing},
		{Name: "m3", RaftAddr: "127.0.0.1:7103"},
	}}
	_, ts := serve(t, r)
	snap, _ := snapshotOf(t, ts)
	g := snap.Group
	want := groupView{Self: "m1", State: "leader", Term: "1152921504606846979", Leader: "m1", LeaderAddr: "127.0.0.1:7001", Servers: []masterView{
		{Name: "m1", Addr: "127.0.0.1:7001", RaftAddr: "127.0.0.1:7101", Voter: true, Leader: true, Self: true},
		{Name: "m2", Addr: "127.0.0.1:7002", RaftAddr: "127.0.0.1:7102", Voter: true, FailingSince: failing.UnixMilli()},
		{Name: "m3", RaftAddr: "127.0.0.1:7103"},
	}}
	if g.Self != want.Self || g.State != want.State || g.Term != want.Term || g.Leader != want.Leader ||
		g.LeaderAddr != want.LeaderAddr || g.LastContact != 0 || !slices.Equal(g.Servers, want.Servers) {
		t.Errorf("group\n got %+v\nwant %+v", g, want)
	}

	// During an election: no leader, nobody marked.
	r.mu.Lock()
	r.group = Group{Self: "m1", State: "candidate", Term: 9, Servers: r.group.Servers}
	r.mu.Unlock()
	snap, _ = snapshotOf(t, ts)
	if snap.Group.Leader != "" || snap.Group.LeaderAddr != "" || slices.ContainsFunc(snap.Group.Servers, func(m masterView) bool { return m.Leader }) {
		t.Errorf("a candidate's group: %+v", snap.Group)
	}
}

// TestFollower: a follower's roll is the replicated one, without resources
// or heartbeat times; the snapshot, the stream and a node's detail still
// work, and say nothing they do not know.
func TestFollower(t *testing.T) {
	r := newRoll()
	r.emit(rpcdef.Event{Kind: rpcdef.EventJoined, Node: "node-1", Incarnation: 5, At: time.Now()}, rpcdef.StatusAlive)
	r.emit(rpcdef.Event{Kind: rpcdef.EventDead, Node: "node-2", Incarnation: 6, At: time.Now()}, rpcdef.StatusDead)
	contact := time.Now().Add(-200 * time.Millisecond).Truncate(time.Millisecond)
	r.mu.Lock()
	for i := range r.nodes {
		r.nodes[i].StatusSince = time.Now()
		r.nodes[i].JoinedAt = time.Now().Add(-time.Hour)
	}
	r.group = Group{Self: "m2", State: "follower", Term: 4, Leader: "m1", LastContact: contact, Servers: []Master{
		{Name: "m1", Addr: "127.0.0.1:7001", RaftAddr: "127.0.0.1:7101", Voter: true},
		{Name: "m2", Addr: "127.0.0.1:7002", RaftAddr: "127.0.0.1:7102", Voter: true},
	}}
	r.mu.Unlock()
	_, ts := serve(t, r)

	snap, body := snapshotOf(t, ts)
	if g := snap.Group; g.State != "follower" || g.Leader != "m1" || g.LeaderAddr != "127.0.0.1:7001" || g.LastContact != contact.UnixMilli() ||
		len(g.Servers) != 2 || !g.Servers[0].Leader || g.Servers[0].Self || !g.Servers[1].Self || g.Servers[1].Leader {
		t.Errorf("a follower's group: %+v", g)
	}
	if len(snap.Nodes) != 2 {
		t.Fatalf("a follower's roll: %+v", snap.Nodes)
	}
	for _, n := range snap.Nodes {
		if n.Report != nil || n.LastHeartbeat != 0 || n.StatusSince == 0 {
			t.Errorf("a follower's row %+v", n)
		}
	}
	if strings.Contains(body, `"servers":null`) {
		t.Errorf("snapshot %s", body)
	}

	// The stream starts with the same frame.
	s := stream(t, ts)
	var first snapshotView
	s.nextOf("snapshot", &first)
	s.close()
	if first.Group.State != "follower" || first.Group.Leader != "m1" || len(first.Nodes) != 2 {
		t.Errorf("the stream's first frame on a follower: %+v", first)
	}

	// A node's detail: no figures, no history, an empty CPU list (not null).
	resp, err := http.Get(ts.URL + "/api/node?name=node-1")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/node on a follower: %s %s", resp.Status, data)
	}
	var d detailView
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Report != nil || d.Full != nil || d.LastHeartbeat != 0 || d.JoinedAt == 0 || !strings.Contains(string(data), `"cpu":[]`) {
		t.Errorf("a follower's detail: %s", data)
	}
}

// TestPageMasters: the page has the Masters section and says, on a
// follower, which master leads and what the roll shown is.
func TestPageMasters(t *testing.T) {
	html, _ := static.ReadFile("static/index.html")
	js, _ := static.ReadFile("static/app.js")
	for _, want := range []string{`id="masters"`, `id="follower"`, `id="masters-term"`} {
		if !strings.Contains(string(html), want) {
			t.Errorf("index.html has no %s", want)
		}
	}
	for _, want := range []string{"renderMasters(snap.group", "the roll shown is the replicated one, without resource figures", "this master is a ${g.state}; the leader is"} {
		if !strings.Contains(string(js), want) {
			t.Errorf("app.js has no %q", want)
		}
	}
}

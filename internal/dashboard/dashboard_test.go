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

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/rpcdef"
)

// roll is a fake Source: a roll and its events, changed by the test.
type roll struct {
	mu      sync.Mutex
	nodes   []Node
	events  []rpcdef.Event
	changed chan struct{}
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
	return nil, errors.New("no registry in this test")
}

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func serve(t *testing.T, r *roll) (*Dashboard, *httptest.Server) {
	t.Helper()
	d := New(r, Info{Cluster: "lab", Master: "spiffe://lab/master/m1", HeartbeatInterval: time.Second}, quiet())
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
	t  *testing.T
	sc *bufio.Scanner
}

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

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	s := &sse{t: t, sc: bufio.NewScanner(resp.Body)}

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

// Package dashboard is masterd's read-only web page: one row per node with
// its status, address, incarnation, CPU and memory, a sparkline of its recent
// CPU figures and the time since its last heartbeat; the event log; and the
// registry's services. The page follows the master live through Server-Sent
// Events. Its files are embedded in the binary: plain HTML, CSS and an ES
// module, with no build step and nothing fetched from elsewhere.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/rpcdef"
)

//go:embed static
var static embed.FS

const (
	// snapshotEvery is how often open pages get the whole roll again, for
	// the resource figures and heartbeat times that events do not carry.
	snapshotEvery = time.Second
	// eventBatch is how long after an event the roll is sent again, so that
	// a burst of events costs one snapshot.
	eventBatch = 50 * time.Millisecond
	// servicesEvery is how often the registry is asked for its services
	// while a page is open.
	servicesEvery = 5 * time.Second
	// maxClients bounds the event streams open at once; each is a goroutine
	// waiting on the roll.
	maxClients = 16
	// logLength is how many past events a page starts with.
	logLength = 200
	// writeTimeout bounds each write to a page; one that does not read is
	// dropped.
	writeTimeout = 10 * time.Second
)

// Node is a member with its recent CPU figures.
type Node struct {
	rpcdef.Member
	CPU []Sample // oldest first
}

// Sample is one CPU figure.
type Sample struct {
	At      time.Time
	Percent float64
}

// Source is what the page shows, as the master knows it.
type Source interface {
	// Nodes is the roll, sorted by name, and the event version it is at.
	Nodes() ([]Node, uint64)
	// Recent returns the last n events, oldest first, and the version they
	// lead up to.
	Recent(n int) ([]rpcdef.Event, uint64)
	// Since fills reply with the events after version after and returns
	// true, or returns false and a channel closed at the next event
	// (Membership.Since).
	Since(after uint64, reply *rpcdef.WatchReply) (bool, <-chan struct{})
	// Services lists the registry's entries.
	Services(ctx context.Context) ([]rpcdef.Entry, error)
}

// Info is what the page says about the master itself.
type Info struct {
	Cluster           string
	Master            string // its identity
	HeartbeatInterval time.Duration
}

// Dashboard serves the page and its event stream.
type Dashboard struct {
	src      Source
	info     Info
	log      logrus.FieldLogger
	clients  chan struct{} // one slot per open event stream
	watching atomic.Int32  // open event streams

	mu       sync.Mutex
	frame    []byte        // the latest snapshot, as an SSE message
	frameAt  time.Time     // when it was made
	fresh    chan struct{} // closed and replaced at every new frame
	services servicesView
}

// New makes a dashboard of src. Run keeps it up to date.
func New(src Source, info Info, log logrus.FieldLogger) *Dashboard {
	return &Dashboard{src: src, info: info, log: log, clients: make(chan struct{}, maxClients), fresh: make(chan struct{})}
}

// Handler serves the page at /, its files, the event stream at /events and
// the current snapshot as JSON at /api/snapshot.
func (d *Dashboard) Handler() http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(files))
	mux.HandleFunc("GET /events", d.stream)
	mux.HandleFunc("GET /api/snapshot", d.snapshotJSON)
	return secure(mux)
}

// secure adds the headers a read-only page needs: nothing but its own files
// may run, and it may not be framed.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// Run keeps the snapshot current while a page is open: at every event
// (batched), every second, and the registry's services every 5 seconds. It
// returns when ctx ends.
func (d *Dashboard) Run(ctx context.Context) error {
	go d.servicesLoop(ctx)
	tick := time.NewTicker(snapshotEvery)
	defer tick.Stop()
	_, after := d.src.Recent(0)
	var soon <-chan time.Time
	for {
		var reply rpcdef.WatchReply
		ok, changed := d.src.Since(after, &reply)
		if ok {
			after = reply.Version
			if soon == nil && d.watching.Load() > 0 {
				soon = time.After(eventBatch)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-soon:
			soon = nil
			d.refresh()
		case <-tick.C:
			if d.watching.Load() > 0 {
				d.refresh()
			}
		}
	}
}

func (d *Dashboard) servicesLoop(ctx context.Context) {
	tick := time.NewTicker(snapshotEvery)
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if d.watching.Load() == 0 || time.Since(last) < servicesEvery {
			continue
		}
		last = time.Now()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		entries, err := d.src.Services(cctx)
		cancel()
		v := servicesView{At: last.UnixMilli()}
		if err != nil {
			v.Error = err.Error()
			d.mu.Lock()
			v.List = d.services.List // keep showing the last list, marked with the error
			d.mu.Unlock()
		} else {
			v.List = make([]serviceView, 0, len(entries))
			for _, e := range entries {
				v.List = append(v.List, serviceView{
					Name: e.Name, Instance: e.Instance, Version: e.Version, Addr: e.Addr, Owner: e.Owner,
					State: e.State, TTL: e.TTL.Milliseconds(), Remaining: e.Remaining.Milliseconds(),
				})
			}
		}
		d.mu.Lock()
		d.services = v
		d.mu.Unlock()
	}
}

// current returns the latest snapshot frame, made now if there is none or
// it is stale, and the channel closed when the next one is ready.
func (d *Dashboard) current() ([]byte, <-chan struct{}) {
	d.mu.Lock()
	stale := d.frame == nil || time.Since(d.frameAt) > 2*snapshotEvery
	d.mu.Unlock()
	if stale {
		d.refresh()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.frame, d.fresh
}

// refresh makes a new snapshot frame and wakes every stream.
func (d *Dashboard) refresh() {
	data, err := json.Marshal(d.snapshot())
	if err != nil {
		d.log.WithError(err).Error("encode the dashboard's snapshot")
		return
	}
	frame := message("snapshot", data)
	d.mu.Lock()
	d.frame, d.frameAt = frame, time.Now()
	close(d.fresh)
	d.fresh = make(chan struct{})
	d.mu.Unlock()
}

func (d *Dashboard) snapshot() snapshotView {
	nodes, version := d.src.Nodes()
	d.mu.Lock()
	services := d.services
	d.mu.Unlock()
	v := snapshotView{
		Now: time.Now().UnixMilli(), Version: version, Cluster: d.info.Cluster, Master: d.info.Master,
		Heartbeat: d.info.HeartbeatInterval.Milliseconds(),
		Nodes:     make([]nodeView, 0, len(nodes)), Services: services,
	}
	for _, n := range nodes {
		nv := nodeView{
			Name: n.Name, Addr: n.Addr, Status: string(n.Status), Incarnation: strconv.FormatUint(n.Incarnation, 10),
			StatusSince: millis(n.StatusSince), LastHeartbeat: millis(n.LastHeartbeat), CPU: make([][2]float64, 0, len(n.CPU)),
		}
		if r := n.Resources; r != nil {
			nv.Report = &reportView{
				SampledAt: millis(r.SampledAt), CPUCount: r.CPUCount, CPUPercent: r.CPUPercent,
				MemTotal: r.MemTotal, MemAvailable: r.MemAvailable, MemUsedPercent: r.MemUsedPercent,
				Load1: r.Load1, Load5: r.Load5, Load15: r.Load15,
			}
		}
		for _, s := range n.CPU {
			nv.CPU = append(nv.CPU, [2]float64{float64(s.At.UnixMilli()), s.Percent})
		}
		v.Nodes = append(v.Nodes, nv)
	}
	return v
}

// stream is the page's event stream: a snapshot and the recent events at
// once, then every new event as the roll's long poll returns it, and a new
// snapshot every second.
func (d *Dashboard) stream(w http.ResponseWriter, r *http.Request) {
	select {
	case d.clients <- struct{}{}:
	default:
		http.Error(w, "too many dashboards are open on this master: close one and reload", http.StatusServiceUnavailable)
		return
	}
	defer func() { <-d.clients }()
	d.watching.Add(1)
	defer d.watching.Add(-1)

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	send := func(b []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// A page that lost the stream (the master restarted) reconnects after 1s.
	if !send([]byte("retry: 1000\n\n")) {
		return
	}
	events, after := d.src.Recent(logLength)
	frame, fresh := d.current()
	if !send(frame) || !send(eventsMessage(events, true, after)) {
		return
	}
	for {
		var reply rpcdef.WatchReply
		if ok, changed := d.src.Since(after, &reply); !ok {
			select {
			case <-r.Context().Done():
				return
			case <-changed:
				continue
			case <-fresh:
				frame, fresh = d.current()
				if !send(frame) {
					return
				}
				continue
			}
		}
		var msg []byte
		if reply.Reset { // fell behind what the master keeps: start the log again
			events, after = d.src.Recent(logLength)
			msg = eventsMessage(events, true, after)
		} else {
			after = reply.Version
			msg = eventsMessage(reply.Events, false, after)
		}
		if !send(msg) {
			return
		}
	}
}

func (d *Dashboard) snapshotJSON(w http.ResponseWriter, _ *http.Request) {
	data, err := json.Marshal(d.snapshot())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
}

// message is one Server-Sent Event; data is JSON, so it has no newline.
func message(event string, data []byte) []byte {
	b := make([]byte, 0, len(event)+len(data)+16)
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

func eventsMessage(events []rpcdef.Event, reset bool, version uint64) []byte {
	v := eventsView{Reset: reset, Version: version, Events: make([]eventView, 0, len(events))}
	for _, e := range events {
		v.Events = append(v.Events, eventView{
			Version: e.Version, Kind: string(e.Kind), Node: e.Node, Incarnation: strconv.FormatUint(e.Incarnation, 10),
			Addr: e.Addr, Status: string(e.Status), At: millis(e.At), Reason: e.Reason,
		})
	}
	data, _ := json.Marshal(v) // plain strings and numbers: it cannot fail
	return message("events", data)
}

// millis is t as Unix milliseconds, or 0 for the zero time.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// The page's JSON. Times are Unix milliseconds (0: never); incarnations are
// strings, since they are larger than a JavaScript number holds exactly.
type snapshotView struct {
	Now       int64        `json:"now"`     // the master's clock, to judge ages by
	Version   uint64       `json:"version"` // the roll's event version: older than an event seen, its statuses are stale
	Cluster   string       `json:"cluster"`
	Master    string       `json:"master"`
	Heartbeat int64        `json:"heartbeatMs"`
	Nodes     []nodeView   `json:"nodes"`
	Services  servicesView `json:"services"`
}

type nodeView struct {
	Name          string       `json:"name"`
	Addr          string       `json:"addr"`
	Status        string       `json:"status"`
	Incarnation   string       `json:"incarnation"`
	StatusSince   int64        `json:"statusSince"`
	LastHeartbeat int64        `json:"lastHeartbeat"`
	Report        *reportView  `json:"report"` // null before the first report
	CPU           [][2]float64 `json:"cpu"`    // [time, percent], oldest first
}

type reportView struct {
	SampledAt      int64   `json:"sampledAt"`
	CPUCount       int     `json:"cpuCount"`
	CPUPercent     float64 `json:"cpuPercent"`
	MemTotal       uint64  `json:"memTotal"`
	MemAvailable   uint64  `json:"memAvailable"`
	MemUsedPercent float64 `json:"memUsedPercent"`
	Load1          float64 `json:"load1"`
	Load5          float64 `json:"load5"`
	Load15         float64 `json:"load15"`
}

type servicesView struct {
	At    int64         `json:"at"` // when the registry was last asked; 0: not yet
	Error string        `json:"error,omitempty"`
	List  []serviceView `json:"list"`
}

type serviceView struct {
	Name      string `json:"name"`
	Instance  string `json:"instance"`
	Version   int    `json:"version"`
	Addr      string `json:"addr"`
	Owner     string `json:"owner"`
	State     string `json:"state"`
	TTL       int64  `json:"ttlMs"`
	Remaining int64  `json:"remainingMs"`
}

type eventsView struct {
	Reset   bool        `json:"reset"` // replace the log rather than add to it
	Version uint64      `json:"version"`
	Events  []eventView `json:"events"`
}

type eventView struct {
	Version     uint64 `json:"version"`
	Kind        string `json:"kind"`
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
	Addr        string `json:"addr"`
	Status      string `json:"status"`
	At          int64  `json:"at"`
	Reason      string `json:"reason"`
}

// Package dashboard is masterd's read-only web page: a dense table of the
// roll, built for 10,000 nodes (problem nodes first, filter by name and
// status, sort by name, status, CPU, memory or age, a capped number of rows
// drawn), a detail panel for one node (disks, network, uptime, certificate
// expiry, its CPU figures), the event log, the registry's services, the
// masters' raft group (who leads, in which term), and the master's build and
// uptime. On a follower the roll is the replicated one, without resource
// figures or heartbeat times, and the page says so and who the leader is. The page follows the master live through
// Server-Sent Events. Its files are embedded in the binary: plain HTML, CSS
// and an ES module, with no build step and nothing fetched from elsewhere.
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

	"github.com/muster-lab/muster/internal/buildinfo"
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
	// while a page is open. A page that opens on an older list waits for a
	// new one (servicesWait at most), so its first frame shows no stale lease.
	servicesEvery = 5 * time.Second
	servicesWait  = 2 * time.Second
	// maxClients bounds the event streams open at once; each is a goroutine
	// waiting on the roll.
	maxClients = 16
	// logLength is how many past events a page starts with.
	logLength = 200
	// writeTimeout bounds each write to a page; one that does not read is
	// dropped.
	writeTimeout = 10 * time.Second
)

// Node is a member of the roll.
type Node struct {
	rpcdef.Member
}

// Sample is one CPU figure.
type Sample struct {
	At      time.Time
	Percent float64
}

// Source is what the page shows, as the master knows it.
type Source interface {
	// Nodes is the roll, sorted by name, and the event version it is at.
	// It is asked every second while a page is open: it must be cheap.
	Nodes() ([]Node, uint64)
	// History is one node's recent CPU figures, oldest first, for its
	// detail panel.
	History(node string) []Sample
	// Recent returns the last n events, oldest first, and the version they
	// lead up to.
	Recent(n int) ([]rpcdef.Event, uint64)
	// Since fills reply with the events after version after and returns
	// true, or returns false and a channel closed at the next event
	// (Membership.Since).
	Since(after uint64, reply *rpcdef.WatchReply) (bool, <-chan struct{})
	// Services lists the registry's entries.
	Services(ctx context.Context) ([]rpcdef.Entry, error)
	// Group is the raft group of masters as this master knows it. It is
	// asked with every snapshot: it must be cheap and never block on raft.
	Group() Group
}

// Group is the masters' raft group, as the master serving the page knows it.
type Group struct {
	Self        string // this master's name
	State       string // "leader", "follower", "candidate" or "shutdown"
	Term        uint64
	Leader      string    // the leader's name; "" while none is known
	LastContact time.Time // a follower's last word from the leader; zero on the leader
	Servers     []Master
}

// Master is one server of the group.
type Master struct {
	Name     string
	Addr     string // its ClusterService address; "" until it has announced one
	RaftAddr string
	Voter    bool
	// FailingSince is known on the leader only: when a follower that does
	// not answer raft's heartbeats last answered one. Zero if it answers.
	FailingSince time.Time
}

// Info is what the page says about the master itself.
type Info struct {
	Cluster           string
	Master            string // its identity
	HeartbeatInterval time.Duration
	// ReportInterval is how often slaves report; a report older than two
	// of them is shown as stale. Zero means conf's default, 5s.
	ReportInterval time.Duration
}

// defaultReportInterval is conf's default report_interval.
const defaultReportInterval = 5 * time.Second

// Dashboard serves the page and its event stream.
type Dashboard struct {
	src      Source
	info     Info
	build    string    // buildinfo's line, as --version prints it
	started  time.Time // about when the master started: when it made its dashboard
	log      logrus.FieldLogger
	clients  chan struct{} // one slot per open event stream
	watching atomic.Int32  // open event streams

	mu       sync.Mutex
	frame    []byte        // the latest snapshot, as an SSE message
	frameAt  time.Time     // when it was made
	fresh    chan struct{} // closed and replaced at every new frame
	services servicesView

	fetching sync.Mutex // one registry List at a time
}

// New makes a dashboard of src. Run keeps it up to date.
func New(src Source, info Info, log logrus.FieldLogger) *Dashboard {
	if info.ReportInterval <= 0 {
		info.ReportInterval = defaultReportInterval
	}
	return &Dashboard{src: src, info: info, build: buildinfo.Read().String(), started: time.Now(), log: log,
		clients: make(chan struct{}, maxClients), fresh: make(chan struct{})}
}

// Handler serves the page at /, its files, the event stream at /events, the
// current snapshot as JSON at /api/snapshot and one node's detail at
// /api/node?name=NODE.
func (d *Dashboard) Handler() http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(files))
	mux.HandleFunc("GET /events", d.stream)
	mux.HandleFunc("GET /api/snapshot", d.snapshotJSON)
	mux.HandleFunc("GET /api/node", d.nodeJSON)
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
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if d.watching.Load() > 0 {
			d.fetchServices(ctx, servicesEvery)
		}
	}
}

// servicesStale reports whether the registry's list is older than the
// loop keeps it.
func (d *Dashboard) servicesStale() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.services.At == 0 || time.Since(time.UnixMilli(d.services.At)) >= servicesEvery
}

// loadingFrame is a snapshot frame with the registry's list not yet asked.
func (d *Dashboard) loadingFrame() []byte {
	v := d.snapshot()
	v.Services = servicesView{}
	data, err := json.Marshal(v)
	if err != nil {
		d.log.WithError(err).Error("encode the dashboard's snapshot")
		return nil
	}
	return message("snapshot", data)
}

// fetchServices asks the registry for its services unless the list is
// younger than maxAge, and reports whether it asked. On an error the last
// list is kept, marked with the error and the time it was asked.
func (d *Dashboard) fetchServices(ctx context.Context, maxAge time.Duration) bool {
	d.fetching.Lock()
	defer d.fetching.Unlock()
	d.mu.Lock()
	at := d.services.At
	d.mu.Unlock()
	if at != 0 && time.Since(time.UnixMilli(at)) < maxAge {
		return false
	}
	asked := time.Now()
	cctx, cancel := context.WithTimeout(ctx, servicesWait)
	entries, err := d.src.Services(cctx)
	cancel()
	// At is when the answer came: Remaining counts from then.
	v := servicesView{At: time.Now().UnixMilli(), AskedAt: asked.UnixMilli()}
	if err != nil {
		v.Error = err.Error()
		d.mu.Lock()
		v.List = d.services.List // keep showing the last list, marked with the error
		v.ListedAt = d.services.ListedAt
		d.mu.Unlock()
	} else {
		v.ListedAt = v.At
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
	return true
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

// snapshot is the whole roll, lean: what the table shows of each node.
// The detail panel asks for the rest of one node (nodeJSON).
func (d *Dashboard) snapshot() snapshotView {
	nodes, version := d.src.Nodes()
	d.mu.Lock()
	services := d.services
	d.mu.Unlock()
	v := snapshotView{
		Now: time.Now().UnixMilli(), Version: version, Cluster: d.info.Cluster, Master: d.info.Master,
		Build: d.build, StartedAt: d.started.UnixMilli(),
		Heartbeat: d.info.HeartbeatInterval.Milliseconds(), Report: d.info.ReportInterval.Milliseconds(),
		Nodes: make([]nodeView, 0, len(nodes)), Services: services, Group: groupOf(d.src.Group()),
	}
	for _, n := range nodes {
		v.Nodes = append(v.Nodes, row(n.Member))
	}
	return v
}

func groupOf(g Group) groupView {
	v := groupView{Self: g.Self, State: g.State, Term: strconv.FormatUint(g.Term, 10), Leader: g.Leader,
		LastContact: millis(g.LastContact), Servers: make([]masterView, 0, len(g.Servers))}
	for _, m := range g.Servers {
		v.Servers = append(v.Servers, masterView{Name: m.Name, Addr: m.Addr, RaftAddr: m.RaftAddr, Voter: m.Voter,
			Leader: m.Name == g.Leader && g.Leader != "", Self: m.Name == g.Self, FailingSince: millis(m.FailingSince)})
		if m.Name == g.Leader {
			v.LeaderAddr = m.Addr
		}
	}
	return v
}

func row(m rpcdef.Member) nodeView {
	nv := nodeView{
		Name: m.Name, Addr: m.Addr, Status: string(m.Status), Incarnation: strconv.FormatUint(m.Incarnation, 10),
		StatusSince: millis(m.StatusSince), LastHeartbeat: millis(m.LastHeartbeat),
	}
	if r := m.Resources; r != nil {
		nv.Report = &reportView{
			SampledAt: millis(r.SampledAt), CPUCount: r.CPUCount, CPUPercent: r.CPUPercent,
			MemUsedPercent: r.MemUsedPercent, Load1: r.Load1,
		}
	}
	return nv
}

// detail is everything the master knows of one node.
func (d *Dashboard) detail(name string) (detailView, bool) {
	nodes, _ := d.src.Nodes()
	for _, n := range nodes {
		if n.Name != name {
			continue
		}
		v := detailView{
			nodeView: row(n.Member), Now: time.Now().UnixMilli(), ReportMs: d.info.ReportInterval.Milliseconds(),
			JoinedAt: millis(n.JoinedAt), CertNotAfter: millis(n.CertNotAfter), CPU: [][2]float64{},
		}
		if r := n.Resources; r != nil {
			f := &fullReport{
				CPUModel: r.CPUModel, MemTotal: r.MemTotal, MemAvailable: r.MemAvailable, Load5: r.Load5, Load15: r.Load15,
				SwapTotal: r.SwapTotal, SwapFree: r.SwapFree, NetRx: r.NetRxBytesPerSec, NetTx: r.NetTxBytesPerSec,
				Uptime: r.Uptime.Milliseconds(), Procs: r.Procs, Disks: make([]diskView, 0, len(r.Disks)),
			}
			for _, dk := range r.Disks {
				f.Disks = append(f.Disks, diskView{Mount: dk.Mount, Total: dk.Total, Free: dk.Free, UsedPercent: dk.UsedPercent})
			}
			v.Full = f
		}
		for _, s := range d.src.History(name) {
			v.CPU = append(v.CPU, [2]float64{float64(s.At.UnixMilli()), s.Percent})
		}
		return v, true
	}
	return detailView{}, false
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
	// No page was open, so the registry's list may be minutes old: the first
	// frame says the registry is being asked rather than show an old lease,
	// and the answer comes in the next frame.
	var frame []byte
	var fresh <-chan struct{}
	if d.servicesStale() {
		d.mu.Lock()
		fresh = d.fresh
		d.mu.Unlock()
		frame = d.loadingFrame()
		// Not cancelled with this page: others may wait on the answer too
		// (fetchServices bounds it to servicesWait).
		ask := context.WithoutCancel(r.Context())
		go func() {
			if d.fetchServices(ask, servicesEvery) {
				d.refresh()
			}
		}()
	} else {
		frame, fresh = d.current()
	}
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

func (d *Dashboard) nodeJSON(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	v, ok := d.detail(name)
	if !ok {
		http.Error(w, "no member "+strconv.Quote(name)+" in the roll: it may have been forgotten; pick another node", http.StatusNotFound)
		return
	}
	data, err := json.Marshal(v)
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
	Build     string       `json:"build"`     // "muster devel (abc123def456, go1.26.8)"
	StartedAt int64        `json:"startedAt"` // the master's start, for its uptime
	Heartbeat int64        `json:"heartbeatMs"`
	Report    int64        `json:"reportMs"` // report_interval: a report older than two is stale
	Nodes     []nodeView   `json:"nodes"`
	Services  servicesView `json:"services"`
	Group     groupView    `json:"group"`
}

// groupView is the masters' raft group. On a follower the roll is the
// replicated one: no resource figures and no heartbeat times.
type groupView struct {
	Self        string       `json:"self"`
	State       string       `json:"state"`
	Term        string       `json:"term"` // a string, as incarnations are
	Leader      string       `json:"leader"`
	LeaderAddr  string       `json:"leaderAddr"` // its ClusterService address, if announced
	LastContact int64        `json:"lastContact"`
	Servers     []masterView `json:"servers"`
}

type masterView struct {
	Name         string `json:"name"`
	Addr         string `json:"addr"`
	RaftAddr     string `json:"raftAddr"`
	Voter        bool   `json:"voter"`
	Leader       bool   `json:"leader"`
	Self         bool   `json:"self"`
	FailingSince int64  `json:"failingSince"` // on the leader: 0 if it answers
}

// nodeView is one row of the table; it is kept small, since the whole roll
// is sent every second.
type nodeView struct {
	Name          string      `json:"name"`
	Addr          string      `json:"addr"`
	Status        string      `json:"status"`
	Incarnation   string      `json:"incarnation"`
	StatusSince   int64       `json:"statusSince"`
	LastHeartbeat int64       `json:"lastHeartbeat"`
	Report        *reportView `json:"report"` // null before the first report
}

type reportView struct {
	SampledAt      int64   `json:"sampledAt"`
	CPUCount       int     `json:"cpuCount"`
	CPUPercent     float64 `json:"cpuPercent"`
	MemUsedPercent float64 `json:"memUsedPercent"`
	Load1          float64 `json:"load1"`
}

// detailView is one node in full, for the detail panel.
type detailView struct {
	nodeView
	Now          int64        `json:"now"`
	ReportMs     int64        `json:"reportMs"`
	JoinedAt     int64        `json:"joinedAt"`
	CertNotAfter int64        `json:"certNotAfter"` // 0: not known (a member restored from the roster)
	Full         *fullReport  `json:"full"`         // the rest of the last report; null before the first
	CPU          [][2]float64 `json:"cpu"`          // [time, percent], oldest first
}

type fullReport struct {
	CPUModel     string     `json:"cpuModel"`
	MemTotal     uint64     `json:"memTotal"`
	MemAvailable uint64     `json:"memAvailable"`
	Load5        float64    `json:"load5"`
	Load15       float64    `json:"load15"`
	SwapTotal    uint64     `json:"swapTotal"`
	SwapFree     uint64     `json:"swapFree"`
	NetRx        float64    `json:"netRxBytesPerSec"`
	NetTx        float64    `json:"netTxBytesPerSec"`
	Uptime       int64      `json:"uptimeMs"`
	Procs        int        `json:"procs"`
	Disks        []diskView `json:"disks"`
}

type diskView struct {
	Mount       string  `json:"mount"`
	Total       uint64  `json:"total"`
	Free        uint64  `json:"free"`
	UsedPercent float64 `json:"usedPercent"`
}

type servicesView struct {
	At       int64         `json:"at"`       // when the registry last answered or failed; 0: not asked yet
	AskedAt  int64         `json:"askedAt"`  // when that question was sent
	ListedAt int64         `json:"listedAt"` // when List was read; older than At after an error
	Error    string        `json:"error,omitempty"`
	List     []serviceView `json:"list"`
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

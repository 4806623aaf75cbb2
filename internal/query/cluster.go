package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// clusterAPI is what the cluster commands ask of the master;
// *rpcdef.ClusterClient is the real one.
type clusterAPI interface {
	Members(ctx context.Context, node string) (rpcdef.MembersReply, error)
	Watch(ctx context.Context, after uint64, wait time.Duration) (rpcdef.WatchReply, error)
	Close() error
}

// master is a connection to the master, and where the registry said it is.
type master struct {
	clusterAPI
	entry rpcdef.Entry
	// namedBy is the address of the master whose NotLeader answer named
	// this one the leader; "" when the registry or --master gave it.
	namedBy string
}

// dialMaster finds the master of --cluster in the registry, or takes
// --master, and makes a client that reaches it over mutual TLS, accepting
// only a master certificate. The connection itself is made at the first call.
func (q *query) dialMaster(ctx context.Context) (*master, error) {
	if _, err := q.store(q.cmd); err != nil {
		return nil, err
	}
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: q.o.cluster}
	if q.o.master != "" {
		return q.connectAt(ctx, rpcdef.Entry{Service: rpcdef.Service{ServiceKey: key, Addr: q.o.master}})
	}
	e, err := q.lookupEntry(ctx, key)
	if errors.Is(err, rpcdef.ErrNotFound) {
		return nil, fmt.Errorf("no master of cluster %s in the registry: %s is not registered (is masterd running? --cluster names another cluster; rpc-query services lists what is registered; --master HOST:PORT skips the registry)", q.o.cluster, key)
	}
	if err != nil {
		return nil, err
	}
	return q.connectAt(ctx, e)
}

// dialEntry makes a client of the master at e.Addr over mutual TLS,
// accepting only a master certificate. It connects at the first call.
func (q *query) dialEntry(_ context.Context, e rpcdef.Entry) (*master, error) {
	st, err := q.store(q.cmd)
	if err != nil {
		return nil, err
	}
	c := rpcdef.NewClusterClient("master at "+e.Addr, rpcdef.DialTLS(e.Addr, st.ClientConfig(pki.ExpectRole(pki.RoleMaster))))
	return &master{clusterAPI: c, entry: e}, nil
}

// errNoLeader is a follower's NotLeader that names no leader.
var errNoLeader = errors.New("no leader is known (an election is under way): retry in a moment")

// atLeader runs call on m, a call only the raft leader serves. If m is a
// follower that names the leader, call runs once more on the leader (one
// hop, not a chase). It returns the master whose answer counts, for the
// caller's messages and to close: m, or the leader.
func (q *query) atLeader(ctx context.Context, m *master, call func(clusterAPI) error) (*master, error) {
	err := call(m.clusterAPI)
	name, addr, ok := rpcdef.LeaderOf(err)
	switch {
	case errors.Is(err, rpcdef.ErrNotLeader) && !ok:
		return m, errNoLeader
	case !ok:
		return m, err
	}
	e := rpcdef.Entry{Service: rpcdef.Service{ServiceKey: m.entry.ServiceKey, Addr: addr}}
	lm, err := q.connectAt(ctx, e)
	if err != nil {
		return m, err
	}
	lm.namedBy = m.entry.Addr
	err = call(lm.clusterAPI)
	if errors.Is(err, rpcdef.ErrNotLeader) {
		err = leaderMovedError(fmt.Sprintf("the master at %s named %s at %s the leader, but it is not the leader either (%v): leadership is changing hands; retry in a moment", m.entry.Addr, name, addr, err))
	}
	return lm, err
}

// leaderMovedError is a leader, named by a follower, that says it is not
// the leader: no second hop is taken.
type leaderMovedError string

func (e leaderMovedError) Error() string { return string(e) }

// explainMaster turns a failed call to the master into what to do about it.
func (q *query) explainMaster(m *master, err error) error {
	addr := m.entry.Addr
	var coded *rpcdef.Error
	switch {
	case errors.As(err, &coded):
		return fmt.Errorf("the master at %s refused: %w", addr, err)
	case errors.Is(err, syscall.ECONNREFUSED) && m.namedBy != "":
		return fmt.Errorf("cannot reach the leader at %s: connection refused (the master at %s named it the leader; rpc-query masters shows the group)", addr, m.namedBy)
	case errors.Is(err, syscall.ECONNREFUSED) && q.o.master != "":
		return fmt.Errorf("cannot reach the master at %s: connection refused (is masterd running there? --master %s skips the registry)", addr, q.o.master)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the master at %s: connection refused (is masterd running? the registry's entry %s is %s; rpc-query services shows it)", addr, m.entry.ServiceKey, dash(m.entry.State))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the master at %s did not answer within %v (is it up and reachable from here? --timeout sets the limit)", addr, q.o.timeout)
	case strings.Contains(err.Error(), "rpc: can't find "):
		return fmt.Errorf("the server at %s is not a master: %w", addr, plainRPC(err))
	default:
		return fmt.Errorf("cannot reach the master at %s: %w", addr, err)
	}
}

// roll asks the master for every member.
func (q *query) roll(ctx context.Context) (rpcdef.MembersReply, error) {
	m, err := q.connect(ctx)
	if err != nil {
		return rpcdef.MembersReply{}, err
	}
	defer m.Close()
	r, err := m.Members(ctx, "")
	if err != nil {
		return rpcdef.MembersReply{}, q.explainMaster(m, err)
	}
	return r, nil
}

func (q *query) members(ctx context.Context) error {
	r, err := q.roll(ctx)
	if err != nil {
		return err
	}
	p := q.printer()
	ms := p.sorted(q.filter(r.Members), q.o.sortBy)
	switch q.o.output {
	case "json":
		return writeJSON(q.out, rollJSON{Cluster: q.o.cluster, Version: r.Version, Members: p.membersJSON(ms)})
	case "name":
		return names(q.out, ms)
	}
	return p.membersTable(q.out, ms, len(r.Members), q.tableOpts())
}

func (q *query) tableOpts() tableOpts {
	return tableOpts{wide: q.o.output == "wide", noHeaders: q.o.noHeaders}
}

// names prints one member's name a line: -o name.
func names(w io.Writer, ms []rpcdef.Member) error {
	for _, m := range ms {
		if _, err := fmt.Fprintln(w, m.Name); err != nil {
			return err
		}
	}
	return nil
}

func (q *query) member(ctx context.Context, name string) error {
	if err := pki.ValidName(name); err != nil {
		return usageError(fmt.Sprintf("members %s: %v", name, err))
	}
	m, err := q.connect(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	r, err := m.Members(ctx, name)
	if errors.Is(err, rpcdef.ErrNotFound) {
		return fmt.Errorf("no member %s in cluster %s (rpc-query members lists them)", name, q.o.cluster)
	}
	if err != nil {
		return q.explainMaster(m, err)
	}
	var found *rpcdef.Member
	for i := range r.Members {
		if r.Members[i].Name == name {
			found = &r.Members[i]
		}
	}
	if found == nil {
		return fmt.Errorf("no member %s in cluster %s (rpc-query members lists them)", name, q.o.cluster)
	}
	p := q.printer()
	switch q.o.output {
	case "json":
		err = writeJSON(q.out, p.memberJSON(*found))
	case "name":
		_, err = fmt.Fprintln(q.out, found.Name)
	default:
		err = p.member(q.out, *found)
	}
	if err != nil {
		return err
	}
	if found.Status != rpcdef.StatusAlive {
		return notAliveError(fmt.Sprintf("%s is %s, not alive", name, dash(string(found.Status))))
	}
	return nil
}

func (q *query) top(ctx context.Context) error {
	r, err := q.roll(ctx)
	if err != nil {
		return err
	}
	p := q.printer()
	ms := p.ranked(q.filter(r.Members), q.o.sortBy)
	switch q.o.output {
	case "json":
		return writeJSON(q.out, p.topJSON(ms))
	case "name":
		return names(q.out, ms)
	}
	return p.top(q.out, ms, q.tableOpts())
}

// admin is what forget and evict ask of the master; *rpcdef.ClusterClient
// has it.
type admin interface {
	Forget(ctx context.Context, node string) error
	Evict(ctx context.Context, node, reason string) error
}

// asAdmin checks that --cert is an admin's before an admin command dials.
func (q *query) asAdmin(cmd string) error {
	st, err := q.store(cmd)
	if err != nil {
		return err
	}
	if id := st.Identity(); id.Role != pki.RoleAdmin {
		return fmt.Errorf("%s needs an admin certificate, and %s is %s's (make one with certgen issue --role admin --name NAME)", cmd, q.o.cert, id)
	}
	return nil
}

// errUnsupported is what a call returns when the client of the master
// lacks the method (a test's fake).
var errUnsupported = errors.New("the client has no such method")

// adminCall runs an admin command's call on the leader, found as atLeader
// finds it. subject is what cmd acts on, for messages; notFound is the
// message for a not-found answer.
func (q *query) adminCall(ctx context.Context, cmd, subject, notFound string, call func(clusterAPI) error) error {
	if q.o.cert != "" {
		if err := q.asAdmin(cmd); err != nil {
			return err
		}
	}
	m, err := q.connect(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	at, err := q.atLeader(ctx, m, call)
	if at != m {
		defer at.Close()
	}
	switch {
	case errors.Is(err, errUnsupported):
		return fmt.Errorf("the client of the master at %s cannot %s", at.entry.Addr, cmd)
	case errors.Is(err, errNoLeader), errors.As(err, new(leaderMovedError)):
		return err
	case errors.Is(err, rpcdef.ErrNotFound):
		return errors.New(notFound)
	case errors.Is(err, rpcdef.ErrPermission):
		return fmt.Errorf("%s %s: the master at %s refused: %w (it takes an admin certificate)", cmd, subject, at.entry.Addr, err)
	case err != nil:
		return q.explainMaster(at, err)
	}
	return nil
}

// memberAdmin runs forget or evict on the leader.
func (q *query) memberAdmin(ctx context.Context, cmd, node string, call func(admin) error) error {
	if err := pki.ValidName(node); err != nil {
		return usageError(fmt.Sprintf("%s %s: %v", cmd, node, err))
	}
	notFound := fmt.Sprintf("no member %s in cluster %s (rpc-query members lists them)", node, q.o.cluster)
	return q.adminCall(ctx, cmd, node, notFound, func(c clusterAPI) error {
		a, ok := c.(admin)
		if !ok {
			return errUnsupported
		}
		return call(a)
	})
}

func (q *query) forget(ctx context.Context, node string) error {
	if err := q.memberAdmin(ctx, "forget", node, func(a admin) error { return a.Forget(ctx, node) }); err != nil {
		return err
	}
	if q.o.output == "json" {
		return writeJSON(q.out, adminJSON{Node: node, Done: "forgotten"})
	}
	_, err := fmt.Fprintf(q.out, "%s forgotten: removed from the roll of cluster %s\n", node, q.o.cluster)
	return err
}

func (q *query) evict(ctx context.Context, node string) error {
	reason := q.o.reason
	if reason == "" {
		reason = "rpc-query evict"
	}
	if err := q.memberAdmin(ctx, "evict", node, func(a admin) error { return a.Evict(ctx, node, reason) }); err != nil {
		return err
	}
	if q.o.output == "json" {
		return writeJSON(q.out, adminJSON{Node: node, Done: "evicted", Reason: reason})
	}
	_, err := fmt.Fprintf(q.out, "%s evicted: declared dead in cluster %s (%s)\n", node, q.o.cluster, reason)
	return err
}

// adminJSON is forget and evict -o json.
type adminJSON struct {
	Node   string `json:"node"`
	Done   string `json:"done"` // "forgotten" or "evicted"
	Reason string `json:"reason,omitempty"`
}

// watch prints the roll's summary, then every event, until ctx ends. Each
// call is bounded by --timeout (a Watch call by its wait plus that); when
// the master is lost it is looked up again in the registry, with backoff.
func (q *query) watch(ctx context.Context) error {
	w := &watcher{q: q, width: len("node-1")}

	callCtx, cancel := context.WithTimeout(ctx, q.o.timeout)
	m, err := q.connect(callCtx)
	if err != nil {
		cancel()
		return err
	}
	r, err := m.Members(callCtx, "")
	cancel()
	if err != nil {
		m.Close()
		if ctx.Err() != nil {
			return nil
		}
		return q.explainMaster(m, err)
	}
	defer func() {
		if m != nil {
			m.Close()
		}
	}()
	if err := w.start(m.entry.Addr, r); err != nil {
		return err
	}

	after := r.Version
	var pause time.Duration // the backoff before the next attempt; 0 when all is well
	lost := false
	for {
		if pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		if m == nil {
			callCtx, cancel := context.WithTimeout(ctx, q.o.timeout)
			m, err = q.connect(callCtx)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				w.cause(err)
				pause = q.nextPause(pause)
				continue
			}
		}

		start := time.Now()
		callCtx, cancel := context.WithTimeout(ctx, q.watchWait+q.o.timeout)
		wr, err := m.Watch(callCtx, after, q.watchWait)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			var coded *rpcdef.Error
			if errors.As(err, &coded) && !errors.Is(err, rpcdef.ErrUnavailable) {
				return q.explainMaster(m, err)
			}
			if !lost {
				lost = true
				if err := w.reconnecting(); err != nil {
					return err
				}
			}
			w.cause(q.explainMaster(m, err))
			m.Close()
			m = nil
			pause = q.nextPause(pause)
			continue
		}
		if lost {
			lost = false
			w.lastCause = ""
			if err := w.reconnected(m.entry.Addr); err != nil {
				return err
			}
		}
		pause = 0

		switch {
		case wr.Reset:
			if err := w.reset(wr.Version, wr.Members); err != nil {
				return err
			}
			after = wr.Version
		case len(wr.Events) > 0:
			for _, ev := range wr.Events {
				if err := w.event(ev); err != nil {
					return err
				}
			}
			after = wr.Events[len(wr.Events)-1].Version
		default:
			after = max(after, wr.Version)
			// A master that answers at once with nothing would have us spin.
			if time.Since(start) < q.backoffMin {
				pause = q.backoffMin
			}
		}
	}
}

// nextPause doubles the backoff, from backoffMin up to backoffMax.
func (q *query) nextPause(d time.Duration) time.Duration {
	if d <= 0 {
		return q.backoffMin
	}
	return min(2*d, q.backoffMax)
}

// watcher prints what watch sees, as text or as one JSON object a line.
type watcher struct {
	q         *query
	width     int    // node names are padded to this
	lastCause string // the last reconnection failure shown, not to repeat it
}

func (w *watcher) fit(name string) {
	w.width = max(w.width, len(name))
}

func (w *watcher) line(v any) error {
	return json.NewEncoder(w.q.out).Encode(v)
}

func (w *watcher) start(addr string, r rpcdef.MembersReply) error {
	for _, m := range r.Members {
		w.fit(m.Name)
	}
	if w.q.o.output == "json" {
		return w.line(watchJSON{Type: "snapshot", Cluster: w.q.o.cluster, Master: addr, Version: r.Version, Members: w.q.printer().membersJSON(byName(r.Members))})
	}
	_, err := fmt.Fprintln(w.q.out, watchStart(w.q.o.cluster, addr, r.Version, r.Members))
	return err
}

func (w *watcher) event(ev rpcdef.Event) error {
	if !w.q.shows(ev) {
		return nil
	}
	w.fit(ev.Node)
	if w.q.o.output == "json" {
		return w.line(eventJSON(ev))
	}
	_, err := fmt.Fprintln(w.q.out, w.q.printer().event(ev, w.width))
	return err
}

func (w *watcher) reset(version uint64, ms []rpcdef.Member) error {
	for _, m := range ms {
		w.fit(m.Name)
	}
	if w.q.o.output == "json" {
		return w.line(watchJSON{Type: "reset", Version: version, Members: w.q.printer().membersJSON(byName(ms))})
	}
	return w.q.printer().reset(w.q.out, version, ms)
}

// reconnecting and reconnected go to stdout as text; with --json they go
// to stderr, so that stdout holds only JSON.
func (w *watcher) reconnecting() error {
	if w.q.o.output == "json" {
		_, err := fmt.Fprintln(w.q.errOut, "rpc-query: lost the master; reconnecting")
		return err
	}
	_, err := fmt.Fprintln(w.q.out, "-- reconnecting to the master --")
	return err
}

func (w *watcher) reconnected(addr string) error {
	if w.q.o.output == "json" {
		_, err := fmt.Fprintf(w.q.errOut, "rpc-query: reconnected to the master at %s\n", addr)
		return err
	}
	_, err := fmt.Fprintf(w.q.out, "-- reconnected to the master at %s --\n", addr)
	return err
}

// cause says on stderr why reconnecting has not worked yet, once per reason.
func (w *watcher) cause(err error) {
	if msg := err.Error(); msg != w.lastCause {
		w.lastCause = msg
		fmt.Fprintf(w.q.errOut, "rpc-query: %s\n", msg)
	}
}

// view reads a slave's own view over its local socket.
func (q *query) view(ctx context.Context) error {
	c := rpcdef.NewViewClient(q.o.slaveSocket)
	defer c.Close()
	v, err := c.Get(ctx)
	if err != nil {
		return q.explainSlave(err)
	}
	p := q.printer()
	ms := p.sorted(q.filter(v.Members), q.o.sortBy)
	switch q.o.output {
	case "json":
		return writeJSON(q.out, viewJSON{Node: v.Node, Incarnation: v.Incarnation, Joined: v.Joined, Master: v.Master,
			MasterAddress: v.MasterAddr, Version: v.Version, Members: p.membersJSON(ms), Masters: masterAddrsJSON(v.Masters)})
	case "name":
		return names(q.out, ms)
	}
	if !q.o.noHeaders {
		if _, err := fmt.Fprintln(q.out, viewHeader(v)); err != nil {
			return err
		}
		if len(v.Masters) > 0 {
			if _, err := fmt.Fprintln(q.out, viewMasters(v.Masters)); err != nil {
				return err
			}
		}
	}
	return p.membersTable(q.out, ms, len(v.Members), q.tableOpts())
}

// explainSlave turns a failure to reach slaved into what to do about it.
func (q *query) explainSlave(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach slaved: nothing listens on %s (is slaved running on this host? use --slave-socket PATH or MUSTER_SLAVE_SOCKET)", q.o.slaveSocket)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cannot reach slaved: permission denied on %s (run as slaved's user or root)", q.o.slaveSocket)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("slaved on %s did not answer within %v", q.o.slaveSocket, q.o.timeout)
	case strings.Contains(err.Error(), "rpc: can't find "):
		return fmt.Errorf("the socket %s does not serve a slave's view: is it slaved's socket? (--slave-socket; the registry's socket is --socket)", q.o.slaveSocket)
	}
	return err
}

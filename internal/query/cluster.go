package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
}

// dialMaster finds the master of --cluster in the registry and makes a
// client that reaches it over mutual TLS, accepting only a master
// certificate. The connection itself is made at the first call.
func (q *query) dialMaster(ctx context.Context) (*master, error) {
	st, err := q.store(q.cmd)
	if err != nil {
		return nil, err
	}
	reg, err := q.registry()
	if err != nil {
		return nil, err
	}
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: q.o.cluster}
	e, err := reg.Lookup(ctx, key)
	if errors.Is(err, rpcdef.ErrNotFound) {
		return nil, fmt.Errorf("no master of cluster %s in the registry: %s is not registered (is masterd running? --cluster names another cluster; rpc-query services lists what is registered)", q.o.cluster, key)
	}
	if err != nil {
		return nil, q.explain(err)
	}
	c := rpcdef.NewClusterClient("master at "+e.Addr, rpcdef.DialTLS(e.Addr, st.ClientConfig(pki.ExpectRole(pki.RoleMaster))))
	return &master{clusterAPI: c, entry: e}, nil
}

// explainMaster turns a failed call to the master into what to do about it.
func (q *query) explainMaster(m *master, err error) error {
	addr := m.entry.Addr
	var coded *rpcdef.Error
	switch {
	case errors.As(err, &coded):
		return fmt.Errorf("the master at %s refused: %w", addr, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the master at %s: connection refused (is masterd running? the registry's entry %s is %s; rpc-query services shows it)", addr, m.entry.ServiceKey, dash(m.entry.State))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the master at %s did not answer within %v (is it up and reachable from here? --timeout sets the limit)", addr, q.o.timeout)
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
	ms := q.filter(byName(r.Members))
	if q.o.json {
		return writeJSON(q.out, rollJSON{Cluster: q.o.cluster, Version: r.Version, Members: toMembersJSON(ms)})
	}
	return q.printer().membersTable(q.out, ms, len(r.Members))
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
	if q.o.json {
		return writeJSON(q.out, toMemberJSON(*found))
	}
	return q.printer().member(q.out, *found)
}

func (q *query) top(ctx context.Context) error {
	r, err := q.roll(ctx)
	if err != nil {
		return err
	}
	ms := q.filter(r.Members)
	if q.o.json {
		return writeJSON(q.out, toTopJSON(ms))
	}
	return q.printer().top(q.out, ms)
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
	if w.q.o.json {
		return w.line(watchJSON{Type: "snapshot", Cluster: w.q.o.cluster, Master: addr, Version: r.Version, Members: toMembersJSON(byName(r.Members))})
	}
	_, err := fmt.Fprintln(w.q.out, watchStart(w.q.o.cluster, addr, r.Version, r.Members))
	return err
}

func (w *watcher) event(ev rpcdef.Event) error {
	w.fit(ev.Node)
	if w.q.o.json {
		return w.line(eventJSON(ev))
	}
	_, err := fmt.Fprintln(w.q.out, w.q.printer().event(ev, w.width))
	return err
}

func (w *watcher) reset(version uint64, ms []rpcdef.Member) error {
	for _, m := range ms {
		w.fit(m.Name)
	}
	if w.q.o.json {
		return w.line(watchJSON{Type: "reset", Version: version, Members: toMembersJSON(byName(ms))})
	}
	return w.q.printer().reset(w.q.out, version, ms)
}

// reconnecting and reconnected go to stdout as text; with --json they go
// to stderr, so that stdout holds only JSON.
func (w *watcher) reconnecting() error {
	if w.q.o.json {
		_, err := fmt.Fprintln(w.q.errOut, "rpc-query: lost the master; reconnecting")
		return err
	}
	_, err := fmt.Fprintln(w.q.out, "-- reconnecting to the master --")
	return err
}

func (w *watcher) reconnected(addr string) error {
	if w.q.o.json {
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
	ms := q.filter(byName(v.Members))
	if q.o.json {
		return writeJSON(q.out, viewJSON{Node: v.Node, Incarnation: v.Incarnation, Joined: v.Joined, Master: v.Master,
			MasterAddress: v.MasterAddr, Version: v.Version, Members: toMembersJSON(ms)})
	}
	if _, err := fmt.Fprintln(q.out, viewHeader(v)); err != nil {
		return err
	}
	return q.printer().membersTable(q.out, ms, len(v.Members))
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
	}
	return err
}

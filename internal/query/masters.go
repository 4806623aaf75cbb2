package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// statuser is the call masters needs beyond clusterAPI;
// *rpcdef.ClusterClient has it.
type statuser interface {
	Status(ctx context.Context) (rpcdef.MasterStatus, error)
}

// groupAdmin is what masters add and remove ask of the leader;
// *rpcdef.ClusterClient has it.
type groupAdmin interface {
	AddMaster(ctx context.Context, name, raftAddr string) error
	RemoveMaster(ctx context.Context, name string) error
}

// The states a master tells in its Status, and the one rpc-query gives a
// master it cannot ask.
const (
	stateLeader      = "leader"
	stateFollower    = "follower"
	stateCandidate   = "candidate"
	stateShutdown    = "shutdown"
	stateUnreachable = "unreachable"
)

// mastersCmd runs masters, masters add and masters remove.
func (q *query) mastersCmd(ctx context.Context, args []string) error {
	const synopsis = "usage: rpc-query masters | masters add NAME HOST:PORT | masters remove NAME"
	switch {
	case len(args) == 0:
		return q.masters(ctx)
	case args[0] == "add":
		if len(args) != 3 {
			return usageError("usage: rpc-query masters add NAME HOST:PORT (the new master's raft address)")
		}
		return q.addMaster(ctx, args[1], args[2])
	case args[0] == "remove":
		if len(args) != 2 {
			return usageError("usage: rpc-query masters remove NAME")
		}
		return q.removeMaster(ctx, args[1])
	}
	return usageError(fmt.Sprintf("masters %s: %s", strings.Join(args, " "), synopsis))
}

// masterRow is one server of the group, as masters shows it.
type masterRow struct {
	server rpcdef.MasterServer  // from the group's configuration
	status *rpcdef.MasterStatus // its own answer; nil if it gave none
	err    error                // why there is no answer
	note   string               // something odd about an answer
}

func (r masterRow) state() string {
	if r.status == nil {
		return stateUnreachable
	}
	return dash(r.status.State)
}

// masters asks one master (the registry's, or --master) for its Status,
// then every server of its configuration for its own, at once, each
// within statusWait, and shows one row per master: the leader first, then
// by name. A master that does not answer, or the lack of a leader, is
// exit 4, after the table.
func (q *query) masters(ctx context.Context) error {
	m, err := q.connect(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	s, ok := m.clusterAPI.(statuser)
	if !ok {
		return fmt.Errorf("the client of the master at %s cannot ask for its status", m.entry.Addr)
	}
	first, err := s.Status(ctx)
	if err != nil {
		return q.explainMaster(m, err)
	}
	rows := q.groupRows(ctx, m.entry, first)
	p := q.printer()
	switch q.o.output {
	case "json":
		err = writeJSON(q.out, p.mastersJSON(q.o.cluster, rows))
	case "name":
		for _, r := range rows {
			if _, err = fmt.Fprintln(q.out, r.server.Name); err != nil {
				break
			}
		}
	default:
		err = p.mastersTable(q.out, rows, q.tableOpts())
	}
	if err != nil {
		return err
	}
	return mastersTrouble(rows)
}

// groupRows asks every server of first's configuration for its Status,
// concurrently; first is the answer of the master at asked, which is not
// asked again.
func (q *query) groupRows(ctx context.Context, asked rpcdef.Entry, first rpcdef.MasterStatus) []masterRow {
	rows := make([]masterRow, len(first.Servers))
	var wg sync.WaitGroup
	listed := false
	for i, sv := range first.Servers {
		rows[i].server = sv
		switch {
		case sv.Name == first.Name:
			listed = true
			st := first
			rows[i].status = &st
			if rows[i].server.Addr == "" {
				rows[i].server.Addr = first.Addr
			}
		case sv.Addr == "":
			rows[i].err = errors.New("no address announced yet")
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				rows[i].status, rows[i].err = q.askStatus(ctx, asked.ServiceKey, sv)
			}()
		}
	}
	wg.Wait()
	if !listed {
		st := first
		rows = append(rows, masterRow{server: rpcdef.MasterServer{Name: first.Name, RaftAddr: first.RaftAddr, Addr: first.Addr}, status: &st,
			note: fmt.Sprintf("it answered at %s but is not in its own configuration of the group (removed?)", asked.Addr)})
	}
	for i := range rows {
		if st := rows[i].status; st != nil && st.Name != rows[i].server.Name {
			rows[i].note = fmt.Sprintf("the master at %s answers as %s", rows[i].server.Addr, st.Name)
		}
	}
	slices.SortStableFunc(rows, func(a, b masterRow) int {
		if la, lb := a.state() == stateLeader, b.state() == stateLeader; la != lb {
			if la {
				return -1
			}
			return 1
		}
		return strings.Compare(a.server.Name, b.server.Name)
	})
	return rows
}

// askStatus asks the master sv for its Status within statusWait.
func (q *query) askStatus(ctx context.Context, key rpcdef.ServiceKey, sv rpcdef.MasterServer) (*rpcdef.MasterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, q.statusWait)
	defer cancel()
	m, err := q.connectAt(ctx, rpcdef.Entry{Service: rpcdef.Service{ServiceKey: key, Addr: sv.Addr}})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	s, ok := m.clusterAPI.(statuser)
	if !ok {
		return nil, errors.New("its client cannot ask for a status")
	}
	st, err := s.Status(ctx)
	if err != nil {
		return nil, q.explainPeer(sv.Addr, err)
	}
	return &st, nil
}

// explainPeer puts a master's failure to answer Status into words, for
// the line under the table that names it.
func (q *query) explainPeer(addr string, err error) error {
	var coded *rpcdef.Error
	switch {
	case errors.As(err, &coded):
		return fmt.Errorf("refused at %s: %w", addr, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("connection refused at %s (is its masterd running?)", addr)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from %s within %v", addr, q.statusWait)
	case strings.Contains(err.Error(), "rpc: can't find "):
		return fmt.Errorf("the server at %s is not a master: %w", addr, plainRPC(err))
	}
	return err
}

// mastersTrouble is exit 4 when not every master answered or no leader is
// known, as members NODE is for a member that is not alive.
func mastersTrouble(rows []masterRow) error {
	var down []string
	leader := false
	for _, r := range rows {
		if r.status == nil {
			down = append(down, r.server.Name)
		}
		leader = leader || r.state() == stateLeader
	}
	var trouble []string
	switch len(down) {
	case 0:
	case 1:
		trouble = append(trouble, down[0]+" is unreachable")
	default:
		trouble = append(trouble, strings.Join(down[:len(down)-1], ", ")+" and "+down[len(down)-1]+" are unreachable")
	}
	if !leader {
		trouble = append(trouble, "no leader is known (an election is under way, or a majority of the masters is down)")
	}
	if len(trouble) == 0 {
		return nil
	}
	return notAliveError(strings.Join(trouble, "; "))
}

// leaderOf is the leader's row, if any master says it leads: the one in
// the highest term.
func leaderOf(rows []masterRow) (masterRow, bool) {
	var best masterRow
	found := false
	for _, r := range rows {
		if r.state() == stateLeader && (!found || r.status.Term > best.status.Term) {
			best, found = r, true
		}
	}
	return best, found
}

// mastersSummary is the line under the table:
// "3 masters: leader m1 in term 7, 1 follower, 1 unreachable".
func mastersSummary(rows []masterRow) string {
	n := map[string]int{}
	for _, r := range rows {
		n[r.state()]++
	}
	parts := []string{"no leader"}
	if l, ok := leaderOf(rows); ok {
		parts[0] = fmt.Sprintf("leader %s in term %d", l.server.Name, l.status.Term)
		if n[stateLeader] > 1 {
			parts = append(parts, fmt.Sprintf("%d say they lead", n[stateLeader]))
		}
	}
	delete(n, stateLeader)
	for _, c := range []struct{ state, count string }{
		{stateFollower, plural(n[stateFollower], "follower")},
		{stateCandidate, plural(n[stateCandidate], "candidate")},
		{stateShutdown, fmt.Sprintf("%d shut down", n[stateShutdown])},
		{stateUnreachable, fmt.Sprintf("%d unreachable", n[stateUnreachable])},
	} {
		if n[c.state] > 0 {
			parts = append(parts, c.count)
			delete(n, c.state)
		}
	}
	var other []string
	for s := range n {
		other = append(other, s)
	}
	slices.Sort(other)
	for _, s := range other {
		parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
	}
	return plural(len(rows), "master") + ": " + strings.Join(parts, ", ")
}

// lastContact is a follower's time since it last heard from the leader:
// "—" on the leader, which has no leader to hear from; "-" when unknown.
func (p printer) lastContact(r masterRow) string {
	switch {
	case r.state() == stateLeader:
		return "—"
	case r.status == nil || r.status.LastContact.IsZero():
		return "-"
	}
	return since(p.now.Sub(r.status.LastContact))
}

// mastersTable prints one row per master, the summary line and, under
// it, why each master that did not answer did not; --no-headers leaves
// out all but the rows. -o wide adds whether it votes, the leader as it
// knows it, its commit index and its roll's event version.
func (p printer) mastersTable(w io.Writer, rows []masterRow, o tableOpts) error {
	tw := newTable(w)
	if !o.noHeaders {
		if o.wide {
			fmt.Fprintln(tw, "NAME\tADDRESS\tRAFT\tSTATE\tVOTER\tTERM\tLEADER\tLAST-CONTACT\tAPPLIED\tCOMMIT\tVERSION")
		} else {
			fmt.Fprintln(tw, "NAME\tADDRESS\tRAFT\tSTATE\tTERM\tLAST-CONTACT\tAPPLIED")
		}
	}
	for _, r := range rows {
		term, applied, commit, version, leader := "-", "-", "-", "-", "-"
		if st := r.status; st != nil {
			term, applied, commit, version = fmt.Sprint(st.Term), fmt.Sprint(st.AppliedIndex), fmt.Sprint(st.CommitIndex), fmt.Sprint(st.Version)
			leader = dash(st.Leader)
		}
		sv := r.server
		if o.wide {
			voter := "no"
			if sv.Voter {
				voter = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sv.Name, dash(sv.Addr), dash(sv.RaftAddr), r.state(), voter, term, leader, p.lastContact(r), applied, commit, version)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sv.Name, dash(sv.Addr), dash(sv.RaftAddr), r.state(), term, p.lastContact(r), applied)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if o.noHeaders {
		return nil
	}
	if _, err := fmt.Fprintln(w, mastersSummary(rows)); err != nil {
		return err
	}
	for _, r := range rows {
		why := r.note
		if r.err != nil {
			why = r.err.Error()
		}
		if why == "" {
			continue
		}
		if _, err := fmt.Fprintf(w, "  %s: %s\n", r.server.Name, why); err != nil {
			return err
		}
	}
	return nil
}

// mastersJSON is masters -o json: the group, as every master tells it.
type mastersJSON struct {
	Cluster string       `json:"cluster"`
	Leader  string       `json:"leader"` // "" when no master says it leads
	Term    uint64       `json:"term"`   // the leader's; 0 without one
	Masters []masterJSON `json:"masters"`
}

// masterJSON is one master. A master that did not answer has state
// "unreachable", zero figures and the reason in error.
type masterJSON struct {
	Name                  string    `json:"name"`
	Address               string    `json:"address"`
	RaftAddress           string    `json:"raft_address"`
	Voter                 bool      `json:"voter"`
	State                 string    `json:"state"`
	Term                  uint64    `json:"term"`
	Leader                string    `json:"leader"` // the leader as this master knows it
	LastContact           time.Time `json:"last_contact,omitzero"`
	LastContactAgeSeconds *float64  `json:"last_contact_age_seconds"` // null on the leader and when unknown
	AppliedIndex          uint64    `json:"applied_index"`
	CommitIndex           uint64    `json:"commit_index"`
	Version               uint64    `json:"version"`
	Error                 string    `json:"error,omitempty"`
	Note                  string    `json:"note,omitempty"`
}

func (p printer) mastersJSON(cluster string, rows []masterRow) mastersJSON {
	out := mastersJSON{Cluster: cluster, Masters: []masterJSON{}}
	if l, ok := leaderOf(rows); ok {
		out.Leader, out.Term = l.server.Name, l.status.Term
	}
	for _, r := range rows {
		j := masterJSON{Name: r.server.Name, Address: r.server.Addr, RaftAddress: r.server.RaftAddr, Voter: r.server.Voter, State: r.state(), Note: r.note}
		if r.err != nil {
			j.Error = r.err.Error()
		}
		if st := r.status; st != nil {
			j.Term, j.Leader, j.AppliedIndex, j.CommitIndex, j.Version = st.Term, st.Leader, st.AppliedIndex, st.CommitIndex, st.Version
			if !st.LastContact.IsZero() && st.State != stateLeader {
				j.LastContact = st.LastContact
				a := math.Round(p.now.Sub(st.LastContact).Seconds()*1000) / 1000
				j.LastContactAgeSeconds = &a
			}
		}
		out.Masters = append(out.Masters, j)
	}
	return out
}

// groupChange runs masters add or remove on the leader.
func (q *query) groupChange(ctx context.Context, cmd, name, notFound string, call func(groupAdmin) error) error {
	return q.adminCall(ctx, cmd, name, notFound, func(c clusterAPI) error {
		g, ok := c.(groupAdmin)
		if !ok {
			return errUnsupported
		}
		return call(g)
	})
}

func (q *query) addMaster(ctx context.Context, name, raftAddr string) error {
	if err := pki.ValidName(name); err != nil {
		return usageError(fmt.Sprintf("masters add %s: %v (the name in its master certificate)", name, err))
	}
	if err := checkHostPort(raftAddr); err != nil {
		return usageError(fmt.Sprintf("masters add %s %s: the raft address: %v (its [raft] listen, or advertise)", name, raftAddr, err))
	}
	notFound := fmt.Sprintf("masters add %s: not found (the leader answered so)", name)
	if err := q.groupChange(ctx, "masters add", name, notFound, func(g groupAdmin) error { return g.AddMaster(ctx, name, raftAddr) }); err != nil {
		return err
	}
	if q.o.output == "json" {
		return writeJSON(q.out, groupJSON{Master: name, RaftAddress: raftAddr, Done: "added"})
	}
	_, err := fmt.Fprintf(q.out, "%s added to the group of cluster %s; it is a follower once it has caught up (rpc-query masters shows it)\n", name, q.o.cluster)
	return err
}

func (q *query) removeMaster(ctx context.Context, name string) error {
	if err := pki.ValidName(name); err != nil {
		return usageError(fmt.Sprintf("masters remove %s: %v", name, err))
	}
	notFound := fmt.Sprintf("no master %s in the group of cluster %s (rpc-query masters lists them)", name, q.o.cluster)
	if err := q.groupChange(ctx, "masters remove", name, notFound, func(g groupAdmin) error { return g.RemoveMaster(ctx, name) }); err != nil {
		return err
	}
	if q.o.output == "json" {
		return writeJSON(q.out, groupJSON{Master: name, Done: "removed"})
	}
	_, err := fmt.Fprintf(q.out, "%s removed from the group of cluster %s; it no longer votes: stop its masterd\n", name, q.o.cluster)
	return err
}

// groupJSON is masters add and remove -o json.
type groupJSON struct {
	Master      string `json:"master"`
	RaftAddress string `json:"raft_address,omitempty"` // add only
	Done        string `json:"done"`                   // "added" or "removed"
}

// Package query is rpc-query: it asks the registry which services exist, as
// rpcinfo asks rpcbind, and asks the master who is in the cluster.
package query

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/muster-lab/muster/internal/buildinfo"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

const usage = `usage: rpc-query [flags] COMMAND [ARGS]

Asks muster's registry and master what is running, as rpcinfo asks rpcbind.

commands:
  services                  every registered service (like rpcinfo -s)
  lookup NAME[/INSTANCE]    where a service is
  ping NAME[/INSTANCE]      call the service's Null procedure; exit 1 if it
  ping HOST:PORT            does not answer. HOST:PORT skips the registry
  members [GLOB]            the cluster's members, from the master (like serf
                            members); GLOB ('node-*') keeps the names it
                            matches
  members NODE              everything the master knows about one member;
                            exit 4 if it is not alive
  top                       resources per member, busiest first (like kubectl
                            top nodes); stale, dead and left ones last, with
                            no figures
  watch                     print membership events as they happen, until
                            interrupted; --node GLOB and --kind dead,left
                            keep only those events
  view                      a slave's own view of the cluster, over its
                            local socket
  wait service NAME[/INSTANCE]
                            until the service is registered and answers Null
  wait member NODE --for alive|suspect|dead|left|gone
                            until NODE is in that state (gone: not in the
                            roll at all)
  wait members --alive N    until at least N members are alive
  forget NODE               remove NODE from the roll, as consul force-leave
                            -prune does (admin certificate)
  evict NODE [--reason R]   declare NODE dead now (admin certificate)
  heartbeat NODE            diagnostic: test what the master accepts from a
                            certificate. Sends one Heartbeat for NODE with
                            --cert (--incarnation N; default the master's for
                            NODE) and prints the answer; exit 1 if refused.
                            An accepted one is real: the master then marks
                            NODE suspect when this connection closes, until
                            NODE's next heartbeat.
  masters                   every master of the raft group, each asked for its
                            own state (leader, follower, candidate, or
                            unreachable), term, last contact with the leader
                            and applied index; the leader first
  masters add NAME HOST:PORT
                            add the master NAME, started with raft.join =
                            true, to the group at its raft address (admin
                            certificate)
  masters remove NAME       remove the master NAME from the group (admin
                            certificate); stop its masterd after
  help                      this text (as --help)

The registry is reached over its local UNIX socket by default, with no
certificate. --registry HOST:PORT reaches a remote one over mutual TLS with the
certificate given by --ca, --cert and --key (an admin certificate, usually);
ping always needs one, to talk to the service itself. With several masters
there is a registry on each master host: give them all, comma-separated
(--registry 10.0.0.1:7111,10.0.0.2:7111,10.0.0.3:7111), and each is asked in
turn, within a share of --timeout, until one answers; an error names every
registry asked and what it said.

members, top, watch, wait member(s), forget, evict, heartbeat and masters find
the master of --cluster in the registry (ClusterService/CLUSTER), or dial
--master HOST:PORT without asking the registry, and reach it over mutual TLS
with that certificate; they accept only a server with a master certificate.
view needs no certificate: it reads slaved's local socket.

Only the raft leader acts on forget, evict and masters add/remove: a follower
that names the leader is asked once more at the leader's address. While no
leader is known (an election) they fail with exit 1: retry in a moment.
masters asks every master in the group for its Status, each within 2s, and
exits 4 if one does not answer or none leads, after printing the table:

  rpc-query masters                         # the group; or -o wide, -o json
  rpc-query masters remove m3               # m3's host died: out of the group
  rpc-query masters add m3 10.0.0.13:7114   # its replacement (raft.join = true)

--timeout bounds a whole command (default 5s; wait: 30s), except watch, which
runs until SIGINT or SIGTERM (and exits 0); there it bounds each call, and a
lost master is found again through the registry. wait polls every 200ms and
tolerates a registry or master that is not up yet; it prints one line, what it
waited for and how it ended.

output: -o wide (more columns, wider than 80), -o json (or --json), -o name
(one name a line); --no-headers leaves out the header and the summary line.
members --sort-by name|status|cpu|mem|age; top --sort cpu|mem|name. A report
older than --stale-after (default 10s: two of the default 5s report_interval;
rpc-query cannot ask the master its interval) is stale: tables show its
figures as -, JSON marks it "stale" with its age. Dead and left members show
no figures.

JSON: snake_case keys; times RFC 3339; durations and ages in seconds; sizes in
bytes; incarnations are strings of decimal digits (they exceed 2^53, which jq
and JavaScript round), and heartbeat --incarnation takes them back as they
are. docs/OPERATIONS.md ("rpc-query's JSON") lists every command's fields.

exit status:
  0  done; the condition waited for holds; members NODE is alive
  1  failed: unreachable, refused, not found
  2  wrong usage (an unknown flag, command or value)
  3  wait timed out
  4  members NODE found, but not alive (suspect, dead, left or unknown);
     masters: a master did not answer, or no leader is known

flags (also read from MUSTER_REGISTRY, MUSTER_REGISTRY_SOCKET, MUSTER_CA,
MUSTER_CERT, MUSTER_KEY, MUSTER_CLUSTER, MUSTER_MASTER, MUSTER_SLAVE_SOCKET):
`

// Exit codes, as the usage text documents them.
const (
	exitOK       = 0
	exitFail     = 1
	exitUsage    = 2
	exitTimeout  = 3
	exitNotAlive = 4
)

// defaultStaleAfter is two of conf's default report_interval (5s): the
// master does not tell a client its interval.
const defaultStaleAfter = 10 * time.Second

type options struct {
	socket      string
	registry    string
	master      string
	ca          string
	cert        string
	key         string
	json        bool
	output      string
	noHeaders   bool
	sortBy      string
	name        string
	timeout     time.Duration
	timeoutSet  bool
	staleAfter  time.Duration
	cluster     string
	status      string
	slaveSocket string
	incarnation incarnationFlag
	node        string
	kind        string
	forState    string
	alive       int
	reason      string
	version     bool
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Main runs rpc-query with args (without the program name) and returns its
// exit status. SIGINT and SIGTERM end a command: watch then exits 0.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	q := newQuery(stdout, stderr)
	q.stopSignals = func() { signal.Stop(sigs) } // the default action again; ctx lives on
	return q.main(ctx, args)
}

func (q *query) flags() *flag.FlagSet {
	o := &q.o
	fs := flag.NewFlagSet("rpc-query", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed by main, as one line
	fs.StringVar(&o.socket, "socket", env("MUSTER_REGISTRY_SOCKET", rpcdef.DefaultRegistrySocket), "the registry's local `socket`")
	fs.StringVar(&o.registry, "registry", env("MUSTER_REGISTRY", ""), "registries' `HOST:PORT`, comma-separated (TLS; needs --ca, --cert, --key)")
	fs.StringVar(&o.master, "master", env("MUSTER_MASTER", ""), "dial the master at `HOST:PORT` directly, without the registry")
	fs.StringVar(&o.ca, "ca", env("MUSTER_CA", ""), "CA bundle `file`")
	fs.StringVar(&o.cert, "cert", env("MUSTER_CERT", ""), "certificate `file`")
	fs.StringVar(&o.key, "key", env("MUSTER_KEY", ""), "key `file`")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table (as -o json)")
	fs.StringVar(&o.output, "o", "", "output `format`: wide, json or name (default a table)")
	fs.StringVar(&o.output, "output", "", "the same as -o `format`")
	fs.BoolVar(&o.noHeaders, "no-headers", false, "tables: no header line and no summary line")
	fs.StringVar(&o.sortBy, "sort-by", "", "members: order by `key`: name, status, cpu, mem or age (default name)")
	fs.StringVar(&o.sortBy, "sort", "", "top: order by `key`: cpu, mem or name (default cpu)")
	fs.StringVar(&o.name, "name", "", "members, top, view: only the members whose names match `GLOB`")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "give up after this long (wait: 30s; watch: each call)")
	fs.DurationVar(&o.staleAfter, "stale-after", defaultStaleAfter, "a resource report older than this is stale")
	fs.StringVar(&o.cluster, "cluster", env("MUSTER_CLUSTER", "lab"), "the cluster `name` whose master the cluster commands ask")
	fs.StringVar(&o.status, "status", "", "members, top, view: only these `states` (alive,suspect,dead,left,unknown)")
	fs.StringVar(&o.slaveSocket, "slave-socket", env("MUSTER_SLAVE_SOCKET", rpcdef.DefaultSlaveSocket), "view: slaved's local `socket`")
	fs.Var(&o.incarnation, "incarnation", "heartbeat: the incarnation `N` to send (default: the master's for NODE)")
	fs.StringVar(&o.node, "node", "", "watch: only events of the nodes whose names match `GLOB`")
	fs.StringVar(&o.kind, "kind", "", "watch: only `kinds` joined,rejoined,suspect,alive,dead,left,forgotten")
	fs.StringVar(&o.forState, "for", "", "wait member: the `state` to wait for: alive, suspect, dead, left or gone")
	fs.IntVar(&o.alive, "alive", 0, "wait members: at least `N` alive")
	fs.StringVar(&o.reason, "reason", "", "evict: why, in `words`, for the event and the logs")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	return fs
}

// printUsage writes the whole help text to w.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, usage)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// flagError turns the flag package's complaint into one line that says
// what to do next.
func flagError(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + strings.TrimPrefix(name, "-")
	}
	return msg + " (run 'rpc-query --help')"
}

// main parses args and runs the command; ctx ends when the user interrupts.
func (q *query) main(ctx context.Context, args []string) int {
	o := &q.o
	stderr := q.errOut
	fs := q.flags()
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(q.out, fs)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "rpc-query: %s\n", flagError(err))
		return exitUsage
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "timeout" {
			o.timeoutSet = true
		}
	})
	if o.version {
		fmt.Fprintln(q.out, buildinfo.Read().String())
		return exitOK
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "rpc-query: no command given (run 'rpc-query --help' for the list)")
		return exitUsage
	}
	cmd, rest := pos[0], pos[1:]
	if cmd != "watch" && q.stopSignals != nil {
		// Only watch ends cleanly on Ctrl-C; any other command dies of it,
		// as a shell loop running rpc-query expects.
		q.stopSignals()
	}
	q.cmd = cmd
	if cmd == "help" {
		printUsage(q.out, fs)
		return exitOK
	}
	if cmd == "wait" && !o.timeoutSet {
		o.timeout = defaultWaitTimeout
	}
	if err := q.checkFlags(cmd, rest); err != nil {
		return q.fail(ctx, err)
	}
	// watch runs until interrupted; every other command is bounded as a whole.
	cmdCtx := ctx
	if cmd != "watch" {
		var cancel context.CancelFunc
		cmdCtx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	defer q.close()
	switch cmd {
	case "services":
		err = q.need(rest, 0, "services").then(func() error { return q.services(cmdCtx) })
	case "lookup":
		err = q.need(rest, 1, "lookup NAME[/INSTANCE]").then(func() error { return q.lookup(cmdCtx, rest[0]) })
	case "ping":
		err = q.need(rest, 1, "ping NAME[/INSTANCE] or ping HOST:PORT").then(func() error { return q.ping(cmdCtx, rest[0]) })
	case "members":
		switch {
		case len(rest) == 1 && !isGlob(rest[0]):
			err = q.member(cmdCtx, rest[0])
		case len(rest) == 1:
			err = q.members(cmdCtx)
		default:
			err = q.need(rest, 0, "members [NODE|GLOB]").then(func() error { return q.members(cmdCtx) })
		}
	case "top":
		err = q.need(rest, 0, "top").then(func() error { return q.top(cmdCtx) })
	case "watch":
		err = q.need(rest, 0, "watch").then(func() error { return q.watch(cmdCtx) })
	case "view":
		err = q.need(rest, 0, "view [--slave-socket PATH]").then(func() error { return q.view(cmdCtx) })
	case "wait":
		err = q.wait(cmdCtx, rest)
	case "forget":
		err = q.need(rest, 1, "forget NODE").then(func() error { return q.forget(cmdCtx, rest[0]) })
	case "evict":
		err = q.need(rest, 1, "evict NODE [--reason R]").then(func() error { return q.evict(cmdCtx, rest[0]) })
	case "heartbeat":
		err = q.need(rest, 1, "heartbeat NODE [--incarnation N]").then(func() error { return q.heartbeat(cmdCtx, rest[0]) })
	case "masters":
		err = q.mastersCmd(cmdCtx, rest)
	default:
		err = usageError(fmt.Sprintf("unknown command %q (run 'rpc-query --help' for the list)", cmd))
	}
	if err != nil {
		return q.fail(ctx, err)
	}
	return exitOK
}

// fail prints err as one line and says which exit status it means.
func (q *query) fail(ctx context.Context, err error) int {
	var ue usageError
	var te timeoutError
	var ne notAliveError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(q.errOut, "rpc-query: %v\n", err)
		return exitUsage
	case errors.As(err, &te):
		fmt.Fprintf(q.errOut, "rpc-query: %v\n", err)
		return exitTimeout
	case errors.As(err, &ne):
		fmt.Fprintf(q.errOut, "rpc-query: %v\n", err)
		return exitNotAlive
	case ctx.Err() != nil:
		fmt.Fprintln(q.errOut, "rpc-query: interrupted")
		return exitFail
	}
	fmt.Fprintf(q.errOut, "rpc-query: %v\n", err)
	return exitFail
}

// outputs says which -o formats each command has; "" is the default.
var outputs = map[string][]string{
	"services":  {"", "wide", "json", "name"},
	"lookup":    {"", "json", "name"},
	"ping":      {"", "json"},
	"members":   {"", "wide", "json", "name"},
	"member":    {"", "json", "name"},
	"top":       {"", "wide", "json", "name"},
	"watch":     {"", "json"},
	"view":      {"", "wide", "json", "name"},
	"wait":      {""},
	"forget":    {"", "json"},
	"evict":     {"", "json"},
	"heartbeat": {"", "json"},
	"masters":   {"", "wide", "json", "name"},
	// masters add and masters remove
	"masters add":    {"", "json"},
	"masters remove": {"", "json"},
}

// sortKeys says which --sort-by keys a command takes; the first is the default.
var sortKeys = map[string][]string{
	"members": {"name", "status", "cpu", "mem", "age"},
	"view":    {"name", "status", "cpu", "mem", "age"},
	"top":     {"cpu", "mem", "name"},
}

// isGlob says whether a members argument is a pattern rather than a name.
func isGlob(s string) bool { return strings.ContainsAny(s, "*?[") }

func joinList(l []string) string {
	var out []string
	for _, s := range l {
		if s == "" {
			continue
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// checkFlags rejects flags that make no sense together, before anything is
// dialled.
func (q *query) checkFlags(cmd string, rest []string) error {
	o := &q.o
	single := cmd == "members" && len(rest) == 1 && !isGlob(rest[0])
	form := cmd
	if single {
		form = "member"
	}
	if cmd == "masters" && len(rest) > 0 && (rest[0] == "add" || rest[0] == "remove") {
		form = "masters " + rest[0]
	}
	switch cmd {
	case "members", "top", "watch", "heartbeat", "wait", "forget", "evict", "masters":
		if err := pki.ValidName(o.cluster); err != nil {
			return usageError(fmt.Sprintf("--cluster: %v", err))
		}
	}
	if o.master != "" {
		if _, _, err := net.SplitHostPort(o.master); err != nil {
			return usageError(fmt.Sprintf("--master %q: want HOST:PORT, like 127.0.0.1:7112", o.master))
		}
	}
	if o.registry != "" {
		addrs, err := parseRegistries(o.registry)
		if err != nil {
			return err
		}
		q.regAddrs = addrs
	}
	if o.incarnation.set && cmd != "heartbeat" {
		return usageError(fmt.Sprintf("--incarnation applies to heartbeat, not %s", cmd))
	}
	if o.timeout <= 0 {
		return usageError(fmt.Sprintf("--timeout %v: want a positive duration, like 5s", o.timeout))
	}
	if o.staleAfter <= 0 {
		return usageError(fmt.Sprintf("--stale-after %v: want a positive duration, like 10s", o.staleAfter))
	}
	if o.json {
		if o.output != "" && o.output != "json" {
			return usageError(fmt.Sprintf("--json and -o %s disagree: give one of them", o.output))
		}
		o.output = "json"
	}
	if allowed, ok := outputs[form]; ok && !slices.Contains(allowed, o.output) {
		what := form
		if single {
			what = "members NODE"
		}
		if len(allowed) == 1 {
			return usageError(fmt.Sprintf("-o %s: %s has only its one line of text", o.output, what))
		}
		return usageError(fmt.Sprintf("-o %s: %s takes -o %s, or no -o", o.output, what, joinList(allowed)))
	}
	if o.noHeaders && !slices.Contains([]string{"members", "top", "services", "view", "masters"}, form) {
		return usageError(fmt.Sprintf("--no-headers applies to the tables of members, top, services, view and masters, not %s", strings.Join(append([]string{cmd}, rest...), " ")))
	}
	if o.sortBy != "" {
		keys, ok := sortKeys[form]
		if !ok {
			return usageError(fmt.Sprintf("--sort-by applies to members, top and view, not %s", cmd))
		}
		if !slices.Contains(keys, o.sortBy) {
			return usageError(fmt.Sprintf("--sort-by %q: %s sorts by %s", o.sortBy, cmd, strings.Join(keys, ", ")))
		}
	}
	if cmd == "members" && len(rest) == 1 && isGlob(rest[0]) {
		if o.name != "" {
			return usageError(fmt.Sprintf("members %s and --name %s: give the pattern once", rest[0], o.name))
		}
		o.name = rest[0]
	}
	if o.name != "" {
		if single || !slices.Contains([]string{"members", "top", "view"}, cmd) {
			return usageError(fmt.Sprintf("--name filters the members of members, top and view, not %s", strings.Join(append([]string{cmd}, rest...), " ")))
		}
		if _, err := path.Match(o.name, ""); err != nil {
			return usageError(fmt.Sprintf("--name %q: not a valid pattern (use * ? and [...])", o.name))
		}
	}
	if o.node != "" || o.kind != "" {
		if cmd != "watch" {
			return usageError(fmt.Sprintf("--node and --kind filter the events of watch, not %s", cmd))
		}
		if _, err := path.Match(o.node, ""); err != nil {
			return usageError(fmt.Sprintf("--node %q: not a valid pattern (use * ? and [...])", o.node))
		}
		if o.kind != "" {
			kinds, err := parseKinds(o.kind)
			if err != nil {
				return err
			}
			q.kinds = kinds
		}
	}
	if o.forState != "" || o.alive != 0 {
		if cmd != "wait" {
			return usageError(fmt.Sprintf("--for and --alive apply to wait, not %s", cmd))
		}
	}
	if o.reason != "" && cmd != "evict" {
		return usageError(fmt.Sprintf("--reason applies to evict, not %s", cmd))
	}
	if o.status == "" {
		return nil
	}
	switch {
	case single:
		return usageError("--status filters the list of members: give it without a NODE")
	case cmd != "members" && cmd != "top" && cmd != "view":
		return usageError(fmt.Sprintf("--status applies to members, top and view, not %s", cmd))
	}
	want, err := parseStatuses(o.status)
	if err != nil {
		return err
	}
	q.want = want
	return nil
}

// parseStatuses reads --status: a comma-separated list of member states.
func parseStatuses(s string) (map[rpcdef.Status]bool, error) {
	want := map[rpcdef.Status]bool{}
	for part := range strings.SplitSeq(s, ",") {
		st := rpcdef.Status(strings.ToLower(strings.TrimSpace(part)))
		if !slices.Contains(statusOrder, st) {
			return nil, usageError(fmt.Sprintf("--status %q: unknown state %q: want a comma-separated list of alive, suspect, dead, left, unknown", s, part))
		}
		want[st] = true
	}
	return want, nil
}

// eventKinds are the kinds watch --kind takes.
var eventKinds = []rpcdef.EventKind{rpcdef.EventJoined, rpcdef.EventRejoined, rpcdef.EventSuspect,
	rpcdef.EventAlive, rpcdef.EventDead, rpcdef.EventLeft, rpcdef.EventForgotten}

// parseKinds reads --kind: a comma-separated list of event kinds.
func parseKinds(s string) (map[rpcdef.EventKind]bool, error) {
	want := map[rpcdef.EventKind]bool{}
	for part := range strings.SplitSeq(s, ",") {
		k := rpcdef.EventKind(strings.ToLower(strings.TrimSpace(part)))
		if !slices.Contains(eventKinds, k) {
			return nil, usageError(fmt.Sprintf("--kind %q: unknown event kind %q: want a comma-separated list of joined, rejoined, suspect, alive, dead, left, forgotten", s, part))
		}
		want[k] = true
	}
	return want, nil
}

// filter keeps the members --status and --name ask for.
func (q *query) filter(ms []rpcdef.Member) []rpcdef.Member {
	if q.want == nil && q.o.name == "" {
		return ms
	}
	var out []rpcdef.Member
	for _, m := range ms {
		if q.want != nil && !q.want[m.Status] {
			continue
		}
		if ok, _ := path.Match(q.o.name, m.Name); q.o.name != "" && !ok {
			continue
		}
		out = append(out, m)
	}
	return out
}

// shows says whether watch --node and --kind let ev through.
func (q *query) shows(ev rpcdef.Event) bool {
	if q.kinds != nil && !q.kinds[ev.Kind] {
		return false
	}
	if q.o.node != "" {
		ok, _ := path.Match(q.o.node, ev.Node)
		return ok
	}
	return true
}

// parseInterleaved lets flags come before or after the command and its arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

// timeoutError is a wait that ran out of time: exit 3.
type timeoutError string

func (e timeoutError) Error() string { return string(e) }

// notAliveError is members NODE for a member that is not alive: exit 4.
type notAliveError string

func (e notAliveError) Error() string { return string(e) }

type check struct{ err error }

func (c check) then(f func() error) error {
	if c.err != nil {
		return c.err
	}
	return f()
}

type query struct {
	stopSignals func() // gives SIGINT and SIGTERM back their default action
	o           options
	out         io.Writer
	errOut      io.Writer
	cmd         string
	want        map[rpcdef.Status]bool    // --status; nil means every member
	kinds       map[rpcdef.EventKind]bool // watch --kind; nil means every kind
	regAddrs    []string                  // --registry, parsed; none: the local socket
	regs        []registryConn            // the registries, dialled at their first call
	regFirst    int                       // the registry to ask first: the one that answered last
	st          *pki.Store

	// What tests replace.
	now        func() time.Time
	loc        *time.Location
	connect    func(ctx context.Context) (*master, error)                 // finds and dials the master
	connectAt  func(ctx context.Context, e rpcdef.Entry) (*master, error) // dials the master at e.Addr
	statusWait time.Duration                                              // how long masters waits for each master's Status
	watchWait  time.Duration                                              // how long one Watch call waits for events
	pollEvery  time.Duration                                              // how often wait asks again
	backoffMin time.Duration                                              // first pause before reconnecting
	backoffMax time.Duration
}

func newQuery(stdout, stderr io.Writer) *query {
	q := &query{out: stdout, errOut: stderr, now: time.Now, loc: time.Local,
		watchWait: 20 * time.Second, statusWait: 2 * time.Second, pollEvery: 200 * time.Millisecond, backoffMin: 250 * time.Millisecond, backoffMax: 10 * time.Second}
	q.connect = q.dialMaster
	q.connectAt = q.dialEntry
	return q
}

func (q *query) printer() printer {
	return printer{now: q.now(), loc: q.loc, staleAfter: q.o.staleAfter}
}

func (q *query) need(args []string, n int, synopsis string) check {
	if len(args) != n {
		return check{usageError(fmt.Sprintf("usage: rpc-query %s", synopsis))}
	}
	return check{}
}

func (q *query) close() {
	for _, r := range q.regs {
		r.c.Close()
	}
}

// store loads the certificate named by the flags, for TLS.
func (q *query) store(why string) (*pki.Store, error) {
	if q.st != nil {
		return q.st, nil
	}
	// Both errors are fatalError: waiting does not cure them.
	if q.o.ca == "" || q.o.cert == "" || q.o.key == "" {
		return nil, fatalError{fmt.Errorf("%s needs a certificate: give --ca, --cert and --key (or MUSTER_CA, MUSTER_CERT, MUSTER_KEY)", why)}
	}
	st, err := pki.Load(pki.Files{CA: q.o.ca, Cert: q.o.cert, Key: q.o.key})
	if err != nil {
		return nil, fatalError{fmt.Errorf("load certificate: %w", err)}
	}
	q.st = st
	return st, nil
}

func (q *query) services(ctx context.Context) error {
	entries, err := q.listEntries(ctx)
	if err != nil {
		return err
	}
	switch q.o.output {
	case "json":
		return writeJSON(q.out, jsonEntries(entries))
	case "name":
		for _, e := range entries {
			fmt.Fprintln(q.out, e.ServiceKey)
		}
		return nil
	}
	tw := newTable(q.out)
	wide := q.o.output == "wide"
	if !q.o.noHeaders {
		if wide {
			fmt.Fprintln(tw, "NAME\tINSTANCE\tVERSION\tADDRESS\tOWNER\tEPOCH\tTTL\tLEFT\tSTATE\tSINCE")
		} else {
			fmt.Fprintln(tw, "NAME\tINSTANCE\tVERSION\tADDRESS\tOWNER\tTTL\tSTATE")
		}
	}
	p := q.printer()
	for _, e := range entries {
		if wide {
			// EPOCH is a master's raft term; - for a service without terms.
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Instance, e.Version, e.Addr, dash(e.Owner), epoch(e.Epoch), seconds(e.TTL), seconds(e.Remaining), e.State, p.whenOr(e.Since, false, "-"))
			continue
		}
		// The owner without its scheme: the table fits 80 columns (-o wide has it whole).
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", e.Name, e.Instance, e.Version, e.Addr, dash(strings.TrimPrefix(e.Owner, "spiffe://")), seconds(e.Remaining), e.State)
	}
	return tw.Flush()
}

func (q *query) lookup(ctx context.Context, arg string) error {
	key, err := rpcdef.ParseServiceKey(arg)
	if err != nil {
		return usageError(err.Error())
	}
	e, err := q.lookupEntry(ctx, key)
	if errors.Is(err, rpcdef.ErrNotFound) {
		return fmt.Errorf("%s is not registered (rpc-query services lists what is)", key)
	}
	if err != nil {
		return err
	}
	switch q.o.output {
	case "json":
		return writeJSON(q.out, jsonEntries([]rpcdef.Entry{e})[0])
	case "name":
		_, err := fmt.Fprintln(q.out, e.ServiceKey)
		return err
	}
	if e.Epoch != 0 {
		fmt.Fprintf(q.out, "%s version %d at %s (owner %s, epoch %d, %s, lease %s left)\n", e.ServiceKey, e.Version, e.Addr, e.Owner, e.Epoch, e.State, seconds(e.Remaining))
		return nil
	}
	fmt.Fprintf(q.out, "%s version %d at %s (owner %s, %s, lease %s left)\n", e.ServiceKey, e.Version, e.Addr, e.Owner, e.State, seconds(e.Remaining))
	return nil
}

// serverRole is the role a service's server must prove, where muster knows it.
func serverRole(service string) pki.Role {
	if service == rpcdef.ClusterService {
		return pki.RoleMaster
	}
	return ""
}

// isAddr says whether a ping argument is HOST:PORT rather than NAME/INSTANCE.
func isAddr(s string) bool {
	if strings.Contains(s, "/") {
		return false
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// pinged is what a ping found.
type pinged struct {
	what    string // "ClusterService/lab version 1" or "the server"
	addr    string
	service string // the service's key, or the receiver called at addr
	version int
	server  pki.Identity
	rtt     time.Duration
}

// pingKey looks key up in the registry and calls its Null procedure.
func (q *query) pingKey(ctx context.Context, key rpcdef.ServiceKey) (pinged, error) {
	st, err := q.store("ping")
	if err != nil {
		return pinged{}, err
	}
	e, err := q.lookupEntry(ctx, key)
	if errors.Is(err, rpcdef.ErrNotFound) {
		return pinged{}, fmt.Errorf("%s is not registered (is its daemon running? rpc-query services lists what is)", key)
	}
	if err != nil {
		return pinged{}, err
	}
	var server pki.Identity
	accept := func(id pki.Identity) error {
		server = id
		if r := serverRole(key.Name); r != "" {
			return pki.ExpectRole(r)(id)
		}
		return nil
	}
	c := rpcdef.NewConn(e.ServiceKey.String()+" at "+e.Addr, rpcdef.DialTLS(e.Addr, st.ClientConfig(accept)))
	defer c.Close()
	rtt, err := rpcdef.Ping(ctx, c, e.Name)
	if err != nil {
		return pinged{}, fmt.Errorf("%s version %d at %s is not answering: %w", e.ServiceKey, e.Version, e.Addr, err)
	}
	return pinged{what: fmt.Sprintf("%s version %d", e.ServiceKey, e.Version), addr: e.Addr,
		service: e.ServiceKey.String(), version: e.Version, server: server, rtt: rtt}, nil
}

// pingAddr calls the Null procedure of the server at addr without asking
// the registry: ClusterService's, or the registry's if the certificate
// the server shows is a registry's.
func (q *query) pingAddr(ctx context.Context, addr string) (pinged, error) {
	st, err := q.store("ping")
	if err != nil {
		return pinged{}, err
	}
	var server pki.Identity
	accept := func(id pki.Identity) error {
		server = id
		return nil
	}
	c := rpcdef.NewConn(addr, rpcdef.DialTLS(addr, st.ClientConfig(accept)))
	defer c.Close()
	name := rpcdef.ClusterService
	rtt, err := rpcdef.Ping(ctx, c, name)
	if err != nil && server.Role == pki.RoleRegistry {
		name = rpcdef.RegistryReceiver
		rtt, err = rpcdef.Ping(ctx, c, name)
	}
	if err != nil {
		return pinged{}, fmt.Errorf("the server at %s is not answering: %w", addr, plainRPC(err))
	}
	return pinged{what: name, addr: addr, service: name, server: server, rtt: rtt}, nil
}

func (q *query) ping(ctx context.Context, arg string) error {
	var p pinged
	var err error
	if isAddr(arg) {
		p, err = q.pingAddr(ctx, arg)
	} else {
		key, kerr := rpcdef.ParseServiceKey(arg)
		if kerr != nil {
			return usageError(kerr.Error() + " (or give HOST:PORT)")
		}
		p, err = q.pingKey(ctx, key)
	}
	if err != nil {
		return err
	}
	if q.o.output == "json" {
		return writeJSON(q.out, pingJSON{Service: p.service, Version: p.version, Address: p.addr,
			Server: p.server.String(), RTTSeconds: p.rtt.Seconds()})
	}
	fmt.Fprintf(q.out, "%s ready and waiting at %s (rtt %s, %s)\n", p.what, p.addr, roundRTT(p.rtt), p.server)
	return nil
}

// pingJSON is ping -o json. Version is 0 for a ping of HOST:PORT.
type pingJSON struct {
	Service    string  `json:"service"`
	Version    int     `json:"version"`
	Address    string  `json:"address"`
	Server     string  `json:"server"`
	RTTSeconds float64 `json:"rtt_seconds"`
}

// plainRPC puts net/rpc's "rpc: can't find service X.Y" into words.
func plainRPC(err error) error {
	msg := err.Error()
	i := strings.Index(msg, "rpc: can't find service ")
	if i < 0 {
		i = strings.Index(msg, "rpc: can't find method ")
	}
	if i < 0 {
		return err
	}
	method := msg[strings.LastIndex(msg, " ")+1:]
	return fmt.Errorf("it does not serve %s (is it the daemon you meant?)", method)
}

func roundRTT(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(10 * time.Microsecond)
}

// epoch is an entry's epoch for a table: - when it has none.
func epoch(n uint64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatUint(n, 10)
}

func seconds(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// entryJSON is a registry entry. Epoch is the registering master's raft
// term; 0 for a service without terms.
type entryJSON struct {
	Name             string    `json:"name"`
	Instance         string    `json:"instance"`
	Version          int       `json:"version"`
	Address          string    `json:"address"`
	Owner            string    `json:"owner"`
	Epoch            uint64    `json:"epoch"`
	TTLSeconds       float64   `json:"ttl_seconds"`
	RemainingSeconds float64   `json:"remaining_seconds"`
	State            string    `json:"state"`
	Since            time.Time `json:"since"`
}

func jsonEntries(es []rpcdef.Entry) []entryJSON {
	out := make([]entryJSON, len(es))
	for i, e := range es {
		out[i] = entryJSON{Name: e.Name, Instance: e.Instance, Version: e.Version, Address: e.Addr, Owner: e.Owner, Epoch: e.Epoch,
			TTLSeconds: e.TTL.Seconds(), RemainingSeconds: e.Remaining.Seconds(), State: e.State, Since: e.Since}
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

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
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

const usage = `usage: rpc-query [flags] COMMAND [ARGS]

Asks muster's registry and master what is running, as rpcinfo asks rpcbind.

commands:
  services                  every registered service (like rpcinfo -s)
  lookup NAME[/INSTANCE]    where a service is
  ping NAME[/INSTANCE]      call the service's Null procedure; exit 1 if it does not answer
  members                   the cluster's members, from the master (like serf members)
  members NODE              everything the master knows about one member
  top                       resources per member, busiest first (like kubectl top nodes)
  watch                     print membership events as they happen, until interrupted
  view                      a slave's own view of the cluster, over its local socket
  heartbeat NODE            diagnostic: test what the master accepts from a
                            certificate. Sends one Heartbeat for NODE with --cert
                            (--incarnation N; default the master's for NODE) and
                            prints the answer; exit 1 if refused. An accepted one
                            is real: the master then marks NODE suspect when this
                            connection closes, until NODE's next heartbeat.

The registry is reached over its local UNIX socket by default, with no
certificate. --registry HOST:PORT reaches a remote one over mutual TLS with the
certificate given by --ca, --cert and --key (an admin certificate, usually);
ping always needs one, to talk to the service itself.

members, top, watch and heartbeat find the master of --cluster in the registry
(ClusterService/CLUSTER) and reach it over mutual TLS with that certificate;
they accept only a server with a master certificate. view needs no
certificate: it reads slaved's local socket.

--timeout bounds a whole command, except watch, which runs until SIGINT or
SIGTERM (and exits 0); there it bounds each call, and a lost master is found
again through the registry. --json prints JSON; watch --json prints one JSON
object per line.

exit status: 0 done, 1 failed, 2 wrong usage.

flags (also read from MUSTER_REGISTRY, MUSTER_REGISTRY_SOCKET, MUSTER_CA, MUSTER_CERT, MUSTER_KEY,
MUSTER_CLUSTER, MUSTER_SLAVE_SOCKET):
`

// exit codes
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type options struct {
	socket      string
	registry    string
	ca          string
	cert        string
	key         string
	json        bool
	timeout     time.Duration
	cluster     string
	status      string
	slaveSocket string
	incarnation incarnationFlag
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

// main parses args and runs the command; ctx ends when the user interrupts.
func (q *query) main(ctx context.Context, args []string) int {
	o := &q.o
	stderr := q.errOut
	fs := flag.NewFlagSet("rpc-query", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", env("MUSTER_REGISTRY_SOCKET", rpcdef.DefaultRegistrySocket), "the registry's local `socket`")
	fs.StringVar(&o.registry, "registry", env("MUSTER_REGISTRY", ""), "a remote registry's `HOST:PORT` (TLS; needs --ca, --cert, --key)")
	fs.StringVar(&o.ca, "ca", env("MUSTER_CA", ""), "CA bundle `file`")
	fs.StringVar(&o.cert, "cert", env("MUSTER_CERT", ""), "certificate `file`")
	fs.StringVar(&o.key, "key", env("MUSTER_KEY", ""), "key `file`")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "give up on a call after this long (watch: on each call)")
	fs.StringVar(&o.cluster, "cluster", env("MUSTER_CLUSTER", "lab"), "the cluster `name` whose master members, top, watch and heartbeat ask")
	fs.StringVar(&o.status, "status", "", "members, top, view: only members in these `states` (comma-separated: alive,suspect,dead,left,unknown)")
	fs.StringVar(&o.slaveSocket, "slave-socket", env("MUSTER_SLAVE_SOCKET", rpcdef.DefaultSlaveSocket), "view: slaved's local `socket`")
	fs.Var(&o.incarnation, "incarnation", "heartbeat: the incarnation `N` to send (default: the one the master holds for NODE)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	if len(pos) == 0 {
		fs.Usage()
		fmt.Fprintln(stderr, "\nrpc-query: no command given")
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
		fs.SetOutput(q.out)
		fs.Usage()
		return exitOK
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
		err = q.need(rest, 1, "ping NAME[/INSTANCE]").then(func() error { return q.ping(cmdCtx, rest[0]) })
	case "members":
		if len(rest) == 1 {
			err = q.member(cmdCtx, rest[0])
		} else {
			err = q.need(rest, 0, "members [NODE]").then(func() error { return q.members(cmdCtx) })
		}
	case "top":
		err = q.need(rest, 0, "top").then(func() error { return q.top(cmdCtx) })
	case "watch":
		err = q.need(rest, 0, "watch").then(func() error { return q.watch(cmdCtx) })
	case "view":
		err = q.need(rest, 0, "view [--slave-socket PATH]").then(func() error { return q.view(cmdCtx) })
	case "heartbeat":
		err = q.need(rest, 1, "heartbeat NODE [--incarnation N]").then(func() error { return q.heartbeat(cmdCtx, rest[0]) })
	default:
		err = usageError(fmt.Sprintf("unknown command %q: run rpc-query --help for the list", cmd))
	}
	if err != nil {
		return q.fail(ctx, err)
	}
	return exitOK
}

// fail prints err as one line and says which exit status it means.
func (q *query) fail(ctx context.Context, err error) int {
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(q.errOut, "rpc-query: %v\n", err)
		return exitUsage
	}
	if ctx.Err() != nil {
		fmt.Fprintln(q.errOut, "rpc-query: interrupted")
		return exitFail
	}
	fmt.Fprintf(q.errOut, "rpc-query: %v\n", err)
	return exitFail
}

// checkFlags rejects flags that make no sense together, before anything is
// dialled.
func (q *query) checkFlags(cmd string, rest []string) error {
	if cmd == "members" || cmd == "top" || cmd == "watch" || cmd == "heartbeat" {
		if err := pki.ValidName(q.o.cluster); err != nil {
			return usageError(fmt.Sprintf("--cluster: %v", err))
		}
	}
	if q.o.incarnation.set && cmd != "heartbeat" {
		return usageError(fmt.Sprintf("--incarnation applies to heartbeat, not %s", cmd))
	}
	if q.o.timeout <= 0 {
		return usageError(fmt.Sprintf("--timeout %v: want a positive duration, like 5s", q.o.timeout))
	}
	if q.o.status == "" {
		return nil
	}
	switch {
	case cmd == "members" && len(rest) == 1:
		return usageError("--status filters the list of members: give it without a NODE")
	case cmd != "members" && cmd != "top" && cmd != "view":
		return usageError(fmt.Sprintf("--status applies to members, top and view, not %s", cmd))
	}
	want, err := parseStatuses(q.o.status)
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

// filter keeps the members --status asks for.
func (q *query) filter(ms []rpcdef.Member) []rpcdef.Member {
	if q.want == nil {
		return ms
	}
	var out []rpcdef.Member
	for _, m := range ms {
		if q.want[m.Status] {
			out = append(out, m)
		}
	}
	return out
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
	want        map[rpcdef.Status]bool // --status; nil means every member
	reg         *rpcdef.RegistryClient
	st          *pki.Store

	// What tests replace.
	now        func() time.Time
	loc        *time.Location
	connect    func(ctx context.Context) (*master, error) // finds and dials the master
	watchWait  time.Duration                              // how long one Watch call waits for events
	backoffMin time.Duration                              // first pause before reconnecting
	backoffMax time.Duration
}

func newQuery(stdout, stderr io.Writer) *query {
	q := &query{out: stdout, errOut: stderr, now: time.Now, loc: time.Local,
		watchWait: 20 * time.Second, backoffMin: 250 * time.Millisecond, backoffMax: 10 * time.Second}
	q.connect = q.dialMaster
	return q
}

func (q *query) printer() printer { return printer{now: q.now(), loc: q.loc} }

func (q *query) need(args []string, n int, synopsis string) check {
	if len(args) != n {
		return check{usageError(fmt.Sprintf("usage: rpc-query %s", synopsis))}
	}
	return check{}
}

func (q *query) close() {
	if q.reg != nil {
		q.reg.Close()
	}
}

// store loads the certificate named by the flags, for TLS.
func (q *query) store(why string) (*pki.Store, error) {
	if q.st != nil {
		return q.st, nil
	}
	if q.o.ca == "" || q.o.cert == "" || q.o.key == "" {
		return nil, fmt.Errorf("%s needs a certificate: give --ca, --cert and --key (or MUSTER_CA, MUSTER_CERT, MUSTER_KEY)", why)
	}
	st, err := pki.Load(pki.Files{CA: q.o.ca, Cert: q.o.cert, Key: q.o.key})
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	q.st = st
	return st, nil
}

// registry connects to the registry: the local socket, or --registry over TLS.
func (q *query) registry() (*rpcdef.RegistryClient, error) {
	if q.reg != nil {
		return q.reg, nil
	}
	if q.o.registry != "" {
		st, err := q.store("--registry " + q.o.registry)
		if err != nil {
			return nil, err
		}
		q.reg = rpcdef.NewRegistryClient("registry "+q.o.registry, rpcdef.DialTLS(q.o.registry, st.ClientConfig(pki.ExpectRole(pki.RoleRegistry))))
	} else {
		q.reg = rpcdef.NewRegistryClient("registry socket "+q.o.socket, rpcdef.DialUnix(q.o.socket))
	}
	return q.reg, nil
}

// explain turns a failure to reach the registry into what to do about it.
func (q *query) explain(err error) error {
	if q.o.registry == "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) {
		return fmt.Errorf("cannot reach the registry: nothing listens on %s (is registryd running? use --socket PATH, or --registry HOST:PORT for a remote one)", q.o.socket)
	}
	if q.o.registry == "" && errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("cannot reach the registry: permission denied on %s", q.o.socket)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot reach the registry at %s: connection refused (is registryd running there?)", q.o.registry)
	}
	return err
}

func (q *query) services(ctx context.Context) error {
	reg, err := q.registry()
	if err != nil {
		return err
	}
	entries, err := reg.List(ctx)
	if err != nil {
		return q.explain(err)
	}
	if q.o.json {
		return writeJSON(q.out, jsonEntries(entries))
	}
	tw := tabwriter.NewWriter(q.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tINSTANCE\tVERSION\tADDRESS\tOWNER\tTTL\tSTATE")
	for _, e := range entries {
		// The owner without its scheme: the table fits 80 columns (--json has it whole).
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", e.Name, e.Instance, e.Version, e.Addr, strings.TrimPrefix(e.Owner, "spiffe://"), seconds(e.Remaining), e.State)
	}
	return tw.Flush()
}

func (q *query) lookup(ctx context.Context, arg string) error {
	key, err := rpcdef.ParseServiceKey(arg)
	if err != nil {
		return usageError(err.Error())
	}
	reg, err := q.registry()
	if err != nil {
		return err
	}
	e, err := reg.Lookup(ctx, key)
	if err != nil {
		return q.explain(err)
	}
	if q.o.json {
		return writeJSON(q.out, jsonEntries([]rpcdef.Entry{e})[0])
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

func (q *query) ping(ctx context.Context, arg string) error {
	key, err := rpcdef.ParseServiceKey(arg)
	if err != nil {
		return usageError(err.Error())
	}
	st, err := q.store("ping")
	if err != nil {
		return err
	}
	reg, err := q.registry()
	if err != nil {
		return err
	}
	e, err := reg.Lookup(ctx, key)
	if err != nil {
		return q.explain(err)
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
		return fmt.Errorf("%s version %d at %s is not answering: %w", e.ServiceKey, e.Version, e.Addr, err)
	}
	if q.o.json {
		return writeJSON(q.out, map[string]any{
			"service": e.ServiceKey.String(), "version": e.Version, "address": e.Addr,
			"server": server.String(), "rtt_seconds": rtt.Seconds(),
		})
	}
	fmt.Fprintf(q.out, "%s version %d ready and waiting at %s (rtt %s, %s)\n", e.ServiceKey, e.Version, e.Addr, roundRTT(rtt), server)
	return nil
}

func roundRTT(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(10 * time.Microsecond)
}

func seconds(d time.Duration) string {
	return fmt.Sprintf("%.1fs", d.Seconds())
}

type entryJSON struct {
	Name             string    `json:"name"`
	Instance         string    `json:"instance"`
	Version          int       `json:"version"`
	Address          string    `json:"address"`
	Owner            string    `json:"owner"`
	TTLSeconds       float64   `json:"ttl_seconds"`
	RemainingSeconds float64   `json:"remaining_seconds"`
	State            string    `json:"state"`
	Since            time.Time `json:"since"`
}

func jsonEntries(es []rpcdef.Entry) []entryJSON {
	out := make([]entryJSON, len(es))
	for i, e := range es {
		out[i] = entryJSON{Name: e.Name, Instance: e.Instance, Version: e.Version, Address: e.Addr, Owner: e.Owner,
			TTLSeconds: e.TTL.Seconds(), RemainingSeconds: e.Remaining.Seconds(), State: e.State, Since: e.Since}
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

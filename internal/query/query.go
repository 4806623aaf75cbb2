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

The registry is reached over its local UNIX socket by default, with no
certificate. --registry HOST:PORT reaches a remote one over mutual TLS with the
certificate given by --ca, --cert and --key (an admin certificate, usually);
ping always needs one, to talk to the service itself.

flags (also read from MUSTER_REGISTRY, MUSTER_REGISTRY_SOCKET, MUSTER_CA, MUSTER_CERT, MUSTER_KEY):
`

// exit codes
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type options struct {
	socket   string
	registry string
	ca       string
	cert     string
	key      string
	json     bool
	timeout  time.Duration
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Main runs rpc-query with args (without the program name) and returns its exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("rpc-query", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.socket, "socket", env("MUSTER_REGISTRY_SOCKET", rpcdef.DefaultRegistrySocket), "the registry's local `socket`")
	fs.StringVar(&o.registry, "registry", env("MUSTER_REGISTRY", ""), "a remote registry's `HOST:PORT` (TLS; needs --ca, --cert, --key)")
	fs.StringVar(&o.ca, "ca", env("MUSTER_CA", ""), "CA bundle `file`")
	fs.StringVar(&o.cert, "cert", env("MUSTER_CERT", ""), "certificate `file`")
	fs.StringVar(&o.key, "key", env("MUSTER_KEY", ""), "key `file`")
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "give up on a call after this long")
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
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	q := &query{o: o, out: stdout}
	defer q.close()
	switch cmd {
	case "services":
		err = q.need(rest, 0, "services").then(func() error { return q.services(ctx) })
	case "lookup":
		err = q.need(rest, 1, "lookup NAME[/INSTANCE]").then(func() error { return q.lookup(ctx, rest[0]) })
	case "ping":
		err = q.need(rest, 1, "ping NAME[/INSTANCE]").then(func() error { return q.ping(ctx, rest[0]) })
	case "help":
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	default:
		err = usageError(fmt.Sprintf("unknown command %q: run rpc-query --help for the list", cmd))
	}
	if err != nil {
		fmt.Fprintf(stderr, "rpc-query: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFail
	}
	return exitOK
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
	o   options
	out io.Writer
	reg *rpcdef.RegistryClient
}

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
	if q.o.ca == "" || q.o.cert == "" || q.o.key == "" {
		return nil, fmt.Errorf("%s needs a certificate: give --ca, --cert and --key (or MUSTER_CA, MUSTER_CERT, MUSTER_KEY)", why)
	}
	st, err := pki.Load(pki.Files{CA: q.o.ca, Cert: q.o.cert, Key: q.o.key})
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
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
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", e.Name, e.Instance, e.Version, e.Addr, e.Owner, seconds(e.Remaining), e.State)
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

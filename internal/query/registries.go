package query

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// registryConn is one registry rpc-query may ask: the local socket (addr
// ""), or one of --registry's addresses over TLS.
type registryConn struct {
	addr string
	c    *rpcdef.RegistryClient
}

// parseRegistries reads --registry: HOST:PORT, or several, comma-separated,
// as registries = [...] lists them in the daemons' configs.
func parseRegistries(s string) ([]string, error) {
	var addrs []string
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		a := strings.TrimSpace(part)
		if a == "" {
			return nil, usageError(fmt.Sprintf("--registry %q: an empty entry: want HOST:PORT, or several comma-separated, like 10.0.0.1:7111,10.0.0.2:7111", s))
		}
		if err := checkHostPort(a); err != nil {
			return nil, usageError(fmt.Sprintf("--registry %q: %s: %v", s, a, err))
		}
		if seen[a] {
			return nil, usageError(fmt.Sprintf("--registry %q: %s is listed twice", s, a))
		}
		seen[a] = true
		addrs = append(addrs, a)
	}
	if len(addrs) > conf.MaxRegistries {
		return nil, usageError(fmt.Sprintf("--registry: %d registries given: at most %d (one per master host)", len(addrs), conf.MaxRegistries))
	}
	return addrs, nil
}

// checkHostPort checks an address another host dials: a host and a port
// from 1 to 65535.
func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return errors.New("want HOST:PORT, like 10.0.0.1:7111")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return nil
}

// registries are the registries to ask: --registry's, over TLS with the
// certificate of the flags, or else the local socket.
func (q *query) registries() ([]registryConn, error) {
	if q.regs != nil {
		return q.regs, nil
	}
	if len(q.regAddrs) == 0 {
		q.regs = []registryConn{{c: rpcdef.NewRegistryClient("registry socket "+q.o.socket, rpcdef.DialUnix(q.o.socket))}}
		return q.regs, nil
	}
	st, err := q.store("--registry " + q.o.registry)
	if err != nil {
		return nil, err
	}
	for _, a := range q.regAddrs {
		q.regs = append(q.regs, registryConn{addr: a,
			c: rpcdef.NewRegistryClient("registry "+a, rpcdef.DialTLS(a, st.ClientConfig(pki.ExpectRole(pki.RoleRegistry))))})
	}
	return q.regs, nil
}

// askRegistries calls ask on each registry in turn, from the one that
// answered last, until one succeeds. A registry that does not know the
// service does not end the search: one that restarted without its state
// learns a master's entry again only at the master's next renewal.
//
// With one registry, its error is returned, put into words. With several,
// each is given an equal share of what is left of ctx (a registry that
// drops packets does not eat the whole --timeout), and the error names
// every registry tried and what it said; it is a not-found error only if
// every one said that.
func (q *query) askRegistries(ctx context.Context, ask func(context.Context, *rpcdef.RegistryClient) error) error {
	regs, err := q.registries()
	if err != nil {
		return err
	}
	if len(regs) == 1 {
		if err := ask(ctx, regs[0].c); err != nil {
			return q.explainRegistry(regs[0].addr, err, 0)
		}
		return nil
	}
	var tried []error
	notFound := 0
	for i := range regs {
		r := regs[(q.regFirst+i)%len(regs)]
		actx, cancel := ctx, context.CancelFunc(func() {})
		var share time.Duration
		if dl, ok := ctx.Deadline(); ok && i < len(regs)-1 {
			share = time.Until(dl) / time.Duration(len(regs)-i)
			actx, cancel = context.WithTimeout(ctx, share)
		}
		err := ask(actx, r.c)
		cancel()
		if err == nil {
			q.regFirst = (q.regFirst + i) % len(regs)
			return nil
		}
		if errors.Is(err, rpcdef.ErrNotFound) {
			notFound++
		}
		tried = append(tried, q.explainRegistry(r.addr, err, share))
		if ctx.Err() != nil {
			break
		}
	}
	if notFound == len(regs) {
		return fmt.Errorf("%w (asked %d registries: %s)", rpcdef.ErrNotFound, len(regs), strings.Join(q.regAddrs, ", "))
	}
	return registriesError{errs: tried, of: len(regs)}
}

// registriesError is the failure of every registry asked: each one's error,
// naming it.
type registriesError struct {
	errs []error
	of   int // how many registries there are
}

func (e registriesError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	head := fmt.Sprintf("no registry answered (%d asked)", len(e.errs))
	if len(e.errs) < e.of {
		head = fmt.Sprintf("no registry answered (%d of %d asked before the time ran out)", len(e.errs), e.of)
	}
	return head + ": " + strings.Join(msgs, "; ")
}

// Unwrap gives the errors other than not-found ones: a registry that does
// not know the service, while another could not be asked, does not make
// the whole a not-found error.
func (e registriesError) Unwrap() []error {
	var out []error
	for _, err := range e.errs {
		if !errors.Is(err, rpcdef.ErrNotFound) {
			out = append(out, err)
		}
	}
	return out
}

// explainRegistry turns a failure to reach the registry at addr ("" for the
// socket) into what to do about it. within is the share of the time the
// registry was given, when it was not all of it.
func (q *query) explainRegistry(addr string, err error, within time.Duration) error {
	switch {
	case addr == "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)):
		return fmt.Errorf("cannot reach the registry: nothing listens on %s (is registryd running? use --socket PATH, or --registry HOST:PORT for a remote one)", q.o.socket)
	case addr == "" && errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cannot reach the registry: permission denied on %s", q.o.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the registry at %s: connection refused (is registryd running there?)", addr)
	case strings.Contains(err.Error(), "rpc: can't find "):
		where := "the socket " + q.o.socket
		if addr != "" {
			where = "the server at " + addr
		}
		return fmt.Errorf("%s does not serve the registry: is it registryd's? (--socket PATH, or --registry HOST:PORT)", where)
	case within > 0 && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the registry at %s did not answer within %v, its share of --timeout", addr, within.Round(time.Millisecond))
	case addr != "" && errors.Is(err, rpcdef.ErrNotFound):
		return fmt.Errorf("the registry at %s: %w", addr, err)
	}
	return err
}

// lookupEntry asks the registries where key is. A not-found error means
// that no registry knows it.
func (q *query) lookupEntry(ctx context.Context, key rpcdef.ServiceKey) (rpcdef.Entry, error) {
	var e rpcdef.Entry
	err := q.askRegistries(ctx, func(ctx context.Context, c *rpcdef.RegistryClient) error {
		var err error
		e, err = c.Lookup(ctx, key)
		return err
	})
	return e, err
}

// listEntries asks the registries for every entry: the first that answers.
func (q *query) listEntries(ctx context.Context) ([]rpcdef.Entry, error) {
	var es []rpcdef.Entry
	err := q.askRegistries(ctx, func(ctx context.Context, c *rpcdef.RegistryClient) error {
		var err error
		es, err = c.List(ctx)
		return err
	})
	return es, err
}

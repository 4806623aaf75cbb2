package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// Where the simulated slaves find a master, as slaved does. A follower
// that answers with the leader's address is followed in one hop. When a
// slave's master stops answering, it tries the masters the last Join or
// Heartbeat reply named, leader first and the lost one last, then the
// registries' answer (or --master). The list is kept once for the process:
// every slave is told the same one.

// splitAddrs reads a comma-separated list of addresses, as --registry
// takes them, with the spaces around each cut off. An empty entry stays,
// for Validate to name.
func splitAddrs(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// registryLookupFresh is how long a registry's answer (or its failure)
// serves every simulated slave that asks: a thousand that lose their master
// at once ask the registries once.
const registryLookupFresh = time.Second

// masterList is the masters list of the last Join or Heartbeat reply,
// leader first, and its version. It is safe for concurrent use.
type masterList struct {
	mu    sync.Mutex
	addrs []string
	names []string
	vers  uint64
}

// cleanMasters keeps the entries of a reply's list that loadgen will dial:
// in order, each address once, at most rpcdef.MaxMasters, each passing
// check (HOST:PORT, on this host unless --allow-remote). bad says what was
// left out.
func cleanMasters(in []rpcdef.MasterAddr, check func(string) error) (addrs, names, bad []string) {
	for i, m := range in {
		if len(addrs) == rpcdef.MaxMasters {
			bad = append(bad, fmt.Sprintf("%d entries past the first %d", len(in)-i, rpcdef.MaxMasters))
			break
		}
		if err := check(m.Addr); err != nil {
			bad = append(bad, fmt.Sprintf("entry %d (%.40s): %v", i, m.Name, err))
			continue
		}
		if slices.Contains(addrs, m.Addr) {
			bad = append(bad, fmt.Sprintf("entry %d (%.40s): %s repeats an address", i, m.Name, m.Addr))
			continue
		}
		addrs, names = append(addrs, m.Addr), append(names, m.Name)
	}
	return addrs, names, bad
}

// set takes a reply's list. It returns whether the list changed, and what
// of it was left out.
func (m *masterList) set(list []rpcdef.MasterAddr, version uint64, check func(string) error) (changed bool, bad []string) {
	addrs, names, bad := cleanMasters(list, check)
	m.mu.Lock()
	defer m.mu.Unlock()
	if version == m.vers && slices.Equal(addrs, m.addrs) && slices.Equal(names, m.names) {
		return false, bad
	}
	m.addrs, m.names, m.vers = addrs, names, version
	return true, bad
}

// version is the version held, for HeartbeatArgs.MastersVersion.
func (m *masterList) version() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vers
}

// list is a copy of the addresses, leader first.
func (m *masterList) list() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.addrs)
}

// String names the masters: "m1 at H:P (leader), m2 at H:P".
func (m *masterList) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	parts := make([]string, len(m.addrs))
	for i := range m.addrs {
		parts[i] = m.names[i] + " at " + m.addrs[i]
	}
	if len(parts) > 0 {
		parts[0] += " (leader)"
	}
	return strings.Join(parts, ", ")
}

// candidates is the order in which to try the masters after the one at
// lost stopped answering: the list, leader first, then fallback (the
// registries' answer or --master), each once, lost last: it may be back.
func candidates(list []string, fallback, lost string) []string {
	out := make([]string, 0, len(list)+2)
	add := func(a string) {
		if a != "" && a != lost && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, a := range list {
		add(a)
	}
	add(fallback)
	if lost != "" {
		out = append(out, lost)
	}
	return out
}

// errNoRegistry: loadgen was given --master, not --registry.
var errNoRegistry = errors.New("no registry given")

// finder asks the registries where ClusterService/<cluster> is, in turn
// from the one that answered last (a random one at first), and shares an
// answer for registryLookupFresh.
type finder struct {
	key     rpcdef.ServiceKey
	regs    []string
	check   func(string) error // the address a registry lists must pass it
	timeout time.Duration      // each registry's lookup
	// lookup asks one registry; the tests replace it.
	lookup func(ctx context.Context, reg string) (rpcdef.Entry, error)
	now    func() time.Time

	mu   sync.Mutex
	next int       // the registry to ask first
	at   time.Time // when the last answer came; zero for none
	addr string
	err  error
}

func newFinder(cfg Config, cluster string, tc *tls.Config) *finder {
	f := &finder{
		key:  rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: cluster},
		regs: splitAddrs(cfg.Registry), check: cfg.checkAddr, timeout: 10 * time.Second, now: time.Now,
	}
	if len(f.regs) > 0 {
		f.next = rand.IntN(len(f.regs))
	}
	f.lookup = func(ctx context.Context, reg string) (rpcdef.Entry, error) {
		c := rpcdef.NewRegistryClient("registry "+reg, rpcdef.DialTLS(reg, tc))
		defer c.Close()
		return c.Lookup(ctx, f.key)
	}
	return f
}

// newAdminFinder is the finder for a run, looking up with the observer's
// certificate.
func newAdminFinder(cfg Config, cluster string, admin *pki.Store) *finder {
	return newFinder(cfg, cluster, admin.ClientConfig(pki.ExpectRole(pki.RoleRegistry)))
}

// master is ClusterService's address as a registry lists it: an answer
// less than registryLookupFresh old, or the registries asked in turn until
// one answers.
func (f *finder) master(ctx context.Context) (string, error) {
	if len(f.regs) == 0 {
		return "", errNoRegistry
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.at.IsZero() && f.now().Sub(f.at) < registryLookupFresh {
		return f.addr, f.err
	}
	var errs []error
	f.addr, f.err = "", nil
	for i := range f.regs {
		j := (f.next + i) % len(f.regs)
		addr, err := f.ask(ctx, f.regs[j])
		if err == nil {
			f.next, f.addr = j, addr
			break
		}
		errs = append(errs, err)
	}
	if f.addr == "" {
		f.next = (f.next + 1) % len(f.regs)
		f.err = errors.Join(errs...)
		if len(errs) > 1 {
			f.err = fmt.Errorf("no registry of %d answered: %w", len(errs), f.err)
		}
	}
	f.at = f.now()
	return f.addr, f.err
}

// ask looks the master up in one registry.
func (f *finder) ask(ctx context.Context, reg string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	e, err := f.lookup(cctx, reg)
	switch {
	case errors.Is(err, rpcdef.ErrNotFound):
		return "", fmt.Errorf("look up %s in the registry at %s: %w (is masterd running?)", f.key, reg, err)
	case err != nil:
		return "", fmt.Errorf("look up %s in the registry at %s: %w", f.key, reg, err)
	}
	if err := f.check(e.Addr); err != nil {
		return "", fmt.Errorf("the registry at %s lists %s at %v", reg, f.key, err)
	}
	return e.Addr, nil
}

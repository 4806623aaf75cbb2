package slaved

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// Where a slave finds a master. It keeps the masters it was last told, in
// JoinReply and HeartbeatReply (leader first), and when its master goes it
// tries those first; the registries are the fallback. A follower that
// answers with the leader's address is followed in one hop.

// maxAddrLen bounds a master's HOST:PORT as a slave takes it from a reply: a
// DNS name at its longest, brackets, a colon and a port.
const maxAddrLen = 253 + 2 + 1 + 5

// checkAddr checks a master's ClusterService address from a reply: HOST:PORT
// with a host of printable characters and a port from 1 to 65535, so that a
// bad reply cannot make the slave dial garbage. The host is not held to DNS
// syntax: conf takes any host in an advertised address, and so does this.
func checkAddr(addr string) error {
	if len(addr) > maxAddrLen {
		return fmt.Errorf("address %.20q... is %d bytes, at most %d allowed", addr, len(addr), maxAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not HOST:PORT", addr)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", addr)
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("/?#@", c) >= 0 {
			return fmt.Errorf("address %q: character %q in the host is not allowed", addr, c)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// checkMaster checks one master a reply names.
func checkMaster(m rpcdef.MasterAddr) error {
	if err := pki.ValidName(m.Name); err != nil {
		return err
	}
	return checkAddr(m.Addr)
}

// cleanMasters keeps the valid entries of a masters list, in order, without
// repeats, at most rpcdef.MaxMasters of them; bad says what was dropped.
func cleanMasters(in []rpcdef.MasterAddr) (out []rpcdef.MasterAddr, bad []string) {
	seen := make(map[string]bool)
	for i, m := range in {
		if len(out) == rpcdef.MaxMasters {
			bad = append(bad, fmt.Sprintf("%d entries past the first %d (at most %d masters)", len(in)-i, rpcdef.MaxMasters, rpcdef.MaxMasters))
			break
		}
		if err := checkMaster(m); err != nil {
			bad = append(bad, fmt.Sprintf("entry %d: %v", i, err))
			continue
		}
		if seen[m.Name] || seen["@"+m.Addr] {
			bad = append(bad, fmt.Sprintf("entry %d: %s at %s repeats a name or an address", i, m.Name, m.Addr))
			continue
		}
		seen[m.Name], seen["@"+m.Addr] = true, true
		out = append(out, m)
	}
	return out, bad
}

// masters is the group's masters as the slave was last told, leader first,
// and the version of that list. It is safe for concurrent use.
type masters struct {
	mu   sync.Mutex
	list []rpcdef.MasterAddr
	vers uint64
}

// get returns a copy of the list and its version.
func (m *masters) get() ([]rpcdef.MasterAddr, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.list), m.vers
}

// version is the version of the list held, for HeartbeatArgs.
func (m *masters) version() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vers
}

// set replaces the list with the valid entries of list, logging what was
// dropped and, if the list changed, the new one.
func (m *masters) set(list []rpcdef.MasterAddr, version uint64, from string, log logrus.FieldLogger) {
	list, bad := cleanMasters(list)
	if len(bad) > 0 {
		log.Warnf("%s sent a masters list with entries this slave will not dial: %s", from, strings.Join(bad, "; "))
	}
	m.mu.Lock()
	changed := version != m.vers || !slices.Equal(list, m.list)
	m.list, m.vers = list, version
	m.mu.Unlock()
	if changed && len(list) > 0 {
		log.WithField("masters_version", version).Infof("the masters are %s", describeMasters(list))
	}
}

// describeMasters names the masters of a list: "m1 at H:P (leader), m2 at H:P".
func describeMasters(list []rpcdef.MasterAddr) string {
	parts := make([]string, len(list))
	for i, m := range list {
		parts[i] = m.Name + " at " + m.Addr
	}
	if len(parts) > 0 {
		parts[0] += " (leader)"
	}
	return strings.Join(parts, ", ")
}

// source is how the slave heard of a master.
type source int

const (
	fromRegistry source = iota // a registry's ClusterService entry
	fromList                   // the masters list of a Join or Heartbeat reply
	fromLeader                 // a follower's answer naming the leader
)

// target is a master to try, and how the slave heard of it.
type target struct {
	addr     string
	name     string // the master's name; from its certificate once dialled
	src      source
	registry string // the registry that named it (fromRegistry)
	by       string // the follower that named it (fromLeader)
}

// prefix introduces an attempt's error in a log line: nothing for the
// registry's answer (its errors say so), who named the master otherwise.
func (t target) prefix() string {
	switch t.src {
	case fromList:
		return fmt.Sprintf("listed master %s: ", t.name)
	case fromLeader:
		return fmt.Sprintf("leader %s (named by %s): ", t.name, t.by)
	}
	return ""
}

// listTargets is the masters list as targets, leader first, with lost (the
// master just lost) last.
func (s *Slave) listTargets(lost string) []target {
	list, _ := s.masters.get()
	var out, last []target
	for _, m := range list {
		t := target{addr: m.Addr, name: m.Name, src: fromList}
		if m.Addr == lost {
			last = append(last, t)
			continue
		}
		out = append(out, t)
	}
	return append(out, last...)
}

// lookupError says that no registry answered a lookup, and what each said.
type lookupError struct {
	key   rpcdef.ServiceKey
	where []string
	errs  []error
}

func (e *lookupError) Error() string {
	hint := " (is masterd running?)"
	for _, err := range e.errs {
		if !errors.Is(err, rpcdef.ErrNotFound) {
			hint = ""
		}
	}
	if len(e.errs) == 1 {
		return fmt.Sprintf("look up %s in the registry at %s: %v%s", e.key, e.where[0], e.errs[0], hint)
	}
	parts := make([]string, len(e.errs))
	for i, err := range e.errs {
		parts[i] = fmt.Sprintf("the registry at %s: %v", e.where[i], err)
	}
	return fmt.Sprintf("look up %s in %d registries: %s%s", e.key, len(e.errs), strings.Join(parts, "; "), hint)
}

func (e *lookupError) Unwrap() []error { return e.errs }

// registry returns a client of the registry at addr, or of the local
// socket if addr is "", and how to name it.
func (s *Slave) registry(addr string) (*rpcdef.RegistryClient, string) {
	if addr != "" {
		tc := s.cfg.Store.ClientConfig(pki.ExpectRole(pki.RoleRegistry))
		return rpcdef.NewRegistryClient("registry "+addr, rpcdef.DialTLS(addr, tc)), addr
	}
	p := s.cfg.RegistrySocket
	return rpcdef.NewRegistryClient("registry socket "+p, rpcdef.DialUnix(p)), p
}

// resolve asks the registries where the cluster's ClusterService is, in
// turn from the one that answered last (a random one at first), until one
// answers; with none configured, the local socket. A registry that fails is
// skipped at the next lookup.
func (s *Slave) resolve(ctx context.Context, loud bool) (target, error) {
	addrs := s.cfg.Addrs()
	if len(addrs) == 0 {
		addrs = []string{""}
	}
	if s.nextRegistry < 0 {
		s.nextRegistry = rand.IntN(len(addrs))
	}
	e := &lookupError{key: s.key}
	for i := range addrs {
		j := (s.nextRegistry + i) % len(addrs)
		addr, where, err := s.lookup(ctx, addrs[j], loud)
		if err == nil {
			s.nextRegistry = j
			return target{addr: addr, src: fromRegistry, registry: where}, nil
		}
		e.where, e.errs = append(e.where, where), append(e.errs, err)
	}
	s.nextRegistry = (s.nextRegistry + 1) % len(addrs)
	return target{}, e
}

// lookup asks one registry (the socket if reg is ""). The connection is
// closed afterwards: a slave asks rarely.
func (s *Slave) lookup(ctx context.Context, reg string, loud bool) (addr, where string, err error) {
	cl, where := s.registry(reg)
	defer cl.Close()
	msg := fmt.Sprintf("looking up %s in the registry at %s", s.key, where)
	if loud {
		s.log.Info(msg)
	} else {
		s.log.Debug(msg)
	}
	// Not cut short when ctx ends: the call is brief, and a cancelled call's
	// reply may still be written by net/rpc as the stub reads it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.CallTimeout.D())
	defer cancel()
	e, err := cl.Lookup(cctx, s.key)
	switch {
	case err != nil:
		return "", where, err
	case e.Addr == "":
		return "", where, fmt.Errorf("it lists %s with no address", s.key)
	}
	s.log.WithFields(logrus.Fields{"addr": e.Addr, "owner": e.Owner, "state": e.State, "registry": where}).Debugf("%s is at %s", s.key, e.Addr)
	return e.Addr, where, nil
}

// Package rpcdef is muster's wire contract: the argument and reply types of
// every RPC method, their names, the codec, the error codes, and the typed
// client stubs through which every caller reaches a server.
package rpcdef

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/muster-lab/muster/internal/pki"
)

// DefaultRegistryPort is registryd's well-known TLS port, as 111 is rpcbind's.
const DefaultRegistryPort = 7111

// DefaultRegistrySocket is registryd's UNIX-domain socket for local processes.
const DefaultRegistrySocket = "/run/muster/registry.sock"

// ClusterService is the registry name of the master's service; its instance
// is the cluster's name.
const ClusterService = "ClusterService"

// ClusterVersion is the version of the Cluster RPC service.
const ClusterVersion = 1

// registryName is the net/rpc receiver name of the registry.
const registryName = "Registry"

// Registry method names, as net/rpc spells them.
const (
	RegistryRegister   = registryName + ".Register"
	RegistryRenew      = registryName + ".Renew"
	RegistryUnregister = registryName + ".Unregister"
	RegistryLookup     = registryName + ".Lookup"
	RegistryList       = registryName + ".List"
	RegistryNull       = registryName + ".Null"
)

// RegistryReceiver is the name a registry server registers its receiver under.
const RegistryReceiver = registryName

// ServiceKey names a registration: a kind of service and which one.
type ServiceKey struct {
	Name     string `json:"name"`     // the kind of service, e.g. ClusterService
	Instance string `json:"instance"` // which one, e.g. the cluster's name
}

func (k ServiceKey) String() string {
	if k.Instance == "" {
		return k.Name
	}
	return k.Name + "/" + k.Instance
}

// ParseServiceKey reads NAME or NAME/INSTANCE.
func ParseServiceKey(s string) (ServiceKey, error) {
	name, inst, _ := strings.Cut(s, "/")
	k := ServiceKey{Name: name, Instance: inst}
	if err := ValidServiceName(name); err != nil {
		return ServiceKey{}, fmt.Errorf("service %q: %w", s, err)
	}
	if inst != "" {
		if err := ValidInstance(inst); err != nil {
			return ServiceKey{}, fmt.Errorf("service %q: %w", s, err)
		}
	}
	return k, nil
}

// ValidServiceName checks a service kind: 1 to 63 letters, digits, '-' or '_',
// starting with a letter (ClusterService, metrics-v2).
func ValidServiceName(s string) error {
	if s == "" {
		return fmt.Errorf("service name is empty")
	}
	if len(s) > 63 {
		return fmt.Errorf("service name is %d characters, at most 63 allowed", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_'):
		default:
			return fmt.Errorf("service name %q: character %q at %d not allowed: use letters, digits, '-' and '_', starting with a letter", s, c, i)
		}
	}
	return nil
}

// ValidInstance checks an instance name: the rules of a cluster or node name.
func ValidInstance(s string) error { return pki.ValidName(s) }

// Service is what a server registers: where an instance of a service listens.
type Service struct {
	ServiceKey
	Version int    `json:"version"`
	Addr    string `json:"addr"` // host:port
	// Epoch orders registrations of one key: a master registers with its
	// raft term. A live entry is replaced at once by a higher epoch and
	// refused to a lower one (see OlderEpoch); equal epochs, and 0 (a
	// service without terms), follow the owner rules.
	Epoch uint64 `json:"epoch,omitempty"`
}

// olderEpoch is the part of the registry's refusal of a lower epoch that
// OlderEpoch reads back: net/rpc carries only the error's string.
const olderEpoch = "is older than the registered epoch"

// OlderEpochError is the registry's refusal of a registration whose epoch
// is lower than the live entry's: "epoch 3 is older than the registered
// epoch 4: a newer leader holds this service".
func OlderEpochError(key ServiceKey, epoch, registered uint64, owner, addr string) error {
	return Errorf(CodeConflict, "%s: epoch %d %s %d: a newer leader holds this service (%s at %s)",
		key, epoch, olderEpoch, registered, owner, addr)
}

// OlderEpoch says the registry refused a registration because the entry
// it holds has a higher epoch: another master leads in a newer term.
func OlderEpoch(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == CodeConflict && strings.Contains(e.Msg, " "+olderEpoch+" ")
}

// Lease states an entry can be in.
const (
	StateLive  = "live"  // registered or renewed within its TTL
	StateStale = "stale" // restored after a registry restart, not yet renewed
)

// Entry is a registration as the registry reports it.
type Entry struct {
	Service
	Owner     string        // the identity that registered it
	TTL       time.Duration // the lease's length
	Remaining time.Duration // until the entry is dropped unless renewed
	State     string        // StateLive or StateStale
	Since     time.Time     // when it was registered
}

// RegisterArgs asks for a lease on a service name.
type RegisterArgs struct {
	Service Service
}

// RegisterReply grants a lease. The owner renews it with Renew well inside TTL.
type RegisterReply struct {
	Lease string
	TTL   time.Duration
}

// RenewArgs extends a lease.
type RenewArgs struct {
	Key   ServiceKey
	Lease string
}

// RenewReply says how long the lease now runs.
type RenewReply struct {
	TTL time.Duration
}

// UnregisterArgs removes a registration. With Lease set, only that lease
// is removed: an owner releasing its own, which may have been replaced since.
type UnregisterArgs struct {
	Key   ServiceKey
	Lease string
}

// LookupArgs asks where a service is. An empty Instance matches the only
// instance of the name, and is an error where there are several.
type LookupArgs struct {
	Key ServiceKey
}

// LookupReply is the entry found.
type LookupReply struct {
	Entry Entry
}

// ListArgs asks for every registration, like rpcbind's DUMP.
type ListArgs struct{}

// ListReply lists registrations sorted by name and instance.
type ListReply struct {
	Entries []Entry
}

// Empty is the argument and reply of Null.
type Empty struct{}

// RegistryClient is the typed client of registryd.
type RegistryClient struct {
	*Conn
}

// NewRegistryClient makes a registry client over dial; target names the
// registry in errors.
func NewRegistryClient(target string, dial Dialer) *RegistryClient {
	return &RegistryClient{Conn: NewConn(target, dial)}
}

// Register asks for a lease on svc.
func (c *RegistryClient) Register(ctx context.Context, svc Service) (RegisterReply, error) {
	var r RegisterReply
	err := c.Call(ctx, RegistryRegister, &RegisterArgs{Service: svc}, &r)
	return r, err
}

// Renew extends a lease. errors.Is(err, ErrUnknownLease) means register again.
func (c *RegistryClient) Renew(ctx context.Context, key ServiceKey, lease string) (RenewReply, error) {
	var r RenewReply
	err := c.Call(ctx, RegistryRenew, &RenewArgs{Key: key, Lease: lease}, &r)
	return r, err
}

// Unregister removes a registration.
func (c *RegistryClient) Unregister(ctx context.Context, key ServiceKey) error {
	return c.Call(ctx, RegistryUnregister, &UnregisterArgs{Key: key}, &Empty{})
}

// Release removes the caller's own lease on key, and nothing else: if the
// entry has been replaced since, it is left alone (ErrUnknownLease).
func (c *RegistryClient) Release(ctx context.Context, key ServiceKey, lease string) error {
	return c.Call(ctx, RegistryUnregister, &UnregisterArgs{Key: key, Lease: lease}, &Empty{})
}

// Lookup finds a service.
func (c *RegistryClient) Lookup(ctx context.Context, key ServiceKey) (Entry, error) {
	var r LookupReply
	err := c.Call(ctx, RegistryLookup, &LookupArgs{Key: key}, &r)
	return r.Entry, err
}

// List returns every registration.
func (c *RegistryClient) List(ctx context.Context) ([]Entry, error) {
	var r ListReply
	err := c.Call(ctx, RegistryList, &ListArgs{}, &r)
	return r.Entries, err
}

// Null is a probe: it does nothing and answers at once.
func (c *RegistryClient) Null(ctx context.Context) error {
	return c.Call(ctx, RegistryNull, &Empty{}, &Empty{})
}

package conf

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// Registry configures registryd.
type Registry struct {
	// Cluster is the cluster this registry serves; certificates of other
	// clusters are refused.
	Cluster string `toml:"cluster"`
	// Listen is the TLS address: the well-known port on every interface by default.
	Listen string `toml:"listen"`
	// Socket is the UNIX-domain socket for local processes; "" turns it off.
	Socket string `toml:"socket"`
	// StateDir holds the registration table, kept across restarts.
	StateDir string `toml:"state_dir"`
	// LeaseTTL is how long a registration lives without a renewal.
	LeaseTTL Duration `toml:"lease_ttl"`

	HandshakeTimeout Duration `toml:"handshake_timeout"`
	IdleTimeout      Duration `toml:"idle_timeout"`
	MaxConns         int      `toml:"max_conns"`
	LogLevel         string   `toml:"log_level"`
	// Pprof, if set, serves net/http/pprof on this loopback address.
	Pprof string `toml:"pprof"`
	// HTTPListen serves /metrics in plain HTTP on this loopback address; ""
	// turns it off.
	HTTPListen string `toml:"http_listen"`

	TLS TLS `toml:"tls"`

	// Allow says which roles may register which service names. Only the
	// owner of a live registration, or an admin, may replace or remove it.
	Allow []AllowRule `toml:"allow"`

	// Store is the loaded TLS material, set by LoadRegistry.
	Store *pki.Store `toml:"-"`
}

// AllowRule lets a role register some service names.
type AllowRule struct {
	Role     string   `toml:"role"`
	Services []string `toml:"services"`
}

// DefaultRegistryHTTP is where registryd serves /metrics unless
// http_listen says otherwise.
const DefaultRegistryHTTP = "127.0.0.1:7114"

// DefaultRegistry is registryd's configuration before its file is read.
func DefaultRegistry() *Registry {
	return &Registry{
		Cluster:          "lab",
		Listen:           fmt.Sprintf(":%d", rpcdef.DefaultRegistryPort),
		Socket:           rpcdef.DefaultRegistrySocket,
		StateDir:         "/var/lib/muster/registry",
		LeaseTTL:         Duration(10 * time.Second),
		HandshakeTimeout: Duration(5 * time.Second),
		IdleTimeout:      Duration(5 * time.Minute),
		MaxConns:         1024,
		LogLevel:         "info",
		HTTPListen:       DefaultRegistryHTTP,
		Allow:            []AllowRule{{Role: string(pki.RoleMaster), Services: []string{rpcdef.ClusterService}}},
	}
}

// LoadRegistry reads a registryd config file over the defaults and validates it.
func LoadRegistry(path string) (*Registry, error) {
	c := DefaultRegistry()
	c.Allow = nil // a file that lists rules replaces the default rule
	if err := decode(path, c); err != nil {
		return nil, err
	}
	if c.Allow == nil {
		c.Allow = DefaultRegistry().Allow
	}
	dir := filepath.Dir(path)
	c.TLS.resolve(dir)
	resolvePath(dir, &c.Socket)
	resolvePath(dir, &c.StateDir)
	st, err := c.TLS.load(path)
	c.Store = st
	if err := errors.Join(c.Validate(path), err); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every value and, if Store is loaded, that the certificate
// is a registry's of the configured cluster; file names the config in
// errors. It reads no file: LoadRegistry reads the certificates first.
func (c *Registry) Validate(file string) error {
	ck := &checker{file: file}
	ck.name("cluster", c.Cluster)
	ck.hostPort("listen", c.Listen, false)
	if c.StateDir == "" {
		ck.add("state_dir", "missing: give a directory the registry may write its table to")
	}
	ck.duration("lease_ttl", c.LeaseTTL, 500*time.Millisecond, time.Hour)
	ck.duration("handshake_timeout", c.HandshakeTimeout, 100*time.Millisecond, time.Minute)
	ck.duration("idle_timeout", c.IdleTimeout, time.Second, 24*time.Hour)
	if c.IdleTimeout.D() < c.LeaseTTL.D() {
		ck.add("idle_timeout", "%v is shorter than lease_ttl = %v: an owner renewing on time would be cut off; make it longer", c.IdleTimeout.D(), c.LeaseTTL.D())
	}
	ck.positive("max_conns", c.MaxConns, 1<<20)
	ck.logLevel(c.LogLevel)
	ck.pprof(c.Pprof)
	ck.httpListen(c.HTTPListen, DefaultRegistryHTTP, "")
	for i, r := range c.Allow {
		key := fmt.Sprintf("allow[%d]", i)
		if _, err := pki.ParseRole(r.Role); err != nil {
			ck.add(pathKey(key, "role"), "%v", err)
		}
		if len(r.Services) == 0 {
			ck.add(pathKey(key, "services"), "empty: list the service names this role may register")
		}
		for _, s := range r.Services {
			if err := rpcdef.ValidServiceName(s); err != nil {
				ck.add(pathKey(key, "services"), "%v", err)
			}
		}
	}
	c.TLS.check(ck, c.Store)
	c.TLS.checkIdentity(ck, c.Store, pki.RoleRegistry, c.Cluster)
	return ck.err()
}

// MayRegister says whether a role may register a service name.
func (c *Registry) MayRegister(role pki.Role, service string) bool {
	for _, r := range c.Allow {
		if r.Role != string(role) {
			continue
		}
		for _, s := range r.Services {
			if s == service {
				return true
			}
		}
	}
	return false
}

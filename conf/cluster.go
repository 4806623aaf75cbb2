package conf

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// Registry location, shared by masterd and slaved: TLS addresses, or the
// local socket when there are none.
type RegistryRef struct {
	// Registries are the registries' TLS addresses, HOST:PORT: with
	// several masters, one per master host. A master registers with every
	// one; a slave asks them in turn. When set, Registry is not used.
	Registries []string `toml:"registries"`
	// Registry is the registry's TLS address, HOST:PORT: shorthand for a
	// list of one.
	Registry string `toml:"registry"`
	// RegistrySocket is used when there is no TLS address: the local
	// registry's socket.
	RegistrySocket string `toml:"registry_socket"`
}

// MaxRegistries bounds the registries list: one per master host.
const MaxRegistries = 9

// Addrs are the registries' TLS addresses: Registries, or else Registry;
// none means the local socket.
func (r *RegistryRef) Addrs() []string {
	if len(r.Registries) > 0 {
		return r.Registries
	}
	if r.Registry != "" {
		return []string{r.Registry}
	}
	return nil
}

func (r *RegistryRef) check(ck *checker) {
	if len(r.Registries) > MaxRegistries {
		ck.add("registries", "%d given: at most %d (one per master host)", len(r.Registries), MaxRegistries)
	}
	seen := make(map[string]bool)
	for i, a := range r.Registries {
		ck.hostPort(fmt.Sprintf("registries[%d]", i), a, true)
		if seen[a] {
			ck.add("registries", "%s is listed twice", a)
		}
		seen[a] = true
	}
	if len(r.Registries) > 0 {
		return
	}
	if r.Registry != "" {
		ck.hostPort("registry", r.Registry, true)
	} else if r.RegistrySocket == "" {
		ck.add("registry", "missing: give the registry's HOST:PORT (or registries = [...] for several), or registry_socket for a local one")
	}
}

// Raft configures the masters' raft group. With no peers, the master is a
// group of one, bootstrapped by itself: a single master needs no settings.
type Raft struct {
	// Listen is this master's raft address: mutual TLS, masters of this
	// cluster only. Port 0 picks a free port, for a group of one.
	Listen string `toml:"listen"`
	// Advertise is the raft address the other masters dial; by default
	// this master's own entry in Peers.
	Advertise string `toml:"advertise"`
	// Peers is the group to bootstrap, this master included:
	// "NAME=HOST:PORT", NAME being each master's certificate name.
	Peers []string `toml:"peers"`
	// Join: at the first start, wait to be added to a running group
	// (rpc-query masters add) instead of bootstrapping one.
	Join bool `toml:"join"`
	// FailoverGrace: how long a new leader gives every member that was up
	// to be heard from again before it may be declared dead. 0 derives it
	// (see masterd's FailoverGrace).
	FailoverGrace Duration `toml:"failover_grace"`
	// HeartbeatTimeout: a follower that has not heard from the leader for
	// 1 to 2 times this calls an election, and a leader that has not heard
	// from a quorum for this long steps down. 0 is the default, 500ms;
	// raise it across a WAN or on a machine too busy to answer in time.
	HeartbeatTimeout Duration `toml:"heartbeat_timeout"`
}

// MaxPeers bounds a raft group: more voters only slow every commit.
const MaxPeers = 9

func (r *Raft) check(ck *checker, self string) {
	ck.hostPort("raft.listen", r.Listen, false)
	if r.Advertise != "" {
		ck.hostPort("raft.advertise", r.Advertise, true)
	}
	if len(r.Peers) > MaxPeers {
		ck.add("raft.peers", "%d given: at most %d", len(r.Peers), MaxPeers)
	}
	names := make(map[string]bool)
	found := false
	for i, p := range r.Peers {
		key := fmt.Sprintf("raft.peers[%d]", i)
		name, addr, ok := strings.Cut(p, "=")
		if !ok || name == "" || addr == "" {
			ck.add(key, "%q: want NAME=HOST:PORT, NAME being that master's certificate name, such as \"m1=10.0.0.1:7114\"", p)
			continue
		}
		if err := pki.ValidName(name); err != nil {
			ck.add(key, "%q: %v", p, err)
		}
		ck.hostPort(key, addr, true)
		if names[name] {
			ck.add("raft.peers", "%s is listed twice", name)
		}
		names[name] = true
		found = found || name == self
	}
	if len(r.Peers) > 0 && self != "" && !found {
		ck.add("raft.peers", "this master (%s, the name in its certificate) is not in the list: add %s=HOST:PORT, its raft address", self, self)
	}
	if len(r.Peers) > 0 && strings.HasSuffix(r.Listen, ":0") {
		ck.add("raft.listen", "%q: with peers, give the port the others dial (the one in this master's peers entry)", r.Listen)
	}
	if r.Join && len(r.Peers) > 0 {
		ck.add("raft.join", "join = true with peers: a joining master is added by the running group; give one or the other")
	}
	if r.FailoverGrace != 0 {
		ck.duration("raft.failover_grace", r.FailoverGrace, time.Second, time.Hour)
	}
	if r.HeartbeatTimeout != 0 {
		ck.duration("raft.heartbeat_timeout", r.HeartbeatTimeout, 100*time.Millisecond, time.Minute)
	}
}

// Detector tunes failure detection on the master.
type Detector struct {
	SuspectPhi float64  `toml:"suspect_phi"`
	DeadPhi    float64  `toml:"dead_phi"`
	Window     int      `toml:"window"`
	MinDead    Duration `toml:"min_dead"` // default 1.5 x heartbeat_interval
	MaxDead    Duration `toml:"max_dead"` // default 5 x heartbeat_interval
	// CloseGrace: a slave whose connection closed is suspect at once, and
	// dead if it has not come back within this grace.
	CloseGrace Duration `toml:"close_grace"`
	// Tick is how often the detector judges every member.
	Tick Duration `toml:"tick"`
}

// Master configures masterd.
type Master struct {
	Cluster string `toml:"cluster"`
	// Listen is the TLS address ClusterService is served on. Port 0 picks a
	// free port: slaves find it through the registry.
	Listen string `toml:"listen"`
	// AdvertiseHost is the host registered for slaves to dial; by default the
	// listen host, or this machine's hostname when listening on every interface.
	AdvertiseHost string `toml:"advertise_host"`
	RegistryRef
	StateDir string `toml:"state_dir"`
	// Raft is the masters' group; see Raft.
	Raft Raft `toml:"raft"`

	HeartbeatInterval Duration `toml:"heartbeat_interval"`
	ReportInterval    Duration `toml:"report_interval"`
	Detector          Detector `toml:"detector"`
	// ReapLeft and ReapDead: how long a member that left, or is dead,
	// stays in the roll before the master forgets it (Serf's
	// tombstone_timeout and reconnect_timeout). Zero keeps it for ever.
	// MaxHeartbeatsPerSecond is this master's heartbeat budget, as Nomad's
	// max_heartbeats_per_second: past it, every slave is told a longer
	// interval, max(heartbeat_interval, slaves / budget), so the load stays
	// within what the master can serve and verdicts take longer instead of
	// coming falsely. 0 is no budget.
	MaxHeartbeatsPerSecond int      `toml:"max_heartbeats_per_second"`
	ReapLeft               Duration `toml:"reap_left_after"`
	ReapDead               Duration `toml:"reap_dead_after"`

	HandshakeTimeout Duration `toml:"handshake_timeout"`
	MaxConns         int      `toml:"max_conns"`
	LogLevel         string   `toml:"log_level"`
	// Pprof, if set, serves net/http/pprof on this loopback address.
	Pprof string `toml:"pprof"`
	// HTTPListen serves /metrics and the dashboard in plain HTTP on this
	// loopback address; "" turns it off.
	HTTPListen string `toml:"http_listen"`
	// DashboardListen, if set, serves the same over mutual TLS to admin
	// certificates only: the dashboard for other hosts.
	DashboardListen string `toml:"dashboard_listen"`

	TLS   TLS        `toml:"tls"`
	Store *pki.Store `toml:"-"`
}

// DefaultMasterHTTP is where masterd serves /metrics and its dashboard
// unless http_listen says otherwise.
const DefaultMasterHTTP = "127.0.0.1:7113"

// DefaultMaster is masterd's configuration before its file is read.
func DefaultMaster() *Master {
	return &Master{
		Cluster:           "lab",
		Listen:            ":7112",
		RegistryRef:       RegistryRef{Registry: fmt.Sprintf("127.0.0.1:%d", rpcdef.DefaultRegistryPort)},
		StateDir:          "/var/lib/muster/master",
		Raft:              Raft{Listen: "127.0.0.1:0"},
		HeartbeatInterval: Duration(time.Second),
		ReportInterval:    Duration(5 * time.Second),
		ReapLeft:          Duration(24 * time.Hour),
		// Measured on two cores: 1,000 slaves at 1 s are served with a
		// heartbeat p99 of 60 ms, 10,000 are not (docs/BENCHMARKS.md).
		MaxHeartbeatsPerSecond: 4000,
		ReapDead:               Duration(72 * time.Hour),
		Detector: Detector{
			SuspectPhi: 3,
			DeadPhi:    8,
			Window:     32,
			// MinDead and MaxDead stay zero: 1.5 and 5 heartbeat intervals.
			CloseGrace: Duration(500 * time.Millisecond),
			Tick:       Duration(50 * time.Millisecond),
		},
		HandshakeTimeout: Duration(5 * time.Second),
		MaxConns:         20000,
		LogLevel:         "info",
		HTTPListen:       DefaultMasterHTTP,
	}
}

// LoadMaster reads a masterd config file over the defaults and validates it.
func LoadMaster(path string) (*Master, error) {
	c := DefaultMaster()
	if err := decode(path, c); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	c.TLS.resolve(dir)
	resolvePath(dir, &c.StateDir)
	resolvePath(dir, &c.RegistrySocket)
	st, err := c.TLS.load(path)
	c.Store = st
	if err := errors.Join(c.Validate(path), err); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every value and, if Store is loaded, that the certificate
// is a master's of the configured cluster; file names the config in errors.
// It reads no file: LoadMaster reads the certificates first.
func (c *Master) Validate(file string) error {
	ck := &checker{file: file}
	ck.name("cluster", c.Cluster)
	ck.hostPort("listen", c.Listen, false)
	c.RegistryRef.check(ck)
	if c.StateDir == "" {
		ck.add("state_dir", "missing: give a directory the master may keep its roster in")
	}
	self := ""
	if c.Store != nil {
		self = c.Store.Identity().Name
	}
	c.Raft.check(ck, self)
	ck.duration("heartbeat_interval", c.HeartbeatInterval, 50*time.Millisecond, time.Minute)
	ck.duration("report_interval", c.ReportInterval, 50*time.Millisecond, time.Hour)
	if c.MaxHeartbeatsPerSecond < 0 || c.MaxHeartbeatsPerSecond > 1_000_000 {
		ck.add("max_heartbeats_per_second", "%d is out of range: want 0 (no budget) to 1000000", c.MaxHeartbeatsPerSecond)
	}
	for _, r := range []struct {
		key string
		d   Duration
	}{{"reap_left_after", c.ReapLeft}, {"reap_dead_after", c.ReapDead}} {
		if r.d != 0 {
			ck.duration(r.key, r.d, time.Second, 100*365*24*time.Hour)
		}
	}
	if c.ReportInterval < c.HeartbeatInterval {
		ck.add("report_interval", "%v is shorter than heartbeat_interval = %v: reports are the heavier call; make it at least as long", c.ReportInterval.D(), c.HeartbeatInterval.D())
	}
	d := c.Detector
	hb := c.HeartbeatInterval.D()
	if !(d.SuspectPhi > 0) || !(d.DeadPhi > d.SuspectPhi) || math.IsInf(d.DeadPhi, 0) { // NaN fails every comparison
		ck.add("detector.dead_phi", "want 0 < suspect_phi < dead_phi, got suspect_phi = %g and dead_phi = %g", d.SuspectPhi, d.DeadPhi)
	}
	ck.positive("detector.window", d.Window, 64)
	minDead, maxDead := c.DeadBounds()
	if minDead <= hb {
		ck.add("detector.min_dead", "%v is not longer than heartbeat_interval = %v: every on-time node would be declared dead", minDead, hb)
	}
	if maxDead < minDead {
		ck.add("detector.max_dead", "%v is shorter than min_dead = %v", maxDead, minDead)
	}
	if maxDead > 5*time.Minute {
		ck.add("detector.max_dead", "%v is longer than 5m, the most the detector keeps", maxDead)
	}
	ck.duration("detector.close_grace", d.CloseGrace, 0, time.Minute)
	ck.duration("detector.tick", d.Tick, time.Millisecond, time.Second)
	if d.Tick.D() >= minDead {
		ck.add("detector.tick", "%v is not shorter than min_dead = %v", d.Tick.D(), minDead)
	}
	ck.duration("handshake_timeout", c.HandshakeTimeout, 100*time.Millisecond, time.Minute)
	ck.positive("max_conns", c.MaxConns, 1<<20)
	ck.logLevel(c.LogLevel)
	ck.pprof(c.Pprof)
	ck.httpListen(c.HTTPListen, DefaultMasterHTTP, " (for other hosts, set dashboard_listen: mutual TLS, admin certificates)")
	if c.DashboardListen != "" {
		ck.hostPort("dashboard_listen", c.DashboardListen, false)
		if c.DashboardListen == c.HTTPListen || c.DashboardListen == c.Listen || c.DashboardListen == c.Pprof {
			ck.add("dashboard_listen", "%q is also the address of listen, http_listen or pprof: give it a port of its own", c.DashboardListen)
		}
	}
	c.TLS.check(ck, c.Store)
	c.TLS.checkIdentity(ck, c.Store, pki.RoleMaster, c.Cluster)
	return ck.err()
}

// DeadBounds are the detector's floor and ceiling: min_dead and max_dead,
// or 1.5 and 5 heartbeat intervals where they are not set.
func (c *Master) DeadBounds() (minDead, maxDead time.Duration) {
	hb := c.HeartbeatInterval.D()
	minDead, maxDead = c.Detector.MinDead.D(), c.Detector.MaxDead.D()
	if minDead == 0 {
		minDead = hb * 3 / 2
	}
	if maxDead == 0 {
		maxDead = 5 * hb
	}
	return minDead, maxDead
}

// Slave configures slaved.
type Slave struct {
	Cluster string `toml:"cluster"`
	// Node is this slave's name; it must be the name in its certificate,
	// and defaults to it.
	Node string `toml:"node"`
	RegistryRef
	// Socket is slaved's local socket, where rpc-query view reads its view.
	Socket string `toml:"socket"`
	// Mounts are the filesystems whose use is reported.
	Mounts []string `toml:"mounts"`
	// ProcRoot is where /proc is read from.
	ProcRoot string `toml:"proc_root"`
	// CallTimeout bounds each heartbeat and report.
	CallTimeout Duration `toml:"call_timeout"`
	// MaxBackoff caps the wait between attempts to find and join the master.
	MaxBackoff Duration `toml:"max_backoff"`
	LogLevel   string   `toml:"log_level"`

	TLS   TLS        `toml:"tls"`
	Store *pki.Store `toml:"-"`
}

// DefaultSlave is slaved's configuration before its file is read.
func DefaultSlave() *Slave {
	return &Slave{
		Cluster:     "lab",
		RegistryRef: RegistryRef{Registry: fmt.Sprintf("127.0.0.1:%d", rpcdef.DefaultRegistryPort)},
		Socket:      rpcdef.DefaultSlaveSocket,
		Mounts:      []string{"/"},
		ProcRoot:    "/proc",
		CallTimeout: Duration(2 * time.Second),
		MaxBackoff:  Duration(2 * time.Second),
		LogLevel:    "info",
	}
}

// LoadSlave reads a slaved config file over the defaults and validates it.
func LoadSlave(path string) (*Slave, error) {
	c := DefaultSlave()
	if err := decode(path, c); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	c.TLS.resolve(dir)
	resolvePath(dir, &c.Socket)
	resolvePath(dir, &c.RegistrySocket)
	st, err := c.TLS.load(path)
	c.Store = st
	if st != nil && c.Node == "" {
		c.Node = st.Identity().Name
	}
	if err := errors.Join(c.Validate(path), err); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks every value and, if Store is loaded, that the certificate
// is a slave's of the configured cluster, named node (when node is set);
// file names the config in errors. It reads no file: LoadSlave reads the
// certificates first, and sets node from the certificate when it is "".
func (c *Slave) Validate(file string) error {
	ck := &checker{file: file}
	ck.name("cluster", c.Cluster)
	if c.Node != "" {
		ck.name("node", c.Node)
	}
	c.RegistryRef.check(ck)
	if len(c.Mounts) > rpcdef.MaxDisks {
		ck.add("mounts", "lists %d filesystems; the master takes reports of at most %d", len(c.Mounts), rpcdef.MaxDisks)
	}
	for i, m := range c.Mounts {
		switch {
		case !filepath.IsAbs(m):
			ck.add(fmt.Sprintf("mounts[%d]", i), "%q is not an absolute path", m)
		case len(m) > rpcdef.MaxMountLen:
			ck.add(fmt.Sprintf("mounts[%d]", i), "is %d bytes long; the master takes mount paths of at most %d", len(m), rpcdef.MaxMountLen)
		}
	}
	if c.ProcRoot == "" {
		ck.add("proc_root", "missing: normally /proc")
	}
	ck.duration("call_timeout", c.CallTimeout, 50*time.Millisecond, time.Minute)
	ck.duration("max_backoff", c.MaxBackoff, 50*time.Millisecond, 10*time.Minute)
	ck.logLevel(c.LogLevel)
	c.TLS.check(ck, c.Store)
	if id, ok := c.TLS.checkIdentity(ck, c.Store, pki.RoleSlave, c.Cluster); ok && c.Node != "" && c.Node != id.Name {
		ck.add("node", "%s is for slave %s but the config says node = %q; a slave's name is the one in its certificate",
			c.TLS.certName(), id.Name, c.Node)
	}
	return ck.err()
}

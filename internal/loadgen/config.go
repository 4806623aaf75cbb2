// Package loadgen simulates thousands of slaves against a real masterd, each
// with its own certificate and TLS connection, and measures what the master
// does under that load: heartbeat latency, its CPU and memory, false deaths,
// how fast it detects killed and silenced slaves, and how fast it tells the
// others.
package loadgen

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/muster-lab/muster/conf"
)

// Hard limits: every loop that sends traffic is bounded.
const (
	MaxSlaves    = 50000
	MaxDuration  = 15 * time.Minute
	MaxJoinPhase = 15 * time.Minute
	MaxVictims   = 1000
)

// Config is one run.
type Config struct {
	// Exactly one of Registry (look ClusterService/<cluster> up there) and
	// Master (dial it directly) is set. Registry is a comma-separated list
	// of HOST:PORT, asked in turn from a random one, as slaved asks its
	// registries. Either way, a simulated slave then follows the masters
	// the replies name, and the leader a follower names.
	Registry string
	Master   string
	Cluster  string // must be the CA's; "" takes the CA's

	CAFile, CAKeyFile       string // the cluster CA: it issues every simulated slave's certificate
	AdminCert, AdminKeyFile string // the observer's; "" issues an admin certificate from the CA

	Slaves     int           // simulated slaves
	Prefix     string        // their names: PREFIX00001...
	Duration   time.Duration // how long they stay after the cold join
	JoinRate   int           // joins (TLS handshake + Join) in flight at once; handshakes at any time
	JoinPhase  time.Duration // the cold join must end within this
	Watchers   int           // simulated slaves that keep a Watch pending; -1 is all
	WatchStart string        // "join": each watches right after its join, as slaved; "ready": all start after the cold join
	// Roll asks for the roll in every Join reply, as slaved does. Without
	// it a join is O(1) bytes instead of O(N).
	Roll bool

	Kill    int           // simulated slaves killed (connection closed, no Leave)
	Silence int           // simulated slaves silenced (connection open, no more heartbeats)
	At      time.Duration // when, after the cold join, the first is struck
	Spacing time.Duration // between two strikes

	CallTimeout time.Duration // heartbeat and report deadline, as slaved's call_timeout
	MasterPID   int           // masterd's pid for CPU and RSS; 0 is none
	ProcRoot    string        // where /proc is
	Sample      time.Duration // how often CPU and RSS are read

	AllowRemote bool // let the master be on another host than this one
}

// Watch start modes.
const (
	WatchAtJoin  = "join"
	WatchAtReady = "ready"
)

// DefaultConfig is a small run: 100 slaves for a minute, nothing killed.
func DefaultConfig() Config {
	return Config{
		Prefix:      "sim-",
		Slaves:      100,
		Duration:    time.Minute,
		JoinRate:    64,
		JoinPhase:   5 * time.Minute,
		Watchers:    -1,
		WatchStart:  WatchAtJoin,
		Roll:        true,
		At:          20 * time.Second,
		Spacing:     250 * time.Millisecond,
		CallTimeout: 2 * time.Second,
		ProcRoot:    "/proc",
		Sample:      time.Second,
	}
}

// Validate checks c and says what to change.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	regs := splitAddrs(c.Registry)
	switch {
	case len(regs) == 0 && c.Master == "":
		bad("give --registry HOST:PORT[,HOST:PORT...] (ClusterService/<cluster> is looked up there) or --master HOST:PORT")
	case len(regs) > 0 && c.Master != "":
		bad("--registry %s and --master %s both given: give one", c.Registry, c.Master)
	}
	if len(regs) > conf.MaxRegistries {
		bad("--registry lists %d registries: at most %d (one per master host)", len(regs), conf.MaxRegistries)
	}
	for i, a := range regs {
		switch {
		case a == "":
			bad("--registry %q: entry %d is empty: want HOST:PORT,HOST:PORT", c.Registry, i+1)
		case slices.Contains(regs[:i], a):
			bad("--registry: %s is listed twice", a)
		default:
			if err := c.checkAddr(a); err != nil {
				bad("--registry: %v", err)
			}
		}
	}
	if c.Master != "" {
		if err := c.checkAddr(c.Master); err != nil {
			bad("--master: %v", err)
		}
	}
	if c.CAFile == "" || c.CAKeyFile == "" {
		bad("--ca and --ca-key are required: the cluster's CA issues every simulated slave's certificate")
	}
	if (c.AdminCert == "") != (c.AdminKeyFile == "") {
		bad("--admin-cert and --admin-key go together (or leave both out to issue one from the CA)")
	}
	if c.Slaves < 1 || c.Slaves > MaxSlaves {
		bad("-n %d: want 1 to %d", c.Slaves, MaxSlaves)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration {
		bad("--duration %v: want more than 0 and at most %v", c.Duration, MaxDuration)
	}
	if c.JoinPhase <= 0 || c.JoinPhase > MaxJoinPhase {
		bad("--join-timeout %v: want more than 0 and at most %v", c.JoinPhase, MaxJoinPhase)
	}
	if c.JoinRate < 1 || c.JoinRate > 4096 {
		bad("--join-rate %d: want 1 to 4096 joins in flight", c.JoinRate)
	}
	if c.Watchers < -1 || c.Watchers > c.Slaves {
		bad("--watchers %d: want 0 to -n (%d), or -1 for all", c.Watchers, c.Slaves)
	}
	if c.WatchStart != WatchAtJoin && c.WatchStart != WatchAtReady {
		bad("--watch-start %q: want %q or %q", c.WatchStart, WatchAtJoin, WatchAtReady)
	}
	if c.Kill < 0 || c.Silence < 0 || c.Kill+c.Silence > min(MaxVictims, c.Slaves/2) {
		bad("--kill %d --silence %d: want at most %d together (half of -n, and at most %d)", c.Kill, c.Silence, min(MaxVictims, c.Slaves/2), MaxVictims)
	}
	if c.Kill+c.Silence > 0 {
		last := c.At + time.Duration(c.Kill+c.Silence-1)*c.Spacing
		if c.At < 0 || c.Spacing < 0 || last >= c.Duration {
			bad("--at %v with --spacing %v strikes the last at %v, not within --duration %v", c.At, c.Spacing, last, c.Duration)
		}
	}
	if c.CallTimeout <= 0 {
		bad("--call-timeout %v: want a positive duration", c.CallTimeout)
	}
	if c.Sample <= 0 {
		bad("sample interval %v: want a positive duration", c.Sample)
	}
	if c.MasterPID < 0 {
		bad("--master-pid %d: want a process id", c.MasterPID)
	}
	return errors.Join(errs...)
}

// maxAddrLen bounds a HOST:PORT: a DNS name at its longest, brackets, a
// colon and a port.
const maxAddrLen = 253 + 2 + 1 + 5

// checkAddr checks an address loadgen is given or told to dial (by a
// registry, a masters list, a follower naming the leader): HOST:PORT, with
// a port from 1 to 65535, on this host unless AllowRemote.
func (c *Config) checkAddr(addr string) error {
	if len(addr) > maxAddrLen {
		return fmt.Errorf("address %.20q... is %d bytes: want HOST:PORT, at most %d", addr, len(addr), maxAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%q: want HOST:PORT", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", addr, port)
	}
	return c.checkHost(addr)
}

// checkHost refuses an address off this host unless AllowRemote: loadgen
// opens thousands of connections and should not be pointed elsewhere by
// mistake.
func (c *Config) checkHost(addr string) error {
	if c.AllowRemote {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s is not a loopback address: loadgen loads a master on this host only (pass --allow-remote to load another)", addr)
}

// watcher says whether simulated slave i keeps a Watch pending: the
// watchers are spread evenly over the slaves.
func (c *Config) watcher(i int) bool {
	w := c.Watchers
	if w < 0 || w >= c.Slaves {
		return true
	}
	return (i+1)*w/c.Slaves != i*w/c.Slaves
}

// strike is a simulated slave to kill or silence.
type strike struct {
	idx int
	how string // howKill or howSilence
}

// victims are the indexes struck, spread evenly, with how each is struck:
// kills and silences alternate while both last.
func (c *Config) victims() []strike {
	total := c.Kill + c.Silence
	out := make([]strike, 0, total)
	kills, silences := c.Kill, c.Silence
	for j := range total {
		how := howKill
		if silences > 0 && (kills == 0 || j%2 == 1) {
			how = howSilence
		}
		if how == howKill {
			kills--
		} else {
			silences--
		}
		out = append(out, strike{idx: (2*j + 1) * c.Slaves / (2 * total), how: how})
	}
	return out
}

// name is simulated slave i's node name, counting from 1.
func (c *Config) name(i int) string { return fmt.Sprintf("%s%05d", c.Prefix, i+1) }

// Command loadgen simulates thousands of slaves against a real masterd and
// measures it: heartbeat latency, the master's CPU and memory, false deaths,
// detection of killed and silenced slaves, and the fan-out of their deaths.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/loadgen"
)

const about = `Simulates N slaves against a running masterd. Each has its own certificate,
issued in memory by the cluster's CA, and its own TLS connection carrying Join,
Heartbeat, Report and Watch, as slaved does. After the cold join of all N it
runs for --duration; --at into that it kills --kill of them (the connection
closed, no Leave) and silences --silence (the connection open, heartbeats
stopped), --spacing apart. An admin certificate (issued from the CA unless
--admin-cert is given) watches the master's events.

It prints heartbeat RPC latency, masterd's CPU and RSS (from /proc/PID, with
--master-pid), false deaths (a live simulated slave declared suspect or dead),
detection latency (strike -> the master's event), fan-out latency (the dead
event -> every other simulated slave's Watch returned it) and the cold-join
time; --json prints the same as JSON. Exit status 1 if there was a false
death, a strike not detected or delivered, or the run could not finish.

With several masters (issue 15) the simulated slaves follow the leader as
slaved does. A follower's "not the leader" names the leader, and the slave
joins there in one hop. When a slave's master stops answering (SIGKILL the
leader), it tries the masters the last Join or Heartbeat reply named, leader
first and the lost one last, then the registries (--registry takes several,
comma-separated, asked in turn from a random one) or --master, with backoff
and jitter; the new leader's "not joined" makes it join again with the same
incarnation. A failover is not a false death: only the master's suspect and
dead events of a live slave are. The summary counts failovers (a slave joined
again after its master stopped answering), redirects to the leader and leader
changes, beside rejoins and reconnects. For 20 failovers in a row, run with a
--duration long enough for them, and kill and restart the leader meanwhile
(the registries of the master hosts below; --master-pid follows one process,
so leave it out, or read its figures as those of that master alone):

  loadgen --registry 127.0.0.1:7111,127.0.0.1:7121,127.0.0.1:7131 \
    --ca certs/ca.pem --ca-key certs/ca-key.pem -n 1000 --duration 10m

The detector needs 16 heartbeats of history for its fast regime (dead about
1.5s after the last heartbeat; about 3.6s before): keep --at at 18s or more to
measure that, or expect the slower figures.

Benchmarks. make bench runs the set of record (internal/benchset's
StandardPlan) and prints each command line it ran in docs/BENCHMARKS.md,
with --json and its lab's registry address and masterd pid. By hand: start
registryd and masterd from conf/examples in a lab directory (certs/ from
certgen; in master.toml set pprof = "127.0.0.1:6060" to profile it), then,
from that directory, run what make bench runs:

  N=100:
    loadgen --registry 127.0.0.1:7111 --ca certs/ca.pem \
      --ca-key certs/ca-key.pem --master-pid $(pidof masterd) \
      -n 100 --duration 30s --at 20s --kill 5 --silence 5
  N=1,000:
    loadgen --registry 127.0.0.1:7111 --ca certs/ca.pem \
      --ca-key certs/ca-key.pem --master-pid $(pidof masterd) \
      -n 1000 --duration 45s --at 22s --kill 10 --silence 10
  N=10,000 (ulimit -n 20000 for both loadgen and masterd):
    loadgen --registry 127.0.0.1:7111 --ca certs/ca.pem \
      --ca-key certs/ca-key.pem --master-pid $(pidof masterd) \
      -n 10000 --duration 5m --join-timeout 10m --roll=false \
      --watch-start ready --at 60s --kill 10 --silence 10 --spacing 10s

At 10,000 the joins leave the roll out (--roll=false) and the watchers start
after the cold join (--watch-start ready): with the roll in every join reply
and every watcher told of every join, a cold join of N moves O(N²) members and
events, 50 million at 10,000.

Every run is bounded: --duration at most 15m, --join-timeout at most 15m.

loadgen holds its own garbage collector back (as GOGC=off with GOMEMLIMIT at
a quarter of the machine's memory, at most 8 GiB) unless GOGC or GOMEMLIMIT is
set: one collection of the heap of 10,000 simulated slaves takes most of a
second on two cores, and the heartbeats it delays are late at the master.`

func main() {
	os.Exit(run(os.Args[1:]))
}

// holdGC keeps the collector from running until the heap reaches a quarter
// of the machine's memory (at most 8 GiB), unless the environment says
// otherwise. It returns the limit, or 0 if it left the collector alone.
func holdGC() int64 {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	limit := min(int64(si.Totalram)*int64(si.Unit)/4, 8<<30)
	debug.SetMemoryLimit(limit)
	debug.SetGCPercent(-1)
	return limit
}

func run(args []string) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	daemon.Usage(fs, "loadgen (--registry HOST:PORT[,HOST:PORT...] | --master HOST:PORT) --ca FILE --ca-key FILE [-n N] [flags]", about)
	c := loadgen.DefaultConfig()
	fs.StringVar(&c.Registry, "registry", "", "the registries, `HOST:PORT[,HOST:PORT...]` (at most 9): ClusterService/<cluster> is looked up in each in turn, from a random one, as slaved does")
	fs.StringVar(&c.Master, "master", "", "a master's `HOST:PORT`, dialled directly instead (a follower names the leader)")
	fs.StringVar(&c.Cluster, "cluster", "", "the cluster's `name`; must be the CA's (default: the CA's)")
	fs.StringVar(&c.CAFile, "ca", "", "the cluster CA's certificate `file` (ca.pem)")
	fs.StringVar(&c.CAKeyFile, "ca-key", "", "the cluster CA's key `file` (ca-key.pem): it issues every simulated slave's certificate")
	fs.StringVar(&c.AdminCert, "admin-cert", "", "the observer's admin certificate `file` (default: issue one from the CA)")
	fs.StringVar(&c.AdminKeyFile, "admin-key", "", "the observer's admin key `file`")
	fs.IntVar(&c.Slaves, "n", c.Slaves, "how many slaves to simulate, named PREFIX00001...")
	fs.StringVar(&c.Prefix, "prefix", c.Prefix, "the simulated slaves' name `prefix`")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long the slaves run after the cold join (at most 15m)")
	fs.DurationVar(&c.JoinPhase, "join-timeout", c.JoinPhase, "the cold join of all N must end within this (at most 15m)")
	fs.IntVar(&c.JoinRate, "join-rate", c.JoinRate, "joins (TCP + TLS handshake + Join) in flight at once during the cold join; connections being made (TCP + TLS handshake) at once at any time, as after a failover")
	fs.IntVar(&c.Watchers, "watchers", c.Watchers, "how many of the slaves keep a Watch pending; -1 is all")
	fs.StringVar(&c.WatchStart, "watch-start", c.WatchStart, `when the watchers start: "join" (each right after its join, as slaved) or "ready" (all after the cold join)`)
	fs.BoolVar(&c.Roll, "roll", c.Roll, "ask for the whole roll in every Join reply, as slaved does (--roll=false: the reply without it)")
	fs.IntVar(&c.Kill, "kill", 0, "how many slaves to kill: connection closed, no Leave")
	fs.IntVar(&c.Silence, "silence", 0, "how many slaves to silence: connection open, heartbeats stopped")
	fs.DurationVar(&c.At, "at", c.At, "when, after the cold join, to strike the first victim")
	fs.DurationVar(&c.Spacing, "spacing", c.Spacing, "time between two strikes")
	fs.DurationVar(&c.CallTimeout, "call-timeout", c.CallTimeout, "deadline of each heartbeat and report, as slaved's call_timeout")
	fs.IntVar(&c.MasterPID, "master-pid", 0, "masterd's `pid`, to read its CPU and RSS from /proc")
	fs.BoolVar(&c.AllowRemote, "allow-remote", false, "allow a registry or master that is not on a loopback address")
	pprofAddr := fs.String("pprof", "", "loopback `HOST:PORT` to serve net/http/pprof on, to profile loadgen itself")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	level := fs.String("log-level", "info", "progress log level on stderr: debug, info, warn, error")
	if code, done := daemon.Parse(fs, args, os.Stdout, os.Stderr); done {
		return code
	}
	if err := c.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		return 2
	}

	log := daemon.NewLogger(*level)
	if limit := holdGC(); limit > 0 {
		log.Debugf("garbage collection held back until the heap reaches %d MiB", limit>>20)
	}
	if *pprofAddr != "" {
		srv, err := daemon.Pprof(*pprofAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
			return 1
		}
		defer srv.Close()
	}
	ctx, stop := daemon.Context()
	defer stop()
	res, err := loadgen.Run(ctx, c, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		err = res.WriteTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		return 1
	}
	if len(res.Problems()) > 0 {
		return 1
	}
	return 0
}

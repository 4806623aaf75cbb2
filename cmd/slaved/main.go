// Command slaved is muster's slave: it finds the cluster's master through the
// registry, joins, heartbeats, reports this host's resources, and serves its
// view of the cluster on a local socket.
package main

import (
	"flag"
	"os"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/slaved"
)

func main() {
	fs := flag.NewFlagSet("slaved", flag.ExitOnError)
	daemon.Usage(fs, "slaved [--config FILE]",
		"Joins a muster cluster as the node named in its slave certificate. It looks up\n"+
			"ClusterService/CLUSTER in the registry (it is never told the master's address),\n"+
			"accepts only a server with a master certificate, heartbeats at the interval the\n"+
			"master sets, reports CPU, memory, disk and network use, and keeps a view of every\n"+
			"member, which 'rpc-query view --slave-socket PATH' reads from its local socket.\n"+
			"A lost master is looked up again with backoff. SIGHUP reloads the certificates;\n"+
			"SIGTERM leaves the cluster gracefully and stops. See conf/examples/slave.toml.")
	path := fs.String("config", "/etc/muster/slave.toml", "config `file`")
	fs.Parse(os.Args[1:])

	cfg, err := conf.LoadSlave(*path)
	if err != nil {
		daemon.Fatal(os.Stderr, "slaved", err)
	}
	logger := daemon.NewLogger(cfg.LogLevel)
	log := logger.WithField("node", cfg.Node)
	s, err := slaved.New(cfg, log)
	if err != nil {
		daemon.Fatal(os.Stderr, "slaved", err)
	}
	defer s.Close()

	ctx, stop := daemon.Context()
	defer stop()
	daemon.OnHangup(ctx, log, s.Reload)
	daemon.WarnExpiry(ctx, log, cfg.Store.NotAfter, cfg.TLS.Cert)
	if err := s.Run(ctx); err != nil {
		daemon.Fatal(os.Stderr, "slaved", err)
	}
	log.Info("stopped")
}

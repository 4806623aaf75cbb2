// Command slaved is muster's slave: it finds the cluster's master through the
// registry, joins, heartbeats, reports this host's resources, and serves its
// view of the cluster on a local socket.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/slaved"
)

func main() { os.Exit(run(os.Args[1:])) }

// run is slaved; it returns the exit status once its deferred cleanup has run.
func run(args []string) int {
	ctx, stop := daemon.Context()
	defer stop()
	fs := flag.NewFlagSet("slaved", flag.ContinueOnError)
	daemon.Usage(fs, "slaved [--config FILE] [--check]",
		"Joins a muster cluster as the node named in its slave certificate. It looks up\n"+
			"ClusterService/CLUSTER in the registry (no master's address is configured),\n"+
			"accepts only a server with a master certificate, heartbeats at the interval the\n"+
			"master sets, reports CPU, memory, disk and network use, and keeps a view of every\n"+
			"member, which 'rpc-query view --slave-socket PATH' reads from its local socket.\n"+
			"With several masters it joins the leader (a follower names it), keeps the masters\n"+
			"list it is told, and when its master goes tries those before the registries, with\n"+
			"backoff. SIGHUP reloads the certificates; SIGTERM leaves the cluster gracefully\n"+
			"and stops. See conf/examples/slave.toml.\n\n"+
			"Exit status: 0 after SIGTERM or a valid --check, 1 on a bad config or a\n"+
			"failure, 2 on a bad command line.")
	path := fs.String("config", "/etc/muster/slave.toml", "config `file`")
	check := fs.Bool("check", false, "check the config and its certificates, print a summary and exit (0 if valid, 1 if not); binds nothing, touches no state")
	if code, done := daemon.Parse(fs, args, os.Stdout, os.Stderr); done {
		return code
	}

	cfg, err := conf.LoadSlave(*path)
	if err != nil {
		return daemon.Fail(os.Stderr, "slaved", err)
	}
	if *check {
		reg := "registry socket " + cfg.RegistrySocket
		switch addrs := cfg.Addrs(); len(addrs) {
		case 0:
		case 1:
			reg = "registry " + addrs[0]
		default:
			reg = "registries " + strings.Join(addrs, ", ")
		}
		return daemon.Valid(os.Stdout, *path, fmt.Sprintf("slave %s of cluster %s; %s, socket %q",
			cfg.Node, cfg.Cluster, reg, cfg.Socket), cfg.Store.NotAfter())
	}
	logger := daemon.NewLogger(cfg.LogLevel)
	log := logger.WithField("node", cfg.Node)
	s, err := slaved.New(cfg, log)
	if err != nil {
		return daemon.Fail(os.Stderr, "slaved", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			log.WithError(err).Warn("close")
		}
		log.Info("stopped")
	}()

	daemon.OnHangup(ctx, log, s.Reload)
	daemon.WarnExpiry(ctx, log, cfg.Store.NotAfter, cfg.TLS.Cert)
	if err := s.Run(ctx); err != nil {
		return daemon.Fail(os.Stderr, "slaved", err)
	}
	return 0
}

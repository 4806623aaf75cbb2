// Command registryd is muster's service registry: the portmapper every node
// asks where ClusterService is.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/registry"
)

func main() { os.Exit(run(os.Args[1:])) }

// run is registryd; it returns the exit status once its deferred cleanup has run.
func run(args []string) int {
	ctx, stop := daemon.Context()
	defer stop()
	fs := flag.NewFlagSet("registryd", flag.ContinueOnError)
	daemon.Usage(fs, "registryd [--config FILE] [--check]",
		"Serves the service registry: TLS on the well-known port 7111 and a local UNIX socket.\n"+
			"Registrations are leases that expire unless renewed; the table survives restarts.\n"+
			"SIGHUP reloads the certificates; SIGTERM stops. See conf/examples/registry.toml.\n\n"+
			"Exit status: 0 after SIGTERM or a valid --check, 1 on a bad config or a\n"+
			"failure, 2 on a bad command line.")
	path := fs.String("config", "/etc/muster/registry.toml", "config `file`")
	check := fs.Bool("check", false, "check the config and its certificates, print a summary and exit (0 if valid, 1 if not); binds nothing, touches no state")
	if code, done := daemon.Parse(fs, args, os.Stdout, os.Stderr); done {
		return code
	}

	cfg, err := conf.LoadRegistry(*path)
	if err != nil {
		return daemon.Fail(os.Stderr, "registryd", err)
	}
	id := cfg.Store.Identity()
	if *check {
		return daemon.Valid(os.Stdout, *path, fmt.Sprintf("registry %s of cluster %s; listen %s, socket %q, http_listen %q",
			id.Name, id.Cluster, cfg.Listen, cfg.Socket, cfg.HTTPListen), cfg.Store.NotAfter())
	}
	logger := daemon.NewLogger(cfg.LogLevel)
	log := logger.WithField("node", id.Name)
	srv, err := registry.New(cfg, log)
	if err != nil {
		return daemon.Fail(os.Stderr, "registryd", err)
	}
	defer func() {
		if err := srv.Close(); err != nil {
			log.WithError(err).Warn("close")
		}
		log.Info("stopped")
	}()

	daemon.OnHangup(ctx, log, srv.Reload)
	daemon.WarnExpiry(ctx, log, cfg.Store.NotAfter, cfg.TLS.Cert)
	daemon.Ready(log, logrus.Fields{"addr": srv.Addr().String(), "socket": cfg.Socket, "ttl": cfg.LeaseTTL.D()})
	if err := srv.Run(ctx); err != nil {
		return daemon.Fail(os.Stderr, "registryd", err)
	}
	return 0
}

// Command registryd is muster's service registry: the portmapper every node
// asks where ClusterService is.
package main

import (
	"flag"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/registry"
)

func main() {
	fs := flag.NewFlagSet("registryd", flag.ExitOnError)
	daemon.Usage(fs, "registryd [--config FILE]",
		"Serves the service registry: TLS on the well-known port 7111 and a local UNIX socket.\n"+
			"Registrations are leases that expire unless renewed; the table survives restarts.\n"+
			"SIGHUP reloads the certificates; SIGTERM stops. See conf/examples/registry.toml.")
	path := fs.String("config", "/etc/muster/registry.toml", "config `file`")
	fs.Parse(os.Args[1:])

	cfg, err := conf.LoadRegistry(*path)
	if err != nil {
		daemon.Fatal(os.Stderr, "registryd", err)
	}
	logger := daemon.NewLogger(cfg.LogLevel)
	log := logger.WithField("node", cfg.Store.Identity().Name)
	srv, err := registry.New(cfg, log)
	if err != nil {
		daemon.Fatal(os.Stderr, "registryd", err)
	}
	defer srv.Close()

	ctx, stop := daemon.Context()
	defer stop()
	daemon.OnHangup(ctx, log, srv.Reload)
	daemon.WarnExpiry(ctx, log, cfg.Store.NotAfter, cfg.TLS.Cert)
	daemon.Ready(log, logrus.Fields{"addr": srv.Addr().String(), "socket": cfg.Socket, "ttl": cfg.LeaseTTL.D()})
	if err := srv.Run(ctx); err != nil {
		daemon.Fatal(os.Stderr, "registryd", err)
	}
	log.Info("stopped")
}

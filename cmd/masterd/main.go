// Command masterd is muster's master: it keeps the roll of the cluster,
// detects crashed slaves and tells every member.
package main

import (
	"flag"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/masterd"
)

func main() {
	fs := flag.NewFlagSet("masterd", flag.ExitOnError)
	daemon.Usage(fs, "masterd [--config FILE]",
		"Serves ClusterService over mutual TLS and registers it in the registry, which is\n"+
			"how slaves find it. Slaves join, heartbeat and report; the master detects a\n"+
			"crashed or silent slave and tells every other member. The roster is kept in\n"+
			"state_dir across restarts. SIGHUP reloads the certificates; SIGTERM\n"+
			"unregisters and stops. See conf/examples/master.toml.")
	path := fs.String("config", "/etc/muster/master.toml", "config `file`")
	fs.Parse(os.Args[1:])

	cfg, err := conf.LoadMaster(*path)
	if err != nil {
		daemon.Fatal(os.Stderr, "masterd", err)
	}
	logger := daemon.NewLogger(cfg.LogLevel)
	log := logger.WithField("node", cfg.Store.Identity().Name)
	srv, err := masterd.New(cfg, log)
	if err != nil {
		daemon.Fatal(os.Stderr, "masterd", err)
	}
	defer srv.Close()

	ctx, stop := daemon.Context()
	defer stop()
	daemon.OnHangup(ctx, log, srv.Reload)
	daemon.WarnExpiry(ctx, log, cfg.Store.NotAfter, cfg.TLS.Cert)
	daemon.Ready(log, logrus.Fields{"addr": srv.Addr().String(), "advertise": srv.Advertised(), "cluster": cfg.Cluster})
	if err := srv.Run(ctx); err != nil {
		daemon.Fatal(os.Stderr, "masterd", err)
	}
	log.Info("stopped")
}

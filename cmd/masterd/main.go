// Command masterd is muster's master: it keeps the roll of the cluster,
// detects crashed slaves and tells every member.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/masterd"
)

func main() { os.Exit(run(os.Args[1:])) }

// run is masterd; it returns the exit status once its deferred cleanup has run.
func run(args []string) int {
	ctx, stop := daemon.Context()
	defer stop()
	fs := flag.NewFlagSet("masterd", flag.ContinueOnError)
	daemon.Usage(fs, "masterd [--config FILE] [--check]",
		"Serves ClusterService over mutual TLS and registers it in the registry, which is\n"+
			"how slaves find it. Slaves join, heartbeat and report; the master detects a\n"+
			"crashed or silent slave and tells every other member. The roster is kept in\n"+
			"state_dir across restarts. SIGHUP reloads the certificates; SIGTERM\n"+
			"unregisters and stops. See conf/examples/master.toml.\n\n"+
			"Exit status: 0 after SIGTERM or a valid --check, 1 on a bad config or a\n"+
			"failure, 2 on a bad command line.")
	path := fs.String("config", "/etc/muster/master.toml", "config `file`")
	check := fs.Bool("check", false, "check the config and its certificates, print a summary and exit (0 if valid, 1 if not); binds nothing, touches no state")
	if code, done := daemon.Parse(fs, args, os.Stdout, os.Stderr); done {
		return code
	}

	cfg, err := conf.LoadMaster(*path)
	if err != nil {
		return daemon.Fail(os.Stderr, "masterd", err)
	}
	id := cfg.Store.Identity()
	if *check {
		reg := cfg.Registry
		if reg == "" {
			reg = "socket " + cfg.RegistrySocket
		}
		return daemon.Valid(os.Stdout, *path, fmt.Sprintf("master %s of cluster %s; listen %s, registry %s, http_listen %q",
			id.Name, id.Cluster, cfg.Listen, reg, cfg.HTTPListen), cfg.Store.NotAfter())
	}
	logger := daemon.NewLogger(cfg.LogLevel)
	log := logger.WithField("node", id.Name)
	srv, err := masterd.New(cfg, log)
	if err != nil {
		return daemon.Fail(os.Stderr, "masterd", err)
	}
	defer func() {
		if err := srv.Close(); err != nil {
			log.WithError(err).Warn("close")
		}
		log.Info("stopped")
	}()

	daemon.OnHangup(ctx, log, srv.Reload)
	daemon.WarnExpiry(ctx, log, cfg.Store.NotAfter, cfg.TLS.Cert)
	// masterd logs its ready line itself, once it has registered.
	if err := srv.Run(ctx); err != nil {
		return daemon.Fail(os.Stderr, "masterd", err)
	}
	return 0
}

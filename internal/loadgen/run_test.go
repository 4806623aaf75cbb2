package loadgen

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/masterd"
)

// startMaster runs a masterd in this process, with a fast detector
// (200ms heartbeats), and returns its address and the CA's files.
func startMaster(t *testing.T) (addr, caFile, caKeyFile string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("lab", 0)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	caFile, caKeyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caKeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(pki.IssueRequest{Role: pki.RoleMaster, Name: "m1", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := conf.DefaultMaster()
	cfg.HTTPListen = "" // no fixed port: other tests run beside this one
	cfg.Listen = "127.0.0.1:0"
	cfg.StateDir = filepath.Join(dir, "state")
	// No registry: the master's registration fails quietly, and the test
	// dials it directly.
	cfg.Registry, cfg.RegistrySocket = "", filepath.Join(dir, "no-registry.sock")
	cfg.HeartbeatInterval = conf.Duration(200 * time.Millisecond)
	cfg.ReportInterval = conf.Duration(time.Second)
	cfg.Detector.MinDead = conf.Duration(300 * time.Millisecond)
	cfg.Detector.MaxDead = conf.Duration(time.Second)
	cfg.Detector.CloseGrace = conf.Duration(100 * time.Millisecond)
	cfg.Detector.Tick = conf.Duration(20 * time.Millisecond)
	if cfg.Store, err = pki.FromPEM(ca.CertPEM(), is.CertPEM, is.KeyPEM); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := masterd.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("masterd: %v", err)
		}
	})
	return srv.Addr().String(), caFile, caKeyFile
}

func TestRunKillsAndSilences(t *testing.T) {
	addr, caFile, caKey := startMaster(t)
	cfg := DefaultConfig()
	cfg.Master, cfg.CAFile, cfg.CAKeyFile = addr, caFile, caKey
	cfg.Slaves = 24
	cfg.Kill, cfg.Silence = 2, 2
	cfg.At, cfg.Spacing = time.Second, 100*time.Millisecond
	cfg.Duration = 4 * time.Second
	cfg.MasterPID = os.Getpid() // the master runs in this process
	cfg.Sample = 200 * time.Millisecond
	log := logrus.New()
	log.SetOutput(io.Discard)

	res, err := Run(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := res.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if p := res.Problems(); len(p) > 0 {
		t.Fatalf("problems: %v", p)
	}
	if res.ColdJoin.Joined != cfg.Slaves || res.Watchers != cfg.Slaves {
		t.Errorf("joined %d, watching %d; want %d each", res.ColdJoin.Joined, res.Watchers, cfg.Slaves)
	}
	// 200ms heartbeats come from the JoinReply: about 5 a second each.
	if rate := res.Heartbeat.PerSecond; rate < 3*float64(cfg.Slaves) {
		t.Errorf("%.0f heartbeats/s from %d slaves at 200ms: the JoinReply's interval was not used", rate, cfg.Slaves)
	}
	if res.Heartbeat.Count == 0 || res.Heartbeat.Max < res.Heartbeat.P50 || res.Calls.Reports == 0 {
		t.Errorf("heartbeats %+v, reports %d", res.Heartbeat, res.Calls.Reports)
	}
	if len(res.Strikes) != 4 || res.Detection.KillDead.Count != 2 || res.Detection.SilenceDead.Count != 2 || res.Detection.KillSuspect.Count != 2 {
		t.Errorf("strikes %+v, detection %+v", res.Strikes, res.Detection)
	}
	for _, s := range res.Strikes {
		if s.Reached != cfg.Slaves-4 || s.Expected != cfg.Slaves-4 {
			t.Errorf("%s %s reached %d of %d watchers, want %d", s.How, s.Node, s.Reached, s.Expected, cfg.Slaves-4)
		}
		// No bound: after a stall of its own (a loaded machine) the master
		// declares nobody dead for max_dead.
		if s.How == howSilence && s.SinceBeatMS <= 0 {
			t.Errorf("silenced %s: no time from its last heartbeat to its death", s.Node)
		}
	}
	if res.MasterUsage == nil || res.MasterUsage.Steady == nil || res.MasterUsage.Steady.RSSMiB <= 0 {
		t.Errorf("master usage %+v", res.MasterUsage)
	}
}

package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// TestSIGTERMUnderLoad: masterd exits within 5 s of SIGTERM while 300
// simulated slaves heartbeat, report and watch, and saves its roster.
func TestSIGTERMUnderLoad(t *testing.T) {
	c := newCluster(t, nil)
	admin := c.client(pki.RoleAdmin, "ops")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lg := exec.CommandContext(ctx, bin("loadgen"),
		"--registry", c.reg.addr,
		"--ca", filepath.Join(c.l.certs, "ca.pem"), "--ca-key", filepath.Join(c.l.certs, "ca-key.pem"),
		"-n", "300", "--duration", "60s")
	var lgLog lineLog
	lg.Stderr = &lgLog
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("loadgen's log:\n%.3000s", lgLog.String())
		}
	})
	if err := lg.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); lg.Wait() }()
	waitFor(t, 60*time.Second, "300 simulated slaves alive", func() (bool, string) {
		r, err := admin.Members(ctx, "")
		if err != nil {
			return false, err.Error()
		}
		alive := 0
		for _, m := range r.Members {
			if m.Status == rpcdef.StatusAlive {
				alive++
			}
		}
		return alive == 300, fmt.Sprintf("%d alive", alive)
	})
	start := time.Now()
	c.master.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.master.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("masterd still running %v after SIGTERM under load", time.Since(start))
	}
	took := time.Since(start)
	t.Logf("masterd exited %v after SIGTERM with 300 slaves (%v)", took.Round(time.Millisecond), c.master.err)
	if took > 5*time.Second {
		t.Errorf("masterd took %v to exit after SIGTERM, want at most 5s", took)
	}
	if c.master.count("msg=stopped") != 1 {
		t.Errorf("masterd did not log its stopped line")
	}
	data, err := os.ReadFile(filepath.Join(c.l.dir, "state", "master", "roster.json"))
	var roster struct {
		Nodes []struct{ Name string } `json:"nodes"`
	}
	if err != nil || json.Unmarshal(data, &roster) != nil || len(roster.Nodes) != 300 {
		t.Errorf("the roster saved at the stop: %d nodes (%v), want 300", len(roster.Nodes), err)
	}
}

package tests

import (
	"context"
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
	c.waitAlive(admin, 300, 60*time.Second)
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
	if n := c.rollKept(); n != 300 {
		t.Errorf("the roll kept at the stop: %d members, want 300", n)
	}
}

// TestIntervalFollowsBudget: three real slaves against a master whose
// budget is 2 heartbeats a second are told a longer interval in their
// heartbeat replies, follow it, and nobody is falsely suspected; a killed
// one is still dead at once, by its connection.
func TestIntervalFollowsBudget(t *testing.T) {
	c := newCluster(t, map[string]string{"max_heartbeats_per_second": "2"}, "node-1", "node-2", "node-3")
	admin := c.client(pki.RoleAdmin, "ops")
	w := c.watch(t)
	c.master.waitLine(`heartbeat every 1\.65s to 1\.815s`, 10*time.Second)
	for _, s := range c.slaves {
		s.waitLine(`the master asks for a heartbeat every 1\.(6[5-9]|7|8[01])`, 10*time.Second)
	}
	// Ten of the new intervals: no suspect, no death.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case e := <-w.events:
			if e.Kind == rpcdef.EventSuspect || e.Kind == rpcdef.EventDead {
				t.Fatalf("%s %s (%s) at the budget's interval", e.Node, e.Kind, e.Reason)
			}
		case <-time.After(100 * time.Millisecond): // poll interval
		}
	}
	c.slaves["node-3"].kill()
	start := time.Now()
	w.next(t, "node-3", rpcdef.EventDead, 5*time.Second)
	t.Logf("node-3 dead %v after SIGKILL, at the longer interval", time.Since(start).Round(time.Millisecond))
	c.waitStatus(admin, "node-1", rpcdef.StatusAlive, time.Second)
}

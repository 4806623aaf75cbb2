package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/loadgen"
)

// TestLoadgen runs the built loadgen with 200 simulated slaves against real
// registryd and masterd processes for a short while, killing five and
// silencing five. It checks correctness only, no timing: no live slave
// declared suspect or dead, every strike declared dead (a silenced slave
// within max_dead and a margin of its last heartbeat) and delivered to
// every watching slave.
func TestLoadgen(t *testing.T) {
	c := newCluster(t, nil)
	const maxDead = 5 * time.Second // conf/examples/master.toml
	args := []string{
		"--registry", c.reg.addr,
		"--ca", filepath.Join(c.l.certs, "ca.pem"), "--ca-key", filepath.Join(c.l.certs, "ca-key.pem"),
		"--master-pid", fmt.Sprint(c.master.cmd.Process.Pid),
		"-n", "200", "--join-rate", "32",
		// Strikes while the detector is still in its warm-up regime
		// (dead ≈3.6s after the last heartbeat), the last at 4s+9×250ms.
		// The run ends 13.75s after that: time for max_dead, and for the
		// max_dead more the master waits after a stall of its own (which
		// a race-built master on a busy machine has).
		"--kill", "5", "--silence", "5", "--at", "4s", "--spacing", "250ms",
		"--duration", "20s",
		"--json",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin("loadgen"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("loadgen ran %v; its log:\n%s", time.Since(start).Round(time.Millisecond), stderr.String())
	var res loadgen.Result
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		t.Fatalf("loadgen (%v) printed no JSON result: %v\n%s", err, jerr, stdout.String())
	}
	var table strings.Builder
	res.WriteTable(&table)
	t.Logf("result:\n%s", table.String())

	if res.ColdJoin.Joined != 200 || res.Error != "" {
		t.Fatalf("cold join: %d of 200 joined; error %q", res.ColdJoin.Joined, res.Error)
	}
	if res.FalseDeaths != 0 {
		t.Errorf("%d false deaths: %+v", res.FalseDeaths, res.FalseDeathList)
	}
	if len(res.Strikes) != 10 || res.Detection.Undetected != 0 || res.Detection.KillDead.Count != 5 || res.Detection.SilenceDead.Count != 5 {
		t.Errorf("strikes %+v; detection %+v", res.Strikes, res.Detection)
	}
	for _, s := range res.Strikes {
		if s.Reached != s.Expected || s.Expected != 190 {
			t.Errorf("the death of %s reached %d of %d watching slaves, want 190", s.Node, s.Reached, s.Expected)
		}
		if limit := 2*maxDead + 2*time.Second; s.How == "silence" && s.SinceBeatMS > float64(limit.Milliseconds()) {
			t.Errorf("silenced %s declared dead %.0fms after its last heartbeat, past max_dead %v, the max_dead after a stall, and a margin", s.Node, s.SinceBeatMS, maxDead)
		}
	}
	if res.Heartbeat.Count == 0 || res.MasterUsage == nil || res.MasterUsage.Steady == nil {
		t.Errorf("heartbeats %+v; master usage %+v", res.Heartbeat, res.MasterUsage)
	}
	if err != nil {
		t.Errorf("loadgen exited with %v", err)
	}
	for _, s := range res.Strikes {
		if c.master.count(s.Node+" is now dead") != 1 {
			t.Errorf("the master's log does not say once that %s is now dead", s.Node)
		}
	}
	c.master.stop()
	c.reg.stop()
}

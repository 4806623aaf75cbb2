// Package benchset runs the scale set behind make bench: loadgen against a
// fresh registryd and masterd for each number of simulated slaves, and one
// real slaved left idle, all as separate processes on 127.0.0.1. It writes
// the figures, each against its target, into docs/BENCHMARKS.md between two
// markers, and draws them in an SVG.
package benchset

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Load is one loadgen run of the set: its flags beyond the lab's own
// (registry, certificates, master pid).
type Load struct {
	N           int           // -n: simulated slaves
	Duration    time.Duration // --duration: the steady phase after the cold join
	At          time.Duration // --at: first strike, after the cold join
	Kill        int           // --kill
	Silence     int           // --silence
	Spacing     time.Duration // --spacing between strikes; 0 keeps loadgen's default
	JoinTimeout time.Duration // --join-timeout; 0 keeps loadgen's default
	// Lean is the 10,000 run's cold join: --roll=false --watch-start ready.
	// Joins without the roll, watchers started after the cold join: with
	// both, as slaved does, a cold join of N moves O(N²) members and events.
	Lean bool
}

// loadgenJoinTimeout is loadgen's default --join-timeout, which bounds a
// run that does not give one.
const loadgenJoinTimeout = 5 * time.Minute

// Plan is a whole set: the loadgen runs, then the idle slaved.
type Plan struct {
	Name  string // "standard" or "quick"
	Loads []Load
	Idle  time.Duration // how long the real slaved is measured
}

// StandardPlan is the set make bench runs. N=10,000 runs for five minutes:
// issue 5 asks for no false death over five minutes at that size.
func StandardPlan() Plan {
	return Plan{
		Name: "standard",
		Loads: []Load{
			{N: 100, Duration: 30 * time.Second, At: 20 * time.Second, Kill: 5, Silence: 5},
			{N: 1000, Duration: 45 * time.Second, At: 22 * time.Second, Kill: 10, Silence: 10},
			{N: 10000, Duration: 5 * time.Minute, At: 60 * time.Second, Kill: 10, Silence: 10,
				Spacing: 10 * time.Second, JoinTimeout: 10 * time.Minute, Lean: true},
		},
		Idle: 60 * time.Second,
	}
}

// QuickPlan is a short set for trying the tool out: about four minutes.
// Its strikes still come after 18 s, so the detector is past its warm-up.
func QuickPlan() Plan {
	return Plan{
		Name: "quick",
		Loads: []Load{
			{N: 100, Duration: 25 * time.Second, At: 18 * time.Second, Kill: 2, Silence: 2},
			{N: 1000, Duration: 30 * time.Second, At: 20 * time.Second, Kill: 5, Silence: 5},
			{N: 3000, Duration: 40 * time.Second, At: 25 * time.Second, Kill: 5, Silence: 5,
				JoinTimeout: 90 * time.Second, Lean: true},
		},
		Idle: 20 * time.Second,
	}
}

// Flags are the run's own loadgen flags, in the order the doc shows them.
func (r Load) Flags() []string {
	out := []string{"-n", strconv.Itoa(r.N), "--duration", flagDuration(r.Duration)}
	if r.JoinTimeout > 0 {
		out = append(out, "--join-timeout", flagDuration(r.JoinTimeout))
	}
	if r.Lean {
		out = append(out, "--roll=false", "--watch-start", "ready")
	}
	if r.Kill+r.Silence > 0 {
		out = append(out, "--at", flagDuration(r.At), "--kill", strconv.Itoa(r.Kill), "--silence", strconv.Itoa(r.Silence))
		if r.Spacing > 0 {
			out = append(out, "--spacing", flagDuration(r.Spacing))
		}
	}
	return out
}

// Bound is the longest the run may take before it is stopped: the cold
// join's limit, the steady phase, and three minutes for issuing
// certificates, the last detections and the exit.
func (r Load) Bound() time.Duration {
	join := r.JoinTimeout
	if join == 0 {
		join = loadgenJoinTimeout
	}
	return join + r.Duration + 3*time.Minute
}

// Expect is about how long the run takes when all goes well, for the
// progress lines: five seconds per thousand slaves to join (as at 1,000 and
// 3,000 on two cores), the steady phase, and a few seconds around it.
func (r Load) Expect() time.Duration {
	return r.Duration + time.Duration(r.N/200+5)*time.Second
}

// Label is "N=10000".
func (r Load) Label() string { return fmt.Sprintf("N=%d", r.N) }

// loadgenArgs is loadgen's whole command line in a lab directory: the
// lab's flags, then the run's.
func loadgenArgs(registry, masterPID string, r Load) []string {
	args := []string{"--json", "--registry", registry, "--ca", "certs/ca.pem", "--ca-key", "certs/ca-key.pem",
		"--master-pid", masterPID}
	return append(args, r.Flags()...)
}

// Command is the loadgen command line as the doc prints it: the exact
// arguments, with the registry's address and masterd's pid of the run, or
// placeholders for a run that did not get that far.
func Command(registry string, masterPID int, r Load) string {
	reg, pid := registry, strconv.Itoa(masterPID)
	if reg == "" {
		reg = "$REGISTRY"
	}
	if masterPID == 0 {
		pid = "$MASTER_PID"
	}
	return "loadgen " + strings.Join(loadgenArgs(reg, pid, r), " ")
}

// flagDuration writes d as a person would type it: 5m, 30s, 250ms.
func flagDuration(d time.Duration) string {
	switch {
	case d >= 2*time.Minute && d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d > 0 && d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

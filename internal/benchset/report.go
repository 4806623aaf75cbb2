package benchset

import (
	"fmt"
	"time"

	"github.com/muster-lab/muster/internal/loadgen"
)

// Report is everything one set measured, and what it needs to be written.
type Report struct {
	Plan    Plan
	Machine Machine
	Started time.Time
	Took    time.Duration
	Files   string // the open-files limit the children had, or why it is short

	Loads   []LoadResult
	Idle    *Idle
	IdleCmd string // slaved's command line
	IdleErr string // why Idle is nil

	Micro string // the micro-benchmarks' go test output; "" if none was given
	Plot  string // the SVG as the doc links it; "" for none
}

// LoadResult is one loadgen run: its figures, or why there are none.
type LoadResult struct {
	Load    Load
	Command string          // loadgen's exact command line
	Result  *loadgen.Result // nil when the run failed outright
	Failed  string          // why Result is nil
	Notes   []string        // what else went wrong: masterd exited during the run, say
	Took    time.Duration
}

// The targets of issue 5 and, for detection, issue 3's bounds at three
// slaves (docs/BENCHMARKS.md, "Failure detection": a crash dead within 1 s,
// a silent host within 2 heartbeat intervals, 2 s), here applied to the
// slowest strike.
const (
	scaleN           = 10000
	joinN            = 1000
	heartbeatP99MS   = 50
	soakLength       = 5 * time.Minute
	masterRSSMiB     = 1024 // 1 GiB
	masterCPUPercent = 100
	killDeadMS       = 1000
	silenceDeadMS    = 2000
	fanoutP99MS      = 500
	coldJoinSeconds  = 5
	slaveRSSBytes    = 20e6
	slaveCPUPercent  = 0.5
)

// Target is one goal and how the set did against it.
type Target struct {
	Goal   string
	Figure string // "" when not measured
	Met    bool
	Why    string // not measured: why
}

// Verdict is "met", "NOT met" or "not measured: WHY".
func (t Target) Verdict() string {
	switch {
	case t.Why != "":
		return "not measured: " + t.Why
	case t.Met:
		return "met"
	}
	return "NOT met"
}

// run finds the set's run with n slaves.
func (r *Report) run(n int) *LoadResult {
	for i := range r.Loads {
		if r.Loads[i].Load.N == n {
			return &r.Loads[i]
		}
	}
	return nil
}

// usable is the result of the run with n slaves if it ran to the end, or
// why it cannot be used for a target.
func (r *Report) usable(n int) (*loadgen.Result, string) {
	rr := r.run(n)
	switch {
	case rr == nil:
		return nil, fmt.Sprintf("the %s set has no N = %s run", r.Plan.Name, count(n))
	case rr.Result == nil:
		return nil, fmt.Sprintf("the N = %s run failed (%s)", count(n), firstLine(rr.Failed))
	case rr.Result.Error != "":
		return rr.Result, fmt.Sprintf("the N = %s run did not complete (%s)", count(n), rr.Result.Error)
	}
	return rr.Result, ""
}

// Targets judges the set against every target, in the doc's order.
func (r *Report) Targets() []Target {
	at := fmt.Sprintf(" at N = %s", count(scaleN))
	res, why := r.usable(scaleN)
	var out []Target
	add := func(goal string, measure func(*loadgen.Result) Target) {
		if why != "" {
			t := Target{Goal: goal, Why: why}
			if res != nil {
				// An incomplete run that already failed a target did fail it.
				if m := measure(res); m.Why == "" && !m.Met {
					t = m
					t.Figure += "; the run did not complete"
				}
			}
			out = append(out, t)
			return
		}
		out = append(out, measure(res))
	}
	goal := fmt.Sprintf("heartbeat RPC p99 ≤ %d ms%s", heartbeatP99MS, at)
	add(goal, func(res *loadgen.Result) Target {
		hb := res.Heartbeat
		if hb.Count == 0 {
			return Target{Goal: goal, Why: "no heartbeat was answered in the steady phase"}
		}
		return Target{Goal: goal, Met: hb.P99 <= heartbeatP99MS,
			Figure: fmt.Sprintf("%s (p50 %s, %s heartbeats, %s failed)", msText(hb.P99), msText(hb.P50), count(hb.Count), count(int(hb.Failed)))}
	})
	goal = fmt.Sprintf("no false death over %s%s", durText(soakLength), at)
	add(goal, func(res *loadgen.Result) Target {
		fig := fmt.Sprintf("%s in %s of steady phase", plural(res.FalseDeaths, "false death"), durText(seconds(res.Steady).Round(time.Second)))
		switch {
		case res.FalseDeaths > 0:
			return Target{Goal: goal, Figure: fig}
		case seconds(res.Steady) < soakLength-time.Second:
			return Target{Goal: goal, Why: fmt.Sprintf("the steady phase ran %s, not %s", durText(seconds(res.Steady)), durText(soakLength))}
		}
		return Target{Goal: goal, Figure: fig, Met: true}
	})
	goal = "masterd RSS ≤ 1 GiB" + at
	add(goal, func(res *loadgen.Result) Target {
		peak, ok := peakRSS(res.MasterUsage)
		if !ok {
			return Target{Goal: goal, Why: "loadgen did not read masterd's memory" + usageError(res.MasterUsage)}
		}
		return Target{Goal: goal, Met: peak <= masterRSSMiB, Figure: "peak " + mibText(peak)}
	})
	goal = fmt.Sprintf("masterd CPU ≤ %d%% of a core%s (steady average)", masterCPUPercent, at)
	add(goal, func(res *loadgen.Result) Target {
		if res.MasterUsage == nil || res.MasterUsage.Steady == nil {
			return Target{Goal: goal, Why: "loadgen did not read masterd's CPU time in the steady phase" + usageError(res.MasterUsage)}
		}
		s := res.MasterUsage.Steady
		return Target{Goal: goal, Met: s.CPUPercent <= masterCPUPercent,
			Figure: fmt.Sprintf("%s (peak %s)", pctText(s.CPUPercent), pctText(s.PeakCPUPercent))}
	})
	goal = fmt.Sprintf("crash: kill → dead ≤ %d s%s, slowest strike (as at 3 slaves)", killDeadMS/1000, at)
	add(goal, func(res *loadgen.Result) Target {
		return detection(goal, res, "kill", res.Detection.KillDead, killDeadMS)
	})
	goal = fmt.Sprintf("silent slave: last heartbeat → dead ≤ %d s%s, slowest strike (as at 3 slaves)", silenceDeadMS/1000, at)
	add(goal, func(res *loadgen.Result) Target {
		return detection(goal, res, "silence", res.Detection.SilenceSinceBeat, silenceDeadMS)
	})
	goal = fmt.Sprintf("one death fanned out to the other %s watchers ≤ %d ms p99", count(scaleN-1), fanoutP99MS)
	add(goal, func(res *loadgen.Result) Target {
		f := res.Fanout
		if f.Missed > 0 {
			return Target{Goal: goal, Figure: fmt.Sprintf("%s deliveries never arrived", count(f.Missed))}
		}
		if f.Slowest.Count == 0 {
			return Target{Goal: goal, Why: "no death was fanned out"}
		}
		return Target{Goal: goal, Met: f.Slowest.P99 <= fanoutP99MS,
			Figure: fmt.Sprintf("%s to the last of %s watchers (p50 %s, %s)", msText(f.Slowest.P99), count(watchers(res)), msText(f.Slowest.P50), plural(f.Slowest.Count, "death"))}
	})

	goal = fmt.Sprintf("%s slaves cold-join ≤ %d s", count(joinN), coldJoinSeconds)
	switch jr, jwhy := r.usable(joinN); {
	case jr != nil && jr.ColdJoin.Joined < joinN:
		out = append(out, Target{Goal: goal, Figure: fmt.Sprintf("only %s of %s joined, in %s", count(jr.ColdJoin.Joined), count(joinN), secText(jr.ColdJoin.Seconds))})
	case jwhy != "":
		out = append(out, Target{Goal: goal, Why: jwhy})
	default:
		out = append(out, Target{Goal: goal, Met: jr.ColdJoin.Seconds <= coldJoinSeconds,
			Figure: fmt.Sprintf("%s (%s failed attempts)", secText(jr.ColdJoin.Seconds), count(int(jr.ColdJoin.Failed)))})
	}

	rssGoal := fmt.Sprintf("one real slaved, idle: RSS ≤ %.0f MB", slaveRSSBytes/1e6)
	cpuGoal := fmt.Sprintf("one real slaved, idle: CPU ≤ %.1f%% of a core", slaveCPUPercent)
	if r.Idle == nil {
		why := firstLine(r.IdleErr)
		if why == "" {
			why = "not run"
		}
		out = append(out, Target{Goal: rssGoal, Why: why}, Target{Goal: cpuGoal, Why: why})
		return out
	}
	over := " over " + durText(r.Idle.Window.Round(100*time.Millisecond))
	out = append(out,
		Target{Goal: rssGoal, Met: float64(r.Idle.PeakRSS) <= slaveRSSBytes, Figure: mbText(r.Idle.PeakRSS) + " (largest sample" + over + ")"},
		Target{Goal: cpuGoal, Met: r.Idle.CPUPercent <= slaveCPUPercent, Figure: pctText(r.Idle.CPUPercent) + over})
	return out
}

// detection judges the slowest strike of one kind, and the strikes of that
// kind never declared dead.
func detection(goal string, res *loadgen.Result, how string, l loadgen.Latency, bound float64) Target {
	struck, missed := 0, 0
	for _, s := range res.Strikes {
		if s.How != how {
			continue
		}
		struck++
		if !s.Detected {
			missed++
		}
	}
	switch {
	case missed > 0:
		return Target{Goal: goal, Figure: fmt.Sprintf("%d of %d %s never declared dead", missed, struck, strikeNoun(how))}
	case l.Count == 0:
		return Target{Goal: goal, Why: fmt.Sprintf("no %s was measured", how)}
	}
	return Target{Goal: goal, Met: l.Max <= bound, Figure: fmt.Sprintf("max %s (p50 %s, %d strikes)", msText(l.Max), msText(l.P50), l.Count)}
}

func strikeNoun(how string) string {
	if how == "kill" {
		return "killed slaves"
	}
	return "silenced slaves"
}

// watchers is how many watchers each death should have reached.
func watchers(res *loadgen.Result) int {
	for _, s := range res.Strikes {
		if s.Expected > 0 {
			return s.Expected
		}
	}
	return res.Watchers
}

// peakRSS is masterd's largest RSS over the cold join and the steady phase.
func peakRSS(u *loadgen.PhaseUsage) (float64, bool) {
	return peak(u, func(p *loadgen.Usage) float64 { return p.PeakRSSMiB })
}

// peakCPU is the busiest second over the cold join and the steady phase.
func peakCPU(u *loadgen.PhaseUsage) (float64, bool) {
	return peak(u, func(p *loadgen.Usage) float64 { return p.PeakCPUPercent })
}

// peak is the largest of a figure over the phases measured.
func peak(u *loadgen.PhaseUsage, figure func(*loadgen.Usage) float64) (float64, bool) {
	if u == nil {
		return 0, false
	}
	var most float64
	ok := false
	for _, p := range []*loadgen.Usage{u.Join, u.Steady} {
		if p != nil {
			most, ok = max(most, figure(p)), true
		}
	}
	return most, ok
}

func usageError(u *loadgen.PhaseUsage) string {
	if u != nil && u.Error != "" {
		return ": " + u.Error
	}
	return ""
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

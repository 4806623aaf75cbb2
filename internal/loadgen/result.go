package loadgen

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what a run measured. Durations are in milliseconds.
type Result struct {
	Slaves     int     `json:"slaves"`
	Watchers   int     `json:"watchers"`
	WatchStart string  `json:"watch_start"`
	JoinRate   int     `json:"join_rate"`
	Roll       bool    `json:"roll"` // every Join reply carried the roll
	Master     string  `json:"master"`
	MasterPID  int     `json:"master_pid,omitempty"`
	Steady     float64 `json:"steady_s"` // how long the steady phase ran

	ColdJoin  ColdJoin  `json:"cold_join"`
	Heartbeat Heartbeat `json:"heartbeat"`
	Calls     Calls     `json:"calls"`

	FalseDeaths    int          `json:"false_deaths"`
	FalseDeathList []FalseDeath `json:"false_death_list,omitempty"` // the first maxListed

	Strikes   []Strike  `json:"strikes,omitempty"`
	Detection Detection `json:"detection"`
	Fanout    Fanout    `json:"fanout"`

	MasterUsage *PhaseUsage `json:"master_usage,omitempty"`
	SelfUsage   *PhaseUsage `json:"loadgen_usage,omitempty"`

	Error string `json:"error,omitempty"`
}

// maxListed bounds the false deaths listed one by one.
const maxListed = 20

// ColdJoin is the join of every simulated slave at the start.
type ColdJoin struct {
	Joined  int     `json:"joined"`
	Seconds float64 `json:"seconds"` // from the first dial to the last join answered
	Call    Latency `json:"call"`    // one join: TCP, TLS handshake and Join
	Failed  uint64  `json:"failed"`  // attempts that failed and were tried again
}

// Heartbeat is the heartbeats answered in the steady phase, and the
// failures of the whole run, the cold join's included.
type Heartbeat struct {
	Latency
	PerSecond float64 `json:"per_second"`
	Failed    uint64  `json:"failed"`    // every failed call, those below included
	TimedOut  uint64  `json:"timed_out"` // past the call timeout (the connection is closed, so the master sees a close)
	Lost      uint64  `json:"lost"`      // the connection broke under the call
	Skipped   uint64  `json:"skipped"`   // beats not sent because a slave fell a whole interval behind
}

// Calls counts the other calls of the whole run.
type Calls struct {
	Reports       uint64 `json:"reports"`
	ReportsFailed uint64 `json:"reports_failed"`
	Watches       uint64 `json:"watches"` // Watch replies to simulated slaves
	WatchesFailed uint64 `json:"watches_failed"`
	Rejoins       uint64 `json:"rejoins"`    // joins again after the master refused a heartbeat (a new leader not yet joined, say)
	Reconnects    uint64 `json:"reconnects"` // connections made after a slave's first
	// Failovers: a slave's master stopped answering, and it joined a
	// master again (another, or the same one back). Not false deaths.
	Failovers uint64 `json:"failovers"`
	// Redirects: a follower named the leader and a slave went there.
	Redirects uint64 `json:"redirects"`
	// LeaderChanges: a join taken by another master than the one before.
	LeaderChanges uint64 `json:"leader_changes"`
}

// Strike is one simulated slave killed or silenced.
type Strike struct {
	Node     string    `json:"node"`
	How      string    `json:"how"` // kill or silence
	At       time.Time `json:"at"`
	Detected bool      `json:"detected"` // the master declared it dead
	// From the strike to the master's suspect and dead events.
	SuspectMS float64 `json:"suspect_ms,omitempty"`
	DeadMS    float64 `json:"dead_ms,omitempty"`
	// Silences only: from the send of its last answered heartbeat to the
	// dead event, the silence the detector judged.
	SinceBeatMS float64 `json:"since_last_heartbeat_ms,omitempty"`
	// From the dead event until the last other watcher's Watch returned it.
	FanoutMS float64 `json:"fanout_ms,omitempty"`
	Reached  int     `json:"reached"`  // watchers whose Watch returned the death
	Expected int     `json:"expected"` // watchers that should have
}

// Detection summarises the strikes.
type Detection struct {
	KillSuspect      Latency `json:"kill_suspect"`
	KillDead         Latency `json:"kill_dead"`
	SilenceDead      Latency `json:"silence_dead"`
	SilenceSinceBeat Latency `json:"silence_since_last_heartbeat"`
	Undetected       int     `json:"undetected"`
}

// Fanout is how fast the deaths reached the other simulated slaves.
type Fanout struct {
	Slowest Latency `json:"slowest"` // per strike: until every other watcher had it
	Each    Latency `json:"each"`    // every single delivery
	Missed  int     `json:"missed"`  // (strike, watcher) pairs never delivered
}

// results fills res from the tracker and counters at the end of the steady
// phase, which lasted steady.
func (r *run) results(res *Result, victims []*victim, steady time.Duration) {
	st := &r.stats
	res.Steady = steady.Seconds()
	var rate float64
	if steady > 0 {
		rate = float64(st.beats.Load()) / steady.Seconds()
	}
	res.Heartbeat = Heartbeat{
		Latency: r.beats.Summary(), PerSecond: rate,
		Failed: st.beatsFailed.Load(), TimedOut: st.beatsTimedOut.Load(), Lost: st.beatsLost.Load(), Skipped: st.beatsSkipped.Load(),
	}
	res.Calls = Calls{
		Reports: st.reports.Load(), ReportsFailed: st.reportsFailed.Load(),
		Watches: st.watches.Load(), WatchesFailed: st.watchesFailed.Load(),
		Rejoins: st.rejoins.Load(), Reconnects: st.reconnects.Load(),
		Failovers: st.failovers.Load(), Redirects: st.redirects.Load(), LeaderChanges: st.leaderChanges.Load(),
	}
	falses := r.tr.falseDeaths()
	res.FalseDeaths = len(falses)
	res.FalseDeathList = falses[:min(len(falses), maxListed)]

	struck := make([]bool, len(r.sims))
	for _, v := range victims {
		struck[v.idx] = true
	}
	var expect []int
	for i, s := range r.sims {
		if s.watcher && !struck[i] {
			expect = append(expect, i)
		}
	}
	var killSuspect, killDead, silenceDead, sinceBeat, slowest, each []time.Duration
	r.tr.mu.Lock()
	defer r.tr.mu.Unlock()
	for _, v := range victims {
		s := Strike{Node: v.node, How: v.how, At: v.at, Expected: len(expect)}
		if v.at.IsZero() {
			res.Strikes = append(res.Strikes, s)
			res.Detection.Undetected++
			continue
		}
		if !v.suspectAt.IsZero() {
			s.SuspectMS = ms(v.suspectAt.Sub(v.at))
			if v.how == howKill {
				killSuspect = append(killSuspect, v.suspectAt.Sub(v.at))
			}
		}
		if v.deadAt.IsZero() {
			res.Strikes = append(res.Strikes, s)
			res.Detection.Undetected++
			continue
		}
		s.Detected = true
		dead := v.deadAt.Sub(v.at)
		s.DeadMS = ms(dead)
		if v.how == howKill {
			killDead = append(killDead, dead)
		} else {
			silenceDead = append(silenceDead, dead)
			if lb := r.sims[v.idx].lastBeat.Load(); lb != 0 {
				d := v.deadAt.Sub(time.Unix(0, lb))
				s.SinceBeatMS = ms(d)
				sinceBeat = append(sinceBeat, d)
			}
		}
		var last time.Duration
		for _, w := range expect {
			if v.seen[w] == 0 {
				res.Fanout.Missed++
				continue
			}
			d := time.Unix(0, v.seen[w]).Sub(v.deadAt)
			each = append(each, d)
			last = max(last, d)
			s.Reached++
		}
		if s.Reached > 0 {
			s.FanoutMS = ms(last)
			if s.Reached == s.Expected {
				slowest = append(slowest, last)
			}
		}
		res.Strikes = append(res.Strikes, s)
	}
	res.Detection.KillSuspect = summarize(killSuspect)
	res.Detection.KillDead = summarize(killDead)
	res.Detection.SilenceDead = summarize(silenceDead)
	res.Detection.SilenceSinceBeat = summarize(sinceBeat)
	res.Fanout.Slowest = summarize(slowest)
	res.Fanout.Each = summarize(each)
}

// Problems lists what went wrong for the membership: an incomplete run,
// false deaths, strikes not detected, deaths that did not reach every
// watcher. A run with none passed.
func (res *Result) Problems() []string {
	var out []string
	if res.Error != "" {
		out = append(out, res.Error)
	}
	if res.FalseDeaths > 0 {
		names := make([]string, 0, len(res.FalseDeathList))
		for _, f := range res.FalseDeathList {
			names = append(names, f.Node+" "+f.Status)
		}
		out = append(out, fmt.Sprintf("%d false deaths: %s", res.FalseDeaths, strings.Join(names, ", ")))
	}
	if n := res.Detection.Undetected; n > 0 {
		out = append(out, fmt.Sprintf("%d of %d struck slaves not declared dead", n, len(res.Strikes)))
	}
	if n := res.Fanout.Missed; n > 0 {
		out = append(out, fmt.Sprintf("%d deliveries of a death to a watching slave missing", n))
	}
	return out
}

// WriteTable prints the result for people.
func (res *Result) WriteTable(w io.Writer) error {
	var b strings.Builder
	pid := ""
	if res.MasterPID > 0 {
		pid = fmt.Sprintf(" (pid %d)", res.MasterPID)
	}
	fmt.Fprintf(&b, "loadgen: %d simulated slaves (%d watching, from %s) against %s%s; steady phase %.1fs\n\n",
		res.Slaves, res.Watchers, res.WatchStart, res.Master, pid, res.Steady)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\tp50\tp99\tmax\tcount\t\n")
	row := func(name string, l Latency, note string) {
		if l.Count == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t0\t  %s\n", name, note)
			return
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t  %s\n", name, msText(l.P50), msText(l.P99), msText(l.Max), l.Count, note)
	}
	cj := res.ColdJoin
	roll := "each reply with the roll"
	if !res.Roll {
		roll = "replies without the roll"
	}
	fmt.Fprintf(tw, "cold join (all)\t\t\t%s\t%d\t  %d of %d joined, %d in flight, %d failed attempts, %s\n",
		msText(cj.Seconds*1000), cj.Joined, cj.Joined, res.Slaves, res.JoinRate, cj.Failed, roll)
	row("join call", cj.Call, "TCP + TLS handshake + Join")
	hb := res.Heartbeat
	row("heartbeat RPC", hb.Latency, fmt.Sprintf("%.0f/s; %d failed (%d timed out, %d lost), %d skipped", hb.PerSecond, hb.Failed, hb.TimedOut, hb.Lost, hb.Skipped))
	d := res.Detection
	row("kill -> suspect", d.KillSuspect, "connection closed -> master's suspect event")
	row("kill -> dead", d.KillDead, "connection closed -> master's dead event")
	row("silence -> dead", d.SilenceDead, "heartbeats stopped -> dead event")
	row("last beat -> dead", d.SilenceSinceBeat, "silenced: last answered heartbeat sent -> dead event")
	row("fan-out (slowest)", res.Fanout.Slowest, "per strike: dead event -> last other watcher's Watch returned it")
	row("fan-out (each)", res.Fanout.Each, "every delivery to a watcher")
	tw.Flush()
	fmt.Fprintln(&b)

	fmt.Fprintf(&b, "false deaths: %d", res.FalseDeaths)
	for _, f := range res.FalseDeathList {
		fmt.Fprintf(&b, "\n  %s %s at %s: %s", f.Node, f.Status, f.At.Format("15:04:05.000"), f.Reason)
	}
	fmt.Fprintf(&b, "\nundetected strikes: %d; missed deliveries: %d\n", d.Undetected, res.Fanout.Missed)
	c := res.Calls
	fmt.Fprintf(&b, "reports: %d (%d failed); watch replies: %d (%d failed); rejoins: %d; reconnects: %d\n",
		c.Reports, c.ReportsFailed, c.Watches, c.WatchesFailed, c.Rejoins, c.Reconnects)
	fmt.Fprintf(&b, "failovers: %d (a slave's master stopped answering and it joined again); redirects to the leader: %d; leader changes: %d\n",
		c.Failovers, c.Redirects, c.LeaderChanges)
	usage := func(who string, u *PhaseUsage, hint string) {
		if u == nil {
			fmt.Fprintf(&b, "%s: not measured%s\n", who, hint)
			return
		}
		fmt.Fprintf(&b, "%s (pid %d):", who, u.PID)
		for _, p := range []struct {
			name string
			u    *Usage
		}{{"cold join", u.Join}, {"steady", u.Steady}} {
			if p.u == nil {
				fmt.Fprintf(&b, "  %s -;", p.name)
				continue
			}
			fmt.Fprintf(&b, "  %s CPU %.1f%% (peak %.1f%%), RSS %.1f MiB (peak %.1f);", p.name, p.u.CPUPercent, p.u.PeakCPUPercent, p.u.RSSMiB, p.u.PeakRSSMiB)
		}
		if u.Error != "" {
			fmt.Fprintf(&b, "  last read failed: %s", u.Error)
		}
		fmt.Fprintln(&b)
	}
	usage("master", res.MasterUsage, " (give --master-pid)")
	usage("loadgen", res.SelfUsage, "")
	if len(res.Strikes) > 0 {
		fmt.Fprintln(&b)
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "strike\thow\tsuspect\tdead\tlast beat->dead\tfan-out\treached\t\n")
		for _, s := range res.Strikes {
			dead := "never"
			if s.Detected {
				dead = msText(s.DeadMS)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t\n", s.Node, s.How, optMS(s.SuspectMS), dead, optMS(s.SinceBeatMS), optMS(s.FanoutMS), s.Reached, s.Expected)
		}
		tw.Flush()
	}
	if p := res.Problems(); len(p) > 0 {
		fmt.Fprintf(&b, "\nFAIL: %s\n", strings.Join(p, "; "))
	} else {
		fmt.Fprintln(&b, "\nOK: no false deaths, every strike detected and delivered")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// msText shows milliseconds with three significant figures, or seconds.
func msText(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1fs", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.2fms", v)
}

func optMS(v float64) string {
	if v == 0 {
		return "-"
	}
	return msText(v)
}

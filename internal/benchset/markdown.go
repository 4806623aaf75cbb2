package benchset

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/muster-lab/muster/internal/loadgen"
)

// Markdown is the section benchset writes between the markers in
// docs/BENCHMARKS.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("## The scale set: `make bench` (issue 5)\n\n")
	p("Everything in this section is written by `bin/benchset`, which `make bench` runs after the\n")
	p("micro-benchmarks; edits here are lost at the next run.\n\n")
	if r.Plan.Name != "standard" {
		p("**This is a `--%s` run**, a short set for trying the tool out: its N, durations and\n", r.Plan.Name)
		p("strikes are not those of `make bench`, and its figures are not the record.\n\n")
	}
	p("- **When:** %s; the set took %s.\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"), durText(r.Took.Round(time.Second)))
	p("- **Machine:** %s.\n", r.Machine.describe())
	p("- **Code:** %s.\n", r.Machine.revision())
	if r.Files != "" {
		p("- **Open files:** %s.\n", r.Files)
	}
	p("\n")
	p("Each N ran in a fresh lab directory: a CA and certificates from `certgen`, then `registryd` and\n")
	p("`masterd` from `conf/examples` with `listen = \"127.0.0.1:0\"` (masterd with a fresh state\n")
	p("directory, registered with that registry), each a separate process, and then `loadgen` in\n")
	p("that directory as below. All of it ran on 127.0.0.1, with masterd and loadgen sharing the\n")
	p("machine's %d CPUs. CPU is in %% of one core; a peak is the busiest 1 s sample.\n\n", r.Machine.CPUs)
	p("```\nmake bench\n")
	for _, rr := range r.Loads {
		p("%s\n", rr.Command)
	}
	if r.IdleCmd != "" {
		p("%s\n", r.IdleCmd)
	}
	p("```\n\n")
	if r.Plot != "" {
		p("![Heartbeat RPC latency p50 and p99, and masterd's CPU, against the number of slaves](%s)\n\n", r.Plot)
	}

	for _, rr := range r.Loads {
		r.writeLoad(&b, rr)
	}
	r.writeIdle(&b)

	p("### Targets\n\n")
	p("| target | figure | |\n|---|---|---|\n")
	for _, t := range r.Targets() {
		fig := t.Figure
		if fig == "" {
			fig = "–"
		}
		p("| %s | %s | %s |\n", t.Goal, fig, verdictCell(t))
	}
	p("\n")

	if r.Micro != "" {
		p("### Micro-benchmarks and round trips\n\n")
		p("The output of the `go test -bench` runs that `make bench` makes first, as it was:\n\n")
		fence := fenceFor(r.Micro)
		p("%s\n%s\n%s\n\n", fence, strings.TrimRight(r.Micro, "\n"), fence)
	}
	return b.String()
}

// writeLoad writes one N's table, or why it has none.
func (r *Report) writeLoad(b *strings.Builder, rr LoadResult) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	run := rr.Load
	p("### N = %s\n\n", count(run.N))
	if rr.Result == nil {
		p("**Not measured:** %s\n\n", indentBlock(rr.Failed))
		for _, n := range rr.Notes {
			p("- %s\n", n)
		}
		if len(rr.Notes) > 0 {
			p("\n")
		}
		return
	}
	res := rr.Result
	head := fmt.Sprintf("N = %s: %s steady", count(run.N), durText(seconds(res.Steady).Round(100*time.Millisecond)))
	if res.Steady == 0 {
		head = fmt.Sprintf("N = %s: no steady phase", count(run.N))
	}
	if run.Kill+run.Silence > 0 {
		head += fmt.Sprintf(", %s and %s from %s", plural(run.Kill, "kill"), plural(run.Silence, "silence"), durText(run.At))
	}
	p("| %s | figure |\n|---|---|\n", head)
	cj := res.ColdJoin
	p("| cold join of all %s | %s (%s joined, %s in flight, %s failed attempts) |\n",
		count(run.N), secText(cj.Seconds), count(cj.Joined), count(res.JoinRate), count(int(cj.Failed)))
	hb := res.Heartbeat
	p("| heartbeat RPC p50 / p99 / max | %s (%s calls, %s failed: %s timed out, %s lost; %s skipped) |\n",
		latency3(hb.Latency), count(hb.Count), count(int(hb.Failed)), count(int(hb.TimedOut)), count(int(hb.Lost)), count(int(hb.Skipped)))
	p("| false deaths (a live slave declared suspect or dead) | %s |\n", falseDeaths(res))
	d := res.Detection
	p("| kill → dead, p50 / max | %s |\n", latency2(d.KillDead))
	p("| silence → dead, p50 / max | %s |\n", latency2(d.SilenceDead))
	p("| silenced: last heartbeat → dead, p50 / max | %s |\n", latency2(d.SilenceSinceBeat))
	if d.Undetected > 0 {
		p("| strikes never declared dead | %d of %d |\n", d.Undetected, len(res.Strikes))
	}
	f := res.Fanout
	fan := "–"
	if f.Slowest.Count > 0 {
		fan = fmt.Sprintf("%s / %s (%s)", msText(f.Slowest.P50), msText(f.Slowest.P99), plural(f.Slowest.Count, "death"))
	}
	if f.Missed > 0 {
		fan += fmt.Sprintf("; %s deliveries missed", count(f.Missed))
	}
	p("| fan-out: dead event → the last of %s watchers, p50 / p99 | %s |\n", count(watchers(res)), fan)
	p("| masterd CPU, steady average / peak (1 s, cold join included) | %s |\n", cpuCell(res.MasterUsage))
	p("| masterd RSS, at the end / peak (cold join included) | %s |\n", rssCell(res.MasterUsage))
	p("| loadgen CPU, steady average / peak | %s |\n", cpuCell(res.SelfUsage))
	p("\n")
	var problems []string
	if res.Error != "" {
		problems = append(problems, "the run did not complete: "+res.Error)
	}
	problems = append(problems, rr.Notes...)
	for _, n := range problems {
		p("- %s\n", n)
	}
	if len(problems) > 0 {
		p("\n")
	}
}

// writeIdle writes the idle slaved's table, or why it has none.
func (r *Report) writeIdle(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("### One real slaved, idle\n\n")
	if r.Idle == nil {
		why := r.IdleErr
		if why == "" {
			why = "not run"
		}
		p("**Not measured:** %s\n\n", indentBlock(why))
		return
	}
	i := r.Idle
	p("`slaved` from `conf/examples/slave.toml` at the default intervals (heartbeat 1 s, report 5 s),\n")
	p("joined to a fresh registryd and masterd and left alone for %s, then measured for %s:\n", durText(settle), durText(i.Window.Round(100*time.Millisecond)))
	p("CPU time from `/proc/PID/stat` at both ends, `VmRSS` every second and `VmHWM` at the end from\n")
	p("`/proc/PID/status`. MB are 10⁶ bytes.\n\n")
	p("| one slaved, idle | figure |\n|---|---|\n")
	p("| CPU | %s |\n", pctText(i.CPUPercent))
	p("| RSS, largest of %d samples | %s |\n", i.Samples, mbText(i.PeakRSS))
	p("| VmHWM, the peak since it started | %s |\n", mbText(i.HWM))
	p("\n")
}

// verdictCell is the verdict, a missed target in bold.
func verdictCell(t Target) string {
	if !t.Met && t.Why == "" {
		return "**" + t.Verdict() + "**"
	}
	return t.Verdict()
}

// listedFalseDeaths is how many false deaths a table names.
const listedFalseDeaths = 5

func falseDeaths(res *loadgen.Result) string {
	if res.FalseDeaths == 0 {
		return "**0**"
	}
	var names []string
	for _, f := range res.FalseDeathList[:min(len(res.FalseDeathList), listedFalseDeaths)] {
		names = append(names, f.Node+" "+f.Status)
	}
	s := fmt.Sprintf("**%s**", count(res.FalseDeaths))
	if len(names) > 0 {
		s += ": " + strings.Join(names, ", ")
		if len(names) < res.FalseDeaths {
			s += ", …"
		}
	}
	return s
}

func cpuCell(u *loadgen.PhaseUsage) string {
	if u == nil || u.Steady == nil {
		return "not measured" + usageError(u)
	}
	peak, _ := peakCPU(u)
	return fmt.Sprintf("%s / %s", pctText(u.Steady.CPUPercent), pctText(peak))
}

func rssCell(u *loadgen.PhaseUsage) string {
	peak, ok := peakRSS(u)
	if !ok {
		return "not measured" + usageError(u)
	}
	end := "–"
	if u.Steady != nil {
		end = mibText(u.Steady.RSSMiB)
	}
	return fmt.Sprintf("%s / %s", end, mibText(peak))
}

func latency3(l loadgen.Latency) string {
	if l.Count == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s / %s", msText(l.P50), msText(l.P99), msText(l.Max))
}

func latency2(l loadgen.Latency) string {
	if l.Count == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s (%s)", msText(l.P50), msText(l.Max), plural(l.Count, "strike"))
}

// msText is milliseconds to three significant figures, or seconds.
func msText(v float64) string {
	switch {
	case v >= 1000:
		return secText(v / 1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func secText(s float64) string {
	if s >= 100 {
		return fmt.Sprintf("%.0f s", s)
	}
	return fmt.Sprintf("%.2f s", s)
}

// durText is a duration as the doc prints it: 5 min, 45 s, 1 min 30 s.
func durText(d time.Duration) string {
	switch {
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%d min %s", d/time.Minute, durText(d%time.Minute))
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}

func pctText(v float64) string {
	switch {
	case v >= 10:
		return fmt.Sprintf("%.0f%%", v)
	case v >= 1:
		return fmt.Sprintf("%.1f%%", v)
	}
	return fmt.Sprintf("%.2f%%", v)
}

func mibText(v float64) string {
	if v >= 1024 {
		return fmt.Sprintf("%.2f GiB", v/1024)
	}
	return fmt.Sprintf("%.0f MiB", v)
}

func mbText(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// count writes n with thousands separators: 10,000.
func count(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + count(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return count(n) + " " + noun + "s"
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// indentBlock keeps the first line of a multi-line message in the text and
// puts the rest, a log's tail, in a code block.
func indentBlock(s string) string {
	first, rest, ok := strings.Cut(s, "\n")
	if !ok {
		return s
	}
	var lines []string
	for _, l := range strings.Split(rest, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "  "))
	}
	return first + "\n\n```\n" + strings.Join(lines, "\n") + "\n```"
}

// fenceFor is a code fence longer than any run of backticks in text.
func fenceFor(text string) string {
	longest, run := 0, 0
	for _, c := range text {
		if c == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return strings.Repeat("`", max(3, longest+1))
}

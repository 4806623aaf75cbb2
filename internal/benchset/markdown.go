package benchset

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/muster-lab/muster/internal/loadgen"
)

//go:embed section.md.tmpl
var sectionText string

var sectionTemplate = template.Must(template.New("section.md.tmpl").Parse(sectionText))

// Markdown is the section benchset writes between the markers in
// docs/BENCHMARKS.md: section.md.tmpl, with the report's figures.
func (r *Report) Markdown() (string, error) {
	var b strings.Builder
	if err := sectionTemplate.Execute(&b, r.section()); err != nil {
		return "", fmt.Errorf("write the doc's section: %w", err)
	}
	return b.String(), nil
}

// section is what section.md.tmpl lays out: every figure written as the
// doc shows it.
type section struct {
	Plan, When, Took, Machine, Code, Files string
	CPUs                                   int
	Commands                               []string
	Plot                                   string
	Loads                                  []loadSection
	IdleWhy, Settle, IdleWindow            string // IdleWhy: why there are no IdleRows
	IdleRows                               [][2]string
	Targets                                [][3]string
	Micro                                  string // fenced
}

// loadSection is one N: its table, or why it has none, and what went wrong.
type loadSection struct {
	N, Head, Failed string
	Rows            [][2]string
	Problems        []string
}

func (r *Report) section() section {
	s := section{
		Plan: r.Plan.Name, When: r.Started.UTC().Format("2006-01-02 15:04 UTC"), Took: durText(r.Took.Round(time.Second)),
		Machine: r.Machine.describe(), Code: r.Machine.revision(), Files: r.Files, CPUs: r.Machine.CPUs, Plot: r.Plot,
	}
	for _, rr := range r.Loads {
		s.Commands = append(s.Commands, rr.Command)
		s.Loads = append(s.Loads, newLoadSection(rr))
	}
	if r.IdleCmd != "" {
		s.Commands = append(s.Commands, r.IdleCmd)
	}
	switch i := r.Idle; {
	case i == nil && r.IdleErr == "":
		s.IdleWhy = "not run"
	case i == nil:
		s.IdleWhy = indentBlock(r.IdleErr)
	default:
		s.Settle, s.IdleWindow = durText(settle), durText(i.Window.Round(100*time.Millisecond))
		s.IdleRows = [][2]string{
			{"CPU", pctText(i.CPUPercent)},
			{fmt.Sprintf("RSS, largest of %d samples", i.Samples), mbText(i.PeakRSS)},
			{"VmHWM, the peak since it started", mbText(i.HWM)},
		}
	}
	for _, t := range r.Targets() {
		fig := t.Figure
		if fig == "" {
			fig = "–"
		}
		s.Targets = append(s.Targets, [3]string{t.Goal, fig, verdictCell(t)})
	}
	if r.Micro != "" {
		fence := fenceFor(r.Micro)
		s.Micro = fence + "\n" + strings.TrimRight(r.Micro, "\n") + "\n" + fence
	}
	return s
}

func newLoadSection(rr LoadResult) loadSection {
	run := rr.Load
	v := loadSection{N: count(run.N)}
	res := rr.Result
	if res == nil {
		v.Failed, v.Problems = indentBlock(rr.Failed), rr.Notes
		return v
	}
	v.Head = fmt.Sprintf("N = %s: %s steady", count(run.N), durText(seconds(res.Steady).Round(100*time.Millisecond)))
	if res.Steady == 0 {
		v.Head = fmt.Sprintf("N = %s: no steady phase", count(run.N))
	}
	if run.Kill+run.Silence > 0 {
		v.Head += fmt.Sprintf(", %s and %s from %s", plural(run.Kill, "kill"), plural(run.Silence, "silence"), durText(run.At))
	}
	cj, hb, d, f := res.ColdJoin, res.Heartbeat, res.Detection, res.Fanout
	v.Rows = [][2]string{
		{"cold join of all " + count(run.N), fmt.Sprintf("%s (%s joined, %s in flight, %s failed attempts)",
			secText(cj.Seconds), count(cj.Joined), count(res.JoinRate), count(int(cj.Failed)))},
		{"heartbeat RPC p50 / p99 / max", fmt.Sprintf("%s (%s calls, %s failed: %s timed out, %s lost; %s skipped)",
			latency3(hb.Latency), count(hb.Count), count(int(hb.Failed)), count(int(hb.TimedOut)), count(int(hb.Lost)), count(int(hb.Skipped)))},
		{"false deaths (a live slave declared suspect or dead)", falseDeaths(res)},
		{"kill → dead, p50 / max", latency2(d.KillDead)},
		{"silence → dead, p50 / max", latency2(d.SilenceDead)},
		{"silenced: last heartbeat → dead, p50 / max", latency2(d.SilenceSinceBeat)},
	}
	if d.Undetected > 0 {
		v.Rows = append(v.Rows, [2]string{"strikes never declared dead", fmt.Sprintf("%d of %d", d.Undetected, len(res.Strikes))})
	}
	fan := "–"
	if f.Slowest.Count > 0 {
		fan = fmt.Sprintf("%s / %s (%s)", msText(f.Slowest.P50), msText(f.Slowest.P99), plural(f.Slowest.Count, "death"))
	}
	if f.Missed > 0 {
		fan += fmt.Sprintf("; %s deliveries missed", count(f.Missed))
	}
	v.Rows = append(v.Rows,
		[2]string{fmt.Sprintf("fan-out: dead event → the last of %s watchers, p50 / p99", count(watchers(res))), fan},
		[2]string{"masterd CPU, steady average / peak (1 s, cold join included)", cpuCell(res.MasterUsage)},
		[2]string{"masterd RSS, at the end / peak (cold join included)", rssCell(res.MasterUsage)},
		[2]string{"loadgen CPU, steady average / peak", cpuCell(res.SelfUsage)})
	if res.Error != "" {
		v.Problems = append(v.Problems, "the run did not complete: "+res.Error)
	}
	v.Problems = append(v.Problems, rr.Notes...)
	return v
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

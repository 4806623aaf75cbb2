package query

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// printer formats cluster state for a terminal as of now, showing clock
// times in loc. Tests fix both, so the output is the same on every machine.
type printer struct {
	now        time.Time
	loc        *time.Location
	staleAfter time.Duration // a report older than this is not current
}

// tableOpts are the flags that shape a table: -o wide and --no-headers.
type tableOpts struct {
	wide      bool
	noHeaders bool
}

// current is m's latest report if its figures are current: m is not dead
// or left, and the report is at most staleAfter old. A report without a
// sampling time is taken as current: there is nothing to judge it by.
func (p printer) current(m rpcdef.Member) (*rpcdef.Resources, bool) {
	r := m.Resources
	if r == nil || m.Status == rpcdef.StatusDead || m.Status == rpcdef.StatusLeft {
		return nil, false
	}
	if !r.SampledAt.IsZero() && p.now.Sub(r.SampledAt) > p.staleAfter {
		return nil, false
	}
	return r, true
}

// stale says whether m has a report that is too old to be shown as
// current, while m itself is not dead or left.
func (p printer) stale(m rpcdef.Member) bool {
	if m.Resources == nil || m.Status == rpcdef.StatusDead || m.Status == rpcdef.StatusLeft {
		return false
	}
	_, ok := p.current(m)
	return !ok
}

// staleNote is what the summary line adds for members whose reports are
// stale: "; 1 report stale (older than 10s)".
func (p printer) staleNote(ms []rpcdef.Member) string {
	n := 0
	for _, m := range ms {
		if p.stale(m) {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	verb := "reports"
	if n == 1 {
		verb = "report"
	}
	return fmt.Sprintf("; %d %s stale (older than %v)", n, verb, p.staleAfter)
}

// statusRank orders statuses for --sort-by status: problems first.
func statusRank(s rpcdef.Status) int {
	switch s {
	case rpcdef.StatusDead:
		return 0
	case rpcdef.StatusSuspect:
		return 1
	case rpcdef.StatusUnknown:
		return 2
	case rpcdef.StatusLeft:
		return 3
	case rpcdef.StatusAlive:
		return 4
	}
	return 5
}

// sorted sorts a copy of ms by key (members --sort-by): name; status,
// problems first; cpu or mem, busiest first, members without current
// figures last; age, longest joined first. Ties go by name.
func (p printer) sorted(ms []rpcdef.Member, key string) []rpcdef.Member {
	ms = byName(ms)
	switch key {
	case "status":
		slices.SortStableFunc(ms, func(a, b rpcdef.Member) int { return cmp.Compare(statusRank(a.Status), statusRank(b.Status)) })
	case "cpu", "mem":
		return p.ranked(ms, key)
	case "age":
		slices.SortStableFunc(ms, func(a, b rpcdef.Member) int {
			switch {
			case a.JoinedAt.IsZero() && b.JoinedAt.IsZero():
				return 0
			case a.JoinedAt.IsZero():
				return 1
			case b.JoinedAt.IsZero():
				return -1
			}
			return a.JoinedAt.Compare(b.JoinedAt)
		})
	}
	return ms
}

// ranked sorts a copy of ms as top shows them: members with current
// figures first, busiest first by key (cpu: then memory; mem: then CPU) or
// by name; then the others by name, dead and left ones last.
func (p printer) ranked(ms []rpcdef.Member, key string) []rpcdef.Member {
	ms = byName(ms)
	group := func(m rpcdef.Member) int {
		if _, ok := p.current(m); ok {
			return 0
		}
		if m.Status == rpcdef.StatusDead || m.Status == rpcdef.StatusLeft {
			return 2
		}
		return 1
	}
	slices.SortStableFunc(ms, func(a, b rpcdef.Member) int {
		ga, gb := group(a), group(b)
		if ga != gb || ga != 0 || key == "name" {
			return cmp.Compare(ga, gb)
		}
		ra, rb := a.Resources, b.Resources
		first, second := cmp.Compare(rb.CPUPercent, ra.CPUPercent), cmp.Compare(rb.MemUsedPercent, ra.MemUsedPercent)
		if key == "mem" {
			first, second = second, first
		}
		if first != 0 {
			return first
		}
		return second
	})
	return ms
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// statusOrder is the order statuses are counted in a summary.
var statusOrder = []rpcdef.Status{rpcdef.StatusAlive, rpcdef.StatusSuspect, rpcdef.StatusDead, rpcdef.StatusLeft, rpcdef.StatusUnknown}

// summary counts members by status, as serf members does:
// "3 members: 2 alive, 1 dead". total, if larger, is the roll before a filter.
func summary(ms []rpcdef.Member, total int) string {
	n := map[rpcdef.Status]int{}
	for _, m := range ms {
		n[m.Status]++
	}
	var parts []string
	for _, s := range statusOrder {
		if n[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[s], s))
			delete(n, s)
		}
	}
	// A status this build does not know is still counted.
	var other []string
	for s := range n {
		other = append(other, string(s))
	}
	slices.Sort(other)
	for _, s := range other {
		parts = append(parts, fmt.Sprintf("%d %s", n[rpcdef.Status(s)], s))
	}
	out := plural(len(ms), "member")
	if len(parts) > 0 {
		out += ": " + strings.Join(parts, ", ")
	}
	if total > len(ms) {
		out += fmt.Sprintf(" (of %d)", total)
	}
	return out
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// byName sorts a copy of ms by name.
func byName(ms []rpcdef.Member) []rpcdef.Member {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b rpcdef.Member) int { return strings.Compare(a.Name, b.Name) })
	return ms
}

// membersTable prints ms (sorted by the caller) and the summary line. total
// is the size of the roll before any --status filter.
//
// The columns are sized for an 80-column terminal: LAST-HB is the time since
// the last heartbeat, INCARN the last digits of the incarnation (members
// NAME, -o wide and -o json show it whole), and CERT how long the node's
// certificate has left. CPU%, MEM% and LOAD are - without current figures:
// no report yet, a stale one, or a dead or left member. -o wide adds the
// fullest disk and the report's age; --no-headers drops the header and the
// summary line.
func (p printer) membersTable(w io.Writer, ms []rpcdef.Member, total int, o tableOpts) error {
	if len(ms) > 0 {
		tw := newTable(w)
		if !o.noHeaders {
			if o.wide {
				fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS\tINCARNATION\tLAST-HB\tCPU%\tMEM%\tLOAD\tDISK%\tREPORT\tAGE\tCERT")
			} else {
				fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS\tINCARN\tLAST-HB\tCPU%\tMEM%\tLOAD\tAGE\tCERT")
			}
		}
		for _, m := range ms {
			cpu, mem, load, disk := "-", "-", "-", "-"
			if r, ok := p.current(m); ok {
				cpu, mem, load = percent(r.CPUPercent), percent(r.MemUsedPercent), fmt.Sprintf("%.2f", r.Load1)
				if d, ok := fullestDisk(r); ok {
					disk = percent(d.UsedPercent)
				}
			}
			hb := "-"
			if !m.LastHeartbeat.IsZero() {
				hb = since(p.now.Sub(m.LastHeartbeat))
			}
			joined := "-"
			if !m.JoinedAt.IsZero() {
				joined = age(p.now.Sub(m.JoinedAt))
			}
			if o.wide {
				report := "-"
				if r := m.Resources; r != nil && !r.SampledAt.IsZero() {
					report = since(p.now.Sub(r.SampledAt))
					if p.stale(m) {
						report += " (stale)"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
					m.Name, dash(m.Addr), dash(string(m.Status)), m.Incarnation, hb, cpu, mem, load, disk, report, joined, p.certLeft(m.CertNotAfter))
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				m.Name, dash(m.Addr), dash(string(m.Status)), shortIncarnation(m.Incarnation), hb, cpu, mem, load, joined, p.certLeft(m.CertNotAfter))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if o.noHeaders {
		return nil
	}
	_, err := fmt.Fprintln(w, summary(ms, total)+p.staleNote(ms))
	return err
}

// certLeft is how long a certificate has left: negative once it has
// expired ("-1d": a day ago), "-" if unknown.
func (p printer) certLeft(notAfter time.Time) string {
	switch left := notAfter.Sub(p.now); {
	case notAfter.IsZero():
		return "-"
	case left <= 0:
		return "-" + age(-left)
	default:
		return age(left)
	}
}

// incarnationDigits is how many last digits of an incarnation the members
// table shows: a start time in nanoseconds is 19 digits, and the last ones
// are those that differ between two starts of a slave.
const incarnationDigits = 6

func shortIncarnation(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= incarnationDigits+1 {
		return s
	}
	return "…" + s[len(s)-incarnationDigits:]
}

// member prints everything known about one member as "key: value" lines.
func (p printer) member(w io.Writer, m rpcdef.Member) error {
	tw := newTable(w)
	line := func(key, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t%s\n", key, fmt.Sprintf(format, args...))
	}
	line("name", "%s", m.Name)
	if m.StatusSince.IsZero() {
		line("status", "%s", dash(string(m.Status)))
	} else {
		line("status", "%s since %s", dash(string(m.Status)), p.when(m.StatusSince, false))
	}
	line("address", "%s", dash(m.Addr))
	line("incarnation", "%d", m.Incarnation)
	line("joined", "%s", p.whenOr(m.JoinedAt, false, "-"))
	line("last heartbeat", "%s", p.whenOr(m.LastHeartbeat, true, "none since the master started"))
	switch {
	case m.CertNotAfter.IsZero():
		line("certificate expires", "unknown")
	case !m.CertNotAfter.After(p.now):
		line("certificate expires", "%s (EXPIRED %s)", m.CertNotAfter.In(p.loc).Format(dateLayout), ago(p.now.Sub(m.CertNotAfter)))
	default:
		line("certificate expires", "%s", p.when(m.CertNotAfter, false))
	}
	r := m.Resources
	if r == nil {
		line("resources", "no report yet")
		return tw.Flush()
	}
	switch sampled := p.whenOr(r.SampledAt, true, "-"); {
	case m.Status == rpcdef.StatusDead || m.Status == rpcdef.StatusLeft:
		line("report sampled", "%s (the last before it was %s: not current)", sampled, m.Status)
	case p.stale(m):
		line("report sampled", "%s (STALE: older than %v)", sampled, p.staleAfter)
	default:
		line("report sampled", "%s", sampled)
	}
	line("cpu count", "%d", r.CPUCount)
	line("cpu model", "%s", dash(r.CPUModel))
	line("cpu used", "%s%%", percent(r.CPUPercent))
	line("load 1m", "%.2f", r.Load1)
	line("load 5m", "%.2f", r.Load5)
	line("load 15m", "%.2f", r.Load15)
	line("memory total", "%s", humanBytes(r.MemTotal))
	line("memory available", "%s", humanBytes(r.MemAvailable))
	line("memory used", "%s%%", percent(r.MemUsedPercent))
	if r.SwapTotal == 0 {
		line("swap", "none")
	} else {
		line("swap total", "%s", humanBytes(r.SwapTotal))
		line("swap free", "%s", humanBytes(r.SwapFree))
	}
	for _, d := range r.Disks {
		line("disk "+d.Mount, "%s%% used, %s free of %s", percent(d.UsedPercent), humanBytes(d.Free), humanBytes(d.Total))
	}
	line("net rx", "%s", humanRate(r.NetRxBytesPerSec))
	line("net tx", "%s", humanRate(r.NetTxBytesPerSec))
	line("uptime", "%s", uptime(r.Uptime))
	line("processes", "%d", r.Procs)
	return tw.Flush()
}

const dateLayout = "2006-01-02 15:04:05 MST"

// when shows an instant as a date and how long ago (or ahead) it is.
func (p printer) when(t time.Time, millis bool) string {
	layout := dateLayout
	if millis {
		layout = "2006-01-02 15:04:05.000 MST"
	}
	d := p.now.Sub(t)
	rel := ago(d)
	if d < 0 {
		rel = "in " + age(-d)
	}
	return fmt.Sprintf("%s (%s)", t.In(p.loc).Format(layout), rel)
}

func (p printer) whenOr(t time.Time, millis bool, none string) string {
	if t.IsZero() {
		return none
	}
	return p.when(t, millis)
}

// fullestDisk is the filesystem closest to full, which top shows.
func fullestDisk(r *rpcdef.Resources) (rpcdef.DiskUsage, bool) {
	if len(r.Disks) == 0 {
		return rpcdef.DiskUsage{}, false
	}
	return slices.MaxFunc(r.Disks, func(a, b rpcdef.DiskUsage) int { return cmp.Compare(a.UsedPercent, b.UsedPercent) }), true
}

func memUsed(r *rpcdef.Resources) uint64 {
	if r.MemAvailable > r.MemTotal {
		return 0
	}
	return r.MemTotal - r.MemAvailable
}

// top prints resources per member as ranked orders them, like kubectl top
// nodes. DISK% is the fullest filesystem's. Members without current
// figures (no report, a stale one, dead or left) show - for each.
func (p printer) top(w io.Writer, ms []rpcdef.Member, o tableOpts) error {
	if len(ms) == 0 {
		if o.noHeaders {
			return nil
		}
		_, err := fmt.Fprintln(w, summary(nil, 0))
		return err
	}
	tw := newTable(w)
	if !o.noHeaders {
		if o.wide {
			fmt.Fprintln(tw, "NAME\tCPUS\tCPU%\tLOAD\tLOAD5\tLOAD15\tMEM%\tMEM-USED/TOTAL\tDISK%\tMOUNT\tNET-RX\tNET-TX\tREPORT\tSTATUS")
		} else {
			fmt.Fprintln(tw, "NAME\tCPU%\tLOAD\tMEM%\tMEM-USED/TOTAL\tDISK%\tNET-RX\tNET-TX\tSTATUS")
		}
	}
	for _, m := range ms {
		status := dash(string(m.Status))
		r, ok := p.current(m)
		if !ok {
			if o.wide {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n", m.Name, status)
			} else {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", m.Name, status)
			}
			continue
		}
		disk, mount := "-", "-"
		if d, ok := fullestDisk(r); ok {
			disk, mount = percent(d.UsedPercent), d.Mount
		}
		if o.wide {
			report := "-"
			if !r.SampledAt.IsZero() {
				report = since(p.now.Sub(r.SampledAt))
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, r.CPUCount, percent(r.CPUPercent),
				r.Load1, r.Load5, r.Load15, percent(r.MemUsedPercent), bytesPair(memUsed(r), r.MemTotal), disk, mount,
				humanRate(r.NetRxBytesPerSec), humanRate(r.NetTxBytesPerSec), report, status)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, percent(r.CPUPercent), r.Load1,
			percent(r.MemUsedPercent), bytesPair(memUsed(r), r.MemTotal), disk,
			humanRate(r.NetRxBytesPerSec), humanRate(r.NetTxBytesPerSec), status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if note := p.staleNote(ms); note != "" && !o.noHeaders {
		_, err := fmt.Fprintf(w, "%s: shown as -\n", strings.TrimPrefix(note, "; "))
		return err
	}
	return nil
}

// clock is an event's time of day, to the millisecond.
func (p printer) clock(t time.Time) string {
	if t.IsZero() {
		return "--:--:--.---"
	}
	return t.In(p.loc).Format("15:04:05.000")
}

// event is one line of watch: "15:04:05.000  v42  node-2  dead  (connection closed)".
// Node names are padded to width, so that kinds line up.
func (p printer) event(ev rpcdef.Event, width int) string {
	var detail []string
	if ev.Kind == rpcdef.EventJoined || ev.Kind == rpcdef.EventRejoined {
		if ev.Addr != "" {
			detail = append(detail, "from "+ev.Addr)
		}
		// The master's reason may name the incarnation already.
		if inc := strconv.FormatUint(ev.Incarnation, 10); !strings.Contains(ev.Reason, inc) {
			detail = append(detail, "incarnation "+inc)
		}
	}
	if ev.Reason != "" {
		detail = append(detail, ev.Reason)
	}
	line := fmt.Sprintf("%s  v%d  %-*s  %s", p.clock(ev.At), ev.Version, width, ev.Node, ev.Kind)
	if len(detail) > 0 {
		line += "  (" + strings.Join(detail, ", ") + ")"
	}
	return line
}

// reset prints what watch shows when the master's history is gone: the
// whole roll at version.
func (p printer) reset(w io.Writer, version uint64, ms []rpcdef.Member) error {
	fmt.Fprintf(w, "-- master state reset at version %d: %s --\n", version, plural(len(ms), "member"))
	return p.statuses(w, ms)
}

// statuses prints one line per member: its name, status and since when.
func (p printer) statuses(w io.Writer, ms []rpcdef.Member) error {
	tw := newTable(w)
	for _, m := range byName(ms) {
		since := ""
		if !m.StatusSince.IsZero() {
			since = "since " + p.clock(m.StatusSince)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", m.Name, dash(string(m.Status)), since)
	}
	return tw.Flush()
}

// watchStart is watch's first line.
func watchStart(cluster, addr string, version uint64, ms []rpcdef.Member) string {
	return fmt.Sprintf("-- watching cluster %s, master at %s, version %d: %s --", cluster, addr, version, summary(ms, 0))
}

// viewHeader is the line above a slave's view:
// "view of node-1 (incarnation N), master spiffe://lab/master/m1 at ADDR, version V".
func viewHeader(v rpcdef.ViewReply) string {
	head := fmt.Sprintf("view of %s (incarnation %d)", v.Node, v.Incarnation)
	master := "no master yet"
	if v.Master != "" || v.MasterAddr != "" {
		master = fmt.Sprintf("master %s at %s", dash(v.Master), dash(v.MasterAddr))
	}
	if !v.Joined {
		return fmt.Sprintf("%s, not joined (%s), version %d", head, master, v.Version)
	}
	return fmt.Sprintf("%s, %s, version %d", head, master, v.Version)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func percent(f float64) string {
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// ago is how long ago something happened: "0.4s ago" under ten seconds,
// then as age does.
func ago(d time.Duration) string {
	if d < 0 {
		d = 0 // the master's clock is a little ahead of ours
	}
	d = d.Round(100 * time.Millisecond)
	if d < 10*time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s ago"
	}
	return age(d) + " ago"
}

// since is ago without the word, for the narrow LAST-HB column: "0.4s", "12s".
func since(d time.Duration) string {
	return strings.TrimSuffix(ago(d), " ago")
}

// age is a duration in its largest whole unit: 12s, 5m, 3h, 2d.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int64(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int64(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh", int64(d/time.Hour))
	default:
		return fmt.Sprintf("%dd", int64(d/(24*time.Hour)))
	}
}

// uptime is a duration in its two largest units: 3d 4h, 5h 12m, 12m 3s, 45s.
func uptime(d time.Duration) string {
	if d < time.Minute {
		return age(d)
	}
	units := []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}}
	for i, u := range units[:3] {
		if d >= u.d {
			next := units[i+1]
			return fmt.Sprintf("%d%s %d%s", d/u.d, u.name, (d%u.d)/next.d, next.name)
		}
	}
	return age(d)
}

var iecUnits = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// scale picks the IEC unit for v, as ls -h does.
func scale(v float64) (float64, string) {
	i := 0
	for v >= 1023.5 && i < len(iecUnits)-1 {
		v /= 1024
		i++
	}
	return v, iecUnits[i]
}

// number shows a scaled figure with one decimal below ten, none above:
// 1.5, 15, 1023.
func number(v float64, unit string) string {
	if unit == "B" || v >= 9.95 {
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// humanBytes is a size in IEC units: 512 B, 1.5 KiB, 16 GiB.
func humanBytes(b uint64) string {
	v, unit := scale(float64(b))
	return number(v, unit) + " " + unit
}

// humanRate is a rate in IEC units per second: 0 B/s, 1.2 KiB/s, 34 MiB/s.
func humanRate(bps float64) string {
	if bps < 0 || math.IsNaN(bps) {
		bps = 0
	}
	v, unit := scale(bps)
	return number(v, unit) + " " + unit + "/s"
}

// bytesPair shows part of a whole in the whole's unit: 7.3/16 GiB.
func bytesPair(part, whole uint64) string {
	w, unit := scale(float64(whole))
	div := math.Pow(1024, float64(slices.Index(iecUnits, unit)))
	return number(float64(part)/div, unit) + "/" + number(w, unit) + " " + unit
}

// The JSON forms: one schema for every command, documented in
// docs/OPERATIONS.md ("rpc-query's JSON"). Field names are snake_case,
// sizes in bytes, rates in bytes per second, durations and ages in seconds;
// a zero time is left out. Incarnations are strings of decimal digits: they
// are nanosecond start times, above 2^53, which jq and JavaScript round.
// Event versions count events and stay numbers.

type memberJSON struct {
	Name          string         `json:"name"`
	Address       string         `json:"address"`
	Status        rpcdef.Status  `json:"status"`
	Incarnation   uint64         `json:"incarnation,string"`
	JoinedAt      time.Time      `json:"joined_at,omitzero"`
	StatusSince   time.Time      `json:"status_since,omitzero"`
	LastHeartbeat time.Time      `json:"last_heartbeat,omitzero"`
	CertNotAfter  time.Time      `json:"cert_not_after,omitzero"`
	Resources     *resourcesJSON `json:"resources"` // null before the first report
}

// resourcesJSON is a member's latest report. Stale is true when the figures
// are not current: older than --stale-after, or the member is dead or left.
type resourcesJSON struct {
	SampledAt           time.Time  `json:"sampled_at,omitzero"`
	AgeSeconds          *float64   `json:"age_seconds"` // null without sampled_at
	Stale               bool       `json:"stale"`
	CPUCount            int        `json:"cpu_count"`
	CPUModel            string     `json:"cpu_model"`
	CPUPercent          float64    `json:"cpu_percent"`
	Load1               float64    `json:"load1"`
	Load5               float64    `json:"load5"`
	Load15              float64    `json:"load15"`
	MemTotalBytes       uint64     `json:"mem_total_bytes"`
	MemAvailableBytes   uint64     `json:"mem_available_bytes"`
	MemUsedPercent      float64    `json:"mem_used_percent"`
	SwapTotalBytes      uint64     `json:"swap_total_bytes"`
	SwapFreeBytes       uint64     `json:"swap_free_bytes"`
	Disks               []diskJSON `json:"disks"`
	NetRxBytesPerSecond float64    `json:"net_rx_bytes_per_second"`
	NetTxBytesPerSecond float64    `json:"net_tx_bytes_per_second"`
	UptimeSeconds       float64    `json:"uptime_seconds"`
	Procs               int        `json:"procs"`
}

type diskJSON struct {
	Mount       string  `json:"mount"`
	TotalBytes  uint64  `json:"total_bytes"`
	FreeBytes   uint64  `json:"free_bytes"`
	UsedPercent float64 `json:"used_percent"`
}

// reportAge is how old m's report is, in seconds; nil if unknown.
func (p printer) reportAge(m rpcdef.Member) *float64 {
	if m.Resources == nil || m.Resources.SampledAt.IsZero() {
		return nil
	}
	a := math.Round(p.now.Sub(m.Resources.SampledAt).Seconds()*1000) / 1000
	return &a
}

func (p printer) memberJSON(m rpcdef.Member) memberJSON {
	j := memberJSON{Name: m.Name, Address: m.Addr, Status: m.Status, Incarnation: m.Incarnation,
		JoinedAt: m.JoinedAt, StatusSince: m.StatusSince, LastHeartbeat: m.LastHeartbeat, CertNotAfter: m.CertNotAfter}
	if r := m.Resources; r != nil {
		_, current := p.current(m)
		rj := &resourcesJSON{SampledAt: r.SampledAt, AgeSeconds: p.reportAge(m), Stale: !current,
			CPUCount: r.CPUCount, CPUModel: r.CPUModel, CPUPercent: r.CPUPercent,
			Load1: r.Load1, Load5: r.Load5, Load15: r.Load15,
			MemTotalBytes: r.MemTotal, MemAvailableBytes: r.MemAvailable, MemUsedPercent: r.MemUsedPercent,
			SwapTotalBytes: r.SwapTotal, SwapFreeBytes: r.SwapFree, Disks: []diskJSON{},
			NetRxBytesPerSecond: r.NetRxBytesPerSec, NetTxBytesPerSecond: r.NetTxBytesPerSec,
			UptimeSeconds: r.Uptime.Seconds(), Procs: r.Procs}
		for _, d := range r.Disks {
			rj.Disks = append(rj.Disks, diskJSON{Mount: d.Mount, TotalBytes: d.Total, FreeBytes: d.Free, UsedPercent: d.UsedPercent})
		}
		j.Resources = rj
	}
	return j
}

func (p printer) membersJSON(ms []rpcdef.Member) []memberJSON {
	out := make([]memberJSON, len(ms))
	for i, m := range ms {
		out[i] = p.memberJSON(m)
	}
	return out
}

// rollJSON is members -o json: the roll at a version.
type rollJSON struct {
	Cluster string       `json:"cluster"`
	Version uint64       `json:"version"`
	Members []memberJSON `json:"members"`
}

// topJSON is one row of top -o json. The figures are null without a
// current report (none yet, a stale one, a dead or left member); stale
// says the report exists but is not current, and report_age_seconds how
// old it is.
type topJSON struct {
	Name                string   `json:"name"`
	Status              string   `json:"status"`
	Stale               bool     `json:"stale"`
	ReportAgeSeconds    *float64 `json:"report_age_seconds"`
	CPUPercent          *float64 `json:"cpu_percent"`
	Load1               *float64 `json:"load1"`
	MemUsedPercent      *float64 `json:"mem_used_percent"`
	MemUsedBytes        *uint64  `json:"mem_used_bytes"`
	MemTotalBytes       *uint64  `json:"mem_total_bytes"`
	DiskUsedPercent     *float64 `json:"disk_used_percent"` // the fullest filesystem
	DiskMount           *string  `json:"disk_mount"`
	NetRxBytesPerSecond *float64 `json:"net_rx_bytes_per_second"`
	NetTxBytesPerSecond *float64 `json:"net_tx_bytes_per_second"`
}

// topJSON is top -o json, in the order given.
func (p printer) topJSON(ms []rpcdef.Member) []topJSON {
	out := []topJSON{}
	for _, m := range ms {
		j := topJSON{Name: m.Name, Status: string(m.Status), ReportAgeSeconds: p.reportAge(m)}
		r, ok := p.current(m)
		j.Stale = m.Resources != nil && !ok
		if ok {
			used := memUsed(r)
			j.CPUPercent, j.Load1, j.MemUsedPercent = &r.CPUPercent, &r.Load1, &r.MemUsedPercent
			j.MemUsedBytes, j.MemTotalBytes = &used, &r.MemTotal
			j.NetRxBytesPerSecond, j.NetTxBytesPerSecond = &r.NetRxBytesPerSec, &r.NetTxBytesPerSec
			if d, ok := fullestDisk(r); ok {
				j.DiskUsedPercent, j.DiskMount = &d.UsedPercent, &d.Mount
			}
		}
		out = append(out, j)
	}
	return out
}

// watchJSON is one line of watch -o json. Type is "snapshot" (the first
// line), "event", or "reset" (the master's history was lost; Members is the
// whole roll).
type watchJSON struct {
	Type        string           `json:"type"`
	Version     uint64           `json:"version"`
	Cluster     string           `json:"cluster,omitempty"`
	Master      string           `json:"master,omitempty"`
	Kind        rpcdef.EventKind `json:"kind,omitempty"`
	Node        string           `json:"node,omitempty"`
	Incarnation uint64           `json:"incarnation,omitempty,string"`
	Address     string           `json:"address,omitempty"`
	Status      rpcdef.Status    `json:"status,omitempty"`
	At          time.Time        `json:"at,omitzero"`
	Reason      string           `json:"reason,omitempty"`
	Members     []memberJSON     `json:"members,omitzero"`
}

func eventJSON(ev rpcdef.Event) watchJSON {
	return watchJSON{Type: "event", Version: ev.Version, Kind: ev.Kind, Node: ev.Node, Incarnation: ev.Incarnation,
		Address: ev.Addr, Status: ev.Status, At: ev.At, Reason: ev.Reason}
}

// viewJSON is view -o json.
type viewJSON struct {
	Node          string       `json:"node"`
	Incarnation   uint64       `json:"incarnation,string"`
	Joined        bool         `json:"joined"`
	Master        string       `json:"master"`
	MasterAddress string       `json:"master_address"`
	Version       uint64       `json:"version"`
	Members       []memberJSON `json:"members"`
	// Masters: the masters the slave was told, leader first.
	Masters []masterAddrJSON `json:"masters,omitempty"`
}

type masterAddrJSON struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

func masterAddrsJSON(ms []rpcdef.MasterAddr) []masterAddrJSON {
	var out []masterAddrJSON
	for _, m := range ms {
		out = append(out, masterAddrJSON{Name: m.Name, Address: m.Addr})
	}
	return out
}

// viewMasters is the line under a slave's view header that names the
// masters it would fail over to: "masters: m2 at ADDR (leader), m1 at ADDR".
func viewMasters(ms []rpcdef.MasterAddr) string {
	parts := make([]string, 0, len(ms))
	for i, m := range ms {
		p := fmt.Sprintf("%s at %s", m.Name, m.Addr)
		if i == 0 {
			p += " (leader)"
		}
		parts = append(parts, p)
	}
	return "masters: " + strings.Join(parts, ", ")
}

package benchset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/muster-lab/muster/internal/atomicfile"
	"github.com/muster-lab/muster/internal/loadgen"
)

// Options say what to run and where to write it.
type Options struct {
	Plan     Plan
	Bin      string // certgen, registryd, masterd, slaved and loadgen
	Examples string // conf/examples
	Repo     string // the checkout, for its commit
	Out      string // docs/BENCHMARKS.md
	Plot     string // docs/bench-scale.svg
	Micro    string // a file of go test -bench output to quote; "" for none
	Keep     bool   // keep the lab directories
	ProcRoot string // normally /proc
	Progress io.Writer
}

// wantFiles is the open-files limit benchset asks for as root: 10,000
// connections in masterd and as many in loadgen, with room to spare.
const wantFiles = 65536

// binaries are the programs the set runs.
var binaries = []string{"certgen", "registryd", "masterd", "slaved", "loadgen"}

func (o *Options) logf(format string, args ...any) {
	fmt.Fprintf(o.Progress, "benchset: "+format+"\n", args...)
}

// Run measures the whole plan. A run that fails is reported as failed and
// the set goes on; Run returns an error only if the set could not run at
// all, or ctx ended.
func Run(ctx context.Context, o Options) (*Report, error) {
	// The children run in their lab directories.
	for _, p := range []*string{&o.Bin, &o.Examples} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		*p = abs
	}
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(o.Bin, b)); err != nil {
			return nil, fmt.Errorf("%w (run make build first, or give --bin)", err)
		}
	}
	if _, err := os.Stat(filepath.Join(o.Examples, "master.toml")); err != nil {
		return nil, fmt.Errorf("the example configs: %w (run benchset from the repository's root, or give --examples)", err)
	}
	var micro string
	if o.Micro != "" {
		data, err := os.ReadFile(o.Micro)
		if err != nil {
			return nil, fmt.Errorf("read the micro-benchmarks' output: %w", err)
		}
		micro = string(data)
	}
	rep := &Report{Plan: o.Plan, Started: time.Now().UTC(), Micro: micro}
	rep.Machine = readMachine(ctx, o.ProcRoot, o.Repo)
	rep.Files = o.fileLimit()

	root, err := os.MkdirTemp("", "muster-bench-")
	if err != nil {
		return nil, fmt.Errorf("make the lab directory: %w", err)
	}
	if o.Keep {
		defer o.logf("labs kept in %s", root)
	} else {
		defer os.RemoveAll(root)
	}
	kids := &children{}
	defer func() {
		for _, err := range kids.stopAll() {
			o.logf("%v", err)
		}
	}()

	total := o.Plan.Idle + settle
	for _, r := range o.Plan.Loads {
		total += r.Expect()
	}
	o.logf("the %s set: %d loadgen runs and one idle slaved, about %s; labs in %s",
		o.Plan.Name, len(o.Plan.Loads), durText(total.Round(time.Minute)), root)
	for _, r := range o.Plan.Loads {
		rr, err := o.runOne(ctx, kids, filepath.Join(root, "n"+strconv.Itoa(r.N)), r)
		if err != nil {
			return nil, err
		}
		rep.Loads = append(rep.Loads, rr)
	}
	rep.IdleCmd = fmt.Sprintf("slaved --config slave.toml   # conf/examples/slave.toml, idle for %s", durText(o.Plan.Idle))
	idle, err := o.runIdle(ctx, kids, filepath.Join(root, "idle"))
	switch {
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case err != nil:
		rep.IdleErr = err.Error()
		o.logf("idle slaved: failed: %v", err)
	default:
		rep.Idle = &idle
		o.logf("idle slaved: CPU %s of a core, RSS at most %s over %s", pctText(idle.CPUPercent), mbText(idle.PeakRSS), durText(idle.Window.Round(100*time.Millisecond)))
	}
	rep.Took = time.Since(rep.Started)
	return rep, nil
}

// fileLimit raises the open-files limit that every child inherits and
// says what it is.
func (o *Options) fileLimit() string {
	need := 0
	for _, r := range o.Plan.Loads {
		need = max(need, r.N+1000)
	}
	limit, err := raiseFileLimit(wantFiles)
	switch {
	case err != nil:
		o.logf("could not raise the open-files limit: %v", err)
		return fmt.Sprintf("could not raise the limit (%v); it is %s", err, count(int(limit)))
	case limit < uint64(need):
		o.logf("the open-files limit is %d, but N=%d needs about %d in masterd and in loadgen: raise the hard limit (ulimit -Hn, or run as root)", limit, need-1000, need)
		return fmt.Sprintf("%s, **short of the %s the largest N needs**", count(int(limit)), count(need))
	}
	return fmt.Sprintf("%s for benchset and every process it started", count(int(limit)))
}

// raiseFileLimit sets the soft open-files limit to the hard one, after
// raising the hard one to want when that is lower and this is root. It
// calls setrlimit even when nothing changes: Go raises the soft limit of
// every program at start but gives the children it starts the original
// soft limit back, unless the program set the limit itself.
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Max < want && os.Geteuid() == 0 {
		up := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up); err == nil {
			return want, nil
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return lim.Cur, fmt.Errorf("setrlimit: %w", err)
	}
	return lim.Cur, nil
}

// runOne is one N in its own lab. Only the end of ctx is an error; a run
// that fails otherwise is a LoadResult that says why.
func (o *Options) runOne(ctx context.Context, kids *children, dir string, r Load) (rr LoadResult, err error) {
	start := time.Now()
	rr = LoadResult{Load: r, Command: Command("", 0, r)}
	defer func() { rr.Took = time.Since(start) }()
	fail := func(err error) (LoadResult, error) {
		if ctx.Err() != nil {
			return rr, context.Cause(ctx)
		}
		rr.Failed = err.Error()
		o.logf("%s: failed: %v", r.Label(), err)
		return rr, nil
	}

	l, err := newLab(ctx, dir, o.Bin, o.Examples, kids)
	if err != nil {
		return fail(err)
	}
	defer func() {
		for _, err := range l.close() {
			o.logf("%s: %v", r.Label(), err)
		}
	}()
	if err := l.startDaemons(ctx); err != nil {
		return fail(err)
	}
	pid := l.master.pid()
	rr.Command = Command(l.regAddr, pid, r)
	o.logf("%s: registryd at %s, masterd pid %d; loadgen %s, about %s",
		r.Label(), l.regAddr, pid, strings.Join(r.Flags(), " "), durText(r.Expect().Round(time.Second)))

	logPath, outPath := filepath.Join(dir, "loadgen.log"), filepath.Join(dir, "loadgen.json")
	lg, err := kids.start("loadgen", filepath.Join(o.Bin, "loadgen"), loadgenArgs(l.regAddr, strconv.Itoa(pid), r), dir, logPath, outPath)
	if err != nil {
		return fail(err)
	}
	if err := lg.wait(ctx, r.Bound()); err != nil {
		kids.stop(lg)
		return fail(fmt.Errorf("loadgen: %v; stopped. Its log ends:\n%s", err, tailFile(logPath, 15)))
	}
	kids.stop(lg) // it has exited: this takes it off the list
	if l.master.exited() {
		rr.Notes = append(rr.Notes, fmt.Sprintf("masterd %s during the run", l.master.status()))
		o.logf("%s: masterd %s during the run; its log ends:\n%s", r.Label(), l.master.status(), tailFile(l.master.log, 15))
	}

	data, err := os.ReadFile(outPath)
	var res loadgen.Result
	if err == nil {
		err = json.Unmarshal(data, &res)
	}
	if err != nil {
		return fail(fmt.Errorf("loadgen %s without a result (%v). Its log ends:\n%s", lg.status(), err, tailFile(logPath, 15)))
	}
	rr.Result = &res
	o.logf("%s: done in %s: %s", r.Label(), durText(time.Since(start).Round(time.Second)), headline(&res))
	if p := res.Problems(); len(p) > 0 {
		msg := strings.Join(p, "; ")
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		o.logf("%s: loadgen %s: %s", r.Label(), lg.status(), msg)
	}
	return rr, nil
}

// headline is a run's main figures in one line.
func headline(res *loadgen.Result) string {
	if res.Error != "" {
		return fmt.Sprintf("incomplete: %s; %s", res.Error, plural(res.FalseDeaths, "false death"))
	}
	hb, d := res.Heartbeat, res.Detection
	s := fmt.Sprintf("cold join %s, heartbeat p50/p99 %s/%s, %s, kill → dead max %s, last heartbeat → dead max %s",
		secText(res.ColdJoin.Seconds), msText(hb.P50), msText(hb.P99), plural(res.FalseDeaths, "false death"),
		msText(d.KillDead.Max), msText(d.SilenceSinceBeat.Max))
	if u := res.MasterUsage; u != nil && u.Steady != nil {
		s += fmt.Sprintf(", masterd CPU %s", pctText(u.Steady.CPUPercent))
	}
	return s
}

// runIdle measures one real slaved, idle, in its own lab.
func (o *Options) runIdle(ctx context.Context, kids *children, dir string) (Idle, error) {
	l, err := newLab(ctx, dir, o.Bin, o.Examples, kids)
	if err != nil {
		return Idle{}, err
	}
	defer func() {
		for _, err := range l.close() {
			o.logf("idle slaved: %v", err)
		}
	}()
	if err := l.startDaemons(ctx); err != nil {
		return Idle{}, err
	}
	s, err := l.startSlave(ctx)
	if s != nil {
		defer func() {
			if err := kids.stop(s); err != nil {
				o.logf("idle slaved: %v", err)
			}
		}()
	}
	if err != nil {
		return Idle{}, err
	}
	o.logf("idle slaved: pid %d joined; measuring it for %s after %s", s.pid(), durText(o.Plan.Idle), durText(settle))
	if err := sleep(ctx, settle); err != nil {
		return Idle{}, err
	}
	idle, err := measureIdle(ctx, o.ProcRoot, s.pid(), o.Plan.Idle)
	if err != nil {
		if s.exited() {
			return Idle{}, fmt.Errorf("slaved %s while measured. Its log ends:\n%s", s.status(), tailFile(s.log, 10))
		}
		return Idle{}, err
	}
	return idle, nil
}

// Write draws the plot and puts the report's section into the doc,
// keeping the rest of it.
func Write(rep *Report, o Options) error {
	if o.Plot != "" {
		rel, err := filepath.Rel(filepath.Dir(absOr(o.Out)), absOr(o.Plot))
		if err != nil {
			rel = o.Plot
		}
		rep.Plot = filepath.ToSlash(rel)
		if err := WritePlot(o.Plot, rep.Loads); err != nil {
			return err
		}
	}
	doc, err := os.ReadFile(o.Out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		doc = []byte("# Benchmarks\n\n")
	case err != nil:
		return fmt.Errorf("read the doc: %w", err)
	}
	section, err := rep.Markdown()
	if err != nil {
		return err
	}
	text, err := Splice(string(doc), section)
	if err != nil {
		return fmt.Errorf("%s: %w", o.Out, err)
	}
	return atomicfile.Write(o.Out, []byte(text), 0o644)
}

func absOr(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// Summary prints the targets for the terminal.
func Summary(w io.Writer, rep *Report, o Options) {
	fmt.Fprintf(w, "benchset: the %s set took %s; wrote %s", rep.Plan.Name, durText(rep.Took.Round(time.Second)), o.Out)
	if o.Plot != "" {
		fmt.Fprintf(w, " and %s", o.Plot)
	}
	fmt.Fprintln(w)
	for _, t := range rep.Targets() {
		fig := ""
		if t.Figure != "" {
			fig = ": " + t.Figure
		}
		fmt.Fprintf(w, "  %s%s — %s\n", t.Goal, fig, t.Verdict())
	}
}

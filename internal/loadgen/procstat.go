package loadgen

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/muster-lab/muster/internal/daemon"
)

// ProcSample is one reading of a process's CPU time and resident memory.
type ProcSample struct {
	At  time.Time
	CPU time.Duration // user + system since the process started
	RSS uint64        // bytes
}

// ProcReader reads one process's figures from a proc filesystem: the real
// /proc, or a fixture tree in tests.
type ProcReader struct {
	pid  int
	proc procfs.Proc
}

// NewProcReader reads process pid under root (normally /proc).
func NewProcReader(root string, pid int) (*ProcReader, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", root, err)
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return nil, fmt.Errorf("process %d under %s: %w (is --master-pid the running masterd?)", pid, root, err)
	}
	return &ProcReader{pid: pid, proc: p}, nil
}

// Read takes a sample now.
func (r *ProcReader) Read() (ProcSample, error) {
	st, err := r.proc.Stat()
	if err != nil {
		return ProcSample{}, fmt.Errorf("read %d/stat: %w", r.pid, err)
	}
	return ProcSample{
		At:  time.Now(),
		CPU: time.Duration(st.CPUTime() * float64(time.Second)),
		RSS: uint64(st.ResidentMemory()),
	}, nil
}

// Usage is what a process used over a stretch of the run.
type Usage struct {
	CPUPercent     float64 `json:"cpu_percent"`      // of one core, averaged; 200 is both cores of a 2-core machine
	PeakCPUPercent float64 `json:"peak_cpu_percent"` // the busiest interval between two samples
	RSSMiB         float64 `json:"rss_mib"`          // at the end
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
}

// usageOf summarises the samples taken in [from, to].
func usageOf(samples []ProcSample, from, to time.Time) (Usage, bool) {
	var in []ProcSample
	for _, s := range samples {
		if !s.At.Before(from) && !s.At.After(to) {
			in = append(in, s)
		}
	}
	if len(in) < 2 {
		return Usage{}, false
	}
	pct := func(a, b ProcSample) float64 {
		wall := b.At.Sub(a.At)
		if wall <= 0 {
			return 0
		}
		return 100 * float64(b.CPU-a.CPU) / float64(wall)
	}
	first, last := in[0], in[len(in)-1]
	u := Usage{CPUPercent: pct(first, last), RSSMiB: mib(last.RSS)}
	// The peak is over stretches of at least minPeakWall: CPU time is
	// counted in 10ms ticks, so a short stretch (a phase mark just after a
	// periodic sample) would show nonsense.
	anchor := first
	for _, s := range in {
		u.PeakRSSMiB = max(u.PeakRSSMiB, mib(s.RSS))
		if s.At.Sub(anchor.At) >= minPeakWall {
			u.PeakCPUPercent = max(u.PeakCPUPercent, pct(anchor, s))
			anchor = s
		}
	}
	if u.PeakCPUPercent == 0 {
		u.PeakCPUPercent = u.CPUPercent
	}
	return u, true
}

// minPeakWall is the shortest stretch a CPU peak is taken over.
const minPeakWall = 500 * time.Millisecond

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// procSampler reads a process every interval, and when asked.
type procSampler struct {
	r       *ProcReader
	mu      sync.Mutex
	samples []ProcSample
	failed  error
}

func newProcSampler(r *ProcReader) *procSampler { return &procSampler{r: r} }

// takeAt takes a sample now and files it under at (the same moment, give
// or take the read), or under the read's own time if at is zero.
func (p *procSampler) takeAt(at time.Time) {
	s, err := p.r.Read()
	if !at.IsZero() {
		s.At = at
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.failed = err
		return
	}
	p.samples = append(p.samples, s)
}

func (p *procSampler) loop(ctx context.Context, every time.Duration) {
	daemon.Every(ctx, every, func(time.Time) { p.takeAt(time.Time{}) })
}

// phases is the usage during the cold join and the steady phase.
func (p *procSampler) phases(joinStart, ready, end time.Time) *PhaseUsage {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := &PhaseUsage{PID: p.r.pid}
	if j, ok := usageOf(p.samples, joinStart, ready); ok {
		u.Join = &j
	}
	if s, ok := usageOf(p.samples, ready, end); ok {
		u.Steady = &s
	}
	if p.failed != nil {
		u.Error = p.failed.Error()
	}
	return u
}

// PhaseUsage is a process's usage in each phase of the run.
type PhaseUsage struct {
	PID    int    `json:"pid"`
	Join   *Usage `json:"cold_join,omitempty"`
	Steady *Usage `json:"steady,omitempty"`
	Error  string `json:"error,omitempty"` // the last failed read: the process ended, say
}

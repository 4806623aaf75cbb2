package benchset

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/procfs"
)

// Idle is one real slaved measured while nothing happens: joined, settled,
// then its CPU time and resident memory over a window.
type Idle struct {
	Window     time.Duration // measured, between the two readings of its CPU time
	CPUPercent float64       // of one core, over the window
	PeakRSS    uint64        // bytes: the largest VmRSS sampled, once a second
	HWM        uint64        // bytes: VmHWM at the end, the peak since it started
	Samples    int
}

// settle is how long slaved runs after its join before it is measured.
const settle = 5 * time.Second

// procReading is one reading of a process from /proc.
type procReading struct {
	at  time.Time
	cpu float64 // seconds, user + system
	rss uint64  // bytes
	hwm uint64  // bytes
}

// readProc reads process pid under root (normally /proc).
func readProc(root string, pid int) (procReading, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return procReading{}, fmt.Errorf("open %s: %w", root, err)
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return procReading{}, fmt.Errorf("process %d: %w", pid, err)
	}
	at := time.Now()
	st, err := p.Stat()
	if err != nil {
		return procReading{}, fmt.Errorf("read %s/%d/stat: %w", root, pid, err)
	}
	status, err := p.NewStatus()
	if err != nil {
		return procReading{}, fmt.Errorf("read %s/%d/status: %w", root, pid, err)
	}
	return procReading{at: at, cpu: st.CPUTime(), rss: status.VmRSS, hwm: status.VmHWM}, nil
}

// measureIdle reads pid's CPU time at the start and the end of window and
// its VmRSS every second in between.
func measureIdle(ctx context.Context, root string, pid int, window time.Duration) (Idle, error) {
	first, err := readProc(root, pid)
	if err != nil {
		return Idle{}, err
	}
	peak := first.rss
	samples := 1
	t := time.NewTicker(time.Second)
	defer t.Stop()
	end := time.NewTimer(window)
	defer end.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return Idle{}, context.Cause(ctx)
		case <-t.C:
			r, err := readProc(root, pid)
			if err != nil {
				return Idle{}, err
			}
			peak = max(peak, r.rss)
			samples++
		case <-end.C:
			done = true
		}
	}
	last, err := readProc(root, pid)
	if err != nil {
		return Idle{}, err
	}
	return idleFrom(first, last, peak, samples+1), nil
}

// idleFrom is the figures from the first and last readings.
func idleFrom(first, last procReading, peak uint64, samples int) Idle {
	wall := last.at.Sub(first.at)
	var cpu float64
	if wall > 0 {
		cpu = 100 * (last.cpu - first.cpu) / wall.Seconds()
	}
	return Idle{Window: wall, CPUPercent: cpu, PeakRSS: max(peak, last.rss), HWM: last.hwm, Samples: samples}
}

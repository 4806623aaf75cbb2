package slaved

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/muster-lab/muster/rpcdef"
)

// Sampler reads a host's resource figures from /proc (through prometheus/procfs) and statfs.
// It is safe for concurrent use.
type Sampler struct {
	mounts []string
	now    func() time.Time

	// cpuCount and cpuModel come from cpuinfo once, in NewSampler: they do not change
	// while the host runs, and cpuinfo is large on big hosts.
	cpuCount int
	cpuModel string

	mu   sync.Mutex
	root string // the proc root, for files procfs does not parse and for error messages
	fs   procfs.FS
	prev counters
}

// counters is the cumulative part of a reading, from which rates are taken.
type counters struct {
	at  time.Time
	cpu procfs.CPUStat
	net procfs.NetDev
}

// minRateWindow is the shortest time over which CPU % and network rates are
// worth computing.
const minRateWindow = time.Second

// NewSampler reads from procRoot (normally "/proc") and reports disk use for the given mount points.
// It takes a first CPU/network reading; a Sample less than minRateWindow
// after it reports the CPU average since boot instead of a rate.
func NewSampler(procRoot string, mounts []string) (*Sampler, error) {
	return newSampler(procRoot, mounts, time.Now)
}

// newSampler is NewSampler with the clock injected.
func newSampler(procRoot string, mounts []string, now func() time.Time) (*Sampler, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, fmt.Errorf("open proc root: %w", err)
	}
	s := &Sampler{
		mounts: append([]string(nil), mounts...),
		now:    now,
		root:   procRoot,
		fs:     fs,
	}
	if s.cpuCount, s.cpuModel, err = s.readCPUInfo(); err != nil {
		return nil, err
	}
	// The master refuses a longer model (rpcdef.MaxCPUModelLen); no real
	// CPU's name comes near it, so cutting it costs nothing.
	s.cpuModel = truncateUTF8(s.cpuModel, rpcdef.MaxCPUModelLen)
	// A wrong mount point in the config shows now, not at the first heartbeat.
	for _, m := range s.mounts {
		if _, err := diskUsage(m); err != nil {
			return nil, err
		}
	}
	if s.prev, err = s.readCounters(); err != nil {
		return nil, err
	}
	return s, nil
}

// Sample returns the figures now; CPU % and network bytes/s cover the time since the previous Sample (or NewSampler).
// A failed Sample leaves the previous reading in place, so the next one covers the whole gap.
func (s *Sampler) Sample() (rpcdef.Resources, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	cur, err := s.readCounters()
	if err != nil {
		return rpcdef.Resources{}, err
	}
	base := s.prev
	if cur.at.Sub(base.at) < minRateWindow {
		// A few milliseconds of counters (the first report, sent right
		// after start) give 0% or 100%: report the CPU average since boot,
		// and no network rate yet.
		base = counters{cpu: procfs.CPUStat{}, at: cur.at}
	}
	r := rpcdef.Resources{
		SampledAt:  cur.at,
		CPUCount:   s.cpuCount,
		CPUModel:   s.cpuModel,
		CPUPercent: cpuPercent(base.cpu, cur.cpu),
	}
	r.NetRxBytesPerSec, r.NetTxBytesPerSec = netRates(base.net, cur.net, cur.at.Sub(base.at))

	load, err := s.fs.LoadAvg()
	if err != nil {
		return rpcdef.Resources{}, fmt.Errorf("read %s: %w", s.path("loadavg"), err)
	}
	r.Load1, r.Load5, r.Load15 = load.Load1, load.Load5, load.Load15

	if err := s.readMemory(&r); err != nil {
		return rpcdef.Resources{}, err
	}
	if r.Uptime, err = s.readUptime(); err != nil {
		return rpcdef.Resources{}, err
	}
	if r.Procs, err = s.countProcs(); err != nil {
		return rpcdef.Resources{}, err
	}
	if len(s.mounts) > 0 {
		r.Disks = make([]rpcdef.DiskUsage, 0, len(s.mounts))
		for _, m := range s.mounts {
			d, err := diskUsage(m)
			if err != nil {
				return rpcdef.Resources{}, err
			}
			r.Disks = append(r.Disks, d)
		}
	}

	s.prev = cur
	return r, nil
}

func (s *Sampler) path(name string) string {
	return filepath.Join(s.root, name)
}

// readCounters reads the clock, the aggregate CPU times and the interface byte counters.
func (s *Sampler) readCounters() (counters, error) {
	c := counters{at: s.now()}
	stat, err := s.fs.Stat()
	if err != nil {
		return counters{}, fmt.Errorf("read %s: %w", s.path("stat"), err)
	}
	c.cpu = stat.CPUTotal
	if c.net, err = s.fs.NetDev(); err != nil {
		return counters{}, fmt.Errorf("read %s: %w", s.path("net/dev"), err)
	}
	return c, nil
}

func (s *Sampler) readCPUInfo() (count int, model string, err error) {
	cpus, err := s.fs.CPUInfo()
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", s.path("cpuinfo"), err)
	}
	if len(cpus) == 0 {
		return 0, "", fmt.Errorf("read %s: no processors listed", s.path("cpuinfo"))
	}
	return len(cpus), strings.TrimSpace(cpus[0].ModelName), nil
}

func (s *Sampler) readMemory(r *rpcdef.Resources) error {
	mi, err := s.fs.Meminfo()
	if err != nil {
		return fmt.Errorf("read %s: %w", s.path("meminfo"), err)
	}
	if mi.MemTotalBytes == nil {
		return fmt.Errorf("read %s: no MemTotal line", s.path("meminfo"))
	}
	r.MemTotal = *mi.MemTotalBytes
	if mi.MemAvailableBytes != nil {
		r.MemAvailable = *mi.MemAvailableBytes
	} else {
		// Kernels before 3.14 have no MemAvailable; free plus page cache is the old estimate.
		r.MemAvailable = value(mi.MemFreeBytes) + value(mi.BuffersBytes) + value(mi.CachedBytes)
	}
	if r.MemTotal > 0 && r.MemAvailable <= r.MemTotal {
		r.MemUsedPercent = float64(r.MemTotal-r.MemAvailable) / float64(r.MemTotal) * 100
	}
	r.SwapTotal = value(mi.SwapTotalBytes)
	r.SwapFree = value(mi.SwapFreeBytes)
	return nil
}

// readUptime reads the first field of uptime, seconds since boot with two decimals.
// procfs has no parser for this file.
func (s *Sampler) readUptime() (time.Duration, error) {
	p := s.path("uptime")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p, err)
	}
	secs, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	// ParseDuration keeps the decimal seconds exact, where float seconds would not.
	d, err := time.ParseDuration(secs + "s")
	if err != nil || d < 0 {
		return 0, fmt.Errorf("read %s: malformed uptime %q", p, secs)
	}
	return d, nil
}

// countProcs counts the numeric entries of the proc root, one for each process.
// It reads names in batches so a host with many processes costs no more than one batch of memory.
func (s *Sampler) countProcs() (int, error) {
	d, err := os.Open(s.root)
	if err != nil {
		return 0, fmt.Errorf("list processes in %s: %w", s.root, err)
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(256)
		for _, name := range names {
			if isPID(name) {
				n++
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("list processes in %s: %w", s.root, err)
		}
	}
}

func isPID(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < '0' || name[i] > '9' {
			return false
		}
	}
	return true
}

// cpuPercent is the busy share of the CPU time between two readings of the aggregate cpu line.
// Guest time is already inside user and nice, so it is not added to the total again.
// It is 0 when no time passed or a counter went backwards.
func cpuPercent(prev, cur procfs.CPUStat) float64 {
	total := cpuTotal(cur) - cpuTotal(prev)
	idle := (cur.Idle + cur.Iowait) - (prev.Idle + prev.Iowait)
	if total <= 0 || idle < 0 || idle > total {
		return 0
	}
	return min(max((total-idle)/total*100, 0), 100)
}

func cpuTotal(c procfs.CPUStat) float64 {
	return c.User + c.Nice + c.System + c.Idle + c.Iowait + c.IRQ + c.SoftIRQ + c.Steal
}

// netRates is bytes per second received and sent by all interfaces but loopback.
// Only interfaces present in both readings count, and one whose counter went backwards
// (reset, or replaced by a new interface of the same name) adds nothing.
func netRates(prev, cur procfs.NetDev, elapsed time.Duration) (rx, tx float64) {
	if elapsed <= 0 {
		return 0, 0
	}
	var rxBytes, txBytes uint64
	for name, c := range cur {
		p, ok := prev[name]
		if name == "lo" || !ok {
			continue
		}
		if c.RxBytes >= p.RxBytes {
			rxBytes += c.RxBytes - p.RxBytes
		}
		if c.TxBytes >= p.TxBytes {
			txBytes += c.TxBytes - p.TxBytes
		}
	}
	secs := elapsed.Seconds()
	return float64(rxBytes) / secs, float64(txBytes) / secs
}

// diskUsage reports the filesystem mounted at mount the way df does.
func diskUsage(mount string) (rpcdef.DiskUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil {
		return rpcdef.DiskUsage{}, fmt.Errorf("statfs mount %s: %w", mount, err)
	}
	// Block counts are in fragment-size units; Frsize is 0 only on very old kernels.
	bsize := uint64(st.Frsize)
	if bsize == 0 {
		bsize = uint64(st.Bsize)
	}
	d := rpcdef.DiskUsage{
		Mount: mount,
		Total: st.Blocks * bsize,
		Free:  st.Bavail * bsize,
	}
	if st.Bfree <= st.Blocks {
		// Like df: used over what unprivileged users could have, so reserved blocks count as neither.
		used := st.Blocks - st.Bfree
		if avail := used + st.Bavail; avail > 0 {
			d.UsedPercent = float64(used) / float64(avail) * 100
		}
	}
	return d, nil
}

func value(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

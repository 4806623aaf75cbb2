package slaved

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/muster-lab/muster/rpcdef"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

// newTestSampler builds a Sampler on a fixture tree with the given clock and no mounts.
func newTestSampler(t *testing.T, root string, clock *fakeClock) *Sampler {
	t.Helper()
	s, err := newSampler(root, nil, clock.now)
	if err != nil {
		t.Fatalf("newSampler(%s): %v", root, err)
	}
	return s
}

// useRoot points s at another proc tree, as if the host had moved on to that snapshot.
func useRoot(t *testing.T, s *Sampler, root string) {
	t.Helper()
	pfs, err := procfs.NewFS(root)
	if err != nil {
		t.Fatalf("procfs.NewFS(%s): %v", root, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.root, s.fs = root, pfs
}

// copyTree copies a fixture tree into a fresh temporary directory, for tests that break files.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "proc")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
	return dst
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

const (
	procA = "testdata/proc-a"
	procB = "testdata/proc-b"
	kB    = 1024
)

func TestSampleFixtures(t *testing.T) {
	clock := newFakeClock()
	s := newTestSampler(t, procA, clock)
	clock.advance(2 * time.Second)
	useRoot(t, s, procB)

	got, err := s.Sample()
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	want := rpcdef.Resources{
		SampledAt: clock.now(),
		CPUCount:  2,
		CPUModel:  "Fake CPU @ 2.00GHz",
		// 400 ticks passed (guest not counted twice), 280 idle and 20 iowait.
		CPUPercent: 25,
		Load1:      0.5, Load5: 0.4, Load15: 0.3,
		MemTotal:       8000000 * kB,
		MemAvailable:   6000000 * kB,
		MemUsedPercent: 25,
		SwapTotal:      2000000 * kB,
		SwapFree:       1500000 * kB,
		// eth0 +2000000/+400000 and wlan0 +200000/+200000 over 2s; lo and the new docker0 left out.
		NetRxBytesPerSec: 1100000,
		NetTxBytesPerSec: 300000,
		Uptime:           12345*time.Second + 670*time.Millisecond,
		Procs:            4,
	}
	assertResources(t, got, want)

	// The next Sample measures from the previous one, not from NewSampler: nothing moved since.
	clock.advance(time.Second)
	again, err := s.Sample()
	if err != nil {
		t.Fatalf("second Sample: %v", err)
	}
	want.SampledAt = clock.now()
	want.CPUPercent, want.NetRxBytesPerSec, want.NetTxBytesPerSec = 0, 0, 0
	assertResources(t, again, want)
}

func assertResources(t *testing.T, got, want rpcdef.Resources) {
	t.Helper()
	if !got.SampledAt.Equal(want.SampledAt) {
		t.Errorf("SampledAt = %v, want %v", got.SampledAt, want.SampledAt)
	}
	ints := []struct {
		name      string
		got, want uint64
	}{
		{"CPUCount", uint64(got.CPUCount), uint64(want.CPUCount)},
		{"MemTotal", got.MemTotal, want.MemTotal},
		{"MemAvailable", got.MemAvailable, want.MemAvailable},
		{"SwapTotal", got.SwapTotal, want.SwapTotal},
		{"SwapFree", got.SwapFree, want.SwapFree},
		{"Uptime", uint64(got.Uptime), uint64(want.Uptime)},
		{"Procs", uint64(got.Procs), uint64(want.Procs)},
	}
	for _, f := range ints {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.name, f.got, f.want)
		}
	}
	floats := []struct {
		name      string
		got, want float64
	}{
		{"CPUPercent", got.CPUPercent, want.CPUPercent},
		{"Load1", got.Load1, want.Load1},
		{"Load5", got.Load5, want.Load5},
		{"Load15", got.Load15, want.Load15},
		{"MemUsedPercent", got.MemUsedPercent, want.MemUsedPercent},
		{"NetRxBytesPerSec", got.NetRxBytesPerSec, want.NetRxBytesPerSec},
		{"NetTxBytesPerSec", got.NetTxBytesPerSec, want.NetTxBytesPerSec},
	}
	for _, f := range floats {
		if !near(f.got, f.want) {
			t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
		}
	}
	if got.CPUModel != want.CPUModel {
		t.Errorf("CPUModel = %q, want %q", got.CPUModel, want.CPUModel)
	}
	if len(got.Disks) != len(want.Disks) {
		t.Errorf("Disks = %v, want %v", got.Disks, want.Disks)
	}
}

// TestSampleRates covers the rate edge cases: no time passing, no ticks passing, counters going backwards.
func TestSampleRates(t *testing.T) {
	tests := []struct {
		name        string
		from, to    string
		elapsed     time.Duration
		wantCPU     float64
		wantRx      float64
		wantTx      float64
		wantUptime  time.Duration
		wantMemUsed float64
	}{
		{"forward", procA, procB, 4 * time.Second, 25, 550000, 150000, 12345670 * time.Millisecond, 25},
		// Under a second: CPU is the average since boot (proc-b's counters), no network rate.
		{"no time passed", procA, procB, 0, 16, 0, 0, 12345670 * time.Millisecond, 25},
		{"clock went back", procA, procB, -time.Second, 16, 0, 0, 12345670 * time.Millisecond, 25},
		{"same snapshot", procA, procA, time.Second, 0, 0, 0, 12343670 * time.Millisecond, 12.5},
		{"counters went back", procB, procA, 2 * time.Second, 0, 0, 0, 12343670 * time.Millisecond, 12.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newTestSampler(t, tt.from, clock)
			clock.advance(tt.elapsed)
			useRoot(t, s, tt.to)
			got, err := s.Sample()
			if err != nil {
				t.Fatalf("Sample: %v", err)
			}
			if !near(got.CPUPercent, tt.wantCPU) {
				t.Errorf("CPUPercent = %v, want %v", got.CPUPercent, tt.wantCPU)
			}
			if !near(got.NetRxBytesPerSec, tt.wantRx) || !near(got.NetTxBytesPerSec, tt.wantTx) {
				t.Errorf("net rx/tx = %v/%v B/s, want %v/%v", got.NetRxBytesPerSec, got.NetTxBytesPerSec, tt.wantRx, tt.wantTx)
			}
			if got.Uptime != tt.wantUptime {
				t.Errorf("Uptime = %v, want %v", got.Uptime, tt.wantUptime)
			}
			if !near(got.MemUsedPercent, tt.wantMemUsed) {
				t.Errorf("MemUsedPercent = %v, want %v", got.MemUsedPercent, tt.wantMemUsed)
			}
		})
	}
}

func TestCPUPercent(t *testing.T) {
	tests := []struct {
		name      string
		prev, cur procfs.CPUStat
		want      float64
	}{
		{"all busy", procfs.CPUStat{User: 1}, procfs.CPUStat{User: 2, System: 1}, 100},
		{"all idle", procfs.CPUStat{Idle: 1}, procfs.CPUStat{Idle: 3}, 0},
		{"iowait is idle", procfs.CPUStat{}, procfs.CPUStat{User: 1, Iowait: 3}, 25},
		{"steal irq softirq are busy", procfs.CPUStat{}, procfs.CPUStat{Steal: 1, IRQ: 1, SoftIRQ: 1, Idle: 1}, 75},
		{"guest is inside user", procfs.CPUStat{}, procfs.CPUStat{User: 1, Guest: 1, Idle: 1}, 50},
		{"no ticks", procfs.CPUStat{User: 5, Idle: 5}, procfs.CPUStat{User: 5, Idle: 5}, 0},
		{"total went back", procfs.CPUStat{User: 5, Idle: 5}, procfs.CPUStat{User: 1, Idle: 1}, 0},
		{"idle went back", procfs.CPUStat{User: 5, Idle: 5}, procfs.CPUStat{User: 10, Idle: 4}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cpuPercent(tt.prev, tt.cur); !near(got, tt.want) {
				t.Errorf("cpuPercent = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSampleErrors breaks one file of a good tree and expects an error naming it.
func TestSampleErrors(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		content string // "" removes the file
		wantIs  error
	}{
		{"missing stat", "stat", "", fs.ErrNotExist},
		{"missing loadavg", "loadavg", "", fs.ErrNotExist},
		{"missing meminfo", "meminfo", "", fs.ErrNotExist},
		{"missing net/dev", "net/dev", "", fs.ErrNotExist},
		{"missing uptime", "uptime", "", fs.ErrNotExist},
		{"missing cpuinfo", "cpuinfo", "", fs.ErrNotExist},
		{"malformed loadavg", "loadavg", "0.1\n", procfs.ErrFileParse},
		{"malformed meminfo", "meminfo", "MemTotal: lots kB\n", nil},
		{"meminfo without MemTotal", "meminfo", "MemFree: 1 kB\n", nil},
		{"malformed uptime", "uptime", "soon 1.00\n", nil},
		{"malformed stat", "stat", "cpu x\n", procfs.ErrFileParse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := copyTree(t, procA)
			s := newTestSampler(t, root, newFakeClock())

			p := filepath.Join(root, tt.file)
			if tt.content == "" {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}

			// cpuinfo is read once, by newSampler; the rest by Sample.
			_, err := newSampler(root, nil, newFakeClock().now)
			if err == nil {
				_, err = s.Sample()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name %s", err, p)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q is not %v", err, tt.wantIs)
			}
		})
	}
}

// TestSampleAfterError checks that a failed Sample keeps the previous reading,
// so the next good Sample covers the whole time since the last good one.
func TestSampleAfterError(t *testing.T) {
	root := copyTree(t, procB)
	clock := newFakeClock()
	s := newTestSampler(t, procA, clock)

	useRoot(t, s, root)
	uptime := filepath.Join(root, "uptime")
	good, err := os.ReadFile(uptime)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(uptime); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Second)
	if _, err := s.Sample(); err == nil {
		t.Fatal("Sample without uptime: no error")
	}

	if err := os.WriteFile(uptime, good, 0o644); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Second)
	got, err := s.Sample()
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if !near(got.CPUPercent, 25) || !near(got.NetRxBytesPerSec, 1100000) || !near(got.NetTxBytesPerSec, 300000) {
		t.Errorf("after a failed Sample: cpu %v%%, rx %v B/s, tx %v B/s; want 25%%, 1100000, 300000 over 2s",
			got.CPUPercent, got.NetRxBytesPerSec, got.NetTxBytesPerSec)
	}
}

func TestNewSamplerErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nowhere")
	tests := []struct {
		name   string
		root   string
		mounts []string
		want   string
	}{
		{"missing proc root", missing, nil, missing},
		{"missing mount", procA, []string{"/", missing}, "statfs mount " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSampler(tt.root, tt.mounts)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %q is not fs.ErrNotExist", err)
			}
		})
	}
}

// TestSampleDisks reads real filesystems: statfs does not go through the proc root.
func TestSampleDisks(t *testing.T) {
	mounts := []string{"/", t.TempDir()}
	clock := newFakeClock()
	s, err := newSampler(procA, mounts, clock.now)
	if err != nil {
		t.Fatalf("newSampler: %v", err)
	}
	got, err := s.Sample()
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	if len(got.Disks) != len(mounts) {
		t.Fatalf("Disks = %+v, want one for each of %v", got.Disks, mounts)
	}
	for i, d := range got.Disks {
		if d.Mount != mounts[i] {
			t.Errorf("Disks[%d].Mount = %q, want %q", i, d.Mount, mounts[i])
		}
		if d.Total == 0 || d.Free > d.Total || d.UsedPercent < 0 || d.UsedPercent > 100 {
			t.Errorf("Disks[%d] = %+v, want Total > 0, Free <= Total, 0 <= UsedPercent <= 100", i, d)
		}
	}
}

func TestSampleRealProc(t *testing.T) {
	s, err := NewSampler("/proc", []string{"/"})
	if err != nil {
		t.Fatalf("NewSampler: %v", err)
	}
	before := time.Now()
	r, err := s.Sample()
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	checks := []struct {
		what string
		ok   bool
	}{
		{"SampledAt is now", !r.SampledAt.Before(before) && !r.SampledAt.After(time.Now())},
		{"CPUCount > 0", r.CPUCount > 0},
		{"0 <= CPUPercent <= 100", r.CPUPercent >= 0 && r.CPUPercent <= 100},
		{"loads >= 0", r.Load1 >= 0 && r.Load5 >= 0 && r.Load15 >= 0},
		{"MemTotal > 0", r.MemTotal > 0},
		{"0 < MemAvailable <= MemTotal", r.MemAvailable > 0 && r.MemAvailable <= r.MemTotal},
		{"0 <= MemUsedPercent <= 100", r.MemUsedPercent >= 0 && r.MemUsedPercent <= 100},
		{"SwapFree <= SwapTotal", r.SwapFree <= r.SwapTotal},
		{"one disk, /", len(r.Disks) == 1 && r.Disks[0].Mount == "/"},
		{"disk Total > 0", len(r.Disks) == 1 && r.Disks[0].Total > 0},
		{"0 <= disk UsedPercent <= 100", len(r.Disks) == 1 && r.Disks[0].UsedPercent >= 0 && r.Disks[0].UsedPercent <= 100},
		{"net rates >= 0", r.NetRxBytesPerSec >= 0 && r.NetTxBytesPerSec >= 0},
		{"Uptime > 0", r.Uptime > 0},
		{"Procs > 0", r.Procs > 0},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: got %+v", c.what, r)
		}
	}
}

func BenchmarkSample(b *testing.B) {
	s, err := NewSampler("/proc", []string{"/"})
	if err != nil {
		b.Fatalf("NewSampler: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sample(); err != nil {
			b.Fatalf("Sample: %v", err)
		}
	}
}

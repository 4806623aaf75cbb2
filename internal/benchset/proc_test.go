package benchset

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestReadProc(t *testing.T) {
	r, err := readProc("testdata/proc", 4242)
	if err != nil {
		t.Fatal(err)
	}
	// utime 1234 + stime 567 ticks at 100 Hz; a comm with parentheses.
	if math.Abs(r.cpu-18.01) > 1e-9 {
		t.Errorf("cpu %v s, want 18.01", r.cpu)
	}
	if r.rss != 10600*1024 || r.hwm != 11264*1024 {
		t.Errorf("rss %d hwm %d, want %d and %d", r.rss, r.hwm, 10600*1024, 11264*1024)
	}
	if _, err := readProc("testdata/proc", 4243); err == nil {
		t.Error("no error for a process that is not there")
	}
}

func TestIdleFrom(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	first := procReading{at: t0, cpu: 10, rss: 9e6, hwm: 10e6}
	last := procReading{at: t0.Add(60 * time.Second), cpu: 10.3, rss: 9.5e6, hwm: 10e6}
	got := idleFrom(first, last, 9.8e6, 61)
	if math.Abs(got.CPUPercent-0.5) > 1e-9 || got.PeakRSS != 9.8e6 || got.HWM != 10e6 || got.Window != time.Minute || got.Samples != 61 {
		t.Errorf("got %+v", got)
	}
}

func TestReadMachine(t *testing.T) {
	m := readMachine(context.Background(), "testdata/proc", t.TempDir())
	want := Machine{CPU: "AMD EPYC 7R13 Processor", CPUs: 2, MemTotal: 24634108 * 1024, Kernel: "6.1.102-test",
		Arch: m.Arch, Go: m.Go, LoadAvg: "0.52 0.61 0.40"}
	if m != want {
		t.Errorf("got  %+v\nwant %+v", m, want)
	}
	if got := m.revision(); got != "an unknown commit (not a git checkout)" {
		t.Errorf("revision %q", got)
	}
}

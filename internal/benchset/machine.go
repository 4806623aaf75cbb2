package benchset

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// Machine is what the figures were measured on.
type Machine struct {
	CPU      string // model name
	CPUs     int
	MemTotal uint64 // bytes
	Kernel   string // uname -r
	Arch     string
	Go       string
	LoadAvg  string // /proc/loadavg's three averages when the set began
	Commit   string // git rev-parse --short HEAD; "" when unknown
	Dirty    bool   // the work tree had changes
}

// readMachine describes this machine from the proc tree at root, and the
// checkout in dir.
func readMachine(ctx context.Context, root, dir string) Machine {
	m := Machine{Arch: runtime.GOARCH, Go: runtime.Version()}
	m.CPU, m.CPUs = cpuInfo(filepath.Join(root, "cpuinfo"))
	if fs, err := procfs.NewFS(root); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil {
			m.MemTotal = *mi.MemTotal * 1024
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "sys", "kernel", "osrelease")); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(root, "loadavg")); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	m.Commit, m.Dirty = gitState(ctx, dir)
	return m
}

// cpuInfo is the CPU's model and the number of processors listed.
func cpuInfo(path string) (model string, n int) {
	f, err := os.Open(path)
	if err != nil {
		return "", runtime.NumCPU()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			n++
		case "model name", "Model", "cpu model", "cpu":
			if model == "" {
				model = val
			}
		}
	}
	if n == 0 {
		n = runtime.NumCPU()
	}
	return model, n
}

// gitState is the short commit of dir's checkout and whether its work tree
// has changes; "" when dir is not a checkout or git is missing.
func gitState(ctx context.Context, dir string) (commit string, dirty bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	git := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		return cmd.Output()
	}
	out, err := git("rev-parse", "--short", "HEAD")
	if err != nil {
		return "", false
	}
	status, err := git("status", "--porcelain")
	return string(bytes.TrimSpace(out)), err != nil || len(bytes.TrimSpace(status)) > 0
}

// describe is the machine in one sentence for the doc.
func (m Machine) describe() string {
	cpu := m.CPU
	if cpu == "" {
		cpu = "CPU model unknown"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d × %s, %s of memory, Linux %s (%s), %s", m.CPUs, cpu, gib(m.MemTotal), orUnknown(m.Kernel), m.Arch, m.Go)
	if m.LoadAvg != "" {
		fmt.Fprintf(&b, "; load average %s at the start", m.LoadAvg)
	}
	return b.String()
}

// revision is the commit, and whether the tree was dirty, for the doc.
func (m Machine) revision() string {
	switch {
	case m.Commit == "":
		return "an unknown commit (not a git checkout)"
	case m.Dirty:
		return "commit `" + m.Commit + "` plus uncommitted changes"
	}
	return "commit `" + m.Commit + "`, a clean tree"
}

func gib(b uint64) string {
	if b == 0 {
		return "an unknown amount"
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// netnsTimeout bounds the whole demo: about 25 s of scenario, the rest slack
// for a slow or race-built run.
const netnsTimeout = 120 * time.Second

// silentHostLimit is the correctness bound on the time from a slave's link
// going down to the master's dead verdict: the goal is 2 heartbeat intervals
// (2 s, which the demo prints); this leaves a second of margin for a loaded
// machine. A figure is a benchmark's business, not this test's.
const silentHostLimit = 3000

// TestNetnsPartitionHealRestart runs scripts/demo-netns.sh --ci with the
// binaries TestMain built: every node in its own network namespace, a
// partition made by setting a switch port down, the heal, and a master
// SIGKILLed and restarted. It needs root and working ip netns, and skips
// otherwise.
func TestNetnsPartitionHealRestart(t *testing.T) {
	if reason := netnsUnavailable(t); reason != "" {
		t.Skip(reason)
	}
	logs := t.TempDir()
	cx, cancel := context.WithTimeout(context.Background(), netnsTimeout)
	defer cancel()
	cmd := exec.CommandContext(cx, filepath.Join(repoRoot, "scripts", "demo-netns.sh"), "--ci", "--logs", logs)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "MUSTER_BIN="+binDir)
	// On timeout, SIGTERM: the script's trap stops its daemons and removes
	// its namespaces. SIGKILL only if that takes longer than WaitDelay.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	out := &lineLog{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start demo-netns.sh: %v", err)
	}
	tag := fmt.Sprintf("mst%d-", cmd.Process.Pid)
	err := cmd.Wait()

	defer func() {
		if t.Failed() || os.Getenv("MUSTER_E2E_LOGS") != "" {
			t.Logf("--- demo-netns.sh output:\n%s", out.String())
			names, _ := filepath.Glob(filepath.Join(logs, "*.log"))
			for _, name := range names {
				data, _ := os.ReadFile(name)
				t.Logf("--- %s:\n%s", filepath.Base(name), data)
			}
		}
	}()
	// Whatever happened, nothing of this run may be left.
	checkNoLeftovers(t, tag)

	switch {
	case errors.Is(cx.Err(), context.DeadlineExceeded):
		t.Fatalf("demo-netns.sh did not finish within %v", netnsTimeout)
	case err != nil:
		t.Fatalf("demo-netns.sh: %v", err)
	}
	text := out.String()

	// The partition: detected by the heartbeat detector, in time.
	m := regexp.MustCompile(`(?m)^RESULT partition node=(\S+) detect_ms=(-?\d+) silence_ms=(\d+) bound_ms=(\d+) detector=(\S+) reason="([^"]*)"$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no RESULT partition line")
	}
	node, detector, reason := m[1], m[5], m[6]
	detect, _ := strconv.Atoi(m[2])
	t.Logf("%s: link down -> dead in %d ms (silence %s ms, goal %s ms): %s", node, detect, m[3], m[4], reason)
	if detector != "heartbeat" || !strings.HasPrefix(reason, "no heartbeat for ") {
		t.Errorf("%s declared dead by %s (%q), want the heartbeat detector", node, detector, reason)
	}
	if detect <= 0 || detect > silentHostLimit {
		t.Errorf("%s declared dead %d ms after its link went down, want within %d ms", node, detect, silentHostLimit)
	}
	// The master's own log agrees: no connection close was seen.
	master, err := os.ReadFile(filepath.Join(logs, "master.log"))
	if err != nil {
		t.Fatalf("the master's log: %v", err)
	}
	if !strings.Contains(string(master), node+" is now dead: no heartbeat for ") {
		t.Errorf("master.log has no %q line", node+" is now dead: no heartbeat for")
	}
	if strings.Contains(string(master), node+" is now suspect: connection closed") ||
		strings.Contains(string(master), node+" is now dead: connection closed") {
		t.Errorf("master.log shows %s's connection closing: the partition was not silent", node)
	}

	// The heal, and the master's restart.
	for _, want := range []string{
		`(?m)^RESULT alive slaves=3$`,
		`(?m)^RESULT heal node=` + regexp.QuoteMeta(node) + ` status=alive rejoin_ms=\d+$`,
		`(?m)^RESULT restart restored=3 alive=3 rejoin_ms=\d+ roster_kept=yes$`,
		`(?m)^RESULT cleanup namespaces_left=0$`,
		`(?m)^RESULT ok$`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("no line matching %s", want)
		}
	}
	names, _ := filepath.Glob(filepath.Join(logs, "*.log"))
	for _, name := range names {
		data, _ := os.ReadFile(name)
		if bytes.Contains(data, []byte("WARNING: DATA RACE")) {
			t.Errorf("%s reports a data race", filepath.Base(name))
		}
	}
}

// netnsUnavailable says why this machine cannot run the demo, or "" if it
// can: it needs root and an ip netns that works, which a throwaway namespace
// proves.
func netnsUnavailable(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return "not root: the network-namespace demo needs root for ip netns (run go test as root, as CI does)"
	}
	for _, tool := range []string{"ip", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("no %s command: the network-namespace demo needs it", tool)
		}
	}
	probe := fmt.Sprintf("mstprobe%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns does not work here (ip netns add %s: %v: %s)", probe, err, bytes.TrimSpace(out))
	}
	if out, err := exec.Command("ip", "netns", "del", probe).CombinedOutput(); err != nil {
		t.Fatalf("remove the probe namespace %s: %v: %s", probe, err, bytes.TrimSpace(out))
	}
	return ""
}

// checkNoLeftovers fails the test if a namespace or interface named with tag,
// or a process of a binary TestMain built, is still there. Namespaces of this
// run are removed after the failure is noted.
func checkNoLeftovers(t *testing.T, tag string) {
	t.Helper()
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Errorf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(list), "\n") {
		name, _, _ := strings.Cut(line, " ")
		if strings.HasPrefix(name, tag) {
			t.Errorf("namespace %s is left after the demo", name)
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Logf("ip netns del %s: %v: %s", name, err, out)
			}
		}
	}
	links, err := exec.Command("ip", "-br", "link").Output()
	if err != nil {
		t.Errorf("ip -br link: %v", err)
	}
	for _, line := range strings.Split(string(links), "\n") {
		if strings.HasPrefix(line, tag) {
			t.Errorf("interface left in the root namespace: %s", line)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err == nil && strings.HasPrefix(exe, binDir+string(filepath.Separator)) {
			cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
			pid := filepath.Base(filepath.Dir(p))
			t.Errorf("process %s is left after the demo: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
			if n, err := strconv.Atoi(pid); err == nil {
				syscall.Kill(n, syscall.SIGKILL) // a binary of this test's binDir: this run started it
			}
		}
	}
}

package tests

import (
	"bytes"
	"context"
	"encoding/json"
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
	text, logs := runNetnsDemo(t)

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
	noDataRace(t, logs)
}

// TestNetnsHAPartition runs scripts/demo-netns.sh --ha --ci: three master
// hosts (a registryd and a masterd each, one raft group) and three slave
// hosts, each in its own network namespace. The leader's switch port is set
// down: the other two must elect a new leader in a higher term, the cut-off
// one must step down ("this master is no longer the leader") and say it
// does not lead, and none of its verdicts may be applied: a watcher of a
// master on the majority side sees no suspect or dead event in the whole
// run, its versions have no gap, and every registry ends up holding the
// leader at its term as the epoch. After the heal the old leader is a
// follower.
func TestNetnsHAPartition(t *testing.T) {
	text, logs := runNetnsDemo(t, "--ha")
	line := func(re string) []string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^RESULT ` + re + `$`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no line matching RESULT %s", re)
		}
		return m
	}
	first := line(`ha leader=(m\d) term=(\d+) alive=3`)
	part := line(`ha-partition old=(m\d) new=(m\d) term_before=(\d+) term=(\d+) elect_ms=(-?\d+) stepdown_ms=(-?\d+) old_state=(\S*) stepped_down=yes`)
	heal := line(`ha-heal old=(m\d) state=follower leader=(m\d) term=(\d+) alive=3`)
	fence := line(`ha-fencing old_verdicts=(\d+) committed_verdicts=(\d+) registries_at_leader_epoch=(\d+) gapless=(\S+)`)
	line(`cleanup namespaces_left=0`)
	line(`ok`)

	old, newLeader := part[1], part[2]
	before, _ := strconv.Atoi(part[3])
	after, _ := strconv.Atoi(part[4])
	t.Logf("%s (term %s) cut off: %s leads in term %d after %s ms; %s stepped down after %s ms and is %s; %s verdicts logged by it",
		old, part[3], newLeader, after, part[5], old, part[6], part[7], fence[1])
	if old != first[1] {
		t.Errorf("the master cut off is %s, but the leader was %s", old, first[1])
	}
	if newLeader == old {
		t.Errorf("the new leader is the cut-off master %s", old)
	}
	if after <= before {
		t.Errorf("the new leader's term %d is not above the old one's %d", after, before)
	}
	if part[7] == "leader" || part[7] == "" {
		t.Errorf("the cut-off master %s, asked on its host, says it is %q", old, part[7])
	}
	if heal[1] != old || heal[2] == old {
		t.Errorf("after the heal %s is a follower of %s, want %s a follower of another", heal[1], heal[2], old)
	}
	if fence[2] != "0" || fence[3] != "3" || fence[4] != "yes" {
		t.Errorf("fencing: %s verdicts committed, %s of 3 registries at the leader's epoch, versions without a gap: %s; want 0, 3, yes",
			fence[2], fence[3], fence[4])
	}

	// The logs agree with the script.
	read := func(name string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(logs, name))
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		return string(data)
	}
	if !strings.Contains(read(old+".log"), "this master is no longer the leader") {
		t.Errorf("%s.log does not say it is no longer the leader", old)
	}
	// What the cut-off master judged, if anything, must not be among the
	// committed events: no live slave is ever suspect or dead in this run.
	verdict := regexp.MustCompile(`msg="(node-\d) is now (suspect|dead)`)
	for _, m := range verdict.FindAllStringSubmatch(read(old+".log"), -1) {
		t.Logf("%s logged a verdict: %s is now %s", old, m[1], m[2])
	}
	var snapshot bool
	var last uint64
	for i, l := range strings.Split(strings.TrimSpace(read("watch.jsonl")), "\n") {
		var ev struct {
			Type    string `json:"type"`
			Kind    string `json:"kind"`
			Node    string `json:"node"`
			Version uint64 `json:"version"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("watch.jsonl line %d: %v: %s", i+1, err, l)
		}
		switch {
		case ev.Type == "snapshot":
			snapshot = true
		case ev.Type != "event":
			t.Errorf("watch.jsonl line %d: a %s, not an event: %s", i+1, ev.Type, l)
		case ev.Kind == "suspect" || ev.Kind == "dead":
			t.Errorf("a verdict was committed: %s is %s at version %d (every slave was alive all along)", ev.Node, ev.Kind, ev.Version)
		}
		if i > 0 && ev.Version != last+1 {
			t.Errorf("watch.jsonl: version %d after %d", ev.Version, last)
		}
		last = ev.Version
	}
	if !snapshot {
		t.Error("watch.jsonl has no snapshot: the watcher did not start")
	}
	// Every registry holds the leader of the last term at that epoch.
	epoch := fmt.Sprintf(", epoch %s", heal[3])
	for _, m := range []string{"m1", "m2", "m3"} {
		if reg := read("registry-" + m + ".log"); !strings.Contains(reg, "registered ClusterService/lab at ") || !strings.Contains(reg, epoch) {
			t.Errorf("registry-%s.log has no registration at epoch %s", m, heal[3])
		}
	}
	noDataRace(t, logs)
}

// runNetnsDemo runs scripts/demo-netns.sh --ci with args and the binaries
// TestMain built, checks that nothing of the run is left and that it
// succeeded, and returns its output and the directory its logs were copied
// to. It skips without root and a working ip netns.
func runNetnsDemo(t *testing.T, args ...string) (text, logs string) {
	t.Helper()
	if reason := netnsUnavailable(t); reason != "" {
		t.Skip(reason)
	}
	logs = t.TempDir()
	cx, cancel := context.WithTimeout(context.Background(), netnsTimeout)
	defer cancel()
	args = append([]string{"--ci", "--logs", logs}, args...)
	cmd := exec.CommandContext(cx, filepath.Join(repoRoot, "scripts", "demo-netns.sh"), args...)
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

	t.Cleanup(func() {
		if t.Failed() || os.Getenv("MUSTER_E2E_LOGS") != "" {
			t.Logf("--- demo-netns.sh %s output:\n%s", strings.Join(args, " "), out.String())
			names, _ := filepath.Glob(filepath.Join(logs, "*"))
			for _, name := range names {
				data, _ := os.ReadFile(name)
				t.Logf("--- %s:\n%s", filepath.Base(name), data)
			}
		}
	})
	// Whatever happened, nothing of this run may be left.
	checkNoLeftovers(t, tag)

	switch {
	case errors.Is(cx.Err(), context.DeadlineExceeded):
		t.Fatalf("demo-netns.sh did not finish within %v", netnsTimeout)
	case err != nil:
		t.Fatalf("demo-netns.sh: %v", err)
	}
	return out.String(), logs
}

// noDataRace fails the test if a log in logs reports a data race.
func noDataRace(t *testing.T, logs string) {
	t.Helper()
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

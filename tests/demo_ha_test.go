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
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// TestDemoHA runs scripts/demo-ha.sh --ci, as make demo-ha runs the script
// but with the binaries TestMain built, and checks what issue 15 asks the
// demo to show: the leader SIGKILLed and another elected, every slave alive
// on it with no suspect or dead event, the old leader back as a follower,
// a slave killed during a failover reported dead, and a watcher's versions
// running on through both failovers with no gap, no repeat and no reset.
func TestDemoHA(t *testing.T) {
	out, pgid := runDemo(t, "demo-ha.sh", 5*time.Minute)
	find := demoFinder(t, out)

	// The steps, in order.
	var headings []string
	for _, m := range regexp.MustCompile(`(?m)^== (.*) ==$`).FindAllStringSubmatch(out, -1) {
		headings = append(headings, m[1])
	}
	want := []string{
		"setup: ", "three registries", "three masters", "a watcher", "three slaves",
		"the leader is SIGKILLed", "the old leader comes back", "a slave killed during a failover",
		"the watcher's events", "stop: ", "summary",
	}
	if len(headings) != len(want) {
		t.Errorf("the demo has %d steps, want %d: %q", len(headings), len(want), headings)
	}
	for i := 0; i < len(want) && i < len(headings); i++ {
		if !strings.HasPrefix(headings[i], want[i]) {
			t.Errorf("step %d is %q, want one starting %q", i+1, headings[i], want[i])
		}
	}

	for i := 1; i <= 3; i++ {
		find(fmt.Sprintf("registryd reg%d ready", i), fmt.Sprintf(`(?m)^registryd reg%d \(pid \d+\) ready at 127\.0\.0\.1:\d+$`, i))
	}
	find("three raft peers", `(?m)^peers = \["m1=127\.0\.0\.1:\d+", "m2=127\.0\.0\.1:\d+", "m3=127\.0\.0\.1:\d+"\]$`)
	roles := regexp.MustCompile(`(?m)^masterd (m[123]) \(pid \d+\) ready at 127\.0\.0\.1:\d+ as (leader|follower)$`).FindAllStringSubmatch(out, -1)
	if len(roles) < 3 {
		t.Fatalf("%d masterd ready lines, want 3 at the start and 1 for the restart", len(roles))
	}
	var started []string
	for _, r := range roles[:3] {
		started = append(started, r[1]+" "+r[2])
	}
	if n := strings.Count(strings.Join(started, ","), "leader"); n > 1 {
		t.Errorf("the three masters started as %v: more than one leader", started)
	}

	// The group, and three slaves on its leader.
	first := ""
	if m := find("the group with its leader", `(?m)^3 masters: leader (m[123]) in term (\d+), 2 followers$`); m != nil {
		first = m[1]
	}
	find("the leader in rpc-query masters", `(?m)^`+first+` +127\.0\.0\.1:\d+ +127\.0\.0\.1:\d+ +leader +\d+ +— +\d+$`)
	if n := len(regexp.MustCompile(`(?m)^3 members: 3 alive$`).FindAllString(out, -1)); n < 2 {
		t.Errorf("rpc-query members said 3 alive %d times, want 2: after the joins and after the failover", n)
	}
	for i, n := range []string{"node-1", "node-2", "node-3"} {
		find(n+"'s joined event", fmt.Sprintf(`(?m)^  \+\d+ ms +v%d +%s +joined$`, i+1, n))
	}

	// 1. The leader is SIGKILLed; another leads, and hears every slave.
	find("the kill of the leader", `(?m)^\$ kill -9 \d+ +# masterd `+first+`, the leader$`)
	second := ""
	if m := find("the new leader and the failover times", `(?m)^(m[123]) leads \(term (\d+)\) (\d+) ms after the kill; it had a heartbeat\nfrom every slave (\d+) ms after it`); m != nil {
		second = m[1]
		if second == first {
			t.Errorf("%s leads after %s was killed", second, first)
		}
		t.Logf("failover: %s SIGKILLed, %s led %s ms later and heard every slave at %s ms", first, second, m[3], m[4])
	}
	find("the new leader's grace", `(?m)^this master leads the group in term \d+: 3 members; those that were up are unknown until they join again, and dead if not within [\d.]+m?s$`)
	find("the group without its old leader", `(?m)^3 masters: leader `+second+` in term \d+, 1 follower, 1 unreachable$`)
	find("the old leader unreachable", `(?m)^`+first+` +127\.0\.0\.1:\d+ +127\.0\.0\.1:\d+ +unreachable `)
	find("the watcher's reconnection", `(?m)^rpc-query: reconnected to the master at 127\.0\.0\.1:\d+$`)
	find("no false death after the failover", `(?m)^(no event since the kill: no slave suspect or dead|no slave suspect or dead)`)
	find("node-1's view of the new leader", `(?m)^view of node-1 \(incarnation \d+\), master spiffe://lab/master/`+second+` at 127\.0\.0\.1:\d+, version \d+$`)

	// 2. The old leader comes back as a follower.
	if r := roles[len(roles)-1]; len(roles) != 4 || r[1] != first || r[2] != "follower" {
		t.Errorf("the last masterd ready line is %q, want %s back as a follower (of %d ready lines)", r[0], first, len(roles))
	}
	// The leader is second's still, unless an election moved it meanwhile
	// (the script says which).
	lead2 := ""
	if m := find("the group whole again", `(?m)^3 masters: leader (m[123]) in term \d+, 2 followers\n(.*\n){0,6}Its state_dir kept its raft log`); m != nil {
		lead2 = m[1]
		if lead2 == first {
			t.Errorf("%s leads again after its restart", first)
		}
	}
	find("the old leader a follower", `(?m)^`+first+` +127\.0\.0\.1:\d+ +127\.0\.0\.1:\d+ +follower `)

	// 3. The leader and node-3 SIGKILLed together: node-3 is dead.
	find("the kill of the leader and node-3", `(?m)^\$ kill -9 \d+ \d+ +# masterd `+lead2+`, the leader; slaved node-3$`)
	third := ""
	if m := find("the third leader", `(?m)^(m[123]) leads \(term \d+\); node-1 and node-2 are back`); m != nil {
		third = m[1]
		if third == lead2 {
			t.Errorf("%s leads after it was killed", third)
		}
	}
	find("node-3's dead event", `(?m)^  \+\d+ ms +v\d+ +node-3 +dead +not heard from within [\d.]+m?s of this master becoming the leader$`)
	if m := find("the kill to dead time", `(?m)^node-3 declared dead (\d+) ms after kill -9, by `+third+`$`); m != nil {
		if ms, _ := strconv.Atoi(m[1]); ms <= 0 {
			t.Errorf("node-3 declared dead %d ms after the kill: want a positive figure", ms)
		}
		t.Logf("node-3, killed with the leader, declared dead %s ms after kill -9", m[1])
	}
	find("node-3 dead in the roll", `(?m)^node-3 +127\.0\.0\.1:\d+ +dead `)
	find("the roll after the second failover", `(?m)^3 members: 2 alive, 1 dead$`)

	// The watcher: every version once, in order, through both failovers.
	evs := regexp.MustCompile(`(?m)^  v(\d+) +(node-\d) +(\w+) +from (m[123])$`).FindAllStringSubmatch(out, -1)
	if len(evs) < 4 {
		t.Errorf("the watcher's table has %d events, want the 3 joins and node-3's death", len(evs))
	}
	for i, e := range evs {
		if v, _ := strconv.Atoi(e[1]); v != i+1 {
			t.Errorf("the watcher's event %d is v%d, want v%d: %q", i+1, v, i+1, e[0])
		}
		if i < 3 && (e[3] != "joined" || e[4] != first) {
			t.Errorf("the watcher's event %d is %q, want a join from %s", i+1, e[0], first)
		}
		if (e[3] == "suspect" || e[3] == "dead") && e[2] != "node-3" {
			t.Errorf("a live slave judged: %q", e[0])
		}
	}
	if len(evs) > 0 {
		if last := evs[len(evs)-1]; last[2] != "node-3" || last[3] != "dead" || last[4] != third {
			t.Errorf("the watcher's last event is %q, want node-3 dead from %s", last[0], third)
		}
	}
	find("the watcher's two reconnections", `(?m)^\$ grep reconnected logs/watch\.log\n(rpc-query: reconnected to the master at 127\.0\.0\.1:\d+\n){2}\S`)
	find("the watcher's verdict", `(?m)^no version missing, none twice, no reset$`)
	if m := regexp.MustCompile(`(?m)^  \+\d+ ms +v\d+ +node-[12] +(suspect|dead)\b.*$`).FindString(out); m != "" {
		t.Errorf("a live slave was judged: %q", m)
	}

	// Everything stopped cleanly; the killed ones are not restarted.
	for _, d := range []string{"slaved node-1", "slaved node-2", "registryd reg1", "registryd reg2", "registryd reg3"} {
		find(d+"'s clean exit", `(?m)^`+d+` \(pid \d+\) exited with status 0$`)
	}
	for _, m := range masterNames {
		if m != lead2 {
			find("masterd "+m+"'s clean exit", `(?m)^masterd `+m+` \(pid \d+\) exited with status 0$`)
		}
	}
	find("the last line", `(?m)^demo-ha: all processes stopped\n\z`)
	checkDemoEnd(t, out, find, "demo-ha", pgid)
}

// runDemo runs scripts/SCRIPT --ci from the repository, with the binaries
// TestMain built and a temporary directory of the test's, and fails the
// test unless it exits 0 within timeout. It returns what the script
// printed and its process group, which is killed after the test; if the
// test fails, the output is logged.
func runDemo(t *testing.T, script string, timeout time.Duration) (out string, pgid int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the demo reads /proc and uses GNU date: Linux only")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, filepath.Join(repoRoot, "scripts", script), "--ci")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "MUSTER_BIN="+binDir, "TMPDIR="+t.TempDir())
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	// The script and everything it starts share a process group: on a
	// timeout, and after the test, the whole group is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	pgid = cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	out = buf.String()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scripts/%s --ci (%v) printed:\n%s", script, took, out)
		}
	})
	if ctx.Err() != nil {
		t.Fatalf("%s --ci did not finish within %v", script, timeout)
	}
	if runErr != nil {
		t.Fatalf("%s --ci: %v", script, runErr)
	}
	t.Logf("%s --ci took %v", script, took)
	return out, pgid
}

// demoFinder returns a function that finds re in out, with the lines the
// script folded to 80 columns joined again, and reports an error naming
// what was looked for if it is not there.
func demoFinder(t *testing.T, out string) func(what, re string) []string {
	// Lines the script folded to 80 columns continue with four spaces.
	flat := strings.ReplaceAll(out, "\n    ", " ")
	return func(what, re string) []string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(flat)
		if m == nil {
			t.Errorf("no %s: want a match for %s", what, re)
		}
		return m
	}
}

// checkDemoEnd checks what every demo's --ci output must be: 80 columns
// wide at most, with no colour, and with a "PREFIX: pids ..." line none of
// whose processes is left running one of the binaries, nor any process in
// the script's group.
func checkDemoEnd(t *testing.T, out string, find func(what, re string) []string, prefix string, pgid int) {
	t.Helper()
	for i, line := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("line %d is %d columns wide: %q", i+1, n, line)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("--ci output holds colour escapes")
	}

	// Nothing the script started is left: neither a PID it printed still
	// running one of the binaries, nor any process in its group.
	m := find("the PIDs line", `(?m)^`+regexp.QuoteMeta(prefix)+`: pids ([\d ]+)$`)
	if m == nil {
		return
	}
	for _, f := range strings.Fields(m[1]) {
		pid, _ := strconv.Atoi(f)
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmdline, []byte(binDir)) {
			t.Errorf("pid %d is still running: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	waitFor(t, 5*time.Second, "the demo's process group to be empty", func() (bool, string) {
		err := syscall.Kill(-pgid, 0)
		return errors.Is(err, syscall.ESRCH), fmt.Sprintf("kill(-%d, 0) = %v", pgid, err)
	})
}

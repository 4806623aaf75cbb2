package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// byHand is the README's "By hand" block: the ```sh fence after the
// "## By hand" heading.
func byHand(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## By hand[^\n]*\n.*?```sh\n(.*?)```").FindSubmatch(data)
	if m == nil {
		t.Fatal("README.md has no ```sh block under a \"## By hand\" heading")
	}
	return string(m[1])
}

// TestReadmeByHand pastes the README's "By hand" block into bash in a fresh
// directory, as a new user would, and checks that every command in it
// works. Two things are changed, and only these: make build is skipped
// (TestMain built bin/ already: bin is a link to it), and the example
// configs' fixed ports 7111 and 7112 are replaced by free ones picked now
// (in the copy of conf/examples the block copies from), so the test runs
// beside anything else on this machine. The block runs under set -e: a
// command that fails fails the test, where a terminal would go on.
func TestReadmeByHand(t *testing.T) {
	script := byHand(t)
	if !strings.HasPrefix(script, "make build\n") {
		t.Fatalf("the block no longer starts with make build; the test must learn what it does:\n%s", script)
	}
	script = "set -e\n: make build, done by TestMain\n" + strings.TrimPrefix(script, "make build\n")

	dir := t.TempDir()
	if err := os.Symlink(binDir, filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	examples := filepath.Join(dir, "conf", "examples")
	if err := os.MkdirAll(examples, 0o755); err != nil {
		t.Fatal(err)
	}
	ports := map[string]string{"127.0.0.1:7111": freePort(t), "127.0.0.1:7112": freePort(t)}
	files, err := filepath.Glob(filepath.Join(repoRoot, "conf", "examples", "*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for fixed, free := range ports {
			text = strings.ReplaceAll(text, `"`+fixed+`"`, `"`+free+`"`)
		}
		if err := os.WriteFile(filepath.Join(examples, filepath.Base(f)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	// What the user's shell would not have: none of muster's variables.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MUSTER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group: the daemons bash starts are in it, and the
	// cleanup below can end whatever the block left running, by that id.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		if syscall.Kill(-pgid, 0) == nil {
			t.Errorf("the block left processes running in group %d; killing them", pgid)
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
	err = cmd.Wait()
	logs, _ := filepath.Glob(filepath.Join(dir, "lab", "*.log"))
	if err != nil || t.Failed() {
		for _, l := range logs {
			data, _ := os.ReadFile(l)
			t.Logf("--- %s:\n%s", filepath.Base(l), data)
		}
		t.Fatalf("the README's by-hand block failed (%v):\n%s", err, out.String())
	}
	t.Logf("the block printed:\n%s", out.String())

	text := out.String()
	for _, want := range []string{
		`(?m)^waited \d+\.\ds for ClusterService/lab to answer: version 1 at 127\.0\.0\.1:\d+$`,
		`(?m)^waited \d+\.\ds for member node-1 to be alive: node-1 is alive$`,
		`(?m)^NAME\s+INSTANCE\s+VERSION\s+ADDRESS\s+OWNER\s+TTL\s+STATE$`,
		`(?m)^ClusterService\s+lab\s+1\s+127\.0\.0\.1:\d+\s+lab/master/m1\s`,
		`(?m)^ClusterService/lab version 1 ready and waiting at 127\.0\.0\.1:\d+ \(rtt [0-9.]+[µm]s, spiffe://lab/master/m1\)$`,
		`(?m)^node-1\s+127\.0\.0\.1:\d+\s+alive\s`,
		`(?m)^1 member: 1 alive$`,
		`(?m)^view of node-1 \(incarnation \d+\)`,
	} {
		if !regexp.MustCompile(want).MatchString(text) {
			t.Errorf("the block's output has no line matching %s", want)
		}
	}
	// The daemons' logs went to files, not to the terminal.
	for _, noise := range []string{"level=", "msg=ready"} {
		if strings.Contains(text, noise) {
			t.Errorf("a daemon's log reached the terminal (%q)", noise)
		}
	}
	if len(logs) != 3 {
		t.Errorf("lab/ holds %d logs, want registryd's, masterd's and slaved's: %v", len(logs), logs)
	}
	// wait %1 returned: registryd is gone too, and the group with it.
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes of the block still run after it ended (kill -0 -%d: %v)", pgid, err)
	}
}

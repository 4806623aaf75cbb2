// Package tests holds muster's end-to-end tests: they build the real
// binaries, make certificates with certgen, and run the daemons as separate
// processes talking over real sockets.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// binDir holds the binaries TestMain built.
var binDir string

// repoRoot is the module's root, where conf/examples lives.
var repoRoot string

func TestMain(m *testing.M) {
	if child := os.Getenv(childEnv); child != "" {
		os.Exit(childMain(child))
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	binDir, err = os.MkdirTemp("", "muster-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	build := exec.Command("go", "build", "-o", binDir+"/", "./cmd/...")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build does
	if raceBuild {
		// Under go test -race the daemons are race-checked too; -race needs cgo.
		build = exec.Command("go", "build", "-race", "-o", binDir+"/", "./cmd/...")
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
		// Race-built programs sleep a second at exit by default; every daemon
		// and rpc-query the tests start inherits this.
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		return 1
	}
	return m.Run()
}

func bin(name string) string { return filepath.Join(binDir, name) }

// waitFor polls cond until it holds or the deadline passes; what says what
// was awaited, and cond's last message is shown on failure.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

// lab is one test's directory: a CA, certificates and configs.
type lab struct {
	t     testing.TB
	dir   string
	certs string
}

func newLab(t testing.TB) *lab {
	t.Helper()
	dir := t.TempDir()
	l := &lab{t: t, dir: dir, certs: filepath.Join(dir, "certs")}
	l.certgen("ca", "--dir", l.certs, "--cluster", "lab")
	return l
}

func (l *lab) certgen(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(bin("certgen"), args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("certgen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// issue makes ROLE-NAME.pem and its key; extra flags go to certgen issue.
func (l *lab) issue(role pki.Role, name string, extra ...string) pki.Files {
	l.t.Helper()
	args := append([]string{"issue", "--dir", l.certs, "--role", string(role), "--name", name}, extra...)
	l.certgen(args...)
	return l.files(role, name)
}

func (l *lab) files(role pki.Role, name string) pki.Files {
	base := filepath.Join(l.certs, string(role)+"-"+name)
	return pki.Files{CA: filepath.Join(l.certs, "ca.pem"), Cert: base + ".pem", Key: base + "-key.pem"}
}

func (l *lab) store(f pki.Files) *pki.Store {
	l.t.Helper()
	st, err := pki.Load(f)
	if err != nil {
		l.t.Fatal(err)
	}
	return st
}

// config writes conf/examples/NAME with top-level keys replaced, into dir.
// Values are TOML: strings must carry their quotes.
func (l *lab) config(example, dir string, set map[string]string) string {
	l.t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "conf", "examples", example))
	if err != nil {
		l.t.Fatal(err)
	}
	text := string(data)
	var dotted []string
	for k, v := range set {
		if strings.Contains(k, ".") {
			// A key of a table the example leaves commented out, such as
			// raft.peers: a dotted key before the first table.
			dotted = append(dotted, k+" = "+v)
			continue
		}
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(k) + ` = .*$`)
		if !re.MatchString(text) {
			l.t.Fatalf("%s has no line %q = ...: the test and the example drifted apart", example, k)
		}
		text = re.ReplaceAllString(text, k+" = "+v)
	}
	if len(dotted) > 0 {
		slices.Sort(dotted)
		text = strings.Join(dotted, "\n") + "\n" + text
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		l.t.Fatal(err)
	}
	path := filepath.Join(dir, example)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		l.t.Fatal(err)
	}
	return path
}

// proc is a daemon run as a separate process.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  *lineLog
	done chan struct{}
	err  error // set when done is closed
}

// start runs a binary; its stderr and stdout are captured and shown if the
// test fails. Cleanup SIGKILLs it if the test left it running.
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, log: &lineLog{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin(name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
		if strings.Contains(p.log.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() || os.Getenv("MUSTER_E2E_LOGS") != "" {
			t.Logf("--- %s (pid %d) output:\n%s", name, p.cmd.Process.Pid, p.log.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLine waits for a line of output matching re and returns its submatches.
func (p *proc) waitLine(re string, timeout time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	waitFor(p.t, timeout, fmt.Sprintf("%s to print %q", p.name, re), func() (bool, string) {
		for _, line := range p.log.Lines() {
			if m = rx.FindStringSubmatch(line); m != nil {
				return true, ""
			}
		}
		if p.exited() {
			p.t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, re, p.log.String())
		}
		return false, "not yet"
	})
	return m
}

// ready waits for the daemon's readiness line and returns its addr field.
func (p *proc) ready() string {
	p.t.Helper()
	return p.waitLine(`msg=ready addr="?([^" ]+)"?`, 20*time.Second)[1]
}

// stop sends SIGTERM and asserts a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		p.t.Fatalf("%s did not exit within 15s of SIGTERM", p.name)
	}
	if p.err != nil {
		p.t.Fatalf("%s exited badly after SIGTERM: %v\n%s", p.name, p.err, p.log.String())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	p.cmd.Process.Kill()
	<-p.done
}

// count is how many lines of output contain all of subs.
func (p *proc) count(subs ...string) int {
	n := 0
	for _, line := range p.log.Lines() {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// lineLog is a process's output, safe to read while it is written.
type lineLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lineLog) Lines() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// run runs a command to completion and returns its output and exit status.
func run(t testing.TB, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), code
}

// ctx is a context for one call from a test.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// tlsRegistry is a registry client over TLS with the given certificate.
func tlsRegistry(t testing.TB, st *pki.Store, addr string) *rpcdef.RegistryClient {
	c := rpcdef.NewRegistryClient("registry "+addr, rpcdef.DialTLS(addr, st.ClientConfig(pki.ExpectRole(pki.RoleRegistry))))
	t.Cleanup(func() { c.Close() })
	return c
}

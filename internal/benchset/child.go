package benchset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/muster-lab/muster/internal/daemon"
)

// stopGrace is how long a child has after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// child is a process benchset started. Its output goes to a log file in
// the lab directory.
type child struct {
	name string
	log  string // path of its stderr (and stdout unless redirected)
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's, set before done closes
}

// children are every process started and not yet stopped, so that all of
// them are stopped on any way out.
type children struct {
	mu   sync.Mutex
	live []*child
}

// start runs bin with args in dir, its stderr to logPath and its stdout to
// stdoutPath (or the log too, if ""). The child has its own process group,
// so a ^C at the terminal reaches benchset alone, which stops it by PID;
// and it is killed if benchset dies without stopping it.
func (cs *children) start(name, bin string, args []string, dir, logPath, stdoutPath string) (*child, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stderr = logf
	cmd.Stdout = logf
	if stdoutPath != "" {
		outf, err := os.Create(stdoutPath)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		defer outf.Close()
		cmd.Stdout = outf
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	c := &child{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	cs.mu.Lock()
	cs.live = append(cs.live, c)
	cs.mu.Unlock()
	return c, nil
}

// stopAll stops every child still running, the newest first.
func (cs *children) stopAll() []error {
	cs.mu.Lock()
	live := cs.live
	cs.live = nil
	cs.mu.Unlock()
	var errs []error
	for i := len(live) - 1; i >= 0; i-- {
		if err := live[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// stop stops c and takes it off the list.
func (cs *children) stop(c *child) error {
	err := c.stop()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for i, x := range cs.live {
		if x == c {
			cs.live = append(cs.live[:i], cs.live[i+1:]...)
			break
		}
	}
	return err
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// status says how the child ended.
func (c *child) status() string {
	if c.err == nil {
		return "exited 0"
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exited %d", ee.ExitCode())
	}
	return c.err.Error()
}

// stop ends the child by its PID: SIGTERM, then SIGKILL after stopGrace.
// A child that already exited is left alone.
func (c *child) stop() error {
	if c.exited() {
		return nil
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-t.C:
	}
	c.cmd.Process.Kill()
	t.Reset(stopGrace)
	select {
	case <-c.done:
		return fmt.Errorf("%s (pid %d) did not stop within %v of SIGTERM: killed", c.name, c.pid(), stopGrace)
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", c.name, c.pid(), stopGrace)
	}
}

// wait waits for the child to exit by itself, for at most timeout.
func (c *child) wait(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return fmt.Errorf("%s (pid %d) still running after %v", c.name, c.pid(), timeout)
	}
}

// pollEvery is how often a log is read for the line awaited.
const pollEvery = 50 * time.Millisecond

// waitLine polls the child's log until a line matches re and returns the
// match's groups. It gives up after timeout, or when the child exits.
func (c *child) waitLine(ctx context.Context, re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		data, _ := os.ReadFile(c.log)
		if m := re.FindSubmatch(data); m != nil {
			out := make([]string, len(m))
			for i, g := range m {
				out[i] = string(g)
			}
			return out, nil
		}
		if c.exited() {
			return nil, fmt.Errorf("%s %s before logging /%s/; its log ends:\n%s", c.name, c.status(), re, tail(data, 10))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s (pid %d) did not log /%s/ within %v; its log ends:\n%s", c.name, c.pid(), re, timeout, tail(data, 10))
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// tail is the last n lines of data, indented for an error message.
func tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "  (empty)"
	}
	return "  " + strings.Join(lines, "\n  ")
}

// tailFile is tail of a file; a file that cannot be read says so.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "  " + err.Error()
	}
	return tail(bytes.TrimSpace(data), n)
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	if !daemon.Sleep(ctx, d) {
		return context.Cause(ctx)
	}
	return nil
}

package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
)

// runSplit runs a command to completion and returns its stdout, its stderr
// and its exit status, apart.
func runSplit(t *testing.T, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin(name), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", name, err)
	}
	t.Logf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// checkLab is a lab with a certificate for each daemon and a config for
// each, written from conf/examples into the lab directory. The master's and
// the registry's listen addresses are held by the test, so a --check that
// bound them would fail.
type checkLab struct {
	*lab
	held                  net.Listener
	master, reg, slave    string // config files
	masterState, regState string
}

func newCheckLab(t *testing.T) *checkLab {
	t.Helper()
	l := newLab(t)
	l.issue(pki.RoleRegistry, "reg1", "--host", "127.0.0.1")
	l.issue(pki.RoleMaster, "m1", "--host", "127.0.0.1")
	l.issue(pki.RoleSlave, "node-1")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	addr := fmt.Sprintf("%q", held.Addr().String())
	c := &checkLab{lab: l, held: held,
		masterState: filepath.Join(l.dir, "state", "master"), regState: filepath.Join(l.dir, "state", "registry")}
	c.reg = l.config("registry.toml", l.dir, map[string]string{"listen": addr, "state_dir": fmt.Sprintf("%q", c.regState)})
	c.master = l.config("master.toml", l.dir, map[string]string{"listen": addr, "registry": addr,
		"state_dir": fmt.Sprintf("%q", c.masterState)})
	c.slave = l.config("slave.toml", l.dir, map[string]string{"registry": addr})
	return c
}

// TestCheckValid runs --check on each daemon's valid config: exit 0, one
// line naming the file, the identity, the cluster and the addresses, and
// nothing bound or written.
func TestCheckValid(t *testing.T) {
	c := newCheckLab(t)
	addr := c.held.Addr().String()
	for _, tt := range []struct {
		daemon, config, want string
	}{
		{"masterd", c.master, `master m1 of cluster lab; listen ` + addr + `, registry ` + addr + `, http_listen "127.0.0.1:0"`},
		{"registryd", c.reg, `registry reg1 of cluster lab; listen ` + addr + `, socket "` + filepath.Join(c.dir, "run", "registry.sock") + `", http_listen "127.0.0.1:0"`},
		{"slaved", c.slave, `slave node-1 of cluster lab; registry ` + addr + `, socket "` + filepath.Join(c.dir, "run", "slaved-node-1.sock") + `"`},
	} {
		t.Run(tt.daemon, func(t *testing.T) {
			stdout, stderr, code := runSplit(t, tt.daemon, "--check", "--config", tt.config)
			want := regexp.MustCompile(`^config ` + regexp.QuoteMeta(tt.config) + ` is valid: ` + regexp.QuoteMeta(tt.want) +
				`; certificate expires \d{4}-\d\d-\d\d \d\d:\d\d UTC\n$`)
			if code != 0 || !want.MatchString(stdout) || stderr != "" {
				t.Errorf("%s --check: exit %d, stdout %q, stderr %q; want exit 0 and a line matching %s", tt.daemon, code, stdout, stderr, want)
			}
		})
	}
	for _, p := range []string{c.masterState, c.regState, filepath.Join(c.dir, "run")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--check made %s (stat: %v): it must touch no state", p, err)
		}
	}
}

// TestCheckBroken runs --check on broken configs: exit 1 and the error,
// naming the file and the key, on stderr.
func TestCheckBroken(t *testing.T) {
	c := newCheckLab(t)
	for _, tt := range []struct {
		name, daemon, example string
		set                   map[string]string
		want                  string
	}{
		{"masterd value", "masterd", "master.toml", map[string]string{"heartbeat_interval": `"2h"`},
			`heartbeat_interval: 2h0m0s is out of range: want between 50ms and 1m0s`},
		{"masterd certificate", "masterd", "master.toml", map[string]string{"cert": `"certs/slave-node-1.pem"`, "key": `"certs/slave-node-1-key.pem"`},
			`tls.cert: certificate slave-node-1.pem is for `},
		{"registryd value", "registryd", "registry.toml", map[string]string{"lease_ttl": `"1ms"`},
			`lease_ttl: 1ms is out of range`},
		{"registryd missing key file", "registryd", "registry.toml", map[string]string{"key": `"certs/nonexistent-key.pem"`},
			`tls: `},
		{"slaved node", "slaved", "slave.toml", map[string]string{"node": `"node-2"`},
			`node: certificate slave-node-1.pem is for slave node-1 but the config says node = "node-2"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := c.config(tt.example, c.dir, tt.set) // each subtest writes its own over the last
			stdout, stderr, code := runSplit(t, tt.daemon, "--check", "--config", path)
			if code != 1 || stdout != "" || !strings.HasPrefix(stderr, tt.daemon+": "+path+": ") || !strings.Contains(stderr, tt.want) {
				t.Errorf("%s --check on a broken config: exit %d, stdout %q, stderr %q; want exit 1 and %q naming %s",
					tt.daemon, code, stdout, stderr, tt.want, path)
			}
		})
	}
}

// TestCheckCommandLine: --version, --help, an extra argument and an unknown
// flag, on each binary that has them.
func TestCheckCommandLine(t *testing.T) {
	version := regexp.MustCompile(`^muster \S+ \((?:[0-9a-f]+|unknown)(?:\+dirty)?, go\S+\)\n$`)
	for _, d := range []string{"masterd", "registryd", "slaved", "loadgen", "benchset"} {
		t.Run(d, func(t *testing.T) {
			if stdout, stderr, code := runSplit(t, d, "--version"); code != 0 || !version.MatchString(stdout) || stderr != "" {
				t.Errorf("%s --version: exit %d, stdout %q, stderr %q; want exit 0 and a line matching %s", d, code, stdout, stderr, version)
			}
			if stdout, stderr, code := runSplit(t, d, "--help"); code != 0 || !strings.HasPrefix(stdout, "usage: "+d+" ") || stderr != "" {
				t.Errorf("%s --help: exit %d, stdout %q, stderr %q; want exit 0 and the usage on stdout", d, code, stdout, stderr)
			}
			want := fmt.Sprintf("%s: unexpected argument \"foo\": %s takes only flags; run '%s --help'\n", d, d, d)
			if stdout, stderr, code := runSplit(t, d, "foo"); code != 2 || stdout != "" || stderr != want {
				t.Errorf("%s foo: exit %d, stdout %q, stderr %q; want exit 2 and %q", d, code, stdout, stderr, want)
			}
			want = fmt.Sprintf("%s: flag provided but not defined: -o; run '%s --help'\n", d, d)
			if stdout, stderr, code := runSplit(t, d, "-o", "json"); code != 2 || stdout != "" || stderr != want {
				t.Errorf("%s -o json: exit %d, stdout %q, stderr %q; want exit 2 and the one line %q", d, code, stdout, stderr, want)
			}
		})
	}
}

// TestLifecycleSIGTERM stops a slave, a master and a registry with SIGTERM:
// each exits 0 after its own cleanup (the slave's leave, the master's
// unregistration and roster), and logs "stopped" only after its deferred
// Close ran.
func TestLifecycleSIGTERM(t *testing.T) {
	c := newCluster(t, nil, "node-1")
	c.slaves["node-1"].stop()
	c.master.stop()
	c.reg.stop()
	for _, p := range []struct {
		proc    *proc
		cleanup string // a line of the daemon's own cleanup, in Run
	}{
		{c.slaves["node-1"].proc, "left the cluster"},
		{c.master, "msg=unregistered"},
		{c.reg.proc, ""},
	} {
		lines := p.proc.log.Lines()
		stopped := -1
		for i, line := range lines {
			if strings.Contains(line, "msg=stopped") {
				stopped = i
			}
		}
		if stopped < 0 {
			t.Errorf("%s logged no \"stopped\" line: the deferred Close did not run", p.proc.name)
			continue
		}
		if stopped != len(lines)-1 {
			t.Errorf("%s logged after \"stopped\": %q", p.proc.name, lines[stopped+1:])
		}
		if p.cleanup != "" && p.proc.count(p.cleanup) != 1 {
			t.Errorf("%s logged %q %d times before exiting, want once", p.proc.name, p.cleanup, p.proc.count(p.cleanup))
		}
	}
	if n := c.rollKept(); n != 1 {
		t.Errorf("the master's roll after SIGTERM: %d members, want node-1", n)
	}
}

// TestCheckBuildInfoMetric scrapes muster_build_info from a real masterd and
// registryd: 1, with the labels their --version line shows.
func TestCheckBuildInfoMetric(t *testing.T) {
	c := newCluster(t, nil)
	for _, p := range []struct {
		proc *proc
		what string
	}{{c.master, "metrics and the dashboard"}, {c.reg.proc, "metrics"}} {
		stdout, _, _ := runSplit(t, p.proc.name, "--version")
		m := regexp.MustCompile(`^muster (\S+) \((\S+), (go\S+)\)\n$`).FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("%s --version: %q", p.proc.name, stdout)
		}
		fams := scrape(t, httpURL(p.proc, p.what)+"metrics")
		if v := value(fams, "muster_build_info", "version", m[1], "revision", m[2], "goversion", m[3]); v != 1 {
			t.Errorf("%s: muster_build_info{version=%q,revision=%q,goversion=%q} = %v, want 1; served: %v",
				p.proc.name, m[1], m[2], m[3], v, fams["muster_build_info"])
		}
		lint(t, p.proc.name, fams)
	}
	c.master.stop()
	c.reg.stop()
}

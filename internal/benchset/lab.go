package benchset

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// The lines the daemons log when they are ready, as scripts/soak.sh and
// the end-to-end tests wait for them.
var (
	registryReady = regexp.MustCompile(`msg=ready addr="?([^" ]+)"?`)
	masterReady   = registryReady // each daemon's one ready line
	slaveJoined   = regexp.MustCompile(`joined ClusterService/lab at`)
)

// startTimeout bounds each daemon's start, up to its readiness line.
const startTimeout = 20 * time.Second

// lab is one directory of the set: a CA for the cluster "lab", the
// certificates, configs written from conf/examples, and the daemons.
type lab struct {
	dir      string
	bin      string // where the binaries are
	examples string // conf/examples
	kids     *children

	registry *child
	regAddr  string // the registry's TLS address, from its ready line
	master   *child
}

// newLab makes dir with a CA, a registry and a master certificate.
func newLab(ctx context.Context, dir, bin, examples string, kids *children) (*lab, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make the lab directory: %w", err)
	}
	l := &lab{dir: dir, bin: bin, examples: examples, kids: kids}
	for _, args := range [][]string{
		{"ca", "--dir", "certs", "--cluster", "lab"},
		{"issue", "--dir", "certs", "--role", "registry", "--name", "reg1", "--host", "127.0.0.1"},
		{"issue", "--dir", "certs", "--role", "master", "--name", "m1", "--host", "127.0.0.1"},
	} {
		if err := l.certgen(ctx, args...); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// certgen runs bin/certgen in the lab directory.
func (l *lab) certgen(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(l.bin, "certgen"), args...)
	cmd.Dir = l.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("certgen %s: %w\n%s", strings.Join(args, " "), err, tail(out, 5))
	}
	return nil
}

// config writes conf/examples/NAME into the lab with top-level keys
// replaced; values are TOML, so strings carry their quotes.
func (l *lab) config(name string, set [][2]string) (string, error) {
	src := filepath.Join(l.examples, name)
	data, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read the example config: %w", err)
	}
	text := string(data)
	for _, kv := range set {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(kv[0]) + ` = .*$`)
		if !re.MatchString(text) {
			return "", fmt.Errorf("%s has no line %q = ...: benchset and the example drifted apart", src, kv[0])
		}
		text = re.ReplaceAllLiteralString(text, kv[0]+" = "+kv[1])
	}
	path := filepath.Join(l.dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return name, nil
}

// start runs one of the binaries in the lab, its output in NAME.log.
func (l *lab) start(name string, args ...string) (*child, error) {
	return l.kids.start(name, filepath.Join(l.bin, name), args, l.dir, filepath.Join(l.dir, name+".log"), "")
}

// startDaemons starts registryd on a free port and masterd registered
// with it, and waits for both to be ready.
func (l *lab) startDaemons(ctx context.Context) error {
	conf, err := l.config("registry.toml", [][2]string{{"listen", `"127.0.0.1:0"`}})
	if err != nil {
		return err
	}
	if l.registry, err = l.start("registryd", "--config", conf); err != nil {
		return err
	}
	m, err := l.registry.waitLine(ctx, registryReady, startTimeout)
	if err != nil {
		return err
	}
	l.regAddr = m[1]

	// masterd logs its ready line at info, once it has registered.
	conf, err = l.config("master.toml", [][2]string{
		{"listen", `"127.0.0.1:0"`},
		{"registry", `"` + l.regAddr + `"`},
		{"max_conns", "20000"},
		{"log_level", `"info"`},
	})
	if err != nil {
		return err
	}
	if l.master, err = l.start("masterd", "--config", conf); err != nil {
		return err
	}
	_, err = l.master.waitLine(ctx, masterReady, startTimeout)
	return err
}

// startSlave issues node-1's certificate and starts slaved from the
// example config, and waits until it has joined the master.
func (l *lab) startSlave(ctx context.Context) (*child, error) {
	if err := l.certgen(ctx, "issue", "--dir", "certs", "--role", "slave", "--name", "node-1"); err != nil {
		return nil, err
	}
	conf, err := l.config("slave.toml", [][2]string{{"registry", `"` + l.regAddr + `"`}})
	if err != nil {
		return nil, err
	}
	s, err := l.start("slaved", "--config", conf)
	if err != nil {
		return nil, err
	}
	if _, err := s.waitLine(ctx, slaveJoined, startTimeout); err != nil {
		return s, err
	}
	return s, nil
}

// close stops the daemons: masterd first, so that it unregisters.
func (l *lab) close() []error {
	var errs []error
	for _, c := range []*child{l.master, l.registry} {
		if c == nil {
			continue
		}
		if err := l.kids.stop(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

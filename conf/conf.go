// Package conf holds the configuration of each muster daemon: defaults, then
// the TOML file over them, then Validate. Every error names the file, the key
// and what was expected.
package conf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/pki"
)

// Error is one problem with a config file.
type Error struct {
	File string
	Key  string // dotted TOML key; empty for the file as a whole
	Msg  string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return e.File + ": " + e.Msg
	}
	return e.File + ": " + e.Key + ": " + e.Msg
}

// checker gathers every problem of a file, so a user fixes them in one go.
type checker struct {
	file string
	errs []error
}

func (c *checker) add(key, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error { return errors.Join(c.errs...) }

// decode reads path over dst, which holds the defaults, and refuses keys
// that dst does not have.
func decode(path string, dst any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	md, err := toml.Decode(string(data), dst)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			msg := pe.Message
			if strings.HasPrefix(msg, "Invalid") {
				msg = strings.ToLower(msg[:1]) + msg[1:] + ` (is a string value missing its quotes, as in listen = "127.0.0.1:7111"?)`
			}
			return &Error{File: path, Key: pe.LastKey, Msg: fmt.Sprintf("line %d: %s", pe.Position.Line, msg)}
		}
		// toml: line 1 (last key "max_conns"): incompatible types: TOML value has type string; destination has type integer
		if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
			return &Error{File: path, Key: m[2], Msg: fmt.Sprintf("line %s: the value is of type %s, want %s", m[1], m[3], m[4])}
		}
		return &Error{File: path, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	if und := md.Undecoded(); len(und) > 0 {
		var c checker
		c.file = path
		for _, k := range und {
			c.add(k.String(), "unknown key: check its spelling against the commented example in conf/examples")
		}
		return c.err()
	}
	return nil
}

var typeErr = regexp.MustCompile(`line (\d+) \(last key "([^"]+)"\): incompatible types: TOML value has type (\w+); destination has type (\w+)`)

// TLS names a node's certificate files. Relative paths are read from the
// config file's directory.
type TLS struct {
	CA   string `toml:"ca"`
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
	// CRL is an optional revocation list (certgen revoke); re-read on SIGHUP.
	CRL string `toml:"crl"`
}

func (t *TLS) resolve(dir string) {
	for _, p := range []*string{&t.CA, &t.Cert, &t.Key, &t.CRL} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// check reports the certificate files that are not named, unless st was
// loaded already (by a Load function, or by a caller that built the config
// in code). It reads none of them: load does.
func (t TLS) check(c *checker, st *pki.Store) {
	if st != nil {
		return
	}
	for _, f := range []struct{ key, path string }{{"tls.ca", t.CA}, {"tls.cert", t.Cert}, {"tls.key", t.Key}} {
		if f.path == "" {
			c.add(f.key, "missing: give the path of a PEM file made by certgen")
		}
	}
}

// load reads the certificate files, for the Load functions. A file that is
// not named is left to check to report: load then returns no store and no
// error.
func (t TLS) load(file string) (*pki.Store, error) {
	if t.CA == "" || t.Cert == "" || t.Key == "" {
		return nil, nil
	}
	st, err := pki.Load(pki.Files{CA: t.CA, Cert: t.Cert, Key: t.Key, CRL: t.CRL})
	if err != nil {
		return nil, &Error{File: file, Key: "tls", Msg: err.Error()}
	}
	return st, nil
}

// checkIdentity reports a loaded certificate that is not of the daemon's
// role or does not name the configured cluster. It returns the identity,
// or ok = false if there is no store or it does not fit.
func (t TLS) checkIdentity(c *checker, st *pki.Store, role pki.Role, cluster string) (id pki.Identity, ok bool) {
	if st == nil {
		return pki.Identity{}, false
	}
	id = st.Identity()
	if id.Role != role {
		c.add("tls.cert", "%s is for %s, a %s; this daemon needs a %s certificate (certgen issue --role %s --name NAME)",
			t.certName(), id, id.Role, role, role)
		return id, false
	}
	if pki.ValidName(cluster) == nil && id.Cluster != cluster {
		c.add("tls.cert", "%s is for cluster %q but the config says cluster = %q", t.certName(), id.Cluster, cluster)
		return id, false
	}
	return id, true
}

// certName names the certificate in messages: "certificate master-m1.pem",
// or "the certificate" in a config built in code with no file named.
func (t TLS) certName() string {
	if t.Cert == "" {
		return "the certificate"
	}
	return "certificate " + filepath.Base(t.Cert)
}

// Duration is a time.Duration written as a string: "1s", "250ms".
type Duration time.Duration

// UnmarshalText reads a duration with a unit.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%s is not a duration: write a quoted number with a unit, like \"1s\" or \"250ms\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as time.Duration does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (c *checker) duration(key string, d Duration, lo, hi time.Duration) {
	if d.D() < lo || d.D() > hi {
		c.add(key, "%v is out of range: want between %v and %v", d.D(), lo, hi)
	}
}

func (c *checker) hostPort(key, v string, wantHost bool) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		c.add(key, "%q is not HOST:PORT: %v", v, err)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.add(key, "%q: port %q is not a number from 0 to 65535", v, port)
	}
	if wantHost && host == "" {
		c.add(key, "%q has no host: give an address others can reach", v)
	}
}

func (c *checker) logLevel(v string) {
	if _, err := logrus.ParseLevel(v); err != nil {
		c.add("log_level", "%q is not a level: want one of panic, fatal, error, warn, info, debug, trace", v)
	}
}

// pprof checks a profiling address: loopback only.
func (c *checker) pprof(v string) {
	if v != "" && !isLoopback(v) {
		c.add("pprof", "%q must be a loopback HOST:PORT, like 127.0.0.1:6060: profiles are not for the network", v)
	}
}

// httpListen checks the address metrics (and the master's dashboard) are
// served on in plain HTTP: loopback only, since nothing checks who asks.
func (c *checker) httpListen(v, example, remote string) {
	if v != "" && !isLoopback(v) {
		c.add("http_listen", "%q must be a loopback HOST:PORT, like %s, or \"\" for none: plain HTTP is not for the network%s", v, example, remote)
	}
}

// isLoopback says whether v is HOST:PORT with a loopback IP for host.
func isLoopback(v string) bool {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *checker) positive(key string, n, hi int) {
	if n <= 0 || n > hi {
		c.add(key, "%d is out of range: want 1 to %d", n, hi)
	}
}

func (c *checker) name(key, v string) {
	if err := pki.ValidName(v); err != nil {
		c.add(key, "%v", err)
	}
}

func resolvePath(dir string, p *string) {
	if *p != "" && !filepath.IsAbs(*p) {
		*p = filepath.Join(dir, *p)
	}
}

// pathKey renders a dotted key for messages.
func pathKey(parts ...string) string { return strings.Join(parts, ".") }

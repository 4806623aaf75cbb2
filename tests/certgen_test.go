package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/buildinfo"
	"github.com/muster-lab/muster/internal/pki"
)

// certgenResult is one run of the real certgen binary.
type certgenResult struct {
	code           int
	stdout, stderr string
}

// runCertgen runs bin/certgen with args and keeps stdout and stderr apart.
func runCertgen(t *testing.T, args ...string) certgenResult {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := execCommand(c, bin("certgen"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := certgenResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run certgen %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("certgen %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// TestCertgenRefusals runs each refusal of the real binary and checks its
// exit status (2 usage, 1 failure) and that its one-line message names the
// bad value and what is accepted.
func TestCertgenRefusals(t *testing.T) {
	l := newLab(t)
	l.issue(pki.RoleSlave, "taken")
	issue := func(extra ...string) []string {
		return append([]string{"issue", "--dir", l.certs, "--role", "master", "--name", "m1"}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"host not a host", issue("--host", "not a host!"), 2, `host "not a host!": character ' ' is not allowed; want an IP address`},
		{"wildcard host", issue("--host", "*.lab"), 2, `host "*.lab": wildcard names are refused`},
		{"host with port", issue("--host", "127.0.0.1:7112"), 2, "without the port: 127.0.0.1"},
		{"host with scheme", issue("--host", "https://m1.lab"), 2, "without a scheme"},
		{"empty host", issue("--host", ""), 2, "host is empty"},
		{"lifetime past the CA", issue("--lifetime", "200000h"), 2, "after its CA expires on "},
		{"negative lifetime", issue("--lifetime", "-1h"), 2, "lifetime -1h is not positive"},
		{"zero lifetime", issue("--lifetime", "0"), 2, "lifetime 0s is not positive"},
		{"lifetime in days", issue("--lifetime", "365d"), 2, `invalid value "365d" for flag -lifetime: want a duration like 720h`},
		{"unknown role", []string{"issue", "--dir", l.certs, "--role", "king", "--name", "x"}, 2, `unknown role "king": want one of registry, master, slave, admin`},
		{"bad name", []string{"issue", "--dir", l.certs, "--role", "slave", "--name", "Node_1"}, 2, `name "Node_1": character 'N' at 0 not allowed`},
		{"bad cluster", []string{"ca", "--dir", filepath.Join(l.dir, "x"), "--cluster", "my lab"}, 2, `--cluster: name "my lab"`},
		{"negative CA lifetime", []string{"ca", "--dir", filepath.Join(l.dir, "x"), "--lifetime", "-1h"}, 2, "lifetime -1h is not positive"},
		{"unknown flag", issue("--bogus"), 2, "flag provided but not defined: -bogus"},
		{"unknown top-level flag", []string{"-o", "json"}, 2, "unknown flag -o"},
		{"unknown command", []string{"sign"}, 2, `unknown command "sign"`},
		{"no CA", []string{"issue", "--dir", filepath.Join(l.dir, "none"), "--role", "slave", "--name", "a"}, 1, "make the CA first with certgen ca --dir"},
		{"file exists", []string{"issue", "--dir", l.certs, "--role", "slave", "--name", "taken"}, 1, "exists: keeping it (use --force to replace it)"},
		{"revoke another CA's certificate", []string{"revoke", "--dir", l.certs, certgenOtherCA(l)}, 1, "was not issued by this CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCertgen(t, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d", r.code, tc.code)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("stderr %q, want %q", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Fatalf("stdout %q, want nothing", r.stdout)
			}
			if n := strings.Count(r.stderr, "\n"); n > 2 {
				t.Fatalf("stderr has %d lines, want one and at most a hint", n)
			}
			if strings.Contains(r.stderr, "float64") || strings.Contains(r.stderr, "time.Duration") {
				t.Fatalf("stderr names a Go type: %q", r.stderr)
			}
		})
	}
	// Nothing refused was written.
	if _, err := os.Stat(filepath.Join(l.certs, "master-m1.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("master-m1.pem after refusals: %v", err)
	}
}

// otherCACert makes a certificate of a second CA and returns its file.
func certgenOtherCA(l *lab) string {
	dir := filepath.Join(l.dir, "other")
	l.certgen("ca", "--dir", dir)
	l.certgen("issue", "--dir", dir, "--role", "slave", "--name", "stranger")
	return filepath.Join(dir, "slave-stranger.pem")
}

// TestCertgenAcceptsWhatScriptsUse issues the certificates README,
// OPERATIONS.md and scripts/ make, with their hosts.
func TestCertgenAcceptsWhatScriptsUse(t *testing.T) {
	l := newLab(t)
	for _, args := range [][]string{
		{"--role", "registry", "--name", "reg1", "--host", "127.0.0.1"},
		{"--role", "master", "--name", "m1", "--host", "10.77.0.2"},
		{"--role", "master", "--name", "m2", "--host", "master.example", "--host", "m1.lab", "--host", "::1"},
		{"--role", "slave", "--name", "node-1"},
		{"--role", "admin", "--name", "ops", "--lifetime", "48h"},
	} {
		r := runCertgen(t, append([]string{"issue", "--dir", l.certs}, args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, "wrote ") || r.stderr != "" {
			t.Fatalf("certgen issue %s: exit %d", strings.Join(args, " "), r.code)
		}
	}
}

func TestCertgenRevokeTwice(t *testing.T) {
	l := newLab(t)
	f := l.issue(pki.RoleSlave, "node-2")
	crl := filepath.Join(l.certs, "crl.pem")
	r := runCertgen(t, "revoke", "--dir", l.certs, f.Cert)
	if r.code != 0 || !strings.Contains(r.stdout, "revoked "+f.Cert) {
		t.Fatalf("first revoke: exit %d", r.code)
	}
	before, err := os.ReadFile(crl)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(crl)
	if err != nil {
		t.Fatal(err)
	}
	r = runCertgen(t, "revoke", "--dir", l.certs, f.Cert)
	if r.code != 0 {
		t.Fatalf("second revoke: exit %d", r.code)
	}
	if !regexp.MustCompile(`already revoked on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`).MatchString(r.stdout) || strings.Contains(r.stdout, "revoked "+f.Cert) {
		t.Fatalf("second revoke said %q, want already revoked on DATE", r.stdout)
	}
	after, err := os.ReadFile(crl)
	if err != nil {
		t.Fatal(err)
	}
	fi2, err := os.Stat(crl)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) || !os.SameFile(fi, fi2) {
		t.Fatal("the second revoke rewrote crl.pem")
	}
}

// inspectReport is certgen inspect --json's schema as docs/OPERATIONS.md
// documents it, written out again here so that a change to it fails.
type inspectReport struct {
	File        string   `json:"file"`
	IsCA        bool     `json:"is_ca"`
	Identity    string   `json:"identity"`
	Cluster     string   `json:"cluster"`
	Role        string   `json:"role"`
	Name        string   `json:"name"`
	Serial      string   `json:"serial"`
	Subject     string   `json:"subject"`
	Issuer      string   `json:"issuer"`
	NotBefore   string   `json:"not_before"`
	NotAfter    string   `json:"not_after"`
	SecondsLeft int64    `json:"seconds_left"`
	Status      string   `json:"status"`
	Hosts       []string `json:"hosts"`
	CAFile      string   `json:"ca_file"`
	SignedByCA  bool     `json:"signed_by_ca"`
	CRLFile     string   `json:"crl_file"`
	Revocation  string   `json:"revocation"`
	RevokedAt   string   `json:"revoked_at"`
}

func inspectJSON(t *testing.T, args ...string) inspectReport {
	t.Helper()
	r := runCertgen(t, append([]string{"inspect", "--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("inspect --json: exit %d", r.code)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	var rep inspectReport
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("decode %q: %v", r.stdout, err)
	}
	if dec.More() {
		t.Fatal("more than one JSON value")
	}
	// The serial is a string, as the --json outputs' big integers are.
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["serial"].(string); !ok {
		t.Fatalf("serial is %T, want a string", raw["serial"])
	}
	if len(raw) != 19 {
		t.Fatalf("%d fields, want every field of the schema always present", len(raw))
	}
	return rep
}

func TestCertgenInspect(t *testing.T) {
	l := newLab(t)
	f := l.issue(pki.RoleMaster, "m1", "--host", "127.0.0.1", "--host", "m1.lab", "--lifetime", "720h")
	cert, err := pki.ReadCertFile(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	serial := cert.SerialNumber.Text(16)

	t.Run("text", func(t *testing.T) {
		r := runCertgen(t, "inspect", f.Cert, "--dir", l.certs)
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		for _, want := range []string{
			"identity:    spiffe://lab/master/m1",
			"role:        master",
			"name:        m1",
			"cluster:     lab",
			"serial:      " + serial,
			"issuer:      CN=muster CA lab,O=muster",
			"not after:   " + cert.NotAfter.UTC().Format(time.RFC3339),
			"time left:   29 days 23h",
			"hosts:       m1.lab, 127.0.0.1",
			"signed by:   the CA of " + filepath.Join(l.certs, "ca.pem"),
			"revoked:     unknown: no revocation list",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("inspect lacks %q", want)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		rep := inspectJSON(t, "--dir", l.certs, f.Cert)
		want := inspectReport{
			File: f.Cert, Identity: "spiffe://lab/master/m1", Cluster: "lab", Role: "master", Name: "m1",
			Serial: serial, Subject: "CN=master/m1,O=muster lab", Issuer: "CN=muster CA lab,O=muster",
			NotBefore: cert.NotBefore.UTC().Format(time.RFC3339), NotAfter: cert.NotAfter.UTC().Format(time.RFC3339),
			SecondsLeft: rep.SecondsLeft, Status: "valid", CAFile: filepath.Join(l.certs, "ca.pem"), SignedByCA: true,
			CRLFile: filepath.Join(l.certs, "crl.pem"), Revocation: "no_list",
		}
		if strings.Join(rep.Hosts, ",") != "m1.lab,127.0.0.1" {
			t.Fatalf("hosts %v", rep.Hosts)
		}
		rep.Hosts = nil
		if !reflect.DeepEqual(rep, want) {
			t.Fatalf("report\n%+v\nwant\n%+v", rep, want)
		}
		if left := time.Duration(rep.SecondsLeft) * time.Second; left < 719*time.Hour || left > 720*time.Hour {
			t.Fatalf("seconds_left %d, want about 720h", rep.SecondsLeft)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		l.certgen("revoke", "--dir", l.certs, f.Cert)
		rep := inspectJSON(t, "--dir", l.certs, f.Cert)
		if rep.Revocation != "revoked" || rep.RevokedAt == "" {
			t.Fatalf("revocation %q at %q, want revoked", rep.Revocation, rep.RevokedAt)
		}
		r := runCertgen(t, "inspect", "--dir", l.certs, f.Cert)
		if r.code != 0 || !strings.Contains(r.stdout, "revoked:     yes, on "+rep.RevokedAt) {
			t.Fatalf("text does not say revoked on %s", rep.RevokedAt)
		}
	})
	t.Run("CA", func(t *testing.T) {
		rep := inspectJSON(t, "--dir", l.certs, filepath.Join(l.certs, "ca.pem"))
		if !rep.IsCA || rep.Identity != "spiffe://lab" || rep.Role != "" || rep.Name != "" || !rep.SignedByCA || rep.Hosts == nil || len(rep.Hosts) != 0 {
			t.Fatalf("CA report %+v", rep)
		}
		r := runCertgen(t, "inspect", "--dir", l.certs, filepath.Join(l.certs, "ca.pem"))
		if r.code != 0 || !strings.Contains(r.stdout, "kind:        CA certificate") {
			t.Fatalf("exit %d", r.code)
		}
	})
	t.Run("expired, against no CA", func(t *testing.T) {
		old := l.issue(pki.RoleAdmin, "old", "--not-before", time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339), "--lifetime", "24h")
		rep := inspectJSON(t, "--dir", filepath.Join(l.dir, "nowhere"), old.Cert)
		if rep.Status != "expired" || rep.SecondsLeft > -23*3600 || rep.Revocation != "no_ca" || rep.SignedByCA {
			t.Fatalf("report %+v", rep)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"inspect"}, 2, "inspect takes one certificate file, got 0"},
			{[]string{"inspect", f.Cert, f.Key}, 2, "got 2"},
			{[]string{"inspect", filepath.Join(l.dir, "none.pem")}, 1, "no such file"},
			{[]string{"inspect", "--dir", l.certs, f.Key}, 1, "holds no PEM certificate"},
		} {
			r := runCertgen(t, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("certgen %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.want)
			}
		}
	})
}

func TestCertgenVersionAndHelp(t *testing.T) {
	r := runCertgen(t, "--version")
	// The test binary and certgen are built from the same tree by the same toolchain.
	want := buildinfo.Read()
	if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "muster ") || !strings.Contains(r.stdout, want.Go) {
		t.Fatalf("--version: exit %d, %q; want a line like %q", r.code, r.stdout, want.String())
	}
	if n := strings.Count(r.stdout, "\n"); n != 1 {
		t.Fatalf("--version printed %d lines", n)
	}

	long, word := runCertgen(t, "--help"), runCertgen(t, "help")
	for _, h := range []certgenResult{long, word} {
		if h.code != 0 || h.stderr != "" || !strings.Contains(h.stdout, "exit status:") || !strings.Contains(h.stdout, "certgen inspect") {
			t.Fatalf("help: exit %d, stderr %q", h.code, h.stderr)
		}
	}
	if long.stdout != word.stdout {
		t.Fatal("--help and help print different text")
	}
	sub, subWord := runCertgen(t, "revoke", "--help"), runCertgen(t, "help", "revoke")
	if sub.code != 0 || sub.stderr != "" || sub.stdout != subWord.stdout || !strings.Contains(sub.stdout, "already revoked") {
		t.Fatalf("revoke --help: exit %d, stderr %q", sub.code, sub.stderr)
	}

	bad := runCertgen(t, "issue", "-o", "json")
	if bad.code != 2 || bad.stdout != "" {
		t.Fatalf("unknown flag: exit %d, stdout %q", bad.code, bad.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(bad.stderr, "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "flag provided but not defined: -o") || !strings.Contains(lines[1], "--help' for usage") {
		t.Fatalf("unknown flag: stderr %q, want the problem and the hint to run --help", bad.stderr)
	}
}

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/muster-lab/muster/internal/pki"
)

// certgen runs one command line in-process and returns its status and output.
func certgen(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	t.Logf("certgen %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if code, _, _ := certgen(t, "ca", "--dir", certs, "--lifetime", "720h"); code != 0 {
		t.Fatal("certgen ca failed")
	}
	if code, _, _ := certgen(t, "issue", "--dir", certs, "--role", "slave", "--name", "taken"); code != 0 {
		t.Fatal("certgen issue failed")
	}
	issue := func(extra ...string) []string {
		return append([]string{"issue", "--dir", certs, "--role", "master", "--name", "m1"}, extra...)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // a part of stderr; "" for none at all
		usage  bool   // stderr ends with the hint to run --help
	}{
		{"no command", nil, exitUsage, "no command", true},
		{"unknown command", []string{"frob"}, exitUsage, `unknown command "frob"`, true},
		{"unknown top-level flag", []string{"-o", "json"}, exitUsage, "unknown flag -o", true},
		{"unknown flag", issue("--bogus"), exitUsage, "flag provided but not defined: -bogus", true},
		{"flag without value", issue("--host"), exitUsage, "flag needs an argument: -host", true},
		{"bad host", issue("--host", "not a host!"), exitUsage, `host "not a host!": character ' ' is not allowed`, false},
		{"wildcard host", issue("--host", "*.lab"), exitUsage, "wildcard names are refused", false},
		{"host with port", issue("--host", "127.0.0.1:7000"), exitUsage, "without the port", false},
		{"negative lifetime", issue("--lifetime", "-1h"), exitUsage, "lifetime -1h is not positive", true},
		{"zero lifetime", issue("--lifetime", "0s"), exitUsage, "lifetime 0s is not positive", true},
		{"lifetime in days", issue("--lifetime", "30d"), exitUsage, `invalid value "30d" for flag -lifetime: want a duration like 720h`, true},
		{"lifetime past the CA", issue("--lifetime", "200000h"), exitUsage, "after its CA expires on", false},
		{"unknown role", []string{"issue", "--dir", certs, "--role", "king", "--name", "x"}, exitUsage, `unknown role "king"`, false},
		{"bad name", []string{"issue", "--dir", certs, "--role", "slave", "--name", "Node 1"}, exitUsage, `name "Node 1"`, false},
		{"missing name", []string{"issue", "--dir", certs, "--role", "slave"}, exitUsage, "issue needs --role and --name", true},
		{"stray argument", issue("node-1"), exitUsage, "issue takes no arguments", true},
		{"bad not-before", issue("--not-before", "yesterday"), exitUsage, "want RFC 3339", true},
		{"bad cluster", []string{"ca", "--dir", filepath.Join(dir, "x"), "--cluster", "Lab"}, exitUsage, `--cluster: name "Lab"`, true},
		{"bad CA lifetime", []string{"ca", "--dir", filepath.Join(dir, "x"), "--lifetime", "-5m"}, exitUsage, "lifetime -5m is not positive", true},
		{"inspect without a file", []string{"inspect"}, exitUsage, "inspect takes one certificate file, got 0", true},
		{"help of no command", []string{"help", "frob"}, exitUsage, "help frob", true},
		{"no CA", []string{"issue", "--dir", filepath.Join(dir, "empty"), "--role", "slave", "--name", "a"}, exitFailure, "make the CA first with certgen ca --dir", false},
		{"file exists", []string{"issue", "--dir", certs, "--role", "slave", "--name", "taken"}, exitFailure, "exists: keeping it (use --force to replace it)", false},
		{"CA exists", []string{"ca", "--dir", certs}, exitFailure, "exists: keeping it", false},
		{"revoke a missing file", []string{"revoke", "--dir", certs, filepath.Join(dir, "none.pem")}, exitFailure, "no such file", false},
		{"inspect a missing file", []string{"inspect", filepath.Join(dir, "none.pem")}, exitFailure, "no such file", false},
		{"issue", issue("--host", "127.0.0.1", "--host", "m1.lab", "--lifetime", "48h"), exitOK, "", false},
		{"version", []string{"--version"}, exitOK, "", false},
		{"help", []string{"help"}, exitOK, "", false},
		{"--help", []string{"--help"}, exitOK, "", false},
		{"issue --help", []string{"issue", "--help"}, exitOK, "", false},
		{"help issue", []string{"help", "issue"}, exitOK, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := certgen(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d", code, tc.code)
			}
			if tc.stderr == "" {
				if stderr != "" {
					t.Fatalf("stderr %q, want nothing", stderr)
				}
				return
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("stderr %q, want %q", stderr, tc.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			hint := strings.HasSuffix(lines[len(lines)-1], "--help' for usage")
			if hint != tc.usage || len(lines) > 2 || (len(lines) == 2) != tc.usage {
				t.Fatalf("stderr has %d lines (usage hint %v), want one line and the hint %v", len(lines), hint, tc.usage)
			}
			for _, leak := range []string{"float64", "int64", "time.Duration", "*pki.", "[]string"} {
				if strings.Contains(stderr, leak) {
					t.Fatalf("stderr names the Go type %s", leak)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	_, top, _ := certgen(t, "--help")
	_, help, _ := certgen(t, "help")
	if top != help || !strings.Contains(top, "exit status:") || !strings.Contains(top, "certgen inspect") {
		t.Fatalf("--help and help differ or lack the exit statuses:\n%s\n---\n%s", top, help)
	}
	_, sub, _ := certgen(t, "issue", "--help")
	_, sub2, _ := certgen(t, "help", "issue")
	if sub != sub2 || !strings.Contains(sub, "-lifetime duration") || !strings.Contains(sub, "wildcards") {
		t.Fatalf("issue --help and help issue differ or lack the flags:\n%s\n---\n%s", sub, sub2)
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{usagef("x"), exitUsage},
		{fmt.Errorf("wrapped: %w", usagef("x")), exitUsage},
		{pki.ValidHost("a b"), exitUsage},
		{fmt.Errorf("read: %w", os.ErrNotExist), exitFailure},
		{errors.New("anything"), exitFailure},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestRevokeTwice(t *testing.T) {
	certs := t.TempDir()
	certgen(t, "ca", "--dir", certs)
	certgen(t, "issue", "--dir", certs, "--role", "slave", "--name", "node-1")
	cert := filepath.Join(certs, "slave-node-1.pem")
	crl := filepath.Join(certs, "crl.pem")
	if code, out, _ := certgen(t, "revoke", "--dir", certs, cert); code != 0 || !strings.Contains(out, "revoked "+cert) {
		t.Fatalf("first revoke: exit %d, %q", code, out)
	}
	before, err := os.ReadFile(crl)
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := certgen(t, "revoke", cert, "--dir", certs)
	if code != 0 || !strings.Contains(out, "is already revoked on ") || !strings.Contains(out, "unchanged") {
		t.Fatalf("second revoke: exit %d, %q", code, out)
	}
	after, err := os.ReadFile(crl)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("the second revoke rewrote crl.pem")
	}
}

package daemon

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"github.com/muster-lab/muster/internal/buildinfo"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		code       int
		done       bool
		stdout     string // a substring of it; "" for none at all
		stderr     string // the whole of it
		wantConfig string
	}{
		{name: "flags", args: []string{"--config", "x.toml"}, wantConfig: "x.toml"},
		{name: "none", wantConfig: "/etc/muster/test.toml"},
		{name: "help", args: []string{"--help"}, done: true, stdout: "usage: testd [--config FILE]\n\nAbout testd.\n\nflags:\n  -config file"},
		{name: "h", args: []string{"-h"}, done: true, stdout: "usage: testd"},
		{name: "version", args: []string{"--version"}, done: true, stdout: buildinfo.Read().String() + "\n"},
		{name: "unknown flag", args: []string{"-o", "json"}, code: 2, done: true,
			stderr: "testd: flag provided but not defined: -o; run 'testd --help'\n"},
		{name: "bad value", args: []string{"--n", "many"}, code: 2, done: true,
			stderr: "testd: invalid value \"many\" for flag -n: parse error; run 'testd --help'\n"},
		{name: "extra argument", args: []string{"foo", "bar"}, code: 2, done: true,
			stderr: "testd: unexpected argument \"foo\": testd takes only flags; run 'testd --help'\n"},
		{name: "argument after flags", args: []string{"--config", "x.toml", "start"}, code: 2, done: true,
			stderr: "testd: unexpected argument \"start\": testd takes only flags; run 'testd --help'\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("testd", flag.ContinueOnError)
			Usage(fs, "testd [--config FILE]", "About testd.")
			config := fs.String("config", "/etc/muster/test.toml", "config `file`")
			fs.Int("n", 1, "a number")
			var stdout, stderr bytes.Buffer
			code, done := Parse(fs, tt.args, &stdout, &stderr)
			if code != tt.code || done != tt.done {
				t.Errorf("Parse(%q) = %d, %v; want %d, %v", tt.args, code, done, tt.code, tt.done)
			}
			if tt.stdout == "" && stdout.Len() > 0 || !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout = %q, want it to contain %q", stdout.String(), tt.stdout)
			}
			if stderr.String() != tt.stderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.stderr)
			}
			if !done && *config != tt.wantConfig {
				t.Errorf("config = %q, want %q", *config, tt.wantConfig)
			}
		})
	}
}

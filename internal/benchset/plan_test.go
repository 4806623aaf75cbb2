package benchset

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/muster-lab/muster/internal/loadgen"
)

// Every run of both plans is one loadgen accepts.
func TestPlansValid(t *testing.T) {
	for _, plan := range []Plan{StandardPlan(), QuickPlan()} {
		for _, l := range plan.Loads {
			c := loadgen.DefaultConfig()
			c.Registry, c.CAFile, c.CAKeyFile = "127.0.0.1:7111", "ca.pem", "ca-key.pem"
			c.Slaves, c.Duration, c.At, c.Kill, c.Silence = l.N, l.Duration, l.At, l.Kill, l.Silence
			if l.Spacing > 0 {
				c.Spacing = l.Spacing
			}
			if l.JoinTimeout > 0 {
				c.JoinPhase = l.JoinTimeout
			}
			if err := c.Validate(); err != nil {
				t.Errorf("%s set, %s: %v", plan.Name, l.Label(), err)
			}
		}
	}
}

func TestCommand(t *testing.T) {
	l := StandardPlan().Loads[2]
	want := "loadgen --json --registry 127.0.0.1:7111 --ca certs/ca.pem --ca-key certs/ca-key.pem --master-pid 42 " +
		"-n 10000 --duration 5m --join-timeout 10m --roll=false --watch-start ready --at 60s --kill 10 --silence 10 --spacing 10s"
	if got := Command("127.0.0.1:7111", 42, l); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := Command("", 0, Load{N: 5, Duration: 10 * 1e9}); got != "loadgen --json --registry $REGISTRY --ca certs/ca.pem --ca-key certs/ca-key.pem --master-pid $MASTER_PID -n 5 --duration 10s" {
		t.Errorf("placeholders: %s", got)
	}
}

// loadgen's --help gives, for each N of the standard set, the command make
// bench runs, less --json and with the lab's usual registry and pid.
func TestLoadgenHelpRunsThePlan(t *testing.T) {
	src, err := os.ReadFile("../../cmd/loadgen/main.go")
	if err != nil {
		t.Fatal(err)
	}
	help := regexp.MustCompile(`\\\n\s*`).ReplaceAllString(string(src), "") // the recipes' continued lines
	for _, l := range StandardPlan().Loads {
		want := "loadgen " + strings.Join(loadgenArgs("127.0.0.1:7111", "$(pidof masterd)", l)[1:], " ")
		if !strings.Contains(help, want) {
			t.Errorf("cmd/loadgen's help has no recipe for %s as make bench runs it; want\n%s", l.Label(), want)
		}
	}
}

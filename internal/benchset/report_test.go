package benchset

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/loadgen"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// result reads a loadgen --json output from testdata/results. n100, n1000
// and n3000-incomplete are real runs of --quick; n10000 is n1000 with its
// figures edited to those of a 10,000 run that misses one target.
func result(t *testing.T, name string) *loadgen.Result {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "results", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var res loadgen.Result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &res
}

var testMachine = Machine{
	CPU: "AMD EPYC 7R13 Processor", CPUs: 2, MemTotal: 24 << 30, Kernel: "6.1.102", Arch: "amd64",
	Go: "go1.26.8", LoadAvg: "0.52 0.61 0.40", Commit: "d64ff4f", Dirty: true,
}

// standardReport is a whole standard set in which heartbeat p99 at 10,000
// misses its target.
func standardReport(t *testing.T) *Report {
	plan := StandardPlan()
	return &Report{
		Plan: plan, Machine: testMachine,
		Started: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC), Took: 11*time.Minute + 42*time.Second,
		Files: "20,000 for benchset and every process it started",
		Loads: []LoadResult{
			{Load: plan.Loads[0], Command: Command("127.0.0.1:34795", 32658, plan.Loads[0]), Result: result(t, "n100")},
			{Load: plan.Loads[1], Command: Command("127.0.0.1:45609", 609, plan.Loads[1]), Result: result(t, "n1000")},
			{Load: plan.Loads[2], Command: Command("127.0.0.1:42131", 705, plan.Loads[2]), Result: result(t, "n10000")},
		},
		Idle:    &Idle{Window: 60*time.Second + 2*time.Millisecond, CPUPercent: 0.08, PeakRSS: 11_010_048, HWM: 11_534_336, Samples: 62},
		IdleCmd: "slaved --config slave.toml   # conf/examples/slave.toml, idle for 1 min",
		Micro:   "goos: linux\nBenchmarkObserve-2   \t20000000\t        17.6 ns/op\t       0 B/op\nPASS\n",
		Plot:    "bench-scale.svg",
	}
}

// failedReport is a quick set in which one run did not complete, the
// largest failed outright, and the idle slaved did not join.
func failedReport(t *testing.T) *Report {
	plan := QuickPlan()
	return &Report{
		Plan: plan, Machine: Machine{CPUs: 4, Arch: "arm64", Go: "go1.26.8"},
		Started: time.Date(2026, 11, 24, 9, 30, 0, 0, time.UTC), Took: 3*time.Minute + 5*time.Second,
		Loads: []LoadResult{
			{Load: plan.Loads[0], Command: Command("127.0.0.1:34795", 32658, plan.Loads[0]), Result: result(t, "n100")},
			{Load: plan.Loads[2], Command: Command("127.0.0.1:42131", 705, plan.Loads[2]), Result: result(t, "n3000-incomplete"),
				Notes: []string{"masterd exited 2 during the run"}},
			{Load: Load{N: 1000, Duration: time.Minute}, Command: Command("", 0, Load{N: 1000, Duration: time.Minute}),
				Failed: "loadgen exited 2 without a result (unexpected end of JSON input). Its log ends:\n  loadgen: -n 1000 needs about 1064 open files\n  usage: ..."},
		},
		IdleErr: "slaved exited 1 before logging /joined/; its log ends:\n  slaved: certificate expired",
	}
}

func TestMarkdownGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report func(*testing.T) *Report
	}{
		{"standard", standardReport},
		{"failed", failedReport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.report(t).Markdown()
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "section-"+tc.name+".golden.md")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to make it)", err)
			}
			if got != string(want) {
				t.Errorf("Markdown() differs from %s (run go test -update and read the diff):\n%s", golden, got)
			}
		})
	}
}

func TestTargets(t *testing.T) {
	verdicts := func(r *Report) []string {
		var out []string
		for _, tg := range r.Targets() {
			if tg.Why == "" && tg.Figure == "" {
				t.Errorf("%q has neither a figure nor a reason", tg.Goal)
			}
			if tg.Met && tg.Why != "" {
				t.Errorf("%q is met and not measured", tg.Goal)
			}
			out = append(out, tg.Verdict())
		}
		return out
	}
	// In the order of Targets: heartbeat p99, false deaths, RSS, CPU, kill,
	// silence, fan-out at 10,000; cold join at 1,000; the idle slaved's RSS
	// and CPU.
	std := verdicts(standardReport(t))
	want := []string{"NOT met", "met", "met", "met", "met", "met", "met", "NOT met", "met", "met"}
	if !slices.Equal(std, want) {
		t.Errorf("standard set:\ngot  %q\nwant %q", std, want)
	}
	failed := verdicts(failedReport(t))
	for i, prefix := range []string{
		0: "not measured: the quick set has no N = 10,000 run",
		6: "not measured: the quick set has no N = 10,000 run",
		7: "not measured: the N = 1,000 run failed (loadgen exited 2 without a result",
		8: "not measured: slaved exited 1 before logging /joined/; its log ends:",
		9: "not measured: slaved exited 1 before logging /joined/; its log ends:",
	} {
		if prefix != "" && !strings.HasPrefix(failed[i], prefix) {
			t.Errorf("failed set, target %d: got %q, want it to start %q", i, failed[i], prefix)
		}
	}

	// A false death in an incomplete run fails the target; a missed strike
	// fails detection.
	r := standardReport(t)
	res := *r.Loads[2].Result
	res.Error, res.FalseDeaths, res.Steady = "stopped early", 3, 100
	res.Strikes = append([]loadgen.Strike(nil), res.Strikes...)
	res.Strikes[0].Detected = false
	r.Loads[2].Result = &res
	for _, tg := range r.Targets() {
		switch firstWord(tg.Goal) {
		case "no":
			if tg.Verdict() != "NOT met" || !strings.Contains(tg.Figure, "3 false deaths") {
				t.Errorf("false deaths in an incomplete run: got %q %q", tg.Figure, tg.Verdict())
			}
		case "heartbeat": // 62.5 ms: measured, and already too slow
			if tg.Verdict() != "NOT met" || !strings.HasSuffix(tg.Figure, "; the run did not complete") {
				t.Errorf("heartbeat in an incomplete run: got %q %q", tg.Figure, tg.Verdict())
			}
		case "masterd": // within bounds so far, which proves nothing
			if !strings.HasPrefix(tg.Verdict(), "not measured: the N = 10,000 run did not complete (stopped early)") {
				t.Errorf("masterd in an incomplete run: got %q", tg.Verdict())
			}
		}
	}
	r.Loads[2].Result.Error = ""
	r.Loads[2].Result.Steady = 300
	for _, tg := range r.Targets() {
		if firstWord(tg.Goal) == "crash:" && (tg.Verdict() != "NOT met" || !strings.Contains(tg.Figure, "1 of 5 killed slaves never declared dead")) {
			t.Errorf("an undetected kill: got %q %q", tg.Figure, tg.Verdict())
		}
	}
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(s, " ")
	return w
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{msText(0.239), "0.24 ms"},
		{msText(37.2), "37.2 ms"},
		{msText(543.4), "543 ms"},
		{msText(1567.9), "1.57 s"},
		{count(59345), "59,345"},
		{count(100), "100"},
		{count(-1234), "-1,234"},
		{durText(5 * time.Minute), "5 min"},
		{durText(90 * time.Second), "1 min 30 s"},
		{durText(1500 * time.Millisecond), "1.5 s"},
		{flagDuration(5 * time.Minute), "5m"},
		{flagDuration(30 * time.Second), "30s"},
		{flagDuration(250 * time.Millisecond), "250ms"},
		{pctText(0.05), "0.05%"},
		{pctText(12.5), "12%"},
		{fenceFor("a ```` b"), "`````"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

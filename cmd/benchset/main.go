// Command benchset runs make bench's scale set: loadgen against a fresh
// registryd and masterd at each N, and one real slaved left idle, and
// writes the figures into docs/BENCHMARKS.md with a plot.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/muster-lab/muster/internal/benchset"
	"github.com/muster-lab/muster/internal/daemon"
)

const about = `Runs the scale set and writes its section of docs/BENCHMARKS.md, between the
lines <!-- benchset:begin --> and <!-- benchset:end --> (made after the first
paragraph if missing), keeping the rest of the file, and draws --plot.

For each N (100, 1,000 and 10,000; with --quick 100, 1,000 and 3,000, shorter)
it makes a lab in a temp directory: a CA and certificates from certgen,
registryd and masterd from conf/examples on 127.0.0.1 with free ports, then
loadgen --json with kills and silences. Then one real slaved, idle, for 60 s.
Every process it starts is stopped by PID when it ends, fails or gets SIGINT
or SIGTERM. Run it from the repository's root after make build; make bench
does both. The standard set takes about 10 minutes, more if the cold join
of 10,000 is slow; --quick about 3.

Exit status 0 when the doc was written, whether the targets were met or not.`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("benchset", flag.ContinueOnError)
	daemon.Usage(fs, "benchset [--out FILE] [--plot FILE] [--bin DIR] [--quick] [--micro FILE] [--keep]", about)
	o := benchset.Options{Plan: benchset.StandardPlan(), Repo: ".", ProcRoot: "/proc", Progress: os.Stderr}
	fs.StringVar(&o.Out, "out", "docs/BENCHMARKS.md", "the doc (a markdown `file`) to write the section into")
	fs.StringVar(&o.Plot, "plot", "docs/bench-scale.svg", "the SVG `file` to draw the figures in; \"\" for none")
	fs.StringVar(&o.Bin, "bin", "bin", "the `dir`ectory of certgen, registryd, masterd, slaved and loadgen")
	fs.StringVar(&o.Examples, "examples", "conf/examples", "the `dir`ectory of the example configs")
	fs.StringVar(&o.Micro, "micro", "", "a `file` of go test -bench output to quote in the doc")
	fs.BoolVar(&o.Keep, "keep", false, "keep the lab directories and their logs")
	quick := fs.Bool("quick", false, "a short set for trying the tool out: N=100, 1,000 and 3,000, about 3 minutes")
	if code, done := daemon.Parse(fs, args, os.Stdout, os.Stderr); done {
		return code
	}
	if *quick {
		o.Plan = benchset.QuickPlan()
	}

	ctx, stop := daemon.Context()
	defer stop()
	rep, err := benchset.Run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchset: %v\n", err)
		return 1
	}
	if err := benchset.Write(rep, o); err != nil {
		fmt.Fprintf(os.Stderr, "benchset: %v\n", err)
		return 1
	}
	benchset.Summary(os.Stdout, rep, o)
	return 0
}

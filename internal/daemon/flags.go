package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/muster-lab/muster/internal/buildinfo"
)

// Usage sets a flag set's help: a synopsis, a paragraph, then the flags.
func Usage(fs *flag.FlagSet, synopsis, about string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n\n%s\n\nflags:\n", synopsis, about)
		fs.PrintDefaults()
	}
}

// Parse reads a command's flags the way every muster command does, and adds
// --version to them. fs must be made with flag.ContinueOnError.
//
//   - --help prints the usage (see Usage) on stdout: exit 0.
//   - --version prints the build (buildinfo) on stdout: exit 0.
//   - An unknown flag or a bad value is one line on stderr that points at
//     --help, and so is an argument that is not a flag: exit 2.
//
// done says the command has nothing more to do and should exit with code.
func Parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	version := fs.Bool("version", false, "print the version and exit")
	usage := fs.Usage
	if usage == nil {
		usage = fs.PrintDefaults
	}
	fs.Usage = func() {} // the flag package's own report is replaced by ours
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(stdout)
	name := fs.Name()
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return 0, true
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v; run '%s --help'\n", name, err, name)
		return 2, true
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q: %s takes only flags; run '%s --help'\n", name, fs.Arg(0), name, name)
		return 2, true
	case *version:
		fmt.Fprintln(stdout, buildinfo.Read())
		return 0, true
	}
	return 0, false
}

// Fail prints a one-line error for the user on w and returns exit status 1,
// for a main to return after its deferred cleanup has run.
func Fail(w io.Writer, prog string, err error) int {
	fmt.Fprintf(w, "%s: %v\n", prog, err)
	return 1
}

// Valid prints --check's line for a config that loaded, and returns exit
// status 0: "config FILE is valid: SUMMARY; certificate expires DATE".
func Valid(w io.Writer, file, summary string, notAfter time.Time) int {
	fmt.Fprintf(w, "config %s is valid: %s; certificate expires %s\n", file, summary, notAfter.UTC().Format("2006-01-02 15:04 MST"))
	return 0
}

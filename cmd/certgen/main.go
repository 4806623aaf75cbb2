// Command certgen makes a cluster's CA and the certificates of its nodes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/muster-lab/muster/internal/buildinfo"
	"github.com/muster-lab/muster/internal/pki"
)

const usage = `usage: certgen ca      [--dir DIR] [--cluster NAME] [--lifetime DUR] [--force]
       certgen issue   --role ROLE --name NAME [--host HOST_OR_IP]... [--dir DIR] [--lifetime DUR] [--force]
       certgen revoke  CERT.pem... [--dir DIR]
       certgen inspect CERT.pem [--dir DIR] [--json]
       certgen --version

Makes the certificates muster's nodes prove who they are with.

  ca       makes DIR/ca.pem and DIR/ca-key.pem: an ECDSA P-256 CA for one cluster.
  issue    signs DIR/ROLE-NAME.pem and DIR/ROLE-NAME-key.pem with that CA. The
           node's identity is the URI SAN spiffe://CLUSTER/ROLE/NAME; each --host
           adds a DNS or IP SAN. ROLE is registry, master, slave or admin.
  revoke   adds the certificates to DIR/crl.pem, the CA's revocation list (with
           none, it makes an empty list to name in configs from the start).
           Copy it to every node whose config names it in tls.crl and send
           them SIGHUP: they refuse those certificates and close their
           connections. A certificate already listed is left as it is.
  inspect  shows a certificate's identity, serial, validity, hosts, and
           whether DIR's CA signed it and DIR/crl.pem revokes it.

Keys are written mode 0600. Existing files are kept unless --force is given.
Run 'certgen help COMMAND' or 'certgen COMMAND --help' for each command's flags.

exit status:
  0  done (for inspect: the report was printed, whatever it says)
  1  failed: a file could not be read or written, exists already, or is not
     what it should be (no CA in DIR, a certificate of another CA)
  2  usage: an unknown command or flag, a missing or bad argument, a value
     refused (a host that is not one, a lifetime past the CA's)

example:
  certgen ca --dir certs --cluster lab
  certgen issue --dir certs --role registry --name reg1 --host 127.0.0.1
  certgen issue --dir certs --role master --name m1 --host 127.0.0.1
  certgen issue --dir certs --role slave --name node-1
  certgen inspect --dir certs certs/slave-node-1.pem
`

// Exit statuses, as the usage text describes them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs one certgen command and returns its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cmd, err := dispatch(args, stdout)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "run '%s --help' for usage\n", cmd)
	}
	return exitCode(err)
}

// exitCode is the status err calls for.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue), errors.Is(err, pki.ErrInvalid):
		return exitUsage
	}
	return exitFailure
}

// usageError is a command line certgen cannot make sense of.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// dispatch runs the command args name and returns its name for messages.
func dispatch(args []string, stdout io.Writer) (string, error) {
	if len(args) == 0 {
		return "certgen", usagef("no command: want ca, issue, revoke or inspect")
	}
	cmds := map[string]func([]string, io.Writer) error{
		"ca": runCA, "issue": runIssue, "revoke": runRevoke, "inspect": runInspect,
	}
	switch a := args[0]; a {
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return "certgen", nil
	case "help":
		if len(args) == 1 {
			fmt.Fprint(stdout, usage)
			return "certgen", nil
		}
		if cmds[args[1]] == nil || len(args) > 2 {
			return "certgen", usagef("help %s: want help, or help followed by one of ca, issue, revoke, inspect", strings.Join(args[1:], " "))
		}
		return dispatch([]string{args[1], "--help"}, stdout)
	case "-version", "--version":
		fmt.Fprintln(stdout, buildinfo.Read().String())
		return "certgen", nil
	default:
		if f := cmds[a]; f != nil {
			return "certgen " + a, f(args[1:], stdout)
		}
		if strings.HasPrefix(a, "-") {
			return "certgen", usagef("unknown flag %s: give a command first (ca, issue, revoke or inspect), or --help or --version", a)
		}
		return "certgen", usagef("unknown command %q: want ca, issue, revoke or inspect", a)
	}
}

// parse parses a command's flags. Given -h or --help it prints the
// command's help to stdout and returns flag.ErrHelp; any other problem is a
// usageError of one line, without the flag package's usage dump.
func parse(fs *flag.FlagSet, args []string, help string, stdout io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, help)
		fmt.Fprintln(stdout, "\nflags:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return &usageError{err: err}
	}
	return nil
}

// parseInterleaved parses flags that may come before, between or after the
// arguments, and returns the arguments.
func parseInterleaved(fs *flag.FlagSet, args []string, help string, stdout io.Writer) ([]string, error) {
	var rest []string
	for {
		if err := parse(fs, args, help, stdout); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

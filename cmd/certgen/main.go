// Command certgen makes a cluster's CA and the certificates of its nodes.
package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/muster-lab/muster/internal/atomicfile"
	"github.com/muster-lab/muster/internal/pki"
)

const usage = `usage: certgen ca    [--dir DIR] [--cluster NAME] [--lifetime DUR] [--force]
       certgen issue --role ROLE --name NAME [--host HOST_OR_IP]... [--dir DIR] [--lifetime DUR] [--force]
       certgen revoke CERT.pem... [--dir DIR]

Makes the certificates muster's nodes prove who they are with.

  ca      makes DIR/ca.pem and DIR/ca-key.pem: an ECDSA P-256 CA for one cluster.
  issue   signs DIR/ROLE-NAME.pem and DIR/ROLE-NAME-key.pem with that CA. The
          node's identity is the URI SAN spiffe://CLUSTER/ROLE/NAME; each --host
          adds a DNS or IP SAN. ROLE is registry, master, slave or admin.
  revoke  adds the certificates to DIR/crl.pem, the CA's revocation list (with
          none, it makes an empty list to name in configs from the start).
          Copy it to every node whose config names it in tls.crl and send
          them SIGHUP: they refuse those certificates and close their
          connections.

Keys are written mode 0600. Existing files are kept unless --force is given.
Run 'certgen ca --help' or 'certgen issue --help' for each command's flags.

example:
  certgen ca --dir certs --cluster lab
  certgen issue --dir certs --role registry --name reg1 --host 127.0.0.1
  certgen issue --dir certs --role master --name m1 --host 127.0.0.1
  certgen issue --dir certs --role slave --name node-1
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "certgen: %v\n", err)
		os.Exit(2)
	}
}

type hosts []string

func (h *hosts) String() string     { return strings.Join(*h, ",") }
func (h *hosts) Set(v string) error { *h = append(*h, v); return nil }

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command: want ca, issue or revoke")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "ca":
		return runCA(args[1:], stdout, stderr)
	case "issue":
		return runIssue(args[1:], stdout, stderr)
	case "revoke":
		return runRevoke(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q: want ca, issue or revoke", args[0])
}

func runCA(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certgen ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "`directory` to write ca.pem and ca-key.pem to")
	cluster := fs.String("cluster", "lab", "cluster `name`: the trust domain of every certificate this CA signs")
	lifetime := fs.Duration("lifetime", pki.DefaultCALifetime, "how long the CA is valid")
	force := fs.Bool("force", false, "replace existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("ca takes no arguments, got %q", fs.Args())
	}
	certPath, keyPath := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
	if err := checkFree(*force, certPath, keyPath); err != nil {
		return err
	}
	ca, err := pki.NewCA(*cluster, *lifetime)
	if err != nil {
		return err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := write(*dir, keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := write(*dir, certPath, ca.CertPEM(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s: CA for cluster %q, valid until %s\n", certPath, keyPath, *cluster, ca.Cert.NotAfter.Format(time.DateOnly))
	return nil
}

func runIssue(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certgen issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "`directory` holding ca.pem and ca-key.pem, and to write the certificate to")
	role := fs.String("role", "", "the holder's `role`: registry, master, slave or admin")
	name := fs.String("name", "", "the holder's `name`, e.g. node-1; for a slave, its node name")
	var hs hosts
	fs.Var(&hs, "host", "a DNS name or IP `address` the holder serves on (repeatable)")
	lifetime := fs.Duration("lifetime", pki.DefaultCertLifetime, "how long the certificate is valid")
	notBefore := fs.String("not-before", "", "start of validity, RFC 3339 (default: now); for testing clock skew and expiry")
	force := fs.Bool("force", false, "replace existing files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("issue takes no arguments, got %q (did you mean --name?)", fs.Args())
	}
	if *role == "" || *name == "" {
		return errors.New("issue needs --role and --name, e.g. certgen issue --role slave --name node-1")
	}
	r, err := pki.ParseRole(*role)
	if err != nil {
		return err
	}
	if err := pki.ValidName(*name); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	req := pki.IssueRequest{Role: r, Name: *name, Hosts: hs, Lifetime: *lifetime}
	if *notBefore != "" {
		t, err := time.Parse(time.RFC3339, *notBefore)
		if err != nil {
			return fmt.Errorf("--not-before %q: want RFC 3339, like 2026-01-02T15:04:05Z", *notBefore)
		}
		req.NotBefore = t
	}
	ca, err := pki.LoadCA(filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem"))
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("%w: make the CA first with certgen ca --dir %s", err, *dir)
		}
		return err
	}
	base := filepath.Join(*dir, *role+"-"+*name)
	certPath, keyPath := base+".pem", base+"-key.pem"
	if err := checkFree(*force, certPath, keyPath); err != nil {
		return err
	}
	is, err := ca.Issue(req)
	if err != nil {
		return err
	}
	if err := write(*dir, keyPath, is.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := write(*dir, certPath, is.CertPEM, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s: %s, valid until %s\n", certPath, keyPath, is.Identity, is.Cert.NotAfter.Format(time.DateOnly))
	return nil
}

func runRevoke(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certgen revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "`directory` holding ca.pem, ca-key.pem and crl.pem")
	var paths []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		args = fs.Args()[1:]
	}
	ca, err := pki.LoadCA(filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem"))
	if err != nil {
		return err
	}
	var certs []*x509.Certificate
	for _, p := range paths {
		c, err := pki.ReadCertFile(p)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	crlPath := filepath.Join(*dir, "crl.pem")
	prev, err := os.ReadFile(crlPath)
	if err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", crlPath, err)
	}
	crl, err := ca.Revoke(prev, certs...)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(crlPath, crl, 0o644); err != nil {
		return err
	}
	for i, c := range certs {
		id, _ := pki.IdentityFromCert(c)
		fmt.Fprintf(stdout, "revoked %s (%s, serial %s)\n", paths[i], id, c.SerialNumber.Text(16))
	}
	if len(certs) == 0 {
		fmt.Fprintf(stdout, "wrote %s with no new entries (an empty list to start with, or the old one re-signed): name it in tls.crl\n", crlPath)
		return nil
	}
	fmt.Fprintf(stdout, "wrote %s: copy it to the nodes whose config names it in tls.crl, then send them SIGHUP\n", crlPath)
	return nil
}

func checkFree(force bool, paths ...string) error {
	if force {
		return nil
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: keeping it (use --force to replace it)", p)
		}
	}
	return nil
}

func write(dir, path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return atomicfile.Write(path, data, perm)
}

package main

import (
	"crypto/x509"
	"encoding/json"
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

// hosts is a repeatable --host.
type hosts []string

func (h *hosts) String() string     { return strings.Join(*h, ",") }
func (h *hosts) Set(v string) error { *h = append(*h, v); return nil }

// lifetime is a --lifetime: a duration, and whether it was given.
type lifetime struct {
	d   time.Duration
	set bool
}

func (l *lifetime) String() string {
	if l == nil || !l.set {
		return ""
	}
	return pki.FormatDuration(l.d)
}

func (l *lifetime) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration like 720h or 90m (units h, m and s; no days)")
	}
	if err := pki.ValidLifetime(d); err != nil {
		return err
	}
	l.d, l.set = d, true
	return nil
}

const caHelp = `usage: certgen ca [--dir DIR] [--cluster NAME] [--lifetime DUR] [--force]

Makes DIR/ca.pem and DIR/ca-key.pem: an ECDSA P-256 CA for one cluster, whose
certificate names it as spiffe://NAME.
`

func runCA(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certgen ca", flag.ContinueOnError)
	dir := fs.String("dir", ".", "`directory` to write ca.pem and ca-key.pem to")
	cluster := fs.String("cluster", "lab", "cluster `name`: the trust domain of every certificate this CA signs")
	var life lifetime
	fs.Var(&life, "lifetime", "how long the CA is valid: a `duration` like 43800h (default 87600h, ten years)")
	force := fs.Bool("force", false, "replace existing files")
	if err := parse(fs, args, caHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("ca takes no arguments, got %q", fs.Args())
	}
	if err := pki.ValidName(*cluster); err != nil {
		return usagef("--cluster: %v", err)
	}
	certPath, keyPath := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
	if err := checkFree(*force, certPath, keyPath); err != nil {
		return err
	}
	ca, err := pki.NewCA(*cluster, life.d)
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

const issueHelp = `usage: certgen issue --role ROLE --name NAME [--host HOST_OR_IP]... [--dir DIR] [--lifetime DUR] [--force]

Signs DIR/ROLE-NAME.pem and DIR/ROLE-NAME-key.pem with the CA in DIR. The
identity is spiffe://CLUSTER/ROLE/NAME. Each --host is an IP address or a DNS
name (RFC 1123: dot-separated labels of letters, digits and '-'); wildcards
such as *.lab are refused, since a certificate names one node. The lifetime
must be positive and end no later than the CA does.
`

func runIssue(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certgen issue", flag.ContinueOnError)
	dir := fs.String("dir", ".", "`directory` holding ca.pem and ca-key.pem, and to write the certificate to")
	role := fs.String("role", "", "the holder's `role`: registry, master, slave or admin")
	name := fs.String("name", "", "the holder's `name`, e.g. node-1; for a slave, its node name")
	var hs hosts
	fs.Var(&hs, "host", "a DNS `name or IP` address the holder serves on (repeatable)")
	var life lifetime
	fs.Var(&life, "lifetime", "how long the certificate is valid: a `duration` like 720h (default 8760h, a year, or until the CA expires if sooner)")
	notBefore := fs.String("not-before", "", "`start` of validity, RFC 3339 (default: now); for testing clock skew and expiry")
	force := fs.Bool("force", false, "replace existing files")
	if err := parse(fs, args, issueHelp, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("issue takes no arguments, got %q (did you mean --name?)", fs.Args())
	}
	if *role == "" || *name == "" {
		return usagef("issue needs --role and --name, e.g. certgen issue --role slave --name node-1")
	}
	req := pki.IssueRequest{Role: pki.Role(*role), Name: *name, Hosts: hs, Lifetime: life.d}
	if *notBefore != "" {
		t, err := time.Parse(time.RFC3339, *notBefore)
		if err != nil {
			return usagef("--not-before %q: want RFC 3339, like 2026-01-02T15:04:05Z", *notBefore)
		}
		req.NotBefore = t
	}
	if err := req.Validate(); err != nil {
		return err
	}
	ca, err := loadCA(*dir)
	if err != nil {
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
	until := is.Cert.NotAfter.Format(time.DateOnly)
	if !life.set && is.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		until += ", when its CA expires (a year would outlive the CA)"
	}
	fmt.Fprintf(stdout, "wrote %s and %s: %s, valid until %s\n", certPath, keyPath, is.Identity, until)
	return nil
}

const revokeHelp = `usage: certgen revoke CERT.pem... [--dir DIR]

Adds the certificates to DIR/crl.pem, the revocation list of the CA in DIR,
and signs it again. A certificate the list already names is reported as
already revoked, with its date, and the list is not rewritten for it. With no
certificate, it makes an empty list (or signs the old one again).
`

func runRevoke(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certgen revoke", flag.ContinueOnError)
	dir := fs.String("dir", ".", "`directory` holding ca.pem, ca-key.pem and crl.pem")
	paths, err := parseInterleaved(fs, args, revokeHelp, stdout)
	if err != nil {
		return err
	}
	ca, err := loadCA(*dir)
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
	crl, done, err := ca.Revoke(prev, certs...)
	if err != nil {
		return fmt.Errorf("revoke in %s: %w", crlPath, err)
	}
	if crl != nil {
		if err := atomicfile.Write(crlPath, crl, 0o644); err != nil {
			return err
		}
	}
	for i, r := range done {
		id, _ := pki.IdentityFromCert(r.Cert)
		if r.Already {
			fmt.Fprintf(stdout, "%s (%s, serial %s) is already revoked on %s\n", paths[i], id, r.Cert.SerialNumber.Text(16), r.At.UTC().Format(time.RFC3339))
		} else {
			fmt.Fprintf(stdout, "revoked %s (%s, serial %s)\n", paths[i], id, r.Cert.SerialNumber.Text(16))
		}
	}
	switch {
	case crl == nil:
		fmt.Fprintf(stdout, "%s is unchanged: every certificate given was revoked already\n", crlPath)
	case len(certs) == 0:
		fmt.Fprintf(stdout, "wrote %s with no new entries (an empty list to start with, or the old one re-signed): name it in tls.crl\n", crlPath)
	default:
		fmt.Fprintf(stdout, "wrote %s: copy it to the nodes whose config names it in tls.crl, then send them SIGHUP\n", crlPath)
	}
	return nil
}

const inspectHelp = `usage: certgen inspect CERT.pem [--dir DIR] [--json]

Shows a certificate made by certgen (a node's or the CA's): its identity,
role, name, cluster, serial, issuer, validity and time left, hosts, whether
the CA in DIR signed it and whether DIR/crl.pem revokes it. --json writes one
object; docs/OPERATIONS.md describes its fields. The exit status is 0 whenever
the report is written, even for an expired or revoked certificate.
`

func runInspect(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certgen inspect", flag.ContinueOnError)
	dir := fs.String("dir", ".", "`directory` holding ca.pem and crl.pem to check the certificate against")
	asJSON := fs.Bool("json", false, "write the report as JSON")
	paths, err := parseInterleaved(fs, args, inspectHelp, stdout)
	if err != nil {
		return err
	}
	if len(paths) != 1 {
		return usagef("inspect takes one certificate file, got %d", len(paths))
	}
	r, err := pki.Inspect(paths[0], filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "crl.pem"), time.Now())
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return r.WriteText(stdout)
}

func loadCA(dir string) (*pki.CA, error) {
	ca, err := pki.LoadCA(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem"))
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("%w: make the CA first with certgen ca --dir %s, or give the --dir that holds it", err, dir)
	}
	return ca, err
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

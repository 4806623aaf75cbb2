// Package pkitest makes the certificates a test needs with muster's own pki
// code: a CA per test, node certificates and stores for 127.0.0.1, and the
// PEM files a config names, written to the test's temp dir. No key is ever
// committed, and no test sets up a CA by hand.
package pkitest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/muster-lab/muster/internal/pki"
)

// Localhost is where every certificate of Node serves.
const Localhost = "127.0.0.1"

// CA is a test's certificate authority. The methods fail the test on error,
// from any goroutine the testing package allows Fatal in.
type CA struct {
	*pki.CA
	tb testing.TB
}

// New makes a CA for cluster with pki's default lifetime.
func New(tb testing.TB, cluster string) *CA {
	tb.Helper()
	ca, err := pki.NewCA(cluster, 0)
	if err != nil {
		tb.Fatalf("make a CA for %s: %v", cluster, err)
	}
	return &CA{CA: ca, tb: tb}
}

// MustIssue issues the certificate req asks for.
func (c *CA) MustIssue(req pki.IssueRequest) *pki.Issued {
	c.tb.Helper()
	is, err := c.CA.Issue(req)
	if err != nil {
		c.tb.Fatalf("issue %s/%s: %v", req.Role, req.Name, err)
	}
	return is
}

// Node issues a certificate for role/name that serves on 127.0.0.1.
func (c *CA) Node(role pki.Role, name string) *pki.Issued {
	c.tb.Helper()
	return c.MustIssue(pki.IssueRequest{Role: role, Name: name, Hosts: []string{Localhost}})
}

// Store is an in-memory store for is that trusts this CA only.
func (c *CA) Store(is *pki.Issued) *pki.Store {
	c.tb.Helper()
	st, err := pki.FromPEM(c.CertPEM(), is.CertPEM, is.KeyPEM)
	if err != nil {
		c.tb.Fatalf("store for %s: %v", is.Identity, err)
	}
	return st
}

// NodeStore is the store of a fresh Node certificate for role/name.
func (c *CA) NodeStore(role pki.Role, name string) *pki.Store {
	c.tb.Helper()
	return c.Store(c.Node(role, name))
}

// WriteCA writes the CA certificate to dir/ca.pem and returns its path.
func (c *CA) WriteCA(dir string) string {
	c.tb.Helper()
	return WriteFile(c.tb, dir, "ca.pem", c.CertPEM(), 0o644)
}

// WriteNode issues a Node certificate for role/name and writes it as
// dir/<name>.pem and dir/<name>-key.pem (mode 0600), beside dir/ca.pem: the
// files a config names.
func (c *CA) WriteNode(dir string, role pki.Role, name string) pki.Files {
	c.tb.Helper()
	is := c.Node(role, name)
	return pki.Files{
		CA:   c.WriteCA(dir),
		Cert: WriteFile(c.tb, dir, name+".pem", is.CertPEM, 0o644),
		Key:  WriteFile(c.tb, dir, name+"-key.pem", is.KeyPEM, 0o600),
	}
}

// WriteFile writes data to dir/name with mode and returns the path.
func WriteFile(tb testing.TB, dir, name string, data []byte, mode os.FileMode) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		tb.Fatal(err)
	}
	return p
}

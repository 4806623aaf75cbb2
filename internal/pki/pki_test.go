package pki

import (
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityFromCert(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	for _, tc := range []struct {
		name string
		uris []*url.URL
		want string // identity, or error text
	}{
		{"one", []*url.URL{u("spiffe://lab/slave/node-1")}, "spiffe://lab/slave/node-1"},
		{"none", nil, "no spiffe://"},
		{"two", []*url.URL{u("spiffe://lab/slave/a"), u("spiffe://lab/slave/b")}, "2 spiffe URI SANs"},
		{"other schemes ignored", []*url.URL{u("https://example.invalid/x"), u("spiffe://lab/master/m1")}, "spiffe://lab/master/m1"},
		{"unknown role", []*url.URL{u("spiffe://lab/king/x")}, "unknown role"},
		{"extra path", []*url.URL{u("spiffe://lab/slave/a/b")}, "want spiffe://<cluster>/<role>/<name>"},
		{"bad name", []*url.URL{u("spiffe://lab/slave/Node")}, "not allowed"},
		{"port", []*url.URL{u("spiffe://lab:1/slave/a")}, "want spiffe://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := IdentityFromCert(&x509.Certificate{URIs: tc.uris})
			got := id.String()
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func write(t *testing.T, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadChecks(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("lab", 0)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(IssueRequest{Role: RoleSlave, Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	files := Files{
		CA:   write(t, dir, "ca.pem", ca.CertPEM(), 0o644),
		Cert: write(t, dir, "c.pem", is.CertPEM, 0o644),
		Key:  write(t, dir, "k.pem", is.KeyPEM, 0o600),
	}
	st, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	if st.Identity().String() != "spiffe://lab/slave/node-1" {
		t.Fatalf("identity %s", st.Identity())
	}

	t.Run("key readable by others", func(t *testing.T) {
		f := files
		f.Key = write(t, dir, "loose.pem", is.KeyPEM, 0o640)
		if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "must not be readable by group or others") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("certificate of another CA", func(t *testing.T) {
		other, _ := NewCA("lab", 0)
		f := files
		f.CA = write(t, dir, "other.pem", other.CertPEM(), 0o644)
		if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "is not signed by a CA") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		old, _ := ca.Issue(IssueRequest{Role: RoleSlave, Name: "old", NotBefore: time.Now().Add(-48 * time.Hour), Lifetime: time.Hour})
		f := files
		f.Cert = write(t, dir, "old.pem", old.CertPEM, 0o644)
		f.Key = write(t, dir, "old-key.pem", old.KeyPEM, 0o600)
		if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("revocation list", func(t *testing.T) {
		other, _ := ca.Issue(IssueRequest{Role: RoleSlave, Name: "node-2"})
		crl, _, err := ca.Revoke(nil, other.Cert)
		if err != nil {
			t.Fatal(err)
		}
		f := files
		f.CRL = write(t, dir, "crl.pem", crl, 0o644)
		st, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		m := st.cur.Load()
		if _, err := m.peerIdentity(other.Cert); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked peer: err = %v", err)
		}
		if _, err := m.peerIdentity(is.Cert); err != nil {
			t.Fatalf("unrevoked peer: %v", err)
		}
		// A list that revokes the node's own certificate is refused.
		self, _, _ := ca.Revoke(crl, is.Cert)
		f.CRL = write(t, dir, "self.pem", self, 0o644)
		if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "itself revoked") {
			t.Fatalf("err = %v", err)
		}
		// A list signed by another CA is refused.
		foreign, _ := NewCA("lab", 0)
		bad, _, _ := foreign.Revoke(nil)
		f.CRL = write(t, dir, "foreign.pem", bad, 0o644)
		if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "not signed by a CA of the bundle") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("peer of another cluster", func(t *testing.T) {
		other, _ := NewCA("prod", 0)
		is2, _ := other.Issue(IssueRequest{Role: RoleSlave, Name: "x"})
		if _, err := st.cur.Load().peerIdentity(is2.Cert); !errors.Is(err, ErrWrongCluster) {
			t.Fatalf("err = %v", err)
		}
	})
}

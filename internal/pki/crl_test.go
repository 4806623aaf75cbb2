package pki

import (
	"bytes"
	"strings"
	"testing"
)

func TestRevokeIdempotent(t *testing.T) {
	ca, err := NewCA("lab", 0)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) *Issued {
		is, err := ca.Issue(IssueRequest{Role: RoleSlave, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return is
	}
	a, b := issue("a"), issue("b")

	empty, done, err := ca.Revoke(nil)
	if err != nil || empty == nil || len(done) != 0 {
		t.Fatalf("empty list: %v, %d outcomes, err %v", empty != nil, len(done), err)
	}
	first, done, err := ca.Revoke(empty, a.Cert)
	if err != nil || first == nil || len(done) != 1 || done[0].Already {
		t.Fatalf("first revoke: list %v, outcomes %+v, err %v", first != nil, done, err)
	}
	revokedAt := done[0].At

	again, done, err := ca.Revoke(first, a.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if again != nil {
		t.Fatal("revoking an already revoked certificate made a new list")
	}
	// The list keeps times to the second.
	if len(done) != 1 || !done[0].Already || done[0].At.Unix() != revokedAt.Unix() {
		t.Fatalf("second revoke: %+v, want already revoked at %v", done, revokedAt)
	}

	// One new and one old: the list is rewritten, the old entry kept once.
	mixed, done, err := ca.Revoke(first, a.Cert, b.Cert)
	if err != nil || mixed == nil {
		t.Fatalf("mixed: list %v, err %v", mixed != nil, err)
	}
	if !done[0].Already || done[1].Already {
		t.Fatalf("mixed outcomes %+v, want a already and b new", done)
	}
	l, err := ca.ParseRevocationList(mixed)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(l.RevokedCertificateEntries); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
	if _, ok := RevokedAt(l, b.Cert.SerialNumber); !ok {
		t.Fatal("b is not in the list")
	}

	// A list of another CA, and a certificate of another CA, are refused.
	other, _ := NewCA("lab", 0)
	foreign, _, _ := other.Revoke(nil)
	if _, _, err := ca.Revoke(foreign, a.Cert); err == nil || !strings.Contains(err.Error(), "not this CA's") {
		t.Fatalf("foreign list: err = %v", err)
	}
	stranger, _ := other.Issue(IssueRequest{Role: RoleSlave, Name: "x"})
	if _, _, err := ca.Revoke(first, stranger.Cert); err == nil || !strings.Contains(err.Error(), "not issued by this CA") {
		t.Fatalf("foreign certificate: err = %v", err)
	}
	if _, _, err := ca.Revoke([]byte("junk"), a.Cert); err == nil || !strings.Contains(err.Error(), "no PEM X509 CRL") {
		t.Fatalf("junk list: err = %v", err)
	}
	if bytes.Equal(first, mixed) {
		t.Fatal("mixed list is the old one")
	}
}

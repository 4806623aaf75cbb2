package pki_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/muster-lab/muster/internal/pki"
)

// validName is the rule of pki.ValidName written out again, so that the
// fuzzer compares two independent spellings of it.
func validName(s string) bool {
	if len(s) < 1 || len(s) > pki.MaxNameLen {
		return false
	}
	for i, c := range []byte(s) {
		lowerOrDigit := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !lowerOrDigit && (i == 0 || c != '-' && c != '_' && c != '.') {
			return false
		}
	}
	return true
}

func FuzzValidName(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		err := pki.ValidName(s)
		if want := validName(s); (err == nil) != want {
			t.Fatalf("ValidName(%q) = %v; want accepted = %v", s, err, want)
		}
		if err != nil && err.Error() == "" {
			t.Fatalf("ValidName(%q) returned an empty error", s)
		}
	})
}

func FuzzParseIdentity(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		id, err := pki.ParseIdentity(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseIdentity(%q) returned an empty error", s)
			}
			if id != (pki.Identity{}) {
				t.Fatalf("ParseIdentity(%q) returned %#v with error %v", s, id, err)
			}
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseIdentity(%q) accepted %#v, which does not validate: %v", s, id, err)
		}
		again, err := pki.ParseIdentity(id.String())
		if err != nil {
			t.Fatalf("ParseIdentity(%q) = %#v, but its String() %q does not parse: %v", s, id, id.String(), err)
		}
		if again != id {
			t.Fatalf("ParseIdentity(%q) = %#v, but ParseIdentity(%q) = %#v", s, id, id.String(), again)
		}
	})
}

// FuzzValidHost checks that every host ValidHost accepts goes into a
// certificate that TLS clients then accept for that host, and that every
// refusal is ErrInvalid and names the host.
func FuzzValidHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "m1.lab", "Master.Example", "not a host!", "*.lab", "a..b", "1.2.3", "x:80", ""} {
		f.Add(s)
	}
	ca, err := pki.NewCA("lab", 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, h string) {
		err := pki.ValidHost(h)
		if err != nil {
			if !errors.Is(err, pki.ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprintf("%q", h)) && h != "" {
				t.Fatalf("ValidHost(%q) = %v: want ErrInvalid naming the host", h, err)
			}
			return
		}
		is, err := ca.Issue(pki.IssueRequest{Role: pki.RoleMaster, Name: "m1", Hosts: []string{h}})
		if err != nil {
			t.Fatalf("ValidHost(%q) accepted it, but Issue: %v", h, err)
		}
		if err := is.Cert.VerifyHostname(h); err != nil {
			t.Fatalf("ValidHost(%q) accepted it, but the certificate does not verify for it: %v", h, err)
		}
	})
}

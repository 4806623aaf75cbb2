package pki_test

import (
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

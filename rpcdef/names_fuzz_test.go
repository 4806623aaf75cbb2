package rpcdef_test

import (
	"testing"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// validServiceName is the rule of rpcdef.ValidServiceName written out
// again, so that the fuzzer compares two independent spellings of it.
func validServiceName(s string) bool {
	if len(s) < 1 || len(s) > 63 {
		return false
	}
	for i, c := range []byte(s) {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '-' || c == '_')) {
			return false
		}
	}
	return true
}

func FuzzValidServiceName(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		err := rpcdef.ValidServiceName(s)
		if want := validServiceName(s); (err == nil) != want {
			t.Fatalf("ValidServiceName(%q) = %v; want accepted = %v", s, err, want)
		}
		if err != nil && err.Error() == "" {
			t.Fatalf("ValidServiceName(%q) returned an empty error", s)
		}
	})
}

func FuzzParseServiceKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		k, err := rpcdef.ParseServiceKey(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseServiceKey(%q) returned an empty error", s)
			}
			if k != (rpcdef.ServiceKey{}) {
				t.Fatalf("ParseServiceKey(%q) returned %#v with error %v", s, k, err)
			}
			return
		}
		if err := rpcdef.ValidServiceName(k.Name); err != nil {
			t.Fatalf("ParseServiceKey(%q) accepted name %q: %v", s, k.Name, err)
		}
		if k.Instance != "" {
			if err := pki.ValidName(k.Instance); err != nil {
				t.Fatalf("ParseServiceKey(%q) accepted instance %q: %v", s, k.Instance, err)
			}
		}
		again, err := rpcdef.ParseServiceKey(k.String())
		if err != nil {
			t.Fatalf("ParseServiceKey(%q) = %#v, but its String() %q does not parse: %v", s, k, k.String(), err)
		}
		if again != k {
			t.Fatalf("ParseServiceKey(%q) = %#v, but ParseServiceKey(%q) = %#v", s, k, k.String(), again)
		}
	})
}

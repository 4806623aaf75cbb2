package pki

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestInspect(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("lab", 0)
	if err != nil {
		t.Fatal(err)
	}
	caFile := write(t, dir, "ca.pem", ca.CertPEM(), 0o644)
	crlFile := dir + "/crl.pem"
	node, err := ca.Issue(IssueRequest{Role: RoleMaster, Name: "m1", Hosts: []string{"m1.lab", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	nodeFile := write(t, dir, "master-m1.pem", node.CertPEM, 0o644)
	other, _ := NewCA("lab", 0)
	stranger, _ := other.Issue(IssueRequest{Role: RoleSlave, Name: "x"})
	strangerFile := write(t, dir, "stranger.pem", stranger.CertPEM, 0o644)
	now := time.Now()

	t.Run("node, no list", func(t *testing.T) {
		r, err := Inspect(nodeFile, caFile, crlFile, now)
		if err != nil {
			t.Fatal(err)
		}
		want := Report{
			File: nodeFile, Identity: "spiffe://lab/master/m1", Cluster: "lab", Role: "master", Name: "m1",
			Serial: node.Cert.SerialNumber.Text(16), Subject: "CN=master/m1,O=muster lab", Issuer: "CN=muster CA lab,O=muster",
			NotBefore: stamp(node.Cert.NotBefore), NotAfter: stamp(node.Cert.NotAfter),
			SecondsLeft: int64(node.Cert.NotAfter.Sub(now) / time.Second), Status: "valid",
			CAFile: caFile, SignedByCA: true, CRLFile: crlFile, Revocation: "no_list",
		}
		if strings.Join(r.Hosts, ",") != "m1.lab,127.0.0.1" {
			t.Fatalf("hosts %v", r.Hosts)
		}
		r.Hosts = nil
		if !reflect.DeepEqual(*r, want) {
			t.Fatalf("report\n%+v\nwant\n%+v", *r, want)
		}
	})

	crl, _, err := ca.Revoke(nil, node.Cert)
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "crl.pem", crl, 0o644)
	for _, tc := range []struct {
		name, file, ca string
		now            time.Time
		check          func(*Report) string
		text           string
	}{
		{"revoked", nodeFile, caFile, now, func(r *Report) string {
			if r.Revocation != "revoked" || r.RevokedAt == "" {
				return "not reported revoked"
			}
			return ""
		}, "revoked:     yes, on "},
		{"CA", caFile, caFile, now, func(r *Report) string {
			if !r.IsCA || r.Identity != "spiffe://lab" || r.Role != "" || r.Name != "" || !r.SignedByCA || r.Revocation != "not_revoked" || len(r.Hosts) != 0 || r.Hosts == nil {
				return "wrong CA report"
			}
			return ""
		}, "kind:        CA certificate"},
		{"other CA", strangerFile, caFile, now, func(r *Report) string {
			if r.SignedByCA || r.Revocation != "other_ca" {
				return "another CA's certificate reported as this CA's"
			}
			return ""
		}, "signed by:   not the CA of"},
		{"no CA", nodeFile, dir + "/none.pem", now, func(r *Report) string {
			if r.SignedByCA || r.Revocation != "no_ca" {
				return "reported without a CA"
			}
			return ""
		}, "unknown: no CA certificate"},
		{"expired", nodeFile, caFile, node.Cert.NotAfter.Add(time.Hour), func(r *Report) string {
			if r.Status != "expired" || r.SecondsLeft != -3600 {
				return "not expired"
			}
			return ""
		}, "time left:   none: expired 1h ago"},
		{"not yet valid", nodeFile, caFile, node.Cert.NotBefore.Add(-time.Hour), func(r *Report) string {
			if r.Status != "not_yet_valid" {
				return "valid too early"
			}
			return ""
		}, "but not valid until"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Inspect(tc.file, tc.ca, crlFile, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(r); msg != "" {
				t.Fatalf("%s: %+v", msg, *r)
			}
			var b bytes.Buffer
			if err := r.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + b.String())
			if !strings.Contains(b.String(), tc.text) {
				t.Fatalf("text lacks %q:\n%s", tc.text, b.String())
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		foreignCRL, _, _ := other.Revoke(nil)
		for _, tc := range []struct{ name, file, crl, want string }{
			{"missing", dir + "/nope.pem", crlFile, "no such file"},
			{"a key", write(t, dir, "key.pem", node.KeyPEM, 0o600), crlFile, "holds no PEM certificate"},
			{"another CA's list", nodeFile, write(t, dir, "foreign-crl.pem", foreignCRL, 0o644), "not this CA's"},
		} {
			if _, err := Inspect(tc.file, caFile, tc.crl, now); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
			}
		}
	})
}

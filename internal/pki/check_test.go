package pki

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		want string // "" for accepted, else a part of the error
	}{
		{"127.0.0.1", ""},
		{"192.0.2.10", ""},
		{"::1", ""},
		{"2001:db8::1", ""},
		{"localhost", ""},
		{"m1.lab", ""},
		{"node-1.lab", ""},
		{"Master.Example.COM", ""},
		{"1.example", ""},
		{"a." + strings.Repeat("b", 63), ""},
		{"", "host is empty"},
		{"not a host!", `character ' ' is not allowed`},
		{"under_score.lab", `character '_' is not allowed`},
		{"*.lab", "wildcard names are refused"},
		{"a.*.lab", `character '*' is not allowed`},
		{"https://m1.lab", "without a scheme"},
		{"127.0.0.1:7000", "without the port: 127.0.0.1"},
		{"m1.lab:7000", "without the port: m1.lab"},
		{"[::1]", "without brackets: ::1"},
		{"m1.lab.", "trailing dot"},
		{".lab", "empty label"},
		{"a..lab", "empty label"},
		{"-m1.lab", "starts or ends with '-'"},
		{"m1-.lab", "starts or ends with '-'"},
		{"127.0.0", "all digits"},
		{"999.1.1.1", "all digits"},
		{strings.Repeat("a", 64) + ".lab", "at most 63"},
		{strings.Repeat("abcdefgh.", 28) + "lab", "at most 253"},
		{"fe80::1%eth0", "not allowed"},
	} {
		t.Run(tc.host, func(t *testing.T) {
			err := ValidHost(tc.host)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ValidHost(%q) = %v, want accepted", tc.host, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ValidHost(%q) = %v, want an error with %q", tc.host, err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidHost(%q) = %v, not ErrInvalid", tc.host, err)
			}
			if tc.host != "" && !strings.Contains(err.Error(), tc.host) {
				t.Fatalf("ValidHost(%q) = %v: the error does not name the host", tc.host, err)
			}
		})
	}
}

func TestValidLifetime(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, ""},
		{time.Second, ""},
		{0, "lifetime 0s is not positive"},
		{-time.Hour, "lifetime -1h is not positive"},
		{-90 * time.Minute, "lifetime -1h30m is not positive"},
	} {
		t.Run(tc.d.String(), func(t *testing.T) {
			err := ValidLifetime(tc.d)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidLifetime(%v) = %v, want ErrInvalid with %q", tc.d, err, tc.want)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                 "0s",
		8760 * time.Hour:                  "8760h",
		90 * time.Minute:                  "1h30m",
		-time.Hour:                        "-1h",
		45 * time.Second:                  "45s",
		time.Hour + 1500*time.Millisecond: "1h1.5s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := time.ParseDuration(FormatDuration(d)); err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", FormatDuration(d), back, err, d)
		}
	}
}

func TestIssueChecks(t *testing.T) {
	ca, err := NewCA("lab", 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expiredCert := *ca.Cert
	expiredCert.NotAfter = time.Now().Add(-time.Hour)
	expired := &CA{Cluster: ca.Cluster, Cert: &expiredCert, Key: ca.Key}
	slave := func(mod func(*IssueRequest)) IssueRequest {
		r := IssueRequest{Role: RoleSlave, Name: "node-1"}
		mod(&r)
		return r
	}
	for _, tc := range []struct {
		name    string
		ca      *CA
		req     IssueRequest
		want    string // "" for issued
		invalid bool   // the error is ErrInvalid
	}{
		{"plain", ca, slave(func(*IssueRequest) {}), "", false},
		{"hosts", ca, slave(func(r *IssueRequest) { r.Hosts = []string{"127.0.0.1", "m1.lab"} }), "", false},
		{"lifetime within the CA", ca, slave(func(r *IssueRequest) { r.Lifetime = 24 * time.Hour }), "", false},
		{"bad host", ca, slave(func(r *IssueRequest) { r.Hosts = []string{"127.0.0.1", "not a host!"} }), `host "not a host!"`, true},
		{"too many hosts", ca, slave(func(r *IssueRequest) { r.Hosts = make([]string, MaxHosts+1) }), "at most 64 allowed", true},
		{"unknown role", ca, slave(func(r *IssueRequest) { r.Role = "king" }), `unknown role "king"`, true},
		{"bad name", ca, slave(func(r *IssueRequest) { r.Name = "Node 1" }), `name "Node 1"`, true},
		{"empty name", ca, slave(func(r *IssueRequest) { r.Name = "" }), "name is empty", true},
		{"negative lifetime", ca, slave(func(r *IssueRequest) { r.Lifetime = -time.Hour }), "lifetime -1h is negative", true},
		{"outlives the CA", ca, slave(func(r *IssueRequest) { r.Lifetime = 200000 * time.Hour }), "after its CA expires on " + stamp(ca.Cert.NotAfter) + ": the longest lifetime allowed is 720h", true},
		{"starts after the CA ends", ca, slave(func(r *IssueRequest) { r.NotBefore = ca.Cert.NotAfter.Add(time.Hour) }), "would start after its CA expires", true},
		{"expired CA", expired, slave(func(*IssueRequest) {}), "the CA expired on", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is, err := tc.ca.Issue(tc.req)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if is.Cert.NotAfter.After(ca.Cert.NotAfter) {
					t.Fatalf("certificate ends %v, after its CA (%v)", is.Cert.NotAfter, ca.Cert.NotAfter)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if errors.Is(err, ErrInvalid) != tc.invalid {
				t.Fatalf("err = %v: errors.Is(err, ErrInvalid) = %v, want %v", err, !tc.invalid, tc.invalid)
			}
		})
	}

	t.Run("default lifetime cut to the CA's", func(t *testing.T) {
		is, err := ca.Issue(IssueRequest{Role: RoleSlave, Name: "node-1"})
		if err != nil {
			t.Fatal(err)
		}
		if !is.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
			t.Fatalf("not after %v, want the CA's %v", is.Cert.NotAfter, ca.Cert.NotAfter)
		}
	})
	t.Run("the longest lifetime the error names is accepted", func(t *testing.T) {
		_, err := ca.Issue(IssueRequest{Role: RoleSlave, Name: "node-1", Lifetime: 10000 * time.Hour})
		if err == nil {
			t.Fatal("issued past the CA")
		}
		msg := err.Error()
		longest, perr := time.ParseDuration(msg[strings.LastIndex(msg, " ")+1:])
		if perr != nil {
			t.Fatalf("no duration at the end of %q: %v", msg, perr)
		}
		if _, err := ca.Issue(IssueRequest{Role: RoleSlave, Name: "node-1", Lifetime: longest}); err != nil {
			t.Fatalf("lifetime %v, which the error named: %v", longest, err)
		}
	})
	t.Run("a host given twice is named once", func(t *testing.T) {
		is, err := ca.Issue(IssueRequest{Role: RoleMaster, Name: "m1", Hosts: []string{"m1.lab", "127.0.0.1", "m1.lab", "127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(is.Cert.DNSNames) != 1 || len(is.Cert.IPAddresses) != 1 {
			t.Fatalf("DNS %v, IP %v", is.Cert.DNSNames, is.Cert.IPAddresses)
		}
	})
	t.Run("CA", func(t *testing.T) {
		for _, tc := range []struct {
			cluster  string
			lifetime time.Duration
			want     string
		}{
			{"Lab", 0, `name "Lab"`},
			{"", 0, "name is empty"},
			{"lab", -time.Hour, "CA lifetime -1h is negative"},
		} {
			_, err := NewCA(tc.cluster, tc.lifetime)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
				t.Errorf("NewCA(%q, %v) = %v, want ErrInvalid with %q", tc.cluster, tc.lifetime, err, tc.want)
			}
		}
	})
}

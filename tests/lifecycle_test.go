package tests

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
)

// servedCert dials addr and returns the certificate the server presents.
func servedCert(t *testing.T, st *pki.Store, addr string) *tls.ConnectionState {
	t.Helper()
	c, err := tls.Dial("tcp", addr, st.ClientConfig(nil))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	cs := c.ConnectionState()
	return &cs
}

// hangup sends SIGHUP and waits for the daemon to say it reloaded.
func hangup(t *testing.T, p *proc) {
	t.Helper()
	before := p.count("SIGHUP: certificates reloaded")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 5*time.Second, "the reload", func() (bool, string) {
		return p.count("SIGHUP: certificates reloaded") > before, p.log.String()
	})
}

func TestCertificateLifecycle(t *testing.T) {
	l := newLab(t)
	// A revocation list to start with, revoking a certificate nobody uses.
	spare := l.issue(pki.RoleAdmin, "spare")
	l.certgen("revoke", "--dir", l.certs, spare.Cert)
	crl := filepath.Join(l.certs, "crl.pem")
	r := startRegistry(t, l, map[string]string{"crl": fmt.Sprintf("%q", crl)})

	ops := l.store(l.issue(pki.RoleAdmin, "ops"))
	if err := tlsRegistry(t, ops, r.addr).Null(ctx(t)); err != nil {
		t.Fatalf("ops before revocation: %v", err)
	}

	t.Run("revoked certificate refused after SIGHUP", func(t *testing.T) {
		open := tlsRegistry(t, ops, r.addr) // a connection made before the revocation
		if err := open.Null(ctx(t)); err != nil {
			t.Fatal(err)
		}
		l.certgen("revoke", "--dir", l.certs, l.files(pki.RoleAdmin, "ops").Cert)
		hangup(t, r.proc)
		r.waitLine(`closed [1-9][0-9]* connections whose certificate is now revoked`, 5*time.Second)
		if err := open.Null(ctx(t)); err == nil {
			t.Fatal("the revoked certificate's open connection still serves")
		}
		err := tlsRegistry(t, ops, r.addr).Null(ctx(t))
		if err == nil {
			t.Fatal("a revoked certificate was served")
		}
		r.waitLine(`refused connection: .*certificate is revoked`, 5*time.Second)
		other := l.store(l.issue(pki.RoleAdmin, "ops2"))
		if err := tlsRegistry(t, other, r.addr).Null(ctx(t)); err != nil {
			t.Fatalf("a good client after the revocation: %v", err)
		}
	})

	t.Run("reissued certificate served without a restart", func(t *testing.T) {
		probe := l.store(l.issue(pki.RoleAdmin, "probe"))
		before := servedCert(t, probe, r.addr).PeerCertificates[0]
		l.issue(pki.RoleRegistry, "reg1", "--host", "127.0.0.1", "--force")
		hangup(t, r.proc)
		after := servedCert(t, probe, r.addr).PeerCertificates[0]
		if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
			t.Fatal("the registry still serves its old certificate after SIGHUP")
		}
	})

	t.Run("CA bundle gains a new CA during rotation", func(t *testing.T) {
		next := t.TempDir()
		l.certgen("ca", "--dir", next, "--cluster", "lab")
		l.certgen("issue", "--dir", next, "--role", "admin", "--name", "new")
		newAdmin := pki.Files{CA: filepath.Join(next, "ca.pem"), Cert: filepath.Join(next, "admin-new.pem"), Key: filepath.Join(next, "admin-new-key.pem")}
		// The new admin trusts both CAs; the registry only the old one, so far.
		bundle := filepath.Join(next, "bundle.pem")
		old, _ := os.ReadFile(filepath.Join(l.certs, "ca.pem"))
		fresh, _ := os.ReadFile(newAdmin.CA)
		os.WriteFile(bundle, append(append([]byte{}, old...), fresh...), 0o644)
		newAdmin.CA = bundle
		st := l.store(newAdmin)
		if err := tlsRegistry(t, st, r.addr).Null(ctx(t)); err == nil {
			t.Fatal("a certificate of a CA the registry does not trust yet was served")
		}
		os.WriteFile(filepath.Join(l.certs, "ca.pem"), append(append([]byte{}, old...), fresh...), 0o644)
		hangup(t, r.proc)
		if err := tlsRegistry(t, st, r.addr).Null(ctx(t)); err != nil {
			t.Fatalf("after the bundle gained the new CA: %v", err)
		}
		if err := tlsRegistry(t, l.store(l.files(pki.RoleAdmin, "ops2")), r.addr).Null(ctx(t)); err != nil {
			t.Fatalf("the old CA's certificates after the rotation: %v", err)
		}
	})
	r.stop()
}

func TestCertificateNearExpiryWarned(t *testing.T) {
	l := newLab(t)
	l.issue(pki.RoleRegistry, "reg1", "--host", "127.0.0.1", "--lifetime", "48h")
	r := startRegistry(t, l, nil)
	r.waitLine(`certificate .*registry-reg1.pem expires in 47h`, 5*time.Second)
	r.stop()
}

func TestKeyReadableByOthersRefused(t *testing.T) {
	l := newLab(t)
	f := l.issue(pki.RoleRegistry, "reg1", "--host", "127.0.0.1")
	os.Chmod(f.Key, 0o644)
	cfg := l.config("registry.toml", l.dir, map[string]string{"listen": `"127.0.0.1:0"`, "socket": `""`,
		"state_dir": fmt.Sprintf("%q", filepath.Join(l.dir, "state"))})
	out, code := run(t, nil, "registryd", "--config", cfg)
	if code != 1 || !strings.Contains(out, "has mode 0644: it must not be readable by group or others; run chmod 600") {
		t.Fatalf("registryd with a 0644 key: exit %d\n%s", code, out)
	}
}

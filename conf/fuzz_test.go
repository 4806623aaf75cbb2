package conf_test

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/pki"
)

// The config targets write the fuzzed bytes as a config file and load it.
// Seeds name certificates as $CERTS/NAME.pem; the target points $CERTS at a
// directory of real ones, so that inputs reach the TLS checks:
//
//	ca.pem                                   CA of cluster lab
//	registry-reg1.pem, registry-reg1-key.pem registry reg1 of lab
//	master-m1.pem, master-m1-key.pem         master m1 of lab
//	slave-node-1.pem, slave-node-1-key.pem   slave node-1 of lab
//	other-ca.pem                             CA of cluster other
//	registry-other.pem, -key.pem             registry reg1 of other
//	slave-other.pem, -key.pem                slave node-1 of other
//	loose-key.pem                            registry reg1's key, mode 0644

// fuzzCerts writes the test certificates (see certs) to a fresh directory
// and returns it.
func fuzzCerts(f *testing.F) string {
	dir := f.TempDir()
	conf.WriteTestCerts(f, dir)
	return filepath.Join(dir, "certs")
}

// fuzzLoad is the body of the three targets: load must never panic, and
// must either succeed with a configuration that passes ok, or fail with
// errors that each name the file.
func fuzzLoad[C any](f *testing.F, load func(string) (*C, error), ok func(*testing.T, *C)) {
	certs := []byte(fuzzCerts(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "muster.toml")
		if err := os.WriteFile(path, bytes.ReplaceAll(data, []byte("$CERTS"), certs), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := load(path)
		if err != nil {
			if c != nil {
				t.Errorf("load returned a config with the error %v", err)
			}
			checkErr(t, path, err)
			return
		}
		if c == nil {
			t.Fatal("load returned neither a config nor an error")
		}
		ok(t, c)
	})
}

// checkErr checks that err is a *conf.Error about path, or several joined.
func checkErr(t *testing.T, path string, err error) {
	t.Helper()
	if msg := err.Error(); !strings.HasPrefix(msg, path+": ") {
		t.Fatalf("error does not start with the file's path %s: %q", path, msg)
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
		if len(errs) == 0 {
			t.Fatalf("error %q joins no errors", err)
		}
	}
	for _, e := range errs {
		var ce *conf.Error
		if !errors.As(e, &ce) {
			t.Fatalf("error %q (%T) is not a *conf.Error", e, e)
		}
		if ce.File != path || ce.Msg == "" || !strings.HasPrefix(e.Error(), path+": ") {
			t.Fatalf("error %#v: want File %s, a message, and the text to start with the file's path", ce, path)
		}
	}
}

// checkStore checks the loaded certificate: the daemon's role, the
// configured cluster, and files named by absolute paths.
func checkStore(t *testing.T, tls conf.TLS, st *pki.Store, role pki.Role, cluster string) pki.Identity {
	t.Helper()
	if err := pki.ValidName(cluster); err != nil {
		t.Fatalf("accepted cluster %q: %v", cluster, err)
	}
	for _, p := range []string{tls.CA, tls.Cert, tls.Key} {
		if !filepath.IsAbs(p) {
			t.Errorf("TLS path %q is not absolute after loading", p)
		}
	}
	if st == nil {
		t.Fatal("loaded without certificates")
	}
	id := st.Identity()
	if id.Role != role || id.Cluster != cluster {
		t.Fatalf("a %s with cluster = %q loaded certificate %s", role, cluster, id)
	}
	return id
}

func FuzzLoadRegistry(f *testing.F) {
	fuzzLoad(f, conf.LoadRegistry, func(t *testing.T, c *conf.Registry) {
		checkStore(t, c.TLS, c.Store, pki.RoleRegistry, c.Cluster)
		for i, r := range c.Allow {
			if _, err := pki.ParseRole(r.Role); err != nil || len(r.Services) == 0 {
				t.Errorf("loaded allow[%d] = %+v", i, r)
			}
		}
		if err := c.Validate("again.toml"); err != nil {
			t.Errorf("a loaded config does not validate again: %v", err)
		}
	})
}

func FuzzLoadMaster(f *testing.F) {
	fuzzLoad(f, conf.LoadMaster, func(t *testing.T, c *conf.Master) {
		checkStore(t, c.TLS, c.Store, pki.RoleMaster, c.Cluster)
		if err := c.Validate("again.toml"); err != nil {
			t.Errorf("a loaded config does not validate again: %v", err)
		}
		d := c.Detector
		if math.IsNaN(d.SuspectPhi) || math.IsNaN(d.DeadPhi) {
			t.Fatalf("Master.Validate accepts detector.suspect_phi = %g, dead_phi = %g: "+
				"its check (SuspectPhi <= 0 || DeadPhi <= SuspectPhi) is false for NaN, and masterd.New refuses the config later, naming no file or key",
				d.SuspectPhi, d.DeadPhi)
		}
		if !(d.SuspectPhi > 0 && d.DeadPhi > d.SuspectPhi) {
			t.Errorf("loaded suspect_phi = %g, dead_phi = %g", d.SuspectPhi, d.DeadPhi)
		}
	})
}

func FuzzLoadSlave(f *testing.F) {
	fuzzLoad(f, conf.LoadSlave, func(t *testing.T, c *conf.Slave) {
		id := checkStore(t, c.TLS, c.Store, pki.RoleSlave, c.Cluster)
		if c.Node != id.Name {
			t.Errorf("loaded node = %q with the certificate of %s", c.Node, id)
		}
		if err := c.Validate("again.toml"); err != nil {
			t.Errorf("a loaded config does not validate again: %v", err)
		}
	})
}

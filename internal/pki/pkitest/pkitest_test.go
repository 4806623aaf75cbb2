package pkitest

import (
	"os"
	"testing"

	"github.com/muster-lab/muster/internal/pki"
)

func TestWriteNodeLoads(t *testing.T) {
	ca := New(t, "lab")
	dir := t.TempDir()
	files := ca.WriteNode(dir, pki.RoleMaster, "m1")
	st, err := pki.Load(files)
	if err != nil {
		t.Fatalf("load what WriteNode wrote: %v", err)
	}
	if want := (pki.Identity{Cluster: "lab", Role: pki.RoleMaster, Name: "m1"}); st.Identity() != want {
		t.Errorf("identity %v, want %v", st.Identity(), want)
	}
	fi, err := os.Stat(files.Key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestNodeServesLocalhost(t *testing.T) {
	ca := New(t, "lab")
	is := ca.Node(pki.RoleRegistry, "reg1")
	if err := is.Cert.VerifyHostname(Localhost); err != nil {
		t.Error(err)
	}
	if got := ca.NodeStore(pki.RoleSlave, "node-1").Identity().Name; got != "node-1" {
		t.Errorf("store of node-1 names %q", got)
	}
}

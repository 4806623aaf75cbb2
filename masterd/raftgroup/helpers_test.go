package raftgroup

import (
	"encoding/json"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/pki/pkitest"
)

// testLog is a logger writing to t.Log until the test ends (raft's
// goroutines may log a last line after it has).
func testLog(t *testing.T, name string) logrus.FieldLogger {
	t.Helper()
	return logtest.New(t).WithField("node", name)
}

// newCA is a test CA of cluster.
func newCA(t *testing.T, cluster string) *pki.CA {
	t.Helper()
	return pkitest.New(t, cluster).CA
}

// node is the certificate material of one test node.
type node struct {
	issuedBy *pki.CA
	issued   *pki.Issued
	files    pki.Files
	store    *pki.Store
}

// newNode issues a certificate of ca for role/name and loads a store that
// trusts the CAs of bundle (ca itself if none given), with an empty
// revocation list of ca.
func newNode(t *testing.T, ca *pki.CA, role pki.Role, name string, bundle ...*pki.CA) *node {
	t.Helper()
	is, err := ca.Issue(pki.IssueRequest{Role: role, Name: name, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle) == 0 {
		bundle = []*pki.CA{ca}
	}
	var caPEM []byte
	for _, c := range bundle {
		caPEM = append(caPEM, c.CertPEM()...)
	}
	crl, _, err := ca.Revoke(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := pki.Files{
		CA:   pkitest.WriteFile(t, dir, "ca.pem", caPEM, 0o644),
		Cert: pkitest.WriteFile(t, dir, "cert.pem", is.CertPEM, 0o644),
		Key:  pkitest.WriteFile(t, dir, "key.pem", is.KeyPEM, 0o600),
		CRL:  pkitest.WriteFile(t, dir, "crl.pem", crl, 0o644),
	}
	st, err := pki.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	return &node{issuedBy: ca, issued: is, files: files, store: st}
}

// logFSM is a replicated list of strings. A command "fail" is refused with
// an error, as an FSM refuses what it cannot apply.
type logFSM struct {
	mu       sync.Mutex
	entries  []string
	restored int // Restore calls
}

var errFail = errors.New("fsm refuses the command")

func (f *logFSM) Apply(l *raft.Log) any {
	if string(l.Data) == "fail" {
		return errFail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, string(l.Data))
	return len(f.entries)
}

func (f *logFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return logSnapshot(slices.Clone(f.entries)), nil
}

func (f *logFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var e []string
	if err := json.NewDecoder(rc).Decode(&e); err != nil {
		return err
	}
	f.mu.Lock()
	f.entries = e
	f.restored++
	f.mu.Unlock()
	return nil
}

func (f *logFSM) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

type logSnapshot []string

func (s logSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (logSnapshot) Release() {}

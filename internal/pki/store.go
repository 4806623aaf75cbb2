package pki

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Files names the PEM files a node loads: the CA bundle it trusts, and its
// own certificate and key.
type Files struct {
	CA   string
	Cert string
	Key  string
	// CRL, if set, is a PEM revocation list signed by a CA of the bundle
	// (certgen revoke makes it). Peers whose certificate it lists are refused.
	CRL string
}

// Store holds a node's certificate, key and trusted CAs. Reload swaps in
// fresh copies from disk; connections made afterwards use them.
type Store struct {
	files Files
	cur   atomic.Pointer[material]
}

type material struct {
	cert    tls.Certificate
	id      Identity
	pool    *x509.CertPool
	cas     []*x509.Certificate
	revoked map[string]bool // serial numbers, in hex
}

// Load reads and checks a node's files.
func Load(files Files) (*Store, error) {
	s := &Store{files: files}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// FromPEM builds a store from PEM held in memory (the load generator makes
// thousands of certificates and writes none of them). Reload keeps it as is.
func FromPEM(caPEM, certPEM, keyPEM []byte) (*Store, error) {
	m, err := parseMaterial(caPEM, certPEM, keyPEM, Files{CA: "CA", Cert: "certificate", Key: "key"})
	if err != nil {
		return nil, err
	}
	s := &Store{}
	s.cur.Store(m)
	return s, nil
}

// Reload reads the files again. On error the old material stays in use.
func (s *Store) Reload() error {
	if s.files == (Files{}) {
		return nil
	}
	if err := checkKeyMode(s.files.Key); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("read CA bundle: %w", err)
	}
	certPEM, err := os.ReadFile(s.files.Cert)
	if err != nil {
		return fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(s.files.Key)
	if err != nil {
		return fmt.Errorf("read key: %w", err)
	}
	m, err := parseMaterial(caPEM, certPEM, keyPEM, s.files)
	if err != nil {
		return err
	}
	if s.files.CRL != "" {
		crlPEM, err := os.ReadFile(s.files.CRL)
		if err != nil {
			return fmt.Errorf("read revocation list: %w", err)
		}
		if m.revoked, err = parseCRL(crlPEM, m.cas, s.files.CRL); err != nil {
			return err
		}
		if m.revoked[m.cert.Leaf.SerialNumber.Text(16)] {
			return fmt.Errorf("certificate %s is itself revoked by %s", s.files.Cert, s.files.CRL)
		}
	}
	s.cur.Store(m)
	return nil
}

// parseCRL checks a revocation list's signature against the CAs and returns
// the serial numbers it revokes.
func parseCRL(data []byte, cas []*x509.Certificate, file string) (map[string]bool, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "X509 CRL" {
		return nil, fmt.Errorf("revocation list %s holds no PEM X509 CRL", file)
	}
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("revocation list %s: %w", file, err)
	}
	signed := false
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			signed = true
			break
		}
	}
	if !signed {
		return nil, fmt.Errorf("revocation list %s is not signed by a CA of the bundle", file)
	}
	revoked := make(map[string]bool, len(crl.RevokedCertificateEntries))
	for _, e := range crl.RevokedCertificateEntries {
		revoked[e.SerialNumber.Text(16)] = true
	}
	return revoked, nil
}

// checkKeyMode refuses a private key that group or others may read, as ssh does.
func checkKeyMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("key %s has mode %04o: it must not be readable by group or others; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	return nil
}

func parseMaterial(caPEM, certPEM, keyPEM []byte, files Files) (*material, error) {
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	for rest := caPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle %s: %w", files.CA, err)
		}
		pool.AddCert(c)
		cas = append(cas, c)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", files.CA)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", files.Cert, files.Key, err)
	}
	leaf := cert.Leaf
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", files.Cert, err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("certificate %s is not signed by a CA in %s: %w", files.Cert, files.CA, err)
	}
	return &material{cert: cert, id: id, pool: pool, cas: cas}, nil
}

// Revoked says whether the revocation list names a certificate serial
// number (as hex, as Peer carries it).
func (s *Store) Revoked(serial string) bool { return s.cur.Load().revoked[serial] }

// Identity is who this node's certificate says it is.
func (s *Store) Identity() Identity { return s.cur.Load().id }

// NotAfter is when this node's certificate expires.
func (s *Store) NotAfter() time.Time { return s.cur.Load().cert.Leaf.NotAfter }

// Files are the paths this store loads.
func (s *Store) Files() Files { return s.files }

// ErrWrongCluster is returned for a peer whose certificate names another cluster.
var ErrWrongCluster = errors.New("peer certificate is for another cluster")

// verifyPeer checks a peer's chain against the current CA pool and returns
// its identity. It is the single check both sides of every connection make.
func (s *Store) verifyPeer(certs []*x509.Certificate, usage x509.ExtKeyUsage) (Identity, error) {
	if len(certs) == 0 {
		return Identity{}, errors.New("peer sent no certificate")
	}
	m := s.cur.Load()
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: m.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return Identity{}, fmt.Errorf("verify peer certificate: %w", err)
	}
	return m.peerIdentity(certs[0])
}

// ErrRevoked is returned for a peer whose certificate the revocation list names.
var ErrRevoked = errors.New("certificate is revoked")

// peerIdentity reads a verified peer certificate's identity and checks that
// it belongs to this node's cluster and is not revoked.
func (m *material) peerIdentity(c *x509.Certificate) (Identity, error) {
	if m.revoked[c.SerialNumber.Text(16)] {
		return Identity{}, fmt.Errorf("%w: serial %s", ErrRevoked, c.SerialNumber.Text(16))
	}
	id, err := IdentityFromCert(c)
	if err != nil {
		return Identity{}, err
	}
	if id.Cluster != m.id.Cluster {
		return Identity{}, fmt.Errorf("%w: %s, this node is in cluster %q", ErrWrongCluster, id, m.id.Cluster)
	}
	return id, nil
}

// PeerIdentity reads the identity of the other end of a finished handshake.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("peer sent no certificate")
	}
	return IdentityFromCert(cs.PeerCertificates[0])
}

// ServerConfig is the TLS configuration of a server: TLS 1.3 only, and every
// client must present a certificate from a trusted CA with a muster identity
// of this cluster. The certificate and CAs are read from the store at every
// handshake, so a Reload takes effect without a restart.
func (s *Store) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{m.cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    m.pool,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if cs.DidResume {
						// The ticket may predate a Reload: check the chain again.
						_, err := s.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
						return err
					}
					_, err := m.peerIdentity(cs.PeerCertificates[0])
					return err
				},
			}, nil
		},
	}
}

// ClientConfig is the TLS configuration of a client. The server's chain is
// checked against the current CA pool, and accept (if not nil) decides
// whether the server's identity is the one the client meant to reach: a
// slave refuses a ClusterService that is not served by a master certificate.
func (s *Store) ClientConfig(accept func(Identity) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &s.cur.Load().cert, nil
		},
		// Hostnames are not how muster names nodes: the URI SAN is checked in
		// VerifyConnection instead, against the current pool.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := s.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if accept != nil {
				return accept(id)
			}
			return nil
		},
	}
}

// ExpectRole is an accept function for ClientConfig that wants a peer of the given role.
func ExpectRole(r Role) func(Identity) error {
	return func(id Identity) error {
		if id.Role != r {
			return fmt.Errorf("server is %s, want a %s certificate", id, r)
		}
		return nil
	}
}

func readCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return x509.ParseCertificate(b.Bytes)
}

func readKeyFile(path string) (*ecdsa.PrivateKey, error) {
	if err := checkKeyMode(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s holds no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s is not an ECDSA key", path)
	}
	return ek, nil
}

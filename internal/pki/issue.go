package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"time"
)

// Default lifetimes: a CA outlives the certificates it issues.
const (
	DefaultCALifetime   = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime = 365 * 24 * time.Hour
)

// backdate lets a certificate be used at once by a host whose clock is a little behind.
const backdate = 5 * time.Minute

// CA signs node certificates for one cluster.
type CA struct {
	Cluster string
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
}

// NewCA makes a self-signed ECDSA P-256 CA for the cluster, valid for
// lifetime (zero: DefaultCALifetime).
func NewCA(cluster string, lifetime time.Duration) (*CA, error) {
	if err := ValidName(cluster); err != nil {
		return nil, invalidf("cluster: %v", err)
	}
	if lifetime < 0 {
		return nil, invalidf("CA lifetime %s is negative: give a positive duration, or none for the default", FormatDuration(lifetime))
	}
	if lifetime == 0 {
		lifetime = DefaultCALifetime
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "muster CA " + cluster, Organization: []string{"muster"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: cluster}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cluster: cluster, Cert: cert, Key: key}, nil
}

// LoadCA reads a CA's certificate and key from PEM files.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := readCertFile(certFile)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s is not the key of %s", keyFile, certFile)
	}
	ca := &CA{Cert: cert, Key: key}
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			ca.Cluster = u.Host
		}
	}
	if ca.Cluster == "" {
		return nil, fmt.Errorf("%s names no cluster (no spiffe://<cluster> URI SAN); was it made by certgen ca?", certFile)
	}
	return ca, nil
}

// IssueRequest describes a certificate to issue.
type IssueRequest struct {
	Role  Role
	Name  string
	Hosts []string // DNS names or IP addresses the holder serves on; see ValidHost
	// Lifetime zero asks for DefaultCertLifetime, cut short to end when the
	// CA does; a lifetime that outlives the CA is refused.
	Lifetime time.Duration
	// NotBefore defaults to a few minutes ago; tests set it to make
	// not-yet-valid and expired certificates.
	NotBefore time.Time
}

// Issued is a certificate and its key, parsed and as PEM.
type Issued struct {
	Identity Identity
	Cert     *x509.Certificate
	Key      *ecdsa.PrivateKey
	CertPEM  []byte
	KeyPEM   []byte
}

// Issue signs a new certificate with a fresh key. Every certificate may act
// as both TLS client and server: which it does is decided by its role.
// A request that does not validate, or would outlive the CA, is refused with
// an error that errors.Is reports as ErrInvalid.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	id := Identity{Cluster: ca.Cluster, Role: req.Role, Name: req.Name}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-backdate)
	}
	notAfter, err := ca.validity(notBefore, req.Lifetime)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: string(req.Role) + "/" + req.Name, Organization: []string{"muster " + ca.Cluster}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
	}
	for _, h := range req.Hosts { // a host given twice is named once
		if ip := net.ParseIP(h); ip == nil {
			if !slices.Contains(tmpl.DNSNames, h) {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		} else if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{Identity: id, Cert: cert, Key: key, CertPEM: encodeCert(cert), KeyPEM: keyPEM}, nil
}

// CertPEM is the CA certificate as PEM.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert) }

// KeyPEM is the CA key as PEM.
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.Key) }

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// ReadCertFile reads one PEM certificate.
func ReadCertFile(path string) (*x509.Certificate, error) { return readCertFile(path) }

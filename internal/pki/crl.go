package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// CRLLifetime is how long a revocation list made by Revoke is valid.
const CRLLifetime = 10 * 365 * 24 * time.Hour

// Revocation is what Revoke did with one certificate.
type Revocation struct {
	Cert *x509.Certificate
	// At is when the certificate was revoked: now, or when the list first
	// named it.
	At time.Time
	// Already says the list named it before this call.
	Already bool
}

// Revoke adds certificates to the CA's revocation list prev (PEM; nil for
// none yet) and returns the new list, signed, with what it did with each
// certificate. A certificate the list already names keeps its entry and date.
// If every certificate given is already listed, the list is nil: prev stands
// as it is and need not be written again. Given no certificates, Revoke signs
// prev's entries again (or makes an empty list).
func (ca *CA) Revoke(prev []byte, certs ...*x509.Certificate) ([]byte, []Revocation, error) {
	tmpl := &x509.RevocationList{Number: big.NewInt(1)}
	if len(prev) > 0 {
		old, err := ca.ParseRevocationList(prev)
		if err != nil {
			return nil, nil, err
		}
		tmpl.RevokedCertificateEntries = old.RevokedCertificateEntries
		tmpl.Number = new(big.Int).Add(old.Number, big.NewInt(1))
	}
	now := time.Now()
	var done []Revocation
	added := 0
	for _, c := range certs {
		if err := c.CheckSignatureFrom(ca.Cert); err != nil {
			return nil, nil, fmt.Errorf("certificate serial %s was not issued by this CA: revoke it with the CA that issued it", c.SerialNumber.Text(16))
		}
		if at, ok := revokedAt(tmpl.RevokedCertificateEntries, c.SerialNumber); ok {
			done = append(done, Revocation{Cert: c, At: at, Already: true})
			continue
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now})
		done = append(done, Revocation{Cert: c, At: now})
		added++
	}
	if len(certs) > 0 && added == 0 && len(prev) > 0 {
		return nil, done, nil
	}
	tmpl.ThisUpdate = now.Add(-backdate)
	tmpl.NextUpdate = now.Add(CRLLifetime)
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign revocation list: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), done, nil
}

// ParseRevocationList reads a PEM revocation list and checks that this CA
// signed it.
func (ca *CA) ParseRevocationList(data []byte) (*x509.RevocationList, error) {
	return parseRevocationList(data, ca.Cert)
}

func parseRevocationList(data []byte, ca *x509.Certificate) (*x509.RevocationList, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "X509 CRL" {
		return nil, fmt.Errorf("the revocation list holds no PEM X509 CRL")
	}
	l, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse the revocation list: %w", err)
	}
	if err := l.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("the revocation list is not this CA's: %w", err)
	}
	return l, nil
}

// RevokedAt says whether the list names the serial number, and since when.
func RevokedAt(l *x509.RevocationList, serial *big.Int) (time.Time, bool) {
	return revokedAt(l.RevokedCertificateEntries, serial)
}

func revokedAt(entries []x509.RevocationListEntry, serial *big.Int) (time.Time, bool) {
	for _, e := range entries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return e.RevocationTime, true
		}
	}
	return time.Time{}, false
}

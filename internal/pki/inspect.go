package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"strings"
	"time"
)

// Report is what certgen inspect says of a certificate. Its JSON form is
// the schema of certgen inspect --json (docs/OPERATIONS.md): every field is
// always present; times are RFC 3339 in UTC; the serial is a string.
type Report struct {
	File string `json:"file"`
	// IsCA is true for a CA certificate; Role and Name are then empty and
	// Identity is spiffe://CLUSTER.
	IsCA     bool   `json:"is_ca"`
	Identity string `json:"identity"`
	Cluster  string `json:"cluster"`
	Role     string `json:"role"`
	Name     string `json:"name"`
	// Serial is hex, as certgen revoke and the daemons' logs write it.
	Serial    string `json:"serial"`
	Subject   string `json:"subject"`
	Issuer    string `json:"issuer"`
	NotBefore string `json:"not_before"`
	NotAfter  string `json:"not_after"`
	// SecondsLeft is the time until NotAfter; negative once it has passed.
	SecondsLeft int64 `json:"seconds_left"`
	// Status is "valid", "expired" or "not_yet_valid".
	Status string `json:"status"`
	// Hosts are the DNS names, then the IP addresses; empty, never null, when none.
	Hosts []string `json:"hosts"`
	// CAFile is the CA the certificate was checked against; SignedByCA says
	// whether that CA signed it (for a CA certificate: whether it is that CA).
	CAFile     string `json:"ca_file"`
	SignedByCA bool   `json:"signed_by_ca"`
	CRLFile    string `json:"crl_file"`
	// Revocation is "revoked" or "not_revoked" when CRLFile was read;
	// "no_list" when there is none, "no_ca" when there is no CAFile, and
	// "other_ca" when CAFile did not sign the certificate, so its list says
	// nothing of it.
	Revocation string `json:"revocation"`
	// RevokedAt is when the list revoked it; empty unless revoked.
	RevokedAt string `json:"revoked_at"`
}

// The values of Report.Status and Report.Revocation.
const (
	statusValid       = "valid"
	statusExpired     = "expired"
	statusNotYetValid = "not_yet_valid"

	revRevoked    = "revoked"
	revNotRevoked = "not_revoked"
	revNoList     = "no_list"
	revNoCA       = "no_ca"
	revOtherCA    = "other_ca"
)

// Inspect describes the certificate in certFile as of now, checked against
// the CA certificate caFile and its revocation list crlFile. Either of those
// may be missing (the report says so); one that is there but unreadable, or
// a list the CA did not sign, is an error.
func Inspect(certFile, caFile, crlFile string, now time.Time) (*Report, error) {
	c, err := readCertFile(certFile)
	if err != nil {
		return nil, err
	}
	r := &Report{
		File:        certFile,
		IsCA:        c.IsCA,
		Serial:      c.SerialNumber.Text(16),
		Subject:     c.Subject.String(),
		Issuer:      c.Issuer.String(),
		NotBefore:   stamp(c.NotBefore),
		NotAfter:    stamp(c.NotAfter),
		SecondsLeft: int64(c.NotAfter.Sub(now) / time.Second),
		Hosts:       append([]string{}, c.DNSNames...),
		CAFile:      caFile,
		CRLFile:     crlFile,
	}
	for _, ip := range c.IPAddresses {
		r.Hosts = append(r.Hosts, ip.String())
	}
	switch {
	case now.Before(c.NotBefore):
		r.Status = statusNotYetValid
	case now.After(c.NotAfter):
		r.Status = statusExpired
	default:
		r.Status = statusValid
	}
	if c.IsCA {
		for _, u := range c.URIs {
			if u.Scheme == "spiffe" && u.Path == "" {
				r.Cluster, r.Identity = u.Host, u.String()
			}
		}
		if r.Cluster == "" {
			return nil, fmt.Errorf("%s is a CA certificate that names no cluster (no spiffe://CLUSTER URI SAN): was it made by certgen ca?", certFile)
		}
	} else {
		id, err := IdentityFromCert(c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: was it made by certgen issue?", certFile, err)
		}
		r.Identity, r.Cluster, r.Role, r.Name = id.String(), id.Cluster, string(id.Role), id.Name
	}
	if err := r.checkRevocation(c); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Report) checkRevocation(c *x509.Certificate) error {
	ca, err := readCertFile(r.CAFile)
	if errors.Is(err, iofs.ErrNotExist) {
		r.Revocation = revNoCA
		return nil
	}
	if err != nil {
		return err
	}
	if r.SignedByCA = c.CheckSignatureFrom(ca) == nil; !r.SignedByCA {
		r.Revocation = revOtherCA
		return nil
	}
	data, err := os.ReadFile(r.CRLFile)
	if errors.Is(err, iofs.ErrNotExist) {
		r.Revocation = revNoList
		return nil
	}
	if err != nil {
		return fmt.Errorf("read revocation list: %w", err)
	}
	l, err := parseRevocationList(data, ca)
	if err != nil {
		return fmt.Errorf("%s: %w", r.CRLFile, err)
	}
	r.Revocation = revNotRevoked
	if at, ok := RevokedAt(l, c.SerialNumber); ok {
		r.Revocation, r.RevokedAt = revRevoked, stamp(at)
	}
	return nil
}

// WriteText writes the report as aligned "field: value" lines.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	line := func(k, format string, args ...any) {
		fmt.Fprintf(&b, "%-12s %s\n", k+":", fmt.Sprintf(format, args...))
	}
	line("file", "%s", r.File)
	if r.IsCA {
		line("kind", "CA certificate")
	} else {
		line("kind", "node certificate")
	}
	line("identity", "%s", r.Identity)
	if !r.IsCA {
		line("role", "%s", r.Role)
		line("name", "%s", r.Name)
	}
	line("cluster", "%s", r.Cluster)
	line("serial", "%s", r.Serial)
	line("subject", "%s", r.Subject)
	line("issuer", "%s", r.Issuer)
	line("not before", "%s", r.NotBefore)
	line("not after", "%s", r.NotAfter)
	left := time.Duration(r.SecondsLeft) * time.Second
	switch r.Status {
	case statusExpired:
		line("time left", "none: expired %s ago", roughDuration(-left))
	case statusNotYetValid:
		line("time left", "%s, but not valid until %s", roughDuration(left), r.NotBefore)
	default:
		line("time left", "%s", roughDuration(left))
	}
	if len(r.Hosts) == 0 {
		line("hosts", "none")
	} else {
		line("hosts", "%s", strings.Join(r.Hosts, ", "))
	}
	switch {
	case r.Revocation == revNoCA:
		line("signed by", "unknown: no CA certificate %s (give --dir)", r.CAFile)
	case r.SignedByCA && r.IsCA:
		line("signed by", "itself: it is the CA of %s", r.CAFile)
	case r.SignedByCA:
		line("signed by", "the CA of %s", r.CAFile)
	default:
		line("signed by", "not the CA of %s", r.CAFile)
	}
	switch r.Revocation {
	case revRevoked:
		line("revoked", "yes, on %s, by %s", r.RevokedAt, r.CRLFile)
	case revNotRevoked:
		line("revoked", "no: %s does not name it", r.CRLFile)
	case revNoList:
		line("revoked", "unknown: no revocation list %s", r.CRLFile)
	case revNoCA:
		line("revoked", "unknown: no CA to check %s against", r.CRLFile)
	default:
		line("revoked", "unknown: %s is not its CA's list", r.CRLFile)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// roughDuration writes d as days and hours, or hours and minutes under two days.
func roughDuration(d time.Duration) string {
	if d >= 48*time.Hour {
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%d days %dh", days, (d-days*24*time.Hour)/time.Hour)
	}
	return FormatDuration(d.Truncate(time.Minute))
}

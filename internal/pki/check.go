package pki

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// ErrInvalid marks an error in what was asked for (a host that is not a
// host, a lifetime past the CA's), as opposed to a failure to carry it out.
// Test for it with errors.Is; the error's text does not include it.
var ErrInvalid = errors.New("invalid request")

// invalidError is an error that errors.Is reports as ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// MaxHosts bounds the DNS and IP SANs of one certificate.
const MaxHosts = 64

// maxDNSNameLen is the longest DNS name, written out without a trailing dot (RFC 1035).
const maxDNSNameLen = 253

// maxLabelLen is the longest label of a DNS name (RFC 1035).
const maxLabelLen = 63

const hostWant = "want an IP address (like 192.0.2.10 or 2001:db8::1) or a DNS name " +
	"(dot-separated labels of letters, digits and '-', like node-1.lab)"

// ValidHost checks a host a certificate is to name as a SAN: an IP address,
// or a DNS name of RFC 1123 labels. Wildcards (*.lab) are refused: a muster
// certificate names one node, so each name it serves is given on its own.
func ValidHost(h string) error {
	if h == "" {
		return invalidf("host is empty: %s", hostWant)
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	switch {
	case strings.HasPrefix(h, "*."):
		return invalidf("host %q: wildcard names are refused: a certificate names one node, so give each name it serves as a host of its own", h)
	case strings.Contains(h, "://"):
		return invalidf("host %q: give the name or address alone, without a scheme or path", h)
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") && net.ParseIP(h[1:len(h)-1]) != nil:
		return invalidf("host %q: give the IPv6 address without brackets: %s", h, h[1:len(h)-1])
	}
	if host, _, err := net.SplitHostPort(h); err == nil && (net.ParseIP(host) != nil || validDNSName(host) == nil) {
		return invalidf("host %q: give the name or address without the port: %s", h, host)
	}
	if err := validDNSName(h); err != nil {
		return invalidf("host %q: %v; %s", h, err, hostWant)
	}
	return nil
}

// validDNSName checks s against RFC 1123's host name syntax.
func validDNSName(s string) error {
	if len(s) > maxDNSNameLen {
		return fmt.Errorf("it is %d characters, at most %d allowed", len(s), maxDNSNameLen)
	}
	if strings.HasSuffix(s, ".") {
		return errors.New("it ends with '.': write it without the trailing dot")
	}
	labels := strings.Split(s, ".")
	for i, l := range labels {
		switch {
		case l == "":
			return errors.New("it has an empty label (two dots in a row, or a leading dot)")
		case len(l) > maxLabelLen:
			return fmt.Errorf("its label %.20q... is %d characters, at most %d allowed", l, len(l), maxLabelLen)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Errorf("its label %q starts or ends with '-'", l)
		}
		digits := true
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				digits = false
			default:
				return fmt.Errorf("character %q is not allowed", c)
			}
		}
		if digits && i == len(labels)-1 {
			return fmt.Errorf("its last label %q is all digits, which no DNS name has, and it is not an IP address either", l)
		}
	}
	return nil
}

// ValidLifetime checks a lifetime given on a command line: it must be positive.
// (In an IssueRequest, zero asks for the default.)
func ValidLifetime(d time.Duration) error {
	if d <= 0 {
		return invalidf("lifetime %s is not positive: give a duration like 720h (30 days) or 8760h (a year)", FormatDuration(d))
	}
	return nil
}

// Validate checks everything of the request that does not depend on the CA:
// the role, the name, the hosts and the sign of the lifetime.
func (req IssueRequest) Validate() error {
	if _, err := ParseRole(string(req.Role)); err != nil {
		return &invalidError{msg: err.Error()}
	}
	if err := ValidName(req.Name); err != nil {
		return &invalidError{msg: err.Error()}
	}
	if len(req.Hosts) > MaxHosts {
		return invalidf("%d hosts given, at most %d allowed", len(req.Hosts), MaxHosts)
	}
	for _, h := range req.Hosts {
		if err := ValidHost(h); err != nil {
			return err
		}
	}
	if req.Lifetime < 0 {
		return invalidf("lifetime %s is negative: give a positive duration, or none for the default", FormatDuration(req.Lifetime))
	}
	return nil
}

// validity returns the not-after time of a certificate the CA issues from
// notBefore for lifetime (zero: DefaultCertLifetime, cut to the CA's own
// expiry). An explicit lifetime that outlives the CA is refused.
func (ca *CA) validity(notBefore time.Time, lifetime time.Duration) (time.Time, error) {
	caEnd := ca.Cert.NotAfter
	if !time.Now().Before(caEnd) {
		return time.Time{}, fmt.Errorf("the CA expired on %s: make a new one (certgen ca --force) and issue every certificate again", stamp(caEnd))
	}
	if !notBefore.Before(caEnd) {
		return time.Time{}, invalidf("a certificate starting %s would start after its CA expires on %s", stamp(notBefore), stamp(caEnd))
	}
	if lifetime == 0 {
		end := notBefore.Add(DefaultCertLifetime)
		if end.After(caEnd) {
			end = caEnd
		}
		return end, nil
	}
	end := notBefore.Add(lifetime)
	if end.After(caEnd) {
		longest := caEnd.Sub(notBefore).Truncate(time.Minute)
		return time.Time{}, invalidf("lifetime %s would make the certificate valid until %s, after its CA expires on %s: the longest lifetime allowed is %s",
			FormatDuration(lifetime), stamp(end), stamp(caEnd), FormatDuration(longest))
	}
	return end, nil
}

// stamp formats a time as RFC 3339 in UTC, to the second.
func stamp(t time.Time) string { return t.UTC().Truncate(time.Second).Format(time.RFC3339) }

// FormatDuration writes d in hours and minutes as time.ParseDuration reads
// them back ("8760h", "1h30m", "-1h"), rather than time.Duration's "8760h0m0s".
func FormatDuration(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	h, m, s := d/time.Hour, d%time.Hour/time.Minute, d%time.Minute
	out := sign
	if h > 0 {
		out += fmt.Sprintf("%dh", h)
	}
	if m > 0 {
		out += fmt.Sprintf("%dm", m)
	}
	if s > 0 || out == sign {
		out += (s.Truncate(time.Millisecond)).String()
	}
	return out
}

// Package pki makes and loads muster's certificates and builds the mutual-TLS
// configurations every daemon and client uses.
//
// A node's identity is the single URI SAN of its certificate,
// spiffe://<cluster>/<role>/<name>; the Common Name is never consulted.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Role says what a certificate's holder may do.
type Role string

// The roles muster knows.
const (
	RoleRegistry Role = "registry"
	RoleMaster   Role = "master"
	RoleSlave    Role = "slave"
	RoleAdmin    Role = "admin"
)

// Roles lists every role, in the order help texts show them.
var Roles = []Role{RoleRegistry, RoleMaster, RoleSlave, RoleAdmin}

// ParseRole checks that s names a known role.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q: want one of registry, master, slave, admin", s)
}

// Identity is who a certificate says its holder is.
type Identity struct {
	Cluster string
	Role    Role
	Name    string
}

// String is the identity's SPIFFE URI.
func (id Identity) String() string {
	if id == (Identity{}) {
		return "anonymous"
	}
	return id.URI().String()
}

// URI is the identity as a URI SAN.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.Cluster, Path: "/" + string(id.Role) + "/" + id.Name}
}

// Validate checks every part of the identity.
func (id Identity) Validate() error {
	if err := ValidName(id.Cluster); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if _, err := ParseRole(string(id.Role)); err != nil {
		return err
	}
	if err := ValidName(id.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	return nil
}

// ErrNoIdentity is returned for a certificate that carries no muster identity.
var ErrNoIdentity = errors.New("certificate has no spiffe://<cluster>/<role>/<name> URI SAN")

// ParseIdentity reads an identity from its SPIFFE URI.
func ParseIdentity(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("parse identity %q: %w", s, err)
	}
	return identityFromURL(u)
}

func identityFromURL(u *url.URL) (Identity, error) {
	if u.Scheme != "spiffe" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" {
		return Identity{}, fmt.Errorf("identity %q: want spiffe://<cluster>/<role>/<name>", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 2 {
		return Identity{}, fmt.Errorf("identity %q: want spiffe://<cluster>/<role>/<name>", u)
	}
	id := Identity{Cluster: u.Host, Role: Role(parts[0]), Name: parts[1]}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("identity %q: %w", u, err)
	}
	return id, nil
}

// IdentityFromCert reads the identity of a certificate. It must carry
// exactly one spiffe URI SAN.
func IdentityFromCert(c *x509.Certificate) (Identity, error) {
	var found []*url.URL
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, ErrNoIdentity
	case 1:
		return identityFromURL(found[0])
	default:
		return Identity{}, fmt.Errorf("certificate has %d spiffe URI SANs, want exactly one", len(found))
	}
}

// MaxNameLen bounds cluster, node and service instance names.
const MaxNameLen = 63

// ValidName checks a cluster, node or instance name: 1 to 63 characters of
// lower-case letters, digits, '-', '_' and '.', starting with a letter or digit.
func ValidName(s string) error {
	if s == "" {
		return errors.New("name is empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("name %.20q... is %d characters, at most %d allowed", s, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '-' || c == '_' || c == '.'):
		default:
			return fmt.Errorf("name %q: character %q at %d not allowed: use a-z, 0-9, '-', '_', '.' and start with a letter or digit", s, c, i)
		}
	}
	return nil
}

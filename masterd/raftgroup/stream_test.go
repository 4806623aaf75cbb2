package raftgroup

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/waitfor"
)

// listening is a stream layer whose accepted connections are gathered.
type listening struct {
	*StreamLayer
	accepted chan net.Conn
}

func listen(t *testing.T, n *node, name string, timeout time.Duration) *listening {
	t.Helper()
	sl, err := NewStreamLayer(StreamConfig{Listen: "127.0.0.1:0", Store: n.store, Logger: testLog(t, name), HandshakeTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sl.Close() })
	l := &listening{StreamLayer: sl, accepted: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			l.accepted <- c
		}
	}()
	return l
}

// resolveTo makes every address but none resolve to the given ID.
func resolveTo(addr string, id string) func(raft.ServerAddress) (raft.ServerID, bool) {
	return func(a raft.ServerAddress) (raft.ServerID, bool) {
		return raft.ServerID(id), string(a) == addr
	}
}

// refusedByServer dials l with the client's certificate and checks that
// the server ends the connection and hands nothing to Accept.
func refusedByServer(t *testing.T, l *listening, client *node) {
	t.Helper()
	before := l.Refused()
	// The client checks nothing of the server, as an intruder would not:
	// every refusal is the server's.
	cert, err := tls.X509KeyPair(client.issued.CertPEM, client.issued.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", l.ListenAddr().String(), &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})
	if err != nil {
		t.Logf("client handshake failed, as it may: %v", err)
	} else {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection of %s still open: read err = %v", client.issued.Identity, err)
		}
		t.Logf("server closed the connection: %v", err)
	}
	waitfor.True(t, 5*time.Second, "the refusal to be counted", func() bool { return l.Refused() > before })
	select {
	case c := <-l.accepted:
		t.Fatalf("Accept returned the connection of %s from %s", client.issued.Identity, c.RemoteAddr())
	default:
	}
}

// acceptedBy dials l as a master and returns both ends.
func acceptedBy(t *testing.T, l *listening, client *node, id string) (net.Conn, net.Conn) {
	t.Helper()
	d := listen(t, client, client.issued.Identity.Name, 5*time.Second)
	d.SetResolver(resolveTo(l.Addr().String(), id))
	c, err := d.Dial(raft.ServerAddress(l.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatalf("master %s dial: %v", client.issued.Identity, err)
	}
	select {
	case s := <-l.accepted:
		if s.RemoteAddr().String() != c.LocalAddr().String() {
			t.Fatalf("accepted %s, dialled from %s", s.RemoteAddr(), c.LocalAddr())
		}
		return c, s
	case <-time.After(5 * time.Second):
		c.Close()
		t.Fatalf("master %s not accepted", client.issued.Identity)
	}
	return nil, nil
}

// closed checks that the peer of c has closed the connection.
func closed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open (read err = %v)", what, err)
	}
}

// trustsProd is a lab CA, a prod CA, and lab's master m1 with a bundle of
// both.
func trustsProd(t *testing.T) (lab, prod *pki.CA, m1 *node) {
	t.Helper()
	lab, prod = newCA(t, "lab"), newCA(t, "prod")
	return lab, prod, newNode(t, lab, pki.RoleMaster, "m1", lab, prod)
}

func TestStreamLayerAcceptRefusals(t *testing.T) {
	// m1 trusts lab and prod: a prod master's chain verifies, so what
	// refuses it is the cluster check.
	lab, prod, m1 := trustsProd(t)
	otherLab := newCA(t, "lab") // same cluster name, another CA
	l := listen(t, m1, "m1", 5*time.Second)

	for _, tc := range []struct {
		name   string
		client *node
	}{
		{"slave certificate", newNode(t, lab, pki.RoleSlave, "node-1")},
		{"admin certificate", newNode(t, lab, pki.RoleAdmin, "root")},
		{"master of another CA", newNode(t, otherLab, pki.RoleMaster, "m2", otherLab, lab)},
		{"master of another cluster", newNode(t, prod, pki.RoleMaster, "m2", prod, lab)},
	} {
		t.Run(tc.name, func(t *testing.T) { refusedByServer(t, l, tc.client) })
	}

	t.Run("master of this cluster, then revoked", func(t *testing.T) {
		m2 := newNode(t, lab, pki.RoleMaster, "m2")
		c, s := acceptedBy(t, l, m2, "m1")
		defer c.Close()
		defer s.Close()
		// Traffic flows both ways.
		go s.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("read from accepted connection: %v", err)
		}

		crl, _, err := lab.Revoke(nil, m2.issued.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m1.files.CRL, crl, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := m1.store.Reload(); err != nil {
			t.Fatal(err)
		}
		if n := l.CloseRevoked(); n != 1 {
			t.Fatalf("CloseRevoked closed %d connections, want 1", n)
		}
		closed(t, c, "revoked master's open connection")
		refusedByServer(t, l, m2)
	})
}

func TestStreamLayerDialRefusals(t *testing.T) {
	lab, prod, m1 := trustsProd(t)
	d := listen(t, m1, "m1", 5*time.Second)

	for _, tc := range []struct {
		name   string
		server *node
		id     string // the ID the dialled address belongs to
		want   string
	}{
		{"master named otherwise", newNode(t, lab, pki.RoleMaster, "m3"), "m2", "the raft configuration says"},
		{"slave", newNode(t, lab, pki.RoleSlave, "m2"), "m2", "the raft configuration says"},
		{"master of another cluster", newNode(t, prod, pki.RoleMaster, "m2", prod, lab), "m2", "another cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A plain TLS server with the store's own server config, so
			// that the slave case gets as far as the dialler's check.
			ln, err := tls.Listen("tcp", "127.0.0.1:0", tc.server.store.ServerConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				got <- c
			}()
			addr := ln.Addr().String()
			d.SetResolver(resolveTo(addr, tc.id))
			before := d.Refused()
			c, err := d.Dial(raft.ServerAddress(addr), 5*time.Second)
			if err == nil {
				c.Close()
				t.Fatalf("dial %s (%s) succeeded", tc.id, tc.server.issued.Identity)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if d.Refused() != before+1 {
				t.Fatalf("refusals %d, want %d", d.Refused(), before+1)
			}
			select {
			case s := <-got:
				closed(t, s, "refused server's end")
				s.Close()
			case <-time.After(5 * time.Second):
				t.Fatal("server saw no connection")
			}
		})
	}

	t.Run("address of no server", func(t *testing.T) {
		d.SetResolver(resolveTo("127.0.0.1:1", "m2"))
		if _, err := d.Dial("127.0.0.1:2", time.Second); !errors.Is(err, ErrUnknownAddress) {
			t.Fatalf("err = %v, want ErrUnknownAddress", err)
		}
	})

	t.Run("the master named", func(t *testing.T) {
		m2 := newNode(t, lab, pki.RoleMaster, "m2")
		l2 := listen(t, m2, "m2", 5*time.Second)
		d.SetResolver(resolveTo(l2.Addr().String(), "m2"))
		c, err := d.Dial(raft.ServerAddress(l2.Addr().String()), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
}

func TestStreamLayerSlowPeers(t *testing.T) {
	lab := newCA(t, "lab")
	m1 := newNode(t, lab, pki.RoleMaster, "m1")
	m2 := newNode(t, lab, pki.RoleMaster, "m2")
	const timeout = 3 * time.Second
	l := listen(t, m1, "m1", timeout)

	// A peer that never speaks, and one that speaks garbage.
	silent, err := net.Dial("tcp", l.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	garbage, err := net.Dial("tcp", l.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	if _, err := garbage.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	closed(t, garbage, "garbage peer")

	// A master is accepted while the silent peer's handshake still waits.
	start := time.Now()
	c, s := acceptedBy(t, l, m2, "m1")
	c.Close()
	s.Close()
	silent.SetReadDeadline(time.Now().Add(time.Millisecond))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent peer already closed when the master was accepted, %v after the start: %v", time.Since(start), err)
	}
	silent.SetReadDeadline(time.Now().Add(timeout + 5*time.Second))
	_, err = silent.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent peer not closed after the handshake timeout: %v", err)
	}
	if since := time.Since(start); since < timeout/2 {
		t.Fatalf("silent peer closed after %v, before the handshake timeout %v", since, timeout)
	}
}

func TestStreamLayerHandshakeCap(t *testing.T) {
	lab := newCA(t, "lab")
	m1 := newNode(t, lab, pki.RoleMaster, "m1")
	sl, err := NewStreamLayer(StreamConfig{Listen: "127.0.0.1:0", Store: m1.store, Logger: testLog(t, "m1"),
		HandshakeTimeout: time.Minute, MaxHandshakes: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	first, err := net.Dial("tcp", sl.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	waitfor.True(t, 5*time.Second, "the first handshake to take the slot", func() bool { return len(sl.slots) == 1 })
	second, err := net.Dial("tcp", sl.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	closed(t, second, "connection past the handshake cap")
	if sl.Refused() != 1 {
		t.Fatalf("refusals %d, want 1", sl.Refused())
	}
}

func TestStreamLayerNeedsMasterCertificate(t *testing.T) {
	lab := newCA(t, "lab")
	s := newNode(t, lab, pki.RoleSlave, "node-1")
	_, err := NewStreamLayer(StreamConfig{Listen: "127.0.0.1:0", Store: s.store, Logger: testLog(t, "x")})
	if err == nil || !strings.Contains(err.Error(), "needs a master certificate") {
		t.Fatalf("err = %v", err)
	}
}

func TestStreamLayerCloseEndsHandshakes(t *testing.T) {
	lab := newCA(t, "lab")
	m1 := newNode(t, lab, pki.RoleMaster, "m1")
	sl, err := NewStreamLayer(StreamConfig{Listen: "127.0.0.1:0", Store: m1.store, Logger: testLog(t, "m1"), HandshakeTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("tcp", sl.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitfor.True(t, 5*time.Second, "the handshake to start", func() bool { return len(sl.slots) == 1 })
	closedCh := make(chan error, 1)
	go func() { closedCh <- sl.Close() }()
	select {
	case <-closedCh:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for a handshake in progress")
	}
	closed(t, silent, "peer in handshake at Close")
	if err := sl.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := sl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: err = %v", err)
	}
}

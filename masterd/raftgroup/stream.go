package raftgroup

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/pki"
)

// StreamConfig says where a StreamLayer listens and whose certificates it uses.
type StreamConfig struct {
	// Listen is the address to bind, such as "10.0.0.1:7946" or "127.0.0.1:0".
	Listen string
	// Advertise is the address the other masters dial to reach this one, and
	// the address raft records for it. Empty: the bound address, which is
	// right unless Listen is a wildcard such as ":7946".
	Advertise string
	// Store holds this master's certificate, key, CAs and revocation list.
	Store *pki.Store
	// Logger receives refusals (rate-limited) and accept errors.
	Logger logrus.FieldLogger
	// HandshakeTimeout bounds one incoming TLS handshake; default 5s.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the incoming handshakes in progress at once;
	// past it, a new connection is closed at once. Default 64.
	MaxHandshakes int
}

// StreamLayer is raft's network transport over mutual TLS: a net.Listener
// whose Accept returns only connections from master certificates of this
// cluster, and a Dial that accepts only the master whose name is the server
// ID the address belongs to.
type StreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	store     *pki.Store
	server    *tls.Config
	log       logrus.FieldLogger
	timeout   time.Duration

	slots    chan struct{} // incoming handshakes in progress
	accepted chan net.Conn // authenticated connections for Accept
	done     chan struct{}
	ctx      context.Context // of the handshakes in progress, ended by Close
	stop     context.CancelFunc
	close    sync.Once
	wg       sync.WaitGroup

	resolve atomic.Pointer[func(raft.ServerAddress) (raft.ServerID, bool)]

	mu    sync.Mutex
	conns map[*tls.Conn]string // open authenticated connections -> peer serial

	refused   atomic.Uint64
	logTokens tokenBucket
}

// Default bounds of the stream layer.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxHandshakes    = 64
)

// NewStreamLayer binds the listener and starts accepting. Close stops it.
func NewStreamLayer(cfg StreamConfig) (*StreamLayer, error) {
	if cfg.Store == nil {
		return nil, errors.New("raft stream layer: no certificate store given")
	}
	if cfg.Logger == nil {
		return nil, errors.New("raft stream layer: no logger given")
	}
	if id := cfg.Store.Identity(); id.Role != pki.RoleMaster {
		return nil, fmt.Errorf("raft needs a master certificate, but this node's certificate is %s: issue one with certgen for role master", id)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("raft listen %s: %w", cfg.Listen, err)
	}
	var adv net.Addr = ln.Addr()
	if cfg.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %q: %w: give HOST:PORT", cfg.Advertise, err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %q is not one the other masters can dial: give this host's address", cfg.Advertise)
		}
		adv = advertised(cfg.Advertise)
	} else if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft listens on %s, a wildcard address, and no advertise address is given: give the address the other masters dial", ln.Addr())
	}
	s := &StreamLayer{
		ln: ln, advertise: adv, store: cfg.Store, server: serverConfig(cfg.Store), log: cfg.Logger, timeout: cfg.HandshakeTimeout,
		slots:    make(chan struct{}, cfg.MaxHandshakes),
		accepted: make(chan net.Conn),
		done:     make(chan struct{}),
		conns:    make(map[*tls.Conn]string),
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// advertised is an address given as text, reported as is.
type advertised string

func (a advertised) Network() string { return "tcp" }
func (a advertised) String() string  { return string(a) }

// SetResolver sets how Dial learns which server ID an address belongs to.
// The group sets it; without one, every Dial is refused.
func (s *StreamLayer) SetResolver(f func(raft.ServerAddress) (raft.ServerID, bool)) {
	s.resolve.Store(&f)
}

// Addr is the advertised address: what raft records as this server's address.
func (s *StreamLayer) Addr() net.Addr { return s.advertise }

// ListenAddr is the bound address.
func (s *StreamLayer) ListenAddr() net.Addr { return s.ln.Addr() }

// Refused counts the connections refused since the start, both ways.
func (s *StreamLayer) Refused() uint64 { return s.refused.Load() }

// Accept waits for the next authenticated connection. Handshakes run on
// their own goroutines, so a slow or silent peer holds up nobody else.
func (s *StreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.accepted:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes every open connection. It is safe to
// call twice.
func (s *StreamLayer) Close() error {
	var err error
	s.close.Do(func() {
		close(s.done)
		s.stop()
		err = s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

// CloseRevoked closes the open connections whose peer certificate the
// revocation list now names, and says how many it closed. Call it after
// Store.Reload: new connections are checked against the list anyway.
func (s *StreamLayer) CloseRevoked() int {
	s.mu.Lock()
	var doomed []*tls.Conn
	for c, serial := range s.conns {
		if s.store.Revoked(serial) {
			doomed = append(doomed, c)
		}
	}
	s.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
	return len(doomed)
}

func (s *StreamLayer) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and try again.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.WithError(err).Warnf("raft accept failed; retrying in %v", backoff)
			select {
			case <-time.After(backoff):
			case <-s.done:
				return
			}
			continue
		}
		backoff = 0
		select {
		case s.slots <- struct{}{}:
		default:
			s.refuse(raw.RemoteAddr().String(), fmt.Errorf("%d handshakes already in progress, the cap", cap(s.slots)))
			raw.Close()
			continue
		}
		s.wg.Add(1)
		go s.handshake(raw)
	}
}

// handshake authenticates one incoming connection and hands it to Accept.
func (s *StreamLayer) handshake(raw net.Conn) {
	defer s.wg.Done()
	addr := raw.RemoteAddr().String()
	tc := tls.Server(raw, s.server)
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	<-s.slots
	if err == nil {
		err = s.check(tc, masterOnly)
	} else if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("TLS handshake not finished within %v", s.timeout)
	}
	if err != nil {
		select {
		case <-s.done: // closing: not the peer's fault
		default:
			s.refuse(addr, err)
		}
		tc.Close()
		return
	}
	c := &trackedConn{Conn: tc, s: s, tc: tc}
	select {
	case s.accepted <- c:
	case <-s.done:
		c.Close()
	}
}

// masterOnly refuses a peer that is not a master.
func masterOnly(id pki.Identity) error {
	if id.Role != pki.RoleMaster {
		return fmt.Errorf("peer is %s: only master certificates may join the raft group", id)
	}
	return nil
}

// serverConfig is the store's server configuration, which checks the chain,
// the cluster and the revocation list, with the role checked as well: a
// peer refused during the handshake is told why by a TLS alert.
func serverConfig(store *pki.Store) *tls.Config {
	base := store.ServerConfig()
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := base.GetConfigForClient(hello)
			if err != nil {
				return nil, err
			}
			verify := c.VerifyConnection
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := verify(cs); err != nil {
					return err
				}
				id, err := pki.PeerIdentity(cs)
				if err != nil {
					return err
				}
				return masterOnly(id)
			}
			return c, nil
		},
	}
}

// check reads a finished handshake's peer, checks it once more against the
// current revocation list and with accept, and tracks the connection.
func (s *StreamLayer) check(tc *tls.Conn, accept func(pki.Identity) error) error {
	cs := tc.ConnectionState()
	id, err := pki.PeerIdentity(cs)
	if err != nil {
		return err
	}
	serial := cs.PeerCertificates[0].SerialNumber.Text(16)
	if s.store.Revoked(serial) {
		return fmt.Errorf("%w: %s, serial %s", pki.ErrRevoked, id, serial)
	}
	if err := accept(id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return net.ErrClosed
	default:
	}
	s.conns[tc] = serial
	return nil
}

func (s *StreamLayer) forget(tc *tls.Conn) {
	s.mu.Lock()
	delete(s.conns, tc)
	s.mu.Unlock()
}

// ErrUnknownAddress is returned by Dial for an address no configured
// server has: raft dials only the servers of its configuration.
var ErrUnknownAddress = errors.New("address belongs to no server of the raft configuration")

// Dial connects to the server at address and checks that it presents the
// master certificate named after the server ID the address belongs to.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var want raft.ServerID
	ok := false
	if f := s.resolve.Load(); f != nil {
		want, ok = (*f)(address)
	}
	if !ok {
		s.refused.Add(1)
		return nil, fmt.Errorf("raft dial %s: %w", address, ErrUnknownAddress)
	}
	d := net.Dialer{Timeout: timeout}
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	raw, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s (%s): %w", want, address, err)
	}
	expect := func(id pki.Identity) error {
		if id.Role != pki.RoleMaster || id.Name != string(want) {
			return fmt.Errorf("server at %s is %s, but the raft configuration says %s is server %s: fix the peers list or the certificate", address, id, address, want)
		}
		return nil
	}
	tc := tls.Client(raw, s.store.ClientConfig(expect))
	if err := tc.HandshakeContext(ctx); err != nil {
		tc.Close()
		s.refused.Add(1)
		return nil, fmt.Errorf("raft dial %s (%s): %w", want, address, err)
	}
	if err := s.check(tc, expect); err != nil {
		tc.Close()
		s.refused.Add(1)
		return nil, fmt.Errorf("raft dial %s (%s): %w", want, address, err)
	}
	return &trackedConn{Conn: tc, s: s, tc: tc}, nil
}

// trackedConn is an authenticated connection, forgotten by the layer when
// it is closed.
type trackedConn struct {
	net.Conn
	s    *StreamLayer
	tc   *tls.Conn
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.s.forget(c.tc) })
	return c.Conn.Close()
}

func (s *StreamLayer) refuse(addr string, err error) {
	s.refused.Add(1)
	if quiet, ok := s.logTokens.take(time.Now()); ok {
		f := s.log.WithField("peer", addr)
		if quiet > 0 {
			f = f.WithField("not_logged", quiet)
		}
		f.Warnf("raft refused connection: %v", err)
	}
}

// refusalLogRate bounds the refusals logged per second, so that a flood of
// bad connections does not become a flood of log lines.
const refusalLogRate = 10

// tokenBucket rate-limits log lines and counts those it suppressed.
type tokenBucket struct {
	mu       sync.Mutex
	at       time.Time
	tokens   float64
	unlogged int
}

// take says whether a line may be logged now, and how many were suppressed
// since the last one that was.
func (b *tokenBucket) take(now time.Time) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.at.IsZero() {
		b.tokens = refusalLogRate
	} else {
		b.tokens = min(refusalLogRate, b.tokens+now.Sub(b.at).Seconds()*refusalLogRate)
	}
	b.at = now
	if b.tokens < 1 {
		b.unlogged++
		return 0, false
	}
	b.tokens--
	quiet := b.unlogged
	b.unlogged = 0
	return quiet, true
}

// Package tlsrpc serves net/rpc over mutual TLS and over a UNIX-domain socket,
// with the limits a server facing untrusted networks needs: a cap on
// concurrent connections, a deadline on every handshake, and idle connections
// closed. Each connection gets its own rpc.Server whose receivers know who is
// calling.
package tlsrpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// Peer is the other end of one connection.
type Peer struct {
	ConnID   uint64       // unique among this process's connections
	Addr     string       // remote address, or "unix" with the peer's pid
	Identity pki.Identity // from the verified certificate; zero on the local socket
	// CertNotAfter is when the peer's certificate expires.
	CertNotAfter time.Time
	// Serial is the peer certificate's serial number, in hex.
	Serial string
	Local  bool   // reached over the UNIX-domain socket
	UID    uint32 // the local peer's user id, from SO_PEERCRED
	// Done is closed when the connection stops reading: the peer went away,
	// was idle too long, or the server is stopping. A handler that blocks
	// (a long poll) must return when it closes.
	Done <-chan struct{}
	// Block is called by a handler about to wait (a long poll): with
	// Options.Inline, the connection's requests are read on by another
	// goroutine meanwhile. It does nothing otherwise. Call it at most once
	// per request, from the handler's own goroutine.
	Block func()
}

// Attach registers the receivers of one connection on srv. The detach
// function, if not nil, runs when the connection has ended.
type Attach func(srv *rpc.Server, p Peer) (detach func(), err error)

// Options bounds what a connection may cost.
type Options struct {
	HandshakeTimeout time.Duration // default 5s
	IdleTimeout      time.Duration // no request for this long closes the connection; default 5m
	WriteTimeout     time.Duration // a reply not taken by the peer in this time closes it; default 10s
	MaxConns         int           // connections at once; past it new ones are closed; default 1024
	MaxMessage       int           // bytes in one request; default rpcdef.DefaultMaxMessage
	// Inline runs each request's handler on the connection's own goroutine,
	// one at a time, instead of a goroutine per request as net/rpc does. It
	// saves a goroutine and a hand-off between threads per call, which is
	// most of a round trip's cost between processes. A handler that blocks
	// must call Peer.Block first.
	Inline bool
}

func (o *Options) defaults() {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
}

// Refusal reasons, as counted by Server.Refused.
const (
	RefusedHandshake = "handshake"
	RefusedCap       = "connection cap"
	RefusedAttach    = "attach"
	RefusedMessage   = "bad message"
)

// RefusalReasons lists every reason Server.Refused counts, so that a metric
// can show each one from the start, at zero.
func RefusalReasons() []string {
	return []string{RefusedHandshake, RefusedCap, RefusedAttach, RefusedMessage}
}

// Server accepts connections on one listener.
type Server struct {
	ln     net.Listener
	tls    *tls.Config // nil on a UNIX-domain socket
	opts   Options
	attach Attach
	log    logrus.FieldLogger

	slots  chan struct{}
	nextID *atomic.Uint64

	mu      sync.Mutex
	conns   map[*conn]struct{}
	closed  bool
	wg      sync.WaitGroup
	refused sync.Map // reason -> *atomic.Uint64

	logMu     sync.Mutex // guards the refusal log's rate limit
	logAt     time.Time
	logTokens float64
	unlogged  int
}

var connIDs atomic.Uint64

// New serves on ln. With tlsConf each connection must complete a mutual-TLS
// handshake first; without it, ln must be a UNIX-domain listener and each
// peer's credentials are read from the socket.
func New(ln net.Listener, tlsConf *tls.Config, opts Options, attach Attach, log logrus.FieldLogger) (*Server, error) {
	opts.defaults()
	if tlsConf == nil {
		if _, ok := ln.(*net.UnixListener); !ok {
			return nil, fmt.Errorf("serve %s without TLS: only a UNIX-domain socket may do that", ln.Addr())
		}
	}
	return &Server{
		ln: ln, tls: tlsConf, opts: opts, attach: attach, log: log,
		slots:  make(chan struct{}, opts.MaxConns),
		nextID: &connIDs,
		conns:  make(map[*conn]struct{}),
	}, nil
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Refused counts connections refused for a reason since the start.
func (s *Server) Refused(reason string) uint64 {
	if v, ok := s.refused.Load(reason); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

// Conns is the number of connections open now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// refusalLogRate bounds the refusals logged per second (a token bucket with
// as large a burst), so that a flood of bad connections does not become a
// flood of log lines. Suppressed refusals are counted in the next line.
const refusalLogRate = 20

func (s *Server) refuse(reason, addr string, err error) {
	v, _ := s.refused.LoadOrStore(reason, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
	now := time.Now()
	s.logMu.Lock()
	if s.logAt.IsZero() {
		s.logTokens = refusalLogRate
	} else {
		s.logTokens = min(refusalLogRate, s.logTokens+now.Sub(s.logAt).Seconds()*refusalLogRate)
	}
	s.logAt = now
	allowed := s.logTokens >= 1
	quiet := s.unlogged
	if allowed {
		s.logTokens--
		s.unlogged = 0
	} else {
		s.unlogged++
	}
	s.logMu.Unlock()
	if !allowed {
		return
	}
	f := s.log.WithFields(logrus.Fields{"peer": addr, "reason": reason})
	if quiet > 0 {
		f.WithField("not_logged", quiet).Warnf("refused connection: %v (and %d earlier refusals not logged: more than %d a second)", err, quiet, refusalLogRate)
		return
	}
	f.Warnf("refused connection: %v", err)
}

// Serve accepts connections until ctx ends or the listener fails, then
// closes every connection and waits for their handlers.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	var backoff time.Duration
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				s.Close()
				s.wg.Wait()
				return nil
			}
			// Out of file descriptors and the like: wait and try again, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.WithError(err).Warnf("accept failed; retrying in %v", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		select {
		case s.slots <- struct{}{}:
		default:
			s.refuse(RefusedCap, raw.RemoteAddr().String(), fmt.Errorf("%d connections open, the cap", s.opts.MaxConns))
			raw.Close()
			continue
		}
		c := &conn{raw: raw, rw: raw, idle: s.opts.IdleTimeout, write: s.opts.WriteTimeout, done: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			raw.Close()
			<-s.slots
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(ctx, c)
	}
}

func (s *Server) handle(ctx context.Context, c *conn) {
	// A connection that gets as far as serving requests is ended by
	// whichever goroutine is reading it when reading fails (see reader), so
	// the release is not deferred.
	release := func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		<-s.slots
		s.wg.Done()
	}
	served := false
	defer func() {
		if !served {
			release()
		}
	}()
	peer := Peer{ConnID: s.nextID.Add(1), Addr: c.raw.RemoteAddr().String(), Done: c.done, Block: func() {}}
	if s.tls != nil {
		tc := tls.Server(c.raw, s.tls)
		hctx, cancel := context.WithTimeout(ctx, s.opts.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("TLS handshake not finished within %v", s.opts.HandshakeTimeout)
			}
			s.refuse(RefusedHandshake, peer.Addr, err)
			return
		}
		id, err := pki.PeerIdentity(tc.ConnectionState())
		if err != nil {
			s.refuse(RefusedHandshake, peer.Addr, err)
			return
		}
		peer.Identity = id
		leaf := tc.ConnectionState().PeerCertificates[0]
		peer.CertNotAfter = leaf.NotAfter
		peer.Serial = leaf.SerialNumber.Text(16)
		c.rw = tc
	} else {
		cred, err := peerCred(c.raw)
		if err != nil {
			s.refuse(RefusedHandshake, "unix", err)
			return
		}
		peer.Local = true
		peer.UID = cred.Uid
		peer.Addr = fmt.Sprintf("unix:pid=%d,uid=%d", cred.Pid, cred.Uid)
	}
	r := &reader{srv: rpc.NewServer()}
	if s.opts.Inline {
		peer.Block = r.block
	}
	s.mu.Lock()
	c.peer = peer
	s.mu.Unlock()
	detach, err := s.attach(r.srv, peer)
	if err != nil {
		s.refuse(RefusedAttach, peer.Addr, err)
		return
	}
	r.codec = rpcdef.NewServerCodec(c, s.opts.MaxMessage)
	r.finish = func() {
		if err := rpcdef.ReadError(r.codec); err != nil {
			s.refuse(RefusedMessage, peer.Addr, fmt.Errorf("closed connection of %s: %w", peer.Identity, err))
		}
		if detach != nil {
			detach()
		}
		release()
	}
	served = true
	if !s.opts.Inline {
		r.srv.ServeCodec(r.codec) // waits for the calls in progress, and closes the codec
		r.finish()
		return
	}
	r.run(r.gen.Load())
}

// reader serves one connection's requests inline: each handler runs on the
// goroutine that read its request. A handler that is about to wait calls
// block, and a new goroutine reads on; the old one ends once its handler
// has returned and its reply is written. The goroutine reading when the
// stream ends finishes the connection, after every handler has returned.
type reader struct {
	srv    *rpc.Server
	codec  rpc.ServerCodec
	finish func()
	gen    atomic.Uint64  // which goroutine reads: the one started at this value
	calls  sync.WaitGroup // goroutines that gave up reading and are still in a handler
}

func (r *reader) run(gen uint64) {
	for {
		err := r.srv.ServeRequest(r.codec)
		if r.gen.Load() != gen {
			r.calls.Done() // another goroutine reads now
			return
		}
		// ServeRequest has already answered a call to an unknown method;
		// any other error means the stream can no longer be read.
		if err != nil && !unknownMethod(err) {
			r.codec.Close() // wakes the handlers waiting on Peer.Done
			r.calls.Wait()
			r.finish()
			return
		}
	}
}

func (r *reader) block() {
	r.calls.Add(1)
	go r.run(r.gen.Add(1))
}

// unknownMethod reports net/rpc's errors for a well-formed request naming a
// method that does not exist: the connection stays usable after them.
func unknownMethod(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "rpc: can't find ") || strings.HasPrefix(s, "rpc: service/method request ill-formed")
}

// Close stops accepting and closes every connection. It is safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	return err
}

// CloseWhere closes the open connections whose peer matches, and says how
// many it closed (after a reload, those of certificates now revoked).
func (s *Server) CloseWhere(match func(Peer) bool) int {
	s.mu.Lock()
	var doomed []*conn
	for c := range s.conns {
		if c.peer.ConnID != 0 && match(c.peer) {
			doomed = append(doomed, c)
		}
	}
	s.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
	return len(doomed)
}

// Reload reads st's certificate files again (on SIGHUP) and closes srv's
// connections whose certificate the new revocation list names.
func Reload(st *pki.Store, srv *Server, log logrus.FieldLogger) error {
	if err := st.Reload(); err != nil {
		return err
	}
	if n := srv.CloseWhere(func(p Peer) bool { return st.Revoked(p.Serial) }); n > 0 {
		log.Warnf("closed %d connections whose certificate is now revoked", n)
	}
	return nil
}

func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a UNIX-domain connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("read peer credentials: %w", serr)
	}
	return cred, nil
}

// conn keeps a deadline on every read and write, and closes done when
// reading stops. rw is the stream (TLS over raw, or raw itself); it is set
// before the first Read. Close touches only raw, so the server may close a
// connection while its handler is still setting it up.
//
// A deadline is moved only once it is a sixteenth of its span old: moving it
// is a timer update in the runtime, and a heartbeat's call reads and writes
// several times. So a connection is closed after between 15/16 and all of
// its idle time without a request, and a write may get 1/16 less than the
// write timeout.
type conn struct {
	peer        Peer // set once known, under Server.mu
	raw, rw     net.Conn
	idle, write time.Duration
	done        chan struct{}
	once        sync.Once

	readSet  time.Time // when the read deadline was last moved; the reader's alone
	writeMu  sync.Mutex
	writeSet time.Time // when the write deadline was last moved
}

func (c *conn) Read(p []byte) (int, error) {
	if now := time.Now(); now.Sub(c.readSet) >= c.idle/16 {
		c.readSet = now
		c.raw.SetReadDeadline(now.Add(c.idle))
	}
	n, err := c.rw.Read(p)
	if err != nil {
		c.once.Do(func() { close(c.done) })
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	if now := time.Now(); now.Sub(c.writeSet) >= c.write/16 {
		c.writeSet = now
		c.raw.SetWriteDeadline(now.Add(c.write))
	}
	c.writeMu.Unlock()
	return c.rw.Write(p)
}

func (c *conn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.raw.Close()
}

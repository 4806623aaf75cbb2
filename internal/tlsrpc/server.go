// Package tlsrpc serves net/rpc over mutual TLS and over a UNIX-domain socket,
// with the limits a server facing untrusted networks needs: a cap on
// concurrent connections and a budget per identity, a deadline on every
// handshake, on a connection's first request and on every message, a size
// limit per message, a cap on the calls in flight per connection, and idle
// connections closed. Each connection gets its own rpc.Server whose
// receivers know who is calling.
package tlsrpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// The bounds a listener has when its Options leave them unset: what one
// connection, and one identity, can cost at most. docs/SECURITY.md quotes
// them.
const (
	// DefaultHandshakeTimeout bounds a TLS handshake. With MaxConns it is
	// also the bound on a flood that needs no certificate: half-open TCP
	// connections each hold a slot for at most this long, and past the cap
	// new ones are closed at once.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultFirstRequestTimeout bounds the time from a connection's
	// handshake (or accept, on the local socket) to its first whole request.
	DefaultFirstRequestTimeout = 10 * time.Second
	// DefaultMessageTimeout bounds the time from a message's first byte to
	// its last, so that a peer claiming a large message and then sending it
	// a byte at a time holds its buffer no longer than this.
	DefaultMessageTimeout = 10 * time.Second
	// DefaultIdleTimeout closes a connection with no message for this long.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultWriteTimeout closes a connection whose peer does not take a
	// reply in this time.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxConns is the cap on connections open at once.
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerIdentity is what one certificate identity may hold
	// of a TLS listener's cap.
	DefaultMaxConnsPerIdentity = 32
	// DefaultMaxConnsPerUID is what one non-root user may hold of a local
	// socket's cap. Root (uid 0) has no budget of its own.
	DefaultMaxConnsPerUID = 16
	// DefaultRootReserveShare is the share of a local socket's cap, one in
	// this many, that non-root users together may not take, so that root
	// is never locked out of its own daemon.
	DefaultRootReserveShare = 16
	// DefaultMaxBlocked is how many calls of one connection may wait at once
	// (each called Peer.Block) on a listener with Options.Inline.
	DefaultMaxBlocked = 4
	// DefaultMaxInflight is how many calls of one connection may run at
	// once on a listener without Options.Inline.
	DefaultMaxInflight = 64
	// DefaultMaxHandshakes is how many TLS handshakes may run at once. A
	// handshake is a millisecond or two of CPU; thousands at once on a few
	// cores each take so long that they all pass their deadline, and the
	// peers come back to do it again (a reconnect storm that never ends).
	// Bounded, each finishes at once, and the rest wait their turn.
	DefaultMaxHandshakes = 64
	// DefaultHandshakeQueue is how long a new connection may wait for a
	// handshake's turn before it is closed, fast, as "busy": its peer backs
	// off with jitter and comes back later, instead of timing out slowly.
	DefaultHandshakeQueue = time.Second
	// DefaultSlaveMaxMessage is the size limit SlaveRequestLimit gives a
	// slave's requests: the largest, a Report at every bound of the
	// contract, is a few KiB.
	DefaultSlaveMaxMessage = 64 << 10
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
	// goroutine meanwhile. Past Options.MaxBlocked calls of the connection
	// waiting at once it returns an error (code unavailable) instead, which
	// the handler returns to its caller without waiting. Without Inline it
	// does nothing and returns nil. Call it at most once per request, from
	// the handler's own goroutine.
	Block func() error
	// GaveUp says, once the connection has ended, whether the peer closed
	// it while one of its requests was being served or waiting to be read:
	// the read that ended found the close already there, right behind a
	// request. A peer whose call timed out on a slow server does that (so
	// does one killed in the middle of a call); a peer that went away
	// between calls does not.
	GaveUp func() bool
}

// Attach registers the receivers of one connection on srv. The detach
// function, if not nil, runs when the connection has ended.
type Attach func(srv *rpc.Server, p Peer) (detach func(), err error)

// Options bounds what a connection may cost. A zero field takes the
// default named beside it (the Default constants above).
type Options struct {
	HandshakeTimeout time.Duration // DefaultHandshakeTimeout
	// MaxHandshakes is how many TLS handshakes may run at once
	// (DefaultMaxHandshakes); a connection waits HandshakeQueue for its
	// turn (DefaultHandshakeQueue), then is closed and counted as busy.
	MaxHandshakes  int
	HandshakeQueue time.Duration
	// FirstRequestTimeout closes a connection that has not sent a whole
	// request this long after its handshake; DefaultFirstRequestTimeout.
	FirstRequestTimeout time.Duration
	// MessageTimeout closes a connection one of whose messages is not all
	// there this long after its first byte; DefaultMessageTimeout. The idle
	// timeout runs only between messages.
	MessageTimeout time.Duration
	IdleTimeout    time.Duration // no message for this long closes the connection; DefaultIdleTimeout
	WriteTimeout   time.Duration // a reply not taken by the peer in this time closes it; DefaultWriteTimeout
	MaxConns       int           // connections at once; past it new ones are closed; DefaultMaxConns
	// MaxConnsPerIdentity is how many connections one identity may hold at
	// once: one certificate identity on TLS (DefaultMaxConnsPerIdentity),
	// one non-root uid on the local socket (DefaultMaxConnsPerUID). Past it
	// a new connection is closed after its handshake.
	MaxConnsPerIdentity int
	// RootReserve is how much of a local socket's cap non-root users may
	// not take; MaxConns / DefaultRootReserveShare. Unused on TLS.
	RootReserve int
	MaxMessage  int // bytes in one request message; rpcdef.DefaultMaxMessage
	// MaxMessageFor, if not nil, chooses the request size limit of each
	// connection from its peer (see SlaveRequestLimit); a result <= 0
	// means MaxMessage. Replies are not limited by it.
	MaxMessageFor func(Peer) int
	// Inline runs each request's handler on the connection's own goroutine,
	// one at a time, instead of a goroutine per request as net/rpc does. It
	// saves a goroutine and a hand-off between threads per call, which is
	// most of a round trip's cost between processes. A handler that blocks
	// must call Peer.Block first.
	Inline bool
	// MaxBlocked, with Inline, is how many calls of one connection may wait
	// at once; DefaultMaxBlocked. Peer.Block refuses the next.
	MaxBlocked int
	// MaxInflight, without Inline, is how many calls of one connection may
	// run at once; DefaultMaxInflight. A request past it is read and
	// answered at once with an error (code unavailable), so the peer learns
	// of it and the connection's other replies are not held up; it is not
	// queued.
	MaxInflight int
}

func (o *Options) defaults(local bool) {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&o.HandshakeTimeout, DefaultHandshakeTimeout)
	set(&o.HandshakeQueue, DefaultHandshakeQueue)
	if o.MaxHandshakes <= 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	set(&o.FirstRequestTimeout, DefaultFirstRequestTimeout)
	set(&o.MessageTimeout, DefaultMessageTimeout)
	set(&o.IdleTimeout, DefaultIdleTimeout)
	set(&o.WriteTimeout, DefaultWriteTimeout)
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxConnsPerIdentity <= 0 {
		o.MaxConnsPerIdentity = DefaultMaxConnsPerIdentity
		if local {
			o.MaxConnsPerIdentity = DefaultMaxConnsPerUID
		}
	}
	if o.RootReserve <= 0 {
		o.RootReserve = o.MaxConns / DefaultRootReserveShare
	}
	if o.MaxBlocked <= 0 {
		o.MaxBlocked = DefaultMaxBlocked
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = DefaultMaxInflight
	}
}

// SlaveRequestLimit is a MaxMessageFor: slave certificates get
// DefaultSlaveMaxMessage, every other peer the listener's MaxMessage.
func SlaveRequestLimit(p Peer) int {
	if p.Identity.Role == pki.RoleSlave {
		return DefaultSlaveMaxMessage
	}
	return 0
}

// Refusal reasons, as counted by Server.Refused. They are the values of a
// metric's label, so they are snake_case.
const (
	RefusedHandshake = "handshake"
	RefusedBusy      = "busy" // no handshake turn within HandshakeQueue
	RefusedCap       = "connection_cap"
	RefusedIdentity  = "identity_budget" // MaxConnsPerIdentity reached
	RefusedAttach    = "attach"
	RefusedMessage   = "bad_message"           // too large, or not a valid request
	RefusedSlow      = "message_timeout"       // a message not whole within MessageTimeout
	RefusedSilent    = "first_request_timeout" // no whole request within FirstRequestTimeout
	// RefusedCalls counts calls, not connections: one refused past
	// MaxBlocked or MaxInflight, its connection kept.
	RefusedCalls = "calls_in_flight"
)

// RefusalReasons lists every reason Server.Refused counts, so that a metric
// can show each one from the start, at zero.
func RefusalReasons() []string {
	return []string{RefusedHandshake, RefusedBusy, RefusedCap, RefusedIdentity, RefusedAttach, RefusedMessage,
		RefusedSlow, RefusedSilent, RefusedCalls}
}

// Server accepts connections on one listener.
type Server struct {
	ln     net.Listener
	tls    *tls.Config // nil on a UNIX-domain socket
	opts   Options
	attach Attach
	log    logrus.FieldLogger

	slots  chan struct{}
	turns  chan struct{} // handshakes running now
	nextID *atomic.Uint64

	mu      sync.Mutex
	conns   map[*conn]struct{}
	held    map[string]int // connections open per identity (see budgetKey)
	nonRoot int            // connections of non-root users, on the local socket
	closed  bool
	wg      sync.WaitGroup
	refused sync.Map // reason -> *atomic.Uint64
	// congested is when a connection was last turned away for this
	// server's own slowness (see Congested), unix ns; 0 for never.
	congested atomic.Int64

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
	opts.defaults(tlsConf == nil)
	if tlsConf == nil {
		if _, ok := ln.(*net.UnixListener); !ok {
			return nil, fmt.Errorf("serve %s without TLS: only a UNIX-domain socket may do that", ln.Addr())
		}
	}
	return &Server{
		ln: ln, tls: tlsConf, opts: opts, attach: attach, log: log,
		slots:  make(chan struct{}, opts.MaxConns),
		turns:  make(chan struct{}, opts.MaxHandshakes),
		nextID: &connIDs,
		conns:  make(map[*conn]struct{}),
		held:   make(map[string]int),
	}, nil
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Congested is when this server last turned a connection away for its own
// slowness: no handshake turn within HandshakeQueue (busy), or a handshake
// not finished within HandshakeTimeout. The zero time if never. A peer
// turned away then may be alive and trying: whoever judges peers by their
// calls should wait until the door has been open a while.
func (s *Server) Congested() time.Time {
	if ns := s.congested.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Refused counts connections refused for a reason since the start (and,
// for RefusedCalls, calls).
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
	if reason == RefusedBusy {
		s.congested.Store(now.UnixNano())
	}
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
	what := "connection"
	if reason == RefusedCalls {
		what = "call"
	}
	f := s.log.WithFields(logrus.Fields{"peer": addr, "reason": reason})
	if quiet > 0 {
		f.WithField("not_logged", quiet).Warnf("refused %s: %v (and %d earlier refusals not logged: more than %d a second)", what, err, quiet, refusalLogRate)
		return
	}
	f.Warnf("refused %s: %v", what, err)
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
		// A slot is taken before the handshake: unauthenticated peers are
		// bounded by the cap and the handshake deadline alone (a flood of
		// half-open connections holds at most MaxConns slots, each for at
		// most HandshakeTimeout); the identity budgets apply once the
		// peer is known.
		select {
		case s.slots <- struct{}{}:
		default:
			s.refuse(RefusedCap, raw.RemoteAddr().String(), fmt.Errorf("%d connections open, the cap", s.opts.MaxConns))
			raw.Close()
			continue
		}
		c := &conn{raw: raw, rw: raw, idle: s.opts.IdleTimeout, write: s.opts.WriteTimeout,
			message: s.opts.MessageTimeout, done: make(chan struct{})}
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

// turn waits up to HandshakeQueue for a handshake's turn, and says whether
// it got one; the caller gives it back after the handshake.
func (s *Server) turn(ctx context.Context) bool {
	select {
	case s.turns <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(s.opts.HandshakeQueue)
	defer t.Stop()
	select {
	case s.turns <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (s *Server) handle(ctx context.Context, c *conn) {
	// A connection that gets as far as serving requests is ended by
	// whichever goroutine is reading it when reading fails (see reader), so
	// the release is not deferred.
	release := func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.unbudget(c)
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
	r := &reader{srv: rpc.NewServer(), conn: c, inline: s.opts.Inline, max: int32(s.opts.MaxInflight)}
	peer := Peer{ConnID: s.nextID.Add(1), Addr: c.raw.RemoteAddr().String(), Done: c.done, Block: func() error { return nil },
		GaveUp: c.gaveUp.Load}
	if s.opts.Inline {
		r.max = int32(s.opts.MaxBlocked)
		peer.Block = r.handoff
	}
	if s.tls != nil {
		if !s.turn(ctx) {
			s.refuse(RefusedBusy, peer.Addr, fmt.Errorf("%d TLS handshakes already running, none done within %v: the peer should retry later", s.opts.MaxHandshakes, s.opts.HandshakeQueue))
			return
		}
		tc := tls.Server(c.raw, s.tls)
		hctx, cancel := context.WithTimeout(ctx, s.opts.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		<-s.turns
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("TLS handshake not finished within %v", s.opts.HandshakeTimeout)
				s.congested.Store(time.Now().UnixNano())
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
	c.startFirst(s.opts.FirstRequestTimeout)
	s.mu.Lock()
	c.peer = peer
	reason, err := s.budget(c)
	s.mu.Unlock()
	if err != nil {
		s.refuse(reason, peer.Addr, err)
		return
	}
	detach, err := s.attach(r.srv, peer)
	if err != nil {
		s.refuse(RefusedAttach, peer.Addr, err)
		return
	}
	limit := s.opts.MaxMessage
	if s.opts.MaxMessageFor != nil {
		if n := s.opts.MaxMessageFor(peer); n > 0 {
			limit = n
		}
	}
	r.codec = rpcdef.NewTimedServerCodec(c, limit, c)
	r.refuse = func(err error) {
		s.refuse(RefusedCalls, peer.Addr, fmt.Errorf("%s: %w", peer.Identity, err))
	}
	r.finish = func() {
		closed := fmt.Sprintf("closed connection of %s", peer.Identity)
		if err := rpcdef.ReadError(r.codec); err != nil {
			s.refuse(RefusedMessage, peer.Addr, fmt.Errorf("%s: %w", closed, err))
		}
		switch c.expired {
		case RefusedSlow:
			s.refuse(RefusedSlow, peer.Addr, fmt.Errorf("%s: a message was not all there %v after its first byte", closed, s.opts.MessageTimeout))
		case RefusedSilent:
			s.refuse(RefusedSilent, peer.Addr, fmt.Errorf("%s: no whole request within %v of connecting", closed, s.opts.FirstRequestTimeout))
		}
		if detach != nil {
			detach()
		}
		release()
	}
	served = true
	r.run()
}

// budgetKey is what a connection's budget is counted under: its
// certificate identity, or its uid on the local socket; "" for root, who
// has none.
func budgetKey(p Peer) string {
	if !p.Local {
		return "id:" + p.Identity.String()
	}
	if p.UID == 0 {
		return ""
	}
	return fmt.Sprintf("uid:%d", p.UID)
}

// budget counts c against its peer's share of the cap, or says why it is
// refused. s.mu is held.
func (s *Server) budget(c *conn) (string, error) {
	p := c.peer
	key := budgetKey(p)
	if key == "" {
		return "", nil
	}
	if n := s.held[key]; n >= s.opts.MaxConnsPerIdentity {
		who := p.Identity.String()
		if p.Local {
			who = fmt.Sprintf("uid %d", p.UID)
		}
		return RefusedIdentity, fmt.Errorf("%s already holds %d connections, the most one identity may: close some (or find what leaks them)", who, n)
	}
	if p.Local {
		if most := s.opts.MaxConns - s.opts.RootReserve; s.nonRoot >= most {
			return RefusedCap, fmt.Errorf("%d connections open, the cap for non-root users (the other %d are kept for root)", s.nonRoot, s.opts.RootReserve)
		}
		s.nonRoot++
	}
	s.held[key]++
	c.budgeted = key
	return "", nil
}

// unbudget gives c's share back. s.mu is held.
func (s *Server) unbudget(c *conn) {
	key := c.budgeted
	if key == "" {
		return
	}
	c.budgeted = ""
	if c.peer.Local {
		s.nonRoot--
	}
	if s.held[key]--; s.held[key] <= 0 {
		delete(s.held, key)
	}
}

// reader serves one connection's requests. Each handler runs on the
// goroutine that read its request; before it runs, another goroutine reads
// on (hands off): at once without Options.Inline, which is net/rpc's
// goroutine per request, and with it only when the handler calls
// Peer.Block. A goroutine that handed off ends once its handler has
// returned and its reply is written. At most max goroutines of a
// connection have handed off and are in their handlers at once: past it a
// call is refused. The goroutine reading when the stream ends finishes the
// connection, after every handler has returned.
type reader struct {
	srv    *rpc.Server
	conn   *conn
	codec  rpc.ServerCodec
	inline bool
	max    int32           // MaxBlocked with inline, MaxInflight without
	refuse func(err error) // counts and logs a refused call
	finish func()
	cur    *turn          // the reading goroutine's
	calls  sync.WaitGroup // goroutines that handed off and have not ended
	away   atomic.Int32   // how many of those are still in their handlers
}

// turn is the codec one reading goroutine serves its requests with: the
// connection's, and what this goroutine's call holds of the cap. Being one
// per goroutine, it tells a handed-off call's reply from the others, so the
// call's place is given back before its reply is written, and a peer that
// sends its next call on seeing the reply finds the place free.
type turn struct {
	r     *reader
	away  bool // this goroutine has handed off: its call holds a place
	given bool // and has given it back
	busy  bool // ReadRequestBody refused the call: ServeRequest's error leaves the stream readable
}

func (r *reader) run() {
	t := &turn{r: r}
	r.cur = t
	for {
		err := r.srv.ServeRequest(t)
		if t.away {
			t.give()
			r.calls.Done() // another goroutine reads now
			return
		}
		// ServeRequest has already answered a call to an unknown method,
		// and one refused for the calls in flight; any other error means
		// the stream can no longer be read.
		if err != nil && !t.busy && !unknownMethod(err) {
			r.codec.Close() // wakes the handlers waiting on Peer.Done
			r.calls.Wait()
			r.finish()
			return
		}
		t.busy = false
	}
}

// handoff starts another goroutine reading the connection, unless max
// calls have handed off and are still in their handlers. It runs on the
// reading goroutine.
func (r *reader) handoff() error {
	if n := r.away.Add(1); n > r.max {
		r.away.Add(-1)
		var err error
		if r.inline {
			err = rpcdef.Errorf(rpcdef.CodeUnavailable, "%d calls already waiting on this connection (the limit): wait for one to return", r.max)
		} else {
			err = rpcdef.Errorf(rpcdef.CodeUnavailable, "%d calls already in flight on this connection (the limit): wait for one to return", r.max)
		}
		r.refuse(err)
		return err
	}
	r.cur.away = true
	r.calls.Add(1)
	go r.run()
	return nil
}

// give gives back the place of a call that handed off.
func (t *turn) give() {
	if t.away && !t.given {
		t.given = true
		t.r.away.Add(-1)
	}
}

func (t *turn) ReadRequestHeader(req *rpc.Request) error { return t.r.codec.ReadRequestHeader(req) }

func (t *turn) ReadRequestBody(body any) error {
	if err := t.r.codec.ReadRequestBody(body); err != nil {
		return err
	}
	t.r.conn.requested()
	if body == nil || t.r.inline {
		// A call net/rpc answers itself (an unknown method), or one whose
		// handler runs on this goroutine.
		return nil
	}
	if err := t.r.handoff(); err != nil {
		t.busy = true
		return err // answered at once by ServeRequest, without the handler
	}
	return nil
}

// WriteResponse is called on the goroutine that read the call.
func (t *turn) WriteResponse(resp *rpc.Response, body any) error {
	t.give()
	return t.r.codec.WriteResponse(resp, body)
}

func (t *turn) Close() error { return t.r.codec.Close() }

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
// The read deadline has three spans. Until the first request has been read
// whole, it is fixed at firstBy. While a message arrives (the codec calls
// MessageStarted and MessageEnded, see rpcdef.MessageTimer), it is fixed at
// the message's first byte plus the message timeout (or firstBy, if
// sooner), however the bytes trickle in. Between messages it is the idle
// timeout from the last read. The idle deadline is moved only once it is a
// sixteenth of its span old: moving it is a timer update in the runtime,
// and a heartbeat's call reads and writes several times. So a connection
// is closed after between 15/16 and all of its idle time without a
// message, and a write may get 1/16 less than the write timeout.
type conn struct {
	peer        Peer   // set once known, under Server.mu
	budgeted    string // the budget it is counted in (see budgetKey), under Server.mu
	raw, rw     net.Conn
	idle, write time.Duration
	message     time.Duration
	done        chan struct{}
	once        sync.Once

	// gaveUp: the read that ended the connection returned at once, right
	// after a read that returned data (see Peer.GaveUp).
	gaveUp atomic.Bool

	// The reading goroutine's alone:
	read      bool      // the last Read returned data
	firstBy   time.Time // the first request is due by then; zero once read
	readSet   time.Time // when the idle deadline was last moved; zero: at the next Read
	inMessage bool      // the deadline is the current message's
	why       string    // the refusal reason of the deadline set now; "" for idle
	expired   string    // the reason of the deadline that ended reading, if one did

	writeMu  sync.Mutex
	writeSet time.Time // when the write deadline was last moved
}

// setRead fixes the read deadline at t, and why it is there.
func (c *conn) setRead(t time.Time, why string) {
	c.why = why
	c.raw.SetReadDeadline(t)
}

// startFirst gives the connection d for its first whole request.
func (c *conn) startFirst(d time.Duration) {
	c.firstBy = time.Now().Add(d)
	c.setRead(c.firstBy, RefusedSilent)
}

// requested says a request has been read whole: the idle deadline now
// applies between messages.
func (c *conn) requested() {
	if !c.firstBy.IsZero() {
		c.firstBy = time.Time{}
		c.readSet = time.Time{}
	}
}

// MessageStarted fixes the deadline for the rest of the message.
func (c *conn) MessageStarted() {
	c.inMessage = true
	by, why := time.Now().Add(c.message), RefusedSlow
	if !c.firstBy.IsZero() && c.firstBy.Before(by) {
		by, why = c.firstBy, RefusedSilent
	}
	c.setRead(by, why)
}

// MessageEnded puts back the deadline between messages.
func (c *conn) MessageEnded() {
	c.inMessage = false
	if c.firstBy.IsZero() {
		c.readSet = time.Time{} // the idle deadline, at the next Read
	} else {
		c.setRead(c.firstBy, RefusedSilent)
	}
}

func (c *conn) Read(p []byte) (int, error) {
	if !c.inMessage && c.firstBy.IsZero() {
		if now := time.Now(); now.Sub(c.readSet) >= c.idle/16 {
			c.readSet = now
			c.setRead(now.Add(c.idle), "")
		}
	}
	start := time.Now()
	n, err := c.rw.Read(p)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.expired = c.why
		} else if c.read && time.Since(start) < queuedClose {
			c.gaveUp.Store(true)
		}
		c.once.Do(func() { close(c.done) })
	}
	c.read = n > 0
	return n, err
}

// queuedClose: a Read that ends in an error this soon found the peer's
// close already queued behind what it read before.
const queuedClose = time.Millisecond

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

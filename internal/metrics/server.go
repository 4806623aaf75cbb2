package metrics

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// maxConns bounds the connections one HTTP listener serves at once; past it,
// new ones wait in the kernel's accept queue.
const maxConns = 64

// Server is a daemon's HTTP listener: plain HTTP on loopback for /metrics
// (and the master's dashboard), or HTTPS with mutual TLS.
type Server struct {
	ln     net.Listener
	srv    *http.Server
	scheme string
}

// Listen binds addr, so that a bind error shows at once and port 0 works;
// Run serves. With tlsConf each connection must complete that TLS handshake
// first. log gets the server's own errors (failed handshakes, say).
func Listen(addr string, tlsConf *tls.Config, h http.Handler, log logrus.FieldLogger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for http on %s: %w", addr, err)
	}
	s := &Server{ln: &limitListener{Listener: ln, slots: make(chan struct{}, maxConns), done: make(chan struct{})}, scheme: "http"}
	if tlsConf != nil {
		s.ln, s.scheme = tls.NewListener(s.ln, tlsConf), "https"
	}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second, // also bounds the TLS handshake
		IdleTimeout:       time.Minute,
		// No WriteTimeout: an event stream lasts as long as its page is
		// open. Its handler sets a deadline on each write instead.
		ErrorLog: newErrorLog(log),
	}
	return s, nil
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the server's root, as a browser would open it.
func (s *Server) URL() string { return s.scheme + "://" + s.ln.Addr().String() + "/" }

// Run serves until ctx ends, then closes every connection, event streams
// included.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("serve http on %s: %w", s.ln.Addr(), err)
}

// Close stops the listener and closes every connection. It is safe to call
// twice, and before Run.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.ln.Close() // if Serve never ran, Close did not know the listener
	return err
}

// limitListener holds at most cap(slots) connections at once.
type limitListener struct {
	net.Listener
	slots  chan struct{}
	done   chan struct{} // closed by Close, so that a waiting Accept returns
	closed sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// newErrorLog turns net/http's error log into warnings on log.
func newErrorLog(l logrus.FieldLogger) *log.Logger {
	return log.New(logWriter{l}, "", 0)
}

type logWriter struct{ log logrus.FieldLogger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}

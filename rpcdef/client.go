package rpcdef

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"sync"
	"syscall"
	"time"
)

// DefaultCallTimeout bounds a call whose context has no deadline.
const DefaultCallTimeout = 5 * time.Second

// Dialer opens a connection to a server, finishing any handshake.
type Dialer func(ctx context.Context) (net.Conn, error)

// DialTLS returns a Dialer for a TLS server at addr. The handshake is bounded
// by the context.
func DialTLS(addr string, conf *tls.Config) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, conf)
		if err := c.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		return c, nil
	}
}

// DialUnix returns a Dialer for a server on a UNIX-domain socket.
func DialUnix(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// Conn is a reconnecting net/rpc client. Every call has a deadline: net/rpc
// has none, so Call sends with Client.Go and waits on the context, and closes
// the connection when the deadline passes. A connection that broke is
// replaced on the next call.
type Conn struct {
	dial       Dialer
	target     string
	maxMessage int

	mu     sync.Mutex
	client *rpc.Client
	dialed chan struct{} // closed when a dial in progress ends
}

// NewConn makes a client that dials lazily, at its first call. target names
// the server in errors.
func NewConn(target string, dial Dialer) *Conn {
	return &Conn{dial: dial, target: target}
}

// Target is what the connection reaches, as given to NewConn.
func (c *Conn) Target() string { return c.target }

// Call invokes method and waits for its reply or the context's end.
func (c *Conn) Call(ctx context.Context, method string, args, reply any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultCallTimeout)
		defer cancel()
	}
	for attempt := 0; ; attempt++ {
		cl, fresh, err := c.get(ctx)
		if err != nil {
			return err
		}
		call := cl.Go(method, args, reply, make(chan *rpc.Call, 1))
		select {
		case <-call.Done:
			if call.Error == nil {
				return nil
			}
			if lost(call.Error) {
				c.drop(cl)
				// A connection found dead before the request went out is
				// replaced once; a fresh one that fails is reported.
				if errors.Is(call.Error, rpc.ErrShutdown) && !fresh && attempt == 0 {
					continue
				}
				return fmt.Errorf("call %s on %s: connection lost: %w", method, c.target, call.Error)
			}
			return fromWire(call.Error)
		case <-ctx.Done():
			c.drop(cl)
			// net/rpc's reader may be decoding into reply right now. Closing
			// the connection ends every pending call, so this wait is short,
			// and afterwards nothing writes to reply behind the caller's back.
			<-call.Done
			return fmt.Errorf("call %s on %s: %w", method, c.target, ctx.Err())
		}
	}
}

// lost says a call failed because its connection did: it ended, or a write
// to it failed (the peer closed it, say after a request over its limit).
// Such a connection is dropped, so the next call dials again instead of
// failing the same way for ever.
func lost(err error) bool {
	var op *net.OpError
	return errors.Is(err, rpc.ErrShutdown) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &op)
}

// get returns the current client, dialling one if there is none.
func (c *Conn) get(ctx context.Context) (*rpc.Client, bool, error) {
	for {
		c.mu.Lock()
		if c.client != nil {
			cl := c.client
			c.mu.Unlock()
			return cl, false, nil
		}
		if wait := c.dialed; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, false, fmt.Errorf("connect to %s: %w", c.target, ctx.Err())
			}
		}
		done := make(chan struct{})
		c.dialed = done
		c.mu.Unlock()

		conn, err := c.dial(ctx)
		c.mu.Lock()
		c.dialed = nil
		close(done)
		if err != nil {
			c.mu.Unlock()
			return nil, false, fmt.Errorf("connect to %s: %w", c.target, err)
		}
		c.client = rpc.NewClientWithCodec(NewClientCodec(conn, c.maxMessage))
		cl := c.client
		c.mu.Unlock()
		return cl, true, nil
	}
}

// drop closes cl if it is still the current client.
func (c *Conn) drop(cl *rpc.Client) {
	c.mu.Lock()
	if c.client == cl {
		c.client = nil
	}
	c.mu.Unlock()
	cl.Close()
}

// Close closes the connection. A later call dials again.
func (c *Conn) Close() error {
	c.mu.Lock()
	cl := c.client
	c.client = nil
	c.mu.Unlock()
	if cl != nil {
		return cl.Close()
	}
	return nil
}

// Ping calls service's Null procedure (every muster service answers
// NAME.Null) and returns the round trip of the call alone, after connecting.
func Ping(ctx context.Context, c *Conn, service string) (time.Duration, error) {
	if _, _, err := c.get(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := c.Call(ctx, service+".Null", &Empty{}, &Empty{}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

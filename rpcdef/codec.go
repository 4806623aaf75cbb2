package rpcdef

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"sync"
)

// DefaultMaxMessage bounds one request or response on the wire. The largest
// legitimate message is a member list of a big cluster; anything past this is
// refused before it is decoded.
const DefaultMaxMessage = 16 << 20

// ErrMessageTooLarge is returned when a peer sends a message over the limit.
var ErrMessageTooLarge = errors.New("message exceeds the size limit")

// limitedReader counts the bytes of the message being read and fails once
// they pass the limit. The count is reset at the start of every message; the
// decoder's read-ahead buffer makes the bound approximate by at most its size.
type limitedReader struct {
	r     io.Reader
	limit int64
	n     int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n > l.limit {
		return 0, fmt.Errorf("%w (%d bytes)", ErrMessageTooLarge, l.limit)
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	return n, err
}

func (l *limitedReader) reset() { l.n = 0 }

// serverCodec is net/rpc's gob codec with a per-message size limit.
type serverCodec struct {
	rwc    io.ReadWriteCloser
	lim    *limitedReader
	dec    *gob.Decoder
	enc    *gob.Encoder
	encBuf *bufio.Writer
	mu     sync.Mutex // serialises writes and close
	closed bool
	err    error // why reading stopped, if it was not the peer going away
}

// NewServerCodec returns the codec every muster server speaks. maxMessage
// <= 0 means DefaultMaxMessage.
func NewServerCodec(conn io.ReadWriteCloser, maxMessage int) rpc.ServerCodec {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessage
	}
	lim := &limitedReader{r: conn, limit: int64(maxMessage)}
	buf := bufio.NewWriter(conn)
	return &serverCodec{rwc: conn, lim: lim, dec: gob.NewDecoder(bufio.NewReader(lim)), enc: gob.NewEncoder(buf), encBuf: buf}
}

func (c *serverCodec) ReadRequestHeader(r *rpc.Request) error {
	if c.err != nil {
		// The stream is broken (a body net/rpc answered with an error was
		// malformed): end the connection rather than read on.
		return c.err
	}
	c.lim.reset()
	return c.note(c.dec.Decode(r))
}

func (c *serverCodec) ReadRequestBody(body any) error {
	return c.note(c.dec.Decode(body))
}

// note keeps the first error that is the peer's fault: a message too large
// or malformed, rather than the connection ending.
func (c *serverCodec) note(err error) error {
	if err == nil || c.err != nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return err
	}
	c.err = err
	return err
}

// ReadError says why a server codec stopped reading when the peer sent
// something it refused (too large, or not a valid message); nil otherwise.
func ReadError(c rpc.ServerCodec) error {
	if sc, ok := c.(*serverCodec); ok {
		return sc.err
	}
	return nil
}

func (c *serverCodec) WriteResponse(r *rpc.Response, body any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return io.ErrClosedPipe
	}
	if err := c.enc.Encode(r); err != nil {
		if c.encBuf.Flush() == nil {
			c.closeLocked()
		}
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		if c.encBuf.Flush() == nil {
			c.closeLocked()
		}
		return err
	}
	return c.encBuf.Flush()
}

func (c *serverCodec) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	return c.closeLocked()
}

func (c *serverCodec) closeLocked() error {
	c.closed = true
	return c.rwc.Close()
}

// clientCodec is the client side of serverCodec.
type clientCodec struct {
	rwc    io.ReadWriteCloser
	lim    *limitedReader
	dec    *gob.Decoder
	enc    *gob.Encoder
	encBuf *bufio.Writer
}

// NewClientCodec returns the codec every muster client speaks.
func NewClientCodec(conn io.ReadWriteCloser, maxMessage int) rpc.ClientCodec {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessage
	}
	lim := &limitedReader{r: conn, limit: int64(maxMessage)}
	buf := bufio.NewWriter(conn)
	return &clientCodec{rwc: conn, lim: lim, dec: gob.NewDecoder(bufio.NewReader(lim)), enc: gob.NewEncoder(buf), encBuf: buf}
}

// WriteRequest is called by net/rpc with its sending mutex held.
func (c *clientCodec) WriteRequest(r *rpc.Request, body any) error {
	if err := c.enc.Encode(r); err != nil {
		return err
	}
	if err := c.enc.Encode(body); err != nil {
		return err
	}
	return c.encBuf.Flush()
}

func (c *clientCodec) ReadResponseHeader(r *rpc.Response) error {
	c.lim.reset()
	return c.dec.Decode(r)
}

func (c *clientCodec) ReadResponseBody(body any) error {
	return c.dec.Decode(body)
}

func (c *clientCodec) Close() error { return c.rwc.Close() }

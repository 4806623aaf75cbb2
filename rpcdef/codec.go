package rpcdef

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"reflect"
	"slices"
	"sync"
)

// DefaultMaxMessage bounds each gob message on the wire (a request or reply
// is a header message and a body message, with the type definitions once per
// connection). The largest legitimate message is the member list of a big
// cluster; a message claiming more is refused before it is read.
const DefaultMaxMessage = 16 << 20

// MaxTypeDefinitions and MaxTypeDefinitionBytes bound the gob type
// definitions one stream may carry, in number and in bytes (each message
// that defines a type, length prefix not counted). encoding/gob keeps every
// definition it receives for as long as the stream lasts, so without them a
// peer could send any number of small messages, each defining a fresh type
// and none carrying a value, and grow the reader's memory without end.
//
// muster's own streams send each type once, at its first use: every
// request type of ClusterService, Registry and the view on one stream is
// 21 definitions of 1,131 bytes, every reply type 24 of 1,539 bytes
// (TestOwnTypeDefinitions measures them; a real connection speaks to one
// service and sends fewer). The caps are five and forty times that.
const (
	MaxTypeDefinitions     = 128
	MaxTypeDefinitionBytes = 64 << 10
)

// ErrMessageTooLarge is returned when a peer sends a message over the limit.
var ErrMessageTooLarge = errors.New("message exceeds the size limit")

// ErrTooManyTypes is returned when a peer defines more gob types, or more
// bytes of them, than MaxTypeDefinitions and MaxTypeDefinitionBytes allow.
var ErrTooManyTypes = errors.New("too many type definitions on one connection")

// ErrInterfaceType is returned when a peer sends a gob interface value, or
// defines a type that holds one. muster's contract has none, and gob reads
// type definitions nested in an interface value from inside a message,
// where the framed reader cannot count them: each would be kept for the
// life of the connection like any other.
var ErrInterfaceType = errors.New("gob interface types are not part of muster's contract")

// MessageTimer is told when a message has started to arrive and when its
// last byte has, so that it can bound the time between the two (a peer that
// sends a large length prefix and then one byte at a time would otherwise
// hold the message's buffer for as long as it likes). It is called on the
// goroutine reading the stream, only for a message not already buffered
// whole when its first byte is read: a message that arrived at once costs
// nothing. MessageEnded is not called for a message the stream ended in.
type MessageTimer interface {
	MessageStarted()
	MessageEnded()
}

// framedReader passes a gob stream through and reads each message's length
// prefix itself, so that a message claiming more than limit bytes is refused
// before gob sees the claim: gob allocates from the claim, up to 10 MiB,
// before it finds the bytes missing. It also counts the messages that
// define a type against MaxTypeDefinitions and MaxTypeDefinitionBytes, and
// refuses any that holds an interface (see ErrInterfaceType), since gob
// keeps every definition for the life of the stream. It implements
// io.ByteReader so that gob reads it directly instead of adding a buffer of
// its own.
type framedReader struct {
	r       *bufio.Reader
	limit   uint64
	left    uint64  // payload bytes of the current message still to pass on
	pending []byte  // a checked length prefix not yet passed on
	prefix  [9]byte // room for the longest prefix
	timer   MessageTimer
	timing  bool // timer has been told the current message started
	// The type definitions seen so far: messages, and their bytes.
	defs, defBytes uint64
	// refused is why the stream was refused, for good: a reader that read
	// on past it (net/rpc's client does, after a body that failed) would
	// hand gob the refused message.
	refused error
}

func newFramedReader(r io.Reader, limit int, timer MessageTimer) *framedReader {
	return &framedReader{r: bufio.NewReader(r), limit: uint64(limit), timer: timer}
}

// typeID reads, from the read-ahead, the type id a message of count bytes
// starts with: gob starts each message with a signed type id, negative for
// a definition. A signed int is sent as an unsigned one with the sign in
// the low bit; an unsigned one is a byte below 0x80, or a byte count,
// negated, and that many bytes big-endian. It returns whether the message
// defines a type, and the id of a value's type (-1 if not a value). A
// payload too short for its id is neither: gob finds it
// malformed itself.
func (f *framedReader) typeID(count uint64) (def bool, id int64, err error) {
	b, err := f.r.Peek(1)
	if err != nil {
		return false, -1, err
	}
	if b[0] < 0x80 {
		return b[0]&1 == 1, int64(b[0] >> 1), nil
	}
	size := -int(int8(b[0]))
	if size < 1 || size > 8 || uint64(1+size) > count {
		return false, -1, nil
	}
	b, err = f.r.Peek(1 + size)
	if err != nil {
		return false, -1, err
	}
	var u uint64 // gob reads a value sent in more bytes than it needs too
	for _, c := range b[1 : 1+size] {
		u = u<<8 | uint64(c)
	}
	if u&1 == 1 {
		return true, -1, nil
	}
	return false, int64(u >> 1), nil
}

// typeRefs reads a gob type definition (a message's payload: the negated
// id, then gob's wireType) and returns the ids of the types it refers to,
// or false if it is not one. wireType is a struct with one of ArrayT,
// SliceT, StructT, MapT, GobEncoderT, BinaryMarshalerT or TextMarshalerT
// set; each is a struct that starts with CommonType{Name, Id}, then the
// types it is made of: an array's Elem and Len, a slice's Elem, a struct's
// Field list of {Name, Id}, a map's Key and Elem.
func typeRefs(p []byte) ([]int64, bool) {
	s := &gobScan{b: p}
	s.int() // the negated id
	var refs []int64
	s.fields(func(kind int) {
		switch kind {
		case 0: // ArrayT
			s.fields(func(f int) {
				switch f {
				case 0:
					s.commonType()
				case 1:
					refs = append(refs, s.int())
				case 2:
					s.int() // Len
				default:
					s.bad = true
				}
			})
		case 1: // SliceT
			s.fields(func(f int) {
				switch f {
				case 0:
					s.commonType()
				case 1:
					refs = append(refs, s.int())
				default:
					s.bad = true
				}
			})
		case 2: // StructT
			s.fields(func(f int) {
				switch f {
				case 0:
					s.commonType()
				case 1:
					n := s.uint()
					for i := uint64(0); i < n && !s.bad; i++ {
						s.fields(func(f int) {
							switch f {
							case 0:
								s.skipString() // Name
							case 1:
								refs = append(refs, s.int())
							default:
								s.bad = true
							}
						})
					}
				default:
					s.bad = true
				}
			})
		case 3: // MapT
			s.fields(func(f int) {
				switch f {
				case 0:
					s.commonType()
				case 1, 2:
					refs = append(refs, s.int())
				default:
					s.bad = true
				}
			})
		case 4, 5, 6: // a GobEncoder or a marshaler: its CommonType only
			s.fields(func(f int) {
				if f == 0 {
					s.commonType()
				} else {
					s.bad = true
				}
			})
		default:
			s.bad = true
		}
	})
	return refs, !s.bad && len(s.b) == 0
}

// gobScan reads gob's encoding of values whose type it knows.
type gobScan struct {
	b   []byte
	bad bool // the input ended early or was not what was expected
}

func (s *gobScan) uint() uint64 {
	if s.bad || len(s.b) == 0 {
		s.bad = true
		return 0
	}
	c := s.b[0]
	if c < 0x80 {
		s.b = s.b[1:]
		return uint64(c)
	}
	size := -int(int8(c))
	if size < 1 || size > 8 || len(s.b) < 1+size {
		s.bad = true
		return 0
	}
	var v uint64
	for _, c := range s.b[1 : 1+size] {
		v = v<<8 | uint64(c)
	}
	s.b = s.b[1+size:]
	return v
}

func (s *gobScan) int() int64 {
	u := s.uint()
	if u&1 == 1 {
		return ^int64(u >> 1)
	}
	return int64(u >> 1)
}

func (s *gobScan) skipString() {
	n := s.uint()
	if s.bad || n > uint64(len(s.b)) {
		s.bad = true
		return
	}
	s.b = s.b[n:]
}

// commonType skips a CommonType{Name string; Id typeId}.
func (s *gobScan) commonType() {
	s.fields(func(f int) {
		switch f {
		case 0:
			s.skipString()
		case 1:
			s.int()
		default:
			s.bad = true
		}
	})
}

// fields reads a struct: for each field sent, its number as a delta from
// the previous one, then its value, read by field; a delta of 0 ends it.
func (s *gobScan) fields(field func(n int)) {
	n := -1
	for !s.bad {
		d := s.uint()
		if s.bad || d == 0 {
			return
		}
		if d > 16 {
			s.bad = true
			return
		}
		n += int(d)
		field(n)
	}
}

// countType counts a type definition of count bytes against the caps.
func (f *framedReader) countType(count uint64) error {
	f.defs++
	f.defBytes += count
	if f.defs > MaxTypeDefinitions {
		return fmt.Errorf("%w: the peer sent more than %d gob type definitions; muster's own streams send at most 24, so the peer is not a muster daemon or client, or is broken",
			ErrTooManyTypes, MaxTypeDefinitions)
	}
	if f.defBytes > MaxTypeDefinitionBytes {
		return fmt.Errorf("%w: the peer sent %d bytes of gob type definitions, more than the %d allowed; muster's own streams send under 2 KiB, so the peer is not a muster daemon or client, or is broken",
			ErrTooManyTypes, f.defBytes, MaxTypeDefinitionBytes)
	}
	return nil
}

// started tells the timer that a message has begun, unless the next want
// bytes of it are already buffered.
func (f *framedReader) started(want int) {
	if f.timer != nil && !f.timing && f.r.Buffered() < want {
		f.timing = true
		f.timer.MessageStarted()
	}
}

// ended tells the timer that the current message is all read.
func (f *framedReader) ended() {
	if f.timing {
		f.timing = false
		f.timer.MessageEnded()
	}
}

// next reads and checks the length prefix of the next message.
func (f *framedReader) next() error {
	b, err := f.r.ReadByte()
	if err != nil {
		return err
	}
	f.prefix[0] = b
	n, count := 1, uint64(b)
	if b >= 0x80 { // gob: a byte count, negated, then the value big-endian
		size := int(-int8(b))
		if size < 1 || size > 8 {
			return fmt.Errorf("gob: bad message length prefix %#x", b)
		}
		f.started(size)
		if _, err := io.ReadFull(f.r, f.prefix[1:1+size]); err != nil {
			return err
		}
		count = 0
		for _, c := range f.prefix[1 : 1+size] {
			count = count<<8 | uint64(c)
		}
		n += size
	}
	if count > f.limit {
		return fmt.Errorf("%w: a message claims %d bytes, the limit is %d", ErrMessageTooLarge, count, f.limit)
	}
	f.pending, f.left = f.prefix[:n], count
	if count == 0 {
		f.ended()
		return nil
	}
	f.started(int(count))
	def, id, err := f.typeID(count)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if !def {
		if id == gobInterface {
			return fmt.Errorf("%w: the peer sent a value of gob's interface type", ErrInterfaceType)
		}
		return nil
	}
	if err := f.countType(count); err != nil {
		return err
	}
	return f.checkDefinition(n, count)
}

// errBadDefinition is a type definition the framed reader cannot read.
var errBadDefinition = errors.New("gob: a type definition muster cannot read: the peer is not a muster daemon or client, or is broken")

// gobInterface is gob's type id of an interface value: a type that holds
// one refers to it.
const gobInterface = 8

// checkDefinition reads the whole type definition of count bytes after a
// prefix of n, which countType has allowed, and refuses it if it refers
// to an interface. The message is then passed on from pending.
func (f *framedReader) checkDefinition(n int, count uint64) error {
	msg := make([]byte, n+int(count))
	copy(msg, f.prefix[:n])
	if _, err := io.ReadFull(f.r, msg[n:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	f.pending, f.left = msg, 0
	f.ended()
	refs, ok := typeRefs(msg[n:])
	if !ok {
		return errBadDefinition
	}
	if slices.Contains(refs, gobInterface) {
		return fmt.Errorf("%w: the peer defined a type that holds an interface value; muster's own types hold none, so the peer is not a muster daemon or client, or is broken",
			ErrInterfaceType)
	}
	return nil
}

func (f *framedReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if f.refused != nil {
		return 0, f.refused
	}
	if len(f.pending) == 0 && f.left == 0 {
		if err := f.next(); err != nil {
			if errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrTooManyTypes) || errors.Is(err, ErrInterfaceType) || errors.Is(err, errBadDefinition) {
				f.refused = err
			}
			return 0, err
		}
	}
	if len(f.pending) > 0 {
		n := copy(p, f.pending)
		f.pending = f.pending[n:]
		return n, nil
	}
	if uint64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= uint64(n)
	if f.left == 0 {
		f.ended()
	}
	return n, err
}

func (f *framedReader) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// largeMessage is the size past which the encoder that made a message is
// replaced: see encoder.
const largeMessage = 64 << 10

// encoder is a gob.Encoder that does not keep a large buffer. gob encodes
// each message into a buffer it keeps, at the size of the largest message
// so far, for as long as the stream lasts: one roll of 10,000 members sent
// on each of 10,000 connections would pin 15 GB. After a message larger
// than largeMessage, the encoder is replaced by a new one that is first
// taught, into io.Discard, every type the old one sent: the peer has those
// definitions already, and type ids are the same for the whole process.
type encoder struct {
	out   io.Writer
	w     countingWriter
	enc   *gob.Encoder
	types []reflect.Type // every type encoded on this stream, first use first
}

type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += len(p)
	return c.w.Write(p)
}

func newEncoder(out io.Writer) *encoder {
	e := &encoder{out: out, w: countingWriter{w: out}}
	e.enc = gob.NewEncoder(&e.w)
	return e
}

func (e *encoder) Encode(v any) error {
	if t := reflect.TypeOf(v); !slices.Contains(e.types, t) {
		e.types = append(e.types, t)
	}
	e.w.n = 0
	if err := e.enc.Encode(v); err != nil {
		return err
	}
	if e.w.n > largeMessage {
		return e.renew()
	}
	return nil
}

// renew replaces the encoder with one that knows the same types.
func (e *encoder) renew() error {
	e.w.w = io.Discard
	defer func() { e.w.w = e.out }()
	enc := gob.NewEncoder(&e.w)
	for _, t := range e.types {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if err := enc.Encode(reflect.New(t).Interface()); err != nil {
			return fmt.Errorf("gob: renew the encoder with %v: %w", t, err)
		}
	}
	e.enc = enc
	return nil
}

// serverCodec is net/rpc's gob codec with a per-message size limit.
type serverCodec struct {
	rwc    io.ReadWriteCloser
	dec    *gob.Decoder
	enc    *encoder
	encBuf *bufio.Writer
	mu     sync.Mutex // serialises writes and close
	closed bool
	err    error // why reading stopped, if it was not the peer going away
}

// NewServerCodec returns the codec every muster server speaks. maxMessage
// <= 0 means DefaultMaxMessage.
func NewServerCodec(conn io.ReadWriteCloser, maxMessage int) rpc.ServerCodec {
	return NewTimedServerCodec(conn, maxMessage, nil)
}

// NewTimedServerCodec is NewServerCodec telling timer, if not nil, when each
// request message starts and ends (see MessageTimer).
func NewTimedServerCodec(conn io.ReadWriteCloser, maxMessage int, timer MessageTimer) rpc.ServerCodec {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessage
	}
	buf := bufio.NewWriter(conn)
	return &serverCodec{rwc: conn, dec: gob.NewDecoder(newFramedReader(conn, maxMessage, timer)), enc: newEncoder(buf), encBuf: buf}
}

func (c *serverCodec) ReadRequestHeader(r *rpc.Request) error {
	if c.err != nil {
		// The stream is broken (a body net/rpc answered with an error was
		// malformed): end the connection rather than read on.
		return c.err
	}
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
	dec    *gob.Decoder
	enc    *gob.Encoder
	encBuf *bufio.Writer
}

// NewClientCodec returns the codec every muster client speaks.
func NewClientCodec(conn io.ReadWriteCloser, maxMessage int) rpc.ClientCodec {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessage
	}
	buf := bufio.NewWriter(conn)
	return &clientCodec{rwc: conn, dec: gob.NewDecoder(newFramedReader(conn, maxMessage, nil)), enc: gob.NewEncoder(buf), encBuf: buf}
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
	return c.dec.Decode(r)
}

func (c *clientCodec) ReadResponseBody(body any) error {
	return c.dec.Decode(body)
}

func (c *clientCodec) Close() error { return c.rwc.Close() }

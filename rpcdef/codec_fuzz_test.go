package rpcdef_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/rpc"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// The codec targets read the fuzzed bytes as what a peer sent before it hung
// up, with a small size limit, and check that reading them ends, does not
// panic, keeps each message within the limit, and allocates in proportion to
// the bytes read. The server's target also reads them a few bytes at a time
// and checks what its MessageTimer is told.

const (
	// fuzzMaxMessage is the limit the codecs get: small, so that a claim
	// past it stands out.
	fuzzMaxMessage = 64 << 10
	// readAhead is the size of the codec's bufio.Reader: one fill past the
	// limit is the slack the codec documents.
	readAhead = 4096
	// fuzzTimeout bounds serving one input. Reading ends at the input's end;
	// reaching this means the codec waits for something that never comes.
	fuzzTimeout = 10 * time.Second
)

// gobSliceChunk is the most encoding/gob allocates for a slice whose claimed
// length is not yet backed by data (internal/saferio's chunk, 10 MiB).
const gobSliceChunk = 10 << 20

// readAllowance is how many bytes one read of the codec may allocate, given
// how many bytes it took from the connection: a fixed part for the gob
// decoder's engines and buffers, and a generous share per byte for decoded
// values (an empty rpcdef.Member is one byte on the wire and 160 in memory).
func readAllowance(n int64) uint64 {
	const fixed, perByte = 2 << 20, 1024
	// The read-ahead may hold bytes taken by an earlier read.
	return fixed + perByte*uint64(n+readAhead)
}

// peer is the far end of a connection that sent data and hung up: reads
// return data and then io.EOF, writes are thrown away. A read gets as much
// as it asks for, as from a UNIX socket with a full buffer.
type peer struct {
	r     *bytes.Reader
	ready chan struct{} // if not nil, reads wait until it is closed
	chunk int           // if not 0, the most a read returns, as from a slow network
}

func newPeer(data []byte, ready chan struct{}) *peer {
	return &peer{r: bytes.NewReader(data), ready: ready}
}

func (p *peer) Read(b []byte) (int, error) {
	if p.ready != nil {
		<-p.ready
	}
	if p.chunk > 0 && len(b) > p.chunk {
		b = b[:p.chunk]
	}
	return p.r.Read(b)
}

func (p *peer) Write(b []byte) (int, error) { return len(b), nil }
func (p *peer) Close() error                { return nil }

// taken is how many bytes the codec has read from the peer.
func (p *peer) taken() int64 { return p.r.Size() - int64(p.r.Len()) }

// readMeter checks each read of a codec: what it allocated, and how much of
// the connection the message it belongs to has taken. net/rpc reads on one
// goroutine, one read at a time, so the meter needs no lock; its findings
// are looked at once that goroutine has stopped reading.
type readMeter struct {
	t    *testing.T
	peer *peer
	// msgStart is where the current message began: the codec's limit
	// counts from each header.
	msgStart int64
	// capAt is where the input's type definitions go over the codec's
	// caps (just past the message that does), or -1: no read may succeed
	// having taken that message.
	capAt int64
	// What an input did that is a known bug (see skipKnown).
	overdrawn, overlong string
}

func newReadMeter(t *testing.T, p *peer, data []byte) *readMeter {
	return &readMeter{t: t, peer: p, capAt: definitionCapAt(data, fuzzMaxMessage)}
}

// meter runs one read of the codec; header says it starts a message.
func (m *readMeter) meter(what string, header bool, read func() error) error {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	from := m.peer.taken()
	if header {
		m.msgStart = from
	}
	err := read()
	runtime.ReadMemStats(&after)
	n := m.peer.taken() - from
	grew := after.TotalAlloc - before.TotalAlloc
	if msg := m.peer.taken() - m.msgStart; err == nil && msg > fuzzMaxMessage+readAhead && m.overlong == "" {
		m.overlong = fmt.Sprintf("%s succeeded with %d bytes of its message read", what, msg)
	}
	// The read-ahead may hold bytes past what gob was handed.
	if err == nil && m.capAt >= 0 && m.peer.taken() > m.capAt+readAhead {
		m.t.Errorf("%s succeeded having read to byte %d; the type definitions went over the caps (%d, %d bytes) at byte %d",
			what, m.peer.taken(), rpcdef.MaxTypeDefinitions, rpcdef.MaxTypeDefinitionBytes, m.capAt)
	}
	if grew <= readAllowance(n) {
		return err
	}
	if err == nil {
		// A read that succeeded had every byte it decoded: nothing excuses it.
		m.t.Errorf("%s read %d bytes and allocated %d, more than the %d allowed", what, n, grew, readAllowance(n))
	} else if grew <= gobSliceChunk+readAllowance(n) {
		// A slice claiming more elements than its message holds: gob
		// allocates up to one chunk for it before it finds the input short.
		// The codec cannot see inside a message; the chunk is freed at once,
		// as the failed read ends the connection (see docs/SECURITY.md).
	} else if m.overdrawn == "" {
		m.overdrawn = fmt.Sprintf("%s allocated %d KiB having read %d bytes, then failed: %v", what, grew>>10, n, err)
	}
	return err
}

// skipKnown fails an input that got past the codec's size limit: a message
// that allocated more than its bytes and gob's slice chunk allow, or one
// longer than the limit. (Once bugs of the codec's byte counter, fixed by
// reading each message's length prefix before gob does.)
func (m *readMeter) skipKnown() {
	if m.overdrawn != "" {
		m.t.Fatalf("the %d-byte limit does not bound allocation: gob sizes a buffer from a length claimed on the wire "+
			"(a message's byte count, or a slice's element count) up to 10 MiB before the limit or missing data stops it: %s",
			fuzzMaxMessage, m.overdrawn)
	}
	if m.overlong != "" {
		m.t.Fatalf("the %d-byte limit is checked between reads, so one large Read passes it: %s", fuzzMaxMessage, m.overlong)
	}
}

type meteredServerCodec struct {
	rpc.ServerCodec
	*readMeter
}

func (c meteredServerCodec) ReadRequestHeader(r *rpc.Request) error {
	return c.meter("ReadRequestHeader", true, func() error { return c.ServerCodec.ReadRequestHeader(r) })
}

func (c meteredServerCodec) ReadRequestBody(body any) error {
	return c.meter("ReadRequestBody", false, func() error { return c.ServerCodec.ReadRequestBody(body) })
}

// meteredClientCodec also tells when net/rpc's reading loop has ended: it
// stops at the first header or body that does not decode.
type meteredClientCodec struct {
	rpc.ClientCodec
	*readMeter
	ended chan struct{}
	end   func() // closes ended, once
}

func newMeteredClientCodec(c rpc.ClientCodec, m *readMeter) meteredClientCodec {
	ended := make(chan struct{})
	return meteredClientCodec{c, m, ended, sync.OnceFunc(func() { close(ended) })}
}

func (c meteredClientCodec) ReadResponseHeader(r *rpc.Response) error {
	err := c.meter("ReadResponseHeader", true, func() error { return c.ClientCodec.ReadResponseHeader(r) })
	if err != nil {
		c.end()
	}
	return err
}

func (c meteredClientCodec) ReadResponseBody(body any) error {
	err := c.meter("ReadResponseBody", false, func() error { return c.ClientCodec.ReadResponseBody(body) })
	if err != nil {
		c.end()
	}
	return err
}

// fuzzCluster and fuzzRegistry take every argument type the real services
// take, under the real receiver names, and answer at once.
type fuzzCluster struct{}

func (fuzzCluster) Join(*rpcdef.JoinArgs, *rpcdef.JoinReply) error                { return nil }
func (fuzzCluster) Heartbeat(*rpcdef.HeartbeatArgs, *rpcdef.HeartbeatReply) error { return nil }
func (fuzzCluster) Report(*rpcdef.ReportArgs, *rpcdef.ReportReply) error          { return nil }
func (fuzzCluster) Leave(*rpcdef.LeaveArgs, *rpcdef.Empty) error                  { return nil }
func (fuzzCluster) Members(*rpcdef.MembersArgs, *rpcdef.MembersReply) error       { return nil }
func (fuzzCluster) Watch(*rpcdef.WatchArgs, *rpcdef.WatchReply) error             { return nil }
func (fuzzCluster) Null(*rpcdef.Empty, *rpcdef.Empty) error                       { return nil }
func (fuzzCluster) Forget(*rpcdef.ForgetArgs, *rpcdef.Empty) error                { return nil }
func (fuzzCluster) Evict(*rpcdef.EvictArgs, *rpcdef.Empty) error                  { return nil }

type fuzzRegistry struct{}

func (fuzzRegistry) Register(*rpcdef.RegisterArgs, *rpcdef.RegisterReply) error { return nil }
func (fuzzRegistry) Renew(*rpcdef.RenewArgs, *rpcdef.RenewReply) error          { return nil }
func (fuzzRegistry) Unregister(*rpcdef.UnregisterArgs, *rpcdef.Empty) error     { return nil }
func (fuzzRegistry) Lookup(*rpcdef.LookupArgs, *rpcdef.LookupReply) error       { return nil }
func (fuzzRegistry) List(*rpcdef.ListArgs, *rpcdef.ListReply) error             { return nil }
func (fuzzRegistry) Null(*rpcdef.Empty, *rpcdef.Empty) error                    { return nil }

// fuzzServer is the server every FuzzServerCodec input is served by.
var fuzzServer = sync.OnceValue(func() *rpc.Server {
	s := rpc.NewServer()
	if err := s.RegisterName(rpcdef.ClusterService, fuzzCluster{}); err != nil {
		panic(err)
	}
	if err := s.RegisterName(rpcdef.RegistryReceiver, fuzzRegistry{}); err != nil {
		panic(err)
	}
	return s
})

// fuzzTimer checks what the server codec tells its MessageTimer: a start
// and an end in turn, and never a timed span longer than one message can
// be, so that a deadline set at a message's start covers one message, not
// the stream. It is called on the reading goroutine, as the meter is.
type fuzzTimer struct {
	t     *testing.T
	peer  *peer
	open  bool
	from  int64 // bytes taken from the peer when the current message started
	spans int
}

// maxTimedSpan is the most a message's span may take from the connection:
// the message at the limit, the longest prefix, and a read-ahead's worth
// taken before the message started.
const maxTimedSpan = fuzzMaxMessage + 9 + readAhead

func (f *fuzzTimer) MessageStarted() {
	if f.open {
		f.t.Errorf("MessageStarted again at byte %d, the message started at %d not ended", f.peer.taken(), f.from)
	}
	f.open, f.from = true, f.peer.taken()
}

func (f *fuzzTimer) MessageEnded() {
	if !f.open {
		f.t.Errorf("MessageEnded at byte %d with no message started", f.peer.taken())
	}
	if n := f.peer.taken() - f.from; n > maxTimedSpan {
		f.t.Errorf("a timed message took %d bytes from the connection, more than the %d one message may", n, maxTimedSpan)
	}
	f.open = false
	f.spans++
}

func FuzzServerCodec(f *testing.F) {
	srv := fuzzServer()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newPeer(data, nil)
		// Reads of 1 to 64 bytes, chosen by the input: most messages
		// arrive in pieces, so the timer hears of them.
		p.chunk = 1 + len(data)%64
		m := newReadMeter(t, p, data)
		timer := &fuzzTimer{t: t, peer: p}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeCodec(meteredServerCodec{rpcdef.NewTimedServerCodec(p, fuzzMaxMessage, timer), m})
		}()
		select {
		case <-done:
		case <-time.After(fuzzTimeout):
			t.Fatalf("ServeCodec still runs %v after its connection's input ended", fuzzTimeout)
		}
		m.skipKnown()
	})
}

// fuzzCall is a call the client has outstanding when the fuzzed replies
// arrive: every reply type of every service.
type fuzzCall struct {
	method string
	reply  func() any
}

var fuzzCalls = []fuzzCall{
	{rpcdef.ClusterJoin, func() any { return new(rpcdef.JoinReply) }},
	{rpcdef.ClusterHeartbeat, func() any { return new(rpcdef.HeartbeatReply) }},
	{rpcdef.ClusterReport, func() any { return new(rpcdef.ReportReply) }},
	{rpcdef.ClusterMembers, func() any { return new(rpcdef.MembersReply) }},
	{rpcdef.ClusterWatch, func() any { return new(rpcdef.WatchReply) }},
	{rpcdef.RegistryRegister, func() any { return new(rpcdef.RegisterReply) }},
	{rpcdef.RegistryRenew, func() any { return new(rpcdef.RenewReply) }},
	{rpcdef.RegistryLookup, func() any { return new(rpcdef.LookupReply) }},
	{rpcdef.RegistryList, func() any { return new(rpcdef.ListReply) }},
	{rpcdef.ViewGet, func() any { return new(rpcdef.ViewReply) }},
	{rpcdef.ClusterNull, func() any { return new(rpcdef.Empty) }},
}

func FuzzClientCodec(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		// The replies are read only once every call is outstanding, so
		// that call i has sequence number i whatever the scheduling.
		p := newPeer(data, make(chan struct{}))
		m := newReadMeter(t, p, data)
		codec := newMeteredClientCodec(rpcdef.NewClientCodec(p, fuzzMaxMessage), m)
		c := rpc.NewClientWithCodec(codec)
		calls := make([]*rpc.Call, len(fuzzCalls))
		for i, fc := range fuzzCalls {
			calls[i] = c.Go(fc.method, &rpcdef.Empty{}, fc.reply(), make(chan *rpc.Call, 1))
		}
		close(p.ready)
		deadline := time.After(fuzzTimeout)
		select {
		case <-codec.ended:
		case <-deadline:
			t.Fatalf("the client still reads %v after its connection's input ended", fuzzTimeout)
		}
		for i, call := range calls {
			select {
			case <-call.Done:
			case <-deadline:
				t.Fatalf("call %d (%s) still waits %v after the client stopped reading", i, fuzzCalls[i].method, fuzzTimeout)
			}
			if call.Error != nil && call.Error.Error() == "" {
				t.Errorf("call %d (%s) failed with an empty error", i, fuzzCalls[i].method)
			}
		}
		if err := c.Close(); err != nil && !errors.Is(err, rpc.ErrShutdown) {
			t.Errorf("Close: %v", err)
		}
		m.skipKnown()
	})
}

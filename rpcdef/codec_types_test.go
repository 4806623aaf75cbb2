package rpcdef_test

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// gobMessage is one message of a gob stream as the codec frames it.
type gobMessage struct {
	end     int  // offset just past the message in the stream
	size    int  // payload bytes, the length prefix not counted
	defines bool // its type id is negative: a type definition
}

// gobMessages splits a gob stream into its messages, stopping at a message
// that is cut short or claims more than limit bytes. It reads the stream
// independently of the codec, for the tests to check the codec against.
func gobMessages(data []byte, limit int) []gobMessage {
	var out []gobMessage
	off := 0
	for off < len(data) {
		n, w, ok := gobUint(data[off:])
		if !ok || n > uint64(limit) || uint64(len(data)-off-w) < n {
			break
		}
		payload := data[off+w : off+w+int(n)]
		id, _, ok := gobUint(payload)
		off += w + int(n)
		out = append(out, gobMessage{end: off, size: int(n), defines: ok && id&1 == 1})
	}
	return out
}

// gobUint decodes gob's unsigned int at the start of b: its value, its
// width, and whether b held all of it.
func gobUint(b []byte) (uint64, int, bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	if b[0] < 0x80 {
		return uint64(b[0]), 1, true
	}
	size := -int(int8(b[0]))
	if size < 1 || size > 8 || len(b) < 1+size {
		return 0, 0, false
	}
	var v uint64
	for _, c := range b[1 : 1+size] {
		v = v<<8 | uint64(c)
	}
	return v, 1 + size, true
}

// definitionCapAt is the offset in data just past the message that takes
// its type definitions over the codec's caps, or -1 if none does.
func definitionCapAt(data []byte, limit int) int64 {
	defs, bytes := 0, 0
	for _, m := range gobMessages(data, limit) {
		if !m.defines {
			continue
		}
		defs++
		bytes += m.size
		if defs > rpcdef.MaxTypeDefinitions || bytes > rpcdef.MaxTypeDefinitionBytes {
			return int64(m.end)
		}
	}
	return -1
}

// definitions counts the type definitions in a gob stream, and their bytes.
func definitions(data []byte) (n, size int) {
	for _, m := range gobMessages(data, rpcdef.DefaultMaxMessage) {
		if m.defines {
			n++
			size += m.size
		}
	}
	return n, size
}

// wire is one direction of a connection: what is written is kept, and
// reads are served from what was written, one byte at a time, so that
// every length prefix and type id arrives split.
type wire struct {
	buf  bytes.Buffer
	sent []byte // everything written, for counting
}

func (w *wire) Write(p []byte) (int, error) {
	w.sent = append(w.sent, p...)
	return w.buf.Write(p)
}

func (w *wire) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return w.buf.Read(p)
}

func (w *wire) Close() error { return nil }

// ownRequests is every request muster's clients send, with every field
// that has a type of its own set.
func ownRequests() []struct {
	method string
	args   any
	reply  func() any
} {
	res := rpcdef.Resources{SampledAt: time.Unix(1700000000, 0), CPUCount: 2, CPUModel: "x86",
		Disks: []rpcdef.DiskUsage{{Mount: "/", Total: 10, Free: 5, UsedPercent: 50}}, Uptime: time.Hour, Procs: 99}
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "c1"}
	return []struct {
		method string
		args   any
		reply  func() any
	}{
		{rpcdef.ClusterJoin, &rpcdef.JoinArgs{Node: "node-1", Incarnation: 1, Protocol: rpcdef.ProtocolVersion}, func() any { return new(rpcdef.JoinArgs) }},
		{rpcdef.ClusterHeartbeat, &rpcdef.HeartbeatArgs{Node: "node-1", Incarnation: 1, Seq: 2}, func() any { return new(rpcdef.HeartbeatArgs) }},
		{rpcdef.ClusterReport, &rpcdef.ReportArgs{Node: "node-1", Incarnation: 1, Resources: res}, func() any { return new(rpcdef.ReportArgs) }},
		{rpcdef.ClusterLeave, &rpcdef.LeaveArgs{Node: "node-1", Incarnation: 1, Reason: "bye"}, func() any { return new(rpcdef.LeaveArgs) }},
		{rpcdef.ClusterMembers, &rpcdef.MembersArgs{Node: "node-1"}, func() any { return new(rpcdef.MembersArgs) }},
		{rpcdef.ClusterWatch, &rpcdef.WatchArgs{After: 3, Wait: time.Second}, func() any { return new(rpcdef.WatchArgs) }},
		{rpcdef.ClusterForget, &rpcdef.ForgetArgs{Node: "node-1"}, func() any { return new(rpcdef.ForgetArgs) }},
		{rpcdef.ClusterEvict, &rpcdef.EvictArgs{Node: "node-1", Reason: "gone"}, func() any { return new(rpcdef.EvictArgs) }},
		{rpcdef.ClusterNull, &rpcdef.Empty{}, func() any { return new(rpcdef.Empty) }},
		{rpcdef.RegistryRegister, &rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: key, Version: 1, Addr: "127.0.0.1:1"}}, func() any { return new(rpcdef.RegisterArgs) }},
		{rpcdef.RegistryRenew, &rpcdef.RenewArgs{Key: key, Lease: "l"}, func() any { return new(rpcdef.RenewArgs) }},
		{rpcdef.RegistryUnregister, &rpcdef.UnregisterArgs{Key: key, Lease: "l"}, func() any { return new(rpcdef.UnregisterArgs) }},
		{rpcdef.RegistryLookup, &rpcdef.LookupArgs{Key: key}, func() any { return new(rpcdef.LookupArgs) }},
		{rpcdef.RegistryList, &rpcdef.ListArgs{}, func() any { return new(rpcdef.ListArgs) }},
		{rpcdef.RegistryNull, &rpcdef.Empty{}, func() any { return new(rpcdef.Empty) }},
		{rpcdef.ViewGet, &rpcdef.Empty{}, func() any { return new(rpcdef.Empty) }},
	}
}

// ownReplies is every reply muster's servers send, with every field that
// has a type of its own set.
func ownReplies() []any {
	at := time.Unix(1700000000, 0)
	res := &rpcdef.Resources{SampledAt: at, CPUCount: 2, Disks: []rpcdef.DiskUsage{{Mount: "/", Total: 10}}, Uptime: time.Hour}
	members := []rpcdef.Member{{Name: "node-1", Addr: "127.0.0.1:1", Status: rpcdef.StatusAlive, Incarnation: 1,
		JoinedAt: at, StatusSince: at, LastHeartbeat: at, Resources: res, CertNotAfter: at}}
	entry := rpcdef.Entry{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "c1"}, Version: 1, Addr: "127.0.0.1:1"},
		Owner: "master:m1", TTL: time.Second, Remaining: time.Second, State: rpcdef.StateLive, Since: at}
	return []any{
		&rpcdef.JoinReply{Version: 1, Members: members, HeartbeatInterval: time.Second, ReportInterval: time.Second, Master: "m1"},
		&rpcdef.HeartbeatReply{Version: 1},
		&rpcdef.ReportReply{Version: 1},
		&rpcdef.MembersReply{Version: 1, Members: members},
		&rpcdef.WatchReply{Version: 2, Events: []rpcdef.Event{{Version: 2, Kind: rpcdef.EventJoined, Node: "node-1", At: at}}, Reset: true, Members: members},
		&rpcdef.Empty{},
		&rpcdef.RegisterReply{Lease: "l", TTL: time.Second},
		&rpcdef.RenewReply{TTL: time.Second},
		&rpcdef.LookupReply{Entry: entry},
		&rpcdef.ListReply{Entries: []rpcdef.Entry{entry}},
		&rpcdef.ViewReply{Node: "node-1", Incarnation: 1, Master: "m1", MasterAddr: "127.0.0.1:1", Joined: true, Version: 1, Members: members},
	}
}

// TestOwnTypeDefinitions sends every request muster's clients make through
// the client codec into the server codec, and every reply back through the
// server codec into the client codec, each twice, reading one byte at a
// time: all must pass, and the definitions they carry must be well inside
// the caps. It logs what they measure, the figures codec.go cites.
func TestOwnTypeDefinitions(t *testing.T) {
	up, down := &wire{}, &wire{}
	cli := rpcdef.NewClientCodec(struct {
		io.Reader
		io.Writer
		io.Closer
	}{down, up, up}, 0)
	srv := rpcdef.NewServerCodec(struct {
		io.Reader
		io.Writer
		io.Closer
	}{up, down, down}, 0)

	reqs := ownRequests()
	for round := range 2 {
		for i, r := range reqs {
			seq := uint64(round*len(reqs) + i)
			if err := cli.WriteRequest(&rpc.Request{ServiceMethod: r.method, Seq: seq}, r.args); err != nil {
				t.Fatalf("write %s: %v", r.method, err)
			}
			var h rpc.Request
			if err := srv.ReadRequestHeader(&h); err != nil {
				t.Fatalf("read the header of %s: %v", r.method, err)
			}
			if h.ServiceMethod != r.method || h.Seq != seq {
				t.Fatalf("read header %s #%d, want %s #%d", h.ServiceMethod, h.Seq, r.method, seq)
			}
			got := r.reply()
			if err := srv.ReadRequestBody(got); err != nil {
				t.Fatalf("read the body of %s: %v", r.method, err)
			}
			if !reflect.DeepEqual(got, r.args) {
				t.Fatalf("%s: read %+v, sent %+v", r.method, got, r.args)
			}
		}
	}
	reps := ownReplies()
	for round := range 2 {
		for i, r := range reps {
			seq := uint64(round*len(reps) + i)
			if err := srv.WriteResponse(&rpc.Response{ServiceMethod: "X.Y", Seq: seq}, r); err != nil {
				t.Fatalf("write %T: %v", r, err)
			}
			var h rpc.Response
			if err := cli.ReadResponseHeader(&h); err != nil {
				t.Fatalf("read the header of %T: %v", r, err)
			}
			got := reflect.New(reflect.TypeOf(r).Elem()).Interface()
			if err := cli.ReadResponseBody(got); err != nil {
				t.Fatalf("read the body of %T: %v", r, err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Fatalf("read %+v, sent %+v", got, r)
			}
		}
	}
	if err := rpcdef.ReadError(srv); err != nil {
		t.Fatalf("the server codec refused muster's own requests: %v", err)
	}

	for _, d := range []struct {
		what string
		sent []byte
	}{{"requests", up.sent}, {"replies", down.sent}} {
		n, size := definitions(d.sent)
		t.Logf("muster's own %s: %d bytes on the wire, %d type definitions of %d bytes", d.what, len(d.sent), n, size)
		if n == 0 {
			t.Fatalf("no type definition found among the %s: the test's own gob reading is wrong", d.what)
		}
		if n*4 > rpcdef.MaxTypeDefinitions || size*16 > rpcdef.MaxTypeDefinitionBytes {
			t.Errorf("muster's own %s define %d types of %d bytes: too near the caps of %d and %d bytes",
				d.what, n, size, rpcdef.MaxTypeDefinitions, rpcdef.MaxTypeDefinitionBytes)
		}
	}
}

// freshDefinitions returns n gob type definition messages for types never
// seen before, each a struct with one string field named by name(i), and
// no value.
func freshDefinitions(t *testing.T, n int, name func(i int) string) []byte {
	t.Helper()
	var out []byte
	for i := range n {
		typ := reflect.StructOf([]reflect.StructField{{Name: name(i), Type: reflect.TypeOf("")}})
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(reflect.New(typ).Interface()); err != nil {
			t.Fatal(err)
		}
		start := 0
		kept := 0
		for _, m := range gobMessages(b.Bytes(), rpcdef.DefaultMaxMessage) {
			if m.defines {
				out = append(out, b.Bytes()[start:m.end]...)
				kept++
			}
			start = m.end
		}
		if kept != 1 {
			t.Fatalf("type %d made %d definitions, want 1", i, kept)
		}
	}
	return out
}

// fieldCount makes fresh field names: fresh types, distinct from every
// other test's.
var fieldCount int

func freshName(pad int) func(int) string {
	return func(int) string {
		fieldCount++
		return fmt.Sprintf("F%d%s", fieldCount, strings.Repeat("a", pad))
	}
}

// requests returns two Null requests as one muster client sends them: the
// first with the definitions of rpc.Request and Empty, the second without.
func requests(t *testing.T) (first, again []byte) {
	t.Helper()
	w := &wire{}
	cli := rpcdef.NewClientCodec(struct {
		io.Reader
		io.Writer
		io.Closer
	}{w, w, w}, 0)
	for seq := range uint64(2) {
		if err := cli.WriteRequest(&rpc.Request{ServiceMethod: rpcdef.ClusterNull, Seq: seq}, &rpcdef.Empty{}); err != nil {
			t.Fatal(err)
		}
		if seq == 0 {
			first = bytes.Clone(w.sent)
		}
	}
	return first, w.sent[len(first):]
}

// serveDefinitions reads one valid request and then defs through a server
// codec, one byte at a time, and returns how many bytes past the valid
// request the codec had taken and the error that ended reading.
func serveDefinitions(t *testing.T, defs []byte) (int, error) {
	t.Helper()
	first, again := requests(t)
	w := &wire{}
	w.buf.Write(first)
	w.buf.Write(defs)
	w.buf.Write(again) // read only if the definitions pass
	total := w.buf.Len()
	srv := rpcdef.NewServerCodec(w, 0)
	var h rpc.Request
	if err := srv.ReadRequestHeader(&h); err != nil {
		t.Fatalf("the valid request: %v", err)
	}
	if err := srv.ReadRequestBody(new(rpcdef.Empty)); err != nil {
		t.Fatalf("the valid request's body: %v", err)
	}
	err := srv.ReadRequestHeader(&h)
	if err == nil {
		err = srv.ReadRequestBody(new(rpcdef.Empty))
	}
	if err != nil && !errors.Is(err, rpcdef.ReadError(srv)) {
		t.Errorf("reading ended with %v, but ReadError says %v", err, rpcdef.ReadError(srv))
	}
	if err == nil && h.ServiceMethod != rpcdef.ClusterNull {
		t.Errorf("the request after the definitions read as %q", h.ServiceMethod)
	}
	return total - w.buf.Len() - len(first), rpcdef.ReadError(srv)
}

// TestTypeDefinitionCaps sends fresh type definitions after a valid
// request, as the reviewer's attack did: up to the caps they pass, one past
// either cap ends the stream with ErrTooManyTypes naming the cap.
func TestTypeDefinitionCaps(t *testing.T) {
	first, _ := requests(t)
	ownDefs, _ := definitions(first)
	tests := []struct {
		name    string
		n, pad  int
		refused bool
		names   string // in the error
	}{
		{"up to the count cap", rpcdef.MaxTypeDefinitions - ownDefs, 8, false, ""},
		{"one past the count cap", rpcdef.MaxTypeDefinitions - ownDefs + 1, 8, true, fmt.Sprint(rpcdef.MaxTypeDefinitions)},
		{"129 fresh types", 129, 8, true, fmt.Sprint(rpcdef.MaxTypeDefinitions)},
		{"1000 fresh types", 1000, 8, true, fmt.Sprint(rpcdef.MaxTypeDefinitions)},
		{"large ones under the byte cap", 2, 30000, false, ""},
		{"large ones past the byte cap", 3, 30000, true, fmt.Sprint(rpcdef.MaxTypeDefinitionBytes)},
		{"the reviewer's 60 KB names", 1000, 60000, true, fmt.Sprint(rpcdef.MaxTypeDefinitionBytes)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defs := freshDefinitions(t, tt.n, freshName(tt.pad))
			taken, err := serveDefinitions(t, defs)
			t.Logf("%d definitions, %d bytes: codec took %d bytes of them: %v", tt.n, len(defs), taken, err)
			if !tt.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, rpcdef.ErrTooManyTypes) {
				t.Fatalf("reading ended with %v, want ErrTooManyTypes", err)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("the error %q does not name the cap %s", err, tt.names)
			}
			// Refused at the message over the cap, with at most one
			// read-ahead taken past it.
			capAt := definitionCapAt(append(bytes.Clone(first), defs...), rpcdef.DefaultMaxMessage) - int64(len(first))
			if int64(taken) > capAt+4096 {
				t.Errorf("the codec took %d bytes of definitions, the cap is crossed at %d", taken, capAt)
			}
		})
	}
}

// TestClientTypeDefinitionCaps is TestTypeDefinitionCaps for a client
// whose server sends fresh definitions: its calls fail and it stops
// reading.
func TestClientTypeDefinitionCaps(t *testing.T) {
	down := &wire{}
	srvSide := &wire{}
	srv := rpcdef.NewServerCodec(struct {
		io.Reader
		io.Writer
		io.Closer
	}{srvSide, down, down}, 0)
	if err := srv.WriteResponse(&rpc.Response{ServiceMethod: rpcdef.ClusterNull, Seq: 0}, &rpcdef.Empty{}); err != nil {
		t.Fatal(err)
	}
	down.buf.Write(freshDefinitions(t, 200, freshName(8)))
	cli := rpcdef.NewClientCodec(struct {
		io.Reader
		io.Writer
		io.Closer
	}{down, srvSide, srvSide}, 0)
	var h rpc.Response
	if err := cli.ReadResponseHeader(&h); err != nil {
		t.Fatalf("the valid reply: %v", err)
	}
	if err := cli.ReadResponseBody(new(rpcdef.Empty)); err != nil {
		t.Fatalf("the valid reply's body: %v", err)
	}
	err := cli.ReadResponseHeader(&h)
	if !errors.Is(err, rpcdef.ErrTooManyTypes) {
		t.Fatalf("reading the definitions ended with %v, want ErrTooManyTypes", err)
	}
	// Reading on, as net/rpc's client does after a body that failed, gets
	// the same refusal, not the rest of the stream.
	for range 3 {
		if err := cli.ReadResponseBody(nil); !errors.Is(err, rpcdef.ErrTooManyTypes) {
			t.Fatalf("reading on after the refusal: %v, want ErrTooManyTypes again", err)
		}
	}
	if rest := down.buf.Len(); rest == 0 {
		t.Errorf("the client read all the definitions")
	}
}

// withInterface is a request header as a hostile peer may define it: gob
// matches fields by name, so a server decoding it into rpc.Request ignores
// X, and ignoring an interface value reads the type definitions nested in
// it, from inside the message where the framed reader cannot count them.
type withInterface struct {
	ServiceMethod string
	Seq           uint64
	X             any
}

// TestInterfaceTypesRefused sends requests whose headers carry an
// interface value holding a fresh type each (the definitions of which gob
// would keep, though none is a message of its own), and a value of gob's
// interface type itself: both are refused with ErrInterfaceType.
func TestInterfaceTypesRefused(t *testing.T) {
	t.Run("a type holding an interface", func(t *testing.T) {
		var stream bytes.Buffer
		enc := gob.NewEncoder(&stream)
		long := strings.Repeat("a", 30000)
		for i := range 50 {
			typ := reflect.StructOf([]reflect.StructField{{Name: fmt.Sprintf("I%d%s", i, long), Type: reflect.TypeOf("")}})
			v := reflect.New(typ).Elem().Interface()
			gob.RegisterName(fmt.Sprintf("rpcdef_test.nested%d", i), v)
			if err := enc.Encode(&withInterface{ServiceMethod: rpcdef.ClusterNull, Seq: uint64(i), X: v}); err != nil {
				t.Fatal(err)
			}
			if err := enc.Encode(&rpcdef.Empty{}); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := definitions(stream.Bytes()); n > 2 {
			t.Fatalf("the stream has %d definitions as messages of their own; the test needs them nested", n)
		}
		srv := rpcdef.NewServerCodec(&wire{buf: stream}, 0)
		var h rpc.Request
		err := srv.ReadRequestHeader(&h)
		if !errors.Is(err, rpcdef.ErrInterfaceType) || !errors.Is(rpcdef.ReadError(srv), rpcdef.ErrInterfaceType) {
			t.Fatalf("the first header read with %v (ReadError %v), want ErrInterfaceType", err, rpcdef.ReadError(srv))
		}
		t.Log(err)
	})
	for _, value := range [][]byte{
		{3, 0x10, 0x01, 0x00},                // type id 8, then a nil interface
		{4, 0xff, 0x10, 0x01, 0x00},          // the same id in two bytes, as gob also reads
		{6, 0xfd, 0x00, 0x00, 0x10, 0x01, 0}, // and in four
	} {
		t.Run(fmt.Sprintf("a value of the interface type % x", value), func(t *testing.T) {
			first, _ := requests(t)
			w := &wire{}
			w.buf.Write(first)
			w.buf.Write(value)
			srv := rpcdef.NewServerCodec(w, 0)
			var h rpc.Request
			if err := srv.ReadRequestHeader(&h); err != nil {
				t.Fatal(err)
			}
			if err := srv.ReadRequestBody(new(rpcdef.Empty)); err != nil {
				t.Fatal(err)
			}
			err := srv.ReadRequestHeader(&h)
			if !errors.Is(err, rpcdef.ErrInterfaceType) {
				t.Fatalf("a value of type id 8 read with %v, want ErrInterfaceType", err)
			}
		})
	}
}

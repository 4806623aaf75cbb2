package tests

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/gob"
	"fmt"
	"net/rpc"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

// gobDefinitions returns n gob messages, each the definition of a type
// never seen before (a struct with one string field of a fresh name, pad
// bytes long), and no value: what encoding/gob keeps for the life of a
// connection, and the reviewer's attack sent without end.
func gobDefinitions(t *testing.T, n, pad int) []byte {
	t.Helper()
	var out []byte
	for range n {
		gobFresh++
		typ := reflect.StructOf([]reflect.StructField{{Name: fmt.Sprintf("G%d%s", gobFresh, strings.Repeat("a", pad)), Type: reflect.TypeOf("")}})
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(reflect.New(typ).Interface()); err != nil {
			t.Fatal(err)
		}
		// The stream is the definition of typ, then a value of it: keep
		// the messages whose type id (the first signed int) is negative.
		for rest := b.Bytes(); len(rest) > 0; {
			size, w := gobUvarint(rest)
			msg, payload := rest[:w+int(size)], rest[w:w+int(size)]
			if id, _ := gobUvarint(payload); id&1 == 1 {
				out = append(out, msg...)
			}
			rest = rest[w+int(size):]
		}
	}
	return out
}

// nestedHeader is a request header with an interface field: a daemon
// decoding it into rpc.Request ignores X, and gob, ignoring an interface
// value, would read and keep the type definitions nested in it.
type nestedHeader struct {
	ServiceMethod string
	Seq           uint64
	X             any
}

// gobFresh numbers the fresh types, so that each is new to the process.
var gobFresh int

// gobUvarint decodes gob's unsigned int at the start of b, and its width.
func gobUvarint(b []byte) (uint64, int) {
	if b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	n := -int(int8(b[0]))
	var v uint64
	for _, c := range b[1 : 1+n] {
		v = v<<8 | uint64(c)
	}
	return v, 1 + n
}

// logged waits until p has logged a line matching re.
func logged(t *testing.T, p *proc, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	waitFor(t, 5*time.Second, fmt.Sprintf("%s to log %q", p.name, re), func() (bool, string) {
		for _, line := range p.log.Lines() {
			if rx.MatchString(line) {
				return true, ""
			}
		}
		return false, "not yet"
	})
}

// gobMole is the mole's raw connection to a daemon after one valid call.
type gobMole struct {
	conn *tls.Conn
	w    *bufio.Writer
	enc  *gob.Encoder
	dec  *gob.Decoder
	seq  uint64
	null string
}

func (x *insider) gobMole(t *testing.T, addr, null string) *gobMole {
	t.Helper()
	conn := x.dial(t, addr)
	t.Cleanup(func() { conn.Close() })
	w := bufio.NewWriter(conn)
	m := &gobMole{conn: conn, w: w, enc: gob.NewEncoder(w), dec: gob.NewDecoder(conn), null: null}
	if err := m.call(); err != nil {
		t.Fatalf("the mole's valid %s: %v", null, err)
	}
	return m
}

// call makes a Null call and reads its answer.
func (m *gobMole) call() error {
	m.seq++
	m.conn.SetDeadline(time.Now().Add(5 * time.Second))
	defer m.conn.SetDeadline(time.Time{})
	if err := m.enc.Encode(&rpc.Request{ServiceMethod: m.null, Seq: m.seq}); err != nil {
		return err
	}
	if err := m.enc.Encode(&rpcdef.Empty{}); err != nil {
		return err
	}
	if err := m.w.Flush(); err != nil {
		return err
	}
	var resp rpc.Response
	if err := m.dec.Decode(&resp); err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("%s", resp.Error)
	}
	return m.dec.Decode(new(rpcdef.Empty))
}

// send writes raw gob messages on the connection.
func (m *gobMole) send(b []byte) error {
	m.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := m.w.Write(b); err != nil {
		return err
	}
	return m.w.Flush()
}

// TestInsiderGobTypes is the type-definition flood the review of issue 12
// found: after one valid call, a slave certificate sends gob messages that
// each define a fresh type and carry no value. Each is far under the
// per-slave message limit, and encoding/gob would keep every one for the
// life of the connection. Both daemons must close the connection at the
// codec's caps (rpcdef.MaxTypeDefinitions, MaxTypeDefinitionBytes), well
// before 1,000 definitions or 1 MiB, say why in their log, and return to
// their baseline; a few definitions under the caps still leave the
// connection working.
func TestInsiderGobTypes(t *testing.T) {
	x := newInsider(t)
	targets := []struct {
		name, addr, null string
		proc             *proc
		pprof            string
		base             health
	}{
		{"masterd", x.masterAddr, rpcdef.ClusterNull, x.master, x.masterPprof, x.base},
		{"registryd", x.reg.addr, rpcdef.RegistryNull, x.reg.proc, x.regPprof, x.regBase},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			t.Run("a few definitions", func(t *testing.T) {
				m := x.gobMole(t, tg.addr, tg.null)
				if err := m.send(gobDefinitions(t, 20, 1000)); err != nil {
					t.Fatalf("send 20 definitions: %v", err)
				}
				if err := m.call(); err != nil {
					t.Fatalf("a Null call after 20 definitions of 1 KB, well under the caps: %v", err)
				}
			})
			t.Run("many small definitions", func(t *testing.T) {
				m := x.gobMole(t, tg.addr, tg.null)
				defs := gobDefinitions(t, 2*rpcdef.MaxTypeDefinitions, 8)
				t.Logf("sending %d definitions, %d bytes", 2*rpcdef.MaxTypeDefinitions, len(defs))
				m.send(defs) // the daemon may close before all are written
				expectClosedWithin(t, m.conn, 5*time.Second)
				logged(t, tg.proc, fmt.Sprintf(`more than %d gob type definitions.*reason=bad_message`, rpcdef.MaxTypeDefinitions))
			})
			t.Run("large definitions", func(t *testing.T) {
				m := x.gobMole(t, tg.addr, tg.null)
				// The reviewer's 60 KB field names: two are past the cap.
				// Each is sent whole, then the mole checks for the close.
				sent := 0
				for i := range 16 {
					if err := m.send(gobDefinitions(t, 1, 60000)); err != nil {
						t.Logf("the daemon stopped reading after %d definitions of 60 KB", i)
						break
					}
					sent++
				}
				t.Logf("%d definitions of 60 KB written (%d KiB)", sent, sent*60000>>10)
				expectClosedWithin(t, m.conn, 5*time.Second)
				logged(t, tg.proc, fmt.Sprintf(`bytes of gob type definitions, more than the %d allowed.*reason=bad_message`, rpcdef.MaxTypeDefinitionBytes))
			})
			t.Run("definitions nested in an interface", func(t *testing.T) {
				m := x.gobMole(t, tg.addr, tg.null)
				// A fresh encoder: the header's type is new to the daemon.
				var b bytes.Buffer
				enc := gob.NewEncoder(&b)
				for i := range 20 {
					gobFresh++
					typ := reflect.StructOf([]reflect.StructField{{Name: fmt.Sprintf("N%d%s", gobFresh, strings.Repeat("a", 30000)), Type: reflect.TypeOf("")}})
					v := reflect.New(typ).Elem().Interface()
					gob.RegisterName(fmt.Sprintf("tests.nested%d", gobFresh), v)
					if err := enc.Encode(&nestedHeader{ServiceMethod: tg.null, Seq: uint64(100 + i), X: v}); err != nil {
						t.Fatal(err)
					}
					if err := enc.Encode(&rpcdef.Empty{}); err != nil {
						t.Fatal(err)
					}
				}
				m.send(b.Bytes()) // the daemon may close before all are written
				expectClosedWithin(t, m.conn, 5*time.Second)
				logged(t, tg.proc, `gob interface types are not part of muster's contract.*reason=bad_message`)
			})
			settled(t, tg.pprof, tg.base)
		})
	}
	x.unharmedQuick(t)
}

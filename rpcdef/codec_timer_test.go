package rpcdef

import (
	"bytes"
	"encoding/gob"
	"io"
	"strings"
	"testing"
	"time"
)

// timerLog records what a MessageTimer is told, and checks that a message
// ends only after it started, and starts only once.
type timerLog struct {
	t      *testing.T
	events []string
	open   bool
}

func (l *timerLog) MessageStarted() {
	if l.open {
		l.t.Error("MessageStarted twice without MessageEnded")
	}
	l.open = true
	l.events = append(l.events, "start")
}

func (l *timerLog) MessageEnded() {
	if !l.open {
		l.t.Error("MessageEnded without MessageStarted")
	}
	l.open = false
	l.events = append(l.events, "end")
}

// chunked returns at most n bytes a read, as a slow network does.
type chunked struct {
	r io.Reader
	n int
}

func (c *chunked) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// gobStream is what a client sends for values: each a type definition
// (the first time) and a value, each a gob message with its length prefix.
func gobStream(t *testing.T, values ...any) []byte {
	var b bytes.Buffer
	enc := gob.NewEncoder(&b)
	for _, v := range values {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// The timer hears of a message only when its bytes are not all there when
// its first one is read, and then of its end once its last one has been
// read; a message that arrived at once costs nothing.
func TestFramedReaderTimer(t *testing.T) {
	hb := func() any { return new(HeartbeatArgs) }
	leave := func() any { return new(LeaveArgs) }
	small := gobStream(t, &HeartbeatArgs{Node: "node-1", Incarnation: 1}, &HeartbeatArgs{Node: "node-2"})
	large := gobStream(t, &LeaveArgs{Node: "node-1", Reason: strings.Repeat("x", 20000)})
	for _, tc := range []struct {
		name  string
		data  []byte
		chunk int
		value func() any
		n     int // values in data
		timed func(messages int) bool
	}{
		{"small messages, buffered whole", small, 1 << 20, hb, 2, func(m int) bool { return m == 0 }},
		{"a message larger than the read-ahead", large, 1 << 20, leave, 1, func(m int) bool { return m == 1 }},
		{"small messages a byte at a time", small, 1, hb, 2, func(m int) bool { return m >= 2 }},
		{"a large message in chunks", large, 1000, leave, 1, func(m int) bool { return m == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &timerLog{t: t}
			dec := gob.NewDecoder(newFramedReader(&chunked{bytes.NewReader(tc.data), tc.chunk}, 1<<20, log))
			for range tc.n {
				if err := dec.Decode(tc.value()); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("events: %v", log.events)
			if log.open {
				t.Fatal("a message still open after every value was decoded")
			}
			if m := len(log.events) / 2; !tc.timed(m) {
				t.Fatalf("%d messages timed", m)
			}
		})
	}
}

// chanTimer passes what it is told to a test on another goroutine.
type chanTimer chan string

func (c chanTimer) MessageStarted() { c <- "start" }
func (c chanTimer) MessageEnded()   { c <- "end" }

// A prefix that arrives split tells the timer before the rest of the prefix
// is waited for: a peer dripping the prefix itself is timed too.
func TestFramedReaderTimerSplitPrefix(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	events := make(chanTimer, 4)
	f := newFramedReader(pr, 1<<20, events)
	read := make(chan error, 1)
	go func() {
		msg := make([]byte, 5) // the prefix 0xfe 0x00 0x02, then "bb" (a value of type 49)
		_, err := io.ReadFull(f, msg)
		read <- err
	}()
	next := func() string {
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("the timer was not told in 10s")
		}
		return ""
	}
	pw.Write([]byte{0xfe}) // "two bytes of count follow", and nothing more yet
	if e := next(); e != "start" {
		t.Fatalf("after half a prefix: %q, want start", e)
	}
	pw.Write([]byte{0x00, 0x02, 'b'})
	pw.Write([]byte{'b'})
	if e := next(); e != "end" {
		t.Fatalf("after the last byte: %q, want end", e)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

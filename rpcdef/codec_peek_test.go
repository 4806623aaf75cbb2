package rpcdef

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestFramedReaderCountsDefinitions reads hand-made messages through the
// framed reader one byte at a time, with every form of length prefix and
// of type id: it must pass every byte on unchanged and count exactly the
// messages whose type id is negative.
func TestFramedReaderCountsDefinitions(t *testing.T) {
	ids := []struct {
		name    string
		id      []byte
		defines bool
	}{
		{"one-byte definition (-2)", []byte{0x03}, true},
		{"one-byte value (2)", []byte{0x04}, false},
		{"one-byte definition (-64)", []byte{0x7f}, true},
		{"two-byte definition (-65)", []byte{0xff, 0x81}, true},
		{"two-byte value (65)", []byte{0xff, 0x82}, false},
		{"three-byte definition (-257)", []byte{0xfe, 0x02, 0x01}, true},
		{"eight-byte value", []byte{0xf8, 0xff, 0, 0, 0, 0, 0, 0, 0x02}, false},
		{"cut short by its message", []byte{0xfe, 0x02}, false},
		{"a bad width", []byte{0x80}, false},
	}
	prefixes := []struct {
		name string
		size int
	}{
		{"one-byte count", 100},
		{"two-byte count", 200},
		{"three-byte count", 300},
		{"four-byte count", 70000},
	}
	for _, p := range prefixes {
		for _, id := range ids {
			t.Run(p.name+"/"+id.name, func(t *testing.T) {
				size := max(p.size, len(id.id))
				if id.name == "cut short by its message" {
					size = len(id.id)
				}
				payload := bytes.Clone(id.id)
				if id.defines {
					payload = append(payload, wireStruct(size-len(id.id))...)
				} else {
					payload = append(payload, make([]byte, size-len(id.id))...)
				}
				msg := append(gobCount(uint64(len(payload))), payload...)
				stream := append(bytes.Clone(msg), msg...)
				f := newFramedReader(iotest.OneByteReader(bytes.NewReader(stream)), 1<<20, nil)
				got, err := io.ReadAll(f)
				if id.defines && len(payload) > MaxTypeDefinitionBytes {
					// One definition is over the byte cap by itself.
					if !errors.Is(err, ErrTooManyTypes) || f.defs != 1 || len(got) != 0 {
						t.Fatalf("a %d-byte definition: read %d bytes, counted %d, %v; want it refused", len(payload), len(got), f.defs, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if !bytes.Equal(got, stream) {
					t.Fatalf("read %d bytes, not the %d sent", len(got), len(stream))
				}
				want := uint64(0)
				if id.defines {
					want = 2
				}
				if f.defs != want || f.defBytes != want/2*2*uint64(len(payload)) {
					t.Errorf("counted %d definitions of %d bytes, want %d of %d", f.defs, f.defBytes, want, want*uint64(len(payload)))
				}
			})
		}
	}
}

// wireStruct is gob's wireType for a struct of no fields, with a name that
// makes it n bytes long (n at least 8).
func wireStruct(n int) []byte {
	// StructT, its CommonType, its Name; the name's length; the ends of
	// CommonType, structType and wireType.
	for w := 1; ; w++ {
		name := n - 6 - w
		if len(gobCount(uint64(name))) != w {
			continue
		}
		b := append([]byte{0x03, 0x01, 0x01}, gobCount(uint64(name))...)
		b = append(b, bytes.Repeat([]byte{'a'}, name)...)
		return append(b, 0, 0, 0)
	}
}

// gobCount is gob's encoding of a message's length prefix.
func gobCount(n uint64) []byte {
	if n < 0x80 {
		return []byte{byte(n)}
	}
	var b []byte
	for ; n > 0; n >>= 8 {
		b = append([]byte{byte(n)}, b...)
	}
	return append([]byte{byte(-int8(len(b)))}, b...)
}

// TestFramedReaderRefusesForGood checks that once a stream is refused, every
// later read returns the same error instead of the rest of the stream.
func TestFramedReaderRefusesForGood(t *testing.T) {
	var stream []byte
	for range MaxTypeDefinitions + 1 {
		def := append([]byte{0x03}, wireStruct(8)...)
		stream = append(append(stream, byte(len(def))), def...)
	}
	stream = append(stream, 2, 0x04, 0) // a value: never reached
	f := newFramedReader(bytes.NewReader(stream), 1<<20, nil)
	_, err := io.ReadAll(f)
	if !errors.Is(err, ErrTooManyTypes) {
		t.Fatalf("read ended with %v, want ErrTooManyTypes", err)
	}
	for range 3 {
		if n, err := f.Read(make([]byte, 10)); n != 0 || !errors.Is(err, ErrTooManyTypes) {
			t.Fatalf("a read after the refusal: %d bytes, %v", n, err)
		}
	}
}

package rpcdef

import (
	"encoding/gob"
	"fmt"
	"net"
	"net/rpc"
	"testing"
	"time"
)

// TestEncoderRenewedAfterLargeMessage sends a reply larger than
// largeMessage, then more replies of the same and of new types: the peer
// must decode them all (a renewed encoder that sent a type again would
// make it fail with "duplicate type"), and the large one must have
// replaced the encoder.
func TestEncoderRenewedAfterLargeMessage(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := NewServerCodec(a, 0).(*serverCodec)
	cli := NewClientCodec(b, 0)

	big := &WatchReply{Version: 7, Reset: true}
	for i := range 2000 {
		big.Members = append(big.Members, Member{Name: fmt.Sprintf("node-%05d", i), Addr: "127.0.0.1:1", Status: StatusAlive,
			JoinedAt: time.Unix(1, 0).UTC()})
	}
	replies := []any{
		&HeartbeatReply{Version: 1},
		big,
		&HeartbeatReply{Version: 2},
		&WatchReply{Version: 8, Events: []Event{{Version: 8, Node: "node-00001", Kind: EventDead}}},
		&JoinReply{Version: 9, HeartbeatInterval: time.Second},
	}
	encoders := make(chan *gob.Encoder, len(replies))
	errs := make(chan error, 1)
	go func() {
		for i, r := range replies {
			if err := srv.WriteResponse(&rpc.Response{ServiceMethod: "X.Y", Seq: uint64(i)}, r); err != nil {
				errs <- err
				return
			}
			encoders <- srv.enc.enc
		}
		errs <- nil
	}()

	var hb HeartbeatReply
	var w WatchReply
	var j JoinReply
	got := []any{&hb, &w, &hb, &w, &j}
	for i, dst := range got {
		var h rpc.Response
		if err := cli.ReadResponseHeader(&h); err != nil {
			t.Fatalf("reply %d header: %v", i, err)
		}
		if h.Seq != uint64(i) {
			t.Fatalf("reply %d has seq %d", i, h.Seq)
		}
		if err := cli.ReadResponseBody(dst); err != nil {
			t.Fatalf("reply %d body: %v", i, err)
		}
		switch i {
		case 1:
			if len(w.Members) != 2000 || w.Members[1999].Name != "node-01999" {
				t.Fatalf("large reply: %d members", len(w.Members))
			}
		case 2:
			if hb.Version != 2 {
				t.Fatalf("heartbeat after the large reply: version %d", hb.Version)
			}
		case 3:
			if w.Version != 8 || len(w.Events) != 1 || w.Events[0].Kind != EventDead {
				t.Fatalf("watch after the large reply: %+v", w)
			}
		case 4:
			if j.Version != 9 || j.HeartbeatInterval != time.Second {
				t.Fatalf("a new type after the renewal: %+v", j)
			}
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	e0, e1, e2 := <-encoders, <-encoders, <-encoders
	if e0 == e1 {
		t.Fatal("the encoder that made a large message was kept")
	}
	if e1 != e2 {
		t.Fatal("the encoder was replaced after a small message")
	}
}

package masterd

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/rpcdef"
)

// TestProposerAbandonsOnLostLeadership: a verdict queued while the term's
// commit is stuck is never proposed once the term's context ends (the
// leader was deposed), and sync says it was not applied.
func TestProposerAbandonsOnLostLeadership(t *testing.T) {
	var mu sync.Mutex
	var applied [][]byte
	entered := make(chan struct{}, 4)
	apply := func(ctx context.Context, cmd []byte) error {
		mu.Lock()
		applied = append(applied, cmd)
		mu.Unlock()
		entered <- struct{}{}
		<-ctx.Done() // the commit never completes: the quorum is gone
		return ctx.Err()
	}
	p := newProposer(apply, logtest.New(t))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { p.run(ctx); close(ran) }()

	p.add(record{Event: rpcdef.Event{Kind: rpcdef.EventJoined, Node: "a", Version: 1}})
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first entry was never proposed")
	}
	p.add(record{Event: rpcdef.Event{Kind: rpcdef.EventDead, Node: "b", Version: 2}}) // a verdict, queued behind it
	cancel()                                                                          // leadership lost
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the proposer did not stop when its term ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 1 {
		t.Fatalf("%d entries proposed, want 1: the verdict queued after leadership was lost was proposed", len(applied))
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := p.sync(sctx); !errors.Is(err, errAbandoned) {
		t.Fatalf("sync after the term ended: %v, want errAbandoned", err)
	}
}

package masterd

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/daemon"
)

// maxBatch bounds the events in one raft entry: a cold join of thousands
// is written in a few entries, each well under raft's 1 MB-ish comfort.
const maxBatch = 512

// proposer writes one leader term's events through raft, in order,
// batching those that come while an entry is being committed: a cold join
// of N slaves costs N/maxBatch commits, not N. It lives as long as the
// term: once its context ends (leadership lost) what is still queued is
// abandoned, so a deposed leader's verdict is never committed by it.
type proposer struct {
	apply func(ctx context.Context, cmd []byte) error
	log   logrus.FieldLogger

	mu        sync.Mutex
	queue     []record
	wake      chan struct{} // a token when queue is not empty
	added     uint64        // records queued in all
	committed uint64        // records committed in all
	done      chan struct{} // closed and replaced at every commit
}

func newProposer(apply func(ctx context.Context, cmd []byte) error, log logrus.FieldLogger) *proposer {
	return &proposer{apply: apply, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add queues rec. It never blocks: the Membership calls it under its lock.
// The queue is bounded by the roll times the event budget (see emit).
func (p *proposer) add(rec record) {
	p.mu.Lock()
	p.queue = append(p.queue, rec)
	p.added++
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run commits the queue until ctx ends.
func (p *proposer) run(ctx context.Context) {
	b := daemon.NewBackoff(50*time.Millisecond, time.Second)
	for {
		select {
		case <-ctx.Done():
			p.abandon()
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			batch := p.queue[:min(len(p.queue), maxBatch)]
			p.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			cmd, err := encode(cmdEvents, batch)
			if err != nil { // cannot happen: records are plain data
				p.log.WithError(err).Error("encode events for raft: dropped")
			} else if err := p.apply(ctx, cmd); err != nil {
				if ctx.Err() != nil {
					p.abandon()
					return
				}
				p.log.WithError(err).Warnf("%d events not committed yet; retrying", len(batch))
				if !daemon.Sleep(ctx, b.Next()) {
					p.abandon()
					return
				}
				continue
			}
			b.Reset()
			p.mu.Lock()
			p.queue = p.queue[len(batch):]
			if len(p.queue) == 0 {
				p.queue = nil // let the backing array go after a storm
			}
			p.committed += uint64(len(batch))
			close(p.done)
			p.done = make(chan struct{})
			p.mu.Unlock()
		}
	}
}

func (p *proposer) abandon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.queue); n > 0 {
		p.log.Warnf("leadership lost with %d events not committed: abandoned (the next leader judges those members itself)", n)
	}
	p.queue = nil
	close(p.done) // sync's waiters see it lost
	p.done = make(chan struct{})
}

// errAbandoned: the term ended before the events were committed.
var errAbandoned = errors.New("leadership was lost before the change was committed: it was not applied; retry")

// sync waits until everything queued so far is committed, so that an
// admin's forget or evict is answered only once it is replicated.
func (p *proposer) sync(ctx context.Context) error {
	p.mu.Lock()
	want := p.added
	p.mu.Unlock()
	for {
		p.mu.Lock()
		got, done, lost := p.committed, p.done, p.queue == nil && p.committed < want
		p.mu.Unlock()
		if got >= want {
			return nil
		}
		if lost {
			return errAbandoned
		}
		select {
		case <-ctx.Done():
			return errAbandoned
		case <-done:
		}
	}
}

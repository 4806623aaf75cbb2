package masterd

import (
	"sync"
	"time"
)

// A fan-out wakes every waiting watcher at once: at 10,000 of them, that is
// 10,000 replies to encode, encrypt and write, and as many new Watch calls
// to read, all runnable together. Go runs them in turn, and a heartbeat that
// arrives meanwhile waits behind all of them: long enough, on a busy master,
// to make its slave late, suspect, and the cause of the next fan-out.
//
// So the replies are paced: at most fanoutBurst at once, then fanoutRate a
// second, all of them, whether the watcher waited for the event or asked
// after it. A watcher waiting its turn answers with every event up to then,
// so a storm of events costs each watcher one reply every so often, not one
// per event.
const (
	fanoutRate  = 10000 // replies a second, past the burst: 10,000 watchers in 1s
	fanoutBurst = 256
)

// pacer hands out reply slots fanoutRate a second.
type pacer struct {
	every time.Duration
	burst time.Duration // how far behind now the next slot may be: the burst's credit

	mu   sync.Mutex
	next time.Time // the next free slot
}

func newPacer(rate, burst int) *pacer {
	every := time.Second / time.Duration(rate)
	return &pacer{every: every, burst: every * time.Duration(burst)}
}

// wait blocks until the caller's slot, or until done closes (false). It
// calls before first if it is going to block.
func (p *pacer) wait(now time.Time, done <-chan struct{}, before func()) bool {
	p.mu.Lock()
	if earliest := now.Add(-p.burst); p.next.Before(earliest) {
		p.next = earliest
	}
	at := p.next
	p.next = p.next.Add(p.every)
	p.mu.Unlock()
	d := at.Sub(now)
	if d <= 0 {
		return true
	}
	before()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

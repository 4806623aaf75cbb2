package daemon

import (
	"context"
	"math/rand/v2"
	"time"
)

// InitialBackoff is the first wait after a failure, for the loops that
// retry a call to another daemon.
const InitialBackoff = 100 * time.Millisecond

// Backoff spaces out retries: exponential, capped, with jitter so that the
// slaves of a cluster that lost its master do not all come back in step.
// The n-th wait (from 0) is drawn from [d/2, d) with d = min(max, base·2ⁿ):
// "equal jitter", which keeps a floor under every wait. It is not safe for
// concurrent use; each loop has its own.
type Backoff struct {
	base, max time.Duration
	n         int
	rand      func() float64 // in [0, 1)
}

// NewBackoff starts at base and doubles to max.
func NewBackoff(base, max time.Duration) *Backoff {
	if max < base {
		base = max
	}
	return &Backoff{base: base, max: max, rand: rand.Float64}
}

// ceiling is the top of the next wait's range.
func (b *Backoff) ceiling() time.Duration {
	d := b.base
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// Next returns the next wait and moves on.
func (b *Backoff) Next() time.Duration {
	d := b.ceiling()
	b.n++
	half := d / 2
	return half + time.Duration(b.rand()*float64(d-half))
}

// Reset starts again from the base after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits d or until ctx ends; it reports whether the whole wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

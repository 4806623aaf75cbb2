package slaved

import (
	"context"
	"math/rand/v2"
	"time"
)

// initialBackoff is the first wait after a failure.
const initialBackoff = 100 * time.Millisecond

// backoff spaces out retries: exponential, capped, with jitter so that the
// slaves of a cluster that lost its master do not all come back in step.
// The n-th wait (from 0) is drawn from [d/2, d) with d = min(max, base·2ⁿ):
// "equal jitter", which keeps a floor under every wait. It is not safe for
// concurrent use; each loop has its own.
type backoff struct {
	base, max time.Duration
	n         int
	rand      func() float64 // in [0, 1)
}

func newBackoff(base, max time.Duration) *backoff {
	if max < base {
		base = max
	}
	return &backoff{base: base, max: max, rand: rand.Float64}
}

// ceiling is the top of the next wait's range.
func (b *backoff) ceiling() time.Duration {
	d := b.base
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// next returns the next wait and moves on.
func (b *backoff) next() time.Duration {
	d := b.ceiling()
	b.n++
	half := d / 2
	return half + time.Duration(b.rand()*float64(d-half))
}

// reset starts again from the base after a success.
func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until ctx ends; it reports whether the whole wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

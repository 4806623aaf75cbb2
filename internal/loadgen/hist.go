package loadgen

import (
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// histSub is the number of buckets per power of two past the linear range:
// a value is placed within 1/histSub (about 3%) of itself.
const (
	histShift = 5
	histSub   = 1 << histShift
	// histBuckets covers every non-negative int64.
	histBuckets = (64-histShift)*histSub + histSub
)

// Histogram counts durations in log-linear buckets, as HdrHistogram does:
// exact below 64ns, then 32 buckets per power of two. Record is lock-free
// and does not allocate, so ten thousand simulated slaves can share one. The
// maximum is kept exactly.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Int64
}

func bucketOf(v int64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histShift - 1
	return shift*histSub + int(v>>shift)
}

// bucketRange is the smallest value of bucket i and its width.
func bucketRange(i int) (low, width int64) {
	if i < 2*histSub {
		return int64(i), 1
	}
	shift := i/histSub - 1
	return int64(i-shift*histSub) << shift, 1 << shift
}

// Record counts one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count is how many durations were recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max is the longest duration recorded, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Quantile is the duration below which a fraction q of the recorded ones
// fall, to the histogram's precision (the middle of the bucket, never more
// than Max). It is 0 if nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := rankOf(q, int(n))
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen > uint64(rank) {
			low, width := bucketRange(i)
			return min(time.Duration(low+width/2), h.Max())
		}
	}
	return h.Max()
}

// Summary is the p50, p99 and maximum.
func (h *Histogram) Summary() Latency {
	return Latency{Count: int(h.Count()), P50: ms(h.Quantile(0.50)), P99: ms(h.Quantile(0.99)), Max: ms(h.Max())}
}

// rankOf is the 0-based nearest rank of quantile q among n sorted values.
func rankOf(q float64, n int) int {
	r := int(q*float64(n)+0.999999999) - 1
	return min(max(r, 0), n-1)
}

// Latency summarises a set of durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// summarize is the exact Latency of a few durations (one per kill, say).
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) float64 { return ms(s[rankOf(p, len(s))]) }
	return Latency{Count: len(s), P50: q(0.50), P99: q(0.99), Max: ms(s[len(s)-1])}
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

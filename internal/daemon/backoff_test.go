package daemon

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		name      string
		base, max time.Duration
		ceilings  []time.Duration // the top of each successive wait's range
	}{
		{"doubles to the cap", 100 * time.Millisecond, time.Second,
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}},
		{"cap below the base", 100 * time.Millisecond, 50 * time.Millisecond,
			[]time.Duration{50 * time.Millisecond, 50 * time.Millisecond}},
		{"cap not a power of two", 100 * time.Millisecond, 300 * time.Millisecond,
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []float64{0, 0.5, 0.999999} {
				b := NewBackoff(tt.base, tt.max)
				b.rand = func() float64 { return r }
				for i, ceil := range tt.ceilings {
					d := b.Next()
					want := ceil/2 + time.Duration(r*float64(ceil-ceil/2))
					if d != want {
						t.Errorf("rand %v, wait %d = %v, want %v", r, i, d, want)
					}
				}
			}
		})
	}
	t.Run("real jitter stays in bounds and spreads", func(t *testing.T) {
		b := NewBackoff(100*time.Millisecond, 2*time.Second)
		seen := map[time.Duration]bool{}
		for i := 0; i < 1000; i++ {
			ceil := b.ceiling()
			d := b.Next()
			if d < ceil/2 || d >= ceil {
				t.Fatalf("wait %d = %v, want in [%v, %v)", i, d, ceil/2, ceil)
			}
			if d > 2*time.Second {
				t.Fatalf("wait %d = %v is past the cap", i, d)
			}
			if ceil == 2*time.Second {
				seen[d] = true
			}
		}
		if len(seen) < 100 {
			t.Errorf("only %d distinct waits at the cap: no jitter?", len(seen))
		}
	})
	t.Run("reset starts again", func(t *testing.T) {
		b := NewBackoff(100*time.Millisecond, 2*time.Second)
		for range 10 {
			b.Next()
		}
		b.Reset()
		if c := b.ceiling(); c != 100*time.Millisecond {
			t.Errorf("ceiling after reset = %v, want 100ms", c)
		}
	})
	t.Run("many failures do not overflow", func(t *testing.T) {
		b := NewBackoff(100*time.Millisecond, 10*time.Minute)
		for range 10000 {
			if d := b.Next(); d <= 0 || d > 10*time.Minute {
				t.Fatalf("wait %v out of range", d)
			}
		}
	})
}

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep reported a full wait on a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep reported an interrupted wait")
	}
}

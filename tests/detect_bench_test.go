package tests

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// watcher follows the master's events from the test process.
type watcher struct {
	events chan rpcdef.Event
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *cluster) watch(tb testing.TB) *watcher {
	cc := c.client(pki.RoleAdmin, "ops")
	r, err := cc.Members(context.Background(), "")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{events: make(chan rpcdef.Event, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		after := r.Version
		for ctx.Err() == nil {
			wctx, wcancel := context.WithTimeout(ctx, 25*time.Second)
			rep, err := cc.Watch(wctx, after, 20*time.Second)
			wcancel()
			if err != nil {
				continue
			}
			for _, e := range rep.Events {
				w.events <- e
			}
			after = rep.Version
		}
	}()
	tb.Cleanup(func() { cancel(); <-w.done })
	return w
}

// next waits for an event about node of the given kind.
func (w *watcher) next(tb testing.TB, node string, kind rpcdef.EventKind, timeout time.Duration) rpcdef.Event {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-w.events:
			if e.Node == node && e.Kind == kind {
				return e
			}
		case <-deadline:
			tb.Fatalf("no %s event for %s within %v", kind, node, timeout)
		}
	}
}

// seenBy polls the slaves' views until each shows node with status, and
// returns when the last of them did. The poll makes the figure at most about
// a millisecond late.
func seenBy(tb testing.TB, slaves []*slave, node string, st rpcdef.Status, timeout time.Duration) time.Time {
	tb.Helper()
	var last time.Time
	for _, s := range slaves {
		vc := rpcdef.NewViewClient(s.socket)
		deadline := time.Now().Add(timeout)
		for {
			v, err := vc.Get(context.Background())
			if err == nil {
				if m, n := member(v.Members, node); n == 1 && m.Status == st {
					if now := time.Now(); now.After(last) {
						last = now
					}
					break
				}
			}
			if time.Now().After(deadline) {
				vc.Close()
				tb.Fatalf("%s's view did not show %s %s within %v", s.name, node, st, timeout)
			}
			time.Sleep(500 * time.Microsecond) // poll interval
		}
		vc.Close()
	}
	return last
}

func report(b *testing.B, name string, d []time.Duration) {
	slices.Sort(d)
	q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), name+"-p50-ms")
	b.ReportMetric(q(0.99), name+"-p99-ms")
	b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, name+"-max-ms")
}

func benchCluster(b *testing.B) (*cluster, *watcher, []*slave) {
	c := newClusterTB(b, nil, "node-1", "node-2", "node-3")
	admin := c.client(pki.RoleAdmin, "ops")
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 10*time.Second)
	}
	return c, c.watch(b), []*slave{c.slaves["node-1"], c.slaves["node-2"]}
}

// BenchmarkCrashDetection: SIGKILL a slave; the master's dead decision (from
// its event's timestamp), then until both other slaves' views show it.
// Defaults: close_grace 500ms, tick 50ms. Run with -benchtime 20x.
func BenchmarkCrashDetection(b *testing.B) {
	c, w, others := benchCluster(b)
	var detect, notify []time.Duration
	for b.Loop() {
		s := c.slaves["node-3"]
		t0 := time.Now()
		s.kill()
		e := w.next(b, "node-3", rpcdef.EventDead, 10*time.Second)
		seen := seenBy(b, others, "node-3", rpcdef.StatusDead, 5*time.Second)
		detect = append(detect, e.At.Sub(t0))
		notify = append(notify, seen.Sub(e.At))
		b.StopTimer()
		c.startSlave("node-3")
		seenBy(b, others, "node-3", rpcdef.StatusAlive, 10*time.Second)
		b.StartTimer()
	}
	report(b, "detect", detect)
	report(b, "notify", notify)
}

// BenchmarkSilentHost: SIGSTOP a slave (its connection stays open, its
// heartbeats stop) until the master's dead decision; SIGCONT brings it back.
// The slave must be past the detector's warm-up (16 heartbeats) first.
// Run with -benchtime 20x.
func BenchmarkSilentHost(b *testing.B) {
	c, w, others := benchCluster(b)
	s := c.slaves["node-3"]
	warm := time.Now().Add(18 * time.Second)
	waitFor(b, 30*time.Second, "the detector's warm-up of 16 heartbeats", func() (bool, string) {
		return time.Now().After(warm), "warming up"
	})
	var detect, notify []time.Duration
	for b.Loop() {
		t0 := time.Now()
		s.cmd.Process.Signal(syscall.SIGSTOP)
		e := w.next(b, "node-3", rpcdef.EventDead, 10*time.Second)
		seen := seenBy(b, others, "node-3", rpcdef.StatusDead, 5*time.Second)
		detect = append(detect, e.At.Sub(t0))
		notify = append(notify, seen.Sub(e.At))
		b.StopTimer()
		s.cmd.Process.Signal(syscall.SIGCONT)
		w.next(b, "node-3", rpcdef.EventAlive, 10*time.Second)
		seenBy(b, others, "node-3", rpcdef.StatusAlive, 10*time.Second)
		// Steady again: a few on-time heartbeats before the next silence.
		resumed := time.Now().Add(3 * time.Second)
		waitFor(b, 10*time.Second, "a few heartbeats", func() (bool, string) { return time.Now().After(resumed), "" })
		b.StartTimer()
	}
	report(b, "detect", detect)
	report(b, "notify", notify)
}

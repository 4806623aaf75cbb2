package tests

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// benchLookups makes b.N sequential Lookup calls on one kept connection and
// reports the latency percentiles and the rate.
func benchLookups(b *testing.B, c *rpcdef.RegistryClient) {
	key := lab1(0).ServiceKey
	ctx := context.Background()
	if _, err := c.Lookup(ctx, key); err != nil { // connect outside the timing
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range lat {
		t0 := time.Now()
		if _, err := c.Lookup(ctx, key); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	total := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(b.N)/total.Seconds(), "calls/s")
}

func benchRegistry(b *testing.B) (*lab, *registryd) {
	l := newLab(b)
	r := startRegistryB(b, l)
	m1 := tlsRegistry(b, l.store(l.issue(pki.RoleMaster, "m1")), r.addr)
	reply, err := m1.Register(context.Background(), lab1(4242))
	if err != nil {
		b.Fatal(err)
	}
	// Renew as a master would, for benchmarks longer than a lease.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(reply.TTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				m1.Renew(ctx, lab1(0).ServiceKey, reply.Lease)
			}
		}
	}()
	b.Cleanup(func() { cancel(); <-done })
	return l, r
}

// clientProcs runs f as a client with one P (a single-threaded caller, as
// rpcinfo is) and with two (Go's default here). With two, net/rpc's reader
// goroutine often hands each reply to the caller on another thread, which
// costs a cross-thread wake-up per call on this VM.
func clientProcs(b *testing.B, f func(b *testing.B)) {
	for _, procs := range []int{1, 2} {
		b.Run(fmt.Sprintf("client-procs=%d", procs), func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			f(b)
		})
	}
}

// BenchmarkLookupTLS: Lookup over one kept mutual-TLS connection.
func BenchmarkLookupTLS(b *testing.B) {
	l, r := benchRegistry(b)
	c := tlsRegistry(b, l.store(l.issue(pki.RoleAdmin, "ops")), r.addr)
	clientProcs(b, func(b *testing.B) { benchLookups(b, c) })
}

// BenchmarkLookupUnix: Lookup over one kept connection to the local socket.
func BenchmarkLookupUnix(b *testing.B) {
	_, r := benchRegistry(b)
	c := rpcdef.NewRegistryClient("socket", rpcdef.DialUnix(r.socket))
	b.Cleanup(func() { c.Close() })
	clientProcs(b, func(b *testing.B) { benchLookups(b, c) })
}

// BenchmarkRPCQueryLookup: `rpc-query lookup` as a whole process, over the socket.
func BenchmarkRPCQueryLookup(b *testing.B) {
	_, r := benchRegistry(b)
	env := []string{"MUSTER_REGISTRY_SOCKET=" + r.socket}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range lat {
		t0 := time.Now()
		if out, code := run(b, env, "rpc-query", "lookup", "ClusterService/lab"); code != 0 {
			b.Fatalf("rpc-query lookup: exit %d\n%s", code, out)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
}

package masterd

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/muster-lab/muster/internal/metrics"
	"github.com/muster-lab/muster/rpcdef"
)

// instrumented is a test roll with the master's metrics on a registry of
// its own, as New makes them.
func instrumented(t *testing.T) (*Membership, *clock, *masterMetrics, *prometheus.Registry) {
	t.Helper()
	ms, c := testMembershipClock()
	reg := metrics.NewRegistry()
	m := newMasterMetrics(reg, time.Second)
	ms.met = m
	reg.MustRegister(newRollCollector(ms))
	return ms, c, m, reg
}

func TestMetricsDetections(t *testing.T) {
	ms, c, m, reg := instrumented(t)
	start := c.t
	callers := map[string]Caller{}
	for i, n := range []string{"crashy", "silent", "leaver", "steady"} {
		callers[n] = Caller{Node: n, Addr: "127.0.0.1:1", ConnID: uint64(i + 1)}
		if _, err := ms.Join(callers[n], 1, false); err != nil {
			t.Fatal(err)
		}
		if _, err := ms.Report(callers[n], 1, rpcdef.Resources{SampledAt: c.t, CPUCount: 2, CPUPercent: 25, Load1: 0.5,
			MemTotal: 1 << 30, MemAvailable: 1 << 29, MemUsedPercent: 50}); err != nil {
			t.Fatal(err)
		}
	}
	// Two heartbeats each, a second apart: two inter-arrival samples per node.
	for range 2 {
		c.t = c.t.Add(time.Second)
		ms.Tick(c.t)
		for _, cl := range callers {
			if _, err := ms.Heartbeat(cl, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := testutil.CollectAndCount(m.interArrival); n != 1 {
		t.Fatalf("inter-arrival histogram: %d series, want 1", n)
	}
	if got := histogramCount(t, reg, "muster_master_heartbeat_interarrival_seconds"); got != 8 {
		t.Errorf("inter-arrival samples = %d, want 8 (4 nodes x 2 heartbeats)", got)
	}

	// crashy's process dies: its connection closes. leaver leaves. silent
	// stops heartbeating; steady goes on.
	ms.ConnClosed("crashy", callers["crashy"].ConnID)
	if err := ms.Leave(callers["leaver"], 1, ""); err != nil {
		t.Fatal(err)
	}
	last, end := c.t, c.t.Add(6*time.Second)
	for now := c.t; now.Before(end); now = now.Add(ms.t.Tick) {
		c.t = now
		if now.Sub(last) >= time.Second {
			ms.Heartbeat(callers["steady"], 1)
			last = now
		}
		ms.Tick(now)
	}
	for node, want := range map[string]rpcdef.Status{"crashy": rpcdef.StatusDead, "silent": rpcdef.StatusDead,
		"leaver": rpcdef.StatusLeft, "steady": rpcdef.StatusAlive} {
		if got := status(t, ms, node); got != want {
			t.Fatalf("%s is %s, want %s (from %v)", node, got, want, start)
		}
	}

	want := `
# HELP muster_master_detections_total Members the master saw go, by kind: crash (dead after its connection closed), silent (dead for lack of heartbeats), left (left on purpose).
# TYPE muster_master_detections_total counter
muster_master_detections_total{kind="crash"} 1
muster_master_detections_total{kind="left"} 1
muster_master_detections_total{kind="silent"} 1
# HELP muster_master_members Members of the roll, by state: alive, suspect, dead, left, unknown.
# TYPE muster_master_members gauge
muster_master_members{state="alive"} 1
muster_master_members{state="dead"} 2
muster_master_members{state="left"} 1
muster_master_members{state="suspect"} 0
muster_master_members{state="unknown"} 0
# HELP muster_master_node_cpu_usage_ratio Busy share of all the node's CPUs, 0 to 1, from its last report (alive and suspect members).
# TYPE muster_master_node_cpu_usage_ratio gauge
muster_master_node_cpu_usage_ratio{node="steady"} 0.25
# HELP muster_master_node_memory_available_bytes Memory available on the node, from its last report.
# TYPE muster_master_node_memory_available_bytes gauge
muster_master_node_memory_available_bytes{node="steady"} 5.36870912e+08
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "muster_master_detections_total", "muster_master_members",
		"muster_master_node_cpu_usage_ratio", "muster_master_node_memory_available_bytes"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.events[rpcdef.EventJoined]); got != 4 {
		t.Errorf("joined events = %v, want 4", got)
	}
	if got := testutil.ToFloat64(m.events[rpcdef.EventSuspect]); got < 2 {
		t.Errorf("suspect events = %v, want at least 2 (crashy and silent)", got)
	}
}

// TestMetricsLint checks every metric name and help text against
// Prometheus' conventions, with each kind of series present.
func TestMetricsLint(t *testing.T) {
	ms, c, m, reg := instrumented(t)
	cl := Caller{Node: "n1", Addr: "127.0.0.1:1", ConnID: 1}
	if _, err := ms.Join(cl, 1, false); err != nil {
		t.Fatal(err)
	}
	ms.Report(cl, 1, rpcdef.Resources{SampledAt: c.t, CPUCount: 1, CPUPercent: 10, MemTotal: 1 << 30})
	c.t = c.t.Add(time.Second)
	ms.Heartbeat(cl, 1)
	m.heartbeat()
	m.report()
	m.lease(false, nil)
	m.lease(true, rpcdef.ErrUnknownLease)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, n := range []string{"muster_master_heartbeats_received_total", "muster_master_reports_received_total",
		"muster_master_heartbeat_interarrival_seconds", "muster_master_events_total", "muster_master_detections_total",
		"muster_master_registry_renewals_total", "muster_master_registry_renewal_failures_total",
		"muster_master_members", "muster_master_node_cpu_usage_ratio", "muster_master_node_memory_usage_ratio",
		"muster_master_node_load1", "muster_master_node_last_heartbeat_timestamp_seconds", "go_goroutines", "process_cpu_seconds_total"} {
		if !names[n] {
			t.Errorf("no metric %s", n)
		}
	}
}

// TestHeartbeatAllocs: the metrics add no allocation to a heartbeat.
func TestHeartbeatAllocs(t *testing.T) {
	plain, pc := testMembershipClock()
	withMetrics, mc, _, _ := instrumented(t)
	cl := Caller{Node: "n1", Addr: "127.0.0.1:1", ConnID: 1}
	for _, ms := range []*Membership{plain, withMetrics} {
		if _, err := ms.Join(cl, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	beat := func(ms *Membership, c *clock) func() {
		return func() {
			c.t = c.t.Add(time.Second)
			if _, err := ms.Heartbeat(cl, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	base := testing.AllocsPerRun(200, beat(plain, pc))
	got := testing.AllocsPerRun(200, beat(withMetrics, mc))
	if got > base {
		t.Errorf("a heartbeat allocates %v times with metrics, %v without", got, base)
	}
}

func TestCPUHistory(t *testing.T) {
	ms, c := testMembershipClock()
	cl := Caller{Node: "n1", Addr: "127.0.0.1:1", ConnID: 1}
	if _, err := ms.Join(cl, 1, false); err != nil {
		t.Fatal(err)
	}
	t0 := c.t
	for i := range cpuHistory + 5 {
		ms.Report(cl, 1, rpcdef.Resources{SampledAt: t0.Add(time.Duration(i) * 5 * time.Second), CPUPercent: float64(i)})
	}
	ms.Report(cl, 1, rpcdef.Resources{SampledAt: t0, CPUPercent: 99}) // older than the last: ignored
	h := ms.CPUHistory()["n1"]
	if len(h) != cpuHistory {
		t.Fatalf("%d samples kept, want %d", len(h), cpuHistory)
	}
	if h[0].Percent != 5 || h[len(h)-1].Percent != cpuHistory+4 {
		t.Errorf("samples run from %v to %v, want 5 to %d", h[0].Percent, h[len(h)-1].Percent, cpuHistory+4)
	}
	for i := 1; i < len(h); i++ {
		if !h[i].At.After(h[i-1].At) {
			t.Fatalf("sample %d at %v is not after %v", i, h[i].At, h[i-1].At)
		}
	}
	// A new incarnation starts afresh.
	if _, err := ms.Join(cl, 2, false); err != nil {
		t.Fatal(err)
	}
	if h := ms.CPUHistory()["n1"]; len(h) != 0 {
		t.Errorf("after a rejoin %d samples, want none", len(h))
	}
}

func TestRecent(t *testing.T) {
	ms := testMembership()
	for i, n := range []string{"a", "b", "c"} {
		if _, err := ms.Join(Caller{Node: n, ConnID: uint64(i)}, 1, false); err != nil {
			t.Fatal(err)
		}
	}
	ev, v := ms.Recent(2)
	if len(ev) != 2 || ev[0].Node != "b" || ev[1].Node != "c" || v != ev[1].Version {
		t.Fatalf("Recent(2) = %+v, %d", ev, v)
	}
	if ev, _ := ms.Recent(10); len(ev) != 3 {
		t.Fatalf("Recent(10) gave %d events, want 3", len(ev))
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

package masterd

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/muster-lab/muster/internal/metrics"
	"github.com/muster-lab/muster/rpcdef"
)

const prefix = metrics.Namespace + "_master"

// Detection kinds: how the master learned that a member went away.
const (
	detectCrash  = "crash"  // dead after its connection closed: the process died
	detectSilent = "silent" // dead for lack of heartbeats: the host died, hung or was cut off
	detectLeft   = "left"   // left on purpose
)

// masterMetrics are the master's counters and its histogram. Those on the
// heartbeat path are one atomic add each, with no allocation. Every method
// is safe on a nil *masterMetrics, as a Membership made without a Server has.
type masterMetrics struct {
	heartbeats    prometheus.Counter
	reports       prometheus.Counter
	interArrival  prometheus.Histogram
	events        map[rpcdef.EventKind]prometheus.Counter
	detections    map[string]prometheus.Counter
	registrations prometheus.Counter
	regFailures   prometheus.Counter
	renewals      prometheus.Counter
	renewFailures prometheus.Counter
	collapsed     prometheus.Counter
	hbInterval    prometheus.Gauge
	holds         map[string]prometheus.Counter
}

// newMasterMetrics makes the metrics and registers them on reg. interval is
// the heartbeat interval: the histogram's buckets are set around it.
func newMasterMetrics(reg prometheus.Registerer, interval time.Duration) *masterMetrics {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "_" + name, Help: help})
		reg.MustRegister(c)
		return c
	}
	var buckets []float64
	for _, f := range []float64{0.25, 0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5, 10} {
		buckets = append(buckets, f*interval.Seconds())
	}
	m := &masterMetrics{
		heartbeats: counter("heartbeats_received_total", "Heartbeat calls received from slaves, accepted or not."),
		reports:    counter("reports_received_total", "Resource report calls received from slaves, accepted or not."),
		interArrival: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: prefix + "_heartbeat_interarrival_seconds",
			Help: "Time between two accepted heartbeats of the same member (or its join and its first heartbeat), " +
				"as the failure detector sees it. Buckets are multiples of heartbeat_interval.",
			Buckets: buckets,
		}),
		events:        map[rpcdef.EventKind]prometheus.Counter{},
		detections:    map[string]prometheus.Counter{},
		registrations: counter("registry_registrations_total", "Register calls to the registry for ClusterService, failed or not."),
		regFailures:   counter("registry_registration_failures_total", "Register calls to the registry that failed."),
		renewals:      counter("registry_renewals_total", "Lease Renew calls to the registry, failed or not."),
		renewFailures: counter("registry_renewal_failures_total", "Lease Renew calls to the registry that failed (unknown lease included)."),
		collapsed: counter("events_collapsed_total", "Events of members changing faster than their event budget, "+
			"folded into the one event that follows (see docs/PROTOCOL.md)."),
	}
	m.hbInterval = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: prefix + "_heartbeat_interval_seconds",
		Help: "The heartbeat interval slaves are told now: heartbeat_interval, or longer while more slaves are up than max_heartbeats_per_second allows.",
	})
	m.hbInterval.Set(interval.Seconds())
	reg.MustRegister(m.interArrival, m.hbInterval)
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: prefix + "_events_total",
		Help: "Membership events, by kind: joined, rejoined, suspect, alive, dead, left, forgotten.",
	}, []string{"kind"})
	reg.MustRegister(events)
	for _, k := range []rpcdef.EventKind{rpcdef.EventJoined, rpcdef.EventRejoined, rpcdef.EventSuspect,
		rpcdef.EventAlive, rpcdef.EventDead, rpcdef.EventLeft, rpcdef.EventForgotten} {
		m.events[k] = events.WithLabelValues(string(k))
	}
	detections := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: prefix + "_detections_total",
		Help: "Members the master saw go, by kind: crash (dead after its connection closed), " +
			"silent (dead for lack of heartbeats), left (left on purpose).",
	}, []string{"kind"})
	reg.MustRegister(detections)
	for _, k := range []string{detectCrash, detectSilent, detectLeft} {
		m.detections[k] = detections.WithLabelValues(k)
	}
	holds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: prefix + "_verdict_holds_total",
		Help: "Times the master held its heartbeat verdicts as its own trouble, by cause: behind (its own " +
			"detector ran late), crowd (many slaves late at once), quiet (no heartbeat from anyone), " +
			"stall (it stalled long enough for the slaves' calls to fail).",
	}, []string{"cause"})
	reg.MustRegister(holds)
	m.holds = map[string]prometheus.Counter{}
	for _, c := range []string{holdBehind, holdCrowd, holdQuiet, holdStall, holdAdmission} {
		m.holds[c] = holds.WithLabelValues(c)
	}
	return m
}

// hold counts a hold of heartbeat verdicts that began, by cause.
func (m *masterMetrics) hold(cause string) {
	if m != nil {
		m.holds[cause].Inc()
	}
}

func (m *masterMetrics) heartbeat() {
	if m != nil {
		m.heartbeats.Inc()
	}
}

func (m *masterMetrics) report() {
	if m != nil {
		m.reports.Inc()
	}
}

// arrival records the gap since a member's previous heartbeat.
func (m *masterMetrics) arrival(gap time.Duration) {
	if m != nil {
		m.interArrival.Observe(gap.Seconds())
	}
}

func (m *masterMetrics) event(k rpcdef.EventKind) {
	if m == nil {
		return
	}
	if c, ok := m.events[k]; ok {
		c.Inc()
	}
}

// interval records the heartbeat interval slaves are told.
func (m *masterMetrics) interval(d time.Duration) {
	if m != nil {
		m.hbInterval.Set(d.Seconds())
	}
}

// collapse counts an event folded into a later one.
func (m *masterMetrics) collapse() {
	if m != nil {
		m.collapsed.Inc()
	}
}

func (m *masterMetrics) detected(kind string) {
	if m != nil {
		m.detections[kind].Inc()
	}
}

// lease counts a Register (renew false) or Renew call and its outcome.
func (m *masterMetrics) lease(renew bool, err error) {
	if m == nil {
		return
	}
	calls, failures := m.registrations, m.regFailures
	if renew {
		calls, failures = m.renewals, m.renewFailures
	}
	calls.Inc()
	if err != nil {
		failures.Inc()
	}
}

// rollCollector reads the roll at scrape time: members by state, and each
// live member's last report, labelled by node. Nothing is updated per report.
type rollCollector struct {
	ms                              *Membership
	members, heartbeatAt            *prometheus.Desc
	cpu, cpus, load1, load5, load15 *prometheus.Desc
	memTotal, memAvailable, memUsed *prometheus.Desc
	reportedAt                      *prometheus.Desc
}

func newRollCollector(ms *Membership) *rollCollector {
	node := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prefix+"_node_"+name, help, []string{"node"}, nil)
	}
	return &rollCollector{
		ms: ms,
		members: prometheus.NewDesc(prefix+"_members",
			"Members of the roll, by state: alive, suspect, dead, left, unknown.", []string{"state"}, nil),
		heartbeatAt: node("last_heartbeat_timestamp_seconds",
			"When the master last heard from the member (heartbeat or join), as a Unix time."),
		cpu:          node("cpu_usage_ratio", "Busy share of all the node's CPUs, 0 to 1, from its last report (alive and suspect members)."),
		cpus:         node("cpus", "CPUs of the node, from its last report."),
		load1:        node("load1", "1-minute load average of the node, from its last report."),
		load5:        node("load5", "5-minute load average of the node, from its last report."),
		load15:       node("load15", "15-minute load average of the node, from its last report."),
		memTotal:     node("memory_total_bytes", "Memory of the node, from its last report."),
		memAvailable: node("memory_available_bytes", "Memory available on the node, from its last report."),
		memUsed:      node("memory_usage_ratio", "Share of the node's memory in use, 0 to 1, from its last report."),
		reportedAt:   node("report_timestamp_seconds", "When the node sampled its last report, on its own clock, as a Unix time."),
	}
}

// Describe implements prometheus.Collector.
func (c *rollCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.members, c.heartbeatAt, c.cpu, c.cpus, c.load1, c.load5, c.load15,
		c.memTotal, c.memAvailable, c.memUsed, c.reportedAt} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *rollCollector) Collect(ch chan<- prometheus.Metric) {
	r, _ := c.ms.Members("")
	states := []rpcdef.Status{rpcdef.StatusAlive, rpcdef.StatusSuspect, rpcdef.StatusDead, rpcdef.StatusLeft, rpcdef.StatusUnknown}
	count := make(map[rpcdef.Status]int, len(states))
	gauge := func(d *prometheus.Desc, v float64, node string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, node)
	}
	for _, m := range r.Members {
		count[m.Status]++
		if !m.LastHeartbeat.IsZero() {
			gauge(c.heartbeatAt, unixSeconds(m.LastHeartbeat), m.Name)
		}
		// A dead or departed member's last figures are history, not a
		// gauge of now: its series end with it.
		res := m.Resources
		if res == nil || (m.Status != rpcdef.StatusAlive && m.Status != rpcdef.StatusSuspect) {
			continue
		}
		gauge(c.cpu, res.CPUPercent/100, m.Name)
		gauge(c.cpus, float64(res.CPUCount), m.Name)
		gauge(c.load1, res.Load1, m.Name)
		gauge(c.load5, res.Load5, m.Name)
		gauge(c.load15, res.Load15, m.Name)
		gauge(c.memTotal, float64(res.MemTotal), m.Name)
		gauge(c.memAvailable, float64(res.MemAvailable), m.Name)
		gauge(c.memUsed, res.MemUsedPercent/100, m.Name)
		if !res.SampledAt.IsZero() {
			gauge(c.reportedAt, unixSeconds(res.SampledAt), m.Name)
		}
	}
	for _, st := range states {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(count[st]), string(st))
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

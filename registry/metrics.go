package registry

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/muster-lab/muster/internal/metrics"
	"github.com/muster-lab/muster/rpcdef"
)

const prefix = metrics.Namespace + "_registry"

// registryMetrics are the registry's counters: one atomic add per call.
type registryMetrics struct {
	registrations prometheus.Counter
	renewals      prometheus.Counter
	expirations   prometheus.Counter
	found         prometheus.Counter
	notFound      prometheus.Counter
	badLookup     prometheus.Counter
}

func newRegistryMetrics(reg prometheus.Registerer) *registryMetrics {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: prefix + "_" + name, Help: help})
		reg.MustRegister(c)
		return c
	}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: prefix + "_lookups_total",
		Help: "Lookup calls answered, by result: found, not_found, invalid (a malformed or ambiguous key).",
	}, []string{"result"})
	reg.MustRegister(lookups)
	return &registryMetrics{
		registrations: counter("registrations_total", "Register calls that were granted a lease."),
		renewals:      counter("renewals_total", "Renew calls that extended a lease."),
		expirations:   counter("expirations_total", "Registrations dropped because their lease ran out."),
		found:         lookups.WithLabelValues("found"),
		notFound:      lookups.WithLabelValues("not_found"),
		badLookup:     lookups.WithLabelValues("invalid"),
	}
}

func (m *registryMetrics) lookup(err error) {
	switch {
	case err == nil:
		m.found.Inc()
	case errors.Is(err, rpcdef.ErrNotFound):
		m.notFound.Inc()
	default:
		m.badLookup.Inc()
	}
}

// tableCollector counts the table's entries by state at scrape time.
type tableCollector struct {
	t       *Table
	entries *prometheus.Desc
}

func newTableCollector(t *Table) *tableCollector {
	return &tableCollector{t: t, entries: prometheus.NewDesc(prefix+"_entries",
		"Registrations in the table now, by state: live, or stale (restored after a restart and not yet renewed).",
		[]string{"state"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.entries }

// Collect implements prometheus.Collector.
func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	n := map[string]int{}
	for _, e := range c.t.List() {
		n[e.State]++
	}
	for _, st := range []string{rpcdef.StateLive, rpcdef.StateStale} {
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(n[st]), st)
	}
}

// Package metrics is what muster's daemons share to export Prometheus
// metrics: a registry of each daemon's own (never the global default one)
// with the Go runtime's and the process's collectors, the /metrics handler, a
// collector for the connections of tlsrpc listeners, and the HTTP server it
// is all served on.
package metrics

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/buildinfo"
	"github.com/muster-lab/muster/internal/tlsrpc"
)

// Namespace starts the name of every muster metric.
const Namespace = "muster"

// NewRegistry makes a daemon's registry, with the Go runtime's collector
// (go_*), the process's (process_*) and muster_build_info already in it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(buildinfo.Read()),
	)
	return reg
}

// buildInfo is muster_build_info: always 1, with the build in its labels
// (as --version prints it), so a query can join it to any other series.
func buildInfo(i buildinfo.Info) prometheus.Collector {
	rev := i.Revision
	if i.Modified {
		rev += "+dirty"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels say which build of muster is running: module version, VCS revision, Go toolchain.",
		ConstLabels: prometheus.Labels{"version": i.Version, "revision": rev, "goversion": i.Go},
	})
	g.Set(1)
	return g
}

// CertExpiry is muster_cert_expiry_timestamp_seconds: when the daemon's own
// certificate expires, as a Unix time. notAfter is read at every scrape (a
// pki.Store's NotAfter), so a reloaded certificate shows at once.
func CertExpiry(notAfter func() time.Time) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "cert_expiry_timestamp_seconds",
		Help:      "When this daemon's own certificate expires (its NotAfter), as a Unix time; a reload changes it.",
	}, func() float64 { return float64(notAfter().Unix()) })
}

// Handler serves what reg gathers in the Prometheus text format. A collector
// that fails is logged and left out; the rest is still served.
func Handler(reg *prometheus.Registry, log logrus.FieldLogger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            warnLog{log},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Registry:            reg, // promhttp_metric_handler_errors_total
	})
}

// warnLog is promhttp's error log.
type warnLog struct{ log logrus.FieldLogger }

func (w warnLog) Println(v ...any) { w.log.Warnln(v...) }

// Listener is one tlsrpc listener of a daemon, under the name its log uses.
type Listener struct {
	Name   string // "tls", "unix"
	Server *tlsrpc.Server
}

// Listeners collects, at scrape time, how many connections each listener has
// open and how many it refused, by reason: PREFIX_connections{listener} and
// PREFIX_refused_connections_total{listener,reason}.
type Listeners struct {
	open, refused *prometheus.Desc
	ls            []Listener
}

// NewListeners makes the collector; prefix is muster_DAEMON.
func NewListeners(prefix string, ls ...Listener) *Listeners {
	return &Listeners{
		open: prometheus.NewDesc(prefix+"_connections",
			"Connections open now, by listener.", []string{"listener"}, nil),
		refused: prometheus.NewDesc(prefix+"_refused_connections_total",
			"Connections refused since the start, by listener and reason: "+strings.Join(tlsrpc.RefusalReasons(), ", ")+
				" (calls_in_flight counts calls; see docs/MONITORING.md).",
			[]string{"listener", "reason"}, nil),
		ls: ls,
	}
}

// Describe implements prometheus.Collector.
func (c *Listeners) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.refused
}

// Collect implements prometheus.Collector.
func (c *Listeners) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.ls {
		ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(l.Server.Conns()), l.Name)
		for _, r := range tlsrpc.RefusalReasons() {
			ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(l.Server.Refused(r)), l.Name, r)
		}
	}
}

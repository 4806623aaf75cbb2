package tests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// httpURL is the root a daemon logged it serves HTTP on, like
// "http://127.0.0.1:40123/".
func httpURL(p *proc, what string) string {
	p.t.Helper()
	return p.waitLine(`serving `+what+` on (http://[^" /]+/)`, 10*time.Second)[1]
}

// scrape GETs a /metrics page and parses it as the Prometheus text format,
// with the classic (pre-UTF-8) rules for names.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s\n%s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("scrape %s: Content-Type %q, want the text format", url, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape of %s: %v", url, err)
	}
	return fams
}

// value is the sample of a gauge or counter with the given label pairs
// (name, value, ...), or -1 if there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	for _, m := range fams[name].GetMetric() {
		if hasLabels(m, labels...) {
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Untyped != nil:
				return m.GetUntyped().GetValue()
			}
		}
	}
	return -1
}

func hasLabels(m *dto.Metric, labels ...string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
		}
		if !found {
			return false
		}
	}
	return true
}

// nodeLabels lists the node label of every sample of a family.
func nodeLabels(fams map[string]*dto.MetricFamily, name string) []string {
	var out []string
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "node" {
				out = append(out, l.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// lint checks a scrape against Prometheus' naming conventions.
func lint(t *testing.T, what string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	list := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		list = append(list, f)
	}
	problems, err := promlint.NewWithMetricFamilies(list).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s: %s", what, p.Metric, p.Text)
	}
}

// TestMetricsScrape scrapes a real masterd and registryd and parses what
// they serve: members by state, heartbeats and their spacing, per-node
// figures, detections by kind, lease renewals, the registry's counters.
func TestMetricsScrape(t *testing.T) {
	c := newCluster(t, nil, "node-1", "node-2", "node-3")
	master := httpURL(c.master, "metrics and the dashboard") + "metrics"
	registry := httpURL(c.reg.proc, "metrics") + "metrics"

	var fams map[string]*dto.MetricFamily
	waitFor(t, 30*time.Second, "3 alive members, each reported and heartbeating, and a lease renewal", func() (bool, string) {
		fams = scrape(t, master)
		alive := value(fams, "muster_master_members", "state", "alive")
		reported := nodeLabels(fams, "muster_master_node_cpu_usage_ratio")
		renewals := value(fams, "muster_master_registry_renewals_total")
		var gaps uint64
		if h := fams["muster_master_heartbeat_interarrival_seconds"].GetMetric(); len(h) == 1 {
			gaps = h[0].GetHistogram().GetSampleCount()
		}
		return alive == 3 && len(reported) == 3 && renewals >= 1 && gaps >= 6,
			fmt.Sprintf("alive %v, reported %v, renewals %v, heartbeat gaps %d", alive, reported, renewals, gaps)
	})
	lint(t, "masterd", fams)
	if got, want := nodeLabels(fams, "muster_master_node_memory_total_bytes"), []string{"node-1", "node-2", "node-3"}; !slices.Equal(got, want) {
		t.Errorf("memory gauges for %v, want %v", got, want)
	}
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		cpu := value(fams, "muster_master_node_cpu_usage_ratio", "node", n)
		mem := value(fams, "muster_master_node_memory_usage_ratio", "node", n)
		load := value(fams, "muster_master_node_load1", "node", n)
		beat := value(fams, "muster_master_node_last_heartbeat_timestamp_seconds", "node", n)
		if cpu < 0 || cpu > 1 || mem <= 0 || mem > 1 || load < 0 || time.Since(time.Unix(int64(beat), 0)) > time.Minute {
			t.Errorf("%s: cpu %v, memory %v, load1 %v, last heartbeat %v", n, cpu, mem, load, beat)
		}
	}
	for _, st := range []string{"suspect", "dead", "left", "unknown"} {
		if v := value(fams, "muster_master_members", "state", st); v != 0 {
			t.Errorf("members{state=%q} = %v, want 0", st, v)
		}
	}
	if v := value(fams, "muster_master_heartbeats_received_total"); v < 3 {
		t.Errorf("heartbeats received = %v, want at least 3", v)
	}
	if v := value(fams, "muster_master_reports_received_total"); v < 3 {
		t.Errorf("reports received = %v, want at least 3", v)
	}
	if v := value(fams, "muster_master_events_total", "kind", "joined"); v != 3 {
		t.Errorf("joined events = %v, want 3", v)
	}
	if v := value(fams, "muster_master_registry_registrations_total"); v < 1 {
		t.Errorf("registrations = %v, want at least 1", v)
	}
	h := fams["muster_master_heartbeat_interarrival_seconds"].GetMetric()
	if len(h) != 1 || h[0].GetHistogram().GetSampleCount() == 0 {
		t.Fatalf("inter-arrival histogram: %v", h)
	}
	// Heartbeats are a second apart: the mean gap is about that, whatever
	// the machine's load.
	if hist := h[0].GetHistogram(); hist.GetSampleSum()/float64(hist.GetSampleCount()) < 0.3 ||
		hist.GetSampleSum()/float64(hist.GetSampleCount()) > 3 {
		t.Errorf("mean heartbeat gap %vs over %d samples", hist.GetSampleSum()/float64(hist.GetSampleCount()), hist.GetSampleCount())
	}
	for _, n := range []string{"go_goroutines", "process_cpu_seconds_total", "muster_master_connections", "muster_master_refused_connections_total"} {
		if fams[n] == nil {
			t.Errorf("no %s", n)
		}
	}

	// A crash and a graceful leave, counted by kind.
	c.slaves["node-2"].kill()
	c.slaves["node-3"].stop()
	waitFor(t, 15*time.Second, "a crash and a leave in the metrics", func() (bool, string) {
		fams = scrape(t, master)
		crash := value(fams, "muster_master_detections_total", "kind", "crash")
		left := value(fams, "muster_master_detections_total", "kind", "left")
		dead := value(fams, "muster_master_members", "state", "dead")
		return crash == 1 && left == 1 && dead == 1, fmt.Sprintf("crash %v, left %v, dead %v", crash, left, dead)
	})
	if v := value(fams, "muster_master_detections_total", "kind", "silent"); v != 0 {
		t.Errorf("silent detections = %v, want 0", v)
	}
	if got := nodeLabels(fams, "muster_master_node_cpu_usage_ratio"); !slices.Equal(got, []string{"node-1"}) {
		t.Errorf("CPU gauges for %v after the crash and the leave, want only node-1's", got)
	}

	// The registry: its registration, the slaves' lookups, and a refused
	// connection that is not TLS at all.
	raw, err := net.Dial("tcp", c.reg.addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, raw)
	raw.Close()
	waitFor(t, 10*time.Second, "the registry to count the refused connection", func() (bool, string) {
		fams = scrape(t, registry)
		v := value(fams, "muster_registry_refused_connections_total", "listener", "tls", "reason", "handshake")
		return v >= 1, fmt.Sprint("refused handshakes: ", v)
	})
	lint(t, "registryd", fams)
	if v := value(fams, "muster_registry_registrations_total"); v < 1 {
		t.Errorf("registrations = %v, want at least 1", v)
	}
	if v := value(fams, "muster_registry_lookups_total", "result", "found"); v < 3 {
		t.Errorf("lookups found = %v, want at least 3 (one per slave)", v)
	}
	if v := value(fams, "muster_registry_entries", "state", "live"); v != 1 {
		t.Errorf("live entries = %v, want 1", v)
	}
	if v := value(fams, "muster_registry_renewals_total"); v < 1 {
		t.Errorf("renewals = %v, want at least 1", v)
	}
	c.slaves["node-1"].stop()
	c.master.stop()
	c.reg.stop()
}

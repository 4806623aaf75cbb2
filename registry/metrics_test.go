package registry

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/muster-lab/muster/internal/metrics"
	"github.com/muster-lab/muster/rpcdef"
)

func TestMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	m := newRegistryMetrics(reg)
	tb := NewTable(10*time.Second, nil, nil)
	reg.MustRegister(newTableCollector(tb))
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	if _, err := tb.Register(rpcdef.Service{ServiceKey: key, Addr: "127.0.0.1:7112"}, Owner{ID: "m1"}); err != nil {
		t.Fatal(err)
	}
	m.registrations.Inc()
	_, err := tb.Lookup(key)
	m.lookup(err)
	_, err = tb.Lookup(rpcdef.ServiceKey{Name: "Nothing", Instance: "lab"})
	m.lookup(err)
	m.lookup(rpcdef.Errorf(rpcdef.CodeInvalid, "ambiguous"))

	want := `
# HELP muster_registry_entries Registrations in the table now, by state: live, or stale (restored after a restart and not yet renewed).
# TYPE muster_registry_entries gauge
muster_registry_entries{state="live"} 1
muster_registry_entries{state="stale"} 0
# HELP muster_registry_lookups_total Lookup calls answered, by result: found, not_found, invalid (a malformed or ambiguous key).
# TYPE muster_registry_lookups_total counter
muster_registry_lookups_total{result="found"} 1
muster_registry_lookups_total{result="invalid"} 1
muster_registry_lookups_total{result="not_found"} 1
# HELP muster_registry_registrations_total Register calls that were granted a lease.
# TYPE muster_registry_registrations_total counter
muster_registry_registrations_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"muster_registry_entries", "muster_registry_lookups_total", "muster_registry_registrations_total"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

package masterd

import (
	"github.com/prometheus/client_golang/prometheus"
)

// groupCollector shows this master's place in the raft group: whether it
// leads, its term and indexes, and every server of the configuration.
type groupCollector struct {
	s                                          *Server
	state, leading, term, applied, commit, srv *prometheus.Desc
	refused                                    *prometheus.Desc
}

func newGroupCollector(s *Server) *groupCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prefix+"_raft_"+name, help, labels, nil)
	}
	return &groupCollector{
		s:       s,
		state:   d("state", "This master's raft state: 1 for the one it is in (leader, follower, candidate, shutdown).", "state"),
		leading: d("leading", "1 while this master judges and serves slaves as the leader, 0 otherwise."),
		term:    d("term", "This master's current raft term: the epoch its registrations carry when it leads."),
		applied: d("applied_index", "The last raft index this master applied to its roll."),
		commit:  d("commit_index", "The last raft index this master knows to be committed."),
		srv: d("server", "1 for each server of the group's configuration as this master knows it, labelled with its name, raft and ClusterService addresses, and whether it leads.",
			"name", "raft_addr", "addr", "leader"),
		refused: d("refused_connections_total", "Raft connections refused (not a master of this cluster, revoked, or not the server dialled), both ways."),
	}
}

// Describe implements prometheus.Collector.
func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.leading, c.term, c.applied, c.commit, c.srv, c.refused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range []string{"leader", "follower", "candidate", "shutdown"} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		gauge(c.state, v, s)
	}
	leading := 0.0
	if c.s.ms.Leading() {
		leading = 1
	}
	gauge(c.leading, leading)
	gauge(c.term, float64(st.Term))
	gauge(c.applied, float64(st.AppliedIndex))
	gauge(c.commit, float64(st.CommitIndex))
	for _, sv := range st.Servers {
		leader := "false"
		if sv.Name == st.Leader {
			leader = "true"
		}
		gauge(c.srv, 1, sv.Name, sv.RaftAddr, sv.Addr, leader)
	}
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.s.group.g.Refused()))
}

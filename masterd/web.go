package masterd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/muster-lab/muster/internal/dashboard"
	"github.com/muster-lab/muster/internal/metrics"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// listenHTTP binds what the config asks for: /metrics and the dashboard in
// plain HTTP on http_listen (loopback), and the same over mutual TLS to
// admin certificates on dashboard_listen.
func (s *Server) listenHTTP() error {
	cfg := s.cfg
	if cfg.HTTPListen == "" && cfg.DashboardListen == "" {
		return nil
	}
	s.listReg = rpcdef.NewRegistryClient(s.regs[0].c.Target(), s.regs[0].dial)
	s.dash = dashboard.New(dashSource{s}, dashboard.Info{
		Cluster: cfg.Cluster, Master: cfg.Store.Identity().String(), HeartbeatInterval: cfg.HeartbeatInterval.D(),
		ReportInterval: cfg.ReportInterval.D(),
	}, s.log.WithField("listener", "http"))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(s.prom, s.log.WithField("listener", "http")))
	mux.Handle("/", s.dash.Handler())
	var err error
	if cfg.HTTPListen != "" {
		if s.http, err = metrics.Listen(cfg.HTTPListen, nil, mux, s.log.WithField("listener", "http")); err != nil {
			return err
		}
	}
	if cfg.DashboardListen != "" {
		s.https, err = metrics.Listen(cfg.DashboardListen, adminOnly(cfg.Store), requireAdmin(mux), s.log.WithField("listener", "dashboard"))
		if err != nil {
			return fmt.Errorf("dashboard_listen: %w", err)
		}
	}
	return nil
}

// HTTPAddr is where /metrics and the dashboard are served in plain HTTP, or
// "" if they are not.
func (s *Server) HTTPAddr() string {
	if s.http == nil {
		return ""
	}
	return s.http.Addr().String()
}

// adminOnly is the master's server TLS configuration with one more check at
// the handshake: the client's certificate must be an admin's.
func adminOnly(st *pki.Store) *tls.Config {
	c := st.ServerConfig()
	forClient := c.GetConfigForClient
	c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		cc, err := forClient(hi)
		if err != nil {
			return nil, err
		}
		verify := cc.VerifyConnection
		cc.VerifyConnection = func(cs tls.ConnectionState) error {
			if verify != nil {
				if err := verify(cs); err != nil {
					return err
				}
			}
			return checkAdmin(cs)
		}
		return cc, nil
	}
	return c
}

func checkAdmin(cs tls.ConnectionState) error {
	id, err := pki.PeerIdentity(cs)
	if err != nil {
		return err
	}
	if id.Role != pki.RoleAdmin {
		return fmt.Errorf("%s may not see the dashboard: it needs an admin certificate (certgen issue --role admin)", id)
	}
	return nil
}

// requireAdmin checks again, per request, what adminOnly checked at the
// handshake.
func requireAdmin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "the dashboard is served here over mutual TLS only", http.StatusForbidden)
			return
		}
		if err := checkAdmin(*r.TLS); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// dashSource is the dashboard's view of the master.
type dashSource struct{ s *Server }

func (d dashSource) Nodes() ([]dashboard.Node, uint64) {
	r, _ := d.s.ms.Members("")
	out := make([]dashboard.Node, 0, len(r.Members))
	for _, m := range r.Members {
		out = append(out, dashboard.Node{Member: m})
	}
	return out, r.Version
}

// History copies every node's figures to return one's; it is asked only
// while a node's detail panel is open, once a second.
func (d dashSource) History(node string) []dashboard.Sample {
	var out []dashboard.Sample
	for _, c := range d.s.ms.CPUHistory()[node] {
		out = append(out, dashboard.Sample{At: c.At, Percent: c.Percent})
	}
	return out
}

func (d dashSource) Recent(n int) ([]rpcdef.Event, uint64) { return d.s.ms.Recent(n) }

func (d dashSource) Since(after uint64, reply *rpcdef.WatchReply) (bool, <-chan struct{}) {
	return d.s.ms.Since(after, reply)
}

// Group is the group from Status, with, on the leader, raft's word on
// which followers are not answering (rpcdef.MasterServer does not carry it).
func (d dashSource) Group() dashboard.Group {
	st := d.s.Status()
	g := dashboard.Group{Self: st.Name, State: st.State, Term: st.Term, Leader: st.Leader, LastContact: st.LastContact,
		Servers: make([]dashboard.Master, 0, len(st.Servers))}
	var failing map[string]time.Time
	if st.State == "leader" {
		for _, sv := range d.s.group.g.Status().Servers {
			if !sv.FailingSince.IsZero() {
				if failing == nil {
					failing = make(map[string]time.Time)
				}
				failing[sv.ID] = sv.FailingSince
			}
		}
	}
	for _, sv := range st.Servers {
		g.Servers = append(g.Servers, dashboard.Master{Name: sv.Name, Addr: sv.Addr, RaftAddr: sv.RaftAddr, Voter: sv.Voter,
			FailingSince: failing[sv.Name]})
	}
	return g
}

func (d dashSource) Services(ctx context.Context) ([]rpcdef.Entry, error) {
	return d.s.listReg.List(ctx)
}

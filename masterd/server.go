// Package masterd is the master: it keeps the roll of the cluster, judges
// its slaves' health from their heartbeats and connections, and tells every
// member of every change.
package masterd

import (
	"context"
	"errors"
	"fmt"

	"net"
	"net/http"
	"net/rpc"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/muster-lab/muster/conf"

	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/dashboard"
	"github.com/muster-lab/muster/internal/metrics"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/tlsrpc"
	"github.com/muster-lab/muster/rpcdef"
)

const (
	// rosterFile is where an older version kept the roster; it is imported
	// into the raft group once.
	rosterFile = "roster.json"
	// maxWatchWait caps how long one Watch call blocks.
	maxWatchWait = 30 * time.Second
)

// Server is masterd.
type Server struct {
	cfg       *conf.Master
	log       logrus.FieldLogger
	ms        *Membership
	srv       *tlsrpc.Server
	advertise string
	svc       rpcdef.Service
	regs      []registry // every registry this master registers with
	roster    string
	pprof     *http.Server
	fanout    *pacer // paces Watch replies when an event wakes every watcher
	rolls     rollBudgets
	ready     sync.Once
	group     *group
	masters   atomic.Pointer[mastersList] // told to slaves

	prom    *prometheus.Registry // this master's metrics, served at /metrics
	met     *masterMetrics
	dash    *dashboard.Dashboard
	listReg *rpcdef.RegistryClient // the dashboard's, apart from the lease's
	http    *metrics.Server        // http_listen: /metrics and the dashboard
	https   *metrics.Server        // dashboard_listen: the same, to admins over mutual TLS
}

// New loads the roster, binds the listener and returns a server ready to Run.
func New(cfg *conf.Master, log logrus.FieldLogger) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("master config has no loaded certificates: use conf.LoadMaster")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	d := cfg.Detector
	minDead, maxDead := cfg.DeadBounds()
	s := &Server{cfg: cfg, log: log, roster: filepath.Join(cfg.StateDir, rosterFile), prom: metrics.NewRegistry(),
		fanout: newPacer(fanoutRate, fanoutBurst)}
	s.met = newMasterMetrics(s.prom, cfg.HeartbeatInterval.D())
	s.ms = NewMembership(Timing{
		Detector: DetectorConfig{
			Interval: cfg.HeartbeatInterval.D(), Window: d.Window, SuspectPhi: d.SuspectPhi, DeadPhi: d.DeadPhi,
			MinDead: minDead, MaxDead: maxDead,
		},
		CloseGrace: d.CloseGrace.D(),
		Report:     cfg.ReportInterval.D(),
		Tick:       d.Tick.D(),
		Budget:     cfg.MaxHeartbeatsPerSecond,
	}, log)
	if err := s.ms.t.Detector.Validate(); err != nil {
		return nil, fmt.Errorf("detector settings: %w", err)
	}
	s.ms.met = s.met
	s.ms.Follow() // until raft says this master leads
	if data, err := os.ReadFile(s.roster); err == nil {
		if _, err := decodeRoster(data); err != nil {
			return nil, fmt.Errorf("%s: %w (move it aside to start with an empty roll)", s.roster, err)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.advertise, err = advertiseAddr(cfg.AdvertiseHost, ln.Addr().(*net.TCPAddr))
	if err != nil {
		ln.Close()
		return nil, err
	}
	opts := tlsrpc.Options{
		HandshakeTimeout: cfg.HandshakeTimeout.D(),
		IdleTimeout:      max(30*time.Second, 10*cfg.HeartbeatInterval.D()),
		MaxConns:         cfg.MaxConns,
		Inline:           true, // Watch, the one call that waits, calls Peer.Block
		// A slave's largest request, a Report at every bound of the
		// contract, is a few KiB; only admins send more.
		MaxMessageFor: tlsrpc.SlaveRequestLimit,
	}
	s.srv, err = tlsrpc.New(ln, cfg.Store.ServerConfig(), opts, s.attach, log.WithField("listener", "tls"))
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.ms.congested = s.srv.Congested
	s.prom.MustRegister(newRollCollector(s.ms), metrics.NewListeners(prefix, metrics.Listener{Name: "tls", Server: s.srv}),
		metrics.CertExpiry(cfg.Store.NotAfter))
	s.svc = rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: cfg.Cluster},
		Version: rpcdef.ClusterVersion, Addr: s.advertise}
	s.regs = dialRegistries(cfg)
	if s.group, err = startGroup(cfg, s.ms.Roll(), s); err != nil {
		s.Close()
		return nil, err
	}
	s.prom.MustRegister(newGroupCollector(s))
	if err := s.listenHTTP(); err != nil {
		s.Close()
		return nil, err
	}
	if cfg.Pprof != "" {
		if s.pprof, err = daemon.Pprof(cfg.Pprof); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// advertiseAddr is the address registered for slaves to dial.
func advertiseAddr(host string, bound *net.TCPAddr) (string, error) {
	if host == "" {
		if !bound.IP.IsUnspecified() {
			host = bound.IP.String()
		} else {
			h, err := os.Hostname()
			if err != nil {
				return "", fmt.Errorf("listening on every interface and no advertise_host set: hostname: %w", err)
			}
			host = h
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(bound.Port)), nil
}

// Addr is the address ClusterService listens on.
func (s *Server) Addr() net.Addr { return s.srv.Addr() }

// Advertised is the address registered in the registry.
func (s *Server) Advertised() string { return s.advertise }

// Membership is the server's roll.
func (s *Server) Membership() *Membership { return s.ms }

// Reload reads the certificates again (on SIGHUP).
func (s *Server) Reload() error {
	return tlsrpc.Reload(s.cfg.Store, s.srv, s.log)
}

// Run serves until ctx ends; then it unregisters from the registry, saves the
// roster and returns.
func (s *Server) Run(ctx context.Context) error {
	if s.http != nil {
		s.log.WithField("http", s.http.URL()).Infof("serving metrics and the dashboard on %s", s.http.URL())
	}
	if s.https != nil {
		s.log.WithField("https", s.https.URL()).Infof("serving the dashboard and metrics to admin certificates on %s", s.https.URL())
	}
	g, gctx := errgroup.WithContext(ctx)
	// The membership stops before the listener closes the connections.
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	context.AfterFunc(gctx, func() {
		s.ms.Stop()
		// A leader hands over first, so that the others do not wait out
		// an election timeout; the connections close after.
		hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.handOver(hctx)
		cancel()
		stopServing()
	})
	g.Go(func() error { return s.srv.Serve(serveCtx) })
	g.Go(func() error { daemon.Every(gctx, s.ms.t.Tick, s.ms.Tick); return nil })
	g.Go(func() error { s.lead(gctx); return nil })
	g.Go(func() error { s.follow(gctx); return nil })
	if left, dead := s.cfg.ReapLeft.D(), s.cfg.ReapDead.D(); left > 0 || dead > 0 {
		g.Go(func() error {
			daemon.Every(gctx, reapEvery(left, dead), func(now time.Time) { s.ms.Reap(now, left, dead) })
			return nil
		})
	}
	if s.dash != nil {
		g.Go(func() error { return s.dash.Run(gctx) })
	}
	if s.http != nil {
		g.Go(func() error { return s.http.Run(gctx) })
	}
	if s.https != nil {
		g.Go(func() error { return s.https.Run(gctx) })
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		// Asked to stop: the loops get stopWithin to end (the registry
		// entry released, the connections closed), and no more, whatever
		// the load. The roster is saved either way.
		t := time.NewTimer(stopWithin)
		select {
		case err = <-done:
		case <-t.C:
			err = fmt.Errorf("not stopped within %v of being asked (the master is overloaded): exiting anyway; the roll is in raft's log", stopWithin)
		}
		t.Stop()
	}
	return err
}

// stopWithin bounds how long Run takes to return once its context ends, so
// that masterd exits within 5 s of SIGTERM under any load.
const stopWithin = 4 * time.Second

// Close stops the listener. It is safe to call twice.
func (s *Server) Close() error {
	if s.pprof != nil {
		s.pprof.Close()
	}
	for _, h := range []*metrics.Server{s.http, s.https} {
		if h != nil {
			h.Close()
		}
	}
	if s.listReg != nil {
		s.listReg.Close()
	}
	for _, r := range s.regs {
		r.c.Close()
	}
	var gerr error
	if s.group != nil {
		gerr = s.group.g.Shutdown()
	}
	return errors.Join(s.srv.Close(), gerr)
}

// logReady logs the one line that says this master serves: slaves can find
// it in the registry, and it answers them. Scripts and tests wait for it.
func (s *Server) logReady(role string) {
	f := logrus.Fields{"addr": s.srv.Addr().String(), "advertise": s.advertise, "cluster": s.cfg.Cluster,
		"role": role, "raft": s.group.g.Addr()}
	if s.http != nil {
		f["http"] = s.http.URL()
	}
	if s.https != nil {
		f["https"] = s.https.URL()
	}
	daemon.Ready(s.log, f)
}

// attach gives each connection a Session that knows its caller.
func (s *Server) attach(srv *rpc.Server, p tlsrpc.Peer) (func(), error) {
	x := &Session{s: s, peer: p, log: s.log.WithFields(logrus.Fields{"peer": p.Addr, "identity": p.Identity.String()})}
	if err := srv.RegisterName(rpcdef.ClusterService, x); err != nil {
		return nil, err
	}
	if p.Identity.Role != pki.RoleSlave {
		return nil, nil
	}
	return func() {
		if p.GaveUp != nil && p.GaveUp() {
			s.ms.ConnAbandoned(p.Identity.Name, p.ConnID)
			return
		}
		s.ms.ConnClosed(p.Identity.Name, p.ConnID)
	}, nil
}

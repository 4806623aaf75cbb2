package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// teardownLimit bounds the leave-and-close at the end.
const teardownLimit = time.Minute

// counters are the run's call counts.
type counters struct {
	joinsFailed   atomic.Uint64
	beats         atomic.Uint64 // answered, while measuring
	beatsFailed   atomic.Uint64
	beatsTimedOut atomic.Uint64
	beatsLost     atomic.Uint64
	beatsSkipped  atomic.Uint64
	reports       atomic.Uint64
	reportsFailed atomic.Uint64
	watches       atomic.Uint64
	watchesFailed atomic.Uint64
	rejoins       atomic.Uint64
	reconnects    atomic.Uint64
	redirects     atomic.Uint64 // a follower named the leader, and the slave went there
	failovers     atomic.Uint64 // a slave's master stopped answering and it joined one again
	leaderChanges atomic.Uint64 // the slaves joined at another master than before
	leavesFailed  atomic.Uint64
}

// run is the state one Run shares with its simulated slaves.
type run struct {
	cfg         Config
	log         logrus.FieldLogger
	addr        string // the master found first
	find        *finder
	masters     masterList // the last reply's, for every simulated slave
	leaderMu    sync.Mutex
	leader      string    // where the latest join was taken
	epoch       time.Time // heartbeat phases count from it
	incarnation uint64
	resources   rpcdef.Resources
	tr          *tracker
	sims        []*sim
	// handshakes bounds the dials and TLS handshakes in flight, JoinRate
	// at a time, for every simulated slave at once (see sim.dial); nil
	// for no bound.
	handshakes chan struct{}

	measuring atomic.Bool // heartbeat latencies are recorded

	watchStop atomic.Bool // the teardown began: no more Watch calls
	beats     Histogram   // heartbeat round trips, after the cold join
	joins     Histogram   // join calls, handshake included
	stats     counters
}

// Run simulates cfg.Slaves slaves against the master and returns what it
// measured. It returns an error only when the run could not be made (bad
// certificates, no master); what went wrong with the master is in the
// Result. It stops by itself after the cold join and cfg.Duration, or
// earlier when ctx ends.
func Run(ctx context.Context, cfg Config, log logrus.FieldLogger) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.JoinPhase+cfg.Duration+2*teardownLimit)
	defer cancel()

	if err := checkFiles(cfg.Slaves); err != nil {
		return nil, err
	}
	ca, err := pki.LoadCA(cfg.CAFile, cfg.CAKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load the CA: %w", err)
	}
	if cfg.Cluster != "" && cfg.Cluster != ca.Cluster {
		return nil, fmt.Errorf("--cluster %s, but the CA %s is for cluster %s", cfg.Cluster, cfg.CAFile, ca.Cluster)
	}
	admin, err := adminStore(cfg, ca)
	if err != nil {
		return nil, err
	}
	find := newAdminFinder(cfg, ca.Cluster, admin)
	addr, err := resolve(ctx, cfg, find)
	if err != nil {
		return nil, err
	}
	r := &run{
		cfg: cfg, log: log, addr: addr, find: find, leader: addr, epoch: time.Now(),
		incarnation: uint64(time.Now().UnixNano()), resources: fixedResources(),
		handshakes: make(chan struct{}, cfg.JoinRate),
	}
	names := make([]string, cfg.Slaves)
	for i := range names {
		names[i] = cfg.name(i)
	}
	r.tr = newTracker(names)

	t0 := time.Now()
	confs, err := issue(ca, names)
	if err != nil {
		return nil, err
	}
	log.Infof("issued %d slave certificates in %v", len(confs), time.Since(t0).Round(time.Millisecond))
	r.sims = make([]*sim, cfg.Slaves)
	for i := range r.sims {
		r.sims[i] = newSim(r, i, confs[i])
	}
	return r.execute(ctx, admin)
}

// checkFiles says whether this process may open a connection per
// simulated slave, and a few more.
func checkFiles(slaves int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // not knowing is no reason to refuse
	}
	if need := uint64(slaves) + 64; lim.Cur < need {
		return fmt.Errorf("-n %d needs about %d open files, but the limit is %d: raise it (ulimit -n %d), and masterd's too", slaves, need, lim.Cur, need+1000)
	}
	return nil
}

// adminStore is the observer's certificate: the one given, or a new admin
// certificate from the CA.
func adminStore(cfg Config, ca *pki.CA) (*pki.Store, error) {
	if cfg.AdminCert != "" {
		st, err := pki.Load(pki.Files{CA: cfg.CAFile, Cert: cfg.AdminCert, Key: cfg.AdminKeyFile})
		if err != nil {
			return nil, fmt.Errorf("load the admin certificate: %w", err)
		}
		if id := st.Identity(); id.Role != pki.RoleAdmin {
			return nil, fmt.Errorf("--admin-cert %s is for %s, a %s: the observer needs an admin certificate (certgen issue --role admin)", cfg.AdminCert, id, id.Role)
		}
		return st, nil
	}
	is, err := ca.Issue(pki.IssueRequest{Role: pki.RoleAdmin, Name: "loadgen"})
	if err != nil {
		return nil, fmt.Errorf("issue the observer's admin certificate: %w", err)
	}
	return pki.FromPEM(ca.CertPEM(), is.CertPEM, is.KeyPEM)
}

// resolve finds the master: the address given, or ClusterService/<cluster>
// in the registries, looked up with the observer's certificate.
func resolve(ctx context.Context, cfg Config, find *finder) (string, error) {
	if cfg.Master != "" {
		return cfg.Master, nil
	}
	return find.master(ctx)
}

// setMasters takes the masters list of a reply, and says so when it changed.
func (r *run) setMasters(list []rpcdef.MasterAddr, version uint64, from string) {
	changed, bad := r.masters.set(list, version, r.cfg.checkAddr)
	if !changed {
		return
	}
	if len(bad) > 0 {
		r.log.Warnf("%s named masters loadgen will not dial: %s", from, strings.Join(bad, "; "))
	}
	if len(list) > 0 {
		r.log.WithField("masters_version", version).Infof("the masters are %s", r.masters.String())
	}
}

// targets is where to try after the master at lost stopped answering: the
// listed masters, leader first, then the registries' answer or --master,
// lost last.
func (r *run) targets(lost string) []string {
	fallback := r.cfg.Master
	if fallback == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*r.cfg.CallTimeout)
		addr, err := r.find.master(ctx)
		cancel()
		if err != nil {
			r.log.Debugf("the registries: %v", err)
		}
		fallback = addr
	}
	return candidates(r.masters.list(), fallback, lost)
}

// joinedAt notes the master that took a join: the leader. The first join
// at another one than before is told, once for all the slaves.
func (r *run) joinedAt(addr string) {
	r.leaderMu.Lock()
	prev := r.leader
	r.leader = addr
	r.leaderMu.Unlock()
	if prev != addr {
		r.stats.leaderChanges.Add(1)
		r.log.WithField("leader", addr).Infof("the simulated slaves follow the leader from %s to %s", prev, addr)
	}
}

// issue makes a slave certificate for every name, in memory, using every CPU.
func issue(ca *pki.CA, names []string) ([]*tls.Config, error) {
	caPEM := ca.CertPEM()
	out := make([]*tls.Config, len(names))
	errs := make([]error, len(names))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) {
					return
				}
				// The default lifetime: masterd warns of certificates
				// that expire within a month.
				is, err := ca.Issue(pki.IssueRequest{Role: pki.RoleSlave, Name: names[i]})
				if err != nil {
					errs[i] = fmt.Errorf("issue a certificate for %s: %w", names[i], err)
					return
				}
				st, err := pki.FromPEM(caPEM, is.CertPEM, is.KeyPEM)
				if err != nil {
					errs[i] = fmt.Errorf("certificate of %s: %w", names[i], err)
					return
				}
				out[i] = st.ClientConfig(pki.ExpectRole(pki.RoleMaster))
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// fixedResources is the report every simulated slave sends: a plausible
// small server, not read from /proc.
func fixedResources() rpcdef.Resources {
	return rpcdef.Resources{
		CPUCount: 4, CPUModel: "Simulated CPU @ 2.40GHz", CPUPercent: 12.5,
		Load1: 0.42, Load5: 0.37, Load15: 0.31,
		MemTotal: 8 << 30, MemAvailable: 6 << 30, MemUsedPercent: 25,
		SwapTotal: 2 << 30, SwapFree: 2 << 30,
		Disks:            []rpcdef.DiskUsage{{Mount: "/", Total: 100 << 30, Free: 60 << 30, UsedPercent: 40}},
		NetRxBytesPerSec: 12000, NetTxBytesPerSec: 8000,
		Procs: 180,
	}
}

// execute joins, runs the steady phase with its strikes, and tears down.
func (r *run) execute(ctx context.Context, admin *pki.Store) (*Result, error) {
	cfg := r.cfg
	res := &Result{Slaves: cfg.Slaves, Master: r.addr, MasterPID: cfg.MasterPID, JoinRate: cfg.JoinRate, WatchStart: cfg.WatchStart, Roll: cfg.Roll}
	for _, s := range r.sims {
		if s.watcher {
			res.Watchers++
		}
	}

	obs, err := newObserverConn(ctx, r, admin)
	if err != nil {
		return nil, err
	}
	defer obs.close()

	var master, self *procSampler
	if cfg.MasterPID > 0 {
		pr, err := NewProcReader(cfg.ProcRoot, cfg.MasterPID)
		if err != nil {
			return nil, err
		}
		master = newProcSampler(pr)
	}
	if pr, err := NewProcReader(cfg.ProcRoot, os.Getpid()); err == nil {
		self = newProcSampler(pr)
	}
	sctx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	for _, p := range []*procSampler{master, self} {
		if p != nil {
			sampling.Go(func() { p.loop(sctx, cfg.Sample) })
		}
	}
	defer func() { stopSampling(); sampling.Wait() }()
	// mark samples both processes now and returns the time, which bounds
	// a phase: the sample falls in both phases it separates.
	mark := func() time.Time {
		now := time.Now()
		for _, p := range []*procSampler{master, self} {
			if p != nil {
				p.takeAt(now)
			}
		}
		return now
	}

	// The cold join: every slave, JoinRate at a time.
	r.log.Infof("joining %d simulated slaves to %s, %d at a time", cfg.Slaves, r.addr, cfg.JoinRate)
	joinStart := mark()
	joined := r.coldJoin(ctx)
	readyAt := mark()
	res.ColdJoin = ColdJoin{Joined: joined, Seconds: readyAt.Sub(joinStart).Seconds(), Call: r.joins.Summary(), Failed: r.stats.joinsFailed.Load()}
	r.log.Infof("cold join: %d of %d joined in %v", joined, cfg.Slaves, readyAt.Sub(joinStart).Round(time.Millisecond))

	var victims []*victim
	end := readyAt
	switch {
	case joined < cfg.Slaves && ctx.Err() != nil:
		res.Error = fmt.Sprintf("stopped during the cold join, %d of %d simulated slaves joined: %v", joined, cfg.Slaves, context.Cause(ctx))
	case joined < cfg.Slaves:
		res.Error = fmt.Sprintf("cold join incomplete: %d of %d simulated slaves joined within --join-timeout %v", joined, cfg.Slaves, cfg.JoinPhase)
	default:
		r.measuring.Store(true)
		if cfg.WatchStart == WatchAtReady {
			after := obs.current(ctx, r.sims[0].name)
			for _, s := range r.sims {
				if s.watcher {
					s.startWatch(after)
				}
			}
		}
		victims = r.strike(ctx, readyAt)
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(readyAt.Add(cfg.Duration))):
		}
		r.measuring.Store(false)
		end = mark()
		if ctx.Err() != nil {
			res.Error = fmt.Sprintf("stopped early, %v into the steady phase: %v", end.Sub(readyAt).Round(time.Millisecond), context.Cause(ctx))
		}
	}
	r.tr.stop(end)
	r.results(res, victims, end.Sub(readyAt))
	r.teardown()

	if master != nil {
		res.MasterUsage = master.phases(joinStart, readyAt, end)
	}
	if self != nil {
		res.SelfUsage = self.phases(joinStart, readyAt, end)
	}
	return res, nil
}

// coldJoin joins every simulated slave, cfg.JoinRate in flight, each tried
// again with backoff until the join phase ends. It returns how many joined.
func (r *run) coldJoin(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.JoinPhase)
	defer cancel()
	var joined atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-progress.C:
				r.log.Infof("cold join: %d of %d joined so far, %d failed attempts", joined.Load(), len(r.sims), r.stats.joinsFailed.Load())
			}
		}
	}()
	for range r.cfg.JoinRate {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(r.sims) || ctx.Err() != nil {
					return
				}
				s := r.sims[i]
				b := daemon.NewBackoff(daemon.InitialBackoff, 2*time.Second)
				for ctx.Err() == nil {
					t0 := time.Now()
					err := s.join(ctx)
					if err == nil {
						r.joins.Record(time.Since(t0))
						joined.Add(1)
						s.start(s.watcher && r.cfg.WatchStart == WatchAtJoin, s.version)
						break
					}
					r.stats.joinsFailed.Add(1)
					if rpcdef.NoAnswer(err) && !errors.Is(err, context.DeadlineExceeded) {
						// The master is gone: try the next one.
						if next := r.targets(s.master()); len(next) > 0 {
							s.moveTo(next[0])
						}
					}
					if ctx.Err() == nil {
						wait := b.Next()
						r.log.WithField("peer", s.name).Warnf("join failed, trying again in %v: %v", wait.Round(time.Millisecond), err)
						daemon.Sleep(ctx, wait)
					}
				}
			}
		})
	}
	wg.Wait()
	return int(joined.Load())
}

// strike kills and silences the victims from readyAt+At on, Spacing apart,
// in the background.
func (r *run) strike(ctx context.Context, readyAt time.Time) []*victim {
	var victims []*victim
	for _, st := range r.cfg.victims() {
		victims = append(victims, r.tr.addVictim(st.idx, r.sims[st.idx].name, st.how, len(r.sims)))
	}
	go func() {
		for j, v := range victims {
			at := readyAt.Add(r.cfg.At + time.Duration(j)*r.cfg.Spacing)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(at)):
			}
			s := r.sims[v.idx]
			// Recorded first: the master's events may come back before
			// the kill returns.
			r.tr.struck(v, time.Now())
			if v.how == howKill {
				s.kill()
			} else {
				s.silence()
			}
			r.log.WithField("peer", s.name).Infof("%s %s", map[string]string{howKill: "killed", howSilence: "silenced"}[v.how], s.name)
		}
	}()
	return victims
}

// teardown leaves the cluster with every running simulated slave, JoinRate
// at a time, then closes every connection and waits for the loops. Leaving
// stops at half the teardown limit: a master too slow to answer gets the
// rest as closed connections.
func (r *run) teardown() {
	r.log.Info("leaving the cluster and closing the connections")
	// Watches first: each pending one returns at the first leave and is not
	// sent again. Otherwise every leave would go to every watcher still
	// running, N² replies for N leaves.
	r.watchStop.Store(true)
	deadline := time.Now().Add(teardownLimit / 2)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range r.cfg.JoinRate {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= len(r.sims) {
					return
				}
				r.sims[i].leave()
			}
		})
	}
	wg.Wait()
	if left := len(r.sims) - int(min(next.Load(), int64(len(r.sims)))); left > 0 {
		r.log.Warnf("the master was too slow to take %d more leaves within %v; closing their connections instead", left, teardownLimit/2)
	}
	for _, s := range r.sims {
		s.close()
	}
	done := make(chan struct{})
	go func() {
		for _, s := range r.sims {
			s.loops.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(teardownLimit):
		r.log.Warnf("some simulated slaves' loops had not ended %v after their connections closed", teardownLimit)
	}
	if n := r.stats.leavesFailed.Load(); n > 0 {
		r.log.Warnf("%d simulated slaves could not leave gracefully; the master will declare them dead", n)
	}
}

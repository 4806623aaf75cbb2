package loadgen

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// observerConn follows the master's events with an admin certificate, for
// detections and false deaths that no simulated slave's Watch saw (with
// --watchers 0, say). Any master serves Watch, a follower too: when the
// one it watches stops answering, it moves to the next of r.targets, and
// its version stays valid there.
type observerConn struct {
	cl      *rpcdef.ClusterClient
	tls     *tls.Config
	version atomic.Uint64 // the latest event version seen
	cancel  context.CancelFunc
	done    sync.WaitGroup

	mu   sync.Mutex
	addr string // the master watched
}

func newObserverConn(ctx context.Context, r *run, admin *pki.Store) (*observerConn, error) {
	o := &observerConn{tls: admin.ClientConfig(pki.ExpectRole(pki.RoleMaster)), addr: r.addr}
	o.cl = rpcdef.NewClusterClient("the master", o.dial)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	m, err := o.cl.Members(cctx, "")
	cancel()
	if err != nil {
		o.cl.Close()
		return nil, fmt.Errorf("read the roll from the master at %s: %w", r.addr, err)
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	o.cancel = stop
	o.version.Store(m.Version)
	o.done.Go(func() { o.loop(wctx, r) })
	return o, nil
}

func (o *observerConn) loop(ctx context.Context, r *run) {
	b := daemon.NewBackoff(daemon.InitialBackoff, 2*time.Second)
	for ctx.Err() == nil {
		after := o.version.Load()
		cctx, cancel := context.WithTimeout(ctx, rpcdef.WatchTimeout(r.cfg.CallTimeout))
		rep, err := o.cl.Watch(cctx, after, rpcdef.WatchWait)
		recv := time.Now()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			at := o.master()
			if rpcdef.NoAnswer(err) {
				if next := r.targets(at); len(next) > 0 && next[0] != at {
					o.moveTo(next[0])
					r.log.Warnf("observer's watch at %s: %v; watching %s instead", at, err, next[0])
					daemon.Sleep(ctx, b.Next())
					continue
				}
			}
			r.log.Warnf("observer's watch at %s: %v", at, err)
			daemon.Sleep(ctx, b.Next())
			continue
		}
		b.Reset()
		r.tr.observe(observer, &rep, recv)
		o.version.Store(rep.Version)
	}
}

// master is the address of the master watched.
func (o *observerConn) master() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.addr
}

// moveTo watches the master at addr from the next call on.
func (o *observerConn) moveTo(addr string) {
	o.mu.Lock()
	o.addr = addr
	o.mu.Unlock()
	o.cl.Close()
}

// dial is the client's Dialer: TLS to the master watched now.
func (o *observerConn) dial(ctx context.Context) (net.Conn, error) {
	return rpcdef.DialTLS(o.master(), o.tls)(ctx)
}

// current is the master's event version now, read with a one-member
// Members call (the whole roll is large at scale), or else the latest the
// observer has seen: watchers that start from it are told only of what
// happens next, not sent the whole roll because the observer lagged.
func (o *observerConn) current(ctx context.Context, member string) uint64 {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if m, err := o.cl.Members(cctx, member); err == nil {
		return m.Version
	}
	return o.version.Load()
}

// close stops the watch, which closes the connection.
func (o *observerConn) close() {
	o.cancel()
	o.done.Wait()
	o.cl.Close()
}

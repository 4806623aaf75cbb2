package loadgen

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// observerConn follows the master's events with an admin certificate, for
// detections and false deaths that no simulated slave's Watch saw (with
// --watchers 0, say).
type observerConn struct {
	cl      *rpcdef.ClusterClient
	version atomic.Uint64 // the latest event version seen
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

func newObserverConn(ctx context.Context, r *run, admin *pki.Store) (*observerConn, error) {
	cl := rpcdef.NewClusterClient("master "+r.addr, rpcdef.DialTLS(r.addr, admin.ClientConfig(pki.ExpectRole(pki.RoleMaster))))
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	m, err := cl.Members(cctx, "")
	cancel()
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("read the roll from the master at %s: %w", r.addr, err)
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	o := &observerConn{cl: cl, cancel: stop}
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
			r.log.Warnf("observer's watch: %v", err)
			daemon.Sleep(ctx, b.Next())
			continue
		}
		b.Reset()
		r.tr.observe(observer, &rep, recv)
		o.version.Store(rep.Version)
	}
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

package masterd

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/daemon"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// registry is one registry the master registers ClusterService with.
type registry struct {
	c    *rpcdef.RegistryClient
	dial rpcdef.Dialer
}

// dialRegistries makes a client for every configured registry (none is
// dialled yet): the TLS addresses, or the local socket.
func dialRegistries(cfg *conf.Master) []registry {
	addrs := cfg.Addrs()
	if len(addrs) == 0 {
		d := rpcdef.DialUnix(cfg.RegistrySocket)
		return []registry{{c: rpcdef.NewRegistryClient("registry socket "+cfg.RegistrySocket, d), dial: d}}
	}
	regs := make([]registry, 0, len(addrs))
	for _, a := range addrs {
		d := rpcdef.DialTLS(a, cfg.Store.ClientConfig(pki.ExpectRole(pki.RoleRegistry)))
		regs = append(regs, registry{c: rpcdef.NewRegistryClient("registry "+a, d), dial: d})
	}
	return regs
}

// keepLeases keeps ClusterService registered with every registry, each on
// its own, until ctx ends; then it releases them. epoch is the raft term
// this master leads in.
func (s *Server) keepLeases(ctx context.Context, epoch uint64) {
	var wg sync.WaitGroup
	for _, r := range s.regs {
		wg.Add(1)
		go func() { defer wg.Done(); s.keepLease(ctx, r.c, epoch) }()
	}
	wg.Wait()
}

// keepLease registers ClusterService with epoch, this master's raft term,
// and renews it at a third of the TTL. After an unknown-lease error (the
// registry restarted and dropped us, our lease ran out, or a master of a
// newer term replaced our entry) it registers again; the registry refuses
// a registration older than the entry it holds, and keepLease keeps
// trying with backoff until ctx ends, as it does when this master loses
// leadership. On the way out it unregisters.
func (s *Server) keepLease(ctx context.Context, reg *rpcdef.RegistryClient, epoch uint64) {
	svc := s.svc // a copy: the server's own is shared by every registry's loop
	svc.Epoch = epoch
	key := svc.ServiceKey.String()
	var lease string
	var ttl time.Duration
	var failing error
	b := daemon.NewBackoff(daemon.InitialBackoff, 2*time.Second)
	for {
		var wait time.Duration
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if lease == "" {
			r, err := reg.Register(cctx, svc)
			s.met.lease(false, err)
			if err == nil {
				lease, ttl = r.Lease, r.TTL
				s.log.WithFields(logrus.Fields{"service": key, "epoch": epoch}).Infof("registered %s at %s with %s, epoch %d (lease %v)", key, s.advertise, reg.Target(), epoch, ttl)
				s.ready.Do(func() { s.logReady("leader") })
			}
			failing = s.leaseError(reg, failing, "register", epoch, err)
		} else {
			_, err := reg.Renew(cctx, svc.ServiceKey, lease)
			s.met.lease(true, err)
			if errors.Is(err, rpcdef.ErrUnknownLease) {
				s.log.WithField("service", key).Warn("the registry no longer knows our lease (it restarted, the lease ran out, or a master of a newer term replaced it); registering again")
				lease, err = "", nil
			}
			failing = s.leaseError(reg, failing, "renew", epoch, err)
		}
		cancel()
		switch {
		case failing != nil:
			wait = b.Next()
		case lease == "":
			wait = 0
		default:
			wait = ttl / 3
			b.Reset()
		}
		select {
		case <-ctx.Done():
			if lease != "" {
				uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if err := reg.Release(uctx, svc.ServiceKey, lease); errors.Is(err, rpcdef.ErrUnknownLease) {
					s.log.Warn("not unregistering: our entry in the registry was replaced by another master")
				} else if err != nil {
					s.log.WithError(err).Warn("unregister from the registry")
				} else {
					s.log.WithField("service", key).Info("unregistered")
				}
				cancel()
			}
			return
		case <-time.After(wait):
		}
	}
}

// leaseError logs a registry failure once, and its recovery. A refusal
// for an older epoch is logged once too, apart from other failures: a
// master of a newer term holds the service, and this one has lost, or is
// about to lose, leadership.
func (s *Server) leaseError(reg *rpcdef.RegistryClient, prev error, op string, epoch uint64, err error) error {
	switch {
	case rpcdef.OlderEpoch(err) && !rpcdef.OlderEpoch(prev):
		s.log.WithError(err).WithField("epoch", epoch).Warnf("%s %s with %s refused: another master leads with a newer term than ours (%d); retrying with backoff until this master steps down", op, s.svc.ServiceKey, reg.Target(), epoch)
	case rpcdef.OlderEpoch(err):
	case err != nil && (prev == nil || rpcdef.OlderEpoch(prev)):
		s.log.WithError(err).Warnf("%s %s with %s failed; retrying with backoff", op, s.svc.ServiceKey, reg.Target())
	case err == nil && prev != nil:
		s.log.Infof("%s with %s works again", op, reg.Target())
	}
	return err
}

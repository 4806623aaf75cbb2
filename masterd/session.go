package masterd

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/tlsrpc"
	"github.com/muster-lab/muster/rpcdef"
)

// certWarning is how close to its expiry a joining slave's certificate is
// warned about.
const certWarning = 7 * 24 * time.Hour

// Session is ClusterService as one connection sees it: every method knows
// the certificate of its caller.
type Session struct {
	s    *Server
	peer tlsrpc.Peer
	log  logrus.FieldLogger
	// watching is set while a Watch of this connection waits: one at a
	// time, so a connection cannot park any number of them.
	watching atomic.Bool
	expiry   atomic.Bool // its certificate's near expiry has been warned of

	logMu    sync.Mutex
	logs     tokens // the refusals it may still log (see warnf)
	unlogged int    // refusals not logged since the last one that was
}

// A connection's refusals are logged at most refusalBurst at once and one
// every refusalEvery after that; the rest are counted in the next line.
// A slave certificate calling what it may not, in a loop, is one line in
// ten seconds, not one per call.
const (
	refusalBurst = 5
	refusalEvery = 10 * time.Second
)

// warnf logs a refusal within the connection's budget.
func (x *Session) warnf(format string, args ...any) {
	x.logMu.Lock()
	ok, _ := x.logs.take(time.Now(), refusalBurst, refusalEvery)
	quiet := x.unlogged
	if ok {
		x.unlogged = 0
	} else {
		x.unlogged++
	}
	x.logMu.Unlock()
	if !ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if quiet > 0 {
		msg += fmt.Sprintf(" (and %d more refusals on this connection not logged)", quiet)
	}
	x.log.Warn(msg)
}

// clip is a name a caller sent, short enough to log or echo: a node name
// is at most pki.MaxNameLen, and anything longer is the caller's mistake
// or attack, not worth more than its first bytes.
func clip(s string) string {
	switch {
	case pki.ValidName(s) == nil:
		return s
	case len(s) <= pki.MaxNameLen:
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%.24q... (%d bytes)", s, len(s))
}

// slave checks the identity rule, Kubernetes' NodeRestriction: a slave may
// only speak for the node named in its own certificate.
func (x *Session) slave(method, node string) (Caller, error) {
	id := x.peer.Identity
	if id.Role != pki.RoleSlave {
		x.warnf("refused %s for %s: caller is a %s, not a slave", method, clip(node), id.Role)
		return Caller{}, rpcdef.Errorf(rpcdef.CodePermission, "%s: only slave certificates may call %s", id, method)
	}
	if node != id.Name {
		x.warnf("impersonation attempt: %s sent %s as %s", id, method, clip(node))
		return Caller{}, rpcdef.Errorf(rpcdef.CodePermission, "%s may only %s as %s, not as %s", id, method, id.Name, clip(node))
	}
	return Caller{Node: node, Addr: x.peer.Addr, ConnID: x.peer.ConnID, CertNotAfter: x.peer.CertNotAfter}, nil
}

func (x *Session) admin(method string) error {
	if x.peer.Identity.Role != pki.RoleAdmin {
		x.warnf("refused %s: it needs an admin certificate", method)
		return rpcdef.Errorf(rpcdef.CodePermission, "%s: %s needs an admin certificate", x.peer.Identity, method)
	}
	return nil
}

// Join admits the calling slave.
func (x *Session) Join(args *rpcdef.JoinArgs, reply *rpcdef.JoinReply) error {
	c, err := x.slave("Join", args.Node)
	if err != nil {
		return err
	}
	if args.Protocol != rpcdef.ProtocolVersion {
		return rpcdef.Errorf(rpcdef.CodeIncompatible, "slave speaks protocol %d, this master speaks %d", args.Protocol, rpcdef.ProtocolVersion)
	}
	if !x.s.ms.Leading() {
		// Before the roll's budget is spent: a slave redirected to and
		// fro during an election must not run out of it.
		return x.s.notLeader()
	}
	// A caller that holds the roll at Have, which the event log still
	// reaches, catches up by Watch: no roll, and no roll budget spent.
	noRoll := args.NoRoll || args.Have > 0 && !x.s.ms.Resets(args.Have)
	if !noRoll {
		if err := x.s.rolls.take(c.Node, time.Now()); err != nil {
			return err
		}
	}
	r, err := x.s.ms.Join(c, args.Incarnation, noRoll)
	if err != nil {
		return x.s.leaderOnly(err)
	}
	if left := time.Until(c.CertNotAfter); left < certWarning && x.expiry.CompareAndSwap(false, true) {
		x.log.Warnf("%s's certificate expires in %v: reissue it and send that slave SIGHUP", c.Node, left.Round(time.Minute))
	}
	r.Master = x.s.cfg.Store.Identity().String()
	if ml := x.s.masters.Load(); ml != nil {
		r.Masters, r.MastersVersion = ml.list, ml.version
	}
	*reply = r
	return nil
}

// Heartbeat records that the calling slave is alive.
func (x *Session) Heartbeat(args *rpcdef.HeartbeatArgs, reply *rpcdef.HeartbeatReply) error {
	x.s.met.heartbeat()
	c, err := x.slave("Heartbeat", args.Node)
	if err != nil {
		return err
	}
	r, err := x.s.ms.Heartbeat(c, args.Incarnation)
	if ml := x.s.masters.Load(); ml != nil && args.MastersVersion != ml.version {
		r.Masters, r.MastersVersion = ml.list, ml.version
	}
	*reply = r
	return x.s.leaderOnly(err)
}

// Report stores the calling slave's resource figures.
func (x *Session) Report(args *rpcdef.ReportArgs, reply *rpcdef.ReportReply) error {
	x.s.met.report()
	c, err := x.slave("Report", args.Node)
	if err != nil {
		return err
	}
	if err := args.Validate(); err != nil {
		return err
	}
	v, err := x.s.ms.Report(c, args.Incarnation, args.Resources)
	reply.Version = v
	return x.s.leaderOnly(err)
}

// Leave marks the calling slave as gone on purpose.
func (x *Session) Leave(args *rpcdef.LeaveArgs, _ *rpcdef.Empty) error {
	c, err := x.slave("Leave", args.Node)
	if err != nil {
		return err
	}
	if err := args.Validate(); err != nil {
		return err
	}
	return x.s.leaderOnly(x.s.ms.Leave(c, args.Incarnation, args.Reason))
}

// Members returns the roll. Any certificate of the cluster may read it.
func (x *Session) Members(args *rpcdef.MembersArgs, reply *rpcdef.MembersReply) error {
	if args.Node == "" && x.peer.Identity.Role == pki.RoleSlave {
		if err := x.s.rolls.take(x.peer.Identity.Name, time.Now()); err != nil {
			return err
		}
	}
	r, err := x.s.ms.Members(args.Node)
	*reply = r
	return err
}

// Watch blocks until there are events after args.After, or args.Wait passes.
func (x *Session) Watch(args *rpcdef.WatchArgs, reply *rpcdef.WatchReply) error {
	// A Watch is no evidence of a slave's life, and its connection's close
	// none of its death: only Join and Heartbeat speak for the slave (see
	// PROTOCOL.md), so a diagnostic watch with a slave's certificate
	// cannot get that slave declared dead.
	if !x.watching.CompareAndSwap(false, true) {
		return rpcdef.Errorf(rpcdef.CodeInvalid, "a Watch is already waiting on this connection: one at a time, wait for it to return")
	}
	defer x.watching.Store(false)
	wait := min(max(args.Wait, 0), maxWatchWait)
	// Up to a quarter earlier, at random: thousands of watches started
	// together (after a fan-out, or a cold join) must not all time out in
	// the same instant, and come back together, every WatchWait.
	wait -= rand.N(wait/4 + 1)
	blocked := false
	var blockErr error // the connection has as many calls waiting as it may
	block := func() {
		if !blocked {
			blocked = true
			blockErr = x.peer.Block() // the connection's other calls go on meanwhile
		}
	}
	if news, changed, version := x.s.ms.Pending(args.After); !news {
		if block(); blockErr != nil {
			return blockErr
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-changed:
		case <-timer.C:
			reply.Version = version
			return nil
		case <-x.peer.Done:
			return errors.New("connection closed")
		}
	}
	// Every reply with news takes its turn (see pacer); what happens
	// meanwhile goes in the same reply.
	if !x.s.fanout.wait(time.Now(), x.peer.Done, block) {
		return errors.New("connection closed")
	}
	if x.peer.Identity.Role == pki.RoleSlave && x.s.ms.Resets(args.After) {
		if err := x.s.rolls.take(x.peer.Identity.Name, time.Now()); err != nil {
			return err
		}
	}
	x.s.ms.Since(args.After, reply)
	return nil
}

// Null answers at once.
func (x *Session) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

// Forget removes a node from the roll (admin only).
func (x *Session) Forget(args *rpcdef.ForgetArgs, _ *rpcdef.Empty) error {
	if err := x.admin("Forget"); err != nil {
		return err
	}
	return x.s.committed(x.s.ms.Forget(args.Node))
}

// Evict declares a node dead now (admin only).
func (x *Session) Evict(args *rpcdef.EvictArgs, _ *rpcdef.Empty) error {
	if err := x.admin("Evict"); err != nil {
		return err
	}
	if err := args.Validate(); err != nil {
		return err
	}
	return x.s.committed(x.s.ms.Evict(args.Node, args.Reason))
}

// Status tells this master's state in the group. Any certificate of the
// cluster may ask.
func (x *Session) Status(_ *rpcdef.StatusArgs, reply *rpcdef.MasterStatus) error {
	*reply = x.s.Status()
	return nil
}

// Announce records a follower's ClusterService address (masters only, each
// for its own name).
func (x *Session) Announce(args *rpcdef.AnnounceArgs, _ *rpcdef.Empty) error {
	id := x.peer.Identity
	if id.Role != pki.RoleMaster || args.Name != id.Name {
		x.warnf("refused Announce of %s by %s: only a master announces, and only itself", clip(args.Name), id)
		return rpcdef.Errorf(rpcdef.CodePermission, "%s may not announce %s: only a master announces, and only itself", id, clip(args.Name))
	}
	return x.s.announce(args.Name, args.Addr)
}

// AddMaster adds a master to the group (admin only).
func (x *Session) AddMaster(args *rpcdef.AddMasterArgs, _ *rpcdef.Empty) error {
	if err := x.admin("AddMaster"); err != nil {
		return err
	}
	x.log.Infof("%s asks to add master %s at %s", x.peer.Identity, clip(args.Name), clip(args.RaftAddr))
	return x.s.addMaster(args.Name, args.RaftAddr)
}

// RemoveMaster removes a master from the group (admin only).
func (x *Session) RemoveMaster(args *rpcdef.RemoveMasterArgs, _ *rpcdef.Empty) error {
	if err := x.admin("RemoveMaster"); err != nil {
		return err
	}
	x.log.Infof("%s asks to remove master %s", x.peer.Identity, clip(args.Name))
	return x.s.removeMaster(args.Name)
}

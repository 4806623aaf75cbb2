package rpcdef

import (
	"context"
	"time"
)

// Cluster method names, as net/rpc spells them. The receiver is named after
// the registry name of the service, so rpc-query ping can call NAME.Null on
// any muster service.
const (
	ClusterJoin         = ClusterService + ".Join"
	ClusterHeartbeat    = ClusterService + ".Heartbeat"
	ClusterReport       = ClusterService + ".Report"
	ClusterLeave        = ClusterService + ".Leave"
	ClusterMembers      = ClusterService + ".Members"
	ClusterWatch        = ClusterService + ".Watch"
	ClusterNull         = ClusterService + ".Null"
	ClusterForget       = ClusterService + ".Forget"
	ClusterEvict        = ClusterService + ".Evict"
	ClusterStatus       = ClusterService + ".Status"
	ClusterAnnounce     = ClusterService + ".Announce"
	ClusterAddMaster    = ClusterService + ".AddMaster"
	ClusterRemoveMaster = ClusterService + ".RemoveMaster"
)

// Status is a member's state in the master's roll.
type Status string

// Member states. See docs/PROTOCOL.md for the transitions.
const (
	StatusAlive   Status = "alive"   // heartbeating on time
	StatusSuspect Status = "suspect" // late, or its connection closed; not yet dead
	StatusDead    Status = "dead"    // declared failed by the master
	StatusLeft    Status = "left"    // left gracefully
	StatusUnknown Status = "unknown" // known from the roster after a master restart, not heard from yet
)

// EventKind says what happened to a member.
type EventKind string

// Event kinds.
const (
	EventJoined    EventKind = "joined"    // first join of a name
	EventRejoined  EventKind = "rejoined"  // a new incarnation replaced an old one
	EventSuspect   EventKind = "suspect"   // alive -> suspect
	EventAlive     EventKind = "alive"     // suspect or unknown -> alive
	EventDead      EventKind = "dead"      // declared dead
	EventLeft      EventKind = "left"      // graceful leave
	EventForgotten EventKind = "forgotten" // removed from the roll by an admin
)

// Member is one node as the master knows it.
type Member struct {
	Name          string
	Addr          string // the address its connection came from
	Status        Status
	Incarnation   uint64 // new at every start of the slave process
	JoinedAt      time.Time
	StatusSince   time.Time
	LastHeartbeat time.Time  // master's wall clock; zero if none since the master started
	Resources     *Resources // the latest report; nil before the first
	CertNotAfter  time.Time  // when the node's certificate expires
}

// Event is one transition of one member. Versions only grow.
type Event struct {
	Version     uint64
	Kind        EventKind
	Node        string
	Incarnation uint64
	Addr        string
	Status      Status // the member's status after the event
	At          time.Time
	Reason      string // why, in words: "connection closed", "no heartbeat for 1.6s"
}

// ProtocolVersion is the Cluster protocol a slave speaks.
const ProtocolVersion = 1

// JoinArgs asks to join. Node must be the name in the caller's certificate.
type JoinArgs struct {
	Node        string
	Incarnation uint64
	Protocol    int
	// NoRoll leaves the roll out of the reply, for a caller that keeps no
	// view of the others. The roll is O(N) bytes per join, so a cold join of
	// N such callers moves O(N²); slaved keeps a view and asks for it.
	NoRoll bool
	// Have is the version of the roll the caller holds from an earlier
	// join or Watch; 0 for none. The master leaves the roll out of the
	// reply (Members nil) when a Watch after Have would bring the caller
	// on by events: a fleet rejoining after a failover does not move
	// N rolls of N members. A master that does not know Have sends the
	// roll.
	Have uint64
}

// JoinReply admits a slave and tells it how to behave.
type JoinReply struct {
	Version           uint64   // the current event version
	Members           []Member // the roll at Version; nil if the caller set NoRoll, or its Have is caught up by events
	HeartbeatInterval time.Duration
	ReportInterval    time.Duration
	Master            string // the master's identity
	// Masters are the group's masters with their ClusterService
	// addresses, leader first: a slave whose master goes tries these
	// before it asks the registry. MastersVersion names this list: the
	// slave sends it back in every heartbeat.
	Masters        []MasterAddr
	MastersVersion uint64
}

// MasterAddr is one master of the group, as slaves dial it.
type MasterAddr struct {
	Name string // the name in its certificate, its raft server ID
	Addr string // its ClusterService address, HOST:PORT
}

// MaxMasters bounds the masters a reply may name: a raft group of more
// than 7 voters only slows its commits.
const MaxMasters = 9

// HeartbeatArgs says "still here".
type HeartbeatArgs struct {
	Node        string
	Incarnation uint64
	Seq         uint64
	// MastersVersion is the version of the masters list the slave holds
	// (JoinReply.MastersVersion); 0 if none.
	MastersVersion uint64
}

// HeartbeatReply carries the current event version, so a slave that missed
// events knows to catch up, and the interval the master wants from this
// slave now: longer than the JoinReply's when the master has more slaves
// than its heartbeat budget. Zero (an older master) means unchanged.
type HeartbeatReply struct {
	Version  uint64
	Interval time.Duration
	// Masters is set when the group's masters are not at the version the
	// caller says it was last told (HeartbeatArgs.MastersVersion); nil
	// otherwise, so that a steady heartbeat carries no list.
	Masters        []MasterAddr
	MastersVersion uint64
}

// ReportArgs carries a resource report.
type ReportArgs struct {
	Node        string
	Incarnation uint64
	Resources   Resources
}

// ReportReply acknowledges a report.
type ReportReply struct {
	Version uint64
}

// LeaveArgs leaves the cluster gracefully.
type LeaveArgs struct {
	Node        string
	Incarnation uint64
	Reason      string
}

// MembersArgs asks for the roll, or one member if Node is set.
type MembersArgs struct {
	Node string
}

// MembersReply is the roll at Version.
type MembersReply struct {
	Version uint64
	Members []Member
}

// WatchArgs waits for events after version After, for at most Wait
// (the master caps it).
type WatchArgs struct {
	After uint64
	Wait  time.Duration
}

// WatchReply holds the events after the asked version, in order. If the
// master no longer has them (it restarted, or the watcher fell far behind),
// Reset is set and Members holds the whole roll at Version instead.
type WatchReply struct {
	Version uint64
	Events  []Event
	Reset   bool
	Members []Member
}

// ForgetArgs removes a node from the roll (admin only).
type ForgetArgs struct {
	Node string
}

// EvictArgs declares a node dead now (admin only).
type EvictArgs struct {
	Node   string
	Reason string
}

// StatusArgs asks a master for its own state in the group.
type StatusArgs struct{}

// MasterStatus is one master's state in the raft group, as it tells it.
type MasterStatus struct {
	Name     string
	Addr     string // its ClusterService address
	RaftAddr string
	// State is "leader", "follower", "candidate" or "shutdown"; rpc-query
	// shows "unreachable" for a master it cannot ask.
	State        string
	Term         uint64
	Leader       string    // the leader's name as this master knows it; "" if none
	LastContact  time.Time // a follower's last word from the leader; zero on the leader
	AppliedIndex uint64
	CommitIndex  uint64
	Version      uint64 // the event version of its replicated roll
	// Servers is the group's configuration as this master knows it, with
	// each server's ClusterService address where it has announced one.
	Servers []MasterServer
}

// MasterServer is one server of the group's raft configuration.
type MasterServer struct {
	Name     string
	RaftAddr string
	Addr     string // "" until it has announced its ClusterService address
	Voter    bool
}

// AnnounceArgs is a follower telling the leader its ClusterService address,
// so that the leader can tell slaves where every master is. Only a master
// of the group may call it, for its own name.
type AnnounceArgs struct {
	Name string
	Addr string
}

// AddMasterArgs asks the leader to add a master to the group (admins
// only). Start the new master first with raft.join = true.
type AddMasterArgs struct {
	Name     string // the name in its master certificate
	RaftAddr string // HOST:PORT of its raft listener
}

// RemoveMasterArgs asks the leader to remove a master from the group
// (admins only).
type RemoveMasterArgs struct {
	Name string
}

// How a watcher long-polls: each Watch waits up to WatchWait at the master,
// and its caller gives it WatchTimeout(callTimeout) before giving up, so
// that the master's answer always comes first.
const (
	WatchWait  = 20 * time.Second
	watchSlack = 2 * time.Second
)

// WatchTimeout is the deadline for one Watch of WatchWait by a caller whose
// other calls have callTimeout.
func WatchTimeout(callTimeout time.Duration) time.Duration {
	return WatchWait + callTimeout + watchSlack
}

// ClusterClient is the typed client of the master's ClusterService.
type ClusterClient struct {
	*Conn
}

// NewClusterClient makes a client over dial; target names the master in errors.
func NewClusterClient(target string, dial Dialer) *ClusterClient {
	return &ClusterClient{Conn: NewConn(target, dial)}
}

// Join joins the cluster.
func (c *ClusterClient) Join(ctx context.Context, args JoinArgs) (JoinReply, error) {
	var r JoinReply
	err := c.Call(ctx, ClusterJoin, &args, &r)
	return r, err
}

// Heartbeat sends one heartbeat. errors.Is(err, ErrStaleIncarnation) or
// ErrNotJoined means join again.
func (c *ClusterClient) Heartbeat(ctx context.Context, args HeartbeatArgs) (HeartbeatReply, error) {
	var r HeartbeatReply
	err := c.Call(ctx, ClusterHeartbeat, &args, &r)
	return r, err
}

// Report sends a resource report.
func (c *ClusterClient) Report(ctx context.Context, args ReportArgs) (ReportReply, error) {
	var r ReportReply
	err := c.Call(ctx, ClusterReport, &args, &r)
	return r, err
}

// Leave leaves gracefully.
func (c *ClusterClient) Leave(ctx context.Context, args LeaveArgs) error {
	return c.Call(ctx, ClusterLeave, &args, &Empty{})
}

// Members returns the roll, or one member.
func (c *ClusterClient) Members(ctx context.Context, node string) (MembersReply, error) {
	var r MembersReply
	err := c.Call(ctx, ClusterMembers, &MembersArgs{Node: node}, &r)
	return r, err
}

// Watch blocks until there are events after the given version, or wait passes.
// ctx must allow longer than wait.
func (c *ClusterClient) Watch(ctx context.Context, after uint64, wait time.Duration) (WatchReply, error) {
	var r WatchReply
	err := c.Call(ctx, ClusterWatch, &WatchArgs{After: after, Wait: wait}, &r)
	return r, err
}

// Forget removes a node from the roll (admin only).
func (c *ClusterClient) Forget(ctx context.Context, node string) error {
	return c.Call(ctx, ClusterForget, &ForgetArgs{Node: node}, &Empty{})
}

// Evict declares a node dead now (admin only).
func (c *ClusterClient) Evict(ctx context.Context, node, reason string) error {
	return c.Call(ctx, ClusterEvict, &EvictArgs{Node: node, Reason: reason}, &Empty{})
}

// Status asks the master it is connected to for its own state in the
// group (any certificate of the cluster).
func (c *ClusterClient) Status(ctx context.Context) (MasterStatus, error) {
	var r MasterStatus
	err := c.Call(ctx, ClusterStatus, &StatusArgs{}, &r)
	return r, err
}

// Announce tells the leader this master's ClusterService address (masters
// only).
func (c *ClusterClient) Announce(ctx context.Context, args AnnounceArgs) error {
	return c.Call(ctx, ClusterAnnounce, &args, &Empty{})
}

// AddMaster adds a master to the raft group (admin only; the leader
// answers, a follower says who the leader is).
func (c *ClusterClient) AddMaster(ctx context.Context, name, raftAddr string) error {
	return c.Call(ctx, ClusterAddMaster, &AddMasterArgs{Name: name, RaftAddr: raftAddr}, &Empty{})
}

// RemoveMaster removes a master from the raft group (admin only).
func (c *ClusterClient) RemoveMaster(ctx context.Context, name string) error {
	return c.Call(ctx, ClusterRemoveMaster, &RemoveMasterArgs{Name: name}, &Empty{})
}

// Null is a probe.
func (c *ClusterClient) Null(ctx context.Context) error {
	return c.Call(ctx, ClusterNull, &Empty{}, &Empty{})
}

// The slave's local view service, served on slaved's UNIX socket.
const (
	viewName = "View"
	ViewGet  = viewName + ".Get"
	ViewNull = viewName + ".Null"
	ViewName = viewName
	// DefaultSlaveSocket is slaved's local socket for rpc-query view.
	DefaultSlaveSocket = "/run/muster/slaved.sock"
)

// ViewReply is a slave's own view of the group.
type ViewReply struct {
	Node        string
	Incarnation uint64
	Master      string // the master's identity
	MasterAddr  string
	Joined      bool
	Version     uint64
	Members     []Member
	// Masters are the masters it was last told, leader first: those it
	// tries first when its master goes.
	Masters []MasterAddr
}

// ViewClient reads a slave's view over its local socket.
type ViewClient struct {
	*Conn
}

// NewViewClient makes a view client for the socket at path.
func NewViewClient(path string) *ViewClient {
	return &ViewClient{Conn: NewConn("slaved socket "+path, DialUnix(path))}
}

// Get returns the slave's view.
func (c *ViewClient) Get(ctx context.Context) (ViewReply, error) {
	var r ViewReply
	err := c.Call(ctx, ViewGet, &Empty{}, &r)
	return r, err
}

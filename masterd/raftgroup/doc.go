// Package raftgroup runs the masters' raft group: hashicorp/raft with
// raft-boltdb/v2 for its log and stable store and a file snapshot store,
// over mutual TLS on a port of its own. It replicates whatever raft.FSM it
// is given; what the masters replicate is theirs to say.
//
// # Who may talk raft
//
// Every raft connection is mutual TLS 1.3 with the certificates of
// internal/pki, read from the pki.Store at every handshake (so a SIGHUP
// Reload applies to the next connection; CloseRevoked ends the open ones of
// certificates the reloaded list revokes). Both ends check that the peer's
// chain leads to a trusted CA, that its identity is of this node's
// cluster, that it is not revoked, and that its role is master. The
// dialling end checks one thing more: raft dials an address, and the
// master it reaches must be named after the server ID that address belongs
// to in raft's configuration (or in the configured peers, before the
// configuration names it). A slave, an admin, a master of another cluster,
// a certificate of another CA, a revoked one, or a master answering at
// another master's address gets no raft RPC through. The accepting end
// does not check the dialler's name against the configuration: a server
// being added must be reachable by its new peers before the configuration
// that names it is committed everywhere.
//
// Incoming handshakes run each on its own goroutine with a deadline
// (StreamConfig.HandshakeTimeout) and a cap on how many run at once, and
// Accept hands raft only authenticated connections: a silent or garbage
// peer costs one slot for at most the deadline and holds up nobody.
//
// # Leadership
//
// raft's LeaderCh drops transitions a slow reader has not taken, and it
// fires as soon as the election is won, before the new leader's log is
// known to be current (hashicorp/raft#509). This package reads raft's
// Config.NotifyCh instead, on its own goroutine so that raft never waits
// for the reader (consul#3231), and passes the transitions on through
// Group.Leadership: true on gaining, false on losing leadership, never
// two alike in a row, and a loss is never hidden by a later gain. The
// reader must still call Group.Barrier before it acts on the replicated
// state, and should run its leader-only work under a context it cancels
// on the false.
//
// # Timings
//
// The defaults are for masters on one LAN, with failover well inside the
// 2 to 3 seconds masters aim for: HeartbeatTimeout, ElectionTimeout and
// LeaderLeaseTimeout 500ms each (raft's are 1s, 1s and 500ms).
// raft.ValidateConfig requires LeaderLeaseTimeout <= HeartbeatTimeout <=
// ElectionTimeout. A follower starts an election when it has heard nothing
// from the leader for a random time between HeartbeatTimeout and twice it
// (0.5 to 1s); with pre-vote, an election on a LAN takes a few round trips
// more, and a split vote costs another random 0.5 to 1s. The leader sends
// heartbeats every HeartbeatTimeout/10 (50ms) and steps down when it has
// not heard from a quorum for LeaderLeaseTimeout, so a leader cut off from
// its peers stops acting as leader within about half a second, usually
// before the others have elected a new one: a deposed leader must still
// check IsLeader (or its context) before every leader-only effect. The
// lease is as long as raft allows: at 250ms, a leader whose CPU was taken
// by a cold join of 300 slaves (race-built, two cores) stepped down three
// times in 30 s with nothing wrong but its own load. Across a WAN, or on
// a machine that busy, raise all three together (masterd's [raft]
// heartbeat_timeout does).
package raftgroup

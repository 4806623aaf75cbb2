package query

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// heartbeater is the call heartbeat needs beyond clusterAPI;
// *rpcdef.ClusterClient has it.
type heartbeater interface {
	Heartbeat(ctx context.Context, args rpcdef.HeartbeatArgs) (rpcdef.HeartbeatReply, error)
}

// incarnationFlag is --incarnation: a number, and whether it was given.
type incarnationFlag struct {
	n   uint64
	set bool
}

func (f *incarnationFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatUint(f.n, 10)
}

// Set takes a whole number, quoted or not: -o json prints incarnations as
// strings, and jq without -r keeps the quotes.
func (f *incarnationFlag) Set(s string) error {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("want a whole number, like the incarnation rpc-query members NODE shows")
	}
	f.n, f.set = n, true
	return nil
}

// heartbeat sends one Heartbeat for node to the master with the certificate
// of --cert, and says what the master answered. It is a diagnostic: it shows
// what the master accepts from a certificate. Without --incarnation it sends
// the incarnation the master holds for node, so that only the certificate is
// judged.
//
// A refusal is an error (exit 1) that quotes the master. An accepted
// heartbeat is a real one: the master counts it for node.
func (q *query) heartbeat(ctx context.Context, node string) error {
	if err := pki.ValidName(node); err != nil {
		return usageError(fmt.Sprintf("heartbeat %s: %v", node, err))
	}
	m, err := q.connect(ctx)
	if err != nil {
		return err
	}
	defer m.Close()
	hb, ok := m.clusterAPI.(heartbeater)
	if !ok {
		return fmt.Errorf("the client of the master at %s cannot send heartbeats", m.entry.Addr)
	}
	inc := q.o.incarnation.n
	if !q.o.incarnation.set {
		r, err := m.Members(ctx, node)
		switch {
		case errors.Is(err, rpcdef.ErrNotFound):
			// Not a member: send 0, and let the master say so.
		case err != nil:
			return q.explainMaster(m, err)
		default:
			for _, mb := range r.Members {
				if mb.Name == node {
					inc = mb.Incarnation
				}
			}
		}
	}
	r, err := hb.Heartbeat(ctx, rpcdef.HeartbeatArgs{Node: node, Incarnation: inc})
	var coded *rpcdef.Error
	if errors.As(err, &coded) {
		return fmt.Errorf("heartbeat for %s refused: %w", node, err)
	}
	if err != nil {
		return q.explainMaster(m, err)
	}
	if q.o.output == "json" {
		return writeJSON(q.out, heartbeatJSON{Node: node, Incarnation: inc, Accepted: true, Version: r.Version})
	}
	_, err = fmt.Fprintf(q.out, "heartbeat for %s (incarnation %d) accepted at version %d\n", node, inc, r.Version)
	return err
}

// heartbeatJSON is heartbeat --json, printed when the master accepts.
type heartbeatJSON struct {
	Node        string `json:"node"`
	Incarnation uint64 `json:"incarnation,string"`
	Accepted    bool   `json:"accepted"`
	Version     uint64 `json:"version"`
}

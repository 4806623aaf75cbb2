package slaved

import (
	"net/rpc"

	"github.com/muster-lab/muster/internal/tlsrpc"
	"github.com/muster-lab/muster/rpcdef"
)

// viewService is the View RPC service on the local socket.
type viewService struct {
	view    *View
	masters *masters
}

// Get returns the slave's view of the group.
func (x *viewService) Get(_ *rpcdef.Empty, reply *rpcdef.ViewReply) error {
	*reply = x.view.Reply()
	reply.Masters, _ = x.masters.get()
	return nil
}

// Null answers at once.
func (x *viewService) Null(_ *rpcdef.Empty, _ *rpcdef.Empty) error { return nil }

// attachView gives every local connection the View service.
func attachView(view *View, ms *masters) tlsrpc.Attach {
	return func(srv *rpc.Server, _ tlsrpc.Peer) (func(), error) {
		return nil, srv.RegisterName(rpcdef.ViewName, &viewService{view: view, masters: ms})
	}
}

package tests

import (
	"errors"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// nobody is the uid the local attacker runs as.
const nobody = 65534

// connectAs connects to a UNIX socket as uid: its effective uid on this
// thread alone, for the connect, so that SO_PEERCRED reports uid. It needs
// root.
func connectAs(t *testing.T, path string, uid int) net.Conn {
	t.Helper()
	runtime.LockOSThread()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		runtime.UnlockOSThread()
		t.Fatalf("cannot take uid %d on a thread: %v", uid, e)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
		// Leave the thread locked: it ends with this goroutine.
		t.Fatalf("cannot take uid 0 back: %v", e)
	}
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatalf("connect to %s as uid %d: %v", path, uid, err)
	}
	f := os.NewFile(uintptr(fd), "unix")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// callOn makes one call on cl and returns its error, failing the test if
// no answer (nor the connection's end) comes within 10 s.
func callOn(t *testing.T, cl *rpc.Client, method string, args, reply any) error {
	t.Helper()
	select {
	case c := <-cl.Go(method, args, reply, make(chan *rpc.Call, 1)).Done:
		return c.Error
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer, and the connection still open, after 10 s", method)
		return nil
	}
}

// callConn makes one call on a connection of its own.
func callConn(t *testing.T, conn net.Conn, method string, args, reply any) error {
	t.Helper()
	cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(conn, 0))
	defer cl.Close()
	return callOn(t, cl, method, args, reply)
}

// request is one call: a method and its arguments.
type request struct {
	method string
	args   any
}

// closedBy checks that the daemon, sent big on conn, closed the
// connection instead of taking the request: big fails, and small on the
// same connection gets no answer either, not even a refusal.
func closedBy(t *testing.T, what string, conn net.Conn, big, small request, reply any) {
	t.Helper()
	cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(conn, 0))
	defer cl.Close()
	// net/rpc answers a request it could not read with an error, then
	// the daemon closes the connection; what shows the close is the next
	// call.
	err := callOn(t, cl, big.method, big.args, reply)
	if err == nil {
		t.Fatalf("%s was served; want the connection closed", what)
	}
	t.Logf("%s: %.200v", what, err)
	var answer rpc.ServerError
	if err := callOn(t, cl, small.method, small.args, reply); err == nil || errors.As(err, &answer) {
		t.Fatalf("after %s the connection was kept: a small request on it was answered (%.200v)", what, err)
	}
}

// TestInsiderLogs: what one slave certificate, or one local user, can make
// registryd log, and the request limits of the local sockets (issue 12).
func TestInsiderLogs(t *testing.T) {
	c := newCluster(t, nil, "node-1")
	reg := c.reg
	mole := c.l.store(c.l.issue(pki.RoleSlave, "mole"))
	key := rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}
	good := tlsRegistry(t, c.l.store(c.l.files(pki.RoleSlave, "node-1")), reg.addr)
	served := func(t *testing.T) {
		t.Helper()
		if e, err := good.Lookup(ctx(t), key); err != nil || e.Addr == "" {
			t.Fatalf("node-1's lookup after the attack: %+v, %v", e, err)
		}
	}

	t.Run("slave certificate floods refusals", func(t *testing.T) {
		huge := strings.Repeat("n", 60_000)
		for _, tc := range []struct {
			name string
			svc  func(i int) rpcdef.Service
			want error
		}{
			{"60 KB names", func(int) rpcdef.Service {
				return rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: huge, Instance: "lab"}, Addr: "127.0.0.1:1"}
			}, rpcdef.ErrInvalid},
			{"60 KB instances", func(int) rpcdef.Service {
				return rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: huge}, Addr: "127.0.0.1:1"}
			}, rpcdef.ErrInvalid},
			{"names a slave may not register", func(int) rpcdef.Service {
				return rpcdef.Service{ServiceKey: key, Addr: "127.0.0.1:1"}
			}, rpcdef.ErrPermission},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rc := tlsRegistry(t, mole, reg.addr)
				before := len(reg.log.String())
				start := time.Now()
				for i := range 1000 {
					_, err := rc.Register(ctx(t), tc.svc(i))
					if !errors.Is(err, tc.want) {
						t.Fatalf("register %d: %v, want %v", i, err, tc.want)
					}
					if n := len(err.Error()); n > 512 {
						t.Fatalf("register %d: a refusal of %d bytes: %.200s...", i, n, err)
					}
				}
				grew := len(reg.log.String()) - before
				t.Logf("1000 registers in %v: registryd's log grew by %d bytes", time.Since(start), grew)
				if grew > 64<<10 {
					t.Fatalf("registryd's log grew by %d bytes for 1000 refusals, want under 64 KiB:\n%.2000s", grew, reg.log.String()[before:])
				}
				// The mole's own connection is still served, and so is
				// everyone else.
				if _, err := rc.Lookup(ctx(t), key); err != nil {
					t.Fatalf("the mole's lookup after its flood: %v", err)
				}
				served(t)
			})
		}
	})

	t.Run("local user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root, to connect as another uid")
		}
		// The sockets' directories must be reachable by uid nobody.
		for dir := filepath.Join(c.l.dir, "run"); dir != filepath.Dir(dir) && strings.HasPrefix(dir, os.TempDir()+"/"); dir = filepath.Dir(dir) {
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		big := strings.Repeat("x", 1<<20)
		bigKey := rpcdef.ServiceKey{Name: big, Instance: "lab"}

		t.Run("registry socket", func(t *testing.T) {
			before := len(reg.log.String())
			huge := &rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: strings.Repeat("x", 4<<20)}}}
			small := &rpcdef.RegisterArgs{Service: rpcdef.Service{ServiceKey: key, Addr: "127.0.0.1:1"}}
			for range 20 {
				closedBy(t, "uid nobody's 4 MiB register", connectAs(t, reg.socket, nobody), request{rpcdef.RegistryRegister, huge}, request{rpcdef.RegistryRegister, small}, &rpcdef.RegisterReply{})
			}
			closedBy(t, "uid nobody's 1 MiB lookup", connectAs(t, reg.socket, nobody), request{rpcdef.RegistryLookup, &rpcdef.LookupArgs{Key: bigKey}}, request{rpcdef.RegistryLookup, &rpcdef.LookupArgs{Key: key}}, &rpcdef.LookupReply{})
			grew := len(reg.log.String()) - before
			t.Logf("registryd's log grew by %d bytes", grew)
			if grew > 64<<10 {
				t.Fatalf("registryd's log grew by %d bytes for 21 oversized requests, want under 64 KiB", grew)
			}
			// A small request of the same user is served; so is root's,
			// and root's 1 MiB lookup is answered (an invalid name), not
			// cut off.
			var r rpcdef.LookupReply
			if err := callConn(t, connectAs(t, reg.socket, nobody), rpcdef.RegistryLookup, &rpcdef.LookupArgs{Key: key}, &r); err != nil || r.Entry.Addr == "" {
				t.Fatalf("uid nobody's small lookup: %+v, %v", r.Entry, err)
			}
			root := rpcdef.NewRegistryClient("socket", rpcdef.DialUnix(reg.socket))
			defer root.Close()
			if _, err := root.Lookup(ctx(t), bigKey); !errors.Is(err, rpcdef.ErrInvalid) {
				t.Fatalf("root's 1 MiB lookup: %v, want an invalid argument", err)
			}
			if e, err := root.Lookup(ctx(t), key); err != nil || e.Addr == "" {
				t.Fatalf("root's lookup: %+v, %v", e, err)
			}
			served(t)
		})

		t.Run("slaved view socket", func(t *testing.T) {
			s := c.slaves["node-1"]
			// View.Get takes Empty: what can be large is the header, a
			// method name of 1 MiB.
			bigView := request{rpcdef.ViewName + "." + big, &rpcdef.Empty{}}
			get := request{rpcdef.ViewGet, &rpcdef.Empty{}}
			closedBy(t, "uid nobody's 1 MiB view request", connectAs(t, s.socket, nobody), bigView, get, &rpcdef.ViewReply{})
			var v rpcdef.ViewReply
			if err := callConn(t, connectAs(t, s.socket, nobody), rpcdef.ViewGet, &rpcdef.Empty{}, &v); err != nil || v.Node != "node-1" {
				t.Fatalf("uid nobody's view: node %q, %v", v.Node, err)
			}
			root, err := net.Dial("unix", s.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			closedBy(t, "root's 1 MiB view request", root, bigView, get, &rpcdef.ViewReply{})
			if v := s.view(t); v.Node != "node-1" {
				t.Fatalf("root's view is of %q", v.Node)
			}
		})
	})
	reg.stop()
}

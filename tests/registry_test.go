package tests

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// registryd is a running registry.
type registryd struct {
	*proc
	addr   string
	socket string
	config string
}

// startRegistry runs registryd from the example config on 127.0.0.1:0, with
// its state and socket in the lab directory. set overrides config keys.
func startRegistry(t *testing.T, l *lab, set map[string]string) *registryd {
	t.Helper()
	return startRegistryTB(t, l, set)
}

func startRegistryB(b *testing.B, l *lab) *registryd { return startRegistryTB(b, l, nil) }

func startRegistryTB(t testing.TB, l *lab, set map[string]string) *registryd {
	t.Helper()
	if _, err := os.Stat(l.files(pki.RoleRegistry, "reg1").Cert); err != nil {
		l.issue(pki.RoleRegistry, "reg1", "--host", "127.0.0.1")
	}
	socket := filepath.Join(l.dir, "run", "registry.sock")
	keys := map[string]string{
		"listen":    fmt.Sprintf("%q", restartablePort(t)),
		"socket":    fmt.Sprintf("%q", socket),
		"state_dir": fmt.Sprintf("%q", filepath.Join(l.dir, "state", "registry")),
	}
	for k, v := range set {
		keys[k] = v
	}
	cfg := l.config("registry.toml", l.dir, keys)
	r := &registryd{config: cfg}
	r.proc = start(t, "registryd", "--config", cfg)
	r.addr = r.ready()
	r.socket = strings.Trim(keys["socket"], `"`)
	return r
}

// restartablePort picks a free loopback port below the kernel's ephemeral
// range (32768-60999 here). A registry that is killed and started again must
// get its port back, and a port from the ephemeral range may be taken by any
// new connection or :0 listener in between.
func restartablePort(t testing.TB) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port found below the ephemeral range")
	return ""
}

// restart starts registryd again on the same address, socket and state.
func (r *registryd) restart(t *testing.T) {
	t.Helper()
	cfg, err := os.ReadFile(r.config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), fmt.Sprintf("listen = %q", r.addr)) {
		t.Fatalf("%s does not listen on %s", r.config, r.addr)
	}
	var addr string
	waitFor(t, 10*time.Second, "registryd to rebind "+r.addr, func() (bool, string) {
		p := start(t, "registryd", "--config", r.config)
		p.waitLine(`msg=ready|address already in use`, 20*time.Second)
		if p.count("address already in use") > 0 {
			<-p.done
			return false, "port still held"
		}
		r.proc, addr = p, p.ready()
		return true, ""
	})
	if addr != r.addr {
		t.Fatalf("restarted registry listens on %s, want %s", addr, r.addr)
	}
}

func (r *registryd) query(t testing.TB, args ...string) (string, int) {
	t.Helper()
	return run(t, []string{"MUSTER_REGISTRY_SOCKET=" + r.socket}, "rpc-query", args...)
}

func lab1(port int) rpcdef.Service {
	return rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: rpcdef.ClusterService, Instance: "lab"}, Version: 1, Addr: fmt.Sprintf("127.0.0.1:%d", port)}
}

func TestRegistryMasterRegistersAndRPCQueryShowsIt(t *testing.T) {
	l := newLab(t)
	r := startRegistry(t, l, nil)
	master := tlsRegistry(t, l.store(l.issue(pki.RoleMaster, "m1")), r.addr)
	reply, err := master.Register(ctx(t), lab1(4242))
	if err != nil {
		t.Fatalf("master registers ClusterService/lab: %v", err)
	}
	if reply.Lease == "" || reply.TTL != 10*time.Second {
		t.Fatalf("register reply = %+v, want a lease and the configured TTL of 10s", reply)
	}

	out, code := r.query(t, "lookup", "ClusterService/lab")
	if code != 0 || !strings.Contains(out, "ClusterService/lab version 1 at 127.0.0.1:4242") || !strings.Contains(out, "spiffe://lab/master/m1") {
		t.Fatalf("rpc-query lookup: exit %d\n%s", code, out)
	}
	out, code = r.query(t, "lookup", "ClusterService") // the only instance
	if code != 0 || !strings.Contains(out, "127.0.0.1:4242") {
		t.Fatalf("rpc-query lookup without instance: exit %d\n%s", code, out)
	}
	out, code = r.query(t, "services")
	if code != 0 {
		t.Fatalf("rpc-query services: exit %d\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME INSTANCE VERSION ADDRESS OWNER TTL STATE" {
		t.Fatalf("rpc-query services printed:\n%s", out)
	}
	for _, l := range lines {
		if utf8.RuneCountInString(l) > 80 {
			t.Fatalf("services line is %d columns, more than a terminal's 80: %q", len(l), l)
		}
	}
	if f := strings.Fields(lines[1]); len(f) != 7 || f[0] != "ClusterService" || f[1] != "lab" || f[2] != "1" || f[3] != "127.0.0.1:4242" || f[4] != "lab/master/m1" || f[6] != "live" {
		t.Fatalf("services row = %q", lines[1])
	}
	out, code = r.query(t, "services", "--json")
	var entries []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &entries) != nil || len(entries) != 1 || entries[0]["address"] != "127.0.0.1:4242" || entries[0]["state"] != "live" {
		t.Fatalf("rpc-query services --json: exit %d\n%s", code, out)
	}

	out, code = r.query(t, "lookup", "NoSuchService/x")
	if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "NoSuchService/x is not registered") {
		t.Fatalf("lookup of an unknown name: exit %d, want 1 and one line\n%s", code, out)
	}
	r.stop()
}

func TestRegistryRefusesWrongRoleAndSecondMaster(t *testing.T) {
	l := newLab(t)
	r := startRegistry(t, l, nil)
	slave := tlsRegistry(t, l.store(l.issue(pki.RoleSlave, "node-1")), r.addr)
	_, err := slave.Register(ctx(t), lab1(4242))
	if !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("slave registering ClusterService: err = %v, want permission denied", err)
	}
	if !strings.Contains(err.Error(), "role slave is not allowed to register ClusterService") {
		t.Fatalf("permission error does not say why: %v", err)
	}

	m1 := tlsRegistry(t, l.store(l.issue(pki.RoleMaster, "m1")), r.addr)
	if _, err := m1.Register(ctx(t), lab1(4242)); err != nil {
		t.Fatal(err)
	}
	m2 := tlsRegistry(t, l.store(l.issue(pki.RoleMaster, "m2")), r.addr)
	_, err = m2.Register(ctx(t), lab1(5555))
	if !errors.Is(err, rpcdef.ErrConflict) {
		t.Fatalf("second master taking the live name: err = %v, want conflict", err)
	}
	if err := m2.Unregister(ctx(t), lab1(0).ServiceKey); !errors.Is(err, rpcdef.ErrPermission) {
		t.Fatalf("second master removing the live name: err = %v, want permission denied", err)
	}
	e, err := m2.Lookup(ctx(t), lab1(0).ServiceKey)
	if err != nil || e.Addr != "127.0.0.1:4242" || e.Owner != "spiffe://lab/master/m1" {
		t.Fatalf("after the refusals the entry is %+v, %v; want m1's", e, err)
	}
	if n := r.count("refused register", "spiffe://lab/slave/node-1"); n != 1 {
		t.Fatalf("the slave's refusal was logged %d times, want once", n)
	}

	// An admin may take the name over, and m1's old lease is then unknown.
	admin := tlsRegistry(t, l.store(l.issue(pki.RoleAdmin, "ops")), r.addr)
	if _, err := admin.Register(ctx(t), lab1(6666)); err != nil {
		t.Fatalf("admin replacing a live entry: %v", err)
	}
	if err := admin.Unregister(ctx(t), lab1(0).ServiceKey); err != nil {
		t.Fatalf("admin unregistering: %v", err)
	}
	if _, err := m2.Register(ctx(t), lab1(5555)); err != nil {
		t.Fatalf("m2 registering the freed name: %v", err)
	}
	r.stop()
}

func TestRegistryLeaseExpires(t *testing.T) {
	l := newLab(t)
	r := startRegistry(t, l, map[string]string{"lease_ttl": `"1s"`})
	m1 := tlsRegistry(t, l.store(l.issue(pki.RoleMaster, "m1")), r.addr)
	reply, err := m1.Register(ctx(t), lab1(4242))
	if err != nil {
		t.Fatal(err)
	}
	registered := time.Now()
	if _, err := m1.Lookup(ctx(t), lab1(0).ServiceKey); err != nil {
		t.Fatalf("fresh entry not found: %v", err)
	}
	waitFor(t, 5*time.Second, "the unrenewed entry to disappear", func() (bool, string) {
		_, err := m1.Lookup(ctx(t), lab1(0).ServiceKey)
		return errors.Is(err, rpcdef.ErrNotFound), fmt.Sprint(err)
	})
	if age := time.Since(registered); age < 900*time.Millisecond {
		t.Fatalf("entry gone after %v, before its 1s TTL", age)
	}
	_, err = m1.Renew(ctx(t), lab1(0).ServiceKey, reply.Lease)
	if !errors.Is(err, rpcdef.ErrUnknownLease) || !strings.Contains(err.Error(), "register again") {
		t.Fatalf("renewing an expired lease: err = %v, want unknown lease telling the owner to register again", err)
	}
	r.waitLine(`lease expired: dropped ClusterService/lab`, 5*time.Second)
	r.stop()
}

func TestRegistryWarmRestart(t *testing.T) {
	l := newLab(t)
	r := startRegistry(t, l, map[string]string{"lease_ttl": `"2s"`})
	m1 := tlsRegistry(t, l.store(l.issue(pki.RoleMaster, "m1")), r.addr)
	admin := tlsRegistry(t, l.store(l.issue(pki.RoleAdmin, "ops")), r.addr)
	kept, err := m1.Register(ctx(t), lab1(4242))
	if err != nil {
		t.Fatal(err)
	}
	other := rpcdef.Service{ServiceKey: rpcdef.ServiceKey{Name: "Metrics", Instance: "lab"}, Version: 1, Addr: "127.0.0.1:9100"}
	if _, err := admin.Register(ctx(t), other); err != nil {
		t.Fatal(err)
	}

	r.kill()
	r.restart(t)
	r.waitLine(`restored 2 registrations`, 5*time.Second)

	for _, k := range []rpcdef.ServiceKey{lab1(0).ServiceKey, other.ServiceKey} {
		e, err := m1.Lookup(ctx(t), k)
		if err != nil || e.State != rpcdef.StateStale {
			t.Fatalf("after restart %s = %+v, %v; want it back as stale", k, e, err)
		}
	}
	if _, err := m1.Renew(ctx(t), lab1(0).ServiceKey, kept.Lease); err != nil {
		t.Fatalf("owner renewing its old lease after the restart: %v", err)
	}
	if e, _ := m1.Lookup(ctx(t), lab1(0).ServiceKey); e.State != rpcdef.StateLive {
		t.Fatalf("renewed entry is %q, want live", e.State)
	}
	// Keep renewing ClusterService while the unrenewed entry runs out.
	waitFor(t, 6*time.Second, "the unrenewed entry to go", func() (bool, string) {
		if _, err := m1.Renew(ctx(t), lab1(0).ServiceKey, kept.Lease); err != nil {
			t.Fatalf("renew: %v", err)
		}
		_, err := m1.Lookup(ctx(t), other.ServiceKey)
		return errors.Is(err, rpcdef.ErrNotFound), fmt.Sprint(err)
	})
	if e, err := m1.Lookup(ctx(t), lab1(0).ServiceKey); err != nil || e.State != rpcdef.StateLive {
		t.Fatalf("renewed entry after the other expired: %+v, %v", e, err)
	}
	r.stop()
}

// attack is one kind of bad client. It returns the local address it used.
type attack struct {
	name string
	do   func(t *testing.T, addr string) string
}

func TestRegistryRefusesBadInput(t *testing.T) {
	l := newLab(t)
	r := startRegistry(t, l, map[string]string{"handshake_timeout": `"1s"`})
	good := tlsRegistry(t, l.store(l.issue(pki.RoleAdmin, "ops")), r.addr)

	foreign := newLab(t) // another CA, same cluster name
	foreignCert := foreign.issue(pki.RoleMaster, "m1")
	expired := l.issue(pki.RoleMaster, "old", "--not-before", time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339), "--lifetime", "24h")
	future := l.issue(pki.RoleMaster, "future", "--not-before", time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339))

	tlsDial := func(f pki.Files) func(t *testing.T, addr string) string {
		return func(t *testing.T, addr string) string {
			pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			if err != nil {
				t.Fatal(err)
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The attacker trusts any server and presents its bad certificate.
			conf := &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
			tc := tls.Client(c, conf)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			err = tc.Handshake()
			if err == nil {
				// TLS 1.3: the client finishes before the server checks its certificate.
				_, err = tc.Read(make([]byte, 1))
			}
			if err == nil {
				t.Fatalf("handshake with a bad certificate succeeded")
			}
			return c.LocalAddr().String()
		}
	}
	attacks := []attack{
		{"plaintext", func(t *testing.T, addr string) string {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			expectClosed(t, c)
			return c.LocalAddr().String()
		}},
		{"random bytes", func(t *testing.T, addr string) string {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			junk := make([]byte, 4096)
			crand.Read(junk)
			c.Write(junk)
			expectClosed(t, c)
			return c.LocalAddr().String()
		}},
		{"foreign CA", tlsDial(foreignCert)},
		{"expired certificate", tlsDial(expired)},
		{"not yet valid certificate", tlsDial(future)},
		{"handshake never finished", func(t *testing.T, addr string) string {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			expectClosed(t, c) // we send nothing; the server must give up
			if d := time.Since(start); d > 4*time.Second {
				t.Fatalf("silent client held on for %v, handshake_timeout is 1s", d)
			}
			return c.LocalAddr().String()
		}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			local := a.do(t, r.addr)
			waitFor(t, 5*time.Second, "the refusal to be logged", func() (bool, string) {
				return r.count("refused connection", local) == 1, fmt.Sprintf("%d log lines for %s", r.count("refused connection", local), local)
			})
			if err := good.Null(ctx(t)); err != nil {
				t.Fatalf("good client after %s: %v", a.name, err)
			}
			if _, err := good.List(ctx(t)); err != nil {
				t.Fatalf("good client after %s: %v", a.name, err)
			}
		})
	}
	r.stop()
}

// expectClosed reads until the server closes the connection.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server did not close the connection: %v", err)
	}
}

const childEnv = "MUSTER_E2E_CHILD"

// childMain runs in a copy of the test binary started as another user.
func childMain(mode string) int {
	switch mode {
	case "register-unix":
		c := rpcdef.NewRegistryClient("socket", rpcdef.DialUnix(os.Getenv("MUSTER_REGISTRY_SOCKET")))
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Lookup(ctx, lab1(0).ServiceKey); err != nil {
			fmt.Println("lookup:", err)
			return 3
		}
		_, err := c.Register(ctx, lab1(7777))
		fmt.Println("register:", err)
		if errors.Is(err, rpcdef.ErrPermission) {
			return 0
		}
		return 4
	}
	fmt.Println("unknown child mode", mode)
	return 5
}

func TestRegistryLocalSocket(t *testing.T) {
	l := newLab(t)
	// The socket lives where an unprivileged user can reach it.
	shared, err := os.MkdirTemp("", "muster-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	os.Chmod(shared, 0o755)
	socket := filepath.Join(shared, "registry.sock")
	r := startRegistry(t, l, map[string]string{"socket": fmt.Sprintf("%q", socket)})

	// As root, the registry's own user here, registration over the socket works.
	local := rpcdef.NewRegistryClient("socket", rpcdef.DialUnix(socket))
	defer local.Close()
	if os.Getuid() != 0 {
		t.Skip("this test registers as root and then as another user: run it as root")
	}
	if _, err := local.Register(ctx(t), lab1(4242)); err != nil {
		t.Fatalf("root registering over the socket: %v", err)
	}
	out, code := r.query(t, "lookup", "ClusterService/lab")
	if code != 0 || !strings.Contains(out, "owner local:uid=0") {
		t.Fatalf("lookup over the socket with no certificate: exit %d\n%s", code, out)
	}

	// As nobody: lookup works, registration is refused.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(shared, "child.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(child, data, 0o755); err != nil {
		t.Fatal(err)
	}
	ctxc, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := execCommand(ctxc, child)
	cmd.Env = append(os.Environ(), childEnv+"=register-unix", "MUSTER_REGISTRY_SOCKET="+socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out2, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as uid 65534: %v\n%s", err, out2)
	}
	if !strings.Contains(string(out2), "over the local socket only root or the registry's own user may register") {
		t.Fatalf("refusal does not say why:\n%s", out2)
	}
	if e, _ := local.Lookup(ctx(t), lab1(0).ServiceKey); e.Addr != "127.0.0.1:4242" {
		t.Fatalf("entry after the refused registration: %+v", e)
	}
	r.stop()
}

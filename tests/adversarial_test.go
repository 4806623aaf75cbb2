package tests

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/gob"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/rpc"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// health is what a daemon's pprof listener says about its goroutines and heap.
type health struct {
	goroutines int
	heap       int64 // HeapInuse after a GC
}

var (
	goroutineRe = regexp.MustCompile(`goroutine profile: total (\d+)`)
	heapRe      = regexp.MustCompile(`# HeapInuse = (\d+)`)
)

func readHealth(t *testing.T, pprofAddr string) health {
	t.Helper()
	get := func(path string, re *regexp.Regexp) int64 {
		resp, err := http.Get("http://" + pprofAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		m := re.FindSubmatch(body)
		if m == nil {
			t.Fatalf("%s: no %s in\n%.300s", path, re, body)
		}
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return n
	}
	return health{
		goroutines: int(get("/debug/pprof/goroutine?debug=1", goroutineRe)),
		heap:       get("/debug/pprof/heap?debug=1&gc=1", heapRe),
	}
}

// settled waits until the daemon is back within a margin of its baseline:
// a few goroutines, and 4 MiB of heap.
func settled(t *testing.T, pprofAddr string, base health) {
	t.Helper()
	var h health
	waitFor(t, 15*time.Second, "goroutines and heap back to the baseline", func() (bool, string) {
		h = readHealth(t, pprofAddr)
		return h.goroutines <= base.goroutines+3 && h.heap <= base.heap+4<<20,
			fmt.Sprintf("%d goroutines (baseline %d), heap %d KiB (baseline %d KiB)", h.goroutines, base.goroutines, h.heap>>10, base.heap>>10)
	})
}

// target is a daemon under attack.
type target struct {
	name  string
	addr  string
	pprof string
	proc  *proc
	good  func(t *testing.T) error // a good client's call
	call  string                   // a method an authenticated client may call
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestAdversarial(t *testing.T) {
	l := newLab(t)
	spare := l.issue(pki.RoleAdmin, "spare")
	l.certgen("revoke", "--dir", l.certs, spare.Cert)
	crl := fmt.Sprintf("%q", l.dir+"/certs/crl.pem")
	regPprof := freePort(t)
	r := startRegistry(t, l, map[string]string{"handshake_timeout": `"1s"`, "max_conns": "64", "crl": crl, "pprof": fmt.Sprintf("%q", regPprof)})
	masterPprof := freePort(t)
	c := &cluster{t: t, l: l, reg: r, slaves: map[string]*slave{}}
	l.issue(pki.RoleMaster, "m1", "--host", "127.0.0.1")
	c.mcfg = l.config("master.toml", l.dir, map[string]string{
		"listen": `"127.0.0.1:0"`, "registry": fmt.Sprintf("%q", r.addr),
		"state_dir": fmt.Sprintf("%q", l.dir+"/state/master"), "handshake_timeout": `"1s"`,
		"max_conns": "64", "crl": crl, "pprof": fmt.Sprintf("%q", masterPprof),
	})
	c.startMaster()

	adminSt := l.store(l.issue(pki.RoleAdmin, "ops"))
	reg := tlsRegistry(t, adminSt, r.addr)
	master := c.client(pki.RoleAdmin, "ops")
	masterAddr := c.master.waitLine(`msg=ready addr="?([^" ]+)"?`, time.Second)[1]
	targets := []target{
		{name: "registryd", addr: r.addr, pprof: regPprof, proc: r.proc, call: rpcdef.RegistryLookup,
			good: func(t *testing.T) error { _, err := reg.List(ctx(t)); return err }},
		{name: "masterd", addr: masterAddr, pprof: masterPprof, proc: c.master, call: rpcdef.ClusterMembers,
			good: func(t *testing.T) error { _, err := master.Members(ctx(t), ""); return err }},
	}

	foreign := newLab(t)
	foreignCert := foreign.issue(pki.RoleAdmin, "evil")
	expired := l.issue(pki.RoleAdmin, "old", "--not-before", time.Now().Add(-48*time.Hour).UTC().Format(time.RFC3339), "--lifetime", "24h")
	future := l.issue(pki.RoleAdmin, "future", "--not-before", time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339))
	badTLS := func(f pki.Files) func(t *testing.T, tg target) {
		return func(t *testing.T, tg target) {
			for range 20 {
				pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
				if err != nil {
					t.Fatal(err)
				}
				conn, err := tls.Dial("tcp", tg.addr, &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
				if err == nil {
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, err = conn.Read(make([]byte, 1))
					conn.Close()
				}
				if err == nil || errors_isTimeout(err) {
					t.Fatalf("a bad certificate was not refused: %v", err)
				}
			}
		}
	}
	attacks := []struct {
		name string
		do   func(t *testing.T, tg target)
		log  string // a line the daemon must have logged
	}{
		{"1000 connections of random bytes", func(t *testing.T, tg target) {
			var wg sync.WaitGroup
			sem := make(chan struct{}, 32)
			for range 1000 {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					conn, err := net.DialTimeout("tcp", tg.addr, 5*time.Second)
					if err != nil {
						return
					}
					defer conn.Close()
					junk := make([]byte, 512)
					rand.Read(junk)
					conn.Write(junk)
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					io.Copy(io.Discard, conn)
				}()
			}
			wg.Wait()
		}, "first record does not look like a TLS handshake"},
		{"plaintext", func(t *testing.T, tg target) {
			conn, err := net.Dial("tcp", tg.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			rpc.NewClient(conn).Call(tg.call, &rpcdef.Empty{}, &rpcdef.Empty{})
		}, "refused connection"},
		{"foreign CA", badTLS(foreignCert), "certificate signed by unknown authority"},
		{"expired certificate", badTLS(expired), "certificate has expired"},
		{"not yet valid certificate", badTLS(future), "certificate has expired or is not yet valid"},
		{"revoked certificate", badTLS(spare), "certificate is revoked"},
		{"handshakes that never finish", func(t *testing.T, tg target) {
			var conns []net.Conn
			for range 40 {
				conn, err := net.Dial("tcp", tg.addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, conn)
			}
			for _, conn := range conns {
				expectClosed(t, conn)
				conn.Close()
			}
		}, "TLS handshake not finished within 1s"},
		{"connection flood past the cap", func(t *testing.T, tg target) {
			var conns []net.Conn
			defer func() {
				for _, conn := range conns {
					conn.Close()
				}
			}()
			for range 200 {
				conn, err := net.Dial("tcp", tg.addr)
				if err != nil {
					break
				}
				conns = append(conns, conn)
			}
		}, "connections open, the cap"},
		{"oversized message", func(t *testing.T, tg target) {
			conn, err := tls.Dial("tcp", tg.addr, adminSt.ClientConfig(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cl := rpc.NewClientWithCodec(rpcdef.NewClientCodec(conn, 0))
			big := strings.Repeat("x", 20<<20)
			err = cl.Call(tg.call, &rpcdef.LookupArgs{Key: rpcdef.ServiceKey{Name: big}}, &rpcdef.LookupReply{})
			if err == nil {
				t.Fatal("a 20 MiB request was served")
			}
		}, "message exceeds the size limit"},
		{"deeply nested message", func(t *testing.T, tg target) {
			conn, err := tls.Dial("tcp", tg.addr, adminSt.ClientConfig(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			w := bufio.NewWriter(conn)
			enc := gob.NewEncoder(w)
			enc.Encode(&rpc.Request{ServiceMethod: tg.call, Seq: 1})
			enc.Encode(nested(20000))
			w.Flush()
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, conn)
		}, "closed connection of spiffe://lab/admin/ops"},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			if err := tg.good(t); err != nil {
				t.Fatal(err)
			}
			base := readHealth(t, tg.pprof)
			for _, a := range attacks {
				t.Run(a.name, func(t *testing.T) {
					// The daemons log at most 20 refusals a second: after a
					// flood, an attack may need repeating to be logged.
					before := tg.proc.count(a.log)
					for try := 0; ; try++ {
						a.do(t, tg)
						deadline := time.Now().Add(2 * time.Second)
						for tg.proc.count(a.log) == before && time.Now().Before(deadline) {
							time.Sleep(20 * time.Millisecond) // poll interval
						}
						if tg.proc.count(a.log) > before {
							break
						}
						if try == 3 {
							t.Fatalf("%s logged no line with %q", tg.name, a.log)
						}
					}
					waitFor(t, 10*time.Second, "a good client to be served", func() (bool, string) {
						err := tg.good(t)
						return err == nil, fmt.Sprint(err)
					})
					settled(t, tg.pprof, base)
				})
			}
		})
	}
	c.master.stop()
	r.stop()
}

// nested builds a value whose type nests depth slices: [][][]...int.
func nested(depth int) any {
	typ := reflect.TypeOf(0)
	for range depth {
		typ = reflect.SliceOf(typ)
	}
	st := reflect.StructOf([]reflect.StructField{{Name: "Junk", Type: typ}})
	v := reflect.New(st).Elem()
	cur := v.Field(0)
	for cur.Kind() == reflect.Slice {
		s := reflect.MakeSlice(cur.Type(), 1, 1)
		cur.Set(s)
		cur = s.Index(0)
	}
	return v.Addr().Interface()
}

func errors_isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

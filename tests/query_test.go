package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// adminEnv is the environment rpc-query needs to reach the cluster as an admin.
func (c *cluster) adminEnv() []string {
	f := c.l.files(pki.RoleAdmin, "ops")
	return []string{"MUSTER_REGISTRY_SOCKET=" + c.reg.socket, "MUSTER_CA=" + f.CA, "MUSTER_CERT=" + f.Cert, "MUSTER_KEY=" + f.Key}
}

func TestRPCQueryClusterCommands(t *testing.T) {
	c := newCluster(t, nil, "node-1", "node-2")
	admin := c.client(pki.RoleAdmin, "ops")
	c.waitStatus(admin, "node-1", rpcdef.StatusAlive, 10*time.Second)
	c.waitStatus(admin, "node-2", rpcdef.StatusAlive, 10*time.Second)
	env := c.adminEnv()

	out, code := run(t, env, "rpc-query", "ping", "ClusterService/lab")
	if code != 0 || !regexp.MustCompile(`^ClusterService/lab version 1 ready and waiting at 127\.0\.0\.1:\d+ \(rtt [0-9.]+[µm]s, spiffe://lab/master/m1\)\n$`).MatchString(out) {
		t.Fatalf("rpc-query ping: exit %d\n%q", code, out)
	}

	// Resource figures arrive with the first report, right after the join.
	waitFor(t, 10*time.Second, "members to show resource figures", func() (bool, string) {
		out, code = run(t, env, "rpc-query", "members")
		return code == 0 && !strings.Contains(out, " - "), out
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[3], "2 members: 2 alive") {
		t.Fatalf("rpc-query members:\n%s", out)
	}
	for _, l := range lines {
		if utf8.RuneCountInString(l) > 80 {
			t.Fatalf("members line is %d columns, more than a terminal's 80: %q", len(l), l)
		}
	}
	out, code = run(t, env, "rpc-query", "members", "node-1")
	if code != 0 || !strings.Contains(out, "status:") || !strings.Contains(out, "cpu count:") || !strings.Contains(out, "memory total:") {
		t.Fatalf("rpc-query members node-1: exit %d\n%s", code, out)
	}
	out, code = run(t, env, "rpc-query", "members", "--json")
	var doc struct {
		Members []map[string]any `json:"members"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Members) != 2 {
		t.Fatalf("rpc-query members --json: exit %d\n%s", code, out)
	}
	out, code = run(t, env, "rpc-query", "top")
	if code != 0 || len(strings.Split(strings.TrimSpace(out), "\n")) != 3 {
		t.Fatalf("rpc-query top: exit %d\n%s", code, out)
	}
	out, code = run(t, env, "rpc-query", "members", "node-9")
	if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("members of an unknown node: exit %d, want 1 and one line\n%s", code, out)
	}
	out, code = run(t, env, "rpc-query", "members", "--status", "sleepy")
	if code != 2 {
		t.Fatalf("members --status sleepy: exit %d, want 2\n%s", code, out)
	}
	out, code = run(t, []string{"MUSTER_SLAVE_SOCKET=" + c.slaves["node-2"].socket}, "rpc-query", "view")
	if code != 0 || !strings.HasPrefix(out, "view of node-2") || !strings.Contains(out, "node-1") {
		t.Fatalf("rpc-query view: exit %d\n%s", code, out)
	}

	// watch streams the crash of node-2 until interrupted.
	cmd := exec.Command(bin("rpc-query"), "watch")
	cmd.Env = append(cmd.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines2 := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines2 <- sc.Text()
		}
		close(lines2)
	}()
	expect := func(re string) {
		t.Helper()
		rx := regexp.MustCompile(re)
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines2:
				if !ok {
					t.Fatalf("watch ended before a line matching %q", re)
				}
				if rx.MatchString(l) {
					return
				}
			case <-deadline:
				t.Fatalf("watch printed no line matching %q", re)
			}
		}
	}
	expect(`^-- watching cluster lab`)
	c.slaves["node-2"].kill()
	expect(`node-2\s+suspect\s+\(connection closed\)`)
	expect(`node-2\s+dead\s+\(connection closed and not back within 500ms\)`)
	cmd.Process.Signal(syscall.SIGINT)
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("rpc-query watch after SIGINT: %v, want exit 0", err)
		}
	case <-wctx.Done():
		t.Fatal("rpc-query watch did not stop on SIGINT")
	}

	// ping of a service that does not answer exits non-zero.
	c.master.kill()
	out, code = run(t, env, "rpc-query", "ping", "ClusterService/lab")
	if code != 1 || !strings.Contains(out, "is not answering") {
		t.Fatalf("ping of a dead master: exit %d\n%s", code, out)
	}
}

// TestRPCQueryScripting drives what a script or a health check does with
// rpc-query against the real daemons: wait, exit codes, -o json with
// incarnations as strings fed back to heartbeat, forget, evict, --master
// and ping HOST:PORT.
func TestRPCQueryScripting(t *testing.T) {
	c := newCluster(t, nil, "node-1", "node-2")
	c.client(pki.RoleAdmin, "ops") // issues the admin certificate
	env := c.adminEnv()
	expect := func(wantCode int, wantRe string, args ...string) string {
		t.Helper()
		out, code := run(t, env, "rpc-query", args...)
		if code != wantCode || !regexp.MustCompile(wantRe).MatchString(out) {
			t.Fatalf("rpc-query %s: exit %d, want %d and output matching %s:\n%s", strings.Join(args, " "), code, wantCode, wantRe, out)
		}
		return out
	}

	expect(0, `^waited \d+\.\ds for at least 2 members alive: 2 members: 2 alive\n$`, "wait", "members", "--alive", "2", "--timeout", "20s")
	expect(0, `^muster \S+ \(`, "--version")
	expect(0, `^node-1\nnode-2\n$`, "members", "-o", "name")
	expect(3, `^rpc-query: timed out after 300ms waiting for member node-1 to be left \(\d+ attempts?\); last: node-1 is alive\n$`,
		"wait", "member", "node-1", "--for", "left", "--timeout", "300ms")

	// Incarnations are strings in JSON, and go back to heartbeat exactly.
	out := expect(0, `"incarnation": "\d+"`, "members", "node-1", "-o", "json")
	var m struct {
		Incarnation any `json:"incarnation"`
	}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	inc, ok := m.Incarnation.(string)
	if !ok {
		t.Fatalf("incarnation decodes as %T, want a string", m.Incarnation)
	}

	// The master's address, from the registry, for --master and ping HOST:PORT.
	out = expect(0, `"address"`, "lookup", "ClusterService/lab", "-o", "json")
	var entry struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(out), &entry); err != nil {
		t.Fatal(err)
	}
	noReg := append(slices.Clone(env), "MUSTER_REGISTRY_SOCKET="+filepath.Join(t.TempDir(), "none.sock"))
	if out, code := run(t, noReg, "rpc-query", "--master", entry.Address, "members", "-o", "name", "--sort-by", "status"); code != 0 || out != "node-1\nnode-2\n" {
		t.Errorf("members --master %s without a registry: exit %d\n%s", entry.Address, code, out)
	}
	if out, code := run(t, noReg, "rpc-query", "ping", entry.Address); code != 0 || !strings.HasPrefix(out, "ClusterService ready and waiting at "+entry.Address) {
		t.Errorf("ping %s: exit %d\n%s", entry.Address, code, out)
	}
	if out, code := run(t, noReg, "rpc-query", "ping", c.reg.addr); code != 0 || !strings.HasPrefix(out, "Registry ready and waiting at "+c.reg.addr+" (rtt ") {
		t.Errorf("ping %s (the registry): exit %d\n%s", c.reg.addr, code, out)
	}

	// A crash: wait sees it, members NODE exits 4, top shows no figures.
	c.slaves["node-2"].kill()
	expect(0, `^waited \d+\.\ds for member node-2 to be dead: node-2 is dead\n$`, "wait", "member", "node-2", "--for", "dead", "--timeout", "20s")
	expect(4, `(?m)^status: +dead since .*\n(?s:.*)rpc-query: node-2 is dead, not alive\n$`, "members", "node-2")
	expect(0, `(?m)^node-2( +-){7} +dead$`, "top")
	expect(0, `(?m)^node-2 +127\.0\.0\.1:\d+ +dead +…\d+ +\S+ +- +- +- `, "members", "node-*", "--no-headers")

	// forget and evict need an admin certificate.
	slave := c.l.files(pki.RoleSlave, "node-1")
	out, code := run(t, env, "rpc-query", "--cert", slave.Cert, "--key", slave.Key, "forget", "node-2")
	if code != 1 || !strings.Contains(out, "forget needs an admin certificate") {
		t.Errorf("forget with a slave's certificate: exit %d\n%s", code, out)
	}
	expect(0, `^node-2 evicted: declared dead in cluster lab \(tested\)\n$`, "evict", "node-2", "--reason", "tested")
	expect(0, `^node-2 forgotten: removed from the roll of cluster lab\n$`, "forget", "node-2")
	expect(0, `^waited \d+\.\ds for member node-2 to be gone from the roll: node-2 is not in the roll\n$`, "wait", "member", "node-2", "--for", "gone", "--timeout", "5s")
	expect(1, `^rpc-query: no member node-2 in cluster lab`, "members", "node-2")
	expect(1, `^rpc-query: no member node-2 in cluster lab`, "forget", "node-2")

	// Last, as it is a real heartbeat: the incarnation read back from
	// JSON is node-1's, not refused as stale.
	out, code = run(t, env, "rpc-query", "--cert", slave.Cert, "--key", slave.Key, "heartbeat", "node-1", "--incarnation", inc)
	if code != 0 || out != "heartbeat for node-1 (incarnation "+inc+") accepted at version "+strings.TrimPrefix(regexp.MustCompile(`version \d+`).FindString(out), "version ")+"\n" {
		t.Errorf("heartbeat --incarnation %s (from -o json): exit %d\n%s", inc, code, out)
	}
}

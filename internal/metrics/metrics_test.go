package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/rpc"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/muster-lab/muster/internal/buildinfo"
	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/internal/tlsrpc"
)

// snakeCase is what every label value muster sets looks like.
var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestListeners counts a refused connection of a real tlsrpc listener: a
// UNIX socket whose attach refuses everyone.
func TestListeners(t *testing.T) {
	ln, err := tlsrpc.ListenUnix(t.TempDir()+"/s.sock", "test")
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(*rpc.Server, tlsrpc.Peer) (func(), error) { return nil, io.EOF }
	srv, err := tlsrpc.New(ln, nil, tlsrpc.Options{}, refuse, logtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Read(make([]byte, 1)) // until the server hangs up
	c.Close()

	reg := NewRegistry()
	reg.MustRegister(NewListeners("muster_test", Listener{Name: "unix", Server: srv}))
	var want strings.Builder
	fmt.Fprintf(&want, "# HELP muster_test_refused_connections_total Connections refused since the start, by listener and reason: %s (calls_in_flight counts calls; see docs/MONITORING.md).\n",
		strings.Join(tlsrpc.RefusalReasons(), ", "))
	want.WriteString("# TYPE muster_test_refused_connections_total counter\n")
	reasons := append([]string(nil), tlsrpc.RefusalReasons()...)
	sort.Strings(reasons)
	for _, r := range reasons {
		if !snakeCase.MatchString(r) {
			t.Errorf("refusal reason %q is not snake_case", r)
		}
		n := 0
		if r == tlsrpc.RefusedAttach {
			n = 1
		}
		fmt.Fprintf(&want, "muster_test_refused_connections_total{listener=\"unix\",reason=%q} %d\n", r, n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := testutil.GatherAndCompare(reg, strings.NewReader(want.String()), "muster_test_refused_connections_total")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval: the refusal is counted after the hang-up
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestServer serves /metrics on a free loopback port, then stops with its
// context; Close is safe again afterwards.
func TestServer(t *testing.T) {
	reg := NewRegistry()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(reg, logtest.New(t)))
	s, err := Listen("127.0.0.1:0", nil, mux, logtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %q", s.URL())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	resp, err := http.Get(s.URL() + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := Listen(s.Addr().String(), nil, mux, logtest.New(t)); err != nil {
		t.Errorf("the port is still held after Close: %v", err)
	}
}

// TestServerCloseBeforeRun: a server closed before it ran lets go of its port.
func TestServerCloseBeforeRun(t *testing.T) {
	s, err := Listen("127.0.0.1:0", nil, http.NotFoundHandler(), logtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Run(context.Background()); err != nil {
		t.Errorf("Run after Close: %v", err)
	}
}

// TestBuildInfo finds muster_build_info in every daemon's registry, with the
// labels --version prints, and promlint content with it.
func TestBuildInfo(t *testing.T) {
	reg := NewRegistry()
	i := buildinfo.Read()
	rev := i.Revision
	if i.Modified {
		rev += "+dirty"
	}
	want := fmt.Sprintf(`
# HELP muster_build_info Always 1; the labels say which build of muster is running: module version, VCS revision, Go toolchain.
# TYPE muster_build_info gauge
muster_build_info{goversion=%q,revision=%q,version=%q} 1
`, i.Go, rev, i.Version)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "muster_build_info"); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(reg, "muster_build_info")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}

	dirty := buildInfo(buildinfo.Info{Version: "v1.2.3", Revision: "abc123def456", Modified: true, Go: "go1.26.8"})
	want = `
# HELP muster_build_info Always 1; the labels say which build of muster is running: module version, VCS revision, Go toolchain.
# TYPE muster_build_info gauge
muster_build_info{goversion="go1.26.8",revision="abc123def456+dirty",version="v1.2.3"} 1
`
	if err := testutil.CollectAndCompare(dirty, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestCertExpiry reads the certificate's expiry at every scrape, so a
// reloaded certificate shows without a restart, and promlint is content.
func TestCertExpiry(t *testing.T) {
	notAfter := time.Unix(1_900_000_000, 0)
	reg := NewRegistry()
	reg.MustRegister(CertExpiry(func() time.Time { return notAfter }))
	want := func(v int64) string {
		return fmt.Sprintf(`
# HELP muster_cert_expiry_timestamp_seconds When this daemon's own certificate expires (its NotAfter), as a Unix time; a reload changes it.
# TYPE muster_cert_expiry_timestamp_seconds gauge
muster_cert_expiry_timestamp_seconds %d
`, v)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(1_900_000_000)), "muster_cert_expiry_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	notAfter = notAfter.Add(24 * time.Hour) // a reload
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(1_900_086_400)), "muster_cert_expiry_timestamp_seconds"); err != nil {
		t.Errorf("after a reload: %v", err)
	}
	problems, err := testutil.GatherAndLint(reg, "muster_cert_expiry_timestamp_seconds")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

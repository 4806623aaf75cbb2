package masterd

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/conf"
	"github.com/muster-lab/muster/internal/logtest"
	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/internal/pki/pkitest"
	"github.com/muster-lab/muster/internal/waitfor"
)

// TestHTTPListeners runs a master with both listeners: /metrics and the
// page in plain HTTP on loopback, and the same over mutual TLS, where only
// an admin certificate gets in.
func TestHTTPListeners(t *testing.T) {
	ca := pkitest.New(t, "lab")
	dir := t.TempDir()
	cfg := conf.DefaultMaster()
	cfg.Listen = "127.0.0.1:0"
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Registry, cfg.RegistrySocket = "", filepath.Join(dir, "no-registry.sock") // registration fails quietly
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.DashboardListen = "127.0.0.1:0"
	cfg.Store = ca.NodeStore(pki.RoleMaster, "m1")
	s, err := New(cfg, logtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		s.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	}()

	get := func(c *http.Client, url string) (int, string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	for path, want := range map[string]string{
		"/metrics":      "muster_master_members{state=\"alive\"} 0",
		"/":             "<title>muster dashboard</title>",
		"/api/snapshot": `"master":"spiffe://lab/master/m1"`,
	} {
		code, body, err := get(plain, s.http.URL()+strings.TrimPrefix(path, "/"))
		if err != nil || code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s over HTTP: %d %v; want %q in\n%.500s", path, code, err, want, body)
		}
	}

	// The page shows the group: a master alone leads a group of one.
	waitfor.State(t, 10*time.Second, "a group with m1 leading in the snapshot", func() (bool, string) {
		_, body, err := get(plain, s.http.URL()+"api/snapshot")
		return err == nil && strings.Contains(body, `"group":{"self":"m1","state":"leader"`) &&
				strings.Contains(body, `"servers":[{"name":"m1","addr":"`+s.Advertised()+`"`) && strings.Contains(body, `"leader":true,"self":true`),
			fmt.Sprintf("%v\n%.1000s", err, body)
	})

	client := func(role pki.Role, name string) *http.Client {
		tc := ca.NodeStore(role, name).ClientConfig(pki.ExpectRole(pki.RoleMaster))
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	}
	url := s.https.URL() + "api/snapshot"
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("dashboard_listen URL %q", url)
	}
	if code, body, err := get(client(pki.RoleAdmin, "ops"), url); err != nil || code != http.StatusOK || !strings.Contains(body, `"cluster":"lab"`) {
		t.Errorf("admin over mutual TLS: %d %v\n%.300s", code, err, body)
	}
	if code, _, err := get(client(pki.RoleAdmin, "ops"), s.https.URL()+"metrics"); err != nil || code != http.StatusOK {
		t.Errorf("admin GET /metrics over mutual TLS: %d %v", code, err)
	}
	if code, _, err := get(client(pki.RoleSlave, "node-1"), url); err == nil {
		t.Errorf("a slave certificate got %d from the dashboard, want the handshake refused", code)
	}
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if code, _, err := get(noCert, url); err == nil {
		t.Errorf("a client without a certificate got %d from the dashboard, want the handshake refused", code)
	}
	// Plain HTTP on the TLS port gets nothing.
	if code, _, err := get(plain, strings.Replace(url, "https://", "http://", 1)); err == nil && code == http.StatusOK {
		t.Errorf("plain HTTP on dashboard_listen: %d", code)
	}
}

func TestRequireAdmin(t *testing.T) {
	h := requireAdmin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusForbidden {
		t.Errorf("a request without TLS: %d, want 403", rec.Code)
	}
}

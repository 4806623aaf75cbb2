package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// chromiumPath is Debian's chromium; scripts/install-chromium.sh installs it.
const chromiumPath = "/usr/bin/chromium"

// chromium returns the browser to drive, installing it first if it is
// missing. Where it cannot be installed the test fails: a browser test that
// skips itself would pass having shown nothing.
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	script := filepath.Join(repoRoot, "scripts", "install-chromium.sh")
	t.Logf("%s is missing: running %s", chromiumPath, script)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script).CombinedOutput()
	if err != nil {
		t.Fatalf("the dashboard test needs chromium and %s failed (%v); install it with: apt-get install chromium\n%s", script, err, out)
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s ran but %s is still missing:\n%s", script, chromiumPath, out)
	}
	return chromiumPath
}

// browser starts headless chromium with a fresh profile, and returns a
// context whose actions run in its one tab. Flags that would make it reach
// the network on its own (updates, sync, safe browsing, QUIC) are off: this
// machine refuses such connections, and a test has no business making them.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	path := chromium(t)
	profile, err := os.MkdirTemp("", "muster-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	out := &lineLog{}
	alloc, stopAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(width, height),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.CombinedOutput(out),
	)
	ctx, stopTab := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		stopTab()
		stopAlloc() // waits for the browser to exit
		// Its helpers may still write in the profile for a moment.
		for range 50 {
			if os.RemoveAll(profile) == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if t.Failed() {
			t.Logf("--- chromium output:\n%s", out.String())
		}
	})
	// The first action starts the browser; its lifetime is ctx's.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("start %s: %v\n%s", path, err, out.String())
	}
	return ctx
}

// eval runs a JavaScript expression in the page, bounded in time.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(cctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// domStatus is the status the page shows for a node: its card's
// data-status and the words on its badge.
func domStatus(t *testing.T, ctx context.Context, node string) (status, badge string) {
	t.Helper()
	r := eval[[]string](t, ctx, fmt.Sprintf(`(() => {
		const c = document.querySelector('.node[data-node=%q]');
		return c ? [c.dataset.status || "", c.querySelector('.badge').textContent] : ["", ""];
	})()`, node))
	return r[0], r[1]
}

// TestDashboard opens masterd's dashboard in headless chromium on a real
// cluster of three slaves, SIGKILLs one, and checks that the page shows it
// dead within the detection bound. It saves a screenshot; with -update it
// also writes docs/dashboard.png.
func TestDashboard(t *testing.T) {
	ctx := browser(t, 1600, 1000)
	// Reports every second rather than every 5: the sparklines get a few
	// points within the test's time.
	c := newCluster(t, map[string]string{"http_listen": `"127.0.0.1:0"`, "report_interval": `"1s"`}, "node-1", "node-2", "node-3")
	url := httpURL(c.master, "metrics and the dashboard")
	admin := c.client(pki.RoleAdmin, "ops")
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		c.waitStatus(admin, n, rpcdef.StatusAlive, 10*time.Second)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	waitFor(t, 15*time.Second, "the page to show three alive nodes, each with a CPU sparkline, and the registry's services", func() (bool, string) {
		r := eval[[]int](t, ctx, `[
			document.querySelectorAll('.node[data-status="alive"]').length,
			document.querySelectorAll('.node .spark polyline').length,
			document.querySelectorAll('#services tr[data-service="ClusterService/lab"]').length,
			document.querySelectorAll('#events li[data-kind="joined"]').length]`)
		return r[0] == 3 && r[1] == 3 && r[2] == 1 && r[3] == 3,
			fmt.Sprintf("%d alive, %d sparklines, %d ClusterService rows, %d joined events", r[0], r[1], r[2], r[3])
	})
	if link := eval[string](t, ctx, `document.getElementById('link').dataset.state`); link != "live" {
		t.Errorf("the page's link to the master is %q, want live", link)
	}
	if *update {
		// For the picture in docs/: sparklines with some history.
		waitFor(t, 40*time.Second, "20 CPU figures on every sparkline", func() (bool, string) {
			n := eval[int](t, ctx, `Math.min(...[...document.querySelectorAll('.node .spark polyline')].map(p => p.points.numberOfItems))`)
			return n >= 20, fmt.Sprint(n, " figures")
		})
	}

	// SIGKILL node-2: the page must say so, in words, within the bound:
	// close_grace (500ms) and a detector tick, plus the page's own delay.
	const bound = 3 * time.Second
	killed := time.Now()
	c.slaves["node-2"].kill()
	var status, badge string
	waitFor(t, 15*time.Second, "the page to show node-2 dead", func() (bool, string) {
		status, badge = domStatus(t, ctx, "node-2")
		return status == "dead", fmt.Sprintf("node-2 is %q (%q)", status, badge)
	})
	took := time.Since(killed)
	t.Logf("node-2 SIGKILLed: the dashboard showed it dead after %v", took.Round(time.Millisecond))
	if took > bound {
		// A master that stalled (a loaded machine) holds every verdict for
		// max_dead: that is the detector's rule, not the page's delay.
		if stalls := c.master.count("the master itself stalled"); stalls > 0 {
			t.Logf("over the %v bound, but the master logged %d stalls of its own", bound, stalls)
		} else {
			t.Errorf("the page showed node-2 dead %v after the kill, over the %v bound", took.Round(time.Millisecond), bound)
		}
	}
	if !strings.Contains(badge, "DEAD") {
		t.Errorf("node-2's badge says %q: the status must be readable without colour", badge)
	}
	waitFor(t, 5*time.Second, "the event log to show node-2's death", func() (bool, string) {
		reason := eval[string](t, ctx, `(document.querySelector('#events li[data-kind="dead"][data-node="node-2"] .reason') || {}).textContent || ""`)
		return strings.Contains(reason, "connection closed"), fmt.Sprintf("reason %q", reason)
	})
	for _, n := range []string{"node-1", "node-3"} {
		if st, _ := domStatus(t, ctx, n); st != "alive" {
			t.Errorf("%s shows %q, want alive", n, st)
		}
	}
	if s := eval[string](t, ctx, `document.getElementById('summary').textContent`); !strings.Contains(s, "2 alive") || !strings.Contains(s, "1 dead") {
		t.Errorf("summary %q, want 2 alive and 1 dead", s)
	}

	// Let a snapshot or two land so the ages read as they do live, then
	// keep a picture of the page.
	time.Sleep(1500 * time.Millisecond) // a settled page for the picture, not synchronisation
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(cctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if *update {
		doc := filepath.Join(repoRoot, "docs", "dashboard.png")
		if err := os.WriteFile(doc, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", doc)
	}
	for _, n := range []string{"node-1", "node-3"} {
		c.slaves[n].stop()
	}
	c.master.stop()
}

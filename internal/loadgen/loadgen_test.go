package loadgen

import (
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/muster-lab/muster/rpcdef"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 2))
	var all []time.Duration
	for range 100000 {
		// Log-uniform from 10µs to 1s, as latencies spread.
		d := time.Duration(10e3 * math.Pow(1e5, rng.Float64()))
		all = append(all, d)
		h.Record(d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[rankOf(q, len(all))]
		got := h.Quantile(q)
		if rel := float64(got-exact) / float64(exact); rel < -1.0/histSub || rel > 1.0/histSub {
			t.Errorf("q%v = %v, exact %v: off by %.1f%%, want within %.1f%%", q, got, exact, 100*rel, 100.0/histSub)
		}
	}
	if h.Max() != all[len(all)-1] || h.Count() != uint64(len(all)) {
		t.Errorf("max %v count %d, want %v and %d", h.Max(), h.Count(), all[len(all)-1], len(all))
	}
}

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1} {
		i := bucketOf(v)
		low, width := bucketRange(i)
		if v < low || v-low >= width || i >= histBuckets {
			t.Errorf("%d in bucket %d = [%d, %d+%d)", v, i, low, low, width)
		}
	}
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Summary().Count != 0 {
		t.Error("empty histogram")
	}
	h.Record(-time.Second)
	if h.Max() != 0 {
		t.Errorf("negative recorded as %v", h.Max())
	}
}

func TestProcReader(t *testing.T) {
	r, err := NewProcReader("testdata/proc", 4242)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	// utime 1234 + stime 266 ticks at 100 Hz; 25600 pages of 4 KiB.
	if s.CPU != 15*time.Second || s.RSS != 25600*uint64(os.Getpagesize()) {
		t.Errorf("CPU %v RSS %d", s.CPU, s.RSS)
	}
	if _, err := NewProcReader("testdata/proc", 999); err == nil || !strings.Contains(err.Error(), "--master-pid") {
		t.Errorf("missing process: err = %v", err)
	}
}

func TestUsageOf(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	samples := []ProcSample{
		{At: at(0), CPU: 0, RSS: 10 << 20},
		{At: at(1), CPU: 500 * time.Millisecond, RSS: 30 << 20},
		{At: at(2), CPU: 600 * time.Millisecond, RSS: 20 << 20},
		{At: at(3), CPU: 2 * time.Second, RSS: 20 << 20},
	}
	u, ok := usageOf(samples, at(0), at(2))
	if !ok || u.CPUPercent != 30 || u.PeakCPUPercent != 50 || u.RSSMiB != 20 || u.PeakRSSMiB != 30 {
		t.Errorf("%+v %v", u, ok)
	}
	if _, ok := usageOf(samples, at(2.5), at(3)); ok {
		t.Error("one sample gave a usage")
	}
}

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.Master, c.CAFile, c.CAKeyFile = "127.0.0.1:7112", "ca.pem", "ca-key.pem"
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // in the error; "" is valid
	}{
		{"default", func(*Config) {}, ""},
		{"localhost", func(c *Config) { c.Master = "localhost:7112" }, ""},
		{"no master", func(c *Config) { c.Master = "" }, "give --registry"},
		{"both", func(c *Config) { c.Registry = "127.0.0.1:7111" }, "give one"},
		{"remote", func(c *Config) { c.Master = "10.0.0.5:7112" }, "--allow-remote"},
		{"remote allowed", func(c *Config) { c.Master, c.AllowRemote = "10.0.0.5:7112", true }, ""},
		{"no port", func(c *Config) { c.Master = "127.0.0.1" }, "want HOST:PORT"},
		{"bad port", func(c *Config) { c.Master = "127.0.0.1:99999" }, "port \"99999\""},
		{"registry", func(c *Config) { c.Master, c.Registry = "", "127.0.0.1:7111" }, ""},
		{"registries", func(c *Config) { c.Master, c.Registry = "", "127.0.0.1:7111, 127.0.0.2:7111,localhost:7111" }, ""},
		{"registries and master", func(c *Config) { c.Registry = "127.0.0.1:7111,127.0.0.2:7111" }, "give one"},
		{"empty registry entry", func(c *Config) { c.Master, c.Registry = "", "127.0.0.1:7111,,127.0.0.2:7111" }, "entry 2 is empty"},
		{"registry twice", func(c *Config) { c.Master, c.Registry = "", "127.0.0.1:7111,127.0.0.1:7111" }, "listed twice"},
		{"remote registry", func(c *Config) { c.Master, c.Registry = "", "127.0.0.1:7111,10.0.0.5:7111" }, "10.0.0.5:7111 is not a loopback"},
		{"registry no port", func(c *Config) { c.Master, c.Registry = "", "127.0.0.1:7111,127.0.0.2" }, `"127.0.0.2": want HOST:PORT`},
		{"too many registries", func(c *Config) {
			c.Master, c.Registry = "", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,127.0.0.1:6,127.0.0.1:7,127.0.0.1:8,127.0.0.1:9,127.0.0.1:10"
		}, "lists 10 registries: at most 9"},
		{"no ca", func(c *Config) { c.CAKeyFile = "" }, "--ca and --ca-key"},
		{"admin half", func(c *Config) { c.AdminCert = "a.pem" }, "go together"},
		{"too many", func(c *Config) { c.Slaves = MaxSlaves + 1 }, "-n 50001"},
		{"too long", func(c *Config) { c.Duration = 16 * time.Minute }, "--duration"},
		{"no duration", func(c *Config) { c.Duration = 0 }, "--duration"},
		{"watchers", func(c *Config) { c.Watchers = 101 }, "--watchers"},
		{"watch start", func(c *Config) { c.WatchStart = "later" }, "--watch-start"},
		{"victims", func(c *Config) { c.Kill, c.Silence = 30, 30 }, "at most 50"},
		{"strike late", func(c *Config) { c.Kill, c.At = 1, time.Minute }, "not within --duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestVictimsAndWatchersSpread(t *testing.T) {
	c := DefaultConfig()
	c.Slaves, c.Kill, c.Silence = 100, 3, 2
	v := c.victims()
	want := []strike{{10, howKill}, {30, howSilence}, {50, howKill}, {70, howSilence}, {90, howKill}}
	if !slices.Equal(v, want) {
		t.Errorf("victims %v, want %v", v, want)
	}
	c.Watchers = 10
	var w []int
	for i := range c.Slaves {
		if c.watcher(i) {
			w = append(w, i)
		}
	}
	if len(w) != 10 || w[0] != 9 || w[9] != 99 {
		t.Errorf("watchers %v", w)
	}
	if c.name(0) != "sim-00001" || c.name(9999) != "sim-10000" {
		t.Errorf("names %s %s", c.name(0), c.name(9999))
	}
}

func TestPhaseShift(t *testing.T) {
	t0 := time.Unix(0, 0)
	s := time.Second
	for _, tc := range []struct {
		first, target time.Duration
		want          time.Duration
	}{
		{0, 300 * time.Millisecond, 300 * time.Millisecond},
		{0, 700 * time.Millisecond, -300 * time.Millisecond},
		{200 * time.Millisecond, 5100 * time.Millisecond, -100 * time.Millisecond},
		{900 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond},
		{0, 3 * time.Second, 0},
	} {
		if got := phaseShift(t0.Add(tc.first), t0.Add(tc.target), s); got != tc.want {
			t.Errorf("phaseShift(%v, %v) = %v, want %v", tc.first, tc.target, got, tc.want)
		}
	}
}

func TestTracker(t *testing.T) {
	tr := newTracker([]string{"sim-00001", "sim-00002", "sim-00003"})
	v := tr.addVictim(1, "sim-00002", howKill, 3)
	t0 := time.Now()
	ev := func(ver uint64, kind rpcdef.EventKind, node string, at time.Time) rpcdef.Event {
		st := map[rpcdef.EventKind]rpcdef.Status{rpcdef.EventSuspect: rpcdef.StatusSuspect, rpcdef.EventDead: rpcdef.StatusDead}[kind]
		return rpcdef.Event{Version: ver, Kind: kind, Node: node, Status: st, At: at}
	}
	// Before the strike, a suspect victim is a false death, seen by two
	// watchers and counted once; others' nodes are not ours.
	early := &rpcdef.WatchReply{Events: []rpcdef.Event{ev(5, rpcdef.EventSuspect, "sim-00002", t0), ev(6, rpcdef.EventDead, "node-1", t0)}}
	tr.observe(0, early, t0)
	tr.observe(observer, early, t0)
	tr.struck(v, t0.Add(time.Second))
	dead := &rpcdef.WatchReply{Events: []rpcdef.Event{
		ev(7, rpcdef.EventSuspect, "sim-00002", t0.Add(1001*time.Millisecond)),
		ev(8, rpcdef.EventDead, "sim-00002", t0.Add(1500*time.Millisecond)),
	}}
	tr.observe(0, dead, t0.Add(1510*time.Millisecond))
	// Watcher 2 fell behind and gets the whole roll instead.
	tr.observe(2, &rpcdef.WatchReply{Reset: true, Members: []rpcdef.Member{
		{Name: "sim-00001", Status: rpcdef.StatusAlive},
		{Name: "sim-00002", Status: rpcdef.StatusDead, StatusSince: t0.Add(1500 * time.Millisecond)},
		{Name: "sim-00003", Status: rpcdef.StatusSuspect, StatusSince: t0.Add(1600 * time.Millisecond)},
	}}, t0.Add(1530*time.Millisecond))
	tr.stop(t0.Add(2 * time.Second))
	tr.observe(0, &rpcdef.WatchReply{Events: []rpcdef.Event{ev(9, rpcdef.EventDead, "sim-00001", t0.Add(3*time.Second))}}, t0.Add(3*time.Second))

	f := tr.falseDeaths()
	if len(f) != 2 || f[0].Node != "sim-00002" || f[1].Node != "sim-00003" || f[1].Status != "suspect" {
		t.Errorf("false deaths %+v", f)
	}
	if v.suspectAt != t0.Add(1001*time.Millisecond) || v.deadAt != t0.Add(1500*time.Millisecond) {
		t.Errorf("victim %+v", v)
	}
	if v.seen[0] != t0.Add(1510*time.Millisecond).UnixNano() || v.seen[2] != t0.Add(1530*time.Millisecond).UnixNano() || v.seen[1] != 0 {
		t.Errorf("seen %v", v.seen)
	}
}

func TestWriteTableGolden(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	lat := func(p50, p99, mx float64, n int) Latency { return Latency{Count: n, P50: p50, P99: p99, Max: mx} }
	res := &Result{
		Slaves: 1000, Watchers: 1000, WatchStart: WatchAtJoin, JoinRate: 64, Roll: true, Master: "127.0.0.1:7112", MasterPID: 4242, Steady: 40,
		ColdJoin:  ColdJoin{Joined: 1000, Seconds: 3.11, Call: lat(153, 491, 660, 1000)},
		Heartbeat: Heartbeat{Latency: lat(0.25, 45.6, 285, 39935), PerSecond: 998.4},
		Calls:     Calls{Reports: 8138, Watches: 39436, Rejoins: 3, Reconnects: 1003, Failovers: 1000, Redirects: 5, LeaderChanges: 1},
		Strikes: []Strike{
			{Node: "sim-00051", How: howKill, At: at, Detected: true, SuspectMS: 0.53, DeadMS: 538, FanoutMS: 52.8, Reached: 998, Expected: 998},
			{Node: "sim-00151", How: howSilence, At: at, Detected: true, SuspectMS: 539, DeadMS: 739, SinceBeatMS: 1556, FanoutMS: 72.3, Reached: 998, Expected: 998},
		},
		Detection: Detection{KillSuspect: lat(0.53, 0.53, 0.53, 1), KillDead: lat(538, 538, 538, 1), SilenceDead: lat(739, 739, 739, 1), SilenceSinceBeat: lat(1556, 1556, 1556, 1)},
		Fanout:    Fanout{Slowest: lat(52.8, 72.3, 72.3, 2), Each: lat(32.2, 70, 72.3, 1996)},
		MasterUsage: &PhaseUsage{PID: 4242, Join: &Usage{CPUPercent: 87.3, PeakCPUPercent: 101.1, RSSMiB: 215.5, PeakRSSMiB: 215.5},
			Steady: &Usage{CPUPercent: 16.7, PeakCPUPercent: 43, RSSMiB: 216.1, PeakRSSMiB: 216.1}},
	}
	check := func(name string, res *Result) {
		var b strings.Builder
		if err := res.WriteTable(&b); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -update to make it)", err)
		}
		if b.String() != string(want) {
			t.Errorf("%s differs (go test -update rewrites it):\n%s", name, b.String())
		}
	}
	check("table-ok.golden", res)
	res.FalseDeaths = 1
	res.FalseDeathList = []FalseDeath{{Node: "sim-00007", Status: "suspect", At: at, Reason: "no heartbeat for 1.3s"}}
	res.Strikes[1].Detected, res.Strikes[1].DeadMS, res.Detection.Undetected = false, 0, 1
	res.MasterUsage = nil
	check("table-fail.golden", res)
}

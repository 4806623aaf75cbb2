package conf

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/muster-lab/muster/internal/pki"
	"github.com/muster-lab/muster/rpcdef"
)

// update rewrites the golden files under testdata instead of comparing with
// them: go test ./conf/ -update.
var update = flag.Bool("update", false, "rewrite golden files")

// certFile is one file of the certificate directory every test config reads.
type certFile struct {
	data []byte
	mode os.FileMode
}

// certs makes, once per test binary, the certificates the test configs name
// (paths relative to the config's directory):
//
//	certs/ca.pem                     CA of cluster lab
//	certs/registry-reg1.pem, -key    registry reg1 of lab
//	certs/master-m1.pem, -key        master m1 of lab
//	certs/slave-node-1.pem, -key     slave node-1 of lab
//	certs/other-ca.pem               CA of cluster other
//	certs/registry-other.pem, -key   registry reg1 of other
//	certs/slave-other.pem, -key      slave node-1 of other
//	certs/loose-key.pem              registry reg1's key, mode 0644
var certs = sync.OnceValues(func() (map[string]certFile, error) {
	files := map[string]certFile{}
	for _, c := range []struct {
		cluster, caFile string
		issue           map[string]pki.IssueRequest // file stem -> request
	}{
		{"lab", "ca.pem", map[string]pki.IssueRequest{
			"registry-reg1": {Role: pki.RoleRegistry, Name: "reg1", Hosts: []string{"127.0.0.1"}},
			"master-m1":     {Role: pki.RoleMaster, Name: "m1", Hosts: []string{"127.0.0.1"}},
			"slave-node-1":  {Role: pki.RoleSlave, Name: "node-1"},
		}},
		{"other", "other-ca.pem", map[string]pki.IssueRequest{
			"registry-other": {Role: pki.RoleRegistry, Name: "reg1", Hosts: []string{"127.0.0.1"}},
			"slave-other":    {Role: pki.RoleSlave, Name: "node-1"},
		}},
	} {
		ca, err := pki.NewCA(c.cluster, 0)
		if err != nil {
			return nil, err
		}
		files["certs/"+c.caFile] = certFile{ca.CertPEM(), 0o644}
		for stem, req := range c.issue {
			is, err := ca.Issue(req)
			if err != nil {
				return nil, err
			}
			files["certs/"+stem+".pem"] = certFile{is.CertPEM, 0o644}
			files["certs/"+stem+"-key.pem"] = certFile{is.KeyPEM, 0o600}
		}
	}
	files["certs/loose-key.pem"] = certFile{files["certs/registry-reg1-key.pem"].data, 0o644}
	return files, nil
})

// writeCerts puts the test certificates in dir/certs.
func writeCerts(t testing.TB, dir string) {
	t.Helper()
	files, err := certs()
	if err != nil {
		t.Fatalf("make certificates: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, f := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
}

// writeConfig writes a config file named name into a fresh directory with
// the test certificates and returns its path.
func writeConfig(t *testing.T, name string, data []byte) string {
	t.Helper()
	dir := t.TempDir()
	writeCerts(t, dir)
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const tlsSection = `
[tls]
ca = "certs/ca.pem"
cert = "certs/registry-reg1.pem"
key = "certs/registry-reg1-key.pem"
`

// TestLoadRegistryErrors loads each testdata/registry/NAME.toml and compares
// the error with NAME.golden, the config's directory written as $DIR.
func TestLoadRegistryErrors(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "registry", "*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no inputs in testdata/registry")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".toml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			path := writeConfig(t, filepath.Base(in), data)
			c, err := LoadRegistry(path)
			if err == nil {
				t.Fatalf("LoadRegistry(%s) = %+v, want an error", in, c)
			}
			if c != nil {
				t.Errorf("LoadRegistry returned a config with its error")
			}
			// Every problem names the file.
			var ce *Error
			if !errors.As(err, &ce) || ce.File != path {
				t.Errorf("error %q is not a *conf.Error naming %s", err, path)
			}
			got := []byte(strings.ReplaceAll(err.Error(), filepath.Dir(path), "$DIR") + "\n")

			golden := strings.TrimSuffix(in, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./conf/ -update to make it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("error differs from %s (run with -update if the change is meant):\n got: %s\nwant: %s", golden, got, want)
			}
		})
	}

	t.Run("no orphan goldens", func(t *testing.T) {
		goldens, _ := filepath.Glob(filepath.Join("testdata", "registry", "*.golden"))
		for _, g := range goldens {
			if _, err := os.Stat(strings.TrimSuffix(g, ".golden") + ".toml"); err != nil {
				t.Errorf("%s has no input .toml", g)
			}
		}
	})
}

func TestLoadRegistryNoFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.toml")
	_, err := LoadRegistry(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("LoadRegistry of a missing file: %v; want not-exist naming %s", err, path)
	}
}

// TestExample loads the shipped example with certificates where it says.
func TestExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("examples", "registry.toml"))
	if err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, "registry.toml", data)
	dir := filepath.Dir(path)
	c, err := LoadRegistry(path)
	if err != nil {
		t.Fatalf("LoadRegistry(example): %v", err)
	}
	if c.Store == nil {
		t.Fatal("Store not loaded")
	}
	if id := c.Store.Identity(); id != (pki.Identity{Cluster: "lab", Role: pki.RoleRegistry, Name: "reg1"}) {
		t.Errorf("identity = %v, want the registry reg1 of lab", id)
	}
	if !filepath.IsAbs(c.Socket) || !strings.HasPrefix(c.Socket, dir+string(filepath.Separator)) {
		t.Errorf("socket %q is not an absolute path inside %s", c.Socket, dir)
	}
	c.Store = nil
	want := &Registry{
		Cluster:          "lab",
		Listen:           "127.0.0.1:7111",
		Socket:           filepath.Join(dir, "run", "registry.sock"),
		StateDir:         filepath.Join(dir, "state", "registry"),
		LeaseTTL:         Duration(10 * time.Second),
		HandshakeTimeout: Duration(5 * time.Second),
		IdleTimeout:      Duration(5 * time.Minute),
		MaxConns:         1024,
		LogLevel:         "info",
		HTTPListen:       "127.0.0.1:0",
		TLS: TLS{
			CA:   filepath.Join(dir, "certs", "ca.pem"),
			Cert: filepath.Join(dir, "certs", "registry-reg1.pem"),
			Key:  filepath.Join(dir, "certs", "registry-reg1-key.pem"),
		},
		Allow: DefaultRegistry().Allow,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example loads as\n%+v\nwant\n%+v", c, want)
	}
}

// TestDefaults checks that a file with only [tls] gets DefaultRegistry's values.
func TestDefaults(t *testing.T) {
	path := writeConfig(t, "registry.toml", []byte(tlsSection))
	dir := filepath.Dir(path)
	c, err := LoadRegistry(path)
	if err != nil {
		t.Fatalf("LoadRegistry: %v", err)
	}
	want := DefaultRegistry()
	want.TLS = TLS{
		CA:   filepath.Join(dir, "certs", "ca.pem"),
		Cert: filepath.Join(dir, "certs", "registry-reg1.pem"),
		Key:  filepath.Join(dir, "certs", "registry-reg1-key.pem"),
	}
	want.Store = c.Store
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadRegistry = %+v\nwant %+v", c, want)
	}
	if c.Listen != ":7111" || c.Socket != rpcdef.DefaultRegistrySocket || c.LeaseTTL.D() != 10*time.Second {
		t.Errorf("defaults changed: listen %q socket %q lease_ttl %v", c.Listen, c.Socket, c.LeaseTTL.D())
	}
	if err := DefaultRegistry().Validate("defaults"); err == nil {
		t.Error("DefaultRegistry().Validate passed with no certificate files")
	}
}

func TestPaths(t *testing.T) {
	tests := []struct {
		name       string
		toml       string
		wantSocket func(dir string) string
		wantState  func(dir string) string
	}{
		{
			name:       "relative",
			toml:       "socket = \"registry.sock\"\nstate_dir = \"../state\"\n",
			wantSocket: func(dir string) string { return filepath.Join(dir, "registry.sock") },
			wantState:  func(dir string) string { return filepath.Join(filepath.Dir(dir), "state") },
		},
		{
			name:       "absolute",
			toml:       "socket = \"/tmp/muster-test.sock\"\nstate_dir = \"/var/tmp/muster\"\n",
			wantSocket: func(string) string { return "/tmp/muster-test.sock" },
			wantState:  func(string) string { return "/var/tmp/muster" },
		},
		{
			name:       "socket off",
			toml:       "socket = \"\"\n",
			wantSocket: func(string) string { return "" },
			wantState:  func(string) string { return "/var/lib/muster/registry" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "registry.toml", []byte(tt.toml+tlsSection))
			dir := filepath.Dir(path)
			c, err := LoadRegistry(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.wantSocket(dir); c.Socket != want {
				t.Errorf("socket = %q, want %q", c.Socket, want)
			}
			if want := tt.wantState(dir); c.StateDir != want {
				t.Errorf("state_dir = %q, want %q", c.StateDir, want)
			}
		})
	}
}

func TestAllow(t *testing.T) {
	type query struct {
		role    pki.Role
		service string
		want    bool
	}
	tests := []struct {
		name      string
		toml      string
		wantAllow []AllowRule
		queries   []query
	}{
		{
			name:      "default",
			wantAllow: []AllowRule{{Role: "master", Services: []string{rpcdef.ClusterService}}},
			queries: []query{
				{pki.RoleMaster, rpcdef.ClusterService, true},
				{pki.RoleSlave, rpcdef.ClusterService, false},
				{pki.RoleRegistry, rpcdef.ClusterService, false},
				{pki.RoleMaster, "metrics", false},
				{pki.RoleMaster, "clusterservice", false},
			},
		},
		{
			name: "own rules replace the default",
			toml: `
[[allow]]
role = "slave"
services = ["metrics", "logs"]

[[allow]]
role = "admin"
services = ["metrics"]
`,
			wantAllow: []AllowRule{
				{Role: "slave", Services: []string{"metrics", "logs"}},
				{Role: "admin", Services: []string{"metrics"}},
			},
			queries: []query{
				{pki.RoleSlave, "metrics", true},
				{pki.RoleSlave, "logs", true},
				{pki.RoleAdmin, "metrics", true},
				{pki.RoleAdmin, "logs", false},
				{pki.RoleMaster, rpcdef.ClusterService, false},
				{pki.RoleSlave, rpcdef.ClusterService, false},
			},
		},
		{
			name:      "empty list: nobody may register",
			toml:      "allow = []\n",
			wantAllow: []AllowRule{},
			queries: []query{
				{pki.RoleMaster, rpcdef.ClusterService, false},
				{pki.RoleAdmin, rpcdef.ClusterService, false},
			},
		},
		{
			name: "default rule written out with more",
			toml: `
[[allow]]
role = "master"
services = ["ClusterService"]

[[allow]]
role = "slave"
services = ["metrics"]
`,
			wantAllow: []AllowRule{
				{Role: "master", Services: []string{rpcdef.ClusterService}},
				{Role: "slave", Services: []string{"metrics"}},
			},
			queries: []query{
				{pki.RoleMaster, rpcdef.ClusterService, true},
				{pki.RoleSlave, "metrics", true},
				{pki.RoleSlave, rpcdef.ClusterService, false},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "registry.toml", []byte(tt.toml+tlsSection))
			c, err := LoadRegistry(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Allow, tt.wantAllow) {
				t.Errorf("allow = %+v, want %+v", c.Allow, tt.wantAllow)
			}
			for _, q := range tt.queries {
				if got := c.MayRegister(q.role, q.service); got != q.want {
					t.Errorf("MayRegister(%s, %s) = %v, want %v", q.role, q.service, got, q.want)
				}
			}
		})
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "1s", want: time.Second},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "0s", want: 0},
		{in: "10", wantErr: true},
		{in: "", wantErr: true},
		{in: "ten seconds", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("UnmarshalText(%q): %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if d.D() != tt.want {
				t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, d.D(), tt.want)
			}
			b, _ := d.MarshalText()
			var back Duration
			if err := back.UnmarshalText(b); err != nil || back != d {
				t.Errorf("round trip of %v through %q = %v, %v", d.D(), b, back.D(), err)
			}
		})
	}
}

// TestMasterHTTP checks http_listen and dashboard_listen: plain HTTP only on
// loopback, the mutual-TLS dashboard anywhere but on another listener's port.
func TestMasterHTTP(t *testing.T) {
	const master = `
[tls]
ca = "certs/ca.pem"
cert = "certs/master-m1.pem"
key = "certs/master-m1-key.pem"
`
	tests := []struct {
		name      string
		toml      string
		wantHTTP  string
		wantDash  string
		wantError string // a substring of the error; "" for none
	}{
		{name: "default", wantHTTP: DefaultMasterHTTP},
		{name: "off", toml: `http_listen = ""`, wantHTTP: ""},
		{name: "free port", toml: `http_listen = "127.0.0.1:0"`, wantHTTP: "127.0.0.1:0"},
		{name: "ipv6 loopback", toml: `http_listen = "[::1]:9100"`, wantHTTP: "[::1]:9100"},
		{name: "every interface", toml: `http_listen = ":7113"`,
			wantError: `http_listen: ":7113" must be a loopback HOST:PORT, like 127.0.0.1:7113, or "" for none: plain HTTP is not for the network (for other hosts, set dashboard_listen`},
		{name: "a name", toml: `http_listen = "localhost:7113"`, wantError: `http_listen: "localhost:7113" must be a loopback HOST:PORT`},
		{name: "bad port", toml: `http_listen = "127.0.0.1:http"`, wantError: `http_listen: "127.0.0.1:http" must be a loopback HOST:PORT`},
		{name: "remote dashboard", toml: `dashboard_listen = ":7115"`, wantHTTP: DefaultMasterHTTP, wantDash: ":7115"},
		{name: "dashboard without port", toml: `dashboard_listen = "0.0.0.0"`, wantError: `dashboard_listen: "0.0.0.0" is not HOST:PORT`},
		{name: "dashboard on the http port", toml: `dashboard_listen = "127.0.0.1:7113"`,
			wantError: `dashboard_listen: "127.0.0.1:7113" is also the address of listen, http_listen or pprof`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "master.toml", []byte(tt.toml+"\n"+master))
			c, err := LoadMaster(path)
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("LoadMaster: %v, want an error containing %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.HTTPListen != tt.wantHTTP || c.DashboardListen != tt.wantDash {
				t.Errorf("http_listen = %q, dashboard_listen = %q; want %q, %q", c.HTTPListen, c.DashboardListen, tt.wantHTTP, tt.wantDash)
			}
		})
	}
}

// masterExample is the shipped master example, loaded with the test
// certificates.
func masterExample(t *testing.T) *Master {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("examples", "master.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadMaster(writeConfig(t, "master.toml", data))
	if err != nil {
		t.Fatalf("LoadMaster(example): %v", err)
	}
	return c
}

// TestMasterExample loads the shipped master example: every key it shows
// must decode, and its http_listen must be loopback.
func TestMasterExample(t *testing.T) {
	c := masterExample(t)
	if c.HTTPListen != "127.0.0.1:0" || c.DashboardListen != "" {
		t.Errorf("example: http_listen = %q, dashboard_listen = %q", c.HTTPListen, c.DashboardListen)
	}
}

// TestValidateReadsNoFile checks the split between reading the certificates
// (LoadMaster) and Validate: Validate judges the loaded store's identity
// against the config, and without a store reads nothing.
func TestValidateReadsNoFile(t *testing.T) {
	c := masterExample(t)
	if err := c.Validate("again"); err != nil {
		t.Errorf("a loaded config does not validate again: %v", err)
	}

	other := *c
	other.Cluster = "other"
	err := other.Validate("again")
	if err == nil || !strings.Contains(err.Error(), `again: tls.cert: certificate master-m1.pem is for cluster "lab" but the config says cluster = "other"`) {
		t.Errorf("Validate with the store of another cluster: %v", err)
	}

	// As slaved.New and the unit tests use it: a config built in code, its
	// store loaded by the caller and no file named.
	byHand := *c
	byHand.TLS = TLS{}
	if err := byHand.Validate("by hand"); err != nil {
		t.Errorf("a config built in code with a loaded store: %v", err)
	}
	slave := DefaultSlave()
	slave.Store = c.Store
	err = slave.Validate("by hand")
	if err == nil || !strings.Contains(err.Error(), "by hand: tls.cert: the certificate is for spiffe://lab/master/m1, a master; this daemon needs a slave certificate") {
		t.Errorf("Validate of a slave config with a master's store: %v", err)
	}

	unloaded := *c
	unloaded.Store = nil
	unloaded.TLS = TLS{CA: "/nonexistent/ca.pem", Cert: "/nonexistent/m1.pem", Key: "/nonexistent/m1-key.pem"}
	if err := unloaded.Validate("again"); err != nil {
		t.Errorf("Validate read the certificate files: %v", err)
	}
	unloaded.TLS = TLS{}
	err = unloaded.Validate("again")
	if err == nil || !strings.Contains(err.Error(), "again: tls.cert: missing") {
		t.Errorf("Validate with no certificate files named: %v", err)
	}
}

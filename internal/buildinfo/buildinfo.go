// Package buildinfo says which build of muster is running: the module
// version and VCS revision the Go toolchain stamped into the binary.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info is what a binary knows of its own build.
type Info struct {
	Version  string // module version, or "devel"
	Revision string // VCS revision, shortened; "unknown" if not stamped
	Modified bool   // built from a work tree with uncommitted changes
	Go       string // the Go toolchain
}

// Read returns this binary's build information.
func Read() Info {
	i := Info{Version: "devel", Revision: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		i.Version = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is the line a --version flag prints: "muster devel (abc123def456, go1.26.8)".
func (i Info) String() string {
	rev := i.Revision
	if i.Modified {
		rev += "+dirty"
	}
	return fmt.Sprintf("muster %s (%s, %s)", i.Version, rev, i.Go)
}

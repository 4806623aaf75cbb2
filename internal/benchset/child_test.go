package benchset

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestChildren(t *testing.T) {
	dir := t.TempDir()
	kids := &children{}
	t.Cleanup(func() { kids.stopAll() })
	c, err := kids.start("sh", "/bin/sh", []string{"-c", `echo 'level=info msg=ready addr="127.0.0.1:4321"' >&2; exec sleep 60`}, dir, filepath.Join(dir, "sh.log"), "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.waitLine(context.Background(), registryReady, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m[1] != "127.0.0.1:4321" {
		t.Errorf("address %q", m[1])
	}
	if errs := kids.stopAll(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if !c.exited() || c.status() != "killed by terminated" {
		t.Errorf("after stopAll: exited %v, %s", c.exited(), c.status())
	}

	// A child that exits before its line says so, with its log.
	c, err = kids.start("false", "/bin/sh", []string{"-c", "echo no luck >&2; exit 3"}, dir, filepath.Join(dir, "false.log"), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.waitLine(context.Background(), regexp.MustCompile("never"), 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited 3") || !strings.Contains(err.Error(), "no luck") {
		t.Errorf("got %v", err)
	}
}

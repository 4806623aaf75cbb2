package raftgroup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/sirupsen/logrus"
)

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetLevel(logrus.DebugLevel)
	h := newHCLog(l.WithField("node", "m1"), "raft").Named("net").With("local", "a")

	h.Trace("trace line")
	h.Debug("debug line")
	h.Info("info line", "term", 3)
	h.Warn("warn line")
	h.Error("error line", "error", fmt.Errorf("boom"))
	h.Error("closed line", "error", fmt.Errorf("read: %w", net.ErrClosed))
	h.Info("odd", "key")

	var got []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, m)
	}
	want := []struct{ msg, level string }{
		{"info line", "debug"},
		{"warn line", "warning"},
		{"error line", "error"},
		{"closed line", "debug"},
		{"odd", "debug"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		if got[i]["msg"] != w.msg || got[i]["level"] != w.level {
			t.Errorf("line %d: %v, want %q at %s", i, got[i], w.msg, w.level)
		}
		if got[i]["component"] != "raft.net" || got[i]["local"] != "a" || got[i]["node"] != "m1" {
			t.Errorf("line %d lacks its fields: %v", i, got[i])
		}
	}
	if got[0]["term"] != float64(3) || got[2]["error"] != "boom" || got[4]["EXTRA_VALUE_AT_END"] != "key" {
		t.Errorf("fields: %v", got)
	}
	if h.IsTrace() || h.IsDebug() || !h.IsInfo() || h.GetLevel() != hclog.Info {
		t.Errorf("levels: trace %v debug %v info %v level %v", h.IsTrace(), h.IsDebug(), h.IsInfo(), h.GetLevel())
	}
	buf.Reset()
	h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}).Print("from the standard logger")
	if !strings.Contains(buf.String(), `"level":"warning"`) || !strings.Contains(buf.String(), "from the standard logger") {
		t.Errorf("standard logger line: %s", buf.String())
	}
}

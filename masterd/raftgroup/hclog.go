package raftgroup

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/sirupsen/logrus"
)

// hclogAdapter is an hclog.Logger that writes to a logrus.FieldLogger, so
// that hashicorp/raft logs where the daemon logs. raft is chatty: its Info
// lines (every election, every connection) go to Debug, its Debug and
// Trace lines to Trace, Warn to Warn and Error to Error.
type hclogAdapter struct {
	log  logrus.FieldLogger
	name string
	args []any
}

func newHCLog(l logrus.FieldLogger, name string) hclog.Logger {
	return &hclogAdapter{log: l, name: name}
}

// logrusLevel is where an hclog level goes.
func logrusLevel(l hclog.Level) logrus.Level {
	switch l {
	case hclog.Error:
		return logrus.ErrorLevel
	case hclog.Warn:
		return logrus.WarnLevel
	case hclog.Info:
		return logrus.DebugLevel
	default: // Trace, Debug, NoLevel
		return logrus.TraceLevel
	}
}

// enabled says whether a line at l would be written. A FieldLogger that
// is neither a *logrus.Logger nor a *logrus.Entry cannot say: every level
// but Trace is written to it, Trace lines are dropped.
func (h *hclogAdapter) enabled(l logrus.Level) bool {
	switch x := h.log.(type) {
	case *logrus.Logger:
		return x.IsLevelEnabled(l)
	case *logrus.Entry:
		return x.Logger.IsLevelEnabled(l)
	}
	return l != logrus.TraceLevel
}

// fields turns hclog's alternating keys and values into logrus fields.
func fields(name string, args ...[]any) logrus.Fields {
	f := logrus.Fields{}
	if name != "" {
		f["component"] = name
	}
	for _, a := range args {
		for i := 0; i < len(a); i += 2 {
			if i+1 == len(a) {
				f["EXTRA_VALUE_AT_END"] = a[i]
				break
			}
			k, ok := a[i].(string)
			if !ok {
				k = fmt.Sprint(a[i])
			}
			v := a[i+1]
			if fm, ok := v.(hclog.Format); ok && len(fm) > 0 {
				if s, ok := fm[0].(string); ok {
					v = fmt.Sprintf(s, fm[1:]...)
				}
			}
			f[k] = v
		}
	}
	return f
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	l := logrusLevel(level)
	if l <= logrus.WarnLevel && ownClose(args) {
		// raft's transport reports the connections this server closed
		// itself, when shutting down or refusing a revoked peer.
		l = logrus.DebugLevel
	}
	if !h.enabled(l) {
		return
	}
	e := h.log.WithFields(fields(h.name, h.args, args))
	switch l {
	case logrus.ErrorLevel:
		e.Error(msg)
	case logrus.WarnLevel:
		e.Warn(msg)
	case logrus.DebugLevel:
		e.Debug(msg)
	default:
		e.Trace(msg)
	}
}

// ownClose says whether a line's error is only a connection closed here.
func ownClose(args []any) bool {
	for i := 1; i < len(args); i += 2 {
		if err, ok := args[i].(error); ok && errors.Is(err, net.ErrClosed) {
			return true
		}
	}
	return false
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) IsTrace() bool { return h.enabled(logrusLevel(hclog.Trace)) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(logrusLevel(hclog.Debug)) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(logrusLevel(hclog.Info)) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(logrusLevel(hclog.Warn)) }
func (h *hclogAdapter) IsError() bool { return h.enabled(logrusLevel(hclog.Error)) }

func (h *hclogAdapter) ImpliedArgs() []any { return h.args }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{log: h.log, name: h.name, args: append(append([]any(nil), h.args...), args...)}
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return &hclogAdapter{log: h.log, name: name, args: h.args}
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{log: h.log, name: name, args: h.args}
}

// SetLevel does nothing: the level is the logrus logger's.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel is the most verbose hclog level that is written.
func (h *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Info, hclog.Warn, hclog.Error} {
		if h.enabled(logrusLevel(l)) {
			return l
		}
	}
	return hclog.Off
}

func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	level := hclog.Info
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = opts.ForceLevel
	}
	return stdWriter{h: h, level: level}
}

// stdWriter writes the lines of a standard library logger at one level.
type stdWriter struct {
	h     *hclogAdapter
	level hclog.Level
}

func (w stdWriter) Write(p []byte) (int, error) {
	w.h.Log(w.level, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

package rpcdef

import (
	"fmt"
	"math"
	"unicode/utf8"
)

// The bounds of the Cluster contract. Each string and list a caller sends
// has one, checked once where the master takes the request (Validate), so
// that no member can make what the master keeps, logs or sends to everyone
// else larger than its share. A member's share of a roll reply is at most
// MaxMemberBytes, so a roll of N members is at most N × MaxMemberBytes,
// whatever any one of them sent.
const (
	MaxReasonLen   = 256 // a Leave's or an Evict's reason, in bytes
	MaxCPUModelLen = 128 // Resources.CPUModel, in bytes
	MaxDisks       = 16  // Resources.Disks
	MaxMountLen    = 128 // DiskUsage.Mount, in bytes
	// MaxMemberBytes bounds one Member's encoding: its name, address and
	// every limited field above at their limits, with room for the fixed
	// ones.
	MaxMemberBytes = 512 + MaxCPUModelLen + MaxDisks*(MaxMountLen+64)
)

// invalid is the error of a field over its bound.
func invalid(field, format string, args ...any) error {
	return Errorf(CodeInvalid, "%s %s", field, fmt.Sprintf(format, args...))
}

func checkText(field, s string, limit int) error {
	if len(s) > limit {
		return invalid(field, "is %d bytes, at most %d allowed", len(s), limit)
	}
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	return nil
}

// checkFigure rejects what no /proc can produce: NaN, infinities and
// negative figures (JSON cannot carry the first two, so one member's NaN
// would break every reader of the roll), and percentages above 100.
func checkFigure(field string, v, most float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > most {
		return invalid(field, "is %v, want a figure from 0 to %v", v, most)
	}
	return nil
}

// Validate checks a Leave.
func (a *LeaveArgs) Validate() error { return checkText("Reason", a.Reason, MaxReasonLen) }

// Validate checks an Evict.
func (a *EvictArgs) Validate() error { return checkText("Reason", a.Reason, MaxReasonLen) }

// Validate checks a Report.
func (a *ReportArgs) Validate() error { return a.Resources.Validate() }

// Validate checks a resource report against the contract's bounds.
func (r *Resources) Validate() error {
	if err := checkText("CPUModel", r.CPUModel, MaxCPUModelLen); err != nil {
		return err
	}
	if r.CPUCount < 0 || r.Procs < 0 || r.Uptime < 0 {
		return invalid("CPUCount, Procs and Uptime", "must not be negative (got %d, %d, %v)", r.CPUCount, r.Procs, r.Uptime)
	}
	unbounded := math.MaxFloat64
	for _, f := range []struct {
		name string
		v    float64
		most float64
	}{
		{"CPUPercent", r.CPUPercent, 100}, {"MemUsedPercent", r.MemUsedPercent, 100},
		{"Load1", r.Load1, unbounded}, {"Load5", r.Load5, unbounded}, {"Load15", r.Load15, unbounded},
		{"NetRxBytesPerSec", r.NetRxBytesPerSec, unbounded}, {"NetTxBytesPerSec", r.NetTxBytesPerSec, unbounded},
	} {
		if err := checkFigure(f.name, f.v, f.most); err != nil {
			return err
		}
	}
	if len(r.Disks) > MaxDisks {
		return invalid("Disks", "lists %d filesystems, at most %d allowed (slaved's mounts setting chooses them)", len(r.Disks), MaxDisks)
	}
	for i, d := range r.Disks {
		if err := checkText(fmt.Sprintf("Disks[%d].Mount", i), d.Mount, MaxMountLen); err != nil {
			return err
		}
		if err := checkFigure(fmt.Sprintf("Disks[%d].UsedPercent", i), d.UsedPercent, 100); err != nil {
			return err
		}
	}
	return nil
}

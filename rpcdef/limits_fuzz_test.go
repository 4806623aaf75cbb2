package rpcdef

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// FuzzResourcesValidate holds the contract's promise: a report that passes
// Validate is one every reader of the roll can carry (JSON has no NaN),
// and its member's encoding stays within MaxMemberBytes, whatever the
// slave sent.
func FuzzResourcesValidate(f *testing.F) {
	f.Add("Intel(R) Xeon(R) CPU @ 2.20GHz", 2, 3, "/", 12.5, 50.0, 0.5, 1e6)
	f.Add(strings.Repeat("x", MaxCPUModelLen), MaxDisks, 0, strings.Repeat("/m", MaxMountLen/2), 100.0, 100.0, 1e300, 1e300)
	f.Add("", 0, -1, "", math.NaN(), math.Inf(1), -1.0, 0.0)
	f.Add("\xff", MaxDisks+1, 1, "\xfe", 100.5, 0.0, 0.0, 0.0)
	f.Fuzz(func(t *testing.T, model string, disks, procs int, mount string, cpu, mem, load, rate float64) {
		r := Resources{
			SampledAt: time.Unix(1_700_000_000, 0), CPUCount: 2, CPUModel: model, CPUPercent: cpu,
			Load1: load, Load5: load, Load15: load, MemTotal: math.MaxUint64, MemAvailable: math.MaxUint64,
			MemUsedPercent: mem, SwapTotal: math.MaxUint64, SwapFree: math.MaxUint64,
			NetRxBytesPerSec: rate, NetTxBytesPerSec: rate, Uptime: math.MaxInt64, Procs: procs,
		}
		for range min(max(disks, 0), 64) {
			r.Disks = append(r.Disks, DiskUsage{Mount: mount, Total: math.MaxUint64, Free: math.MaxUint64, UsedPercent: mem})
		}
		if err := r.Validate(); err != nil {
			if !strings.Contains(err.Error(), string(CodeInvalid)) {
				t.Fatalf("a refusal that is not an invalid argument: %v", err)
			}
			return
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("a valid report JSON cannot carry: %v", err)
		}
		m := Member{Name: strings.Repeat("n", 63), Addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", Status: StatusSuspect,
			Incarnation: math.MaxUint64, JoinedAt: r.SampledAt, StatusSince: r.SampledAt, LastHeartbeat: r.SampledAt,
			Resources: &r, CertNotAfter: r.SampledAt}
		var one bytes.Buffer
		enc := gob.NewEncoder(&one)
		enc.Encode([]Member{})
		base := one.Len()
		enc.Encode([]Member{m})
		if size := one.Len() - base; size > MaxMemberBytes {
			t.Fatalf("a valid member encodes to %d bytes, over MaxMemberBytes %d", size, MaxMemberBytes)
		}
	})
}

func TestValidateNames(t *testing.T) {
	err := (&LeaveArgs{Reason: strings.Repeat("x", MaxReasonLen+1)}).Validate()
	if err == nil || !strings.Contains(err.Error(), "Reason is 257 bytes, at most 256 allowed") {
		t.Fatalf("a long reason: %v", err)
	}
	err = (&ReportArgs{Resources: Resources{Disks: []DiskUsage{{Mount: "/"}, {Mount: "/x", UsedPercent: math.NaN()}}}}).Validate()
	if err == nil || !strings.Contains(err.Error(), "Disks[1].UsedPercent is NaN") {
		t.Fatalf("a NaN disk: %v", err)
	}
	if err := (&EvictArgs{Reason: "ok"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

package rpcdef

import "time"

// Resources is a slave's resource report, read from /proc and statfs.
// Rates and percentages cover the time since the slave's previous sample.
type Resources struct {
	SampledAt time.Time

	CPUCount   int
	CPUModel   string
	CPUPercent float64 // busy share of all CPUs, 0 to 100

	Load1, Load5, Load15 float64

	MemTotal       uint64 // bytes
	MemAvailable   uint64 // bytes
	MemUsedPercent float64
	SwapTotal      uint64 // bytes
	SwapFree       uint64 // bytes

	Disks []DiskUsage

	NetRxBytesPerSec float64 // all interfaces but loopback
	NetTxBytesPerSec float64

	Uptime time.Duration
	Procs  int // processes that exist now
}

// DiskUsage is the fill of one mounted filesystem.
type DiskUsage struct {
	Mount       string
	Total       uint64 // bytes
	Free        uint64 // bytes available to unprivileged users
	UsedPercent float64
}

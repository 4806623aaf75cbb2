module github.com/muster-lab/muster

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/prometheus/procfs v0.23.0
	github.com/sirupsen/logrus v1.10.2
	golang.org/x/sync v0.24.0
	golang.org/x/sys v0.49.0
)

# The verbs a newcomer types. Everything the targets need is built here.
GO      ?= go
BIN     := bin
# Benchmarks: fixed call counts, so figures are comparable between runs.
BENCH_CALLS ?= 20000x
BENCH_PROCS ?= 300x
BENCH_TRIALS ?= 20x

.PHONY: all build test vet lint bench demo demo-ha demo-netns fuzz soak clean

all: build

# Static binaries: no dynamic loader at start (rpc-query runs ~0.5 ms faster)
# and they copy to another lab host as they are.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# staticcheck, at a pinned version, fetched by go itself the first time.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: vet
	$(GO) run $(STATICCHECK) ./...

# The browser test of the dashboard needs chromium: installed here if missing.
test: vet
	./scripts/install-chromium.sh
	$(GO) test -race -count=1 -timeout 30m ./...

# The micro-benchmarks, each command and its output kept in $(BENCH_OUT)/micro.out
# (*.out is gitignored), then the scale set: bin/benchset writes both, with every
# figure, into docs/BENCHMARKS.md and draws docs/bench-scale.svg.
BENCH_OUT ?= bench-out
MICRO_OUT := $(BENCH_OUT)/micro.out
define micro
	@printf '%s\n' "\$$ go test $(1)" | tee -a $(MICRO_OUT)
	$(GO) test $(1) 2>&1 | tee -a $(MICRO_OUT)
endef

bench: SHELL := /bin/bash
bench: .SHELLFLAGS := -o pipefail -ec
bench: build
	@mkdir -p $(BENCH_OUT) && : > $(MICRO_OUT)
	$(call micro,-run '^$$' -bench 'Lookup(TLS|Unix)' -benchtime $(BENCH_CALLS) ./tests/)
	$(call micro,-run '^$$' -bench 'RPCQuery' -benchtime $(BENCH_PROCS) ./tests/)
	$(call micro,-run '^$$' -bench . -benchmem ./masterd/ ./slaved/)
	$(call micro,-run '^$$' -bench 'CrashDetection|SilentHost' -benchtime $(BENCH_TRIALS) -timeout 30m ./tests/)
	$(call micro,-run '^$$' -bench 'Failover' -benchtime $(BENCH_TRIALS) -timeout 30m ./tests/)
	$(BIN)/benchset --micro $(MICRO_OUT)

demo: build
	./scripts/demo.sh

# Three registries, three masters (one raft group) and three slaves: the
# leader SIGKILLed with nobody declared dead, and a slave that dies during a
# failover still reported dead.
demo-ha: build
	./scripts/demo-ha.sh

# Each node in its own network namespace (needs root and ip netns).
demo-netns: build
	./scripts/demo-netns.sh
	./scripts/demo-netns.sh --ha

# Every fuzz target for FUZZTIME each (default 20s); their seeds run in make test.
fuzz:
	./scripts/fuzz.sh

# 1,000 simulated slaves for 10 minutes with every core burned: false deaths.
soak: build
	./scripts/soak.sh

# What the build and the README's by-hand lab leave: the binaries, and lab/
# with its CA key, configs and logs.
clean:
	@for d in $(BIN) lab; do if [ -e $$d ]; then echo "removing $$d/"; rm -rf $$d; fi; done

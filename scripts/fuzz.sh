#!/usr/bin/env bash
# Runs every fuzz target of the module, one after another, each for a bounded
# time, prints a line per target and fails if any target failed. 'make fuzz'
# calls it. The committed seeds run without it, in 'make test'.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/fuzz.sh [PATTERN]

Finds the fuzz targets (go test -list '^Fuzz') of every package whose tests
declare one, and runs each in turn:

  go test -run '^$' -fuzz '^NAME$' -fuzztime $FUZZTIME ./PKG

PATTERN, an extended regular expression, keeps only the targets whose name
matches it. A target that fails leaves its failing input in
PKG/testdata/fuzz/NAME/, where it becomes a seed that 'go test' runs; the end
of its output is printed.
A target that ends with a bare "context deadline exceeded" and writes no
failing input hit a race in Go's own fuzz coordinator (golang/go#75804,
fixed in Go 1.27): it is reported as "race", not as a failure.

environment:
  FUZZTIME          how long each target runs (default 20s; 1000x means
                    1000 inputs)
  FUZZMINIMIZETIME  how long the fuzzer may spend shrinking each new input
                    (default 3s; go's own 60s would take over a short run)
  FUZZTIMEOUT       go test -timeout for each run (default 10m): raise it
                    with FUZZTIME
  GO                the go command (default go)
EOF
}

case "${1:-}" in
-h | --help)
	usage
	exit 0
	;;
-*)
	usage >&2
	exit 2
	;;
esac
pattern=${1:-.}

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-3s}
FUZZTIMEOUT=${FUZZTIMEOUT:-10m}

cd "$(dirname "$0")/.."

# Listing runs each package's test binary, so only packages that declare a
# target are listed: tests/ would build every daemon first.
mapfile -t pkgs < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . |
	xargs -r -n1 dirname | sort -u)
if [ ${#pkgs[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

targets=() # "PKG NAME"
for pkg in "${pkgs[@]}"; do
	if ! list=$("$GO" test -list '^Fuzz' "$pkg" 2>&1); then
		printf '%s\n' "$list" >&2
		echo "fuzz: cannot list the targets of $pkg" >&2
		exit 1
	fi
	while read -r name; do
		if [[ $name =~ ^Fuzz[A-Za-z0-9_]*$ && $name =~ $pattern ]]; then
			targets+=("$pkg $name")
		fi
	done <<<"$list"
done
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz: no fuzz target matches $pattern" >&2
	exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The failing inputs a target has written, one a line.
inputs() { { ls "$1/testdata/fuzz/$2" 2>/dev/null || true; } | sort; }

echo "fuzz: ${#targets[@]} targets, $FUZZTIME each"
failed=0
raced=0
for t in "${targets[@]}"; do
	pkg=${t% *}
	name=${t#* }
	start=$SECONDS
	before=$(inputs "$pkg" "$name")
	if "$GO" test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" \
		-timeout "$FUZZTIMEOUT" "$pkg" >"$log" 2>&1; then
		result=ok
	elif [ "$(inputs "$pkg" "$name")" = "$before" ] && tail -n 5 "$log" | grep -q 'context deadline exceeded'; then
		# Go's fuzz coordinator can end a duration-limited run with a bare
		# "context deadline exceeded" and no failing input (golang/go#75804,
		# fixed in Go 1.27): not a finding, but said so.
		result=race
		raced=$((raced + 1))
	else
		result=FAIL
		failed=$((failed + 1))
	fi
	# The fuzzer's last progress line: "fuzz: elapsed: 20s, execs: 41595 (0/sec), new interesting: 29 (total: 58)"
	execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -n1 | cut -d' ' -f2 || true)
	new=$(grep -oE 'new interesting: [0-9]+' "$log" | tail -n1 | cut -d' ' -f3 || true)
	printf '%-4s %-22s %-16s %4ds  %9s execs  %4s new inputs\n' \
		"$result" "$name" "$pkg" $((SECONDS - start)) "${execs:-0}" "${new:-0}"
	if [ "$result" = FAIL ]; then
		tail -n 30 "$log" | sed 's/^/     | /'
	fi
done

if [ "$raced" -gt 0 ]; then
	echo "fuzz: $raced targets ended with Go's own deadline race (golang/go#75804) and wrote no failing input"
fi
if [ "$failed" -gt 0 ]; then
	echo "fuzz: $failed of ${#targets[@]} targets failed" >&2
	exit 1
fi
echo "fuzz: all ${#targets[@]} targets passed"

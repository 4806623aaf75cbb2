#!/usr/bin/env bash
# make soak: N simulated slaves against a real masterd for a long while, with
# a CPU burner on every core, counting false deaths. Not part of make test.
#
#   SOAK_N=1000 SOAK_DURATION=10m scripts/soak.sh
#
# Everything runs on 127.0.0.1 in a temp directory; every process it starts
# is stopped by PID on exit, and every loop is bounded by SOAK_DURATION.
set -euo pipefail

N=${SOAK_N:-1000}
DURATION=${SOAK_DURATION:-10m}
AT=${SOAK_AT:-60s}   # when the kills and silences begin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${MUSTER_BIN:-$ROOT/bin}
[ -x "$BIN/loadgen" ] || make -C "$ROOT" build >/dev/null

WORK=$(mktemp -d /tmp/muster-soak.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
	done
	echo "soak: logs kept in $WORK"
}
trap cleanup EXIT INT TERM

cd "$WORK"
cp "$ROOT"/conf/examples/registry.toml "$ROOT"/conf/examples/master.toml .
sed -i 's/^listen = .*/listen = "127.0.0.1:0"/' registry.toml master.toml
"$BIN/certgen" ca --dir certs >/dev/null
"$BIN/certgen" issue --dir certs --role registry --name reg1 --host 127.0.0.1 >/dev/null
"$BIN/certgen" issue --dir certs --role master --name m1 --host 127.0.0.1 >/dev/null

"$BIN/registryd" --config registry.toml 2>registry.log & PIDS+=($!)
for _ in $(seq 100); do grep -q 'msg=ready' registry.log && break; sleep 0.1; done
REG=$(sed -nE 's/.*msg=ready addr="?([^" ]+)"?.*/\1/p' registry.log | head -1)
[ -n "$REG" ] || { echo "soak: registryd did not start; see $WORK/registry.log"; exit 1; }
sed -i "s/^registry = .*/registry = \"$REG\"/" master.toml
"$BIN/masterd" --config master.toml 2>master.log & MASTER=$!; PIDS+=($MASTER)
for _ in $(seq 100); do grep -q 'msg=ready' master.log && break; sleep 0.1; done
grep -q 'msg=ready' master.log || { echo "soak: masterd did not register; see $WORK/master.log"; exit 1; }

# A burner per core, bounded by the soak's length plus the cold join.
secs=$(( $(date -d "1970-01-01 00:00:00 UTC + ${DURATION/m/ minutes}" +%s 2>/dev/null || echo 600) + 120 ))
for _ in $(seq "$(nproc)"); do
	timeout "$secs" sh -c 'while :; do :; done' & PIDS+=($!)
done

echo "soak: $N simulated slaves for $DURATION against masterd (pid $MASTER), $(nproc) CPU burners"
status=0
"$BIN/loadgen" --registry "$REG" --ca certs/ca.pem --ca-key certs/ca-key.pem --master-pid "$MASTER" \
	-n "$N" --duration "$DURATION" --at "$AT" --kill 5 --silence 5 2>loadgen.log | tee loadgen.out || status=$?
echo "soak: loadgen exited $status (0: no false deaths, every strike detected)"
exit "$status"

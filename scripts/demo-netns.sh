#!/usr/bin/env bash
# demo-netns.sh: muster on five hosts that share nothing but a network.
#
# Every node runs in a network namespace of its own, with an address in
# 198.18.0.0/24 (RFC 2544's benchmarking range), cabled by a veth pair to a
# bridge that lives in a namespace of its own too (the "switch"): the root
# namespace's networking is never touched, and traffic between the nodes
# crosses real interfaces. The demo shows the cluster, a partition (a switch
# port set down: no FIN, no RST, only silence) caught by the master's
# heartbeat detector and timed, the heal, and the master SIGKILLed and
# restarted while the slaves find it again through the registry. With --ha,
# three master hosts (a registryd and a masterd each, one raft group) and
# three slave hosts: the leader's port is set down, the other two elect a
# new leader, the cut-off one stops judging and none of its verdicts is
# committed; on the heal it rejoins as a follower.
#
# Everything it creates (namespaces, veths, the bridge, processes, a temp
# directory) carries this run's tag and is removed on exit, on error and on
# Ctrl-C. Needs root and iproute2's `ip netns`. Run ./scripts/demo-netns.sh
# --help for the options.
set -Eeuo pipefail

usage() {
	cat <<'EOF'
usage: demo-netns.sh [--ha] [--ci] [--logs DIR]

Runs muster on five network namespaces joined by a bridge in a sixth (the
switch): registry 198.18.0.1, master 198.18.0.2, slaves node-1..3 at
198.18.0.11..13. It shows the cluster, partitions node-3 by setting its
switch port down and times the master's heartbeat detector, heals it, and
SIGKILLs and restarts the master. Needs root. Everything it creates is
removed on exit, on error and on Ctrl-C.

With --ha: three master hosts m1..m3 at 198.18.0.1..3, each running a
registryd and a masterd (one raft group), and slaves node-1..3 at
198.18.0.11..13. The leader's switch port is set down: the two others
elect a new leader, the cut-off master steps down and stops judging, no
verdict of it is committed (a watcher on the majority side sees none), and
the registries hold the new leader's epoch. The port comes back up and the
old leader rejoins as a follower.

options:
  --ha        the three-master partition above, instead of the single master
  --ci        no colour, and stable "RESULT key=value" lines for tests
  --logs DIR  copy the daemons' logs into DIR on exit (they are otherwise
              removed with the rest of the temp directory)
  --help      this text

environment:
  MUSTER_BIN=DIR  use the binaries in DIR instead of bin/ (without it, the
                  script runs 'make build' if bin/ lacks a binary)
  NO_COLOR=1      no colour even on a terminal

exit status: 0 every step worked, 1 a step failed, 2 wrong usage,
130/143 interrupted (after cleaning up).
EOF
}

CI=0
HA=0
KEEP_LOGS=""
while [ $# -gt 0 ]; do
	case $1 in
	--ci) CI=1 ;;
	--ha) HA=1 ;;
	--logs)
		[ $# -ge 2 ] || { echo "demo-netns.sh: --logs needs a directory" >&2; exit 2; }
		KEEP_LOGS=$2
		shift
		;;
	--logs=*) KEEP_LOGS=${1#--logs=} ;;
	-h | --help) usage; exit 0 ;;
	*) echo "demo-netns.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG="mst$$"             # every namespace and interface of this run starts so
NET=198.18.0            # the hosts' /24, inside 198.18.0.0/15
SW="$TAG-sw"            # the switch's namespace
BR="$TAG-br"            # the bridge in it
HOSTIF="$TAG-eth"       # each host's end of its cable
SLAVES=(node-1 node-2 node-3)
if [ "$HA" = 1 ]; then
	MASTERS=(m1 m2 m3)  # each host runs registryd and masterd
	HOSTS=(m1 m2 m3 node-1 node-2 node-3)
	HOSTS_WORDS="six hosts"
	declare -A ADDR=([m1]=$NET.1 [m2]=$NET.2 [m3]=$NET.3 [node-1]=$NET.11 [node-2]=$NET.12 [node-3]=$NET.13)
	declare -A PORT=([m1]=$TAG-m1 [m2]=$TAG-m2 [m3]=$TAG-m3 [node-1]=$TAG-n1 [node-2]=$TAG-n2 [node-3]=$TAG-n3)
else
	HOSTS=(registry master node-1 node-2 node-3)
	HOSTS_WORDS="five hosts"
	declare -A ADDR=([registry]=$NET.1 [master]=$NET.2 [node-1]=$NET.11 [node-2]=$NET.12 [node-3]=$NET.13)
	declare -A PORT=([registry]=$TAG-reg [master]=$TAG-mst [node-1]=$TAG-n1 [node-2]=$TAG-n2 [node-3]=$TAG-n3)
fi
REGISTRY="${ADDR[registry]:-}:7111"
MASTER="${ADDR[master]:-}:7112"
VICTIM=node-3        # the slave that is partitioned
HEARTBEAT_MS=1000    # heartbeat_interval in master.toml
BOUND_MS=$((2 * HEARTBEAT_MS))
WARM_S=18            # the detector trusts a slave's rhythm after 16 intervals

ns() { echo "$TAG-$1"; }

# ---------------------------------------------------------------- output

if [ "$CI" = 0 ] && [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-dumb}" != dumb ]; then
	B=$'\e[1m' HEAD=$'\e[1;36m' GOOD=$'\e[32m' BAD=$'\e[1;31m' DIM=$'\e[2m' OFF=$'\e[0m'
else
	B="" HEAD="" GOOD="" BAD="" DIM="" OFF=""
fi

# wrap folds lines longer than 80 columns at a space; the rest of a folded
# line is indented by $1 (default four spaces). Trailing blanks are dropped.
wrap() {
	awk -v W=80 -v I="${1-    }" '
	function clen(s, t) { t = s; return length(s) - gsub(/[\200-\277]/, "", t) }
	{
		line = $0; sub(/[ \t]+$/, "", line); first = 1
		while (clen(line) > (first ? W : W - length(I))) {
			w = first ? W : W - length(I); cut = 0
			for (i = length(line); i > 1; i--)
				if (substr(line, i, 1) == " " && clen(substr(line, 1, i - 1)) <= w) { cut = i; break }
			if (cut == 0) { piece = substr(line, 1, w); line = substr(line, w + 1) }
			else { piece = substr(line, 1, cut - 1); line = substr(line, cut + 1); sub(/^ +/, "", line) }
			print (first ? "" : I) piece; first = 0
		}
		print (first ? "" : I) line
	}'
}

STEP=0
step() {
	STEP=$((STEP + 1))
	local title="$STEP. $1 "
	local rule
	rule=$(printf '%*s' $((80 - ${#title} - 3)) '' | tr ' ' '=')
	printf '\n%s== %s%s%s\n' "$HEAD" "$title" "$rule" "$OFF"
}
# say prints a paragraph, filled to 80 columns.
say() { printf '%s\n' "$*" | tr '\n' ' ' | sed 's/  */ /g; s/ $//' | wrap ""; }
good() { printf '%s%s%s\n' "$GOOD" "$*" "$OFF" | tr '\n' ' ' | wrap ""; }
bad() { printf '%s%s%s\n' "$BAD" "$*" "$OFF" | tr '\n' ' ' | wrap ""; }
result() { if [ "$CI" = 1 ]; then echo "RESULT $*"; fi; }
die() {
	printf '%sdemo-netns: %s%s\n' "$BAD" "$*" "$OFF" | wrap >&2
	exit 1
}

# show prints a command as it is run, wrapped with backslashes at 80 columns.
# A word starting with "#" is a comment, printed as it is.
show() {
	local words=() w
	for w in "$@"; do
		case $w in
		\#*) words+=("$w") ;;
		*[[:space:]\'\"\$\;\(\)\*]*) words+=("'${w// /$'\001'}'") ;;
		*) words+=("$w") ;;
		esac
	done
	printf '%s\n' "${words[*]}" | awk -v W=78 -v B="$B" -v O="$OFF" '{
		n = split($0, a, " "); line = "$"
		for (i = 1; i <= n; i++) {
			if (length(line) + 1 + length(a[i]) > W && line != "$" && line != "   ") {
				print B line " \\" O; line = "   "
			}
			line = line " " a[i]
		}
		print B line O
	}' | sed 's/\x01/ /g'
}

# run shows a command, runs it and shows its output; it returns its status.
run() {
	show "$@"
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	if [ -n "$out" ]; then printf '%s\n' "$out" | wrap; fi
	if [ "$rc" != 0 ]; then printf '%s(exit status %d)%s\n' "$DIM" "$rc" "$OFF"; fi
	return "$rc"
}
must() { run "$@" || die "'$*' failed"; }

# logline turns daemon log lines into "TIME [LEVEL] message fields".
logline() {
	sed -E \
		-e 's/^time="([^"]*)" level=info msg=/\1 /' \
		-e 's/^time="([^"]*)" level=([a-z]+) msg=/\1 \U\2\E /' \
		-e 's/^([^ ]+ ([A-Z]+ )?)"(([^"\\]|\\.)*)"/\1\3/' \
		-e 's/\\"/"/g' | wrap
}

# logsince FILE LINE [GREP]: FILE's lines after LINE, matching GREP.
logsince() {
	tail -n +"$(($2 + 1))" "$1" | grep -E -- "${3:-.}" | logline || true
}
lines() { wc -l <"$1"; }

now_ms() { date +%s%3N; }
to_ms() { [ -n "$1" ] && date -d "$1" +%s%3N; }

# ---------------------------------------------------------------- cleanup

NETNS=()            # namespaces this run created, in order
declare -A PID=()   # daemons this run started and has not reaped
DAEMONS=()          # their names, in start order
WORK=""
CLEANED=0

# running says whether PID is a live process (not a zombie awaiting wait).
running() {
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# stop sends SIGTERM to the named daemons, waits up to 5 s for them, then
# SIGKILLs any left, and reaps them all.
stop() {
	local name i
	for name in "$@"; do
		[ -n "${PID[$name]:-}" ] || continue
		show kill -TERM "${PID[$name]}" "# $name"
		kill -TERM "${PID[$name]}" 2>/dev/null || true
	done
	for ((i = 0; i < 50; i++)); do
		local left=0
		for name in "$@"; do
			if [ -n "${PID[$name]:-}" ] && running "${PID[$name]}"; then left=1; fi
		done
		[ "$left" = 1 ] || break
		sleep 0.1
	done
	for name in "$@"; do
		[ -n "${PID[$name]:-}" ] || continue
		if running "${PID[$name]}"; then
			bad "$name (pid ${PID[$name]}) did not stop within 5 s of SIGTERM: SIGKILL"
			kill -KILL "${PID[$name]}" 2>/dev/null || true
		fi
		wait "${PID[$name]}" 2>/dev/null || true
		unset "PID[$name]"
	done
}

cleanup() {
	local rc=$?
	trap '' INT TERM
	trap - EXIT ERR
	set +eu
	[ "$CLEANED" = 1 ] && exit "$rc"
	CLEANED=1
	step "Clean up: everything tagged $TAG"
	if [ "$rc" != 0 ] && [ "$rc" -lt 128 ] && [ -n "$WORK" ] && [ -d "$WORK/logs" ]; then
		local f
		for f in "$WORK"/logs/*.log; do
			[ -e "$f" ] || continue
			printf '%s--- last lines of %s%s\n' "$B" "logs/${f##*/}" "$OFF"
			tail -n 25 "$f" | logline
		done
	fi
	# Slaves (and the watcher) first, so they leave while the master is
	# there to hear it; then the masters, together; the registries last.
	local order=() name
	for name in "${DAEMONS[@]}"; do
		case $name in node-* | watch) order+=("$name") ;; esac
	done
	[ ${#order[@]} -gt 0 ] && stop "${order[@]}"
	order=()
	for name in "${DAEMONS[@]}"; do
		case $name in node-* | watch | registry*) ;; *) order+=("$name") ;; esac
	done
	[ ${#order[@]} -gt 0 ] && stop "${order[@]}"
	order=()
	for name in "${DAEMONS[@]}"; do
		case $name in registry*) order+=("$name") ;; esac
	done
	[ ${#order[@]} -gt 0 ] && stop "${order[@]}"
	# Anything still inside this run's namespaces was started by this run
	# (an untracked child, had a signal come between its start and $!).
	local n p
	for n in "${NETNS[@]}"; do
		for p in $(ip netns pids "$n" 2>/dev/null); do
			bad "process $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)) is still in $n: SIGKILL"
			kill -KILL "$p" 2>/dev/null
		done
	done
	for ((n = ${#NETNS[@]} - 1; n >= 0; n--)); do
		show ip netns del "${NETNS[n]}"
		ip netns del "${NETNS[n]}" || bad "could not delete namespace ${NETNS[n]}"
	done
	if [ -n "$KEEP_LOGS" ] && [ -n "$WORK" ] && [ -d "$WORK/logs" ]; then
		mkdir -p "$KEEP_LOGS" && cp "$WORK"/logs/* "$KEEP_LOGS"/ 2>/dev/null
		say "logs copied to $KEEP_LOGS"
	fi
	[ -n "$WORK" ] && rm -rf "$WORK"
	local leftover
	leftover=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$TAG-" || true)
	leftover+=$(ip -br link 2>/dev/null | awk '{print $1}' | grep "^$TAG-" || true)
	run ip netns list
	if [ -n "$leftover" ]; then
		bad "still here after cleanup: $leftover"
		result "cleanup namespaces_left=$(printf '%s\n' "$leftover" | grep -c .)"
		[ "$rc" = 0 ] && rc=1
	else
		good "no namespace, interface, process or file of this run is left"
		result "cleanup namespaces_left=0"
	fi
	if [ "$rc" = 0 ]; then
		result "ok"
	elif [ "$rc" -ge 128 ]; then
		bad "interrupted; cleaned up"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'printf "%sdemo-netns: line %s: %s failed%s\n" "$BAD" "$LINENO" "$BASH_COMMAND" "$OFF" >&2' ERR

# ---------------------------------------------------------------- checks

[ "$(id -u)" = 0 ] || die "needs root, to make network namespaces (try: sudo make demo-netns)"
command -v ip >/dev/null || die "needs iproute2's ip command"
if ip netns list 2>/dev/null | awk '{print $1}' | grep -q "^$TAG-"; then
	die "namespaces named $TAG-* exist already (left by an earlier run with this PID?); this run does not touch what it did not make: remove them with 'ip netns del NAME' if they are yours"
fi
if ip -br link | awk '{print $1}' | grep -q "^$TAG-"; then
	die "interfaces named $TAG-* exist in the root namespace already; this run does not touch what it did not make"
fi

if [ -n "${MUSTER_BIN:-}" ]; then
	BIN=$(cd "$MUSTER_BIN" && pwd) || die "MUSTER_BIN=$MUSTER_BIN is not a directory"
else
	BIN=$REPO/bin
fi
missing=0
for b in registryd masterd slaved rpc-query certgen; do
	[ -x "$BIN/$b" ] || missing=1
done
if [ "$missing" = 1 ]; then
	[ -n "${MUSTER_BIN:-}" ] && die "MUSTER_BIN=$MUSTER_BIN lacks registryd, masterd, slaved, rpc-query or certgen"
	must make -C "$REPO" build
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/muster-netns-$TAG.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/run"
cd "$WORK"
export PATH="$BIN:$PATH"

# ---------------------------------------------------------------- the network

step "The network: a switch and $HOSTS_WORDS, each its own namespace"
say "Run tag $TAG: every namespace and interface below starts with it. The
switch is a bridge in namespace $SW; each host gets a namespace, an address
in $NET.0/24 and a veth cable to a switch port. IPv6 is off in each, so the
only traffic is IPv4 between these addresses. Work directory: $WORK"
must ip netns add "$SW"
NETNS+=("$SW")
must ip netns exec "$SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
must ip -n "$SW" link add "$BR" type bridge
must ip -n "$SW" link set "$BR" up
for h in "${HOSTS[@]}"; do
	n=$(ns "$h")
	printf '%s# %s, %s%s\n' "$DIM" "$h" "${ADDR[$h]}" "$OFF"
	must ip netns add "$n"
	NETNS+=("$n")
	must ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	must ip -n "$n" link set lo up
	must ip -n "$SW" link add "${PORT[$h]}" type veth peer name "$HOSTIF" netns "$n"
	must ip -n "$SW" link set "${PORT[$h]}" master "$BR" up
	must ip -n "$n" addr add "${ADDR[$h]}/24" dev "$HOSTIF"
	must ip -n "$n" link set "$HOSTIF" up
done
say "The switch's ports, and each host's address:"
must ip netns exec "$SW" ls /sys/class/net/"$BR"/brif
for h in "${HOSTS[@]}"; do
	must ip -n "$(ns "$h")" -4 -br addr show dev "$HOSTIF"
done

# ---------------------------------------------------------------- helpers

# config EXAMPLE OUT KEY=VALUE...: conf/examples/EXAMPLE with each top-level
# "KEY = ..." line replaced, written to OUT.
config() {
	local example=$1 out=$2 kv k v
	shift 2
	cp "$REPO/conf/examples/$example" "$out"
	printf '%s, from conf/examples/%s with:\n' "$out" "$example"
	for kv in "$@"; do
		k=${kv%%=*} v=${kv#*=}
		grep -q "^$k = " "$out" || die "conf/examples/$example has no line '$k = ...': the script and the example drifted apart"
		awk -v k="$k" -v v="$v" 'index($0, k " = ") == 1 { print k " = " v; next } { print }' "$out" >"$out.new"
		mv "$out.new" "$out"
		printf '    %s = %s\n' "$k" "$v"
	done
}

# start NAME BINARY [HOST]: runs BINARY --config NAME.toml in the namespace
# of HOST (by default NAME), logging to logs/NAME.log.
start() {
	local name=$1 bin=$2 host=${3:-$1}
	show ip netns exec "$(ns "$host")" "$bin" --config "$name.toml" ">>logs/$name.log" "2>&1" "&"
	ip netns exec "$(ns "$host")" "$bin" --config "$name.toml" >>"logs/$name.log" 2>&1 &
	PID[$name]=$!
	case " ${DAEMONS[*]} " in *" $name "*) ;; *) DAEMONS+=("$name") ;; esac
	printf '%spid %s%s\n' "$DIM" "${PID[$name]}" "$OFF"
}

# await NAME FROM REGEX SECONDS: waits for a line matching REGEX in
# logs/NAME.log after line FROM, and shows it.
await() {
	local name=$1 from=$2 re=$3 i
	for ((i = 0; i < $4 * 10; i++)); do
		if tail -n +"$((from + 1))" "logs/$name.log" 2>/dev/null | grep -Eq -- "$re"; then
			tail -n +"$((from + 1))" "logs/$name.log" | grep -E -- "$re" | head -n 1 | logline
			return 0
		fi
		running "${PID[$name]}" || die "$name exited before logging '$re' (the end of its log is shown below)"
		sleep 0.1
	done
	die "$name did not log '$re' within $4 s (the end of its log is shown below)"
}

# q HOST ARGS...: rpc-query in HOST's namespace, for the script's own checks
# (not shown).
q() { ip netns exec "$(ns "$1")" rpc-query --timeout 2s "${@:2}" 2>/dev/null; }
field() { sed -n "s/^ *\"$1\": \"\\{0,1\\}\\([^\",]*\\)\"\\{0,1\\},\\{0,1\\}\$/\\1/p" | head -n 1; }

# ---------------------------------------------------------------- --ha

# poll SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds, for
# SECONDS at most (and as many tries as fit in them).
poll() {
	local secs=$1 end i
	shift
	end=$(($(now_ms) + secs * 1000))
	for ((i = 0; i < secs * 5; i++)); do
		"$@" && return 0
		[ "$(now_ms)" -lt "$end" ] || return 1
		sleep 0.2
	done
	return 1
}

# qt HOST TIMEOUT ARGS...: q with another timeout; its output even when it
# exits non-zero (rpc-query masters exits 4 when a master does not answer).
qt() { ip netns exec "$(ns "$1")" rpc-query --timeout "$2" "${@:3}" 2>/dev/null || true; }

# state_of NAME: the state NAME has in the rpc-query masters --json on stdin.
state_of() {
	awk -v n="$1" '
		/"name": / { gsub(/[",]/, "", $2); cur = ($2 == n) }
		cur && /"state": / { gsub(/[",]/, "", $2); print $2; exit }'
}

# leader_via M: the leader and term the group shows, asked at master M's
# ClusterService from node-1's host; sets leader and term, fails if none.
leader_via() {
	local out
	out=$(qt node-1 4s --json masters --master "${ADDR[$1]}:7112")
	leader=$(printf '%s\n' "$out" | field leader)
	term=$(printf '%s\n' "$out" | field term)
	[ -n "$leader" ] && [ "${term:-0}" != 0 ]
}

# new_leader OLD: one of the masters other than OLD names a leader that is
# not OLD.
new_leader() {
	local m
	for m in "${MASTERS[@]}"; do
		[ "$m" != "$1" ] || continue
		leader_via "$m" && [ "$leader" != "$1" ] && return 0
	done
	return 1
}

# alive_on M: the number of members master M lists alive.
alive_on() {
	qt node-1 2s --json members --master "${ADDR[$1]}:7112" | grep -c '"status": "alive"' || true
}
all_alive_on() { [ "$(alive_on "$1")" = 3 ]; }

# entry_on HOST M: "ADDR EPOCH" of ClusterService/lab in master host M's
# registry, asked from HOST.
entry_on() {
	local out
	out=$(qt "$1" 2s --json lookup ClusterService/lab --registry "${ADDR[$2]}:7111")
	printf '%s %s\n' "$(printf '%s\n' "$out" | field address)" "$(printf '%s\n' "$out" | field epoch)"
}
# entry_is HOST M ADDR EPOCH: that entry is ADDR at EPOCH.
entry_is() { [ "$(entry_on "$1" "$2")" = "$3 $4" ]; }

# verdicts FILE [FROM]: the suspect and dead events of the watcher's FILE
# after line FROM.
verdicts() {
	tail -n +"$((${2:-0} + 1))" "$1" | grep -E '"kind":"(suspect|dead)"' || true
}

# versions_ok FILE: the watcher's event versions each follow the one before.
versions_ok() {
	sed -n 's/.*"version":\([0-9]*\).*/\1/p' "$1" | awk 'NR > 1 && $1 != prev + 1 { bad = 1 } { prev = $1 } END { exit bad }'
}

# logtime FILE FROM TEXT: the time, in ms since the epoch, of the first line
# of FILE after line FROM that has TEXT; "" if none.
logtime() {
	local t
	t=$(tail -n +"$(($2 + 1))" "$1" | grep -F -- "$3" | head -n 1 | sed -nE 's/^time="([^"]*)".*/\1/p')
	to_ms "$t" || true
}

# not_leading M: master M, asked on its own host, does not say it leads.
not_leading() {
	[ "$(qt "$1" 4s --json masters --master "${ADDR[$1]}:7112" | state_of "$1")" != leader ]
}

# rejoined OLD VIA: the group, asked at master VIA, has a leader other than
# OLD, and two followers, OLD one of them; sets leader and term.
rejoined() {
	local out
	out=$(qt node-1 4s --json masters --master "${ADDR[$2]}:7112")
	leader=$(printf '%s\n' "$out" | field leader)
	term=$(printf '%s\n' "$out" | field term)
	[ -n "$leader" ] && [ "$leader" != "$1" ] &&
		[ "$(printf '%s\n' "$out" | state_of "$1")" = follower ] &&
		[ "$(printf '%s\n' "$out" | grep -c '"state": "follower"')" = 2 ]
}

ha_demo() {
	local m i s peers regs reg_csv

	step "Certificates: each master host a registry and a master certificate"
	must certgen ca --dir certs --cluster lab
	i=0
	for m in "${MASTERS[@]}"; do
		i=$((i + 1))
		must certgen issue --dir certs --role registry --name "reg$i" --host "${ADDR[$m]}"
		must certgen issue --dir certs --role master --name "$m" --host "${ADDR[$m]}"
	done
	for s in "${SLAVES[@]}"; do
		must certgen issue --dir certs --role slave --name "$s"
	done
	must certgen issue --dir certs --role admin --name ops

	step "Configs: three registries, one raft group of three masters"
	say "A master's certificate name is its name in the group. Every master and
every slave lists the three registries; each master's [raft] section has its
raft address and the group's. The ports are the defaults: each host has its
own address, so nothing else listens there."
	regs="" reg_csv="" peers=""
	for m in "${MASTERS[@]}"; do
		regs+="\"${ADDR[$m]}:7111\", "
		reg_csv+="${ADDR[$m]}:7111,"
		peers+="\"$m=${ADDR[$m]}:7115\", "
	done
	regs="[${regs%, }]" reg_csv=${reg_csv%,} peers="[${peers%, }]"
	i=0
	for m in "${MASTERS[@]}"; do
		i=$((i + 1))
		config registry.toml "registry-$m.toml" "listen=\"${ADDR[$m]}:7111\"" \
			"socket=\"run/registry-$m.sock\"" "state_dir=\"state/reg$i\"" \
			"cert=\"certs/registry-reg$i.pem\"" "key=\"certs/registry-reg$i-key.pem\""
		config master.toml "$m.toml" "listen=\"${ADDR[$m]}:7112\"" "registries=$regs" \
			"state_dir=\"state/$m\"" "cert=\"certs/master-$m.pem\"" "key=\"certs/master-$m-key.pem\""
		printf '\n[raft]\nlisten = "%s:7115"\npeers = %s\n' "${ADDR[$m]}" "$peers" >>"$m.toml"
		printf '    and a [raft] section:\n'
		sed -n '/^\[raft\]/,$p' "$m.toml" | sed 's/^/    /' | wrap "        "
	done
	for s in "${SLAVES[@]}"; do
		config slave.toml "$s.toml" "node=\"$s\"" "registries=$regs" \
			"socket=\"run/slaved-$s.sock\"" "cert=\"certs/slave-$s.pem\"" "key=\"certs/slave-$s-key.pem\""
	done

	step "Start the daemons, each in its host's namespace"
	for m in "${MASTERS[@]}"; do
		start "registry-$m" registryd "$m"
		await "registry-$m" 0 'msg=ready' 20
	done
	say "The three masters start together; none is ready until a leader is
elected and has registered, or a follower knows it:"
	for m in "${MASTERS[@]}"; do
		start "$m" masterd
	done
	for m in "${MASTERS[@]}"; do
		await "$m" 0 'msg=ready' 60
	done
	for s in "${SLAVES[@]}"; do
		start "$s" slaved
	done
	for s in "${SLAVES[@]}"; do
		await "$s" 0 'msg=ready' 30
	done

	step "The group, seen from node-1's host"
	export MUSTER_REGISTRY=$reg_csv MUSTER_CA=certs/ca.pem MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem
	show export MUSTER_REGISTRY="$reg_csv" MUSTER_CA=certs/ca.pem MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem
	poll 30 leader_via "${MASTERS[0]}" || die "the group names no leader within 30 s"
	local old=$leader term0=$term
	poll 30 all_alive_on "$old" || die "the leader $old does not list three alive slaves within 30 s"
	must ip netns exec "$(ns node-1)" rpc-query masters
	must ip netns exec "$(ns node-1)" rpc-query members
	run ip netns exec "$(ns node-1)" rpc-query services -o wide || true
	good "$old leads in term $term0; two followers; three slaves alive."
	result "ha leader=$old term=$term0 alive=3"

	# The witness: a watcher of a master that stays on the majority side.
	local witness
	for m in "${MASTERS[@]}"; do
		[ "$m" = "$old" ] || { witness=$m; break; }
	done
	say "A watcher on node-1's host follows the events of $witness, a follower
that stays with the majority: a follower serves the events it has from raft,
committed ones only. Whatever the cut-off leader judges, only what reaches
the majority's log can show here."
	show ip netns exec "$(ns node-1)" rpc-query watch --json --master "${ADDR[$witness]}:7112" ">logs/watch.jsonl" "2>logs/watch.log" "&"
	ip netns exec "$(ns node-1)" rpc-query watch --json --master "${ADDR[$witness]}:7112" >logs/watch.jsonl 2>logs/watch.log &
	PID[watch]=$!
	DAEMONS+=(watch)
	printf '%spid %s%s\n' "$DIM" "${PID[watch]}" "$OFF"
	poll 10 grep -q '"type":"snapshot"' logs/watch.jsonl || die "the watcher printed no snapshot within 10 s"

	# ------------------------------------------------------------ partition

	step "Partition: the leader $old's switch port goes down"
	say "$old's cable is cut at the switch: its masterd and its registryd keep
running, and reach each other on its host, but nothing else. No FIN, no RST:
the others have to notice the silence."
	local logo logn logw t_cut t_new t_down elect_ms down_ms new term1
	logo=$(lines "logs/$old.log")
	declare -A logms=()
	for m in "${MASTERS[@]}"; do logms[$m]=$(lines "logs/$m.log"); done
	logw=$(lines logs/watch.jsonl)
	declare -A logr=()
	for m in "${MASTERS[@]}"; do logr[$m]=$(lines "logs/registry-$m.log"); done
	t_cut=$(now_ms)
	must ip -n "$SW" link set "${PORT[$old]}" down
	poll 30 new_leader "$old" || die "no new leader within 30 s of cutting $old off"
	new=$leader term1=$term logn=${logms[$new]}
	# When it led and when the old one stepped down, from their logs (the
	# poll above waits up to 2 s on the unreachable master each time).
	t_new=$(logtime "logs/$new.log" "$logn" "this master leads the group in term $term1")
	t_down=$(logtime "logs/$old.log" "$logo" 'stepping down')
	elect_ms=$((${t_new:-t_cut} - t_cut)) down_ms=$((${t_down:-t_cut} - t_cut))
	[ "$term1" -gt "$term0" ] || die "the new leader $new is in term $term1, not above $old's $term0"
	run ip netns exec "$(ns node-1)" rpc-query masters --master "${ADDR[$new]}:7112" || true
	good "$new leads in term $term1, $elect_ms ms after the cut ($old stepped down after $down_ms ms); $old is unreachable from here."

	say "The cut-off master steps down once it has not heard from a majority for
its lease (500 ms), and stops judging. Its log since the cut (logs/$old.log):"
	poll 10 grep -q 'this master is no longer the leader' <(tail -n +"$((logo + 1))" "logs/$old.log") ||
		die "$old did not log 'this master is no longer the leader' within 10 s of the cut"
	logsince "logs/$old.log" "$logo" 'leader|quorum|stepping down| is now |holding|abandoned|not committed|unregister|refused'
	say "Asked on its own host, it does not claim to lead; the others do not
answer it:"
	poll 10 not_leading "$old" || die "$old still says it leads 10 s after the cut"
	run ip netns exec "$(ns "$old")" rpc-query masters --master "${ADDR[$old]}:7112" || true
	local ostate
	ostate=$(qt "$old" 4s --json masters --master "${ADDR[$old]}:7112" | state_of "$old")

	say "The slaves lose $old, and find $new through the masters they were told,
or the registries:"
	poll 40 all_alive_on "$new" || die "$new does not list three alive slaves within 40 s of the cut"
	must ip netns exec "$(ns node-1)" rpc-query members --master "${ADDR[$new]}:7112"

	say "The two registries $new reaches hold its entry at its epoch, term
$term1: a registration of a lower epoch is refused there from now on."
	for m in "${MASTERS[@]}"; do
		[ "$m" != "$old" ] || continue
		poll 20 entry_is node-1 "$m" "${ADDR[$new]}:7112" "$term1" ||
			die "registry on $m does not hold $new at epoch $term1 within 20 s (it has: $(entry_on node-1 "$m"))"
		run ip netns exec "$(ns node-1)" rpc-query lookup ClusterService/lab --registry "${ADDR[$m]}:7111" || true
		logsince "logs/registry-$m.log" "${logr[$m]}" 'ClusterService'
	done
	say "$old's own registry, which only $old reaches now:"
	run ip netns exec "$(ns "$old")" rpc-query services -o wide --registry "${ADDR[$old]}:7111" || true

	local judged committed
	judged=$(tail -n +"$((logo + 1))" "logs/$old.log" | grep -cE ' is now (suspect|dead)' || true)
	committed=$(verdicts logs/watch.jsonl "$logw" | grep -c . || true)
	say "The watcher's events since the cut (logs/watch.jsonl):"
	if [ "$(lines logs/watch.jsonl)" -gt "$logw" ]; then
		tail -n +"$((logw + 1))" logs/watch.jsonl | wrap
	else
		printf '%s(none)%s\n' "$DIM" "$OFF"
	fi
	if [ "$committed" = 0 ]; then
		good "No slave suspect or dead in the majority's log; $old logged $judged verdicts after the cut, none committed."
	else
		bad "The majority's log has $committed suspect or dead events since the cut:"
		verdicts logs/watch.jsonl "$logw" | wrap
	fi
	result "ha-partition old=$old new=$new term_before=$term0 term=$term1 elect_ms=$elect_ms stepdown_ms=$down_ms old_state=$ostate stepped_down=yes"
	[ "$committed" = 0 ] || die "a live slave was judged while $old was cut off"

	# ------------------------------------------------------------ heal

	step "Heal: $old's port comes back up; it rejoins as a follower"
	for m in "${MASTERS[@]}"; do logr[$m]=$(lines "logs/registry-$m.log"); done
	must ip -n "$SW" link set "${PORT[$old]}" up
	poll 30 rejoined "$old" "$new" || die "$old is not a follower within 30 s of the heal"
	local lead2=$leader term2=$term
	must ip netns exec "$(ns node-1)" rpc-query masters
	say "$old, asked on its own host, follows $lead2 again:"
	run ip netns exec "$(ns "$old")" rpc-query masters --master "${ADDR[$old]}:7112" || true
	say "Its registry gets the leader's entry, at the leader's epoch:"
	poll 20 entry_is node-1 "$old" "${ADDR[$lead2]}:7112" "$term2" ||
		die "registry on $old does not hold $lead2 at epoch $term2 within 20 s (it has: $(entry_on node-1 "$old"))"
	logsince "logs/registry-$old.log" "${logr[$old]}" 'ClusterService'
	local nregs=0
	for m in "${MASTERS[@]}"; do
		entry_is node-1 "$m" "${ADDR[$lead2]}:7112" "$term2" && nregs=$((nregs + 1))
	done
	must ip netns exec "$(ns node-1)" rpc-query services -o wide
	say "$old's copy of the roll is the group's again: the three slaves alive,
none judged:"
	poll 20 all_alive_on "$old" || die "$old does not list three alive slaves within 20 s of the heal"
	must ip netns exec "$(ns node-1)" rpc-query members --master "${ADDR[$old]}:7112"
	committed=$(verdicts logs/watch.jsonl | grep -c . || true)
	local gapless=yes
	versions_ok logs/watch.jsonl || gapless=no
	if [ "$committed" = 0 ] && [ "$gapless" = yes ]; then
		good "The watcher saw no suspect or dead event in the whole run, and no version gap."
	else
		bad "The watcher saw $committed suspect or dead events; versions without a gap: $gapless."
	fi
	good "$old is a follower of $lead2 (term $term2)."
	result "ha-heal old=$old state=follower leader=$lead2 term=$term2 alive=3"
	result "ha-fencing old_verdicts=$judged committed_verdicts=$committed registries_at_leader_epoch=$nregs gapless=$gapless"
	[ "$committed" = 0 ] || die "the watcher saw a suspect or dead event for a live slave"
	[ "$gapless" = yes ] || die "the watcher's versions have a gap"
	[ "$nregs" = 3 ] || die "only $nregs of 3 registries hold $lead2 at epoch $term2"

	step "Summary"
	printf '%-24s %s\n' "cut -> new leader:" "$elect_ms ms ($old term $term0 -> $new term $term1)"
	printf '%-24s %s\n' "cut -> $old steps down:" "$down_ms ms, now $ostate; $judged verdicts logged, 0 committed"
	printf '%-24s %s\n' "after the heal:" "$old a follower of $lead2 (term $term2)"
}

[ "$HA" = 0 ] || { ha_demo; exit 0; }

# ---------------------------------------------------------------- certificates

step "Certificates: a CA, and each node's with its IP as a SAN"
must certgen ca --dir certs --cluster lab
must certgen issue --dir certs --role registry --name reg1 --host "${ADDR[registry]}"
must certgen issue --dir certs --role master --name m1 --host "${ADDR[master]}"
for s in "${SLAVES[@]}"; do
	must certgen issue --dir certs --role slave --name "$s"
done
must certgen issue --dir certs --role admin --name ops

# ---------------------------------------------------------------- configs

step "Configs: conf/examples with this network's addresses"
say "Paths are relative to each config's directory ($WORK): certs/, run/
(sockets), state/ and logs/."
config registry.toml registry.toml "listen=\"$REGISTRY\""
config master.toml master.toml "listen=\"$MASTER\"" "registry=\"$REGISTRY\""
for s in "${SLAVES[@]}"; do
	config slave.toml "$s.toml" "node=\"$s\"" "registry=\"$REGISTRY\"" \
		"socket=\"run/slaved-$s.sock\"" "cert=\"certs/slave-$s.pem\"" "key=\"certs/slave-$s-key.pem\""
done

# ---------------------------------------------------------------- daemons

step "Start the daemons, each in its host's namespace"
start registry registryd
await registry 0 'msg=ready' 20
start master masterd
await master 0 'msg=ready' 20 # logged once it has registered ClusterService/lab
for s in "${SLAVES[@]}"; do
	start "$s" slaved
done
for s in "${SLAVES[@]}"; do
	await "$s" 0 'msg=ready' 20
done

# ---------------------------------------------------------------- the cluster

member() { q master --json members "$1"; }
count_alive() { q master --json members | grep -c '"status": "alive"' || true; }

# until_alive N SECONDS: waits until the master lists N slaves alive.
until_alive() {
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		[ "$(count_alive)" = "$1" ] && return 0
		sleep 0.2
	done
	return 1
}

# until_status NODE STATUS SECONDS: waits until the master says NODE has
# STATUS, and prints its member JSON.
until_status() {
	local i m
	for ((i = 0; i < $3 * 5; i++)); do
		m=$(member "$1" || true)
		if [ "$(printf '%s\n' "$m" | field status)" = "$2" ]; then
			printf '%s\n' "$m"
			return 0
		fi
		sleep 0.2
	done
	return 1
}

step "The cluster, seen across the network"
say "rpc-query runs in the master's namespace with an admin certificate: it
asks the registry at $REGISTRY over mutual TLS where ClusterService/lab is,
then asks the master there. Its flags come from the environment:"
export MUSTER_REGISTRY=$REGISTRY MUSTER_CA=certs/ca.pem MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem
show export MUSTER_REGISTRY="$REGISTRY" MUSTER_CA=certs/ca.pem MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem
until_alive 3 20 || die "the master does not list three alive slaves within 20 s"
must ip netns exec "$(ns master)" rpc-query services
must ip netns exec "$(ns master)" rpc-query members
good "All three slaves are alive."
result "alive slaves=3"
say "A slave's own view, read from its local UNIX socket in its namespace:"
must ip netns exec "$(ns node-1)" rpc-query view --slave-socket run/slaved-node-1.sock
say "The master's TLS connections come from the slaves' own addresses:"
must ip netns exec "$(ns master)" ss -tn state established "( sport = :7112 )"

# The detector is tolerant of a slave it has heard fewer than 16 intervals
# from (dead ≈3.6 s after its last heartbeat); after that, a steady slave is
# dead ≈1.5 s after its last heartbeat. Partition a warmed-up slave.
joined=$(member "$VICTIM" | field joined_at)
[ -n "$joined" ] || die "cannot read $VICTIM's join time from the master"
wait_ms=$((WARM_S * 1000 - ($(now_ms) - $(to_ms "$joined"))))
if [ "$wait_ms" -gt 0 ]; then
	say "The master's detector learns each slave's rhythm from its first 16
heartbeat intervals and is tolerant until then (masterd/detector.go: dead
≈3.6 s after the last heartbeat instead of ≈1.5 s), so the demo waits
$(((wait_ms + 500) / 1000)) s more, until $VICTIM has been up for $WARM_S s."
	until_ms=$(($(now_ms) + wait_ms))
	while [ "$(now_ms)" -lt "$until_ms" ]; do sleep 0.2; done   # short sleeps: Ctrl-C stays prompt
fi

# ---------------------------------------------------------------- partition

step "Partition: $VICTIM's switch port goes down"
say "The cable is cut at the switch. $VICTIM's process keeps running, and no
FIN or RST reaches the master: it has to notice the silence. Timed from the
link going down to the master's dead verdict (the member's status_since)."
logm=$(lines logs/master.log)
logv=$(lines "logs/$VICTIM.log")
t_down=$(now_ms)
must ip -n "$SW" link set "${PORT[$VICTIM]}" down
must ip -n "$(ns "$VICTIM")" -br link show "$HOSTIF"
dead=$(until_status "$VICTIM" dead 15) || die "the master did not declare $VICTIM dead within 15 s of the partition"
t_dead=$(to_ms "$(printf '%s\n' "$dead" | field status_since)")
t_last=$(to_ms "$(printf '%s\n' "$dead" | field last_heartbeat)")
detect_ms=$((t_dead - t_down))
silence_ms=$((t_dead - t_last))
verdict=$(tail -n +"$((logm + 1))" logs/master.log | grep -E "$VICTIM is now dead" | head -n 1 || true)
reason=$(printf '%s\n' "$verdict" | sed -nE 's/.* is now dead: ([^"]*)".*/\1/p')
closed=$(tail -n +"$((logm + 1))" logs/master.log | grep -cE "$VICTIM is now [a-z]+: connection closed" || true)
if [[ $reason == "no heartbeat for "* ]] && [ "$closed" = 0 ]; then
	detector=heartbeat
elif [[ $reason == *"connection closed"* ]] || [ "$closed" != 0 ]; then
	detector=connection-close
else
	detector=other
fi
say "The master's log since the partition (logs/master.log):"
logsince logs/master.log "$logm" "$VICTIM is "
say "Its end of the connection is still established: it never saw a close.
Send-Q is what it has sent since, unacknowledged."
run ip netns exec "$(ns master)" ss -tn state established "( dst ${ADDR[$VICTIM]} )" || true
must ip netns exec "$(ns master)" rpc-query members
say "The other slaves are told (node-1's view):"
must ip netns exec "$(ns node-1)" rpc-query view --slave-socket run/slaved-node-1.sock --status dead
printf '\n%slink down -> dead: %d ms%s (the last heartbeat came %d ms before the link went\ndown; silence at the verdict %d ms; bound 2 x %d ms heartbeat = %d ms)\n' \
	"$B" "$detect_ms" "$OFF" "$((t_down - t_last))" "$silence_ms" "$HEARTBEAT_MS" "$BOUND_MS" | wrap ""
if [ "$detector" = heartbeat ] && [ "$detect_ms" -le "$BOUND_MS" ]; then
	good "Declared dead by the heartbeat detector, within the silent-host bound."
elif [ "$detector" = heartbeat ]; then
	bad "Declared dead by the heartbeat detector, but OVER the silent-host bound."
fi
result "partition node=$VICTIM detect_ms=$detect_ms silence_ms=$silence_ms bound_ms=$BOUND_MS detector=$detector reason=\"$reason\""
[ "$detector" = heartbeat ] || die "$VICTIM was declared dead by '$reason', not by the heartbeat detector"

say "On its side of the cut, $VICTIM waits call_timeout (2 s) for a heartbeat
reply, then gives the connection up and looks for the master again:"
noticed=0
for ((i = 0; i < 50; i++)); do   # 10 s at most
	if [ "$(q "$VICTIM" --json view --slave-socket "run/slaved-$VICTIM.sock" | field joined)" = false ]; then
		noticed=1
		break
	fi
	sleep 0.2
done
[ "$noticed" = 1 ] || bad "$VICTIM still thinks it is joined 10 s into the partition"
logsince "logs/$VICTIM.log" "$logv"
logv=$(lines "logs/$VICTIM.log")
must ip netns exec "$(ns "$VICTIM")" rpc-query view --slave-socket "run/slaved-$VICTIM.sock"

# ---------------------------------------------------------------- heal

step "Heal: the port comes back up and $VICTIM rejoins"
logm=$(lines logs/master.log)
t_up=$(now_ms)
must ip -n "$SW" link set "${PORT[$VICTIM]}" up
alive=$(until_status "$VICTIM" alive 20) || die "$VICTIM did not rejoin within 20 s of the heal"
t_alive=$(to_ms "$(printf '%s\n' "$alive" | field status_since)")
rejoin_ms=$((t_alive - t_up))
until_alive 3 10 || die "not all three slaves alive after the heal"
say "$VICTIM's log since then (logs/$VICTIM.log):"
logsince "logs/$VICTIM.log" "$logv"
say "The master's:"
logsince logs/master.log "$logm" "$VICTIM "
must ip netns exec "$(ns master)" rpc-query members
good "$VICTIM is alive again, $rejoin_ms ms after the link came up, with the same incarnation."
result "heal node=$VICTIM status=alive rejoin_ms=$rejoin_ms"

# ---------------------------------------------------------------- master restart

step "The master SIGKILLed, and restarted in its namespace"
say "No unregister, no goodbye: the registry keeps the master's lease, the
slaves see their connections reset and look the master up again. rpc-query
now runs on node-1's host."
roll() { q master --json members | grep -E '"(name|incarnation)"' | tr -d ' ,\n'; }
before=$(roll || true)
logm=$(lines logs/master.log)
log1=$(lines logs/node-1.log)
show kill -KILL "${PID[master]}" "# masterd"
kill -KILL "${PID[master]}"
wait "${PID[master]}" 2>/dev/null || true
unset "PID[master]"
run ip netns exec "$(ns node-1)" rpc-query services || true
run ip netns exec "$(ns node-1)" rpc-query members || true
t_start=$(now_ms)
start master masterd
await master "$logm" 'msg=ready' 20
until_alive 3 30 || die "the slaves did not all rejoin within 30 s of the master's restart"
restart_ms=$(($(now_ms) - t_start))
after=$(roll || true)
restored=$(tail -n +"$((logm + 1))" logs/master.log | sed -nE 's/.*leads the group in term [0-9]+: ([0-9]+) members.*/\1/p' | head -n 1)
say "The master's log since the restart:"
logsince logs/master.log "$logm" 'leads the group|registered| is '
say "node-1's:"
logsince logs/node-1.log "$log1"
must ip netns exec "$(ns node-1)" rpc-query members
if [ -n "$before" ] && [ "$before" = "$after" ]; then
	kept=yes
	good "All three are alive again within $restart_ms ms of the restart, each with the
incarnation it had: the roster was kept and no slave restarted."
else
	kept=no
	bad "The roll changed across the restart: before $before, after $after."
fi
result "restart restored=${restored:-0} alive=3 rejoin_ms=$restart_ms roster_kept=$kept"

step "Summary"
printf '%-30s %s\n' "partition -> dead ($VICTIM):" "$detect_ms ms ($detector detector; bound $BOUND_MS ms)"
printf '%-30s %s\n' "heal -> alive again:" "$rejoin_ms ms"
printf '%-30s %s\n' "master restart -> all alive:" "$restart_ms ms (${restored:-0} nodes restored)"

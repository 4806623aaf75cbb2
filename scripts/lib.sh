# shellcheck shell=bash
# Variables set here for the demo to read, and the demo's own (prog, root)
# read here, are not unused or unassigned:
# shellcheck disable=SC2034,SC2154
# lib.sh: what the lab demos share (scripts/demo.sh, scripts/demo-ha.sh):
# their flags, the narration (each command printed before its output, folded
# to 80 columns), the table of every process a demo starts, the cleanup that
# stops them all by PID, waiting on a condition with a deadline, the
# binaries, the configs and the daemons' ready lines.
#
# A demo sets prog (its name, for messages), root (the repository) and a
# usage function, sources this file, then calls parse_args "$@" and
# setup_lab PREFIX. Its variables stay its own; the ones set here are named
# below where they are set.

# parse_args: --step, --keep, --ci and --help, as each demo's usage says;
# then step_mode, keep, ci and the colours c_head, c_cmd, c_note, c_ok,
# c_bad and c_off.
parse_args() {
	step_mode=0 keep=0 ci=0
	local arg
	for arg in "$@"; do
		case $arg in
		--step) step_mode=1 ;;
		--keep) keep=1 ;;
		--ci) ci=1 ;;
		-h | --help | help)
			usage
			exit 0
			;;
		*)
			printf '%s: unknown argument %s (try --help)\n' "$prog" "$arg" >&2
			exit 2
			;;
		esac
	done

	# Colour only on a terminal, pauses only with one to read Enter from.
	if [[ $ci == 0 && -t 1 && -z ${NO_COLOR:-} ]]; then
		c_head=$'\e[1;36m' c_cmd=$'\e[1m' c_note=$'\e[2m' c_ok=$'\e[32m' c_bad=$'\e[31m' c_off=$'\e[0m'
	else
		c_head='' c_cmd='' c_note='' c_ok='' c_bad='' c_off=''
	fi
	if [[ $ci == 1 ]] || ! { : </dev/tty; } 2>/dev/null; then
		step_mode=0
	fi
}

# ---------------------------------------------------------------- output

width=80

# fit folds lines wider than 80 columns, counted in bytes as awk counts
# them (a character of several bytes is kept whole, and table columns are
# found by characters). Continuation lines are indented four spaces.
fit() {
	LC_ALL=C awk -v w="$width" '
	# enc replaces each multibyte UTF-8 character of s with one byte, \001, and
	# keeps it in mb[i, k], so that positions count characters.
	function enc(s, i,   out) {
		out = ""
		nmb[i] = 0
		while (match(s, /[\300-\367][\200-\277]+/)) {
			out = out substr(s, 1, RSTART - 1) "\001"
			mb[i, ++nmb[i]] = substr(s, RSTART, RLENGTH)
			s = substr(s, RSTART + RLENGTH)
		}
		return out s
	}
	# dec puts the characters of line i back into s, a piece of it: the next ones
	# from cur[i], advancing cur[i] if adv is set.
	function dec(s, i, adv,   out, k, j) {
		out = ""
		k = cur[i]
		while ((j = index(s, "\001")) > 0) {
			out = out substr(s, 1, j - 1) mb[i, ++k]
			s = substr(s, j + 1)
		}
		if (adv) cur[i] = k
		return out s
	}
	function rtrim(s) { sub(/ +$/, "", s); return s }
	function table(s) { return s ~ /[^ ]   *[^ ]/ }
	# starts: a field of s starts at character p.
	function starts(s, p) { return substr(s, p, 1) != " " && substr(s, p - 1, 1) == " " }
	# fits: the first p-1 characters of line i, from its cursor, fit in w bytes.
	function fits(s, i, p) { return length(dec(rtrim(substr(s, 1, p - 1)), i, 0)) <= w }
	# wrap prints s, a piece of line i, folding it at spaces into pieces of at
	# most w bytes; continuations are indented four spaces.
	function wrap(s, i,   p, cut) {
		while (length(dec(s, i, 0)) > w) {
			cut = 0
			for (p = w + 1; p > 5 && !cut; p--)
				if (starts(s, p) && fits(s, i, p)) cut = p
			if (!cut)
				for (cut = w + 1; cut > 2 && !fits(s, i, cut); cut--)
					;
			print dec(rtrim(substr(s, 1, cut - 1)), i, 1)
			s = "    " substr(s, cut)
		}
		print dec(s, i, 1)
	}
	{
		raw[NR] = $0
		e[NR] = enc($0, NR)
		cur[NR] = 0
	}
	END {
		# Table rows too wide are cut at one column where a field starts in
		# each of them, no further left than half the width, so that their
		# folded columns stay aligned; so are the other rows of the table that reach
		# past that column. Anything else too wide is wrapped at spaces.
		col = 0
		for (p = w + 1; p > w / 2 && !col; p--) {
			ok = 1
			n = 0
			for (i = 1; i <= NR && ok; i++) {
				if (length(raw[i]) <= w || !table(e[i])) continue
				n++
				ok = starts(e[i], p) && fits(e[i], i, p)
			}
			if (n == 0) break
			if (ok) col = p
		}
		for (i = 1; i <= NR; i++) {
			s = e[i]
			if (col && table(s) && starts(s, col) && fits(s, i, col)) {
				print dec(rtrim(substr(s, 1, col - 1)), i, 1)
				wrap("    " substr(s, col), i)
			} else if (length(raw[i]) > w) {
				wrap(s, i)
			} else {
				print raw[i]
			}
		}
	}
	'
}

say() { printf '%s\n' "$*" | fit; }
note() { printf '%s%s%s\n' "$c_note" "$(printf '%s\n' "$*" | fit)" "$c_off"; }
good() { printf '%s%s%s\n' "$c_ok" "$(printf '%s\n' "$*" | fit)" "$c_off"; }

heading() {
	pause
	printf '\n%s== %s ==%s\n' "$c_head" "$*" "$c_off"
}

pause() {
	if [[ $step_mode == 1 ]]; then
		printf '%s-- press Enter for the next step --%s' "$c_note" "$c_off" >/dev/tty
		read -r _ </dev/tty || true
	fi
}

# quote prints its arguments as a shell would need them typed.
quote() {
	local a out=''
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
			out+=" $a"
		else
			out+=" '${a//\'/\'\\\'\'}'"
		fi
	done
	printf '%s' "${out# }"
}

# cmdline prints "$ COMMAND", broken with backslashes to fit 80 columns,
# before a flag where it can be.
cmdline() {
	local text head cut
	text="\$ $1"
	while ((${#text} > width)); do
		head=${text:0:width-2}
		cut=${head% -*}
		if [[ $cut == "$head" || ${#cut} -lt 8 ]]; then
			cut=${head% *}
		fi
		printf '%s%s \\%s\n' "$c_cmd" "$cut" "$c_off"
		text="    ${text:${#cut}+1}"
	done
	printf '%s%s%s\n' "$c_cmd" "$text" "$c_off"
}

# run runs a command in the background and waits for it. Ctrl-C then
# stops the demo at once: bash leaves a SIGINT that a foreground command
# catches to that command, and rpc-query catches it (and exits 1).
run() {
	"$@" &
	child=$!
	wait "$child"
}

child=''

# nap sleeps, as run does.
nap() { run sleep "$1"; }

# rpcq runs rpc-query, as run does; qout holds its output.
rpcq() {
	local st=0
	run rpc-query "$@" >"$workdir/.rpcq" 2>&1 || st=$?
	qout=$(<"$workdir/.rpcq")
	return "$st"
}

folded=0 # whether the note on folding was printed

# show runs a command after printing it, and prints its output and, if it
# failed, its exit status. $out and $rc hold them afterwards.
show() {
	cmdline "$(quote "$@")"
	rc=0
	run "$@" >"$workdir/.show" 2>&1 || rc=$?
	out=$(<"$workdir/.show")
	if [[ -n $out ]]; then
		if [[ $folded == 0 ]] && LC_ALL=C awk -v w="$width" 'length > w { f = 1 } END { exit !f }' <<<"$out"; then
			folded=1
			note "(output wider than $width columns is folded; continuations are indented)"
		fi
		printf '%s\n' "$out" | fit
	fi
	if [[ $rc != 0 ]]; then
		note "(exit status $rc)"
	fi
}

die() {
	printf '%s%s: %s%s\n' "$c_bad" "$prog" "$*" "$c_off" | fit >&2
	exit 1
}

# ------------------------------------------------------------- processes

pids=()  # every process the demo started, in order
names=() # what each one is, for messages

started() {
	pids+=("$2")
	names+=("$1")
}

name_of() {
	local i
	for i in "${!pids[@]}"; do
		if [[ ${pids[i]} == "$1" ]]; then
			printf '%s' "${names[i]}"
			return
		fi
	done
	printf 'pid %s' "$1"
}

running() { kill -0 "$1" 2>/dev/null; }

# stop sends SIGTERM to each running PID, waits up to 10s for all of them,
# then SIGKILLs what is left. It prints each exit unless quiet is set.
stop() {
	local quiet=$1 pid left deadline st
	shift
	local -A status=()
	for pid in "$@"; do
		if running "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	deadline=$((SECONDS + 10))
	while :; do
		left=()
		for pid in "$@"; do
			running "$pid" && left+=("$pid")
		done
		((${#left[@]} == 0)) && break
		if ((SECONDS >= deadline)); then
			printf '%s: %s did not stop within 10s of SIGTERM: SIGKILL\n' "$prog" \
				"$(for pid in "${left[@]}"; do name_of "$pid"; printf ' '; done)" >&2
			# Reaped here, so that bash does not report "Killed" later.
			for pid in "${left[@]}"; do
				st=0
				{ kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || st=$?
				status[$pid]=$st
			done
			break
		fi
		nap 0.05
	done
	for pid in "$@"; do
		st=${status[$pid]:-}
		if [[ -z $st ]]; then
			st=0
			wait "$pid" 2>/dev/null || st=$?
		fi
		if [[ $quiet == 0 ]]; then
			say "$(name_of "$pid") (pid $pid) exited with status $st"
		fi
	done
}

# crash SIGKILLs each PID and reaps it at once, so that bash does not
# report "Killed" on stderr.
crash() {
	local pid
	for pid in "$@"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		wait "$pid" 2>/dev/null || true
	done
}

workdir=''
failed_log=''
finished=0

cleanup() {
	local rc=$?
	trap - EXIT
	trap '' INT TERM # a second Ctrl-C does not cut the cleanup short
	local live=() pid
	if [[ -n $child ]] && running "$child"; then
		kill -TERM "$child" 2>/dev/null || true
	fi
	for pid in "${pids[@]}"; do
		running "$pid" && live+=("$pid")
	done
	if [[ $finished == 1 && $keep == 1 ]]; then
		exit "$rc"
	fi
	if ((${#live[@]} > 0)); then
		stop 1 "${live[@]}"
	fi
	if [[ -n $workdir && -d $workdir ]]; then
		if [[ $rc != 0 && $rc != 130 && $rc != 143 ]]; then
			if [[ -n $failed_log && -f $failed_log ]]; then
				printf -- '--- last lines of %s:\n' "$failed_log" >&2
				tail -n 15 "$failed_log" | fit >&2
			fi
			printf '%s: kept %s for its logs; remove it when done\n' "$prog" "$workdir" | fit >&2
		else
			rm -rf "$workdir"
		fi
	fi
	exit "$rc"
}

# wait_for WHAT SECONDS LOG COMMAND...: poll COMMAND every 50ms until it
# succeeds; after SECONDS, fail naming LOG.
wait_for() {
	local what=$1 secs=$2 log=$3
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			failed_log=$log
			die "timed out after ${secs}s waiting for $what; see $workdir/$log"
		fi
		nap 0.05
	done
}

# await LOG ARGS...: rpc-query wait ARGS, shown with the one line it
# prints; if it times out (exit 3) or fails, fail naming LOG. rpc-query
# wait polls the registry and the master itself, and tolerates their not
# being up yet.
await() {
	local log=$1
	shift
	show rpc-query wait "$@"
	if [[ $rc != 0 ]]; then
		failed_log=$log
		die "rpc-query wait $* ended with exit status $rc; see $workdir/$log"
	fi
}

# now_ns is the wall clock in nanoseconds.
now_ns() {
	local t=${EPOCHREALTIME:-}
	if [[ -n $t ]]; then
		t=${t/[.,]/}
		printf '%s000' "$t"
	else
		date +%s%N
	fi
}

# ------------------------------------------------------------ the lab

# setup_lab PREFIX: the cleanup traps; bin, the binaries, first on PATH
# (MUSTER_BIN, or bin/ made with make build when stale); workdir, a new
# temporary directory named PREFIX.XXXXXX, made the current directory,
# with logs/ in it.
setup_lab() {
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	local b stale
	if [[ -n ${MUSTER_BIN:-} ]]; then
		bin=$(cd "$MUSTER_BIN" 2>/dev/null && pwd) || die "MUSTER_BIN=$MUSTER_BIN is not a directory"
	else
		bin=$root/bin
		stale=0
		for b in registryd masterd slaved rpc-query certgen; do
			[[ -x $bin/$b ]] || stale=1
		done
		if [[ $stale == 0 ]] && [[ -n $(find "$root" \( -name .git -o -name bin \) -prune -o \
			\( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$bin/certgen" -print -quit) ]]; then
			stale=1
		fi
		if [[ $stale == 1 ]]; then
			say "bin/ is missing or older than the sources: make build"
			make -C "$root" build >&2 || die "make build failed"
		fi
	fi
	for b in registryd masterd slaved rpc-query certgen; do
		[[ -x $bin/$b ]] || die "$bin/$b is missing: run make build (or set MUSTER_BIN)"
	done
	PATH=$bin:$PATH

	workdir=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	cd "$workdir" || exit
	mkdir logs
}

# certgen_cmd ARGS...: certgen ARGS, printed, its output in logs/certgen.log.
certgen_cmd() {
	cmdline "$(quote certgen "$@")"
	certgen "$@" >>logs/certgen.log 2>&1 || {
		failed_log=logs/certgen.log
		die "certgen $* failed; see $workdir/logs/certgen.log"
	}
}

# config EXAMPLE DEST KEY=VALUE...: conf/examples/EXAMPLE with each top-level
# "KEY = ..." line set to VALUE (TOML: strings carry their quotes), as the
# end-to-end tests write theirs.
config() {
	local src=$root/conf/examples/$1 dest=$2 kv k v
	shift 2
	cp "$src" "$dest"
	for kv in "$@"; do
		k=${kv%%=*} v=${kv#*=}
		grep -q "^$k = " "$dest" || die "$src has no line '$k = ...': the demo and the example drifted apart"
		v=${v//\\/\\\\} v=${v//&/\\&} v=${v//|/\\|}
		sed "s|^$k = .*|$k = $v|" "$dest" >"$dest.new"
		mv "$dest.new" "$dest"
	done
}

# ready_addr LOG [SKIP]: the addr of the first readiness line in LOG after
# its first SKIP lines.
ready_addr() {
	tail -n "+$((${2:-0} + 1))" "$1" | sed -n 's/.*msg=ready addr="\{0,1\}\([^" ]*\).*/\1/p' | head -n 1
}

has_ready() { [[ -n $(ready_addr "$1" "$2") ]]; }

# spawn NAME LOG BINARY ARGS...: start it in the background, its output
# appended to LOG, and print the command. last_pid is its PID, last_skip
# the lines LOG had before, for ready.
spawn() {
	local name=$1 log=$2
	shift 2
	cmdline "$(quote "$@") &"
	: >>"$log"
	last_skip=$(wc -l <"$log")
	"$@" >>"$log" 2>&1 &
	last_pid=$!
	started "$name" "$last_pid"
}

# ready NAME LOG PID SKIP [SECONDS]: wait, 20s unless told, for the
# readiness line PID writes to LOG after its first SKIP lines; fail if PID
# exits first. last_addr is the addr it logged, last_ready the line.
ready() {
	local name=$1 log=$2 pid=$3 skip=$4 secs=${5:-20}
	local deadline=$((SECONDS + secs))
	until has_ready "$log" "$skip"; do
		if ! running "$pid"; then
			failed_log=$log
			die "$name exited before it was ready; see $workdir/$log"
		fi
		if ((SECONDS >= deadline)); then
			failed_log=$log
			die "timed out after ${secs}s waiting for $name to be ready; see $workdir/$log"
		fi
		nap 0.05
	done
	last_addr=$(ready_addr "$log" "$skip")
	last_ready=$(tail -n "+$((skip + 1))" "$log" | grep -m 1 'msg=ready')
}

# start_daemon NAME LOG BINARY ARGS...: spawn it and wait for its readiness
# line. last_pid is its PID, last_addr the addr it logged.
start_daemon() {
	local name=$1 log=$2
	spawn "$@"
	ready "$name" "$log" "$last_pid" "$last_skip"
}

# field NAME: the value of "NAME": ... on each line of stdin, in order.
field() { sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p"; }

# event_field NAME LINE: a field of one event of rpc-query watch --json.
event_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$2"; }

# finish checks that no process the demo started is left running, prints
# the summary lines, and in --ci mode the PIDs line the tests read; $1 is
# the name the lines begin with (demo, demo-ha).
finish() {
	local pid line
	for pid in "${pids[@]}"; do
		if running "$pid"; then
			die "$(name_of "$pid") (pid $pid) is still running"
		fi
	done
	good "no process the demo started is left running"

	heading "summary"
	for line in "${summary[@]}"; do
		say "$line"
	done
	if [[ $ci == 1 ]]; then
		say "$1: pids ${pids[*]}"
	fi
	say "$1: all processes stopped"
	finished=1
}

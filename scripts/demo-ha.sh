#!/usr/bin/env bash
# The high-availability demo: three registries, three masters in one raft
# group and three slaves on 127.0.0.1. The leader is SIGKILLed and another
# takes over with nobody declared dead; then a slave dies during a failover
# and is still reported dead. Run it with --help for the options.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/demo-ha.sh [--step] [--keep] [--ci]

Starts three registries, three masters (one raft group) and three slaves
on 127.0.0.1 in a temporary directory, with certificates made for the
occasion, and walks through a failover: the leader is SIGKILLed, another
master takes over, no slave is declared dead, a watcher's events go on
with no gap, and the old leader comes back as a follower. Then the new
leader and a slave are SIGKILLed together, and the slave is still reported
dead. Each command is printed before its output.

  --step   pause before each step until Enter is pressed (needs a terminal)
  --keep   leave the cluster running at the end, and print how to explore
           it and how to stop it
  --ci     for tests: no pauses, no colour, and the PIDs of every process
           the demo started after the closing summary. Without a terminal
           on stdout there is no colour either.
  --help   this text

environment:
  MUSTER_BIN  a directory holding registryd, masterd, slaved, rpc-query and
              certgen, used as they are; by default bin/ in the repository,
              made with 'make build' when missing or older than the sources
  NO_COLOR    when set, no colour even on a terminal

Only loopback is used. The kernel picks every port but the masters' raft
ports, which each master must know of the others before they start: those
are found free (no socket on them) below the ephemeral range. On exit,
even on Ctrl-C, every process the demo started is stopped and the
temporary directory removed (kept, with its logs, if the demo failed).
EOF
}

prog=demo-ha.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
parse_args "$@"
setup_lab muster-demo-ha

masters=(m1 m2 m3)
nodes=(node-1 node-2 node-3)
declare -A master_pid=() master_addr=() raft_addr=() slave_pid=() skips=()

# free_port sets port to a TCP port of 127.0.0.1 that no socket uses (none
# in /proc/net/tcp or tcp6), below the ephemeral range so that the kernel
# does not hand it to a connection meanwhile, and not picked before.
picked=' '
free_port() {
	local lo hi p hex i
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
	hi=$((lo < 32000 ? lo : 32000))
	((hi > 20000)) || die "the ephemeral port range starts at $lo: no room below it for the raft ports"
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % (hi - 20000)))
		[[ $picked == *" $p "* ]] && continue
		printf -v hex ':%04X' "$p"
		if ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
			awk -v h="$hex" 'substr($2, length($2) - 4) == h { f = 1 } END { exit !f }'; then
			picked+="$p "
			port=$p
			return
		fi
	done
	die "no free port found between 20000 and $hi"
}

# role_of LINE: the role= of a master's ready line.
role_of() { sed -n 's/.* role=\([a-z]*\).*/\1/p' <<<"$1"; }

# start_master M: start masterd M on its config and wait for its ready
# line, which it logs once it leads or knows who does.
start_master() {
	spawn "masterd $1" "logs/masterd-$1.log" masterd --config "master-$1.toml"
	master_pid[$1]=$last_pid
	ready "masterd $1" "logs/masterd-$1.log" "$last_pid" "$last_skip" 60
	master_addr[$1]=$last_addr
	last_role=$(role_of "$last_ready")
	say "masterd $1 (pid ${master_pid[$1]}) ready at $last_addr as $last_role"
}

# name_at ADDR: the master listening at ADDR.
name_at() {
	local m
	for m in "${masters[@]}"; do
		[[ ${master_addr[$m]} != "$1" ]] || { printf '%s' "$m"; return; }
	done
	printf '%s' "$1"
}

start_slave() {
	start_daemon "slaved $1" "logs/slaved-$1.log" slaved --config "slave-$1.toml"
	slave_pid[$1]=$last_pid
	say "slaved $1 (pid $last_pid) joined $(name_at "$last_addr") at $last_addr"
}

# leader_is_new [NOT...]: rpc-query masters names a leader, not one of
# NOT; leader is then its name and term its term.
leader_is_new() {
	local l n
	rpcq masters --json --timeout 3s || true
	l=$(field leader <<<"$qout" | head -n 1)
	[[ -n $l ]] || return 1
	for n in "$@"; do
		[[ $l != "$n" ]] || return 1
	done
	leader=$l
	term=$(field term <<<"$qout" | head -n 1)
}

# heard_since NS NODE...: the leader has each NODE alive, with a heartbeat
# accepted after NS (ns since the epoch).
heard_since() {
	local since=$1 n hb
	shift
	rpcq members --json --master "${master_addr[$leader]}" --timeout 3s || return 1
	for n in "$@"; do
		hb=$(awk -v n="$n" '
			/"name": / { cur = ($2 == "\"" n "\",") }
			cur && /"status": / && $2 != "\"alive\"," { exit }
			cur && /"last_heartbeat": / { gsub(/[",]/, "", $2); print $2; exit }' <<<"$qout")
		[[ -n $hb ]] && (($(date -d "$hb" +%s%N) > since)) || return 1
	done
}

# event_ms LINE NS: the event's timestamp, in ms after NS.
event_ms() {
	local ns
	ns=$(date -d "$(event_field at "$1")" +%s%N)
	printf '%s' $(((ns - $2) / 1000000))
}

# events_after VERSION NS: print the watcher's events after VERSION, with
# their time after NS.
events_after() {
	local ev v
	while IFS= read -r ev; do
		[[ $ev == *'"type":"event"'* ]] || continue
		v=$(event_field version "$ev")
		((v > $1)) || continue
		printf '  %-9s v%-3s %-7s %-8s %s\n' "+$(event_ms "$ev" "$2") ms" "$v" \
			"$(event_field node "$ev")" "$(event_field kind "$ev")" "$(event_field reason "$ev")" |
			sed 's/ *$//' | fit
	done <watch.jsonl
}

# last_version: the version of the watcher's last line.
last_version() { event_field version "$(tail -n 1 watch.jsonl)"; }

# falsely_judged [MAY_DIE...]: the watcher's suspect and dead events, one
# a line, of any node but MAY_DIE.
falsely_judged() {
	local ev n
	while IFS= read -r ev; do
		n=$(event_field node "$ev")
		[[ " $* " == *" $n "* ]] || printf '%s\n' "$ev"
	done < <(grep -E '"kind":"(suspect|dead)"' watch.jsonl || true)
}

# ============================================================== the demo

summary=()

say "muster HA demo: three registries, three masters and three slaves on"
say "127.0.0.1"
say "working in $workdir"
if [[ $keep == 0 ]]; then
	note "(it is removed at the end; --keep leaves the cluster running there)"
fi

heading "setup: a CA for cluster lab and a certificate for every node"
certgen_cmd ca --dir certs --cluster lab
for i in 1 2 3; do
	certgen_cmd issue --dir certs --role registry --name "reg$i" --host 127.0.0.1
	certgen_cmd issue --dir certs --role master --name "m$i" --host 127.0.0.1
done
for n in "${nodes[@]}"; do
	certgen_cmd issue --dir certs --role slave --name "$n"
done
certgen_cmd issue --dir certs --role admin --name ops
note "A master's certificate name is its name in the raft group: m1, m2, m3."

heading "three registries: one per master host"
note "Configs are conf/examples/*.toml with the listen, socket, registries,"
note "node, cert and key lines rewritten; port 0 lets the kernel pick."
regs=()
for i in 1 2 3; do
	config registry.toml "registry-reg$i.toml" 'listen="127.0.0.1:0"' \
		"socket=\"run/registry-reg$i.sock\"" "state_dir=\"state/reg$i\"" \
		"cert=\"certs/registry-reg$i.pem\"" "key=\"certs/registry-reg$i-key.pem\""
	start_daemon "registryd reg$i" "logs/registryd-reg$i.log" registryd --config "registry-reg$i.toml"
	say "registryd reg$i (pid $last_pid) ready at $last_addr"
	regs+=("$last_addr")
done
reg_list=$(printf '"%s", ' "${regs[@]}")
reg_list="[${reg_list%, }]"

heading "three masters: one raft group, which elects a leader"
peers=()
for m in "${masters[@]}"; do
	free_port
	raft_addr[$m]=127.0.0.1:$port
	peers+=("\"$m=127.0.0.1:$port\"")
done
peer_list=$(printf '%s, ' "${peers[@]}")
peer_list="[${peer_list%, }]"
for m in "${masters[@]}"; do
	config master.toml "master-$m.toml" 'listen="127.0.0.1:0"' "registries=$reg_list" \
		"state_dir=\"state/$m\"" "cert=\"certs/master-$m.pem\"" "key=\"certs/master-$m-key.pem\""
	printf '\n[raft]\nlisten = "%s"\npeers = %s\n' "${raft_addr[$m]}" "$peer_list" >>"master-$m.toml"
done
note "Each master's config lists the three registries, and ends with the"
note "group: its own raft address, and every master's. Raft ports must be"
note "known before the masters start, so the demo found three free ones."
note "ClusterService's port is still the kernel's pick: a master tells the"
note "others its address once it is up."
show grep '^registries' master-m1.toml
# shellcheck disable=SC2016 # sed's $, not the shell's
show sed -n '/^\[raft\]/,$p' master-m1.toml
note "The three start together: none is ready until a leader is elected."
for m in "${masters[@]}"; do
	spawn "masterd $m" "logs/masterd-$m.log" masterd --config "master-$m.toml"
	master_pid[$m]=$last_pid
	skips[$m]=$last_skip
done
for m in "${masters[@]}"; do
	ready "masterd $m" "logs/masterd-$m.log" "${master_pid[$m]}" "${skips[$m]}" 60
	master_addr[$m]=$last_addr
	say "masterd $m (pid ${master_pid[$m]}) ready at $last_addr as $(role_of "$last_ready")"
done

MUSTER_REGISTRY=$(
	IFS=,
	printf '%s' "${regs[*]}"
)
export MUSTER_REGISTRY MUSTER_CA=certs/ca.pem
export MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem
note "rpc-query asks the registries in turn, over TLS with the admin"
note "certificate:"
cmdline "export MUSTER_REGISTRY=$MUSTER_REGISTRY"
cmdline "export MUSTER_CA=certs/ca.pem"
cmdline "export MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem"
await logs/masterd-m1.log service ClusterService/lab --timeout 30s
wait_for "rpc-query masters to name a leader" 30 logs/masterd-m1.log leader_is_new
show rpc-query masters
[[ $rc == 0 ]] || die "rpc-query masters failed with exit status $rc"
first=$leader first_term=$term
grep -q "^$first .* leader " <<<"$out" || die "rpc-query masters does not show $first as the leader"
[[ $(grep -c ' follower ' <<<"$out") == 2 ]] || die "rpc-query masters does not show two followers"
note "Only the leader serves slaves, judges them and registers"
note "ClusterService/lab; the followers hold a replicated copy of the roll"
note "and its events, and send slaves to the leader."
summary+=("$first elected leader of m1, m2, m3 (term $first_term); two followers")

heading "a watcher follows the events"
cmdline "rpc-query watch --json >watch.jsonl 2>logs/watch.log &"
rpc-query watch --json >watch.jsonl 2>logs/watch.log &
watch_pid=$!
started "rpc-query watch" "$watch_pid"
wait_for "rpc-query watch to start" 10 logs/watch.log grep -q '"type":"snapshot"' watch.jsonl
snap_version=$(event_field version "$(head -n 1 watch.jsonl)")
note "It watches the master the registries name, the leader. When that"
note "master is lost it finds the next one there and goes on after the last"
note "version it saw: an event's version is raft's, the same on every"
note "master. It starts with the roll, empty, at version $snap_version."

heading "three slaves join the leader"
for n in "${nodes[@]}"; do
	config slave.toml "slave-$n.toml" "node=\"$n\"" "registries=$reg_list" \
		"socket=\"run/slaved-$n.sock\"" "cert=\"certs/slave-$n.pem\"" \
		"key=\"certs/slave-$n-key.pem\""
done
note "A slave's config lists the three registries; it asks them in turn."
note "Each master it joins tells it the masters, leader first, to try"
note "before the registries when its master is lost."
for n in "${nodes[@]}"; do
	start_slave "$n"
done
await "logs/masterd-$first.log" members --alive 3 --timeout 30s
joined() { [[ $(grep -c '"kind":"joined"' watch.jsonl) == 3 ]]; }
wait_for "the watcher to see three joins" 10 logs/watch.log joined
show rpc-query members
grep -q '^3 members: 3 alive$' <<<"$out" || die "rpc-query members does not say 3 alive"
say "the watcher's events (from watch.jsonl):"
events_after "$snap_version" "$(date -d "$(event_field at "$(grep -m 1 '"type":"event"' watch.jsonl)")" +%s%N)"
summary+=("3 slaves joined $first")

heading "the leader is SIGKILLed: another takes over, nobody is declared dead"
v_before=$(last_version) v_kill1=$(last_version)
kill1_ns=$(now_ns)
crash "${master_pid[$first]}"
cmdline "kill -9 ${master_pid[$first]}      # masterd $first, the leader"
wait_for "another master to lead" 30 "logs/masterd-$first.log" leader_is_new "$first"
elect_ms=$((($(now_ns) - kill1_ns) / 1000000))
second=$leader second_term=$term
wait_for "$second to hear every slave" 30 "logs/masterd-$second.log" heard_since "$kill1_ns" "${nodes[@]}"
heard_ms=$((($(now_ns) - kill1_ns) / 1000000))
good "$second leads (term $second_term) ${elect_ms} ms after the kill; it had a heartbeat"
good "from every slave ${heard_ms} ms after it (both polled)"
show grep -o 'this master leads the group[^"]*' "logs/masterd-$second.log"
note "Liveness is not replicated: the new leader knows the roll, but not"
note "when each slave last spoke. So a slave that was up is 'unknown' until"
note "it heartbeats again, and dead only if it does not within the grace."
# down_shown: rpc-query masters names the new leader and first unreachable.
down_shown() {
	local st=0
	rpcq masters || st=$?
	[[ $st == 4 ]] && grep -q "^$first .* unreachable" <<<"$qout" && grep -q "^$second .* leader " <<<"$qout"
}
wait_for "rpc-query masters to show $first unreachable" 15 "logs/masterd-$second.log" down_shown
show rpc-query masters
[[ $rc == 4 ]] || die "rpc-query masters exited $rc with $first down; want 4 (a master does not answer)"
grep -q "^$first .* unreachable" <<<"$out" || die "rpc-query masters does not show $first unreachable"
grep -q "^$second .* leader " <<<"$out" || die "rpc-query masters does not show $second as the leader"
note "rpc-query masters exits 4 when a master does not answer. The group"
note "goes on without $first: two masters of three are a majority."
show rpc-query members
grep -q '^3 members: 3 alive$' <<<"$out" || die "rpc-query members on $second does not say 3 alive"
wait_for "the watcher to reconnect to $second" 30 logs/watch.log \
	grep -qF "reconnected to the master at ${master_addr[$second]}" logs/watch.log
say "The watcher found $second (what it said, on stderr):"
show cat logs/watch.log
bad=$(falsely_judged)
[[ -z $bad ]] || die "a live slave was judged after the failover: $bad"
v_after1=$(last_version)
if [[ $v_after1 == "$v_before" ]]; then
	good "no event since the kill: no slave suspect or dead; the roll is at v$v_before still"
	note "A slave that joins the new leader with the incarnation it had is"
	note "nothing new to the roll, and writes nothing."
else
	say "the watcher's events since the kill (from watch.jsonl):"
	events_after "$v_before" "$kill1_ns"
	good "no slave suspect or dead"
fi
view_names() {
	rpcq view --slave-socket run/slaved-node-1.sock && grep -q "master spiffe://lab/master/$second at " <<<"$qout"
}
wait_for "node-1's view to name $second its master" 15 logs/slaved-node-1.log view_names
say "node-1's own view: its master, and the masters it would try next:"
show rpc-query view --slave-socket run/slaved-node-1.sock
summary+=("$first SIGKILLed: $second led in $elect_ms ms, heard every slave in $heard_ms ms")
summary+=("no slave suspect or dead")

heading "the old leader comes back as a follower"
start_master "$first"
[[ $last_role == follower ]] || die "masterd $first came back as $last_role, not as a follower"
back() { leader_is_new "$first" && [[ $(grep -c '"state": "follower"' <<<"$qout") == 2 ]]; }
wait_for "rpc-query masters to show $first a follower" 30 "logs/masterd-$first.log" back
show rpc-query masters
[[ $rc == 0 ]] || die "rpc-query masters failed with exit status $rc"
grep -q "^$first .* follower " <<<"$out" || die "rpc-query masters does not show $first as a follower"
# The leader now: $second, unless an election moved it meanwhile.
lead2=$leader
note "Its state_dir kept its raft log: it caught up from $lead2, and has the"
note "roll and every event again."
summary+=("$first restarted: a follower of $lead2")

heading "a slave killed during a failover is still reported dead"
victim=node-3
v_before=$(last_version) v_kill2=$(last_version)
kill2_ns=$(now_ns)
crash "${master_pid[$lead2]}" "${slave_pid[$victim]}"
cmdline "kill -9 ${master_pid[$lead2]} ${slave_pid[$victim]}      # masterd $lead2, the leader; slaved $victim"
wait_for "another master to lead" 30 "logs/masterd-$lead2.log" leader_is_new "$lead2"
third=$leader
wait_for "$third to hear node-1 and node-2" 30 "logs/masterd-$third.log" heard_since "$kill2_ns" node-1 node-2
say "$third leads (term $term); node-1 and node-2 are back. $victim cannot be:"
await "logs/masterd-$third.log" member "$victim" --for dead --timeout 60s
wait_for "the watcher to see $victim dead" 30 logs/watch.log grep -q "\"kind\":\"dead\",\"node\":\"$victim\"" watch.jsonl
say "the watcher's events since the kill (from watch.jsonl):"
events_after "$v_before" "$kill2_ns"
dead_ev=$(grep "\"kind\":\"dead\",\"node\":\"$victim\"" watch.jsonl | head -n 1)
dead_ms=$(event_ms "$dead_ev" "$kill2_ns")
good "$victim declared dead ${dead_ms} ms after kill -9, by $third"
note "A slave that was up is given the failover grace to find the new"
note "leader, so dying during a failover costs detection time, never a"
note "false death: $victim is dead once the grace is over."
bad=$(falsely_judged "$victim")
[[ -z $bad ]] || die "a live slave was judged after the second failover: $bad"
good "no suspect or dead event for node-1 or node-2"
show rpc-query members
grep -q "^$victim  *127\.0\.0\.1:[0-9]*  *dead " <<<"$out" || die "rpc-query members does not show $victim dead"
summary+=("$lead2 and $victim SIGKILLed: $third led; $victim dead in $dead_ms ms")

heading "the watcher's events: no gap, no repeat, no reset"
mapfile -t versions < <(grep '"type":"event"' watch.jsonl | sed -n 's/.*"version":\([0-9]*\).*/\1/p')
((${#versions[@]} > 0)) || die "the watcher saw no events"
expect=$snap_version
for v in "${versions[@]}"; do
	expect=$((expect + 1))
	[[ $v == "$expect" ]] || die "the watcher saw version $v where $expect was due; see $workdir/watch.jsonl"
done
! grep -q '"type":"reset"' watch.jsonl || die "the watcher was reset; see $workdir/watch.jsonl"
say "watch.jsonl: the roll at v$snap_version, then ${#versions[@]} events, each the one before plus"
say "one, through two failovers:"
mapfile -t went < <(sed -n 's/^rpc-query: reconnected to the master at //p' logs/watch.log)
((${#went[@]} >= 2)) || die "the watcher reconnected ${#went[@]} times, not once per failover; see $workdir/logs/watch.log"
went1=$(name_at "${went[0]}") went2=$(name_at "${went[-1]}")
from=$first
cut1=0 cut2=0
while IFS= read -r ev; do
	[[ $ev == *'"type":"event"'* ]] || continue
	v=$(event_field version "$ev")
	if ((v > v_kill1 && !cut1)); then
		say "  --  $first SIGKILLed: the watcher goes on at $went1"
		cut1=1 from=$went1
	fi
	if ((v > v_kill2 && !cut2)); then
		((cut1)) || say "  --  $first SIGKILLed: the watcher goes on at $went1"
		say "  --  $lead2 SIGKILLed: the watcher goes on at $went2"
		cut1=1 cut2=1 from=$went2
	fi
	printf '  v%-3s %-7s %-8s from %s\n' "$v" "$(event_field node "$ev")" \
		"$(event_field kind "$ev")" "$from" | fit
done <watch.jsonl
show grep reconnected logs/watch.log
good "no version missing, none twice, no reset"
summary+=("the watcher: v${versions[0]} to v${versions[-1]} with no gap, no repeat, no reset")

# ------------------------------------------------------------------ end

stop 1 "$watch_pid"
if [[ $keep == 1 ]]; then
	heading "the cluster is left running (--keep)"
	start_master "$lead2"
	start_slave "$victim"
	say "$lead2 and $victim are started again, so all three masters and all"
	say "three slaves are up."
	say ""
	say "To explore it from another shell:"
	say "  d=$workdir"
	say "  export PATH=$bin:\$PATH"
	say "  export MUSTER_REGISTRY=$MUSTER_REGISTRY"
	say "  export MUSTER_CA=\$d/certs/ca.pem"
	say "  export MUSTER_CERT=\$d/certs/admin-ops.pem"
	say "  export MUSTER_KEY=\$d/certs/admin-ops-key.pem"
	say "  rpc-query masters"
	say "  rpc-query members"
	say "  rpc-query watch                 # until Ctrl-C"
	say "  rpc-query view --slave-socket \$d/run/slaved-node-1.sock"
	say "  less \$d/logs/masterd-$third.log    # every daemon logs to \$d/logs/"
	say "Running:"
	for i in "${!pids[@]}"; do
		if running "${pids[i]}"; then
			say "  pid ${pids[i]}: ${names[i]}"
		fi
	done
	say "To kill the leader again: rpc-query masters names it, and the list"
	say "above its PID. To stop them all and remove the directory:"
	reg_pids=()
	for i in "${!pids[@]}"; do
		[[ ${names[i]} == registryd* ]] && reg_pids+=("${pids[i]}")
	done
	say "  kill ${slave_pid[*]}; sleep 1; kill ${master_pid[*]}"
	say "  kill ${reg_pids[*]}"
	say "  rm -rf $workdir"
	finished=1
	exit 0
fi

heading "stop: every process the demo started"
# of NAME-PREFIX: the running PIDs of that kind.
of() {
	local i
	for i in "${!pids[@]}"; do
		if [[ ${names[i]} == "$1"* ]] && running "${pids[i]}"; then
			printf '%s\n' "${pids[i]}"
		fi
	done
}
mapfile -t slaves < <(of slaved)
mapfile -t up_masters < <(of masterd)
mapfile -t up_regs < <(of registryd)
note "The slaves first, so that they leave while the leader is up; then the"
note "masters, together; the registries last."
cmdline "kill -TERM ${slaves[*]}"
stop 0 "${slaves[@]}"
cmdline "kill -TERM ${up_masters[*]}"
stop 0 "${up_masters[@]}"
cmdline "kill -TERM ${up_regs[*]}"
stop 0 "${up_regs[@]}"
finish demo-ha

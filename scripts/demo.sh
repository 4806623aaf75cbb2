#!/usr/bin/env bash
# The lab demo: a registry, a master and three slaves on 127.0.0.1, walked
# through lab 1's requirements a-f. Run it with --help for the options.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: scripts/demo.sh [--step] [--keep] [--ci]

Starts a registry, a master and three slaves on 127.0.0.1 in a temporary
directory, with certificates made for the occasion, and walks through the
protocol: discovery, heartbeats and reports, a crash, a rejoin, two refused
impostors and a graceful leave. Each command is printed before its output;
each step's heading names the lab's requirements (a-f) it shows.

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

Only loopback is used, and every port is picked by the kernel. On exit,
even on Ctrl-C, every process the demo started is stopped and the
temporary directory removed (kept, with its logs, if the demo failed).
EOF
}

prog=demo.sh
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$root/scripts/lib.sh"
parse_args "$@"
setup_lab muster-demo

declare -A slave_pid=()

start_slave() {
	start_daemon "slaved $1" "logs/slaved-$1.log" slaved --config "slave-$1.toml"
	slave_pid[$1]=$last_pid
	say "slaved $1 (pid $last_pid) joined the master at $last_addr"
}

# ============================================================== the demo

summary=()

say "muster lab demo: a registry, a master and three slaves on 127.0.0.1"
say "working in $workdir"
if [[ $keep == 0 ]]; then
	note "(it is removed at the end; --keep leaves the cluster running there)"
fi

heading "setup: a CA for cluster lab and a certificate for every node"
certgen_cmd ca --dir certs --cluster lab
certgen_cmd issue --dir certs --role registry --name reg1 --host 127.0.0.1
certgen_cmd issue --dir certs --role master --name m1 --host 127.0.0.1
for n in node-1 node-2 node-3; do
	certgen_cmd issue --dir certs --role slave --name "$n"
done
certgen_cmd issue --dir certs --role admin --name ops
note "Each certificate names one identity, spiffe://lab/ROLE/NAME, signed by"
note "certs/ca.pem. What certgen wrote is in logs/certgen.log."

heading "a. the registry, then a master; each slave finds it there"
config registry.toml registry.toml 'listen="127.0.0.1:0"' 'socket="run/registry.sock"' \
	'state_dir="state/registry"'
note "Configs are conf/examples/*.toml with the listen, socket, registry,"
note "node, cert and key lines rewritten; port 0 lets the kernel pick."
start_daemon registryd logs/registryd.log registryd --config registry.toml
reg_pid=$last_pid
reg_addr=$last_addr
say "registryd (pid $reg_pid) ready at $reg_addr and on run/registry.sock"

config master.toml master.toml 'listen="127.0.0.1:0"' "registry=\"$reg_addr\"" \
	'state_dir="state/master"'
start_daemon masterd logs/masterd.log masterd --config master.toml
master_pid=$last_pid
master_addr=$last_addr
dash_url=$(sed -n 's/.*msg=ready .*http="\{0,1\}\(http:[^" ]*\).*/\1/p' logs/masterd.log | head -n 1)
export MUSTER_REGISTRY_SOCKET=run/registry.sock MUSTER_CA=certs/ca.pem
export MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem
note "rpc-query reads the registry over its local socket, and talks to the"
note "master with the admin certificate:"
cmdline "export MUSTER_REGISTRY_SOCKET=run/registry.sock MUSTER_CA=certs/ca.pem"
cmdline "export MUSTER_CERT=certs/admin-ops.pem MUSTER_KEY=certs/admin-ops-key.pem"
await logs/masterd.log service ClusterService/lab --timeout 20s
say "masterd (pid $master_pid) ready at $master_addr, registered as"
say "ClusterService/lab"

for n in node-1 node-2 node-3; do
	config slave.toml "slave-$n.toml" "node=\"$n\"" "registry=\"$reg_addr\"" \
		"socket=\"run/slaved-$n.sock\"" "cert=\"certs/slave-$n.pem\"" \
		"key=\"certs/slave-$n-key.pem\""
done
note "A slave's config names only the registry; it looks up the master by"
note "name, as an RPC client asks rpcbind (the portmapper) for a program."
for n in node-1 node-2 node-3; do
	start_slave "$n"
done
await logs/masterd.log members --alive 3 --timeout 20s
say ""
show rpc-query services
[[ $rc == 0 ]] || die "rpc-query services failed"
grep -q '^ClusterService  *lab  *[0-9]  *127\.0\.0\.1:' <<<"$out" ||
	die "rpc-query services does not list ClusterService/lab"
summary+=("a. ClusterService/lab in the registry; 3 slaves found the master there")

heading "b, c. slaves send heartbeats and reports; the master keeps the roll"
note "Each slave sends a heartbeat every second and a resource report every"
note "5s. The master only listens: it never polls, so its work grows with"
note "what the slaves send, and a slow or dead slave cannot hold it up."

# all_reported: three members, all alive, each with a report.
all_reported() {
	rpcq members --json || return 1
	[[ $(grep -c '"status": "alive"' <<<"$qout") == 3 && $(grep -c '"sampled_at"' <<<"$qout") == 3 ]]
}
wait_for "every slave's first report" 20 logs/masterd.log all_reported
rpcq members --json
first_samples=$(field sampled_at <<<"$qout")
# second_reports: every slave has reported again since first_samples.
second_reports() {
	local now
	rpcq members --json || return 1
	now=$(field sampled_at <<<"$qout")
	[[ $(wc -l <<<"$now") == 3 ]] || return 1
	! grep -qxF -f <(printf '%s\n' "$first_samples") <<<"$now"
}
note "Waiting for every slave's second report: CPU% is measured between two"
note "samples, and the first, sent as the slave joins, covers a few ms."
wait_for "every slave's second report" 20 logs/masterd.log second_reports
show rpc-query members
[[ $rc == 0 ]] || die "rpc-query members failed"
grep -q '^3 members: 3 alive$' <<<"$out" || die "rpc-query members does not say 3 alive"
summary+=("b. 3 members: 3 alive, each heartbeating, each with a resource report")

heading "c. the master detects a crash and tells the others"
cmdline "rpc-query watch --json >watch.jsonl &"
rpc-query watch --json >watch.jsonl 2>logs/watch.log &
watch_pid=$!
started "rpc-query watch" "$watch_pid"
wait_for "rpc-query watch to start" 10 logs/watch.log grep -q '"type":"snapshot"' watch.jsonl
note "(the master's events, kept to time them; started before the kill)"

rpcq members node-2 --json
old_inc=$(field incarnation <<<"$qout")
victim=${slave_pid[node-2]}
kill_ns=$(now_ns)
crash "$victim"
cmdline "kill -9 $victim      # slaved node-2"

await logs/masterd.log member node-2 --for dead --timeout 45s
wait_for "rpc-query watch to print node-2's dead event" 5 logs/watch.log \
	grep -q '"kind":"dead","node":"node-2"' watch.jsonl
view_dead() {
	rpcq view --status dead --slave-socket run/slaved-node-1.sock && grep -q '^node-2 ' <<<"$qout"
}
wait_for "node-1's view to show node-2 dead" 15 logs/slaved-node-1.log view_dead
view_ns=$(now_ns)

# event_ms LINE: the event's timestamp, in ms after the kill.
event_ms() {
	local at ns
	at=$(event_field at "$1")
	ns=$(date -d "$at" +%s%N)
	printf '%s' $(((ns - kill_ns) / 1000000))
}
say "the master's events since the kill (from watch.jsonl):"
while IFS= read -r ev; do
	[[ $ev == *'"type":"event"'* && $ev == *'"node":"node-2"'* ]] || continue
	printf '  %-9s v%-3s node-2  %-8s %s\n' "+$(event_ms "$ev") ms" "$(event_field version "$ev")" \
		"$(event_field kind "$ev")" "$(event_field reason "$ev")" | fit
done <watch.jsonl
dead_ev=$(grep '"kind":"dead","node":"node-2"' watch.jsonl | head -n 1)
dead_ms=$(event_ms "$dead_ev")
good "node-2 declared dead ${dead_ms} ms after kill -9"
note "(measured from this script's clock just before the kill to the"
note "timestamp on the master's dead event; same host, same clock)"
stalls=$(grep -o 'the master itself stalled for [0-9.]*[mµn]*s' logs/masterd.log || true)
if ((dead_ms > 1500)) && [[ -n $stalls ]]; then
	note "Late: the master logged $(wc -l <<<"$stalls") stalls of its own detector loop (a busy"
	note "machine), and after each it holds every verdict for max_dead (5s),"
	note "whatever the event's reason says. The last, from logs/masterd.log:"
	note "$(tail -n 3 <<<"$stalls" | sed 's/^/  /')"
fi
say "node-1's view showed it $(((view_ns - kill_ns) / 1000000)) ms after the kill (polled every 50ms):"
show rpc-query view --slave-socket run/slaved-node-1.sock
grep -q '^node-2  *127\.0\.0\.1:[0-9]*  *dead ' <<<"$out" || die "node-1's view does not show node-2 dead"
note "A slave learns who is in the group and their status, not the others'"
note "heartbeats and figures: only its own row has them."
summary+=("c. node-2 declared dead $dead_ms ms after kill -9 (master's event time)")
summary+=("c. node-1's view: node-2 dead")

heading "f. the crashed slave restarts and rejoins with a new incarnation"
start_slave node-2
# Dead to alive only by a rejoin: the incarnation is checked below.
await logs/masterd.log member node-2 --for alive --timeout 15s
show rpc-query members
note "(node-2's figures are from its first report, sent as it joined)"
rpcq members node-2 --json
new_inc=$(field incarnation <<<"$qout")
say "node-2's incarnation (rpc-query members node-2 shows it in full):"
say "  before the crash: $old_inc"
say "  after the rejoin: $new_inc"
if [[ ${#new_inc} -gt ${#old_inc} || (${#new_inc} -eq ${#old_inc} && $new_inc > $old_inc) ]]; then
	good "Higher: it is the slave's start time in ns. The master knows a new"
	good "process replaced the old one, and refuses what the old one may send."
else
	die "node-2 rejoined with incarnation $new_inc, not higher than $old_inc"
fi
wait_for "the master's rejoined event for node-2" 5 logs/masterd.log \
	grep -q '"kind":"rejoined","node":"node-2"' watch.jsonl
rejoin_ev=$(grep '"kind":"rejoined","node":"node-2"' watch.jsonl | head -n 1)
say "the master's event: v$(event_field version "$rejoin_ev") node-2 rejoined"
say "  ($(event_field reason "$rejoin_ev"))"
summary+=("f. node-2 rejoined: incarnation $old_inc -> $new_inc")

heading "e. mutual TLS: a slave cannot pass itself off as another node"
note "rpc-query heartbeat sends one Heartbeat as a node with the certificate"
note "given: here node-1's certificate, claiming to be node-2."
show rpc-query heartbeat node-2 --cert certs/slave-node-1.pem --key certs/slave-node-1-key.pem
[[ $rc == 1 && $out == *"heartbeat for node-2 refused: permission denied"* ]] ||
	die "the master did not refuse node-1's certificate speaking as node-2"
wait_for "the master to log the impersonation attempt" 5 logs/masterd.log \
	grep -q 'impersonation attempt: spiffe://lab/slave/node-1 sent Heartbeat as node-2' logs/masterd.log
show grep 'impersonation attempt' logs/masterd.log
summary+=("e. node-1's certificate as node-2: refused (permission denied)")
summary+=("e. the master logged: impersonation attempt")

heading "e. mutual TLS: a certificate signed by another CA is refused"
note "An impostor makes its own CA and an admin certificate with the same"
note "name, spiffe://lab/admin/ops. certs/ca.pem is public, so it can trust"
note "our master; rpc-query wants its certificate signed by a CA in --ca,"
note "so the impostor's bundle holds both CAs:"
certgen_cmd ca --dir foreign --cluster lab
certgen_cmd issue --dir foreign --role admin --name ops
cmdline "cat certs/ca.pem foreign/ca.pem >foreign/bundle.pem"
cat certs/ca.pem foreign/ca.pem >foreign/bundle.pem
show rpc-query members --ca foreign/bundle.pem --cert foreign/admin-ops.pem \
	--key foreign/admin-ops-key.pem
[[ $rc == 1 ]] || die "a certificate from another CA was not refused"
if [[ $out != *"tls:"* ]]; then
	note "(In TLS 1.3 the client finishes its handshake first and hears of the"
	note "refusal only as the master hangs up: hence no TLS reason above.)"
fi
wait_for "the master to log the refused connection" 5 logs/masterd.log \
	grep -q 'refused connection' logs/masterd.log
show grep 'refused connection' logs/masterd.log
summary+=("e. a certificate from another CA: refused")

heading "d. a graceful leave is not a crash"
leaver=${slave_pid[node-3]}
cmdline "kill -TERM $leaver      # slaved node-3"
stop 0 "$leaver"
await logs/masterd.log member node-3 --for left --timeout 10s
show rpc-query members
grep -q '^node-3  *127\.0\.0\.1:[0-9]*  *left ' <<<"$out" || die "rpc-query members does not show node-3 left"
if grep -q 'node-3 is now dead' logs/masterd.log; then
	die "node-3 left gracefully but the master declared it dead; see $workdir/logs/masterd.log"
fi
left_ev=$(grep '"kind":"left","node":"node-3"' watch.jsonl | head -n 1 || true)
if [[ -n $left_ev ]]; then
	say "the master's event: v$(event_field version "$left_ev") node-3 left ($(event_field reason "$left_ev"))"
fi
note "A slave stopped with SIGTERM calls Leave first, so the others learn it"
note "went on purpose; a crash (kill -9) only shows as a closed connection."
summary+=("d. node-3 left (not dead)")

# ------------------------------------------------------------------ end

stop 1 "$watch_pid"
if [[ $keep == 1 ]]; then
	heading "the cluster is left running (--keep)"
	start_slave node-3
	say "node-3 is started again, so all three slaves are up."
	say ""
	say "To explore it from another shell:"
	say "  d=$workdir"
	say "  export PATH=$bin:\$PATH"
	say "  export MUSTER_REGISTRY_SOCKET=\$d/run/registry.sock"
	say "  export MUSTER_CA=\$d/certs/ca.pem"
	say "  export MUSTER_CERT=\$d/certs/admin-ops.pem"
	say "  export MUSTER_KEY=\$d/certs/admin-ops-key.pem"
	say "  rpc-query services"
	say "  rpc-query members"
	say "  rpc-query top"
	say "  rpc-query watch                 # until Ctrl-C"
	say "  rpc-query view --slave-socket \$d/run/slaved-node-1.sock"
	say "  kill -9 ${slave_pid[node-1]}    # crash node-1, as in step c"
	say "  less \$d/logs/masterd.log    # every daemon logs to \$d/logs/"
	say ""
	say "Open the dashboard in a browser (loopback only): $dash_url"
	say "  curl -s ${dash_url}metrics | grep ^muster_    # Prometheus metrics"
	say "Running:"
	slaves=()
	for i in "${!pids[@]}"; do
		if running "${pids[i]}"; then
			say "  pid ${pids[i]}: ${names[i]}"
			[[ ${names[i]} == slaved* ]] && slaves+=("${pids[i]}")
		fi
	done
	say "To stop them (the slaves first, so that they leave while the master is"
	say "up) and remove the directory:"
	say "  kill ${slaves[*]}; sleep 1; kill $master_pid $reg_pid"
	say "  rm -rf $workdir"
	finished=1
	exit 0
fi

heading "stop: every process the demo started"
slaves=()
for i in "${!pids[@]}"; do
	if [[ ${names[i]} == slaved* ]] && running "${pids[i]}"; then
		slaves+=("${pids[i]}")
	fi
done
note "The slaves first, so that they leave while the master is up; the"
note "registry last, so that the master can unregister."
cmdline "kill -TERM ${slaves[*]}"
stop 0 "${slaves[@]}"
cmdline "kill -TERM $master_pid"
stop 0 "$master_pid"
cmdline "kill -TERM $reg_pid"
stop 0 "$reg_pid"
finish demo

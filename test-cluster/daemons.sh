# Helpers for the scripts that run several daemons (raft-cluster.sh, zk-cluster.sh):
# sourced after common.sh, with VAR set. Node n answers HTTP on 127.0.0.1:1100n and keeps
# its pid in $VAR/node<n>.pid.

http_of() { echo "127.0.0.1:1100$1"; }

alive() { [ -f "$VAR/node$1.pid" ] && kill -0 "$(cat "$VAR/node$1.pid")" 2>/dev/null; }

any_node() { for n in 0 1 2 3; do alive "$n" && { echo "$n"; return; }; done; }

# The JSON field $2 (dotted path) of node $1's /api/v1/cluster (python3 keeps this
# dependency-free).
cluster_field() {
    curl -s --max-time 1 "http://$(http_of "$1")/api/v1/cluster" 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    sys.exit(0)
v = d
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)' "$2"
}

leader_node() { # prints the node number of the acting leader, if any
    for n in 0 1 2 3; do
        alive "$n" || continue
        [ "$(cluster_field "$n" acting)" = "True" ] && { echo "$n"; return; }
    done
    return 0
}

wait_leader() { # [seconds, default 15]
    for _ in $(seq $((${1:-15} * 10))); do
        l=$(leader_node)
        [ -n "$l" ] && { echo "$l"; return; }
        sleep 0.1
    done
    echo "no leader after ${1:-15} s" >&2
    exit 1
}

# Kills the acting leader with -9 and prints when another node acts. $1: a note on
# what to expect, printed with the kill.
kill_leader() {
    l=$(wait_leader)
    echo "killing the leader, node $l, with kill -9${1:+ ($1)}"
    start=$(date +%s%N)
    kill -9 "$(cat "$VAR/node$l.pid")"
    while :; do
        for n in 0 1 2 3; do
            { [ "$n" = "$l" ] || ! alive "$n"; } && continue
            if [ "$(cluster_field "$n" acting)" = "True" ]; then
                echo "  +$(( ($(date +%s%N) - start) / 1000000 )) ms: node $n leads and acts"
                echo "restart the old leader with: $0 restart $l"
                return
            fi
        done
        sleep 0.02
    done
}

# Kills the Redis master with -9 and follows the failover through the acting node.
kill_master() {
    n=$(wait_leader)
    HTTP_ADDR=$(http_of "$n") VAR="$VAR" LOG="$VAR/node$n.log" "$HERE/kill-master.sh"
}

# start, status, kill the leader, kill the master, status, stop (unless KEEP=1).
demo() {
    cmd_start
    echo
    cmd_status
    echo
    cmd_kill_leader
    echo
    cmd_kill_master
    echo
    cmd_status
    if [ "${KEEP:-0}" != 1 ]; then
        echo
        cmd_stop
    fi
}

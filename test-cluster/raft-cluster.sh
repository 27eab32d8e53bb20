#!/usr/bin/env bash
# A local 3-node Raft cluster of redis-failover daemons watching a Redis master with two
# replicas. Everything binds to 127.0.0.1; logs and data go to test-cluster/var/raft/.
#
#   test-cluster/raft-cluster.sh start         Redis master :17000 + replicas :17001 :17002,
#                                              daemons http :11000-11002, raft :12000-12002
#   test-cluster/raft-cluster.sh status        each node's role, term and leader
#   test-cluster/raft-cluster.sh kill-leader   kill -9 the leader, time the new election
#   test-cluster/raft-cluster.sh kill-master   kill -9 the Redis master, follow the failover
#   test-cluster/raft-cluster.sh restart N     restart node N (0-3) with its data dir
#   test-cluster/raft-cluster.sh add-node      start node 3 (http :11003, raft :12003) and
#                                              add it with POST /api/v1/cluster/peers
#   test-cluster/raft-cluster.sh remove-node   DELETE node 3 from the cluster and stop it
#   test-cluster/raft-cluster.sh demo          start, kill the leader, kill the master, stop
#   test-cluster/raft-cluster.sh stop          stop everything started here
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/daemons.sh"
VAR="$VAR/raft"
CLUSTER="127.0.0.1:12000,127.0.0.1:12001,127.0.0.1:12002"

raft_of() { echo "127.0.0.1:1200$1"; }

start_node() { # n
    local n=$1 cluster=$CLUSTER
    mkdir -p "$VAR/node$n"
    # In a subshell, so the shell does not report the node's death when it is killed.
    ("$BIN" -addr="$(http_of "$n")" -broker=raft -raft_addr="$(raft_of "$n")" \
        -raft_data_dir="$VAR/node$n" -raft_cluster="$cluster" \
        -masters="demo=127.0.0.1:$MASTER_PORT" \
        -check_interval="$CHECK_INTERVAL" -max_down_time="$MAX_DOWN_TIME" \
        >>"$VAR/node$n.log" 2>&1 </dev/null &
        echo $! >"$VAR/node$n.pid")
    for _ in $(seq 100); do curl -sf "http://$(http_of "$n")/master" >/dev/null && return; sleep 0.1; done
    echo "node $n did not start; see $VAR/node$n.log" >&2
    exit 1
}

cmd_start() {
    bash "$HERE/install-deps.sh" >/dev/null
    (cd "$ROOT" && cargo build --release --quiet)
    cmd_stop >/dev/null 2>&1 || true
    mkdir -p "$VAR"
    VAR="$VAR" start_redis "$MASTER_PORT"
    VAR="$VAR" start_redis "$REPLICA1_PORT" "$MASTER_PORT"
    VAR="$VAR" start_redis "$REPLICA2_PORT" "$MASTER_PORT"
    for n in 0 1 2; do start_node "$n"; done
    l=$(wait_leader)
    echo "Redis master 127.0.0.1:$MASTER_PORT, replicas :$REPLICA1_PORT :$REPLICA2_PORT"
    echo "3 daemons: http $(http_of 0) $(http_of 1) $(http_of 2), logs in $VAR/"
    echo "leader: node $l ($(http_of "$l"))"
}

cmd_status() {
    for n in 0 1 2 3; do
        [ -f "$VAR/node$n.pid" ] || continue
        if alive "$n"; then
            echo "node $n $(http_of "$n"): $(cluster_field "$n" role), term $(cluster_field "$n" term), leader $(cluster_field "$n" leader.http_addr), commit $(cluster_field "$n" commit_index)"
        else
            echo "node $n $(http_of "$n"): down"
        fi
    done
    n=$(any_node)
    [ -n "$n" ] && echo "master of group demo: $(curl -s "http://$(http_of "$n")/master")"
}

cmd_kill_leader() { kill_leader; }

cmd_kill_master() { kill_master; }

cmd_restart() {
    local n=${1:?usage: restart N}
    stop_pidfile "$VAR/node$n.pid"
    start_node "$n"
    echo "node $n restarted: $(cluster_field "$n" role), commit $(cluster_field "$n" commit_index)"
}

cmd_add_node() {
    n=$(wait_leader)
    CLUSTER="$CLUSTER" start_node 3
    echo "POST /api/v1/cluster/peers?addr=$(raft_of 3) on node $n:"
    curl -s -X POST "http://$(http_of "$n")/api/v1/cluster/peers?addr=$(raft_of 3)"
    for _ in $(seq 100); do
        [ -n "$(cluster_field 3 leader.raft_addr)" ] && break
        sleep 0.1
    done
    echo "node 3: $(cluster_field 3 role), commit $(cluster_field 3 commit_index), groups: $(curl -s "http://$(http_of 3)/master")"
}

cmd_remove_node() {
    n=$(wait_leader)
    echo "DELETE /api/v1/cluster/peers?addr=$(raft_of 3) on node $n:"
    curl -s -X DELETE "http://$(http_of "$n")/api/v1/cluster/peers?addr=$(raft_of 3)"
    stop_pidfile "$VAR/node3.pid"
    rm -rf "$VAR/node3"
}

cmd_stop() {
    for n in 0 1 2 3; do stop_pidfile "$VAR/node$n.pid"; done
    for f in "$VAR"/redis-*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
    rm -rf "$VAR"
    echo "stopped"
}

case "${1:-}" in
start) cmd_start ;;
status) cmd_status ;;
kill-leader) cmd_kill_leader ;;
kill-master) cmd_kill_master ;;
restart) cmd_restart "${2:-}" ;;
add-node) cmd_add_node ;;
remove-node) cmd_remove_node ;;
demo) demo ;;
stop) cmd_stop ;;
*) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

#!/usr/bin/env bash
# A local 3-node redis-failover cluster coordinated by ZooKeeper (-broker=zk), watching a
# Redis master with two replicas. ZooKeeper comes from Debian's zookeeper package
# (install-deps.sh installs it) and runs standalone. Everything binds to 127.0.0.1;
# logs and data go to test-cluster/var/zk/.
#
#   test-cluster/zk-cluster.sh start          ZooKeeper :12181, Redis master :17000 +
#                                             replicas :17001 :17002, daemons http :11000-11002
#   test-cluster/zk-cluster.sh status         each daemon's role, session and leader
#   test-cluster/zk-cluster.sh kill-leader    kill -9 the leader, time the hand-over
#   test-cluster/zk-cluster.sh kill-master    kill -9 the Redis master, follow the failover
#   test-cluster/zk-cluster.sh restart N      restart daemon N (0-2)
#   test-cluster/zk-cluster.sh restart-zk     kill -9 ZooKeeper, start it again, wait for a leader
#   test-cluster/zk-cluster.sh demo           start, kill the leader, kill the master, stop
#   test-cluster/zk-cluster.sh stop           stop everything started here
#
# ZK_PORT (12181), ZK_PATH (/zk/redis/failover) and ZK_SESSION_TIMEOUT (ms, 3000) can be
# set in the environment.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/daemons.sh"
VAR="$VAR/zk"
ZK_PORT="${ZK_PORT:-12181}"
ZK_PATH="${ZK_PATH:-/zk/redis/failover}"
ZK_SESSION_TIMEOUT="${ZK_SESSION_TIMEOUT:-3000}"

start_zookeeper() {
    mkdir -p "$VAR/zookeeper"
    # 500 ms ticks: ZooKeeper grants session timeouts from 1 s to 10 s.
    cat >"$VAR/zookeeper/zoo.cfg" <<CFG
tickTime=500
dataDir=$VAR/zookeeper/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,cons
CFG
    local cp=/usr/share/java/zookeeper.jar
    [ -f /usr/share/java/slf4j-simple.jar ] && cp="$cp:/usr/share/java/slf4j-simple.jar"
    (java -Xmx128m -XX:+UseSerialGC -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain \
        "$VAR/zookeeper/zoo.cfg" >>"$VAR/zookeeper.log" 2>&1 </dev/null &
        echo $! >"$VAR/zookeeper.pid")
    for _ in $(seq 300); do
        [ "$(zk_word ruok)" = imok ] && return
        sleep 0.1
    done
    echo "ZooKeeper did not start; see $VAR/zookeeper.log" >&2
    exit 1
}

zk_word() { # a four-letter word to ZooKeeper (bash's /dev/tcp: no netcat needed)
    (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf '%s' "$1" >&3 && timeout 2 cat <&3) 2>/dev/null || true
}

start_node() { # n
    local n=$1
    mkdir -p "$VAR"
    # In a subshell, so the shell does not report the node's death when it is killed.
    ("$BIN" -addr="$(http_of "$n")" -broker=zk -zk_addr="127.0.0.1:$ZK_PORT" \
        -zk_path="$ZK_PATH" -zk_session_timeout="$ZK_SESSION_TIMEOUT" \
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
    start_zookeeper
    VAR="$VAR" start_redis "$MASTER_PORT"
    VAR="$VAR" start_redis "$REPLICA1_PORT" "$MASTER_PORT"
    VAR="$VAR" start_redis "$REPLICA2_PORT" "$MASTER_PORT"
    for n in 0 1 2; do start_node "$n"; done
    l=$(wait_leader)
    echo "ZooKeeper 127.0.0.1:$ZK_PORT, path $ZK_PATH, session timeout $ZK_SESSION_TIMEOUT ms"
    echo "Redis master 127.0.0.1:$MASTER_PORT, replicas :$REPLICA1_PORT :$REPLICA2_PORT"
    echo "3 daemons: http $(http_of 0) $(http_of 1) $(http_of 2), logs in $VAR/"
    echo "leader: node $l ($(http_of "$l"))"
}

cmd_status() {
    if [ "$(zk_word ruok)" = imok ]; then
        echo "ZooKeeper 127.0.0.1:$ZK_PORT: up"
    else
        echo "ZooKeeper 127.0.0.1:$ZK_PORT: down"
    fi
    for n in 0 1 2; do
        [ -f "$VAR/node$n.pid" ] || continue
        if alive "$n"; then
            echo "node $n $(http_of "$n"): $(cluster_field "$n" role) ($(cluster_field "$n" id)), acting $(cluster_field "$n" acting), session $(cluster_field "$n" zk_session), leader $(cluster_field "$n" leader.http_addr) $(cluster_field "$n" error)"
        else
            echo "node $n $(http_of "$n"): down"
        fi
    done
    n=$(any_node)
    [ -n "$n" ] && echo "master of group demo: $(curl -s "http://$(http_of "$n")/master")"
}

cmd_kill_leader() { kill_leader "its session expires after $ZK_SESSION_TIMEOUT ms"; }

cmd_kill_master() { kill_master; }

cmd_restart() {
    local n=${1:?usage: restart N}
    stop_pidfile "$VAR/node$n.pid"
    start_node "$n"
    sleep 0.5
    echo "node $n restarted: $(cluster_field "$n" role), session $(cluster_field "$n" zk_session)"
}

cmd_restart_zk() {
    echo "killing ZooKeeper with kill -9"
    start=$(date +%s%N)
    kill -9 "$(cat "$VAR/zookeeper.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(leader_node)" ] && break; sleep 0.05; done
    echo "  +$(( ($(date +%s%N) - start) / 1000000 )) ms: no daemon acts"
    start_zookeeper
    echo "  +$(( ($(date +%s%N) - start) / 1000000 )) ms: ZooKeeper answers again"
    l=$(wait_leader 30)
    echo "  +$(( ($(date +%s%N) - start) / 1000000 )) ms: node $l leads and acts"
}

cmd_stop() {
    for n in 0 1 2; do stop_pidfile "$VAR/node$n.pid"; done
    for f in "$VAR"/redis-*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
    stop_pidfile "$VAR/zookeeper.pid"
    rm -rf "$VAR"
    echo "stopped"
}

case "${1:-}" in
start) cmd_start ;;
status) cmd_status ;;
kill-leader) cmd_kill_leader ;;
kill-master) cmd_kill_master ;;
restart) cmd_restart "${2:-}" ;;
restart-zk) cmd_restart_zk ;;
demo) demo ;;
stop) cmd_stop ;;
*) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

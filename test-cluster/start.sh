#!/usr/bin/env bash
# Starts a local Redis master with two replicas and the daemon watching it.
#   master  127.0.0.1:17000, replicas 127.0.0.1:17001 and :17002
#   daemon  http://127.0.0.1:11000 (check every 100 ms, down after 1 s)
# Logs and data go to test-cluster/var/. Stop everything with test-cluster/stop.sh.
set -euo pipefail
source "$(dirname "$0")/common.sh"

bash "$HERE/install-deps.sh" >/dev/null
(cd "$ROOT" && cargo build --release --quiet)
mkdir -p "$VAR"
"$HERE/stop.sh" >/dev/null 2>&1 || true

start_redis "$MASTER_PORT"
start_redis "$REPLICA1_PORT" "$MASTER_PORT"
start_redis "$REPLICA2_PORT" "$MASTER_PORT"
for _ in $(seq 100); do
    [ "$(redis-cli -p "$MASTER_PORT" info replication | tr -d '\r' | grep -c '^slave[0-9].*state=online')" = 2 ] && break
    sleep 0.1
done

nohup "$BIN" -addr="$HTTP_ADDR" -masters="demo=127.0.0.1:$MASTER_PORT" \
    -check_interval="$CHECK_INTERVAL" -max_down_time="$MAX_DOWN_TIME" \
    >"$VAR/daemon.log" 2>&1 &
echo $! >"$VAR/daemon.pid"
for _ in $(seq 100); do curl -sf "http://$HTTP_ADDR/master" >/dev/null && break; sleep 0.1; done

echo "master 127.0.0.1:$MASTER_PORT, replicas :$REPLICA1_PORT :$REPLICA2_PORT"
echo "daemon http://$HTTP_ADDR (pid $(cat "$VAR/daemon.pid")), log $VAR/daemon.log"
echo "current master: $(curl -s "http://$HTTP_ADDR/master")"

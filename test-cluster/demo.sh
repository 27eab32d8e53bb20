#!/usr/bin/env bash
# The main job in one command: a local master with two replicas, the daemon watching
# it, a write, the master killed with -9, the failover as it happens, and the data on
# the new master. Leaves everything running when KEEP=1 (stop with test-cluster/stop.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"

"$HERE/start.sh"
sleep 1
echo
echo "--- GET /api/v1/groups ---"
curl -s "http://$HTTP_ADDR/api/v1/groups"
redis-cli -p "$MASTER_PORT" set greeting "written before the failover" >/dev/null
echo
"$HERE/kill-master.sh"
new=$(curl -s "http://$HTTP_ADDR/master")
echo
echo "--- the write made before the kill, read on the new master $new ---"
redis-cli -p "${new##*:}" get greeting
sleep 1
echo
echo "--- GET /api/v1/groups after the failover ---"
curl -s "http://$HTTP_ADDR/api/v1/groups"
if [ "${KEEP:-0}" != 1 ]; then
    echo
    "$HERE/stop.sh"
fi

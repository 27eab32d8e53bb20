#!/usr/bin/env bash
# Kills the current master with SIGKILL and follows the failover as it happens.
set -euo pipefail
source "$(dirname "$0")/common.sh"
LOG="${LOG:-$VAR/daemon.log}"

old=$(curl -sf "http://$HTTP_ADDR/master") || { echo "the daemon is not running: start test-cluster/start.sh first" >&2; exit 1; }
port=${old##*:}
pidfile="$VAR/redis-$port.pid"
[ -f "$pidfile" ] || { echo "no pid file for $old" >&2; exit 1; }
echo "killing master $old (pid $(cat "$pidfile")) with kill -9"
start=$(date +%s%N)
kill -9 "$(cat "$pidfile")"
rm -f "$pidfile"

last=""
while :; do
    now=$(curl -s "http://$HTTP_ADDR/master")
    state=$(curl -s "http://$HTTP_ADDR/api/v1/groups" | grep -m1 '"state"' | tr -d ' ,"' | cut -d: -f2)
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ "$state" != "$last" ]; then echo "  +${ms} ms: group state $state"; last=$state; fi
    if [ "$now" != "$old" ] && [ -n "$now" ]; then
        echo "  +${ms} ms: new master $now"
        break
    fi
    if [ "$ms" -gt 30000 ]; then echo "no failover after 30 s; see $LOG" >&2; exit 1; fi
    sleep 0.05
done
echo
echo "--- daemon log of the failover ---"
grep -E "failover|down|check of master" "$LOG" | tail -12
echo
echo "--- new master: redis-cli -p ${now##*:} role ---"
redis-cli -p "${now##*:}" role | head -3

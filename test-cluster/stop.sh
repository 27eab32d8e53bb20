#!/usr/bin/env bash
# Stops the daemon and the Redis servers that start.sh started (by PID).
set -euo pipefail
source "$(dirname "$0")/common.sh"
stop_pidfile "$VAR/daemon.pid"
for f in "$VAR"/redis-*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
echo "stopped"

# Shared settings for the test-cluster scripts (sourced, not run).
# Ports can be changed from the environment.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VAR="${VAR:-$HERE/var}"
MASTER_PORT="${MASTER_PORT:-17000}"
REPLICA1_PORT="${REPLICA1_PORT:-17001}"
REPLICA2_PORT="${REPLICA2_PORT:-17002}"
HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:11000}"
CHECK_INTERVAL="${CHECK_INTERVAL:-100}"
MAX_DOWN_TIME="${MAX_DOWN_TIME:-1}"
BIN="$ROOT/target/release/redis-failover"

start_redis() { # port [replicaof-port]
    local port=$1 dir="$VAR/redis-$1"
    mkdir -p "$dir"
    local args=(--port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no
        --repl-diskless-sync-delay 0 --daemonize yes --pidfile "$VAR/redis-$port.pid"
        --logfile "$dir/redis.log")
    [ -n "${2:-}" ] && args+=(--replicaof 127.0.0.1 "$2")
    redis-server "${args[@]}"
}

stop_pidfile() { # file
    local pid
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

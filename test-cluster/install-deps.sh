#!/usr/bin/env bash
# Installs what the demo and the tests need when it is missing: redis-server and
# redis-cli (Debian's redis-server and redis-tools packages), redis-py for the tests
# of the Sentinel-compatible port (pip, or Debian's python3-redis), node-redis for the
# same (npm ci in tests/node, with Debian's nodejs and npm when Node.js is missing),
# ZooKeeper for the -broker=zk tests and test-cluster/zk-cluster.sh (Debian's zookeeper
# package; it pulls in a Java runtime), and iptables for the partition tests (they run
# only as root), and Chromium with chromedriver for the status page test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
# The partition tests cut links with iptables inside a network namespace of their own.
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts a redis-server service on install where systemd runs; the demo and
# the tests use their own ports, so it is left alone. The zookeeper package starts no
# server: the tests and zk-cluster.sh run their own.
redis-server --version
java -version 2>&1 | head -1
echo "zookeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '(jar present)')"
if ! python3 -c 'import redis.sentinel' >/dev/null 2>&1; then
    echo "installing redis-py with pip" >&2
    python3 -m pip install --quiet --disable-pip-version-check redis >/dev/null 2>&1 ||
        python3 -m pip install --quiet --break-system-packages redis >/dev/null 2>&1 || {
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-redis >/dev/null
    }
fi
python3 -c 'import redis; print("redis-py", redis.__version__)'
# node-redis, at the version tests/node/package-lock.json pins, for tests/node_redis.rs
# and the sentinel_clients bench: installed when tests/node/node_modules is missing or
# older than the lock file. If Node.js cannot be had, the node-redis test says it was
# skipped; if npm fails, that test fails and says why.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null; } ||
        echo "could not install nodejs and npm: the node-redis test will be skipped" >&2
fi
if command -v npm >/dev/null 2>&1; then
    node_dir="$root/tests/node"
    stamp="$node_dir/node_modules/.package-lock.json"
    if [ ! -f "$stamp" ] || [ "$node_dir/package-lock.json" -nt "$stamp" ] ||
        [ "$node_dir/package.json" -nt "$stamp" ]; then
        echo "installing node-redis in tests/node with npm ci" >&2
        (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
            echo "npm ci in tests/node failed: the node-redis test will fail" >&2
    fi
    echo "node $(node --version), node-redis $(cd "$node_dir" &&
        node -p 'require("redis/package.json").version' 2>/dev/null || echo '(not installed)')"
fi
# Chromium and its WebDriver for the status page's browser test (tests/status_page.rs
# talks WebDriver to chromedriver directly: no Selenium). Without them that test says
# it was skipped.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "installing chromium and chromium-driver with apt-get" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-liberation >/dev/null; } ||
        echo "could not install chromium: the status page's browser test will be skipped" >&2
fi
if [ -x /usr/bin/chromedriver ]; then
    /usr/bin/chromedriver --version
fi
# HAProxy for the test of the documented health-check example (tests/health.rs); that
# test says it was skipped without it.
if [ ! -x /usr/sbin/haproxy ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends haproxy >/dev/null ||
        echo "could not install haproxy: the HAProxy health-check test will be skipped" >&2
fi

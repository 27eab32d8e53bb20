#!/usr/bin/env bash
# Runs every test: installs what the tests need when missing (redis-server, ZooKeeper,
# redis-py), then unit, integration (real servers on loopback ports) and doc tests.
# The LedisDB tests use ../shared/ledisdb/ledis-server when it is there (or
# $LEDIS_SERVER); without one they say they were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test-cluster/install-deps.sh
if [ -z "${LEDIS_SERVER:-}" ] && [ -x ../shared/ledisdb/ledis-server ]; then
    LEDIS_SERVER="$(cd ../shared/ledisdb && pwd)/ledis-server"
    export LEDIS_SERVER
fi
echo "LEDIS_SERVER=${LEDIS_SERVER:-(unset: LedisDB tests are skipped)}"
cargo test --locked "$@"

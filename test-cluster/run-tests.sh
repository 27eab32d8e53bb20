#!/usr/bin/env bash
# Runs every test: installs what the tests need when missing (redis-server, ZooKeeper,
# redis-py), then unit, integration (real servers on loopback ports) and doc tests.
# With cargo-nextest (installed with the toolchain here), most tests run four at a
# time (.config/nextest.toml says why), then the ones that load the CPU on purpose or
# judge timing under load run by themselves; without it, `cargo test` runs them all.
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
if ! cargo nextest --version >/dev/null 2>&1; then
    exec cargo test --locked "$@"
fi
alone='binary(overload) | binary(hostile_ports) | binary(fair_ports) | binary(properties) | binary(partitions) | binary(simulation)'
failed=0
cargo nextest run --locked --no-fail-fast -E "not ($alone)" "$@" || failed=1
cargo nextest run --locked --no-fail-fast -E "$alone" --test-threads 2 "$@" || failed=1
cargo test --locked --doc "$@" || failed=1
exit "$failed"

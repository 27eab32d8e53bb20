#!/usr/bin/env bash
# Runs every test: installs redis-server when missing, then unit, integration
# (real redis-server processes on loopback ports) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test-cluster/install-deps.sh
cargo test --locked "$@"

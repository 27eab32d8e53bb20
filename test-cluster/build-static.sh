#!/usr/bin/env bash
# Builds one fully static, stripped release binary to copy onto any x86_64 Linux host:
#
#   bash test-cluster/build-static.sh
#
# It links glibc statically (-C target-feature=+crt-static on x86_64-unknown-linux-gnu),
# which needs only the toolchain's usual target. The explicit --target keeps build
# scripts and proc-macros (serde, argh) dynamic, as they must be to load.
#
# On a host with the musl target (`rustup target add x86_64-unknown-linux-musl`), musl
# makes a static binary by default and has no NSS caveat (below):
#
#   TARGET=x86_64-unknown-linux-musl bash test-cluster/build-static.sh
#
# Caveat of static glibc: host names are resolved through getaddrinfo, which in a static
# glibc binary loads the host's NSS modules (libnss_files, libnss_dns) at run time when
# it needs them. Numeric addresses never need them; names work where the host's glibc
# matches closely enough, and musl has no such dependency.
#
# Prints the binary's path, size and what `file` and `ldd` say of it; fails unless it is
# static.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${TARGET:-x86_64-unknown-linux-gnu}"
if [ "$target" = x86_64-unknown-linux-gnu ]; then
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
fi
cargo build --release --locked --target "$target" --bin redis-failover
binary="${CARGO_TARGET_DIR:-target}/$target/release/redis-failover"
size=$(stat -c %s "$binary")
echo "binary: $binary"
echo "size:   $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MB", s / 1048576 }'))"
if command -v file >/dev/null; then
    echo "file:   $(file -b "$binary")"
fi
# ldd exits non-zero for a static binary; its words are what matters.
ldd_says=$(ldd "$binary" 2>&1 || true)
echo "ldd:    $ldd_says"
case "$ldd_says" in
    *"not a dynamic executable"* | *"statically linked"*) echo "static: yes" ;;
    *) echo "static: NO: the binary is dynamically linked" >&2; exit 1 ;;
esac
"$binary" --help >/dev/null

#!/bin/sh
# Build everything the preload suite needs into OUTDIR (run outside any sandbox).
#   vm-tests/preload/build.sh [OUTDIR]   (default: $CARGO_TARGET_DIR/preload-build,
#                                          CARGO_TARGET_DIR defaulting to /work/target-preload)
# Produces OUTDIR/libconductor_preload.so (release) and OUTDIR/nlsub (a
# cgo-linked, PIE Go program using Debian's vishvananda/netlink).
# Needs: cargo, golang-go, golang-github-vishvananda-netlink-dev.
set -eu
OUT=${1:-${CARGO_TARGET_DIR:-/work/target-preload}/preload-build}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${CARGO_TARGET_DIR:=/work/target-preload}"
export CARGO_TARGET_DIR
cargo build --quiet --release -p conductor-preload --manifest-path "$ROOT/Cargo.toml"
cp "$CARGO_TARGET_DIR/release/libconductor_preload.so" "$OUT/"
GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOCACHE="${GOCACHE:-$OUT/.gocache}" \
    go build -buildmode=pie -o "$OUT/nlsub" "$ROOT/vm-tests/preload/nlsub/main.go"
echo "built $OUT/libconductor_preload.so $OUT/nlsub"

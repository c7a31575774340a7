#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, runs the unprivileged
# tests (cargo test), then every privileged suite twice - on the real kernel
# in private namespaces and inside gVisor (vm-tests). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: the privileged suites need root" >&2
    exit 1
fi

scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --release --all-targets
cargo test --workspace --release

# Artifacts the scripted suites use (the preload library and a cgo-linked Go
# netlink program), built outside any sandbox.
CARGO_TARGET_DIR="$PWD/target" vm-tests/preload/build.sh "$PWD/target/preload-build"
export CONDUCTOR_PRELOAD_LIB="$PWD/target/preload-build/libconductor_preload.so"
export CONDUCTOR_NETD_BIN="$PWD/target/release/conductor-netd"
./target/release/vm-tests all

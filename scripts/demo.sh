#!/usr/bin/env bash
# Installs everything, builds and installs conductor-net (conductor-netd in
# /usr/local/bin, the preload in /usr/local/lib) and brings up a demo network with
# conductor-netd: a bridge, two namespaces attached to it, traffic between
# them; everything happens in throwaway namespaces and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo build --release -p conductor-netd -p conductor-preload
# Installed where `conductor-netd preload` and `doctor` look for them.
install -D -m 0755 target/release/conductor-netd /usr/local/bin/conductor-netd
install -D -m 0644 target/release/libconductor_preload.so /usr/local/lib/libconductor_preload.so
echo "installed /usr/local/bin/conductor-netd and /usr/local/lib/libconductor_preload.so"
echo "(to run dockerd with the preload: conductor-netd preload)"
exec /usr/local/bin/conductor-netd demo

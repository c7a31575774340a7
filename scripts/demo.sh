#!/usr/bin/env bash
# Installs everything, builds conductor-net and brings up a demo network with
# conductor-netd: a bridge, two namespaces attached to it, traffic between
# them; everything happens in throwaway namespaces and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo build --release -p conductor-netd
exec ./target/release/conductor-netd demo

#!/usr/bin/env bash
# Installs everything, builds and installs conductor-net (conductor-netd in
# /usr/local/bin, the preload in /usr/local/lib), then shows it:
# 1. a conductor-netd network: a bridge, two namespaces attached to it,
#    traffic between them (throwaway namespaces, removed at the end);
# 2. inside a gVisor sandbox: Docker 28 started by `conductor-netd docker
#    up`, containers reaching each other by name and a stand-in internet,
#    then `docker down` (scripts/demo-docker.sh; it all ends with the
#    sandbox).
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
/usr/local/bin/conductor-netd demo
root=$(mktemp -d /tmp/conductor-demo-runsc.XXXXXX)
trap 'rm -rf "$root"' EXIT
# `runsc do` output written straight to a file can lose lines: piped.
runsc --root "$root" --network=none --net-raw --platform=ptrace do "$PWD/scripts/demo-docker.sh" | cat

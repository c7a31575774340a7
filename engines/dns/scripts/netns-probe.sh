#!/usr/bin/env bash
# Binding 127.0.0.11:53 in fresh network namespaces, and the engine serving a
# namespace through sockets opened inside it (examples/netns_probe.rs), on the
# real kernel (in a private mount + network namespace) and inside gVisor
# (runsc do). Root. Prints ok/FAIL/info lines; exits non-zero on a FAIL.
# Usage: engines/dns/scripts/netns-probe.sh [PATH-TO-netns_probe]
set -euo pipefail
cd "$(dirname "$0")/../../.."
export PATH="$HOME/.cargo/bin:$PATH"
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build --release -p conductor-dns --example netns_probe >&2
    bin="$target/release/examples/netns_probe"
fi
bin=$(readlink -f "$bin")

work=$(mktemp -d /tmp/dns-engine-probe.XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0

echo "== real kernel ($(uname -r))"
unshare --mount --net --propagation private "$bin" || status=1

echo "== gVisor ($(runsc --version 2>/dev/null | head -n1))"
printf '#!/bin/sh\nexec %s\n' "$bin" > "$work/run.sh"
chmod +x "$work/run.sh"
runsc --root "$work/state" --network=none --net-raw --platform=ptrace do "$work/run.sh" || status=1
exit $status

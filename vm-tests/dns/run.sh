#!/bin/sh
# The DNS engine's privileged suite: 127.0.0.11:53 bound in fresh network
# namespaces (lo down and up, with and without IP_FREEBIND) and the engine
# answering a query asked from inside each namespace through those sockets
# (engines/dns/examples/netns_probe.rs). "ok NAME" / "FAIL NAME: reason".
#
#   run.sh kernel   inside a private net + mount namespace made by the caller
#   run.sh gvisor   inside gVisor (runsc do)
#
# Input: CONDUCTOR_DNS_PROBE, the built example (default
# ${CARGO_TARGET_DIR:-<repo>/target}/release/examples/netns_probe, which
# `cargo build --workspace --release --all-targets` produces).
ENVNAME=${1:-}
case "$ENVNAME" in kernel|gvisor) ;; *) echo "usage: $0 kernel|gvisor" >&2; exit 2;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROBE=${CONDUCTOR_DNS_PROBE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/netns_probe}
if [ ! -x "$PROBE" ]; then
    echo "FAIL dns-probe: $PROBE not built (cargo build --release -p conductor-dns --example netns_probe)"
    exit 1
fi
exec "$PROBE"

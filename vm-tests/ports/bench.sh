#!/bin/bash
# Published ports and the *.localhost proxy, measured: bulk TCP (1 and 8
# streams) and connections/s through netd vs docker-proxy (docker.io's
# /usr/sbin/docker-proxy) vs the direct path, and the proxy's requests/s and
# p50/p99 at 64 keep-alive clients and WebSocket round trips (p50/p99) vs a
# direct connection. Run as root:
#   vm-tests/ports/bench.sh kernel|gvisor [SECONDS]
# Builds its own topology (a netd, a network, a namespace endpoint serving
# a sink, an echo and HTTP) in a private net+mount namespace, or in gVisor.
[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -u
ENVNAME=${1:-kernel}
SECS=${2:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [ -z "${BENCH_INNER:-}" ]; then
    case "$ENVNAME" in
        kernel) exec unshare --net --mount env BENCH_INNER=1 bash "$0" "$@" ;;
        gvisor)
            R=$(mktemp -d /tmp/bench-ports-runsc.XXXXXX)
            runsc --root "$R" --network=none --net-raw --platform=ptrace do env BENCH_INNER=1 bash "$0" "$@"
            rc=$?; rm -rf "$R"; exit $rc ;;
        *) echo "usage: $0 kernel|gvisor [SECONDS]" >&2; exit 2 ;;
    esac
fi
NETD=${CONDUCTOR_NETD_BIN:-$BIN/conductor-netd}
TGT=$BIN/ports-target
T=$(mktemp -d /tmp/bench-ports.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    ip netns del bpsrv 2>/dev/null
    umount -l /run/conductor-net /var/lib/conductor-net 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
for d in /run/conductor-net /var/lib/conductor-net; do mkdir -p $d && mount -t tmpfs bp $d; done
ip link set lo up
# Connections/s rows open tens of thousands of connections: without reuse
# the later rows find the ephemeral ports in TIME_WAIT (this namespace only).
sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000" 2>/dev/null
printf 'localhost_proxy = "127.0.0.1:18000"\nfsync = false\n' > "$T/netd.toml"
n() { "$NETD" --socket "$T/netd.sock" "$@"; }
start_netd() { # start_netd [ENV...]
    env "$@" "$NETD" --socket "$T/netd.sock" serve --state-dir "$T/state" --config "$T/netd.toml" --log-level warn 2>>"$T/netd.log" &
    NETD_PID=$!; PIDS="$PIDS $NETD_PID"
    for _ in $(seq 1 200); do n status >/dev/null 2>&1 && break; sleep 0.05; done
}
start_netd
ip netns add bpsrv
n network create bpn >/dev/null && n attach --netns bpsrv bpn >/dev/null || { echo "setup failed"; exit 1; }
IP=$(n endpoints bpn --json | jq -r '.[0].ipv4' | cut -d/ -f1)
for s in "sink 0.0.0.0:5001" "echo 0.0.0.0:5002" "serve 0.0.0.0:8080"; do
    ip netns exec bpsrv "$TGT" $s 2>/dev/null & PIDS="$PIDS $!"
done
n port add --netns bpsrv 15001:5001 >/dev/null && n port add --netns bpsrv 15002:5002 >/dev/null \
    && n port add --netns bpsrv 15080:8080 >/dev/null || { echo "port add failed"; exit 1; }
# docker-proxy tells its parent it is ready on fd 3 (and closes it): give it
# one, or it closes its own listener.
DP=/usr/sbin/docker-proxy
for p in 5001 5002; do
    $DP -proto tcp -host-ip 127.0.0.1 -host-port $((p + 11000)) -container-ip "$IP" -container-port $p 2>/dev/null 3>"$T/dp$p.ready" &
    PIDS="$PIDS $!"
done
for _ in $(seq 1 100); do curl -s "http://$IP:8080/hello" >/dev/null && break; sleep 0.05; done
sleep 0.5
echo "== $ENVNAME: published ports ($SECS s per row; netd $NETD) =="
"$BIN/bench-ports" tcp "$SECS" direct=$IP:5001 netd=127.0.0.1:15001 docker-proxy=127.0.0.1:16001
"$BIN/bench-ports" conns "$SECS" direct=$IP:5002 netd=127.0.0.1:15002 docker-proxy=127.0.0.1:16002
echo "== $ENVNAME: *.localhost proxy =="
"$BIN/bench-ports" http "$SECS" "direct=$IP:8080@$IP:8080" "proxy=127.0.0.1:18000@8080.bpsrv.localhost:18000"
"$BIN/bench-ports" ws "$SECS" "direct=$IP:8080@$IP:8080" "proxy=127.0.0.1:18000@8080.bpsrv.localhost:18000"
echo "== $ENVNAME: netd's relay with a buffered copy instead of splice =="
kill "$NETD_PID"; wait "$NETD_PID" 2>/dev/null
start_netd CONDUCTOR_NETD_PORTS_COPY=buffered
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:15080/hello" >/dev/null && break; sleep 0.05; done
"$BIN/bench-ports" tcp "$SECS" direct=$IP:5001 netd-buffered=127.0.0.1:15001
"$BIN/bench-ports" conns "$SECS" direct=$IP:5002 netd-buffered=127.0.0.1:15002

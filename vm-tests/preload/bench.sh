#!/bin/sh
# Preload benchmark: prints figures, asserts nothing.
#   vm-tests/preload/bench.sh          both environments (kernel in a private
#                                      netns via unshare, gVisor via runsc)
#   vm-tests/preload/bench.sh kernel|gvisor   one environment (inside it)
# Inputs as run.sh: CONDUCTOR_PRELOAD_LIB, CONDUCTOR_PRELOAD_BIN (see build.sh).
# BENCH_RUNS (default 5) alternating runs per figure; the median is printed.
# Set BENCH_DOCKER=1 to add dockerd start-to-ready (see docker.sh bench)
# and BENCH_DOCKER_START=1 container start-to-running (docker.sh bench-start).
LIB=${CONDUCTOR_PRELOAD_LIB:-/work/target-preload/preload-build/libconductor_preload.so}
BIN=${CONDUCTOR_PRELOAD_BIN:-$(dirname "$LIB")}
RUNS=${BENCH_RUNS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
export CONDUCTOR_PRELOAD_LIB=$LIB CONDUCTOR_PRELOAD_BIN=$BIN BENCH_RUNS=$RUNS
if [ -z "${1:-}" ]; then
    echo "== real kernel"
    unshare -n -m "$HERE/bench.sh" kernel
    echo "== gVisor (runsc ptrace)"
    R=$(mktemp -d /tmp/preload-bench-runsc.XXXXXX)
    runsc --root "$R" --network=none --net-raw --platform=ptrace do "$HERE/bench.sh" gvisor
    rm -rf "$R"
    exit 0
fi
ENVNAME=$1
ip link set lo up 2>/dev/null
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
N=2000000
[ "$ENVNAME" = gvisor ] && N=100000
B=$(mktemp -d /tmp/preload-bench.XXXXXX)
trap 'rm -rf "$B"' EXIT INT TERM
i=0
while [ $i -lt "$RUNS" ]; do
    "$BIN/nlsub" bench -n $N >>$B/without
    env LD_PRELOAD="$LIB" "$BIN/nlsub" bench -n $N >>$B/with
    # the trap path as it runs where something is refused (installed even
    # though the start-up probe finds nothing to fix on a normal kernel)
    env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_FORCE=1 "$BIN/nlsub" bench -n $N >>$B/forced
    i=$((i + 1))
done
get() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" "$2" | median; }
p0=$(get getppid_ns $B/without); p1=$(get getppid_ns $B/with)
s0=$(get netlink_setsockopt_ns $B/without); s1=$(get netlink_setsockopt_ns $B/with)
echo "unrelated syscall (getppid, Go RawSyscall): without ${p0} ns, with ${p1} ns, overhead $(awk -v a="$p0" -v b="$p1" 'BEGIN { printf "%.1f", (b - a) * 100 / a }') % (median of $RUNS)"
r0=$(get read4k_ns $B/without); r1=$(get read4k_ns $B/with)
echo "unrelated syscall (read 4 KiB from /dev/zero): without ${r0} ns, with ${r1} ns, overhead $(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.1f", (b - a) * 100 / a }') %"
q0=$(get getppid_subscribed_ns $B/without); q1=$(get getppid_subscribed_ns $B/with)
echo "unrelated syscall while a link subscription is open: without ${q0:-n/a} ns, with ${q1:-n/a} ns"
echo "intercepted call (setsockopt SOL_NETLINK, trapped + passed through): without ${s0} ns, with ${s1} ns, trap cost $(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.1f", (b - a) / 1000 }') us"
f1=$(get getppid_ns $B/forced); fr=$(get read4k_ns $B/forced); fs=$(get netlink_setsockopt_ns $B/forced)
echo "trap path forced on: getppid ${f1} ns (overhead $(awk -v a="$p0" -v b="$f1" 'BEGIN { printf "%.1f", (b - a) * 100 / a }') %), read 4 KiB ${fr} ns (overhead $(awk -v a="$r0" -v b="$fr" 'BEGIN { printf "%.1f", (b - a) * 100 / a }') %), intercepted setsockopt ${fs} ns (trap cost $(awk -v a="$s0" -v b="$fs" 'BEGIN { printf "%.1f", (b - a) / 1000 }') us)"
lat=$(timeout 120 env LD_PRELOAD="$LIB" "$BIN/nlsub" subscribe -n 100 2>&1)
echo "event latency with preload (100 MTU changes, vishvananda LinkSubscribe): $lat"
if [ "$ENVNAME" = kernel ]; then
    lat0=$(timeout 120 "$BIN/nlsub" subscribe -n 100 2>&1)
    echo "event latency without preload (kernel multicast): $lat0"
fi
if [ "${BENCH_DOCKER:-0}" = 1 ]; then
    "$HERE/docker.sh" "$ENVNAME" bench
fi
if [ "${BENCH_DOCKER_START:-0}" = 1 ]; then
    "$HERE/docker.sh" "$ENVNAME" bench-start
fi

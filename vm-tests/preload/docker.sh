#!/bin/sh
# Both dockerds - Debian's 20.10 (/usr/sbin/dockerd) and 28.5.2 (Debian sid,
# extracted by scripts/install-docker28.sh) - with and without the preload.
#   docker.sh kernel|gvisor [test|bench|bench-start]
# gvisor: run INSIDE runsc (like run.sh); kernel: inside `unshare -n -m`.
#
# test: one dockerd per (version, mode) runs every row with unchanged docker
#   commands and default networks: a default-bridge container gets an
#   address; `docker network create` (default options) and a container on
#   it; container to container by address; sandbox to container; a `-p`
#   published port through docker-proxy; `--network=container:<parent>`
#   reaches the parent's localhost; stop, rm and network rm succeed and
#   leave no veth or bridge behind; dockerd's children do not load the
#   preload. Modes: without the preload, with it, and on the kernel with its
#   trap path forced on. Expected: every row passes, except Docker 28
#   without the preload inside gVisor, whose rows must fail (each is
#   printed as "...-fails" with the reason).
# bench: dockerd start-to-ready, BENCH_RUNS alternating runs without/with
#   (Docker 20.10; DOCKER_VERSIONS="20 28" adds 28).
# bench-start: container start-to-running (`docker run -d`), BENCH_RUNS
#   runs each, for 20.10 without and with the preload and 28 with it, and
#   the time spent inside the preload during those starts (its counters,
#   CONDUCTOR_PRELOAD_STATS).
#
# With the preload, dockerd is started by the exact command line that
# `conductor-netd preload` prints (CONDUCTOR_NETD_BIN, default
# target/release/conductor-netd), so the line users copy is what is tested.
# Inputs: CONDUCTOR_PRELOAD_LIB as run.sh; DOCKER28_DIR (default
# /opt/conductor-net/docker-28/usr/sbin, holding dockerd and docker-proxy).
# Needs docker.io (20.10 daemon, containerd, runc, CLI), busybox-static, jq.
ENVNAME=${1:-}
MODE=${2:-test}
case "$ENVNAME" in kernel|gvisor) ;; *) echo "usage: $0 kernel|gvisor [test|bench|bench-start]" >&2; exit 2;; esac
LIB=${CONDUCTOR_PRELOAD_LIB:-/work/target-preload/preload-build/libconductor_preload.so}
BIN=${CONDUCTOR_PRELOAD_BIN:-$(dirname "$LIB")}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD=${CONDUCTOR_NETD_BIN:-$ROOT/target/release/conductor-netd}
DOCKER28_DIR=${DOCKER28_DIR:-/opt/conductor-net/docker-28/usr/sbin}
SYS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PATH=$SYS_PATH
export PATH
unset LD_PRELOAD CONDUCTOR_PRELOAD CONDUCTOR_PRELOAD_PATH CONDUCTOR_PRELOAD_LOG
DOCKER=/usr/bin/docker
PORT=18080
T=$(mktemp -d /tmp/preload-docker.XXXXXX)
DPID=""
FAILED=0
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }

# Links a dockerd may leave behind in this (private) namespace; gVisor does
# not report the link kind, so a later daemon would refuse a leftover
# docker0 ("not a bridge").
leftover_links() { ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E '^(veth|br-|docker0$)'; }

stop_daemon() {
    [ -n "$DPID" ] || return 0
    kill "$DPID" 2>/dev/null
    i=0
    while kill -0 "$DPID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$DPID" 2>/dev/null
    # dockerd stops the containerd it started; make sure of it (by pid)
    if [ -f "$CUR/exec/containerd/containerd.pid" ]; then
        cp=$(cat "$CUR/exec/containerd/containerd.pid" 2>/dev/null)
        [ -n "$cp" ] && kill "$cp" 2>/dev/null
    fi
    DPID=""
    for l in $(leftover_links); do ip link del "$l" 2>/dev/null; done
    return 0
}
cleanup() {
    stop_daemon
    rm -rf "$T" 2>/dev/null
}
trap cleanup EXIT INT TERM

if [ "$ENVNAME" = gvisor ] && ! mountpoint -q /sys/fs/cgroup/memory 2>/dev/null; then
    mount -t tmpfs cgroup /sys/fs/cgroup
    for c in cpu cpuacct cpuset memory devices pids; do
        mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
    done
fi
ip link set lo up 2>/dev/null

# busybox rootfs for `docker import`
mkdir -p "$T/rootfs/bin" "$T/rootfs/tmp" "$T/rootfs/www"
cp /bin/busybox "$T/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$T/rootfs/bin/$a"; done
echo hello-from-parent >"$T/rootfs/www/index.html"

# start_daemon NAME VERSION(20|28) MODE(without|with|forced|baseline)
#   -> sets CUR, SOCK, DPID; READY = start-to-ready ms (or never-ready)
start_daemon() {
    CUR=$T/$1
    SOCK=$CUR/docker.sock
    mkdir -p "$CUR/data" "$CUR/exec"
    if [ "$2" = 28 ]; then
        DOCKERD=$DOCKER28_DIR/dockerd
        DPATH=$DOCKER28_DIR:$SYS_PATH # its docker-proxy first
    else
        DOCKERD=/usr/sbin/dockerd
        DPATH=$SYS_PATH
    fi
    ARGS="--data-root $CUR/data --exec-root $CUR/exec --pidfile $CUR/docker.pid -H unix://$SOCK \
--storage-driver vfs --iptables=false --ip6tables=false --bip 172.29.0.1/24"
    LOG=""
    FORCE=0
    if [ "$3" = without ]; then
        LINE="$DOCKERD $ARGS"
    else
        [ "$3" = forced ] && FORCE=1
        L=$LIB
        [ "$3" = baseline ] && L=$BASELINE_LIB # bench: another build to compare with
        # The library's path is passed as both names the agent has used
        # for it (CONDUCTOR_PRELOAD, renamed CONDUCTOR_PRELOAD_PATH); only
        # conductor-netd sees them, never dockerd.
        # shellcheck disable=SC2086 # ARGS holds no spaces inside a word
        LINE=$(CONDUCTOR_PRELOAD=$L CONDUCTOR_PRELOAD_PATH=$L "$NETD" --json preload --dockerd "$DOCKERD" -- $ARGS | jq -r .command)
        echo "$LINE" >"$CUR/preload-line"
        # the call log costs writes: only when testing
        [ "$MODE" = test ] && LOG=$CUR/preload.log
    fi
    # Timed from here: both modes start the same way, through env, so that
    # the daemon is this subshell's pid (stopped by pid).
    t0=$(date +%s%N)
    (export PATH=$DPATH CONDUCTOR_PRELOAD_FORCE=$FORCE
     [ -n "$LOG" ] && export CONDUCTOR_PRELOAD_LOG="$LOG"
     [ -n "${STATS:-}" ] && export CONDUCTOR_PRELOAD_STATS="$STATS"
     eval "exec env $LINE") >"$CUR/dockerd.log" 2>&1 &
    DPID=$!
    i=0
    while [ $i -lt 1200 ]; do
        if $DOCKER -H "unix://$SOCK" version >/dev/null 2>&1; then
            READY=$((($(date +%s%N) - t0) / 1000000))
            return 0
        fi
        kill -0 "$DPID" 2>/dev/null || break
        sleep 0.05
        i=$((i + 1))
    done
    READY=never-ready
    return 1
}
d() { timeout -k 10 120 $DOCKER -H "unix://$SOCK" "$@"; }
fetch() { timeout 10 busybox wget -q -O- "$1" 2>&1 | tr '\n' ' ' | sed 's/ $//'; }
# WGET_3_TRIES: a fetch that tries again only on a connection reset
. "$ROOT/vm-tests/lib/wget-tries.sh"
errline() { tr '\n' ' ' <"$1" | cut -c1-300; }

# Process ids of every descendant of $1.
descendants() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = p; while (q in parent && q != root && q > 1) q = parent[q]; if (q == root && p != root) print p } }'
}

# scenario NAME VERSION MODE: one dockerd, every row; prints "R key value".
scenario() {
    start_daemon "$1" "$2" "$3"
    echo "R ready $READY"
    if [ "$3" != without ]; then
        case "$(cat "$CUR/preload-line" 2>/dev/null)" in
            "LD_PRELOAD=$LIB $DOCKERD --data-root $CUR/data "*) echo "# preload line: $(cat "$CUR/preload-line")" ;;
            *) echo "R preload-line wrong: '$(cat "$CUR/preload-line" 2>/dev/null)'" ;;
        esac
    fi
    case "$READY" in never-ready) tail -5 "$CUR/dockerd.log" | sed 's/^/# log: /'; stop_daemon; return;; esac
    tar -C "$T/rootfs" -c . | d import - bb:latest >/dev/null 2>&1 && echo "R import ok" || echo "R import failed"

    if d run -d --name parent bb httpd -f -p 8080 -h /www >/dev/null 2>"$CUR/e1"; then
        ip=$(d inspect -f '{{.NetworkSettings.IPAddress}}' parent 2>/dev/null)
        [ -n "$ip" ] && echo "R default-bridge-container ok" || echo "R default-bridge-container no address"
    else
        echo "R default-bridge-container $(errline "$CUR/e1")"
    fi
    if ! d network create cnet >/dev/null 2>"$CUR/e2"; then
        echo "R user-network-container network create: $(errline "$CUR/e2")"
    elif d run -d --name onnet --network cnet bb httpd -f -p 8080 -h /www >/dev/null 2>"$CUR/e2"; then
        ip2=$(d inspect -f '{{(index .NetworkSettings.Networks "cnet").IPAddress}}' onnet 2>/dev/null)
        [ -n "$ip2" ] && echo "R user-network-container ok" || echo "R user-network-container no address"
    else
        echo "R user-network-container $(errline "$CUR/e2")"
    fi
    # In gVisor the first connection from a fresh container to another one
    # is now and then reset, with plain Docker 20.10 too.
    a=$(d run --rm bb sh -c "$WGET_3_TRIES" "http://$ip:8080/" 2>"$CUR/c2c-bridge" | tr '\n' ' ')
    b=$(d run --rm --network cnet bb sh -c "$WGET_3_TRIES" "http://$ip2:8080/" 2>"$CUR/c2c-cnet" | tr '\n' ' ')
    [ -s "$CUR/c2c-bridge" ] && echo "# container-to-container bridge: $(errline "$CUR/c2c-bridge")"
    [ -s "$CUR/c2c-cnet" ] && echo "# container-to-container user network: $(errline "$CUR/c2c-cnet")"
    [ "$a$b" = "hello-from-parent hello-from-parent " ] && echo "R container-to-container ok" ||
        echo "R container-to-container bridge: [$a $(errline "$CUR/c2c-bridge")] user network: [$b $(errline "$CUR/c2c-cnet")]"
    a=$(fetch "http://$ip:8080/"); b=$(fetch "http://$ip2:8080/")
    [ "$a $b" = "hello-from-parent hello-from-parent" ] && echo "R sandbox-to-container ok" ||
        echo "R sandbox-to-container bridge ($ip): [$a] user network ($ip2): [$b]"
    if d run -d --name pub -p $PORT:8080 bb httpd -f -p 8080 -h /www >/dev/null 2>"$CUR/e3"; then
        a=""
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            a=$(fetch "http://127.0.0.1:$PORT/")
            [ "$a" = hello-from-parent ] && break
            sleep 0.3
        done
        [ "$a" = hello-from-parent ] && echo "R published-port ok" || echo "R published-port [$a]"
    else
        echo "R published-port $(errline "$CUR/e3")"
    fi
    a=$(d run --rm --network=container:parent bb sh -c "timeout 10 wget -q -O- http://127.0.0.1:8080/" 2>&1 | tr '\n' ' ')
    [ "$a" = "hello-from-parent " ] && echo "R network-container ok" || echo "R network-container [$a]"
    if [ "$3" != without ]; then
        # dockerd's children (containerd, shims, runc's containers,
        # docker-proxy) must not load the preload; dockerd must
        n=$(grep -c libconductor_preload "/proc/$DPID/maps" 2>/dev/null)
        kids=""
        for p in $(descendants "$DPID"); do
            grep -q libconductor_preload "/proc/$p/maps" 2>/dev/null && kids="$kids $p:$(cat "/proc/$p/comm" 2>/dev/null)"
        done
        nk=$(descendants "$DPID" | wc -l)
        if [ "${n:-0}" -gt 0 ] && [ -z "$kids" ] && [ "$nk" -gt 2 ]; then
            echo "R children-without-preload ok"
        else
            echo "R children-without-preload dockerd maps it: ${n:-0}; $nk children; children that load it:${kids:- none}"
        fi
    fi
    # teardown of what ran: the three containers must have been running
    running=$(d ps -q 2>/dev/null | wc -l)
    e=""
    [ "$running" = 3 ] || e=" only $running of 3 containers were running;"
    d stop -t 1 parent onnet pub >/dev/null 2>"$CUR/e4" || e="$e stop: $(errline "$CUR/e4")"
    d rm parent onnet pub >/dev/null 2>"$CUR/e4" || e="$e rm: $(errline "$CUR/e4")"
    d network rm cnet >/dev/null 2>"$CUR/e4" || e="$e network rm: $(errline "$CUR/e4")"
    left=$(leftover_links | grep -v '^docker0$' | tr '\n' ' ')
    [ -z "$e$left" ] && echo "R stop-rm-network-rm ok" || echo "R stop-rm-network-rm${e} left behind: [$left]"
    stop_daemon
    if [ "$3" != without ]; then
        echo "# preload log: $(grep -c ' trap [a-z]*(' "$CUR/preload.log" 2>/dev/null) trapped calls"
        grep 'refused\|not handled' "$CUR/preload.log" 2>/dev/null | sed 's/^conductor-preload\[[0-9/]*\]: //; s/fd [0-9]*/fd N/g; s/(fd N, /(/' |
            sort | uniq -c | sort -rn | sed 's/^/# handled: /'
    fi
}

ROWS="default-bridge-container user-network-container container-to-container sandbox-to-container published-port network-container stop-rm-network-rm"
v() { grep "^R $2 " "$1" | head -1 | cut -d' ' -f3-; }

# judge FILE VERSION MODE: ok/FAIL lines for one scenario
judge() {
    tag="docker$2-$3-preload"
    [ "$3" = forced ] && tag="docker$2-with-preload-forced-trap"
    expect_fail=0
    [ "$ENVNAME" = gvisor ] && [ "$2" = 28 ] && [ "$3" = without ] && expect_fail=1
    case "$(v "$1" ready)" in ''|never-ready) fail "$tag-dockerd-starts" "$(v "$1" ready)"; return ;; *) ok "$tag-dockerd-starts" ;; esac
    if [ "$3" != without ]; then
        w=$(v "$1" preload-line)
        [ -z "$w" ] && ok "$tag-started-by-conductor-netd-preload-line" || fail "$tag-started-by-conductor-netd-preload-line" "$w"
        r=$(v "$1" children-without-preload)
        [ "$r" = ok ] && ok "$tag-children-without-preload" || fail "$tag-children-without-preload" "$r"
    fi
    for row in $ROWS; do
        r=$(v "$1" "$row")
        if [ $expect_fail = 1 ]; then
            [ "$r" = ok ] && fail "$tag-$row-fails" "worked without the preload (has gVisor changed?)" ||
                ok "$tag-$row-fails ($r)"
        else
            [ "$r" = ok ] && ok "$tag-$row" || fail "$tag-$row" "$r"
        fi
    done
}

. "$(dirname "$0")/docker-bench.sh"

VERSIONS=${DOCKER_VERSIONS:-20 28}
[ -x "$DOCKER28_DIR/dockerd" ] || { fail docker28 "$DOCKER28_DIR/dockerd missing (scripts/install-docker28.sh)"; VERSIONS=20; }
MODES="without with"
[ "$ENVNAME" = kernel ] && MODES="without with forced"
for ver in $VERSIONS; do
    for mode in $MODES; do
        scenario "d$ver$mode" "$ver" "$mode" >"$T/r$ver$mode"
        sed "s/^/# docker $ver $mode: /" "$T/r$ver$mode"
        judge "$T/r$ver$mode" "$ver" "$mode"
    done
    # no regression: the same results with and without the preload wherever
    # both are expected to work
    if [ "$ENVNAME" = kernel ] || [ "$ver" = 20 ]; then
        a=$(grep -v '^R ready\|^R children\|^#' "$T/r${ver}without")
        for mode in $MODES; do
            [ "$mode" = without ] && continue
            b=$(grep -v '^R ready\|^R children\|^#' "$T/r$ver$mode")
            tag="docker$ver-with-preload"
            [ "$mode" = forced ] && tag="$tag-forced-trap"
            [ "$a" = "$b" ] && ok "$tag-no-regression" ||
                fail "$tag-no-regression" "results differ from those without the preload"
        done
    fi
done
exit $FAILED

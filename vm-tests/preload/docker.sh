#!/bin/sh
# dockerd 20.10 (Debian) with and without the preload.
#   docker.sh kernel|gvisor [test|bench]
# gvisor: run INSIDE runsc (like run.sh); kernel: inside `unshare -n -m`.
# test : for each mode (without, with preload) start a private dockerd, run a
#        bridged busybox container serving HTTP, fetch from a second bridged
#        container and from a --network=container: worker; print ok/FAIL lines
#        and require identical results with and without the preload.
# bench: dockerd start-to-ready time, BENCH_RUNS alternating runs each.
# With the preload, dockerd is started by the exact command line that
# `conductor-netd preload` prints (CONDUCTOR_NETD_BIN, default
# target/release/conductor-netd), so the line users copy is what is tested.
# Inputs: CONDUCTOR_PRELOAD_LIB as run.sh. Needs docker.io, busybox-static, jq.
ENVNAME=${1:-}
MODE=${2:-test}
case "$ENVNAME" in kernel|gvisor) ;; *) echo "usage: $0 kernel|gvisor [test|bench]" >&2; exit 2;; esac
LIB=${CONDUCTOR_PRELOAD_LIB:-/work/target-preload/preload-build/libconductor_preload.so}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD=${CONDUCTOR_NETD_BIN:-$ROOT/target/release/conductor-netd}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
unset LD_PRELOAD
DOCKER=/usr/bin/docker
T=$(mktemp -d /tmp/preload-docker.XXXXXX)
DPID=""
MOUNTS=""
FAILED=0
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }

stop_daemon() {
    [ -n "$DPID" ] || return 0
    kill "$DPID" 2>/dev/null
    i=0
    while kill -0 "$DPID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$DPID" 2>/dev/null
    # dockerd stops the containerd it started; wait for that one too
    if [ -f "$CUR/exec/containerd/containerd.pid" ]; then
        cp=$(cat "$CUR/exec/containerd/containerd.pid" 2>/dev/null)
        [ -n "$cp" ] && kill "$cp" 2>/dev/null
    fi
    DPID=""
    # dockerd leaves its bridge behind; gVisor does not report the link kind,
    # so a later daemon would refuse the leftover ("not a bridge")
    ip link del docker0 2>/dev/null
    return 0
}
cleanup() {
    stop_daemon
    for m in $MOUNTS; do umount -l "$m" 2>/dev/null; done
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

# start_daemon NAME PRELOAD -> sets CUR, SOCK, DPID; READY = start-to-ready ms
start_daemon() {
    CUR=$T/$1
    SOCK=$CUR/docker.sock
    mkdir -p "$CUR/data" "$CUR/exec"
    ARGS="--data-root $CUR/data --exec-root $CUR/exec --pidfile $CUR/docker.pid -H unix://$SOCK \
--storage-driver vfs --iptables=false --ip6tables=false --bip 172.29.0.1/24"
    LOG=""
    if [ -n "$2" ]; then
        [ "$2" = forced ] && FORCE=1 || FORCE=0
        # shellcheck disable=SC2086 # ARGS holds no spaces inside a word
        LINE=$(CONDUCTOR_PRELOAD=$LIB "$NETD" --json preload -- $ARGS | jq -r .command)
        echo "$LINE" >"$CUR/preload-line"
        # the call log costs writes: only when testing
        [ "$MODE" = test ] && LOG=$CUR/preload.log
    else
        FORCE=0
        LINE="$(command -v dockerd) $ARGS"
    fi
    # Timed from here: both modes start the same way, through env, so that
    # the daemon is this subshell's pid (stopped by pid).
    t0=$(date +%s%N)
    (export CONDUCTOR_PRELOAD_FORCE=$FORCE
     [ -n "$LOG" ] && export CONDUCTOR_PRELOAD_LOG="$LOG"
     eval "exec env $LINE") >"$CUR/dockerd.log" 2>&1 &
    DPID=$!
    i=0
    while [ $i -lt 1200 ]; do
        if $DOCKER -H "unix://$SOCK" version >/dev/null 2>&1; then
            t1=$(date +%s%N)
            READY=$(((t1 - t0) / 1000000))
            return 0
        fi
        kill -0 "$DPID" 2>/dev/null || break
        sleep 0.05
        i=$((i + 1))
    done
    READY=never-ready
    return 1
}
d() { timeout 120 $DOCKER -H "unix://$SOCK" "$@"; }

# scenario NAME PRELOAD: prints result lines "R key value"
scenario() {
    start_daemon "$1" "$2"
    echo "R ready $READY"
    if [ -n "$2" ]; then
        case "$(cat "$CUR/preload-line" 2>/dev/null)" in
            "LD_PRELOAD=$LIB /"*dockerd" --data-root $CUR/data "*) echo "# preload line: $(cat "$CUR/preload-line")" ;;
            *) echo "R preload-line wrong: '$(cat "$CUR/preload-line" 2>/dev/null)'" ;;
        esac
    fi
    case "$READY" in never-ready) tail -5 "$CUR/dockerd.log" | sed 's/^/# log: /'; stop_daemon; return;; esac
    tar -C "$T/rootfs" -c . | d import - bb:latest >/dev/null 2>&1 && echo "R import ok" || echo "R import failed"
    d run -d --name parent bb httpd -f -p 8080 -h /www >/dev/null 2>"$CUR/run.err" \
        && echo "R bridged-run ok" || echo "R bridged-run failed: $(tr '\n' ' ' <"$CUR/run.err")"
    ip=$(d inspect -f '{{.NetworkSettings.IPAddress}}' parent 2>/dev/null)
    echo "R parent-ip ${ip:+set}"
    out=$(d run --rm bb sh -c "timeout 10 wget -q -O- http://$ip:8080/" 2>&1)
    echo "R bridged-to-bridged $out"
    out=$(d run --rm --network=container:parent bb sh -c "timeout 10 wget -q -O- http://127.0.0.1:8080/" 2>&1)
    echo "R network-container $out"
    d rm -f parent >/dev/null 2>&1
    stop_daemon
    if [ -n "$2" ]; then
        echo "R preload-log trap active in dockerd: $(grep -c 'seccomp trap path active' "$CUR/preload.log" 2>/dev/null) process(es); $(grep -c ' trap ' "$CUR/preload.log" 2>/dev/null) trapped calls; $(grep -c refused "$CUR/preload.log" 2>/dev/null) refusals handled"
        grep refused "$CUR/preload.log" 2>/dev/null | sort | uniq -c | sort -rn | head -5 | sed 's/^/# refusal: /'
        sed -n 's/.* trap \([a-z]*\)(.*/\1/p' "$CUR/preload.log" 2>/dev/null | sort | uniq -c | sort -rn | tr '\n' ' ' | sed 's/^/# trapped: /; s/$/\n/' 
    fi
}

if [ "$MODE" = bench ]; then
    RUNS=${BENCH_RUNS:-5}
    : >"$T/b0"; : >"$T/b1"
    run=0
    while [ $run -lt "$RUNS" ]; do
        for mode in 0 1; do
            [ $mode = 1 ] && with=yes || with=""
            start_daemon "b$mode$run" "$with"
            if [ "$READY" = never-ready ]; then
                echo "dockerd ($([ $mode = 1 ] && echo with || echo without) the preload) never became ready:" >&2
                tail -5 "$CUR/dockerd.log" >&2
                stop_daemon
                exit 1
            fi
            echo "$READY" >>"$T/b$mode"
            stop_daemon
        done
        run=$((run + 1))
    done
    med() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
    m0=$(med "$T/b0"); m1=$(med "$T/b1")
    echo "dockerd start-to-ready ($ENVNAME): without $m0 ms [$(tr '\n' ' ' <"$T/b0")], with $m1 ms [$(tr '\n' ' ' <"$T/b1")], difference $(awk -v a="$m0" -v b="$m1" 'BEGIN { printf "%.1f", (b - a) * 100 / a }') %"
    exit 0
fi

scenario without "" >"$T/r0"
scenario with yes >"$T/r1"
sed 's/^/# without: /' "$T/r0"
sed 's/^/# with:    /' "$T/r1"
FILES="r0 r1"
if [ "$ENVNAME" = kernel ]; then
    # nothing is refused on the kernel, so the trap path is normally not
    # installed; force it on to check that it changes nothing for dockerd
    scenario forced forced >"$T/r2"
    sed 's/^/# forced:  /' "$T/r2"
    FILES="r0 r1 r2"
fi
v() { grep "^R $2 " "$1" | head -1 | cut -d' ' -f3-; }
for f in $FILES; do
    case $f in r0) tag=without ;; r1) tag=with ;; *) tag=with-forced-trap ;; esac
    case "$(v "$T/$f" ready)" in ''|never-ready) fail "dockerd-starts-$tag" "$(v "$T/$f" ready)" ;; *) ok "dockerd-starts-$tag" ;; esac
    if [ "$f" != r0 ]; then
        w=$(v "$T/$f" preload-line)
        [ -z "$w" ] && ok "started-by-conductor-netd-preload-line-$tag" || fail "started-by-conductor-netd-preload-line-$tag" "$w"
    fi
    [ "$(v "$T/$f" bridged-run)" = ok ] && ok "bridged-container-$tag" || fail "bridged-container-$tag" "$(v "$T/$f" bridged-run)"
    [ "$(v "$T/$f" bridged-to-bridged)" = hello-from-parent ] && ok "container-to-container-$tag" || fail "container-to-container-$tag" "$(v "$T/$f" bridged-to-bridged)"
    [ "$(v "$T/$f" network-container)" = hello-from-parent ] && ok "network-container-$tag" || fail "network-container-$tag" "$(v "$T/$f" network-container)"
done
# no regression: same results apart from timings and the preload's own line
a=$(grep -v '^R ready\|^R preload-log\|^#' "$T/r0")
b=$(grep -v '^R ready\|^R preload-log\|^#' "$T/r1")
[ "$a" = "$b" ] && ok dockerd-no-regression || fail dockerd-no-regression "results differ with the preload"
if [ -f "$T/r2" ]; then
    c=$(grep -v '^R ready\|^R preload-log\|^#' "$T/r2")
    [ "$a" = "$c" ] && ok dockerd-no-regression-forced-trap || fail dockerd-no-regression-forced-trap "results differ with the trap path forced"
fi
exit $FAILED

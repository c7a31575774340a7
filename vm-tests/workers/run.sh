#!/bin/bash
# vm-tests suite: `conductor-netd worker ...` (containers sharing a parent's
# network namespace) and containers on conductor networks (attach by
# --container, automatic attach by the conductor.network label), against
# the dockerd `conductor-netd docker up` starts.
#   run.sh kernel|gvisor [bench]
# `bench` prints figures instead (vm-tests/workers/bench.sh): spawn through
# netd vs `docker run --network=container:` through the docker CLI.
# Kernel: Debian's dockerd 20.10. gVisor: sid's 28.5.2 (every row), then
# 20.10 for the rows that depend on Docker's API version (spawn, run).
# Inputs: CONDUCTOR_NETD_BIN, CONDUCTOR_PRELOAD_LIB, DOCKER28 (as
# vm-tests/docker/run.sh). ONLY=20|28 runs one dockerd.
[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -u
ENVNAME=${1:-kernel}
MODE=${2:-test}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD=${CONDUCTOR_NETD_BIN:-$ROOT/target/release/conductor-netd}
LIB=${CONDUCTOR_PRELOAD_LIB:-$ROOT/target/preload-build/libconductor_preload.so}
DOCKER28=${DOCKER28:-/opt/conductor-net/docker-28/usr/sbin/dockerd}
DOCKER=/usr/bin/docker
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset LD_PRELOAD DOCKER_HOST
P=cwk$$
T=$(mktemp -d /tmp/cwk.XXXXXX)
chmod 755 "$T"
FAILED=0
NETD_PID=""
MOUNTED=""
TAG=""

ok() { echo "ok $TAG$1"; }
fail() { echo "FAIL $TAG$1: $2"; FAILED=1; }
# expect ROW GOT WANTED
expect() { if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "got '$(echo "$2" | tr '\n' ' ' | cut -c1-300)', want '$3'"; fi; }

stop_pid() {
    kill "$1" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -9 "$1" 2>/dev/null
}

down() {
    if [ -f "$T/up.json" ]; then
        "$NETD" --socket "$T/netd.sock" docker down --docker-socket "$T/d.sock" >/dev/null 2>&1
        rm -f "$T/up.json"
    fi
}

cleanup() {
    down
    [ -n "$NETD_PID" ] && stop_pid "$NETD_PID"
    for m in $MOUNTED; do umount -l "$m" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

# (/run/docker/plugins: where the dockerds look for netd's plugin socket)
for d in /run/conductor-net /var/lib/conductor-net /run/docker/plugins; do
    mkdir -p $d && mount -t tmpfs cwk $d && MOUNTED="$d $MOUNTED"
done
PLUGIN_SOCK=/run/docker/plugins/conductor.sock
ip link set lo up

# A busybox image, imported (no registry is reachable).
mkdir -p "$T/rootfs/bin" "$T/rootfs/tmp" "$T/rootfs/www" "$T/rootfs/etc"
cp /bin/busybox "$T/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$T/rootfs/bin/$a"; done
echo hello-from-parent > "$T/rootfs/www/index.html"
echo "root:x:0:0:root:/:/bin/sh" > "$T/rootfs/etc/passwd"

d() { timeout -k 10 120 $DOCKER -H "unix://$T/d.sock" "$@"; }
# The CLI under test, with DOCKER_HOST pointing at the private dockerd.
w() { DOCKER_HOST="unix://$T/d.sock" timeout -k 10 120 "$NETD" --socket "$T/netd.sock" "$@"; }

start_netd() {
    [ -n "$NETD_PID" ] && stop_pid "$NETD_PID"
    "$NETD" --socket "$T/netd.sock" serve --state-dir "$T/netd-state" \
        --docker-plugin "$PLUGIN_SOCK" --log-level "${NETD_LOG:-info}" >> "$T/netd.log" 2>&1 &
    NETD_PID=$!
    for _ in $(seq 1 400); do
        "$NETD" --socket "$T/netd.sock" status >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "  netd did not start: $(tail -3 "$T/netd.log")"
    return 1
}

up() { # up DOCKERD
    if ! CONDUCTOR_PRELOAD_PATH=$LIB "$NETD" --socket "$T/netd.sock" docker up --dockerd "$1" \
        --docker-socket "$T/d.sock" --data-root "$T/data-${TAG:-bench-}" > "$T/up.out" 2>&1; then
        fail start "docker up: $(tail -3 "$T/up.out" | tr '\n' ' ')"
        return 1
    fi
    touch "$T/up.json"
    tar -C "$T/rootfs" -c . | d import - bb:latest >/dev/null
}

# A worker command that exits at once on TERM (sleep as pid 1 ignores it).
IDLE='trap "kill \$! 2>/dev/null; exit 0" TERM; echo "hello $WNAME"; wget -q -O- http://127.0.0.1:8080/; sleep 600 & wait'

workers_rows() {
    local code
    # A parent the user started with plain docker run, serving on localhost.
    d run -d --name ${P}par bb httpd -f -p 127.0.0.1:8080 -h /www >/dev/null
    for i in 1 2 3; do
        w worker spawn --parent ${P}par --detach --name ${P}w$i -e WNAME=w$i -- sh -c "$IDLE" >/dev/null 2>"$T/spawn.err" \
            || fail spawn "$(cat "$T/spawn.err")"
    done
    # Each worker asks the parent's localhost service itself (its output is
    # in its logs): `docker exec` does not work inside gVisor (below).
    local got="" i
    for i in 1 2 3; do
        for _ in $(seq 1 100); do w worker logs ${P}w$i 2>&1 | grep -q hello-from-parent && break; sleep 0.1; done
        got="$got$(w worker logs ${P}w$i 2>&1 | tr '\n' ' ')| "
    done
    expect three-workers-reach-parent-on-localhost "$got" "hello w1 hello-from-parent | hello w2 hello-from-parent | hello w3 hello-from-parent | "
    expect ls "$(w worker ls --parent ${P}par --json | jq -r '[.[].name] | sort | join(" ")')" "${P}w1 ${P}w2 ${P}w3"
    expect ls-labels "$(d ps -q --filter label=conductor.role=worker --filter label=conductor.parent=$(d inspect -f '{{.Id}}' ${P}par) | wc -l)" 3
    expect count "$(w worker count --parent ${P}par)" 3
    if [ "$ENVNAME" = kernel ]; then
        expect exec "$(w worker exec ${P}w1 -- wget -q -O- http://127.0.0.1:8080/ 2>&1)" hello-from-parent
        w worker exec ${P}w1 -- sh -c 'exit 4'
        expect exec-exit-code $? 4
    else
        # runc's exec cannot setns inside gVisor (docs/gvisor-quirks.md):
        # the failure is reported, with Docker's reason, and non-zero.
        w worker exec ${P}w1 -- true > "$T/exec.err" 2>&1
        code=$?
        expect exec-failure-reported "$([ $code != 0 ] && grep -c setns "$T/exec.err")" 1
    fi
    expect status "$(w worker status --json | jq -r ".[0].state, (.[0].workers | length)" | tr '\n' ' ')" "running 3 "
    w worker stop ${P}w1 >/dev/null
    expect stop "$(w worker count)" 2
    w worker stop-all --parent ${P}par >/dev/null
    expect stop-all "$(w worker count)" 0
    # Removed on exit (no --keep); a --keep worker stays with its exit code.
    w worker spawn --parent ${P}par --keep --name ${P}kept -- sh -c 'exit 3' >/dev/null 2>&1
    expect spawn-foreground-exit-code $? 3
    expect keep "$(w worker status --json | jq -r '.[0].workers[] | "\(.name) \(.exit_code)"')" "${P}kept 3"
    d rm -f ${P}kept >/dev/null
    # A parent created by conductor-netd, a worker serving on its localhost.
    w worker parent create ${P}holder --image bb >/dev/null
    w worker spawn --parent ${P}holder --detach --name ${P}srv -- httpd -f -p 127.0.0.1:9090 -h /www >/dev/null
    got=$(w worker run --parent ${P}holder -- sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://127.0.0.1:9090/ 2>/dev/null && exit 0; sleep 0.2; done' 2>&1)
    expect parent-create "$got" hello-from-parent
    d rm -f ${P}holder ${P}srv >/dev/null 2>&1
}

# Parent restarts: `docker restart`, then removed and created again under its
# name. Each worker asks the parent's localhost service from its start (a
# re-created worker runs its command again), so its logs show whether the
# worker it is now reaches the parent.
ASK='for i in $(seq 1 50); do wget -q -O- http://127.0.0.1:8080/ && break; sleep 0.2; done; echo "asked $WNAME"; sleep 600 & trap "kill \$! 2>/dev/null; exit 0" TERM; wait'
restart_rows() {
    d run -d --name ${P}rpar bb httpd -f -p 127.0.0.1:8080 -h /www >/dev/null
    local i
    for i in 1 2 3; do
        w worker spawn --parent ${P}rpar --detach --name ${P}r$i -e WNAME=r$i -- sh -c "$ASK" >/dev/null 2>"$T/spawn.err" \
            || fail restart-spawn "$(cat "$T/spawn.err")"
    done
    reached() { # reached ROW: every worker is a new container whose logs show the parent's page
        local row=$1 start=$SECONDS got="" i id
        while [ $((SECONDS - start)) -lt 90 ]; do
            got=""
            for i in 1 2 3; do
                id=$(d inspect -f '{{.Id}}' ${P}r$i 2>/dev/null)
                if [ -n "$id" ] && [ "$id" != "$(eval echo \${OLD$i:-})" ] \
                    && d logs ${P}r$i 2>&1 | grep -q hello-from-parent; then got="${got}r$i "; fi
            done
            [ "$got" = "r1 r2 r3 " ] && break
            sleep 0.1
        done
        expect "$row" "$got" "r1 r2 r3 "
        echo "  $row: workers reach the parent again $((SECONDS - start)) s after it started"
    }
    asides_gone() { # the replaced workers (renamed *-replaced-*) are removed soon after: how many are left
        local until=$((SECONDS + 60)) aside=0
        while [ $SECONDS -lt $until ]; do aside=$(d ps -a --format '{{.Names}}' | grep -c -- '-replaced-'); [ "$aside" = 0 ] && break; sleep 0.2; done
        echo "$aside"
    }
    OLD1=""; OLD2=""; OLD3=""
    reached restart-workers-reach-parent
    for i in 1 2 3; do eval "OLD$i=\$(d inspect -f '{{.Id}}' ${P}r$i)"; done
    d restart -t 1 ${P}rpar >/dev/null
    reached restart-after-docker-restart
    asides_gone >/dev/null
    expect restart-count-after-docker-restart "$(w worker count --parent ${P}rpar)" 3
    for i in 1 2 3; do eval "OLD$i=\$(d inspect -f '{{.Id}}' ${P}r$i)"; done
    d rm -f ${P}rpar >/dev/null
    d run -d --name ${P}rpar bb httpd -f -p 127.0.0.1:8080 -h /www >/dev/null
    reached restart-after-parent-recreated
    expect restart-count-after-recreate "$(w worker count --parent ${P}rpar)" 3
    local aside=1
    expect restart-nothing-left-aside "$(asides_gone)" 0
    # Stopped (TERM: their trap exits) before removal: inside gVisor a forced
    # removal of a container whose shell has children hangs (gvisor-quirks).
    w worker stop-all --parent ${P}rpar >/dev/null 2>&1
    d rm -f ${P}rpar $(d ps -aq --filter name=-replaced-) >/dev/null 2>&1
}

run_rows() {
    local out err code
    out=$(echo piped-in | w worker run --parent ${P}par -i -- cat)
    expect run-stdin "$out" piped-in
    w worker run --parent ${P}par -- sh -c 'echo to-out; echo to-err >&2' > "$T/o" 2> "$T/e"
    expect run-stdout-stderr "$(cat "$T/o")|$(cat "$T/e")" "to-out|to-err"
    w worker run --parent ${P}par -- sh -c 'exit 42'
    expect run-exit-code $? 42
    # A line appears while the worker still runs.
    : > "$T/live"
    # The CLI itself in the background (not a shell function), so $! is its pid.
    DOCKER_HOST="unix://$T/d.sock" "$NETD" worker run --parent ${P}par -- sh -c 'echo early; sleep 5; echo late' > "$T/live" 2>&1 &
    local pid=$! seen=no
    for _ in $(seq 1 100); do
        if grep -q early "$T/live"; then kill -0 $pid 2>/dev/null && seen=yes; break; fi
        sleep 0.05
    done
    expect run-streams-before-exit "$seen/$(cat "$T/live")" "yes/early"
    # A signal is forwarded; its handler's exit code comes back.
    : > "$T/sig"
    DOCKER_HOST="unix://$T/d.sock" "$NETD" worker run --parent ${P}par -- sh -c 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.1; done' > "$T/sig" 2>&1 &
    local spid=$!
    for _ in $(seq 1 200); do grep -q ready "$T/sig" && break; sleep 0.05; done
    kill -TERM $spid
    wait $spid; code=$?
    expect run-signal-forwarded "$code $(tr '\n' ' ' < "$T/sig")" "7 ready got-term "
    wait $pid
    expect run-removed "$(d ps -aq --filter label=conductor.role=worker | wc -l)" 0
    w worker run --parent ${P}par -- no-such-command 2> "$T/e"
    code=$?
    expect run-missing-command "$code $(grep -c no-such-command "$T/e")" "127 1"
}

bad_inputs() {
    local code
    bad() { # bad ROW WANTED-CODE WANTED-TEXT CMD...
        local row=$1 want=$2 text=$3; shift 3
        "$@" > "$T/bad.out" 2> "$T/bad.err"; local c=$?
        if [ "$c" = "$want" ] && grep -qF -- "$text" "$T/bad.err"; then ok "bad-$row"
        else fail "bad-$row" "exit $c (want $want): $(head -c 300 "$T/bad.err")"; fi
    }
    bad parent-missing 4 "${P}nope" w worker spawn --parent ${P}nope --detach -- true
    d create --name ${P}stopped bb true >/dev/null
    bad parent-not-running 5 "${P}stopped" w worker spawn --parent ${P}stopped --detach -- true
    d rm ${P}stopped >/dev/null
    bad image-missing 4 "docker import" w worker spawn --parent ${P}par --image ${P}noimg --detach -- true
    w worker spawn --parent ${P}par --detach --name ${P}dup -- sh -c "$IDLE" >/dev/null
    bad name-in-use 5 "${P}dup" w worker spawn --parent ${P}par --detach --name ${P}dup -- true
    w worker stop ${P}dup >/dev/null
    bad not-a-worker 4 "${P}par" w worker stop ${P}par
    bad socket-missing 7 "$T/none.sock" env DOCKER_HOST=unix://$T/none.sock "$NETD" worker ls
    chmod 600 "$T/d.sock"
    bad socket-permission 6 "$T/d.sock" setpriv --reuid=65534 --regid=65534 --clear-groups env DOCKER_HOST=unix://$T/d.sock "$NETD" worker ls
    bad memory 3 '"12x"' w worker spawn --parent ${P}par --memory 12x -- true
    expect bad-nothing-left "$(d ps -aq --filter label=conductor.role=worker | wc -l)" 0
}

# Containers on conductor networks: attach --container, and by label.
n() { "$NETD" --socket "$T/netd.sock" "$@"; }
# Through nsenter, not docker exec (which fails inside gVisor).
addr_of() {
    local pid; pid=$(d inspect -f '{{.State.Pid}}' "$1" 2>/dev/null)
    [ -n "$pid" ] && [ "$pid" != 0 ] && nsenter -t "$pid" -n ip -o -4 addr show dev eth0 2>/dev/null | awk '{print $4}' | cut -d/ -f1
}
wait_addr() { # wait_addr CONTAINER: its eth0 address once it has one
    local a=""
    for _ in $(seq 1 100); do a=$(addr_of "$1"); [ -n "$a" ] && break; sleep 0.1; done
    echo "$a"
}
eps() { n --json endpoints ${P}cn | jq length; }
network_rows() {
    n network create ${P}cn --subnet 10.213.0.0/24 >/dev/null || { fail network "create failed"; return; }
    d run -d --name ${P}plain --network none bb httpd -f -p 80 -h /www >/dev/null
    local ip
    ip=$(DOCKER_HOST="unix://$T/d.sock" n --json attach ${P}cn --container ${P}plain | jq -r .endpoint.ipv4 | cut -d/ -f1)
    expect attach-container "$(addr_of ${P}plain)|$(busybox timeout 5 wget -q -O- http://$ip/ 2>&1)" "$ip|hello-from-parent"
    DOCKER_HOST="unix://$T/d.sock" n detach ${P}cn --container ${P}plain >/dev/null
    expect detach-container "$(addr_of ${P}plain)|$(eps)" "|0"
    d rm -f ${P}plain >/dev/null
    # By label: attached when it starts, detached when it dies.
    d run -d --name ${P}lab --network none --label conductor.network=${P}cn bb httpd -f -p 80 -h /www >/dev/null
    ip=$(wait_addr ${P}lab)
    expect label-attach "$(busybox timeout 5 wget -q -O- http://$ip/ 2>&1)" hello-from-parent
    d rm -f ${P}lab >/dev/null
    local left=1
    for _ in $(seq 1 100); do left=$(eps); [ "$left" = 0 ] && break; sleep 0.1; done
    expect label-detach-on-die "$left" 0
    # A label naming an unknown network: left alone, shown in status.
    d run -d --name ${P}unk --network none --label conductor.network=${P}nonet bb sleep 600 >/dev/null
    local shown=""
    for _ in $(seq 1 100); do
        shown=$(n --json status | jq -r ".labelled_containers[] | select(.name==\"${P}unk\") | .problem // empty")
        [ -n "$shown" ] && break; sleep 0.1
    done
    expect label-unknown-network "$(echo "$shown" | grep -c "${P}nonet")|$(addr_of ${P}unk)" "1|"
    d rm -f ${P}unk >/dev/null
    # Already running when netd starts; and one that died while netd was down.
    kill -9 $NETD_PID; wait $NETD_PID 2>/dev/null; NETD_PID=""
    d run -d --name ${P}early --network none --label conductor.network=${P}cn bb httpd -f -p 80 -h /www >/dev/null
    start_netd
    ip=$(wait_addr ${P}early)
    expect label-running-at-start "$(busybox timeout 5 wget -q -O- http://$ip/ 2>&1)" hello-from-parent
    kill -9 $NETD_PID; wait $NETD_PID 2>/dev/null; NETD_PID=""
    d rm -f ${P}early >/dev/null
    start_netd
    left=1
    for _ in $(seq 1 100); do left=$(eps); [ "$left" = 0 ] && break; sleep 0.1; done
    expect label-died-while-netd-down "$left" 0
    # A parent on a conductor network: its workers share its address.
    w worker parent create ${P}cpar --network ${P}cn --image bb >/dev/null
    ip=$(wait_addr ${P}cpar)
    w worker spawn --parent ${P}cpar --detach --name ${P}cw -- httpd -f -p 80 -h /www >/dev/null
    local got=""
    for _ in $(seq 1 20); do got=$(busybox timeout 5 wget -q -O- http://$ip/ 2>&1) && break; sleep 0.1; done
    expect worker-on-conductor-network "$got" hello-from-parent
    d rm -f ${P}cw ${P}cpar >/dev/null
    n network rm ${P}cn >/dev/null
}

suite() { # suite LABEL DOCKERD FULL
    TAG="$1-"
    if [ ! -x "$2" ]; then fail start "$2 is not installed (scripts/install-deps.sh)"; return; fi
    up "$2" || return
    workers_rows
    restart_rows
    run_rows
    [ "$3" = full ] && bad_inputs
    [ "$3" = full ] && network_rows
    plugin_rows
    d rm -f $(d ps -aq) >/dev/null 2>&1
    down
    [ $FAILED = 1 ] && tail -n 30 "$T/netd.log" | sed 's/^/  netd: /'
    TAG=""
}

. "$ROOT/vm-tests/workers/plugin.sh"

if [ "$MODE" = bench ]; then
    . "$ROOT/vm-tests/workers/bench.sh"
    start_netd || { fail start netd; exit 1; }
    TAG="bench-"
    up "${BENCH_DOCKERD:-$([ "$ENVNAME" = gvisor ] && echo "$DOCKER28" || echo /usr/sbin/dockerd)}" || exit 1
    bench
    d rm -f $(d ps -aq) >/dev/null 2>&1
    exit $FAILED
fi

for tool in busybox jq setpriv curl; do
    command -v $tool >/dev/null || { fail setup "$tool is not installed (scripts/install-deps.sh)"; exit 1; }
done
start_netd || { fail start "netd"; exit 1; }
if [ "$ENVNAME" = gvisor ]; then
    [ "${ONLY:-28}" = 28 ] && suite docker28 "$DOCKER28" full
    [ "${ONLY:-20}" = 20 ] && suite docker20 /usr/sbin/dockerd short
else
    [ "${ONLY:-20}" = 20 ] && suite docker20 /usr/sbin/dockerd full
fi
exit $FAILED

#!/bin/bash
# vm-tests suite: plain `docker` commands against the dockerd that
# `conductor-netd docker up` starts - Debian's 20.10 and sid's 28.5.2.
#   run.sh kernel|gvisor      (the harness runs it in a private net+mount
#                              namespace, and inside `runsc do`)
# Inside gVisor every row is also run against a plain dockerd without
# conductor-net (no preload, no netd), in the same sandbox, and both
# results are printed: the rows fail there and pass with conductor-net.
# Rows: a container gets an address; container to container; sandbox to
# container; -p; --network=container:; a name, an alias and a just-started
# container resolve on a user-defined network; a forwarded name resolves;
# egress by TCP to an HTTP server in a namespace standing for the internet
# (through `nat`, through `proxy`, through `proxy` behind an upstream
# HTTP CONNECT proxy that the test runs there); a small web + db + client
# app by names; in gVisor, the egress policy on a Docker network changed at
# runtime (a denied name, a denied address, a reset; under `auto`, the
# proxy, and with 28.5.2 under `nat` too). After `docker down`: no link, mount,
# process or rule left.
#
# Inputs: CONDUCTOR_NETD_BIN, CONDUCTOR_PRELOAD_LIB (as the other suites),
# DOCKER28 (default /opt/conductor-net/docker-28/usr/sbin/dockerd).
# ONLY=20|28 runs one dockerd; BASELINE=0 skips the runs without
# conductor-net.
[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -u
ENVNAME=${1:-kernel}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD=${CONDUCTOR_NETD_BIN:-$ROOT/target/release/conductor-netd}
LIB=${CONDUCTOR_PRELOAD_LIB:-$ROOT/target/preload-build/libconductor_preload.so}
DOCKER28=${DOCKER28:-/opt/conductor-net/docker-28/usr/sbin/dockerd}
DOCKER=/usr/bin/docker
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset LD_PRELOAD DOCKER_HOST
P=cvd$$
T=$(mktemp -d /tmp/cvd.XXXXXX)
FAILED=0
NETD_PID=""
BASE_PID=""
MOUNTED=""

ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }
log() { echo "  $*"; }

cleanup() {
    [ -n "$BASE_PID" ] && stop_pid "$BASE_PID"
    if [ -S "$T/d.sock" ] || [ -f "$T/up.json" ]; then
        "$NETD" --socket "$T/netd.sock" docker down --docker-socket "$T/d.sock" >/dev/null 2>&1
    fi
    [ -n "$NETD_PID" ] && stop_pid "$NETD_PID"
    for pid in $(cat "$T"/inet.pids 2>/dev/null); do kill "$pid" 2>/dev/null; done
    ip netns del ${P}inet 2>/dev/null
    ip link del ${P}up 2>/dev/null
    for m in $MOUNTED; do umount -l "$m" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

stop_pid() {
    kill "$1" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -9 "$1" 2>/dev/null
}

# Private run directories (the kernel run shares the machine's /run and
# /var/lib otherwise; gVisor's are in the sandbox's memory anyway).
for d in /run/conductor-net /var/lib/conductor-net; do
    mkdir -p $d && mount -t tmpfs cvd $d && MOUNTED="$d $MOUNTED"
done
ip link set lo up

# The stand-in internet: a namespace behind a veth, an HTTP server, a DNS
# server that knows example.test, and an HTTP CONNECT proxy (tinyproxy).
ip netns add ${P}inet
ip link add ${P}up type veth peer name eth0 netns ${P}inet
ip addr add 198.51.100.1/24 dev ${P}up
ip link set ${P}up up
ip -n ${P}inet addr add 198.51.100.2/24 dev eth0
ip -n ${P}inet addr add 203.0.113.10/24 dev eth0
ip -n ${P}inet link set eth0 up
ip -n ${P}inet link set lo up
# With its interface: gVisor routes nothing off-link through a default
# route without one.
ip route add default via 198.51.100.2 dev ${P}up
mkdir -p "$T/www"
echo hello-internet > "$T/www/index.html"
ip netns exec ${P}inet busybox httpd -f -p 203.0.113.10:80 -h "$T/www" & echo $! >> "$T/inet.pids"
# dnsmasq subscribes to netlink groups: inside gVisor it needs the preload.
ip netns exec ${P}inet env LD_PRELOAD="$LIB" dnsmasq --no-daemon --keep-in-foreground --port 53 \
    --listen-address 203.0.113.10 --bind-interfaces --no-resolv --no-hosts \
    --address=/example.test/203.0.113.10 --pid-file="$T/dnsmasq.pid" >/dev/null 2>&1 &
echo $! >> "$T/inet.pids"
cat > "$T/tinyproxy.conf" <<EOF
Port 8888
Listen 203.0.113.10
Timeout 30
LogFile "$T/tinyproxy.log"
LogLevel Connect
MaxClients 50
Allow 198.51.100.0/24
ConnectPort 80
ConnectPort 443
EOF
ip netns exec ${P}inet tinyproxy -d -c "$T/tinyproxy.conf" >/dev/null 2>&1 & echo $! >> "$T/inet.pids"
# The machine's resolver, for this test only: the stand-in internet's.
# Docker's embedded DNS (kernel) and conductor-netd (gVisor) both forward
# to what /etc/resolv.conf names.
echo "nameserver 203.0.113.10" > "$T/resolv.conf"
mount --bind "$T/resolv.conf" /etc/resolv.conf && MOUNTED="/etc/resolv.conf $MOUNTED"

# A busybox image, imported (no registry is reachable).
mkdir -p "$T/rootfs/bin" "$T/rootfs/tmp" "$T/rootfs/www" "$T/rootfs/etc"
cp /bin/busybox "$T/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$T/rootfs/bin/$a"; done
echo hello-from-parent > "$T/rootfs/www/index.html"
echo "root:x:0:0:root:/:/bin/sh" > "$T/rootfs/etc/passwd"

# `docker run` forwards TERM to its container, so a CLI whose dockerd never
# answers outlives a plain `timeout`: -k kills it. A dockerd that stopped
# answering once (Docker 28 without conductor-net in gVisor wedges on a
# container's network now and then) is not asked again in that run.
d() {
    [ -e "$T/wedged" ] && { echo "dockerd stopped answering" >&2; return 1; }
    local start=$SECONDS rc
    timeout -k 10 "${D_TIMEOUT:-120}" $DOCKER -H "unix://$T/d.sock" "$@"
    rc=$?
    # (by the clock: exit codes 124 and 137 also come from containers)
    [ -n "${WEDGE_FLAG:-}" ] && [ $((SECONDS - start)) -ge "${D_TIMEOUT:-120}" ] && touch "$T/wedged"
    return $rc
}
# WGET_3_TRIES: a fetch that tries again only on a connection reset
. "$ROOT/vm-tests/lib/wget-tries.sh"
# fetch_in NETWORK URL: that fetch from a fresh container; failed tries are
# noted in $RESULTS.
fetch_in() {
    local out
    out=$(d run --rm --network "$1" bb sh -c "$WGET_3_TRIES" "$2" 2>"$T/fetch.err")
    # (noted in the results, which are printed: stdout is the row's value)
    [ -s "$T/fetch.err" ] && echo "  $2 from a fresh container: $(tr '\n' ' ' < "$T/fetch.err" | cut -c1-300)" >> "$RESULTS"
    [ -n "$out" ] && echo "$out" || tr '\n' ' ' < "$T/fetch.err" | sed 's/try [0-9]: //g; s/ $//'
}
# R NAME VALUE lines collect a scenario's results.
r() { echo "R $1 $2" >> "$RESULTS"; }

start_netd() { # start_netd CONFIG-TEXT [ENV...]
    [ -n "$NETD_PID" ] && stop_pid "$NETD_PID"
    printf '%s\n' "$1" > "$T/netd.toml"
    shift
    env "$@" "$NETD" --socket "$T/netd.sock" serve --state-dir "$T/netd-state" \
        --config "$T/netd.toml" --log-level "${NETD_LOG:-warn}" >> "$T/netd.log" 2>&1 &
    NETD_PID=$!
    for _ in $(seq 1 400); do
        "$NETD" --socket "$T/netd.sock" status >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "  netd did not start: $(tail -3 "$T/netd.log")"
    return 1
}

# rows RESULTS-FILE: the docker commands every scenario runs (unchanged
# docker commands only).
rows() {
    RESULTS=$1
    tar -C "$T/rootfs" -c . | d import - bb:latest >/dev/null 2>&1
    # default bridge: an address, container to container, sandbox to it, -p
    if d run -d --name parent -p 127.0.0.1:18080:8080 bb httpd -f -p 8080 -h /www >/dev/null 2>"$T/run.err"; then
        r start ok
    else
        r start "failed: $(tr '\n' ' ' < "$T/run.err" | cut -c1-200)"
    fi
    ip=$(d inspect -f '{{.NetworkSettings.IPAddress}}' parent 2>/dev/null)
    case "$ip" in [0-9]*) r address ok ;; *) r address "none" ;; esac
    out=$(fetch_in bridge "http://$ip:8080/")
    r container-to-container "$out"
    out=$(busybox timeout 10 wget -q -O- "http://$ip:8080/" 2>&1)
    r sandbox-to-container "$out"
    out=$(busybox timeout 10 wget -q -O- "http://127.0.0.1:18080/" 2>&1)
    r published-port "$out"
    out=$(d run --rm --network=container:parent bb sh -c "timeout 10 wget -q -O- http://127.0.0.1:8080/" 2>&1)
    r network-container "$out"
    # a user-defined network: names, aliases, a container started a moment ago
    d network create ${P}net >/dev/null 2>&1
    d run -d --name web --network ${P}net --network-alias www bb httpd -f -p 80 -h /www >/dev/null 2>&1
    out=$(fetch_in ${P}net http://web/)
    r name "$out"
    if [ "$out" != hello-from-parent ]; then
        log "name: web is $(d inspect -f '{{.State.Status}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' web 2>&1);" \
            "web resolves to: $(d run --rm --network ${P}net bb nslookup web 2>&1 | tail -3 | tr '\n' ' ')"
    fi
    out=$(fetch_in ${P}net http://www/)
    r alias "$out"
    if [ "$out" != hello-from-parent ]; then
        log "alias: web is $(d inspect -f '{{.State.Status}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' web 2>&1);" \
            "www resolves to: $(d run --rm --network ${P}net bb nslookup www 2>&1 | tail -3 | tr '\n' ' ')"
    fi
    out=$(d run --rm --network ${P}net bb sh -c "
        i=0
        while [ \$i -lt 50 ] && ! nslookup \$(hostname) >/dev/null 2>&1; do i=\$((i+1)); sleep 0.1; done
        nslookup \$(hostname) >/dev/null 2>&1 && echo resolvable-at-start" 2>&1)
    r self-name "$out"
    d run -d --name fresh --network ${P}net bb httpd -f -p 80 -h /www >/dev/null 2>&1
    out=$(d run --rm --network ${P}net bb sh -c "timeout 10 wget -q -O- http://fresh/" 2>&1)
    r just-started "$out"
    out=$(d run --rm --network ${P}net bb sh -c "timeout 10 wget -q -O- http://example.test/" 2>&1)
    r forwarded-name "$out"
    # egress by TCP, from the user-defined network and the default bridge
    out=$(d run --rm --network ${P}net bb sh -c "timeout 10 wget -q -O- http://203.0.113.10/" 2>&1)
    r egress "$out"
    out=$(d run --rm bb sh -c "timeout 10 wget -q -O- http://203.0.113.10/" 2>&1)
    r egress-default-bridge "$out"
    # The default bridge has no names of Docker's, but the machine's
    # resolvers (here the stand-in internet's) work from it.
    out=$(d run --rm bb sh -c "timeout 10 wget -q -O- http://example.test/" 2>&1)
    r forwarded-name-default-bridge "$out"
    # a small app: a db-like service, a web service that asks it, a client
    # One process per container: inside gVisor a container's other
    # processes outlive its main one (and keep its namespace and veth).
    # (`exec`: the shell does not stay as a second process.) The db answers
    # one row per request; the web service's CGI asks it by name.
    d run -d --name db --network ${P}net bb sh -c 'mkdir -p /db && echo db-row-42 > /db/row && exec httpd -f -p 5432 -h /db' >/dev/null 2>&1
    d run -d --name app --network ${P}net bb sh -c 'mkdir -p /cgi-bin; printf "#!/bin/sh\necho Content-Type: text/plain; echo; wget -q -O- http://db:5432/row\n" > /cgi-bin/row; chmod +x /cgi-bin/row; exec httpd -f -p 80 -h /' >/dev/null 2>&1
    out=""
    for _ in 1 2 3 4 5; do
        out=$(d run --rm --network ${P}net bb sh -c "timeout 10 wget -q -O- http://app/cgi-bin/row" 2>&1)
        [ "$out" = db-row-42 ] && break
        sleep 0.5
    done
    r app "$out"
    d rm -f parent web fresh db app >/dev/null 2>&1
    d network rm ${P}net >/dev/null 2>&1
}

# The egress policy on a Docker network, changed at runtime: a denied name
# gets no address (DNS REFUSED), other destinations stay reachable, a denied
# address is blocked by the backend (the proxy, or nat's rules), and a reset
# lets both through again - each for the next container, no restart.
rows_policy() {
    RESULTS=$1
    local net=${P}pol out
    pn() { "$NETD" --socket "$T/netd.sock" policy "$@"; }
    d network create $net >/dev/null 2>&1
    out=$(pn set $net "deny example.test" 2>&1) || { r policy-set "$out"; return; }
    r policy-set ok
    out=$(d run --rm --network $net bb sh -c "timeout 10 wget -q -O- http://example.test/" 2>&1)
    r policy-denied-name "$out"
    out=$(d run --rm --network $net bb sh -c "timeout 10 wget -q -O- http://203.0.113.10/" 2>&1)
    r policy-other-allowed "$out"
    pn add $net "deny 203.0.113.10/32" >/dev/null 2>&1
    if [ "$ENVNAME" = kernel ]; then
        # IPv6 cannot bypass a rule: an IPv6 denial is in ip6tables for the
        # network's bridge (DOCKER-USER, or FORWARD where Docker keeps none).
        local br="br-$(d network inspect -f '{{.Id}}' $net 2>/dev/null | cut -c1-12)"
        pn add $net "deny 2001:db8:7::/48" >/dev/null 2>&1
        # (iptables-save prints the match options in its own order: -d first)
        if ip6tables-save -t filter 2>/dev/null | grep -- "^-A CNE-[UF]-$br " \
            | grep -- " -i $br ! -o $br " | grep -q -- "-d 2001:db8:7::/48 .*-j DROP\$"; then
            r policy-ipv6-rule present
        else
            r policy-ipv6-rule "missing: $(ip6tables-save -t filter 2>/dev/null | grep -E 'CNE|CONDUCTOR' | tr '\n' ' ')"
        fi
    fi
    if out=$(d run --rm --network $net bb sh -c "timeout 10 wget -q -O- http://203.0.113.10/" 2>&1); then
        r policy-denied-address "reached: $out"
    else
        r policy-denied-address blocked
        log "policy-denied-address: the client saw: $(echo "$out" | tr '\n' ' ')"
    fi
    pn reset $net >/dev/null 2>&1
    out=$(d run --rm --network $net bb sh -c "timeout 10 wget -q -O- http://example.test/" 2>&1)
    r policy-reset "$out"
    d network rm $net >/dev/null 2>&1
}

# Only the egress row (the scenarios that vary the egress backend check
# nothing else; the full rows ran with `auto`).
rows_egress() {
    RESULTS=$1
    tar -C "$T/rootfs" -c . | d import - bb:latest >/dev/null 2>&1
    d network create ${P}net >/dev/null 2>&1
    out=$(d run --rm --network ${P}net bb sh -c "timeout 10 wget -q -O- http://203.0.113.10/" 2>&1)
    r egress "$out"
    d network rm ${P}net >/dev/null 2>&1
}

# The dockerd without conductor-net, as a user would start it in gVisor.
baseline() { # baseline DOCKERD RESULTS
    mkdir -p "$T/base-data" "$T/base-exec"
    if ! mountpoint -q /sys/fs/cgroup/memory 2>/dev/null && ! [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        mount -t tmpfs cgroup /sys/fs/cgroup && MOUNTED="/sys/fs/cgroup $MOUNTED"
        for c in cpu cpuacct cpuset memory devices pids; do
            mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c && MOUNTED="/sys/fs/cgroup/$c $MOUNTED"
        done
    fi
    PATH=$(dirname "$1"):$PATH "$1" --data-root "$T/base-data" --exec-root "$T/base-exec" \
        --pidfile "$T/base.pid" -H "unix://$T/d.sock" --storage-driver vfs \
        --iptables=false --ip6tables=false > "$T/base.log" 2>&1 &
    BASE_PID=$!
    for _ in $(seq 1 600); do d version >/dev/null 2>&1 && break; sleep 0.1; done
    # Rows that fail here fail within seconds; one that hangs has wedged it.
    D_TIMEOUT=30 WEDGE_FLAG=1 rows "$2"
    [ -e "$T/wedged" ] && echo "R wedged dockerd stopped answering" >> "$2"
    rm -f "$T/wedged"
    stop_pid "$BASE_PID"; BASE_PID=""
    for c in $(cat "$T/base-exec/containerd/containerd.pid" 2>/dev/null); do stop_pid "$c"; done
    # A dockerd killed while wedged leaves its half-made veth pairs and its
    # containers' namespace mounts behind (gVisor, 28.5.2): they are the
    # baseline's, not what the next scenario's nothing-left row checks.
    for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(docker0|br-|veth)'); do ip link del "$l" 2>/dev/null; done
    for m in $(awk -v p="$T/base-" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
    for m in $(echo "$MOUNTED" | tr ' ' '\n' | grep /sys/fs/cgroup); do umount -l "$m"; done
    MOUNTED=$(echo "$MOUNTED" | tr ' ' '\n' | grep -v /sys/fs/cgroup | tr '\n' ' ')
    rm -rf "$T/base-data" "$T/base-exec"
}

docker_daemons() { # (comm is cut at 15 bytes: containerd-shim-runc-v2 shows as containerd-shim)
    ps -eo pid=,comm= | awk '$2 ~ /^(dockerd|containerd|containerd-shim|docker-proxy)$/ {print $1}' | sort
}

# With conductor-net: netd (egress backend per $1), then `docker up`.
with_netd() { # with_netd DOCKERD RESULTS EGRESS [ENV...]
    local dockerd=$1 results=$2 egress=$3; shift 3
    start_netd "egress = \"$egress\"" "$@" || { echo "R start netd-failed" >> "$results"; return; }
    local mounts_before daemons_before
    mounts_before=$(awk '{print $5}' /proc/self/mountinfo | sort | tr '\n' ' ')
    # Docker's processes already there (on the kernel pgrep sees the whole
    # machine, other people's dockerd included): only new ones are ours.
    daemons_before=$(docker_daemons)
    if ! CONDUCTOR_PRELOAD_PATH=$LIB "$NETD" --socket "$T/netd.sock" docker up --dockerd "$dockerd" \
        --docker-socket "$T/d.sock" --data-root "$T/data" > "$T/up.out" 2>&1; then
        echo "R start docker-up-failed: $(tail -3 "$T/up.out" | tr '\n' ' ')" >> "$results"
        return
    fi
    touch "$T/up.json"
    if [ "${ROWS:-all}" = egress ]; then rows_egress "$results"; else rows "$results"; fi
    # The policy under the auto backend (and under nat in gVisor). On the
    # kernel Docker does its own NAT and names: netd enforces the policy in
    # DOCKER-USER and through its forwarder on the gateway.
    if [ "${ROWS:-all}" = all ] || { [ "$ENVNAME" = gvisor ] && [ "$egress" = nat ]; }; then
        rows_policy "$results"
    fi
    [ "$ENVNAME" = gvisor ] && [ "$egress" = auto ] && [ $# = 0 ] && netd_killed "$results" "$egress"
    before_down=$( (ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vE "^(lo|${P}up)$"; grep -c " /sys/fs/cgroup" /proc/self/mountinfo) | sort | tr '\n' ' ')
    "$NETD" --socket "$T/netd.sock" docker down --docker-socket "$T/d.sock" > "$T/down.out" 2>&1 \
        || echo "R down failed: $(tr '\n' ' ' < "$T/down.out")" >> "$results"
    rm -f "$T/up.json"
    local new_mounts
    new_mounts=$(awk '{print $5}' /proc/self/mountinfo | sort | tr '\n' ' ')
    left=$( (ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vE "^(lo|${P}up)$";
             [ "$new_mounts" = "$mounts_before" ] || echo "mounts differ: $new_mounts";
             comm -13 <(echo "$daemons_before") <(docker_daemons) | sed 's/^/process /';
             iptables-legacy-save 2>/dev/null | grep -E '^-A|^:(CNE|CONDUCTOR|DOCKER)' | grep -E 'CNE|CONDUCTOR|DOCKER';
             iptables-save 2>/dev/null | grep -iE 'docker|CNE-|CONDUCTOR';
             ip6tables-save 2>/dev/null | grep -E 'CNE-|CONDUCTOR') | tr '\n' ' ')
    echo "R nothing-left ${left:-ok}" >> "$results"
    log "before down: $before_down"
    stop_pid "$NETD_PID"; NETD_PID=""
    rm -rf "$T/data" "$T/netd-state"
}

# netd killed -9 while a container runs: after a restart its name and its
# egress work again, and no rule is duplicated.
netd_killed() { # netd_killed RESULTS EGRESS
    local results=$1 egress=$2
    RESULTS=$results
    d network create ${P}keep >/dev/null 2>&1
    d run -d --name keep --network ${P}keep bb httpd -f -p 80 -h /www >/dev/null 2>&1
    local before after
    before=$(iptables-legacy-save -t nat 2>/dev/null; iptables-legacy-save -t filter 2>/dev/null)
    before=$(echo "$before" | grep -cE '^-A (CNE|CONDUCTOR|POSTROUTING|FORWARD|PREROUTING)')
    kill -9 "$NETD_PID"; wait "$NETD_PID" 2>/dev/null; NETD_PID=""
    start_netd "egress = \"$egress\"" || { r after-kill netd-failed; return; }
    local out=""
    for _ in $(seq 1 20); do
        out=$(d run --rm --network ${P}keep bb sh -c "timeout 5 wget -q -O- http://keep/" 2>&1)
        [ "$out" = hello-from-parent ] && break
        sleep 0.5
    done
    r after-kill-name "$out"
    out=$(d run --rm --network ${P}keep bb sh -c "timeout 10 wget -q -O- http://203.0.113.10/" 2>&1)
    r after-kill-egress "$out"
    after=$(iptables-legacy-save -t nat 2>/dev/null; iptables-legacy-save -t filter 2>/dev/null)
    after=$(echo "$after" | grep -cE '^-A (CNE|CONDUCTOR|POSTROUTING|FORWARD|PREROUTING)')
    [ "$before" = "$after" ] && r after-kill-rules ok || r after-kill-rules "$before rules before, $after after"
    d rm -f keep >/dev/null 2>&1
    d network rm ${P}keep >/dev/null 2>&1
}

v() { grep "^R $2 " "$1" | head -1 | cut -d' ' -f3-; }

expect_policy() { # inside check (or with `expect` defined)
    expect policy-set ok
    expect policy-denied-name "wget: bad address 'example.test'"
    expect policy-other-allowed hello-internet
    expect policy-denied-address blocked
    expect policy-reset hello-internet
}

# check TAG FILE [baseline FILE]: one ok/FAIL line per row.
check() {
    local tag=$1 f=$2 base=${3:-}
    expect() { # expect ROW WANTED
        local got; got=$(v "$f" "$1")
        local was=""
        [ -n "$base" ] && was=" (without conductor-net: $(v "$base" "$1" | cut -c1-80))"
        if [ "$got" = "$2" ]; then ok "$tag-$1$was"; else fail "$tag-$1" "got '$got'$was"; fi
    }
    expect start ok
    expect address ok
    expect container-to-container hello-from-parent
    expect sandbox-to-container hello-from-parent
    expect published-port hello-from-parent
    expect network-container hello-from-parent
    expect name hello-from-parent
    expect alias hello-from-parent
    expect self-name resolvable-at-start
    expect just-started hello-from-parent
    expect forwarded-name hello-internet
    expect egress hello-internet
    expect egress-default-bridge hello-internet
    expect forwarded-name-default-bridge hello-internet
    expect app db-row-42
    expect nothing-left ok
    expect_policy
    [ "$ENVNAME" = kernel ] && expect policy-ipv6-rule present
    if [ "$ENVNAME" = gvisor ]; then
        expect after-kill-name hello-from-parent
        expect after-kill-egress hello-internet
        expect after-kill-rules ok
    fi
}

run_docker() { # run_docker LABEL DOCKERD
    local label=$1 dockerd=$2
    if [ ! -x "$dockerd" ]; then fail "$label" "$dockerd is not installed (scripts/install-deps.sh)"; return; fi
    local base=""
    if [ "$ENVNAME" = gvisor ] && [ "${BASELINE:-1}" = 1 ]; then
        base="$T/$label.without"
        : > "$base"
        baseline "$dockerd" "$base"
        sed "s/^R /  without conductor-net: /" "$base"
    fi
    : > "$T/$label.nat"
    with_netd "$dockerd" "$T/$label.nat" auto
    sed "s/^R /  with conductor-net: /" "$T/$label.nat"
    check "$label" "$T/$label.nat" "$base"
    if [ "$ENVNAME" = gvisor ] && [ "$label" = docker28 ]; then
        # `auto` is the proxy backend here; the nat one (SNAT, by request)
        # too (with Docker 28, what users run; the backend does not depend
        # on Docker's version), and the proxy through the sandbox's own HTTP
        # proxy (CONNECT), whose log must show the connection.
        : > "$T/$label.snat"
        ROWS=egress with_netd "$dockerd" "$T/$label.snat" nat
        [ "$(v "$T/$label.snat" egress)" = hello-internet ] && ok "$label-egress-nat" \
            || fail "$label-egress-nat" "$(v "$T/$label.snat" egress)"
        expect() { # expect ROW WANTED (the nat scenario's rows)
            local got; got=$(v "$T/$label.snat" "$1")
            [ "$got" = "$2" ] && ok "$label-nat-$1" || fail "$label-nat-$1" "got '$got'"
        }
        expect_policy
        : > "$T/$label.upstream"
        : > "$T/tinyproxy.log"
        ROWS=egress with_netd "$dockerd" "$T/$label.upstream" proxy HTTPS_PROXY=http://203.0.113.10:8888 HTTP_PROXY=http://203.0.113.10:8888
        if [ "$(v "$T/$label.upstream" egress)" = hello-internet ] && grep -q "CONNECT.*203.0.113.10:80" "$T/tinyproxy.log"; then
            ok "$label-egress-through-upstream-proxy"
        else
            fail "$label-egress-through-upstream-proxy" "$(v "$T/$label.upstream" egress); proxy log: $(grep -c CONNECT "$T/tinyproxy.log") CONNECT(s)"
        fi
    fi
}

for tool in busybox dnsmasq tinyproxy jq; do
    command -v $tool >/dev/null || { fail setup "$tool is not installed (scripts/install-deps.sh)"; exit 1; }
done
[ "${ONLY:-20}" = 20 ] || [ -z "${ONLY:-}" ] && run_docker docker20 /usr/sbin/dockerd
[ "${ONLY:-28}" = 28 ] || [ -z "${ONLY:-}" ] && run_docker docker28 "$DOCKER28"
exit $FAILED

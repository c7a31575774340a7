#!/bin/sh
# The preload suite. One line per test: "ok NAME" or "FAIL NAME: reason";
# exits non-zero if any test failed.
#
#   run.sh kernel   on the host, inside a private namespace made by the caller
#                   (e.g. `unshare -n -m vm-tests/preload/run.sh kernel`)
#   run.sh gvisor   inside gVisor:
#                   runsc --network=none --net-raw --platform=ptrace do /abs/vm-tests/preload/run.sh gvisor
#
# Inputs (built beforehand by build.sh):
#   CONDUCTOR_PRELOAD_LIB  absolute path of libconductor_preload.so
#                          (default: /work/target-preload/preload-build/libconductor_preload.so)
#   CONDUCTOR_PRELOAD_BIN  directory holding nlsub (default: directory of the library)
#   PRELOAD_SKIP_DOCKER=1  skip the dockerd tests (docker.sh)
# Tests only create links with unique names in the current network
# namespace and delete them again; every background process is killed by pid.
ENVNAME=${1:-}
case "$ENVNAME" in kernel|gvisor) ;; *) echo "usage: $0 kernel|gvisor" >&2; exit 2;; esac
LIB=${CONDUCTOR_PRELOAD_LIB:-/work/target-preload/preload-build/libconductor_preload.so}
BIN=${CONDUCTOR_PRELOAD_BIN:-$(dirname "$LIB")}
NLSUB=$BIN/nlsub
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
unset LD_PRELOAD CONDUCTOR_PRELOAD CONDUCTOR_PRELOAD_LOG

T=$(mktemp -d /tmp/preload-tests.XXXXXX)
PIDS=""
LINKS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for l in $LINKS; do ip link del "$l" 2>/dev/null; done
    [ -n "${NS:-}" ] && ip netns del "$NS" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT INT TERM
FAILED=0
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }

for f in "$LIB" "$NLSUB"; do
    [ -e "$f" ] || { echo "FAIL setup: $f missing (run vm-tests/preload/build.sh)"; exit 1; }
done
ip link set lo up 2>/dev/null

# monitor_event PRELOAD NAME: start `ip monitor link` (with or without the
# preload), create bridge NAME, echo "event" if it printed it, else the
# monitor's output.
monitor_event() {
    out=$T/mon.$2
    if [ -n "$1" ]; then
        LD_PRELOAD=$LIB CONDUCTOR_PRELOAD_LOG=$T/log.$2 ip monitor link >"$out" 2>&1 &
    else
        ip monitor link >"$out" 2>&1 &
    fi
    mp=$!
    PIDS="$PIDS $mp"
    sleep 0.5
    if ! kill -0 "$mp" 2>/dev/null; then
        echo "monitor exited: $(tr '\n' ' ' <"$out")"
        return
    fi
    LINKS="$LINKS $2"
    ip link add "$2" type bridge || { echo "cannot create bridge"; return; }
    i=0
    while [ $i -lt 30 ]; do
        if grep -q "$2" "$out"; then
            kill "$mp" 2>/dev/null
            echo event
            return
        fi
        sleep 0.1
        i=$((i + 1))
    done
    kill "$mp" 2>/dev/null
    echo "no event in 3s: $(tr '\n' ' ' <"$out")"
}

# 1. ip monitor link
r0=$(monitor_event "" brmon0)
r1=$(monitor_event yes brmon1)
if [ "$ENVNAME" = gvisor ]; then
    case "$r0" in *"Cannot bind"*) ok ip-monitor-fails-without-preload ;;
        *) fail ip-monitor-fails-without-preload "expected a bind refusal, got: $r0" ;; esac
else
    [ "$r0" = event ] && ok ip-monitor-without-preload || fail ip-monitor-without-preload "$r0"
fi
[ "$r1" = event ] && ok ip-monitor-with-preload || fail ip-monitor-with-preload "$r1"
if [ "$ENVNAME" = kernel ]; then
    # 4. nothing is refused on the kernel: nothing may be intercepted
    if ! grep -q "loaded" "$T/log.brmon1" 2>/dev/null; then
        fail ip-monitor-kernel-untouched "the preload did not load"
    elif grep -q "refused" "$T/log.brmon1" 2>/dev/null; then
        fail ip-monitor-kernel-untouched "$(grep refused "$T/log.brmon1" | head -1)"
    else
        ok ip-monitor-kernel-untouched
    fi
fi

# 1b. address events and deletions (RTM_NEWADDR/DELADDR/DELLINK) via the preload
am=$T/mon.addr
LD_PRELOAD=$LIB ip monitor link address >"$am" 2>&1 &
ap=$!
PIDS="$PIDS $ap"
sleep 0.5
an=bra$$
LINKS="$LINKS $an"
ip link add "$an" type bridge && ip addr add 10.77.0.1/24 dev "$an" && sleep 0.3 &&
    ip addr del 10.77.0.1/24 dev "$an" && ip link del "$an"
i=0
while [ $i -lt 30 ] && ! grep -q "^Deleted.*$an:" "$am"; do sleep 0.1; i=$((i + 1)); done
kill "$ap" 2>/dev/null
if grep -q "^[0-9]*: $an.*inet 10.77.0.1/24" "$am" && grep -q "^Deleted.*$an.*inet 10.77.0.1/24" "$am" &&
    grep -q "^Deleted.*$an:" "$am"; then
    ok ip-monitor-address-and-delete-events
else
    fail ip-monitor-address-and-delete-events "$(tr '\n' ' ' <"$am" | cut -c1-400)"
fi

# 2. cgo Go program, vishvananda/netlink LinkSubscribeWithOptions{ListExisting}
g0=$(timeout 20 "$NLSUB" subscribe -n 20 2>&1)
g1=$(timeout 20 env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_LOG="$T/log.go" "$NLSUB" subscribe -n 20 2>&1)
echo "# without preload: $g0"
echo "# with preload:    $g1"
check_latency() { # NAME OUTPUT
    case "$2" in
        ok*)
            up=$(echo "$2" | sed -n 's/.*up_ms=\([0-9.]*\).*/\1/p')
            p99=$(echo "$2" | sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p')
            if awk -v u="$up" -v p="$p99" 'BEGIN { exit !(u < 100 && p < 100) }'; then
                ok "$1"
            else
                fail "$1" "latency over 100 ms: $2"
            fi ;;
        *) fail "$1" "$2" ;;
    esac
}
if [ "$ENVNAME" = gvisor ]; then
    case "$g0" in *"permission denied"*|*"not permitted"*) ok go-subscribe-fails-without-preload ;;
        *) fail go-subscribe-fails-without-preload "expected a refusal, got: $g0" ;; esac
else
    check_latency go-subscribe-without-preload "$g0"
fi
check_latency go-subscribe-with-preload "$g1"
if [ "$ENVNAME" = kernel ]; then
    if ! grep -q "nothing to fix here" "$T/log.go" 2>/dev/null; then
        fail go-subscribe-kernel-untouched "the start-up probe did not find a complete kernel: $(tr '\n' ' ' <"$T/log.go" | cut -c1-300)"
    elif grep -q "refused" "$T/log.go" 2>/dev/null; then
        fail go-subscribe-kernel-untouched "$(grep refused "$T/log.go" | head -1)"
    else
        ok go-subscribe-kernel-untouched
    fi
fi

if [ "$ENVNAME" = kernel ]; then
    # 4. the trap path itself (forced on, although nothing is refused here)
    # must not change what the program sees
    g2=$(timeout 20 env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_FORCE=1 CONDUCTOR_PRELOAD_LOG="$T/log.force" "$NLSUB" subscribe -n 20 2>&1)
    echo "# with preload, trap path forced: $g2"
    if ! grep -q "seccomp trap path active" "$T/log.force" 2>/dev/null; then
        fail go-subscribe-forced-trap "trap path not active: $(tr '\n' ' ' <"$T/log.force" | cut -c1-300)"
    elif grep -q "refused" "$T/log.force"; then
        fail go-subscribe-forced-trap "$(grep refused "$T/log.force" | head -1)"
    else
        check_latency go-subscribe-forced-trap "$g2"
    fi
fi

# SIGSYS not raised by the filter still reaches the program's own handler
ss=$(timeout 20 env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_FORCE=1 "$NLSUB" sigsys 2>&1)
case "$ss" in ok*) ok sigsys-chained ;; *) fail sigsys-chained "$ss" ;; esac

# glibc setuid() (all-thread signal) while a subscription reader is blocked
su=$(timeout 20 env LD_PRELOAD="$LIB" "$NLSUB" setuid 2>&1)
case "$su" in ok*) ok setuid-while-subscribed ;; *) fail setuid-while-subscribed "$su" ;; esac

# 2b. subscription inside another namespace (moby >= 28 waitForIfUpped)
NS=plns$$
if ip netns add "$NS" 2>/dev/null; then
    n1=$(timeout 20 env LD_PRELOAD="$LIB" "$NLSUB" subscribe-ns "$NS" 2>&1)
    ip netns del "$NS" 2>/dev/null
    echo "# netns subscription with preload: $n1"
    case "$n1" in ok*) ok go-subscribe-in-netns ;; *) fail go-subscribe-in-netns "$n1" ;; esac
else
    fail go-subscribe-in-netns "cannot create netns $NS"
fi

# 2c. moby >= 28 subscribes for every interface it brings up and closes the
# subscription when the link is up, on changing fd numbers: 40 of them
# (more than the 32 read filters the preload adds; beyond those, link
# events still arrive, echoed by the kernel) must each see their link, and
# nothing the preload keeps for them may outlive them (no descriptor leak,
# no reader left blocked on a closed socket).
ch=$(timeout 60 env LD_PRELOAD="$LIB" "$NLSUB" churn -n 40 2>&1)
echo "# subscription churn with preload: $ch"
case "$ch" in "ok subscriptions=40 leaked_fds=0"|"ok subscriptions=40 leaked_fds=-"*) ok go-subscription-churn ;;
    *) fail go-subscription-churn "$ch" ;; esac

# 5. children of a preloaded program are unaffected
c0=$(timeout 20 "$NLSUB" children 2>&1)
c1=$(timeout 20 env LD_PRELOAD="$LIB" "$NLSUB" children 2>&1)
c2=$(timeout 20 env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_FORCE=1 "$NLSUB" children 2>&1)
cg0=$(echo "$c0" | grep '^child-go')
cg1=$(echo "$c1" | grep '^child-go')
cg2=$(echo "$c2" | grep '^child-go')
if [ -n "$cg1" ] && [ "$cg0" = "$cg1" ] && [ "$cg0" = "$cg2" ]; then
    ok child-go-unaffected
else
    fail child-go-unaffected "without: [$cg0] with: [$cg1] with forced trap path: [$cg2]"
fi
case "$c1" in *"child-sh: LD_PRELOAD=[] ip-ok (exit: <nil>)"*) ok child-env-scrubbed ;;
    *) fail child-env-scrubbed "$c1" ;; esac
# C host (sh): its child `ip monitor` must behave as without the preload
s1=$(LD_PRELOAD=$LIB sh -c 'echo "[$LD_PRELOAD]"; timeout 1 ip monitor link 2>&1; echo "rc=$?"' 2>&1 | tr '\n' ' ')
if [ "$ENVNAME" = gvisor ]; then
    case "$s1" in "[] Cannot bind"*) ok child-of-c-host-unaffected ;;
        *) fail child-of-c-host-unaffected "$s1" ;; esac
else
    case "$s1" in "[] rc=124 ") ok child-of-c-host-unaffected ;;
        *) fail child-of-c-host-unaffected "$s1" ;; esac
fi

# 5b. no child or grandchild of a preloaded host loads the preload, whatever
# the host does with its environment: bash (its own getenv/setenv/unsetenv
# and variable table), dash, python3 (non-PIE) and a Go program (reads the
# initial environment array itself). Each host prints how many mappings of
# the library it, a child (grep) and a grandchild (sh -> grep) have.
P=libconductor_preload
SHPROBE='echo "self=$(grep -c '$P' /proc/$$/maps) child=$(grep -c '$P' /proc/self/maps) grandchild=$(sh -c "grep -c '$P' /proc/self/maps; :")"'
PYPROBE='import subprocess as s
L = "'$P'"
r = lambda a: s.run(a, capture_output=True, text=True).stdout.strip()
print("self=%d child=%s grandchild=%s" % (open("/proc/self/maps").read().count(L), r(["grep", "-c", L, "/proc/self/maps"]), r(["sh", "-c", "grep -c " + L + " /proc/self/maps; :"])))'
for host in bash dash python3 go; do
    case $host in
        bash|dash) out=$(LD_PRELOAD=$LIB /bin/$host -c "$SHPROBE" 2>&1) ;;
        python3) out=$(LD_PRELOAD=$LIB /usr/bin/python3 -c "$PYPROBE" 2>&1) ;;
        go) out=$(timeout 20 env LD_PRELOAD="$LIB" "$NLSUB" maps-probe 2>&1) ;;
    esac
    case "$out" in
        "self=0 "*) fail "children-of-$host-host" "the host itself did not load the preload: $out" ;;
        "self="*" child=0 grandchild=0") ok "children-of-$host-host" ;;
        *) fail "children-of-$host-host" "$out" ;;
    esac
done
# ... except where it is meant for them: a non-PIE host (python3) that opted
# in to the trap path keeps it for its children, which may be non-PIE
# programs mapped where its filter traps
out=$(LD_PRELOAD=$LIB CONDUCTOR_PRELOAD_NONPIE=1 CONDUCTOR_PRELOAD_FORCE=1 /usr/bin/python3 -c "$PYPROBE" 2>&1)
case "$out" in
    "self="*" child=0 "*|"self=0 "*) fail nonpie-trap-host-keeps-preload-for-children "$out" ;;
    "self="*) ok nonpie-trap-host-keeps-preload-for-children ;;
    *) fail nonpie-trap-host-keeps-preload-for-children "$out" ;;
esac

# Refused requests: with the preload the same commands succeed in gVisor; on
# the kernel the outcome is identical with and without it.
n=rq$$
LINKS="$LINKS ${n}a ${n}br"
ip link add "${n}a" type veth peer name "${n}b" && ip link add "${n}br" type bridge && ip link set "${n}a" master "${n}br"
req() { # PRELOAD -> space-separated exit codes
    pre=$1
    codes=""
    for cmd in "ip neigh replace 10.9.0.9 lladdr 02:00:00:00:00:09 dev ${n}a" \
               "ip neigh show dev ${n}a" \
               "bridge link set dev ${n}a hairpin on" \
               "ip addr replace 10.9.0.1/24 dev ${n}a valid_lft 100 preferred_lft 100"; do
        if [ -n "$pre" ]; then
            LD_PRELOAD=$LIB $cmd >/dev/null 2>&1
        else
            $cmd >/dev/null 2>&1
        fi
        codes="$codes$? "
    done
    echo "$codes"
}
q0=$(req "")
q1=$(req yes)
if [ "$ENVNAME" = gvisor ]; then
    [ "$q1" = "0 0 0 0 " ] && ok refused-requests-answered || fail refused-requests-answered "exit codes with preload: $q1 (without: $q0)"
else
    [ "$q0" = "$q1" ] && ok refused-requests-kernel-identical || fail refused-requests-kernel-identical "without: $q0 with: $q1"
fi

# the same through vishvananda/netlink (raw syscalls: the SIGSYS path)
w0=$(timeout 20 "$NLSUB" requests 2>&1)
w1=$(timeout 20 env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_FORCE=1 "$NLSUB" requests 2>&1)
echo "# Go requests without preload: $w0"
echo "# Go requests with preload:    $w1"
if [ "$ENVNAME" = gvisor ]; then
    [ "$w1" = "neigh-set=<nil> neigh-list=<nil> hairpin=<nil>" ] && ok go-refused-requests-answered ||
        fail go-refused-requests-answered "$w1"
else
    [ "$w0" = "$w1" ] && ok go-refused-requests-kernel-identical || fail go-refused-requests-kernel-identical "without: $w0 with: $w1"
fi

# moby >= 28 announces each container address: an unsolicited ARP written
# on a packet socket (gVisor refuses the write: EOPNOTSUPP, which fails the
# container start) and an unsolicited neighbour advertisement on a raw
# ICMPv6 socket (accepted). With the preload the ARP is reported as sent;
# an ordinary ARP request keeps its refusal. Through Go's raw syscalls (the
# SIGSYS path) and through libc (python3's socket.sendto, the hook path).
n=an$$
LINKS="$LINKS ${n}a"
ip link add "${n}a" type veth peer name "${n}b" && ip addr add 10.88.0.2/24 dev "${n}a" &&
    ip -6 addr add fd00:88::2/64 dev "${n}a" nodad && ip link set "${n}a" up && ip link set "${n}b" up
a0=$(timeout 20 "$NLSUB" announce "${n}a" 10.88.0.2 fd00:88::2 2>&1)
a1=$(timeout 20 env LD_PRELOAD="$LIB" "$NLSUB" announce "${n}a" 10.88.0.2 fd00:88::2 2>&1)
a2=$(timeout 20 env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_FORCE=1 "$NLSUB" announce "${n}a" 10.88.0.2 fd00:88::2 2>&1)
ARPPY='import socket, sys
ip = socket.inet_aton("10.88.0.2")
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
pkt = bytes([0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2]) + ip + bytes(6) + ip
try:
    s.sendto(pkt, (sys.argv[1], 0x0806, 0, 1, b"\xff" * 6))
    print("arp=<nil>")
except OSError as e:
    print("arp=" + e.strerror.lower())'
p0=$(/usr/bin/python3 -c "$ARPPY" "${n}a" 2>&1)
p1=$(LD_PRELOAD=$LIB /usr/bin/python3 -c "$ARPPY" "${n}a" 2>&1)
ip link del "${n}a" 2>/dev/null
echo "# announcements without preload: go: $a0 / python3: $p0"
echo "# announcements with preload:    go: $a1 / python3: $p1"
if [ "$ENVNAME" = gvisor ]; then
    case "$a0" in "arp=operation not supported "*) ok unsolicited-arp-refused-without-preload ;;
        *) fail unsolicited-arp-refused-without-preload "$a0" ;; esac
    [ "$a1" = "arp=<nil> arp-request=operation not supported na=<nil>" ] && ok go-unsolicited-arp-reported-sent ||
        fail go-unsolicited-arp-reported-sent "$a1"
    [ "$p0" = "arp=operation not supported" ] && [ "$p1" = "arp=<nil>" ] && ok libc-unsolicited-arp-reported-sent ||
        fail libc-unsolicited-arp-reported-sent "without: $p0 with: $p1"
else
    [ "$a0" = "arp=<nil> arp-request=<nil> na=<nil>" ] && [ "$a1" = "$a0" ] && [ "$a2" = "$a0" ] &&
        ok announcements-kernel-identical || fail announcements-kernel-identical "without: $a0 with: $a1 forced: $a2"
    [ "$p0" = "arp=<nil>" ] && [ "$p1" = "$p0" ] && ok libc-announcement-kernel-identical ||
        fail libc-announcement-kernel-identical "without: $p0 with: $p1"
fi

# CONDUCTOR_PRELOAD=off leaves the program untouched
o1=$(CONDUCTOR_PRELOAD=off LD_PRELOAD=$LIB timeout 1 ip monitor link 2>&1; echo "rc=$?")
o1=$(echo "$o1" | tr '\n' ' ')
if [ "$ENVNAME" = gvisor ]; then
    case "$o1" in *"Cannot bind"*) ok off-switch ;; *) fail off-switch "$o1" ;; esac
else
    case "$o1" in "rc=124 ") ok off-switch ;; *) fail off-switch "$o1" ;; esac
fi

# 3. Debian's dockerd 20.10 with and without the preload (skip: PRELOAD_SKIP_DOCKER=1)
if [ "${PRELOAD_SKIP_DOCKER:-0}" != 1 ]; then
    if command -v dockerd >/dev/null && [ -x /usr/bin/docker ]; then
        "$(dirname "$0")/docker.sh" "$ENVNAME" test || FAILED=1
    else
        fail dockerd "dockerd or /usr/bin/docker not installed (docker.io)"
    fi
fi

exit $FAILED

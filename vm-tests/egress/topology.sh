# The egress suite's and benchmark's network, made inside the current
# namespace (the "sandbox": a private namespace on the kernel, the sandbox
# root inside gVisor). Source it, set P (a unique prefix, <= 8 chars) and
# ENV (kernel|gvisor), then `topo_up` / `topo_down`.
#
#   container ns ${P}c1, ${P}c2 --veth-- bridge ${P}br (10.231.0.1/24, fd00:e9::1/64)
#   sandbox (this namespace): uplink ${P}up 192.0.2.1/24, 2001:db8:1::1/64,
#       default routes via the "internet"
#   internet ns ${P}i: 192.0.2.2/24, 2001:db8:1::2/64 on eth0, plus the
#       servers' addresses 198.51.100.10, 198.51.100.11, 2001:db8:2::10 and a
#       route back to the container subnets (worst case: a flat network, so
#       anything forwarded without translation would be answered and seen).
#
# gVisor's netstack accepts packets only for addresses on the interface they
# arrive on, so the servers' addresses sit on eth0, not lo.

GW4=10.231.0.1
SUBNET4=10.231.0.0/24
GW6=fd00:e9::1
SUBNET6=fd00:e9::/64
UP4=192.0.2.1
INET4=192.0.2.2
UP6=2001:db8:1::1
INET6=2001:db8:1::2
SERVER4=198.51.100.10
SERVER4B=198.51.100.11
SERVER6=2001:db8:2::10

topo_names() {
    BR=${P}br
    UPLINK=${P}up
    C1=${P}c1
    C2=${P}c2
    INET=${P}i
}

# ip with gVisor's netnsid refusal (EOPNOTSUPP on `ip netns add`) filtered.
_ip_batch() {
    ip -batch "$1" 2> "$1.err"
    local rc=$?
    grep -v "Operation not supported" "$1.err" >&2
    return $rc
}

# Forwarding in the sandbox starts off, as on a fresh machine: the rows that
# check "nothing leaves without a backend" depend on it, and a dockerd that an
# earlier suite ran in the same namespace leaves it on. topo_down restores it.
# Written to /proc directly: procps' `sysctl -w` gets EINVAL from gVisor
# (docs/gvisor-quirks.md), a shell's write does not.
FORWARDING_FILES="/proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding"
forwarding_off() {
    local f
    SAVED_FORWARDING=
    for f in $FORWARDING_FILES; do
        [ -e "$f" ] || continue
        SAVED_FORWARDING="$SAVED_FORWARDING $f=$(cat "$f")"
        echo 0 > "$f" || echo "  could not switch off forwarding ($f)" >&2
    done
}
forwarding_restore() {
    local kv
    for kv in ${SAVED_FORWARDING:-}; do echo "${kv#*=}" > "${kv%%=*}"; done
    SAVED_FORWARDING=
}

topo_up() {
    topo_names
    local f nodad=""
    forwarding_off
    f=$(mktemp /tmp/egress-topo.XXXXXX)
    # The kernel runs DAD on IPv6 addresses (a second or more of "tentative");
    # gVisor refuses IFA_FLAGS, and has no DAD delay to skip.
    [ "$ENV" = kernel ] && nodad=nodad
    cat > "$f" <<EOF
netns add $C1
netns add $C2
netns add $INET
link add $BR type bridge
address add $GW4/24 dev $BR
address add $GW6/64 dev $BR $nodad
link set $BR up
link add ${P}v1 type veth peer name eth0 netns $C1
link add ${P}v2 type veth peer name eth0 netns $C2
link set ${P}v1 master $BR
link set ${P}v2 master $BR
link set ${P}v1 up
link set ${P}v2 up
link add $UPLINK type veth peer name eth0 netns $INET
address add $UP4/24 dev $UPLINK
address add $UP6/64 dev $UPLINK $nodad
link set $UPLINK up
route add default via $INET4 dev $UPLINK
route add default via $INET6 dev $UPLINK
EOF
    _ip_batch "$f" || { rm -f "$f"*; return 1; }
    local n i
    for n in 1 2; do
        i=$((n + 1))
        cat > "$f" <<EOF
link set lo up
address add 10.231.0.$i/24 dev eth0
address add fd00:e9::$i/64 dev eth0 $nodad
link set eth0 up
route add default via $GW4 dev eth0
route add default via $GW6 dev eth0
EOF
        ip -n "${P}c$n" -batch "$f" || { rm -f "$f"*; return 1; }
    done
    cat > "$f" <<EOF
link set lo up
address add $INET4/24 dev eth0
address add $INET6/64 dev eth0 $nodad
address add $SERVER4/32 dev eth0
address add $SERVER4B/32 dev eth0
address add $SERVER6/128 dev eth0 $nodad
link set eth0 up
route add $SUBNET4 via $UP4 dev eth0
route add $SUBNET6 via $UP6 dev eth0
EOF
    ip -n "$INET" -batch "$f" || { rm -f "$f"*; return 1; }
    rm -f "$f"*
}

topo_down() {
    topo_names
    local ns
    for ns in $C1 $C2 $INET; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "$BR" 2>/dev/null
    ip link del "$UPLINK" 2>/dev/null
    forwarding_restore
    return 0
}

# Names and egress for conductor networks (sourced by run.sh): a daemon
# started WITH the probe serves a resolver on each network's gateway and
# gives every network that is not --internal the egress backend it chose.
# The stand-in internet is a namespace behind a veth ($P-inet) with an HTTP
# server and dnsmasq (the upstream resolver) on 203.0.113.10.

SERVICES_TESTS="network_names network_egress network_policy"
PRELOAD_LIB=${CONDUCTOR_PRELOAD_LIB:-$ROOT/target/preload-build/libconductor_preload.so}

# The stand-in internet, once per run; removed by the EXIT trap (its
# namespace is $P-*, its uplink goes with the namespace's peer).
internet_up() {
    [ -n "${INET_UP:-}" ] && return 0
    ip netns add $P-inet || return 1
    ip link add ${P}u type veth peer name eth0 netns $P-inet || return 1
    ip addr add 198.51.100.1/24 dev ${P}u && ip link set ${P}u up
    ip -n $P-inet addr add 198.51.100.2/24 dev eth0
    ip -n $P-inet addr add 203.0.113.10/24 dev eth0
    ip -n $P-inet link set eth0 up
    ip -n $P-inet link set lo up
    # With its interface: gVisor routes nothing off-link without one.
    ip route replace default via 198.51.100.2 dev ${P}u || return 1
    mkdir -p "$TMP/www" && echo hello-internet > "$TMP/www/index.html"
    ip netns exec $P-inet busybox httpd -f -p 203.0.113.10:80 -h "$TMP/www" &
    # dnsmasq subscribes to netlink groups: inside gVisor it needs the preload.
    ip netns exec $P-inet env LD_PRELOAD="$PRELOAD_LIB" dnsmasq --no-daemon --keep-in-foreground \
        --port 53 --listen-address 203.0.113.10 --bind-interfaces --no-resolv --no-hosts \
        --address=/example.test/203.0.113.10 > /dev/null 2>&1 &
    INET_UP=1
    sleep 0.3
}

start_probed_daemon() {
    NETD_PROBE=1 start_daemon 'dns_upstreams = ["203.0.113.10:53"]'
}

# Lines of our rules for a bridge, in every iptables flavour.
# (gVisor's iptables-legacy-save lists no table unless asked by name.)
rules_for() {
    local t
    { for t in nat filter mangle; do
          iptables-legacy-save -t $t 2>/dev/null; ip6tables-legacy-save -t $t 2>/dev/null
      done
      iptables-nft-save 2>/dev/null; ip6tables-nft-save 2>/dev/null; } | grep -c -- "$1"
}

t_network_names() {
    local n=network_names
    internet_up || { fail $n "stand-in internet not set up"; return; }
    fresh; start_probed_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-nm a=$P-nm-a b=$P-nm-b
    mkns $a $b || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.124.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    local ja
    ja=$(netd attach $net --netns $a --json) || { fail $n "attach $a failed"; return; }
    netd attach $net --netns $b > /dev/null || { fail $n "attach $b failed"; return; }
    local ns
    ns=$(echo "$ja" | jq -r '.endpoint.result.dns.nameservers[0]')
    [ "$ns" = 10.124.0.1 ] || { fail $n "CNI result names nameserver '$ns', not the gateway"; return; }
    local got
    got=$(ip netns exec $a busybox nslookup $b 10.124.0.1 2>&1)
    echo "$got" | grep -q "10.124.0.3" || { fail $n "$b does not resolve from $a: $got"; return; }
    got=$(ip netns exec $a busybox nslookup www.example.test 10.124.0.1 2>&1)
    echo "$got" | grep -q "203.0.113.10" || { fail $n "a forwarded name does not resolve: $got"; return; }
    # Gone with its endpoint, at once.
    netd detach $net --netns $b > /dev/null || { fail $n "detach failed"; return; }
    got=$(ip netns exec $a busybox nslookup $b 10.124.0.1 2>&1)
    echo "$got" | grep -q "10.124.0.3" && { fail $n "$b still resolves after detach"; return; }
    # Back after a restart (the records are rebuilt from the state).
    stop_daemon; start_probed_daemon || { fail $n "restart failed"; return; }
    netd attach $net --netns $b > /dev/null || { fail $n "re-attach $b failed"; return; }
    got=$(ip netns exec $b busybox nslookup $a 10.124.0.1 2>&1)
    echo "$got" | grep -q "10.124.0.2" || { fail $n "$a does not resolve after a restart: $got"; return; }
    netd network rm --force $net > /dev/null || { fail $n "rm failed"; return; }
    rmns $a $b
    pass $n
}

t_network_egress() {
    local n=network_egress
    internet_up || { fail $n "stand-in internet not set up"; return; }
    fresh; start_probed_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-eg inet=$P-in a=$P-eg-a c=$P-eg-c
    mkns $a $c || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.125.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    netd network create $inet --subnet 10.126.0.0/24 --internal > /dev/null || { fail $n "create --internal failed"; return; }
    netd attach $net --netns $a > /dev/null || { fail $n "attach failed"; return; }
    netd attach $inet --netns $c > /dev/null || { fail $n "attach to the internal network failed"; return; }
    local got
    got=$(ip netns exec $a timeout 10 busybox wget -q -O- http://203.0.113.10/ 2>&1)
    [ "$got" = hello-internet ] || { fail $n "no egress by address: '$got'"; return; }
    # By name, asking the machine's resolver: redirected to the gateway's.
    got=$(ip netns exec $a timeout 10 busybox nslookup www.example.test 192.0.2.53 2>&1)
    echo "$got" | grep -q "203.0.113.10" || { fail $n "DNS to another resolver not redirected: $got"; return; }
    got=$(ip netns exec $c timeout 6 busybox wget -q -O- http://203.0.113.10/ 2>&1)
    [ "$got" = hello-internet ] && { fail $n "an --internal network reached the internet"; return; }
    local br
    br=$(netd network inspect $net --json | jq -r .network.bridge)
    [ "$(rules_for "$br")" -gt 0 ] || { fail $n "no egress rule mentions $br"; return; }
    # A restart neither loses nor duplicates rules.
    local before after
    before=$(rules_for "$br")
    kill9_daemon; start_probed_daemon || { fail $n "restart failed"; return; }
    after=$(rules_for "$br")
    [ "$before" = "$after" ] || { fail $n "rules for $br: $before before kill -9, $after after"; return; }
    got=$(ip netns exec $a timeout 10 busybox wget -q -O- http://203.0.113.10/ 2>&1)
    [ "$got" = hello-internet ] || { fail $n "no egress after kill -9 and restart: '$got'"; return; }
    netd network rm --force $net > /dev/null || { fail $n "rm failed"; return; }
    netd network rm --force $inet > /dev/null || { fail $n "rm internal failed"; return; }
    [ "$(rules_for "$br")" = 0 ] || { fail $n "rules for $br left after network rm"; return; }
    rmns $a $c
    pass $n
}

# The egress policy on a conductor network, through the daemon: a denied
# name is REFUSED by the gateway's resolver, a denied range is not reached
# (nat on the kernel, the proxy in gVisor), and a change applies at once.
t_network_policy() {
    local n=network_policy
    internet_up || { fail $n "stand-in internet not set up"; return; }
    fresh; start_probed_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-po a=$P-po-a
    mkns $a || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.127.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    netd attach $net --netns $a > /dev/null || { fail $n "attach failed"; return; }
    local got
    got=$(ip netns exec $a timeout 10 busybox wget -q -O- http://203.0.113.10/ 2>&1)
    [ "$got" = hello-internet ] || { fail $n "no egress before the policy: '$got'"; return; }
    netd policy set $net "deny *.example.test" "deny 203.0.113.0/24" > /dev/null \
        || { fail $n "policy set failed"; return; }
    got=$(ip netns exec $a timeout 10 busybox nslookup www.example.test 10.127.0.1 2>&1)
    echo "$got" | grep -q "203.0.113.10" && { fail $n "a denied name resolved: $got"; return; }
    got=$(ip netns exec $a timeout 8 busybox wget -q -O- http://203.0.113.10/ 2>&1)
    [ "$got" = hello-internet ] && { fail $n "a denied range was reached"; return; }
    # A bad rule is refused with its position, and changes nothing.
    got=$(netd policy add $net "deny 10.0.0.0/33" 2>&1) && { fail $n "a bad rule was accepted"; return; }
    echo "$got" | grep -q "10.0.0.0/33" || { fail $n "the refusal does not name the rule: $got"; return; }
    netd policy reset $net > /dev/null || { fail $n "policy reset failed"; return; }
    got=$(ip netns exec $a timeout 10 busybox wget -q -O- http://203.0.113.10/ 2>&1)
    [ "$got" = hello-internet ] || { fail $n "no egress after the reset: '$got'"; return; }
    got=$(ip netns exec $a timeout 10 busybox nslookup www.example.test 10.127.0.1 2>&1)
    echo "$got" | grep -q "203.0.113.10" || { fail $n "name not resolved after the reset: $got"; return; }
    netd network rm --force $net > /dev/null || { fail $n "rm failed"; return; }
    rmns $a
    pass $n
}

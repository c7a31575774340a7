#!/bin/bash
# vm-tests suite for conductor-netd: run.sh ENV (kernel|gvisor), as root.
#
# The harness (cargo run -p vm-tests --release) runs this on the real kernel
# inside a private network + mount namespace with a private /run/netns, and
# inside `runsc --network=none --net-raw --platform=ptrace do`. Prints one
# line per test: `ok NAME` or `FAIL NAME: reason`.
#
# The binary under test: $CONDUCTOR_NETD_BIN, else
# ${CARGO_TARGET_DIR:-<workspace>/target}/release/conductor-netd (then debug/).
# Every daemon here has its own temporary state dir and socket, and is
# stopped by pid; every namespace is named cndt<PID>-*; the EXIT trap removes
# whatever a failed test left behind.
#
# Needs: ip (iproute2), busybox (nc), jq, setpriv.
# Run one test: ONLY=crash_recovery run.sh kernel

[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -u

. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
. "$HERE/hardening.sh"
. "$HERE/recovery.sh"
. "$HERE/services.sh"

# ---------------------------------------------------------------- tests

t_network_lifecycle() {
    local n=network_lifecycle
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-life
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    local j; j=$(netd network inspect $net --json) || { fail $n "inspect failed"; return; }
    local br gw sub
    br=$(echo "$j" | jq -r .network.bridge)
    gw=$(echo "$j" | jq -r .network.gateway)
    sub=$(echo "$j" | jq -r .network.subnet)
    [ ${#br} -le 15 ] || { fail $n "bridge name $br longer than 15 bytes"; return; }
    ip link show "$br" > /dev/null 2>&1 || { fail $n "bridge $br not in the kernel"; return; }
    ip -o -4 addr show dev "$br" | grep -q " $gw/" || { fail $n "gateway $gw not on $br"; return; }
    netd network ls --json | jq -e --arg n $net 'map(select(.name==$n)) | length == 1' > /dev/null \
        || { fail $n "not listed"; return; }
    # An automatic subnet avoids what is already routed: make the next /24 busy.
    local second=$P-life2
    netd network create $second --json > "$TMP/second.json" || { fail $n "second create failed"; return; }
    [ "$(jq -r .subnet "$TMP/second.json")" != "$sub" ] || { fail $n "two networks share $sub"; return; }
    netd network rm $second > /dev/null || { fail $n "rm second failed"; return; }
    # State survives a restart.
    stop_daemon; start_daemon || { fail $n "restart failed"; return; }
    netd network inspect $net > /dev/null || { fail $n "network lost across a restart"; return; }
    netd network rm $net > /dev/null || { fail $n "rm failed"; return; }
    ip link show "$br" > /dev/null 2>&1 && { fail $n "bridge $br still there after rm"; return; }
    [ "$(netd network ls --json | jq length)" = 0 ] || { fail $n "networks left"; return; }
    [ -z "$(ls "$STATE/networks")" ] || { fail $n "state files left"; return; }
    pass $n
}

t_attach_detach_traffic() {
    local n=attach_detach_traffic
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-tr a=$P-tr-a b=$P-tr-b
    mkns $a $b || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.123.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    local ja jb
    ja=$(netd attach $net --netns $a --json) || { fail $n "attach $a failed"; return; }
    # A pid target: a process living in namespace b.
    ip netns exec $b sleep 300 &
    local spid=$!
    sleep 0.2
    jb=$(netd attach $net --pid $spid --json) || { fail $n "attach --pid failed"; return; }
    local ipa ipb
    ipa=$(echo "$ja" | jq -r .endpoint.ipv4)
    ipb=$(echo "$jb" | jq -r .endpoint.ipv4)
    [ "$(ns_addr $a)" = "$ipa" ] || { fail $n "eth0 in $a has '$(ns_addr $a)', API says $ipa"; return; }
    [ "$(ns_addr $b)" = "$ipb" ] || { fail $n "eth0 in $b has '$(ns_addr $b)', API says $ipb"; return; }
    ip -n $a route show default | grep -q "via 10.123.0.1" || { fail $n "no default route via the gateway in $a"; return; }
    [ "$(echo "$ja" | jq -r '.endpoint.result.ips[0].gateway')" = 10.123.0.1 ] || { fail $n "CNI result lacks the gateway"; return; }
    local r
    r=$(echo_test $a $b "${ipa%/*}" 7001) || { fail $n "$r"; return; }
    r=$(echo_test $b $a "${ipb%/*}" 7002) || { fail $n "$r"; return; }
    # Detach: the interface goes away on both sides.
    local host
    host=$(echo "$ja" | jq -r .endpoint.host_ifname)
    netd detach $net --netns $a > /dev/null || { fail $n "detach failed"; return; }
    ip -n $a link show eth0 > /dev/null 2>&1 && { fail $n "eth0 still in $a after detach"; return; }
    ip link show "$host" > /dev/null 2>&1 && { fail $n "host end $host still there"; return; }
    netd detach $net --pid $spid > /dev/null || { fail $n "detach --pid failed"; return; }
    kill $spid 2>/dev/null; wait $spid 2>/dev/null
    netd network rm $net > /dev/null || { fail $n "rm failed"; return; }
    rmns $a $b
    pass $n
}

t_idempotency() {
    local n=idempotency
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-idem a=$P-idem-a
    mkns $a || { fail $n "ip netns add failed"; return; }
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    local j1 j2 j3
    j1=$(netd attach $net --netns $a --json) || { fail $n "attach failed"; return; }
    j2=$(netd attach $net --netns $a --json) || { fail $n "second attach failed"; return; }
    [ "$(echo "$j1" | jq -c .endpoint)" = "$(echo "$j2" | jq -c .endpoint)" ] || { fail $n "second attach answered differently"; return; }
    [ "$(echo "$j2" | jq -r .created)" = false ] || { fail $n "second attach claims it created something"; return; }
    # The same namespace named another way (a pid inside it) is the same target.
    ip netns exec $a sleep 300 &
    local spid=$!
    sleep 0.2
    j3=$(netd attach $net --pid $spid --json) || { fail $n "attach by pid failed"; return; }
    [ "$(echo "$j3" | jq -r .endpoint.id)" = "$(echo "$j1" | jq -r .endpoint.id)" ] || { fail $n "the pid of the same namespace got another endpoint"; return; }
    kill $spid; wait $spid 2>/dev/null
    [ "$(ip -n $a -o link show | wc -l)" = 2 ] || { fail $n "$a has $(ip -n $a -o link show | wc -l) links, want lo + eth0"; return; }
    [ "$(netd endpoints --json | jq length)" = 1 ] || { fail $n "more than one endpoint"; return; }
    netd detach $net --netns $a > /dev/null || { fail $n "detach failed"; return; }
    [ "$(netd detach $net --netns $a --json | jq -r .detached)" = false ] || { fail $n "second detach did something"; return; }
    netd network rm $net > /dev/null
    rmns $a
    pass $n
}

t_rollback() {
    local n=rollback
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local n1=$P-rb1 n2=$P-rb2 a=$P-rb-a c=$P-rb-c d=$P-rb-d
    mkns $a $c $d || { fail $n "ip netns add failed"; return; }
    netd network create $n1 --subnet 10.124.1.0/24 > /dev/null || { fail $n "create failed"; return; }
    netd network create $n2 --subnet 10.124.2.0/24 > /dev/null || { fail $n "create failed"; return; }
    netd attach $n1 --netns $a > /dev/null || { fail $n "attach failed"; return; }
    local before_links
    before_links=$(host_links | sort)
    # Mid-attach failure on Linux: the veth and its address go in, then the
    # default route collides with the one from the first network. (gVisor
    # accepts a second default route out of another interface, so there only
    # the injected failure below applies.)
    local out
    if [ "$ENV" = kernel ]; then
        if out=$(netd attach $n2 --netns $a --ifname eth1 2>&1); then
            fail $n "attach with a colliding default route succeeded"; return
        fi
        echo "$out" | grep -q "default route" || { fail $n "error does not explain: $out"; return; }
        ip -n $a link show eth1 > /dev/null 2>&1 && { fail $n "eth1 left in $a"; return; }
        [ "$(host_links | sort)" = "$before_links" ] || { fail $n "host links changed"; return; }
        [ "$(netd endpoints $n2 --json | jq length)" = 0 ] || { fail $n "endpoint record left"; return; }
        [ "$(state_endpoints)" = 1 ] || { fail $n "state record left"; return; }
        # Its address was handed back: it can be asked for.
        local ip
        ip=$(netd attach $n2 --netns $c --ip 10.124.2.2 --json | jq -r .endpoint.ipv4)
        [ "$ip" = 10.124.2.2/24 ] || { fail $n "address 10.124.2.2 not released (got '$ip')"; return; }
    fi
    netd network rm $n1 --force > /dev/null; netd network rm $n2 --force > /dev/null
    # Injected failure after the kernel step (test-only hook).
    stop_daemon
    CONDUCTOR_NETD_FAULT=after_create_endpoint start_daemon || { fail $n "daemon with fault did not start"; return; }
    netd network create $n1 --subnet 10.124.1.0/24 > /dev/null || { fail $n "create failed"; return; }
    before_links=$(host_links | sort)
    if out=$(netd attach $n1 --netns $d 2>&1); then fail $n "injected failure did not fail"; return; fi
    echo "$out" | grep -q injected || { fail $n "unexpected error: $out"; return; }
    ip -n $d link show eth0 > /dev/null 2>&1 && { fail $n "eth0 left in $d"; return; }
    [ "$(host_links | sort)" = "$before_links" ] || { fail $n "host links changed after injected failure"; return; }
    [ "$(state_endpoints)" = 0 ] || { fail $n "state left after injected failure"; return; }
    netd network rm $n1 > /dev/null
    stop_daemon
    rmns $a $c $d
    pass $n
}

t_concurrency() {
    local n=concurrency
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-conc count=$N_CONCURRENT names=() i
    for i in $(seq 1 $count); do names+=("$P-c$i"); done
    mkns "${names[@]}" || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.125.0.0/22 > /dev/null || { fail $n "create failed"; return; }
    mkdir -p "$TMP/conc"
    local t0=$(date +%s%N) pids=()
    for i in $(seq 1 $count); do
        netd attach $net --netns "$P-c$i" --json > "$TMP/conc/$i.json" 2> "$TMP/conc/$i.err" &
        pids+=($!)
    done
    wait "${pids[@]}"
    local t1=$(date +%s%N)
    local okc
    okc=$(cat "$TMP"/conc/*.json | jq -s 'map(select(.created == true)) | length')
    [ "$okc" = "$count" ] || { fail $n "$okc of $count attaches succeeded: $(cat "$TMP"/conc/*.err | sort | uniq -c | head -3)"; return; }
    local distinct
    distinct=$(cat "$TMP"/conc/*.json | jq -r .endpoint.ipv4 | sort -u | wc -l)
    [ "$distinct" = "$count" ] || { fail $n "only $distinct distinct addresses"; return; }
    local kernel
    kernel=$(for i in $(seq 1 $count); do ns_addr "$P-c$i"; done | sort -u | wc -l)
    [ "$kernel" = "$count" ] || { fail $n "kernel shows $kernel distinct addresses"; return; }
    log "$count concurrent attaches in $(( (t1 - t0) / 1000000 )) ms"
    t0=$(date +%s%N); pids=()
    for i in $(seq 1 $count); do
        netd detach $net --netns "$P-c$i" > /dev/null 2>> "$TMP/conc/detach.err" &
        pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s%N)
    log "$count concurrent detaches in $(( (t1 - t0) / 1000000 )) ms"
    [ "$(netd endpoints --json | jq length)" = 0 ] || { fail $n "endpoints left: $(head -3 "$TMP/conc/detach.err")"; return; }
    local left
    left=$(host_links | grep -c "^cn$(tag)")
    [ "$left" = 0 ] || { fail $n "$left host veths left"; return; }
    netd network rm $net > /dev/null
    rmns "${names[@]}"
    pass $n
}

t_crash_recovery() {
    local n=crash_recovery
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-crash names=() i
    for i in $(seq 1 16); do names+=("$P-k$i"); done
    mkns "${names[@]}" || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.126.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    local stop=$TMP/stop-stream
    rm -f "$stop"
    # Clients attaching and detaching at random, through every restart.
    local w pids=()
    rm -f "$TMP"/ops.*
    for w in $(seq 1 $CRASH_CONCURRENCY); do
        (
            while [ ! -e "$stop" ]; do
                local k=$(( RANDOM % 16 + 1 ))
                if [ $(( RANDOM % 3 )) != 0 ]; then
                    if netd attach $net --netns "$P-k$k" > /dev/null 2>&1; then
                        echo a >> "$TMP/ops.$w"
                    else
                        sleep 0.02
                    fi
                else
                    if netd detach $net --netns "$P-k$k" > /dev/null 2>&1; then
                        echo d >> "$TMP/ops.$w"
                    else
                        sleep 0.02
                    fi
                fi
            done
        ) &
        pids+=($!)
    done
    local kills=0 fails=0
    while [ $kills -lt $KILLS ]; do
        sleep "0.$(( RANDOM % 20 + 2 ))"
        kill9_daemon
        kills=$((kills + 1))
        start_daemon || fails=$((fails + 1))
        [ $fails -gt 3 ] && break
    done
    touch "$stop"
    wait "${pids[@]}"
    [ $fails -le 3 ] || { fail $n "daemon failed to restart $fails times"; return; }
    # One more restart with nothing in flight, then compare.
    kill9_daemon; start_daemon || { fail $n "final restart failed"; return; }
    local api
    api=$(netd endpoints $net --json) || { fail $n "endpoints failed"; return; }
    local cnt dup
    cnt=$(echo "$api" | jq length)
    dup=$(echo "$api" | jq -r '.[].ipv4' | sort | uniq -d)
    [ -z "$dup" ] || { fail $n "address handed out twice: $dup"; return; }
    local mism=""
    for i in $(seq 1 16); do
        local k="$P-k$i" want have
        want=$(echo "$api" | jq -r --arg k "$k" '.[] | select(.target.netns == $k) | .ipv4')
        have=$(ns_addr "$k")
        [ "$want" = "$have" ] || mism="$mism $k(api '$want' kernel '$have')"
        [ "$(ip -n "$k" -o link show | wc -l)" -le 2 ] || mism="$mism $k(extra links)"
    done
    [ -z "$mism" ] || { fail $n "after $kills kills kernel and API differ:$mism"; return; }
    local hl
    hl=$(host_links | grep -c "^cn$(tag)")
    [ "$hl" = "$cnt" ] || { fail $n "$hl host veths for $cnt endpoints"; return; }
    [ "$(state_endpoints)" = "$cnt" ] || { fail $n "$(state_endpoints) endpoint records in the state journal for $cnt endpoints"; return; }
    local nops
    nops=$(cat "$TMP"/ops.* 2>/dev/null | wc -l)
    [ "$nops" -ge 20 ] || { fail $n "only $nops operations succeeded during the kills"; return; }
    log "$kills kill -9 restarts during $nops successful attaches/detaches; $cnt endpoints consistent"
    netd network rm $net --force > /dev/null || { fail $n "rm --force failed"; return; }
    rmns "${names[@]}"
    pass $n
}

t_reconcile() {
    local n=reconcile
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-rec a=$P-rec-a b=$P-rec-b
    mkns $a $b || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.127.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    netd attach $net --netns $a > /dev/null || { fail $n "attach a failed"; return; }
    local hb
    hb=$(netd attach $net --netns $b --json | jq -r .endpoint.host_ifname)
    local br
    br=$(netd network inspect $net --json | jq -r .network.bridge)
    stop_daemon
    # While down: b's name goes away but a process keeps the namespace (and
    # so the veth) alive; someone deletes the bridge.
    ip netns exec $b sleep 300 &
    local spid=$!
    sleep 0.2
    ip netns del $b
    ip link del "$br"
    start_daemon || { fail $n "restart failed"; return; }
    ip link show "$br" > /dev/null 2>&1 || { fail $n "bridge $br not recreated"; return; }
    ip link show "$hb" > /dev/null 2>&1 && { fail $n "host veth $hb of the gone namespace kept"; return; }
    [ "$(netd endpoints --json | jq length)" = 1 ] || { fail $n "want 1 endpoint kept"; return; }
    # The kept endpoint works through the recreated bridge.
    mkns $b || { fail $n "ip netns add failed"; return; }
    netd attach $net --netns $b > /dev/null || { fail $n "re-attach failed"; return; }
    local ipa r
    ipa=$(ns_addr $a)
    r=$(echo_test $a $b "${ipa%/*}" 7003) || { fail $n "after reconcile: $r"; return; }
    kill $spid; wait $spid 2>/dev/null
    netd network rm $net --force > /dev/null
    rmns $a $b
    pass $n
}

t_permissions() {
    local n=socket_permissions
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local mode out
    mode=$(stat -c %a "$SOCK")
    [ "$mode" = 660 ] || { fail $n "socket mode $mode, want 660"; return; }
    chmod 755 "$TMP"
    if out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" --socket "$SOCK" network ls 2>&1); then
        fail $n "uid 65534 was let in"; return
    fi
    echo "$out" | grep -qi "permission denied" || { fail $n "unexpected: $out"; return; }
    # With an open socket file, SO_PEERCRED still refuses the peer. (gVisor
    # reports the daemon's own credentials for every peer: the daemon then
    # refuses everyone while the socket lets others in.)
    fresh; start_daemon 'socket_mode = "0666"' || { fail $n "daemon did not start"; return; }
    if out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" --socket "$SOCK" network create x 2>&1); then
        fail $n "uid 65534 was let in through SO_PEERCRED"; return
    fi
    local want="uid 65534 is not allowed"
    [ "$ENV" = gvisor ] && want="SO_PEERCRED reports this daemon's own credentials"
    echo "$out" | grep -q "$want" || { fail $n "unexpected: $out"; return; }
    [ -z "$(ls "$STATE/networks")" ] || { fail $n "state changed"; return; }
    # Members of the configured group are let in.
    fresh; start_daemon 'socket_group = "4242"' || { fail $n "daemon did not start"; return; }
    out=$(setpriv --reuid=65534 --regid=65534 --groups=4242 "$BIN" --socket "$SOCK" network ls --json 2>&1) \
        || { fail $n "group member refused: $out"; return; }
    pass $n
}

t_doctor() {
    local n=doctor
    local before after j
    before=$( (ip netns list; host_links) | sort)
    j=$("$BIN" doctor --json) || { fail $n "doctor failed"; return; }
    after=$( (ip netns list; host_links) | sort)
    [ "$before" = "$after" ] || { fail $n "left something behind: $(diff <(echo "$before") <(echo "$after") | head -3)"; return; }
    local kind sub snat masq nft
    kind=$(echo "$j" | jq -r .platform.kind)
    sub=$(echo "$j" | jq -r '.checks[] | select(.id=="netlink_subscription") | .outcome')
    snat=$(echo "$j" | jq -r '.checks[] | select(.id=="iptables_snat") | .outcome')
    masq=$(echo "$j" | jq -r '.checks[] | select(.id=="iptables_masquerade") | .outcome')
    nft=$(echo "$j" | jq -r '.checks[] | select(.id=="nftables") | .outcome')
    # SNAT is tried with -p tcp (gVisor takes it only with a protocol) and
    # REDIRECT is what the proxy egress backend needs: both work everywhere.
    for id in named_netns bridge veth move_by_fd addresses routes iptables_snat iptables_redirect; do
        [ "$(echo "$j" | jq -r --arg id $id '.checks[] | select(.id==$id) | .outcome')" = ok ] \
            || { fail $n "$id does not work here"; return; }
    done
    if [ "$ENV" = gvisor ]; then
        [ "$kind" = gvisor ] || { fail $n "platform $kind, want gvisor"; return; }
        [ "$sub" = fail ] || { fail $n "subscription $sub inside gVisor, want fail"; return; }
        [ "$masq" = fail ] || { fail $n "MASQUERADE $masq inside gVisor, want fail"; return; }
        [ "$nft" = fail ] || { fail $n "nftables $nft inside gVisor, want fail"; return; }
    else
        [ "$kind" = kernel ] || { fail $n "platform $kind, want kernel"; return; }
        [ "$sub" = ok ] || { fail $n "subscription $sub on the kernel, want ok"; return; }
        [ "$masq" = ok ] || { fail $n "MASQUERADE $masq on the kernel, want ok"; return; }
    fi
    "$BIN" doctor | grep -q "^netlink subscription" || { fail $n "table lacks the subscription row"; return; }
    # The table says what was really tried.
    local masq_detail
    masq_detail=$(echo "$j" | jq -r '.checks[] | select(.id=="iptables_masquerade") | .detail')
    case "$masq_detail" in
        *"-j MASQUERADE"*) ;;
        *) fail $n "MASQUERADE row does not show its rule: $masq_detail"; return ;;
    esac
    case "$masq_detail" in *"-p tcp"*) fail $n "MASQUERADE row claims -p tcp: $masq_detail"; return ;; esac
    log "platform=$kind subscription=$sub snat=$snat masquerade=$masq nftables=$nft"
    pass $n
}

t_bad_inputs() {
    local n=bad_inputs
    fresh; start_daemon 'pool = "10.128.0.0/23"' || { fail $n "daemon did not start"; return; }
    local net=$P-bad a=$P-bad-a b=$P-bad-b
    mkns $a $b || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.129.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    netd network create $P-auto > /dev/null || { fail $n "auto create failed"; return; }
    netd attach $net --netns $a --ip 10.129.0.10 > /dev/null || { fail $n "attach failed"; return; }
    local snap_api snap_kernel
    snapshot() { echo "$(netd network ls --json)$(netd endpoints --json)"; }
    snap_api=$(snapshot)
    snap_kernel=$( (host_links; ip -n $a -o addr; ip -n $b -o addr) | sort)
    local errors=0
    # bad CODE EXPECTED-TEXT ARGS...: must fail with the exit code of its
    # error class (3 invalid, 4 not found, 5 conflict) and name the value.
    bad() {
        local code=$1 text=$2; shift 2
        local out rc
        out=$(netd "$@" 2>&1); rc=$?
        if [ $rc -ne "$code" ] || ! echo "$out" | grep -qF -- "$text"; then
            echo "  bad input '$*': exit $rc, '$out' (want $code and '$text')"
            errors=$((errors + 1))
        fi
    }
    bad 5 "overlaps network" network create $P-x --subnet 10.129.0.128/25
    bad 3 "10.130.0.5/24" network create $P-x --subnet 10.130.0.5/24
    bad 3 "10.131.0.1" network create $P-x --subnet 10.130.0.0/24 --gateway 10.131.0.1
    bad 3 "longer than 64" network create "$(printf 'n%.0s' $(seq 1 65))"
    bad 3 "bad!name" network create 'bad!name'
    bad 5 "already exists" network create $net
    netd network create $P-auto2 > /dev/null || errors=$((errors + 1))
    bad 5 "exhausted" network create $P-auto3
    netd network rm $P-auto2 > /dev/null || errors=$((errors + 1))
    bad 4 "network \"$P-nope\" not found" attach $P-nope --netns $b
    bad 4 "pid \"999999\" not found" attach $net --pid 999999
    bad 4 "netns \"$P-ghost\" not found" attach $net --netns $P-ghost
    bad 5 "10.129.0.10 is already in use" attach $net --netns $b --ip 10.129.0.10
    bad 3 "outside the subnet" attach $net --netns $b --ip 10.200.0.1
    bad 3 "10.129.0.1" attach $net --netns $b --ip 10.129.0.1
    bad 3 "malformed" api POST /v1/networks --data '{"name": '
    bad 3 "colour" api POST /v1/networks --data '{"name":"x","colour":"red"}'
    bad 3 "invalid type" api POST /v1/networks --data '{"name": 12}'
    bad 3 "invalid type" api POST "/v1/networks/$net/endpoints" --data '{"pid": "12"}'
    head -c 70000 /dev/zero | tr '\0' 'a' | sed 's/^/{"name":"/; s/$/"}/' > "$TMP/big.json"
    bad 3 "larger than 65536" api POST /v1/networks --data-file "$TMP/big.json"
    # Usage errors are exit 2.
    netd attach $net > /dev/null 2>&1; [ $? = 2 ] || { echo "  attach without a target: not exit 2"; errors=$((errors + 1)); }
    [ "$(snapshot)" = "$snap_api" ] || { fail $n "API state changed"; return; }
    [ "$( (host_links; ip -n $a -o addr; ip -n $b -o addr) | sort)" = "$snap_kernel" ] || { fail $n "kernel state changed"; return; }
    [ $errors = 0 ] || { fail $n "$errors bad inputs were not refused clearly"; return; }
    netd network rm $net --force > /dev/null; netd network rm $P-auto > /dev/null
    rmns $a $b
    pass $n
}

t_demo() {
    local n=demo
    local out
    out=$("$BIN" demo 2>&1) || { fail $n "demo failed: $(echo "$out" | tail -3)"; return; }
    echo "$out" | grep -q "sent and received back" || { fail $n "no echo in the demo output"; return; }
    ip netns list | grep -q cnd-demo && { fail $n "demo left namespaces"; return; }
    pass $n
}

# ---------------------------------------------------------------- main

if [ ! -x "$BIN" ]; then
    echo "FAIL setup: conductor-netd binary not found at $BIN (set CONDUCTOR_NETD_BIN or build it: cargo build --release -p conductor-netd)"
    exit 1
fi
for tool in ip busybox jq setpriv; do
    command -v $tool > /dev/null || { echo "FAIL setup: $tool is not installed"; exit 1; }
done
ip link set lo up 2>/dev/null
log "binary $BIN, env $ENV, temp $TMP"

TESTS="network_lifecycle attach_detach_traffic idempotency rollback concurrency crash_recovery reconcile permissions doctor bad_inputs demo
    $HARDENING_TESTS $RECOVERY_TESTS $SERVICES_TESTS"
for t in $TESTS; do
    if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$t" ]; then continue; fi
    "t_$t"
done
stop_daemon
exit 0

# vm-tests/agent: issue 10's recovery cases - records missing or damaged
# while the kernel still holds the truth - on the real kernel and in
# gVisor. Sourced by run.sh (uses lib.sh's helpers).

RECOVERY_TESTS="journal_loss network_record_lost bad_network_record"

# The endpoints as the API lists them, one line each: id target ifname ipv4.
api_endpoints() {
    netd endpoints --json | jq -r '.[] | "\(.id) \(.target | tostring) \(.ifname) \(.ipv4) \(.state)"' | sort
}

# A truncated, deleted or damaged endpoint journal must not make the next
# start delete live veths: endpoints whose host veth and peer namespace
# are alive are adopted back (one of them lives in an unnamed namespace
# held only by a process, found through /proc/PID/ns/net).
t_journal_loss() {
    local n=journal_loss
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-jl a=$P-jl-a b=$P-jl-b c=$P-jl-c
    mkns $a $b $c || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.131.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    local ns
    for ns in $a $b $c; do
        netd attach $net --netns $ns > /dev/null || { fail $n "attach $ns failed"; return; }
    done
    unshare -n sleep 300 &
    local spid=$!
    sleep 0.2
    netd attach $net --pid $spid > /dev/null || { fail $n "attach --pid failed"; return; }
    local before
    before=$(api_endpoints)
    local how
    for how in truncated deleted damaged killed-and-deleted; do
        case $how in
            truncated) stop_daemon; head -n 1 "$STATE/endpoints.log" > "$TMP/j" && mv "$TMP/j" "$STATE/endpoints.log" ;;
            deleted) stop_daemon; rm -f "$STATE/endpoints.log" ;;
            damaged) stop_daemon; sed -i '2s/.*/{"put":{"id":garb/' "$STATE/endpoints.log" ;;
            killed-and-deleted) kill9_daemon; rm -f "$STATE/endpoints.log" ;;
        esac
        : > "$LOG"
        start_daemon || { fail $n "$how: restart failed"; return; }
        [ "$(api_endpoints)" = "$before" ] || { fail $n "$how: endpoints differ: $(diff <(echo "$before") <(api_endpoints) | head -4 | tr '\n' ' ')"; return; }
        [ "$(host_links | grep -c "^cn$(tag)")" = 4 ] || { fail $n "$how: $(host_links | grep -c "^cn$(tag)") host veths, want 4"; return; }
        [ "$(state_endpoints)" = 4 ] || { fail $n "$how: $(state_endpoints) records in the journal, want 4"; return; }
        for ns in $a $b $c; do
            [ -n "$(ns_addr $ns)" ] || { fail $n "$how: $ns lost its address"; return; }
        done
        grep -q "adopted an endpoint" "$LOG" || { fail $n "$how: no adoption logged"; return; }
        grep -q "removed" "$LOG" && { fail $n "$how: something was removed: $(grep removed "$LOG" | head -2)"; return; }
    done
    local ipa r
    ipa=$(ns_addr $a)
    r=$(echo_test $a $c "${ipa%/*}" 7011) || { fail $n "after adoption: $r"; return; }
    # Adopted endpoints detach like any other: their host veths go.
    for ns in $a $b $c; do
        netd detach $net --netns $ns > /dev/null || { fail $n "detach $ns failed"; return; }
    done
    netd detach $net --pid $spid > /dev/null || { fail $n "detach --pid failed"; return; }
    [ "$(host_links | grep -c "^cn$(tag)")" = 0 ] || { fail $n "host veths left after detach"; return; }
    kill $spid; wait $spid 2>/dev/null
    netd network rm $net > /dev/null
    rmns $a $b $c
    pass $n
}

# A deleted network record leaves its bridge behind: this daemon's bridge
# is adopted back (with its endpoints); a bridge in the prefix that is not
# this daemon's is shown in status, and `network create` of it is refused
# with the fix.
t_network_record_lost() {
    local n=network_record_lost
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-nr a=$P-nr-a long=$P-a-rather-long-name
    mkns $a || { fail $n "ip netns add failed"; return; }
    netd network create $net --subnet 10.132.0.0/24 > /dev/null || { fail $n "create failed"; return; }
    netd network create $long --subnet 10.133.0.0/24 > /dev/null || { fail $n "create long failed"; return; }
    netd attach $net --netns $a > /dev/null || { fail $n "attach failed"; return; }
    local before lbr
    before=$(api_endpoints)
    lbr=$(netd network inspect $long --json | jq -r .network.bridge)
    stop_daemon
    rm "$STATE/networks/$net.json" "$STATE/networks/$long.json"
    # Someone else's bridge in our prefix.
    local foreign=${P:0:6}f
    ip link add cn-$foreign type bridge || { fail $n "ip link add failed"; return; }
    : > "$LOG"
    start_daemon || { fail $n "restart failed"; return; }
    [ "$(netd network inspect $net --json | jq -r .network.subnet)" = 10.132.0.0/24 ] \
        || { fail $n "network $net not adopted back"; return; }
    [ "$(api_endpoints)" = "$before" ] || { fail $n "its endpoint was not kept"; return; }
    [ -n "$(ns_addr $a)" ] || { fail $n "$a lost its address"; return; }
    local st
    st=$(netd api GET /v1/status)
    echo "$st" | jq -e --arg b "$lbr" '.unmanaged_bridges[] | select(.bridge == $b and .ours == true)' > /dev/null \
        || { fail $n "status does not show $lbr as ours: $st"; return; }
    echo "$st" | jq -e --arg b cn-$foreign '.unmanaged_bridges[] | select(.bridge == $b and .ours == false) | .fix | contains("ip link del")' > /dev/null \
        || { fail $n "status does not show cn-$foreign with the fix: $st"; return; }
    netd status | grep -q "unmanaged bridge in our prefix: cn-$foreign" || { fail $n "status tree lacks cn-$foreign"; return; }
    # Create adopts the bridge of ours (its name hashed: only the name says
    # which it is), and refuses the foreign one with the fix.
    [ "$(netd network create $long --json | jq -r .subnet)" = 10.133.0.0/24 ] \
        || { fail $n "create did not adopt $lbr"; return; }
    local out rc
    out=$(netd network create $foreign 2>&1); rc=$?
    [ $rc = 5 ] || { fail $n "create $foreign: exit $rc, want 5: $out"; return; }
    echo "$out" | grep -q "not made by this daemon" || { fail $n "unclear: $out"; return; }
    netd network rm $net --force > /dev/null && netd network rm $long > /dev/null || { fail $n "rm failed"; return; }
    ip link del cn-$foreign
    rmns $a
    pass $n
}

# A network record naming itself ../../x is set aside, naming the file and
# the field, and no bridge is made for it.
t_bad_network_record() {
    local n=bad_network_record
    fresh
    mkdir -p "$STATE/networks"
    local br=cn-${P:0:6}e
    cat > "$STATE/networks/evil.json" <<EOF
{"name":"../../x","bridge":"$br","subnet":"10.134.0.0/24","gateway":"10.134.0.1","mtu":1500,"created":1}
EOF
    start_daemon || { fail $n "daemon did not start"; return; }
    ip link show $br > /dev/null 2>&1 && { fail $n "bridge $br made for an invalid record"; return; }
    [ -e "$STATE/networks/evil.corrupt" ] || { fail $n "record not set aside"; return; }
    grep "evil.json" "$LOG" | grep -q '\.\./\.\./x' || { fail $n "no warning naming the file and the name: $(tail -3 "$LOG")"; return; }
    [ "$(netd network ls --json | jq length)" = 0 ] || { fail $n "the record was loaded"; return; }
    pass $n
}

# vm-tests/agent: issue 10's API and target cases, on the real kernel and
# in gVisor. Sourced by run.sh (uses lib.sh's helpers).

HARDENING_TESTS="fifo_target bad_targets recreated_namespace concurrent_detach host_namespace
    prefix_bridge api_limits hangup_mid_attach"

# Run a client command with a deadline: exits 124 when it hangs.
netd_within() { local secs=$1; shift; timeout "$secs" "$BIN" --socket "$SOCK" "$@"; }

# A FIFO as netns_path must not freeze the API (it used to block a worker
# in open(2) until someone opened the other end).
t_fifo_target() {
    local n=fifo_target
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    netd network create $P-fifo > /dev/null || { fail $n "create failed"; return; }
    mkfifo "$TMP/fifo"
    local i out rc
    for i in 1 2; do
        out=$(netd_within 5 attach $P-fifo --netns-path "$TMP/fifo" 2>&1); rc=$?
        [ $rc = 124 ] && { fail $n "attach $i with a FIFO hung"; return; }
        [ $rc = 3 ] || { fail $n "attach $i with a FIFO: exit $rc, want 3: $out"; return; }
        echo "$out" | grep -q "$TMP/fifo" || { fail $n "error does not name the FIFO: $out"; return; }
        netd_within 5 api GET /v1/status > /dev/null || { fail $n "status stopped answering"; return; }
    done
    netd network rm $P-fifo > /dev/null
    pass $n
}

# What is not a namespace, or not one yet, is the caller's mistake: 4xx
# naming the value, never a 500.
t_bad_targets() {
    local n=bad_targets
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-bt a=$P-bt-a
    mkns $a || { fail $n "ip netns add failed"; return; }
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    local errors=0 out rc
    expect() { # CODE TEXT ARGS...
        local code=$1 text=$2; shift 2
        out=$(netd_within 10 "$@" 2>&1); rc=$?
        if [ $rc != "$code" ] || ! echo "$out" | grep -qF -- "$text"; then
            log "'$*': exit $rc '$out' (want $code and '$text')"; errors=$((errors + 1))
        fi
    }
    expect 3 "/proc/self/status" attach $net --netns-path /proc/self/status
    expect 3 "$TMP" attach $net --netns-path "$TMP"
    expect 3 '"all"' attach $net --netns $a --ifname all
    expect 3 '"default"' attach $net --netns $a --ifname default
    expect 3 '"all"' network create $P-x --bridge all
    # A namespace half made: `ip netns add` creates its file mode 0 before
    # it binds the namespace onto it.
    touch /run/netns/$P-half && chmod 0 /run/netns/$P-half
    expect 5 "$P-half" attach $net --netns $P-half
    rm -f /run/netns/$P-half
    [ "$(netd endpoints --json | jq length)" = 0 ] || { fail $n "an endpoint was made"; return; }
    [ $errors = 0 ] || { fail $n "$errors targets not refused clearly"; return; }
    netd network rm $net > /dev/null
    rmns $a
    pass $n
}

# `ip netns del s; ip netns add s`: Linux gives the new namespace the old
# one's inode number; the attach must not answer "already attached".
t_recreated_namespace() {
    local n=recreated_namespace
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-re s=$P-re-s i j ip
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    for i in 1 2 3 4 5; do
        mkns $s || { fail $n "ip netns add failed"; return; }
        netd attach $net --netns $s > /dev/null || { fail $n "attach $i failed"; return; }
        rmns $s
        mkns $s || { fail $n "ip netns add failed"; return; }
        j=$(netd attach $net --netns $s --json) || { fail $n "re-attach $i failed"; return; }
        [ "$(echo "$j" | jq -r .created)" = true ] \
            || { fail $n "round $i: the re-created namespace was 'already attached'"; return; }
        ip=$(echo "$j" | jq -r .endpoint.ipv4)
        [ "$(ns_addr $s)" = "$ip" ] || { fail $n "round $i: eth0 has '$(ns_addr $s)', API says $ip"; return; }
        rmns $s
    done
    mkns $s
    netd attach $net --netns $s > /dev/null || { fail $n "last attach failed"; return; }
    netd network rm $net --force > /dev/null || { fail $n "rm --force failed"; return; }
    [ "$(host_links | grep -c "^cn$(tag)")" = 0 ] || { fail $n "host veths left"; return; }
    rmns $s
    pass $n
}

# Concurrent detaches of one endpoint: one detached:true, the rest
# detached:false (the documented answer), never 404.
t_concurrent_detach() {
    local n=concurrent_detach
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-cd a=$P-cd-a i pids=()
    mkns $a || { fail $n "ip netns add failed"; return; }
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    netd attach $net --netns $a > /dev/null || { fail $n "attach failed"; return; }
    mkdir -p "$TMP/cd"
    for i in $(seq 1 20); do
        netd detach $net --netns $a --json > "$TMP/cd/$i.json" 2> "$TMP/cd/$i.err" &
        pids+=($!)
    done
    local failed=0
    for i in "${pids[@]}"; do wait "$i" || failed=$((failed + 1)); done
    [ $failed = 0 ] || { fail $n "$failed detaches failed: $(cat "$TMP"/cd/*.err | sort | uniq -c | head -2)"; return; }
    local yes
    yes=$(cat "$TMP"/cd/*.json | jq -s 'map(select(.detached == true)) | length')
    [ "$yes" = 1 ] || { fail $n "$yes detaches answered detached:true"; return; }
    netd network rm $net > /dev/null
    rmns $a
    pass $n
}

# The daemon's own network namespace (by path, by pid, by a bound name) is
# refused unless allow_host_namespace = true.
t_host_namespace() {
    local n=host_namespace
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-hn out rc
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    ip netns attach $P-self $$ 2>/dev/null || { fail $n "ip netns attach failed"; return; }
    local how
    for how in "--netns-path /proc/self/ns/net" "--pid $$" "--netns $P-self"; do
        out=$(netd attach $net $how 2>&1); rc=$?
        [ $rc = 6 ] || { fail $n "attach $how: exit $rc, want 6: $out"; return; }
        echo "$out" | grep -q allow_host_namespace || { fail $n "attach $how does not say how to allow it: $out"; return; }
    done
    [ "$(netd endpoints --json | jq length)" = 0 ] || { fail $n "an endpoint was made"; return; }
    netd network rm $net > /dev/null
    fresh; start_daemon 'allow_host_namespace = true' || { fail $n "daemon did not start"; return; }
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    netd attach $net --pid $$ --ifname ${P}h --no-default-route > /dev/null \
        || { fail $n "attach with allow_host_namespace refused"; return; }
    ip link show ${P}h > /dev/null 2>&1 || { fail $n "no ${P}h in the daemon's namespace"; return; }
    netd network rm $net --force > /dev/null || { fail $n "rm --force failed"; return; }
    ip link show ${P}h > /dev/null 2>&1 && { fail $n "${P}h left behind"; return; }
    rmns $P-self
    pass $n
}

# A bridge named in the daemon's link prefix would be taken for a veth of
# its own (and deleted) at every start.
t_prefix_bridge() {
    local n=prefix_bridge
    fresh; start_daemon || { fail $n "daemon did not start"; return; }
    local out rc br
    br=cn$(tag)9
    out=$(netd network create $P-pb --bridge $br 2>&1); rc=$?
    [ $rc = 3 ] || { fail $n "exit $rc, want 3: $out"; return; }
    echo "$out" | grep -q "$br" || { fail $n "error does not name $br: $out"; return; }
    ip link show $br > /dev/null 2>&1 && { fail $n "bridge $br made"; return; }
    pass $n
}

# 2,000 idle connections at an fd limit of 1,024 leave room for a new
# client's status and attach; a refused uid (socket mode 0666) holds no
# more than a few descriptors for a short while.
t_api_limits() {
    local n=api_limits
    [ -x "$FLOOD" ] || { fail $n "api-flood not built at $FLOOD (cargo build --workspace --release --all-targets)"; return; }
    fresh; FDLIMIT=1024 start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-lim a=$P-lim-a out fds
    mkns $a || { fail $n "ip netns add failed"; return; }
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    "$FLOOD" "$SOCK" 2000 8 > "$TMP/flood.out" &
    local fpid=$!
    for _ in $(seq 1 200); do grep -q opened "$TMP/flood.out" && break; sleep 0.1; done
    grep -q opened "$TMP/flood.out" || { kill $fpid; fail $n "the flood did not connect"; return; }
    netd_within 5 status > /dev/null || { kill $fpid; fail $n "status locked out by idle connections"; return; }
    netd_within 5 attach $net --netns $a > /dev/null || { kill $fpid; fail $n "attach locked out by idle connections"; return; }
    fds=$(ls /proc/$DPID/fd | wc -l)
    kill $fpid 2>/dev/null; wait $fpid 2>/dev/null
    [ "$fds" -lt 1024 ] || { fail $n "the daemon held $fds fds"; return; }
    [ "$(grep -c 'accept failed' "$LOG")" -le 3 ] || { fail $n "accept warnings: $(grep -c 'accept failed' "$LOG")"; return; }
    [ "$(ns_addr $a)" != "" ] || { fail $n "the attach made no eth0"; return; }
    netd network rm $net --force > /dev/null
    # A refused uid floods an open socket.
    fresh; start_daemon 'socket_mode = "0666"' || { fail $n "daemon did not start"; return; }
    chmod 755 "$TMP"
    setpriv --reuid=65534 --regid=65534 --clear-groups "$FLOOD" "$SOCK" 2000 5 > "$TMP/flood.out" &
    fpid=$!
    for _ in $(seq 1 200); do grep -q opened "$TMP/flood.out" && break; sleep 0.1; done
    fds=$(ls /proc/$DPID/fd | wc -l)
    if [ "$ENV" = kernel ]; then
        out=$(netd_within 5 status 2>&1) || { kill $fpid; fail $n "root's status failed during a refused flood: $out"; return; }
    fi
    wait $fpid
    log "a refused flood of 2000 connects: the daemon held $fds fds"
    [ "$fds" -lt 200 ] || { fail $n "a refused uid made the daemon hold $fds fds"; return; }
    grep -q " open 0" "$TMP/flood.out" || { fail $n "refused connections stayed open: $(cat "$TMP/flood.out")"; return; }
    [ "$(grep -c 'refusing API peer' "$LOG")" -le 20 ] || { fail $n "$(grep -c 'refusing API peer' "$LOG") refusal warnings for one flood"; return; }
    if [ "$ENV" = gvisor ]; then
        # SO_PEERCRED names the daemon itself there: with "others" let in by
        # the mode every peer is refused (root too), promptly, with the reason.
        out=$(netd_within 5 status 2>&1); local rc=$?
        [ $rc = 6 ] || { fail $n "status after the flood: exit $rc, want a prompt 403 in gVisor: $out"; return; }
    fi
    rmns $a
    pass $n
}

# A client killed while its attach is half-way (the test-only fault holds
# each attach 500 ms after the kernel step): the endpoint is either fully
# there or fully gone, in the API and in the kernel.
t_hangup_mid_attach() {
    local n=hangup_mid_attach
    stop_daemon; rm -rf "$STATE" "$SOCK"; : > "$LOG"
    CONDUCTOR_NETD_FAULT=slow_attach start_daemon || { fail $n "daemon did not start"; return; }
    local net=$P-hu names=() i c
    for i in 1 2 3 4; do names+=("$P-hu$i"); done
    mkns "${names[@]}" || { fail $n "ip netns add failed"; return; }
    netd network create $net > /dev/null || { fail $n "create failed"; return; }
    for i in 1 2 3 4; do
        netd attach $net --netns $P-hu$i > /dev/null 2>&1 &
        c=$!
        sleep 0.$((i + 1))
        kill -9 $c 2>/dev/null; wait $c 2>/dev/null
    done
    sleep 1
    local api bad=""
    api=$(netd endpoints --json) || { fail $n "endpoints failed"; return; }
    for i in 1 2 3 4; do
        local k=$P-hu$i want have state
        want=$(echo "$api" | jq -r --arg k $k '.[] | select(.target.netns == $k) | .ipv4')
        state=$(echo "$api" | jq -r --arg k $k '.[] | select(.target.netns == $k) | .state')
        have=$(ns_addr $k)
        [ "$want" = "$have" ] || bad="$bad $k(api '$want' kernel '$have')"
        [ -z "$want" ] || [ "$state" = attached ] || bad="$bad $k(state $state)"
    done
    [ -z "$bad" ] || { fail $n "half-made endpoints:$bad"; return; }
    [ "$(host_links | grep -c "^cn$(tag)")" = "$(echo "$api" | jq length)" ] || { fail $n "host veths without records"; return; }
    netd network rm $net --force > /dev/null
    stop_daemon
    rmns "${names[@]}"
    pass $n
}

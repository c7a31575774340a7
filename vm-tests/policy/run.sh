#!/bin/bash
# vm-tests suite for the egress policy: run.sh ENV (kernel|gvisor), as root.
#
# The egress suite's topology (../egress/topology.sh): a bridge with two
# "container" namespaces and an "internet" namespace with an HTTP server,
# a TLS server, a DNS server and, for the preset rows, a private address.
# The policy store, the proxy engine, the DNS engine and the backends are
# the agent's, driven by target/release/policy-harness (the store is the
# same code the API calls; `serve` re-reads it on SIGHUP, as netd's store
# is changed in place). Prints `ok NAME` / `FAIL NAME: reason`.
#
# Needs: ip, busybox, openssl, curl, iptables (legacy and nft).
# Run some rows: ONLY="proxy_sni|dns_refused" run.sh kernel

[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -u

ENV=${1:-kernel}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
H=${POLICY_HARNESS_BIN:-$TARGET/release/policy-harness}
[ -x "$H" ] || H=$TARGET/debug/policy-harness
P=po$$
TMP=$(mktemp -d /tmp/policy.XXXXXX)
DIR=$TMP/state
NETNAME=web
EPID=
HOSTS_MOUNTED=
if [ "$ENV" = kernel ]; then
    TOOL=nft MODE=masquerade
else
    TOOL=legacy MODE=snat
fi
# A private address in the "internet" (what `balanced` must keep out of
# reach even for an allowed name).
PRIVATE4=172.20.0.10

. "$ROOT/vm-tests/egress/topology.sh"
topo_names

pass() { echo "ok $1"; }
fail() {
    echo "FAIL $1: $2"
    [ -s "$TMP/serve.log" ] && grep -E "policy|denied|error" "$TMP/serve.log" | tail -n 3 | cut -c1-300 | sed 's/^/  engine: /'
    return 1
}
log() { echo "  $*"; }
want() { [ -z "${ONLY:-}" ] || [[ $1 =~ ^($ONLY)$ ]]; }

cleanup() {
    stop_engine
    local j
    for j in $(jobs -p); do kill "$j" 2>/dev/null; done
    "$H" remove-all --tool "$TOOL" >/dev/null 2>&1
    [ -n "$HOSTS_MOUNTED" ] && umount /etc/hosts 2>/dev/null
    topo_down
    rm -rf "$TMP"
}
trap cleanup EXIT

NET_ARGS=(--network "$NETNAME" --bridge "$BR" --subnet4 "$SUBNET4" --gateway4 "$GW4" --subnet6 "$SUBNET6" --gateway6 "$GW6")
harness() { "$H" "$@" 2>> "$TMP/harness.log"; }
policy_set() { harness set --dir "$DIR" "$@" >> "$TMP/harness.log"; }
apply() { harness apply --dir "$DIR" --tool "$TOOL" --nat-mode "$MODE" --backend "$1" "${NET_ARGS[@]}" >> "$TMP/harness.log"; }
# Tell the running engine to re-read the store (netd's API changes it in
# place; here another process wrote the file).
reload() {
    local n
    n=$(grep -c reloaded "$TMP/serve.out")
    kill -HUP "$EPID"
    for _ in $(seq 1 100); do
        [ "$(grep -c reloaded "$TMP/serve.out")" -gt "$n" ] && return 0
        sleep 0.02
    done
    return 1
}

start_engine() {
    : > "$TMP/serve.out"
    "$H" serve --dir "$DIR" --transparent 0.0.0.0:15001 --transparent "[::]:15002" \
        --explicit "$GW4:3128" --dns "$GW4:53" --upstream "$INET4:53" "${NET_ARGS[@]}" \
        > "$TMP/serve.out" 2>> "$TMP/serve.log" &
    EPID=$!
    for _ in $(seq 1 100); do
        grep -q serving "$TMP/serve.out" 2>/dev/null && return 0
        kill -0 "$EPID" 2>/dev/null || break
        sleep 0.05
    done
    echo "  engine did not start: $(tail -n 2 "$TMP/serve.log")"; return 1
}
stop_engine() {
    if [ -n "$EPID" ]; then kill "$EPID" 2>/dev/null; wait "$EPID" 2>/dev/null; EPID=; fi
}

# get NS URL: the body, or nothing; sets RC.
get() {
    OUT=$(ip netns exec "$1" timeout 3 busybox wget -q -O- "$2" 2>&1)
    RC=$?
}
# tls NS NAME ADDR: an HTTPS request whose SNI is NAME, sent to ADDR.
tls() {
    OUT=$(ip netns exec "$1" curl -sk --max-time 3 --resolve "$2:443:$3" "https://$2/" 2>&1)
    RC=$?
}
wait_tcp() { # NS ADDR PORT
    for _ in $(seq 1 100); do
        ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# ---- set-up -------------------------------------------------------------

missing=
for c in ip busybox openssl curl "iptables-$TOOL-restore" "ip6tables-$TOOL-save"; do
    command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
if [ -n "$missing" ] || [ ! -x "$H" ]; then
    fail prerequisites "missing:$missing ${H##*/}(built: $([ -x "$H" ] && echo yes || echo no))"
    exit 1
fi
if ! topo_up; then
    fail topology "could not build the test network"
    exit 1
fi
ip -n "$INET" address add "$PRIVATE4/32" dev eth0

mkdir -p "$TMP/www" "$DIR"
echo hello-policy > "$TMP/www/index.html"
# The engine's own resolver (explicit proxy requests name hosts).
printf '127.0.0.1 localhost\n%s web.test blocked.test\n%s inside.test\n' "$SERVER4" "$PRIVATE4" > "$TMP/hosts"
mount --bind "$TMP/hosts" /etc/hosts && HOSTS_MOUNTED=1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=secure.test -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1

ip netns exec "$INET" busybox httpd -f -p 80 -h "$TMP/www" &
ip netns exec "$INET" openssl s_server -quiet -accept 443 -cert "$TMP/cert.pem" -key "$TMP/key.pem" -www > /dev/null 2>&1 &
ip netns exec "$INET" "$H" dns-answer --listen "$INET4:53" --a "$SERVER4" --aaaa "$SERVER6" > /dev/null 2>&1 &
for port in 80 443; do
    wait_tcp "$INET" "$SERVER4" "$port" || { fail servers "nothing listens on $SERVER4:$port"; exit 1; }
done

# ---- proxy backend ------------------------------------------------------

policy_set --preset balanced "$NETNAME" "deny blocked.test" "deny *.evil.test" "deny $SERVER4B" "allow inside.test"
if ! apply proxy || ! start_engine; then
    fail proxy_setup "$(tail -n 3 "$TMP/harness.log")"
    exit 1
fi

t=proxy_http_host
if want $t; then
    get "$C1" "http://web.test/"; ok_out=$OUT
    # Same address, a denied name in the Host header.
    OUT=$(ip netns exec "$C1" curl -s --max-time 3 -H "Host: blocked.test" "http://$SERVER4/" 2>&1); denied_rc=$?
    log "Host web.test -> ${ok_out:-(nothing)}; Host blocked.test -> rc=$denied_rc ${OUT:0:60}"
    [ "$ok_out" = hello-policy ] && [ $denied_rc -ne 0 ] && [ "$OUT" != hello-policy ] \
        && pass $t || fail $t "allowed: '$ok_out'; denied rc=$denied_rc '$OUT'"
fi

t=proxy_https_sni
if want $t; then
    tls "$C1" secure.test "$SERVER4"; ok_rc=$RC
    tls "$C1" www.evil.test "$SERVER4"; denied_rc=$RC
    log "SNI secure.test rc=$ok_rc; SNI www.evil.test rc=$denied_rc"
    [ $ok_rc -eq 0 ] && [ $denied_rc -ne 0 ] && pass $t || fail $t "allowed rc=$ok_rc denied rc=$denied_rc"
fi

t=proxy_by_ip
if want $t; then
    get "$C1" "http://$SERVER4/"; ok_out=$OUT
    get "$C1" "http://$SERVER4B/"; denied_rc=$RC
    log "$SERVER4 -> ${ok_out:-(nothing)}; $SERVER4B -> rc=$denied_rc"
    [ "$ok_out" = hello-policy ] && [ $denied_rc -ne 0 ] && pass $t || fail $t "allowed '$ok_out' denied rc=$denied_rc"
fi

t=proxy_allowed_name_denied_range
if want $t; then
    # balanced: an allowed name that points at a private address stays out.
    OUT=$(ip netns exec "$C1" curl -s --max-time 3 -H "Host: inside.test" "http://$PRIVATE4/" 2>&1); RC=$?
    got=$(timeout 3 busybox wget -q -O- "http://$PRIVATE4/" 2>&1)
    log "sandbox -> $PRIVATE4: ${got:-(nothing)}; container (Host inside.test, allowed) -> rc=$RC"
    [ "$got" = hello-policy ] && [ $RC -ne 0 ] && pass $t || fail $t "rc=$RC '$OUT' (sandbox: '$got')"
fi

t=proxy_explicit_403
if want $t; then
    OUT=$(ip netns exec "$C1" curl -s --max-time 3 -x "http://$GW4:3128" -w ' %{http_code}' "http://blocked.test/" 2>&1)
    ok=$(ip netns exec "$C1" curl -s --max-time 3 -x "http://$GW4:3128" "http://web.test/" 2>&1)
    log "explicit: blocked.test -> $OUT; web.test -> $ok"
    [[ $OUT == *"deny blocked.test"*" 403" ]] && [ "$ok" = hello-policy ] && pass $t || fail $t "'$OUT' / '$ok'"
fi

t=proxy_ipv6
if want $t; then
    get "$C1" "http://[$SERVER6]/"; ok_out=$OUT
    harness add --dir "$DIR" "$NETNAME" "deny 2001:db8:2::/64" >> "$TMP/harness.log"
    reload || log "no reload seen"
    get "$C1" "http://[$SERVER6]/"; denied_rc=$RC
    log "IPv6 [$SERVER6] before the rule -> ${ok_out:-(nothing)}; after -> rc=$denied_rc"
    [ "$ok_out" = hello-policy ] && [ $denied_rc -ne 0 ] && pass $t || fail $t "before '$ok_out' after rc=$denied_rc"
fi

t=dns_refused
if want $t; then
    ok=$(ip netns exec "$C1" busybox nslookup web.test "$GW4" 2>&1)
    no=$(ip netns exec "$C1" busybox nslookup a.evil.test "$GW4" 2>&1)
    log "DNS web.test: $(echo "$ok" | grep -m1 -A1 'Name:' | tr '\n' ' ')"
    log "DNS a.evil.test: $(echo "$no" | grep -m1 -iE 'refused|can.t')"
    [[ $ok == *"$SERVER4"* ]] && [[ $no == *REFUSED* ]] && pass $t || fail $t "'$ok' / '$no'"
fi

t=runtime_change
if want $t; then
    # The engine keeps running: new connections and queries follow.
    get "$C1" "http://web.test/"; before=$OUT
    policy_set --preset locked "$NETNAME" "allow secure.test" "allow $SERVER6"
    reload || log "no reload seen"
    get "$C1" "http://web.test/"; after_rc=$RC
    tls "$C1" secure.test "$SERVER4"; tls_rc=$RC
    no=$(ip netns exec "$C1" busybox nslookup web.test "$GW4" 2>&1)
    log "locked: web.test rc=$after_rc (before: ${before:-nothing}); secure.test rc=$tls_rc; DNS web.test: $(echo "$no" | grep -m1 -iE 'refused|can.t')"
    [ "$before" = hello-policy ] && [ $after_rc -ne 0 ] && [ $tls_rc -eq 0 ] && [[ $no == *REFUSED* ]] \
        && pass $t || fail $t "before '$before' after rc=$after_rc tls rc=$tls_rc dns '$no'"
fi

t=policy_stats
if want $t; then
    n=$(grep -c '"allowed"' "$TMP/serve.out")
    kill -USR1 "$EPID"
    for _ in $(seq 1 100); do
        [ "$(grep -c '"allowed"' "$TMP/serve.out")" -gt "$n" ] && break
        sleep 0.02
    done
    s=$(grep '"allowed"' "$TMP/serve.out" | tail -n 1)
    log "stats: ${s:0:300}"
    den=$(echo "$s" | sed -n 's/.*"denied":\([0-9]*\).*/\1/p')
    ref=$(echo "$s" | sed -n 's/.*"dns_refused":\([0-9]*\).*/\1/p')
    [ "${den:-0}" -ge 5 ] && [ "${ref:-0}" -ge 2 ] && [[ $s == *"deny blocked.test"* ]] && pass $t || fail $t "$s"
fi
stop_engine

# ---- nat backend --------------------------------------------------------

t=nat_cidr_and_port
if want $t; then
    policy_set --preset open "$NETNAME" "deny $SERVER4B" "deny port 443" "deny blocked.test"
    if apply nat; then
        get "$C1" "http://$SERVER4/"; ok_out=$OUT
        get "$C1" "http://$SERVER4B/"; cidr_rc=$RC
        tls "$C1" secure.test "$SERVER4"; port_rc=$RC
        log "nat ($MODE): $SERVER4:80 -> ${ok_out:-(nothing)}; $SERVER4B:80 rc=$cidr_rc; $SERVER4:443 rc=$port_rc"
        [ "$ok_out" = hello-policy ] && [ $cidr_rc -ne 0 ] && [ $port_rc -ne 0 ] && pass $t \
            || fail $t "allowed '$ok_out' cidr rc=$cidr_rc port rc=$port_rc"
    else
        fail $t "apply nat: $(tail -n 2 "$TMP/harness.log")"
    fi
fi

t=nat_runtime_change
if want $t; then
    # Changed in the store, then the backend rebuilds the network's rules
    # (netd does this on every change): new connections follow.
    policy_set --preset open "$NETNAME" "deny $SERVER4"
    if apply nat; then
        get "$C1" "http://$SERVER4/"; now_rc=$RC
        get "$C1" "http://$SERVER4B/"; other=$OUT
        log "nat after the change: $SERVER4 rc=$now_rc; $SERVER4B -> ${other:-(nothing)}"
        [ $now_rc -ne 0 ] && [ "$other" = hello-policy ] && pass $t || fail $t "rc=$now_rc other '$other'"
    else
        fail $t "apply nat: $(tail -n 2 "$TMP/harness.log")"
    fi
fi

t=nat_ipv6
if want $t; then
    policy_set --preset open "$NETNAME" "deny 2001:db8:2::/64"
    apply nat
    get "$C1" "http://[$SERVER6]/"; rc=$RC
    if [ "$MODE" = masquerade ]; then
        policy_set --preset open "$NETNAME"
        apply nat
        get "$C1" "http://[$SERVER6]/"; ok_out=$OUT
    else
        # gVisor's SNAT may have no IPv6 way out at all (see the egress
        # suite): the rule must still be in ip6tables.
        ok_out=hello-policy
    fi
    policy_set --preset open "$NETNAME" "deny 2001:db8:2::/64"
    apply nat
    rules=$(ip6tables-$TOOL-save -t filter 2>/dev/null | grep -c -- "-d 2001:db8:2::/64.*-j DROP")
    log "nat IPv6 ($MODE): denied rc=$rc, ip6tables rules naming it: $rules; allowed -> ${ok_out:-(nothing)}"
    [ $rc -ne 0 ] && [ "$ok_out" = hello-policy ] && [ "$rules" -ge 1 ] && pass $t || fail $t "denied rc=$rc allowed '$ok_out' rules=$rules"
fi

t=bad_rule_refused
if want $t; then
    before=$(cat "$DIR/policies.json")
    out=$("$H" set --dir "$DIR" "$NETNAME" "deny ok.test" "deny 10.0.0.0/33" 2>&1); rc=$?
    log "bad rule: rc=$rc: $out"
    [ $rc -ne 0 ] && [[ $out == *"rule 2"*"column 6"* ]] && [ "$before" = "$(cat "$DIR/policies.json")" ] \
        && pass $t || fail $t "rc=$rc '$out'"
fi

#!/bin/bash
# vm-tests suite for egress beyond the bridge: run.sh ENV (kernel|gvisor), as root.
#
# The harness runs this on the real kernel inside a private network + mount
# namespace, and inside `runsc --network=none --net-raw --platform=ptrace do`.
# The test builds its own topology (topology.sh): a bridge with two
# "container" namespaces and an "internet" namespace with an HTTP server,
# a UDP echo, a TLS server and real upstream CONNECT proxies (tinyproxy).
# The backends are the agent's (agent/src/egress) and the proxy is the
# conductor-egress engine, both driven by target/release/egress-harness.
# Prints `ok NAME` / `FAIL NAME: reason`.
#
# Needs: ip, busybox, tinyproxy, openssl, curl, iptables (legacy and nft).
# Run some tests: ONLY="upstream_refusing|upstream_hanging" run.sh kernel

[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -u

ENV=${1:-kernel}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
H=${EGRESS_HARNESS_BIN:-$TARGET/release/egress-harness}
[ -x "$H" ] || H=$TARGET/debug/egress-harness
P=eg$$
TMP=$(mktemp -d /tmp/egress.XXXXXX)
EPID=
TIMEOUT_MS=3000
if [ "$ENV" = kernel ]; then
    TOOL=nft MODE=masquerade
else
    TOOL=legacy MODE=snat
fi

. "$HERE/topology.sh"
topo_names

pass() { echo "ok $1"; }
fail() {
    echo "FAIL $1: $2"
    [ -s "$TMP/serve.log" ] && tail -n 4 "$TMP/serve.log" | cut -c1-300 | sed 's/^/  engine: /'
    return 1
}
log() { echo "  $*"; }
want() { [ -z "${ONLY:-}" ] || [[ $1 =~ ^($ONLY)$ ]]; }

cleanup() {
    stop_engine
    local j
    for j in $(jobs -p); do kill "$j" 2>/dev/null; done
    "$H" remove-all --tool "$TOOL" >/dev/null 2>&1
    topo_down
    rm -rf "$TMP"
}
trap cleanup EXIT

harness() { "$H" "$@" 2>> "$TMP/harness.log"; }
NET_ARGS=(--bridge "$BR" --subnet4 "$SUBNET4" --gateway4 "$GW4" --subnet6 "$SUBNET6" --gateway6 "$GW6")
apply() { harness apply --tool "$TOOL" --nat-mode "$MODE" --proxy-port 15001 --proxy-port6 15002 "$@" "${NET_ARGS[@]}" >> "$TMP/harness.log"; }

# Our rules as iptables-save shows them (both families, both tables).
our_rules() {
    local t fam
    for fam in iptables ip6tables; do
        for t in filter nat; do
            "$fam-$TOOL-save" -t $t 2>/dev/null | grep -E 'CONDUCTOR-EGRESS|CNE-' | sed "s/^/$fam $t /"
        done
    done
}

# start_engine [VAR=value...] [-- extra serve args]: the transparent proxy on
# 15001 (v4) / 15002 (v6) and the explicit proxy on the gateway, port 3128.
start_engine() {
    stop_engine
    local envs=() extra=()
    while [ $# -gt 0 ]; do
        case $1 in
            --) shift; extra=("$@"); break ;;
            *) envs+=("$1"); shift ;;
        esac
    done
    : > "$TMP/serve.out"
    env "${envs[@]}" "$H" serve --transparent 0.0.0.0:15001 --transparent "[::]:15002" \
        --explicit "$GW4:3128" --connect-timeout-ms "$TIMEOUT_MS" --network "$BR" "${extra[@]}" \
        > "$TMP/serve.out" 2>> "$TMP/serve.log" &
    EPID=$!
    local i
    for i in $(seq 1 100); do
        grep -q serving "$TMP/serve.out" 2>/dev/null && return 0
        kill -0 "$EPID" 2>/dev/null || break
        sleep 0.05
    done
    echo "  engine did not start"; return 1
}
stop_engine() {
    if [ -n "$EPID" ]; then kill "$EPID" 2>/dev/null; wait "$EPID" 2>/dev/null; EPID=; fi
}
kill9_engine() {
    if [ -n "$EPID" ]; then kill -9 "$EPID" 2>/dev/null; wait "$EPID" 2>/dev/null; EPID=; fi
}

# in_ns NS CMD...: run in a namespace with the test's /etc/hosts.
in_ns() {
    local ns=$1; shift
    ip netns exec "$ns" sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$TMP/hosts" "$@"
}
# get NS URL [seconds]: the body, or nothing; sets RC.
get() {
    OUT=$(in_ns "$1" timeout "${3:-3}" busybox wget -q -O- "$2" 2>&1)
    RC=$?
}
wait_tcp() { # NS ADDR PORT
    local i
    for i in $(seq 1 100); do
        ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# ---- set-up -------------------------------------------------------------

missing=
for c in ip busybox tinyproxy openssl curl "iptables-$TOOL-restore" "ip6tables-$TOOL-save"; do
    command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
if [ -n "$missing" ] || [ ! -x "$H" ]; then
    fail prerequisites "missing:$missing ${H##*/}(built: $([ -x "$H" ] && echo yes || echo no)) - scripts/install-deps.sh installs tinyproxy, openssl, curl, iptables"
    exit 1
fi
if ! topo_up; then
    fail topology "could not build the test network"
    exit 1
fi

mkdir -p "$TMP/www/cgi-bin"
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "peer=$REMOTE_ADDR"\n' > "$TMP/www/cgi-bin/whoami"
chmod +x "$TMP/www/cgi-bin/whoami"
printf '127.0.0.1 localhost\n%s web.test secure.test\n' "$SERVER4" > "$TMP/hosts"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=secure.test -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1
tinyproxy_conf() { # PORT LOG [extra line]
    printf 'Port %s\nListen %s\nTimeout 30\nLogFile "%s"\nLogLevel Connect\nMaxClients 50\n%s\n' \
        "$1" "$INET4" "$2" "${3:-}"
}
tinyproxy_conf 8888 "$TMP/tinyproxy.log" > "$TMP/tp-ok.conf"
# A real proxy that refuses: CONNECT only to port 443.
tinyproxy_conf 8889 "$TMP/tinyproxy-refusing.log" "ConnectPort 443" > "$TMP/tp-refusing.conf"

ip netns exec "$INET" busybox httpd -f -p 80 -h "$TMP/www" &
ip netns exec "$INET" "$H" udp-echo --listen "$SERVER4:9001" --listen "[$SERVER6]:9001" 2>/dev/null &
in_ns "$INET" tinyproxy -d -c "$TMP/tp-ok.conf" > /dev/null 2>&1 &
in_ns "$INET" tinyproxy -d -c "$TMP/tp-refusing.conf" > /dev/null 2>&1 &
ip netns exec "$INET" "$H" blackhole --listen "$INET4:8890" 2>/dev/null &
ip netns exec "$INET" openssl s_server -quiet -accept 443 -cert "$TMP/cert.pem" -key "$TMP/key.pem" -www > /dev/null 2>&1 &
for port in 80 443 8888 8889 8890; do
    addr=$SERVER4
    [ "$port" -ge 8888 ] && addr=$INET4
    wait_tcp "$INET" "$addr" "$port" || { fail servers "nothing listens on $addr:$port in the internet namespace"; exit 1; }
done

# ---- rows ---------------------------------------------------------------

t=sandbox_reaches_internet
if want $t; then
    OUT=$(timeout 3 busybox wget -q -O- "http://$SERVER4/cgi-bin/whoami" 2>&1)
    case $OUT in *"$UP4"*) pass $t ;; *) fail $t "sandbox -> $SERVER4: $OUT" ;; esac
fi

t=no_backend_container_cannot_reach
if want $t; then
    get "$C1" "http://$SERVER4/cgi-bin/whoami"
    log "without conductor-net: container -> http://$SERVER4/ : rc=$RC ${OUT:-(no answer)}"
    [ $RC -ne 0 ] && pass $t || fail $t "reached without any backend: $OUT"
fi

t=nat_reaches_internet
if want $t; then
    if apply --backend nat; then
        get "$C1" "http://$SERVER4/cgi-bin/whoami"
        log "nat ($MODE): container -> server sees ${OUT:-rc=$RC}"
        case $OUT in *"peer="*"$UP4"*) pass $t ;; *) fail $t "rc=$RC: $OUT" ;; esac
    else
        fail $t "apply nat: $(tail -n 2 "$TMP/harness.log")"
    fi
fi

t=nat_udp
if want $t; then
    apply --backend nat
    OUT=$(ip netns exec "$C1" "$H" udp-ask --to "$SERVER4:9001" 2>&1)
    log "nat ($MODE): UDP from the container is seen as: $OUT"
    case $OUT in *"udp-peer $UP4"*) pass $t ;; *) fail $t "$OUT" ;; esac
fi

t=nat_icmp
if want $t; then
    apply --backend nat
    ip netns exec "$C1" busybox ping -c1 -W2 "$SERVER4" >/dev/null 2>&1
    RC=$?
    if [ "$ENV" = kernel ]; then
        log "nat (MASQUERADE): ping from the container: $([ $RC -eq 0 ] && echo answered || echo no answer)"
        [ $RC -eq 0 ] && pass $t || fail $t "MASQUERADE should carry ICMP"
    else
        # gVisor's SNAT is TCP/UDP only: ICMP would leave with the private
        # source address (the internet here routes it back, so a leak would
        # be answered); the nat backend drops it instead.
        log "nat (SNAT): ping from the container: $([ $RC -eq 0 ] && echo answered || echo dropped)"
        [ $RC -ne 0 ] && pass $t || fail $t "ICMP left untranslated"
    fi
fi

t=nat_ipv6_no_bypass
if want $t; then
    apply --backend nat
    get "$C1" "http://[$SERVER6]/cgi-bin/whoami"
    log "nat: IPv6 from the container: ${OUT:-rc=$RC}"
    case $OUT in
        *"fd00:e9::"*) fail $t "IPv6 left with the container's address: $OUT" ;;
        *"$UP6"*) pass $t ;;
        *) if [ "$ENV" = gvisor ] && [ $RC -ne 0 ]; then pass $t; else fail $t "rc=$RC $OUT"; fi ;;
    esac
fi

t=proxy_reaches_internet_directly
if want $t; then
    : > "$TMP/serve.log"
    if apply --backend proxy && start_engine; then
        get "$C1" "http://$SERVER4/cgi-bin/whoami"
        log "proxy: container -> server sees ${OUT:-rc=$RC}"
        if [ -n "$(our_rules | grep CNE-S-)" ]; then
            fail $t "nat rules left after switching to proxy: $(our_rules | grep CNE-S-)"
        elif ! grep -q "destination=$SERVER4:80.*route=direct" "$TMP/serve.log"; then
            fail $t "the engine did not log the connection"
        else
            case $OUT in *"peer="*"$UP4"*) pass $t ;; *) fail $t "rc=$RC: $OUT" ;; esac
        fi
    else
        fail $t "apply proxy / start engine: $(tail -n 2 "$TMP/harness.log")"
    fi
fi

t=proxy_forwards_nothing_else
if want $t; then
    # Forwarding on (as nat on another network would leave it): still
    # nothing but redirected TCP leaves.
    apply --backend proxy
    echo 1 > /proc/sys/net/ipv4/ip_forward
    [ "$ENV" = kernel ] && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
    OUT=$(ip netns exec "$C1" "$H" udp-ask --to "$SERVER4:9001" 2>&1); U=$?
    OUT6=$(ip netns exec "$C1" "$H" udp-ask --to "[$SERVER6]:9001" 2>&1); U6=$?
    ip netns exec "$C1" busybox ping -c1 -W2 "$SERVER4" >/dev/null 2>&1; I=$?
    log "proxy: UDP $([ $U -eq 0 ] && echo "reached ($OUT)" || echo dropped), UDP6 $([ $U6 -eq 0 ] && echo "reached ($OUT6)" || echo dropped), ICMP $([ $I -eq 0 ] && echo reached || echo dropped)"
    [ $U -ne 0 ] && [ $U6 -ne 0 ] && [ $I -ne 0 ] && pass $t || fail $t "forwarded: udp rc=$U udp6 rc=$U6 icmp rc=$I"
fi

t=proxy_ipv6_redirected
if want $t; then
    apply --backend proxy
    [ -n "$EPID" ] || start_engine
    get "$C1" "http://[$SERVER6]/cgi-bin/whoami"
    log "proxy: IPv6 from the container: ${OUT:-rc=$RC}"
    case $OUT in
        *"fd00:e9::"*) fail $t "IPv6 bypassed the proxy: $OUT" ;;
        *"$UP6"*) pass $t ;;
        *) fail $t "rc=$RC $OUT" ;;
    esac
fi

t=proxy_through_upstream
if want $t; then
    apply --backend proxy
    start_engine HTTPS_PROXY="http://$INET4:8888" HTTP_PROXY="http://$INET4:8888"
    get "$C1" "http://web.test/cgi-bin/whoami"
    log "proxy via tinyproxy: container -> http://web.test/ : ${OUT:-rc=$RC}"
    if ! grep -q "CONNECT web.test:80" "$TMP/tinyproxy.log"; then
        fail $t "tinyproxy saw no CONNECT web.test:80 (rc=$RC $OUT)"
    else
        log "tinyproxy: $(grep -o 'CONNECT web.test:80.*' "$TMP/tinyproxy.log" | head -1)"
        case $OUT in *"peer="*) pass $t ;; *) fail $t "rc=$RC $OUT" ;; esac
    fi
fi

t=proxy_through_upstream_tls_sni
if want $t; then
    apply --backend proxy
    start_engine HTTPS_PROXY="http://$INET4:8888"
    OUT=$(echo Q | in_ns "$C1" timeout 5 openssl s_client -brief -connect "$SERVER4:443" -servername secure.test 2>&1)
    if ! grep -q "CONNECT secure.test:443" "$TMP/tinyproxy.log"; then
        fail $t "tinyproxy saw no CONNECT secure.test:443: $(echo "$OUT" | tail -n 2)"
    else
        log "tinyproxy: $(grep -o 'CONNECT secure.test:443.*' "$TMP/tinyproxy.log" | head -1)"
        case $OUT in *"CONNECTION ESTABLISHED"*) pass $t ;; *) fail $t "TLS handshake: $(echo "$OUT" | tail -n 2)" ;; esac
    fi
fi

# upstream_fault NAME PORT: the upstream at PORT fails; a connection through
# it fails within the timeout while one that goes direct (NO_PROXY) works.
upstream_fault() {
    local t=$1 port=$2
    : > "$TMP/serve.log"
    apply --backend proxy
    start_engine HTTPS_PROXY="http://$INET4:$port" HTTP_PROXY="http://$INET4:$port" NO_PROXY="$SERVER4B"
    # The failing request, timed inside the namespace (process start-up in
    # gVisor is not the engine's).
    in_ns "$C1" bash -c 's=${EPOCHREALTIME/./}; out=$(timeout 10 busybox wget -q -O- "$1" 2>&1); rc=$?; e=${EPOCHREALTIME/./}; echo "$rc $(( (e - s) / 1000 )) $out"' \
        _ "http://$SERVER4/cgi-bin/whoami" > "$TMP/broken.out" &
    local bg=$!
    sleep 0.3
    get "$C2" "http://$SERVER4B/cgi-bin/whoami" 5
    local other_rc=$RC other=$OUT
    wait $bg
    local rc ms out
    read -r rc ms out < "$TMP/broken.out"
    log "failing upstream :$port: the client failed after ${ms} ms (rc=$rc: $out); meanwhile a direct connection: ${other:-rc=$other_rc}"
    log "engine: $(grep -o 'error=.*' "$TMP/serve.log" | head -1 | cut -c1-200)"
    if [ "$rc" = 0 ]; then
        fail $t "the connection through the failing upstream succeeded"
    elif [ "${ms:-99999}" -gt $((TIMEOUT_MS + 2000)) ]; then
        fail $t "failure took ${ms} ms (timeout ${TIMEOUT_MS} ms); engine: $(grep -E 'WARN' "$TMP/serve.log" | tail -1 | cut -c1-200)"
    elif [ $other_rc -ne 0 ]; then
        fail $t "another connection did not work meanwhile: $other"
    else
        pass $t
    fi
}
want upstream_refusing && upstream_fault upstream_refusing 8889
want upstream_hanging && upstream_fault upstream_hanging 8890

t=explicit_proxy
if want $t; then
    # Where even REDIRECT is unavailable: the network is internal (`none`)
    # and clients use the explicit proxy on their gateway.
    apply --backend none
    start_engine
    OUT=$(in_ns "$C1" env http_proxy="http://$GW4:3128" timeout 5 busybox wget -q -O- "http://$SERVER4/cgi-bin/whoami" 2>&1); A=$?
    TUN=$(in_ns "$C1" timeout 5 curl -s -p -x "http://$GW4:3128" "http://$SERVER4/cgi-bin/whoami" 2>&1); B=$?
    log "explicit proxy: absolute-form -> ${OUT:-rc=$A}; CONNECT tunnel -> ${TUN:-rc=$B}"
    case "$OUT|$TUN" in
        *"$UP4"*"|"*"$UP4"*) pass $t ;;
        *) fail $t "absolute-form rc=$A '$OUT', CONNECT rc=$B '$TUN'" ;;
    esac
fi

t=explicit_proxy_denied_403
if want $t; then
    start_engine -- --deny-port 81
    OUT=$(in_ns "$C1" timeout 5 curl -s -x "http://$GW4:3128" -w ' status=%{http_code}' "http://$SERVER4:81/" 2>&1)
    log "explicit proxy, denied: $OUT"
    case $OUT in *"deny port 81"*"status=403"*) pass $t ;; *) fail $t "$OUT" ;; esac
fi

t=none_blocks_everything
if want $t; then
    stop_engine
    apply --backend none
    echo 1 > /proc/sys/net/ipv4/ip_forward
    [ "$ENV" = kernel ] && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
    get "$C1" "http://$SERVER4/cgi-bin/whoami"; A=$RC
    get "$C1" "http://[$SERVER6]/cgi-bin/whoami"; B=$RC
    U=$(ip netns exec "$C1" "$H" udp-ask --to "[$SERVER6]:9001" 2>&1); C=$?
    log "none (forwarding on): TCP4 rc=$A, TCP6 rc=$B, UDP6 rc=$C"
    [ $A -ne 0 ] && [ $B -ne 0 ] && [ $C -ne 0 ] && pass $t || fail $t "something left: tcp4=$A tcp6=$B udp6=$C"
fi

t=restart_no_duplicates
if want $t; then
    apply --backend proxy
    start_engine
    once=$(our_rules | sort)
    kill9_engine
    # What a restarted daemon does: apply again (and again).
    apply --backend proxy && apply --backend proxy
    again=$(our_rules | sort)
    dups=$(our_rules | sort | uniq -d)
    start_engine
    get "$C1" "http://$SERVER4/cgi-bin/whoami"
    log "after kill -9 and two re-applies: $(echo "$again" | wc -l) rule lines (first apply: $(echo "$once" | wc -l)); egress: ${OUT:-rc=$RC}"
    if [ "$once" != "$again" ] || [ -n "$dups" ]; then
        fail $t "rules changed or duplicated: $(diff <(echo "$once") <(echo "$again") | head -5) $dups"
    else
        case $OUT in *"$UP4"*) pass $t ;; *) fail $t "no egress after restart: rc=$RC $OUT" ;; esac
    fi
fi

t=disable_removes_the_network
if want $t; then
    apply --backend proxy
    harness disable --tool "$TOOL" "${NET_ARGS[@]}"
    left=$(our_rules)
    [ -z "$left" ] && pass $t || fail $t "left: $left"
fi

t=cleanup_leaves_nothing
if want $t; then
    apply --backend nat
    harness apply --tool "$TOOL" --backend proxy --bridge "${P}br2" --subnet4 10.232.0.0/24 --gateway4 10.232.0.1 > /dev/null
    before=$(our_rules | wc -l)
    harness remove-all --tool "$TOOL"
    left=$(our_rules)
    log "remove-all: $before rule lines before, $(echo -n "$left" | grep -c .) after"
    [ "$before" -gt 0 ] && [ -z "$left" ] && pass $t || fail $t "before=$before left: $left"
fi

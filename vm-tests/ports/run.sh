#!/bin/bash
# vm-tests suite: published ports (netd forwards in userspace, no iptables)
# and the *.localhost reverse proxy, on the real kernel and inside gVisor.
#   run.sh kernel|gvisor
# Rows: TCP, UDP and IPv6 ports to a namespace endpoint; bad input (same
# port twice, a port outside 1-65535, an unknown container, a host port in
# use) refused with nothing changed; the proxy (HTTP/1.1, h2c, forwarding
# headers, WebSocket, SSE streamed, a streamed upload, the unknown-name page
# in HTML and JSON, a header flood refused while others are served); with
# `docker up`'s dockerd 28.5.2: TCP and UDP ports to a container, again
# after it restarted with a new address, again after netd restarted; the
# proxy to the container; headless Chromium opening
# http://8080.web.localhost:PORT/, whose page echoes through a WebSocket
# (screenshot kept in $OUT).
#
# Inputs: CONDUCTOR_NETD_BIN, CONDUCTOR_PRELOAD_LIB (as the other suites),
# CONDUCTOR_PORTS_TARGET (default target/release/ports-target), DOCKER28,
# PORTS_OUT (default target/vm-tests-out/ports-ENV).
[ -z "$BASH_VERSION" ] && exec bash "$0" "$@"
set -u
ENVNAME=${1:-kernel}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD=${CONDUCTOR_NETD_BIN:-$ROOT/target/release/conductor-netd}
LIB=${CONDUCTOR_PRELOAD_LIB:-$ROOT/target/preload-build/libconductor_preload.so}
TGT=${CONDUCTOR_PORTS_TARGET:-$ROOT/target/release/ports-target}
DOCKER28=${DOCKER28:-/opt/conductor-net/docker-28/usr/sbin/dockerd}
DOCKER=/usr/bin/docker
OUT=${PORTS_OUT:-$ROOT/target/vm-tests-out/ports-$ENVNAME}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset LD_PRELOAD DOCKER_HOST http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
P=cvp$$
T=$(mktemp -d /tmp/cvp.XXXXXX)
PROXY=127.0.0.1:18000
FAILED=0
NETD_PID=""
PIDS=""
MOUNTED=""
mkdir -p "$OUT"

ok() { echo "ok $1"; [ -z "${PORTS_TIMES:-}" ] || echo "  t=${SECONDS}s"; }
fail() { echo "FAIL $1: $2"; FAILED=1; }
expect() { # expect NAME GOT WANTED
    if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "got '$(echo "$2" | tr '\n' ' ' | cut -c1-300)', wanted '$3'"; fi
}
n() { "$NETD" --socket "$T/netd.sock" "$@"; }

stop_pid() {
    kill "$1" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -9 "$1" 2>/dev/null
}

cleanup() {
    [ -f "$T/up.json" ] && n docker down --docker-socket "$T/d.sock" >/dev/null 2>&1
    [ -n "$NETD_PID" ] && stop_pid "$NETD_PID"
    for p in $PIDS; do stop_pid "$p"; done
    ip netns del ${P}srv 2>/dev/null
    for m in $MOUNTED; do umount -l "$m" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

for tool in busybox curl jq; do
    command -v $tool >/dev/null || { fail setup "$tool is not installed (scripts/install-deps.sh)"; exit 1; }
done
[ -x "$TGT" ] || { fail setup "$TGT not built (cargo build --release -p vm-tests)"; exit 1; }

for d in /run/conductor-net /var/lib/conductor-net; do
    mkdir -p $d && mount -t tmpfs cvp $d && MOUNTED="$d $MOUNTED"
done
ip link set lo up

start_netd() {
    printf 'localhost_proxy = "%s"\nfsync = false\n' "$PROXY" > "$T/netd.toml"
    "$NETD" --socket "$T/netd.sock" serve --state-dir "$T/netd-state" \
        --config "$T/netd.toml" --log-level "${NETD_LOG:-warn}" >> "$T/netd.log" 2>&1 &
    NETD_PID=$!
    for _ in $(seq 1 400); do
        n status >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "  netd did not start: $(tail -3 "$T/netd.log")"
    return 1
}

# get URL [curl args]: the body, following *.localhost to loopback as
# browsers do (RFC 6761).
get() {
    local url=$1; shift
    local hostport=${url#http://}; hostport=${hostport%%/*}
    timeout 20 curl -s --max-time 15 --resolve "$hostport:127.0.0.1" "$@" "$url" 2>&1
}
wait_http() { # wait_http URL: until it answers (a server just started)
    for _ in $(seq 1 100); do curl -s --max-time 2 "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

start_netd || { fail netd-start "$(tail -3 "$T/netd.log")"; exit 1; }

# --- a namespace endpoint serving HTTP, WebSocket and UDP on 8080 ---
ip netns add ${P}srv
n network create ${P}n >/dev/null || fail setup "network create"
n attach --netns ${P}srv ${P}n >/dev/null || fail setup "attach"
SRV_IP=$(n endpoints ${P}n --json | jq -r '.[0].ipv4' | cut -d/ -f1)
ip netns exec ${P}srv "$TGT" serve 0.0.0.0:8080 2>/dev/null &
PIDS="$PIDS $!"
wait_http "http://$SRV_IP:8080/" || fail setup "the service in ${P}srv did not start"

out=$(n port add --netns ${P}srv 18081:8080 2>&1) || fail port-add "$out"
expect port-tcp "$(get http://127.0.0.1:18081/hello)" hello-from-target
out=$(n port add --netns ${P}srv 18081:8080/udp 2>&1) || fail port-add-udp "$out"
expect port-udp "$("$TGT" udp 127.0.0.1:18081 ping)" echo:ping
out=$(n port add --netns ${P}srv '[::1]:18082:8080' 2>&1) || fail port-add-ipv6 "$out"
expect port-ipv6 "$(timeout 20 curl -s --max-time 15 'http://[::1]:18082/hello')" hello-from-target

# --- bad input: a clear error naming the value, its exit code, nothing changed ---
before=$(n port ls --json)
bad() { # bad NAME EXIT NEEDLE ARGS...
    local name=$1 code=$2 needle=$3; shift 3
    local msg rc
    msg=$(n port add "$@" 2>&1); rc=$?
    if [ "$rc" = "$code" ] && echo "$msg" | grep -qF -- "$needle"; then ok "$name"
    else fail "$name" "exit $rc, '$msg' (wanted exit $code naming $needle)"; fi
}
bad bad-same-port-twice 5 "127.0.0.1:18081/tcp" --netns ${P}srv 18081:9090
bad bad-port-range 3 70000 --netns ${P}srv 18083:70000
bad bad-port-zero 3 '"0"' --netns ${P}srv 0:8080
bad bad-unknown-container 4 nope-${P} --container nope-${P} 18084:80
bad bad-unknown-netns 4 nope-${P} --netns nope-${P} 18084:80
busybox nc -l -p 18085 >/dev/null 2>&1 &
HOLDER=$!; PIDS="$PIDS $HOLDER"
for _ in $(seq 1 50); do busybox netstat -ltn 2>/dev/null | grep -q ":18085 " && break; sleep 0.05; done
bad bad-host-port-in-use 5 "127.0.0.1:18085/tcp is in use" --netns ${P}srv 18085:8080
expect bad-nothing-changed "$(n port ls --json)" "$before"
stop_pid "$HOLDER"

# --- the *.localhost proxy to the namespace endpoint ---
H=8080.${P}srv.localhost:18000
expect proxy-http "$(get "http://$H/hello")" hello-from-target
expect proxy-single-port "$(get "http://${P}srv.localhost:18000/hello")" hello-from-target
expect proxy-h2c "$(get "http://$H/hello" --http2-prior-knowledge)" hello-from-target
expect proxy-forwarded-headers "$(get "http://$H/headers")" "host=$H xff=127.0.0.1 xfh=$H xfp=http"
expect proxy-websocket "$("$TGT" ws "ws://$H/ws")" ws-echo:one,two,three
expect proxy-sse-streamed "$("$TGT" stream "http://$H/stream")" streamed
head -c 5000000 /dev/zero > "$T/upload"
expect proxy-upload-streamed "$(get "http://$H/upload" -H 'Transfer-Encoding: chunked' --data-binary @"$T/upload")" "received 5000000"
code=$(get "http://nope-${P}.localhost:18000/" -o "$T/unknown.html" -w '%{http_code}')
if [ "$code" = 404 ] && grep -q "http://8080.${P}srv.localhost:18000/" "$T/unknown.html"; then ok proxy-unknown-name-html
else fail proxy-unknown-name-html "status $code: $(head -c 300 "$T/unknown.html")"; fi
js=$(get "http://nope-${P}.localhost:18000/" -H 'Accept: application/json')
expect proxy-unknown-name-json "$(echo "$js" | jq -r --arg n "${P}srv" '[.routable[] | select(.name == $n) | .ports[0]][0]') $(echo "$js" | jq -r .error)" "8080 no target called \"nope-${P}\""
expect proxy-websocket-unknown-name "$("$TGT" ws "ws://nope-${P}.localhost:18000/ws" | cut -c1-40)" "ws-connect-failed: HTTP error: 404 Not F"
# A header flood is refused; the proxy still serves others.
# (one printf: thousands of processes take minutes inside gVisor)
printf 'X-Flood-%d: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n' $(seq 1 2000) > "$T/flood.headers"
code=$(timeout 20 curl -s --max-time 15 -o /dev/null -w '%{http_code}' -H @"$T/flood.headers" --resolve "$H:127.0.0.1" "http://$H/hello" 2>&1)
case "$code" in 431|400|000) ok "proxy-header-flood-refused ($code)" ;; *) fail proxy-header-flood-refused "status $code" ;; esac
expect proxy-after-flood "$(get "http://$H/hello")" hello-from-target

# --- Docker: ports and the proxy to a container, across its restart and netd's ---
docker_rows() {
    d() { timeout -k 10 120 $DOCKER -H "unix://$T/d.sock" "$@"; }
    if [ ! -x "$DOCKER28" ]; then fail docker "$DOCKER28 is not installed (scripts/install-deps.sh)"; return; fi
    if ! CONDUCTOR_PRELOAD_PATH=$LIB n docker up --dockerd "$DOCKER28" --docker-socket "$T/d.sock" \
        --data-root "$T/data" > "$T/up.out" 2>&1; then
        fail docker-up "$(tail -3 "$T/up.out" | tr '\n' ' ')"; return
    fi
    touch "$T/up.json"
    # An image with ports-target and its libraries (no registry here).
    mkdir -p "$T/rootfs/bin" "$T/rootfs/tmp"
    cp /bin/busybox "$T/rootfs/bin/busybox"; ln -s busybox "$T/rootfs/bin/sh"; ln -s busybox "$T/rootfs/bin/sleep"
    cp "$TGT" "$T/rootfs/bin/ports-target"
    for l in $(ldd "$TGT" | grep -oE '/[^ ]+'); do cp --parents -L "$l" "$T/rootfs/"; done
    tar -C "$T/rootfs" -c . | d import - pt:latest >/dev/null 2>&1 || { fail docker-image "import failed"; return; }
    d network create --subnet 172.31.7.0/24 ${P}net >/dev/null 2>"$T/net.err" \
        || { fail docker-network "$(cat "$T/net.err")"; return; }
    d run -d --name web --network ${P}net pt /bin/ports-target serve 0.0.0.0:8080 >/dev/null 2>"$T/run.err" \
        || { fail docker-run "$(cat "$T/run.err")"; return; }
    ipof() { d inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
    local ip1; ip1=$(ipof web)
    wait_http "http://$ip1:8080/" || fail docker-web "not serving on $ip1:8080"
    # The watcher learns of the container asynchronously: retry the add.
    local out=""
    for _ in $(seq 1 50); do out=$(n port add --container web 18080:8080 2>&1) && break; sleep 0.1; done
    expect docker-port-add "$(echo "$out" | grep -c listening)" 1
    n port add --container web 18080:8080/udp >/dev/null 2>&1 || fail docker-port-add-udp "refused"
    expect docker-port-tcp "$(get http://127.0.0.1:18080/hello)" hello-from-target
    expect docker-port-udp "$("$TGT" udp 127.0.0.1:18080 ping)" echo:ping
    expect docker-proxy-http "$(get http://8080.web.localhost:18000/hello)" hello-from-target
    expect docker-proxy-websocket "$("$TGT" ws ws://8080.web.localhost:18000/ws)" ws-echo:one,two,three
    expect docker-proxy-sse-streamed "$("$TGT" stream http://8080.web.localhost:18000/stream)" streamed
    browser docker-browser "http://8080.web.localhost:18000/"
    # A worker in web's namespace has no address of its own: its name is
    # routed (proxy and published port) to web's address.
    d run -d --name ${P}wk --network container:web pt /bin/ports-target serve 0.0.0.0:8081 \
        >/dev/null 2>"$T/wk.err" || fail docker-worker-run "$(cat "$T/wk.err")"
    out=""
    for _ in $(seq 1 50); do
        out=$(get "http://8081.${P}wk.localhost:18000/hello"); [ "$out" = hello-from-target ] && break; sleep 0.1
    done
    expect docker-proxy-worker-by-name "$out" hello-from-target
    expect docker-proxy-worker-websocket "$("$TGT" ws "ws://8081.${P}wk.localhost:18000/ws")" ws-echo:one,two,three
    out=$(n port add --container ${P}wk 18082:8081 2>&1)
    expect docker-port-worker "$(get http://127.0.0.1:18082/hello)" hello-from-target
    n port rm 127.0.0.1:18082 >/dev/null 2>&1 || fail docker-port-worker-rm "$out"
    d rm -f ${P}wk >/dev/null 2>&1
    # Restarted with a new address: a squatter takes the old one meanwhile.
    d stop -t 1 web >/dev/null
    d run -d --name squat --network ${P}net --ip "$ip1" pt /bin/sleep 600 >/dev/null
    d start web >/dev/null
    local ip2; ip2=$(ipof web)
    [ "$ip1" != "$ip2" ] && ok "docker-new-address ($ip1 -> $ip2)" || fail docker-new-address "still $ip1"
    wait_http "http://$ip2:8080/" || fail docker-web-restarted "not serving on $ip2:8080"
    out=""
    for _ in $(seq 1 50); do
        out=$(n port ls --json | jq -r '.[] | select(.id == "127.0.0.1:18080/tcp") | .address')
        [ "$out" = "$ip2" ] && break; sleep 0.1
    done
    expect docker-port-retargeted "$out" "$ip2"
    expect docker-port-tcp-after-restart "$(get http://127.0.0.1:18080/hello)" hello-from-target
    expect docker-port-udp-after-restart "$("$TGT" udp 127.0.0.1:18080 ping2)" echo:ping2
    # netd restarted: the ports are bound again from its state.
    stop_pid "$NETD_PID"; NETD_PID=""
    start_netd || { fail netd-restart "$(tail -3 "$T/netd.log")"; return; }
    out=""
    for _ in $(seq 1 50); do out=$(get http://127.0.0.1:18080/hello); [ "$out" = hello-from-target ] && break; sleep 0.1; done
    expect netd-restart-docker-port-tcp "$out" hello-from-target
    expect netd-restart-docker-port-udp "$("$TGT" udp 127.0.0.1:18080 ping3)" echo:ping3
    expect netd-restart-netns-port-tcp "$(get http://127.0.0.1:18081/hello)" hello-from-target
    expect netd-restart-netns-port-udp "$("$TGT" udp 127.0.0.1:18081 ping4)" echo:ping4
    expect netd-restart-proxy-websocket "$("$TGT" ws ws://8080.web.localhost:18000/ws)" ws-echo:one,two,three
    expect netd-restart-port-ls "$(n port ls --json | jq -r '[.[] | select(.listening)] | length')" 5
    d rm -f web squat >/dev/null 2>&1
    d network rm ${P}net >/dev/null 2>&1
    n docker down --docker-socket "$T/d.sock" > "$T/down.out" 2>&1 || fail docker-down "$(cat "$T/down.out")"
    rm -f "$T/up.json"
}

# browser NAME URL: headless Chromium through chromedriver opens URL, waits
# for the page's WebSocket echo to show, keeps a screenshot.
browser() {
    local name=$1 url=$2
    if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
        fail "$name" "chromium and chromium-driver are not installed (scripts/install-deps.sh)"; return
    fi
    local port=19515 wd
    chromedriver --port=$port --allowed-ips=127.0.0.1 > "$T/chromedriver.log" 2>&1 &
    local cd_pid=$!
    wd="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do curl -s "$wd/status" 2>/dev/null | grep -q '"ready": *true' && break; sleep 0.1; done
    local caps='{"capabilities":{"alwaysMatch":{"goog:chromeOptions":{"binary":"/usr/bin/chromium","args":["--headless=new","--no-sandbox","--disable-gpu","--disable-dev-shm-usage","--no-proxy-server","--user-data-dir='"$T"'/chrome-profile","--window-size=900,500"]}}}}'
    local sid
    sid=$(curl -s -X POST -H 'Content-Type: application/json' -d "$caps" "$wd/session" | jq -r '.value.sessionId // empty')
    if [ -z "$sid" ]; then
        fail "$name" "no browser session: $(curl -s -X POST -d "$caps" "$wd/session" | head -c 300)"
        stop_pid "$cd_pid"; return
    fi
    curl -s -X POST -H 'Content-Type: application/json' -d "{\"url\":\"$url\"}" "$wd/session/$sid/url" >/dev/null
    local result=""
    for _ in $(seq 1 100); do
        result=$(curl -s -X POST -H 'Content-Type: application/json' \
            -d '{"script":"var e = document.getElementById(\"result\"); return e ? e.textContent : document.title;","args":[]}' \
            "$wd/session/$sid/execute/sync" | jq -r .value)
        case "$result" in ws-echo:*|ws-error) break ;; esac
        sleep 0.1
    done
    curl -s "$wd/session/$sid/screenshot" | jq -r .value | base64 -d > "$OUT/$name.png" 2>/dev/null
    curl -s -X DELETE "$wd/session/$sid" >/dev/null
    stop_pid "$cd_pid"
    if [ "$result" = "ws-echo:one,two,three" ] && [ -s "$OUT/$name.png" ]; then
        ok "$name (screenshot $OUT/$name.png)"
    else
        fail "$name" "page shows '$result'; screenshot $OUT/$name.png; $(tail -2 "$T/chromedriver.log" | tr '\n' ' ')"
    fi
}

docker_rows
exit $FAILED

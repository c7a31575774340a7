# Shared by vm-tests/agent/run.sh and the files it sources: settings,
# daemon control, namespaces, traffic and state helpers. Sourced, not run.

ENV=${1:-kernel}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${CONDUCTOR_NETD_BIN:-}
if [ -z "$BIN" ]; then
    BIN=$TARGET/release/conductor-netd
    [ -x "$BIN" ] || BIN=$TARGET/debug/conductor-netd
fi
# Connection flooder (tests/src/bin/api-flood.rs), built with the workspace.
FLOOD=${CONDUCTOR_API_FLOOD:-$TARGET/release/api-flood}
[ -x "$FLOOD" ] || FLOOD=$TARGET/debug/api-flood
P=cndt$$
TMP=$(mktemp -d /tmp/cndt.XXXXXX)
SOCK=$TMP/netd.sock
STATE=$TMP/state
LOG=$TMP/daemon.log
DPID=
CRASH_CONCURRENCY=4
KILLS=${KILLS:-60}
if [ "$ENV" = gvisor ]; then
    N_CONCURRENT=${N_CONCURRENT:-200}
else
    N_CONCURRENT=${N_CONCURRENT:-200}
fi

log() { echo "  $*"; }
pass() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; [ -s "$LOG" ] && tail -n 5 "$LOG" | sed 's/^/  daemon: /'; return 1; }

cleanup() {
    stop_daemon
    jobs -p | xargs -r kill 2>/dev/null
    local own
    own=$(stat -L -c %i /proc/self/ns/net)
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P"); do
        # A name bound to our own namespace (host_namespace): never kill
        # the processes there, this script among them.
        if [ "$(stat -L -c %i "/run/netns/$ns" 2>/dev/null)" != "$own" ]; then
            ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
        fi
        ip netns del "$ns" 2>/dev/null
    done
    # Bridges of our networks (named cn-<network> or cn-<6 bytes>-<hash>)
    # and host veths of our daemons (cn<instance tag><n>).
    local tags
    tags=$(sort -u "$TMP/tags" 2>/dev/null | paste -sd'|')
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        case $l in
            cn-${P:0:6}*) ip link del "$l" 2>/dev/null ;;
        esac
        if [ -n "$tags" ] && echo "$l" | grep -qE "^cn($tags)[0-9a-f]+$"; then
            ip link del "$l" 2>/dev/null
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

netd() { "$BIN" --socket "$SOCK" "$@"; }

# start_daemon [config-text]: a daemon with this test's state and socket
# ($FDLIMIT, if set: its `ulimit -n`).
start_daemon() {
    printf '%s\n' "${1:-}" > "$TMP/config.toml"
    (
        [ -n "${FDLIMIT:-}" ] && ulimit -n "$FDLIMIT"
        probe=--no-probe
        [ -n "${NETD_PROBE:-}" ] && probe=
        exec "$BIN" serve --socket "$SOCK" --state-dir "$STATE" --config "$TMP/config.toml" \
            $probe --log-level "${NETD_LOG:-warn}"
    ) >> "$LOG" 2>&1 &
    DPID=$!
    for _ in $(seq 1 400); do
        # Up when it answers at all (a refused peer gets a JSON error too).
        if [ -n "$(netd api GET /v1/status 2>/dev/null)" ]; then
            jq -r .tag "$STATE/instance.json" >> "$TMP/tags" 2>/dev/null
            return 0
        fi
        kill -0 "$DPID" 2>/dev/null || { DPID=; return 1; }
        sleep 0.05
    done
    return 1
}

# A daemon that does not stop within 15 s of SIGTERM (stuck: a failure the
# test reports) is killed, so the suite goes on.
stop_daemon() {
    if [ -n "$DPID" ]; then
        kill -TERM "$DPID" 2>/dev/null
        local i
        for i in $(seq 1 150); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$DPID" 2>/dev/null && { log "daemon $DPID ignored SIGTERM for 15 s: killed"; kill -9 "$DPID"; }
        wait "$DPID" 2>/dev/null
        DPID=
    fi
}

kill9_daemon() {
    if [ -n "$DPID" ]; then
        kill -9 "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null
        DPID=
    fi
}

fresh() { stop_daemon; rm -rf "$STATE" "$SOCK"; : > "$LOG"; }

# mkns NAME...: named namespaces (attach brings their lo up).
mkns() {
    local f=$TMP/mkns.batch n
    : > "$f"
    for n in "$@"; do echo "netns add $n" >> "$f"; done
    # (gVisor answers the netnsid request of `ip netns add` with EOPNOTSUPP:
    # harmless, and filtered here.)
    ip -batch "$f" 2> "$TMP/mkns.err"
    local rc=$?
    grep -v "Operation not supported" "$TMP/mkns.err" >&2
    return $rc
}

rmns() {
    local f=$TMP/rmns.batch n
    : > "$f"
    for n in "$@"; do echo "netns del $n" >> "$f"; done
    ip -batch "$f" 2>/dev/null
    return 0
}

# ns_addr NS [IF]: the IPv4 address/prefix on IF (eth0) inside NS, or nothing.
ns_addr() {
    ip -n "$1" -o -4 addr show dev "${2:-eth0}" 2>/dev/null | awk '{print $4}' | head -n1
}

# echo_test SERVER_NS CLIENT_NS ADDR PORT: TCP echo through the bridge.
echo_test() {
    local out
    ip netns exec "$1" busybox nc -l -p "$4" -e /bin/cat &
    local srv=$!
    sleep 0.3
    out=$(echo "hello-$4" | ip netns exec "$2" timeout 10 busybox nc -w 3 "$3" "$4" 2>&1)
    kill "$srv" 2>/dev/null
    wait "$srv" 2>/dev/null
    [ "$out" = "hello-$4" ] || { echo "echo through $3:$4 gave '$out'"; return 1; }
}

host_links() {
    ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1
}

tag() { jq -r .tag "$STATE/instance.json"; }
# Live endpoint records in the state journal (puts minus dels).
state_endpoints() {
    jq -n 'reduce inputs as $l ({}; if $l.put then .[$l.put.id] = 1 else del(.[$l.del]) end) | length' \
        "$STATE/endpoints.log"
}


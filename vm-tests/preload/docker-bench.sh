# Benchmarks of docker.sh (sourced by it: uses start_daemon, stop_daemon, d).
#   bench       dockerd start-to-ready, BENCH_RUNS alternating runs without
#               and with the preload (DOCKER_VERSIONS, default 20); with
#               BASELINE_LIB=/path/libconductor_preload.so, with that build
#               instead of without (a regression check between two builds)
#   bench-start container start-to-running: `docker run -d` until it
#               returns (the container is running then), BENCH_RUNS runs
#               each for dockerd 20.10 without and with the preload and
#               28.5.2 with it (28 cannot start a bridged container without
#               it inside gVisor), plus the preload's own time during those
#               starts, read from its counters (CONDUCTOR_PRELOAD_STATS)

# nearest-rank percentile of the numbers on stdin
pct() { sort -n | awk -v q="$1" '{ a[NR] = $1 } END { i = int(q * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print a[i] }'; }

bench_ready() {
    runs=${BENCH_RUNS:-5}
    # BASELINE_LIB: compare with another build of the library instead of
    # without the preload
    first=without
    [ -n "${BASELINE_LIB:-}" ] && first=baseline
    for ver in ${DOCKER_VERSIONS:-20}; do
        : >"$T/b0"; : >"$T/b1"
        run=0
        while [ $run -lt "$runs" ]; do
            for m in $first with; do
                start_daemon "b$ver$m$run" "$ver" "$m"
                if [ "$READY" = never-ready ]; then
                    echo "dockerd $ver ($m the preload) never became ready:" >&2
                    tail -5 "$CUR/dockerd.log" >&2
                    stop_daemon
                    exit 1
                fi
                [ $m = with ] && echo "$READY" >>"$T/b1" || echo "$READY" >>"$T/b0"
                stop_daemon
            done
            run=$((run + 1))
        done
        m0=$(pct 0.5 <"$T/b0"); m1=$(pct 0.5 <"$T/b1")
        echo "dockerd $ver start-to-ready ($ENVNAME): ${BASELINE_LIB:+with the baseline library }${BASELINE_LIB:-without} $m0 ms [$(tr '\n' ' ' <"$T/b0")], with $m1 ms [$(tr '\n' ' ' <"$T/b1")], difference $(awk -v a="$m0" -v b="$m1" 'BEGIN { printf "%.1f", (b - a) * 100 / a }') %"
    done
}

# the preload's counters (see preload/src/stats.rs), 8 numbers
stats_read() { od -An -t u8 -j 8 -N 64 -v "$STATS" | tr -s ' \n' '  '; }

# start_series NAME VERSION MODE: prints one figure line
start_series() {
    STATS=""
    [ "$3" = without ] || STATS=$T/stats.$1
    [ -n "$STATS" ] && rm -f "$STATS"
    if ! start_daemon "$1" "$2" "$3"; then
        echo "dockerd $2 ($3 the preload) never became ready: $(tail -3 "$CUR/dockerd.log" | tr '\n' ' ')"
        stop_daemon
        return
    fi
    tar -C "$T/rootfs" -c . | d import - bb:latest >/dev/null 2>&1
    # warm-up: first start loads the image layers, creates docker0's state
    if ! d run -d --name warm bb sleep 600 >/dev/null 2>"$CUR/err"; then
        echo "docker $2 $3 the preload: container does not start: $(tr '\n' ' ' <"$CUR/err" | cut -c1-200)"
        stop_daemon
        return
    fi
    d rm -f warm >/dev/null 2>&1
    : >"$T/times"
    sum="0 0 0 0 0 0 0 0"
    i=0
    while [ $i -lt "$RUNS" ]; do
        [ -n "$STATS" ] && s0=$(stats_read)
        t0=$(date +%s%N)
        d run -d --name "bs$i" bb sleep 600 >/dev/null 2>&1
        t1=$(date +%s%N)
        if [ -n "$STATS" ]; then
            s1=$(stats_read)
            sum=$(echo "$sum $s0 $s1" | awk '{ for (k = 1; k <= 8; k++) printf "%d ", $k + $(k + 16) - $(k + 8) }')
        fi
        echo $(((t1 - t0) / 1000)) >>"$T/times"
        d rm -f "bs$i" >/dev/null 2>&1
        i=$((i + 1))
    done
    stop_daemon
    p50=$(pct 0.5 <"$T/times"); p99=$(pct 0.99 <"$T/times")
    total=$(awk '{ s += $1 } END { print s }' "$T/times")
    line=$(awk -v a="$p50" -v b="$p99" 'BEGIN { printf "p50 %.1f ms, p99 %.1f ms", a / 1000, b / 1000 }')
    if [ -n "$STATS" ]; then
        # counters: calls, call ns, trapped, reads, read ns, polls, poll ns,
        # real ns (the program's own system calls inside the handlers)
        line="$line; preload: $(echo "$sum" | awk -v t="$total" -v n="$RUNS" -v trap="$TRAP_US" '{
            own = ($2 - $8) / 1e3; deliv = $3 * trap; all = own + deliv + $7 / 1e3
            printf "per start %.1f calls (%.1f trapped), %.1f reads; in its handlers %.2f ms, of which the calls themselves %.2f ms: its own work %.2f ms (%.2f %%); SIGSYS delivery %.1f x %.0f us = %.2f ms (%.2f %%); event thread %.2f ms (%.2f %%); together %.2f ms = %.2f %% of start-to-running",
                $1 / n, $3 / n, $4 / n, $2 / 1e6 / n, $8 / 1e6 / n, own / 1e3 / n, own * 100 / t, $3 / n, trap, deliv / 1e3 / n, deliv * 100 / t, $7 / 1e6 / n, $7 / 1e3 * 100 / t, all / 1e3 / n, all * 100 / t }')"
    fi
    echo "docker $2 $3 the preload ($ENVNAME): container start-to-running over $RUNS runs: $line"
}

# TRAP_US: one SIGSYS round trip (trap, handler entry and return), measured
# here with nlsub: a trapped setsockopt minus the same call untrapped
# (medians of 5 alternating runs)
trap_cost() {
    sso() { sed -n 's/.*netlink_setsockopt_ns=\([0-9.]*\).*/\1/p'; }
    : >"$T/t0"; : >"$T/t1"
    for _ in 1 2 3 4 5; do
        "$BIN/nlsub" bench -n 40000 | sso >>"$T/t0"
        env LD_PRELOAD="$LIB" CONDUCTOR_PRELOAD_FORCE=1 "$BIN/nlsub" bench -n 40000 | sso >>"$T/t1"
    done
    w0=$(pct 0.5 <"$T/t0"); w1=$(pct 0.5 <"$T/t1")
    TRAP_US=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    echo "one trapped call costs $TRAP_US us more than the same call untrapped ($ENVNAME; $w0 -> $w1 ns)"
}

bench_start() {
    RUNS=${BENCH_RUNS:-20}
    trap_cost
    start_series s20without 20 without
    start_series s20with 20 with
    start_series s28with 28 with
}

case "$MODE" in
    bench) bench_ready; exit 0 ;;
    bench-start) bench_start; exit 0 ;;
    test) ;;
    *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac

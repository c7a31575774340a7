# Sourced by vm-tests/workers/run.sh ENV bench (which sets up netd, a
# private dockerd and the bb image). Figures, alternating runs, same image:
#  - spawn-to-running: `worker spawn --detach` vs `docker run -d
#    --network=container:PARENT` (each command's wall time: it returns once
#    the container runs);
#  - spawn-to-first-output: `worker run -- echo first` vs `docker run --rm
#    --network=container:PARENT bb echo first`, until the line is read;
#  - 20 workers spawned concurrently through netd (total, p99 of each);
#  - auto-attach: `docker run -d --network none --label
#    conductor.network=NET` returned -> the endpoint is listed (p50/p99).
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
pct() { # pct P FILE
    sort -n "$2" | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; print a[i]}'
}
first_line() { # first_line CMD...: ms until its first output line
    local t0 t1 line
    t0=$(now)
    { read -r line; t1=$(now); cat >/dev/null; } < <("$@" 2>&1)
    ms "$t0" "$t1"
}

bench() {
    local runs=${BENCH_RUNS:-20} t0 t1 i
    d run -d --name ${P}par bb httpd -f -p 127.0.0.1:8080 -h /www >/dev/null
    : > "$T/netd.run"; : > "$T/cli.run"; : > "$T/netd.out"; : > "$T/cli.out"
    for i in $(seq 1 "$runs"); do
        t0=$(now); w worker spawn --parent ${P}par --detach --name ${P}b$i -- sleep 600 >/dev/null; t1=$(now)
        ms "$t0" "$t1" >> "$T/netd.run"
        t0=$(now); d run -d --name ${P}c$i --network container:${P}par bb sleep 600 >/dev/null; t1=$(now)
        ms "$t0" "$t1" >> "$T/cli.run"
        first_line w worker run --parent ${P}par -- echo first >> "$T/netd.out"
        first_line d run --rm --network container:${P}par bb echo first >> "$T/cli.out"
        d rm -f ${P}b$i ${P}c$i >/dev/null
    done
    report() { # report WHAT NETD-FILE CLI-FILE
        local n50 n99 c50 c99
        n50=$(pct 50 "$2"); n99=$(pct 99 "$2"); c50=$(pct 50 "$3"); c99=$(pct 99 "$3")
        echo "  $1 ($runs runs): netd p50 $n50 ms p99 $n99 ms | docker CLI p50 $c50 ms p99 $c99 ms | ratio p50 $(awk -v a="$n50" -v b="$c50" 'BEGIN {printf "%.2f", (b>0)?a/b:0}')"
    }
    echo "  bench $ENVNAME, dockerd $(d version -f '{{.Server.Version}}')"
    report spawn-to-running "$T/netd.run" "$T/cli.run"
    report spawn-to-first-output "$T/netd.out" "$T/cli.out"
    # 20 concurrently
    : > "$T/conc"
    t0=$(now)
    local spawners=""
    for i in $(seq 1 20); do
        ( s=$(now); w worker spawn --parent ${P}par --detach -- sleep 600 >/dev/null; ms "$s" "$(now)" >> "$T/conc" ) &
        spawners="$spawners $!"
    done
    # (a bare `wait` would also wait for netd, started by this shell)
    wait $spawners
    t1=$(now)
    echo "  20 concurrent spawns: total $(ms "$t0" "$t1") ms, each p50 $(pct 50 "$T/conc") ms p99 $(pct 99 "$T/conc") ms, running $(w worker count)"
    w worker stop-all >/dev/null 2>&1
    # auto-attach delay
    n network create ${P}bn --subnet 10.214.0.0/24 >/dev/null
    : > "$T/attach"
    for i in $(seq 1 "$runs"); do
        d run -d --name ${P}l$i --network none --label conductor.network=${P}bn bb sleep 600 >/dev/null
        t0=$(now)
        for _ in $(seq 1 1000); do
            [ "$(n --json endpoints ${P}bn | jq length)" = 1 ] && break
        done
        t1=$(now)
        ms "$t0" "$t1" >> "$T/attach"
        d rm -f ${P}l$i >/dev/null
        for _ in $(seq 1 1000); do [ "$(n --json endpoints ${P}bn | jq length)" = 0 ] && break; done
    done
    echo "  auto-attach, container started -> endpoint listed ($runs runs): p50 $(pct 50 "$T/attach") ms p99 $(pct 99 "$T/attach") ms"
    n network rm ${P}bn >/dev/null
    ok figures
}

#!/usr/bin/env bash
# Run with: benches/load/run.sh [-n 1000,100000] [-r 3] [-l 15] [-s fleetdns,dnsmasq,nsd,knot,unbound] [-p PARTS] [-o FILE]
#
# fleetdns against the servers people would otherwise run (dnsmasq, NSD,
# Knot, Unbound), side by side on this machine, in the same run. Everything
# is on loopback.
#
# Method (as ../shared/perf/REFERENCE.md; the same for every server):
# - Names: web-1..web-N.fleet.internal -> 10.x.y.z, served by each from its
#   own format (fleetdns: a describe-instances file; dnsmasq: a hosts file
#   with local=/fleet.internal/; NSD and Knot: a zone file; Unbound:
#   local-data).
# - Queries: fixed seed, 90% existing A, 5% NXDOMAIN, 5% AAAA (NODATA).
# - Each server pinned to CPU 0 with one worker (taskset; fleetdns with
#   TOKIO_WORKER_THREADS=1), dnsperf pinned to CPU 1, `-c 8 -q 100`.
# - Servers interleaved (A B C A B C ...) for -r rounds; medians reported.
# - Saturated runs: the same servers with two workers each (dnsmasq has
#   one), nothing pinned, dnsperf `-c 8 -q 500` on the same two cores: the
#   most each answers on this machine (QPS; CPU is all used).
# - q/CPU-s = queries completed / server CPU seconds (utime+stime of the
#   server's processes from /proc): the figure to compare on a noisy
#   machine. Startup = launch until the last name answers. Peak RSS =
#   VmHWM summed over the server's processes.
# - Extra runs: time for a changed name to be visible after a reload
#   (SIGHUP for every server); fleetdns swapping a 100,000-name snapshot
#   every second under a fixed 20,000 q/s load, against the same load
#   without swaps (with p99 latency, from dnsperf -v per-query lines,
#   and the resident memory before and its peak during the 12 s, so the
#   peak while a new zone is made beside the served one); startup from persisted state; forwarding to one local upstream (NSD),
#   cached, fleetdns against dnsmasq.
# - Central-server checks (fleetdns only, the first size): q/CPU-s as it
#   is, with an [access] list matched at its last entry, with [rrl] at a
#   rate nothing reaches (every reply accounted, none limited), and bound
#   to 0.0.0.0 (IP_PKTINFO both ways), interleaved, as ratios to as-is.
# - With FLEETDNS_BIN_B set, part "ab": that binary against the usual one
#   (A), pinned as the main runs, interleaved, at the first size: how a
#   change moves q/CPU-s, measured side by side.
# - TCP: fleetdns, NSD and Knot pinned as the main runs, dnsperf -m tcp
#   with its 8 connections pipelining, and again with one query per
#   connection (part "tcp").
# - -p picks parts: main,tcp,sat,reload,fleetdns,forward,central,ab (default
#   all; ab only when FLEETDNS_BIN_B is set).
#
# Needs root for apt (dnsperf, nsd, knot, unbound, dnsmasq-base), or those
# installed. Uses target/release/fleetdns (built if missing) or $FLEETDNS_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"

sizes="1000,100000"
rounds=3
duration=15
servers="fleetdns,dnsmasq,nsd,knot,unbound"
parts="main,tcp,sat,reload,fleetdns,forward,central,ab"
out=""
while getopts "n:r:l:s:p:o:" opt; do
    case "$opt" in
        n) sizes="$OPTARG" ;;
        r) rounds="$OPTARG" ;;
        l) duration="$OPTARG" ;;
        s) servers="$OPTARG" ;;
        p) parts="$OPTARG" ;;
        o) out="$OPTARG" ;;
        *) sed -n '2p' "$0" >&2; exit 2 ;;
    esac
done
IFS=, read -r -a sizes <<<"$sizes"
IFS=, read -r -a servers <<<"$servers"
want() { [[ ",$parts," == *",$1,"* ]]; }

# --- set-up ---------------------------------------------------------------
need=()
for pair in dnsperf:dnsperf nsd:nsd knotd:knot unbound:unbound dnsmasq:dnsmasq-base dig:bind9-dnsutils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    # The packages' own services must not start (they would take port 53).
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi
bin="${FLEETDNS_BIN:-}"
if [ -z "$bin" ]; then
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    cargo build --release --locked --bin fleetdns >&2
    bin="$target_dir/release/fleetdns"
fi

work="$(mktemp -d /tmp/fleetdns-load.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
clk="$(getconf CLK_TCK)"
port=20053

ip_of() { # N -> 10.a.b.c
    awk -v i="$1" 'BEGIN { printf "10.%d.%d.%d", 20 + int(i / 62500), int(i / 250) % 250, i % 250 + 1 }'
}

# --- data -----------------------------------------------------------------
gen() { # N DIR [extra-name]
    local n="$1" dir="$2" extra="${3:-}"
    mkdir -p "$dir"
    awk -v n="$n" -v dir="$dir" -v extra="$extra" -v serial="$(date +%s)" '
    function ip(i) { return sprintf("10.%d.%d.%d", 20 + int(i / 62500), int(i / 250) % 250, i % 250 + 1) }
    BEGIN {
        json = dir "/fleet.json"; hosts = dir "/hosts"; zone = dir "/zone"; local = dir "/local-data.conf"
        printf "{\"Reservations\":[{\"Instances\":[" > json
        printf "$ORIGIN fleet.internal.\n$TTL 30\n@ SOA localhost. hostmaster.fleet.internal. %d 300 60 1209600 10\n@ NS localhost.\n", serial > zone
        for (i = 1; i <= n; i++) {
            name = "web-" i
            if (i == n && extra != "") name = extra
            printf "%s{\"InstanceId\":\"i-%017x\",\"State\":{\"Name\":\"running\"},\"PrivateIpAddress\":\"%s\",\"Tags\":[{\"Key\":\"Name\",\"Value\":\"%s\"}]}", (i > 1 ? "," : ""), i, ip(i), name > json
            printf "%s %s.fleet.internal\n", ip(i), name > hosts
            printf "%s A %s\n", name, ip(i) > zone
            printf "local-data: \"%s.fleet.internal. 30 IN A %s\"\n", name, ip(i) > local
        }
        printf "]}]}\n" > json
    }'
}

gen_queries() { # N FILE
    awk -v n="$1" 'BEGIN {
        srand(42)
        for (q = 0; q < 200000; q++) {
            r = rand(); i = int(rand() * n) + 1
            if (r < 0.90) printf "web-%d.fleet.internal A\n", i
            else if (r < 0.95) printf "nx-%d.fleet.internal A\n", i
            else printf "web-%d.fleet.internal AAAA\n", i
        }
    }' >"$2"
}

# --- servers --------------------------------------------------------------
# How servers and dnsperf run: one worker each, the server on CPU 0 and
# dnsperf on CPU 1 (the main runs), or, for the saturated runs, two workers
# each and nothing pinned (empty prefixes). Prefixes, not a function, so
# that $! is the server's own pid.
workers=1
server_pin=(taskset -c 0)
perf_pin=(taskset -c 1)
outstanding=100

# start NAME N DIR PORT [fleetdns extra args...] -> sets $pid
start() {
    local name="$1" n="$2" dir="$3" p="$4"
    shift 4
    local run="$work/run-$name-$p"
    rm -rf "$run"
    mkdir -p "$run"
    case "$name" in
        fleetdns)
            TOKIO_WORKER_THREADS=$workers RUST_LOG=warn "${server_pin[@]}" "$bin" serve \
                --listen "${listen_ip:-127.0.0.1}:$p" --source "file:$dir/fleet.json" \
                --state-dir "$run/state" "$@" 2>"$run/log" &
            ;;
        dnsmasq)
            "${server_pin[@]}" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv \
                --no-hosts --addn-hosts="$dir/hosts" --local=/fleet.internal/ \
                --listen-address=127.0.0.1 --bind-interfaces --port="$p" --user=root \
                --pid-file= --log-facility=/dev/null "$@" 2>"$run/log" &
            ;;
        nsd)
            cat >"$run/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$p
    server-count: $workers
    username: ""
    chroot: ""
    zonesdir: "$dir"
    pidfile: "$run/nsd.pid"
    database: ""
    zonelistfile: "$run/zone.list"
    xfrdfile: "$run/xfrd.state"
    xfrdir: "$run"
    logfile: "$run/log"
    verbosity: 0
    hide-version: yes
    # response rate limiting would drop a benchmark's repeated queries
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: fleet.internal
    zonefile: "$dir/zone"
EOF
            "${server_pin[@]}" nsd -d -c "$run/nsd.conf" 2>>"$run/log" &
            ;;
        knot)
            mkdir -p "$run/db"
            cat >"$run/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$p
    rundir: "$run"
    udp-workers: $workers
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$run/db"
log:
  - target: stderr
    any: error
zone:
  - domain: fleet.internal.
    file: "$dir/zone"
    storage: "$run/db"
    journal-content: none
    zonefile-sync: -1
EOF
            "${server_pin[@]}" knotd -c "$run/knot.conf" 2>"$run/log" &
            ;;
        unbound)
            cat >"$run/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$p
    port: $p
    num-threads: $workers
    do-daemonize: no
    chroot: ""
    username: ""
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    local-zone: "fleet.internal." static
    include: "$dir/local-data.conf"
remote-control:
    control-enable: no
EOF
            "${server_pin[@]}" unbound -d -c "$run/unbound.conf" 2>"$run/log" &
            ;;
    esac
    pid=$!
    pids+=("$pid")
}

# Every pid of the server (the process and its descendants).
tree() {
    local p="$1"
    echo "$p"
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree "$c"; done
}
cpu_ticks() { # pid -> CPU ticks of the process tree
    local total=0
    for p in $(tree "$1"); do
        read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
        # utime, stime, and cutime, cstime of children already reaped
        # (NSD forks a new server process on each reload)
        total=$((total + f[13] + f[14] + f[15] + f[16]))
    done
    echo "$total"
}
peak_rss_mb() {
    local kb=0
    for p in $(tree "$1"); do
        local v
        v="$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
        kb=$((kb + ${v:-0}))
    done
    awk -v kb="$kb" 'BEGIN { printf "%.1f", kb / 1024 }'
}
now_ms() { date +%s%3N; }
# thousands of queries per server CPU-second: completed ticks
per_cpu_k() {
    awk -v d="$1" -v t="$2" -v clk="$clk" 'BEGIN { if (t == 0) t = 1; printf "%.0f", d / (t / clk) / 1000 }'
}
# wait until NAME answers IP at PORT; prints the ms it took since $2
wait_answer() { # port since name ip timeout_s
    local deadline=$(( $(now_ms) + ${5:-60} * 1000 ))
    while [ "$(dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 "$3" 2>/dev/null)" != "$4" ]; do
        if [ "$(now_ms)" -gt "$deadline" ]; then echo "timeout"; return 1; fi
        sleep 0.005
    done
    echo $(( $(now_ms) - $2 ))
}
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# run dnsperf; prints: qps completed lost avg_ms max_ms p99_ms. p99 needs
# per-query latencies, so it is "-" unless the extra args include -v.
perf() { # port queries extra-args...
    local p="$1" q="$2"
    shift 2
    local o="$work/perf.out"
    "${perf_pin[@]}" dnsperf -s 127.0.0.1 -p "$p" -d "$q" -c 8 -q "$outstanding" "$@" >"$o" 2>&1
    local p99="-"
    if grep -q '^> ' "$o"; then
        p99="$(awk '/^> / { print $NF * 1000 }' "$o" | sort -g |
            awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", a[i] }')"
    fi
    awk -v p99="$p99" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/ { lost = $3 }
        /Queries per second:/ { qps = $4 }
        /Average Latency/ { avg = $4 * 1000; gsub(/[(),]/, "", $8); max = $8 * 1000 }
        END { printf "%.0f %d %d %.2f %.1f %s\n", qps, done, lost, avg, max, p99 }' "$o"
}

# measure PORT QUERIES [dnsperf args...]: one dnsperf run of $duration s
# against the server $pid; prints: qps completed lost avg_ms max_ms
# k-queries-per-CPU-second
measure() {
    local c0 c1 qps done lost avg max p="$1" q="$2"
    shift 2
    c0="$(cpu_ticks "$pid")"
    read -r qps done lost avg max _ <<<"$(perf "$p" "$q" -l "$duration" "$@")"
    c1="$(cpu_ticks "$pid")"
    echo "$qps $done $lost $avg $max $(per_cpu_k "$done" "$((c1 - c0))")"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else print a[int((NR + 1) / 2)] }'; }
minmax() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s/%s", lo, hi }'; }

machine="$(nproc) cores, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//'), $(uname -sr)"
results="$work/results.txt"
: >"$results"

# --- main runs ------------------------------------------------------------
for n in "${sizes[@]}"; do
    dir="$work/data-$n"
    gen "$n" "$dir"
    gen_queries "$n" "$dir/queries"
    last="web-$n.fleet.internal"
    last_ip="$(ip_of "$n")"
    want main || continue
    for round in $(seq "$rounds"); do
        for s in "${servers[@]}"; do
            port=$((port + 1))
            t0="$(now_ms)"
            start "$s" "$n" "$dir" "$port"
            ms="$(wait_answer "$port" "$t0" "$last" "$last_ip" 120)" || { echo "$s did not start; log:" >&2; cat "$work/run-$s-$port/log" >&2; exit 1; }
            read -r qps done lost avg max kq <<<"$(measure "$port" "$dir/queries")"
            rss="$(peak_rss_mb "$pid")"
            echo "main $n $s $round $qps $kq $avg $max $lost $rss $ms" >>"$results"
            echo "n=$n round=$round $s: $qps q/s, $kq k q/CPU-s, avg $avg ms, max $max ms, lost $lost, rss $rss MB, startup $ms ms" >&2
            stop "$pid"
        done
    done
done

# --- TCP (issue 18): pipelined, and one query per connection --------------
# Pinned as the main runs. dnsperf -m tcp keeps 8 connections with up to
# 100 queries outstanding in all, pipelined on them (as resolvers and
# secondaries do); with num-queries-per-conn=1 each query opens and closes
# a connection (as stub resolvers falling back after TC do). Only the
# servers that are authoritative references (NSD, Knot) and fleetdns.
for n in "${sizes[@]}"; do
    want tcp || continue
    dir="$work/data-$n"
    for round in $(seq "$rounds"); do
        for s in "${servers[@]}"; do
            case "$s" in fleetdns | nsd | knot) ;; *) continue ;; esac
            for mode in pipelined per-conn; do
                port=$((port + 1))
                start "$s" "$n" "$dir" "$port"
                wait_answer "$port" "$(now_ms)" "web-$n.fleet.internal" "$(ip_of "$n")" 120 >/dev/null ||
                    { echo "$s did not start" >&2; exit 1; }
                extra=(-m tcp)
                [ "$mode" = per-conn ] && extra+=(-O num-queries-per-conn=1)
                read -r qps done lost avg max kq <<<"$(measure "$port" "$dir/queries" "${extra[@]}")"
                echo "tcp-$mode $n $s $round $qps $kq $avg $max $lost" >>"$results"
                echo "tcp $mode n=$n round=$round $s: $qps q/s, $kq k q/CPU-s, avg $avg ms, lost $lost" >&2
                stop "$pid"
            done
        done
    done
done

# --- saturated: both cores, two workers per server, nothing pinned ---------
# dnsmasq has one thread whatever it is given. dnsperf shares the two
# cores with the server, as a local client would; -q 500 keeps the server
# busy. Servers interleaved as above.
workers=2 server_pin=() perf_pin=() outstanding=500
for n in "${sizes[@]}"; do
    want sat || continue
    dir="$work/data-$n"
    for round in $(seq "$rounds"); do
        for s in "${servers[@]}"; do
            port=$((port + 1))
            start "$s" "$n" "$dir" "$port"
            wait_answer "$port" "$(now_ms)" "web-$n.fleet.internal" "$(ip_of "$n")" 120 >/dev/null ||
                { echo "$s did not start" >&2; exit 1; }
            read -r qps _ lost avg _ _ <<<"$(perf "$port" "$dir/queries" -l "$duration")"
            echo "sat $n $s $round $qps $lost $avg" >>"$results"
            echo "saturated n=$n round=$round $s: $qps q/s, lost $lost, avg $avg ms" >&2
            stop "$pid"
        done
    done
done
workers=1 server_pin=(taskset -c 0) perf_pin=(taskset -c 1) outstanding=100

# --- reload: a changed name becomes visible (SIGHUP for all) ---------------
n="${sizes[-1]}"
dir="$work/data-$n"
for round in $(want reload && seq "$rounds"); do
    for s in "${servers[@]}"; do
        port=$((port + 1))
        cp -r "$dir" "$work/reload-$s"
        start "$s" "$n" "$work/reload-$s" "$port"
        wait_answer "$port" "$(now_ms)" "web-$n.fleet.internal" "$(ip_of "$n")" 120 >/dev/null
        sleep 1 # the serial is in seconds: make the next one larger
        gen "$n" "$work/reload-$s" "changed-$round"
        t0="$(now_ms)"
        kill -HUP "$pid"
        ms="$(wait_answer "$port" "$t0" "changed-$round.fleet.internal" "$(ip_of "$n")" 60)" || ms=timeout
        echo "reload $n $s $round $ms" >>"$results"
        echo "reload n=$n $s: visible after $ms ms" >&2
        stop "$pid"
        rm -rf "$work/reload-$s"
    done
done

# --- fleetdns only: startup from persisted state, swaps under load ---------
if want fleetdns && [[ " ${servers[*]} " == *" fleetdns "* ]]; then
    port=$((port + 1))
    start fleetdns "$n" "$dir" "$port"
    wait_answer "$port" "$(now_ms)" "web-$n.fleet.internal" "$(ip_of "$n")" 120 >/dev/null
    sleep 0.5
    state="$work/run-fleetdns-$port/state"
    stop "$pid"
    # The same source, unreadable now: everything served comes from the state.
    mv "$dir/fleet.json" "$dir/fleet.json.away"
    for round in $(seq "$rounds"); do
        port=$((port + 1))
        t0="$(now_ms)"
        TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" \
            --source "file:$dir/fleet.json" --state-dir "$state" 2>/dev/null &
        pid=$!
        pids+=("$pid")
        ms="$(wait_answer "$port" "$t0" "web-$n.fleet.internal" "$(ip_of "$n")" 120)"
        echo "state $n fleetdns $round $ms" >>"$results"
        echo "startup from state n=$n: $ms ms" >&2
        stop "$pid"
    done
    mv "$dir/fleet.json.away" "$dir/fleet.json"

    swapdir="$work/swap"
    cp -r "$dir" "$swapdir"
    # Two versions of the inventory that differ in one name, made before
    # the runs: each swap is a real change of a 100,000-name zone.
    gen "$n" "$work/swap-a" swap-a
    gen "$n" "$work/swap-b" swap-b
    for round in $(seq "$rounds"); do
        for mode in steady swapping; do
            port=$((port + 1))
            start fleetdns "$n" "$swapdir" "$port"
            wait_answer "$port" "$(now_ms)" "web-$n.fleet.internal" "$(ip_of "$n")" 120 >/dev/null
            # Memory (issue 18): resident after startup settles, then the
            # peak of the 12 s below (VmHWM reset first: with swaps, each
            # a new zone made beside the one served).
            sleep 1
            rss_before="$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"
            echo 5 >"/proc/$pid/clear_refs"
            swapper=""
            if [ "$mode" = swapping ]; then
                # One long-lived process on dnsperf's CPU at idle priority
                # links the other version in by rename (as an exporter
                # would) and sends SIGHUP, every second. A shell loop
                # forked and exec'd `mv` and `kill` there, and each exec
                # held dnsperf off its CPU for ~2 ms: latency of the
                # generator, not of fleetdns.
                taskset -c 1 chrt --idle 0 python3 -c '
import os, sys, time
pid, d, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
k = 0
while True:
    time.sleep(1)
    k += 1
    nxt = os.path.join(d, "next.json")
    if os.path.exists(nxt):
        os.unlink(nxt)
    os.link(b if k % 2 else a, nxt)
    os.replace(nxt, os.path.join(d, "fleet.json"))
    try:
        os.kill(pid, 1)
    except ProcessLookupError:
        break
' "$pid" "$swapdir" "$work/swap-a/fleet.json" "$work/swap-b/fleet.json" &
                swapper=$!
            fi
            read -r qps done lost avg max p99 <<<"$(perf "$port" "$dir/queries" -l 12 -Q 20000 -v)"
            [ -n "$swapper" ] && { kill "$swapper" 2>/dev/null || true; wait "$swapper" 2>/dev/null || true; }
            rss_peak="$(peak_rss_mb "$pid")"
            echo "swap $n $mode $round $qps $lost $avg $max $p99 $rss_before $rss_peak" >>"$results"
            echo "swap n=$n $mode: $qps q/s, lost $lost, avg $avg ms, p99 $p99 ms, max $max ms, rss $rss_before MB, peak $rss_peak MB" >&2
            stop "$pid"
            gen "$n" "$swapdir"
        done
    done
fi

# --- forwarding to one local upstream, cached: fleetdns vs dnsmasq --------
if want forward && [[ " ${servers[*]} " == *" fleetdns "* && " ${servers[*]} " == *" dnsmasq "* ]]; then
    up="$work/upstream"
    gen 1000 "$up"
    sed 's/fleet\.internal/up.test/g' "$up/zone" >"$up/zone.up"
    awk 'BEGIN { srand(7); for (q = 0; q < 200000; q++) printf "web-%d.up.test A\n", int(rand() * 1000) + 1 }' >"$up/queries"
    port=$((port + 1))
    up_port=$port
    mkdir -p "$work/run-upstream"
    cat >"$work/run-upstream/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$up_port
    server-count: 1
    username: ""
    chroot: ""
    pidfile: "$work/run-upstream/nsd.pid"
    database: ""
    zonelistfile: "$work/run-upstream/zone.list"
    xfrdfile: "$work/run-upstream/xfrd.state"
    xfrdir: "$work/run-upstream"
    verbosity: 0
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: up.test
    zonefile: "$up/zone.up"
EOF
    taskset -c 1 nsd -d -c "$work/run-upstream/nsd.conf" 2>/dev/null &
    up_pid=$!
    pids+=("$up_pid")
    wait_answer "$up_port" "$(now_ms)" "web-1.up.test" "$(ip_of 1)" 30 >/dev/null
    for round in $(seq "$rounds"); do
        for s in fleetdns dnsmasq; do
            port=$((port + 1))
            if [ "$s" = fleetdns ]; then
                start fleetdns 1000 "$up" "$port" --upstream "127.0.0.1:$up_port"
            else
                start dnsmasq 1000 "$up" "$port" --server="127.0.0.1#$up_port" --cache-size=10000
            fi
            wait_answer "$port" "$(now_ms)" "web-1.up.test" "$(ip_of 1)" 30 >/dev/null
            # warm the cache, then measure
            perf "$port" "$up/queries" -l 2 >/dev/null
            read -r qps done lost avg max kq <<<"$(measure "$port" "$up/queries")"
            echo "forward 1000 $s $round $qps $kq $avg $max $lost" >>"$results"
            echo "forward $s: $qps q/s, $kq k q/CPU-s, avg $avg ms, lost $lost" >&2
            stop "$pid"
        done
    done
    stop "$up_pid"
fi

# record_fleetdns KIND LABEL: once the fleetdns just started on $port
# answers its last name ($n names in $dir), one measure of it as a raw
# line "KIND N LABEL ROUND qps kq avg max lost"; then stops it.
record_fleetdns() {
    local qps done lost avg max kq
    wait_answer "$port" "$(now_ms)" "web-$n.fleet.internal" "$(ip_of "$n")" 60 >/dev/null
    read -r qps done lost avg max kq <<<"$(measure "$port" "$dir/queries")"
    echo "$1 $n $2 $round $qps $kq $avg $max $lost" >>"$results"
    echo "$1 n=$n $2: $qps q/s, $kq k q/CPU-s, avg $avg ms, lost $lost" >&2
    stop "$pid"
}

# --- central server (issue 15): what access control, RRL and PKTINFO cost --
# fleetdns as it is (the default [access] matches loopback at its first
# entry), with an [access] list whose match is the last of eight, with
# [rrl] at a rate nothing reaches (every reply accounted to its bucket,
# none limited), and on 0.0.0.0 (IP_PKTINFO on every datagram, both ways);
# pinned as the main runs, interleaved, medians.
if want central && [[ " ${servers[*]} " == *" fleetdns "* ]]; then
    n="${sizes[0]}"
    dir="$work/data-$n"
    cat >"$work/access.toml" <<EOF
[access]
allow_query = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "::1/128", "192.0.2.0/24", "127.0.0.0/8"]
EOF
    printf '[rrl]\nresponses_per_second = 1000000\n' >"$work/rrl.toml"
    for round in $(seq "$rounds"); do
        for mode in as-is access rrl wildcard; do
            port=$((port + 1))
            case "$mode" in
                as-is) start fleetdns "$n" "$dir" "$port" ;;
                access) start fleetdns "$n" "$dir" "$port" --config "$work/access.toml" ;;
                rrl) start fleetdns "$n" "$dir" "$port" --config "$work/rrl.toml" ;;
                wildcard) listen_ip=0.0.0.0 start fleetdns "$n" "$dir" "$port" ;;
            esac
            record_fleetdns central "$mode"
        done
    done
fi

# --- A/B: another fleetdns binary against this one ------------------------
if want ab && [ -n "${FLEETDNS_BIN_B:-}" ]; then
    n="${sizes[0]}"
    dir="$work/data-$n"
    for round in $(seq "$rounds"); do
        for which in A B; do
            port=$((port + 1))
            if [ "$which" = A ]; then
                start fleetdns "$n" "$dir" "$port"
            else
                bin="$FLEETDNS_BIN_B" start fleetdns "$n" "$dir" "$port"
            fi
            record_fleetdns ab "$which"
        done
    done
fi

# --- report ---------------------------------------------------------------
# col KIND WHO COLUMN [N]: one column of the raw lines of KIND (main,
# reload, state, swap, forward) for WHO (a server, or a swap mode), from
# every round; only for N names when N is given.
col() {
    awk -v k="$1" -v w="$2" -v c="$3" -v n="${4:-}" \
        '$1 == k && $3 == w && (n == "" || $2 == n) { print $c }' "$results"
}

# best_ref KIND COLUMN N: the best median of COLUMN among the reference
# servers (all but fleetdns) for N names.
best_ref() {
    local best=0 s m
    for s in "${servers[@]}"; do
        [ "$s" = fleetdns ] && continue
        m="$(col "$1" "$s" "$2" "$3" | median)"
        best="$(awk -v a="$m" -v b="$best" 'BEGIN { print (a != "-" && a + 0 > b + 0) ? a : b }')"
    done
    echo "$best"
}
# ratio A BEST: A / BEST as "1.02x", or "-"
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2fx", a / b; else print "-" }'
}

report() {
    echo "# Load: fleetdns against dnsmasq, NSD, Knot, Unbound"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- machine: $machine"
    echo "- fleetdns: $("$bin" --version); $(dnsmasq --version | head -1 | cut -d' ' -f1-3); NSD $(nsd -v 2>&1 | head -1 | awk '{print $NF}'); Knot $(knotd -V | awk '{print $NF}'); Unbound $(unbound -V | awk '/Version/ {print $2}'); dnsperf $(dnsperf -h 2>&1 | awk '/Version/ {print $2}')"
    echo "- command: benches/load/run.sh -n $(IFS=,; echo "${sizes[*]}") -r $rounds -l $duration -s $(IFS=,; echo "${servers[*]}") -p $parts"
    # Whether the binary's code is laid out by link/code-order.txt: a stale
    # list costs fleetdns about 3 MB of peak RSS.
    echo "- $(scripts/code-order --check "$bin" 2>&1 | tr '\n' ' ')"
    echo "- main tables: each server pinned to CPU 0 with one worker, dnsperf on CPU 1 (-c 8 -q 100); medians of $rounds interleaved rounds (QPS as min/median/max)"
    for n in "${sizes[@]}"; do
        grep -q "^main $n " "$results" || continue
        echo
        echo "## $n names"
        echo
        echo "| server | QPS | q/CPU-s | vs best ref | avg ms | max ms | lost | peak RSS MB | startup ms |"
        echo "|---|---|---|---|---|---|---|---|---|"
        best="$(best_ref main 6 "$n")"
        for s in "${servers[@]}"; do
            sel() { col main "$s" "$1" "$n"; }
            kq="$(sel 6 | median)"
            ratio="$(ratio "$kq" "$best")"
            echo "| $s | $(sel 5 | minmax) (med $(sel 5 | median)) | $kq k | $ratio | $(sel 7 | median) | $(sel 8 | median) | $(sel 9 | sort -g | tail -1) | $(sel 10 | median) | $(sel 11 | median) |"
        done
    done
    if grep -q '^tcp-' "$results"; then
        echo
        echo "## TCP, pinned as the main runs: pipelined (dnsperf -m tcp, 8 connections, -q 100) and one query per connection (num-queries-per-conn=1)"
        echo
        echo "| names | mode | server | QPS | q/CPU-s | vs best ref | avg ms | lost |"
        echo "|---|---|---|---|---|---|---|---|"
    fi
    for n in "${sizes[@]}"; do
        for mode in pipelined per-conn; do
            grep -q "^tcp-$mode $n " "$results" || continue
            best="$(best_ref "tcp-$mode" 6 "$n")"
            for s in "${servers[@]}"; do
                sel() { col "tcp-$mode" "$s" "$1" "$n"; }
                kq="$(sel 6 | median)"
                [ "$kq" = - ] && continue
                echo "| $n | $mode | $s | $(sel 5 | median) | $kq k | $(ratio "$kq" "$best") | $(sel 7 | median) | $(sel 9 | sort -g | tail -1) |"
            done
        done
    done
    if grep -q '^sat ' "$results"; then
        echo
        echo "## Saturated: both cores, two workers per server (dnsmasq: one), dnsperf unpinned (-c 8 -q 500)"
        echo
        echo "| names | server | QPS min/max | QPS median | vs best ref | lost | avg ms |"
        echo "|---|---|---|---|---|---|---|"
    fi
    for n in "${sizes[@]}"; do
        grep -q "^sat $n " "$results" || continue
        best="$(best_ref sat 5 "$n")"
        for s in "${servers[@]}"; do
            sel() { col sat "$s" "$1" "$n"; }
            q="$(sel 5 | median)"
            ratio="$(ratio "$q" "$best")"
            echo "| $n | $s | $(sel 5 | minmax) | $q | $ratio | $(sel 6 | sort -g | tail -1) | $(sel 7 | median) |"
        done
    done
    if grep -q '^reload ' "$results"; then
        echo
        echo "## A changed name becomes visible (reload by SIGHUP, $n names), ms"
        echo
        echo "| server | median | min/max |"
        echo "|---|---|---|"
        for s in "${servers[@]}"; do
            v="$(col reload "$s" 5)"
            echo "| $s | $(median <<<"$v") | $(minmax <<<"$v") |"
        done
    fi
    if grep -q '^state ' "$results"; then
        echo
        echo "## fleetdns: startup from persisted state, $n names: $(col state fleetdns 5 | median) ms (min/max $(col state fleetdns 5 | minmax))"
        echo
        echo "## fleetdns under a fixed 20,000 q/s for 12 s, $n names, with and without a snapshot swap every second"
        echo
        echo "| mode | QPS | lost | avg ms | p99 ms | max ms | RSS before MB | peak RSS MB | peak / before |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for mode in steady swapping; do
            sel() { col swap "$mode" "$1"; }
            echo "| $mode | $(sel 5 | median) | $(sel 6 | sort -g | tail -1) | $(sel 7 | median) | $(sel 9 | median) | $(sel 8 | median) (max $(sel 8 | sort -g | tail -1)) | $(sel 10 | median) | $(sel 11 | median) (max $(sel 11 | sort -g | tail -1)) | $(ratio "$(sel 11 | median)" "$(sel 10 | median)") |"
        done
    fi
    if grep -q '^forward ' "$results"; then
        echo
        echo "## Forwarding to one local upstream (NSD), cached, 1,000 names"
        echo
        echo "| server | QPS | q/CPU-s | avg ms | lost |"
        echo "|---|---|---|---|---|"
        for s in fleetdns dnsmasq; do
            sel() { col forward "$s" "$1"; }
            echo "| $s | $(sel 5 | median) | $(sel 6 | median) k | $(sel 7 | median) | $(sel 9 | sort -g | tail -1) |"
        done
    fi
    if grep -q '^central ' "$results"; then
        echo
        echo "## fleetdns on a network address: what the checks cost, ${sizes[0]} names (pinned as the main runs)"
        echo
        echo "| mode | QPS | q/CPU-s | vs as-is |"
        echo "|---|---|---|---|"
        base="$(col central as-is 6 | median)"
        for mode in as-is access rrl wildcard; do
            sel() { col central "$mode" "$1"; }
            kq="$(sel 6 | median)"
            echo "| $mode | $(sel 5 | median) | $kq k | $(ratio "$kq" "$base") |"
        done
    fi
    if grep -q '^ab ' "$results"; then
        echo
        echo "## A/B, ${sizes[0]} names (pinned as the main runs): A = $bin, B = $FLEETDNS_BIN_B"
        echo
        echo "| binary | QPS | q/CPU-s per round | q/CPU-s | vs A |"
        echo "|---|---|---|---|---|"
        base="$(col ab A 6 | median)"
        for which in A B; do
            sel() { col ab "$which" "$1"; }
            kq="$(sel 6 | median)"
            echo "| $which | $(sel 5 | median) | $(sel 6 | tr '\n' ' ')| $kq k | $(ratio "$kq" "$base") |"
        done
    fi
    echo
    echo "Raw lines:"
    echo
    sed 's/^/    /' "$results"
}
if [ -n "$out" ]; then
    report >"$out"
    echo "wrote $out" >&2
else
    report
fi

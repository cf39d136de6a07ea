#!/usr/bin/env bash
# Run with: benches/xfr/run.sh [-n 100000] [-r 3] [-c 5] [-o FILE]
#
# Zone transfers, fleetdns against Knot, in the same run on this machine.
#
# 1. AXFR of an N-instance zone (4N+3 records) from fleetdns and from Knot
#    serving the same zone as a primary (its zone file is fleetdns's own
#    AXFR, so both send the same records). Each server pinned to CPU 0,
#    the client (kdig, output discarded) to CPU 1; servers interleaved for
#    -r rounds, medians reported. Figures: wall time of the transfer, the
#    server's CPU time for it (utime+stime from /proc), its RSS after, and
#    its peak RSS (VmHWM, which for fleetdns includes building the
#    snapshot at start).
# 2. NOTIFY + IXFR to real secondaries: NSD, Knot and BIND from
#    deploy/secondaries/ take the zone from fleetdns; then -c times an
#    instance is renamed, fleetdns gets SIGHUP, and the time until all
#    three answer the new name is taken. Median and worst reported.
#
# Needs nsd, knot, bind9, knot-dnsutils (scripts/test installs them) and
# python3. Uses target/release/fleetdns (built if missing) or $FLEETDNS_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"

n=100000
rounds=3
changes=5
out=""
while getopts "n:r:c:o:" opt; do
    case "$opt" in
        n) n="$OPTARG" ;;
        r) rounds="$OPTARG" ;;
        c) changes="$OPTARG" ;;
        o) out="$OPTARG" ;;
        *) sed -n '2p' "$0" >&2; exit 2 ;;
    esac
done

bin="${FLEETDNS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/fleetdns}"
if [ ! -x "$bin" ]; then
    cargo build --release --bin fleetdns
fi
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

secret="AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
key="hmac-sha256:xfr-key:$secret"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { # utime+stime of $1 in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}
status() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
ticks="$(getconf CLK_TCK)"
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

inventory() { # $1 = name of instance 0
    python3 - "$n" "$1" >"$work/fleet.json.tmp" <<'EOF'
import json, sys
n, first = int(sys.argv[1]), sys.argv[2]
out = []
for i in range(n):
    name = first if i == 0 else f"host-{i}"
    out.append({"InstanceId": f"i-{i:017x}", "State": {"Code": 16, "Name": "running"},
                "PrivateIpAddress": f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
                "InstanceType": "t3.micro", "Placement": {"AvailabilityZone": "us-east-1a"},
                "Tags": [{"Key": "Name", "Value": name}]})
json.dump({"Reservations": [{"Instances": out}]}, sys.stdout)
EOF
    mv "$work/fleet.json.tmp" "$work/fleet.json"
}
inventory host-0

p_fleet="$(port)"
p_knot="$(port)"
p_sec=("$(port)" "$(port)" "$(port)")
printf '%s\n' "$secret" >"$work/key"
chmod 600 "$work/key"
cat >"$work/fleetdns.toml" <<EOF
listen = ["127.0.0.1:$p_fleet"]
state_dir = "$work/state"
[source.file]
path = "$work/fleet.json"
[[tsig_keys]]
name = "xfr-key"
secret_file = "$work/key"
[transfer]
allow = [{ from = "127.0.0.0/8" }]
notify = [{ to = "127.0.0.1:${p_sec[0]}", key = "xfr-key" }, { to = "127.0.0.1:${p_sec[1]}", key = "xfr-key" }, { to = "127.0.0.1:${p_sec[2]}", key = "xfr-key" }]
EOF
mkdir -p "$work/state"
started=$(date +%s.%N)
taskset -c 0 env TOKIO_WORKER_THREADS=1 "$bin" serve --config "$work/fleetdns.toml" 2>"$work/fleetdns.log" &
fleet_pid=$!
pids+=("$fleet_pid")
until dig @127.0.0.1 -p "$p_fleet" +short +time=1 +tries=1 "host-$((n - 1)).fleet.internal" | grep -q .; do
    sleep 0.1
done
echo "fleetdns serves $n instances after $(echo "$(date +%s.%N) - $started" | bc) s"

# Knot as a primary of the same zone: fleetdns's AXFR as its zone file.
dig @127.0.0.1 -p "$p_fleet" +time=60 fleet.internal AXFR | grep -v '^;' | grep -v '^$' >"$work/fleet.internal.zone"
mkdir -p "$work/knot"
cat >"$work/knot/knot.conf" <<EOF
server:
    rundir: "$work/knot"
    listen: 127.0.0.1@$p_knot
log:
  - target: stderr
    any: warning
acl:
  - id: all
    address: 127.0.0.0/8
    action: transfer
template:
  - id: default
    storage: "$work"
zone:
  - domain: fleet.internal
    file: "$work/fleet.internal.zone"
    acl: all
    journal-content: none
    zonefile-sync: -1
EOF
taskset -c 0 knotd -c "$work/knot/knot.conf" 2>"$work/knot.log" &
knot_pid=$!
pids+=("$knot_pid")
until dig @127.0.0.1 -p "$p_knot" +short +time=1 +tries=1 fleet.internal SOA | grep -q .; do sleep 0.1; done

declare -A wall cpu_s
for r in $(seq "$rounds"); do
    for s in fleetdns knot; do
        if [ "$s" = fleetdns ]; then p=$p_fleet; pid=$fleet_pid; else p=$p_knot; pid=$knot_pid; fi
        c0=$(cpu "$pid")
        t0=$(date +%s.%N)
        records=$(taskset -c 1 kdig @127.0.0.1 -p "$p" +time=60 fleet.internal AXFR +noall +answer | wc -l)
        t1=$(date +%s.%N)
        c1=$(cpu "$pid")
        [ "$records" -eq $((4 * n + 3)) ] || { echo "$s sent $records records, not $((4 * n + 3))" >&2; exit 1; }
        wall[$s]+="$(echo "$t1 - $t0" | bc) "
        cpu_s[$s]+="$(echo "scale=3; ($c1 - $c0) / $ticks" | bc) "
    done
done

report=$(mktemp)
{
    echo "## AXFR of $n instances ($((4 * n + 3)) records), median of $rounds"
    echo
    echo "| server | wall s | server CPU s | RSS after MiB | peak RSS MiB |"
    echo "|---|---|---|---|---|"
    for s in fleetdns knot; do
        if [ "$s" = fleetdns ]; then pid=$fleet_pid; else pid=$knot_pid; fi
        w=$(tr ' ' '\n' <<<"${wall[$s]}" | grep . | median)
        c=$(tr ' ' '\n' <<<"${cpu_s[$s]}" | grep . | median)
        echo "| $s | $w | $c | $(( $(status "$pid" VmRSS) / 1024 )) | $(( $(status "$pid" VmHWM) / 1024 )) |"
    done
    echo
} | tee "$report"
kill "$knot_pid"

# --- NOTIFY + IXFR to NSD, Knot and BIND -----------------------------------
kinds=(nsd knot named)
sec_pids=()
for i in 0 1 2; do
    k=${kinds[$i]}
    d="$work/sec-$k"
    mkdir -p "$d"
    sed -e "s|@DIR@|$d|g" -e "s|@PRIMARY_PORT@|$p_fleet|g" -e "s|@PORT@|${p_sec[$i]}|g" \
        "deploy/secondaries/$k.conf" >"$d/$k.conf"
    case $k in
        nsd) /usr/sbin/nsd -d -c "$d/$k.conf" 2>"$d/stderr" & ;;
        knot) /usr/sbin/knotd -c "$d/$k.conf" 2>"$d/stderr" & ;;
        named) /usr/sbin/named -g -c "$d/$k.conf" 2>"$d/stderr" & ;;
    esac
    sec_pids+=($!)
    pids+=($!)
done
serial_of() { dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 fleet.internal SOA | awk '{print $3}'; }
want=$(serial_of "$p_fleet")
for i in 0 1 2; do
    until [ "$(serial_of "${p_sec[$i]}")" = "$want" ]; do sleep 0.2; done
done
echo "all three secondaries have serial $want"

times=""
for c in $(seq "$changes"); do
    inventory "renamed-$c"
    t0=$(date +%s.%N)
    kill -HUP "$fleet_pid"
    for i in 0 1 2; do
        until dig @127.0.0.1 -p "${p_sec[$i]}" +short +time=1 +tries=1 "renamed-$c.fleet.internal" | grep -q '^10\.'; do
            sleep 0.01
        done
    done
    times+="$(echo "($(date +%s.%N) - $t0) * 1000 / 1" | bc) "
    sleep 1
done
{
    echo "## SIGHUP to a renamed instance answered by NSD, Knot and BIND ($changes changes)"
    echo
    echo "median $(tr ' ' '\n' <<<"$times" | grep . | median) ms, worst $(tr ' ' '\n' <<<"$times" | grep . | sort -g | tail -1) ms (each: $times)"
    echo
    echo "fleetdns log: $(grep -c 'kind="ixfr"' "$work/fleetdns.log") IXFRs sent; Knot log: $(grep -c 'IXFR, incoming' "$work/sec-knot/stderr" || true) IXFR lines, $(grep -c 'fallback to AXFR' "$work/sec-knot/stderr" || true) fallbacks"
} | tee -a "$report"
if [ -n "$out" ]; then
    {
        echo "# Zone transfers, $(date -u +%Y-%m-%d)"
        echo
        echo "Machine: $(nproc) cores, $(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//'), $(uname -sr)."
        echo "Command: benches/xfr/run.sh -n $n -r $rounds -c $changes"
        echo "Versions: $("$bin" --version); Knot $(knotd -V | awk '{print $NF}'); NSD $(nsd -v 2>&1 | head -1 | awk '{print $NF}'); $(named -v)"
        echo
        cat "$report"
    } >"$out"
fi

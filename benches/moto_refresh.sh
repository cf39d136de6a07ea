#!/usr/bin/env bash
# Run with: benches/moto_refresh.sh [SIZES...]   (default: 1000 10000)
#
# Time and peak memory of one full refresh from the EC2 API as emulated by
# moto 5.0.28 on loopback: `fleetdns list --json` (release build) against a
# moto seeded with N running instances, in batches of 1,000 per
# run_instances call (so a page holds 1,000 instances), untagged (see below:
# they are named by instance id). The figure includes
# moto's own response time, which dominates at 10,000 (moto scans every tag
# per instance); benches/ec2_decode.rs measures the SDK's share alone.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-1000 10000}")
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${FLEETDNS_TEST_VENV:-$target/moto-venv}"
[ -x "$venv/bin/moto_server" ] || { echo "no moto venv at $venv: run scripts/test first" >&2; exit 1; }
cargo build --release --quiet
bin="$target/release/fleetdns"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

echo "| instances | wall (s) | fleetdns CPU (s) | fleetdns peak RSS (MB) |"
echo "|---|---|---|---|"
for n in ${sizes[@]}; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    MOTO_EC2_LOAD_DEFAULT_AMIS=false "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    moto=$!
    until curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null; do sleep 0.2; done
    "$venv/bin/python" - "$port" "$n" <<'PY'
import sys, boto3
port, n = sys.argv[1], int(sys.argv[2])
ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                   aws_access_key_id="bench", aws_secret_access_key="bench")
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/17")["Subnet"]["SubnetId"]
for b in range(0, n, 1000):
    k = min(1000, n - b)
    # No tags: moto 5.0.28 scans every tag of the region for each instance it
    # describes, which makes a tagged 10,000-instance fleet take minutes per
    # page. Untagged instances still exercise the whole decode path.
    ec2.run_instances(ImageId="ami-12c6146b", MinCount=k, MaxCount=k, SubnetId=subnet)
PY
    printf '[source.ec2]\nendpoint_url = "http://127.0.0.1:%s"\nregions = ["us-east-1"]\n' "$port" > "$tmp/fleetdns.toml"
    /usr/bin/time -f "%e %U %S %M" -o "$tmp/time" "$bin" list --json --config "$tmp/fleetdns.toml" > "$tmp/out.json"
    read -r wall user sys rss < "$tmp/time"
    got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["instances"])' "$tmp/out.json")
    [ "$got" = "$n" ] || { echo "expected $n instances, got $got" >&2; exit 1; }
    printf '| %s | %s | %.2f | %d |\n' "$n" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))"
    kill "$moto"; wait "$moto" 2>/dev/null || true
done

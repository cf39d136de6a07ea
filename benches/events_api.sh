#!/usr/bin/env bash
# Run with: benches/events_api.sh [SECONDS]   (default 120)
#
# AWS API calls of following EC2 events against polling (issue 16),
# measured on moto 5.0.28 on loopback with the release binary, then scaled
# to an hour of a 100,000-instance fleet with 100 changes an hour.
#
# One moto holds 1,000 running instances; fleetdns reads them in pages of
# 100 (10 calls a full pass, as 100,000 instances take 100 pages of 1,000).
# For SECONDS each:
#   events:  [source.ec2.events] on a queue fed by an EventBridge rule,
#            resync_interval_secs an hour away; one instance stopped every
#            SECONDS/10 s, its state change put through EventBridge;
#   polling: no queue, interval_secs 10 (so that a short run holds several
#            full passes), the same stops.
# Each run's calls come from fleetdns's own counters
# (fleetdns_api_calls_total{unit,operation}); the scaled table multiplies
# the measured calls per change, per idle minute and per full pass by the
# hour's: 100 changes, 60 idle minutes, and 60 passes (interval_secs 60)
# or 4 (resync_interval_secs 900).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${FLEETDNS_TEST_VENV:-$target/moto-venv}"
[ -x "$venv/bin/moto_server" ] || { echo "no moto venv at $venv: run scripts/test first" >&2; exit 1; }
cargo build --release --quiet
export FLEETDNS_BIN="$target/release/fleetdns" AWS_EC2_METADATA_DISABLED=true
exec "$venv/bin/python" - "$seconds" <<'PY'
import json, os, re, socket, subprocess, sys, tempfile, time, urllib.request
import boto3

seconds = int(sys.argv[1])
creds = dict(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


mp = port()
endpoint = f"http://127.0.0.1:{mp}"
moto = subprocess.Popen(
    [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(mp)],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    env=dict(os.environ, MOTO_EC2_LOAD_DEFAULT_AMIS="false"),
)
try:
    for _ in range(100):
        try:
            get(endpoint + "/moto-api/")
            break
        except Exception:
            time.sleep(0.2)
    ec2 = boto3.client("ec2", endpoint_url=endpoint, **creds)
    sqs = boto3.client("sqs", endpoint_url=endpoint, **creds)
    events = boto3.client("events", endpoint_url=endpoint, **creds)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/17")["Subnet"]["SubnetId"]
    # one reservation each: moto pages by reservations
    ids = [ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet)
           ["Instances"][0]["InstanceId"] for _ in range(1000)]
    queue = sqs.create_queue(QueueName="fleetdns-events", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="fleetdns-ec2-state", EventPattern=json.dumps(
        {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]}))
    events.put_targets(Rule="fleetdns-ec2-state", Targets=[{"Id": "q", "Arn": arn}])

    def run(mode, first):
        tmp = tempfile.mkdtemp()
        mport = port()
        extra = (f'[source.ec2.events]\nqueue_url = "{queue}"\nresync_interval_secs = 3600\n'
                 if mode == "events" else "")
        interval = 60 if mode == "events" else 10
        conf = os.path.join(tmp, "fleetdns.toml")
        with open(conf, "w") as f:
            f.write(f'interval_secs = {interval}\nmetrics_listen = "127.0.0.1:{mport}"\n'
                    f'[source.ec2]\nendpoint_url = "{endpoint}"\nregions = ["us-east-1"]\npage_size = 100\n{extra}')
        d = subprocess.Popen(
            [os.environ["FLEETDNS_BIN"], "serve", "--listen", "127.0.0.1:0", "--config", conf],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, STATE_DIRECTORY=tmp, RUST_LOG="warn", **{k.upper(): v for k, v in creds.items() if k != "region_name"}),
        )
        try:
            for _ in range(100):
                try:
                    if get(f"http://127.0.0.1:{mport}/readyz").startswith("ready"):
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            start = time.time()
            changes = 10
            for k in range(changes):
                time.sleep(seconds / changes)
                iid = ids[first + k]
                ec2.stop_instances(InstanceIds=[iid])
                events.put_events(Entries=[{
                    "Source": "aws.ec2", "DetailType": "EC2 Instance State-change Notification",
                    "Detail": json.dumps({"instance-id": iid, "state": "stopped"}),
                    "Resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"]}])
            time.sleep(2)
            elapsed = time.time() - start
            calls = {"passes": 0}
            for line in get(f"http://127.0.0.1:{mport}/metrics").splitlines():
                m = re.match(r'fleetdns_refreshes_total\{.*\} (\S+)', line)
                if m:
                    calls["passes"] += float(m.group(1))
                m = re.match(r'fleetdns_api_calls_total\{(.*)\} (\S+)', line)
                if m:
                    op = re.search(r'operation="([^"]+)"', m.group(1)).group(1)
                    calls[op] = calls.get(op, 0) + float(m.group(2))
            if mode == "polling":
                # with no queue, events are not read: drain them
                sqs.purge_queue(QueueUrl=queue)
            return calls, elapsed, changes
        finally:
            d.terminate()
            d.wait()

    ev, ev_s, ev_changes = run("events", 0)
    po, po_s, _ = run("polling", 100)
    print(f"Measured ({seconds} s each, 1,000 instances, pages of 100, 10 stops):\n")
    print("| mode | DescribeInstances | ReceiveMessage | DeleteMessageBatch | GetQueueAttributes |")
    print("|---|---|---|---|---|")
    for name, c in (("events", ev), ("polling (interval 10 s)", po)):
        print(f"| {name} | " + " | ".join(str(int(c.get(o, 0))) for o in
              ("DescribeInstances", "ReceiveMessage", "DeleteMessageBatch", "GetQueueAttributes")) + " |")
    pages = po["DescribeInstances"] / po["passes"]
    print(f"\nA full pass: {pages:.0f} calls; polling made {po['passes']:.0f} passes, events {ev['passes']:.0f}.")
    # events: the full pass at start, the rest are per change
    describe_per_change = (ev.get("DescribeInstances", 0) - ev["passes"] * pages) / ev_changes
    idle_receives_per_min = 60 / 20
    receive_per_change = max(0.0, ev.get("ReceiveMessage", 0) - ev_s / 20) / ev_changes
    delete_per_change = ev.get("DeleteMessageBatch", 0) / ev_changes
    hour_pages = 100
    events_hour = (4 * hour_pages + 100 * (describe_per_change + receive_per_change + delete_per_change)
                   + 60 * idle_receives_per_min)
    polling_hour = 60 * hour_pages
    print("\nScaled to an hour of 100,000 instances (100 pages a pass), 100 changes:\n")
    print("| mode | full passes | calls an hour |")
    print("|---|---|---|")
    print(f"| polling, interval_secs 60 | 60 | {polling_hour:.0f} |")
    print(f"| events, resync_interval_secs 900 | 4 | {events_hour:.0f} "
          f"({describe_per_change:.1f} describe + {receive_per_change:.1f} receive + "
          f"{delete_per_change:.1f} delete a change, 3 long polls a minute) |")
    print(f"\nevents / polling: {events_hour / polling_hour:.3f}")
finally:
    moto.terminate()
PY

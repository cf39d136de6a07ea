#!/usr/bin/env python3
"""Runs events through the EventBridge rules of deploy/events/fleetdns-events.yaml
in a moto server, for fleetdns's integration tests (tests/integration/deploy.rs).

    events_rules.py patterns TEMPLATE
        prints {"RULE": PATTERN, ...}: every AWS::Events::Rule's event pattern
    events_rules.py --endpoint URL deliver TEMPLATE HOME OTHER < events.json
        events.json is a list of events as EventBridge writes them. In HOME,
        it makes the template's queue and its rules sending to it (Mode
        queue); in OTHER, the same rules sending to HOME's default event bus
        (Mode forward). Each event is put on the default bus of its own
        "region". Prints {"rules": [names], "received": [bodies]}: every
        message the queue got, each body parsed as JSON.

The patterns are the template's own, byte for byte; only the targets are
built here (the template chooses them with Fn::If, which moto cannot run
without CloudFormation).
"""

import argparse
import json
import sys
import time

import boto3
import yaml


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags: `!Ref X` is {"Ref": X},
    `!GetAtt A.B` is {"Fn::GetAtt": ["A", "B"]}, `!Name V` is {"Fn::Name": V}."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


def patterns(template):
    """{logical id: event pattern} of every rule; a pattern must be plain
    data (an intrinsic function in it would not be what EventBridge sees)."""
    out = {}
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        pattern = resource["Properties"]["EventPattern"]
        text = json.dumps(pattern)
        if '"Ref"' in text or '"Fn::' in text:
            sys.exit(f"{name}: the event pattern uses an intrinsic function: {text}")
        out[name] = pattern
    return out


def client(service, endpoint, region):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def deliver(endpoint, template, home, other, events):
    rules = patterns(template)
    queue_name = template["Parameters"]["QueueName"]["Default"]
    sqs = client("sqs", endpoint, home)
    url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    account = queue_arn.split(":")[4]
    home_bus = f"arn:aws:events:{home}:{account}:event-bus/default"
    targets = {
        home: {"Id": "fleetdns-queue", "Arn": queue_arn},
        other: {
            "Id": "fleetdns-home-bus",
            "Arn": home_bus,
            "RoleArn": f"arn:aws:iam::{account}:role/fleetdns-forward",
        },
    }
    for region, target in targets.items():
        eb = client("events", endpoint, region)
        for name, pattern in rules.items():
            eb.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
            eb.put_targets(Rule=name, Targets=[target])

    for event in events:
        eb = client("events", endpoint, event["region"])
        entry = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event["detail"]),
            "Resources": event.get("resources", []),
        }
        out = eb.put_events(Entries=[entry])
        if out.get("FailedEntryCount"):
            sys.exit(f"put_events failed: {out['Entries']}")

    # Delivery is synchronous in moto; drain until a short poll comes back empty.
    received = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            break
        for m in messages:
            received.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return {"rules": sorted(rules), "received": received}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint")
    sub = p.add_subparsers(dest="cmd", required=True)
    pat = sub.add_parser("patterns")
    pat.add_argument("template")
    d = sub.add_parser("deliver")
    d.add_argument("template")
    d.add_argument("home")
    d.add_argument("other")
    args = p.parse_args()
    template = load(args.template)
    if args.cmd == "patterns":
        json.dump(patterns(template), sys.stdout)
    else:
        if not args.endpoint:
            sys.exit("deliver needs --endpoint")
        json.dump(
            deliver(args.endpoint, template, args.home, args.other, json.load(sys.stdin)),
            sys.stdout,
        )


if __name__ == "__main__":
    main()

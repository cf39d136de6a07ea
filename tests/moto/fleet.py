#!/usr/bin/env python3
"""Seeds and edits a fleet in a moto server, for fleetdns's integration tests.

Driven by the Rust tests (tests/integration/ec2.rs) over the command line:

    fleet.py --endpoint URL [--role-arn ARN] seed < spec.json   # prints what it created, as JSON
    fleet.py --endpoint URL tag REGION ID KEY VALUE
    fleet.py --endpoint URL state REGION ID running|stopped|terminated
    fleet.py --endpoint URL queue REGION NAME            # creates an SQS queue, prints its URL
    fleet.py --endpoint URL send REGION QUEUE_URL < body   # sends one message
    fleet.py --endpoint URL depth REGION QUEUE_URL       # messages visible + in flight
    fleet.py --endpoint URL delete-queue REGION QUEUE_URL
    fleet.py --endpoint URL launch REGION NAME           # prints {"id": ..., "ip": ...}
    fleet.py --endpoint URL state-rule REGION QUEUE_URL  # EventBridge: state changes -> queue
    fleet.py --endpoint URL put-event REGION < event.json  # events.put_events of one event
    fleet.py --endpoint URL iam-user NAME [--allow ACTION ...]  # keys as JSON

A spec is {"REGION": {"vpcs": [{"cidr": "10.1.0.0/16", "groups": ["web"],
"instances": [{"name": "web-1", "groups": ["web"], "state": "running",
"tags": {"Env": "prod"}, "count": 1, "ipv6": false}]}]}}. "name" null means
no Name tag. Every instance is launched by its own run_instances call, so
that each is its own reservation: moto pages by reservations.
"""

import argparse
import json
import sys

import boto3


ROLE_ARN = None


def client(endpoint, region):
    """An EC2 client; in the account of ROLE_ARN when set (moto keeps each
    account's resources apart by the credentials that assumed the role)."""
    creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing")
    if ROLE_ARN:
        sts = boto3.client("sts", endpoint_url=endpoint, region_name=region, **creds)
        c = sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="fleet-seed")["Credentials"]
        creds = dict(
            aws_access_key_id=c["AccessKeyId"],
            aws_secret_access_key=c["SecretAccessKey"],
            aws_session_token=c["SessionToken"],
        )
    return boto3.client("ec2", endpoint_url=endpoint, region_name=region, **creds)


def seed(endpoint, spec):
    out = {}
    for region, body in spec.items():
        ec2 = client(endpoint, region)
        created = {"vpcs": [], "instances": []}
        for v in body.get("vpcs", []):
            vpc = ec2.create_vpc(CidrBlock=v["cidr"])["Vpc"]["VpcId"]
            created["vpcs"].append(vpc)
            base = v["cidr"].split("/")[0].rsplit(".", 2)[0]
            subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{base}.1.0/24")["Subnet"]["SubnetId"]
            groups = {}
            for g in v.get("groups", []):
                groups[g] = ec2.create_security_group(
                    GroupName=g, Description=g, VpcId=vpc
                )["GroupId"]
            for spec_i in v.get("instances", []):
                tags = dict(spec_i.get("tags", {}))
                if spec_i.get("name") is not None:
                    tags["Name"] = spec_i["name"]
                for _ in range(spec_i.get("count", 1)):
                    kwargs = dict(
                        ImageId="ami-12c6146b",
                        MinCount=1,
                        MaxCount=1,
                        InstanceType="t3.micro",
                        SubnetId=subnet,
                    )
                    sg_ids = [groups[g] for g in spec_i.get("groups", [])]
                    if sg_ids:
                        kwargs["SecurityGroupIds"] = sg_ids
                    if tags:
                        kwargs["TagSpecifications"] = [
                            {
                                "ResourceType": "instance",
                                "Tags": [{"Key": k, "Value": val} for k, val in tags.items()],
                            }
                        ]
                    inst = ec2.run_instances(**kwargs)["Instances"][0]
                    iid = inst["InstanceId"]
                    set_state(ec2, iid, spec_i.get("state", "running"))
                    created["instances"].append(
                        {
                            "id": iid,
                            "ip": inst.get("PrivateIpAddress"),
                            "name": spec_i.get("name"),
                            "vpc": vpc,
                            "state": spec_i.get("state", "running"),
                        }
                    )
        out[region] = created
    return out


def set_state(ec2, iid, state):
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[iid])
    elif state == "terminated":
        ec2.terminate_instances(InstanceIds=[iid])
    elif state == "running":
        ec2.start_instances(InstanceIds=[iid])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--role-arn", help="act in the account of this role")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("seed")
    for name, positional in [
        ("tag", ["region", "id", "key", "value"]),
        ("state", ["region", "id", "state"]),
        ("queue", ["region", "name"]),
        ("send", ["region", "url"]),
        ("depth", ["region", "url"]),
        ("delete-queue", ["region", "url"]),
        ("launch", ["region", "name"]),
        ("state-rule", ["region", "url"]),
        ("put-event", ["region"]),
    ]:
        command = sub.add_parser(name)
        for arg in positional:
            command.add_argument(arg)
    u = sub.add_parser("iam-user", help="a user with no policy (or one allowing --allow); prints its keys as JSON")
    u.add_argument("name")
    u.add_argument("--allow", action="append", default=[], help="an action the user may call")
    args = p.parse_args()
    global ROLE_ARN
    ROLE_ARN = args.role_arn
    if args.cmd == "seed":
        json.dump(seed(args.endpoint, json.load(sys.stdin)), sys.stdout)
    elif args.cmd == "tag":
        client(args.endpoint, args.region).create_tags(
            Resources=[args.id], Tags=[{"Key": args.key, "Value": args.value}]
        )
    elif args.cmd == "iam-user":
        iam = boto3.client(
            "iam",
            endpoint_url=args.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        iam.create_user(UserName=args.name)
        if args.allow:
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": args.allow, "Resource": "*"}],
            }
            iam.put_user_policy(
                UserName=args.name, PolicyName="allow", PolicyDocument=json.dumps(policy)
            )
        key = iam.create_access_key(UserName=args.name)["AccessKey"]
        json.dump({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}, sys.stdout)
    elif args.cmd == "state":
        set_state(client(args.endpoint, args.region), args.id, args.state)
    elif args.cmd == "launch":
        # in the region's default VPC, with a Name tag, running
        inst = client(args.endpoint, args.region).run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": args.name}]}
            ],
        )["Instances"][0]
        json.dump({"id": inst["InstanceId"], "ip": inst.get("PrivateIpAddress")}, sys.stdout)
    elif args.cmd in ("state-rule", "put-event"):
        creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing")
        events = boto3.client("events", endpoint_url=args.endpoint, region_name=args.region, **creds)
        if args.cmd == "state-rule":
            # what deploy/events/ creates for state changes
            sqs = boto3.client("sqs", endpoint_url=args.endpoint, region_name=args.region, **creds)
            arn = sqs.get_queue_attributes(QueueUrl=args.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            pattern = {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]}
            events.put_rule(Name="fleetdns-ec2-state", EventPattern=json.dumps(pattern))
            events.put_targets(Rule="fleetdns-ec2-state", Targets=[{"Id": "queue", "Arn": arn}])
        else:
            e = json.load(sys.stdin)
            out = events.put_events(
                Entries=[
                    {
                        "Source": e["source"],
                        "DetailType": e["detail-type"],
                        "Detail": json.dumps(e["detail"]),
                        "Resources": e.get("resources", []),
                    }
                ]
            )
            if out["FailedEntryCount"]:
                sys.exit(f"put_events failed: {out}")
    elif args.cmd in ("queue", "send", "depth", "delete-queue"):
        sqs = boto3.client(
            "sqs",
            endpoint_url=args.endpoint,
            region_name=args.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        if args.cmd == "queue":
            # a short visibility timeout: a message not deleted comes back soon
            url = sqs.create_queue(QueueName=args.name, Attributes={"VisibilityTimeout": "2"})
            sys.stdout.write(url["QueueUrl"])
        elif args.cmd == "send":
            sqs.send_message(QueueUrl=args.url, MessageBody=sys.stdin.read())
        elif args.cmd == "delete-queue":
            sqs.delete_queue(QueueUrl=args.url)
        else:
            a = sqs.get_queue_attributes(QueueUrl=args.url, AttributeNames=["All"])["Attributes"]
            sys.stdout.write(str(int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])))


if __name__ == "__main__":
    main()

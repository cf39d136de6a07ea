//! EC2 change events through SQS (issue 16), against moto: moto's EC2
//! emits no events, so each test changes moto's EC2 state and then sends
//! what EventBridge would deliver (the whole event as the message body).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::ec2::{basic_fleet, id_of, ip_of, start};
use crate::harness::*;
use crate::moto::Moto;

/// The unit label of the ambient account in us-east-1.
const UNIT: &str = "unit=\"ec2:ambient:us-east-1\"";

/// A "Tag Change on Resource" event for instance `id`, as EventBridge
/// delivers it (moto leaves the account out, and so does this).
fn tag_event(id: &str) -> String {
    json!({
        "version": "0",
        "id": "ffd8a6fe-32f8-ef66-c85c-111111111111",
        "detail-type": "Tag Change on Resource",
        "source": "aws.tag",
        "time": "2026-12-04T12:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}")],
        "detail": {"changed-tag-keys": ["Name"], "service": "ec2", "resource-type": "instance", "version": 2, "tags": {}}
    })
    .to_string()
}

/// An "EC2 Instance State-change Notification" for instance `id`.
fn state_event(id: &str, state: &str) -> String {
    json!({
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "time": "2026-12-04T12:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{id}")],
        "detail": {"instance-id": id, "state": state}
    })
    .to_string()
}

/// Waits until `name` answers `want` (an empty `want`: NXDOMAIN); how
/// long that took, or a panic after `secs`.
fn answered_within(d: &Daemon, name: &str, want: &[String], secs: u64) -> Duration {
    let started = Instant::now();
    loop {
        let got = short(d.udp, &[name]);
        let done = if want.is_empty() {
            d.dig(&[name]).contains("NXDOMAIN")
        } else {
            got == want
        };
        if done {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{name} still answers {got:?}, not {want:?}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// moto with the basic fleet and an event queue, and fleetdns following
/// the queue with refreshes an hour apart and pages of 5 (a full pass of
/// us-east-1 takes two calls): whatever changes within a test comes from
/// its events.
struct World {
    moto: Moto,
    seeded: serde_json::Value,
    queue: String,
    d: Daemon,
    _dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let moto = Moto::start();
        let seeded = moto.seed(&basic_fleet());
        let queue = moto.queue("us-east-1", "fleetdns-events");
        let dir = tempdir();
        let d = start(
            dir.path(),
            &moto.endpoint,
            &format!("regions = [\"us-east-1\"]\npage_size = 5\n[source.ec2.events]\nqueue_url = \"{queue}\""),
            "interval_secs = 3600\nmetrics_listen = \"127.0.0.1:0\"",
        );
        d.wait_for_log("following EC2 change events", 10);
        World {
            moto,
            seeded,
            queue,
            d,
            _dir: dir,
        }
    }

    /// `fleetdns_events_total` for this kind and result.
    fn events(&self, kind: &str, result: &str) -> f64 {
        let (kind, result) = (format!("kind=\"{kind}\""), format!("result=\"{result}\""));
        self.d.metric("fleetdns_events_total", &[&kind, &result])
    }

    /// Waits until the queue holds no message, visible or in flight.
    fn wait_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.moto.depth("us-east-1", &self.queue) > 0 {
            assert!(Instant::now() < deadline, "messages left in the queue");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_rename_and_a_stop_are_answered_within_two_seconds_by_targeted_describes() {
    let w = World::start();
    let (moto, seeded, queue, d) = (&w.moto, &w.seeded, &w.queue, &w.d);
    let web = id_of(seeded, "us-east-1", "web-1");
    let ips = ip_of(seeded, "us-east-1", "web-1");
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ips);
    let calls = d.metric("fleetdns_api_calls_total", &[UNIT]);

    // a rename: the tag event, and the new name answers
    moto.tag("us-east-1", &web, "Name", "web-renamed");
    moto.send("us-east-1", queue, &tag_event(&web));
    let took = answered_within(d, "web-renamed.fleet.internal", &ips, 2);
    assert!(d.dig(&["web-1.fleet.internal"]).contains("NXDOMAIN"));
    eprintln!("rename answered after {took:?}");

    // a stop: two state events (stopping, stopped), one batch or two
    moto.set_state("us-east-1", &web, "stopped");
    moto.send("us-east-1", queue, &state_event(&web, "stopping"));
    moto.send("us-east-1", queue, &state_event(&web, "stopped"));
    let took = answered_within(d, "web-renamed.fleet.internal", &[], 2);
    eprintln!("stop answered after {took:?}");

    // the queue drains: every message applied and deleted
    w.wait_drained();
    // each change cost targeted describes (one call a batch: the two
    // state events make one batch or two), no full pass (two pages)
    let spent = d.metric("fleetdns_api_calls_total", &[UNIT]) - calls;
    assert!((2.0..=3.0).contains(&spent), "{spent} calls");
    assert_eq!(w.events("tag", "applied"), 1.0);
    assert_eq!(w.events("state", "applied"), 2.0);
    // the other names are untouched
    assert_eq!(
        short(d.udp, &["api.fleet.internal"]),
        ip_of(seeded, "us-east-1", "api")
    );
}

#[test]
fn duplicate_unknown_foreign_and_malformed_messages_leave_the_zone_right_and_drain() {
    let w = World::start();
    let (moto, seeded, queue, d) = (&w.moto, &w.seeded, &w.queue, &w.d);
    let web = id_of(seeded, "us-east-1", "web-1");
    let ips = ip_of(seeded, "us-east-1", "web-1");
    // out of order and repeated: the describe says what is true now
    moto.tag("us-east-1", &web, "Name", "web-2");
    for body in [
        state_event(&web, "running"),
        tag_event(&web),
        tag_event(&web),
        state_event("i-0123456789abcdef0", "terminated"), // unknown id
        state_event(&web, "pending"),
        "not json at all".to_string(),
        json!({"source": "aws.s3", "detail-type": "Object Created"}).to_string(),
        state_event(&web, "running").replace("us-east-1\",\"resources", "eu-west-1\",\"resources"),
    ] {
        moto.send("us-east-1", queue, &body);
    }
    answered_within(d, "web-2.fleet.internal", &ips, 3);
    assert!(d.dig(&["web-1.fleet.internal"]).contains("NXDOMAIN"));
    w.wait_drained();
    assert_eq!(w.events("other", "malformed"), 1.0);
    assert_eq!(w.events("other", "ignored"), 1.0);
    // the zone holds what it held, but the rename
    assert_eq!(
        short(d.udp, &["api.fleet.internal"]),
        ip_of(seeded, "us-east-1", "api")
    );
}

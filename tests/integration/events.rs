//! EC2 change events through SQS (issue 16), against moto: moto's EC2
//! emits no events, so each test changes moto's EC2 state and then sends
//! what EventBridge would deliver (the whole event as the message body).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::ec2::{basic_fleet, id_of, ip_of, start, subdir, write_config};
use crate::harness::*;
use crate::moto::{FaultProxy, Moto};

/// The unit label of the ambient account in us-east-1.
const UNIT: &str = "unit=\"ec2:ambient:us-east-1\"";
/// The label of DescribeInstances in the API counters.
const DESCRIBE: &str = "operation=\"DescribeInstances\"";

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
/// the queue with full passes an hour apart and pages of 5 (a full pass of
/// us-east-1 takes two calls): whatever changes within a test comes from
/// its events. With a fault proxy, fleetdns reaches moto through it.
struct World {
    moto: Moto,
    proxy: Option<FaultProxy>,
    seeded: serde_json::Value,
    queue: String,
    d: Daemon,
    _dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        Self::start_with(false, "interval_secs = 3600")
    }

    /// Through a fault proxy if `proxy`, with `top` (`interval_secs` and
    /// the like) at the top of the config.
    fn start_with(proxy: bool, top: &str) -> World {
        let moto = Moto::start();
        let proxy = proxy.then(|| FaultProxy::start(&moto));
        let seeded = moto.seed(&basic_fleet());
        let queue = moto.queue("us-east-1", "fleetdns-events");
        let endpoint = proxy.as_ref().map_or(&moto.endpoint, |p| &p.endpoint);
        let dir = tempdir();
        let d = start(
            dir.path(),
            endpoint,
            &format!("regions = [\"us-east-1\"]\npage_size = 5\n[source.ec2.events]\nqueue_url = \"{queue}\"\nresync_interval_secs = 3600"),
            &format!("{top}\nmetrics_listen = \"127.0.0.1:0\""),
        );
        d.wait_for_log("following EC2 change events", 10);
        World {
            moto,
            proxy,
            seeded,
            queue,
            d,
            _dir: dir,
        }
    }

    /// Full passes so far, whatever their result.
    fn full_passes(&self) -> f64 {
        let (_, body) = self.d.http_get("/metrics");
        ["changed", "unchanged", "partial", "failed"]
            .iter()
            .map(|r| {
                sample(
                    &body,
                    "fleetdns_refreshes_total",
                    &[&format!("result=\"{r}\"")],
                )
            })
            .sum()
    }

    /// Waits until `/readyz` says `mode` (its body's second line starts
    /// with it); the body.
    fn wait_for_mode(&self, mode: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (_, body) = self.d.http_get("/readyz");
            if body.lines().nth(1).is_some_and(|l| l.starts_with(mode)) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never said {mode:?}: {body}\nlog:\n{}",
                self.d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
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
fn a_rename_a_stop_a_termination_and_a_launch_are_answered_within_two_seconds_by_targeted_describes(
) {
    let w = World::start();
    let (moto, seeded, queue, d) = (&w.moto, &w.seeded, &w.queue, &w.d);
    // state changes come through EventBridge (a rule to the queue, as
    // deploy/events/ makes), tag changes straight to the queue
    moto.state_rule("us-east-1", queue);
    let web = id_of(seeded, "us-east-1", "web-1");
    let ips = ip_of(seeded, "us-east-1", "web-1");
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ips);
    let body = w.wait_for_mode("mode: events", 5);
    assert!(body.contains("a full pass every 3600 s"), "{body}");
    assert_eq!(
        d.metric("fleetdns_unit_mode", &[UNIT, "mode=\"events\""]),
        1.0
    );
    let (calls, passes) = (
        d.metric("fleetdns_api_calls_total", &[UNIT, DESCRIBE]),
        w.full_passes(),
    );

    // a rename: the tag event, and the new name answers
    moto.tag("us-east-1", &web, "Name", "web-renamed");
    moto.send("us-east-1", queue, &tag_event(&web));
    let took = answered_within(d, "web-renamed.fleet.internal", &ips, 2);
    assert!(d.dig(&["web-1.fleet.internal"]).contains("NXDOMAIN"));
    eprintln!("rename answered after {took:?}");

    // a stop: two state events (stopping, stopped), one batch or two
    moto.set_state("us-east-1", &web, "stopped");
    moto.put_event("us-east-1", &state_event(&web, "stopping"));
    moto.put_event("us-east-1", &state_event(&web, "stopped"));
    let took = answered_within(d, "web-renamed.fleet.internal", &[], 2);
    eprintln!("stop answered after {took:?}");

    // a termination: one of the two instances named api
    let apis: Vec<&serde_json::Value> = seeded["us-east-1"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == "api")
        .collect();
    let (gone, stays) = (
        apis[0]["id"].as_str().unwrap(),
        apis[1]["ip"].as_str().unwrap(),
    );
    moto.set_state("us-east-1", gone, "terminated");
    moto.put_event("us-east-1", &state_event(gone, "terminated"));
    let took = answered_within(d, "api.fleet.internal", &[stays.to_string()], 2);
    eprintln!("termination answered after {took:?}");

    // a launch: pending, then running
    let (new, ip) = moto.launch("us-east-1", "batch-7");
    moto.put_event("us-east-1", &state_event(&new, "pending"));
    moto.put_event("us-east-1", &state_event(&new, "running"));
    let took = answered_within(d, "batch-7.fleet.internal", &[ip], 2);
    eprintln!("launch answered after {took:?}");

    // the queue drains: every message applied and deleted
    w.wait_drained();
    // each change cost targeted describes (one call a batch; the state
    // events of one change make one batch or two), and no full pass
    let spent = d.metric("fleetdns_api_calls_total", &[UNIT, DESCRIBE]) - calls;
    assert!((4.0..=7.0).contains(&spent), "{spent} calls");
    assert_eq!(w.full_passes(), passes);
    assert_eq!(w.events("tag", "applied"), 1.0);
    assert_eq!(w.events("state", "applied"), 5.0);
    // the queue's own calls are counted apart, by operation
    let queue_unit = "unit=\"events:fleetdns-events\"";
    for operation in ["GetQueueAttributes", "ReceiveMessage", "DeleteMessageBatch"] {
        let label = format!("operation=\"{operation}\"");
        assert!(
            d.metric("fleetdns_api_calls_total", &[queue_unit, &label]) >= 1.0,
            "{operation}"
        );
    }
    // and each applied event's arrival-to-swap time was observed
    assert_eq!(d.metric("fleetdns_event_to_swap_seconds_count", &[]), 6.0);
    assert!(d.metric("fleetdns_event_to_swap_seconds_sum", &[]) < 6.0 * 2.0);
    // the other names are untouched
    let evil = "Evil\nName # 127.0.0.1 localhost";
    assert_eq!(
        short(d.udp, &["evil-name-127.0.0.1-localhost.fleet.internal"]),
        ip_of(seeded, "us-east-1", evil)
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
        // near SQS's largest body (256 KiB)
        format!("{{\"detail\": \"{}\"}}", "x".repeat(250_000)),
    ] {
        moto.send("us-east-1", queue, &body);
    }
    answered_within(d, "web-2.fleet.internal", &ips, 3);
    assert!(d.dig(&["web-1.fleet.internal"]).contains("NXDOMAIN"));
    w.wait_drained();
    assert_eq!(w.events("other", "malformed"), 2.0);
    assert_eq!(w.events("other", "ignored"), 1.0);
    // the zone holds what it held, but the rename
    assert_eq!(
        short(d.udp, &["api.fleet.internal"]),
        ip_of(seeded, "us-east-1", "api")
    );
}

/// Through the fault proxy, with `interval_secs` 2 (polling would show in
/// seconds) and full passes an hour apart while events flow.
#[test]
fn failing_describes_are_retried_and_a_failing_queue_hands_over_to_polling_and_back() {
    let w = World::start_with(true, "interval_secs = 2\nmax_stale_secs = 120");
    let (moto, seeded, queue, d) = (&w.moto, &w.seeded, &w.queue, &w.d);
    let proxy = w.proxy.as_ref().unwrap();
    let web = id_of(seeded, "us-east-1", "web-1");
    let ips = ip_of(seeded, "us-east-1", "web-1");
    w.wait_for_mode("mode: events", 5);
    // following: no full pass although interval_secs is 2
    let passes = w.full_passes();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.full_passes(), passes, "{}", d.log());

    // describing fails: the event stays in the queue, and is applied
    // once describing works again (after the visibility timeout, 2 s)
    proxy.set("ec2/us-east-1", "error500");
    moto.tag("us-east-1", &web, "Name", "web-late");
    moto.send("us-east-1", queue, &tag_event(&web));
    d.wait_for_log("describing the instances of an event failed", 10);
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ips);
    assert!(moto.depth("us-east-1", queue) >= 1);
    proxy.set("ec2/us-east-1", "ok");
    answered_within(d, "web-late.fleet.internal", &ips, 10);
    w.wait_drained();

    // the queue fails (the long poll under way ends with a message):
    // full passes every interval_secs take over
    proxy.set("sqs/us-east-1", "error500");
    moto.send("us-east-1", queue, &tag_event(&web));
    let body = w.wait_for_mode("mode: polling every 2 s", 15);
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(body.contains("as receiving events fails"), "{body}");
    assert_eq!(
        d.metric("fleetdns_unit_mode", &[UNIT, "mode=\"polling\""]),
        1.0
    );
    d.wait_for_log("EC2 events do not flow: full passes every interval_secs", 5);
    // a rename with no event at all is found by polling
    moto.tag("us-east-1", &web, "Name", "web-polled");
    answered_within(d, "web-polled.fleet.internal", &ips, 6);

    // the queue answers again: events, and full passes stop
    proxy.set("sqs/us-east-1", "ok");
    w.wait_for_mode("mode: events", 40);
    d.wait_for_log("the event queue answers again", 5);
    let passes = w.full_passes();
    moto.tag("us-east-1", &web, "Name", "web-back");
    moto.send("us-east-1", queue, &tag_event(&web));
    answered_within(d, "web-back.fleet.internal", &ips, 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.full_passes(), passes, "{}", d.log());
}

/// A queue that does not exist (deleted, or in another region than
/// fleetdns asks) and one fleetdns may not read: a log line that says
/// which and what to do, `/readyz` says polling, and the zone is served.
#[test]
fn a_missing_queue_or_a_missing_permission_is_logged_and_the_zone_polled() {
    let moto = Moto::start();
    let seeded = moto.seed(&basic_fleet());
    let ips = ip_of(&seeded, "us-east-1", "web-1");
    let deleted = moto.queue("us-east-1", "fleetdns-deleted");
    moto.delete_queue("us-east-1", &deleted);
    let elsewhere = moto.queue("eu-west-1", "fleetdns-events");
    let config = |dir: &std::path::Path, queue: &str| {
        write_config(
            dir,
            &moto.endpoint,
            &format!("regions = [\"us-east-1\"]\n[source.ec2.events]\nqueue_url = \"{queue}\""),
            "metrics_listen = \"127.0.0.1:0\"",
        )
    };
    let dir = tempdir();
    let serve = |config: &std::path::Path, env: &[(&str, &str)]| {
        let d = Daemon::start_env(&["--config", config.to_str().unwrap()], env);
        assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ips);
        d
    };
    for (name, queue) in [("deleted", &deleted), ("elsewhere", &elsewhere)] {
        let d = serve(&config(&subdir(dir.path(), name), queue), &[]);
        d.wait_for_log("the EC2 event queue cannot be read; polling", 10);
        d.wait_for_log("no such queue in us-east-1: ", 1);
        d.wait_for_log("check queue_url", 1);
        let (status, body) = d.http_get("/readyz");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("mode: polling every 60 s, as receiving events fails: no such queue"),
            "{body}"
        );
    }

    // credentials that may describe instances but not read the queue
    let queue = moto.queue("us-east-1", "fleetdns-events");
    let (id, secret) = moto.user_allowed("fleetdns-ec2-only", &["ec2:DescribeInstances"]);
    moto.reject_credentials();
    let d = serve(
        &config(&subdir(dir.path(), "denied"), &queue),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    // moto 5.0.28 answers this with an XML AccessDenied that SQS's JSON
    // protocol cannot read: fleetdns goes by the 403
    d.wait_for_log("permission missing: ", 10);
    d.wait_for_log(
        "allow sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes",
        1,
    );
    assert!(d.http_get("/readyz").1.contains("mode: polling"));
}

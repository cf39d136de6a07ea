//! The refresher over a real file: changes appear, serials move only on change.

use std::time::Duration;

use crate::harness::*;

fn serial(d: &Daemon) -> u32 {
    let soa = short(d.udp, &["SOA", "fleet.internal"]);
    soa[0].split(' ').nth(2).unwrap().parse().unwrap()
}

#[test]
fn inventory_changes_appear_and_the_serial_rises_only_on_change() {
    let dir = tempdir();
    let path = dir.path().join("fleet.json");
    write_inventory(&path, &[Fake::running(1, Some("alpha"))]);
    let config = dir.path().join("fleetdns.toml");
    std::fs::write(&config, "interval_secs = 1\n").unwrap();
    let d = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--source",
        &file_source(&path),
    ]);
    assert_eq!(short(d.udp, &["alpha.fleet.internal"]), ["10.9.0.2"]);
    let first = serial(&d);

    // unchanged content over several refreshes: same serial
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(serial(&d), first);

    // a renamed instance: the new name answers, the old one is gone, serial up
    write_inventory(&path, &[Fake::running(1, Some("beta"))]);
    wait_for_answer(&d, "beta.fleet.internal", &["10.9.0.2"], 5);
    assert!(d.dig(&["alpha.fleet.internal"]).contains("NXDOMAIN"));
    assert!(serial(&d) > first);
    // and the log says what the change did: one name in, one out
    let log = d.log();
    let update = log
        .lines()
        .rfind(|l| l.contains("zone updated"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(update.contains("added=1 removed=1 changed=0"), "{update}");

    // a broken file keeps the last good data
    std::fs::write(&path, "not json").unwrap();
    d.wait_for_log("keeping last good data", 5);
    assert_eq!(short(d.udp, &["beta.fleet.internal"]), ["10.9.0.2"]);
}

#[test]
fn sighup_refreshes_at_once() {
    let dir = tempdir();
    let path = dir.path().join("fleet.json");
    write_inventory(&path, &[Fake::running(1, Some("alpha"))]);
    let d = Daemon::start(&["--source", &file_source(&path)]); // default interval: 60 s
    write_inventory(&path, &[Fake::running(1, Some("gamma"))]);
    d.signal("HUP");
    wait_for_answer(&d, "gamma.fleet.internal", &["10.9.0.2"], 3);
}

/// Writes `n` running instances named host-1.. into `path`.
fn write_hosts(path: &std::path::Path, n: u32) {
    let names: Vec<String> = (1..=n).map(|i| format!("host-{i}")).collect();
    let fleet: Vec<Fake> = names
        .iter()
        .zip(1..)
        .map(|(name, i)| Fake::running(i, Some(name)))
        .collect();
    write_inventory(path, &fleet);
}

#[test]
fn a_refresh_that_removes_most_of_the_fleet_is_held_until_the_next_one_agrees() {
    let dir = tempdir();
    let path = dir.path().join("fleet.json");
    write_hosts(&path, 30);
    let config = dir.path().join("fleetdns.toml");
    std::fs::write(&config, "metrics_listen = \"127.0.0.1:0\"\n").unwrap();
    let d = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--source",
        &file_source(&path),
    ]);
    assert_eq!(short(d.udp, &["host-30.fleet.internal"]), ["10.9.0.31"]);

    // 25 of 30 gone at once: held, the names stay, /readyz says why
    write_hosts(&path, 5);
    d.signal("HUP");
    d.wait_for_log("held until the next fetch agrees", 5);
    assert_eq!(short(d.udp, &["host-30.fleet.internal"]), ["10.9.0.31"]);
    let (status, body) = d.http_get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("would remove 25 of its 30 running instances"),
        "{body}"
    );
    assert_eq!(d.metric("fleetdns_units_held", &[]), 1.0);

    // the next refresh says the same: applied
    d.signal("HUP");
    d.wait_for_log(
        "applying a fetch that removes more than max_removed_fraction: the next fetch agrees",
        5,
    );
    assert!(d.dig(&["host-30.fleet.internal"]).contains("NXDOMAIN"));
    assert_eq!(short(d.udp, &["host-5.fleet.internal"]), ["10.9.0.6"]);
    assert_eq!(d.http_get("/readyz").0, 200);
    assert_eq!(d.metric("fleetdns_units_held", &[]), 0.0);

    // back to 30 (growing is never held), then 25 gone with SIGUSR1:
    // applied at once
    write_hosts(&path, 30);
    d.signal("HUP");
    wait_for_answer(&d, "host-30.fleet.internal", &["10.9.0.31"], 5);
    write_hosts(&path, 5);
    d.signal("USR1");
    d.wait_for_log(
        "applying a fetch that removes more than max_removed_fraction: SIGUSR1",
        5,
    );
    assert!(d.dig(&["host-30.fleet.internal"]).contains("NXDOMAIN"));
}

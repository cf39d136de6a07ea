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

//! Forwarding names outside the zone to a real upstream (dnsmasq on loopback).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn names_outside_the_zone_are_forwarded_and_cached() {
    let mut upstream = Dnsmasq::start();
    let d = Daemon::start(&[
        "--source",
        &file_source(&example_fleet()),
        "--upstream",
        &upstream.addr.to_string(),
    ]);
    let out = d.dig(&["www.upstream.test"]);
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("192.0.2.7"), "{out}");
    assert!(
        out.contains("flags: qr rd ra;"),
        "forwarded: not authoritative, recursion available:\n{out}"
    );
    // zone names are still answered by fleetdns itself
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
    // the upstream's NXDOMAIN is passed on
    let out = d.dig(&["host.nx.test"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    // reverse names of addresses fleetdns does not know go upstream too
    assert_eq!(short(d.udp, &["-x", "10.99.99.99"]), ["up.upstream.test."]);
    // while its own addresses are answered by fleetdns
    assert_eq!(
        short(d.udp, &["-x", "10.20.1.11"]),
        ["web-1.fleet.internal."]
    );

    // with the upstream gone, the cached answer still comes back
    let _ = upstream.child.kill();
    let _ = upstream.child.wait();
    assert_eq!(short(d.udp, &["www.upstream.test"]), ["192.0.2.7"]);
    // and an uncached name fails with SERVFAIL, not silence
    let out = d.dig(&["other.upstream.test"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
}

#[test]
fn a_silent_upstream_gives_servfail_after_the_timeout() {
    // A socket that receives and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempdir();
    let toml = format!(
        "upstreams = [\"{}\"]\n[forward]\ntimeout_ms = 300\n",
        silent.local_addr().unwrap()
    );
    let d = start_with_config(dir.path(), &toml);
    let start = Instant::now();
    let out = d.dig(&["example.com"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // more queries: the dead upstream is one warning, not one per query
    for name in ["a.example.com", "b.example.com", "c.example.com"] {
        assert!(d.dig(&[name]).contains("status: SERVFAIL"));
    }
    let log = d.log();
    assert_eq!(
        log.matches("upstream not answering (timed out)").count(),
        1,
        "{log}"
    );
}

#[test]
fn forwarded_queries_beyond_max_in_flight_get_servfail_at_once() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempdir();
    let toml = format!(
        "upstreams = [\"{}\"]\n[forward]\ntimeout_ms = 3000\nmax_in_flight = 1\n",
        silent.local_addr().unwrap()
    );
    let d = start_with_config(dir.path(), &toml);
    // The first query takes the only slot and waits on the silent upstream.
    let first = std::thread::spawn({
        let server = d.udp;
        move || dig(server, &["+time=5", "one.example"])
    });
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let out = d.dig(&["two.example"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "not at once: {:?}",
        start.elapsed()
    );
    // zone names do not wait for forwarding slots
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
    assert!(first.join().unwrap().contains("status: SERVFAIL"));
}

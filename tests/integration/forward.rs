//! Forwarding names outside the zone to a real upstream (dnsmasq on loopback).

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A dnsmasq that answers `upstream.test` and nothing else, on loopback.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start() -> Dnsmasq {
        // A free port: bind, note it, release; dnsmasq binds it next.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--user=root",
                &format!("--port={port}"),
                "--address=/upstream.test/192.0.2.7",
                "--address=/nx.test/",
                // dnsmasq's own answers default to TTL 0, which nobody caches
                "--local-ttl=300",
                "--ptr-record=99.99.99.10.in-addr.arpa,up.upstream.test",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (scripts/test installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while short(addr, &["upstream.test"]) != ["192.0.2.7"] {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Dnsmasq { child, addr }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

//! Zone transfers to the real NSD, Knot and BIND, and transfer requests
//! that must be refused: the secondaries are Debian's, started by the test
//! on loopback ports with `deploy/secondaries/`'s configs.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::harness::*;
use crate::secondaries::{zone_records, Kind, Secondary, DIG_KEY, KEY_SECRET};

/// A fleetdns primary on an inventory file, with the test key, transfers
/// allowed from loopback with the key, NOTIFY to `notify` ports, and
/// `extra` config lines.
fn primary(dir: &Path, inventory: &Path, notify: &[u16], extra: &str) -> Daemon {
    let path = primary_config(dir, notify, extra);
    Daemon::start(&[
        "--config",
        path.to_str().unwrap(),
        "--source",
        &file_source(inventory),
    ])
}

/// Writes the config of [`primary`] into `dir`.
fn primary_config(dir: &Path, notify: &[u16], extra: &str) -> std::path::PathBuf {
    let targets: Vec<String> = notify
        .iter()
        .map(|p| format!("{{ to = \"127.0.0.1:{p}\", key = \"xfr-key\" }}"))
        .collect();
    let config = format!(
        "{extra}\n[[tsig_keys]]\nname = \"xfr-key\"\nalgorithm = \"hmac-sha256\"\nsecret_file = \"{}\"\n\
         [transfer]\nallow = [{{ from = \"127.0.0.0/8\", key = \"xfr-key\" }}]\nnotify = [{}]\nixfr_history = 4\n",
        secret_file(dir).display(),
        targets.join(", ")
    );
    let path = dir.join("fleetdns.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The test key's secret in a file only its owner may read.
fn secret_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("xfr-key.secret");
    std::fs::write(&path, format!("{KEY_SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The serial fleetdns serves.
fn serial(d: &Daemon) -> u32 {
    d.dig(&["+short", "fleet.internal", "SOA"])
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA; log:\n{}", d.log()))
}

/// fleetdns's whole zone, by a signed AXFR.
fn zone_of(d: &Daemon) -> BTreeSet<String> {
    named_zone_of(d, "fleet.internal")
}

/// fleetdns's whole `zone` (the zone or a reverse zone), by a signed AXFR.
fn named_zone_of(d: &Daemon, zone: &str) -> BTreeSet<String> {
    zone_records(&dig(d.tcp, &["+time=30", "-y", DIG_KEY, zone, "AXFR"]))
}

/// Writes `instances`, sends SIGHUP, and waits until fleetdns serves a
/// new serial; returns it and when the signal went.
fn change(d: &Daemon, inventory: &Path, instances: &[Fake]) -> (u32, Instant) {
    let before = serial(d);
    write_inventory(inventory, instances);
    let sent = Instant::now();
    d.signal("HUP");
    (serial_after(d, before), sent)
}

/// Waits (10 s at most) until fleetdns serves a serial other than
/// `before`, and returns it.
fn serial_after(d: &Daemon, before: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = serial(d);
        if now != before {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no new serial; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A [`primary`] with `extra` config lines that notifies NSD, Knot and
/// BIND, each started as its secondary; their ports too.
fn primary_and_secondaries(
    dir: &Path,
    inventory: &Path,
    extra: &str,
) -> (Daemon, Vec<Secondary>, Vec<u16>) {
    let ports: Vec<u16> = Kind::ALL.iter().map(|_| Secondary::port()).collect();
    let d = primary(dir, inventory, &ports, extra);
    let secondaries = Kind::ALL
        .iter()
        .zip(&ports)
        .map(|(kind, port)| Secondary::start(*kind, *port, d.tcp.port()))
        .collect();
    (d, secondaries, ports)
}

fn fleet(names: &[&'static str]) -> Vec<Fake<'static>> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Fake::running(i as u32 + 1, Some(n)))
        .collect()
}

#[test]
fn nsd_knot_and_bind_replicate_the_zone_and_follow_each_change_by_notify_and_ixfr() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    let mut names = vec!["web-1", "web-2", "db", "cache"];
    write_inventory(&inventory, &fleet(&names));
    let (d, secondaries, ports) = primary_and_secondaries(dir.path(), &inventory, "");

    // each gets the whole zone, signed, and serves exactly what fleetdns does
    let first = serial(&d);
    let want = zone_of(&d);
    assert!(want.len() > 10, "{want:?}");
    for s in &secondaries {
        s.wait_for_serial(first, 30.0);
        assert_eq!(s.zone(), want, "{:?} serves another zone", s.kind);
    }

    // a rename, a stop and a new instance: all three follow within 3 s of
    // SIGHUP, by NOTIFY and IXFR
    let mut instances = fleet(&names);
    instances[0].name = Some("web-1-renamed");
    instances[2].state = "stopped";
    instances.push(Fake::running(50, Some("new-host")));
    let (next, sent) = change(&d, &inventory, &instances);
    for s in &secondaries {
        s.wait_for_serial(next, 3.0 - sent.elapsed().as_secs_f64().min(2.9));
    }
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    let want = zone_of(&d);
    for s in &secondaries {
        assert_eq!(s.zone(), want, "{:?} after the change", s.kind);
    }
    let knot = &secondaries[1];
    assert!(
        knot.log().contains("IXFR, incoming") && !knot.log().contains("fallback to AXFR"),
        "Knot took an IXFR without falling back:\n{}",
        knot.log()
    );
    assert!(d.log().contains("kind=\"ixfr\" serial="), "{}", d.log());

    // stopped during three changes: each catches up through the chain of
    // three differences
    for s in &secondaries {
        s.pause();
    }
    let mut last = next;
    for n in ["x-1", "x-2", "x-3"] {
        names.push(n);
        (last, _) = change(&d, &inventory, &fleet(&names));
    }
    for s in &secondaries {
        s.resume();
    }
    for s in &secondaries {
        s.wait_for_serial(last, 30.0);
    }
    let want = zone_of(&d);
    for s in &secondaries {
        assert_eq!(s.zone(), want, "{:?} after catching up", s.kind);
    }
    let chained = d.log().matches("steps=3 ").count();
    assert!(chained >= 3, "three IXFRs of three steps:\n{}", d.log());
    assert!(!knot.log().contains("fallback to AXFR"), "{}", knot.log());

    // one older than the journal (4 versions) gets the whole zone in IXFR form
    knot.pause();
    for n in ["y-1", "y-2", "y-3", "y-4", "y-5"] {
        names.push(n);
        (last, _) = change(&d, &inventory, &fleet(&names));
    }
    knot.resume();
    knot.wait_for_serial(last, 30.0);
    assert_eq!(knot.zone(), zone_of(&d));
    assert!(d.log().contains("kind=\"ixfr_full\""), "{}", d.log());

    // a new TTL, and nothing else: a new serial, and every secondary
    // serves the records with it (the journal cannot hold a difference
    // across such a change, so they get the whole zone)
    primary_config(dir.path(), &ports, "ttl = 77");
    let before = serial(&d);
    d.signal("HUP");
    let last = serial_after(&d, before);
    let want = zone_of(&d);
    assert!(want.iter().any(|r| r.contains(" 77 IN A ")), "{want:?}");
    for s in &secondaries {
        s.wait_for_serial(last, 10.0);
        assert_eq!(s.zone(), want, "{:?} after the TTL change", s.kind);
    }
}

#[test]
fn static_records_replicate_to_nsd_knot_and_bind_and_a_change_follows_by_ixfr() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    write_inventory(&inventory, &fleet(&["web-1", "db", "api"]));
    let statics = dir.path().join("static.zone");
    // apex records, a CNAME in and out of the zone, SRV under an empty
    // non-terminal, TXT with spaces and an escape, a static name over the
    // fleet name `db`
    let first_file = "$TTL 300\n@ TXT \"v=spf1 -all\"\n@ MX 10 mail\nmail A 10.30.0.25\n\
                      www CNAME web-1\nlb CNAME lb-1.elb.example.com.\n\
                      _ldap._tcp SRV 0 5 389 legacy\nlegacy A 10.30.0.5\nlegacy AAAA fd00::5\n\
                      note TXT \"two words\" \"semi\\059colon\"\ndb A 10.30.0.9\n";
    std::fs::write(&statics, first_file).unwrap();
    let extra = format!("static_records = {:?}", statics.to_str().unwrap());
    let (d, secondaries, _) = primary_and_secondaries(dir.path(), &inventory, &extra);
    let first = serial(&d);
    let want = zone_of(&d);
    for record in [
        "fleet.internal. 300 IN TXT \"v=spf1 -all\"",
        "fleet.internal. 300 IN MX 10 mail.fleet.internal.",
        "www.fleet.internal. 300 IN CNAME web-1.fleet.internal.",
        "_ldap._tcp.fleet.internal. 300 IN SRV 0 5 389 legacy.fleet.internal.",
        "note.fleet.internal. 300 IN TXT \"two words\" \"semi;colon\"",
        "db.fleet.internal. 300 IN A 10.30.0.9",
    ] {
        assert!(want.contains(record), "{record} not in {want:#?}");
    }
    assert!(
        !want
            .iter()
            .any(|r| r.starts_with("db.fleet.internal. ") && r.contains(" TXT ")),
        "the instance's TXT at an overridden name: {want:#?}"
    );
    for s in &secondaries {
        s.wait_for_serial(first, 30.0);
        assert_eq!(s.zone(), want, "{:?} serves another zone", s.kind);
    }

    // the file changes: apex, a CNAME's target, a record gone, one new;
    // SIGHUP, and each follows by IXFR
    std::fs::write(
        &statics,
        first_file
            .replace("v=spf1 -all", "v=spf1 mx -all")
            .replace("www CNAME web-1", "www CNAME api")
            .replace("lb CNAME lb-1.elb.example.com.\n", "")
            + "new A 10.30.0.77\n",
    )
    .unwrap();
    d.signal("HUP");
    let next = serial_after(&d, first);
    let want = zone_of(&d);
    assert!(want.contains("www.fleet.internal. 300 IN CNAME api.fleet.internal."));
    assert!(want.contains("fleet.internal. 300 IN TXT \"v=spf1 mx -all\""));
    assert!(!want.iter().any(|r| r.starts_with("lb.")), "{want:#?}");
    for s in &secondaries {
        s.wait_for_serial(next, 10.0);
        assert_eq!(s.zone(), want, "{:?} after the change", s.kind);
    }
    let knot = &secondaries[1];
    assert!(
        knot.log().contains("IXFR, incoming") && !knot.log().contains("fallback to AXFR"),
        "Knot took the change as an IXFR:\n{}",
        knot.log()
    );
}

/// An AXFR or IXFR query over TCP or UDP, unsigned.
fn transfer_query(qtype: RecordType, client_serial: Option<u32>) -> Vec<u8> {
    let apex = Name::from_ascii("fleet.internal.").unwrap();
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(apex.clone(), qtype));
    if let Some(serial) = client_serial {
        let soa = SOA::new(apex.clone(), apex.clone(), serial, 0, 0, 0, 0);
        m.add_authority(Record::from_rdata(apex, 0, RData::SOA(soa)));
    }
    m.to_vec().unwrap()
}

fn rcode(reply: &[u8]) -> ResponseCode {
    strict_parse(reply).metadata.response_code
}

/// `kdig` with `args` against `server` (TCP for transfers on its own):
/// what it printed on stdout and stderr.
fn kdig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=5", "+retry=0"])
        .args(args)
        .output()
        .expect("kdig is installed (scripts/test installs knot-dnsutils)");
    // kdig reports an error rcode of a transfer on stderr
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn transfers_are_refused_unless_the_source_and_the_key_match() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    write_inventory(&inventory, &fleet(&["web-1", "web-2"]));
    // 127.0.0.1 must sign; 127.0.0.2 may not transfer at all
    let config = format!(
        "[[tsig_keys]]\nname = \"xfr-key\"\nsecret = \"{KEY_SECRET}\"\n\
         [[tsig_keys]]\nname = \"other-key\"\nalgorithm = \"hmac-sha512\"\nsecret = \"{KEY_SECRET}\"\n\
         [transfer]\nallow = [{{ from = \"127.0.0.1/32\", key = \"xfr-key\" }}]\n"
    );
    std::fs::write(dir.path().join("fleetdns.toml"), config).unwrap();
    let d = Daemon::start(&[
        "--config",
        dir.path().join("fleetdns.toml").to_str().unwrap(),
        "--source",
        &file_source(&inventory),
    ]);

    // signed with the key from inside the network: the zone
    let good = kdig(d.tcp, &["-y", DIG_KEY, "fleet.internal", "AXFR"]);
    assert!(good.contains("web-1.fleet.internal."), "{good}");
    assert!(!good.contains("failed"), "{good}");
    // unsigned: REFUSED
    let reply = tcp_raw(d.tcp, &transfer_query(RecordType::AXFR, None)).expect("a reply");
    assert_eq!(rcode(&reply), ResponseCode::Refused);
    // signed with another known key: REFUSED (the entry names xfr-key)
    let other = format!("hmac-sha512:other-key:{KEY_SECRET}");
    let out = kdig(d.tcp, &["-y", &other, "fleet.internal", "AXFR"]);
    assert!(out.contains("REFUSED"), "{out}");
    // a wrong secret: NOTAUTH with BADSIG; an unknown key: BADKEY
    let wrong = "hmac-sha256:xfr-key:AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let out = kdig(d.tcp, &["-y", wrong, "fleet.internal", "AXFR"]);
    assert!(out.contains("BADSIG"), "{out}");
    let unknown = format!("hmac-sha256:nobody:{KEY_SECRET}");
    let out = kdig(d.tcp, &["-y", &unknown, "fleet.internal", "SOA"]);
    assert!(out.contains("BADKEY"), "{out}");
    // signed, from outside the network (127.0.0.2): REFUSED, signed reply
    let out = Command::new("dig")
        .args(["-b", "127.0.0.2", &format!("@{}", d.tcp.ip())])
        .args(["-p", &d.tcp.port().to_string(), "+time=5", "+tries=1"])
        .args(["-y", DIG_KEY, "fleet.internal", "AXFR"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("Transfer failed") || out.contains("REFUSED"),
        "{out}"
    );
    assert!(!out.contains("web-1.fleet.internal."), "{out}");
    // the same for a signed SOA query from there (a secondary's refresh check)
    let out = kdig(
        d.udp,
        &["-b", "127.0.0.2", "-y", DIG_KEY, "fleet.internal", "SOA"],
    );
    assert!(out.contains("REFUSED"), "{out}");
    // signed SOA from inside: answered and signed (kdig checks the MAC)
    let out = kdig(d.udp, &["-y", DIG_KEY, "fleet.internal", "SOA"]);
    assert!(out.contains("NOERROR") && out.contains("TSIG"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");

    // AXFR over UDP: FORMERR, never part of the zone
    let reply = udp_raw(d.udp, &transfer_query(RecordType::AXFR, None)).expect("a reply");
    assert_eq!(rcode(&reply), ResponseCode::FormErr);
    assert!(strict_parse(&reply).answers.is_empty());
    // IXFR without an SOA in the authority section: FORMERR
    let mut raw = transfer_query(RecordType::IXFR, None);
    sign_for_test(&mut raw);
    let reply = tcp_raw(d.tcp, &raw).expect("a reply");
    assert_eq!(rcode(&reply), ResponseCode::FormErr);
    // IXFR over UDP, signed, from an old serial: a single SOA
    let out = kdig(
        d.udp,
        &["-y", DIG_KEY, "+notcp", "fleet.internal", "IXFR=1"],
    );
    assert_eq!(out.matches("\tSOA\t").count(), 1, "{out}");

    // and a malformed TSIG (cut short) is FORMERR, never a crash
    let mut cut = transfer_query(RecordType::SOA, None);
    sign_for_test(&mut cut);
    cut.truncate(cut.len() - 5);
    let reply = udp_raw(d.udp, &cut).expect("a reply");
    assert_eq!(rcode(&reply), ResponseCode::FormErr);
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.9.0.2"]);
}

/// Signs `message` with the test key, as fleetdns's own NOTIFY does (the
/// code under test verifies it; kdig checked the same code's replies).
fn sign_for_test(message: &mut Vec<u8>) {
    let key = fleetdns::tsig::Key::new(
        "xfr-key",
        fleetdns::tsig::Algorithm::HmacSha256,
        fleetdns::tsig::Secret::from_base64(KEY_SECRET).unwrap(),
    )
    .unwrap();
    fleetdns::tsig::sign_request(message, &key, fleetdns::tsig::now());
}

#[test]
fn a_100000_instance_zone_transfers_whole_and_a_stalled_reader_blocks_nothing() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    let names: Vec<String> = (0..100_000).map(|i| format!("host-{i}")).collect();
    let instances: Vec<Fake> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut f = Fake::running(i as u32 + 1, Some(n));
            f.ipv4 = vec![format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)];
            f
        })
        .collect();
    write_inventory(&inventory, &instances);
    let port = Secondary::port();
    let config = primary_config(dir.path(), &[port], "[tcp]\nidle_timeout_secs = 2");
    // Reading 100,000 instances from JSON in a debug build, beside the
    // other tests on two cores: give it time.
    let d = Daemon::spawn(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
            "--source",
            &file_source(&inventory),
        ],
        &[],
    );
    d.wait_for_log("zone is servable", 240);
    let serial = serial(&d);

    // dig gets it all: SOA, NS, and per instance A and TXT at its name and
    // at its instance-id name, then the SOA again
    let started = Instant::now();
    let out = dig(
        d.tcp,
        &["+time=60", "-y", DIG_KEY, "fleet.internal", "AXFR"],
    );
    let took = started.elapsed();
    let records = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty() && !l.contains("TSIG"))
        .count();
    assert_eq!(
        records,
        2 + 1 + 100_000 * 4,
        "{}",
        &out[out.len().saturating_sub(500)..]
    );
    assert!(
        out.contains("XFR size: 400003 records"),
        "{}",
        &out[out.len() - 300..]
    );
    eprintln!("AXFR of 100,000 instances by dig: {took:?}");

    // a secondary (Knot) takes it whole too
    let knot = Secondary::start(Kind::Knot, port, d.tcp.port());
    knot.wait_for_serial(serial, 120.0);
    assert_eq!(knot.zone().len(), zone_of(&d).len());

    // 2% of the instances move: a difference of 8,000 records (far over
    // 64 KiB), which Knot applies as an IXFR without falling back
    let moved: Vec<Fake> = instances
        .iter()
        .enumerate()
        .map(|(i, f)| Fake {
            id: f.id.clone(),
            name: f.name,
            ipv4: if i % 50 == 0 {
                vec![format!("10.200.{}.{}", (i >> 8) & 255, i & 255)]
            } else {
                f.ipv4.clone()
            },
            state: f.state,
        })
        .collect();
    let (next, _) = change(&d, &inventory, &moved);
    knot.wait_for_serial(next, 120.0);
    let want = zone_of(&d);
    assert!(want
        .iter()
        .any(|r| r.contains("host-50.fleet.internal. 30 IN A 10.200.0.50")));
    assert_eq!(knot.zone(), want);
    assert!(!knot.log().contains("fallback to AXFR"), "{}", knot.log());
    assert!(d.log().contains("kind=\"ixfr\""), "{}", d.log());

    // a client that asks for the zone and stops reading: other queries
    // are answered meanwhile, and the connection is dropped in bounded time
    let mut stalled = TcpStream::connect(d.tcp).unwrap();
    let mut request = transfer_query(RecordType::AXFR, None);
    sign_for_test(&mut request);
    let mut framed = (request.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    stalled.write_all(&framed).unwrap();
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_secs(1) {
        assert_eq!(short(d.udp, &["host-7.fleet.internal"]), ["10.0.0.7"]);
        assert_eq!(
            short(d.tcp, &["+tcp", "host-70001.fleet.internal"]),
            ["10.1.17.113"]
        );
    }
    d.wait_for_log("transfer abandoned", 15);
    drop(stalled);
}

#[test]
fn reverse_zones_are_authoritative_and_replicated_to_nsd_knot_and_bind() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    // addresses 10.9.0.2 .. 10.9.0.4
    let mut names = vec!["web-1", "web-2", "db"];
    write_inventory(&inventory, &fleet(&names));
    let ports: Vec<u16> = Kind::ALL.iter().map(|_| Secondary::port()).collect();
    let d = primary(
        dir.path(),
        &inventory,
        &ports,
        "reverse_zones = [\"9.10.in-addr.arpa\"]",
    );
    let reverse = "9.10.in-addr.arpa";

    // answers: PTR for a known address, NXDOMAIN for an unknown one in the
    // zone (not forwarded), NODATA above known addresses, SOA at the apex
    let out = d.dig(&["-x", "10.9.0.2"]);
    assert!(
        out.contains("flags: qr aa") && out.contains("PTR\tweb-1.fleet.internal."),
        "{out}"
    );
    let out = d.dig(&["-x", "10.9.200.200"]);
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("flags: qr aa"),
        "{out}"
    );
    assert!(out.contains("9.10.in-addr.arpa.\t10\tIN\tSOA"), "{out}");
    let out = d.dig(&["0.9.10.in-addr.arpa", "PTR"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );
    let soa = d.dig(&["+short", reverse, "SOA"]);
    assert_eq!(
        soa.split_whitespace().nth(2).map(str::to_string),
        Some(serial(&d).to_string())
    );

    // the reverse zone transfers: SOA, NS, one PTR per address, SOA
    let zone = named_zone_of(&d, reverse);
    assert_eq!(
        zone.iter().filter(|r| r.contains(" PTR ")).count(),
        3,
        "{zone:?}"
    );
    assert!(
        zone.contains("2.0.9.10.in-addr.arpa. 30 IN PTR web-1.fleet.internal."),
        "{zone:?}"
    );

    // all three secondaries take both zones, and follow a change in both
    let secondaries: Vec<Secondary> = Kind::ALL
        .iter()
        .zip(&ports)
        .map(|(kind, port)| Secondary::start_with_zones(*kind, *port, d.tcp.port(), &[reverse]))
        .collect();
    let first = serial(&d);
    for s in &secondaries {
        s.wait_for_serial_of(reverse, first, 30.0);
        assert_eq!(s.zone_named(reverse), zone, "{:?}", s.kind);
    }
    names.push("cache");
    let (next, _) = change(&d, &inventory, &fleet(&names));
    let zone = named_zone_of(&d, reverse);
    assert!(
        zone.iter()
            .any(|r| r.ends_with("PTR cache.fleet.internal.")),
        "{zone:?}"
    );
    for s in &secondaries {
        s.wait_for_serial_of(reverse, next, 10.0);
        assert_eq!(s.zone_named(reverse), zone, "{:?} after the change", s.kind);
        s.wait_for_serial(next, 10.0);
    }
}

#[test]
fn a_notify_target_that_never_answers_costs_five_tries_and_one_log_line() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    write_inventory(&inventory, &fleet(&["web-1"]));
    // a UDP socket that reads nothing: NOTIFYs go unanswered
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let d = primary(
        dir.path(),
        &inventory,
        &[port],
        "metrics_listen = \"127.0.0.1:0\"",
    );
    // answers go on meanwhile
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.9.0.2"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    d.wait_for_log("NOTIFY failed", 45);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(40), "{took:?}");
    let log = d.log();
    let line = log.lines().find(|l| l.contains("NOTIFY failed")).unwrap();
    assert!(
        line.contains(&format!("no answer from 127.0.0.1:{port} after 5 tries")),
        "{line}"
    );
    assert_eq!(log.matches("NOTIFY failed").count(), 1, "{log}");
    let target = format!("target=\"127.0.0.1:{port}\"");
    assert_eq!(d.metric("fleetdns_notify_sent_total", &[&target]), 5.0);
    assert_eq!(d.metric("fleetdns_notify_failed_total", &[&target]), 1.0);
    // five datagrams reached the socket, each the same signed NOTIFY
    silent
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let mut seen = Vec::new();
    while let Ok(len) = silent.recv(&mut buf) {
        seen.push(strict_parse(&buf[..len]));
    }
    assert_eq!(seen.len(), 5);
    for m in &seen {
        assert_eq!(m.metadata.op_code, OpCode::Notify);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1);
        // hickory-proto without a DNSSEC feature leaves the TSIG last in
        // the additional section
        let tsig = m.signature.is_some()
            || m.additionals.last().map(|r| r.record_type()) == Some(RecordType::TSIG);
        assert!(tsig, "signed with the target's key: {m:?}");
    }
}

/// A NOTIFY leaves from the address fleetdns listens on, the one the
/// secondaries know as the primary's and check NOTIFY against, not from
/// whichever address the route back prefers (here 127.0.0.1).
#[test]
fn a_notify_leaves_from_the_listen_address() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    write_inventory(&inventory, &fleet(&["web-1"]));
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let config = primary_config(dir.path(), &[port], "");
    let _d = Daemon::start_raw(&[
        "serve",
        "--listen",
        "127.0.0.7:0",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &file_source(&inventory),
    ]);
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let (len, from) = receiver.recv_from(&mut buf).expect("a NOTIFY");
    assert_eq!(strict_parse(&buf[..len]).metadata.op_code, OpCode::Notify);
    assert_eq!(from.ip().to_string(), "127.0.0.7");
}

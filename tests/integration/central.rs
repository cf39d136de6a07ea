//! A central server on network addresses: replies from the address asked
//! on a wildcard listener (IP_PKTINFO, IPV6_PKTINFO), and response rate
//! limiting (`[rrl]`) under floods from one source and from 100,000.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::deploy::Netns;
use crate::harness::*;

/// Sends `message` from `client` to `to` and returns the reply and the
/// address it came from; `None` when nothing came within 2 s.
fn exchange_from(
    client: &UdpSocket,
    to: SocketAddr,
    message: &[u8],
) -> Option<(Vec<u8>, SocketAddr)> {
    client.send_to(message, to).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, from) = client.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

#[test]
fn on_a_wildcard_address_each_udp_reply_leaves_from_the_address_asked() {
    let d = Daemon::start_raw(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--source",
        &file_source(&example_fleet()),
    ]);
    assert!(d.udp.ip().is_unspecified(), "{}", d.udp);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // The fast path (A), the general path (TXT) and a refusal (a name
    // outside the zone, no upstreams), to three of loopback's addresses;
    // without IP_PKTINFO every reply would come from 127.0.0.1.
    for target in ["127.0.0.5", "127.1.2.3", "127.0.0.1"] {
        let to = SocketAddr::new(target.parse().unwrap(), d.udp.port());
        for (name, qtype) in [
            ("web-1.fleet.internal.", RecordType::A),
            ("web-1.fleet.internal.", RecordType::TXT),
            ("www.example.com.", RecordType::A),
        ] {
            let q = query(name, qtype, Some(1232));
            let (raw, from) = exchange_from(&client, to, &q.to_vec().unwrap())
                .unwrap_or_else(|| panic!("no reply to {name} {qtype} at {to}"));
            assert_eq!(from, to, "the reply to {name} {qtype} came from {from}");
            let reply = strict_parse(&raw);
            assert_eq!(reply.metadata.id, q.metadata.id);
            if qtype == RecordType::A && name.ends_with("fleet.internal.") {
                assert_eq!(a_records(&reply), ["10.20.1.11"]);
            }
        }
    }
}

/// IPv6 (`[::]`) and an interface address besides loopback, in a network
/// namespace of the test's own, asked with `dig`, which drops a reply from
/// any address but the one it asked.
#[test]
fn in_a_namespace_with_several_addresses_dig_gets_its_answer_from_each() {
    let Some(netns) =
        Netns::create("in_a_namespace_with_several_addresses_dig_gets_its_answer_from_each")
    else {
        return;
    };
    for args in [
        &["addr", "add", "fd00:5::5/128", "dev", "lo", "nodad"][..],
        &["addr", "add", "fd00:5::6/128", "dev", "lo", "nodad"],
    ] {
        let out = netns.ip(args);
        assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
    }
    let dir = tempdir();
    let config = dir.path().join("fleetdns.toml");
    std::fs::write(
        &config,
        "[access]\nallow_query = [\"0.0.0.0/0\", \"::/0\"]\n",
    )
    .unwrap();
    let mut args = vec!["serve", "--config", config.to_str().unwrap()];
    args.extend(["--listen", "0.0.0.0:5353", "--listen", "[::]:5353"]);
    let source = file_source(&example_fleet());
    args.extend(["--source", &source]);
    let d = Daemon::spawn_wrapped(&netns.wrapper(), &args, &[]);
    d.wait_for_log("zone is servable", 30);
    for server in ["127.0.0.5", "192.0.2.1", "::1", "fd00:5::5", "fd00:5::6"] {
        for qtype in ["A", "TXT"] {
            let out = netns.exec(&[
                "dig",
                &format!("@{server}"),
                "-p",
                "5353",
                "+time=2",
                "+tries=1",
                qtype,
                "web-1.fleet.internal",
            ]);
            let text = stdout(&out);
            assert!(
                text.contains("status: NOERROR")
                    && text.contains(&format!("SERVER: {server}#5353")),
                "{qtype} at {server}:\n{text}{}",
                stderr(&out)
            );
        }
    }
}

/// What came back for a flood of queries.
#[derive(Debug, Default)]
struct Flood {
    /// Replies with an answer.
    full: usize,
    /// Truncated replies without records (slipped).
    slipped: usize,
    /// Anything else (should be nothing).
    other: usize,
    /// How long the sending took.
    took: Duration,
}

/// Sends `per_second` queries a second for `secs` seconds from `from`
/// to `server`, alternating an A query (the fast path) and a TXT query
/// (the general path) for web-1, and sorts the replies.
fn flood(server: SocketAddr, from: &str, per_second: u32, secs: u32) -> Flood {
    let socket = UdpSocket::bind((from, 0)).unwrap();
    // Room for every reply of a second, so a reader slowed by a busy
    // machine loses none (the counts are compared with the metrics).
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    let reader = socket.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let collect = std::thread::spawn(move || {
        let mut seen = Flood::default();
        let mut buf = vec![0u8; 65535];
        while let Ok(n) = reader.recv(&mut buf) {
            let reply = strict_parse(&buf[..n]);
            if reply.metadata.truncation && reply.answers.is_empty() {
                assert_eq!(reply.queries.len(), 1, "the question is kept");
                assert!(reply.edns.is_some(), "the OPT is kept");
                seen.slipped += 1;
            } else if !reply.answers.is_empty() {
                seen.full += 1;
            } else {
                seen.other += 1;
            }
        }
        seen
    });
    let queries = [
        query("web-1.fleet.internal.", RecordType::A, Some(1232)),
        query("web-1.fleet.internal.", RecordType::TXT, Some(1232)),
    ]
    .map(|q| q.to_vec().unwrap());
    // In steps of 10 ms, so the rate holds within each second.
    let start = Instant::now();
    let total = per_second * secs;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(f64::from(i / 10 * 10) / f64::from(per_second));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket.send_to(&queries[i as usize % 2], server).unwrap();
    }
    let took = start.elapsed();
    Flood {
        took,
        ..collect.join().unwrap()
    }
}

#[test]
fn a_flood_from_one_network_gets_its_rate_in_full_and_every_second_reply_slipped() {
    let dir = tempdir();
    let d = start_with_config(
        dir.path(),
        "metrics_listen = \"127.0.0.1:0\"\n[rrl]\nresponses_per_second = 20\nslip = 2\nwindow_secs = 1\nexempt = [\"127.0.9.0/24\"]\n",
    );
    let (secs, rate) = (3, 1000);
    let flooder = std::thread::spawn({
        let server = d.udp;
        move || flood(server, "127.0.0.2", rate, secs)
    });
    // Meanwhile: another network, a TCP client from the flooded one, and
    // an exempt network are all answered in full.
    std::thread::sleep(Duration::from_millis(500));
    for (from, args) in [
        ("127.0.1.3", vec!["web-1.fleet.internal"]),
        ("127.0.0.2", vec!["+tcp", "web-1.fleet.internal"]),
        ("127.0.9.9", vec!["web-1.fleet.internal"]),
    ] {
        for _ in 0..30 {
            let out = Command::new("dig")
                .args(["-b", from, &format!("@{}", d.udp.ip())])
                .args([
                    "-p",
                    &d.udp.port().to_string(),
                    "+time=2",
                    "+tries=1",
                    "+short",
                ])
                .args(&args)
                .output()
                .unwrap();
            assert_eq!(stdout(&out).trim(), "10.20.1.11", "{from} {args:?}");
        }
    }
    let seen = flooder.join().unwrap();
    eprintln!("flood of {} queries: {seen:?}", secs * rate);
    let sent = (secs * rate) as usize;
    // Two answers (A and TXT) at 20 a second of the limiter's clock, for
    // each second the flood touched (3 s long, so 4 seconds, or more if
    // the sender was slowed); the rest limited, every second one slipped.
    let seconds_touched = seen.took.as_secs() as usize + 2;
    assert!(
        seen.full >= 2 * 20 * 3 && seen.full <= 2 * 20 * seconds_touched,
        "{seen:?}"
    );
    assert_eq!(seen.other, 0, "{seen:?}");
    let limited = sent - seen.full;
    assert!(
        seen.slipped.abs_diff(limited / 2) <= 4,
        "{limited} limited, {seen:?}"
    );
    assert_eq!(
        d.metric("fleetdns_rrl_limited_total", &["action=\"slipped\""]) as usize,
        seen.slipped
    );
    assert_eq!(
        d.metric("fleetdns_rrl_limited_total", &["action=\"dropped\""]) as usize,
        limited - seen.slipped
    );
    d.wait_for_log("rate limiting UDP replies", 5);
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 100,000 sources, each its own network (prefix /32), one query each:
/// the buckets are a fixed table, so memory stays where it was, and
/// another client is still answered.
#[test]
fn a_hundred_thousand_sources_do_not_grow_memory() {
    let dir = tempdir();
    let d = start_with_config(
        dir.path(),
        "metrics_listen = \"127.0.0.1:0\"\n[rrl]\nresponses_per_second = 1000\nipv4_prefix = 32\ntable_size = 1024\n",
    );
    let q = query("web-1.fleet.internal.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    let warm = |d: &Daemon| {
        // touch the fast path and the metrics once before measuring
        for _ in 0..100 {
            let _ = udp_raw(d.udp, &q);
        }
        let _ = d.metric("fleetdns_rrl_limited_total", &[]);
    };
    warm(&d);
    let before = rss_kib(d.child.id());
    // Any 127.x.y.z is a local address; a socket bound to each is a
    // distinct source. Replies go to closed ports and are lost.
    let mut x = 0x2545_f491u32;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let source = std::net::Ipv4Addr::from(0x7f00_0000 | (x & 0x00ff_ffff) | 1);
        let Ok(socket) = UdpSocket::bind((source, 0)) else {
            continue;
        };
        let _ = socket.send_to(&q, d.udp);
    }
    std::thread::sleep(Duration::from_millis(500));
    warm(&d);
    let after = rss_kib(d.child.id());
    eprintln!("RSS before the 100,000 sources {before} KiB, after {after} KiB");
    assert!(
        after <= before + 2048,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let reply = strict_parse(&udp_raw(d.udp, &q).expect("still answered"));
    assert_eq!(a_records(&reply), ["10.20.1.11"]);
}

/// A query with an edns-tcp-keepalive option holding `value`.
fn with_keepalive(name: &str, value: &[u8]) -> hickory_proto::op::Message {
    use hickory_proto::rr::rdata::opt::EdnsOption;
    let mut q = query(name, RecordType::A, Some(1232));
    if let Some(edns) = q.edns.as_mut() {
        edns.options_mut()
            .insert(EdnsOption::Unknown(11, value.to_vec()));
    }
    q
}

/// The edns-tcp-keepalive option of a reply, if it has one.
fn keepalive_of(reply: &hickory_proto::op::Message) -> Option<Vec<u8>> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match reply.edns.as_ref()?.options().get(EdnsCode::Keepalive)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        other => panic!("keepalive decoded as {other:?}"),
    }
}

#[test]
fn tcp_clients_that_ask_are_told_the_idle_timeout_in_edns_tcp_keepalive() {
    let dir = tempdir();
    let d = start_with_config(dir.path(), "[tcp]\nidle_timeout_secs = 7\n");
    // TCP, asked: 7 s in 100 ms units
    let (_, reply) = tcp_query(d.tcp, &with_keepalive("web-1.fleet.internal.", &[]));
    assert_eq!(a_records(&reply), ["10.20.1.11"]);
    assert_eq!(keepalive_of(&reply), Some(70u16.to_be_bytes().to_vec()));
    // not asked, or over UDP: none (RFC 7828 section 3.3.2)
    let (_, reply) = tcp_query(
        d.tcp,
        &query("web-1.fleet.internal.", RecordType::A, Some(1232)),
    );
    assert_eq!(keepalive_of(&reply), None);
    let (_, reply) = udp_query(d.udp, &with_keepalive("web-1.fleet.internal.", &[]));
    assert_eq!(a_records(&reply), ["10.20.1.11"]);
    assert_eq!(keepalive_of(&reply), None);
    // a client sending a TIMEOUT of its own over TCP: FORMERR
    let (_, reply) = tcp_query(d.tcp, &with_keepalive("web-1.fleet.internal.", &[0, 50]));
    assert_eq!(
        reply.metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
    // as dig shows it
    let text = dig(d.tcp, &["+tcp", "+keepalive", "web-1.fleet.internal"]);
    assert!(text.contains("; TCP KEEPALIVE: 7.0 secs"), "{text}");
}

//! Size limits, truncation and TCP limits.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::harness::*;

/// 100 instances named `big` (about 1,600 bytes of A records) and 40 named
/// `mid` (about 650 bytes: over 512, under 1232).
fn big_fleet(dir: &std::path::Path) -> Daemon {
    let mut fleet: Vec<Fake> = (0..100).map(|n| Fake::running(n, Some("big"))).collect();
    fleet.extend((100..140).map(|n| Fake::running(n, Some("mid"))));
    let path = dir.join("fleet.json");
    write_inventory(&path, &fleet);
    Daemon::start(&["--source", &file_source(&path)])
}

#[test]
fn udp_replies_never_exceed_1232_bytes_and_truncate_cleanly() {
    let dir = tempdir();
    let d = big_fleet(dir.path());
    for offered in [1232u16, 4096, 65535] {
        let q = query("big.fleet.internal.", RecordType::A, Some(offered));
        let (raw, m) = udp_query(d.udp, &q);
        assert!(
            raw.len() <= 1232,
            "{} bytes for an offer of {offered}",
            raw.len()
        );
        assert!(m.metadata.truncation, "TC expected");
        // RFC 6891 section 7: header + question + OPT, nothing else
        assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        let question_len = q.to_vec().unwrap().len() - 12 - 11; // minus header and the query's OPT
        assert_eq!(raw.len(), 12 + question_len + 11);
        assert!(m.metadata.authoritative);
    }
    // the same query over TCP gets every address
    let (_, m) = tcp_query(
        d.tcp,
        &query("big.fleet.internal.", RecordType::A, Some(4096)),
    );
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}

#[test]
fn without_edns_udp_replies_stop_at_512_bytes() {
    let dir = tempdir();
    let d = big_fleet(dir.path());
    let (raw, m) = udp_query(d.udp, &query("mid.fleet.internal.", RecordType::A, None));
    assert!(raw.len() <= 512);
    assert!(m.metadata.truncation);
    assert!(m.edns.is_none(), "no OPT for a client that sent none");
    // with EDNS it fits
    let (raw, m) = udp_query(
        d.udp,
        &query("mid.fleet.internal.", RecordType::A, Some(1232)),
    );
    assert!(raw.len() > 512 && raw.len() <= 1232);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 40);
}

#[test]
fn dig_retries_truncated_answers_over_tcp() {
    let dir = tempdir();
    let d = big_fleet(dir.path());
    // dig's default: EDNS 1232 over UDP, then TCP when truncated
    let out = d.dig(&["big.fleet.internal"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 100"), "{out}");
    // no retry asked: the TC flag is visible
    let out = d.dig(&["+ignore", "big.fleet.internal"]);
    assert!(out.contains("flags: qr aa tc"), "{out}");
}

#[test]
fn tcp_connections_beyond_the_limit_are_closed() {
    let dir = tempdir();
    let d = start_with_config(
        dir.path(),
        "[tcp]\nmax_connections = 2\nidle_timeout_secs = 30\n",
    );
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(d.tcp).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(d.tcp).unwrap();
    assert!(!answered(&mut third), "third connection should be closed");
    // freeing a slot lets a new connection in
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let (_, m) = tcp_query(d.tcp, &query("web-1.fleet.internal.", RecordType::A, None));
    assert_eq!(m.answers.len(), 1);
}

/// A TCP connection to `server` from the local address `from`.
fn connect_from(from: &str, server: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&server.into()).unwrap();
    socket.into()
}

/// An A query for `name` as TCP carries it: its two-byte length first.
fn framed_query(name: &str) -> Vec<u8> {
    let q = query(name, RecordType::A, None).to_vec().unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

/// Whether `stream` gets an answer to a query (false: closed by fleetdns).
fn answered(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = stream.write_all(&framed_query("web-1.fleet.internal."));
    read_framed(stream).is_some()
}

#[test]
fn one_source_cannot_take_every_tcp_slot() {
    let dir = tempdir();
    let d = start_with_config(
        dir.path(),
        "[tcp]\nmax_connections = 10\nmax_connections_per_source = 2\nidle_timeout_secs = 30\n",
    );
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect_from("127.0.0.2", d.tcp)).collect();
    for stream in &mut held {
        assert!(answered(stream));
    }
    std::thread::sleep(Duration::from_millis(200));
    // a third from the same source is closed; another source is served
    let mut third = connect_from("127.0.0.2", d.tcp);
    assert!(!answered(&mut third), "a third connection from 127.0.0.2");
    let mut other = connect_from("127.0.0.3", d.tcp);
    assert!(answered(&mut other), "127.0.0.3 is its own source");
    // a slot given back is free again
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = connect_from("127.0.0.2", d.tcp);
    assert!(answered(&mut again));
}

#[test]
fn idle_tcp_connections_are_closed_and_pipelined_queries_answered() {
    let dir = tempdir();
    let d = start_with_config(dir.path(), "[tcp]\nidle_timeout_secs = 1\n");
    let mut stream = TcpStream::connect(d.tcp).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // two queries in one write: both answered in order
    let framed = [
        framed_query("web-1.fleet.internal."),
        framed_query("web-2.fleet.internal."),
    ]
    .concat();
    stream.write_all(&framed).unwrap();
    let a = strict_parse(&read_framed(&mut stream).unwrap());
    let b = strict_parse(&read_framed(&mut stream).unwrap());
    assert_eq!(a.answers[0].name.to_ascii(), "web-1.fleet.internal.");
    assert_eq!(b.answers[0].name.to_ascii(), "web-2.fleet.internal.");
    // then silence: closed after about a second
    let start = Instant::now();
    assert_eq!(read_framed(&mut stream), None);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

/// RFC 3225 section 3: the reply copies the query's DO bit, on every path
/// that writes an OPT: the UDP fast path (an answer and an NXDOMAIN), the
/// general path (TXT, over UDP and TCP) and a truncated reply. Found with
/// kdig as a validating resolver would ask; Knot and NSD copy it.
#[test]
fn the_do_bit_of_the_query_is_copied_into_the_reply() {
    let dir = tempdir();
    let d = big_fleet(dir.path());
    let cases: [(&str, RecordType, bool); 5] = [
        ("mid.fleet.internal.", RecordType::A, false),
        ("nope.fleet.internal.", RecordType::A, false),
        (
            "i-00000000000000000.fleet.internal.",
            RecordType::TXT,
            false,
        ),
        ("i-00000000000000000.fleet.internal.", RecordType::TXT, true),
        ("big.fleet.internal.", RecordType::A, false),
    ];
    for (name, qtype, tcp) in cases {
        for dnssec_ok in [true, false] {
            let mut q = query(name, qtype, Some(1232));
            if let Some(edns) = q.edns.as_mut() {
                edns.set_dnssec_ok(dnssec_ok);
            }
            let (_, m) = if tcp {
                tcp_query(d.tcp, &q)
            } else {
                udp_query(d.udp, &q)
            };
            let edns = m.edns.as_ref().expect("an OPT in the reply");
            assert_eq!(
                edns.flags().dnssec_ok,
                dnssec_ok,
                "{name} {qtype} tcp={tcp} rcode={:?} tc={}",
                m.metadata.response_code,
                m.metadata.truncation
            );
        }
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Whether fleetdns closed `stream` (read gives EOF or a reset) within
/// `secs`, reading and dropping whatever it still sends.
fn closed_within(stream: &mut TcpStream, secs: u64) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sink = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Issue 18's hostile TCP clients: half a length prefix, a length of 0, a
/// length of 65,535, 200,000 pipelined queries never read, and idle
/// connections. Each is closed cleanly (or, for a length of 0, answered
/// nothing and left usable), other clients are answered meanwhile, and
/// memory stays bounded: each connection holds at most one message in and
/// 16 KiB of replies out, and the kernel's buffers, not fleetdns, hold what
/// a client does not read.
#[test]
fn hostile_tcp_clients_cost_bounded_memory_and_others_are_still_answered() {
    let dir = tempdir();
    let d = start_with_config(
        dir.path(),
        "[tcp]\nidle_timeout_secs = 2\nmax_connections = 128\nmax_connections_per_source = 40\n",
    );
    let pid = d.child.id();
    let mut probe = connect_from("127.0.0.9", d.tcp);
    assert!(answered(&mut probe));
    let before = rss_kib(pid);

    // half a length prefix, then silence: closed after the idle timeout
    let mut half = connect_from("127.0.0.2", d.tcp);
    half.write_all(&[0]).unwrap();
    // a length of 0: no reply, and the connection still answers
    let mut zero = connect_from("127.0.0.2", d.tcp);
    zero.write_all(&[0, 0]).unwrap();
    assert!(answered(&mut zero), "a query after an empty message");
    // a length of 65,535 (a message of zeros: FORMERR), then a query
    let mut large = connect_from("127.0.0.2", d.tcp);
    let mut message = vec![0xff, 0xff];
    message.extend(std::iter::repeat_n(0u8, 65_535));
    large.write_all(&message).unwrap();
    large
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let formerr = strict_parse(&read_framed(&mut large).expect("a reply to 65,535 bytes"));
    assert_eq!(
        formerr.metadata.response_code,
        hickory_proto::op::ResponseCode::FormErr
    );
    assert!(answered(&mut large), "a query after the largest message");
    // 40 connections, each stalled in the middle of a 65,535-byte message:
    // 40 buffers of one message each
    let stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = connect_from("127.0.0.3", d.tcp);
            let mut part = vec![0xff, 0xff];
            part.extend(std::iter::repeat_n(0u8, 60_000));
            s.write_all(&part).unwrap();
            s
        })
        .collect();
    // 200,000 pipelined queries from a thread that never reads: fleetdns
    // answers until its writes block, then closes the connection after the
    // idle timeout, which stops the writer
    let flood = connect_from("127.0.0.4", d.tcp);
    let writer = {
        let mut flood = flood.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk: Vec<u8> = framed_query("web-1.fleet.internal.").repeat(1000);
            let mut sent = 0;
            for _ in 0..200 {
                if flood.write_all(&chunk).is_err() {
                    break;
                }
                sent += 1000;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // meanwhile, others are answered at once, over TCP and UDP
    let started = Instant::now();
    let mut other = connect_from("127.0.0.5", d.tcp);
    assert!(answered(&mut other));
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let during = rss_kib(pid);

    // the flood's connection is closed, and the writer stopped short
    let sent = writer.join().unwrap();
    assert!(
        sent < 200_000,
        "all {sent} queries went in without a reader"
    );
    // the half prefix and the stalled messages: closed after the timeout
    assert!(closed_within(&mut half, 5), "half a length prefix");
    for mut s in stalled {
        assert!(closed_within(&mut s, 5), "a message stalled midway");
    }
    // an idle connection is closed too, and one that asked stays usable
    // until its own idle time
    let mut idle = connect_from("127.0.0.6", d.tcp);
    assert!(closed_within(&mut idle, 5), "an idle connection");
    let mut after = connect_from("127.0.0.7", d.tcp);
    assert!(answered(&mut after));
    drop(flood);

    // bounded: 40 stalled messages of 64 KiB (2.6 MB) and the flood's
    // buffers, with room for the allocator's slack, not the 9 MB the flood
    // sent or the replies it never read
    let grew = during.saturating_sub(before);
    println!("hostile TCP clients: RSS grew by {grew} KiB; the flood got {sent} queries in before it was closed");
    assert!(grew < 12 * 1024, "RSS grew by {grew} KiB while attacked");
}

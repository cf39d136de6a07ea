//! What a user sees with `dig` and a strict client against the demo fleet.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::harness::*;

fn demo() -> Daemon {
    Daemon::start(&["--source", &file_source(&example_fleet())])
}

#[test]
fn a_record_for_a_tag_name_over_udp_and_tcp() {
    let d = demo();
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
    assert_eq!(
        short(d.tcp, &["+tcp", "web-1.fleet.internal"]),
        ["10.20.1.11"]
    );
    let full = d.dig(&["web-1.fleet.internal"]);
    assert!(
        full.contains("flags: qr aa"),
        "authoritative answer expected:\n{full}"
    );
    assert!(
        full.contains("web-1.fleet.internal.\t30\tIN\tA\t10.20.1.11"),
        "{full}"
    );
}

#[test]
fn every_naming_rule_of_the_demo_fleet_answers() {
    let d = demo();
    let cases: &[(&str, &[&str])] = &[
        ("web-server-3", &["10.20.3.13"]),  // spaces and case
        ("worker-01", &["10.20.3.51"]),     // underscore
        ("batch-workers", &["10.20.1.52"]), // no Name tag: first security group
        ("cache", &["10.20.2.53"]),         // Name "---" falls through
        ("bastion", &["10.20.1.80"]),       // empty Name falls through
        ("n-code-b-ro", &["10.20.3.54"]),   // unicode
        ("evil-name-injected-127.0.0.1-localhost", &["10.20.1.55"]), // newline and '#'
        ("primary.db", &["10.20.1.41"]),    // a dot makes two labels
        ("multi-ip", &["10.20.3.31", "10.20.3.32", "10.20.4.33"]),
        ("i-0a15d9d0e0af13dbb", &["10.20.1.11"]), // instance-id name
    ];
    for (name, want) in cases {
        let got = short(d.udp, &[&format!("{name}.fleet.internal")]);
        assert_eq!(&got, want, "{name}");
    }
    // 70 characters cut to one 63-octet label
    let long: String = "analytics-abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789"
        .chars()
        .take(63)
        .collect();
    assert_eq!(
        short(d.udp, &[&format!("{long}.fleet.internal")]),
        ["10.20.2.56"]
    );
}

#[test]
fn duplicate_names_answer_with_all_addresses_in_a_stable_order() {
    let d = demo();
    let first = short(d.udp, &["api.fleet.internal"]);
    assert_eq!(first, ["10.20.1.21", "10.20.2.22"]);
    for _ in 0..5 {
        assert_eq!(short(d.udp, &["api.fleet.internal"]), first);
    }
}

#[test]
fn stopped_and_terminated_instances_are_not_served() {
    let d = demo();
    for name in ["old-web", "gone", "i-08a88d121ad4115e0"] {
        let out = d.dig(&[&format!("{name}.fleet.internal")]);
        assert!(out.contains("status: NXDOMAIN"), "{name}:\n{out}");
    }
}

#[test]
fn aaaa_for_ipv6_names() {
    let d = demo();
    assert_eq!(
        short(d.udp, &["AAAA", "web-1.fleet.internal"]),
        ["2600:1f18:abc:100::11"]
    );
    assert_eq!(
        short(d.udp, &["AAAA", "ipv6-host.fleet.internal"]),
        ["2600:1f18:abc:101::60", "2600:1f18:abc:101::61"]
    );
}

#[test]
fn aaaa_for_a_only_name_is_nodata_with_soa() {
    let d = demo();
    let (_, m) = udp_query(
        d.udp,
        &query("web-2.fleet.internal.", RecordType::AAAA, Some(1232)),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    let soa = &m.authorities[0];
    assert_eq!(soa.name.to_ascii(), "fleet.internal.");
    let RData::SOA(data) = &soa.data else {
        panic!("not an SOA: {soa:?}")
    };
    // RFC 2308: the negative TTL is min(SOA TTL, MINIMUM)
    assert_eq!(data.minimum, 10);
    assert_eq!(soa.ttl, 10);
}

#[test]
fn missing_name_is_nxdomain_with_soa() {
    let d = demo();
    let (_, m) = udp_query(
        d.udp,
        &query("no-such-host.fleet.internal.", RecordType::A, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    // below an existing name is missing too
    let out = d.dig(&["x.web-1.fleet.internal"]);
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("SOA"),
        "{out}"
    );
}

#[test]
fn empty_non_terminal_is_nodata_with_soa() {
    let d = demo();
    let (_, m) = udp_query(d.udp, &query("db.fleet.internal.", RecordType::A, None));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
}

#[test]
fn ptr_for_every_private_address_of_a_known_instance() {
    let d = demo();
    for (address, name) in [
        ("10.20.1.11", "web-1.fleet.internal."),
        ("10.20.3.32", "multi-ip.fleet.internal."), // secondary address
        ("10.20.4.33", "multi-ip.fleet.internal."), // second interface
        ("2600:1f18:abc:101::61", "ipv6-host.fleet.internal."),
        ("10.20.2.53", "cache.fleet.internal."),
    ] {
        assert_eq!(short(d.udp, &["-x", address]), [name], "{address}");
    }
    let out = d.dig(&["-x", "10.20.1.11"]);
    assert!(out.contains("flags: qr aa"), "{out}");
    // an address nobody has is not ours: REFUSED without upstreams
    let out = d.dig(&["-x", "10.99.99.99"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[test]
fn txt_shows_instance_ids_zone_type_and_rule() {
    let d = demo();
    let txt = short(d.udp, &["TXT", "api.fleet.internal"]);
    assert_eq!(
        txt,
        [
            "\"id=i-05d6c43325a676d7b\" \"az=us-east-1a\" \"type=m6i.large\" \"rule=tag:Name\"",
            "\"id=i-0f2de9682e9441cd7\" \"az=us-east-1b\" \"type=m6i.large\" \"rule=tag:Name\"",
        ]
    );
    let txt = short(d.udp, &["TXT", "cache.fleet.internal"]);
    assert!(txt[0].contains("\"rule=security-group\""), "{txt:?}");
    let txt = short(d.udp, &["TXT", "i-0a15d9d0e0af13dbb.fleet.internal"]);
    assert!(txt[0].contains("\"rule=instance-id\""), "{txt:?}");
}

#[test]
fn soa_and_ns_at_the_apex() {
    let d = demo();
    let soa = short(d.udp, &["SOA", "fleet.internal"]);
    assert_eq!(soa.len(), 1);
    let fields: Vec<&str> = soa[0].split(' ').collect();
    assert_eq!(fields[0], "localhost.");
    assert_eq!(fields[1], "hostmaster.fleet.internal.");
    assert!(
        fields[2].parse::<u32>().unwrap() > 1_700_000_000,
        "serial is a Unix time"
    );
    assert_eq!(fields[6], "10");
    assert_eq!(short(d.udp, &["NS", "fleet.internal"]), ["localhost."]);
    // other types at the apex: NODATA
    let out = d.dig(&["A", "fleet.internal"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );
}

#[test]
fn any_is_answered_minimally() {
    let d = demo();
    let (_, m) = udp_query(
        d.udp,
        &query("multi-ip.fleet.internal.", RecordType::ANY, Some(1232)),
    );
    assert_eq!(m.answers.len(), 3);
    assert!(m.answers.iter().all(|r| r.record_type() == RecordType::A));
    let (_, m) = udp_query(
        d.udp,
        &query("fleet.internal.", RecordType::ANY, Some(1232)),
    );
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
}

#[test]
fn case_insensitive_match_and_question_echoed_as_sent() {
    let d = demo();
    let q = query("WeB-1.FLEET.internal.", RecordType::A, None);
    let sent = q.to_vec().unwrap();
    for (raw, m) in [udp_query(d.udp, &q), tcp_query(d.tcp, &q)] {
        assert_eq!(m.answers.len(), 1);
        // the question section is the client's bytes, case and all
        assert_eq!(&raw[12..sent.len()], &sent[12..]);
        assert_eq!(m.queries[0].name().to_ascii(), "WeB-1.FLEET.internal.");
    }
}

#[test]
fn edns_is_echoed_with_our_size_and_absent_without() {
    let d = demo();
    let (_, m) = udp_query(
        d.udp,
        &query("web-1.fleet.internal.", RecordType::A, Some(4096)),
    );
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let (_, m) = udp_query(d.udp, &query("web-1.fleet.internal.", RecordType::A, None));
    assert!(m.edns.is_none());
}

#[test]
fn edns_version_1_gets_badvers() {
    let d = demo();
    let mut q = query("web-1.fleet.internal.", RecordType::A, Some(1232));
    q.edns.as_mut().unwrap().set_version(1);
    let (_, m) = udp_query(d.udp, &q);
    // BADVERS is 16: 1 in the OPT's extended bits, 0 in the header
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.edns.is_some());
    let out = d.dig(&["+edns=1", "+noednsnegotiation", "web-1.fleet.internal"]);
    assert!(out.contains("status: BADVERS"), "{out}");
}

#[test]
fn names_outside_the_zone_are_refused_without_upstreams() {
    let d = demo();
    let out = d.dig(&["example.com"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    let out = d.dig(&["fleet.internal.evil"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[test]
fn malformed_packets_get_formerr_or_nothing_and_the_server_keeps_answering() {
    let d = demo();
    // shorter than a header: no reply
    assert_eq!(udp_raw(d.udp, &[1, 2, 3]), None);
    // a header that promises a question that is not there: FORMERR, same id
    let bad = [
        0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x05, b'a',
    ];
    let reply = udp_raw(d.udp, &bad).expect("FORMERR reply");
    let m = strict_parse(&reply);
    assert_eq!(m.metadata.id, 0xabcd);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // a response message is never answered (no reflection loops)
    let mut response = query("web-1.fleet.internal.", RecordType::A, None);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    assert_eq!(udp_raw(d.udp, &response.to_vec().unwrap()), None);
    // two questions: FORMERR
    let mut two = query("web-1.fleet.internal.", RecordType::A, None);
    two.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("api.fleet.internal.").unwrap(),
        RecordType::A,
    ));
    let (_, m) = udp_query(d.udp, &two);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // random garbage of many sizes never kills it
    let mut seed: u32 = 12345;
    for len in 0..300 {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        let _ = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(&junk, d.udp);
    }
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
}

#[test]
fn a_burst_from_several_clients_gets_every_answer_to_its_sender() {
    // Queries sent without waiting queue up in the server's socket, which
    // answers them in batches (one sendmmsg per batch): each client must
    // still get exactly its own replies, whatever the mix of paths.
    let d = demo();
    let clients: Vec<std::net::UdpSocket> = (0..4)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let asked: &[(&str, RecordType, ResponseCode, &[&str])] = &[
        (
            "web-1.fleet.internal.",
            RecordType::A,
            ResponseCode::NoError,
            &["10.20.1.11"],
        ),
        (
            "nosuch.fleet.internal.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "web-1.fleet.internal.",
            RecordType::AAAA,
            ResponseCode::NoError,
            &[],
        ),
        // not on the fast path: answered by the handler, in between
        (
            "web-1.fleet.internal.",
            RecordType::TXT,
            ResponseCode::NoError,
            &[],
        ),
    ];
    let per_client = 50u16;
    for i in 0..per_client {
        for (c, client) in clients.iter().enumerate() {
            let (name, qtype, _, _) = asked[usize::from(i) % asked.len()];
            let mut m = query(name, qtype, None);
            m.metadata.id = i * 8 + c as u16;
            client.send_to(&m.to_vec().unwrap(), d.udp).unwrap();
        }
    }
    for (c, client) in clients.iter().enumerate() {
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = vec![0u8; 65535];
        while seen.len() < usize::from(per_client) {
            let n = client.recv(&mut buf).unwrap_or_else(|e| {
                panic!("client {c}: {} of {per_client} replies: {e}", seen.len())
            });
            let m = strict_parse(&buf[..n]);
            let id = m.metadata.id;
            assert_eq!(
                usize::from(id % 8),
                c,
                "client {c} got reply {id} of another"
            );
            assert!(seen.insert(id), "client {c} got reply {id} twice");
            let (name, qtype, rcode, want) = asked[usize::from(id / 8) % asked.len()];
            assert_eq!(m.queries[0].name().to_ascii(), name);
            assert_eq!(m.queries[0].query_type(), qtype);
            assert_eq!(m.metadata.response_code, rcode, "reply {id}");
            if qtype == RecordType::TXT {
                assert!(!m.answers.is_empty(), "reply {id}: no TXT");
            } else {
                assert_eq!(a_records(&m), want, "reply {id}");
            }
        }
    }
}

#[test]
fn a_udp_datagram_over_4_kib_is_dropped_and_counted() {
    // Queries are read in 4 KiB slots; a longer datagram (no DNS query is
    // that long) arrives cut short and must not be answered as if whole.
    let d = Daemon::start(&[
        "--source",
        &file_source(&example_fleet()),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let before = d.metric("fleetdns_queries_dropped_total", &[]);
    let mut long = query("web-1.fleet.internal.", RecordType::A, None)
        .to_vec()
        .unwrap();
    long.resize(5000, 0);
    assert_eq!(udp_raw(d.udp, &long), None);
    let mut fits = query("web-1.fleet.internal.", RecordType::A, None)
        .to_vec()
        .unwrap();
    // one that fills a slot exactly is read whole and answered (bytes
    // after the question are ignored, as they always were)
    fits.resize(4096, 0);
    let reply = udp_raw(d.udp, &fits).expect("a reply for a datagram of 4096 bytes");
    assert_eq!(a_records(&strict_parse(&reply)), ["10.20.1.11"]);
    assert_eq!(
        d.metric("fleetdns_queries_dropped_total", &[]),
        before + 1.0
    );
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
}

#[test]
fn notify_and_update_opcodes_are_not_implemented() {
    let d = demo();
    let mut q = query("fleet.internal.", RecordType::SOA, None);
    q.metadata.op_code = hickory_proto::op::OpCode::Update;
    let (_, m) = udp_query(d.udp, &q);
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
}

#[test]
fn zone_transfer_is_refused_by_default() {
    let d = demo();
    let (_, m) = tcp_query(d.tcp, &query("fleet.internal.", RecordType::AXFR, None));
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

/// Issue 19: a question whose name ends in a compression pointer to offset
/// 2, found by the `dns_request` fuzz target. The reply used to echo the
/// question byte for byte, pointer included, which then pointed at the
/// reply's own flags byte: dnspython and hickory both rejected it. The
/// fuzz seed is the query (its first byte selects TCP in the target).
#[test]
fn a_question_with_a_compression_pointer_gets_a_formerr_that_parses() {
    let seed = include_bytes!("../../fuzz/seeds/dns_request/issue-19-question-pointer-into-header");
    let query = &seed[1..];
    let d = demo();
    let udp = udp_raw(d.udp, query).expect("a UDP reply");
    let tcp = tcp_raw(d.tcp, query).expect("a TCP reply");
    for (transport, raw) in [("UDP", udp), ("TCP", tcp)] {
        let reply = strict_parse(&raw);
        assert_eq!(reply.metadata.id, 0x1234, "{transport}");
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::FormErr,
            "{transport}"
        );
        assert!(
            reply.queries.is_empty(),
            "{transport}: the question is not echoed"
        );
    }
    // and the server goes on answering
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
}

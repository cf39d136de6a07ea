//! A central server on network addresses: replies from the address asked
//! on a wildcard listener (IP_PKTINFO, IPV6_PKTINFO).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

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

//! Any bytes as a DNS request, over UDP or TCP, to the handler serving the
//! demo fleet with static records (CNAME chains and loops, apex records)
//! and its reverse zone with transfers allowed from 127.0.0.0/8
//! to the test key
//! (`fuzz/dicts/dns_request.dict` has its name): no panic; no reply to
//! what is not a query; any reply parses and fits the transport's limit
//! (every message of a transfer too); and wherever the fast path answers
//! (UDP and TCP use it), its bytes are the general path's.
//!
//! Differentially, against what hickory-proto's decoder makes of the
//! request on its own: the reply's id, opcode and RD are the request's; a
//! request it cannot decode gets FORMERR and no question echoed; a reply
//! that echoes a question echoes the decoded question (name as sent, type,
//! class), written out without compression pointers; a reply with an OPT
//! has the request's DO bit.
//!
//! Every UDP reply then goes through response rate limiting (one reply a
//! second, every limited one slipped): a slipped reply parses, has TC
//! set and no records, and keeps the question and the OPT.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use fleetdns::config::{read_config, Overrides};
use fleetdns::dns::fast::{answer, FastZone};
use fleetdns::dns::server::{process, questions_are_plain, Reply};
use fleetdns::dns::xfr::Primary;
use fleetdns::dns::ZoneHandler;
use fleetdns::inventory::file::parse_describe_instances;
use fleetdns::rrl::{Limiter, RrlSettings, Verdict};
use fleetdns::snapshot::{new_store, Snapshot};
use hickory_proto::op::{Message, ResponseCode};
use hickory_server::net::xfer::Protocol;
use libfuzzer_sys::fuzz_target;

/// The static records the fuzzed handler serves beside the demo fleet.
const STATICS: &str = "@ A 10.9.9.9\n@ MX 10 mail\n@ TXT \"v=spf1 -all\"\n\
a CNAME b\nb CNAME web-1\nloop1 CNAME loop2\nloop2 CNAME loop1\ngone-target CNAME nothing\n\
to-apex CNAME @\nto-ent CNAME _tcp\nlb CNAME elb.example.com.\napi 30 A 192.0.2.1\n\
_ldap._tcp SRV 0 5 389 dc1\ndc1 A 10.9.9.10\ndc1 AAAA fd00::10\nmail MX 10 dc1\nnote TXT one \"two words\"\n";

struct World {
    runtime: tokio::runtime::Runtime,
    handler: ZoneHandler,
    primary: Primary,
    snapshot: Arc<Snapshot>,
    zone: FastZone,
    limiter: Limiter,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let fleet = include_str!("../../deploy/examples/fleet.json");
        let settings = read_config(
            "reverse_zones = [\"20.10.in-addr.arpa\"]\n[[tsig_keys]]\nname = \"xfr-key\"\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
             [transfer]\nallow = [{ from = \"127.0.0.0/8\", key = \"xfr-key\" }]\n",
            "fuzz",
        )
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        let instances = parse_describe_instances(fleet).unwrap();
        // Static records: CNAME chains inside the zone (to a fleet name,
        // the apex, an empty non-terminal, a missing name, in a loop) and
        // out of it, apex records, and a static name over a fleet name.
        let statics = fleetdns::statics::parse(STATICS, &settings.zone.zone, 60).unwrap();
        let naming = settings.naming.clone().with_statics(Arc::new(statics));
        let snapshot = Arc::new(Snapshot::build(&instances, &naming, &settings.zone.zone));
        let store = new_store();
        store.store(Some(snapshot.clone()));
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // No forwarder: fuzzing must not send packets anywhere.
            handler: ZoneHandler::new(store.clone(), settings.zone.clone(), None),
            primary: Primary::new(store, settings.zone.clone(), &settings.transfer),
            snapshot,
            zone: FastZone::new(&settings.zone),
            limiter: Limiter::new(RrlSettings {
                responses_per_second: 1,
                slip: 1,
                window: 1,
                ipv4_prefix: 24,
                ipv6_prefix: 56,
                exempt: Vec::new(),
                table_size: 1024,
            }),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let (protocol, limit) = if selector & 1 == 0 {
        (Protocol::Udp, 1232)
    } else {
        (Protocol::Tcp, 65535)
    };
    let world = world();
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let reply = world.runtime.block_on(process(
        &world.handler,
        Some(&world.primary),
        packet.to_vec(),
        src,
        protocol,
    ));
    // A transfer: every message parses and fits; the first is checked
    // below like any reply.
    let reply = match reply {
        None => None,
        Some(Reply::One(bytes)) => Some(bytes),
        Some(Reply::Stream(mut stream)) => {
            let first = stream.next_message();
            for _ in 0..64 {
                let Some(message) = stream.next_message() else {
                    break;
                };
                assert!(message.len() <= 65535);
                Message::from_vec(&message).expect("every message of a transfer parses");
            }
            first
        }
    };
    // The fast path serves UDP and TCP alike: wherever it answers, its
    // bytes are the general path's over either.
    let mut fast = Vec::new();
    if answer(&world.snapshot, &world.zone, packet, &mut fast).is_some() {
        assert_eq!(
            Some(&fast),
            reply.as_ref(),
            "fast path differs ({protocol:?})"
        );
    }
    let Some(reply) = reply else {
        return;
    };
    assert!(
        packet.len() >= 12,
        "a reply to a {}-byte packet",
        packet.len()
    );
    assert!(
        reply.len() <= limit,
        "{} bytes over {protocol:?}",
        reply.len()
    );
    let parsed = Message::from_vec(&reply).expect("replies parse");
    assert_eq!(&reply[..2], &packet[..2], "the reply echoes the id");
    assert!(parsed.metadata.message_type == hickory_proto::op::MessageType::Response);
    assert_eq!(
        reply[2] & 0x79,
        packet[2] & 0x79,
        "opcode and RD are echoed"
    );
    // The reply parsed, so its questions are whole; the check the server
    // makes of requests tells whether they hold a pointer.
    assert_eq!(
        questions_are_plain(&reply, parsed.queries.len() as u16),
        Ok(()),
        "an echoed question holds a compression pointer"
    );
    match Message::from_vec(packet) {
        Err(_) => {
            assert_eq!(parsed.metadata.response_code, ResponseCode::FormErr);
            assert!(parsed.queries.is_empty(), "an undecodable question echoed");
        }
        Ok(request) => {
            if !parsed.queries.is_empty() {
                assert_eq!(parsed.queries.len(), request.queries.len());
                for (echoed, asked) in parsed.queries.iter().zip(&request.queries) {
                    // Name's equality ignores case; the bytes must not.
                    assert_eq!(echoed.name().to_string(), asked.name().to_string());
                    assert_eq!(echoed.query_type(), asked.query_type());
                    assert_eq!(echoed.query_class(), asked.query_class());
                }
            }
            // RFC 3225: a reply with an OPT copies the query's DO bit.
            if let (Some(asked), Some(replied)) = (&request.edns, &parsed.edns) {
                assert_eq!(
                    replied.flags().dnssec_ok,
                    asked.flags().dnssec_ok,
                    "the DO bit is copied"
                );
            }
        }
    }
    if protocol == Protocol::Udp {
        let mut limited = reply.clone();
        match world.limiter.check(0, src.ip(), &mut limited) {
            Verdict::Send => assert_eq!(limited, reply, "a reply sent is unchanged"),
            Verdict::Drop => panic!("with slip 1 nothing is dropped"),
            Verdict::Slip => {
                let slipped = Message::from_vec(&limited).expect("a slipped reply parses");
                assert!(slipped.metadata.truncation);
                assert!(slipped.answers.is_empty() && slipped.authorities.is_empty());
                assert_eq!(slipped.queries, parsed.queries);
                assert_eq!(slipped.edns.is_some(), parsed.edns.is_some());
                assert_eq!(
                    slipped.metadata.response_code,
                    parsed.metadata.response_code
                );
            }
        }
    }
});

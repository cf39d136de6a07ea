//! Any stream of bytes on a DNS-over-TCP connection, delivered cut at any
//! points: the server answers exactly the whole length-prefixed messages
//! in it, in order, each with the reply the message gets on its own from
//! the handler (the connection answers what it can by the fast path, and
//! coalesces replies), and stops at a message cut short. Nothing else is
//! written.
//!
//! The first byte of the input picks how many cut points follow (as bytes
//! of the input, each a chunk length); the rest is the stream.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fleetdns::config::{read_config, Overrides};
use fleetdns::dns::fast::FastPath;
use fleetdns::dns::server::{process, serve_connection, Connection, Reply};
use fleetdns::dns::ZoneHandler;
use fleetdns::inventory::file::parse_describe_instances;
use fleetdns::snapshot::{new_store, Snapshot};
use hickory_server::net::xfer::Protocol;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct World {
    runtime: tokio::runtime::Runtime,
    handler: ZoneHandler,
    fast: FastPath,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let settings = read_config("", "fuzz")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        let instances =
            parse_describe_instances(include_str!("../../deploy/examples/fleet.json")).unwrap();
        let snapshot = Snapshot::build(&instances, &settings.naming, &settings.zone.zone);
        let store = new_store();
        store.store(Some(Arc::new(snapshot)));
        let access = Arc::new(arc_swap::ArcSwap::from_pointee(settings.access.clone()));
        let fast = FastPath::new(store.clone(), &settings.zone, access);
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap(),
            // No forwarder: fuzzing must not send packets anywhere.
            handler: ZoneHandler::new(store, settings.zone.clone(), None),
            fast,
        }
    })
}

/// The whole messages at the start of `stream`, up to the first one cut short.
fn frames(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let [hi, lo, rest @ ..] = stream {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(message) = rest.get(..len) else {
            break;
        };
        out.push(message.to_vec());
        stream = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(cuts % 16).min(rest.len());
    let (cut_lengths, stream) = rest.split_at(cuts);
    let world = world();
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();

    let expected: Vec<Vec<u8>> = world.runtime.block_on(async {
        let mut replies = Vec::new();
        for message in frames(stream) {
            // No transfers here (no primary): each reply is one message.
            if let Some(reply) = process(&world.handler, None, message, src, Protocol::Tcp)
                .await
                .and_then(Reply::one)
            {
                replies.push(reply);
            }
        }
        replies
    });

    let written = world.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        // The fast path answers what it can, the handler the rest: the
        // replies must be the handler's alone, in order.
        let parts = Connection {
            handler: &world.handler,
            fast: Some(&world.fast),
            primary: None,
            idle: Duration::from_secs(5),
        };
        let serving = serve_connection(server, src, parts);
        let talking = async {
            let mut at = 0;
            for &len in cut_lengths.iter().chain(std::iter::repeat(&u8::MAX)) {
                if at >= stream.len() {
                    break;
                }
                let end = (at + usize::from(len).max(1)).min(stream.len());
                client.write_all(&stream[at..end]).await.unwrap();
                at = end;
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
            let mut written = Vec::new();
            client.read_to_end(&mut written).await.unwrap();
            written
        };
        let ((), written) = tokio::join!(serving, talking);
        written
    });

    let replies = frames(&written);
    let framed: usize = replies.iter().map(|r| r.len() + 2).sum();
    assert_eq!(
        framed,
        written.len(),
        "bytes outside whole frames were written"
    );
    assert_eq!(
        replies, expected,
        "the replies are not those of the messages, in order"
    );
});

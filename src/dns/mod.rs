//! DNS: the handler that answers from the snapshot, the listeners, and the
//! forwarder for names outside the zone.
//!
//! fleetdns uses hickory-server's request and response types and its
//! [`RequestHandler`](hickory_server::server::RequestHandler) trait, but runs
//! its own UDP and TCP loops (`server.rs`): hickory-server 0.26.3's own
//! loops leave a cut-off OPT record on truncated UDP replies, size UDP
//! replies by the client's offer alone, and put no bound on TCP
//! connections. Encoding happens in one place, [`wire::WireResponder`],
//! which caps UDP replies at 1232 bytes and truncates correctly for every
//! kind of answer (zone, forwarded, error).

pub mod batch;
pub mod fast;
pub mod forward;
pub mod handler;
pub mod server;
pub mod wire;
pub mod xfr;

pub use handler::ZoneHandler;

/// The demo fleet (`deploy/examples/fleet.json`) plus `extra`, built with the
/// default settings, as a handler and the snapshot it serves: what the unit
/// tests of the wire path answer from.
#[cfg(test)]
pub(crate) fn demo_world(
    extra: Vec<crate::inventory::Instance>,
) -> (
    crate::config::Settings,
    std::sync::Arc<crate::snapshot::Snapshot>,
    ZoneHandler,
) {
    let settings = crate::config::read_config("", "test")
        .and_then(|c| c.validate(&crate::config::Overrides::default()))
        .expect("the default config is valid");
    let mut instances = crate::inventory::file::parse_describe_instances(include_str!(
        "../../deploy/examples/fleet.json"
    ))
    .expect("the demo fleet parses");
    instances.extend(extra);
    let snapshot = std::sync::Arc::new(crate::snapshot::Snapshot::build(
        &instances,
        &settings.naming,
        &settings.zone.zone,
    ));
    let store = crate::snapshot::new_store();
    store.store(Some(snapshot.clone()));
    let handler = ZoneHandler::new(store, settings.zone.clone(), None);
    (settings, snapshot, handler)
}

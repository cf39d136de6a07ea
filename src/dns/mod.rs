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

pub use handler::ZoneHandler;

//! NOTIFY (RFC 1996): telling secondaries that the zone changed.
//!
//! A snapshot subscriber like the hosts export, fed after the journal has
//! recorded the change (so a secondary that asks for an IXFR at once gets
//! the differences). Each target has a task of its own: it sends a NOTIFY
//! for the newest serial, signed with the target's key if it has one, and
//! retries on silence with backoff ([`RETRY_WAITS`]); a newer serial that
//! arrives meanwhile replaces the pending one. A reply that is not NOERROR
//! ends the attempt with a log line that says what the target answered.
//! Nothing here touches the answer path.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{NotifyTarget, ZoneSettings};
use crate::dns::handler::soa_record;
use crate::metrics::metrics;
use crate::snapshot::Snapshot;
use crate::tsig;

/// How long to wait for an acknowledgement before each retry: five tries
/// in about 30 s (RFC 1996 suggests 60 s between tries; a secondary that
/// missed the first packet should not wait that long).
pub const RETRY_WAITS: [Duration; 5] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(8),
    Duration::from_secs(8),
];

/// The NOTIFY opcode.
const OPCODE_NOTIFY: u8 = 4;

/// What a target's task is told: the zone parameters and the serial.
type Change = Option<(Arc<ZoneSettings>, u32)>;

/// Sends NOTIFY to the configured targets after every change.
pub struct NotifySender {
    targets: ArcSwap<Vec<NotifyTarget>>,
    zone: ArcSwap<ZoneSettings>,
    /// The addresses fleetdns listens on (wildcards left out): a NOTIFY
    /// leaves from one of them, the address the secondaries know as the
    /// primary's and check NOTIFY against (NSD's allow-notify, Knot's
    /// acl, BIND's masters), not from whatever address the route prefers
    /// on a host with several.
    sources: Vec<IpAddr>,
}

impl NotifySender {
    /// A sender to `targets` for the zone `zone`, from one of the listen
    /// addresses `listen` when one fits.
    pub fn new(targets: Vec<NotifyTarget>, zone: ZoneSettings, listen: &[SocketAddr]) -> Arc<Self> {
        Arc::new(NotifySender {
            targets: ArcSwap::from_pointee(targets),
            zone: ArcSwap::from_pointee(zone),
            sources: listen
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified())
                .collect(),
        })
    }

    /// The address a NOTIFY to `to` leaves from: the first listen address
    /// of its family, loopback for loopback and not otherwise; `None`
    /// leaves the choice to the kernel (fleetdns listens on a wildcard).
    fn source_for(&self, to: SocketAddr) -> Option<IpAddr> {
        self.sources
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == to.is_ipv4() && ip.is_loopback() == to.ip().is_loopback())
    }

    /// New targets and zone parameters (a reload), used from the next change on.
    pub fn reconfigure(&self, targets: Vec<NotifyTarget>, zone: ZoneSettings) {
        self.targets.store(Arc::new(targets));
        self.zone.store(Arc::new(zone));
    }

    /// Notifies for the snapshot in `changes` now (the start) and after
    /// every change, until the sender of `changes` is gone.
    pub fn spawn(
        self: Arc<Self>,
        mut changes: watch::Receiver<Option<Arc<Snapshot>>>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            // One task per target, each with the newest change to send.
            let mut running: Vec<(NotifyTarget, watch::Sender<Change>, JoinHandle<()>)> =
                Vec::new();
            loop {
                let current = changes.borrow_and_update().clone();
                if let Some(snapshot) = current {
                    let targets = self.targets.load_full();
                    let same = running.len() == targets.len()
                        && running.iter().zip(targets.iter()).all(|(r, t)| r.0 == *t);
                    if !same {
                        for (_, _, task) in running.drain(..) {
                            task.abort();
                        }
                        for target in targets.iter() {
                            let (tx, rx) = watch::channel(None);
                            let source = self.source_for(target.to);
                            let task = tokio::spawn(target_task(target.clone(), source, rx));
                            running.push((target.clone(), tx, task));
                        }
                    }
                    let change = Some((self.zone.load_full(), snapshot.serial()));
                    for (_, tx, _) in &running {
                        tx.send_replace(change.clone());
                    }
                }
                if changes.changed().await.is_err() {
                    for (_, _, task) in running.drain(..) {
                        task.abort();
                    }
                    return;
                }
            }
        })
    }
}

/// Sends the newest change to one target, from `source` if given,
/// retrying, until told to stop.
async fn target_task(
    target: NotifyTarget,
    source: Option<IpAddr>,
    mut changes: watch::Receiver<Change>,
) {
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        let Some((zone, serial)) = changes.borrow_and_update().clone() else {
            continue;
        };
        // A newer serial replaces this one: the select drops the attempt.
        tokio::select! {
            _ = notify(&target, source, &zone, serial) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                debug!(target = %target.to, serial, "a newer serial replaces a pending NOTIFY");
                // Leave the change marked unseen for the next round.
                changes.mark_changed();
            }
        }
    }
}

/// Sends a NOTIFY for `serial` to `target` for the zone and then each
/// reverse zone, each with retries; logs how each ended.
async fn notify(target: &NotifyTarget, source: Option<IpAddr>, zone: &ZoneSettings, serial: u32) {
    let apexes = std::iter::once(&zone.zone).chain(zone.reverse_zones.iter().map(|r| &r.apex));
    for apex in apexes {
        match notify_once(target, source, zone, apex, serial).await {
            Ok(tries) => {
                metrics().count_notify_done(target.to, true);
                debug!(target = %target.to, zone = %apex, serial, tries, "NOTIFY acknowledged");
            }
            Err(why) => {
                metrics().count_notify_done(target.to, false);
                warn!(target = %target.to, zone = %apex, serial, "NOTIFY failed: {why}");
            }
        }
    }
}

/// Sends the NOTIFY until acknowledged; the number of tries, or why not.
async fn notify_once(
    target: &NotifyTarget,
    source: Option<IpAddr>,
    zone: &ZoneSettings,
    apex: &Name,
    serial: u32,
) -> Result<usize, String> {
    let any: IpAddr = if target.to.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let local = SocketAddr::new(source.unwrap_or(any), 0);
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("cannot open a UDP socket on {local}: {e}"))?;
    socket
        .connect(target.to)
        .await
        .map_err(|e| format!("cannot send to {}: {e}", target.to))?;
    let id = random_id();
    let mut message = notify_message(id, zone, apex, serial)?;
    let request_mac = target
        .key
        .as_ref()
        .map(|key| tsig::sign_request(&mut message, key, tsig::now()));
    let mut buf = vec![0u8; 4096];
    for (try_, wait) in RETRY_WAITS.iter().enumerate() {
        metrics().count_notify_sent(target.to);
        if let Err(error) = socket.send(&message).await {
            // ICMP "refused" from an earlier try surfaces here: retry.
            debug!(target = %target.to, %error, "NOTIFY send failed");
        }
        let deadline = tokio::time::Instant::now() + *wait;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
            let len = match received {
                Err(_) => break, // silence: retry
                Ok(Err(error)) => {
                    // The target's port is closed (ICMP): wait out the try.
                    debug!(target = %target.to, %error, "NOTIFY receive failed");
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Ok(Ok(len)) => len,
            };
            let reply = &buf[..len];
            // Another message (an old try's reply): keep waiting.
            if reply.len() < 12 || reply[0..2] != id.to_be_bytes() || reply[2] & 0x80 == 0 {
                continue;
            }
            let rcode = ResponseCode::from_low(reply[3] & 0x0f);
            if rcode != ResponseCode::NoError {
                return Err(format!(
                    "{} answered {rcode}{}",
                    target.to,
                    match rcode {
                        ResponseCode::NotAuth => " (TSIG: does it know the key, with this secret?)",
                        ResponseCode::Refused =>
                            " (is this host allowed to notify it? NSD: allow-notify, Knot: acl action notify, BIND: primaries)",
                        _ => "",
                    }
                ));
            }
            if let (Some(key), Some(mac)) = (&target.key, &request_mac) {
                tsig::verify_reply(reply, key, mac)
                    .map_err(|e| format!("{}'s acknowledgement: {e}", target.to))?;
            }
            return Ok(try_ + 1);
        }
    }
    Err(format!(
        "no answer from {} after {} tries",
        target.to,
        RETRY_WAITS.len()
    ))
}

/// A NOTIFY for the zone at `apex` (the zone or a reverse zone) at
/// `serial`: opcode NOTIFY, AA, the question (apex, SOA, IN), and the
/// current SOA in the answer section.
pub fn notify_message(
    id: u16,
    zone: &ZoneSettings,
    apex: &Name,
    serial: u32,
) -> Result<Vec<u8>, String> {
    let mut message = Vec::with_capacity(256);
    message.extend_from_slice(&id.to_be_bytes());
    message.push((OPCODE_NOTIFY << 3) | 0x04);
    message.push(0);
    message.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    {
        let mut encoder = BinEncoder::with_offset(&mut message, 12);
        apex.emit(&mut encoder).map_err(|e| e.to_string())?;
        encoder.emit_u16(6).map_err(|e| e.to_string())?; // SOA
        encoder.emit_u16(1).map_err(|e| e.to_string())?; // IN
        soa_record(zone, serial, apex, zone.ttl)
            .emit(&mut encoder)
            .map_err(|e| e.to_string())?;
    }
    Ok(message)
}

/// An unpredictable message ID: replies are matched by it, so an
/// off-path sender must not guess it.
fn random_id() -> u16 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() as u16
}

/// Logs the configured targets once at start.
pub fn describe(targets: &[NotifyTarget]) {
    if !targets.is_empty() {
        let list: Vec<String> = targets
            .iter()
            .map(|t| match &t.key {
                Some(k) => format!("{} (key {})", t.to, k.name),
                None => t.to.to_string(),
            })
            .collect();
        info!("sending NOTIFY after every change to {}", list.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode};

    #[test]
    fn a_notify_message_parses_with_the_soa_in_the_answer() {
        let zone = crate::config::read_config("", "test")
            .and_then(|c| c.validate(&crate::config::Overrides::default()))
            .unwrap()
            .zone;
        let m = Message::from_vec(&notify_message(7, &zone, &zone.zone, 1234).unwrap()).unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Notify);
        assert!(m.metadata.authoritative);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.answers.len(), 1);
        assert!(m.answers[0].to_string().contains("1234"));
    }
}

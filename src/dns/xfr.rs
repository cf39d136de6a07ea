//! Zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995) from the current
//! snapshot and a journal of differences.
//!
//! A transfer is answered from one `Arc<Snapshot>` loaded when the request
//! arrives, so its first and last SOA always match, however many swaps
//! happen while it streams. The answer is a stream of messages ([`Stream`])
//! of about [`MESSAGE_TARGET`] bytes each, with names compressed within
//! each message, the request's ID in all and its question in the first.
//! The TCP loop asks for the next message only once the previous one is
//! written, so a slow reader holds one message, not the zone.
//!
//! The [`Journal`] keeps the differences between consecutive serials
//! (bounded in versions and bytes), computed off the answer path by
//! [`Journal::follow`] after every swap: one walk over two sorted
//! snapshots. A secondary at a serial in the journal gets the chain of
//! differences; one that is current gets a single SOA; any other (older
//! than the journal, or a serial fleetdns never had, as after a restart)
//! gets the whole zone in IXFR form ("AXFR-style"), which NSD, Knot and
//! BIND all accept.
//!
//! Who may transfer is decided by [`crate::access`]; signing is
//! [`crate::tsig`]'s. The rules for the answer codes follow BIND as a
//! primary: AXFR over UDP and an IXFR without an SOA in the authority
//! section are FORMERR; IXFR over UDP gets a single SOA (RFC 1995
//! section 2), so the client retries over TCP.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding,
};
use hickory_server::net::xfer::Protocol;
use tracing::{debug, info, warn};

use crate::access::{allowed, Allow};
use crate::config::{TransferSettings, ZoneSettings};
use crate::dns::handler::{all_records, apex_static_records, reverse_name, soa_record};
use crate::metrics::metrics;
use crate::snapshot::{Snapshot, Store};
use crate::tsig::{self, KeyRing, Signed};

/// About how many bytes each message of a transfer holds (RFC 5936 leaves
/// it open; 16 KiB keeps a slow reader's buffer small and compresses well).
pub const MESSAGE_TARGET: usize = 16 * 1024;

/// One difference between consecutive zone versions: the records removed
/// and added, each list encoded as a run of wire-format records (names
/// compressed within the run).
#[derive(Debug)]
pub struct Diff {
    /// The serial it starts from.
    pub from: u32,
    /// The serial it leads to.
    pub to: u32,
    /// Whether every record could be encoded (an incomplete difference is
    /// never served: the journal starts over instead).
    complete: bool,
    removed: Vec<u8>,
    removed_count: usize,
    added: Vec<u8>,
    added_count: usize,
}

impl Diff {
    /// The difference from `old` to `new`, records rendered with `zone`'s
    /// TTL. Cost: one walk over both snapshots plus the changed names.
    pub fn between(old: &Snapshot, new: &Snapshot, zone: &ZoneSettings) -> Diff {
        let mut removed = RecordRun::default();
        let mut added = RecordRun::default();
        let mut scratch = Vec::with_capacity(512);
        // The apex's static records, then every name that changed.
        let apex = Name::from(new.zone().clone());
        let apex_pair = (old.statics().apex() != new.statics().apex()).then(|| {
            (
                apex_static_records(old, &apex),
                apex_static_records(new, &apex),
            )
        });
        let names = new.changed_entries(old).map(|(before, after)| {
            (
                before.map(|e| all_records(e, zone.ttl)).unwrap_or_default(),
                after.map(|e| all_records(e, zone.ttl)).unwrap_or_default(),
            )
        });
        for (before, after) in apex_pair.into_iter().chain(names) {
            for r in before.iter().filter(|r| !after.contains(r)) {
                removed.push(r, &mut scratch);
            }
            for r in after.iter().filter(|r| !before.contains(r)) {
                added.push(r, &mut scratch);
            }
        }
        Diff {
            from: old.serial(),
            to: new.serial(),
            complete: !removed.failed && !added.failed,
            removed: removed.bytes,
            removed_count: removed.count,
            added: added.bytes,
            added_count: added.count,
        }
    }

    /// The records removed, decoded.
    pub fn removed(&self) -> impl Iterator<Item = Record> + '_ {
        decode_run(&self.removed, self.removed_count)
    }

    /// The records added, decoded.
    pub fn added(&self) -> impl Iterator<Item = Record> + '_ {
        decode_run(&self.added, self.added_count)
    }

    /// How many records it removes and adds.
    pub fn counts(&self) -> (usize, usize) {
        (self.removed_count, self.added_count)
    }

    /// The heap bytes it takes.
    pub fn bytes(&self) -> usize {
        self.removed.capacity() + self.added.capacity() + std::mem::size_of::<Diff>()
    }
}

/// Records encoded one after another, names uncompressed, so that the
/// run may grow past 64 KiB (an encoder writes at most that much, and a
/// compression pointer reaches no further).
#[derive(Default)]
struct RecordRun {
    bytes: Vec<u8>,
    count: usize,
    /// A record could not be encoded: the run is not the whole difference.
    failed: bool,
}

impl RecordRun {
    fn push(&mut self, record: &Record, scratch: &mut Vec<u8>) {
        scratch.clear();
        let mut encoder = BinEncoder::new(scratch);
        encoder.set_name_encoding(NameEncoding::Uncompressed);
        if record.emit(&mut encoder).is_ok() {
            self.bytes.extend_from_slice(scratch);
            self.count += 1;
        } else {
            self.failed = true;
        }
    }
}

/// Decodes `count` records from `bytes`.
fn decode_run(bytes: &[u8], count: usize) -> impl Iterator<Item = Record> + '_ {
    let mut decoder = BinDecoder::new(bytes);
    (0..count).map_while(move |_| Record::read(&mut decoder).ok())
}

/// The differences between recent zone versions, oldest first.
#[derive(Debug)]
pub struct Journal {
    inner: Mutex<JournalInner>,
}

#[derive(Debug, Default)]
struct JournalInner {
    diffs: VecDeque<Arc<Diff>>,
    bytes: usize,
    /// The zone parameters the diffs were rendered with: a change to them
    /// (a TTL, say) changes every record, so the journal starts over.
    zone: Option<ZoneKey>,
    max_versions: usize,
    max_bytes: usize,
}

/// The parts of the zone parameters that the records carry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZoneKey {
    ttl: u32,
    negative_ttl: u32,
    nameserver: Name,
    hostmaster: Name,
    zone: Name,
}

impl ZoneKey {
    fn of(zone: &ZoneSettings) -> Self {
        ZoneKey {
            ttl: zone.ttl,
            negative_ttl: zone.negative_ttl,
            nameserver: zone.nameserver.clone(),
            hostmaster: zone.hostmaster.clone(),
            zone: zone.zone.clone(),
        }
    }
}

impl Journal {
    /// An empty journal keeping at most `versions` differences and
    /// `bytes` bytes of them.
    pub fn new(versions: usize, bytes: usize) -> Self {
        Journal {
            inner: Mutex::new(JournalInner {
                max_versions: versions,
                max_bytes: bytes,
                ..JournalInner::default()
            }),
        }
    }

    /// New limits (a reloaded configuration); the oldest go first.
    pub fn set_limits(&self, versions: usize, bytes: usize) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.max_versions = versions;
            inner.max_bytes = bytes;
            inner.trim();
        }
    }

    /// Records the difference from `old` to `new` (computed here, so call
    /// it off the answer path). `new` must follow `old` directly.
    pub fn follow(&self, old: &Snapshot, new: &Snapshot, zone: &ZoneSettings) {
        let key = ZoneKey::of(zone);
        let wanted = match self.inner.lock() {
            Ok(mut inner) => {
                if inner.zone.as_ref() != Some(&key) {
                    // The old zone's records were rendered with other
                    // parameters: no difference to it is right. Start over
                    // from the new zone (which has a new serial: a reload
                    // that changes them asks for one).
                    let first = inner.zone.is_none();
                    inner.diffs.clear();
                    inner.bytes = 0;
                    inner.zone = Some(key.clone());
                    inner.trim();
                    if !first {
                        return;
                    }
                }
                inner.max_versions > 0
            }
            Err(_) => return,
        };
        if !wanted || old.serial() == new.serial() {
            return;
        }
        let diff = Arc::new(Diff::between(old, new, zone));
        if let Ok(mut inner) = self.inner.lock() {
            if inner.zone.as_ref() != Some(&key) {
                return; // the parameters changed meanwhile
            }
            if !diff.complete {
                warn!(
                    from = diff.from,
                    to = diff.to,
                    "a zone difference could not be encoded; IXFR clients get the whole zone"
                );
                inner.diffs.clear();
                inner.bytes = 0;
                inner.trim();
                return;
            }
            // Only a continuous chain is useful: a gap (a swap the journal
            // missed) starts it over.
            if inner.diffs.back().is_some_and(|last| last.to != diff.from) {
                inner.diffs.clear();
                inner.bytes = 0;
            }
            inner.bytes += diff.bytes();
            inner.diffs.push_back(diff);
            inner.trim();
        }
    }

    /// The chain of differences from serial `from` to serial `to`, if the
    /// journal holds all of it.
    pub fn chain(&self, from: u32, to: u32) -> Option<Vec<Arc<Diff>>> {
        let inner = self.inner.lock().ok()?;
        let start = inner.diffs.iter().position(|d| d.from == from)?;
        let mut chain = Vec::new();
        let mut at = from;
        for diff in inner.diffs.iter().skip(start) {
            if diff.from != at {
                return None;
            }
            chain.push(diff.clone());
            at = diff.to;
            if at == to {
                return Some(chain);
            }
        }
        None
    }

    /// How many versions and bytes it holds.
    pub fn size(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|i| (i.diffs.len(), i.bytes))
            .unwrap_or_default()
    }
}

impl JournalInner {
    fn trim(&mut self) {
        while self.diffs.len() > self.max_versions
            || (self.bytes > self.max_bytes && !self.diffs.is_empty())
        {
            if let Some(old) = self.diffs.pop_front() {
                self.bytes = self.bytes.saturating_sub(old.bytes());
            }
        }
        metrics().set_journal(self.diffs.len(), self.bytes);
    }
}

/// What a transfer sends: the records in order, produced lazily.
enum Source {
    /// SOA, every name's records, SOA.
    Zone {
        snapshot: Arc<Snapshot>,
        /// The next entry to render, or `None` before the first SOA.
        next: Option<usize>,
        closed: bool,
    },
    /// SOA, then per difference: old SOA, removed, new SOA, added; SOA.
    Diffs {
        chain: Vec<Arc<Diff>>,
        /// Where in the chain: (difference, part 0..4, record).
        at: (usize, u8, usize),
        opened: bool,
        closed: bool,
    },
    /// SOA, NS, a PTR per address of a known instance in a reverse
    /// zone's network, SOA.
    Reverse {
        snapshot: Arc<Snapshot>,
        /// Positions of the zone's addresses ([`Snapshot::reverse_range`]).
        range: std::ops::Range<usize>,
        /// The next position to render, or `None` before the first SOA.
        next: Option<usize>,
        closed: bool,
    },
    /// One SOA.
    Soa { sent: bool },
}

/// A transfer being sent: a stream of messages.
pub struct Stream {
    zone: Arc<ZoneSettings>,
    /// The apex of the zone transferred (the zone, or a reverse zone).
    apex: Name,
    serial: u32,
    id: u16,
    recursion_desired: bool,
    /// The request's question section, repeated in the first message.
    question: Vec<u8>,
    source: Source,
    /// Records rendered but not yet sent.
    pending: VecDeque<Record>,
    /// The key and MAC to chain to, when the request was signed.
    signer: Option<(Signed, Option<Vec<u8>>)>,
    first: bool,
    /// What kind of transfer it is, as counted (`axfr`, `ixfr`, ...).
    pub kind: &'static str,
    /// For an IXFR from the journal, how many differences it chains.
    pub steps: usize,
    /// Messages sent so far.
    pub messages: usize,
    /// Bytes sent so far.
    pub bytes: usize,
}

impl Stream {
    /// The serial it transfers.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Whether it is a single SOA (an up-to-date secondary), not a transfer.
    pub fn is_single(&self) -> bool {
        matches!(self.source, Source::Soa { .. })
    }

    /// The next message, or `None` when the transfer is complete.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        if !self.first && self.pending.is_empty() && !self.refill() {
            return None;
        }
        let mut message = Vec::with_capacity(MESSAGE_TARGET + 1024);
        message.extend_from_slice(&self.id.to_be_bytes());
        message.push(0x84 | u8::from(self.recursion_desired)); // QR, AA, RD as asked
        message.push(0); // NOERROR
        let questions: u16 = if self.first { 1 } else { 0 };
        message.extend_from_slice(&questions.to_be_bytes());
        message.extend_from_slice(&[0; 6]);
        if self.first {
            message.extend_from_slice(&self.question);
        }
        let mut count: u16 = 0;
        {
            let at = message.len() as u32;
            let mut encoder = BinEncoder::with_offset(&mut message, at);
            while encoder.len() < MESSAGE_TARGET {
                if self.pending.is_empty() && !self.refill() {
                    break;
                }
                let Some(record) = self.pending.pop_front() else {
                    break;
                };
                if let Err(error) = record.emit(&mut encoder) {
                    warn!(%error, "a transfer record could not be encoded; skipped");
                    continue;
                }
                count += 1;
            }
        }
        message[6..8].copy_from_slice(&count.to_be_bytes());
        self.first = false;
        let now = tsig::now();
        if let Some((signed, previous)) = &mut self.signer {
            let mac = match previous {
                None => tsig::sign_reply(&mut message, signed, now, None),
                Some(prev) => tsig::sign_next(&mut message, &signed.key, prev, now),
            };
            *previous = Some(mac);
        }
        self.messages += 1;
        self.bytes += message.len();
        Some(message)
    }

    /// Renders the next records into `pending`; `false` at the end.
    fn refill(&mut self) -> bool {
        let apex = &self.apex;
        let soa = |zone: &ZoneSettings, serial: u32| soa_record(zone, serial, apex, zone.ttl);
        let ns = |zone: &ZoneSettings| {
            crate::dns::handler::record(
                apex,
                zone.ttl,
                RData::NS(hickory_proto::rr::rdata::NS(zone.nameserver.clone())),
            )
        };
        match &mut self.source {
            Source::Soa { sent } => {
                if *sent {
                    return false;
                }
                *sent = true;
                self.pending.push_back(soa(&self.zone, self.serial));
            }
            Source::Zone {
                snapshot,
                next,
                closed,
            } => match next {
                None => {
                    self.pending.push_back(soa(&self.zone, self.serial));
                    self.pending.push_back(ns(&self.zone));
                    self.pending.extend(apex_static_records(snapshot, apex));
                    *next = Some(0);
                }
                Some(i) => match snapshot.entry_at(*i) {
                    Some(entry) => {
                        self.pending.extend(all_records(entry, self.zone.ttl));
                        *i += 1;
                    }
                    None if !*closed => {
                        *closed = true;
                        self.pending.push_back(soa(&self.zone, self.serial));
                    }
                    None => return false,
                },
            },
            Source::Reverse {
                snapshot,
                range,
                next,
                closed,
            } => match next {
                None => {
                    self.pending.push_back(soa(&self.zone, self.serial));
                    self.pending.push_back(ns(&self.zone));
                    *next = Some(range.start);
                }
                Some(i) if *i < range.end => {
                    let end = (*i + 256).min(range.end);
                    for at in *i..end {
                        if let Some((address, entry)) = snapshot.reverse_at(at) {
                            self.pending.push_back(crate::dns::handler::record(
                                &reverse_name(address),
                                self.zone.ttl,
                                RData::PTR(hickory_proto::rr::rdata::PTR(entry.name())),
                            ));
                        }
                    }
                    *i = end;
                }
                Some(_) if !*closed => {
                    *closed = true;
                    self.pending.push_back(soa(&self.zone, self.serial));
                }
                Some(_) => return false,
            },
            Source::Diffs {
                chain,
                at,
                opened,
                closed,
            } => {
                if !*opened {
                    *opened = true;
                    self.pending.push_back(soa(&self.zone, self.serial));
                    return true;
                }
                // Up to a few hundred records per call.
                while self.pending.len() < 256 {
                    let Some(diff) = chain.get(at.0) else {
                        if !*closed {
                            *closed = true;
                            self.pending.push_back(soa(&self.zone, self.serial));
                        }
                        break;
                    };
                    match at.1 {
                        0 => {
                            self.pending.push_back(soa(&self.zone, diff.from));
                            *at = (at.0, 1, 0);
                        }
                        1 => {
                            let batch: Vec<Record> = diff.removed().skip(at.2).take(128).collect();
                            if batch.is_empty() {
                                *at = (at.0, 2, 0);
                            } else {
                                at.2 += batch.len();
                                self.pending.extend(batch);
                            }
                        }
                        2 => {
                            self.pending.push_back(soa(&self.zone, diff.to));
                            *at = (at.0, 3, 0);
                        }
                        _ => {
                            let batch: Vec<Record> = diff.added().skip(at.2).take(128).collect();
                            if batch.is_empty() {
                                *at = (at.0 + 1, 0, 0);
                            } else {
                                at.2 += batch.len();
                                self.pending.extend(batch);
                            }
                        }
                    }
                }
                if self.pending.is_empty() {
                    return false;
                }
            }
        }
        true
    }
}

/// What the transfer layer decided for a request.
pub enum Answer {
    /// One message (an error, a single SOA).
    One(Vec<u8>),
    /// A stream of messages (TCP only).
    Stream(Box<Stream>),
}

/// A transfer request, as [`Primary::answer`] needs it.
pub struct TransferRequest<'a> {
    /// The request's ID.
    pub id: u16,
    /// Its RD bit.
    pub recursion_desired: bool,
    /// Its opcode byte (bits 3..6 of the flags), echoed in errors.
    pub opcode: u8,
    /// The question section as sent.
    pub question: &'a [u8],
    /// The question's name.
    pub name: &'a Name,
    /// AXFR or IXFR.
    pub qtype: RecordType,
    /// The SOA records of the authority section (IXFR's client serial).
    pub authorities: &'a [Record],
    /// Where it came from.
    pub source: IpAddr,
    /// Over UDP or TCP.
    pub protocol: Protocol,
    /// Its verified signature, if signed.
    pub signed: Option<&'a Signed>,
}

/// The primary: answers transfer requests and keeps the journal.
pub struct Primary {
    store: Store,
    zone: ArcSwap<ZoneSettings>,
    allow: ArcSwap<Vec<Allow>>,
    keys: ArcSwap<KeyRing>,
    journal: Arc<Journal>,
}

impl Primary {
    /// A primary for the zone in `store` with `zone`'s parameters and
    /// `transfer`'s access rules and keys.
    pub fn new(store: Store, zone: ZoneSettings, transfer: &TransferSettings) -> Self {
        Primary {
            store,
            zone: ArcSwap::from_pointee(zone),
            allow: ArcSwap::from_pointee(transfer.allow.clone()),
            keys: ArcSwap::from_pointee(KeyRing::new(transfer.keys.clone())),
            journal: Arc::new(Journal::new(
                transfer.ixfr_history,
                transfer.ixfr_history_bytes,
            )),
        }
    }

    /// Applies reloaded settings from the next request on.
    pub fn reconfigure(&self, zone: ZoneSettings, transfer: &TransferSettings) {
        self.zone.store(Arc::new(zone));
        self.allow.store(Arc::new(transfer.allow.clone()));
        self.keys
            .store(Arc::new(KeyRing::new(transfer.keys.clone())));
        self.journal
            .set_limits(transfer.ixfr_history, transfer.ixfr_history_bytes);
    }

    /// The keys requests may be signed with.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.load_full()
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The zone parameters in use.
    pub fn zone(&self) -> Arc<ZoneSettings> {
        self.zone.load_full()
    }

    /// Whether a signed SOA query (a secondary's refresh check) from
    /// `source` with `key` is allowed.
    pub fn may_transfer(&self, source: IpAddr, signed: Option<&Signed>) -> bool {
        allowed(&self.allow.load(), source, signed.map(|s| &*s.key))
    }

    /// Answers an AXFR or IXFR request.
    pub fn answer(&self, request: &TransferRequest<'_>) -> Answer {
        let kind_of_request = if request.qtype == RecordType::AXFR {
            "axfr"
        } else {
            "ixfr"
        };
        let zone = self.zone.load_full();
        let error = |rcode: ResponseCode| Answer::One(error_reply(request, rcode));
        let reverse = zone
            .reverse_zones
            .iter()
            .find(|z| z.apex == *request.name)
            .cloned();
        if *request.name != zone.zone && reverse.is_none() {
            // Transfers exist only for the apex of a zone served here.
            metrics().count_transfer(kind_of_request, "refused");
            return error(ResponseCode::NotAuth);
        }
        if request.qtype == RecordType::AXFR && request.protocol == Protocol::Udp {
            // RFC 5936 section 4.2: AXFR is TCP only. As BIND: FORMERR.
            metrics().count_transfer("axfr", "refused");
            return error(ResponseCode::FormErr);
        }
        if !allowed(
            &self.allow.load(),
            request.source,
            request.signed.map(|s| &*s.key),
        ) {
            info!(
                source = %request.source,
                kind = kind_of_request,
                signed = request.signed.map_or("no".to_string(), |s| s.key.name.to_ascii()),
                "transfer refused: no [transfer] allow entry matches"
            );
            metrics().count_transfer(kind_of_request, "refused");
            return error(ResponseCode::Refused);
        }
        let Some(snapshot) = self.store.load_full() else {
            metrics().count_transfer(kind_of_request, "failed");
            return error(ResponseCode::ServFail);
        };
        let serial = snapshot.serial();
        // The whole zone: the forward zone, or the reverse zone asked for.
        let zone_from = |snapshot: Arc<Snapshot>| match &reverse {
            Some(r) => Source::Reverse {
                range: snapshot.reverse_range(r.network),
                snapshot,
                next: None,
                closed: false,
            },
            None => Source::Zone {
                snapshot,
                next: None,
                closed: false,
            },
        };
        // Streams are counted when they end (sent or abandoned); single
        // answers here.
        let mut steps = 0;
        let (kind, source) = match request.qtype {
            RecordType::AXFR => ("axfr", zone_from(snapshot)),
            _ => {
                let client = request.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) if r.record_type() == RecordType::SOA => Some(soa.serial),
                    _ => None,
                });
                let Some(client) = client else {
                    metrics().count_transfer("ixfr", "failed");
                    return error(ResponseCode::FormErr);
                };
                if request.protocol == Protocol::Udp || !serial_before(client, serial) {
                    // Over UDP: the SOA tells the client whether to come
                    // back over TCP. Current (or ahead): nothing to send.
                    let kind = if serial_before(client, serial) {
                        "ixfr"
                    } else {
                        "uptodate"
                    };
                    metrics().count_transfer(kind, "ok");
                    (kind, Source::Soa { sent: false })
                } else if let Some(chain) = self
                    .journal
                    .chain(client, serial)
                    .filter(|_| reverse.is_none())
                {
                    // (Reverse zones keep no journal: they are sent whole.)
                    steps = chain.len();
                    (
                        "ixfr",
                        Source::Diffs {
                            chain,
                            at: (0, 0, 0),
                            opened: false,
                            closed: false,
                        },
                    )
                } else {
                    debug!(source = %request.source, from = client, to = serial, "IXFR answered with the whole zone (serial not in the journal)");
                    ("ixfr_full", zone_from(snapshot))
                }
            }
        };
        Answer::Stream(Box::new(Stream {
            apex: reverse.map_or_else(|| zone.zone.clone(), |r| r.apex),
            zone,
            serial,
            id: request.id,
            recursion_desired: request.recursion_desired,
            question: request.question.to_vec(),
            source,
            pending: VecDeque::new(),
            signer: request.signed.map(|s| (s.clone(), None)),
            first: true,
            kind,
            steps,
            messages: 0,
            bytes: 0,
        }))
    }
}

/// Whether serial `a` comes before `b` in RFC 1982 order.
pub fn serial_before(a: u32, b: u32) -> bool {
    let diff = b.wrapping_sub(a);
    diff != 0 && diff < 0x8000_0000
}

/// An error reply to a transfer request: the header with `rcode`, AA
/// clear, and the question echoed.
fn error_reply(request: &TransferRequest<'_>, rcode: ResponseCode) -> Vec<u8> {
    header_reply(
        request.id,
        request.opcode,
        request.recursion_desired,
        false,
        rcode,
        request.question,
    )
}

/// A reply of a header and `question` (one question, or none if empty).
pub fn header_reply(
    id: u16,
    opcode: u8,
    recursion_desired: bool,
    authoritative: bool,
    rcode: ResponseCode,
    question: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + question.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0x80 | (opcode << 3) | (u8::from(authoritative) << 2) | u8::from(recursion_desired));
    out.push(u16::from(rcode) as u8 & 0x0f);
    out.extend_from_slice(&u16::from(!question.is_empty()).to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(question);
    out
}

/// Keeps `journal` following the snapshots announced on `changes`, then
/// calls `after` with each new snapshot (the NOTIFY sender: secondaries
/// are told only once the journal can answer their IXFR).
pub fn spawn_journal(
    primary: Arc<Primary>,
    mut changes: tokio::sync::watch::Receiver<Option<Arc<Snapshot>>>,
    after: tokio::sync::watch::Sender<Option<Arc<Snapshot>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut previous: Option<Arc<Snapshot>> = None;
        loop {
            let current = changes.borrow_and_update().clone();
            if let Some(snapshot) = current {
                // Without anyone allowed to transfer, no journal is kept
                // (a gap starts it over when transfers are allowed later).
                let wanted = !primary.allow.load().is_empty();
                if let Some(old) = previous.take().filter(|_| wanted) {
                    let journal = primary.journal.clone();
                    let zone = primary.zone();
                    let new = snapshot.clone();
                    let started = std::time::Instant::now();
                    let done = crate::background::run(move || {
                        journal.follow(&old, &new, &zone);
                    })
                    .await;
                    if let Err(error) = done {
                        warn!(%error, "journal update failed");
                    }
                    let (versions, bytes) = primary.journal.size();
                    debug!(
                        serial = snapshot.serial(),
                        versions,
                        bytes,
                        took_ms = started.elapsed().as_millis() as u64,
                        "journal updated"
                    );
                }
                previous = Some(snapshot.clone());
                after.send_replace(Some(snapshot));
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::test_instance;
    use hickory_proto::op::Message;
    use std::collections::BTreeSet;

    fn zone() -> ZoneSettings {
        crate::config::read_config("", "test")
            .and_then(|c| c.validate(&crate::config::Overrides::default()))
            .unwrap()
            .zone
    }

    fn snapshot(names: &[(&str, &str)], serial: u32) -> Snapshot {
        let settings = crate::config::read_config("", "test")
            .and_then(|c| c.validate(&crate::config::Overrides::default()))
            .unwrap();
        let instances: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, (n, ip))| test_instance(&format!("i-{i:04x}"), Some(n), &[ip]))
            .collect();
        Snapshot::build(&instances, &settings.naming, &settings.zone.zone).with_serial(serial)
    }

    /// `count` instances `host-N` with addresses in 10.`net`.0.0/16, at `serial`.
    fn numbered_hosts(count: usize, net: u8, serial: u32) -> Snapshot {
        let names: Vec<(String, String)> = (0..count)
            .map(|i| {
                (
                    format!("host-{i}"),
                    format!("10.{net}.{}.{}", i / 250, i % 250 + 1),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        snapshot(&refs, serial)
    }

    /// The zone's records as text, apex SOA aside.
    fn records_of(s: &Snapshot, zone: &ZoneSettings) -> BTreeSet<String> {
        s.entries()
            .flat_map(|e| all_records(e, zone.ttl))
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn applying_a_diff_to_the_old_zone_gives_the_new_zone() {
        let zone = zone();
        let old = snapshot(
            &[
                ("web-1", "10.0.0.1"),
                ("web-2", "10.0.0.2"),
                ("db", "10.0.0.3"),
            ],
            10,
        );
        let new = snapshot(
            &[
                ("web-1", "10.0.0.1"),
                ("web-2", "10.0.0.9"),
                ("cache", "10.0.0.4"),
            ],
            11,
        );
        let diff = Diff::between(&old, &new, &zone);
        let mut zone_records = records_of(&old, &zone);
        for r in diff.removed() {
            assert!(
                zone_records.remove(&r.to_string()),
                "removes a record that is there: {r}"
            );
        }
        for r in diff.added() {
            assert!(
                zone_records.insert(r.to_string()),
                "adds a record that is not there: {r}"
            );
        }
        assert_eq!(zone_records, records_of(&new, &zone));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Any two fleets (names from a small set, so that they share many
        /// names and addresses): the difference applied to the old zone
        /// removes only records that are there, adds only records that are
        /// not, and gives exactly the new zone.
        #[test]
        fn a_difference_applied_to_the_old_zone_gives_the_new_zone(
            old in proptest::collection::vec((0u8..12, 0u8..6), 0..20),
            new in proptest::collection::vec((0u8..12, 0u8..6), 0..20),
        ) {
            let zone = zone();
            let fleet = |spec: &[(u8, u8)], serial| {
                let names: Vec<(String, String)> = spec
                    .iter()
                    .map(|(n, a)| (format!("host-{n}"), format!("10.0.0.{a}")))
                    .collect();
                let refs: Vec<(&str, &str)> =
                    names.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                snapshot(&refs, serial)
            };
            let (old, new) = (fleet(&old, 1), fleet(&new, 2));
            let diff = Diff::between(&old, &new, &zone);
            let mut records = records_of(&old, &zone);
            for r in diff.removed() {
                proptest::prop_assert!(records.remove(&r.to_string()), "removes {} which is not there", r);
            }
            for r in diff.added() {
                proptest::prop_assert!(records.insert(r.to_string()), "adds {} which is there", r);
            }
            proptest::prop_assert_eq!(records, records_of(&new, &zone));
        }
    }

    /// Found by the IXFR benchmark: records were encoded into one buffer
    /// that an encoder caps at 64 KiB, and a larger difference lost every
    /// record past that point (1% of 100,000 instances kept 1,103 of its
    /// 2,000 removals).
    #[test]
    fn a_difference_larger_than_64_kib_keeps_every_record() {
        let zone = zone();
        let old = numbered_hosts(3000, 1, 1);
        let new = numbered_hosts(3000, 2, 2);
        let diff = Diff::between(&old, &new, &zone);
        // every A record at every name and every instance-id name
        assert_eq!(diff.counts(), (6000, 6000));
        assert!(diff.removed.len() > 65536, "{} bytes", diff.removed.len());
        assert_eq!(diff.removed().count(), 6000);
        assert_eq!(diff.added().count(), 6000);
    }

    #[test]
    fn the_journal_chains_differences_and_starts_over_when_the_ttl_changes() {
        let mut zone = zone();
        let journal = Journal::new(3, 1 << 20);
        let versions: Vec<Snapshot> = (0..5u32)
            .map(|v| {
                snapshot(
                    &[("web", "10.0.0.1"), ("db", &format!("10.0.1.{v}"))],
                    100 + v,
                )
            })
            .collect();
        for pair in versions.windows(2) {
            journal.follow(&pair[0], &pair[1], &zone);
        }
        // three versions kept: 101->102->103->104
        assert_eq!(journal.size().0, 3);
        assert_eq!(journal.chain(101, 104).map(|c| c.len()), Some(3));
        assert!(journal.chain(100, 104).is_none(), "older than the journal");
        assert!(journal.chain(102, 105).is_none(), "not there yet");
        // a TTL change: no difference may span it
        zone.ttl += 1;
        let next = snapshot(&[("web", "10.0.0.1"), ("db", "10.0.1.4")], 105);
        journal.follow(&versions[4], &next, &zone);
        assert_eq!(journal.size().0, 0);
        assert!(journal.chain(104, 105).is_none());
    }

    #[test]
    fn an_axfr_streams_parsable_messages_with_the_soa_first_and_last() {
        let zone = zone();
        let s = Arc::new(numbered_hosts(3000, 1, 77));
        let store = crate::snapshot::new_store();
        store.store(Some(s.clone()));
        let settings = crate::config::read_config(
            "[transfer]\nallow = [{ from = \"127.0.0.0/8\" }]\n",
            "test",
        )
        .and_then(|c| c.validate(&crate::config::Overrides::default()))
        .unwrap();
        let primary = Primary::new(store, zone.clone(), &settings.transfer);
        let question = b"\x05fleet\x08internal\x00\x00\xfc\x00\x01".to_vec();
        let request = TransferRequest {
            id: 42,
            recursion_desired: false,
            opcode: 0,
            question: &question,
            name: &zone.zone,
            qtype: RecordType::AXFR,
            authorities: &[],
            source: "127.0.0.1".parse().unwrap(),
            protocol: Protocol::Tcp,
            signed: None,
        };
        let Answer::Stream(mut stream) = primary.answer(&request) else {
            panic!("a stream");
        };
        let mut all = Vec::new();
        let mut messages = 0;
        while let Some(m) = stream.next_message() {
            assert!(m.len() < 65535);
            let parsed = Message::from_vec(&m).expect("each message parses");
            assert_eq!(parsed.metadata.id, 42);
            assert_eq!(parsed.queries.len(), usize::from(messages == 0));
            all.extend(parsed.answers);
            messages += 1;
        }
        assert!(messages > 5, "{messages} messages");
        assert_eq!(all.first().map(|r| r.record_type()), Some(RecordType::SOA));
        assert_eq!(all.last().map(|r| r.record_type()), Some(RecordType::SOA));
        // SOA, NS, 3000 x (A at the name, A at the id name, 2 TXT), SOA
        assert_eq!(all.len(), 3 + 3000 * 4);

        // outside the allow list: REFUSED
        let outside = TransferRequest {
            source: "10.0.0.1".parse().unwrap(),
            ..request
        };
        let Answer::One(reply) = primary.answer(&outside) else {
            panic!("one message")
        };
        assert_eq!(
            Message::from_vec(&reply).unwrap().metadata.response_code,
            ResponseCode::Refused
        );
    }
}

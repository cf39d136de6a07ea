//! The fast path: A and AAAA answers over UDP, straight from bytes.
//!
//! Most of what a fleet asks is "the address of this name". The general
//! path costs several microseconds and allocations for that: hickory
//! decodes the request, a task is spawned, the handler builds records, and
//! the encoder writes them. Here a query is checked field by field, and its
//! name is lowercased into a stack buffer and looked up in one hash map
//! keyed by the wire-format name ([`Snapshot::wire_lookup`]). The reply goes
//! into a buffer the caller reuses: the header from the query's, the
//! question copied byte for byte (so its case is echoed), then the records.
//!
//! A and AAAA queries for names in the zone without such records (NODATA)
//! or that do not exist (NXDOMAIN) are answered here too, with the zone's
//! SOA in the authority section: that record is encoded once per zone
//! ([`FastZone`]), and only its serial and its name pointers are patched
//! per reply.
//!
//! Anything else returns `None` and takes the general path: another type, a
//! name outside the zone, EDNS options or version, a reply that would not
//! fit, or any unusual header bit. The bytes are the general path's bytes
//! exactly: a test compares the two over a large random query set, and so
//! does the `dns_request` fuzz target.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::BinEncodable;

use crate::access::QueryAccess;
use crate::config::ZoneSettings;
use crate::dns::handler::{SOA_EXPIRE, SOA_REFRESH, SOA_RETRY};
use crate::dns::wire::{opt_record, MAX_UDP_PAYLOAD};
use crate::snapshot::{split_zone, wire_key, Lookup, Snapshot, Store};

/// What a UDP loop needs for the fast path.
#[derive(Clone)]
pub struct FastPath {
    /// The served snapshot.
    pub store: Store,
    /// Who may be answered (shared with the handler; replaced on reload).
    pub access: Arc<ArcSwap<QueryAccess>>,
    /// The zone's settings, encoded; replaced whole when the configuration
    /// is reloaded (shared with every UDP loop).
    pub zone: Arc<ArcSwap<FastZone>>,
}

impl FastPath {
    /// A fast path answering from `store` with `zone`'s settings.
    pub fn new(store: Store, zone: &ZoneSettings, access: Arc<ArcSwap<QueryAccess>>) -> Self {
        FastPath {
            store,
            access,
            zone: Arc::new(ArcSwap::from_pointee(FastZone::new(zone))),
        }
    }

    /// Answers with `zone`'s settings from the next query on.
    pub fn reconfigure(&self, zone: &ZoneSettings) {
        self.zone.store(Arc::new(FastZone::new(zone)));
    }

    /// [`answer`] from the current snapshot for a query from `source`;
    /// `None` also when none is loaded, and for a source outside
    /// `allow_query` (the general path refuses it). The snapshot is
    /// released before this returns, so callers may await.
    pub fn answer(
        &self,
        query: &[u8],
        source: IpAddr,
        out: &mut Vec<u8>,
    ) -> Option<(RecordType, ResponseCode)> {
        if !self.access.load().may_query(source) {
            return None;
        }
        let snapshot = self.store.load();
        answer(snapshot.as_deref()?, &self.zone.load(), query, out)
    }
}

/// The zone's parts of a fast reply, encoded once.
#[derive(Debug, Clone)]
pub struct FastZone {
    /// TTL of positive answers.
    ttl: u32,
    /// The apex in lowercase wire form.
    apex: Box<[u8]>,
    /// The authority section of a negative reply, as the general path's
    /// encoder writes it when the record starts at offset 0: the apex,
    /// then the SOA with its names compressed.
    soa: Vec<u8>,
    /// Where in `soa` the serial goes.
    serial_at: usize,
    /// Where in `soa` a compression pointer must be moved by the record's
    /// real offset.
    pointers_at: Vec<usize>,
}

impl FastZone {
    /// Encodes what `zone` puts into every reply.
    pub fn new(zone: &ZoneSettings) -> FastZone {
        let apex = wire_key(&zone.zone);
        let negative_ttl = zone.ttl.min(zone.negative_ttl);
        let mut soa = Vec::with_capacity(128);
        // The names the encoder may point back to: (offset, the bytes
        // written from there to the end of that name's labels).
        let mut stored: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut pointers_at = Vec::new();
        emit_name(&mut soa, &apex, &mut stored, &mut pointers_at);
        soa.extend_from_slice(&[0, 6, 0, 1]);
        soa.extend_from_slice(&negative_ttl.to_be_bytes());
        let rdlen_at = soa.len();
        soa.extend_from_slice(&[0, 0]);
        for name in [&zone.nameserver, &zone.hostmaster] {
            // Valid names always encode; the root stands in otherwise.
            let wire = name.to_bytes().unwrap_or_else(|_| vec![0]);
            emit_name(&mut soa, &wire, &mut stored, &mut pointers_at);
        }
        let serial_at = soa.len();
        soa.extend_from_slice(&[0; 4]);
        for value in [SOA_REFRESH, SOA_RETRY, SOA_EXPIRE] {
            soa.extend_from_slice(&value.to_be_bytes());
        }
        soa.extend_from_slice(&zone.negative_ttl.to_be_bytes());
        let rdlen = (soa.len() - rdlen_at - 2) as u16;
        soa[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        FastZone {
            ttl: zone.ttl,
            apex,
            soa,
            serial_at,
            pointers_at,
        }
    }
}

/// Appends the wire-format name `name` to `out` the way hickory's encoder
/// does: for each suffix, longest first, a pointer to an earlier identical
/// byte sequence if there is one (and then stop), else remember it.
fn emit_name(
    out: &mut Vec<u8>,
    name: &[u8],
    stored: &mut Vec<(usize, Vec<u8>)>,
    pointers_at: &mut Vec<usize>,
) {
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(&len) = name.get(i) {
        if len == 0 {
            break;
        }
        let end = (i + 1 + usize::from(len)).min(name.len());
        starts.push(out.len());
        out.extend_from_slice(&name[i..end]);
        i = end;
    }
    let last = out.len();
    for start in starts {
        let found = stored
            .iter()
            .find(|(_, bytes)| bytes[..] == out[start..last])
            .map(|(at, _)| *at);
        if let Some(at) = found {
            out.truncate(start);
            pointers_at.push(out.len());
            out.extend_from_slice(&(0xc000 | at as u16).to_be_bytes());
            return;
        }
        stored.push((start, out[start..last].to_vec()));
    }
    out.push(0);
}

/// The DNS header's size.
const HEADER: usize = 12;
/// Longest name in wire format (RFC 1035 section 2.3.4).
const MAX_NAME: usize = 255;

/// Writes the reply to `query` into `out` if the fast path can answer it,
/// and returns the query type (for metrics); `None` means "use the general
/// path" and leaves `out` in an unspecified state.
pub fn answer(
    snapshot: &Snapshot,
    zone: &FastZone,
    query: &[u8],
    out: &mut Vec<u8>,
) -> Option<(RecordType, ResponseCode)> {
    let header = query.get(..HEADER)?;
    // QR=0, opcode QUERY, AA=0, TC=0 (RD may be either); no rcode bits.
    if header[2] & 0xfe != 0 || header[3] & 0x0f != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return None;
    }

    // The question name, lowercased into a fixed buffer.
    let mut key = [0u8; MAX_NAME];
    let mut k = 0;
    let mut pos = HEADER;
    loop {
        let len = usize::from(*query.get(pos)?);
        if len & 0xc0 != 0 || k + 1 + len > MAX_NAME {
            return None; // a compression pointer in a question, or too long
        }
        key[k] = len as u8;
        k += 1;
        pos += 1;
        if len == 0 {
            break;
        }
        for &b in query.get(pos..pos + len)? {
            key[k] = b.to_ascii_lowercase();
            k += 1;
        }
        pos += len;
    }
    let name_end = pos;
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*query.get(pos + 2)?, *query.get(pos + 3)?]);
    pos += 4;
    let question_end = pos;
    if qclass != 1 {
        return None;
    }

    // EDNS: only a bare OPT (root owner, version 0, no extended rcode, no
    // options), and nothing after it.
    let limit = if arcount == 1 {
        let opt = query.get(pos..pos + 11)?;
        let rdlen = u16::from_be_bytes([opt[9], opt[10]]);
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 || rdlen != 0 {
            return None;
        }
        pos += 11;
        usize::from(u16::from_be_bytes([opt[3], opt[4]]).clamp(512, MAX_UDP_PAYLOAD))
    } else {
        512
    };
    // The reply's OPT, with the query's DO bit (RFC 3225 section 3).
    let opt = (arcount == 1).then(|| opt_record(query[pos - 4] & 0x80 != 0));
    if pos != query.len() {
        return None;
    }

    let rtype = match qtype {
        1 => RecordType::A,
        28 => RecordType::AAAA,
        _ => return None,
    };
    let edns = opt.is_some();
    let key = &key[..k];
    // A name with data, or why there is none: NODATA at the apex or an
    // empty non-terminal, NXDOMAIN for a missing name in the zone.
    let (entry, nxdomain) = match snapshot.wire_lookup(key) {
        // Static records carry their own TTLs and may be CNAMEs to follow:
        // the general path's.
        Lookup::Name(entry) if entry.statics().is_some() => return None,
        Lookup::Name(entry) => (Some(entry), false),
        // The apex may have static A or AAAA records.
        Lookup::Apex if snapshot.statics().apex().is_some() => return None,
        Lookup::Apex | Lookup::EmptyNonTerminal => (None, false),
        Lookup::NotFound if split_zone(key, &zone.apex).is_some() => (None, true),
        Lookup::NotFound => return None,
    };
    let (rdlen, answers) = match (rtype, entry) {
        (_, None) => (0, 0),
        (RecordType::A, Some(e)) => (4usize, e.ipv4().len()),
        (_, Some(e)) => (16usize, e.ipv6().len()),
    };
    let Some(entry) = entry.filter(|_| answers > 0) else {
        return negative(
            snapshot,
            zone,
            query,
            question_end,
            opt,
            limit,
            out,
            nxdomain,
        )
        .map(|rcode| (rtype, rcode));
    };
    let ttl = zone.ttl;
    let owner = &query[HEADER..name_end];
    let size = question_end
        + owner.len()
        + (answers - 1) * 2
        + answers * (10 + rdlen)
        + if edns { 11 } else { 0 };
    if size > limit {
        return None; // the general path truncates
    }
    let ancount = u16::try_from(answers).ok()?;

    out.clear();
    out.reserve(size);
    out.extend_from_slice(&header[..2]); // id
                                         // QR, AA, RD as asked; RA=0; AD=0; CD as asked; NOERROR.
    out.push(0x84 | (header[2] & 0x01));
    out.push(header[3] & 0x10);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, u8::from(edns)]);
    out.extend_from_slice(&query[HEADER..question_end]);
    let ttl = ttl.to_be_bytes();
    let rdlen_bytes = (rdlen as u16).to_be_bytes();
    // Owners as the general path's encoder writes them: it emits the
    // question as raw bytes, so it cannot point to it; the first record
    // spells the name out, the others point to that first one.
    let [hi, lo] = (0xc000 | question_end as u16).to_be_bytes();
    for i in 0..answers {
        if i == 0 {
            out.extend_from_slice(owner);
        } else {
            out.extend_from_slice(&[hi, lo]);
        }
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl);
        out.extend_from_slice(&rdlen_bytes);
        match rtype {
            RecordType::A => out.extend_from_slice(&entry.ipv4()[i].octets()),
            _ => out.extend_from_slice(&entry.ipv6()[i].octets()),
        }
    }
    if let Some(opt) = opt {
        out.extend_from_slice(&opt);
    }
    Some((rtype, ResponseCode::NoError))
}

/// Writes a NODATA (or, with `nxdomain`, NXDOMAIN) reply: the header, the
/// question as asked, the zone's SOA as authority, and the OPT if asked.
#[allow(clippy::too_many_arguments)]
fn negative(
    snapshot: &Snapshot,
    zone: &FastZone,
    query: &[u8],
    question_end: usize,
    opt: Option<[u8; 11]>,
    limit: usize,
    out: &mut Vec<u8>,
    nxdomain: bool,
) -> Option<ResponseCode> {
    let edns = opt.is_some();
    let size = question_end + zone.soa.len() + if edns { 11 } else { 0 };
    if size > limit {
        return None;
    }
    let rcode = if nxdomain {
        ResponseCode::NXDomain
    } else {
        ResponseCode::NoError
    };
    out.clear();
    out.reserve(size);
    out.extend_from_slice(&query[..2]); // id
    out.push(0x84 | (query[2] & 0x01)); // QR, AA, RD as asked
    out.push((query[3] & 0x10) | rcode.low()); // CD as asked
    out.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, u8::from(edns)]);
    out.extend_from_slice(&query[HEADER..question_end]);
    let base = out.len();
    out.extend_from_slice(&zone.soa);
    out[base + zone.serial_at..base + zone.serial_at + 4]
        .copy_from_slice(&snapshot.serial().to_be_bytes());
    for &at in &zone.pointers_at {
        let at = base + at;
        let pointer = u16::from_be_bytes([out[at], out[at + 1]]) + base as u16;
        out[at..at + 2].copy_from_slice(&pointer.to_be_bytes());
    }
    if let Some(opt) = opt {
        out.extend_from_slice(&opt);
    }
    Some(rcode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::dns::server::process;
    use crate::inventory::test_instance;
    use hickory_server::net::xfer::Protocol;

    /// xorshift64*: a fixed, reproducible random sequence.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn wire_name(name: &str, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.trim_end_matches('.').split('.') {
            out.push(label.len() as u8);
            for c in label.bytes() {
                // mixed case: the reply must echo it, the lookup ignore it
                out.push(if rng.below(3) == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                });
            }
        }
        out.push(0);
        out
    }

    fn query(rng: &mut Rng, names: &[String]) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&(rng.next() as u16).to_be_bytes());
        // flags: mostly a plain query with RD; sometimes odd bits
        let (b2, b3) = match rng.below(10) {
            0 => (rng.next() as u8 & 0x7f, rng.next() as u8),
            1 => (0x01, 0x20), // dig's default: RD + AD
            2 => (0x00, 0x10), // CD
            _ => (0x01, 0x00),
        };
        q.extend_from_slice(&[b2, b3]);
        let edns = rng.below(4); // 0: none, 1: bare, 2: odd, 3: bare, small size
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns != 0)]);
        let name = match rng.below(20) {
            0 | 1 => format!("nosuch-{}.fleet.internal.", rng.below(100)),
            2 => "example.com.".to_string(),
            3 => "fleet.internal.".to_string(),
            // an empty non-terminal, and names below a name
            4 => "db.fleet.internal.".to_string(),
            5 => format!("x.{}", names[rng.below(names.len() as u64) as usize]),
            _ => names[rng.below(names.len() as u64) as usize].clone(),
        };
        q.extend_from_slice(&wire_name(&name, rng));
        let qtype: u16 = match rng.below(10) {
            0 => 16,
            1 => 255,
            2 => 15,
            3 | 4 => 28,
            _ => 1,
        };
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(if rng.below(50) == 0 { &[0, 3] } else { &[0, 1] });
        match edns {
            1 => q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0]), // 4096, DO
            2 => match rng.below(3) {
                0 => q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 1, 0, 0, 0, 0]), // version 1
                1 => q.extend_from_slice(&[
                    0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,
                ]), // a cookie
                _ => q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0, 0xff]), // trailing byte
            },
            3 => {
                let size = (rng.below(1400) as u16).to_be_bytes();
                q.extend_from_slice(&[0, 0, 41, size[0], size[1], 0, 0, 0, 0, 0, 0]);
            }
            _ => {}
        }
        q
    }

    #[tokio::test]
    async fn fast_answers_are_the_general_paths_bytes() {
        // a name whose answer does not fit 512 or 1232 bytes
        let big = (0..100)
            .map(|i| {
                test_instance(
                    &format!("i-{:017x}", 0xb000 + i),
                    Some("big"),
                    &[
                        &format!("10.99.{}.{}", i / 200, i % 200 + 1),
                        &format!("2600::{i:x}"),
                    ],
                )
            })
            .collect();
        let (settings, snapshot, handler) = crate::dns::demo_world(big);
        let names: Vec<String> = snapshot.entries().map(|e| e.text()).collect();
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let zone = FastZone::new(&settings.zone);

        let mut rng = Rng(0x5eed_f1ee_7d25);
        let (mut fast, mut total, mut nxdomain, mut nodata) = (0, 0, 0, 0);
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let q = query(&mut rng, &names);
            let general = process(&handler, None, q.clone(), src, Protocol::Udp)
                .await
                .and_then(crate::dns::server::Reply::one);
            total += 1;
            if let Some((_, rcode)) = answer(&snapshot, &zone, &q, &mut out) {
                fast += 1;
                if rcode == ResponseCode::NXDomain {
                    nxdomain += 1;
                } else if out[6..8] == [0, 0] {
                    nodata += 1;
                }
                assert_eq!(Some(&out), general.as_ref(), "query {q:02x?}");
            }
        }
        // the common case does take the fast path
        // (about a third of this deliberately odd mix)
        assert!(fast * 100 / total >= 25, "only {fast} of {total} were fast");
        // negative answers too, each compared above
        assert!(
            nxdomain > 100 && nodata > 100,
            "{nxdomain} NXDOMAIN, {nodata} NODATA"
        );
        // and the big name falls back in both sizes
        let mut q = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&wire_name("big.fleet.internal.", &mut Rng(1)));
        q.extend_from_slice(&[0, 1, 0, 1]);
        assert!(answer(&snapshot, &zone, &q, &mut out).is_none());
    }
}

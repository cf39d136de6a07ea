//! The authoritative handler: answers zone names from the current snapshot.
//!
//! Every request loads the snapshot `Arc` once, so a swap in the middle of
//! a request cannot mix two versions. Decisions, in order:
//!
//! - not a standard query: NOTIMP; not exactly one question: FORMERR;
//!   EDNS version above 0: BADVERS (RFC 6891); over TCP, an
//!   edns-tcp-keepalive option with a value (only servers send one, RFC
//!   7828 section 3.2.1): FORMERR, as Unbound answers it;
//! - a name in the zone: authoritative answer (AA), NXDOMAIN or NODATA with
//!   the SOA in the authority section, its TTL min(SOA TTL, MINIMUM)
//!   (RFC 2308); SERVFAIL while no inventory has loaded yet;
//! - a PTR query for an address of a known instance: authoritative answer;
//! - anything else: forwarded when upstreams are configured, else REFUSED.
//!
//! A TCP query with an empty edns-tcp-keepalive option gets one back
//! with the connection's idle timeout (RFC 7828 section 3.3.2), so that
//! secondaries and busy clients keep the connection that long; over UDP
//! the option is ignored.
//!
//! Answers use the question's name as sent (so compression points at the
//! question and the case matches); the question is echoed byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use crate::access::Cidr;
use crate::access::QueryAccess;
use crate::config::{ReverseZone, ZoneSettings};
use crate::dns::forward::Forwarder;
use crate::dns::wire::response_edns;
use crate::snapshot::{Entry, Lookup, NameKind, Snapshot, Store};
use crate::statics::StaticNode;

/// SOA timers for secondaries (not used by fleetdns itself): refresh, retry, expire.
pub(crate) const SOA_REFRESH: i32 = 300;
pub(crate) const SOA_RETRY: i32 = 60;
pub(crate) const SOA_EXPIRE: i32 = 1_209_600;

/// Answers queries for the zone from the snapshot store, and forwards or
/// refuses the rest.
pub struct ZoneHandler {
    /// The current snapshot.
    store: Store,
    /// The zone's own parameters (TTLs, SOA names); replaced whole when
    /// the configuration is reloaded.
    zone: ArcSwap<ZoneSettings>,
    /// Where names outside the zone go; `None` means REFUSED. Replaced
    /// whole on reload, so a request uses one forwarder from start to end.
    forwarder: ArcSwapOption<Forwarder>,
    /// Who may be answered, and forwarded for (shared with the fast path).
    access: Arc<ArcSwap<QueryAccess>>,
    /// The TCP idle timeout in 100 ms units, for edns-tcp-keepalive.
    keepalive: u16,
}

/// The edns-tcp-keepalive option's code (RFC 7828).
const KEEPALIVE: EdnsCode = EdnsCode::Keepalive;

/// `idle` in the 100 ms units of edns-tcp-keepalive's TIMEOUT.
fn keepalive_units(idle: std::time::Duration) -> u16 {
    u16::try_from(idle.as_millis() / 100).unwrap_or(u16::MAX)
}

/// A reply under construction: its code, flags and sections.
#[derive(Default)]
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    recursion_available: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(rcode: ResponseCode) -> Self {
        Reply {
            rcode,
            ..Reply::default()
        }
    }
}

impl ZoneHandler {
    /// A handler for `zone` answering from `store`, forwarding through `forwarder`.
    pub fn new(store: Store, zone: ZoneSettings, forwarder: Option<Arc<Forwarder>>) -> Self {
        Self {
            store,
            zone: ArcSwap::from_pointee(zone),
            forwarder: ArcSwapOption::new(forwarder),
            access: Arc::new(ArcSwap::from_pointee(QueryAccess::default())),
            keepalive: keepalive_units(crate::config::TcpSettings::default().idle_timeout),
        }
    }

    /// This handler telling TCP clients that ask (edns-tcp-keepalive) that
    /// connections are closed after `idle` without a query.
    pub fn with_tcp_idle(mut self, idle: std::time::Duration) -> Self {
        self.keepalive = keepalive_units(idle);
        self
    }

    /// This handler answering and forwarding by `access` (the cell the
    /// fast path and the reload share) instead of the defaults.
    pub fn with_access(mut self, access: Arc<ArcSwap<QueryAccess>>) -> Self {
        self.access = access;
        self
    }

    /// The forwarder in use, if any.
    pub fn forwarder(&self) -> Option<Arc<Forwarder>> {
        self.forwarder.load_full()
    }

    /// Answers with `zone`'s parameters and forwards through `forwarder`
    /// from the next request on (a reloaded configuration).
    pub fn reconfigure(&self, zone: ZoneSettings, forwarder: Option<Arc<Forwarder>>) {
        self.zone.store(Arc::new(zone));
        self.forwarder.store(forwarder);
    }

    /// Decides the reply to a request (everything but encoding).
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let queries = request.queries.queries();
        if queries.len() != 1 {
            return Reply::code(ResponseCode::FormErr);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Reply::code(ResponseCode::BADVERS);
        }
        if request.protocol() == Protocol::Tcp
            && request
                .edns
                .as_ref()
                .and_then(|e| e.options().get(KEEPALIVE))
                .is_some_and(|o| !o.is_empty())
        {
            return Reply::code(ResponseCode::FormErr);
        }
        // Outside allow_query: refused before any lookup.
        let source = request.src().ip();
        let access = self.access.load();
        if !access.may_query(source) {
            return Reply::code(ResponseCode::Refused);
        }
        let query = &queries[0];
        let name = query.name();
        let qtype = query.query_type();
        let owner = query.original().name();
        let snapshot = self.store.load();
        let zone = self.zone.load();

        let zone_name = snapshot.as_ref().map_or_else(
            || LowerName::new(&zone.zone).zone_of(name),
            |s| s.in_zone(name),
        );
        if zone_name {
            if query.query_class() != DNSClass::IN {
                return Reply::code(ResponseCode::Refused);
            }
            return match snapshot.as_deref() {
                Some(snapshot) => zone_reply(&zone, snapshot, name, owner, qtype),
                // Nothing loaded yet: SERVFAIL makes clients try the next server.
                None => Reply::code(ResponseCode::ServFail),
            };
        }

        if let Some(reverse) = zone
            .reverse_zones
            .iter()
            .find(|z| LowerName::new(&z.apex).zone_of(name))
        {
            if query.query_class() != DNSClass::IN {
                return Reply::code(ResponseCode::Refused);
            }
            return match snapshot.as_deref() {
                Some(snapshot) => reverse_reply(&zone, snapshot, reverse, name, owner, qtype),
                None => Reply::code(ResponseCode::ServFail),
            };
        }

        if qtype == RecordType::PTR && query.query_class() == DNSClass::IN {
            if let (Some(snapshot), Some(address)) = (snapshot.as_deref(), reverse_address(name)) {
                let targets: Vec<Record> = snapshot
                    .names_of(address)
                    .map(|t| record(owner, zone.ttl, RData::PTR(PTR(t.name()))))
                    .collect();
                if !targets.is_empty() {
                    let mut reply = Reply {
                        authoritative: true,
                        ..Reply::default()
                    };
                    reply.answers = targets;
                    return reply;
                }
            }
        }

        // Not needed while waiting on an upstream: release the snapshot
        // rather than hold an arc-swap guard across the await.
        drop(snapshot);
        drop(zone);
        if !access.may_recurse(source) {
            // Not an open resolver: forwarding is for allow_recursion.
            return Reply::code(ResponseCode::Refused);
        }
        drop(access);
        match self.forwarder.load_full() {
            Some(forwarder) => match forwarder.resolve(name, qtype, query.query_class()).await {
                Ok(answer) => Reply {
                    rcode: answer.rcode,
                    authoritative: false,
                    recursion_available: true,
                    answers: answer.answers,
                    authorities: answer.authorities,
                    additionals: answer.additionals,
                },
                Err(error) => {
                    debug!(%error, %name, %qtype, "forwarding failed");
                    Reply {
                        recursion_available: true,
                        ..Reply::code(ResponseCode::ServFail)
                    }
                }
            },
            None => Reply::code(ResponseCode::Refused),
        }
    }
}

/// The authoritative reply for a name in `zone`.
fn zone_reply(
    zone: &ZoneSettings,
    snapshot: &Snapshot,
    name: &LowerName,
    owner: &Name,
    qtype: RecordType,
) -> Reply {
    let mut reply = Reply {
        authoritative: true,
        ..Reply::default()
    };
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        // Transfers are answered before the handler (dns::server::process,
        // by the primary); one that gets here had no primary to ask.
        reply.rcode = ResponseCode::Refused;
        return reply;
    }
    let ttl = zone.ttl;
    let apex = Name::from(snapshot.zone().clone());
    match snapshot.lookup(name) {
        Lookup::Apex => reply.answers = apex_records(zone, snapshot, owner, qtype),
        Lookup::Name(entry) if entry.statics().is_some_and(|n| n.cname().is_some()) => {
            if follow_cname(zone, snapshot, entry, owner, qtype, &mut reply) {
                // The chain ends at a name without data of the type (or
                // none at all): the SOA says how long to cache that, as
                // for any negative answer (RFC 2308 sections 2.1, 2.2).
                reply
                    .authorities
                    .push(soa(zone, snapshot, &apex, zone.ttl.min(zone.negative_ttl)));
            }
        }
        Lookup::Name(entry) => reply.answers = entry_records(entry, owner, qtype, ttl),
        Lookup::EmptyNonTerminal => {}
        Lookup::NotFound => reply.rcode = ResponseCode::NXDomain,
    }
    if reply.authorities.is_empty() {
        add_negative_soa(&mut reply, zone, snapshot, &apex);
    }
    reply
}

/// How many CNAMEs an answer follows inside the zone before it stops and
/// leaves the rest to the resolver (a chain of static CNAMEs that long is
/// a mistake; a loop is one too).
const MAX_CNAME_CHAIN: usize = 8;

/// Answers at a static CNAME (`entry`, asked as `owner`) as an
/// authoritative server does (RFC 1034 section 4.3.2, step 3a): the CNAME,
/// then, where the target is in the zone, what the target has of `qtype`,
/// following further CNAMEs. The rcode is the last name's (NXDOMAIN for a
/// missing target, RFC 6604). A target outside the zone is the resolver's
/// to follow. `true` when the chain ends in a negative answer, which then
/// needs the SOA.
fn follow_cname(
    zone: &ZoneSettings,
    snapshot: &Snapshot,
    entry: Entry<'_>,
    owner: &Name,
    qtype: RecordType,
    reply: &mut Reply,
) -> bool {
    let mut node = entry.statics();
    let mut owner = owner.clone();
    let mut visited: Vec<Name> = vec![entry.name()];
    while let Some(current) = node {
        let Some(target) = current.cname() else {
            let found = static_records(current, &owner, qtype);
            let negative = found.is_empty();
            reply.answers.extend(found);
            return negative;
        };
        reply
            .answers
            .extend(static_records(current, &owner, RecordType::CNAME));
        if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            return false;
        }
        let lower = LowerName::from(target);
        if !snapshot.in_zone(&lower)
            || visited.len() >= MAX_CNAME_CHAIN
            || visited.iter().any(|v| v == target)
        {
            return false;
        }
        visited.push(target.clone());
        owner = target.clone();
        node = match snapshot.lookup(&lower) {
            Lookup::Apex => {
                let found = apex_records(zone, snapshot, &owner, qtype);
                let negative = found.is_empty();
                reply.answers.extend(found);
                return negative;
            }
            Lookup::Name(next) => match next.statics() {
                Some(n) => Some(n),
                None => {
                    let found = entry_records(next, &owner, qtype, zone.ttl);
                    let negative = found.is_empty();
                    reply.answers.extend(found);
                    return negative;
                }
            },
            Lookup::EmptyNonTerminal => return true,
            Lookup::NotFound => {
                reply.rcode = ResponseCode::NXDomain;
                return true;
            }
        };
    }
    false
}

/// The static records of `node` for `qtype`, at `owner`, each with its own
/// TTL; ANY gets its first RRset (RFC 8482).
fn static_records(node: &StaticNode, owner: &Name, qtype: RecordType) -> Vec<Record> {
    let rtype = match qtype {
        RecordType::ANY => match node.records.first() {
            Some(r) => r.data.record_type(),
            None => return Vec::new(),
        },
        t => t,
    };
    node.of_type(rtype)
        .map(|r| record(owner, r.ttl, r.data.clone()))
        .collect()
}

/// For NXDOMAIN or NODATA (no answers): the SOA at `apex` in the authority
/// section, with TTL min(SOA TTL, MINIMUM), which tells resolvers how long
/// to cache that (RFC 2308).
fn add_negative_soa(reply: &mut Reply, zone: &ZoneSettings, snapshot: &Snapshot, apex: &Name) {
    if reply.answers.is_empty() {
        let negative = zone.ttl.min(zone.negative_ttl);
        reply.authorities.push(soa(zone, snapshot, apex, negative));
    }
}

/// The authoritative reply for a name in the reverse zone `reverse`: PTR
/// for addresses of known instances, NXDOMAIN for other addresses (not
/// forwarded: fleetdns is the authority), NODATA for names above known
/// addresses; SOA and NS at the apex.
fn reverse_reply(
    zone: &ZoneSettings,
    snapshot: &Snapshot,
    reverse: &ReverseZone,
    name: &LowerName,
    owner: &Name,
    qtype: RecordType,
) -> Reply {
    let mut reply = Reply {
        authoritative: true,
        ..Reply::default()
    };
    let ttl = zone.ttl;
    let full = Name::from(name.clone());
    if full == reverse.apex {
        reply.answers = apex_records(zone, snapshot, owner, qtype);
    } else {
        match reverse_network(&full) {
            Some(net) if net.prefix == if net.address.is_ipv4() { 32 } else { 128 } => {
                let targets: Vec<Record> = snapshot
                    .names_of(net.address)
                    .map(|t| record(owner, ttl, RData::PTR(PTR(t.name()))))
                    .collect();
                if targets.is_empty() {
                    reply.rcode = ResponseCode::NXDomain;
                } else if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                    reply.answers = targets;
                }
            }
            // Above known addresses: an empty non-terminal.
            Some(net) if !snapshot.reverse_range(net).is_empty() => {}
            _ => reply.rcode = ResponseCode::NXDomain,
        }
    }
    add_negative_soa(&mut reply, zone, snapshot, &reverse.apex);
    reply
}

/// What a zone's apex answers for `qtype`: its SOA (also for ANY), its
/// NS, or nothing.
fn apex_records(
    zone: &ZoneSettings,
    snapshot: &Snapshot,
    owner: &Name,
    qtype: RecordType,
) -> Vec<Record> {
    match qtype {
        RecordType::SOA | RecordType::ANY => vec![soa(zone, snapshot, owner, zone.ttl)],
        RecordType::NS => {
            let ns = NS(zone.nameserver.clone());
            vec![record(owner, zone.ttl, RData::NS(ns))]
        }
        // Static records at the apex (never a CNAME: the parser refuses
        // one there). Only the forward zone has them.
        _ if Name::from(snapshot.zone().clone()) == *owner => match snapshot.statics().apex() {
            Some(node) => static_records(node, owner, qtype),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The static records at the zone's apex (`static_records`), at `apex`:
/// what a transfer sends after the SOA and NS.
pub(crate) fn apex_static_records(snapshot: &Snapshot, apex: &Name) -> Vec<Record> {
    match snapshot.statics().apex() {
        Some(node) => node
            .records
            .iter()
            .map(|r| record(apex, r.ttl, r.data.clone()))
            .collect(),
        None => Vec::new(),
    }
}

/// The reverse name of `address` (`11.1.20.10.in-addr.arpa.`, or 32
/// nibbles under `ip6.arpa.`).
pub fn reverse_name(address: IpAddr) -> Name {
    let text = match address {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(a) => {
            let mut text = String::with_capacity(72);
            for c in format!("{:032x}", u128::from(a)).chars().rev() {
                text.push(c);
                text.push('.');
            }
            text.push_str("ip6.arpa.");
            text
        }
    };
    Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
}

/// The zone's SOA record at `owner` with `ttl`.
fn soa(zone: &ZoneSettings, snapshot: &Snapshot, owner: &Name, ttl: u32) -> Record {
    soa_record(zone, snapshot.serial(), owner, ttl)
}

/// The zone's SOA record with `serial`, at `owner` with `ttl`.
pub(crate) fn soa_record(zone: &ZoneSettings, serial: u32, owner: &Name, ttl: u32) -> Record {
    let soa = SOA::new(
        zone.nameserver.clone(),
        zone.hostmaster.clone(),
        serial,
        SOA_REFRESH,
        SOA_RETRY,
        SOA_EXPIRE,
        zone.negative_ttl,
    );
    record(owner, ttl, RData::SOA(soa))
}

/// Every record of `entry`, at its own name: A, AAAA, then TXT (what a
/// transfer sends of a name).
pub(crate) fn all_records(entry: Entry<'_>, ttl: u32) -> Vec<Record> {
    let owner = entry.name();
    if let Some(node) = entry.statics() {
        return node
            .records
            .iter()
            .map(|r| record(&owner, r.ttl, r.data.clone()))
            .collect();
    }
    let mut all = entry_records(entry, &owner, RecordType::A, ttl);
    all.extend(entry_records(entry, &owner, RecordType::AAAA, ttl));
    all.extend(txt_records(entry, &owner, ttl));
    all
}

/// The records of `entry` for `qtype`; ANY gets one RRset (RFC 8482).
fn entry_records(entry: Entry<'_>, owner: &Name, qtype: RecordType, ttl: u32) -> Vec<Record> {
    if let Some(node) = entry.statics() {
        return static_records(node, owner, qtype);
    }
    let a = || {
        entry
            .ipv4()
            .iter()
            .map(|ip| record(owner, ttl, RData::A(A(*ip))))
            .collect::<Vec<_>>()
    };
    let aaaa = || {
        entry
            .ipv6()
            .iter()
            .map(|ip| record(owner, ttl, RData::AAAA(AAAA(*ip))))
            .collect::<Vec<_>>()
    };
    match qtype {
        RecordType::A => a(),
        RecordType::AAAA => aaaa(),
        RecordType::TXT => txt_records(entry, owner, ttl),
        RecordType::ANY if !entry.ipv4().is_empty() => a(),
        RecordType::ANY if !entry.ipv6().is_empty() => aaaa(),
        RecordType::ANY => txt_records(entry, owner, ttl),
        _ => Vec::new(),
    }
}

/// One TXT record per instance behind the name: the debugging view.
fn txt_records(entry: Entry<'_>, owner: &Name, ttl: u32) -> Vec<Record> {
    entry
        .owners()
        .map(|o| {
            let mut strings = vec![format!("id={}", o.instance_id)];
            if let Some(az) = o.availability_zone {
                strings.push(character_string(format!("az={az}")));
            }
            if let Some(t) = o.instance_type {
                strings.push(character_string(format!("type={t}")));
            }
            strings.push(character_string(format!("rule={}", o.rule)));
            // What the name is, where it is not the instance's own.
            if matches!(
                o.kind,
                NameKind::Alias | NameKind::Group | NameKind::Ordinal
            ) {
                strings.push(format!("kind={}", o.kind.label()));
            }
            record(owner, ttl, RData::TXT(TXT::new(strings)))
        })
        .collect()
}

/// A TXT character-string holds at most 255 octets; cut at a char boundary.
fn character_string(mut s: String) -> String {
    if s.len() > 255 {
        let mut end = 255;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

pub(crate) fn record(owner: &Name, ttl: u32, rdata: RData) -> Record {
    Record::from_rdata(owner.clone(), ttl, rdata)
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa.` or the
/// 32 nibbles of `ip6.arpa.`; `None` for anything else (including partial
/// names, which are not addresses).
pub fn reverse_address(name: &LowerName) -> Option<IpAddr> {
    let net = reverse_network(&Name::from(name.clone()))?;
    (net.prefix == if net.address.is_ipv4() { 32 } else { 128 }).then_some(net.address)
}

/// The network a reverse name stands for: `20.10.in-addr.arpa.` is
/// 10.20.0.0/16, a name of 32 nibbles under `ip6.arpa.` one address;
/// `None` for anything that is not such a name (an octet with a sign or a
/// leading zero, a nibble of two characters, too many labels).
pub fn reverse_network(name: &Name) -> Option<Cidr> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let lower = |l: &[u8]| l.to_ascii_lowercase();
    match labels.as_slice() {
        [octets @ .., in_addr, arpa]
            if octets.len() <= 4 && lower(in_addr) == b"in-addr" && lower(arpa) == b"arpa" =>
        {
            let octet = |l: &[u8]| -> Option<u8> {
                let text = std::str::from_utf8(l).ok()?;
                // No signs or leading zeros: one canonical spelling per address.
                if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
                    return None;
                }
                if !text.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                text.parse().ok()
            };
            let mut bytes = [0u8; 4];
            for (i, label) in octets.iter().rev().enumerate() {
                bytes[i] = octet(label)?;
            }
            Some(Cidr {
                address: IpAddr::V4(Ipv4Addr::from(bytes)),
                prefix: 8 * octets.len() as u8,
            })
        }
        [nibbles @ .., ip6, arpa]
            if nibbles.len() <= 32 && lower(ip6) == b"ip6" && lower(arpa) == b"arpa" =>
        {
            let mut value: u128 = 0;
            for label in nibbles.iter().rev() {
                let [digit] = label else { return None };
                let nibble = (*digit as char).to_digit(16)?;
                value = (value << 4) | u128::from(nibble);
            }
            let bits = 4 * nibbles.len() as u32;
            let value = if bits == 0 { 0 } else { value << (128 - bits) };
            Some(Cidr {
                address: IpAddr::V6(Ipv6Addr::from(value)),
                prefix: bits as u8,
            })
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl RequestHandler for ZoneHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.reply(request).await;
        let edns: Option<Edns> = request.edns.as_ref().map(|asked| {
            let mut edns = response_edns(asked.flags().dnssec_ok);
            if request.protocol() == Protocol::Tcp && asked.options().get(KEEPALIVE).is_some() {
                edns.options_mut().insert(EdnsOption::Unknown(
                    u16::from(KEEPALIVE),
                    self.keepalive.to_be_bytes().to_vec(),
                ));
            }
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.rcode;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = reply.recursion_available;
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "reply not sent");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: failed,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    #[test]
    fn reverse_names_parse_to_addresses() {
        assert_eq!(
            reverse_address(&lower("11.1.20.10.in-addr.arpa.")),
            Some("10.20.1.11".parse().unwrap())
        );
        let v6: Ipv6Addr = "2600:1f18:abc:100::11".parse().unwrap();
        let nibbles: String = format!("{:032x}", u128::from(v6))
            .chars()
            .rev()
            .map(|c| format!("{c}."))
            .collect();
        assert_eq!(
            reverse_address(&lower(&format!("{nibbles}ip6.arpa."))),
            Some(IpAddr::V6(v6))
        );
        for bad in [
            "1.20.10.in-addr.arpa.",
            "256.1.20.10.in-addr.arpa.",
            "01.1.20.10.in-addr.arpa.",
            "x.1.20.10.in-addr.arpa.",
            "11.1.20.10.in-addr.example.",
            "1.ip6.arpa.",
        ] {
            assert_eq!(reverse_address(&lower(bad)), None, "{bad}");
        }
    }

    #[test]
    fn character_strings_are_cut_at_255_octets() {
        assert_eq!(character_string("é".repeat(200)).len(), 254);
        assert_eq!(character_string("a".repeat(300)).len(), 255);
    }
}

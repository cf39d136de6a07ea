//! The immutable, fully indexed zone that every reader shares.
//!
//! A [`Snapshot`] is built once from a list of instances and never changes:
//! the refresher builds a new one and swaps it into the [`Store`]. Queries
//! load the current `Arc` once and answer from it without locks, so a query
//! in flight keeps the version it started with. Everything that reads the
//! map (DNS, `list`, the hosts export, metrics) reads the same snapshot.
//!
//! It is also most of the daemon's memory, so it is laid out flat and
//! small (12 MB of heap for 100,000 instances named by a tag, 200,000 names
//! with their instance-id names; a patch shares the names' text with the
//! zone it patches), and [`SnapshotBuilder`] takes instances
//! one at a time and keeps only what the zone needs of each: a zone of
//! 100,000 instances is built without ever holding 100,000 [`Instance`]s.

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use hashbrown::HashTable;
use hickory_proto::rr::{LowerName, Name};
use hickory_proto::serialize::binary::BinEncodable;

use crate::access::Cidr;
use crate::background::checkpoint;
use crate::inventory::packed::{PackError, Packed};
use crate::inventory::Instance;
use crate::naming::{is_instance_id, Naming, NamingReport, Rule, MAX_LABEL};
use crate::statics::{StaticNode, StaticRecords};

/// Where the current snapshot lives: swapped atomically, read without locks.
///
/// Empty until the first successful fetch (or loaded state); the DNS
/// handler answers SERVFAIL for zone names until then.
pub type Store = Arc<ArcSwapOption<Snapshot>>;

/// A new, empty store.
pub fn new_store() -> Store {
    Arc::new(ArcSwapOption::empty())
}

/// `None` in a `u16` string or rule reference.
const NONE: u16 = u16::MAX;
/// `None` in a `u32` name reference.
const NO_NAME: u32 = u32::MAX;

/// One name of the zone: where its parts start in the flat arrays. They
/// end where the next record's start (the record after the last name with
/// data is a sentinel holding the arrays' lengths); empty non-terminals,
/// after the sentinel, have no data. Where its IPv6 addresses start is
/// kept apart, in `Snapshot::ipv6_at`, and only in zones that have any:
/// twelve bytes a name, not sixteen, where a fleet has no IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameRecord {
    /// Its relative name in `Snapshot::names` (see [`Snapshot`]).
    name: u32,
    /// Its first IPv4 address in `Snapshot::ipv4`.
    ipv4: u32,
    /// Its first owner in `Snapshot::owners`.
    owners: u32,
}

impl NameRecord {
    /// A record for the name at `name` whose items start at the current
    /// ends of the address and owner arrays.
    fn next(name: u32, ipv4: &[Ipv4Addr], owners: &[u32]) -> NameRecord {
        NameRecord {
            name,
            ipv4: ipv4.len() as u32,
            owners: owners.len() as u32,
        }
    }
}

/// Appends a record for the name at `name` (see [`NameRecord::next`]),
/// and where its IPv6 addresses start to `ipv6_at`: that stays empty
/// until some name has an IPv6 address, then holds a start for every
/// record before the sentinel and the sentinel's (all of them 0 before
/// the first name with one).
fn push_record(
    records: &mut Vec<NameRecord>,
    ipv6_at: &mut Vec<u32>,
    name: u32,
    (ipv4, ipv6, owners): (&[Ipv4Addr], &[Ipv6Addr], &[u32]),
) {
    if !ipv6.is_empty() && ipv6_at.is_empty() {
        ipv6_at.resize(records.len(), 0);
    }
    if !ipv6_at.is_empty() {
        ipv6_at.push(ipv6.len() as u32);
    }
    records.push(NameRecord::next(name, ipv4, owners));
}

/// The range of record `record`'s IPv6 addresses, from `ipv6_at` (see
/// [`push_record`]); nothing for an empty non-terminal (at or after
/// `named`, the sentinel).
fn ipv6_span(ipv6_at: &[u32], named: usize, record: usize) -> Range<usize> {
    match (ipv6_at.get(record), ipv6_at.get(record + 1)) {
        (Some(&start), Some(&end)) if record < named => start as usize..end as usize,
        _ => 0..0,
    }
}

/// Marks an offset into [`NameText::own`]; offsets without it are into
/// [`NameText::shared`].
const OWN: u32 = 1 << 31;

/// The text of a zone's names (see [`Snapshot`]), in two buffers: one a
/// build made, shared by every zone patched from it since, and the names
/// this zone added after it. A patch that renames one instance then
/// copies one name, not 3 MB of them (issue 18: a reload held two zones'
/// text). Names that left stay in the shared buffer until a patch finds
/// a quarter of it dead and writes one buffer again. Offsets are below
/// 2^31 in each (a zone's text is far smaller: 255 bytes a name at most).
#[derive(Debug, Clone, Default)]
struct NameText {
    /// Names as a build wrote them: a length byte, then the labels.
    shared: Arc<Vec<u8>>,
    /// Names added since, the same way; offsets into it carry [`OWN`].
    own: Vec<u8>,
}

impl NameText {
    /// The text a build wrote, shared from now on.
    fn new(shared: Vec<u8>) -> Self {
        NameText {
            shared: Arc::new(shared),
            own: Vec::new(),
        }
    }

    /// The relative wire labels of the name at `at`.
    fn labels(&self, at: u32) -> &[u8] {
        if at & OWN == 0 {
            SnapshotBuilder::labels(&self.shared, at)
        } else {
            SnapshotBuilder::labels(&self.own, at & !OWN)
        }
    }

    /// Adds a name given as relative wire labels to `own`; its offset.
    fn push(&mut self, labels: &[u8]) -> u32 {
        let at = self.own.len() as u32 | OWN;
        self.own.push(labels.len() as u8);
        self.own.extend_from_slice(labels);
        at
    }

    /// Bytes of the shared buffer that none of `records`' names uses (the
    /// sentinel at `named` has no name).
    fn dead(&self, records: &[NameRecord], named: usize) -> usize {
        let live: usize = (records.iter().enumerate())
            .filter(|&(r, record)| r != named && record.name & OWN == 0)
            .map(|(_, record)| {
                1 + self
                    .shared
                    .get(record.name as usize)
                    .map_or(0, |&n| usize::from(n))
            })
            .sum();
        self.shared.len().saturating_sub(live)
    }
}

/// A served instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InstanceRecord {
    /// Its instance-id name in `Snapshot::names`, which holds the id.
    id: u32,
    /// The rule of its chosen name (index into `Snapshot::rules`), or [`NONE`].
    rule: u16,
    /// Index into `Snapshot::strings`, or [`NONE`].
    availability_zone: u16,
    /// Index into `Snapshot::strings`, or [`NONE`].
    instance_type: u16,
}

/// What a name is to one instance behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameKind {
    /// Its instance-id name.
    InstanceId,
    /// Its primary name (`naming.prefer`).
    Primary,
    /// One of its aliases (`naming.aliases`).
    Alias,
    /// A group it belongs to (`naming.groups`).
    Group,
    /// Its ordinal in a group (`<n>.<group>`).
    Ordinal,
}

impl NameKind {
    /// As `list` and TXT records say it.
    pub fn label(self) -> &'static str {
        match self {
            NameKind::InstanceId => "instance-id",
            NameKind::Primary => "primary",
            NameKind::Alias => "alias",
            NameKind::Group => "group",
            NameKind::Ordinal => "ordinal",
        }
    }
}

/// Marks an owner code (see [`Snapshot::owner_rules`]) as a group's; the
/// rest of the code is the rule's index.
const GROUP: u16 = 0x8000;
/// Marks an owner code as an ordinal's (`<n>.<group>`), with the index of
/// the group's rule.
const ORDINAL: u16 = 0x4000;

/// The kind and rule index an owner code stands for; `None` for NONE (the
/// owner's id or primary name).
fn extra_code(code: u16) -> Option<(NameKind, u16)> {
    match code {
        NONE => None,
        c if c & GROUP != 0 => Some((NameKind::Group, c & !GROUP)),
        c if c & ORDINAL != 0 => Some((NameKind::Ordinal, c & !ORDINAL)),
        c => Some((NameKind::Alias, c)),
    }
}

/// The owner code of an extra name of `kind` from the rule at `rule`, or
/// `None` when that index does not fit beside the kind bits.
fn extra_owner_code(kind: NameKind, rule: u16) -> Option<u16> {
    if rule >= ORDINAL {
        return None;
    }
    Some(match kind {
        NameKind::Group => rule | GROUP,
        NameKind::Ordinal => rule | ORDINAL,
        _ => rule,
    })
}

/// Each group's ordinals (issue 17): by the group's relative wire labels,
/// each member's instance id and ordinal.
pub type Ordinals = HashMap<Vec<u8>, HashMap<String, u32>>;

/// Relative wire labels as dotted text (the ordinals file's group names).
pub fn labels_text(wire: &[u8]) -> String {
    wire_text(wire)
}

/// Dotted text as relative wire labels, if it is a name this zone could
/// hold: LDH labels of 1 to 63 octets, lowercase, 255 octets at most.
pub fn text_labels(text: &str) -> Option<Vec<u8>> {
    let mut wire = Vec::with_capacity(text.len() + 1);
    for label in text.split('.') {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return None;
        }
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    (wire.len() <= 255).then_some(wire)
}

/// One instance behind a name (a view into a [`Snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The instance id, lowercase.
    pub instance_id: &'a str,
    /// The rule that gave this name to the instance.
    pub rule: &'a Rule,
    /// What the name is to this instance.
    pub kind: NameKind,
    /// Its availability zone, when known.
    pub availability_zone: Option<&'a str>,
    /// Its instance type, when known.
    pub instance_type: Option<&'a str>,
}

/// Everything a name answers with (a view into a [`Snapshot`]).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    snapshot: &'a Snapshot,
    record: usize,
}

impl<'a> Entry<'a> {
    /// The name relative to the zone in lowercase wire format, without the
    /// final zero (`\x05web-1` for `web-1.<zone>`).
    pub fn relative_wire(&self) -> &'a [u8] {
        self.snapshot.relative(self.record)
    }

    /// The full name, lowercase, fully qualified.
    pub fn name(&self) -> Name {
        let mut wire = self.relative_wire().to_vec();
        wire.extend_from_slice(&self.snapshot.zone_wire);
        name_from_wire(&wire)
    }

    /// The full name as text with its final dot, e.g. `web-1.fleet.internal.`.
    pub fn text(&self) -> String {
        let mut text = wire_text(self.relative_wire());
        text.push('.');
        text.push_str(&self.snapshot.zone_text);
        text
    }

    /// IPv4 addresses of all owners, sorted, without duplicates.
    pub fn ipv4(&self) -> &'a [Ipv4Addr] {
        let s = self.snapshot;
        &s.ipv4[s.span(self.record, |r| r.ipv4)]
    }

    /// IPv6 addresses of all owners, sorted, without duplicates.
    pub fn ipv6(&self) -> &'a [Ipv6Addr] {
        let s = self.snapshot;
        &s.ipv6[s.span6(self.record)]
    }

    /// Its static records (`static_records`), if it has any: then they
    /// are what it answers with, and [`Entry::ipv4`] and [`Entry::ipv6`]
    /// are their A and AAAA addresses; owners, if any, are instances whose
    /// claim on the name the static records override.
    pub fn statics(&self) -> Option<&'a StaticNode> {
        self.snapshot.static_node(self.record)
    }

    /// The instances that carry the name, sorted by instance id.
    pub fn owners(&self) -> impl ExactSizeIterator<Item = Owner<'a>> + 'a {
        let snapshot = self.snapshot;
        let name = snapshot.records[self.record].name;
        snapshot
            .span(self.record, |r| r.owners)
            .map(move |at| snapshot.owner(at, name))
    }
}

/// A name from wire bytes this module encoded from a valid name.
fn name_from_wire(wire: &[u8]) -> Name {
    use hickory_proto::serialize::binary::BinDecodable;
    Name::from_bytes(wire).unwrap_or_else(|_| Name::root())
}

/// `name` lowercased in wire format: length-prefixed labels and a zero.
pub fn wire_key(name: &Name) -> Box<[u8]> {
    let mut key = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key.push(0);
    key.into_boxed_slice()
}

/// The labels of the wire name `key` before `apex`, if `key` is at or
/// below `apex`: some label boundary of it starts the apex's bytes.
pub fn split_zone<'k>(key: &'k [u8], apex: &[u8]) -> Option<&'k [u8]> {
    let mut pos = 0;
    while key.len().saturating_sub(pos) > apex.len() {
        pos += 1 + usize::from(key[pos]);
    }
    (pos < key.len() && key[pos..] == *apex).then(|| &key[..pos])
}

/// Wire-format labels (no final zero) as dotted text without a final dot.
/// Bytes outside printable ASCII other than LDH never occur in built names.
fn wire_text(wire: &[u8]) -> String {
    let mut text = String::with_capacity(wire.len());
    for byte in text_bytes(wire) {
        text.push(char::from(byte));
    }
    text
}

/// The bytes of wire-format labels in presentation order: each label's
/// bytes, a `.` between labels.
fn text_bytes(wire: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut pos = 0usize;
    let mut left = 0usize;
    std::iter::from_fn(move || {
        let &byte = wire.get(pos)?;
        pos += 1;
        if left > 0 {
            left -= 1;
            return Some(byte);
        }
        // A length byte: the start of a label, a dot unless it is the first.
        left = usize::from(byte);
        if pos == 1 {
            left = left.saturating_sub(1);
            let &first = wire.get(pos)?;
            pos += 1;
            Some(first)
        } else {
            Some(b'.')
        }
    })
}

/// Compares two names given as wire-format labels in the order of their
/// text (`db.x` before `db-x`, `web-10` before `web-9`): the order of
/// [`Snapshot::entries`]. Names of one label, nearly all, compare their
/// bytes directly.
pub(crate) fn text_order(a: &[u8], b: &[u8]) -> Ordering {
    if single_label(a) && single_label(b) {
        return a[1..].cmp(&b[1..]);
    }
    text_bytes(a).cmp(text_bytes(b))
}

/// Whether wire-format labels are one label.
fn single_label(labels: &[u8]) -> bool {
    labels
        .first()
        .is_some_and(|&n| usize::from(n) + 1 == labels.len())
}

/// How many names a zone change added, removed and re-pointed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameChanges {
    /// Names that are new.
    pub added: usize,
    /// Names that are gone.
    pub removed: usize,
    /// Names whose addresses changed.
    pub changed: usize,
}

/// Appends `relative` (a dotted LDH name) as a length byte and lowercase
/// wire-format labels. On an empty or over-long label, or a name longer
/// than `room` bytes in wire form, `out` is left as it was and `false`
/// returned.
fn push_name(relative: &str, room: usize, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.push(0);
    for label in relative.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            out.truncate(start);
            return false;
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    let len = out.len() - start - 1;
    if len > room {
        out.truncate(start);
        return false;
    }
    out[start] = len as u8;
    true
}

/// What a name in the zone is.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The zone apex (SOA and NS live here).
    Apex,
    /// A name with data.
    Name(Entry<'a>),
    /// A name that exists only because names below it do (`db` for
    /// `db.primary`): NODATA for every type.
    EmptyNonTerminal,
    /// No such name: NXDOMAIN.
    NotFound,
}

/// The immutable zone built from one inventory.
///
/// The layout is flat so that a zone of 100,000 instances stays small and
/// quick to build and drop. Every name lives once in `names` (one byte
/// buffer, shared with the zones patched from it, and the names added
/// since: [`NameText`]), relative to the zone: a length byte, then its lowercase
/// wire-format labels without the final zero (`\x06\x05web-1`); an instance
/// id is its instance-id name there. Names are added in the order
/// instances come; the records that point at them are sorted by the
/// names' text, and their addresses and owners follow in that order in
/// shared arrays. One hash table of `u32` indexes finds a name from a
/// packet's bytes. Instances are sorted by id. So everything but the
/// offsets into `names` and the interned strings comes out in a canonical
/// order, and [`Snapshot::differs_from`] compares those two by value.
#[derive(Debug)]
pub struct Snapshot {
    /// The zone apex, lowercase, fully qualified.
    zone: LowerName,
    /// The apex in lowercase wire form.
    zone_wire: Box<[u8]>,
    /// The apex as text with its final dot.
    zone_text: Box<str>,
    /// SOA serial; rises only when the content changes.
    serial: u32,
    /// When this snapshot was built.
    built_at: SystemTime,
    /// Every name and instance id (see above).
    names: NameText,
    /// Names with data (the first `named`, sorted by their text relative to
    /// the zone), a sentinel, then the empty non-terminals: names that exist
    /// only as ancestors of other names.
    records: Vec<NameRecord>,
    /// How many of `records` have data.
    named: usize,
    /// Every record's index but the sentinel's, hashed by its relative wire
    /// labels.
    index: HashTable<u32>,
    /// The hash of `index` (seeded per process: names come from tags and
    /// queries, so their hashes must not be predictable).
    hasher: RandomState,
    /// Addresses of all names.
    ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses of all names.
    ipv6: Vec<Ipv6Addr>,
    /// Where each record's IPv6 addresses start in `ipv6`, up to the
    /// sentinel's; empty when no name has one (see [`push_record`]).
    ipv6_at: Vec<u32>,
    /// Owners of all names, as indexes into `instances`.
    owners: Vec<u32>,
    /// For each of `owners`, the alias or group rule that gave it the name
    /// (index into `rules`, with [`GROUP`] set for a group), or [`NONE`]
    /// for its id or its primary name; empty when no instance has an
    /// extra name (the common case costs nothing).
    owner_rules: Vec<u16>,
    /// Served instances, sorted by id.
    instances: Vec<InstanceRecord>,
    /// Distinct availability zones and instance types.
    strings: Vec<Box<str>>,
    /// Distinct naming rules; the first is [`Rule::InstanceId`].
    rules: Vec<Rule>,
    /// (IPv4 address, record of the primary name of an instance that has
    /// it), sorted, without duplicates.
    reverse4: Vec<(u32, u32)>,
    /// The same for IPv6.
    reverse6: Vec<(Ipv6Addr, u32)>,
    /// What naming rewrote and skipped.
    report: NamingReport,
    /// The static records (`static_records`), shared with the naming
    /// policy that built this zone.
    statics: Arc<StaticRecords>,
    /// (record, index in `statics.nodes()`) for every name with static
    /// records, sorted: those names answer from the static records, even
    /// where instances also claim them (their owners stay, for `list`).
    static_of: Vec<(u32, u32)>,
}

/// Hands out one index per distinct value, in order of first use.
struct Interner<T> {
    values: Vec<T>,
    seen: HashMap<T, u16>,
}

impl<T: Clone + Eq + std::hash::Hash> Interner<T> {
    fn new() -> Self {
        Interner {
            values: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// The index of `value`; `owned` makes the value to keep, and runs
    /// only for a value not seen before (so looking up an instance's zone
    /// allocates nothing). [`NONE`] once 65,535 distinct values are in (no
    /// fleet has that many zones, types or rules; the value is then simply
    /// not shown).
    fn get<Q>(&mut self, value: &Q, owned: impl FnOnce() -> T) -> u16
    where
        T: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        if let Some(&i) = self.seen.get(value) {
            return i;
        }
        let Ok(i) = u16::try_from(self.values.len()) else {
            return NONE;
        };
        if i == NONE {
            return NONE;
        }
        let value = owned();
        self.values.push(value.clone());
        self.seen.insert(value, i);
        i
    }
}

/// An instance as the builder keeps it until [`SnapshotBuilder::finish`].
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Its instance-id name in the builder's `names`.
    id: u32,
    /// Its chosen name there, or [`NO_NAME`].
    name: u32,
    /// The rule of its chosen name, or [`NONE`].
    rule: u16,
    /// Interned zone, or [`NONE`].
    availability_zone: u16,
    /// Interned type, or [`NONE`].
    instance_type: u16,
    /// Its addresses: from here to the next pending instance's.
    ipv4: u32,
    /// The same for IPv6.
    ipv6: u32,
}

/// Builds a [`Snapshot`] from instances given one at a time.
///
/// Of each instance it keeps its names (in the snapshot's own buffer),
/// addresses and a few indexes, about 60 bytes, and [`finish`] sorts
/// and indexes them without copying the names.
///
/// [`finish`]: SnapshotBuilder::finish
pub struct SnapshotBuilder<'n> {
    /// How instances are named.
    naming: &'n Naming,
    /// The apex, lowercase.
    zone: Name,
    /// The apex in lowercase wire form.
    zone_wire: Box<[u8]>,
    /// What naming rewrote and skipped, and what was not served.
    report: NamingReport,
    /// The snapshot's `names`, as instances come.
    names: Vec<u8>,
    /// Served instances as they came.
    pending: Vec<Pending>,
    /// Their addresses, each instance's sorted.
    ipv4: Vec<Ipv4Addr>,
    /// Their IPv6 addresses.
    ipv6: Vec<Ipv6Addr>,
    /// Availability zones and types.
    strings: Interner<Box<str>>,
    /// Naming rules.
    rules: Interner<Rule>,
    /// Extra names (`naming.aliases`) of the pending instances.
    aliases: Vec<AliasName>,
    /// The ordinals of the zone this one follows, which members keep.
    ordinals: Option<Ordinals>,
}

/// An extra name (alias or group) of a pending instance.
#[derive(Debug, Clone, Copy)]
struct AliasName {
    /// The instance's index in `pending`.
    instance: u32,
    /// The name in the builder's `names`.
    name: u32,
    /// Its owner code: the rule that gave it, and whether a group's.
    rule: u16,
}

/// A build's chosen names in the order the zone takes them: by text, then
/// by instance, then by owner code. The primary names (code [`NONE`]), one
/// an instance at most, are kept apart from the extra ones (aliases, group
/// and ordinal names, each with its code): 8 bytes a name instead of 12,
/// 0.4 MB less at a build's peak at 100,000 instances (issue 18).
#[derive(Debug, Default)]
struct Chosen {
    /// (name in the builder's `names`, instance): code [`NONE`].
    primary: Vec<(u32, u32)>,
    /// (name, instance, owner code).
    extra: Vec<(u32, u32, u16)>,
    /// How many of each the build has taken.
    taken: (usize, usize),
}

impl Chosen {
    /// How many names in all.
    fn len(&self) -> usize {
        self.primary.len() + self.extra.len()
    }

    /// The order of two names, their text in `names`.
    fn order(names: &[u8], a: &(u32, u32, u16), b: &(u32, u32, u16)) -> Ordering {
        text_order(
            SnapshotBuilder::labels(names, a.0),
            SnapshotBuilder::labels(names, b.0),
        )
        .then(a.1.cmp(&b.1))
        .then(a.2.cmp(&b.2))
    }

    /// The next name to take, and whether it is an extra one.
    fn next(&self, names: &[u8]) -> Option<((u32, u32, u16), bool)> {
        let primary = (self.primary.get(self.taken.0)).map(|&(name, i)| (name, i, NONE));
        let extra = self.extra.get(self.taken.1).copied();
        match (primary, extra) {
            (Some(p), Some(e)) if Self::order(names, &e, &p) == Ordering::Less => Some((e, true)),
            (Some(p), _) => Some((p, false)),
            (None, e) => e.map(|e| (e, true)),
        }
    }

    /// Takes the name [`Chosen::next`] gave.
    fn take(&mut self, extra: bool) {
        if extra {
            self.taken.1 += 1;
        } else {
            self.taken.0 += 1;
        }
    }
}

impl<'n> SnapshotBuilder<'n> {
    /// A builder for the zone `zone` with the naming policy `naming`,
    /// expecting about `instances` instances (to size its buffers).
    pub fn new(naming: &'n Naming, zone: &Name, instances: usize) -> Self {
        let zone = zone.to_lowercase();
        let zone_wire = wire_key(&zone);
        let mut rules = Interner::new();
        rules.get(&Rule::InstanceId, || Rule::InstanceId);
        // Room reserved but never touched is not resident, so reserving for
        // long names costs nothing where names are short, and saves the
        // copies of growing.
        SnapshotBuilder {
            naming,
            zone,
            zone_wire,
            report: NamingReport::default(),
            names: Vec::with_capacity(instances * 48),
            pending: Vec::with_capacity(instances),
            ipv4: Vec::with_capacity(instances),
            ipv6: Vec::new(),
            strings: Interner::new(),
            rules,
            aliases: Vec::new(),
            ordinals: None,
        }
    }

    /// This builder giving group members the ordinals they had in
    /// `previous` (a zone of the same naming), newcomers the lowest free
    /// ones.
    pub fn with_ordinals_of(self, previous: &Snapshot) -> Self {
        self.with_ordinals(previous.ordinals())
    }

    /// This builder giving group members the ordinals of `ordinals` (read
    /// back from the state directory after a restart).
    pub fn with_ordinals(mut self, ordinals: Ordinals) -> Self {
        self.ordinals = Some(ordinals);
        self
    }

    /// A builder that starts with every instance `current` serves but
    /// those whose (lowercase) id is in `drop`, as `current` has them:
    /// their names, rules, zones, types and addresses are copied, nothing
    /// is read from a packed unit or named again. Adding what replaces the
    /// dropped instances and finishing gives the zone a full build of the
    /// same inventory gives (an event's update, issue 16: the cost of
    /// naming 100,000 instances is not paid for one). `current` must have
    /// been built with `naming`; `None` when it is of another zone.
    pub fn seeded(
        naming: &'n Naming,
        zone: &Name,
        current: &Snapshot,
        drop: &HashSet<String>,
        extra: usize,
    ) -> Option<Self> {
        let mut builder = Self::new(naming, zone, current.instances.len() + extra);
        if builder.zone_wire != current.zone_wire {
            return None;
        }
        if !naming.group_rules().is_empty() {
            builder.ordinals = Some(current.ordinals());
        }
        // Each instance's chosen name, and the record of its id name
        // (which holds its own addresses), from the owners of each name.
        let count = current.instances.len();
        let (mut chosen, mut own) = (vec![NO_NAME; count], vec![None; count]);
        // (instance, name, rule) of every alias
        let mut aliases: Vec<(usize, u32, u16)> = Vec::new();
        for record in 0..current.named {
            checkpoint();
            let name = current.records[record].name;
            for at in current.span(record, |r| r.owners) {
                let o = current.owners[at] as usize;
                if current.instances[o].id == name {
                    own[o] = Some(record);
                } else if let Some(rule) = current.alias_rule(at) {
                    // Ordinals are assigned again in `finish`, from
                    // `current`'s: only the memberships are copied.
                    if !matches!(extra_code(rule), Some((NameKind::Ordinal, _))) {
                        aliases.push((o, name, rule));
                    }
                } else {
                    chosen[o] = name;
                }
            }
        }
        aliases.sort_unstable_by_key(|a| a.0);
        let mut next_alias = 0;
        for (i, served) in current.instances.iter().enumerate() {
            checkpoint();
            // An id name is one label: its length byte, then the id.
            let id = current.names.labels(served.id);
            let id = std::str::from_utf8(id.get(1..).unwrap_or_default()).unwrap_or_default();
            // this instance's aliases: skipped with it, or copied
            let first_alias = next_alias;
            while aliases.get(next_alias).is_some_and(|a| a.0 == i) {
                next_alias += 1;
            }
            if drop.contains(id) {
                continue;
            }
            for &(_, name, code) in &aliases[first_alias..next_alias] {
                let Some((kind, rule)) = extra_code(code) else {
                    continue;
                };
                let Some(rule) = current.rules.get(usize::from(rule)) else {
                    continue;
                };
                let rule = builder.rules.get(rule, || rule.clone());
                let Some(code) = extra_owner_code(kind, rule) else {
                    continue;
                };
                let alias = AliasName {
                    instance: builder.pending.len() as u32,
                    name: builder.copy_name(&current.names, name),
                    rule: code,
                };
                builder.aliases.push(alias);
            }
            let id = builder.copy_name(&current.names, served.id);
            let (name, rule) = match chosen[i] {
                NO_NAME => (NO_NAME, NONE),
                at => (
                    builder.copy_name(&current.names, at),
                    current
                        .rules
                        .get(usize::from(served.rule))
                        .map_or(NONE, |r| builder.rules.get(r, || r.clone())),
                ),
            };
            let strings = &mut builder.strings;
            let mut intern = |k: u16| {
                current
                    .strings
                    .get(usize::from(k))
                    .map_or(NONE, |v| strings.get(&**v, || v.clone()))
            };
            let (availability_zone, instance_type) = (
                intern(served.availability_zone),
                intern(served.instance_type),
            );
            let (v4, v6) = (builder.ipv4.len(), builder.ipv6.len());
            if let Some(record) = own[i] {
                builder
                    .ipv4
                    .extend_from_slice(&current.ipv4[current.span(record, |r| r.ipv4)]);
                builder
                    .ipv6
                    .extend_from_slice(&current.ipv6[current.span6(record)]);
            }
            builder.pending.push(Pending {
                id,
                name,
                rule,
                availability_zone,
                instance_type,
                ipv4: v4 as u32,
                ipv6: v6 as u32,
            });
        }
        let kept = |id: &str| !drop.contains(&id.to_ascii_lowercase());
        let report = &current.report;
        builder.report = NamingReport {
            rewrites: (report.rewrites.iter())
                .filter(|r| kept(&r.instance_id))
                .cloned()
                .collect(),
            skips: (report.skips.iter())
                .filter(|s| kept(&s.instance_id))
                .cloned()
                .collect(),
            not_running: report.not_running,
            bad_ids: report.bad_ids.clone(),
        };
        Some(builder)
    }

    /// Copies the name at `at` in `names` (its length byte and labels) to
    /// the end of the builder's; where it starts there.
    fn copy_name(&mut self, names: &NameText, at: u32) -> u32 {
        let start = self.names.len() as u32;
        let labels = names.labels(at);
        self.names.push(labels.len() as u8);
        self.names.extend_from_slice(labels);
        start
    }

    /// Adds `instance`: served with its names if it is running and its id
    /// is valid, else only counted in the report.
    pub fn add(&mut self, instance: &Instance) {
        checkpoint();
        if !instance.is_running() {
            self.report.not_running += 1;
            return;
        }
        let room = 255 - self.zone_wire.len();
        let id_start = self.names.len();
        let id = instance.id.to_ascii_lowercase();
        if !is_instance_id(&id) || !push_name(&id, room, &mut self.names) {
            self.report.bad_ids.push(instance.id.clone());
            return;
        }
        let (mut name, mut rule) = (NO_NAME, NONE);
        let naming = self.naming;
        let primary = naming.choose(instance, &mut self.report);
        if let Some(choice) = &primary {
            let start = self.names.len();
            // Naming yields only valid names that fit, so this holds; a
            // name that somehow does not is left out rather than served wrong.
            if push_name(&choice.name, room, &mut self.names) {
                name = start as u32;
                rule = self.rules.get(&choice.rule, || choice.rule.clone());
            }
        }
        if !naming.alias_rules().is_empty() || !naming.group_rules().is_empty() {
            let primary = primary.as_ref().map(|c| c.name.as_str());
            let aliases = naming.aliases(instance, primary, &mut self.report);
            let mut taken: Vec<&str> = aliases.iter().map(|c| c.name.as_str()).collect();
            taken.extend(primary);
            let groups = naming.groups(instance, &taken, &mut self.report);
            let extra = (aliases.iter().map(|c| (c, NameKind::Alias)))
                .chain(groups.iter().map(|c| (c, NameKind::Group)));
            for (choice, kind) in extra {
                let start = self.names.len();
                let rule = self.rules.get(&choice.rule, || choice.rule.clone());
                let Some(code) = extra_owner_code(kind, rule) else {
                    continue;
                };
                if push_name(&choice.name, room, &mut self.names) {
                    self.aliases.push(AliasName {
                        instance: self.pending.len() as u32,
                        name: start as u32,
                        rule: code,
                    });
                }
            }
        }
        let (v4, v6) = (self.ipv4.len(), self.ipv6.len());
        self.ipv4.extend_from_slice(&instance.private_ipv4);
        self.ipv6.extend_from_slice(&instance.ipv6);
        sort_dedup_tail(&mut self.ipv4, v4);
        sort_dedup_tail(&mut self.ipv6, v6);
        let strings = &mut self.strings;
        let mut intern = |value: &Option<String>| {
            value
                .as_deref()
                .map_or(NONE, |v| strings.get(v, || v.into()))
        };
        let pending = Pending {
            id: id_start as u32,
            name,
            rule,
            availability_zone: intern(&instance.availability_zone),
            instance_type: intern(&instance.instance_type),
            ipv4: v4 as u32,
            ipv6: v6 as u32,
        };
        self.pending.push(pending);
    }

    /// Adds every instance of `packed`.
    pub fn add_packed(&mut self, packed: &Packed) -> Result<(), PackError> {
        packed.for_each(|instance| self.add(instance))
    }

    /// The relative wire labels of the name at `at` in `names`.
    fn labels(names: &[u8], at: u32) -> &[u8] {
        let at = at as usize;
        let len = usize::from(names[at]);
        &names[at + 1..at + 1 + len]
    }

    /// Sorts, indexes and returns the zone. The serial is the current Unix
    /// time; [`Snapshot::with_serial_after`] makes it follow a predecessor.
    pub fn finish(self) -> Snapshot {
        let SnapshotBuilder {
            naming,
            zone,
            zone_wire,
            report,
            mut names,
            pending,
            ipv4: pending_v4,
            ipv6: pending_v6,
            strings,
            rules,
            aliases,
            ordinals: previous_ordinals,
            ..
        } = self;
        let span = |k: usize| -> (Range<usize>, Range<usize>) {
            let next = pending.get(k + 1);
            let v4 = pending[k].ipv4 as usize..next.map_or(pending_v4.len(), |n| n.ipv4 as usize);
            let v6 = pending[k].ipv6 as usize..next.map_or(pending_v6.len(), |n| n.ipv6 as usize);
            (v4, v6)
        };

        // Instances in id order; one instance listed twice (by two units)
        // is one instance, and the first copy wins.
        let mut order: Vec<u32> = (0..pending.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            checkpoint();
            let (x, y) = (pending[a as usize].id, pending[b as usize].id);
            Self::labels(&names, x)
                .cmp(Self::labels(&names, y))
                .then(a.cmp(&b))
        });
        order.dedup_by(|later, earlier| {
            Self::labels(&names, pending[*later as usize].id)
                == Self::labels(&names, pending[*earlier as usize].id)
        });
        let instances: Vec<InstanceRecord> = order
            .iter()
            .map(|&k| {
                let p = &pending[k as usize];
                InstanceRecord {
                    id: p.id,
                    rule: p.rule,
                    availability_zone: p.availability_zone,
                    instance_type: p.instance_type,
                }
            })
            .collect();

        // Chosen names, sorted by text and then by instance (so each
        // name's owners come in id order). Instance-id names are already
        // in order and never equal a chosen name (naming refuses names
        // shaped like ids): the two runs are merged.
        // Aliases join them, each with its rule (primary names: NONE); an
        // alias of a duplicate left out by the dedup above goes with it.
        let mut chosen = Chosen {
            primary: (order.iter().enumerate())
                .filter(|(_, &k)| pending[k as usize].name != NO_NAME)
                .map(|(i, &k)| (pending[k as usize].name, i as u32))
                .collect(),
            ..Chosen::default()
        };
        if !aliases.is_empty() {
            let mut rank = vec![u32::MAX; pending.len()];
            for (i, &k) in order.iter().enumerate() {
                rank[k as usize] = i as u32;
            }
            chosen.extra.extend(
                aliases
                    .iter()
                    .filter(|a| rank[a.instance as usize] != u32::MAX)
                    .map(|a| (a.name, rank[a.instance as usize], a.rule)),
            );
        }
        drop(aliases);
        // Ordinals: each group's members, in id order, keep the ordinal
        // they had and newcomers take the lowest free ones; `<n>.<group>`
        // names the member.
        let mut groups: Vec<(u32, u32, u16)> = (chosen.extra.iter())
            .filter(|c| matches!(extra_code(c.2), Some((NameKind::Group, _))))
            .copied()
            .collect();
        if !groups.is_empty() {
            groups.sort_unstable_by(|a, b| {
                Self::labels(&names, a.0)
                    .cmp(Self::labels(&names, b.0))
                    .then(a.1.cmp(&b.1))
            });
            let room = 255 - zone_wire.len();
            let empty = HashMap::new();
            // (name, in `names` form: its length, then its labels; owner; code)
            let mut added: Vec<(Vec<u8>, u32, u16)> = Vec::new();
            for run in
                groups.chunk_by(|a, b| Self::labels(&names, a.0) == Self::labels(&names, b.0))
            {
                checkpoint();
                let group = Self::labels(&names, run[0].0);
                let held = previous_ordinals
                    .as_ref()
                    .and_then(|o| o.get(group))
                    .unwrap_or(&empty);
                let ids: Vec<String> = run
                    .iter()
                    .map(|&(_, i, _)| {
                        let id = Self::labels(&names, pending[order[i as usize] as usize].id);
                        String::from_utf8_lossy(id.get(1..).unwrap_or_default()).into_owned()
                    })
                    .collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let ordinals = crate::naming::assign_ordinals(&refs, |id| held.get(id).copied());
                for (&(_, i, code), n) in run.iter().zip(ordinals) {
                    let digits = n.to_string();
                    let len = 1 + digits.len() + group.len();
                    let code = extra_code(code)
                        .and_then(|(_, rule)| extra_owner_code(NameKind::Ordinal, rule));
                    // A group name that leaves no room for the ordinal's
                    // label gives none.
                    let (Some(code), true) = (code, len <= room) else {
                        continue;
                    };
                    let mut name = Vec::with_capacity(1 + len);
                    name.push(len as u8);
                    name.push(digits.len() as u8);
                    name.extend_from_slice(digits.as_bytes());
                    name.extend_from_slice(group);
                    added.push((name, i, code));
                }
            }
            for (name, i, code) in added {
                chosen.extra.push((names.len() as u32, i, code));
                names.extend_from_slice(&name);
            }
        }
        drop((groups, previous_ordinals));
        let has_aliases = chosen.extra.iter().any(|c| c.2 != NONE);
        chosen.primary.sort_unstable_by(|a, b| {
            checkpoint();
            text_order(Self::labels(&names, a.0), Self::labels(&names, b.0)).then(a.1.cmp(&b.1))
        });
        chosen.extra.sort_unstable_by(|a, b| {
            checkpoint();
            Chosen::order(&names, a, b)
        });

        // Each instance in id order (its id name is `instances[i].id`):
        // where its addresses start, the addresses moved into that order so
        // that an instance's end where the next one's start (the last start
        // is a sentinel). The IPv6 starts exist once some instance has an
        // IPv6 address: an IPv4 fleet's would all be 0. `pending` and
        // `order` go before the zone's arrays are made: 1.6 MB less at the
        // build's peak at 100,000 instances, and these starts instead of
        // (id, IPv4, IPv6) triples 0.8 MB less.
        let count = order.len();
        let mut v4_at: Vec<u32> = Vec::with_capacity(count + 1);
        let mut v6_at: Option<Vec<u32>> = None;
        let mut v4s: Vec<Ipv4Addr> = Vec::with_capacity(pending_v4.len());
        let mut v6s: Vec<Ipv6Addr> = Vec::with_capacity(pending_v6.len());
        for (i, &k) in order.iter().enumerate() {
            let (v4, v6) = span(k as usize);
            v4_at.push(v4s.len() as u32);
            if v6_at.is_none() && !v6.is_empty() {
                let mut starts = Vec::with_capacity(count + 1);
                starts.resize(i, 0);
                v6_at = Some(starts);
            }
            if let Some(starts) = &mut v6_at {
                starts.push(v6s.len() as u32);
            }
            v4s.extend_from_slice(&pending_v4[v4]);
            v6s.extend_from_slice(&pending_v6[v6]);
        }
        v4_at.push(v4s.len() as u32);
        if let Some(starts) = &mut v6_at {
            starts.push(v6s.len() as u32);
        }
        drop((pending, pending_v4, pending_v6, order));
        crate::background::collect_freed();
        let addresses = |i: usize| {
            let v6 = (v6_at.as_ref()).map_or(0..0, |at| at[i] as usize..at[i + 1] as usize);
            (&v4s[v4_at[i] as usize..v4_at[i + 1] as usize], &v6s[v6])
        };

        let mut records: Vec<NameRecord> = Vec::with_capacity(count + chosen.len() + 1);
        let mut ipv6_at: Vec<u32> = Vec::new();
        let mut ipv4: Vec<Ipv4Addr> = Vec::with_capacity(v4s.len() * 2);
        let mut ipv6: Vec<Ipv6Addr> = Vec::new();
        let mut owners: Vec<u32> = Vec::with_capacity(count + chosen.len());
        let mut owner_rules: Vec<u16> = Vec::new();
        // Each instance's primary name: its chosen one, else its id's.
        let mut primary: Vec<u32> = vec![NO_NAME; count];
        let mut next_id = 0usize;
        // Static names are a third sorted run (`static_records`).
        let statics = naming.statics().clone();
        let mut static_of: Vec<(u32, u32)> = Vec::new();
        let mut next_static = 0usize;
        loop {
            checkpoint();
            let id_name = instances.get(next_id).map(|r| r.id);
            let chosen_name = chosen.next(&names).map(|(c, _)| c.0);
            // A static name goes in where no fleet name comes before it. One
            // equal to chosen names takes the name over: it answers with the
            // static records, and the instances that claim it stay its
            // owners only so that `list` can say what was overridden (no
            // PTR names it: theirs falls back to their id names).
            // Instance-id names are never static (the parser refuses them).
            if let Some(node) = statics.nodes().get(next_static) {
                let before = |at: Option<u32>| {
                    at.is_none_or(|at| {
                        text_order(&node.labels, Self::labels(&names, at)) != Ordering::Greater
                    })
                };
                if before(id_name) && before(chosen_name) {
                    let record = records.len() as u32;
                    let taken = chosen_name.filter(|&c| Self::labels(&names, c) == &*node.labels);
                    let name = match taken {
                        Some(c) => c,
                        None => {
                            let at = names.len() as u32;
                            names.push(node.labels.len() as u8);
                            names.extend_from_slice(&node.labels);
                            at
                        }
                    };
                    push_record(&mut records, &mut ipv6_at, name, (&ipv4, &ipv6, &owners));
                    ipv4.extend_from_slice(&node.ipv4);
                    ipv6.extend_from_slice(&node.ipv6);
                    while let Some(((other, i, alias), extra)) = chosen.next(&names) {
                        if taken.is_none() || Self::labels(&names, other) != &*node.labels {
                            break;
                        }
                        owners.push(i);
                        if has_aliases {
                            owner_rules.push(alias);
                        }
                        chosen.take(extra);
                    }
                    static_of.push((record, next_static as u32));
                    next_static += 1;
                    continue;
                }
            }
            // The group of claims on one name: an instance's id, or the
            // chosen names equal to the next one.
            let (name, group) = match (id_name, chosen_name) {
                (None, None) => break,
                (Some(i), Some(c))
                    if text_order(Self::labels(&names, c), Self::labels(&names, i))
                        == Ordering::Less =>
                {
                    (c, None)
                }
                (Some(i), _) => (i, Some(next_id)),
                (None, Some(c)) => (c, None),
            };
            let record = records.len() as u32;
            push_record(&mut records, &mut ipv6_at, name, (&ipv4, &ipv6, &owners));
            let (v4_start, v6_start) = (ipv4.len(), ipv6.len());
            if let Some(i) = group {
                let (v4, v6) = addresses(i);
                ipv4.extend_from_slice(v4);
                ipv6.extend_from_slice(v6);
                owners.push(i as u32);
                if has_aliases {
                    owner_rules.push(NONE);
                }
                // Its primary name, unless its chosen name comes (or came)
                // and is not static.
                if primary[i] == NO_NAME {
                    primary[i] = record;
                }
                next_id += 1;
                continue;
            }
            let labels = Self::labels(&names, name);
            let mut members = 0;
            while let Some(((other, i, alias), extra)) = chosen.next(&names) {
                if Self::labels(&names, other) != labels {
                    break;
                }
                let (v4, v6) = addresses(i as usize);
                ipv4.extend_from_slice(v4);
                ipv6.extend_from_slice(v6);
                owners.push(i);
                if has_aliases {
                    owner_rules.push(alias);
                }
                // PTR names an instance's primary name, never an alias.
                if alias == NONE {
                    primary[i as usize] = record;
                }
                members += 1;
                chosen.take(extra);
            }
            if members > 1 {
                sort_dedup_tail(&mut ipv4, v4_start);
                sort_dedup_tail(&mut ipv6, v6_start);
            }
        }
        drop(chosen);
        let named = records.len();
        crate::background::collect_freed();
        push_record(&mut records, &mut ipv6_at, 0, (&ipv4, &ipv6, &owners));

        let mut reverse4: Vec<(u32, u32)> = Vec::with_capacity(v4s.len());
        let mut reverse6: Vec<(Ipv6Addr, u32)> = Vec::new();
        for (i, &record) in primary.iter().enumerate() {
            checkpoint();
            let (v4, v6) = addresses(i);
            reverse4.extend(v4.iter().map(|a| (u32::from(*a), record)));
            reverse6.extend(v6.iter().map(|a| (*a, record)));
        }
        drop((v4_at, v6_at, v4s, v6s, primary));
        crate::background::collect_freed();
        reverse4.sort_unstable_by(|a, b| {
            checkpoint();
            a.cmp(b)
        });
        reverse4.dedup();
        reverse6.sort_unstable();
        reverse6.dedup();

        let mut names = NameText::new(names);
        let (index, hasher) = index_names(&mut names, &mut records, named, &ipv4, &owners);

        Snapshot {
            zone_text: zone.to_ascii().into(),
            zone: LowerName::new(&zone),
            zone_wire,
            serial: unix_serial(SystemTime::now()),
            built_at: SystemTime::now(),
            names,
            records,
            named,
            index,
            hasher,
            ipv4,
            ipv6,
            ipv6_at,
            owners,
            owner_rules,
            instances,
            strings: strings.values,
            rules: rules.values,
            reverse4,
            reverse6,
            report,
            statics,
            static_of,
        }
    }
}

impl Snapshot {
    /// Builds the zone `zone` from `instances` with the naming policy `naming`.
    ///
    /// Only running instances are served. Each gets `<id>.<zone>` and, when
    /// a rule gives one, its primary name. The serial is the current Unix
    /// time; [`Snapshot::with_serial_after`] makes it follow a predecessor.
    pub fn build<'a>(
        instances: impl IntoIterator<Item = &'a Instance>,
        naming: &Naming,
        zone: &Name,
    ) -> Snapshot {
        let instances = instances.into_iter();
        let mut builder = SnapshotBuilder::new(naming, zone, instances.size_hint().0);
        for instance in instances {
            builder.add(instance);
        }
        builder.finish()
    }

    /// Each group's ordinals in this zone (see [`Ordinals`]): what the
    /// next zone's members keep.
    pub fn ordinals(&self) -> Ordinals {
        let mut ordinals = Ordinals::new();
        for record in 0..self.named.min(self.records.len()) {
            for at in self.span(record, |r| r.owners) {
                if !matches!(
                    self.alias_rule(at).and_then(extra_code),
                    Some((NameKind::Ordinal, _))
                ) {
                    continue;
                }
                // `<n>.<group>`: the first label is the ordinal
                let labels = self.relative(record);
                let Some(&len) = labels.first() else { continue };
                let len = usize::from(len);
                let (Some(digits), Some(group)) = (labels.get(1..1 + len), labels.get(1 + len..))
                else {
                    continue;
                };
                let Some(n) = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                else {
                    continue;
                };
                let id = self
                    .owner(at, self.records[record].name)
                    .instance_id
                    .to_string();
                ordinals.entry(group.to_vec()).or_default().insert(id, n);
            }
        }
        ordinals
    }

    /// [`Snapshot::build_packed`], with the group ordinals of `previous`
    /// kept (see [`SnapshotBuilder::with_ordinals`]).
    pub fn build_packed_after<'a>(
        units: impl IntoIterator<Item = &'a Packed> + Clone,
        naming: &Naming,
        zone: &Name,
        previous: Option<Ordinals>,
    ) -> Result<Snapshot, PackError> {
        let count = units.clone().into_iter().map(Packed::len).sum();
        let mut builder = SnapshotBuilder::new(naming, zone, count);
        if let Some(previous) = previous.filter(|_| !naming.group_rules().is_empty()) {
            builder = builder.with_ordinals(previous);
        }
        for unit in units {
            builder.add_packed(unit)?;
        }
        Ok(builder.finish())
    }

    /// [`Snapshot::build`] from packed units, read one instance at a time.
    pub fn build_packed<'a>(
        units: impl IntoIterator<Item = &'a Packed> + Clone,
        naming: &Naming,
        zone: &Name,
    ) -> Result<Snapshot, PackError> {
        let count = units.clone().into_iter().map(Packed::len).sum();
        let mut builder = SnapshotBuilder::new(naming, zone, count);
        for unit in units {
            builder.add_packed(unit)?;
        }
        Ok(builder.finish())
    }

    /// `current` with the instances whose id is in `ids` replaced by
    /// those of `described` whose id is (the others of `ids` are gone):
    /// what [`Snapshot::build_packed`] of the updated inventory gives, from
    /// the current zone and the few described instances (see
    /// [`SnapshotBuilder::seeded`]). `None` when `current` is of another
    /// zone.
    pub fn update_packed(
        current: &Snapshot,
        naming: &Naming,
        zone: &Name,
        ids: &HashSet<String>,
        described: &Packed,
    ) -> Result<Option<Snapshot>, PackError> {
        let drop: HashSet<String> = ids.iter().map(|id| id.to_ascii_lowercase()).collect();
        let Some(mut builder) =
            SnapshotBuilder::seeded(naming, zone, current, &drop, described.len())
        else {
            return Ok(None);
        };
        described.for_each(|instance| {
            if ids.contains(&instance.id) {
                builder.add(instance);
            }
        })?;
        Ok(Some(builder.finish()))
    }

    /// `current` with the instances of `gone` (its records as the zone
    /// was built from them) taken out and those of `added` put in: the
    /// zone a full build of the changed inventory gives, made in one pass
    /// over the current zone's names, without naming or sorting its other
    /// instances (issue 18: a change of a few instances among 100,000
    /// costs milliseconds, not a build). `gone` must hold every record the
    /// zone was built from whose id is in `gone` or `added`, and no other
    /// record of the inventory may have one of those ids (see
    /// [`crate::inventory::packed::UnitDiff`]).
    ///
    /// `None` where only a build is exact: `current` of another zone or
    /// other static records, group rules (ordinals are assigned over a
    /// whole group), more than 65,535 distinct zones, types or rules.
    pub fn patched(
        current: &Snapshot,
        naming: &Naming,
        zone: &Name,
        gone: &Packed,
        added: &Packed,
    ) -> Result<Option<Snapshot>, PackError> {
        if !naming.group_rules().is_empty() || **naming.statics() != *current.statics {
            return Ok(None);
        }
        // What the gone records gave the report, and the added records'
        // own zone: both made the usual way, and small.
        let mut before = SnapshotBuilder::new(naming, zone, gone.len());
        if before.zone_wire != current.zone_wire {
            return Ok(None);
        }
        before.add_packed(gone)?;
        let mut after = SnapshotBuilder::new(naming, zone, added.len());
        after.add_packed(added)?;
        let part = after.finish();

        // The ids both touch, lowercase; the current instances with them
        // leave (each found by a binary search: instances are in id order).
        let mut ids: HashSet<String> = HashSet::new();
        for packed in [gone, added] {
            packed.for_each_id(|id, _| {
                ids.insert(id.to_ascii_lowercase());
            })?;
        }
        let mut dropped = vec![false; current.instances.len()];
        let mut key = Vec::new();
        for id in &ids {
            key.clear();
            key.push(id.len().min(255) as u8);
            key.extend_from_slice(id.as_bytes());
            if let Ok(k) = current
                .instances
                .binary_search_by(|i| current.names.labels(i.id).cmp(&key))
            {
                dropped[k] = true;
            }
        }

        // One table of zones and types, and one of rules: the current
        // zone's, then what only the part has.
        let (strings, string_of) = merge_table(&current.strings, &part.strings);
        let (rules, rule_of) = merge_table(&current.rules, &part.rules);
        if strings.len() >= usize::from(NONE) || rules.len() >= usize::from(NONE) {
            return Ok(None);
        }
        let Some(part_codes) = (part.owner_rules.iter())
            .map(|&code| match extra_code(code) {
                None => Some(NONE),
                Some((kind, rule)) => extra_owner_code(kind, rule_of(rule)),
            })
            .collect::<Option<Vec<u16>>>()
        else {
            return Ok(None);
        };

        // Instances, merged in id order: `s_of` and `p_of` give each one's
        // new index ([`NO_NAME`] for one that left), `origin` where each
        // new one comes from.
        let mut instances: Vec<InstanceRecord> =
            Vec::with_capacity(current.instances.len() + part.instances.len());
        let (mut s_of, mut p_of) = (
            vec![NO_NAME; current.instances.len()],
            vec![NO_NAME; part.instances.len()],
        );
        if instances.capacity() >= Origin::PART as usize {
            return Ok(None);
        }
        let mut origin: Vec<Origin> = Vec::with_capacity(instances.capacity());
        let (mut a, mut b) = (0usize, 0usize);
        loop {
            while dropped.get(a) == Some(&true) {
                a += 1;
            }
            let (x, y) = (current.instances.get(a), part.instances.get(b));
            let order = match (x, y) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(x), Some(y)) => current.names.labels(x.id).cmp(part.names.labels(y.id)),
            };
            match (order, x, y) {
                (Ordering::Less, Some(x), _) => {
                    s_of[a] = instances.len() as u32;
                    instances.push(*x);
                    origin.push(Origin(a as u32));
                    a += 1;
                }
                (Ordering::Greater, _, Some(y)) => {
                    p_of[b] = instances.len() as u32;
                    instances.push(InstanceRecord {
                        id: NO_NAME,
                        rule: rule_of(y.rule),
                        availability_zone: string_of(y.availability_zone),
                        instance_type: string_of(y.instance_type),
                    });
                    origin.push(Origin(b as u32 | Origin::PART));
                    b += 1;
                }
                // An id on both sides: not the inventory this was told.
                _ => return Ok(None),
            }
        }
        drop(dropped);

        // Names, merged in text order. A current name none of whose owners
        // left, and that the part does not have, is copied as it is (the
        // common case); the others are made again from their owners.
        // Their text stays where it is in the shared buffer, and the rest
        // goes to this zone's own; unless a quarter of the shared buffer
        // would then be dead or beside it, when all of it is written again
        // into a new shared buffer (see [`NameText`]).
        let shared = &current.names.shared;
        let share = current.names.own.len()
            + part.names.own.len()
            + part.names.shared.len()
            + current.names.dead(&current.records, current.named)
            <= shared.len() / 4;
        let (tag, mut text) = if share {
            let room = current.names.own.len() + part.names.shared.len();
            (OWN, Vec::with_capacity(room))
        } else {
            let room = shared.len() + current.names.own.len() + part.names.shared.len();
            (0, Vec::with_capacity(room))
        };
        let mut records: Vec<NameRecord> = Vec::with_capacity(current.records.len() + part.named);
        let mut ipv6_at: Vec<u32> = Vec::new();
        let mut ipv4: Vec<Ipv4Addr> = Vec::with_capacity(current.ipv4.len() + part.ipv4.len());
        let mut ipv6: Vec<Ipv6Addr> = Vec::with_capacity(current.ipv6.len() + part.ipv6.len());
        let mut owners: Vec<u32> = Vec::with_capacity(current.owners.len() + part.owners.len());
        // Empty while every owner code is NONE (the common case costs no
        // memory), as in a build.
        let mut owner_rules: Vec<u16> = Vec::new();
        let mut coded = false;
        let mut static_of: Vec<(u32, u32)> = Vec::with_capacity(current.static_of.len());
        // Each instance's id record, and its primary name's where that is
        // another (not static): what its addresses' PTR names.
        let (mut own, mut primary) = (
            vec![NO_NAME; instances.len()],
            vec![NO_NAME; instances.len()],
        );
        let current_code = |at: usize| current.owner_rules.get(at).copied().unwrap_or(NONE);
        // Each current name's new record, and the records of names only
        // the part has: the index is the current one, remapped, with those
        // added. A kept name's record moves by the names that left or came
        // before it, so `moves` holds (current record, new record) where
        // that distance changes and `left` the current records that left:
        // a few entries for a patch, where an array of the whole zone's was
        // 0.8 MB of the patch's peak at 200,000 names (issue 18).
        let (mut moves, mut left): (Vec<(u32, u32)>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut part_only: Vec<u32> = Vec::new();
        // (new instance, owner code, whether the name is its id name)
        let mut claims: Vec<(u32, u16, bool)> = Vec::new();
        let (mut i, mut j) = (0usize, 0usize);
        loop {
            checkpoint();
            let order = match (i < current.named, j < part.named) {
                (false, false) => break,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (true, true) => text_order(current.relative(i), part.relative(j)),
            };
            let from_s = (order != Ordering::Greater).then_some(i);
            let from_p = (order != Ordering::Less).then_some(j);
            let node = (from_s.and_then(|i| current.static_index(i)))
                .or_else(|| from_p.and_then(|j| part.static_index(j)));
            claims.clear();
            if let Some(i) = from_s {
                let name = current.records[i].name;
                for at in current.span(i, |r| r.owners) {
                    let o = current.owners[at] as usize;
                    if s_of[o] != NO_NAME {
                        claims.push((s_of[o], current_code(at), current.instances[o].id == name));
                    }
                }
            }
            let untouched = from_p.is_none()
                && claims.len() == from_s.map_or(0, |i| current.span(i, |r| r.owners).len());
            if let Some(j) = from_p {
                let name = part.records[j].name;
                for at in part.span(j, |r| r.owners) {
                    let o = part.owners[at] as usize;
                    let code = part_codes.get(at).copied().unwrap_or(NONE);
                    claims.push((p_of[o], code, part.instances[o].id == name));
                }
                claims.sort_unstable();
            }
            i += usize::from(from_s.is_some());
            j += usize::from(from_p.is_some());
            if claims.is_empty() && node.is_none() {
                // Every owner left: so does the name.
                left.extend(from_s.map(|i| i as u32));
                continue;
            }
            let record = records.len() as u32;
            let (labels, at) = match from_s {
                Some(i) => {
                    let i = i as u32;
                    if moves
                        .last()
                        .is_none_or(|&(s, r)| r.wrapping_sub(s) != record.wrapping_sub(i))
                    {
                        moves.push((i, record));
                    }
                    (
                        current.relative(i as usize),
                        current.records[i as usize].name,
                    )
                }
                None => {
                    part_only.push(record);
                    (part.relative(j - 1), OWN)
                }
            };
            let at = if share && at & OWN == 0 {
                at
            } else {
                let start = text.len() as u32 | tag;
                text.push(labels.len() as u8);
                text.extend_from_slice(labels);
                start
            };
            push_record(&mut records, &mut ipv6_at, at, (&ipv4, &ipv6, &owners));
            let (v4, v6) = (ipv4.len(), ipv6.len());
            match (node, from_s) {
                (Some(node), _) => {
                    let node = &current.statics.nodes()[node as usize];
                    ipv4.extend_from_slice(&node.ipv4);
                    ipv6.extend_from_slice(&node.ipv6);
                }
                (None, Some(i)) if untouched => {
                    ipv4.extend_from_slice(&current.ipv4[current.span(i, |r| r.ipv4)]);
                    ipv6.extend_from_slice(&current.ipv6[current.span6(i)]);
                }
                // Made again: the union of its owners' own addresses.
                _ => {
                    for &(k, _, _) in &claims {
                        let (from, o) = match origin[k as usize].get() {
                            (false, o) => (current, o),
                            (true, o) => (&part, o),
                        };
                        let id = from.names.labels(from.instances[o].id);
                        let Some(record) = from.find(id) else {
                            return Ok(None);
                        };
                        ipv4.extend_from_slice(&from.ipv4[from.span(record, |r| r.ipv4)]);
                        ipv6.extend_from_slice(&from.ipv6[from.span6(record)]);
                    }
                    sort_dedup_tail(&mut ipv4, v4);
                    sort_dedup_tail(&mut ipv6, v6);
                }
            }
            for &(k, code, is_id) in &claims {
                if code != NONE && !coded {
                    owner_rules.resize(owners.len(), NONE);
                    coded = true;
                }
                if coded {
                    owner_rules.push(code);
                }
                owners.push(k);
                if is_id {
                    own[k as usize] = record;
                } else if code == NONE && node.is_none() {
                    primary[k as usize] = record;
                }
            }
            if let Some(node) = node {
                static_of.push((record, node));
            }
        }
        drop((s_of, p_of, origin, claims));
        crate::background::collect_freed();
        if text.len() >= OWN as usize {
            return Ok(None);
        }
        let mut names = if share {
            NameText {
                shared: shared.clone(),
                own: text,
            }
        } else {
            NameText::new(text)
        };
        let named = records.len();
        push_record(&mut records, &mut ipv6_at, 0, (&ipv4, &ipv6, &owners));
        // Each instance's id name, now in `names`; its addresses are its
        // id record's, and their PTR names its primary name.
        let mut reverse4: Vec<(u32, u32)> = Vec::with_capacity(current.reverse4.len());
        let mut reverse6: Vec<(Ipv6Addr, u32)> = Vec::with_capacity(current.reverse6.len());
        for (k, instance) in instances.iter_mut().enumerate() {
            let record = own[k];
            let Some(r) = records.get(record as usize) else {
                // An instance without its id name: not the inventory this
                // was told.
                return Ok(None);
            };
            instance.id = r.name;
            let ptr = if primary[k] == NO_NAME {
                record
            } else {
                primary[k]
            };
            let next = &records[record as usize + 1];
            reverse4.extend(
                ipv4[r.ipv4 as usize..next.ipv4 as usize]
                    .iter()
                    .map(|a| (u32::from(*a), ptr)),
            );
            reverse6.extend(
                ipv6[ipv6_span(&ipv6_at, named, record as usize)]
                    .iter()
                    .map(|a| (*a, ptr)),
            );
        }
        drop((own, primary));
        crate::background::collect_freed();
        reverse4.sort_unstable();
        reverse4.dedup();
        reverse6.sort_unstable();
        reverse6.dedup();
        let hasher = current.hasher.clone();
        // Records past `named` are empty non-terminals: they leave the
        // index, and `add_ancestors` adds those the new names need.
        let new_of = |j: u32| -> u32 {
            if j as usize >= current.named || left.binary_search(&j).is_ok() {
                return NO_NAME;
            }
            // The last move at or before `j`: `j` is as far from it as that
            // record is (before the first kept name, every name left).
            match moves.partition_point(|&(s, _)| s <= j).checked_sub(1) {
                Some(k) => moves[k].1 + (j - moves[k].0),
                None => NO_NAME,
            }
        };
        let mut index = current.index.clone();
        index.retain(|j| {
            *j = new_of(*j);
            *j != NO_NAME
        });
        drop((moves, left));
        for record in part_only {
            if !indexed(names.labels(records[record as usize].name)) {
                continue;
            }
            let hash = hash_of(&hasher, &names, &records, record);
            index.insert_unique(hash, record, |&k| hash_of(&hasher, &names, &records, k));
        }
        add_ancestors(
            &mut names,
            &mut records,
            named,
            (&ipv4, &owners),
            &mut index,
            &hasher,
        );

        // The report: the current one without what the gone records gave
        // it, with what the added ones give.
        let kept = |id: &str| {
            !(ids.contains(id)
                || (id.bytes().any(|b| b.is_ascii_uppercase())
                    && ids.contains(&id.to_ascii_lowercase())))
        };
        let (was, now) = (&current.report, &part.report);
        let mut bad_ids = was.bad_ids.clone();
        for id in &before.report.bad_ids {
            if let Some(at) = bad_ids.iter().position(|b| b == id) {
                bad_ids.remove(at);
            }
        }
        bad_ids.extend(now.bad_ids.iter().cloned());
        let report = NamingReport {
            rewrites: (was.rewrites.iter())
                .filter(|r| kept(&r.instance_id))
                .chain(&now.rewrites)
                .cloned()
                .collect(),
            skips: (was.skips.iter())
                .filter(|s| kept(&s.instance_id))
                .chain(&now.skips)
                .cloned()
                .collect(),
            not_running: was.not_running.saturating_sub(before.report.not_running)
                + now.not_running,
            bad_ids,
        };
        Ok(Some(Snapshot {
            zone: current.zone.clone(),
            zone_wire: current.zone_wire.clone(),
            zone_text: current.zone_text.clone(),
            serial: unix_serial(SystemTime::now()),
            built_at: SystemTime::now(),
            names,
            records,
            named,
            index,
            hasher,
            ipv4,
            ipv6,
            ipv6_at,
            owners,
            owner_rules,
            instances,
            strings,
            rules,
            reverse4,
            reverse6,
            report,
            statics: current.statics.clone(),
            static_of,
        }))
    }

    /// Gives this snapshot a serial above `previous`'s (RFC 1982 order):
    /// the current time when that is larger, else the previous serial + 1.
    pub fn with_serial_after(mut self, previous: &Snapshot) -> Snapshot {
        self.serial = next_serial(previous.serial, self.serial);
        self
    }

    /// This snapshot with exactly `serial` (a restored serial).
    pub fn with_serial(mut self, serial: u32) -> Snapshot {
        self.serial = serial;
        self
    }

    /// Whether the zone content (what any query could see, serial aside)
    /// differs from `other`. Both are built in canonical order but for the
    /// offsets of names and the indexes of interned strings, which are
    /// compared by what they point at.
    pub fn differs_from(&self, other: &Snapshot) -> bool {
        fn string(s: &Snapshot, i: u16) -> Option<&str> {
            s.strings.get(usize::from(i)).map(|b| &**b)
        }
        fn rule(s: &Snapshot, i: u16) -> Option<&Rule> {
            s.rules.get(usize::from(i))
        }
        let same_records = self.records.len() == other.records.len()
            && self
                .records
                .iter()
                .zip(&other.records)
                .enumerate()
                .all(|(r, (a, b))| {
                    checkpoint();
                    a.ipv4 == b.ipv4
                        && a.owners == b.owners
                        && (r == self.named || self.relative(r) == other.relative(r))
                });
        let same_instances = self.instances.len() == other.instances.len()
            && self.instances.iter().zip(&other.instances).all(|(a, b)| {
                checkpoint();
                self.names.labels(a.id) == other.names.labels(b.id)
                    && rule(self, a.rule) == rule(other, b.rule)
                    && string(self, a.availability_zone) == string(other, b.availability_zone)
                    && string(self, a.instance_type) == string(other, b.instance_type)
            });
        !(self.zone == other.zone
            && self.named == other.named
            && same_records
            && same_instances
            && self.ipv4 == other.ipv4
            && self.ipv6 == other.ipv6
            && self.ipv6_at == other.ipv6_at
            && self.owners == other.owners
            && self.owner_rules.len() == other.owner_rules.len()
            && self
                .owner_rules
                .iter()
                .zip(&other.owner_rules)
                .all(|(&a, &b)| {
                    let (a, b) = (extra_code(a), extra_code(b));
                    a.map(|(kind, r)| (kind, rule(self, r)))
                        == b.map(|(kind, r)| (kind, rule(other, r)))
                })
            && self.reverse4 == other.reverse4
            && self.reverse6 == other.reverse6
            && self.static_of == other.static_of
            && self.statics == other.statics)
    }

    /// The relative wire labels of record `record`'s name.
    fn relative(&self, record: usize) -> &[u8] {
        self.names.labels(self.records[record].name)
    }

    /// The range of record `record`'s items in the array whose start
    /// `field` gives: up to the next record's start; nothing for an empty
    /// non-terminal.
    fn span(&self, record: usize, field: impl Fn(&NameRecord) -> u32) -> Range<usize> {
        if record >= self.named {
            return 0..0;
        }
        field(&self.records[record]) as usize..field(&self.records[record + 1]) as usize
    }

    /// The range of record `record`'s IPv6 addresses in `ipv6`.
    fn span6(&self, record: usize) -> Range<usize> {
        ipv6_span(&self.ipv6_at, self.named, record)
    }

    /// The owner code of the owner at `at` in `owners`, if the name is
    /// an alias or a group of it (see [`extra_code`]).
    fn alias_rule(&self, at: usize) -> Option<u16> {
        self.owner_rules.get(at).copied().filter(|&r| r != NONE)
    }

    /// The owner at `at` in `owners` of the record whose name is at
    /// `name`, as a view.
    fn owner(&self, at: usize, name: u32) -> Owner<'_> {
        let instance = &self.instances[self.owners[at] as usize];
        let string = |i: u16| self.strings.get(usize::from(i)).map(|s| &**s);
        // The id name holds the id: one label after the length bytes.
        let id = self.names.labels(instance.id);
        let extra = self.alias_rule(at).and_then(extra_code);
        let (kind, rule) = match extra {
            _ if instance.id == name => (NameKind::InstanceId, &self.rules[0]),
            Some((kind, rule)) => (
                kind,
                self.rules.get(usize::from(rule)).unwrap_or(&self.rules[0]),
            ),
            None => (
                NameKind::Primary,
                self.rules
                    .get(usize::from(instance.rule))
                    .unwrap_or(&self.rules[0]),
            ),
        };
        Owner {
            instance_id: std::str::from_utf8(id.get(1..).unwrap_or_default()).unwrap_or_default(),
            kind,
            rule,
            availability_zone: string(instance.availability_zone),
            instance_type: string(instance.instance_type),
        }
    }

    /// The static records of record `record`, if it has any.
    fn static_node(&self, record: usize) -> Option<&StaticNode> {
        self.statics
            .nodes()
            .get(self.static_index(record)? as usize)
    }

    /// The index in `statics.nodes()` of record `record`'s static records,
    /// if it has any.
    fn static_index(&self, record: usize) -> Option<u32> {
        if self.static_of.is_empty() {
            return None;
        }
        let at = self
            .static_of
            .binary_search_by_key(&(record as u32), |&(r, _)| r)
            .ok()?;
        Some(self.static_of[at].1)
    }

    /// The static records (`static_records`) in this zone, apex included.
    pub fn statics(&self) -> &StaticRecords {
        &self.statics
    }

    /// The record whose relative wire labels are `labels`.
    fn find(&self, labels: &[u8]) -> Option<usize> {
        // An instance's id name is not in the index (see `indexed`); an
        // empty non-terminal of that shape, after `named`, is.
        if !indexed(labels) {
            if let Some(record) = search(&self.names, &self.records, self.named, labels) {
                return Some(record);
            }
        }
        self.index
            .find(self.hasher.hash_one(labels), |&j| {
                self.relative(j as usize) == labels
            })
            .map(|&j| j as usize)
    }

    fn entry(&self, record: usize) -> Entry<'_> {
        Entry {
            snapshot: self,
            record,
        }
    }

    /// Classifies a name inside the zone. Call only for names where
    /// [`Snapshot::in_zone`] holds.
    pub fn lookup(&self, name: &LowerName) -> Lookup<'_> {
        if *name == self.zone {
            return Lookup::Apex;
        }
        // A LowerName encodes as its lowercase wire form (no compression
        // in a fresh encoder): the records' key.
        let Ok(key) = name.to_bytes() else {
            return Lookup::NotFound;
        };
        self.wire_lookup(&key)
    }

    /// Classifies the name whose lowercase wire form is `key` (the fast
    /// path's lookup). `NotFound` includes names outside the zone.
    pub fn wire_lookup(&self, key: &[u8]) -> Lookup<'_> {
        match split_zone(key, &self.zone_wire) {
            None => Lookup::NotFound,
            Some([]) => Lookup::Apex,
            Some(labels) => match self.find(labels) {
                Some(i) if i < self.named => Lookup::Name(self.entry(i)),
                Some(_) => Lookup::EmptyNonTerminal,
                None => Lookup::NotFound,
            },
        }
    }

    /// Whether `name` is the zone or below it.
    pub fn in_zone(&self, name: &LowerName) -> bool {
        self.zone.zone_of(name)
    }

    /// The primary names of the instances that have `address`, in the
    /// order of their text.
    pub fn names_of(&self, address: IpAddr) -> impl Iterator<Item = Entry<'_>> {
        fn matching<A: Ord + Copy>(table: &[(A, u32)], address: Option<A>) -> &[(A, u32)] {
            let Some(address) = address else {
                return &[];
            };
            let start = table.partition_point(|(a, _)| *a < address);
            let len = table[start..].partition_point(|(a, _)| *a == address);
            &table[start..start + len]
        }
        let (v4, v6) = match address {
            IpAddr::V4(a) => (Some(u32::from(a)), None),
            IpAddr::V6(a) => (None, Some(a)),
        };
        matching(&self.reverse4, v4)
            .iter()
            .map(|&(_, r)| r)
            .chain(matching(&self.reverse6, v6).iter().map(|&(_, r)| r))
            .map(|record| self.entry(record as usize))
    }

    /// Where the addresses inside `network` lie among all the addresses
    /// of known instances (IPv4 first, then IPv6, each sorted): with
    /// [`Snapshot::reverse_at`], a reverse zone's PTR records in order.
    pub fn reverse_range(&self, network: Cidr) -> Range<usize> {
        fn range<A: Ord + Copy>(table: &[(A, u32)], lo: A, hi: A) -> Range<usize> {
            let start = table.partition_point(|(a, _)| *a < lo);
            let end = table.partition_point(|(a, _)| *a <= hi);
            start..end.max(start)
        }
        match network.address {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(network.prefix))
                    .unwrap_or(0);
                let lo = u32::from(a) & mask;
                range(&self.reverse4, lo, lo | !mask)
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(network.prefix))
                    .unwrap_or(0);
                let lo = u128::from(a) & mask;
                let r = range(
                    &self.reverse6,
                    Ipv6Addr::from(lo),
                    Ipv6Addr::from(lo | !mask),
                );
                let offset = self.reverse4.len();
                r.start + offset..r.end + offset
            }
        }
    }

    /// The address at position `i` of [`Snapshot::reverse_range`]'s order,
    /// with the primary name of an instance that has it.
    pub fn reverse_at(&self, i: usize) -> Option<(IpAddr, Entry<'_>)> {
        let (address, record) = match self.reverse4.get(i) {
            Some(&(a, r)) => (IpAddr::V4(Ipv4Addr::from(a)), r),
            None => {
                let &(a, r) = self.reverse6.get(i - self.reverse4.len())?;
                (IpAddr::V6(a), r)
            }
        };
        Some((address, self.entry(record as usize)))
    }

    /// Every name with data, sorted by its text relative to the zone.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry<'_>> {
        (0..self.named).map(|record| self.entry(record))
    }

    /// The entry at position `i` of [`Snapshot::entries`].
    pub fn entry_at(&self, i: usize) -> Option<Entry<'_>> {
        (i < self.named).then(|| self.entry(i))
    }

    /// Every name whose data differs between `old` and this snapshot, as
    /// `(in old, in this)`: `(None, Some)` for a new name, `(Some, None)`
    /// for a name that is gone, both for a name whose addresses or owners
    /// changed. One walk over both in the order [`Snapshot::entries`]
    /// keeps, allocating nothing: cheap even at 100,000 instances.
    pub fn changed_entries<'a>(
        &'a self,
        old: &'a Snapshot,
    ) -> impl Iterator<Item = (Option<Entry<'a>>, Option<Entry<'a>>)> + 'a {
        let (mut new_names, mut old_names) = (self.entries().peekable(), old.entries().peekable());
        // With the same tables of rules, zones and types (a patched zone
        // has its predecessor's), owners compare by their indexes into
        // them: no string is looked at but the ids (issue 18: the log line
        // of a patch at 100,000 names).
        let same_tables = self.rules == old.rules && self.strings == old.strings;
        let same_owners = move |n: &Entry<'a>, o: &Entry<'a>| {
            if !same_tables {
                return n.owners().eq(o.owners());
            }
            let (ns, os) = (n.snapshot, o.snapshot);
            let (nr, or) = (n.record, o.record);
            let (nspan, ospan) = (ns.span(nr, |r| r.owners), os.span(or, |r| r.owners));
            nspan.len() == ospan.len()
                && nspan.zip(ospan).all(|(na, oa)| {
                    let (ni, oi) = (
                        &ns.instances[ns.owners[na] as usize],
                        &os.instances[os.owners[oa] as usize],
                    );
                    // what `Snapshot::owner` makes of each, compared
                    let is_id = ni.id == ns.records[nr].name;
                    let code = ns.alias_rule(na);
                    let kind_and_rule = match (is_id, oi.id == os.records[or].name) {
                        (true, true) => true,
                        (false, false) => {
                            code == os.alias_rule(oa) && (code.is_some() || ni.rule == oi.rule)
                        }
                        _ => false,
                    };
                    kind_and_rule
                        && ns.names.labels(ni.id) == os.names.labels(oi.id)
                        && ni.availability_zone == oi.availability_zone
                        && ni.instance_type == oi.instance_type
                })
        };
        std::iter::from_fn(move || loop {
            checkpoint();
            let order = match (new_names.peek(), old_names.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(n), Some(o)) => text_order(n.relative_wire(), o.relative_wire()),
            };
            match order {
                Ordering::Less => return Some((None, new_names.next())),
                Ordering::Greater => return Some((old_names.next(), None)),
                Ordering::Equal => {
                    let (n, o) = (new_names.next()?, old_names.next()?);
                    if n.ipv4() != o.ipv4()
                        || n.ipv6() != o.ipv6()
                        || !same_owners(&n, &o)
                        || n.statics() != o.statics()
                    {
                        return Some((Some(o), Some(n)));
                    }
                }
            }
        })
    }

    /// What changed from `old` to this snapshot, name by name: names only
    /// here, names only there, and names whose addresses differ (for the
    /// log line of every zone change).
    pub fn name_changes(&self, old: &Snapshot) -> NameChanges {
        let mut changes = NameChanges::default();
        for pair in self.changed_entries(old) {
            match pair {
                (None, Some(_)) => changes.added += 1,
                (Some(_), None) => changes.removed += 1,
                (Some(o), Some(n)) if n.ipv4() != o.ipv4() || n.ipv6() != o.ipv6() => {
                    changes.changed += 1
                }
                _ => {}
            }
        }
        changes
    }

    /// Every name with data with its [`Name`], in DNSSEC (canonical) order.
    pub fn entries_sorted(&self) -> Vec<(Name, Entry<'_>)> {
        let mut all: Vec<(Name, Entry<'_>)> = self.entries().map(|e| (e.name(), e)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The zone apex.
    pub fn zone(&self) -> &LowerName {
        &self.zone
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// When this snapshot was built.
    pub fn built_at(&self) -> SystemTime {
        self.built_at
    }

    /// How many instances are served.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// How many names have data (instance-id names included).
    pub fn name_count(&self) -> usize {
        self.named
    }

    /// What naming rewrote and skipped.
    pub fn report(&self) -> &NamingReport {
        &self.report
    }

    /// The heap bytes each large part holds (its capacity, so slack
    /// counts), largest first: what `cargo bench --bench memory` prints to
    /// say where a zone's bytes go.
    pub fn heap_parts(&self) -> Vec<(&'static str, usize)> {
        fn bytes<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        // hashbrown: one control byte per bucket plus the group padding;
        // buckets are a power of two at least 8/7 of the capacity.
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two();
        let mut parts = vec![
            ("names (text)", bytes(&self.names.shared)),
            ("names (text since the build)", bytes(&self.names.own)),
            ("name records", bytes(&self.records)),
            (
                "hash index",
                buckets * (std::mem::size_of::<u32>() + 1) + 16,
            ),
            ("IPv4 addresses", bytes(&self.ipv4)),
            ("IPv6 addresses", bytes(&self.ipv6)),
            ("IPv6 starts", bytes(&self.ipv6_at)),
            ("owners", bytes(&self.owners)),
            ("owner rules", bytes(&self.owner_rules)),
            ("instances", bytes(&self.instances)),
            ("reverse IPv4", bytes(&self.reverse4)),
            ("reverse IPv6", bytes(&self.reverse6)),
            ("static names", bytes(&self.static_of)),
        ];
        parts.sort_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));
        parts
    }
}

/// The hash index of `records`' first `named` names but those shaped like
/// instance ids (see [`indexed`]), and the empty non-terminals it adds to
/// `records` (and their names to `names`): every ancestor of a name, up to
/// the apex, exists; those without data of their own are empty
/// non-terminals, after the sentinel (they are few: only names of several
/// labels have them).
fn index_names(
    names: &mut NameText,
    records: &mut Vec<NameRecord>,
    named: usize,
    ipv4: &[Ipv4Addr],
    owners: &[u32],
) -> (HashTable<u32>, RandomState) {
    let hasher = RandomState::new();
    let keyed = (0..named)
        .filter(|&i| indexed(names.labels(records[i].name)))
        .count();
    let mut index: HashTable<u32> = HashTable::with_capacity(keyed + keyed / 8);
    for i in 0..named {
        checkpoint();
        if !indexed(names.labels(records[i].name)) {
            continue;
        }
        let hash = hash_of(&hasher, names, records, i as u32);
        index.insert_unique(hash, i as u32, |&j| hash_of(&hasher, names, records, j));
    }
    add_ancestors(names, records, named, (ipv4, owners), &mut index, &hasher);
    (index, hasher)
}

/// The hash of record `j`'s name.
fn hash_of(hasher: &RandomState, names: &NameText, records: &[NameRecord], j: u32) -> u64 {
    hasher.hash_one(names.labels(records[j as usize].name))
}

/// Whether a name with data (relative wire labels) goes in the hash index:
/// all but one label shaped like an instance id, which only an instance's
/// own id name is (naming, aliases and static names refuse the shape).
/// Those are half a fleet's names, and [`search`] finds them in the
/// records, which are in text order: the index is half as large (0.65 MB
/// less at 100,000 instances, in the zone and at a build's and a patch's
/// peak; issue 18), and a query for an id name takes a binary search.
fn indexed(labels: &[u8]) -> bool {
    !(single_label(labels)
        && labels.get(1..3) == Some(b"i-")
        && std::str::from_utf8(&labels[1..]).is_ok_and(crate::naming::is_instance_id))
}

/// The record among the first `named` (names with data, in text order)
/// whose name is `labels`, by binary search.
fn search(names: &NameText, records: &[NameRecord], named: usize, labels: &[u8]) -> Option<usize> {
    (records.get(..named)?)
        .binary_search_by(|r| text_order(names.labels(r.name), labels))
        .ok()
}

/// Adds to `index`, `records` and `names` every ancestor of the first
/// `named` records' names that is not there yet (see [`index_names`]);
/// `arrays` are the IPv4 address and owner arrays whose ends the new
/// records point at (their IPv6 starts are not kept: see [`push_record`]).
fn add_ancestors(
    names: &mut NameText,
    records: &mut Vec<NameRecord>,
    named: usize,
    (ipv4, owners): (&[Ipv4Addr], &[u32]),
    index: &mut HashTable<u32>,
    hasher: &RandomState,
) {
    for i in 0..named {
        checkpoint();
        let at = records[i].name;
        // Each proper suffix of the name's labels, longest first.
        let mut start = 0;
        loop {
            let full = names.labels(at);
            start += 1 + usize::from(full[start]);
            if start >= full.len() {
                break;
            }
            let labels = &full[start..];
            let hash = hasher.hash_one(labels);
            let present = index
                .find(hash, |&j| names.labels(records[j as usize].name) == labels)
                .is_some()
                || (!indexed(labels) && search(names, records, named, labels).is_some());
            if present {
                // Present, and so are its own ancestors.
                break;
            }
            let copy = labels.to_vec();
            let name = names.push(&copy);
            let j = records.len() as u32;
            records.push(NameRecord::next(name, ipv4, owners));
            index.insert_unique(hash, j, |&k| hash_of(hasher, names, records, k));
        }
    }
}

/// Where an instance of a patched zone comes from (see
/// [`Snapshot::patched`]): an index into the current zone's instances or,
/// with [`Origin::PART`] set, the part's. Four bytes, not an enum's
/// sixteen: there is one for every instance of the zone while it is
/// patched (1.6 MB at 100,000 instances, all of it added to the peak
/// memory of a reload).
#[derive(Debug, Clone, Copy)]
struct Origin(u32);

impl Origin {
    /// Marks an index into the part's instances.
    const PART: u32 = 1 << 31;

    /// The side and the index there: `true` for the part.
    fn get(self) -> (bool, usize) {
        (self.0 & Self::PART != 0, (self.0 & !Self::PART) as usize)
    }
}

/// `base` with the values of `extra` it lacks appended (few: the zones,
/// types and rules of a few instances), and what each index of `extra`
/// became (a table of 65,535 values or more is the caller's to refuse).
fn merge_table<T: Clone + PartialEq>(base: &[T], extra: &[T]) -> (Vec<T>, impl Fn(u16) -> u16) {
    let mut table = base.to_vec();
    let mut map = Vec::with_capacity(extra.len());
    for value in extra {
        let at = match table.iter().position(|v| v == value) {
            Some(at) => at,
            None => {
                table.push(value.clone());
                table.len() - 1
            }
        };
        map.push(u16::try_from(at).unwrap_or(NONE));
    }
    (table, move |i: u16| {
        map.get(usize::from(i)).copied().unwrap_or(NONE)
    })
}

/// Sorts `items[start..]` and drops its duplicates.
fn sort_dedup_tail<T: Ord + Copy>(items: &mut Vec<T>, start: usize) {
    if items.len() - start < 2 {
        return;
    }
    items[start..].sort_unstable();
    let mut kept = start;
    for i in start..items.len() {
        if kept == start || items[kept - 1] != items[i] {
            items[kept] = items[i];
            kept += 1;
        }
    }
    items.truncate(kept);
}

/// The Unix time as a serial (wraps in 2106, which RFC 1982 order tolerates).
fn unix_serial(now: SystemTime) -> u32 {
    now.duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

/// The smallest serial that is after `previous` and not before `candidate`
/// in RFC 1982 order.
pub fn next_serial(previous: u32, candidate: u32) -> u32 {
    let diff = candidate.wrapping_sub(previous);
    if diff != 0 && diff < 0x8000_0000 {
        candidate
    } else {
        previous.wrapping_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::Naming;

    fn zone() -> Name {
        Name::from_ascii("fleet.internal.").unwrap()
    }

    fn inst(id: &str, name: Option<&str>, ips: &[&str]) -> Instance {
        crate::inventory::test_instance(id, name, ips)
    }

    fn build(instances: &[Instance]) -> Snapshot {
        Snapshot::build(
            instances,
            &Naming::new(Naming::default_rules(), "fleet.internal."),
            &zone(),
        )
    }

    fn lower(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    #[test]
    fn names_and_instance_ids_both_answer() {
        let s = build(&[inst("i-0aa", Some("web-1"), &["10.0.0.1", "2001:db8::1"])]);
        let Lookup::Name(e) = s.lookup(&lower("web-1.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(e.ipv4(), ["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(e.ipv6(), ["2001:db8::1".parse::<Ipv6Addr>().unwrap()]);
        let Lookup::Name(e) = s.lookup(&lower("i-0aa.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(*e.owners().next().unwrap().rule, Rule::InstanceId);
        assert_eq!(s.instance_count(), 1);
        assert_eq!(s.name_count(), 2);
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let s = build(&[inst("i-0aa", Some("web-1"), &["10.0.0.1"])]);
        let name = LowerName::new(&Name::from_ascii("WeB-1.Fleet.INTERNAL.").unwrap());
        assert!(matches!(s.lookup(&name), Lookup::Name(_)));
    }

    #[test]
    fn duplicate_names_answer_with_all_addresses_sorted() {
        let s = build(&[
            inst("i-0bb", Some("api"), &["10.0.0.9"]),
            inst("i-0aa", Some("api"), &["10.0.0.2", "10.0.0.9"]),
        ]);
        let Lookup::Name(e) = s.lookup(&lower("api.fleet.internal.")) else {
            panic!()
        };
        let ips: Vec<String> = e.ipv4().iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.9"]);
        let ids: Vec<&str> = e.owners().map(|o| o.instance_id).collect();
        assert_eq!(ids, ["i-0aa", "i-0bb"]);
        // the shared address points back at the one name, once
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let names: Vec<String> = s.names_of(ip).map(|e| e.text()).collect();
        assert_eq!(names, ["api.fleet.internal."]);
    }

    #[test]
    fn empty_non_terminals_and_missing_names() {
        let s = build(&[inst("i-0aa", Some("db.primary.eu"), &["10.0.0.1"])]);
        assert!(matches!(
            s.lookup(&lower("primary.eu.fleet.internal.")),
            Lookup::EmptyNonTerminal
        ));
        assert!(matches!(
            s.lookup(&lower("eu.fleet.internal.")),
            Lookup::EmptyNonTerminal
        ));
        assert!(matches!(s.lookup(&lower("fleet.internal.")), Lookup::Apex));
        assert!(matches!(
            s.lookup(&lower("nope.fleet.internal.")),
            Lookup::NotFound
        ));
        assert!(matches!(
            s.lookup(&lower("x.db.primary.eu.fleet.internal.")),
            Lookup::NotFound
        ));
    }

    #[test]
    fn only_running_instances_with_valid_ids_are_served() {
        let mut stopped = inst("i-0cc", Some("old"), &["10.0.0.3"]);
        stopped.state = "stopped".into();
        let s = build(&[stopped, inst("bogus id", Some("x"), &["10.0.0.4"])]);
        assert_eq!(s.name_count(), 0);
        assert_eq!(s.report().not_running, 1);
        assert_eq!(s.report().bad_ids, ["bogus id"]);
    }

    #[test]
    fn unnamed_instances_reverse_to_their_id_name() {
        let s = build(&[inst("i-0dd", None, &["10.0.0.5"])]);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let names: Vec<String> = s.names_of(ip).map(|e| e.text()).collect();
        assert_eq!(names, ["i-0dd.fleet.internal."]);
    }

    #[test]
    fn aliases_answer_with_the_addresses_and_ptr_keeps_the_primary_name() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.")
            .with_aliases(vec!["tag:dns-aliases".parse().unwrap()]);
        let mut web = inst("i-0aa", Some("web-1"), &["10.0.0.1"]);
        web.tags = [("Name", "web-1"), ("dns-aliases", "api, WWW  web-1 ---")].into();
        let other = inst("i-0bb", Some("api"), &["10.0.0.2"]);
        let s = Snapshot::build(&[web, other], &naming, &zone());
        let Lookup::Name(www) = s.lookup(&lower("www.fleet.internal.")) else {
            panic!("www is an alias of web-1")
        };
        assert_eq!(www.ipv4(), ["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
        let owner = www.owners().next().unwrap();
        assert_eq!(owner.kind, NameKind::Alias);
        assert_eq!(owner.rule.to_string(), "tag:dns-aliases");
        // an alias equal to another instance's primary name: both answer
        let Lookup::Name(api) = s.lookup(&lower("api.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(api.ipv4().len(), 2);
        let kinds: Vec<NameKind> = api.owners().map(|o| o.kind).collect();
        assert_eq!(kinds, [NameKind::Alias, NameKind::Primary]);
        // PTR: each address names its instance's primary name only
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let names: Vec<String> = s.names_of(ip).map(|e| e.text()).collect();
        assert_eq!(names, ["web-1.fleet.internal."]);
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let names: Vec<String> = s.names_of(ip).map(|e| e.text()).collect();
        assert_eq!(names, ["api.fleet.internal."]);
        // the primary name is no alias of itself; "---" is a reported skip
        let Lookup::Name(primary) = s.lookup(&lower("web-1.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(
            primary
                .owners()
                .filter(|o| o.kind == NameKind::Primary)
                .count(),
            1
        );
        assert_eq!(primary.owners().count(), 1);
        assert!(s.report().skips.iter().any(|k| k.value == "---"));
        // without aliases the zone keeps no per-owner rules at all
        assert!(build(&[inst("i-0aa", Some("web-1"), &["10.0.0.1"])])
            .owner_rules
            .is_empty());
    }

    #[test]
    fn a_group_name_answers_with_every_member_and_says_so() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.")
            .with_groups(vec!["tag:asg".parse().unwrap()]);
        let member = |id: &str, name: &str, ip: &str, asg: &str| {
            let mut i = inst(id, Some(name), &[ip]);
            i.tags = [("Name", name), ("asg", asg)].into();
            i
        };
        let s = Snapshot::build(
            &[
                member("i-0aa", "w1", "10.0.0.1", "Workers"),
                member("i-0bb", "w2", "10.0.0.2", "workers"),
                // its Name is the group's: one owner entry, as its primary
                member("i-0cc", "workers", "10.0.0.3", "workers"),
                member("i-0dd", "db", "10.0.0.4", "db-pool"),
            ],
            &naming,
            &zone(),
        );
        let Lookup::Name(workers) = s.lookup(&lower("workers.fleet.internal.")) else {
            panic!("the group answers")
        };
        assert_eq!(workers.ipv4().len(), 3);
        let kinds: Vec<NameKind> = workers.owners().map(|o| o.kind).collect();
        assert_eq!(kinds, [NameKind::Group, NameKind::Group, NameKind::Primary]);
        assert_eq!(workers.owners().next().unwrap().rule.to_string(), "tag:asg");
        // PTR stays with the primary names
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let names: Vec<String> = s.names_of(ip).map(|e| e.text()).collect();
        assert_eq!(names, ["w1.fleet.internal."]);
    }

    #[test]
    fn ordinals_go_by_id_first_stay_with_their_member_and_fill_gaps() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.")
            .with_groups(vec!["tag:asg".parse().unwrap()]);
        let member = |id: &str, ip: &str| {
            let mut i = inst(id, None, &[ip]);
            i.tags = [("asg", "workers")].into();
            i
        };
        let answers = |s: &Snapshot, name: &str| match s.lookup(&lower(name)) {
            Lookup::Name(e) => e.ipv4().iter().map(ToString::to_string).collect(),
            _ => Vec::<String>::new(),
        };
        let build = |instances: &[Instance], previous: Option<&Snapshot>| {
            let mut b = SnapshotBuilder::new(&naming, &zone(), instances.len());
            if let Some(p) = previous {
                b = b.with_ordinals_of(p);
            }
            for i in instances {
                b.add(i);
            }
            b.finish()
        };
        let (a, b, c, d) = (
            member("i-0aa", "10.0.0.1"),
            member("i-0bb", "10.0.0.2"),
            member("i-0cc", "10.0.0.3"),
            member("i-000", "10.0.0.4"),
        );
        // first assignment: instance-id order, whatever the input order
        let first = build(&[c.clone(), a.clone(), b.clone()], None);
        assert_eq!(answers(&first, "1.workers.fleet.internal."), ["10.0.0.1"]);
        assert_eq!(answers(&first, "2.workers.fleet.internal."), ["10.0.0.2"]);
        assert_eq!(answers(&first, "3.workers.fleet.internal."), ["10.0.0.3"]);
        let Lookup::Name(two) = first.lookup(&lower("2.workers.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(two.owners().next().unwrap().kind, NameKind::Ordinal);
        // the middle member goes: 1 and 3 stay where they are
        let second = build(&[a.clone(), c.clone()], Some(&first));
        assert_eq!(answers(&second, "1.workers.fleet.internal."), ["10.0.0.1"]);
        assert!(answers(&second, "2.workers.fleet.internal.").is_empty());
        assert_eq!(answers(&second, "3.workers.fleet.internal."), ["10.0.0.3"]);
        // a newcomer with the lowest id takes the free 2, not 1
        let third = build(&[a, c, d], Some(&second));
        assert_eq!(answers(&third, "2.workers.fleet.internal."), ["10.0.0.4"]);
        assert_eq!(answers(&third, "1.workers.fleet.internal."), ["10.0.0.1"]);
        assert_eq!(third.ordinals()[b"\x07workers".as_slice()]["i-000"], 2);
        // PTR stays with the instance's own name
        let ip: IpAddr = "10.0.0.4".parse().unwrap();
        let names: Vec<String> = third.names_of(ip).map(|e| e.text()).collect();
        assert_eq!(names, ["i-000.fleet.internal."]);
    }

    #[test]
    fn content_comparison_ignores_order_and_build_time() {
        let a = build(&[
            inst("i-0aa", Some("a"), &["10.0.0.1"]),
            inst("i-0bb", Some("b"), &["10.0.0.2"]),
        ]);
        let b = build(&[
            inst("i-0bb", Some("b"), &["10.0.0.2"]),
            inst("i-0aa", Some("a"), &["10.0.0.1"]),
        ]);
        assert!(!a.differs_from(&b));
        let c = build(&[
            inst("i-0aa", Some("a"), &["10.0.0.1"]),
            inst("i-0bb", Some("b"), &["10.0.0.3"]),
        ]);
        assert!(a.differs_from(&c));
    }

    #[test]
    fn name_changes_count_added_removed_and_repointed_names() {
        let old = build(&[
            inst("i-0aa", Some("web-9"), &["10.0.0.1"]),
            inst("i-0bb", Some("db.x"), &["10.0.0.2"]),
            inst("i-0cc", Some("gone"), &["10.0.0.3"]),
        ]);
        let new = build(&[
            inst("i-0aa", Some("web-9"), &["10.0.0.1"]),
            inst("i-0bb", Some("db.x"), &["10.0.0.9"]),
            inst("i-0dd", Some("web-10"), &["10.0.0.4"]),
        ]);
        // names: web-9 same; db.x re-pointed (and its instance-id name);
        // gone and i-0cc removed; web-10 and i-0dd added
        assert_eq!(
            new.name_changes(&old),
            NameChanges {
                added: 2,
                removed: 2,
                changed: 2
            }
        );
        assert_eq!(old.name_changes(&old), NameChanges::default());
    }

    #[test]
    fn the_order_instances_come_in_does_not_change_the_content() {
        let mut a = inst("i-0aa", Some("a"), &["10.0.0.1"]);
        let mut b = inst("i-0bb", Some("b.x"), &["10.0.0.2", "2001:db8::2"]);
        a.availability_zone = Some("eu-west-1a".into());
        b.availability_zone = Some("eu-west-1b".into());
        b.instance_type = Some("m7g.large".into());
        let one = build(&[a.clone(), b.clone()]);
        let other = build(&[b.clone(), a.clone()]);
        assert!(!one.differs_from(&other));
        let mut moved = b.clone();
        moved.availability_zone = Some("eu-west-1c".into());
        assert!(one.differs_from(&build(&[a.clone(), moved])));
        let mut renamed = b.clone();
        renamed.tags = [("Name", "b.y")].into();
        assert!(one.differs_from(&build(&[a.clone(), renamed])));
        let mut by_group = b;
        by_group.tags = Default::default();
        by_group.security_groups = vec!["b.x".into()];
        assert!(one.differs_from(&build(&[a, by_group])));
    }

    #[test]
    fn names_come_in_text_order_with_instance_ids_among_them() {
        let s = build(&[
            inst("i-0a1", Some("web-9"), &["10.0.0.1"]),
            inst("i-0a2", Some("web-10"), &["10.0.0.2"]),
            inst("i-0a3", Some("db-x"), &["10.0.0.3"]),
            inst("i-0a4", Some("db.x"), &["10.0.0.4"]),
            inst("i-0a5", Some("j"), &["10.0.0.5"]),
            inst("i-0a6", None, &["10.0.0.6"]),
        ]);
        let names: Vec<String> = s.entries().map(|e| e.text()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 11);
        assert!(names.contains(&"i-0a6.fleet.internal.".to_string()));
        // every name is found by its own bytes
        for e in s.entries() {
            let name = LowerName::new(&e.name());
            assert!(matches!(s.lookup(&name), Lookup::Name(_)), "{}", e.text());
        }
    }

    #[test]
    fn an_instance_listed_twice_is_served_once_and_the_first_copy_wins() {
        let first = inst("i-0aa", Some("first"), &["10.0.0.1"]);
        let second = inst("I-0AA", Some("second"), &["10.0.0.2"]);
        let s = build(&[first, second]);
        assert_eq!(s.instance_count(), 1);
        let names: Vec<String> = s.entries().map(|e| e.text()).collect();
        assert_eq!(names, ["first.fleet.internal.", "i-0aa.fleet.internal."]);
        let Lookup::Name(e) = s.lookup(&lower("i-0aa.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(e.ipv4(), ["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
        let owner = e.owners().next().unwrap();
        assert_eq!(owner.availability_zone, Some("us-east-1a"));
        assert_eq!(owner.instance_type, Some("t3.micro"));
    }

    #[test]
    fn a_zone_built_from_packed_units_is_the_one_built_from_instances() {
        let east = [
            inst("i-0aa", Some("api"), &["10.0.0.1"]),
            inst("i-0bb", Some("api"), &["10.0.0.2"]),
        ];
        let west = [inst("i-0cc", Some("db.eu"), &["10.0.0.3", "2001:db8::3"])];
        let units = [Packed::from_instances(&east), Packed::from_instances(&west)];
        let packed = Snapshot::build_packed(
            &units,
            &Naming::new(Naming::default_rules(), "fleet.internal."),
            &zone(),
        )
        .unwrap();
        let all: Vec<Instance> = east.iter().chain(&west).cloned().collect();
        assert!(!packed.differs_from(&build(&all)));
        assert_eq!(packed.name_count(), 5);
    }

    #[test]
    fn serial_always_rises() {
        assert_eq!(next_serial(100, 200), 200);
        assert_eq!(next_serial(200, 200), 201);
        assert_eq!(next_serial(300, 200), 301);
        assert_eq!(next_serial(u32::MAX, 5), 5);
        assert_eq!(next_serial(u32::MAX, u32::MAX), 0);
        let a = build(&[inst("i-0aa", Some("a"), &["10.0.0.1"])]);
        let b = build(&[inst("i-0aa", Some("b"), &["10.0.0.1"])]).with_serial_after(&a);
        assert!(
            b.serial().wrapping_sub(a.serial()) > 0
                && b.serial().wrapping_sub(a.serial()) < 0x8000_0000
        );
    }

    /// One generated instance: id number, Name tag, group, addresses,
    /// zone, whether it runs, its dns-aliases tag.
    type Spec = (
        u8,
        Option<&'static str>,
        Option<&'static str>,
        Vec<u8>,
        bool,
        bool,
        Option<&'static str>,
    );

    fn spec_instance((id, name, group, ips, second_zone, running, aliases): &Spec) -> Instance {
        let mut i = inst(&format!("i-{:017x}", id), *name, &[]);
        if let Some(list) = aliases {
            let mut tags: Vec<(String, String)> = i
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            tags.push(("dns-aliases".into(), list.to_string()));
            i.tags = tags.into_iter().collect();
        }
        i.security_groups = group.iter().map(|g| g.to_string()).collect();
        i.private_ipv4 = ips
            .iter()
            .map(|k| Ipv4Addr::new(10, 0, 0, *k % 8))
            .collect();
        if ips.len() > 1 {
            i.ipv6 = vec![Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(ips[1]))];
        }
        if *second_zone {
            i.availability_zone = Some("us-east-1b".into());
            i.instance_type = None;
        }
        if !running {
            i.state = "stopped".into();
        }
        i
    }

    fn spec() -> impl proptest::strategy::Strategy<Value = Spec> {
        use proptest::prelude::*;
        let names = prop::sample::select(vec![
            Some("web"),
            Some("Web"),
            Some("db.primary"),
            Some("Evil Name # 127.0.0.1"),
            Some("---"),
            Some("i-0123456789abcdef0"),
            Some("web.fleet.internal"),
            None,
        ]);
        let groups = prop::sample::select(vec![Some("web"), Some("db"), None]);
        let aliases = prop::sample::select(vec![
            None,
            None,
            Some("api, api-v2"),
            Some("web"),
            Some("web db.primary\tcache"),
            Some("--- ,,  i-0123456789abcdef0"),
            Some("Evil.Name # 127.0.0.1, evil.name"),
        ]);
        (
            0u8..40,
            names,
            groups,
            prop::collection::vec(any::<u8>(), 0..3),
            any::<bool>(),
            prop::bool::weighted(0.9),
            aliases,
        )
    }

    fn sorted_report(s: &Snapshot) -> (Vec<String>, Vec<String>) {
        let mut rewrites: Vec<String> = s
            .report()
            .rewrites
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        let mut skips: Vec<String> = s.report().skips.iter().map(|r| format!("{r:?}")).collect();
        rewrites.sort();
        skips.sort();
        (rewrites, skips)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// An update from the current zone and the described instances is
        /// the zone a full build of the updated inventory gives, whatever
        /// the names (colliding, hostile, id-shaped, none), addresses
        /// (shared, none) and changes (renamed, stopped, gone, new).
        #[test]
        fn an_update_gives_the_zone_a_full_build_gives(
            base in proptest::collection::vec(spec(), 0..30),
            asked in proptest::collection::btree_set(0u8..40, 0..8),
            described in proptest::collection::vec(spec(), 0..8),
            groups in proptest::prelude::any::<bool>(),
        ) {
            let mut seen = HashSet::new();
            let base: Vec<Instance> = base
                .iter()
                .filter(|s| seen.insert(s.0))
                .map(spec_instance)
                .collect();
            // what the describe of `asked` returns: some of them, changed
            let mut returned = HashSet::new();
            let described: Vec<Instance> = described
                .iter()
                .filter(|s| asked.contains(&s.0) && returned.insert(s.0))
                .map(spec_instance)
                .collect();
            let ids: HashSet<String> = asked.iter().map(|k| format!("i-{k:017x}")).collect();
            let mut updated: Vec<Instance> =
                base.iter().filter(|i| !ids.contains(&i.id)).cloned().collect();
            updated.extend(described.iter().cloned());

            let naming = Naming::new(Naming::default_rules(), "fleet.internal.")
                .with_aliases(vec![
                    "tag:dns-aliases".parse().unwrap(),
                    "{sg}-{tag:Name}".parse().unwrap(),
                ])
                .with_groups(if groups {
                    vec!["security-group".parse().unwrap(), "{sg}.pool".parse().unwrap()]
                } else {
                    Vec::new()
                })
                // static names that the fleet's names and ordinals hit
                .with_statics(Arc::new(statics(
                    "web A 192.0.2.1\napi CNAME web\n1.db TXT x\ndb.primary AAAA ::1\n_x._tcp SRV 0 0 1 web\nweb.pool MX 1 web\n",
                )));
            let current = Snapshot::build(&base, &naming, &zone());
            // what a full pass after `current` builds: its ordinals kept
            let mut builder = SnapshotBuilder::new(&naming, &zone(), updated.len())
                .with_ordinals_of(&current);
            for instance in &updated {
                builder.add(instance);
            }
            let full = builder.finish();
            let incremental = Snapshot::update_packed(
                &current,
                &naming,
                &zone(),
                &ids,
                &Packed::from_instances(&described),
            )
            .unwrap()
            .unwrap();
            proptest::prop_assert!(!full.differs_from(&incremental));
            proptest::prop_assert!(!incremental.differs_from(&full));
            proptest::prop_assert_eq!(sorted_report(&full), sorted_report(&incremental));

            // A patch from the records that changed (issue 18), as an
            // event gives them and as a refresh's diff finds them: the
            // same zone, where there are no groups (their ordinals need a
            // build).
            let asked_records: Vec<Instance> =
                base.iter().filter(|i| ids.contains(&i.id)).cloned().collect();
            let diff = Packed::from_instances(&base)
                .diff(&Packed::from_instances(&updated))
                .unwrap();
            proptest::prop_assert!(!diff.entangled);
            for (gone, added) in [
                (Packed::from_instances(&asked_records), Packed::from_instances(&described)),
                (diff.gone, diff.added),
            ] {
                let patched = Snapshot::patched(&current, &naming, &zone(), &gone, &added).unwrap();
                let Some(patched) = patched else {
                    proptest::prop_assert!(groups);
                    continue;
                };
                proptest::prop_assert!(!groups);
                proptest::prop_assert!(!full.differs_from(&patched));
                proptest::prop_assert!(!patched.differs_from(&full));
                proptest::prop_assert_eq!(sorted_report(&full), sorted_report(&patched));
                proptest::prop_assert_eq!(full.report().not_running, patched.report().not_running);
                proptest::prop_assert_eq!(&full.report().bad_ids, &patched.report().bad_ids);
                // what changed, seen from a zone with the current one's
                // tables (compared by index) and from one with its own
                let changes = |zone: &Snapshot| -> Vec<(Option<String>, Option<String>)> {
                    zone.changed_entries(&current)
                        .map(|(o, n)| (o.map(|e| e.text()), n.map(|e| e.text())))
                        .collect()
                };
                proptest::prop_assert_eq!(changes(&patched), changes(&full));
                // and every name, empty non-terminals too, and names the
                // current zone had, look up as in the build
                let kind = |zone: &Snapshot, labels: &[u8]| match zone.find(labels) {
                    Some(i) if i < zone.named => Some(zone.entry(i).text()),
                    Some(_) => Some("empty non-terminal".into()),
                    None => None,
                };
                for zone in [&full, &current] {
                    for record in 0..zone.records.len() {
                        if record == zone.named {
                            continue;
                        }
                        let labels = zone.relative(record);
                        proptest::prop_assert_eq!(kind(&patched, labels), kind(&full, labels));
                    }
                }
            }
        }
    }

    fn statics(text: &str) -> StaticRecords {
        crate::statics::parse(text, &zone(), 60).unwrap()
    }

    #[test]
    fn names_shaped_like_ids_are_found_with_or_without_the_hash_index() {
        // Instance-id names are found by a binary search, not the hash
        // index; a static name below one makes it an ancestor, which is the
        // id name where that instance is served and an empty non-terminal
        // (in the index) where it is not.
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.").with_statics(
            Arc::new(statics(
                "www.i-0aa A 192.0.2.1
www.i-0cc A 192.0.2.3
",
            )),
        );
        let fleet = [
            inst("i-0aa", Some("web-1"), &["10.0.0.1"]),
            inst("i-0bb", None, &["10.0.0.2"]),
        ];
        let s = Snapshot::build(&fleet, &naming, &zone());
        for (name, address) in [("i-0aa", "10.0.0.1"), ("i-0bb", "10.0.0.2")] {
            let Lookup::Name(e) = s.lookup(&lower(&format!("{name}.fleet.internal."))) else {
                panic!("{name}")
            };
            assert_eq!(e.ipv4(), [address.parse::<Ipv4Addr>().unwrap()]);
        }
        assert!(matches!(
            s.lookup(&lower("i-0cc.fleet.internal.")),
            Lookup::EmptyNonTerminal
        ));
        assert!(matches!(
            s.lookup(&lower("i-0dd.fleet.internal.")),
            Lookup::NotFound
        ));
        for name in ["www.i-0aa", "www.i-0cc"] {
            let found = s.lookup(&lower(&format!("{name}.fleet.internal.")));
            assert!(matches!(found, Lookup::Name(_)), "{name}");
        }
        // one record a name: the id name is not added again as an ancestor
        let copies = (0..s.records.len())
            .filter(|&r| r != s.named && s.relative(r) == b"\x05i-0aa")
            .count();
        assert_eq!(copies, 1);
    }

    #[test]
    fn static_names_join_the_zone_and_win_over_fleet_names() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.").with_statics(
            Arc::new(statics(
                "db A 192.0.2.10\nlb CNAME web-1\n_ldap._tcp SRV 0 0 389 dc1\ndc1 A 10.9.9.9\n",
            )),
        );
        let s = Snapshot::build(
            &[
                inst("i-0aa", Some("web-1"), &["10.0.0.1"]),
                inst("i-0bb", Some("db"), &["10.0.0.2"]),
            ],
            &naming,
            &zone(),
        );
        // the static name wins; the instance that claims it stays an owner
        let Lookup::Name(db) = s.lookup(&lower("db.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(db.ipv4(), ["192.0.2.10".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(db.statics().unwrap().line, 1);
        let owners: Vec<&str> = db.owners().map(|o| o.instance_id).collect();
        assert_eq!(owners, ["i-0bb"]);
        // its address's PTR falls back to its id name, which still answers
        let names: Vec<String> = s
            .names_of("10.0.0.2".parse().unwrap())
            .map(|e| e.text())
            .collect();
        assert_eq!(names, ["i-0bb.fleet.internal."]);
        let Lookup::Name(id) = s.lookup(&lower("i-0bb.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(id.ipv4(), ["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
        // names of static records only, and their empty non-terminals
        let Lookup::Name(lb) = s.lookup(&lower("lb.fleet.internal.")) else {
            panic!()
        };
        assert!(lb.ipv4().is_empty() && lb.owners().len() == 0);
        assert!(lb.statics().unwrap().cname().is_some());
        assert!(matches!(
            s.lookup(&lower("_tcp.fleet.internal.")),
            Lookup::EmptyNonTerminal
        ));
        assert!(matches!(
            s.lookup(&lower("_ldap._tcp.fleet.internal.")),
            Lookup::Name(_)
        ));
        // in entry order with the rest
        let all: Vec<String> = s.entries().map(|e| e.text()).collect();
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| text_order(&text_labels_any(a), &text_labels_any(b)));
        assert_eq!(all, sorted);
        assert_eq!(all.len(), 7);
        assert!(!s.entries().next().unwrap().text().is_empty());
        // a change to the static records is a change of the zone
        let other = Naming::new(Naming::default_rules(), "fleet.internal.").with_statics(Arc::new(
            statics(
                "db A 192.0.2.10\nlb CNAME web-2\n_ldap._tcp SRV 0 0 389 dc1\ndc1 A 10.9.9.9\n",
            ),
        ));
        let t = Snapshot::build(
            &[
                inst("i-0aa", Some("web-1"), &["10.0.0.1"]),
                inst("i-0bb", Some("db"), &["10.0.0.2"]),
            ],
            &other,
            &zone(),
        );
        assert!(t.differs_from(&s));
        let changed: Vec<String> = t
            .changed_entries(&s)
            .map(|(_, n)| n.unwrap().text())
            .collect();
        assert_eq!(changed, ["lb.fleet.internal."]);
    }

    /// Relative wire labels of a full name's text (any characters).
    fn text_labels_any(text: &str) -> Vec<u8> {
        let relative = text
            .trim_end_matches("fleet.internal.")
            .trim_end_matches('.');
        let mut wire = Vec::new();
        for label in relative.split('.') {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire
    }

    #[test]
    fn a_patch_that_changes_only_what_an_owner_is_reports_its_names_changed() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
        let web = inst("i-0000000000000001", Some("web"), &["10.0.0.1"]);
        // db's zone and type are in the tables already: the patched zone
        // has the current one's tables, and owners compare by index
        let mut db = inst("i-0000000000000002", Some("db"), &["10.0.0.2"]);
        db.availability_zone = Some("us-east-1b".into());
        db.instance_type = Some("m7g.large".into());
        let current = Snapshot::build([&web, &db], &naming, &zone());
        let gone = Packed::from_instances([&web]);
        for change in 0..2 {
            let mut moved = web.clone();
            match change {
                0 => moved.availability_zone = Some("us-east-1b".into()),
                _ => moved.instance_type = Some("m7g.large".into()),
            }
            let added = Packed::from_instances([&moved]);
            let patched = Snapshot::patched(&current, &naming, &zone(), &gone, &added)
                .unwrap()
                .unwrap();
            let full = Snapshot::build([&moved, &db], &naming, &zone());
            assert!(!patched.differs_from(&full));
            let changed: Vec<String> = patched
                .changed_entries(&current)
                .map(|(_, n)| n.unwrap().text())
                .collect();
            assert_eq!(
                changed,
                ["i-0000000000000001.fleet.internal.", "web.fleet.internal."],
                "change {change}"
            );
            assert_eq!(
                patched.name_changes(&current).changed,
                0,
                "no address moved"
            );
        }
    }

    #[test]
    fn patches_of_patches_share_the_text_of_the_build_until_a_quarter_is_dead() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
        let instance = |k: usize, name: &str| {
            let ip = format!("10.0.{}.{}", k / 250, k % 250 + 1);
            inst(&format!("i-{k:017x}"), Some(name), &[ip.as_str()])
        };
        // names of two labels give empty non-terminals, which patches add
        let mut fleet: Vec<(usize, Instance)> = (0..200)
            .map(|k| (k, instance(k, &format!("web-{k}.{}", ["a", "b"][k % 2]))))
            .collect();
        let mut current = Snapshot::build(fleet.iter().map(|f| &f.1), &naming, &zone());
        let mut rewrote = None;
        for round in 0..40 {
            // rename one, drop one, launch one: the common events
            let at = round * 2;
            let gone = vec![fleet[at].1.clone(), fleet[at + 1].1.clone()];
            let renamed = fleet[at].0;
            fleet[at].1 = instance(renamed, &format!("db-{round}.c"));
            fleet.remove(at + 1);
            let launched = 1000 + round;
            fleet.push((launched, instance(launched, &format!("new-{round}"))));
            let added = vec![fleet[at].1.clone(), fleet[fleet.len() - 1].1.clone()];
            let patched = Snapshot::patched(
                &current,
                &naming,
                &zone(),
                &Packed::from_instances(&gone),
                &Packed::from_instances(&added),
            )
            .unwrap()
            .unwrap();
            let full = Snapshot::build(fleet.iter().map(|f| &f.1), &naming, &zone());
            assert!(!patched.differs_from(&full), "round {round}");
            assert!(!full.differs_from(&patched), "round {round}");
            // every name and empty non-terminal answers as in the build
            for record in 0..full.records.len() {
                if record != full.named {
                    let labels = full.relative(record);
                    let found = patched.find(labels).map(|i| i < patched.named);
                    assert_eq!(found, Some(record < full.named), "round {round}");
                }
            }
            if !Arc::ptr_eq(&patched.names.shared, &current.names.shared) {
                rewrote.get_or_insert(round);
            }
            // the names added since the text was last written (and the
            // empty non-terminals) are all this zone holds alone
            assert!(patched.names.own.len() * 3 < patched.names.shared.len());
            current = patched;
        }
        // the first patch shares the build's text; some later one wrote
        // a new buffer, and shared it from then on
        let rewrote = rewrote.expect("a quarter of the text died in 40 rounds");
        assert!(rewrote > 0, "the first patches share");
    }

    #[test]
    fn an_update_of_another_zone_is_none() {
        let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
        let current = build(&[inst("i-0aa", Some("web-1"), &["10.0.0.1"])]);
        let other = Name::from_ascii("other.internal.").unwrap();
        let update = Snapshot::update_packed(
            &current,
            &naming,
            &other,
            &HashSet::new(),
            &Packed::from_instances(&[]),
        );
        assert!(update.unwrap().is_none());
    }
}

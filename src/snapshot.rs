//! The immutable, fully indexed zone that every reader shares.
//!
//! A [`Snapshot`] is built once from a list of instances and never changes:
//! the refresher builds a new one and swaps it into the [`Store`]. Queries
//! load the current `Arc` once and answer from it without locks, so a query
//! in flight keeps the version it started with. Everything that reads the
//! map (DNS, `list`, the hosts export, metrics) reads the same snapshot.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use hashbrown::HashTable;
use hickory_proto::rr::{LowerName, Name};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use crate::background::checkpoint;
use crate::inventory::Instance;
use crate::naming::{is_instance_id, Naming, NamingReport, Rule};

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

/// A run of items in one of the snapshot's flat arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(range: Range<usize>) -> Span {
        // A snapshot holds far fewer than 4 billion of anything: names are
        // at most 255 bytes and a fleet has at most millions of instances.
        Span {
            start: range.start as u32,
            len: (range.end - range.start) as u32,
        }
    }

    fn range(self) -> Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// One name of the zone: where its parts live in the flat arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameRecord {
    /// Its lowercase wire form, in `Snapshot::wire`.
    wire: Span,
    /// Its IPv4 addresses, in `Snapshot::ipv4`.
    ipv4: Span,
    /// Its IPv6 addresses, in `Snapshot::ipv6`.
    ipv6: Span,
    /// Its owners, in `Snapshot::owners`.
    owners: Span,
}

/// An instance behind a name, by reference into the snapshot's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OwnerRecord {
    /// Index into `Snapshot::instances`.
    instance: u32,
    /// Index into `Snapshot::rules`.
    rule: u16,
}

/// A served instance: its id and interned zone and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InstanceRecord {
    /// Its lowercase id, in `Snapshot::text`.
    id: Span,
    /// Index into `Snapshot::strings`, or [`NONE`].
    availability_zone: u16,
    /// Index into `Snapshot::strings`, or [`NONE`].
    instance_type: u16,
}

/// One instance behind a name (a view into a [`Snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The instance id, lowercase.
    pub instance_id: &'a str,
    /// The rule that gave this name to the instance.
    pub rule: &'a Rule,
    /// Its availability zone, when known.
    pub availability_zone: Option<&'a str>,
    /// Its instance type, when known.
    pub instance_type: Option<&'a str>,
}

/// Everything a name answers with (a view into a [`Snapshot`]).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    snapshot: &'a Snapshot,
    record: &'a NameRecord,
}

impl<'a> Entry<'a> {
    /// The full name in lowercase wire format (length-prefixed labels and a
    /// zero byte), as [`wire_key`] gives it.
    pub fn wire(&self) -> &'a [u8] {
        &self.snapshot.wire[self.record.wire.range()]
    }

    /// The full name, lowercase, fully qualified.
    pub fn name(&self) -> Name {
        // The bytes were encoded from a valid name at build time.
        Name::from_bytes(self.wire()).unwrap_or_else(|_| Name::root())
    }

    /// The full name as text with its final dot, e.g. `web-1.fleet.internal.`.
    pub fn text(&self) -> String {
        wire_text(self.wire())
    }

    /// IPv4 addresses of all owners, sorted, without duplicates.
    pub fn ipv4(&self) -> &'a [Ipv4Addr] {
        &self.snapshot.ipv4[self.record.ipv4.range()]
    }

    /// IPv6 addresses of all owners, sorted, without duplicates.
    pub fn ipv6(&self) -> &'a [Ipv6Addr] {
        &self.snapshot.ipv6[self.record.ipv6.range()]
    }

    /// The instances that carry the name, sorted by instance id.
    pub fn owners(&self) -> impl ExactSizeIterator<Item = Owner<'a>> + 'a {
        let snapshot = self.snapshot;
        snapshot.owners[self.record.owners.range()]
            .iter()
            .map(move |o| snapshot.owner(o))
    }
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

/// Wire-format labels as dotted text with the final dot (`.` for the root).
/// Bytes outside printable ASCII other than LDH never occur in built names.
fn wire_text(wire: &[u8]) -> String {
    let mut text = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some((&len, tail)) = rest.split_first() {
        if len == 0 {
            break;
        }
        let (label, tail) = tail.split_at(usize::from(len).min(tail.len()));
        text.extend(label.iter().map(|&b| char::from(b)));
        text.push('.');
        rest = tail;
    }
    if text.is_empty() {
        text.push('.');
    }
    text
}

/// Appends `relative` (a dotted LDH name) in lowercase wire form and then
/// `zone_wire` to `out`. On an empty or over-long label, or a name over 255
/// bytes, `out` is left as it was and `false` returned.
fn push_wire(relative: &str, zone_wire: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    for label in relative.split('.') {
        if label.is_empty() || label.len() > 63 {
            out.truncate(start);
            return false;
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.extend_from_slice(zone_wire);
    if out.len() - start > 255 {
        out.truncate(start);
        return false;
    }
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
/// quick to build and drop: every name's wire form lives in one byte
/// buffer, its addresses and owners in shared arrays, and one hash table of
/// `u32` indexes finds a name from a packet's bytes. All of it is built in
/// a canonical order (instances by id, names by text), so two snapshots of
/// the same content compare equal field by field.
#[derive(Debug)]
pub struct Snapshot {
    /// The zone apex, lowercase, fully qualified.
    zone: LowerName,
    /// The apex in lowercase wire form.
    zone_wire: Box<[u8]>,
    /// SOA serial; rises only when the content changes.
    serial: u32,
    /// When this snapshot was built.
    built_at: SystemTime,
    /// Every name's lowercase wire form, back to back.
    wire: Vec<u8>,
    /// Names with data (the first `named` records, sorted by their text
    /// relative to the zone), then the empty non-terminals: names that
    /// exist only as ancestors of other names.
    records: Vec<NameRecord>,
    /// How many of `records` have data.
    named: usize,
    /// Every record's index, hashed by its wire form.
    index: HashTable<u32>,
    /// The hash of `index` (seeded per process: names come from tags and
    /// queries, so their hashes must not be predictable).
    hasher: RandomState,
    /// Addresses of all names.
    ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses of all names.
    ipv6: Vec<Ipv6Addr>,
    /// Owners of all names.
    owners: Vec<OwnerRecord>,
    /// Served instances, sorted by id.
    instances: Vec<InstanceRecord>,
    /// Instance ids, back to back.
    text: String,
    /// Distinct availability zones and instance types.
    strings: Vec<Box<str>>,
    /// Distinct naming rules.
    rules: Vec<Rule>,
    /// (address, record of the primary name of an instance that has it),
    /// sorted, without duplicates.
    reverse: Vec<(IpAddr, u32)>,
    /// What naming rewrote and skipped.
    report: NamingReport,
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
        let zone = zone.to_lowercase();
        let zone_wire = wire_key(&zone);
        let mut report = NamingReport::default();

        // Served instances in id order; one instance listed twice (by two
        // units) is one instance.
        let mut served: Vec<(String, &Instance)> = Vec::new();
        for instance in instances {
            checkpoint();
            if !instance.is_running() {
                report.not_running += 1;
                continue;
            }
            let id = instance.id.to_ascii_lowercase();
            if !is_instance_id(&id) {
                report.bad_ids.push(instance.id.clone());
                continue;
            }
            served.push((id, instance));
        }
        served.sort_unstable_by(|a, b| {
            checkpoint();
            a.0.cmp(&b.0)
        });
        served.dedup_by(|a, b| a.0 == b.0);

        let mut strings: Interner<Box<str>> = Interner::new();
        let mut rules: Interner<Rule> = Interner::new();
        let id_rule = rules.get(&Rule::InstanceId, || Rule::InstanceId);
        let mut text = String::with_capacity(served.iter().map(|s| s.0.len()).sum());
        let mut table = Vec::with_capacity(served.len());
        // (name relative to the zone, instance, rule), and whether each
        // instance's primary name is a chosen one (else its id).
        let mut claims: Vec<(Cow<'_, str>, u32, u16)> = Vec::with_capacity(served.len() * 2);
        let mut chosen = Vec::with_capacity(served.len());
        let mut intern = |value: &Option<String>| {
            value
                .as_deref()
                .map_or(NONE, |v| strings.get(v, || v.into()))
        };
        for (i, (id, instance)) in served.iter().enumerate() {
            checkpoint();
            let start = text.len();
            text.push_str(id);
            table.push(InstanceRecord {
                id: Span::of(start..text.len()),
                availability_zone: intern(&instance.availability_zone),
                instance_type: intern(&instance.instance_type),
            });
            let i = i as u32;
            claims.push((Cow::Borrowed(id.as_str()), i, id_rule));
            let choice = naming.choose(instance, &mut report);
            chosen.push(choice.is_some());
            if let Some(choice) = choice {
                let rule = rules.get(&choice.rule, || choice.rule.clone());
                claims.push((Cow::Owned(choice.name), i, rule));
            }
        }
        claims.sort_unstable_by(|a, b| {
            checkpoint();
            a.cmp(b)
        });
        claims.dedup();

        let mut wire = Vec::with_capacity(claims.len() * (zone_wire.len() + 16));
        let mut records: Vec<NameRecord> = Vec::with_capacity(claims.len());
        let (mut ipv4, mut ipv6, mut owners) = (Vec::new(), Vec::new(), Vec::new());
        let mut primary: Vec<Option<u32>> = vec![None; served.len()];
        let mut group_start = 0;
        while group_start < claims.len() {
            checkpoint();
            let name = &claims[group_start].0;
            let group_end = claims[group_start..]
                .iter()
                .position(|c| c.0 != *name)
                .map_or(claims.len(), |n| group_start + n);
            let group = &claims[group_start..group_end];
            group_start = group_end;
            // Naming only yields valid names, so this never fails; a name
            // that somehow does not encode is left out rather than served wrong.
            let wire_start = wire.len();
            if !push_wire(name, &zone_wire, &mut wire) {
                continue;
            }
            let record = records.len() as u32;
            let (v4_start, v6_start, owners_start) = (ipv4.len(), ipv6.len(), owners.len());
            for &(_, instance, rule) in group {
                let served_instance = served[instance as usize].1;
                ipv4.extend_from_slice(&served_instance.private_ipv4);
                ipv6.extend_from_slice(&served_instance.ipv6);
                owners.push(OwnerRecord { instance, rule });
                if chosen[instance as usize] != (rule == id_rule) {
                    primary[instance as usize] = Some(record);
                }
            }
            sort_dedup_tail(&mut ipv4, v4_start);
            sort_dedup_tail(&mut ipv6, v6_start);
            records.push(NameRecord {
                wire: Span::of(wire_start..wire.len()),
                ipv4: Span::of(v4_start..ipv4.len()),
                ipv6: Span::of(v6_start..ipv6.len()),
                owners: Span::of(owners_start..owners.len()),
            });
        }
        drop(claims);
        let named = records.len();

        let hasher = RandomState::new();
        let mut index: HashTable<u32> = HashTable::with_capacity(named + named / 8);
        for (i, record) in records.iter().enumerate() {
            checkpoint();
            let key = &wire[record.wire.range()];
            index.insert_unique(hasher.hash_one(key), i as u32, |&j| {
                hasher.hash_one(&wire[records[j as usize].wire.range()])
            });
        }
        // Every ancestor of a name, up to the apex, exists: those without
        // data of their own are empty non-terminals. In wire form an
        // ancestor is a suffix of the name's bytes, so its record points
        // into them.
        for i in 0..named {
            checkpoint();
            let span = records[i].wire;
            let mut start = span.start as usize;
            let end = start + span.len as usize;
            loop {
                start += 1 + usize::from(wire[start]);
                if end - start <= zone_wire.len() {
                    break;
                }
                let key = &wire[start..end];
                let hash = hasher.hash_one(key);
                if index
                    .find(hash, |&j| wire[records[j as usize].wire.range()] == *key)
                    .is_some()
                {
                    // Present, and so are its own ancestors.
                    break;
                }
                let j = records.len() as u32;
                records.push(NameRecord {
                    wire: Span::of(start..end),
                    ipv4: Span::default(),
                    ipv6: Span::default(),
                    owners: Span::default(),
                });
                index.insert_unique(hash, j, |&k| {
                    hasher.hash_one(&wire[records[k as usize].wire.range()])
                });
            }
        }

        let mut reverse: Vec<(IpAddr, u32)> = Vec::with_capacity(served.len());
        for (i, (_, instance)) in served.iter().enumerate() {
            checkpoint();
            if let Some(record) = primary[i] {
                reverse.extend(
                    instance
                        .private_ipv4
                        .iter()
                        .map(|a| (IpAddr::V4(*a), record)),
                );
                reverse.extend(instance.ipv6.iter().map(|a| (IpAddr::V6(*a), record)));
            }
        }
        reverse.sort_unstable_by(|a, b| {
            checkpoint();
            a.cmp(b)
        });
        reverse.dedup();

        Snapshot {
            zone: LowerName::new(&zone),
            zone_wire,
            serial: unix_serial(SystemTime::now()),
            built_at: SystemTime::now(),
            wire,
            records,
            named,
            index,
            hasher,
            ipv4,
            ipv6,
            owners,
            instances: table,
            text,
            strings: strings.values,
            rules: rules.values,
            reverse,
            report,
        }
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
    /// differs from `other`. Both are built in canonical order, so this
    /// compares the tables as they are.
    pub fn differs_from(&self, other: &Snapshot) -> bool {
        self.zone != other.zone
            || self.named != other.named
            || self.wire != other.wire
            || self.records != other.records
            || self.ipv4 != other.ipv4
            || self.ipv6 != other.ipv6
            || self.owners != other.owners
            || self.instances != other.instances
            || self.text != other.text
            || self.strings != other.strings
            || self.rules != other.rules
            || self.reverse != other.reverse
    }

    /// The owner `o` as a view.
    fn owner(&self, o: &OwnerRecord) -> Owner<'_> {
        let instance = &self.instances[o.instance as usize];
        let string = |i: u16| self.strings.get(usize::from(i)).map(|s| &**s);
        Owner {
            instance_id: &self.text[instance.id.range()],
            rule: &self.rules[usize::from(o.rule)],
            availability_zone: string(instance.availability_zone),
            instance_type: string(instance.instance_type),
        }
    }

    /// The record whose lowercase wire form is `key`.
    fn find(&self, key: &[u8]) -> Option<usize> {
        self.index
            .find(self.hasher.hash_one(key), |&j| {
                self.wire[self.records[j as usize].wire.range()] == *key
            })
            .map(|&j| j as usize)
    }

    fn entry(&self, record: usize) -> Entry<'_> {
        Entry {
            snapshot: self,
            record: &self.records[record],
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
        if *key == *self.zone_wire {
            return Lookup::Apex;
        }
        match self.find(key) {
            Some(i) if i < self.named => Lookup::Name(self.entry(i)),
            Some(_) => Lookup::EmptyNonTerminal,
            None => Lookup::NotFound,
        }
    }

    /// Whether `name` is the zone or below it.
    pub fn in_zone(&self, name: &LowerName) -> bool {
        self.zone.zone_of(name)
    }

    /// The primary names of the instances that have `address`, in the
    /// order of their text.
    pub fn names_of(&self, address: IpAddr) -> impl Iterator<Item = Entry<'_>> {
        let start = self.reverse.partition_point(|(a, _)| *a < address);
        self.reverse[start..]
            .iter()
            .take_while(move |(a, _)| *a == address)
            .map(|&(_, record)| self.entry(record as usize))
    }

    /// Every name with data, sorted by its text relative to the zone.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry<'_>> {
        self.records[..self.named].iter().map(|record| Entry {
            snapshot: self,
            record,
        })
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
}

/// Sorts `items[start..]` and drops its duplicates.
fn sort_dedup_tail<T: Ord + Copy>(items: &mut Vec<T>, start: usize) {
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
}

//! The immutable, fully indexed zone that every reader shares.
//!
//! A [`Snapshot`] is built once from a list of instances and never changes:
//! the refresher builds a new one and swaps it into the [`Store`]. Queries
//! load the current `Arc` once and answer from it without locks, so a query
//! in flight keeps the version it started with. Everything that reads the
//! map (DNS, `list`, the hosts export, metrics) reads the same snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use hickory_proto::rr::{LowerName, Name};
use hickory_proto::serialize::binary::BinEncodable;

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

/// One instance behind a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The instance id (shared by the instance's names).
    pub instance_id: Arc<str>,
    /// The rule that gave this name to the instance.
    pub rule: Rule,
    /// Its availability zone, when known (one shared string per zone).
    pub availability_zone: Option<Arc<str>>,
    /// Its instance type, when known (one shared string per type).
    pub instance_type: Option<Arc<str>>,
}

/// Hands out one shared copy of each distinct string: a fleet has a few
/// zones and instance types, but every instance names one of each.
#[derive(Default)]
struct Interner(HashMap<String, Arc<str>>);

impl Interner {
    fn get(&mut self, value: Option<&String>) -> Option<Arc<str>> {
        let value = value?;
        if let Some(shared) = self.0.get(value) {
            return Some(shared.clone());
        }
        let shared: Arc<str> = Arc::from(value.as_str());
        self.0.insert(value.clone(), shared.clone());
        Some(shared)
    }
}

/// Everything a name answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full name in canonical (lowercase) form, with the zone.
    pub name: Name,
    /// IPv4 addresses of all owners, sorted, without duplicates.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses of all owners, sorted, without duplicates.
    pub ipv6: Vec<Ipv6Addr>,
    /// The instances that carry the name, sorted by instance id.
    pub owners: Vec<Owner>,
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

/// What a name in the zone is.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The zone apex (SOA and NS live here).
    Apex,
    /// A name with data.
    Name(&'a Entry),
    /// A name that exists only because names below it do (`db` for
    /// `db.primary`): NODATA for every type.
    EmptyNonTerminal,
    /// No such name: NXDOMAIN.
    NotFound,
}

/// The immutable zone built from one inventory.
#[derive(Debug)]
pub struct Snapshot {
    /// The zone apex, lowercase, fully qualified.
    zone: LowerName,
    /// SOA serial; rises only when the content changes.
    serial: u32,
    /// When this snapshot was built.
    built_at: SystemTime,
    /// Names with data.
    /// Keyed by the lowercase wire-format name ([`wire_key`]): the UDP
    /// fast path looks names up straight from a packet's bytes, and one
    /// compact key per name keeps a large zone small.
    entries: HashMap<Box<[u8]>, Entry>,
    /// Names that exist only as ancestors of other names.
    empty_non_terminals: HashSet<Box<[u8]>>,
    /// Address -> primary names of the instances that have it, sorted.
    reverse: HashMap<IpAddr, Vec<Name>>,
    /// How many instances are served.
    instances: usize,
    /// What naming rewrote and skipped.
    report: NamingReport,
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
        let mut report = NamingReport::default();
        // name (relative) -> (addresses, owners); BTreeMap for a stable order.
        let mut names: BTreeMap<String, (Vec<IpAddr>, Vec<Owner>)> = BTreeMap::new();
        let mut reverse: HashMap<IpAddr, Vec<Name>> = HashMap::new();
        let mut served = 0usize;
        let mut interner = Interner::default();

        for instance in instances {
            if !instance.is_running() {
                report.not_running += 1;
                continue;
            }
            let id = instance.id.to_ascii_lowercase();
            if !is_instance_id(&id) {
                report.bad_ids.push(instance.id.clone());
                continue;
            }
            served += 1;
            let addresses: Vec<IpAddr> = instance
                .private_ipv4
                .iter()
                .map(|a| IpAddr::V4(*a))
                .chain(instance.ipv6.iter().map(|a| IpAddr::V6(*a)))
                .collect();
            let shared_id: Arc<str> = Arc::from(id.as_str());
            let availability_zone = interner.get(instance.availability_zone.as_ref());
            let instance_type = interner.get(instance.instance_type.as_ref());
            let owner = |rule: Rule| Owner {
                instance_id: shared_id.clone(),
                rule,
                availability_zone: availability_zone.clone(),
                instance_type: instance_type.clone(),
            };

            let choice = naming.choose(instance, &mut report);
            let primary = choice.as_ref().map_or(id.as_str(), |c| c.name.as_str());
            if let Some(primary_fqdn) = fqdn(primary, &zone) {
                for address in &addresses {
                    reverse
                        .entry(*address)
                        .or_default()
                        .push(primary_fqdn.clone());
                }
            }

            let slot = names.entry(id.clone()).or_default();
            slot.0.extend(&addresses);
            slot.1.push(owner(Rule::InstanceId));
            if let Some(choice) = choice {
                let slot = names.entry(choice.name).or_default();
                slot.0.extend(&addresses);
                slot.1.push(owner(choice.rule));
            }
        }

        let mut entries = HashMap::with_capacity(names.len());
        for (relative, (addresses, mut owners)) in names {
            // Naming only yields valid names, so this never fails; a name
            // that somehow did not parse is left out rather than served wrong.
            let Some(name) = fqdn(&relative, &zone) else {
                continue;
            };
            let mut ipv4: Vec<Ipv4Addr> = Vec::new();
            let mut ipv6: Vec<Ipv6Addr> = Vec::new();
            for address in addresses {
                match address {
                    IpAddr::V4(a) => ipv4.push(a),
                    IpAddr::V6(a) => ipv6.push(a),
                }
            }
            ipv4.sort_unstable();
            ipv4.dedup();
            ipv6.sort_unstable();
            ipv6.dedup();
            owners.sort_by(|a, b| a.instance_id.cmp(&b.instance_id).then(a.rule.cmp(&b.rule)));
            owners.dedup();
            entries.insert(
                wire_key(&name),
                Entry {
                    name,
                    ipv4,
                    ipv6,
                    owners,
                },
            );
        }

        // Every ancestor of a name, up to the apex, exists: those without
        // data of their own are empty non-terminals. In wire form an
        // ancestor is a suffix: skip the first label.
        let mut empty_non_terminals: HashSet<Box<[u8]>> = HashSet::new();
        let zone_lower = LowerName::new(&zone);
        let apex_len = wire_key(&zone).len();
        for key in entries.keys() {
            let mut parent: &[u8] = key;
            loop {
                let skip = 1 + usize::from(parent[0]);
                parent = &parent[skip..];
                if parent.len() <= apex_len {
                    break;
                }
                if !entries.contains_key(parent) && !empty_non_terminals.contains(parent) {
                    empty_non_terminals.insert(parent.into());
                }
            }
        }

        for names in reverse.values_mut() {
            names.sort();
            names.dedup();
        }

        Snapshot {
            zone: zone_lower,
            serial: unix_serial(SystemTime::now()),
            built_at: SystemTime::now(),
            entries,
            empty_non_terminals,
            reverse,
            instances: served,
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
    /// differs from `other`.
    pub fn differs_from(&self, other: &Snapshot) -> bool {
        self.zone != other.zone
            || self.entries != other.entries
            || self.empty_non_terminals != other.empty_non_terminals
            || self.reverse != other.reverse
    }

    /// Classifies a name inside the zone. Call only for names where
    /// [`Snapshot::in_zone`] holds.
    pub fn lookup(&self, name: &LowerName) -> Lookup<'_> {
        if *name == self.zone {
            return Lookup::Apex;
        }
        // A LowerName encodes as its lowercase wire form (no compression
        // in a fresh encoder): the entries' key.
        let Ok(key) = name.to_bytes() else {
            return Lookup::NotFound;
        };
        if let Some(entry) = self.entries.get(key.as_slice()) {
            Lookup::Name(entry)
        } else if self.empty_non_terminals.contains(key.as_slice()) {
            Lookup::EmptyNonTerminal
        } else {
            Lookup::NotFound
        }
    }

    /// The name whose lowercase wire form is `key` (the fast path's lookup).
    pub fn wire_entry(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Whether `name` is the zone or below it.
    pub fn in_zone(&self, name: &LowerName) -> bool {
        self.zone.zone_of(name)
    }

    /// The primary names of the instances that have `address`, sorted.
    pub fn names_of(&self, address: &IpAddr) -> Option<&[Name]> {
        self.reverse.get(address).map(Vec::as_slice)
    }

    /// Every name with data, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Every name with data, sorted by name.
    pub fn entries_sorted(&self) -> Vec<&Entry> {
        let mut all: Vec<&Entry> = self.entries.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
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
        self.instances
    }

    /// How many names have data (instance-id names included).
    pub fn name_count(&self) -> usize {
        self.entries.len()
    }

    /// What naming rewrote and skipped.
    pub fn report(&self) -> &NamingReport {
        &self.report
    }
}

/// `relative` + `.` + `zone` as a name, or `None` if that is not a valid name.
fn fqdn(relative: &str, zone: &Name) -> Option<Name> {
    Name::from_ascii(relative).ok()?.append_domain(zone).ok()
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
        assert_eq!(e.ipv4, ["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(e.ipv6, ["2001:db8::1".parse::<Ipv6Addr>().unwrap()]);
        let Lookup::Name(e) = s.lookup(&lower("i-0aa.fleet.internal.")) else {
            panic!()
        };
        assert_eq!(e.owners[0].rule, Rule::InstanceId);
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
        let ips: Vec<String> = e.ipv4.iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.9"]);
        let ids: Vec<&str> = e.owners.iter().map(|o| &*o.instance_id).collect();
        assert_eq!(ids, ["i-0aa", "i-0bb"]);
        // the shared address points back at the one name, once
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            s.names_of(&ip).unwrap(),
            [Name::from_ascii("api.fleet.internal.").unwrap()]
        );
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
        assert_eq!(
            s.names_of(&ip).unwrap(),
            [Name::from_ascii("i-0dd.fleet.internal.").unwrap()]
        );
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

//! Any text as the static records file (`static_records`): no panic; an
//! error names a line of the text (or none) in one line; and records that
//! parse are what the zone may hold: names inside the zone of valid labels,
//! not shaped like instance ids, no CNAME beside other data or at the apex,
//! one TTL per RRset. Built into a zone with the demo fleet, every static
//! name answers with its static records, and every name lies in the zone.
#![no_main]

use std::sync::{Arc, OnceLock};

use fleetdns::inventory::file::parse_describe_instances;
use fleetdns::inventory::Instance;
use fleetdns::naming::{is_instance_id, Naming};
use fleetdns::snapshot::{Lookup, Snapshot};
use fleetdns::statics::parse;
use hickory_proto::rr::{LowerName, Name, RData};
use libfuzzer_sys::fuzz_target;

fn fleet() -> &'static [Instance] {
    static FLEET: OnceLock<Vec<Instance>> = OnceLock::new();
    FLEET.get_or_init(|| {
        parse_describe_instances(include_str!("../../deploy/examples/fleet.json")).unwrap()
    })
}

/// Relative wire labels as text.
fn text(labels: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < labels.len() {
        let len = usize::from(labels[i]);
        if !out.is_empty() {
            out.push(b'.');
        }
        out.extend_from_slice(&labels[i + 1..i + 1 + len]);
        i += 1 + len;
    }
    String::from_utf8(out).expect("labels are ASCII")
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let zone = Name::from_ascii("fleet.internal.").unwrap();
    let records = match parse(input, &zone, 60) {
        Ok(records) => records,
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains('\n'), "{message:?}");
            assert!(!error.message.is_empty());
            assert!(
                error.line <= input.split('\n').count(),
                "line {} of {}",
                error.line,
                input.split('\n').count()
            );
            return;
        }
    };
    for node in records.nodes().iter().chain(records.apex()) {
        assert!(!node.records.is_empty());
        let name = text(&node.labels);
        for label in name.split('.').filter(|_| !name.is_empty()) {
            assert!(!label.is_empty() && label.len() <= 63, "{name:?}");
            assert!(!label.starts_with('-') && !label.ends_with('-'), "{name:?}");
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'_'),
                "{name:?}"
            );
        }
        assert!(!is_instance_id(&name), "{name:?}");
        assert!(node.labels.len() + 16 <= 255, "{name:?} too long");
        if node.cname().is_some() {
            assert_eq!(node.records.len(), 1, "{name:?}: CNAME and other data");
            assert!(!node.labels.is_empty(), "CNAME at the apex");
        }
        for r in &node.records {
            assert!(r.ttl < 1 << 31);
            let same = node
                .records
                .iter()
                .filter(|o| o.data.record_type() == r.data.record_type());
            assert!(same.clone().all(|o| o.ttl == r.ttl), "{name:?}: two TTLs");
            assert_eq!(same.filter(|o| *o == r).count(), 1, "{name:?}: a duplicate");
        }
        let a = node
            .records
            .iter()
            .filter(|r| matches!(r.data, RData::A(_)))
            .count();
        assert_eq!(a, node.ipv4.len());
    }
    let naming = Naming::new(Naming::default_rules(), "fleet.internal.")
        .with_statics(Arc::new(records.clone()));
    let snapshot = Snapshot::build(fleet(), &naming, &zone);
    for node in records.nodes() {
        let relative = text(&node.labels);
        let mut name = Name::from_labels(relative.split('.').map(str::as_bytes))
            .and_then(|n| n.append_domain(&zone))
            .unwrap();
        name.set_fqdn(true);
        match snapshot.lookup(&LowerName::new(&name)) {
            Lookup::Name(entry) => {
                assert_eq!(entry.statics(), Some(node), "{name}");
                assert_eq!(entry.ipv4(), node.ipv4.as_slice());
                assert_eq!(entry.ipv6(), node.ipv6.as_slice());
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    for entry in snapshot.entries() {
        let name = entry.name();
        assert!(zone.zone_of(&name), "{name} outside the zone");
    }
});

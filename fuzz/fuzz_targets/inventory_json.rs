//! Any bytes as a describe-instances document: an error or instances, and
//! the instances go through packing (and come back the same), naming, the
//! snapshot and the hosts block without a panic and without an unsafe
//! hosts line.
#![no_main]

use fleetdns::hosts::{glibc_fields, render_lines};
use fleetdns::inventory::file::parse_describe_instances;
use fleetdns::inventory::packed::Packed;
use fleetdns::naming::Naming;
use fleetdns::snapshot::Snapshot;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(instances) = parse_describe_instances(text) else {
        return;
    };
    let zone = Name::from_ascii("fleet.internal.").unwrap();
    let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
    let packed = Packed::from_instances(&instances);
    assert_eq!(packed.instances().expect("unpacks"), instances);
    let snapshot = Snapshot::build_packed([&packed], &naming, &zone).expect("builds");
    for line in render_lines(&snapshot) {
        assert!(!line.contains(['\n', '\r', '#']), "{line:?}");
        let (ip, names) = glibc_fields(line.as_bytes()).expect("a hosts line");
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{line:?}");
        assert!((1..=2).contains(&names.len()), "{line:?}");
    }
});

//! Any text as the config file, through parsing and the validation that
//! follows it: no panic; every error is one line that names where it is
//! (the file, or the option); and a config that validates builds a zone
//! from the demo fleet whose names all lie inside its zone.
#![no_main]

use fleetdns::config::{read_config, Overrides};
use fleetdns::inventory::file::parse_describe_instances;
use fleetdns::inventory::Instance;
use fleetdns::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn fleet() -> &'static [Instance] {
    static FLEET: OnceLock<Vec<Instance>> = OnceLock::new();
    FLEET.get_or_init(|| {
        parse_describe_instances(include_str!("../../deploy/examples/fleet.json")).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings =
        match read_config(text, "fuzz.toml").and_then(|c| c.validate(&Overrides::default())) {
            Ok(settings) => settings,
            Err(error) => {
                let message = error.to_string();
                assert!(
                    !message.contains('\n'),
                    "a message of several lines: {message:?}"
                );
                assert!(!message.is_empty());
                return;
            }
        };
    let zone = &settings.zone.zone;
    assert!(zone.is_fqdn(), "{zone}");
    let snapshot = Snapshot::build(fleet(), &settings.naming, zone);
    for entry in snapshot.entries() {
        let name = entry.text();
        assert!(name.len() <= 254, "{name}");
        let fqdn = hickory_proto::rr::Name::from_ascii(&name).expect("names parse");
        assert!(zone.zone_of(&fqdn), "{name} outside {zone}");
    }
});

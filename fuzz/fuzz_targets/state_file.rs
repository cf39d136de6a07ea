//! Any bytes as the state file (`inventory.bin`, or the version 1
//! `inventory.json` when the first byte is odd), read as the daemon reads
//! it at start (load, then build the zone from the packed units, and the
//! removal guard's pass over ids and states, which agrees, and the diff of
//! units that patches a zone, which gives what a build gives): no panic,
//! no allocation that the file's size does not justify; what loads decodes
//! or fails cleanly; and what decodes is saved and read back unchanged.
//! With the selector's second bit, the bytes are the group ordinals file
//! (`ordinals.json`) instead: it loads or fails cleanly, and what loads is
//! saved and read back unchanged.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::SystemTime;

use fleetdns::config::{read_config, Overrides};
use fleetdns::naming::{Naming, NamingReport};
use fleetdns::snapshot::Snapshot;
use fleetdns::state::{load, load_ordinals, ordinals_path, save, save_ordinals};
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;

/// Two directories of this process's own, reused by every run: where the
/// input is put, and where what it decodes to is saved again.
fn dirs() -> &'static (PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("fleetdns-fuzz-state-{}", std::process::id()));
        let (input, output) = (base.join("in"), base.join("out"));
        std::fs::create_dir_all(&input).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        (input, output)
    })
}

/// The default naming policy and zone, as the daemon would build with.
fn policy() -> &'static (Naming, Name) {
    static POLICY: OnceLock<(Naming, Name)> = OnceLock::new();
    POLICY.get_or_init(|| {
        let settings = read_config("", "fuzz")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        (settings.naming, settings.zone.zone)
    })
}

/// A naming report in an order of its own: a patch lists what it kept
/// before what it added, a build in inventory order.
fn sorted(report: &NamingReport) -> (Vec<String>, Vec<String>, usize, Vec<String>) {
    let sort = |mut v: Vec<String>| {
        v.sort();
        v
    };
    (
        sort(report.rewrites.iter().map(|r| format!("{r:?}")).collect()),
        sort(report.skips.iter().map(|r| format!("{r:?}")).collect()),
        report.not_running,
        sort(report.bad_ids.clone()),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let (input, output) = dirs();
    if selector & 2 != 0 {
        std::fs::write(ordinals_path(input), bytes).unwrap();
        if let Ok(Some(ordinals)) = load_ordinals(input) {
            save_ordinals(output, &ordinals).unwrap();
            let again = load_ordinals(output).unwrap().expect("just saved");
            assert_eq!(again, ordinals);
        }
        return;
    }
    let (name, other) = if selector & 1 == 0 {
        ("inventory.bin", "inventory.json")
    } else {
        ("inventory.json", "inventory.bin")
    };
    let _ = std::fs::remove_file(input.join(other));
    std::fs::write(input.join(name), bytes).unwrap();
    let Ok(Some(state)) = load(input) else {
        return;
    };
    let (naming, zone) = policy();
    let _ = Snapshot::build_packed(state.units.iter().map(|u| &u.instances), naming, zone);
    let mut units = Vec::new();
    for unit in &state.units {
        // The removal guard's cheap pass reads ids and states only: it
        // never panics, and where everything decodes it agrees.
        let mut ids = Vec::new();
        let cheap = unit
            .instances
            .for_each_id(|id, running| ids.push((id.to_string(), running)));
        match unit.instances.instances() {
            Ok(instances) => {
                assert_eq!(instances.len(), unit.instances.len());
                assert!(cheap.is_ok(), "ids fail where instances decode");
                let full: Vec<(String, bool)> = instances
                    .iter()
                    .map(|i| (i.id.clone(), i.is_running()))
                    .collect();
                assert_eq!(ids, full);
                units.push((unit, instances));
            }
            Err(_) => return,
        }
    }
    // A refresh's diff of one unit's data against another's (any pair,
    // as if the second were the next fetch) patches the zone of the first
    // into the zone a build of the second gives, unless it says only a
    // build is exact.
    for (old, _) in units.iter().take(3) {
        for (new, _) in units.iter().take(3) {
            let (old, new) = (&old.instances, &new.instances);
            let diff = old.diff(new).expect("both decode");
            // what an event batch picks out of a unit: the records as they are
            let picked = old.select(|_| true).expect("decodes");
            assert!(picked.same_as(old).expect("in memory"), "a copy differs");
            let built = |p| Snapshot::build_packed([p], naming, zone).expect("decodes");
            let current = built(old);
            let patched = Snapshot::patched(&current, naming, zone, &diff.gone, &diff.added)
                .expect("decodes");
            if diff.entangled {
                continue;
            }
            let patched = patched.expect("the default policy has no groups");
            let want = built(new);
            assert!(!patched.differs_from(&want), "a patch is not the build");
            assert_eq!(sorted(patched.report()), sorted(want.report()));
        }
    }
    // Whatever decoded survives a save and a load as it was.
    let packed: Vec<_> = units
        .iter()
        .map(|(_, instances)| fleetdns::inventory::packed::Packed::from_instances(instances))
        .collect();
    let labels: Vec<(&str, SystemTime, &_)> = units
        .iter()
        .zip(&packed)
        .map(|((unit, _), p)| (unit.unit.as_str(), unit.fetched_at, p))
        .collect();
    save(output, state.serial, &labels).unwrap();
    let again = load(output).unwrap().expect("a state file was just saved");
    assert_eq!(again.serial, state.serial);
    assert_eq!(again.units.len(), units.len());
    for (read, (unit, instances)) in again.units.iter().zip(&units) {
        assert_eq!(read.unit, unit.unit);
        assert_eq!(&read.instances.instances().unwrap(), instances);
    }
});

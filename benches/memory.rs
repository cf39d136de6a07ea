// Run with: cargo bench --bench memory [-- INSTANCES]
//
// Live heap of the daemon's large structures at fleet scale, counted by a
// wrapping global allocator (exact bytes requested, not RSS), along the
// daemon's own path for N instances (default 100,000, each with a Name
// tag, as the load script's): the describe-instances file packed into a
// spool file as it is scanned, the snapshot built from the packed
// instances, the state saved and loaded back; with the peak of each step.
// For comparison, the same inventory parsed into `Instance`s and packed in
// memory. RSS as the kernel sees it is measured by benches/load/run.sh;
// this bench says which structure it is.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;

use fleetdns::inventory::file::{parse_describe_instances, FileSource};
use fleetdns::inventory::packed::{Packed, Spool};
use fleetdns::naming::Naming;
use fleetdns::snapshot::Snapshot;

mod common;
use hickory_proto::rr::Name;

/// The system allocator, counting live and peak bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(live, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Runs `f`, returning its value, the live bytes it left and its peak above
/// the live bytes at the start.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let value = f();
    let after = LIVE.load(Relaxed);
    (
        value,
        after.saturating_sub(before),
        PEAK.load(Relaxed) - before,
    )
}

/// A describe-instances document like the load script's; `rich` adds a
/// Role and an Env tag to every other instance and two aliases
/// (`dns-aliases`) to each tenth (issue 17's naming).
fn document(n: u32, rich: bool) -> String {
    let mut text = String::from(r#"{"Reservations":[{"Instances":["#);
    for i in 1..=n {
        if i > 1 {
            text.push(',');
        }
        let mut tags = format!(r#"{{"Key":"Name","Value":"web-{i}"}}"#);
        if rich && i % 2 == 0 {
            let _ = write!(
                tags,
                r#",{{"Key":"Role","Value":"role{}"}},{{"Key":"Env","Value":"env-{i}"}}"#,
                i % 50
            );
        }
        if rich && i % 10 == 0 {
            let _ = write!(
                tags,
                r#",{{"Key":"dns-aliases","Value":"api-{i}, www-{i}"}}"#
            );
        }
        let _ = write!(
            text,
            r#"{{"InstanceId":"i-{i:017x}","State":{{"Name":"running"}},"PrivateIpAddress":"10.{}.{}.{}","Placement":{{"AvailabilityZone":"us-east-1a"}},"Tags":[{tags}]}}"#,
            20 + i / 62_500,
            (i / 250) % 250,
            i % 250 + 1
        );
    }
    text.push_str("]}]}");
    text
}

fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let text = document(n, false);
    println!(
        "instances: {n}; describe-instances text: {}",
        mb(text.len())
    );

    let dir = std::env::temp_dir().join(format!("fleetdns-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("fleet.json");
    std::fs::write(&path, &text).expect("writes the document");
    let spool = Spool::in_dir(&dir);

    let (packed, live, peak) = measure(|| FileSource::new(&path).read(&spool).expect("reads"));
    println!(
        "file scanned and packed into a spool file ({} on disk): {} live, peak while scanning {}",
        mb(packed.byte_len() as usize),
        mb(live),
        mb(peak)
    );

    let zone = Name::from_ascii("fleet.internal.").expect("zone");
    let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
    let (snapshot, live, peak) =
        measure(|| Snapshot::build_packed([&packed], &naming, &zone).expect("builds"));
    println!(
        "snapshot ({} names): {} live ({} per name), peak while building {}",
        snapshot.name_count(),
        mb(live),
        live / snapshot.name_count().max(1),
        mb(peak)
    );
    for (part, bytes) in snapshot.heap_parts() {
        println!(
            "  {part}: {} ({} per name)",
            mb(bytes),
            bytes / snapshot.name_count().max(1)
        );
    }

    // The same fleet named by two templates, an alias tag and a group rule
    // (issue 17).
    let rich =
        Packed::from_instances(&parse_describe_instances(&document(n, true)).expect("parses"));
    let rich_naming = common::rich_naming();
    let (rich_snapshot, live, peak) =
        measure(|| Snapshot::build_packed([&rich], &rich_naming, &zone).expect("builds"));
    println!(
        "snapshot with 2 templates, an alias tag and a group rule ({} names): {} live ({} per name), peak while building {}",
        rich_snapshot.name_count(),
        mb(live),
        live / rich_snapshot.name_count().max(1),
        mb(peak)
    );
    drop((rich_snapshot, rich));

    // A reload that renames one instance, as the refresher does it: the
    // new fetch compared with the old unit record by record, then the
    // served zone patched (a new zone made beside the current one).
    let renamed = text.replacen(r#""Value":"web-1""#, r#""Value":"renamed-1""#, 1);
    let renamed_path = dir.join("renamed.json");
    std::fs::write(&renamed_path, &renamed).expect("writes the document");
    let new = FileSource::new(&renamed_path).read(&spool).expect("reads");
    let (diff, live, peak) = measure(|| packed.diff(&new).expect("compares"));
    println!(
        "a reload renaming one instance: compare {} live, peak {}",
        mb(live),
        mb(peak)
    );
    let (patched, live, peak) = measure(|| {
        Snapshot::patched(&snapshot, &naming, &zone, &diff.gone, &diff.added)
            .expect("patches")
            .expect("a patch")
    });
    println!(
        "  patch: the new zone {} live, peak while patching {} (the current zone: {})",
        mb(live),
        mb(peak),
        mb(snapshot.heap_parts().iter().map(|p| p.1).sum())
    );
    drop((patched, diff, new));

    let units = [("file:bench", SystemTime::now(), &packed)];
    let (reread, _, peak) = measure(|| fleetdns::state::save(&dir, 1, &units).expect("saves"));
    let size = std::fs::metadata(fleetdns::state::state_path(&dir)).map_or(0, |m| m.len());
    println!(
        "state file: {} on disk, peak while saving {}",
        mb(size as usize),
        mb(peak)
    );
    drop((reread, packed));
    let (state, live, peak) = measure(|| fleetdns::state::load(&dir).expect("loads"));
    println!(
        "state loaded: {} live, peak while loading {}",
        mb(live),
        mb(peak)
    );
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);

    // What the daemon no longer keeps: the inventory as `Instance`s, and
    // packed in memory.
    let (instances, live, peak) = measure(|| parse_describe_instances(&text).expect("parses"));
    println!(
        "for comparison, the inventory parsed into Instances: {} live ({} per instance), peak while parsing {}",
        mb(live),
        live / n as usize,
        mb(peak)
    );
    let (in_memory, live, _) = measure(|| Packed::from_instances(&instances));
    println!("and packed in memory: {} live", mb(live));
    drop((in_memory, instances));
}

// Run with: cargo bench --bench memory [-- INSTANCES]
//
// Live heap of the daemon's large structures at fleet scale, counted by a
// wrapping global allocator (exact bytes requested, not RSS): the parsed
// inventory of N instances (default 100,000, each with a Name tag, as the
// load script's), the snapshot built from it, the saved state's bytes, and
// the peak while parsing and while building. RSS as the kernel sees it is
// measured by benches/load/run.sh; this bench says which structure it is.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;

use fleetdns::inventory::file::parse_describe_instances;
use fleetdns::naming::Naming;
use fleetdns::snapshot::Snapshot;
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

/// A describe-instances document like the load script's.
fn document(n: u32) -> String {
    let mut text = String::from(r#"{"Reservations":[{"Instances":["#);
    for i in 1..=n {
        if i > 1 {
            text.push(',');
        }
        let _ = write!(
            text,
            r#"{{"InstanceId":"i-{i:017x}","State":{{"Name":"running"}},"PrivateIpAddress":"10.{}.{}.{}","Tags":[{{"Key":"Name","Value":"web-{i}"}}]}}"#,
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
    let text = document(n);
    println!(
        "instances: {n}; describe-instances text: {}",
        mb(text.len())
    );

    let (instances, live, peak) = measure(|| parse_describe_instances(&text).expect("parses"));
    println!(
        "parsed inventory: {} live ({} per instance), peak while parsing {}",
        mb(live),
        live / n as usize,
        mb(peak)
    );
    drop(text);

    let zone = Name::from_ascii("fleet.internal.").expect("zone");
    let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
    let (snapshot, live, peak) = measure(|| Snapshot::build(&instances, &naming, &zone));
    println!(
        "snapshot ({} names): {} live ({} per name), peak while building {}",
        snapshot.name_count(),
        mb(live),
        live / snapshot.name_count().max(1),
        mb(peak)
    );

    let dir = std::env::temp_dir().join(format!("fleetdns-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let units = [("file:bench", SystemTime::now(), instances.as_slice())];
    let ((), _, peak) = measure(|| fleetdns::state::save(&dir, 1, &units).expect("saves"));
    let size = std::fs::metadata(fleetdns::state::state_path(&dir)).map_or(0, |m| m.len());
    println!(
        "state file: {} on disk, peak while saving {}",
        mb(size as usize),
        mb(peak)
    );
    let (state, live, peak) = measure(|| fleetdns::state::load(&dir).expect("loads"));
    println!(
        "state loaded: {} live, peak while loading {}",
        mb(live),
        mb(peak)
    );
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
}

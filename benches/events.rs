// Run with: cargo bench --bench events [-- INSTANCES ...]
//
// What one EC2 event batch costs at fleet scale, against a full pass of the
// same fleet (issue 16): the refresher's own path, as the daemon runs it
// (state directory, persistence, swap), with an in-memory source in place
// of EC2. The source stands in for what cannot run here at this size: moto
// serves 100,000 instances far too slowly to time fleetdns against it, and
// the SDK's parsing of a one-instance describe is not fleetdns's cost
// (benches/ec2_decode.rs measures that per instance). The integration
// tests (tests/integration/events.rs) cover the same path against moto.
//
// For each size (default 1,000 and 100,000 instances, one unit): a rename
// of one instance applied as an event batch, many times, timed from the
// start of the batch to the swap (the first answer with it) and to the
// end (zone persisted, messages deletable), with the process CPU time of
// each batch; then full passes, each with one rename, timed the same way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetdns::inventory::packed::{Packed, Spool};
use fleetdns::inventory::{Instance, Source, SourceError, Tags, UnitFetch};
use fleetdns::naming::Naming;
use fleetdns::refresh::{EventBatch, Refresher, Schedule};
use fleetdns::snapshot::new_store;
use hickory_proto::rr::Name;

// The binary's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

const UNIT: &str = "ec2:ambient:us-east-1";

/// A fleet in memory, renamed at will: the bench's EC2.
struct Fleet(Mutex<Vec<Instance>>);

impl Fleet {
    fn new(n: u32) -> Fleet {
        Fleet(Mutex::new(
            (0..n)
                .map(|i| {
                    common::instance(i, Tags::from([("Name".to_string(), format!("web-{i}"))]))
                })
                .collect(),
        ))
    }

    /// Renames instance `k` (a new name each round); its id.
    fn rename(&self, k: usize, round: usize) -> String {
        let mut fleet = self.0.lock().expect("fleet");
        let instance = &mut fleet[k];
        instance.tags = Tags::from([("Name".to_string(), format!("renamed-{k}-{round}"))]);
        instance.id.clone()
    }

    fn pack<'a>(spool: &Spool, instances: impl Iterator<Item = &'a Instance>) -> Packed {
        let mut packer = spool.packer();
        for instance in instances {
            packer.push(instance);
        }
        packer.finish().expect("packs")
    }
}

#[async_trait::async_trait]
impl Source for Fleet {
    fn describe(&self) -> String {
        "bench fleet".to_string()
    }

    fn units(&self) -> Vec<String> {
        vec![UNIT.to_string()]
    }

    async fn fetch(&self, spool: &Spool) -> Vec<UnitFetch> {
        let fleet = self.0.lock().expect("fleet");
        vec![UnitFetch {
            unit: UNIT.to_string(),
            result: Ok(Fleet::pack(spool, fleet.iter())),
        }]
    }

    async fn describe_ids(
        &self,
        _unit: &str,
        ids: &[String],
        spool: &Spool,
    ) -> Option<Result<Packed, SourceError>> {
        let fleet = self.0.lock().expect("fleet");
        Some(Ok(Fleet::pack(
            spool,
            fleet.iter().filter(|i| ids.contains(&i.id)),
        )))
    }
}

/// The CPU time this process has used, all threads (the refresher's
/// blocking threads included).
fn cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Timings of one kind of update, in milliseconds.
#[derive(Default)]
struct Times {
    to_swap: Vec<f64>,
    to_end: Vec<f64>,
    cpu: Vec<f64>,
}

impl Times {
    fn push(&mut self, swap: Duration, end: Duration, cpu: Duration) {
        self.to_swap.push(swap.as_secs_f64() * 1e3);
        self.to_end.push(end.as_secs_f64() * 1e3);
        self.cpu.push(cpu.as_secs_f64() * 1e3);
    }

    fn row(&mut self, n: u32, what: &str) -> String {
        let quantile = |v: &mut Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q).round() as usize]
        };
        format!(
            "| {n} | {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            self.to_swap.len(),
            quantile(&mut self.to_swap, 0.5),
            quantile(&mut self.to_swap, 0.99),
            quantile(&mut self.to_end, 0.5),
            quantile(&mut self.to_end, 0.99),
            quantile(&mut self.cpu, 0.5),
        )
    }
}

/// Runs `update` and times it: to the swap it causes, to its end, and its
/// CPU.
async fn timed<F: std::future::Future<Output = ()>>(
    swaps: &mut tokio::sync::watch::Receiver<Option<Arc<fleetdns::snapshot::Snapshot>>>,
    update: F,
) -> (Duration, Duration, Duration) {
    swaps.borrow_and_update();
    let (started, cpu_before) = (Instant::now(), cpu());
    let swapped = Arc::new(Mutex::new(None));
    let watcher = {
        let (mut swaps, swapped) = (swaps.clone(), swapped.clone());
        tokio::spawn(async move {
            if swaps.changed().await.is_ok() {
                *swapped.lock().expect("slot") = Some(Instant::now());
            }
        })
    };
    update.await;
    let (end, cpu_used) = (started.elapsed(), cpu() - cpu_before);
    // The watcher has seen the swap by now, or there was none.
    tokio::time::sleep(Duration::from_millis(2)).await;
    watcher.abort();
    let swap = swapped.lock().expect("slot").map_or(end, |at| at - started);
    (swap, end, cpu_used)
}

async fn run(n: u32, rounds: usize, passes: usize) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("fleetdns-events-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fleet = Arc::new(Fleet::new(n));
    let zone = Name::from_ascii("fleet.internal.").expect("zone");
    let naming = Naming::new(Naming::default_rules(), "fleet.internal.");
    let mut refresher =
        Refresher::new(fleet.clone(), naming, zone, new_store()).with_schedule(Schedule {
            interval: Duration::from_secs(60),
            max_backoff: Duration::from_secs(600),
            state_dir: Some(dir.clone()),
            max_stale: Duration::from_secs(180),
            max_removed_fraction: 0.5,
            resync_interval: Duration::from_secs(900),
        });
    let mut swaps = refresher.subscribe();
    refresher.refresh_once().await.expect("first pass");

    let mut events = Times::default();
    for round in 0..rounds {
        let id = fleet.rename((round * 7919) % n as usize, round);
        let (done, _applied) = tokio::sync::oneshot::channel();
        let batch = EventBatch {
            units: vec![(UNIT.to_string(), vec![id])],
            done,
        };
        let (swap, end, cpu) = timed(&mut swaps, refresher.apply_events(batch)).await;
        events.push(swap, end, cpu);
    }
    let mut full = Times::default();
    for round in 0..passes {
        fleet.rename((round * 104_729) % n as usize, rounds + round);
        let (swap, end, cpu) = timed(&mut swaps, async {
            refresher.refresh_once().await.expect("pass");
        })
        .await;
        full.push(swap, end, cpu);
    }
    let _ = std::fs::remove_dir_all(&dir);
    vec![
        events.row(n, "event batch, one rename"),
        full.row(n, "full pass, one rename"),
    ]
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 100_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| instances | update | runs | to swap p50 (ms) | to swap p99 | to end p50 (ms) | to end p99 | CPU p50 (ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let (rounds, passes) = if n > 10_000 { (100, 10) } else { (400, 40) };
        for row in runtime.block_on(run(n, rounds, passes)) {
            println!("{row}");
        }
    }
}

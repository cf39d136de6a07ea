//! The refresher: fetch, build, compare, swap.
//!
//! It knows only the [`Source`] trait and the [`Store`]; it does not know
//! which source runs or who reads the snapshot. Each source unit keeps its
//! own last good instance list, so a unit that fails (a region whose API is
//! down) keeps serving what it had while the others move on. A snapshot
//! whose content equals the current one is not swapped, so the SOA serial
//! moves only when answers change.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::inventory::{Instance, Source};
use crate::naming::Naming;
use crate::snapshot::{Snapshot, Store};

/// What one refresh did.
#[derive(Debug)]
pub struct Refreshed {
    /// Whether a new snapshot was swapped in.
    pub outcome: Outcome,
    /// Units that failed this time (label, error); they kept their last good data.
    pub failed: Vec<(String, String)>,
}

/// Whether a refresh swapped a new snapshot in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new snapshot was swapped in.
    Changed,
    /// The content was the same; nothing was swapped.
    Unchanged,
}

/// Every unit failed and none has ever succeeded: nothing to serve.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoInventory(String);

/// Keeps the store's snapshot in step with the source.
pub struct Refresher {
    /// Where instances come from.
    source: Arc<dyn Source>,
    /// How they are named.
    naming: Naming,
    /// The zone apex.
    zone: Name,
    /// Where snapshots go.
    store: Store,
    /// Last good instances of each unit, by unit label (sorted, so the
    /// snapshot is built in a stable order).
    last_good: BTreeMap<String, Vec<Instance>>,
}

impl Refresher {
    /// A refresher that builds `zone` from `source` into `store`.
    pub fn new(source: Arc<dyn Source>, naming: Naming, zone: Name, store: Store) -> Self {
        Self {
            source,
            naming,
            zone,
            store,
            last_good: BTreeMap::new(),
        }
    }

    /// Fetches once and swaps in a new snapshot if the content changed.
    ///
    /// Units that fail are logged and keep their last good data; the call
    /// fails only when no unit has any data at all.
    pub async fn refresh_once(&mut self) -> Result<Refreshed, NoInventory> {
        let mut failed = Vec::new();
        for unit in self.source.fetch().await {
            match unit.result {
                Ok(instances) => {
                    self.last_good.insert(unit.unit, instances);
                }
                Err(error) => {
                    let kept = self.last_good.get(&unit.unit).map_or(0, Vec::len);
                    warn!(unit = %unit.unit, %error, kept, "fetch failed; keeping last good data of this unit");
                    failed.push((unit.unit, error.to_string()));
                }
            }
        }
        if self.last_good.is_empty() {
            let all: Vec<String> = failed.iter().map(|(u, e)| format!("{u}: {e}")).collect();
            return Err(NoInventory(all.join("; ")));
        }
        let instances: Vec<Instance> = self.last_good.values().flatten().cloned().collect();
        let snapshot = Snapshot::build(&instances, &self.naming, &self.zone);
        let current = self.store.load_full();
        let snapshot = match current.as_deref() {
            Some(current) if !snapshot.differs_from(current) => {
                return Ok(Refreshed {
                    outcome: Outcome::Unchanged,
                    failed,
                })
            }
            Some(current) => snapshot.with_serial_after(current),
            None => snapshot,
        };
        // Logged once per change, not on every unchanged refresh.
        for skip in &snapshot.report().skips {
            warn!(instance = %skip.instance_id, rule = %skip.rule, value = ?skip.value, reason = %skip.reason, "value gives no name; skipped");
        }
        info!(
            instances = snapshot.instance_count(),
            names = snapshot.name_count(),
            serial = snapshot.serial(),
            rewritten = snapshot.report().rewrites.len(),
            skipped = snapshot.report().skips.len(),
            "zone updated"
        );
        self.store.store(Some(Arc::new(snapshot)));
        Ok(Refreshed {
            outcome: Outcome::Changed,
            failed,
        })
    }

    /// Refreshes every `interval` (with up to 10% jitter, so a fleet of
    /// daemons does not call the API in step), and at once when `now` is
    /// notified, until `shutdown` turns true.
    pub async fn run(
        mut self,
        interval: Duration,
        now: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(jittered(interval)) => {}
                _ = now.notified() => info!("refresh requested"),
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if let Err(error) = self.refresh_once().await {
                warn!(%error, "refresh failed; serving last good data");
            }
        }
    }
}

/// `interval` minus up to 10%, chosen at random.
fn jittered(interval: Duration) -> Duration {
    let random = RandomState::new().build_hasher().finish();
    let tenth = interval.as_millis() as u64 / 10;
    let cut = if tenth == 0 { 0 } else { random % tenth };
    interval.saturating_sub(Duration::from_millis(cut))
}

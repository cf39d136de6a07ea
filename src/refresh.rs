//! The refresher: fetch, build, compare, swap, persist, back off.
//!
//! It knows only the [`Source`] trait and the [`Store`]; it does not know
//! which source runs or who reads the snapshot. Each source unit keeps its
//! own last good instance list, so a unit that fails (a region whose API is
//! down) keeps serving what it had while the others move on. Those lists
//! are [`Packed`]: sources pack what they fetch into unnamed files in the
//! state directory, and after each save they point into the state file, so
//! the inventory is on disk and only the zone is in memory. A snapshot
//! whose content equals the current one is not swapped, so the SOA serial
//! moves only when answers change. Readers that act on a change (the hosts
//! export) subscribe to a `watch` channel ([`Refresher::subscribe`]);
//! metrics and `/readyz` read the per-unit status ([`StatusHandle`]).
//!
//! A fetch that would take more than `max_removed_fraction` of a unit's
//! running instances (and at least [`MIN_HELD_REMOVALS`]) out of the zone
//! is held: the unit keeps its data, `/readyz` says why, and the next
//! fetch decides. If it removes as much again, it is applied; if not, the
//! held one was a glitch (an API answering half a region, a filter typed
//! wrong in a reload) and is forgotten. SIGUSR1 applies at once.
//!
//! Timing: every `interval` minus up to 10% jitter while all is well. After
//! a failed or partial refresh, exponential backoff with full jitter from
//! a short base, so a blip heals in seconds; after throttling, never sooner
//! than `interval` and doubling from there, because retrying sooner would
//! spend the account's shared API budget that throttled us. Both are capped
//! by `max_backoff` (see [`next_delay`]).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::rr::Name;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, info, warn};

use crate::inventory::packed::{has_id, Packed, Packer, Spool, UnitDiff};
use crate::inventory::Source;
use crate::metrics::{metrics, RefreshResult, StatusHandle};
use crate::naming::Naming;
use crate::snapshot::{next_serial, Snapshot, Store};
use crate::state;

/// What one refresh did.
#[derive(Debug)]
pub struct Refreshed {
    /// Whether a new snapshot was swapped in.
    pub outcome: Outcome,
    /// Units that failed this time; they kept their last good data.
    pub failed: Vec<UnitFailure>,
}

/// One unit that failed in a refresh.
#[derive(Debug, Clone)]
pub struct UnitFailure {
    /// The unit's label.
    pub unit: String,
    /// The error, as one line.
    pub error: String,
    /// Whether the API said to slow down.
    pub throttled: bool,
}

impl std::fmt::Display for UnitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.unit, self.error)
    }
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
#[error("{message}")]
pub struct NoInventory {
    /// Each unit's error, joined.
    message: String,
    /// Whether any unit was throttled.
    throttled: bool,
}

/// Timing and persistence of the background loop.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Time between refreshes while all is well.
    pub interval: Duration,
    /// Longest wait after failures or throttling (never below `interval`).
    pub max_backoff: Duration,
    /// Where the inventory is persisted; `None` in one-shot commands.
    pub state_dir: Option<PathBuf>,
    /// Unchanged data is re-persisted when the file is older than half of
    /// this, so that after a restart `/readyz` knows how fresh it is.
    pub max_stale: Duration,
    /// A fetch that would remove more than this fraction of a unit's
    /// running instances is held until the next one agrees (1: never).
    pub max_removed_fraction: f64,
    /// Time between full passes while EC2 events flow (see
    /// [`Refresher::with_events`]); unused without them.
    pub resync_interval: Duration,
}

impl Schedule {
    /// The time between full passes: the resync interval while events
    /// keep the data current, else the interval.
    fn full_pass_every(&self, following: bool) -> Duration {
        if following {
            self.resync_interval.max(self.interval)
        } else {
            self.interval
        }
    }
}

/// Removals of fewer instances than this are never held: in a small unit
/// a few terminations are a large fraction, and ordinary.
pub const MIN_HELD_REMOVALS: usize = 10;

/// One unit's last good data.
#[derive(Debug, Clone)]
struct UnitData {
    /// When it was fetched.
    fetched_at: SystemTime,
    /// What was fetched.
    instances: Packed,
}

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
    /// Last good data of each unit, by unit label (sorted, so the
    /// snapshot is built in a stable order).
    last_good: BTreeMap<String, UnitData>,
    /// Timing and persistence.
    schedule: Option<Schedule>,
    /// Where sources pack what they fetch: the state directory, or memory
    /// without one.
    spool: Spool,
    /// When the state file was last written by this process.
    persisted_at: Option<Instant>,
    /// Tells subscribers about each swapped-in snapshot.
    changes: watch::Sender<Option<Arc<Snapshot>>>,
    /// Per-unit freshness for metrics and readiness.
    status: StatusHandle,
    /// The skipped values already logged, as (instance, rule, value): the
    /// daemon warns about each once while it stays, not on every change.
    skips_logged: HashSet<(String, String, String)>,
    /// New settings from a reloaded configuration, taken before the next
    /// refresh.
    reconfigure: Option<watch::Receiver<Option<Arc<Reconfigure>>>>,
    /// Whether the next zone must get a new serial although its content
    /// is the same (see [`Reconfigure::new_serial`]).
    new_serial: bool,
    /// Whether the next refresh must rebuild the zone although no unit's
    /// data changed (the naming policy or the zone did).
    rebuild: bool,
    /// How the last zone swapped in was made.
    last_made: Option<Made>,
    /// Units whose last fetch would have removed too much, held (see
    /// [`Schedule::max_removed_fraction`]).
    held: BTreeSet<String>,
    /// Set (by SIGUSR1) to apply the next fetch of every unit whatever it
    /// removes; taken by the next refresh.
    accept_removals: Arc<AtomicBool>,
    /// Batches of EC2 events, applied in this task between refreshes.
    events: Option<mpsc::Receiver<EventBatch>>,
    /// Whether the event queue answers (its poller says): full passes
    /// every resync interval then, else every interval.
    following: Option<watch::Receiver<bool>>,
}

/// How [`Refresher::build_and_swap`] makes a zone: from the naming policy,
/// the apex and the served zone; with how it made it.
type Build = Box<
    dyn FnOnce(
            &Naming,
            &Name,
            Option<&Snapshot>,
        ) -> Result<Option<(Snapshot, Made)>, crate::inventory::packed::PackError>
        + Send,
>;

/// How a zone was made (the `how` of `fleetdns_zones_total`, and of the
/// "zone updated" log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// From every unit's instances.
    Build,
    /// The served zone with what a refresh found changed
    /// ([`Snapshot::patched`]).
    Patch,
    /// The served zone with what EC2 events named ([`Snapshot::patched`]
    /// where that is exact, else [`Snapshot::update_packed`]).
    Update,
}

impl Made {
    /// As the metric and the log say it.
    pub fn label(self) -> &'static str {
        match self {
            Made::Build => "build",
            Made::Patch => "patch",
            Made::Update => "update",
        }
    }
}

/// Instances that EC2 events named (issue 16), for the refresher to
/// describe again and apply between full refreshes.
#[derive(Debug)]
pub struct EventBatch {
    /// Per unit, the instance ids to describe again.
    pub units: Vec<(String, Vec<String>)>,
    /// Told whether every unit's describe succeeded (and so the messages
    /// may be deleted) once the zone with the changes is served and
    /// persisted.
    pub done: oneshot::Sender<bool>,
}

/// What a reloaded configuration changes in the refresher. The state
/// directory stays: moving it needs a restart.
pub struct Reconfigure {
    /// The source, built anew from the new settings.
    pub source: Arc<dyn Source>,
    /// The naming policy.
    pub naming: Naming,
    /// The zone apex.
    pub zone: Name,
    /// Interval, backoff and staleness.
    pub schedule: Schedule,
    /// The records' parameters changed (a TTL, an SOA field) although the
    /// inventory may not have: the next zone gets a new serial even if its
    /// names are the same, so secondaries transfer the new records.
    pub new_serial: bool,
}

impl Refresher {
    /// A refresher that builds `zone` from `source` into `store`, without
    /// persistence (one-shot commands); see [`Refresher::with_schedule`].
    pub fn new(source: Arc<dyn Source>, naming: Naming, zone: Name, store: Store) -> Self {
        let status = StatusHandle::default();
        status.update(|s| {
            s.units = source.units().into_iter().map(|u| (u, None)).collect();
        });
        Self {
            source,
            naming,
            zone,
            store,
            last_good: BTreeMap::new(),
            schedule: None,
            spool: Spool::memory(),
            persisted_at: None,
            changes: watch::channel(None).0,
            status,
            skips_logged: HashSet::new(),
            reconfigure: None,
            rebuild: false,
            last_made: None,
            new_serial: false,
            held: BTreeSet::new(),
            accept_removals: Arc::default(),
            events: None,
            following: None,
        }
    }

    /// This refresher applying the event batches that come on `events`,
    /// with full passes every resync interval while `following` (the
    /// queue's poller) says the queue answers, and every interval when it
    /// does not (issue 16).
    pub fn with_events(
        mut self,
        events: mpsc::Receiver<EventBatch>,
        following: watch::Receiver<bool>,
    ) -> Self {
        self.events = Some(events);
        self.following = Some(following);
        let every = self.schedule.as_ref().map(|s| s.interval);
        self.status.update(|s| {
            s.events = Some(crate::metrics::EventsStatus {
                full_pass_every: every.unwrap_or_default(),
                ..Default::default()
            });
        });
        self
    }

    /// Describes again the instances of `batch` and applies what comes
    /// back (see [`Refresher::apply_update`]); tells the sender whether
    /// every describe succeeded. A unit whose describe fails keeps its
    /// data, and its messages stay in the queue for another try.
    pub async fn apply_events(&mut self, batch: EventBatch) {
        let mut all = true;
        for (unit, ids) in &batch.units {
            match self.source.describe_ids(unit, ids, &self.spool).await {
                None => debug!(%unit, "an event for a unit this source does not describe"),
                Some(Err(error)) => {
                    warn!(%unit, %error, "describing the instances of an event failed; its messages stay in the queue for another try");
                    all = false;
                }
                Some(Ok(described)) => {
                    let found = described.len();
                    let outcome = self.apply_update(unit, ids, described).await;
                    info!(
                        %unit,
                        asked = ids.len(),
                        found,
                        changed = outcome == Some(Outcome::Changed),
                        "event applied"
                    );
                }
            }
        }
        let _ = batch.done.send(all);
    }

    /// The flag that makes the next refresh apply every unit's fetch
    /// whatever it removes (SIGUSR1 sets it, then asks for a refresh).
    pub fn accept_removals(&self) -> Arc<AtomicBool> {
        self.accept_removals.clone()
    }

    /// Takes new settings from `changes` before each refresh of [`run`](Self::run).
    pub fn with_reconfigure(mut self, changes: watch::Receiver<Option<Arc<Reconfigure>>>) -> Self {
        self.reconfigure = Some(changes);
        self
    }

    /// Applies new settings, if any came. Units the new source no longer
    /// has are dropped with their data; where that, the naming, the static
    /// records or the zone changed, the next refresh rebuilds the zone
    /// whatever the units fetch.
    fn take_new_settings(&mut self) {
        let Some(changes) = self.reconfigure.as_mut() else {
            return;
        };
        if !changes.has_changed().unwrap_or(false) {
            return;
        }
        let Some(new) = changes.borrow_and_update().clone() else {
            return;
        };
        let units = new.source.units();
        let had = self.last_good.len();
        self.last_good.retain(|unit, _| units.contains(unit));
        // A zone made the same way from the same units may be patched by
        // the next refresh; anything else is built from every unit.
        let same_zone = self.last_good.len() == had
            && !self.naming.rules_differ(&new.naming)
            && self.naming.statics() == new.naming.statics()
            && self.zone == new.zone;
        self.status.update(|s| {
            s.units = units
                .iter()
                .map(|u| (u.clone(), s.units.get(u).copied().flatten()))
                .collect();
        });
        self.source = new.source.clone();
        self.naming = new.naming.clone();
        self.zone = new.zone.clone();
        if let Some(schedule) = self.schedule.as_mut() {
            schedule.interval = new.schedule.interval;
            schedule.max_backoff = new.schedule.max_backoff;
            schedule.max_stale = new.schedule.max_stale;
        }
        self.rebuild |= !same_zone || new.new_serial;
        self.new_serial |= new.new_serial;
    }

    /// Logs the values naming skipped that were not skipped before: the
    /// daemon warns once per instance and value (a tag left as it is gives
    /// no new line on the next change); one-shot commands, whose `list` and
    /// `check` report skips themselves, log them at debug only.
    fn log_new_skips(&mut self, snapshot: &Snapshot) {
        let daemon = self.schedule.is_some();
        let mut current = HashSet::with_capacity(snapshot.report().skips.len());
        for skip in &snapshot.report().skips {
            let key = (
                skip.instance_id.clone(),
                skip.rule.to_string(),
                skip.value.clone(),
            );
            if !self.skips_logged.contains(&key) {
                if daemon {
                    warn!(instance = %skip.instance_id, rule = %skip.rule, value = ?skip.value, reason = %skip.reason, "value gives no name; skipped");
                } else {
                    debug!(instance = %skip.instance_id, rule = %skip.rule, value = ?skip.value, reason = %skip.reason, "value gives no name; skipped");
                }
            }
            current.insert(key);
        }
        // Only the current ones: memory stays bounded, and a value that
        // comes back after a fix is news again.
        self.skips_logged = current;
    }

    /// Sets the loop's timing and where state is persisted (and fetches
    /// are spooled).
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.spool = match &schedule.state_dir {
            Some(dir) => Spool::in_dir(dir),
            None => Spool::memory(),
        };
        self.schedule = Some(schedule);
        self
    }

    /// The per-unit status, for metrics and readiness.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// A receiver that sees every snapshot swapped in (the latest, if
    /// several came while the receiver was busy).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.changes.subscribe()
    }

    /// Loads the persisted inventory, if any, and serves it at once.
    ///
    /// Units the source no longer has (a region removed from the config)
    /// are dropped. A missing file is normal; an unreadable one is logged
    /// and ignored. Returns whether a snapshot is now served.
    pub fn restore(&mut self) -> bool {
        let Some(dir) = self.schedule.as_ref().and_then(|s| s.state_dir.clone()) else {
            return false;
        };
        let loaded = match state::load(&dir) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => {
                info!(dir = %dir.display(), "no persisted inventory yet");
                return false;
            }
            Err(error) => {
                warn!(%error, "ignoring the persisted inventory; waiting for the first fetch");
                return false;
            }
        };
        let wanted = self.source.units();
        for unit in loaded.units {
            if !wanted.contains(&unit.unit) {
                info!(unit = %unit.unit, "persisted unit is no longer configured; dropped");
                continue;
            }
            self.last_good.insert(
                unit.unit,
                UnitData {
                    fetched_at: unit.fetched_at,
                    instances: unit.instances,
                },
            );
        }
        if self.last_good.is_empty() {
            return false;
        }
        let units = self.last_good.values().map(|u| &u.instances);
        // Members keep the ordinals they had before the restart.
        let ordinals = if self.naming.group_rules().is_empty() {
            None
        } else {
            match state::load_ordinals(&dir) {
                Ok(ordinals) => ordinals,
                Err(error) => {
                    warn!(%error, "ignoring the persisted group ordinals; members get them afresh");
                    None
                }
            }
        };
        let snapshot = match Snapshot::build_packed_after(units, &self.naming, &self.zone, ordinals)
        {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // The header was fine, the instances are damaged.
                warn!(%error, "ignoring the persisted inventory; waiting for the first fetch");
                self.last_good.clear();
                return false;
            }
        };
        self.status.update(|s| {
            for (unit, data) in &self.last_good {
                s.units.insert(unit.clone(), Some(data.fetched_at));
            }
        });
        // Never behind what was served before the restart (secondaries and
        // caches compare serials).
        let serial = next_serial(loaded.serial, snapshot.serial());
        let snapshot = snapshot.with_serial(serial);
        info!(
            instances = snapshot.instance_count(),
            names = snapshot.name_count(),
            serial,
            path = %state::state_path(&dir).display(),
            "serving the persisted inventory until the first fetch"
        );
        self.swap(Arc::new(snapshot));
        true
    }

    fn swap(&self, snapshot: Arc<Snapshot>) {
        let old = self.store.swap(Some(snapshot.clone()));
        let old_sent = self.changes.send_replace(Some(snapshot));
        crate::background::drop_later((old, old_sent));
    }

    /// Fetches once and swaps in a new snapshot if the content changed.
    ///
    /// Units that fail are logged and keep their last good data; the call
    /// fails only when no unit has any data at all.
    pub async fn refresh_once(&mut self) -> Result<Refreshed, NoInventory> {
        let started = Instant::now();
        let mut failed = Vec::new();
        let mut succeeded = 0usize;
        // Whether any unit's instances differ from its last good ones: if
        // none do, the zone cannot have changed and is not rebuilt (the
        // build is the expensive part of a refresh of a large fleet).
        let mut inventory_changed = false;
        let accept = self.accept_removals.swap(false, Ordering::Relaxed);
        // A held unit's data is not the fetch's: no full success then.
        let mut held_now = false;
        let fraction = self
            .schedule
            .as_ref()
            .map_or(1.0, |schedule| schedule.max_removed_fraction);
        // Each changed unit's diff, while every changed unit has one.
        let mut diffs: Vec<(String, UnitDiff)> = Vec::new();
        let mut patchable = true;
        let fetched = self.source.fetch(&self.spool).await;
        debug!(
            ms = started.elapsed().as_millis() as u64,
            units = fetched.len(),
            "fetched"
        );
        for unit in fetched {
            match unit.result {
                Ok(instances) => {
                    succeeded += 1;
                    // Comparing the packed bytes of 100,000 instances reads
                    // megabytes: not on a runtime worker, where queries
                    // would wait. A read error counts as a change.
                    // What changed, record by record, is what patches the
                    // zone (and what the removal guard counts); `None`
                    // where it cannot be known (no old data, a read error):
                    // the zone is then built from every unit.
                    let old = self.last_good.get(&unit.unit).map(|u| u.instances.clone());
                    let new = instances.clone();
                    let (same, diff) = crate::background::run(move || {
                        let Some(old) = old else {
                            return (false, None);
                        };
                        if old.same_as(&new).unwrap_or(false) {
                            return (true, None);
                        }
                        (false, old.diff(&new).ok())
                    })
                    .await
                    .unwrap_or((false, None));
                    let removal = diff.as_ref().and_then(|d| removal(d, fraction));
                    let unit_name = unit.unit.clone();
                    match removal {
                        Some((removed, of)) if !accept && !self.held.contains(&unit_name) => {
                            let reason = format!(
                                "{unit_name}: the last fetch would remove {removed} of its {of} running instances (over max_removed_fraction {fraction}); held until the next fetch agrees (SIGUSR1 applies it now)"
                            );
                            warn!(unit = %unit_name, removed, of, "a fetch would remove more than max_removed_fraction of this unit; held until the next fetch agrees, the unit keeps its data (SIGUSR1 applies it now)");
                            self.status.update(|s| {
                                s.held.insert(unit_name.clone(), reason);
                            });
                            self.held.insert(unit_name);
                            held_now = true;
                            continue;
                        }
                        Some((removed, of)) => {
                            let why = if accept {
                                "SIGUSR1"
                            } else {
                                "the next fetch agrees"
                            };
                            warn!(unit = %unit_name, removed, of, "applying a fetch that removes more than max_removed_fraction: {why}");
                        }
                        None if self.held.contains(&unit_name) => {
                            info!(unit = %unit_name, "the next fetch does not confirm the held one; it is forgotten");
                        }
                        None => {}
                    }
                    if self.held.remove(&unit_name) {
                        self.status.update(|s| {
                            s.held.remove(&unit_name);
                        });
                    }
                    let now = SystemTime::now();
                    self.status.update(|s| {
                        s.units.insert(unit.unit.clone(), Some(now));
                    });
                    inventory_changed |= !same;
                    match diff {
                        Some(diff) if !same => diffs.push((unit.unit.clone(), diff)),
                        Some(_) => {}
                        None if same => {}
                        None => patchable = false,
                    }
                    match self.last_good.get_mut(&unit.unit) {
                        // The same bytes: keep the ones already in the
                        // state file and let the new spool go.
                        Some(kept) if same => kept.fetched_at = now,
                        _ => {
                            self.last_good.insert(
                                unit.unit,
                                UnitData {
                                    fetched_at: now,
                                    instances,
                                },
                            );
                        }
                    }
                }
                Err(error) => {
                    let kept = self
                        .last_good
                        .get(&unit.unit)
                        .map_or(0, |u| u.instances.len());
                    if self.schedule.is_some() {
                        warn!(unit = %unit.unit, %error, kept, "fetch failed; keeping last good data of this unit");
                    } else {
                        // One-shot commands fail with this error themselves.
                        debug!(unit = %unit.unit, %error, "fetch failed");
                    }
                    failed.push(UnitFailure {
                        unit: unit.unit,
                        throttled: error.is_throttling(),
                        error: error.to_string(),
                    });
                }
            }
        }
        if failed.is_empty() && !held_now {
            self.status
                .update(|s| s.last_full_success = Some(SystemTime::now()));
        }
        if self.last_good.is_empty() {
            metrics().count_refresh(RefreshResult::Failed, started.elapsed());
            let all: Vec<String> = failed.iter().map(ToString::to_string).collect();
            return Err(NoInventory {
                message: all.join("; "),
                throttled: failed.iter().any(|f| f.throttled),
            });
        }
        debug!(
            ms = started.elapsed().as_millis() as u64,
            "fetched units compared"
        );
        let diffs = patchable.then_some(diffs);
        let outcome = self.rebuild_and_swap(inventory_changed, diffs).await;
        if succeeded > 0 {
            self.persist(outcome == Outcome::Changed).await;
        }
        let result = if succeeded == 0 {
            RefreshResult::Failed
        } else if !failed.is_empty() {
            RefreshResult::Partial
        } else if outcome == Outcome::Changed {
            RefreshResult::Changed
        } else {
            RefreshResult::Unchanged
        };
        metrics().count_refresh(result, started.elapsed());
        Ok(Refreshed { outcome, failed })
    }

    /// Builds the zone from every unit's last good data (unless nothing
    /// changed: `inventory_changed` false, a zone served, no rebuild due),
    /// and swaps it in if it differs from the served one. Where `diffs`
    /// holds what changed in each changed unit since the served zone was
    /// made, the served zone is patched with them instead, where that is
    /// exact (see [`patch_zone`]).
    async fn rebuild_and_swap(
        &mut self,
        inventory_changed: bool,
        diffs: Option<Vec<(String, UnitDiff)>>,
    ) -> Outcome {
        // Building and comparing a large zone takes CPU for a while (about
        // a tenth of a second at 100,000 instances): on a blocking thread,
        // so the runtime's workers keep answering queries meanwhile.
        let units: Vec<(String, Packed)> = self
            .last_good
            .iter()
            .map(|(unit, data)| (unit.clone(), data.instances.clone()))
            .collect();
        let unchanged = !inventory_changed && self.store.load().is_some() && !self.rebuild;
        let diffs = diffs.filter(|_| !self.rebuild);
        self.rebuild = false;
        self.build_and_swap(
            unchanged,
            Box::new(move |naming, zone, current| {
                if let (Some(current), Some(diffs)) = (current, diffs) {
                    let started = Instant::now();
                    if let Some(patched) = patch_zone(current, naming, zone, &diffs, &units)? {
                        debug!(ms = started.elapsed().as_millis() as u64, "zone patched");
                        return Ok(Some((patched, Made::Patch)));
                    }
                }
                let ordinals = current
                    .filter(|_| !naming.group_rules().is_empty())
                    .map(Snapshot::ordinals);
                let units = units.iter().map(|(_, packed)| packed);
                Snapshot::build_packed_after(units, naming, zone, ordinals)
                    .map(|zone| Some((zone, Made::Build)))
            }),
        )
        .await
    }

    /// Builds a zone with `build` (unless `unchanged`) on a blocking
    /// thread, and swaps it in if it differs from the served one. `build`
    /// gets the naming policy, the apex and the served zone; `Ok(None)`
    /// means it could not (an update without a zone to update).
    async fn build_and_swap(&mut self, unchanged: bool, build: Build) -> Outcome {
        let (naming, zone) = (self.naming.clone(), self.zone.clone());
        let current = self.store.load_full();
        let previous = current.clone();
        let new_serial = std::mem::take(&mut self.new_serial);
        let started = Instant::now();
        let built = crate::background::run(move || {
            if unchanged {
                return Ok::<_, crate::inventory::packed::PackError>(None);
            }
            let Some((snapshot, made)) = build(&naming, &zone, current.as_deref())? else {
                return Ok(None);
            };
            debug!(ms = started.elapsed().as_millis() as u64, "zone built");
            Ok(match current.as_deref() {
                Some(current) if !new_serial && !snapshot.differs_from(current) => None,
                Some(current) => Some((snapshot.with_serial_after(current), made)),
                None => Some((snapshot, made)),
            })
        })
        .await;
        let snapshot = match built {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(error)) => {
                // A spool or state file that cannot be read back: the disk,
                // not the inventory. Keep serving what we have; the served
                // zone no longer follows the units' data, so the next one is
                // built from all of it, never patched.
                tracing::error!(%error, "building the zone failed; serving the previous one");
                self.rebuild = true;
                None
            }
            Err(error) => {
                // A bug, not bad data: keep serving what we have.
                tracing::error!(%error, "building the zone failed; serving the previous one");
                self.rebuild = true;
                None
            }
        };
        let outcome = if snapshot.is_some() {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        };
        if let Some((snapshot, made)) = snapshot {
            let snapshot = Arc::new(snapshot);
            self.swap(snapshot.clone());
            metrics().count_zone(made.label());
            self.last_made = Some(made);
            // What changed, as the hosts export counts its lines, for the
            // log line: a walk over both zones (milliseconds at 100,000
            // names), after the swap so that answers do not wait for it.
            // The first zone of a run has nothing to compare with.
            let changes = match previous {
                Some(previous) => {
                    let new = snapshot.clone();
                    crate::background::run(move || new.name_changes(&previous))
                        .await
                        .ok()
                }
                None => None,
            };
            self.log_new_skips(&snapshot);
            if snapshot.instance_count() == 0 && self.schedule.is_some() {
                warn!(source = %self.source.describe(), "the fleet is empty: no running instance was listed (check the regions, the filters and the account); names of the zone get NXDOMAIN");
            }
            let (added, removed, changed) = changes.map_or((None, None, None), |c| {
                (Some(c.added), Some(c.removed), Some(c.changed))
            });
            info!(
                instances = snapshot.instance_count(),
                names = snapshot.name_count(),
                added,
                removed,
                changed,
                serial = snapshot.serial(),
                how = made.label(),
                rewritten = snapshot.report().rewrites.len(),
                skipped = snapshot.report().skips.len(),
                "zone updated"
            );
        }
        outcome
    }

    /// Applies what an EC2 event's targeted describe found (issue 16):
    /// `described` holds the instances among `ids` that belong in `unit`
    /// now; the other `ids` have left it. The unit's other instances are
    /// kept as they are, the zone is updated and swapped if it changed, and
    /// the state is persisted before this returns, so the event's messages
    /// may be deleted then. Runs in the refresher's own task, like full
    /// passes, so the two never interleave on a unit (one writer). Never
    /// held by `max_removed_fraction`: an event names its instances.
    ///
    /// The zone is the served one with the described instances in place
    /// of the asked ones ([`Snapshot::update_packed`]): no unit is read
    /// back and no other instance named again, and it is swapped before
    /// the unit's data is merged for the state file. A full build where no
    /// zone is served yet, or the naming or the zone changed since (a
    /// reload).
    ///
    /// `None` when the unit has no data yet (its first full pass will
    /// bring everything) or its data cannot be read back; the messages
    /// then stay, and come back.
    pub async fn apply_update(
        &mut self,
        unit: &str,
        ids: &[String],
        described: Packed,
    ) -> Option<Outcome> {
        let old = self.last_good.get(unit)?.instances.clone();
        let ids: HashSet<String> = ids.iter().cloned().collect();
        let updated = if self.rebuild || self.store.load().is_none() {
            None
        } else {
            let (ids, described, unit_data) = (ids.clone(), described.clone(), old.clone());
            let others: Vec<Packed> = (self.last_good.iter())
                .filter(|(name, _)| *name != unit)
                .map(|(_, data)| data.instances.clone())
                .collect();
            Some(
                self.build_and_swap(
                    false,
                    Box::new(move |naming, zone, current| {
                        let Some(current) = current else {
                            return Ok(None);
                        };
                        // A patch where it is exact (issue 18): a few
                        // milliseconds where the update takes tens.
                        let patched = patch_for_events(
                            current, naming, zone, &unit_data, &ids, &described, &others,
                        )?;
                        let updated = match patched {
                            Some(zone) => Some(zone),
                            None => {
                                Snapshot::update_packed(current, naming, zone, &ids, &described)?
                            }
                        };
                        Ok(updated.map(|zone| (zone, Made::Update)))
                    }),
                )
                .await,
            )
        };
        let packer = self.spool.packer();
        let merged = crate::background::run(move || merge(&old, &ids, &described, packer))
            .await
            .ok()?;
        let merged = match merged {
            Ok(m) => m,
            Err(error) => {
                warn!(%unit, %error, "cannot apply an update to this unit's data; the next full refresh will");
                return None;
            }
        };
        if let Some(data) = self.last_good.get_mut(unit) {
            data.instances = merged;
        }
        let outcome = match updated {
            Some(outcome) => outcome,
            None => self.rebuild_and_swap(true, None).await,
        };
        self.persist(outcome == Outcome::Changed).await;
        Some(outcome)
    }

    /// Writes the state file after a change, or when the file is getting
    /// old; failures are logged, counted and otherwise ignored (serving
    /// matters more than persisting).
    async fn persist(&mut self, changed: bool) {
        let Some(schedule) = &self.schedule else {
            return;
        };
        let Some(dir) = schedule.state_dir.clone() else {
            return;
        };
        let due = self
            .persisted_at
            .is_none_or(|at| at.elapsed() >= schedule.max_stale / 2);
        if !changed && !due {
            return;
        }
        let Some(serial) = self.store.load().as_ref().map(|s| s.serial()) else {
            return;
        };
        let units: Vec<(String, SystemTime, Packed)> = self
            .last_good
            .iter()
            .map(|(label, u)| (label.clone(), u.fetched_at, u.instances.clone()))
            .collect();
        let path = state::state_path(&dir);
        let ordinals_dir = dir.clone();
        let written = crate::background::run(move || {
            let borrowed: Vec<(&str, SystemTime, &Packed)> = units
                .iter()
                .map(|(label, at, instances)| (label.as_str(), *at, instances))
                .collect();
            state::save(&dir, serial, &borrowed)
        })
        .await;
        metrics().count_state_write(matches!(written, Ok(Ok(_))));
        // The group ordinals beside it, so that members keep them across a
        // restart.
        if !self.naming.group_rules().is_empty() {
            if let Some(snapshot) = self.store.load_full() {
                let saved = crate::background::run(move || {
                    state::save_ordinals(&ordinals_dir, &snapshot.ordinals())
                })
                .await;
                if let Ok(Err(error)) = saved {
                    warn!(%error, "cannot persist the group ordinals; serving goes on");
                }
            }
        }
        match written {
            Ok(Ok(reread)) => {
                self.persisted_at = Some(Instant::now());
                // From now on each unit is read from the new file; the
                // spools (and the previous file) are let go.
                for (unit, instances) in self.last_good.values_mut().zip(reread) {
                    unit.instances = instances;
                }
            }
            Ok(Err(error)) => {
                warn!(path = %path.display(), %error, "cannot persist the inventory; serving goes on")
            }
            Err(error) => warn!(%error, "persisting task failed; serving goes on"),
        }
    }

    /// Refreshes at once, then on the schedule (see the module doc), and at
    /// once when `now` is notified, until `shutdown` turns true. Needs
    /// [`Refresher::with_schedule`].
    pub async fn run(mut self, now: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        // The timing comes from the config (`with_schedule`); a second set
        // of defaults here would drift from it.
        let Some(schedule) = self.schedule.clone() else {
            tracing::error!("refresher run without a schedule; not refreshing");
            return;
        };
        let mut failures = 0u32;
        // When every unit last fetched: how old the served data was when
        // fetching works again.
        let mut last_success: Option<Instant> = None;
        let mut following = self.following.as_ref().is_some_and(|f| *f.borrow());
        loop {
            self.take_new_settings();
            let schedule = self.schedule.clone().unwrap_or(schedule.clone());
            let throttled = match self.refresh_once().await {
                Ok(r) if r.failed.is_empty() => {
                    if failures > 0 {
                        match last_success {
                            Some(at) => info!(
                                "refresh succeeded after {failures} failures, data age {} s",
                                at.elapsed().as_secs()
                            ),
                            None => info!("refresh succeeded after {failures} failures"),
                        }
                    }
                    failures = 0;
                    last_success = Some(Instant::now());
                    false
                }
                Ok(r) => {
                    failures = failures.saturating_add(1);
                    r.failed.iter().any(|f| f.throttled)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    // Each unit's failure has its own line already; this
                    // says once what it means for clients.
                    if failures == 1 {
                        warn!("no inventory yet: zone queries get SERVFAIL until a fetch succeeds");
                    }
                    error.throttled
                }
            };
            let pass_ended = tokio::time::Instant::now();
            let next = |following: bool| {
                next_delay(
                    schedule.full_pass_every(following),
                    schedule.max_backoff,
                    failures,
                    throttled,
                    random(),
                )
            };
            let delay = next(following);
            self.show_mode(following, &schedule);
            if failures > 0 {
                info!(
                    failures,
                    throttled,
                    retry_in_ms = delay.as_millis() as u64,
                    "backing off"
                );
            }
            // Until the next refresh is due: event batches as they come,
            // and a new due time when the queue stops or starts answering.
            let mut due = pass_ended + delay;
            loop {
                let batch = tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    _ = now.notified() => {
                        info!("refresh requested");
                        break;
                    }
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    now_following = mode_change(&mut self.following) => {
                        if now_following != following {
                            following = now_following;
                            due = pass_ended + next(following);
                            self.show_mode(following, &schedule);
                            if following {
                                info!(every_s = schedule.full_pass_every(true).as_secs(), "EC2 events flow: full passes only every resync_interval_secs");
                            } else {
                                warn!(every_s = schedule.interval.as_secs(), "EC2 events do not flow: full passes every interval_secs until the queue answers again");
                            }
                        }
                        continue;
                    }
                    batch = next_batch(&mut self.events) => batch,
                };
                match batch {
                    Some(batch) => self.apply_events(batch).await,
                    // The poller is gone: refreshes alone from here on.
                    None => {
                        self.events = None;
                        self.following = None;
                        if following {
                            following = false;
                            due = pass_ended + next(false);
                            self.show_mode(false, &schedule);
                        }
                    }
                }
            }
        }
    }

    /// Records the time between full passes of the current mode for
    /// `/readyz` (only where events are configured).
    fn show_mode(&self, following: bool, schedule: &Schedule) {
        let every = schedule.full_pass_every(following);
        self.status.update(|s| {
            if let Some(events) = s.events.as_mut() {
                events.full_pass_every = every;
            }
        });
    }
}

/// `old` without the instances whose id is in `ids`, then those of
/// `described` whose id is: what a targeted describe of `ids` says the unit
/// holds now. An instance `described` lists but nobody asked about is
/// left out: the update touches only what it was asked.
fn merge(
    old: &Packed,
    ids: &HashSet<String>,
    described: &Packed,
    mut packer: Packer,
) -> Result<Packed, String> {
    old.copy_into(&mut packer, |id| !ids.contains(id))
        .map_err(|e| e.to_string())?;
    described
        .copy_into(&mut packer, |id| ids.contains(id))
        .map_err(|e| e.to_string())?;
    packer.finish().map_err(|e| e.to_string())
}

/// Whether the event queue answers, once that changes; never without a
/// queue, or once its poller is gone.
async fn mode_change(following: &mut Option<watch::Receiver<bool>>) -> bool {
    let Some(receiver) = following else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => *receiver.borrow_and_update(),
        Err(_) => {
            *following = None;
            false
        }
    }
}

/// The next batch of events, or never when there is no channel.
async fn next_batch(events: &mut Option<mpsc::Receiver<EventBatch>>) -> Option<EventBatch> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// How many of a unit's running instances its next fetch takes out of
/// the zone (absent, or no longer running), and of how many, if that is
/// more than `fraction` of them and at least [`MIN_HELD_REMOVALS`]; else
/// `None`.
fn removal(diff: &UnitDiff, fraction: f64) -> Option<(usize, usize)> {
    let (removed, of) = (diff.removed_running, diff.old_running);
    let too_many =
        fraction < 1.0 && removed >= MIN_HELD_REMOVALS && removed as f64 > fraction * of as f64;
    too_many.then_some((removed, of))
}

/// Whether any instance of `packed` has one of `ids` (lowercase).
fn shares_an_id(
    packed: &Packed,
    ids: &HashSet<String>,
) -> Result<bool, crate::inventory::packed::PackError> {
    let mut shared = false;
    packed.for_each_id(|id, _| shared |= has_id(ids, id))?;
    Ok(shared)
}

/// The served zone `current` patched with what an event batch's describe
/// found ([`Snapshot::patched`]): `ids` asked in the unit whose data is
/// `old`, `described` what came back. `None` where only
/// [`Snapshot::update_packed`] is exact: an id asked in another case than
/// the unit lists it, an id of another unit (`others`), group rules.
fn patch_for_events(
    current: &Snapshot,
    naming: &Naming,
    zone: &Name,
    old: &Packed,
    ids: &HashSet<String>,
    described: &Packed,
    others: &[Packed],
) -> Result<Option<Snapshot>, crate::inventory::packed::PackError> {
    let lower: HashSet<String> = ids.iter().map(|id| id.to_ascii_lowercase()).collect();
    let mut exact = true;
    let gone = old.select(|id| {
        let hit = has_id(&lower, id);
        exact &= !hit || ids.contains(id);
        hit
    })?;
    if !exact {
        return Ok(None);
    }
    for other in others {
        if shares_an_id(other, &lower)? {
            return Ok(None);
        }
    }
    let added = described.select(|id| ids.contains(id))?;
    Snapshot::patched(current, naming, zone, &gone, &added)
}

/// The served zone `current` patched with what changed in each changed
/// unit ([`Snapshot::patched`]), or `None` where only a build from every
/// unit is exact: an instance listed twice (in one unit with one copy
/// changed, or in two units: a build keeps the first copy), group rules,
/// or a change to more than a quarter of the zone (a build costs no more
/// then, and keeps the patch's case the common one).
fn patch_zone(
    current: &Snapshot,
    naming: &Naming,
    zone: &Name,
    diffs: &[(String, UnitDiff)],
    units: &[(String, Packed)],
) -> Result<Option<Snapshot>, crate::inventory::packed::PackError> {
    let changed: usize = diffs
        .iter()
        .map(|(_, d)| d.gone.len() + d.added.len())
        .sum();
    if changed > current.instance_count() / 4 + 16 || !naming.group_rules().is_empty() {
        return Ok(None);
    }
    for (unit, diff) in diffs {
        if diff.entangled {
            return Ok(None);
        }
        for (other, packed) in units {
            if other == unit {
                continue;
            }
            if shares_an_id(packed, &diff.ids)? {
                return Ok(None);
            }
        }
    }
    // One patch for every changed unit, not one copy of the zone each: no
    // id is in two units (above), so their changes are one inventory's.
    let (gone, added) = match diffs {
        [] => return Ok(None),
        [(_, diff)] => (diff.gone.clone(), diff.added.clone()),
        _ => {
            let (mut gone, mut added) = (Packer::in_memory(), Packer::in_memory());
            for (_, diff) in diffs {
                diff.gone.copy_into(&mut gone, |_| true)?;
                diff.added.copy_into(&mut added, |_| true)?;
            }
            (gone.finish()?, added.finish()?)
        }
    };
    Snapshot::patched(current, naming, zone, &gone, &added)
}

/// Base of the backoff after errors (not throttling): the first retry
/// comes within this (or within `interval`, if shorter).
const RETRY_BASE: Duration = Duration::from_secs(5);

/// How long to wait before the next refresh, after `failures` failed
/// refreshes in a row (0: the last one succeeded), the last one
/// `throttled` or not; `random` is any random number.
///
/// - all well: `interval` minus up to 10%, so a fleet of daemons started
///   together drifts apart;
/// - errors: full jitter, uniform in `[0, min(cap, base * 2^(failures-1))]`
///   with base = min(5 s, interval), but at least min(1 s, base);
/// - throttled: `interval` plus uniform in `[0, interval * 2^(failures-1)]`,
///   at most the cap;
///
/// where the cap is max(`max_backoff`, `interval`).
pub fn next_delay(
    interval: Duration,
    max_backoff: Duration,
    failures: u32,
    throttled: bool,
    random: u64,
) -> Duration {
    let uniform = |upper: Duration| -> Duration {
        let ms = upper.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(random % ms.saturating_add(1))
    };
    if failures == 0 {
        return interval.saturating_sub(uniform(interval / 10));
    }
    let cap = max_backoff.max(interval);
    let doubling = 2u32.saturating_pow((failures - 1).min(20));
    if throttled {
        let spread = interval.saturating_mul(doubling).min(cap);
        return (interval + uniform(spread)).min(cap);
    }
    let base = RETRY_BASE.min(interval);
    let step = base.saturating_mul(doubling).min(cap);
    uniform(step).max(base.min(Duration::from_secs(1)))
}

/// A random number from the standard library's per-process hash keys.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{test_instance, Instance, SourceError, UnitFetch};
    use crate::metrics::RefreshStatus;
    use crate::snapshot::new_store;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const MIN: Duration = Duration::from_secs(60);

    /// One unit's scripted result: instances, or an AWS error code.
    type Step = (String, Result<Vec<Instance>, &'static str>);

    /// A stand-in source that replays scripted results. Unit tests of the
    /// refresher's bookkeeping only; the real sources run in the
    /// integration tests (a file, and moto for EC2).
    struct Scripted {
        units: Vec<String>,
        script: Mutex<VecDeque<Vec<Step>>>,
    }

    impl Scripted {
        fn new(units: &[&str]) -> Arc<Self> {
            Arc::new(Self {
                units: units.iter().map(|u| u.to_string()).collect(),
                script: Mutex::new(VecDeque::new()),
            })
        }

        fn then(&self, results: &[(&str, Result<Vec<Instance>, &'static str>)]) {
            let step = results
                .iter()
                .map(|(u, r)| (u.to_string(), r.clone()))
                .collect();
            self.script.lock().unwrap().push_back(step);
        }
    }

    #[async_trait::async_trait]
    impl Source for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn units(&self) -> Vec<String> {
            self.units.clone()
        }
        async fn fetch(&self, spool: &Spool) -> Vec<UnitFetch> {
            let step = self.script.lock().unwrap().pop_front().unwrap_or_default();
            step.into_iter()
                .map(|(unit, r)| UnitFetch {
                    unit,
                    result: r
                        .map(|instances| {
                            let mut packer = spool.packer();
                            instances.iter().for_each(|i| packer.push(i));
                            packer.finish().unwrap()
                        })
                        .map_err(|code| SourceError::Api {
                            problem: if crate::inventory::is_throttling_code(code) {
                                crate::inventory::ApiProblem::Throttled
                            } else {
                                crate::inventory::ApiProblem::Other
                            },
                            code: code.into(),
                            cause: format!("{code}: scripted"),
                        }),
                })
                .collect()
        }
    }

    fn refresher(source: Arc<Scripted>, state_dir: Option<PathBuf>) -> Refresher {
        Refresher::new(
            source,
            Naming::new(Naming::default_rules(), "fleet.internal."),
            Name::from_ascii("fleet.internal.").unwrap(),
            new_store(),
        )
        .with_schedule(Schedule {
            interval: MIN,
            max_backoff: MIN,
            state_dir,
            max_stale: MIN,
            max_removed_fraction: 0.5,
            resync_interval: Duration::from_secs(3600),
        })
    }

    fn names(r: &Refresher) -> Vec<String> {
        let snapshot = r.store.load_full().unwrap();
        let mut names: Vec<String> = snapshot
            .entries()
            .map(|e| e.text())
            .filter(|n| !n.starts_with("i-"))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_failed_unit_keeps_its_data_and_unchanged_content_is_not_swapped() {
        let source = Scripted::new(&["east", "west"]);
        let east = vec![test_instance("i-01", Some("e"), &["10.0.0.1"])];
        let west = vec![test_instance("i-02", Some("w"), &["10.0.0.2"])];
        source.then(&[("east", Ok(east.clone())), ("west", Ok(west.clone()))]);
        source.then(&[
            ("east", Ok(east.clone())),
            ("west", Err("RequestLimitExceeded")),
        ]);
        source.then(&[
            ("east", Err("InternalError")),
            ("west", Err("InternalError")),
        ]);
        source.then(&[("east", Ok(vec![])), ("west", Ok(west.clone()))]);
        let mut r = refresher(source, None);
        let mut changes = r.subscribe();

        let first = r.refresh_once().await.unwrap();
        assert_eq!(first.outcome, Outcome::Changed);
        assert_eq!(names(&r), ["e.fleet.internal.", "w.fleet.internal."]);
        let serial = r.store.load().as_ref().unwrap().serial();
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();

        // west throttled: its names stay, nothing changed, nothing swapped
        let second = r.refresh_once().await.unwrap();
        assert_eq!(second.outcome, Outcome::Unchanged);
        assert_eq!(second.failed.len(), 1);
        assert!(second.failed[0].throttled);
        assert_eq!(names(&r), ["e.fleet.internal.", "w.fleet.internal."]);
        assert!(!changes.has_changed().unwrap());

        // everything fails: still the last good data, not an error
        let third = r.refresh_once().await.unwrap();
        assert_eq!((third.outcome, third.failed.len()), (Outcome::Unchanged, 2));
        assert!(!third.failed[0].throttled);

        // east is now empty (a real answer): its names go, the serial rises
        let fourth = r.refresh_once().await.unwrap();
        assert_eq!(fourth.outcome, Outcome::Changed);
        assert_eq!(names(&r), ["w.fleet.internal."]);
        assert!(r.store.load().as_ref().unwrap().serial() > serial);
        assert!(changes.has_changed().unwrap());
    }

    /// `n` running instances named host-1.., ids i-1..
    fn hosts(n: usize) -> Vec<Instance> {
        (1..=n)
            .map(|i| {
                test_instance(
                    &format!("i-{i:02}"),
                    Some(&format!("host-{i}")),
                    &["10.0.0.1"],
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_fetch_that_removes_most_of_a_unit_waits_for_the_next_to_agree() {
        let source = Scripted::new(&["east"]);
        source.then(&[("east", Ok(hosts(40)))]);
        // 30 of 40 gone: held; the same again: applied
        source.then(&[("east", Ok(hosts(10)))]);
        source.then(&[("east", Ok(hosts(10)))]);
        // 30 of 40 gone once, then back: the held fetch is forgotten
        source.then(&[("east", Ok(hosts(40)))]);
        source.then(&[("east", Ok(hosts(10)))]);
        source.then(&[("east", Ok(hosts(40)))]);
        // with SIGUSR1's flag: applied at once
        source.then(&[("east", Ok(hosts(5)))]);
        let mut r = refresher(source, None);
        let count = |r: &Refresher| names(r).len();

        r.refresh_once().await.unwrap();
        assert_eq!(count(&r), 40);
        let held = r.refresh_once().await.unwrap();
        assert_eq!(held.outcome, Outcome::Unchanged);
        assert_eq!(count(&r), 40, "held: the unit keeps its data");
        let reason = r.status().get().held.get("east").cloned().unwrap();
        assert!(reason.contains("would remove 30 of its 40"), "{reason}");
        r.refresh_once().await.unwrap();
        assert_eq!(count(&r), 10, "the next fetch agreed");
        assert!(r.status().get().held.is_empty());

        r.refresh_once().await.unwrap();
        assert_eq!(count(&r), 40, "growing is never held");
        r.refresh_once().await.unwrap();
        assert_eq!(count(&r), 40);
        assert_eq!(r.status().get().held.len(), 1);
        r.refresh_once().await.unwrap();
        assert_eq!(count(&r), 40);
        assert!(r.status().get().held.is_empty(), "forgotten");

        r.accept_removals().store(true, Ordering::Relaxed);
        r.refresh_once().await.unwrap();
        assert_eq!(count(&r), 5, "SIGUSR1 applies at once");
    }

    /// The served zone is the one a build from every unit's data gives.
    fn assert_zone_is_a_build(r: &Refresher) {
        let served = r.store.load_full().unwrap();
        let units: Vec<&Packed> = r.last_good.values().map(|u| &u.instances).collect();
        let built = Snapshot::build_packed(units, &r.naming, &r.zone).unwrap();
        assert!(
            !served.differs_from(&built),
            "the served zone is not a build's"
        );
        assert_eq!(served.report(), built.report());
    }

    #[tokio::test]
    async fn a_refresh_patches_the_zone_with_what_changed_and_builds_where_only_that_is_exact() {
        let source = Scripted::new(&["east", "west"]);
        let east = hosts(40);
        let west: Vec<Instance> = (50..60)
            .map(|i| {
                test_instance(
                    &format!("i-{i:02}"),
                    Some("pool"),
                    &[&format!("10.0.1.{i}")],
                )
            })
            .collect();
        source.then(&[("east", Ok(east.clone())), ("west", Ok(west.clone()))]);
        // east: a rename, a stop, an address change, one gone, one new,
        // and its order shuffled; west: one leaves the shared name `pool`,
        // one joins it under a new id
        let mut changed = east.clone();
        changed[3] = test_instance("i-04", Some("renamed"), &["10.0.0.1"]);
        changed[4].state = "stopped".into();
        changed[5].private_ipv4 = vec!["10.9.9.9".parse().unwrap()];
        changed.remove(6);
        changed.push(test_instance("i-99", Some("host-99"), &["10.0.0.99"]));
        changed.swap(0, 20);
        let mut west2 = west.clone();
        west2[0] = test_instance("i-50", Some("solo"), &["10.0.1.50"]);
        west2.push(test_instance("i-61", Some("pool"), &["10.0.1.61"]));
        source.then(&[("east", Ok(changed.clone())), ("west", Ok(west2.clone()))]);
        // Each step below also renames one more of east's instances, so
        // that every zone differs from the last.
        let mut east = changed;
        let mut rename = |k: usize| {
            let id = east[30 + k].id.clone();
            east[30 + k] = test_instance(&id, Some(&format!("step-{k}")), &[]);
            east.clone()
        };
        // west lists one of east's instances, changed: a build keeps
        // east's copy (the first unit's), so a patch would not be exact
        let mut west3 = west2.clone();
        west3.push(test_instance("i-10", Some("copy"), &["10.0.0.10"]));
        source.then(&[("east", Ok(rename(1))), ("west", Ok(west3))]);
        source.then(&[("east", Ok(rename(2))), ("west", Ok(west2.clone()))]);
        // east lists i-11 twice and one copy changes
        let mut twice = rename(3);
        twice.push(test_instance("i-11", Some("host-11"), &["10.0.0.1"]));
        source.then(&[("east", Ok(twice.clone())), ("west", Ok(west2.clone()))]);
        let mut twice = rename(4);
        twice.push(test_instance("i-11", Some("second"), &["10.0.0.1"]));
        source.then(&[("east", Ok(twice)), ("west", Ok(west2.clone()))]);
        // back to one copy (the first zone after it is built: the diff
        // still sees the copy), then a patch again
        source.then(&[("east", Ok(rename(5))), ("west", Ok(west2.clone()))]);
        source.then(&[("east", Ok(rename(6))), ("west", Ok(west2))]);
        let mut r = refresher(source, None);

        r.refresh_once().await.unwrap();
        assert_eq!(r.last_made, Some(Made::Build), "nothing to patch yet");
        assert_zone_is_a_build(&r);
        let steps = [
            ("a few changes", Made::Patch),
            ("an instance in two units", Made::Build),
            ("the copy gone again", Made::Build),
            ("an instance listed twice", Made::Build),
            ("one of its copies changed", Made::Build),
            ("listed once again", Made::Build),
            ("a rename", Made::Patch),
        ];
        for (step, made) in steps {
            let refreshed = r.refresh_once().await.unwrap();
            assert_eq!(refreshed.outcome, Outcome::Changed, "{step}");
            assert_eq!(r.last_made, Some(made), "{step}");
            assert_zone_is_a_build(&r);
        }
        let names = names(&r);
        assert!(names.contains(&"renamed.fleet.internal.".to_string()));
        assert!(names.contains(&"step-6.fleet.internal.".to_string()));
        assert!(
            !names.contains(&"host-5.fleet.internal.".to_string()),
            "stopped"
        );
    }

    /// Packs `instances` as a targeted describe would deliver them.
    fn packed(instances: &[Instance]) -> Packed {
        Packed::from_instances(instances)
    }

    #[tokio::test]
    async fn an_update_replaces_adds_and_removes_only_the_instances_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let source = Scripted::new(&["east"]);
        source.then(&[(
            "east",
            Ok(vec![
                test_instance("i-01", Some("alpha"), &["10.0.0.1"]),
                test_instance("i-02", Some("beta"), &["10.0.0.2"]),
                test_instance("i-03", Some("gamma"), &["10.0.0.3"]),
            ]),
        )]);
        let mut r = refresher(source.clone(), Some(dir.path().to_path_buf()));
        r.refresh_once().await.unwrap();
        let serial = r.store.load().as_ref().unwrap().serial();

        // i-02 renamed, i-04 new, i-99 not there (an event for an instance
        // already gone), i-05 described but not asked: left out
        let ids = ["i-02", "i-04", "i-99"].map(String::from);
        let described = packed(&[
            test_instance("i-02", Some("beta2"), &["10.0.0.2"]),
            test_instance("i-04", Some("delta"), &["10.0.0.4"]),
            test_instance("i-05", Some("stray"), &["10.0.0.5"]),
        ]);
        let outcome = r.apply_update("east", &ids, described).await;
        assert_eq!(outcome, Some(Outcome::Changed));
        assert_eq!(
            names(&r),
            [
                "alpha.fleet.internal.",
                "beta2.fleet.internal.",
                "delta.fleet.internal.",
                "gamma.fleet.internal."
            ]
        );
        assert!(r.store.load().as_ref().unwrap().serial() > serial);
        assert_zone_is_a_build(&r);

        // i-01 asked and not described: gone; the same again: nothing to do
        let ids = ["i-01".to_string()];
        assert_eq!(
            r.apply_update("east", &ids, packed(&[])).await,
            Some(Outcome::Changed)
        );
        assert_eq!(
            r.apply_update("east", &ids, packed(&[])).await,
            Some(Outcome::Unchanged)
        );
        assert!(!names(&r).contains(&"alpha.fleet.internal.".to_string()));
        assert_zone_is_a_build(&r);

        // a unit never fetched: nothing applied
        assert_eq!(r.apply_update("west", &ids, packed(&[])).await, None);

        // persisted before apply_update returned: a restart serves it
        let mut restarted = refresher(Scripted::new(&["east"]), Some(dir.path().to_path_buf()));
        assert!(restarted.restore());
        assert_eq!(names(&restarted), names(&r));
    }

    #[tokio::test]
    async fn nothing_ever_fetched_is_no_inventory() {
        let source = Scripted::new(&["east"]);
        source.then(&[("east", Err("RequestLimitExceeded"))]);
        let mut r = refresher(source, None);
        let error = r.refresh_once().await.unwrap_err();
        assert!(error.throttled);
        assert!(
            error
                .to_string()
                .contains("east: throttled by the API: RequestLimitExceeded"),
            "{error}"
        );
        assert!(r.store.load().is_none());
    }

    #[tokio::test]
    async fn restore_serves_configured_units_only_with_a_rising_serial() {
        let dir = tempfile::tempdir().unwrap();
        let at = SystemTime::now() - Duration::from_secs(30);
        let kept = vec![test_instance("i-01", Some("kept"), &["10.0.0.1"])];
        let gone = vec![test_instance("i-02", Some("gone"), &["10.0.0.2"])];
        // a serial ahead of the clock (an earlier run bumped it): must still rise
        let now_secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let future_serial = now_secs + 1000;
        state::save(
            dir.path(),
            future_serial,
            &[
                ("east", at, &Packed::from_instances(&kept)),
                ("removed-region", at, &Packed::from_instances(&gone)),
            ],
        )
        .unwrap();
        let source = Scripted::new(&["east", "west"]);
        let mut r = refresher(source.clone(), Some(dir.path().to_path_buf()));
        assert!(r.restore());
        assert_eq!(names(&r), ["kept.fleet.internal."]);
        let serial = r.store.load().as_ref().unwrap().serial();
        assert_eq!(serial, future_serial.wrapping_add(1));
        let status = r.status().get();
        assert_eq!(status.units.len(), 2);
        assert!(status.units["east"].is_some() && status.units["west"].is_none());

        // the first fetch confirms the data: no swap, and the file is
        // rewritten without the removed unit
        source.then(&[("east", Ok(kept.clone())), ("west", Ok(vec![]))]);
        let refreshed = r.refresh_once().await.unwrap();
        assert_eq!(refreshed.outcome, Outcome::Unchanged);
        let saved = state::load(dir.path()).unwrap().unwrap();
        let units: Vec<&str> = saved.units.iter().map(|u| u.unit.as_str()).collect();
        assert_eq!(units, ["east", "west"]);
        assert!(saved.units[0].fetched_at > at);
    }

    #[tokio::test]
    async fn state_is_rewritten_on_change_and_when_old_not_on_every_refresh() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let source = Scripted::new(&["east"]);
        let east = vec![test_instance("i-01", Some("e"), &["10.0.0.1"])];
        for _ in 0..3 {
            source.then(&[("east", Ok(east.clone()))]);
        }
        let mut r = refresher(source, Some(dir.path().to_path_buf()));
        if let Some(s) = r.schedule.as_mut() {
            // Long enough that a refresh on a busy machine (the background
            // work runs at idle priority) stays well inside half of it.
            s.max_stale = Duration::from_secs(4);
        }
        // Each write renames a new file into place: a new inode.
        let inode = || {
            std::fs::metadata(state::state_path(dir.path()))
                .unwrap()
                .ino()
        };
        r.refresh_once().await.unwrap();
        let first = inode();
        r.refresh_once().await.unwrap(); // unchanged and fresh: no write
        assert_eq!(inode(), first);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        r.refresh_once().await.unwrap(); // unchanged but older than max_stale/2
        assert_ne!(inode(), first);
    }

    #[tokio::test]
    async fn fetched_instances_live_in_the_state_file_not_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let source = Scripted::new(&["east", "west"]);
        let east: Vec<Instance> = (0..500)
            .map(|k| test_instance(&format!("i-{k:04x}"), Some(&format!("e{k}")), &["10.0.0.1"]))
            .collect();
        let west = vec![test_instance("i-ffff", Some("w"), &["10.0.0.2"])];
        source.then(&[("east", Ok(east.clone())), ("west", Ok(west.clone()))]);
        source.then(&[("east", Ok(east.clone())), ("west", Err("InternalError"))]);
        let mut r = refresher(source, Some(dir.path().to_path_buf()));
        for _ in 0..2 {
            r.refresh_once().await.unwrap();
            // every unit is read from the saved file; the spools are gone
            assert!(r.last_good.values().all(|u| !u.instances.is_in_memory()));
            let files: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(files, ["inventory.bin"]);
        }
        assert_eq!(r.last_good["east"].instances.instances().unwrap(), east);
        assert_eq!(r.last_good["west"].instances.instances().unwrap(), west);
        assert_eq!(names(&r).len(), 501);
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(state::state_path(dir.path()), "{{{").unwrap();
        let mut r = refresher(Scripted::new(&["east"]), Some(dir.path().to_path_buf()));
        assert!(!r.restore());
        assert!(r.store.load().is_none());
    }

    #[tokio::test]
    async fn a_state_file_with_damaged_instances_is_ignored_and_not_counted_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let east = vec![test_instance("i-01", Some("e"), &["10.0.0.1"])];
        let at = SystemTime::now();
        state::save(
            dir.path(),
            7,
            &[("east", at, &Packed::from_instances(&east))],
        )
        .unwrap();
        let path = state::state_path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let body = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        // the first record's length: zero is never written
        bytes[body..body + 4].copy_from_slice(&[0; 4]);
        std::fs::write(&path, bytes).unwrap();
        let mut r = refresher(Scripted::new(&["east"]), Some(dir.path().to_path_buf()));
        assert!(!r.restore());
        assert!(r.store.load().is_none());
        assert_eq!(r.status().get().units["east"], None);
    }

    #[test]
    fn delay_all_well_is_the_interval_minus_up_to_a_tenth() {
        for r in [0, 1, 5_999, 6_000, u64::MAX] {
            let d = next_delay(MIN, Duration::from_secs(300), 0, false, r);
            assert!(d <= MIN && d >= MIN * 9 / 10, "{d:?}");
        }
    }

    #[test]
    fn delay_after_errors_grows_with_full_jitter_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        for failures in 1..40 {
            let upper = (Duration::from_secs(5) * 2u32.pow((failures - 1).min(20))).min(cap);
            let mut longest = Duration::ZERO;
            for r in (0..2_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                let d = next_delay(MIN, cap, failures, false, r);
                assert!(
                    d >= Duration::from_secs(1) && d <= upper,
                    "{failures}: {d:?}"
                );
                longest = longest.max(d);
            }
            // the jitter spans the range, not only its bottom
            assert!(longest > upper / 2, "{failures}: {longest:?}");
        }
    }

    #[test]
    fn delay_after_throttling_is_never_sooner_than_the_interval() {
        let cap = Duration::from_secs(600);
        for failures in 1..40 {
            for r in (0..500u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                let d = next_delay(MIN, cap, failures, true, r);
                assert!(d >= MIN && d <= cap, "{failures}: {d:?}");
            }
        }
        // and it grows: the cap is reachable after a few throttles
        let big = (0..500u64)
            .map(|i| next_delay(MIN, cap, 6, true, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .max()
            .unwrap();
        assert!(big > Duration::from_secs(400), "{big:?}");
    }

    #[test]
    fn the_cap_is_never_below_the_interval() {
        let interval = Duration::from_secs(900);
        let d = next_delay(interval, Duration::from_secs(60), 3, true, 7);
        assert_eq!(d, interval);
    }

    #[test]
    fn stalest_unit_counts_a_never_fetched_unit_from_the_start() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let status = RefreshStatus {
            units: BTreeMap::from([
                ("a".to_string(), Some(start + Duration::from_secs(50))),
                ("b".to_string(), Some(start + Duration::from_secs(10))),
            ]),
            last_full_success: None,
            started: start,
            held: BTreeMap::new(),
            events: None,
        };
        assert_eq!(
            status.stalest(),
            Some(("b".to_string(), start + Duration::from_secs(10)))
        );
        let mut never = status.clone();
        never.units.insert("c".to_string(), None);
        assert_eq!(never.stalest(), Some(("c".to_string(), start)));
        assert_eq!(RefreshStatus::default().stalest(), None);

        // Events applied up to a later time keep units with data current
        // as of then; a unit never fetched stays as old as the start.
        never.events = Some(crate::metrics::EventsStatus {
            current_at: Some(start + Duration::from_secs(40)),
            ..Default::default()
        });
        assert_eq!(never.stalest(), Some(("c".to_string(), start)));
        never.units.remove("c");
        assert_eq!(
            never.stalest(),
            Some(("b".to_string(), start + Duration::from_secs(40)))
        );
    }
}

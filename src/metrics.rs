//! Metrics and health: Prometheus text on `/metrics`, `/healthz`, `/readyz`.
//!
//! Counting must not slow the answer path down, so every counter a query
//! touches is created when the process starts and kept in a plain array:
//! a query is an index and one relaxed atomic add, with no label lookup and
//! no lock. Everything that describes the current data (instances, names,
//! snapshot age, ...) is read from the snapshot and the refresher's status
//! when `/metrics` is scraped, not pushed on every change. The registry,
//! types and OpenMetrics text encoding are the Prometheus project's own
//! `prometheus-client` crate.
//!
//! The counters are process-wide (one [`Metrics`] behind [`metrics()`]): the
//! EC2 source, the forwarder, the refresher and the listeners count without
//! being handed a handle, as with the `metrics` facade crates.
//!
//! The HTTP listener is deliberately small: GET/HEAD of three paths, one
//! request per connection, a bounded number of connections, a bounded and
//! timed request head. It is meant for loopback or a private network, like
//! the DNS listener.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use hickory_server::net::xfer::Protocol;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::snapshot::Store;

/// Label set of the labelled families: `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;

/// A gauge holding a float (seconds, timestamps).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Query types counted by name; anything else is `other`.
const QTYPES: [RecordType; 8] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::PTR,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::NS,
    RecordType::ANY,
    RecordType::SRV,
];

/// Response codes counted by name; anything else is `other`.
const RCODES: [ResponseCode; 7] = [
    ResponseCode::NoError,
    ResponseCode::NXDomain,
    ResponseCode::ServFail,
    ResponseCode::Refused,
    ResponseCode::FormErr,
    ResponseCode::NotImp,
    ResponseCode::BADVERS,
];

/// Number of qtype buckets: the named ones, `other`, and `none` (no
/// question, e.g. a FORMERR for an undecodable packet).
const QTYPE_BUCKETS: usize = QTYPES.len() + 2;
/// Number of rcode buckets: the named ones and `other`.
const RCODE_BUCKETS: usize = RCODES.len() + 1;

/// How a refresh ended, as the `result` label of `fleetdns_refreshes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    /// Every unit answered and the zone changed.
    Changed,
    /// Every unit answered and nothing changed.
    Unchanged,
    /// Some units failed; the others were used.
    Partial,
    /// No unit answered.
    Failed,
}

impl RefreshResult {
    fn label(self) -> &'static str {
        match self {
            RefreshResult::Changed => "changed",
            RefreshResult::Unchanged => "unchanged",
            RefreshResult::Partial => "partial",
            RefreshResult::Failed => "failed",
        }
    }
}

/// How a forwarded query ended, as the `result` label of
/// `fleetdns_forwarded_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardResult {
    /// Answered from the cache.
    Cached,
    /// Answered by an upstream.
    Answered,
    /// Refused at once: too many queries already waiting on upstreams.
    Busy,
    /// No upstream answered.
    Failed,
}

const FORWARD_RESULTS: [ForwardResult; 4] = [
    ForwardResult::Cached,
    ForwardResult::Answered,
    ForwardResult::Busy,
    ForwardResult::Failed,
];

impl ForwardResult {
    fn label(self) -> &'static str {
        match self {
            ForwardResult::Cached => "cached",
            ForwardResult::Answered => "answered",
            ForwardResult::Busy => "busy",
            ForwardResult::Failed => "failed",
        }
    }
}

/// The API counters of one caller (a source unit, or the event queue),
/// handed to whoever makes the calls; each count is by operation.
#[derive(Clone, Debug)]
pub struct ApiCounters {
    /// The caller's `unit` label.
    unit: String,
    /// Every HTTP attempt, retries included.
    calls: Family<Labels, Counter>,
    /// Attempts answered with a throttling error.
    throttles: Family<Labels, Counter>,
    /// Attempts that failed for any other reason.
    errors: Family<Labels, Counter>,
}

/// How one API attempt ended, as [`ApiCounters::count`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiOutcome {
    /// It succeeded (or answered as expected, like a dry run).
    Ok,
    /// The service said to slow down.
    Throttled,
    /// Any other failure.
    Failed,
}

impl ApiCounters {
    fn labels(&self, operation: &str) -> Labels {
        vec![
            ("unit", self.unit.clone()),
            ("operation", operation.to_string()),
        ]
    }

    /// Counts one attempt of `operation` (the API's name, e.g.
    /// `DescribeInstances`) and how it ended.
    pub fn count(&self, operation: &str, outcome: ApiOutcome) {
        let set = self.labels(operation);
        self.calls.get_or_create(&set).inc();
        match outcome {
            ApiOutcome::Ok => {}
            ApiOutcome::Throttled => {
                self.throttles.get_or_create(&set).inc();
            }
            ApiOutcome::Failed => {
                self.errors.get_or_create(&set).inc();
            }
        }
    }
}

/// The per-unit freshness that metrics and `/readyz` report.
#[derive(Debug, Clone)]
pub struct RefreshStatus {
    /// Every configured unit, with its last successful fetch (if any).
    pub units: BTreeMap<String, Option<SystemTime>>,
    /// The last refresh in which every unit succeeded.
    pub last_full_success: Option<SystemTime>,
    /// When the daemon started: a unit that never succeeded is as stale as
    /// the time since then.
    pub started: SystemTime,
    /// Units whose last fetch is held back because it would remove too
    /// much (`max_removed_fraction`), with the reason `/readyz` gives.
    pub held: BTreeMap<String, String>,
    /// How following EC2 change events goes, when a queue is configured.
    pub events: Option<EventsStatus>,
}

/// How a source that follows EC2 change events is doing (issue 16).
#[derive(Debug, Clone, Default)]
pub struct EventsStatus {
    /// Whether the last receive from the queue worked: its units are then
    /// kept current by events, with a full pass every resync interval;
    /// otherwise they are polled every `interval_secs`.
    pub following: bool,
    /// Why not, when the last receive failed.
    pub failing: Option<String>,
    /// When the last receive began after which every message was applied:
    /// the data is current as of then, whenever it was last fetched whole.
    pub current_at: Option<SystemTime>,
    /// The time between full passes in the current mode (set by the
    /// refresher).
    pub full_pass_every: Duration,
}

impl EventsStatus {
    /// The mode of every unit: `events` or `polling`.
    pub fn mode(&self) -> &'static str {
        if self.following {
            "events"
        } else {
            "polling"
        }
    }

    /// The mode in one line, as `/readyz` says it.
    pub fn describe(&self) -> String {
        let every = self.full_pass_every.as_secs();
        match (&self.failing, self.following) {
            (_, true) => format!("mode: events, with a full pass every {every} s"),
            (Some(why), false) => {
                format!("mode: polling every {every} s, as receiving events fails: {why}")
            }
            (None, false) => {
                format!("mode: polling every {every} s until the event queue first answers")
            }
        }
    }
}

impl Default for RefreshStatus {
    fn default() -> Self {
        Self {
            units: BTreeMap::new(),
            last_full_success: None,
            started: SystemTime::now(),
            held: BTreeMap::new(),
            events: None,
        }
    }
}

impl RefreshStatus {
    /// The unit whose data is oldest, and since when it has been good (the
    /// start of the daemon for a unit that never succeeded); `None` without
    /// units.
    pub fn stalest(&self) -> Option<(String, SystemTime)> {
        // Events keep a unit that has data current as of their last
        // applied receive, however long ago its last full pass.
        let events = self.events.as_ref().and_then(|e| e.current_at);
        self.units
            .iter()
            .map(|(unit, at)| match (at, events) {
                (Some(at), Some(events)) => (unit, (*at).max(events)),
                (Some(at), None) => (unit, *at),
                (None, _) => (unit, self.started),
            })
            .min_by_key(|(_, at)| *at)
            .map(|(unit, at)| (unit.clone(), at))
    }
}

/// A shared view of the refresher's [`RefreshStatus`]: the refresher
/// writes it, health and metrics read it (defined here so that metrics
/// does not depend on the refresher).
///
/// A std mutex: it is held only to copy or update the small map, never
/// across an await, and taken once per refresh and once per scrape.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<RefreshStatus>>);

impl StatusHandle {
    /// A copy of the current status.
    pub fn get(&self) -> RefreshStatus {
        match self.0.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes the status (the refresher's part).
    pub(crate) fn update(&self, f: impl FnOnce(&mut RefreshStatus)) {
        match self.0.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Every metric fleetdns exports.
pub struct Metrics {
    /// Where the metrics are registered, for encoding.
    registry: Registry,
    /// Answered queries by protocol (UDP, TCP) x qtype bucket x rcode bucket.
    queries: Vec<Counter>,
    /// Queries that got no reply (too short, or a response message).
    dropped: Counter,
    /// UDP replies rate limited, by action: dropped, slipped.
    rrl_limited: [Counter; 2],
    /// Units whose last fetch is held back (`max_removed_fraction`).
    units_held: Gauge,
    /// EC2 change events from the queue, by kind and result.
    events: Family<Labels, Counter>,
    /// From an event's arrival in the queue to the swap that applies it.
    event_to_swap: Histogram,
    /// Each unit's refresh mode (events or polling), 1 for the current.
    unit_mode: Family<Labels, Gauge>,
    /// Forwarded queries by result, indexed as [`FORWARD_RESULTS`].
    forwarded: Vec<Counter>,
    /// Upstream failures by upstream address.
    upstream_errors: Family<Labels, Counter>,
    /// Refreshes by result.
    refreshes: Family<Labels, Counter>,
    /// New zones served, by how they were made.
    zones: Family<Labels, Counter>,
    /// How long a refresh took, fetch to swap.
    refresh_duration: Histogram,
    /// API calls by unit.
    api_calls: Family<Labels, Counter>,
    /// Throttled API calls by unit.
    api_throttles: Family<Labels, Counter>,
    /// Failed API calls (other than throttling) by unit.
    api_errors: Family<Labels, Counter>,
    /// Persisted-state writes by result.
    state_writes: Family<Labels, Counter>,
    /// Instances in the current snapshot.
    instances: Gauge,
    /// Names in the current snapshot.
    names: Gauge,
    /// Records from `static_records` in the current snapshot.
    static_records: Gauge,
    /// Tag values rewritten into valid names, in the current snapshot.
    rewritten: Gauge,
    /// Tag values skipped, in the current snapshot.
    skipped: Gauge,
    /// The current SOA serial.
    serial: Gauge,
    /// Seconds since the current snapshot was built.
    snapshot_age: FloatGauge,
    /// Seconds since the stalest unit last fetched successfully.
    data_age: FloatGauge,
    /// Unix time of the last refresh in which every unit succeeded.
    last_success: FloatGauge,
    /// Unix time of each unit's last successful fetch.
    unit_last_success: Family<Labels, FloatGauge>,
    /// 1 when `/readyz` says ready.
    ready: Gauge,
    /// Zone transfers by kind and result.
    transfers: Family<Labels, Counter>,
    /// NOTIFY messages sent, by target.
    notify_sent: Family<Labels, Counter>,
    /// NOTIFY messages acknowledged, by target.
    notify_acknowledged: Family<Labels, Counter>,
    /// NOTIFYs given up on (no acknowledgement after every retry), by target.
    notify_failed: Family<Labels, Counter>,
    /// Zone versions whose differences the IXFR journal holds.
    journal_serials: Gauge,
    /// Bytes the IXFR journal's differences take.
    journal_bytes: Gauge,
}

/// Kinds of zone transfer, as counted: a full AXFR, an IXFR answered with
/// differences, an IXFR answered with the whole zone (serial unknown or
/// too old), an IXFR from a secondary that is up to date.
pub const TRANSFER_KINDS: [&str; 4] = ["axfr", "ixfr", "ixfr_full", "uptodate"];

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn labels(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetdns");

        let query_family = Family::<Labels, Counter>::default();
        let mut queries = Vec::with_capacity(2 * QTYPE_BUCKETS * RCODE_BUCKETS);
        for proto in ["udp", "tcp"] {
            for q in 0..QTYPE_BUCKETS {
                for r in 0..RCODE_BUCKETS {
                    let set = vec![
                        ("proto", proto.to_string()),
                        ("qtype", qtype_label(q)),
                        ("rcode", rcode_label(r)),
                    ];
                    queries.push(query_family.get_or_create(&set).clone());
                }
            }
        }
        registry.register(
            "queries",
            "DNS queries answered, by protocol, query type and response code",
            query_family,
        );
        let dropped = Counter::default();
        registry.register(
            "queries_dropped",
            "Packets that got no reply (shorter than a header, a response, or a UDP datagram over 4 KiB)",
            dropped.clone(),
        );

        let rrl_family = Family::<Labels, Counter>::default();
        let rrl_limited = ["dropped", "slipped"]
            .map(|action| rrl_family.get_or_create(&labels("action", action)).clone());
        registry.register(
            "rrl_limited",
            "UDP replies held back by response rate limiting ([rrl]), by action: dropped, or slipped (sent truncated so the client retries over TCP)",
            rrl_family,
        );

        let forward_family = Family::<Labels, Counter>::default();
        let forwarded = FORWARD_RESULTS
            .iter()
            .map(|r| {
                forward_family
                    .get_or_create(&labels("result", r.label()))
                    .clone()
            })
            .collect();
        registry.register(
            "forwarded_queries",
            "Queries outside the zone, by result (cached, answered, busy, failed)",
            forward_family,
        );
        let upstream_errors = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream resolver failures (timeouts, errors), by upstream",
            upstream_errors.clone(),
        );

        let zones = Family::<Labels, Counter>::default();
        for how in ["build", "patch", "update"] {
            let _ = zones.get_or_create(&labels("how", how));
        }
        registry.register(
            "zones",
            "New zones served, by how each was made: build (from every unit's instances), patch (the served zone with what a refresh found changed), update (the served zone with what EC2 events named)",
            zones.clone(),
        );

        let refreshes = Family::<Labels, Counter>::default();
        for r in [
            RefreshResult::Changed,
            RefreshResult::Unchanged,
            RefreshResult::Partial,
            RefreshResult::Failed,
        ] {
            // Created at zero so every result shows before it first happens.
            let _ = refreshes.get_or_create(&labels("result", r.label()));
        }
        registry.register(
            "refreshes",
            "Inventory refreshes, by result (changed, unchanged, partial, failed)",
            refreshes.clone(),
        );
        // 10 ms .. ~164 s: a file refresh up to a throttled multi-region one.
        let refresh_duration = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        registry.register_with_unit(
            "refresh_duration",
            "Time from the start of a fetch to the swap",
            Unit::Seconds,
            refresh_duration.clone(),
        );

        let api_calls = Family::<Labels, Counter>::default();
        registry.register(
            "api_calls",
            "AWS API calls (every attempt, retries included), by source unit (or event queue) and operation",
            api_calls.clone(),
        );
        let api_throttles = Family::<Labels, Counter>::default();
        registry.register(
            "api_throttles",
            "AWS API calls answered with a throttling error, by source unit (or event queue) and operation",
            api_throttles.clone(),
        );
        let api_errors = Family::<Labels, Counter>::default();
        registry.register(
            "api_errors",
            "AWS API calls that failed other than by throttling, by source unit (or event queue) and operation",
            api_errors.clone(),
        );
        let state_writes = Family::<Labels, Counter>::default();
        for r in ["ok", "failed"] {
            let _ = state_writes.get_or_create(&labels("result", r));
        }
        registry.register(
            "state_writes",
            "Writes of the persisted inventory, by result",
            state_writes.clone(),
        );

        let transfers = Family::<Labels, Counter>::default();
        for kind in TRANSFER_KINDS {
            let _ = transfers.get_or_create(&vec![("kind", kind.into()), ("result", "ok".into())]);
        }
        registry.register(
            "transfers",
            "Zone transfers by kind (axfr, ixfr, ixfr_full, uptodate) and result (ok, refused, failed)",
            transfers.clone(),
        );
        let notify_sent = Family::<Labels, Counter>::default();
        registry.register(
            "notify_sent",
            "NOTIFY messages sent (retries included), by target",
            notify_sent.clone(),
        );
        let notify_acknowledged = Family::<Labels, Counter>::default();
        registry.register(
            "notify_acknowledged",
            "NOTIFYs a target acknowledged, by target",
            notify_acknowledged.clone(),
        );
        let notify_failed = Family::<Labels, Counter>::default();
        registry.register(
            "notify_failed",
            "NOTIFYs given up on after every retry, by target",
            notify_failed.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let instances = gauge(
            &mut registry,
            "instances",
            "Running instances in the served zone",
        );
        let names = gauge(&mut registry, "names", "Names in the served zone");
        let static_records = gauge(
            &mut registry,
            "static_records",
            "Records from the static_records file in the served zone",
        );
        let rewritten = gauge(
            &mut registry,
            "tag_values_rewritten",
            "Tag values rewritten into valid DNS names, in the served zone",
        );
        let skipped = gauge(
            &mut registry,
            "tag_values_skipped",
            "Tag values that gave no valid name and were skipped, in the served zone",
        );
        let serial = gauge(&mut registry, "soa_serial", "The zone's SOA serial");
        let ready = gauge(
            &mut registry,
            "ready",
            "1 when the zone is servable and not staler than max_stale",
        );
        let journal_serials = gauge(
            &mut registry,
            "ixfr_journal_serials",
            "Zone versions whose differences the IXFR journal holds",
        );
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "events",
            "Messages from the EC2 event queue, by kind (state, tag, other) and result (applied, ignored, malformed)",
            events.clone(),
        );
        // 50 ms to about 14 minutes: a batch's debounce and describe at
        // the bottom, a backlog after an outage at the top.
        let event_to_swap = Histogram::new(exponential_buckets(0.05, 2.0, 15));
        registry.register_with_unit(
            "event_to_swap",
            "Time from an EC2 event's arrival in the queue (its SentTimestamp) to the swap of the zone that applies it, persisted",
            Unit::Seconds,
            event_to_swap.clone(),
        );
        let unit_mode = Family::<Labels, Gauge>::default();
        registry.register(
            "unit_mode",
            "Each source unit's refresh mode, 1 for the current one: events (EC2 change events keep it current, with a full pass every resync interval) or polling (a full pass every interval)",
            unit_mode.clone(),
        );
        let units_held = gauge(
            &mut registry,
            "units_held",
            "Source units whose last fetch is held back because it would remove more than max_removed_fraction of their running instances",
        );
        let journal_bytes = gauge(
            &mut registry,
            "ixfr_journal_bytes",
            "Bytes the IXFR journal's differences take",
        );

        let float = |registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let g = FloatGauge::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, g.clone()),
                None => registry.register(name, help, g.clone()),
            }
            g
        };
        let snapshot_age = float(
            &mut registry,
            "snapshot_age",
            "Time since the served snapshot was built (it is rebuilt only on change)",
            Some(Unit::Seconds),
        );
        let data_age = float(
            &mut registry,
            "data_age",
            "Time since the stalest source unit last fetched successfully",
            Some(Unit::Seconds),
        );
        let last_success = float(
            &mut registry,
            "last_successful_refresh_timestamp",
            "Unix time of the last refresh in which every source unit succeeded",
            Some(Unit::Seconds),
        );
        let unit_last_success = Family::<Labels, FloatGauge>::default();
        registry.register_with_unit(
            "unit_last_success_timestamp",
            "Unix time of each source unit's last successful fetch",
            Unit::Seconds,
            unit_last_success.clone(),
        );

        Self {
            registry,
            queries,
            dropped,
            rrl_limited,
            units_held,
            events,
            event_to_swap,
            unit_mode,
            forwarded,
            upstream_errors,
            refreshes,
            zones,
            refresh_duration,
            api_calls,
            api_throttles,
            api_errors,
            state_writes,
            instances,
            names,
            static_records,
            rewritten,
            skipped,
            serial,
            snapshot_age,
            data_age,
            last_success,
            unit_last_success,
            ready,
            transfers,
            notify_sent,
            notify_acknowledged,
            notify_failed,
            journal_serials,
            journal_bytes,
        }
    }

    /// Counts one zone transfer request: `kind` from [`TRANSFER_KINDS`],
    /// `result` `ok`, `refused` or `failed`.
    pub fn count_transfer(&self, kind: &str, result: &str) {
        self.transfers
            .get_or_create(&vec![("kind", kind.into()), ("result", result.into())])
            .inc();
    }

    /// Counts a NOTIFY sent to `target`.
    pub fn count_notify_sent(&self, target: SocketAddr) {
        self.notify_sent
            .get_or_create(&labels("target", target.to_string()))
            .inc();
    }

    /// Counts a NOTIFY that `target` acknowledged (`true`) or that was
    /// given up on (`false`).
    pub fn count_notify_done(&self, target: SocketAddr, acknowledged: bool) {
        let family = if acknowledged {
            &self.notify_acknowledged
        } else {
            &self.notify_failed
        };
        family
            .get_or_create(&labels("target", target.to_string()))
            .inc();
    }

    /// Sets the IXFR journal's size: zone versions and bytes.
    pub fn set_journal(&self, serials: usize, bytes: usize) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.journal_serials.set(count(serials));
        self.journal_bytes.set(count(bytes));
    }

    /// Counts one answered query. `qtype` is `None` when the packet had no
    /// decodable question.
    pub fn count_query(&self, protocol: Protocol, qtype: Option<RecordType>, rcode: ResponseCode) {
        let proto = usize::from(protocol != Protocol::Udp);
        let q = match qtype {
            None => QTYPE_BUCKETS - 1,
            Some(t) => QTYPES.iter().position(|k| *k == t).unwrap_or(QTYPES.len()),
        };
        let r = RCODES
            .iter()
            .position(|k| *k == rcode)
            .unwrap_or(RCODES.len());
        if let Some(counter) = self
            .queries
            .get((proto * QTYPE_BUCKETS + q) * RCODE_BUCKETS + r)
        {
            counter.inc();
        }
    }

    /// Counts a packet that got no reply.
    pub fn count_dropped(&self) {
        self.dropped.inc();
    }

    /// Counts a reply that rate limiting dropped (`slipped`: sent
    /// truncated instead).
    pub fn count_rrl_limited(&self, slipped: bool) {
        self.rrl_limited[usize::from(slipped)].inc();
    }

    /// Observes how long after its arrival in the queue an event's change
    /// was served.
    pub fn observe_event_to_swap(&self, took: Duration) {
        self.event_to_swap.observe(took.as_secs_f64());
    }

    /// Counts one message of the event queue.
    pub fn count_event(&self, kind: &str, result: &str) {
        self.events
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// Counts one forwarded query.
    pub fn count_forward(&self, result: ForwardResult) {
        if let Some(i) = FORWARD_RESULTS.iter().position(|r| *r == result) {
            self.forwarded[i].inc();
        }
    }

    /// Counts a failure of one upstream.
    pub fn count_upstream_error(&self, upstream: SocketAddr) {
        self.upstream_errors
            .get_or_create(&labels("upstream", upstream.to_string()))
            .inc();
    }

    /// Counts one refresh and how long it took.
    pub fn count_refresh(&self, result: RefreshResult, took: Duration) {
        self.refreshes
            .get_or_create(&labels("result", result.label()))
            .inc();
        self.refresh_duration.observe(took.as_secs_f64());
    }

    /// Counts one new zone served, made `how` (`build`, `patch` or
    /// `update`).
    pub fn count_zone(&self, how: &str) {
        self.zones.get_or_create(&labels("how", how)).inc();
    }

    /// Counts one write of the persisted state.
    pub fn count_state_write(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.state_writes
            .get_or_create(&labels("result", result))
            .inc();
    }

    /// The API counters of one caller, `unit`; those of `first` (its
    /// main operation) are created at zero, so that the unit shows in
    /// `/metrics` before its first call.
    pub fn api_counters(&self, unit: &str, first: &str) -> ApiCounters {
        let counters = ApiCounters {
            unit: unit.to_string(),
            calls: self.api_calls.clone(),
            throttles: self.api_throttles.clone(),
            errors: self.api_errors.clone(),
        };
        let set = counters.labels(first);
        let _ = self.api_calls.get_or_create(&set);
        let _ = self.api_throttles.get_or_create(&set);
        let _ = self.api_errors.get_or_create(&set);
        counters
    }

    /// The OpenMetrics text of every metric, with the gauges that describe
    /// the current data read from `health` first.
    pub fn render(&self, health: &Health) -> String {
        let now = SystemTime::now();
        let snapshot = health.store.load_full();
        let status = health.status.get();
        let readiness = health.readiness(now);
        self.ready.set(i64::from(readiness.is_ok()));
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        match snapshot.as_deref() {
            Some(s) => {
                self.instances.set(count(s.instance_count()));
                self.names.set(count(s.name_count()));
                self.static_records.set(count(s.statics().record_count()));
                self.rewritten.set(count(s.report().rewrites.len()));
                self.skipped.set(count(s.report().skips.len()));
                self.serial.set(i64::from(s.serial()));
                self.snapshot_age.set(age(now, s.built_at()));
            }
            None => {
                for g in [
                    &self.instances,
                    &self.names,
                    &self.static_records,
                    &self.rewritten,
                    &self.skipped,
                ] {
                    g.set(0);
                }
            }
        }
        self.data_age.set(
            status
                .stalest()
                .map_or(f64::INFINITY, |(_, at)| age(now, at)),
        );
        self.units_held.set(status.held.len() as i64);
        if let Some(at) = status.last_full_success {
            self.last_success.set(unix(at));
        }
        let mode = status.events.as_ref().map_or("polling", |e| e.mode());
        for (unit, at) in &status.units {
            for m in ["events", "polling"] {
                self.unit_mode
                    .get_or_create(&vec![("unit", unit.clone()), ("mode", m.to_string())])
                    .set(i64::from(m == mode));
            }
            if let Some(at) = at {
                self.unit_last_success
                    .get_or_create(&labels("unit", unit.clone()))
                    .set(unix(*at));
            }
        }
        let mut out = String::new();
        if let Err(error) = encode(&mut out, &self.registry) {
            // Only a formatting bug can get here; say so rather than serve half.
            let _ = writeln!(out, "# encoding failed: {error}");
        }
        out
    }
}

fn qtype_label(bucket: usize) -> String {
    match QTYPES.get(bucket) {
        Some(t) => t.to_string(),
        None if bucket == QTYPES.len() => "other".to_string(),
        None => "none".to_string(),
    }
}

fn rcode_label(bucket: usize) -> String {
    match RCODES.get(bucket) {
        Some(ResponseCode::NoError) => "NOERROR".to_string(),
        Some(ResponseCode::NXDomain) => "NXDOMAIN".to_string(),
        Some(ResponseCode::ServFail) => "SERVFAIL".to_string(),
        Some(ResponseCode::Refused) => "REFUSED".to_string(),
        Some(ResponseCode::FormErr) => "FORMERR".to_string(),
        Some(ResponseCode::NotImp) => "NOTIMP".to_string(),
        Some(ResponseCode::BADVERS) => "BADVERS".to_string(),
        _ => "other".to_string(),
    }
}

/// Seconds from `then` to `now` (0 if `then` is in the future).
fn age(now: SystemTime, then: SystemTime) -> f64 {
    now.duration_since(then).unwrap_or_default().as_secs_f64()
}

/// Seconds since the Unix epoch.
fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What `/readyz` and the readiness gauge look at.
#[derive(Clone)]
pub struct Health {
    /// The served snapshot.
    pub store: Store,
    /// The refresher's per-unit status.
    pub status: StatusHandle,
    /// Data older than this is stale: not ready.
    pub max_stale: Duration,
}

impl Health {
    /// `Ok` when the zone is servable and no unit's data is older than
    /// `max_stale`; otherwise why not, in one line.
    pub fn readiness(&self, now: SystemTime) -> Result<(), String> {
        if self.store.load().is_none() {
            return Err("no inventory yet: zone queries get SERVFAIL".to_string());
        }
        let status = self.status.get();
        if let Some(reason) = status.held.values().next() {
            return Err(format!("a fetch is held back: {reason}"));
        }
        match status.stalest() {
            None => Err("no source unit has data".to_string()),
            Some((unit, at)) => {
                let age = now.duration_since(at).unwrap_or_default();
                if age > self.max_stale {
                    Err(format!(
                        "data is stale: {unit} last fetched {} s ago (max_stale {} s)",
                        age.as_secs(),
                        self.max_stale.as_secs()
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Most metrics connections served at once; more wait in the kernel's
/// accept queue.
const MAX_HTTP_CONNECTIONS: usize = 16;
/// Longest request head read.
const MAX_REQUEST_HEAD: usize = 8192;
/// Time a client has to send its request and read the reply.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the metrics listener, or fails naming the address.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(address).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {address}: {e}{}",
            crate::dns::server::hint(&e, address)
        )
    })?;
    info!("listening for HTTP (metrics) on {}", listener.local_addr()?);
    Ok(listener)
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` turns true.
pub async fn serve_http(
    listener: TcpListener,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    // The watch guard must not live across an await: wrap the wait.
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = &mut stop => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    warn!(%error, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return,
        };
        let health = health.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if timeout(HTTP_TIMEOUT, answer_http(stream, &health))
                .await
                .is_err()
            {
                debug!(%peer, "metrics client too slow; closed");
            }
        });
    }
}

/// Reads one request head and writes the reply.
async fn answer_http(mut stream: TcpStream, health: &Health) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST_HEAD {
            let _ = stream
                .write_all(&reply(431, "text/plain", "request head too large\n", false))
                .await;
            return;
        }
    }
    let response = route(&head, health);
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// The whole HTTP reply for a request head.
fn route(head: &[u8], health: &Health) -> Vec<u8> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return reply(405, "text/plain", "only GET and HEAD\n", true);
    }
    // The query string, if any, does not select anything.
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => reply(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics().render(health),
            with_body,
        ),
        "/healthz" => reply(200, "text/plain", "ok\n", with_body),
        "/readyz" => match health.readiness(SystemTime::now()) {
            // Serving, but maybe not what was meant: say so.
            Ok(()) if health.store.load().as_ref().is_some_and(|s| s.instance_count() == 0) => reply(
                200,
                "text/plain",
                "ready, but the fleet is empty: no running instance was listed (check the regions, the filters and the account)\n",
                with_body,
            ),
            Ok(()) => reply(200, "text/plain", &format!("ready\n{}", mode_line(health)), with_body),
            Err(why) => reply(503, "text/plain", &format!("not ready: {why}\n{}", mode_line(health)), with_body),
        },
        _ => reply(
            404,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n",
            with_body,
        ),
    }
}

/// The refresh mode's line of `/readyz` where events are configured;
/// empty otherwise.
fn mode_line(health: &Health) -> String {
    health
        .status
        .get()
        .events
        .map_or(String::new(), |e| format!("{}\n", e.describe()))
}

fn reply(status: u16, content_type: &str, body: &str, with_body: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_bucket_has_its_own_counter() {
        let m = Metrics::new();
        m.count_query(Protocol::Udp, Some(RecordType::A), ResponseCode::NoError);
        m.count_query(Protocol::Udp, Some(RecordType::A), ResponseCode::NoError);
        m.count_query(Protocol::Tcp, Some(RecordType::MX), ResponseCode::Refused);
        m.count_query(Protocol::Udp, None, ResponseCode::FormErr);
        let mut out = String::new();
        encode(&mut out, &m.registry).unwrap();
        let line = |needle: &str| {
            out.lines()
                .find(|l| l.starts_with("fleetdns_queries_total{") && l.contains(needle))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        assert_eq!(
            line(r#"proto="udp",qtype="A",rcode="NOERROR""#).as_deref(),
            Some("2")
        );
        assert_eq!(
            line(r#"proto="tcp",qtype="other",rcode="REFUSED""#).as_deref(),
            Some("1")
        );
        assert_eq!(
            line(r#"proto="udp",qtype="none",rcode="FORMERR""#).as_deref(),
            Some("1")
        );
        assert_eq!(
            line(r#"proto="tcp",qtype="AAAA",rcode="NXDOMAIN""#).as_deref(),
            Some("0")
        );
    }

    #[test]
    fn unknown_paths_and_methods_get_http_errors() {
        let health = Health {
            store: crate::snapshot::new_store(),
            status: StatusHandle::default(),
            max_stale: Duration::from_secs(180),
        };
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        assert!(text(route(b"POST /metrics HTTP/1.1\r\n\r\n", &health)).starts_with("HTTP/1.1 405"));
        assert!(text(route(b"GET /nope HTTP/1.1\r\n\r\n", &health)).starts_with("HTTP/1.1 404"));
        let ready = text(route(b"GET /readyz HTTP/1.1\r\n\r\n", &health));
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains("no inventory yet"), "{ready}");
        let head = text(route(b"HEAD /healthz HTTP/1.1\r\n\r\n", &health));
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"));
    }
}

//! `fleetdns serve`: turns settings into objects and wires them together.
//!
//! Start-up order: signal handlers; the source; the persisted inventory
//! (served at once if there is one); every socket bound, so a port in use
//! fails the start with nothing half-started; then the listeners, the
//! refresher (which fetches at once) and the subscribers run. Without
//! persisted data and before the first successful fetch, zone queries get
//! SERVFAIL (clients move on to their next server) while forwarding works;
//! systemd hears `READY=1` only once the zone is servable.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tracing::info;

use crate::config::{ConfigOrigin, Overrides, Settings, SourceSpec};
use crate::dns::fast::FastPath;
use crate::dns::forward::Forwarder;
use crate::dns::server::{bind_all, serve};
use crate::dns::xfr::{spawn_journal, Primary};
use crate::dns::ZoneHandler;
use crate::hosts::HostsExport;
#[cfg(feature = "ec2")]
use crate::inventory::ec2::Ec2Source;
use crate::inventory::file::FileSource;
use crate::inventory::Source;
use crate::metrics::{self, Health};
use crate::notify::{self, NotifySender};
use crate::refresh::{Reconfigure, Refresher, Schedule};
use crate::snapshot::new_store;
use crate::subscribe::spawn_subscriber;
use crate::systemd::Notifier;

/// Builds the configured source.
pub async fn build_source(spec: &SourceSpec) -> anyhow::Result<Arc<dyn Source>> {
    Ok(match spec {
        SourceSpec::File(path) => Arc::new(FileSource::new(path)),
        #[cfg(feature = "ec2")]
        SourceSpec::Ec2(settings) => Arc::new(Ec2Source::new(settings).await?),
        #[cfg(not(feature = "ec2"))]
        SourceSpec::Ec2(_) => {
            anyhow::bail!("this fleetdns was built without the EC2 source (cargo feature `ec2`)")
        }
    })
}

/// Where the daemon's configuration came from, to read it again on SIGHUP.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file (or the built-in defaults).
    pub origin: ConfigOrigin,
    /// The command line's flags, applied again over the file.
    pub overrides: Overrides,
}

/// What SIGHUP changes: the configuration is read again and what can
/// change at runtime is applied (zone parameters and TTLs, naming, the
/// source, timing, forwarding); listen addresses, the state directory,
/// the metrics address and TCP limits need a restart, and the one log line
/// per reload says which changed. An invalid file changes nothing.
struct Reloader {
    /// Where to read it from.
    config: ConfigSource,
    /// What runs now (restart-only parts as started).
    current: Settings,
    /// The source that runs now: kept unless its settings change.
    source: Arc<dyn Source>,
    /// The handler, for the zone parameters and the forwarder.
    handler: Arc<ZoneHandler>,
    /// The UDP fast path, for the zone parameters.
    fast: FastPath,
    /// Transfers: access rules, keys, journal limits.
    primary: Arc<Primary>,
    /// NOTIFY targets.
    notify: Arc<NotifySender>,
    /// Who may ask what (shared with the handler and the fast path).
    access: Arc<arc_swap::ArcSwap<crate::access::QueryAccess>>,
    /// Response rate limiting, if configured.
    rrl: crate::rrl::Rrl,
    /// The refresher's inbox.
    refresher: watch::Sender<Option<Arc<Reconfigure>>>,
}

impl Reloader {
    /// Reads the configuration again and applies it, or logs why not.
    async fn reload(&mut self) {
        let origin = &self.config.origin;
        let new = match origin
            .load()
            .and_then(|c| c.validate(&self.config.overrides))
        {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(
                    "reload failed, still running on the previous configuration: {error}"
                );
                return;
            }
        };
        let old = &self.current;
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut applied = Vec::new();
        let mut restart = Vec::new();
        for (name, changed, live) in [
            ("zone", differs(&old.zone.zone, &new.zone.zone), true),
            ("ttl", old.zone.ttl != new.zone.ttl, true),
            (
                "negative_ttl",
                old.zone.negative_ttl != new.zone.negative_ttl,
                true,
            ),
            (
                "nameserver",
                differs(&old.zone.nameserver, &new.zone.nameserver),
                true,
            ),
            (
                "hostmaster",
                differs(&old.zone.hostmaster, &new.zone.hostmaster),
                true,
            ),
            (
                "reverse_zones",
                old.zone.reverse_zones != new.zone.reverse_zones,
                true,
            ),
            ("naming", old.naming.rules_differ(&new.naming), true),
            (
                "static_records",
                old.naming.statics() != new.naming.statics(),
                true,
            ),
            ("source", differs(&old.source, &new.source), true),
            ("interval_secs", old.interval != new.interval, true),
            ("max_backoff_secs", old.max_backoff != new.max_backoff, true),
            ("max_stale_secs", old.max_stale != new.max_stale, true),
            (FORWARD, differs(&old.forward, &new.forward), true),
            ("listen", old.listen != new.listen, false),
            ("state_dir", old.state_dir != new.state_dir, false),
            (
                "metrics_listen",
                old.metrics_listen != new.metrics_listen,
                false,
            ),
            ("tcp", differs(&old.tcp, &new.tcp), false),
            ("access", old.access != new.access, true),
            ("rrl", old.rrl != new.rrl, true),
            ("tsig_keys", old.transfer.keys != new.transfer.keys, true),
            (
                "transfer",
                old.transfer.allow != new.transfer.allow
                    || old.transfer.notify != new.transfer.notify
                    || old.transfer.ixfr_history != new.transfer.ixfr_history
                    || old.transfer.ixfr_history_bytes != new.transfer.ixfr_history_bytes,
                true,
            ),
        ] {
            match (changed, live) {
                (true, true) => applied.push(name),
                (true, false) => restart.push(name),
                _ => {}
            }
        }
        if applied.contains(&"source") {
            match build_source(&new.source).await {
                Ok(source) => self.source = source,
                Err(error) => {
                    tracing::error!(
                        "reload failed, still running on the previous configuration: {error:#}"
                    );
                    return;
                }
            }
        }
        // A new forwarder starts with an empty cache: only when its
        // settings changed.
        let forwarder = if applied.contains(&FORWARD) {
            forwarder_for(&new)
        } else {
            self.handler.forwarder()
        };
        self.handler.reconfigure(new.zone.clone(), forwarder);
        self.fast.reconfigure(&new.zone);
        self.access.store(Arc::new(new.access.clone()));
        if applied.contains(&"rrl") {
            // New buckets: what the old limiter counted is forgotten.
            self.rrl.store(
                new.rrl
                    .clone()
                    .map(|s| Arc::new(crate::rrl::Limiter::new(s))),
            );
        }
        self.primary.reconfigure(new.zone.clone(), &new.transfer);
        self.notify
            .reconfigure(new.transfer.notify.clone(), new.zone.clone());
        self.refresher.send_replace(Some(Arc::new(Reconfigure {
            source: self.source.clone(),
            naming: new.naming.clone(),
            zone: new.zone.zone.clone(),
            // The state dir stays as started (the refresher keeps its own).
            schedule: schedule_of(&new),
            new_serial: ["ttl", "negative_ttl", "nameserver", "hostmaster"]
                .iter()
                .any(|o| applied.contains(o)),
        })));
        let list = |names: &[&str]| {
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        };
        if restart.is_empty() {
            info!(
                "configuration reloaded from {origin}: applied {}",
                list(&applied)
            );
        } else {
            tracing::warn!(
                "configuration reloaded from {origin}: applied {}; needs a restart to change: {}",
                list(&applied),
                list(&restart)
            );
        }
        // What needs a restart keeps running as it started.
        self.current = Settings {
            listen: old.listen.clone(),
            state_dir: old.state_dir.clone(),
            metrics_listen: old.metrics_listen,
            tcp: old.tcp.clone(),
            ..new
        };
    }
}

/// What the reload line calls the forwarding settings.
const FORWARD: &str = "upstreams and forward";

/// The refresher's timing and state directory from `settings`.
fn schedule_of(settings: &Settings) -> Schedule {
    Schedule {
        interval: settings.interval,
        max_backoff: settings.max_backoff,
        state_dir: Some(settings.state_dir.clone()),
        max_stale: settings.max_stale,
        max_removed_fraction: settings.max_removed_fraction,
        resync_interval: match &settings.source {
            crate::config::SourceSpec::Ec2(ec2) => ec2
                .events
                .as_ref()
                .map_or(settings.interval, |e| e.resync_interval),
            crate::config::SourceSpec::File(_) => settings.interval,
        },
    }
}

/// The forwarder `settings` ask for, logged; `None` without upstreams.
fn forwarder_for(settings: &Settings) -> Option<Arc<Forwarder>> {
    let forwarder = Forwarder::new(&settings.forward).map(Arc::new);
    if forwarder.is_some() {
        info!(upstreams = ?settings.forward.upstreams, "forwarding names outside the zone");
    }
    forwarder
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the
/// configuration from `config` and refreshes at once.
pub async fn run(
    settings: Settings,
    config: ConfigSource,
    export_hosts: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Signals first: a SIGTERM that arrives while starting must stop the
    // daemon cleanly, not kill it with the default action.
    let (stop_tx, stop_rx) = watch::channel(false);
    let refresh_now = Arc::new(Notify::new());
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    let notifier = Notifier::from_env();

    let source = build_source(&settings.source).await?;
    let store = new_store();
    let refresher = Refresher::new(
        source.clone(),
        settings.naming.clone(),
        settings.zone.zone.clone(),
        store.clone(),
    )
    .with_schedule(schedule_of(&settings));
    let (reconfigure, new_settings) = watch::channel(None);
    let mut refresher = refresher.with_reconfigure(new_settings);
    // EC2 change events: a poller hands batches to the refresher, which
    // applies them between refreshes (one writer per unit).
    #[cfg(feature = "ec2")]
    if let Some(queue) = source.event_queue() {
        let (batches, events) = tokio::sync::mpsc::channel(4);
        let (following, follows) = watch::channel(false);
        refresher = refresher.with_events(events, follows);
        crate::inventory::sqs::spawn_poller(
            queue,
            source.units(),
            crate::inventory::sqs::Links {
                batches,
                following,
                status: refresher.status(),
            },
            stop_rx.clone(),
        );
    }
    refresher.restore();

    let bound = bind_all(&settings.listen).await?;
    let metrics_listener = match settings.metrics_listen {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };
    let forwarder = forwarder_for(&settings);
    // Who may ask what: one cell for the handler, the fast path and reloads.
    let access = Arc::new(arc_swap::ArcSwap::from_pointee(settings.access.clone()));
    let handler = Arc::new(
        ZoneHandler::new(store.clone(), settings.zone.clone(), forwarder)
            .with_access(access.clone())
            .with_tcp_idle(settings.tcp.idle_timeout),
    );

    let fast = FastPath::new(store.clone(), &settings.zone, access.clone());
    let rrl = crate::rrl::cell(settings.rrl.as_ref());
    if let Some(r) = &settings.rrl {
        info!(
            per_second = r.responses_per_second,
            slip = r.slip,
            window_secs = r.window,
            ipv4_prefix = r.ipv4_prefix,
            ipv6_prefix = r.ipv6_prefix,
            exempt = r.exempt.len(),
            "rate limiting UDP replies"
        );
    }
    // Transfers: the journal follows every swap, and NOTIFY follows the
    // journal, so a secondary told of a change finds its IXFR ready.
    let primary = Arc::new(Primary::new(
        store.clone(),
        settings.zone.clone(),
        &settings.transfer,
    ));
    let (journaled, journaled_rx) = watch::channel(None);
    spawn_journal(primary.clone(), refresher.subscribe(), journaled);
    notify::describe(&settings.transfer.notify);
    let notify_sender = NotifySender::new(
        settings.transfer.notify.clone(),
        settings.zone.clone(),
        &settings.listen,
    );
    notify_sender.clone().spawn(journaled_rx);
    let mut reloader = Reloader {
        config,
        current: settings.clone(),
        source: source.clone(),
        handler: handler.clone(),
        fast: fast.clone(),
        primary: primary.clone(),
        notify: notify_sender,
        access,
        rrl: rrl.clone(),
        refresher: reconfigure,
    };
    let notify = refresh_now.clone();
    let accept_removals = refresher.accept_removals();
    let stop_notifier = notifier.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    reloader.reload().await;
                    notify.notify_one();
                }
                _ = usr1.recv() => {
                    info!("SIGUSR1: refreshing now, and applying every unit's fetch whatever it removes");
                    accept_removals.store(true, std::sync::atomic::Ordering::Relaxed);
                    notify.notify_one();
                }
            }
        }
        info!("shutting down");
        stop_notifier.notify("STOPPING=1");
        let _ = stop_tx.send(true);
    });

    // READY=1 once there is a zone to serve: at once with persisted data,
    // else after the first successful fetch.
    let mut changes = refresher.subscribe();
    let ready_notifier = notifier.clone();
    let zone = settings.zone.zone.clone();
    tokio::spawn(async move {
        if let Ok(current) = changes.wait_for(Option::is_some).await {
            let names = current.as_ref().map_or(0, |s| s.name_count());
            info!(%zone, names, "zone is servable");
            ready_notifier.notify(&format!("READY=1\nSTATUS=serving {zone} ({names} names)"));
        }
    });
    if let Some(period) = notifier.watchdog_interval() {
        // Proves the runtime still runs tasks; a wedged runtime gets
        // restarted by systemd.
        let watchdog = notifier.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => watchdog.notify("WATCHDOG=1"),
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }
    if let Some(listener) = metrics_listener {
        let health = Health {
            store: store.clone(),
            status: refresher.status(),
            max_stale: settings.max_stale,
        };
        tokio::spawn(metrics::serve_http(listener, health, stop_rx.clone()));
    }

    if let Some(path) = export_hosts {
        info!(path = %path.display(), "exporting the zone into the hosts file after every change");
        spawn_subscriber(refresher.subscribe(), Arc::new(HostsExport { path }));
    }

    let refresher_task = tokio::spawn(refresher.run(refresh_now, stop_rx.clone()));
    info!(zone = %settings.zone.zone, source = %source.describe(), state_dir = %settings.state_dir.display(), "serving");
    serve(
        bound,
        handler,
        Some(fast),
        Some(primary),
        rrl,
        settings.tcp.clone(),
        stop_rx,
    )
    .await;
    let _ = refresher_task.await;
    info!("stopped");
    Ok(())
}

//! `fleetdns serve`: turns settings into objects and wires them together.
//!
//! Start-up order: signal handlers; the source; the persisted inventory
//! (served at once if there is one); every socket bound, so a port in use
//! fails the start with nothing half-started; then the listeners, the
//! refresher (which fetches at once) and the subscribers run. Without
//! persisted data and before the first successful fetch, zone queries get
//! SERVFAIL (clients move on to their next server) while forwarding works;
//! systemd hears `READY=1` only once the zone is servable.

use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{Settings, SourceSpec};
use crate::dns::forward::Forwarder;
use crate::dns::server::{bind_all, serve};
use crate::dns::ZoneHandler;
use crate::inventory::ec2::Ec2Source;
use crate::inventory::file::FileSource;
use crate::inventory::Source;
use crate::metrics::{self, Health};
use crate::refresh::{Refresher, Schedule};
use crate::snapshot::{new_store, Snapshot};
use crate::systemd::Notifier;

/// Builds the configured source.
pub async fn build_source(spec: &SourceSpec) -> anyhow::Result<Arc<dyn Source>> {
    Ok(match spec {
        SourceSpec::File(path) => Arc::new(FileSource::new(path)),
        SourceSpec::Ec2(settings) => Arc::new(Ec2Source::new(settings).await?),
    })
}

/// Something to do after every swap, off the answer path (the hosts
/// export is one).
pub trait OnSwap: Send + Sync + 'static {
    /// Called with each new snapshot on a blocking thread, one call at a
    /// time; if several swaps happen during a call, the next call gets only
    /// the latest. Errors are the subscriber's to log.
    fn on_swap(&self, snapshot: &Snapshot);
}

/// Runs `subscriber` for the current snapshot (if any) and then after
/// every swap announced on `changes`, until the refresher is gone.
pub fn spawn_subscriber(
    mut changes: watch::Receiver<Option<Arc<Snapshot>>>,
    subscriber: Arc<dyn OnSwap>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let current = changes.borrow_and_update().clone();
            if let Some(snapshot) = current {
                let subscriber = subscriber.clone();
                if let Err(error) =
                    tokio::task::spawn_blocking(move || subscriber.on_swap(&snapshot)).await
                {
                    warn!(%error, "snapshot subscriber failed");
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Signals first: a SIGTERM that arrives while starting must stop the
    // daemon cleanly, not kill it with the default action.
    let (stop_tx, stop_rx) = watch::channel(false);
    let refresh_now = Arc::new(Notify::new());
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let notifier = Notifier::from_env();

    let source = build_source(&settings.source).await?;
    let store = new_store();
    let mut refresher = Refresher::new(
        source.clone(),
        settings.naming.clone(),
        settings.zone.zone.clone(),
        store.clone(),
    )
    .with_schedule(Schedule {
        interval: settings.interval,
        max_backoff: settings.max_backoff,
        state_dir: Some(settings.state_dir.clone()),
        max_stale: settings.max_stale,
    });
    refresher.restore();

    let bound = bind_all(&settings.listen).await?;
    let metrics_listener = match settings.metrics_listen {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };
    let forwarder = Forwarder::new(&settings.forward).map(Arc::new);
    if forwarder.is_some() {
        info!(upstreams = ?settings.forward.upstreams, "forwarding names outside the zone");
    }
    let handler = Arc::new(ZoneHandler::new(
        store.clone(),
        settings.zone.clone(),
        forwarder,
    ));

    let notify = refresh_now.clone();
    let stop_notifier = notifier.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => notify.notify_one(),
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

    let refresher_task = tokio::spawn(refresher.run(refresh_now, stop_rx.clone()));
    info!(zone = %settings.zone.zone, source = %source.describe(), state_dir = %settings.state_dir.display(), "serving");
    serve(bound, handler, settings.tcp.clone(), stop_rx).await;
    let _ = refresher_task.await;
    info!("stopped");
    Ok(())
}

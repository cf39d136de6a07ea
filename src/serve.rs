//! `fleetdns serve`: turns settings into objects and wires them together.
//!
//! Order matters for "nothing half-started": the first inventory is loaded
//! and every socket is bound before anything answers; any failure there
//! exits with an error and nothing running.

use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tracing::info;

use crate::config::{Settings, SourceSpec};
use crate::dns::forward::Forwarder;
use crate::dns::server::{bind_all, serve};
use crate::dns::ZoneHandler;
use crate::inventory::ec2::Ec2Source;
use crate::inventory::file::FileSource;
use crate::inventory::Source;
use crate::refresh::Refresher;
use crate::snapshot::new_store;

/// Builds the configured source.
pub async fn build_source(spec: &SourceSpec) -> anyhow::Result<Arc<dyn Source>> {
    Ok(match spec {
        SourceSpec::File(path) => Arc::new(FileSource::new(path)),
        SourceSpec::Ec2(settings) => Arc::new(Ec2Source::new(settings).await?),
    })
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Signals first: a SIGTERM that arrives while the inventory loads must
    // stop the daemon cleanly, not kill it with the default action.
    let (stop_tx, stop_rx) = watch::channel(false);
    let refresh_now = Arc::new(Notify::new());
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let source = build_source(&settings.source).await?;
    let store = new_store();
    let mut refresher = Refresher::new(
        source.clone(),
        settings.naming.clone(),
        settings.zone.zone.clone(),
        store.clone(),
    );
    refresher
        .refresh_once()
        .await
        .with_context(|| format!("cannot load the inventory from {}", source.describe()))?;

    let bound = bind_all(&settings.listen).await?;
    let forwarder = Forwarder::new(&settings.forward).map(Arc::new);
    if forwarder.is_some() {
        info!(upstreams = ?settings.forward.upstreams, "forwarding names outside the zone");
    }
    let handler = Arc::new(ZoneHandler::new(store, settings.zone.clone(), forwarder));

    let notify = refresh_now.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => notify.notify_one(),
            }
        }
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let refresher_task =
        tokio::spawn(refresher.run(settings.interval, refresh_now, stop_rx.clone()));
    info!(zone = %settings.zone.zone, source = %source.describe(), "serving");
    serve(bound, handler, settings.tcp.clone(), stop_rx).await;
    let _ = refresher_task.await;
    info!("stopped");
    Ok(())
}

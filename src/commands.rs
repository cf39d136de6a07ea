//! `fleetdns list`, `check` and `hosts`: one fetch, one snapshot, a report.
//!
//! Both read the same snapshot the daemon would serve, so what `list`
//! prints is what `dig` would answer. Tag values are untrusted: the table
//! prints them with Rust's `{:?}` escaping, JSON escapes them by itself.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::cli::HostsArgs;
use crate::config::Settings;
use crate::hosts::{export, render_block, render_lines};
use crate::inventory::Source;
use crate::naming::{Rewrite, Rule, Skip};
use crate::refresh::Refresher;
use crate::serve::build_source;
use crate::snapshot::{new_store, Snapshot};
use crate::state;

/// Fetches once and returns the snapshot; any failed unit is an error,
/// since a one-shot report of partial data would mislead.
pub async fn snapshot_once(settings: &Settings) -> anyhow::Result<Arc<Snapshot>> {
    snapshot_of(build_source(&settings.source).await?, settings).await
}

/// [`snapshot_once`] with a source already built.
async fn snapshot_of(
    source: Arc<dyn Source>,
    settings: &Settings,
) -> anyhow::Result<Arc<Snapshot>> {
    let store = new_store();
    let mut refresher = Refresher::new(
        source,
        settings.naming.clone(),
        settings.zone.zone.clone(),
        store.clone(),
    );
    let refreshed = refresher.refresh_once().await?;
    if let Some(failure) = refreshed.failed.first() {
        anyhow::bail!("{failure}");
    }
    store
        .load_full()
        .ok_or_else(|| anyhow::anyhow!("no snapshot was built"))
}

/// The snapshot of the daemon's persisted inventory, every unit in it,
/// without calling the source (for `hosts --from-state`).
pub fn snapshot_from_state(settings: &Settings) -> anyhow::Result<Arc<Snapshot>> {
    let dir = &settings.state_dir;
    let state = state::load(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no persisted inventory in {} (`fleetdns serve` writes it after its first successful fetch)",
            dir.display()
        )
    })?;
    let units = state.units.iter().map(|u| &u.instances);
    let snapshot = Snapshot::build_packed(units, &settings.naming, &settings.zone.zone)
        .with_context(|| format!("cannot read {}", state::state_path(dir).display()))?
        .with_serial(state.serial);
    Ok(Arc::new(snapshot))
}

/// `fleetdns hosts`: the block on stdout, or merged into the file with a
/// one-line summary.
pub async fn hosts(
    settings: &Settings,
    args: &HostsArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let snapshot = if args.from_state {
        snapshot_from_state(settings)?
    } else {
        snapshot_once(settings).await?
    };
    if args.output.as_os_str() == "-" {
        out.write_all(render_block(&render_lines(&snapshot), "\n").as_bytes())?;
        return Ok(());
    }
    let path = args.output.clone();
    let allow_empty = args.allow_empty;
    let summary =
        tokio::task::spawn_blocking(move || export(&path, &snapshot, allow_empty)).await??;
    writeln!(out, "{summary}")?;
    Ok(())
}

/// One name in `list --json`.
#[derive(Serialize)]
struct ListedName {
    name: String,
    addresses: Vec<String>,
    instances: Vec<String>,
    rules: Vec<Rule>,
}

/// The whole `list --json` document.
#[derive(Serialize)]
struct Listing<'a> {
    zone: String,
    serial: u32,
    instances: usize,
    names: Vec<ListedName>,
    rewritten: &'a [Rewrite],
    skipped: &'a [Skip],
    not_running: usize,
    bad_ids: &'a [String],
}

fn listed_names(snapshot: &Snapshot) -> Vec<ListedName> {
    snapshot
        .entries_sorted()
        .into_iter()
        .map(|(name, e)| {
            let mut rules: Vec<Rule> = e.owners().map(|o| o.rule.clone()).collect();
            rules.sort();
            rules.dedup();
            ListedName {
                name: name.to_ascii(),
                addresses: e
                    .ipv4()
                    .iter()
                    .map(ToString::to_string)
                    .chain(e.ipv6().iter().map(ToString::to_string))
                    .collect(),
                instances: e.owners().map(|o| o.instance_id.to_string()).collect(),
                rules,
            }
        })
        .collect()
}

/// Writes the listing as a table or JSON.
pub fn write_list(snapshot: &Snapshot, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let report = snapshot.report();
    let names = listed_names(snapshot);
    if json {
        let listing = Listing {
            zone: snapshot.zone().to_string(),
            serial: snapshot.serial(),
            instances: snapshot.instance_count(),
            names,
            rewritten: &report.rewrites,
            skipped: &report.skips,
            not_running: report.not_running,
            bad_ids: &report.bad_ids,
        };
        serde_json::to_writer_pretty(&mut *out, &listing)?;
        writeln!(out)?;
        return Ok(());
    }

    let width = names.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:width$}  {:<40}  {:<40}  RULE",
        "NAME", "ADDRESSES", "INSTANCES"
    )?;
    for n in &names {
        let rules: Vec<String> = n.rules.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "{:width$}  {:<40}  {:<40}  {}",
            n.name,
            n.addresses.join(","),
            n.instances.join(","),
            rules.join(",")
        )?;
    }
    writeln!(
        out,
        "\n{} instances served, {} names, {} not running",
        snapshot.instance_count(),
        names.len(),
        report.not_running
    )?;
    if !report.rewrites.is_empty() {
        writeln!(out, "\nrewritten ({}):", report.rewrites.len())?;
        for r in &report.rewrites {
            writeln!(
                out,
                "  {} {} {:?} -> {}",
                r.instance_id, r.rule, r.value, r.name
            )?;
        }
    }
    if !report.skips.is_empty() {
        writeln!(out, "\nskipped ({}):", report.skips.len())?;
        for s in &report.skips {
            writeln!(
                out,
                "  {} {} {:?}: {}",
                s.instance_id, s.rule, s.value, s.reason
            )?;
        }
    }
    if !report.bad_ids.is_empty() {
        writeln!(out, "\nignored, not an instance id: {:?}", report.bad_ids)?;
    }
    Ok(())
}

/// `check`: the configuration is valid, every unit of the source can be
/// read (for EC2: a DryRun call per region and account, which tells bad
/// credentials from a missing permission), and the zone builds.
pub async fn check(settings: &Settings, out: &mut impl Write) -> anyhow::Result<()> {
    let source = build_source(&settings.source).await?;
    let checks = source.check().await;
    let mut failures = Vec::new();
    for c in &checks {
        match &c.result {
            Ok(summary) => writeln!(out, "ok   {}: {summary}", c.unit)?,
            Err(problem) => {
                writeln!(out, "FAIL {}: {problem}", c.unit)?;
                failures.push(format!("{}: {problem}", c.unit));
            }
        }
    }
    if let Some(first) = failures.first() {
        let more = match failures.len() {
            1 => String::new(),
            n => format!(" (and {} more of {} units)", n - 1, checks.len()),
        };
        anyhow::bail!("{first}{more}");
    }
    let snapshot = snapshot_of(source.clone(), settings).await?;
    let report = snapshot.report();
    writeln!(
        out,
        "ok: zone {} from {}: {} instances, {} names, {} rewritten, {} skipped, {} not running",
        snapshot.zone(),
        source.describe(),
        snapshot.instance_count(),
        snapshot.name_count(),
        report.rewrites.len(),
        report.skips.len(),
        report.not_running
    )?;
    Ok(())
}

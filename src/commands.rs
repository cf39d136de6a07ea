//! `fleetdns list`, `check` and `hosts`: one fetch, one snapshot, a report.
//!
//! Both read the same snapshot the daemon would serve, so what `list`
//! prints is what `dig` would answer. Tag values are untrusted: the table
//! prints them with Rust's `{:?}` escaping, JSON escapes them by itself.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::cli::{CheckArgs, HostsArgs};
use crate::config::Settings;
use crate::hosts::{export, render_block, render_lines};
use crate::inventory::Source;
use crate::naming::{Rewrite, Rule, Skip};
use crate::refresh::Refresher;
use crate::serve::build_source;
use crate::snapshot::{new_store, Snapshot};
use crate::state;
use crate::statics::StaticNode;
use hickory_proto::rr::RData;

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
    /// What the name is to its owners: `instance-id`, `primary`, `alias`,
    /// `group` or `ordinal` (several when owners differ), or `static`.
    kinds: Vec<&'static str>,
    /// A static name's records other than A and AAAA, as in a zone file
    /// (`CNAME lb.example.com.`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    records: Vec<String>,
    /// Where a static name comes from: `FILE:LINE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    static_records: Option<String>,
    /// Instances that claim a static name, which the static records
    /// override.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    overridden: Vec<String>,
    /// What the name would have been to them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    overridden_kinds: Vec<&'static str>,
}

/// A fleet name that static records take over.
#[derive(Serialize)]
struct Overridden<'a> {
    name: &'a str,
    instances: &'a [String],
    kinds: &'a [&'static str],
    static_records: Option<&'a str>,
}

/// The static names of `names` that instances also claim.
fn overridden(names: &[ListedName]) -> Vec<Overridden<'_>> {
    names
        .iter()
        .filter(|n| !n.overridden.is_empty())
        .map(|n| Overridden {
            name: &n.name,
            instances: &n.overridden,
            kinds: &n.overridden_kinds,
            static_records: n.static_records.as_deref(),
        })
        .collect()
}

/// A name that several instances share.
#[derive(Serialize)]
struct Conflict<'a> {
    name: &'a str,
    instances: &'a [String],
    kinds: &'a [&'static str],
}

/// The names of `names` that more than one instance has.
fn conflicts(names: &[ListedName]) -> Vec<Conflict<'_>> {
    names
        .iter()
        .filter(|n| n.instances.len() > 1)
        .map(|n| Conflict {
            name: &n.name,
            instances: &n.instances,
            kinds: &n.kinds,
        })
        .collect()
}

/// The whole `list --json` document.
#[derive(Serialize)]
struct Listing<'a> {
    zone: String,
    serial: u32,
    instances: usize,
    names: &'a [ListedName],
    rewritten: &'a [Rewrite],
    skipped: &'a [Skip],
    /// Names that several instances share (each answers with all their
    /// addresses).
    conflicts: Vec<Conflict<'a>>,
    /// Fleet names that static records override.
    overridden: Vec<Overridden<'a>>,
    not_running: usize,
    bad_ids: &'a [String],
}

fn listed_names(snapshot: &Snapshot) -> Vec<ListedName> {
    let file = snapshot.statics().file();
    let static_name = |name: String, node: &StaticNode| ListedName {
        name,
        addresses: (node.ipv4.iter().map(ToString::to_string))
            .chain(node.ipv6.iter().map(ToString::to_string))
            .collect(),
        instances: Vec::new(),
        rules: Vec::new(),
        kinds: vec!["static"],
        records: node
            .records
            .iter()
            .filter(|r| !matches!(r.data, RData::A(_) | RData::AAAA(_)))
            .map(|r| format!("{} {}", r.data.record_type(), r.data))
            .collect(),
        static_records: Some(format!("{file}:{}", node.line)),
        overridden: Vec::new(),
        overridden_kinds: Vec::new(),
    };
    let apex = snapshot
        .statics()
        .apex()
        .map(|node| static_name(snapshot.zone().to_string(), node));
    let names = snapshot.entries_sorted().into_iter().map(|(name, e)| {
        let mut kinds: Vec<&'static str> = e.owners().map(|o| o.kind.label()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let instances: Vec<String> = e.owners().map(|o| o.instance_id.to_string()).collect();
        if let Some(node) = e.statics() {
            return ListedName {
                overridden: instances,
                overridden_kinds: kinds,
                ..static_name(name.to_ascii(), node)
            };
        }
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
            instances,
            rules,
            kinds,
            records: Vec::new(),
            static_records: None,
            overridden: Vec::new(),
            overridden_kinds: Vec::new(),
        }
    });
    apex.into_iter().chain(names).collect()
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
            names: &names,
            rewritten: &report.rewrites,
            skipped: &report.skips,
            conflicts: conflicts(&names),
            overridden: overridden(&names),
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
        "{:width$}  {:<40}  {:<40}  {:<11}  RULE",
        "NAME", "ADDRESSES", "INSTANCES", "KIND"
    )?;
    for n in &names {
        let rules: Vec<String> = match &n.static_records {
            Some(origin) => vec![origin.clone()],
            None => n.rules.iter().map(ToString::to_string).collect(),
        };
        let mut data = n.addresses.clone();
        data.extend(n.records.iter().cloned());
        writeln!(
            out,
            "{:width$}  {:<40}  {:<40}  {:<11}  {}",
            n.name,
            data.join(","),
            n.instances.join(","),
            n.kinds.join(","),
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
    section(out, "rewritten", &report.rewrites, |r| {
        format!("{} {} {:?} -> {}", r.instance_id, r.rule, r.value, r.name)
    })?;
    section(out, "skipped", &report.skips, |s| {
        format!("{} {} {:?}: {}", s.instance_id, s.rule, s.value, s.reason)
    })?;
    section(
        out,
        "shared by several instances",
        &conflicts(&names),
        |c| {
            format!(
                "{} ({}): {}",
                c.name,
                c.kinds.join(","),
                c.instances.join(",")
            )
        },
    )?;
    section(
        out,
        "static records override fleet names",
        &overridden(&names),
        |t| {
            format!(
                "{} ({}): {} [{}]",
                t.name,
                t.kinds.join(","),
                t.instances.join(","),
                t.static_records.unwrap_or_default()
            )
        },
    )?;
    if !report.bad_ids.is_empty() {
        writeln!(out, "\nignored, not an instance id: {:?}", report.bad_ids)?;
    }
    Ok(())
}

/// One section of `list`'s report after the table: a blank line, the
/// title with the count, then each item on an indented line; nothing when
/// there are no items.
fn section<T>(
    out: &mut impl Write,
    title: &str,
    items: &[T],
    line: impl Fn(&T) -> String,
) -> std::io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n{title} ({}):", items.len())?;
    for item in items {
        writeln!(out, "  {}", line(item))?;
    }
    Ok(())
}

/// `check`: what a start would need, tried without starting. The
/// configuration is valid (or this is not reached); every listen address
/// can be bound; the state directory is a writable directory (or can be
/// made); every unit of the source can be read (for EC2: a DryRun call per
/// region and account, which tells bad credentials from a missing
/// permission); and the zone builds, with at least one running instance
/// unless `--allow-empty`.
///
/// On success one summary line (each check's own line too with `-v`); on
/// failure every check's line, then the error.
pub async fn check(
    settings: &Settings,
    args: &CheckArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut checks: Vec<(String, Result<String, String>)> = Vec::new();
    for &address in &settings.listen {
        checks.push((format!("listen {address}"), try_bind(address, true)));
    }
    if let Some(address) = settings.metrics_listen {
        checks.push((
            format!("metrics_listen {address}"),
            try_bind(address, false),
        ));
    }
    checks.push((
        format!("state_dir {}", settings.state_dir.display()),
        check_state_dir(&settings.state_dir),
    ));
    let source = build_source(&settings.source).await?;
    let units = source.check().await;
    let units_failed = units.iter().any(|u| u.result.is_err());
    checks.extend(units.into_iter().map(|u| (u.unit, u.result)));
    let mut summary = None;
    if !units_failed {
        let snapshot = snapshot_of(source.clone(), settings).await?;
        let report = snapshot.report();
        if snapshot.instance_count() == 0 && !args.allow_empty {
            checks.push((
                "fleet".to_string(),
                Err(format!(
                    "no running instance in {}: check the regions, the filters and the account the credentials belong to (--allow-empty accepts an empty fleet)",
                    source.describe()
                )),
            ));
        }
        summary = Some(format!(
            "ok: zone {} from {}: {} instances, {} names, {} rewritten, {} skipped, {} not running",
            snapshot.zone(),
            source.describe(),
            snapshot.instance_count(),
            snapshot.name_count(),
            report.rewrites.len(),
            report.skips.len(),
            report.not_running
        ));
    }
    let failures: Vec<String> = checks
        .iter()
        .filter_map(|(what, r)| r.as_ref().err().map(|e| format!("{what}: {e}")))
        .collect();
    if !failures.is_empty() || args.common.verbose > 0 {
        for (what, result) in &checks {
            match result {
                Ok(fine) => writeln!(out, "ok   {what}: {fine}")?,
                Err(problem) => writeln!(out, "FAIL {what}: {problem}")?,
            }
        }
    }
    if let Some(first) = failures.first() {
        let more = match failures.len() {
            1 => String::new(),
            n => format!(" (and {} more problems)", n - 1),
        };
        anyhow::bail!("{first}{more}");
    }
    if let Some(summary) = summary {
        writeln!(out, "{summary}")?;
    }
    Ok(())
}

/// Binds `address` for DNS (UDP and TCP) or HTTP (TCP) and lets it go
/// again: a port in use or an address of no interface fails here instead
/// of at the start.
fn try_bind(address: SocketAddr, udp: bool) -> Result<String, String> {
    let tried = if udp {
        std::net::UdpSocket::bind(address).map(drop)
    } else {
        Ok(())
    }
    .and_then(|()| std::net::TcpListener::bind(address).map(drop));
    match tried {
        Ok(()) => Ok("can be bound".to_string()),
        // `check` run by hand as a user; the service has the capability.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && address.port() < 1024 => {
            Ok("not tried: ports below 1024 need root or CAP_NET_BIND_SERVICE, which the systemd unit grants".to_string())
        }
        Err(e) => Err(format!("{e}{}", crate::dns::server::hint(&e, address))),
    }
}

/// Whether fleetdns can keep its state in `dir`: a writable directory, or
/// one it can make below the nearest directory that exists.
fn check_state_dir(dir: &Path) -> Result<String, String> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err("exists but is not a directory".to_string()),
        Ok(_) => {
            let probe = dir.join(format!(".fleetdns-check-{}", std::process::id()));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| format!("is not writable: {e}"))?;
            let _ = std::fs::remove_file(&probe);
            Ok("a writable directory".to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|a| a.exists())
                .unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(format!(
                    "does not exist, and {} is not a directory",
                    parent.display()
                ));
            }
            // Making a directory there and removing it again is the only
            // test that also knows about read-only mounts and ACLs.
            let probe = parent.join(format!(".fleetdns-check-{}", std::process::id()));
            std::fs::create_dir(&probe).map_err(|e| {
                format!(
                    "does not exist, and cannot be made in {}: {e}",
                    parent.display()
                )
            })?;
            let _ = std::fs::remove_dir(&probe);
            Ok(format!(
                "does not exist yet; fleetdns makes it under {} (under systemd, StateDirectory= does)",
                parent.display()
            ))
        }
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}

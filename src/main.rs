//! The `fleetdns` binary: parse flags, find and read the config, set up
//! logging, run, map errors to exit codes (0 ok, 1 runtime failure, 2 bad
//! configuration or usage).

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use fleetdns::cli::{Cli, Command, Common};
use fleetdns::config::{ConfigError, ConfigOrigin, Overrides, Settings};
use fleetdns::logging::{self, LogSetup};

/// mimalloc instead of glibc malloc: building and freeing a large zone is
/// hundreds of thousands of small allocations, where glibc spent half its
/// time consolidating free chunks (figures in benches/results/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc is built not to ask for huge pages; this also keeps a
    // system whose THP mode is `always` from giving them.
    fleetdns::background::no_huge_pages();
    fleetdns::background::return_freed_memory_at_once();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `fleetdns list | head -1`: the reader has what it wanted.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            if error.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes on one line, `: ` between them, leaving out a
/// cause whose text the line already holds (many errors print their source
/// in their own message and also return it as their source, which printed
/// "No such file or directory (os error 2)" twice).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Whether the error is a write to a closed pipe.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Reads the config from where it is found, sets up logging (the config
/// may choose its format), then validates with the flags applied.
fn start(
    common: &Common,
    overrides: &Overrides,
    daemon: bool,
) -> anyhow::Result<(Settings, ConfigOrigin)> {
    let origin = ConfigOrigin::from_env(common.config.as_deref());
    let config = origin.load()?;
    logging::init(LogSetup {
        format: common.log_format.unwrap_or(config.log_format),
        daemon,
        verbose: common.verbose,
    });
    if daemon {
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %origin,
            "fleetdns starting"
        );
    } else {
        tracing::debug!(config = %origin, "configuration");
    }
    Ok((config.validate(overrides)?, origin))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Generated from the clap definitions, so they never drift from the flags.
    match &cli.command {
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "fleetdns", &mut script);
            std::io::stdout().write_all(&script)?;
            return Ok(());
        }
        Command::Man { dir } => {
            return match dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    // One page per command, then the main page again with
                    // the operator's sections.
                    clap_mangen::generate_to(Cli::command(), dir).with_context(|| {
                        format!("cannot write man pages into {}", dir.display())
                    })?;
                    let main = dir.join("fleetdns.1");
                    let mut page = Vec::new();
                    fleetdns::manpage::render(Cli::command(), &mut page)?;
                    std::fs::write(&main, page)
                        .with_context(|| format!("cannot write {}", main.display()))
                }
                None => {
                    let mut page = Vec::new();
                    fleetdns::manpage::render(Cli::command(), &mut page)?;
                    Ok(std::io::stdout().write_all(&page)?)
                }
            };
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let overrides = args.overrides();
            let (settings, origin) = start(&args.common, &overrides, true)?;
            let reload = fleetdns::serve::ConfigSource { origin, overrides };
            runtime.block_on(fleetdns::serve::run(settings, reload, args.export_hosts))
        }
        Command::List { common, json } => {
            let (settings, _) = start(&common, &common.overrides(), false)?;
            let snapshot = runtime.block_on(fleetdns::commands::snapshot_once(&settings))?;
            fleetdns::commands::write_list(&snapshot, json, &mut std::io::stdout().lock())
        }
        Command::Hosts(args) => {
            let (settings, _) = start(&args.common, &args.common.overrides(), false)?;
            runtime.block_on(fleetdns::commands::hosts(
                &settings,
                &args,
                &mut std::io::stdout().lock(),
            ))
        }
        Command::Check(args) => {
            let (settings, _) = start(&args.common, &args.common.overrides(), false)?;
            runtime.block_on(fleetdns::commands::check(
                &settings,
                &args,
                &mut std::io::stdout().lock(),
            ))
        }
        Command::Completions { .. } | Command::Man { .. } => Ok(()),
    }
}

//! The `fleetdns` binary: parse flags, set up logging, run, map errors to
//! exit codes (0 ok, 1 runtime failure, 2 bad configuration or usage).

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use fleetdns::cli::{Cli, Command};
use fleetdns::config::Overrides;
use fleetdns::config::{load_config, Config, ConfigError, Settings};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: building and freeing a large zone is
/// hundreds of thousands of small allocations, where glibc spent half its
/// time consolidating free chunks (figures in benches/results/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc is built not to ask for huge pages; this also keeps a
    // system whose THP mode is `always` from giving them.
    fleetdns::background::no_huge_pages();
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default. hickory logs every
/// request at INFO, which costs CPU and floods the journal: WARN for it.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,hickory_server=warn,hickory_proto=warn,hickory_net=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn settings(config: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
    let config = match config {
        Some(path) => load_config(path)?,
        None => Config::default(),
    };
    config.validate(overrides)
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
                    std::fs::create_dir_all(dir)?;
                    clap_mangen::generate_to(Cli::command(), dir)?;
                    Ok(())
                }
                None => Ok(clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?),
            };
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let settings = settings(args.common.config.as_deref(), &args.overrides())?;
            runtime.block_on(fleetdns::serve::run(settings, args.export_hosts))
        }
        Command::List { common, json } => {
            let settings = settings(common.config.as_deref(), &common.overrides())?;
            let snapshot = runtime.block_on(fleetdns::commands::snapshot_once(&settings))?;
            fleetdns::commands::write_list(&snapshot, json, &mut std::io::stdout().lock())
        }
        Command::Hosts(args) => {
            let settings = settings(args.common.config.as_deref(), &args.common.overrides())?;
            runtime.block_on(fleetdns::commands::hosts(
                &settings,
                &args,
                &mut std::io::stdout().lock(),
            ))
        }
        Command::Check(common) => {
            let settings = settings(common.config.as_deref(), &common.overrides())?;
            runtime.block_on(fleetdns::commands::check(
                &settings,
                &mut std::io::stdout().lock(),
            ))
        }
        Command::Completions { .. } | Command::Man { .. } => Ok(()),
    }
}

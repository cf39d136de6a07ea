//! The command line (clap derive): `serve`, `list`, `check`, `hosts`.
//!
//! Flags are kept close to their text here and turned into [`Overrides`]
//! for `config.rs`, which applies them in one place and validates.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides};

/// Authoritative DNS for a cloud fleet: every EC2 instance gets a name.
#[derive(Debug, Parser)]
#[command(name = "fleetdns", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer DNS for the zone until SIGTERM (SIGHUP reloads the config and refreshes now).
    Serve(ServeArgs),
    /// Print every name with its addresses, and what naming rewrote or skipped.
    List {
        /// Shared options.
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration, try the listen addresses and the state
    /// directory, and read the source once; one summary line, or every
    /// problem and a non-zero exit.
    Check(CheckArgs),
    /// Write the fleet into the managed block of a hosts file (for cron), or print the block.
    Hosts(HostsArgs),
    /// Print a shell completion script to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into DIR.
    Man {
        /// Write fleetdns.1 and fleetdns-COMMAND.1 here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `serve`'s options.
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Serve /metrics, /healthz and /readyz over HTTP here (replaces `metrics_listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// After every change, update the managed block of this hosts file.
    #[arg(long, value_name = "PATH")]
    pub export_hosts: Option<PathBuf>,
}

/// `check`'s options.
#[derive(Debug, Args, Clone, Default)]
pub struct CheckArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Accept a fleet with no running instance (by default a failure: a
    /// wrong region, filter or account lists nothing).
    #[arg(long)]
    pub allow_empty: bool,
}

/// `hosts`'s options.
#[derive(Debug, Args, Clone)]
pub struct HostsArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// The hosts file to update, or `-` to print the block to stdout.
    #[arg(long, short = 'o', value_name = "PATH|-", default_value = "/etc/hosts")]
    pub output: PathBuf,
    /// Replace a non-empty block with an empty one (refused otherwise).
    #[arg(long)]
    pub allow_empty: bool,
    /// Read the daemon's persisted inventory (in the state dir) instead of the source.
    #[arg(long)]
    pub from_state: bool,
}

impl ServeArgs {
    /// The flags as config overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            metrics_listen: self.metrics_listen,
            ..self.common.overrides()
        }
    }
}

/// Options every subcommand takes; flags override the config file.
#[derive(Debug, Args, Clone, Default)]
pub struct Common {
    /// TOML configuration file. Without it: the file named by
    /// $FLEETDNS_CONFIG, else /etc/fleetdns/fleetdns.toml if it exists,
    /// else the built-in defaults. `serve` logs which at start.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log lines: `serve` logs at info and one-shot commands only
    /// warnings; -v adds the next level (info, then debug). RUST_LOG wins.
    #[arg(long, short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as text or JSON objects (replaces `log_format`).
    #[arg(long, value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Address to answer DNS on, UDP and TCP (repeatable; replaces `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Zone to serve, e.g. fleet.internal.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// Inventory source: `ec2` (the EC2 API, with the config's [source.ec2]
    /// settings if any) or `file:PATH` (a describe-instances JSON file).
    #[arg(long, value_name = "SPEC")]
    pub source: Option<String>,
    /// Resolver for names outside the zone, IP or IP:PORT (repeatable; replaces `upstreams`).
    #[arg(long, value_name = "ADDR")]
    pub upstream: Vec<String>,
    /// Directory of the persisted inventory (replaces `state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl Common {
    /// The flags as config overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            zone: self.zone.clone(),
            source: self.source.clone(),
            upstreams: self.upstream.clone(),
            state_dir: self.state_dir.clone(),
            metrics_listen: None,
        }
    }
}

//! fleetdns: authoritative DNS for a cloud fleet.
//!
//! It lists the fleet (EC2 DescribeInstances, or the JSON the AWS CLI
//! prints), names each running instance from a tag or its first security
//! group, and answers DNS for an internal zone from that map.
//!
//! # Layout
//! Data flows one way:
//! `inventory` (sources) -> `naming` (pure) -> `snapshot` (immutable,
//! indexed) -> `refresh` (swaps it into an `ArcSwap`) -> readers: `dns`
//! (handler, listeners, forwarder), `metrics` (Prometheus text, health) and
//! `commands` (`list`, `check`, `hosts`); `hosts` keeps the managed block of
//! a hosts file. Sources pack what they fetch (`inventory::packed`) into
//! files rather than memory; `refresh` persists the packed units through
//! `state` (atomic writes in `files`) and reads them back from there.
//! `config` parses and validates (and finds the file: `--config`,
//! `FLEETDNS_CONFIG`, `/etc/fleetdns/fleetdns.toml`); `cli` holds the flags;
//! `logging` sets up log lines (journald priorities, JSON); `serve` wires
//! the daemon together, with `systemd` for readiness. `main.rs` is thin.

// Audited calls need `unsafe`: `background::set_idle`, the allocator's
// option and collection calls in `background`, and `recvmmsg`/`sendmmsg`
// in `dns::batch`; everything else is denied it.
#![deny(unsafe_code)]

// The allocator's static library, for the calls into it in `background`
// (`main` makes mimalloc the global allocator).
use mimalloc as _;

pub mod access;
pub mod background;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dns;
pub mod files;
pub mod hosts;
pub mod inventory;
pub mod logging;
pub mod manpage;
pub mod metrics;
pub mod naming;
pub mod notify;
pub mod refresh;
pub mod rrl;
pub mod serve;
pub mod snapshot;
pub mod state;
pub mod statics;
pub mod subscribe;
pub mod systemd;
pub mod tsig;

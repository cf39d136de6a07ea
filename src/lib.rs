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
//! (handler, listeners, forwarder) and `commands` (`list`, `check`).
//! `config` parses and validates; `cli` holds the flags; `serve` wires the
//! daemon together. `main.rs` is thin.

pub mod cli;
pub mod commands;
pub mod config;
pub mod dns;
pub mod inventory;
pub mod naming;
pub mod refresh;
pub mod serve;
pub mod snapshot;

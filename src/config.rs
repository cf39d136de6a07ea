//! Configuration: the TOML file, command-line overrides, and validation.
//!
//! Parsing happens in two steps (as ripgrep does): [`Config`] mirrors the
//! file, with `deny_unknown_fields` so a typo is an error rather than a
//! silently ignored option; [`Overrides`] are the flags; [`Config::validate`]
//! applies the flags in one place and turns strings into the real objects
//! ([`Settings`]), naming the option in every error. `read_config` parses a
//! string, so tests feed strings. Every option is documented, with its
//! default, in `deploy/fleetdns.example.toml`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::access::{Allow, Cidr, QueryAccess};
use crate::rrl::RrlSettings;
use crate::tsig::{Algorithm, Key, Secret};

use crate::inventory::ec2_settings::{Account, Ec2Settings};
use crate::naming::{Naming, Rule};

/// A configuration problem, reported as one line naming the file or option.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config {path}: {message}")]
    Parse {
        /// The config file (or `<string>`).
        path: String,
        /// What is wrong, with the line when known.
        message: String,
    },
    /// An option has a value that cannot work.
    #[error("invalid {option}: {message}")]
    Invalid {
        /// The option, as written in the file (`zone`, `forward.timeout_ms`, `--listen`).
        option: String,
        /// Why the value cannot work.
        message: String,
    },
}

fn invalid(option: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option: option.to_string(),
        message: message.into(),
    }
}

/// The configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The zone served, e.g. `fleet.internal.`.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Addresses to answer DNS on, UDP and TCP each.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Resolvers for names outside the zone (`IP` or `IP:PORT`); none means REFUSED.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Seconds between inventory refreshes.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Longest wait in seconds between refreshes after failures or
    /// throttling (never below `interval_secs`).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: u64,
    /// `/readyz` turns unready when some unit's data is older than this
    /// many seconds; default 3 x `interval_secs`.
    #[serde(default)]
    pub max_stale_secs: Option<u64>,
    /// A full refresh that would remove more than this fraction of a
    /// unit's running instances is held until the next one agrees.
    #[serde(default = "default_max_removed_fraction")]
    pub max_removed_fraction: f64,
    /// Where the last good inventory is persisted; default `$STATE_DIRECTORY`
    /// (set by systemd's `StateDirectory=`), else `/var/lib/fleetdns`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Address for `/metrics`, `/healthz` and `/readyz` over HTTP; none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// TTL in seconds of A, AAAA, PTR, TXT, NS and SOA answers.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// How long in seconds resolvers may cache NXDOMAIN and NODATA (SOA MINIMUM).
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
    /// The name in the apex NS record and the SOA MNAME field.
    #[serde(default = "default_nameserver")]
    pub nameserver: String,
    /// The SOA RNAME (mailbox as a name); default `hostmaster.<zone>`.
    #[serde(default)]
    pub hostmaster: Option<String>,
    /// How instances get their names.
    #[serde(default)]
    pub naming: NamingConfig,
    /// A zone-file fragment of records for hosts that are not instances
    /// (A, AAAA, CNAME, TXT, SRV, MX; owners relative to the zone), read
    /// at start and on SIGHUP; its names win over fleet names.
    #[serde(default)]
    pub static_records: Option<PathBuf>,
    /// Where the inventory comes from: `[source.ec2]` or `[source.file]`.
    #[serde(default, deserialize_with = "one_source")]
    pub source: Option<SourceConfig>,
    /// Forwarding of names outside the zone.
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Limits on DNS over TCP.
    #[serde(default)]
    pub tcp: TcpConfig,
    /// Log lines as `text` (default) or `json` (one object a line, for log
    /// shippers); `--log-format` wins.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Serve a zone that [`zone_hazard`] refuses (a TLD, AWS's own names,
    /// reverse zones), knowing that it shadows real names.
    #[serde(default)]
    pub allow_unsafe_zone: bool,
    /// Who may ask what (`[access]`).
    #[serde(default)]
    pub access: AccessConfig,
    /// Reverse zones fleetdns is authoritative for (`20.10.in-addr.arpa`):
    /// PTR from the fleet, NXDOMAIN for unknown addresses, transferable.
    #[serde(default)]
    pub reverse_zones: Vec<String>,
    /// TSIG keys (`[[tsig_keys]]`), for transfers, signed queries and NOTIFY.
    #[serde(default)]
    pub tsig_keys: Vec<TsigKeyConfig>,
    /// Zone transfers to secondaries (`[transfer]`); none by default.
    #[serde(default)]
    pub transfer: TransferConfig,
    /// Response rate limiting (`[rrl]`); off unless present.
    #[serde(default)]
    pub rrl: Option<RrlConfig>,
}

/// `[rrl]`: response rate limiting of UDP replies (see [`crate::rrl`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    /// Replies per second each client network may get for one answer.
    pub responses_per_second: u32,
    /// Every `slip`-th limited reply is sent truncated; 0 drops them all.
    #[serde(default = "default_rrl_slip")]
    pub slip: u32,
    /// Seconds a flood stays limited after it stops, at most.
    #[serde(default = "default_rrl_window_secs")]
    pub window_secs: u32,
    /// Prefix length that groups IPv4 clients.
    #[serde(default = "default_rrl_ipv4_prefix")]
    pub ipv4_prefix: u8,
    /// Prefix length that groups IPv6 clients.
    #[serde(default = "default_rrl_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Networks never limited.
    #[serde(default)]
    pub exempt: Vec<String>,
    /// Buckets kept (memory: 24 bytes each, taken at start).
    #[serde(default = "default_rrl_table_size")]
    pub table_size: usize,
}

fn default_rrl_slip() -> u32 {
    2
}
fn default_rrl_window_secs() -> u32 {
    15
}
fn default_rrl_ipv4_prefix() -> u8 {
    24
}
fn default_rrl_ipv6_prefix() -> u8 {
    56
}
fn default_rrl_table_size() -> usize {
    65_536
}

/// Checks `[rrl]`, naming the option at fault.
fn validate_rrl(c: &RrlConfig) -> Result<RrlSettings, ConfigError> {
    let within = |option: &str, value: u64, low: u64, high: u64| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(invalid(
                &format!("rrl.{option}"),
                format!("{value} is out of range: {low} to {high}"),
            ))
        }
    };
    within(
        "responses_per_second",
        c.responses_per_second.into(),
        1,
        1_000_000,
    )?;
    within("slip", c.slip.into(), 0, 100)?;
    within("window_secs", c.window_secs.into(), 1, 3600)?;
    within("ipv4_prefix", c.ipv4_prefix.into(), 1, 32)?;
    within("ipv6_prefix", c.ipv6_prefix.into(), 1, 128)?;
    within("table_size", c.table_size as u64, 1024, 1 << 24)?;
    let exempt = c
        .exempt
        .iter()
        .map(|e| Cidr::parse(e).map_err(|m| invalid("rrl.exempt", m)))
        .collect::<Result<_, _>>()?;
    Ok(RrlSettings {
        responses_per_second: c.responses_per_second,
        slip: c.slip,
        window: c.window_secs,
        ipv4_prefix: c.ipv4_prefix,
        ipv6_prefix: c.ipv6_prefix,
        exempt,
        table_size: c.table_size.next_power_of_two(),
    })
}

/// `[access]`: who may ask what, by source network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Networks whose queries are answered; default loopback and the
    /// private ranges.
    #[serde(default)]
    pub allow_query: Option<Vec<String>>,
    /// Networks whose queries outside the zone are forwarded; default
    /// loopback only.
    #[serde(default)]
    pub allow_recursion: Option<Vec<String>>,
}

/// `[[tsig_keys]]`: one TSIG key.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigKeyConfig {
    /// The key's name, as the secondaries' configs spell it (`xfr-key`).
    pub name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// The secret in base64, inline (prefer `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the secret in base64, readable only by its owner.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

impl std::fmt::Debug for TsigKeyConfig {
    /// Never the secret: configs are printed in errors and tests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKeyConfig")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<not shown>"))
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

/// `[transfer]`: who may transfer the zone and whom to NOTIFY.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// Who may transfer: `{ from = "10.0.0.0/8", key = "xfr-key" }`.
    #[serde(default)]
    pub allow: Vec<AllowConfig>,
    /// Whom to NOTIFY after every change: `{ to = "10.0.1.53:53", key = "xfr-key" }`.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// Zone versions whose differences are kept for IXFR.
    #[serde(default = "default_ixfr_history")]
    pub ixfr_history: usize,
    /// The most bytes those differences may take; older ones go first.
    #[serde(default = "default_ixfr_history_bytes")]
    pub ixfr_history_bytes: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            notify: Vec::new(),
            ixfr_history: default_ixfr_history(),
            ixfr_history_bytes: default_ixfr_history_bytes(),
        }
    }
}

fn default_ixfr_history() -> usize {
    100
}
fn default_ixfr_history_bytes() -> usize {
    64 << 20
}

/// One `[transfer] allow` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowConfig {
    /// The network requests may come from (`10.0.0.0/8`, or one address).
    pub from: Option<String>,
    /// The key they must be signed with; none: any request from there.
    #[serde(default)]
    pub key: Option<String>,
}

/// One `[transfer] notify` target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `IP` or `IP:PORT` (53 when left out).
    pub to: String,
    /// The key to sign the NOTIFY with.
    #[serde(default)]
    pub key: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (under systemd: a priority prefix and no time).
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// `[naming]`: the preference list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamingConfig {
    /// Rules in order: `tag:KEY`, `security-group` or a template.
    #[serde(default = "default_prefer")]
    pub prefer: Vec<String>,
    /// Rules of extra names, each answering with the instance's addresses.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Rules of group names, each answering with every member's addresses.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Default for NamingConfig {
    fn default() -> Self {
        Self {
            prefer: default_prefer(),
            aliases: Vec::new(),
            groups: Vec::new(),
        }
    }
}

/// `[source.*]`: exactly one inventory source.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SourceConfig {
    /// `[source.file]`: a describe-instances JSON file.
    File(FileSourceConfig),
    /// `[source.ec2]`: the EC2 API.
    Ec2(Ec2SourceConfig),
}

/// `[source.ec2]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Ec2SourceConfig {
    /// Regions to list; empty means the SDK's region chain.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Endpoint for every AWS call (tests, private endpoints).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Extra DescribeInstances filters, e.g. `"tag:Env" = ["prod"]`.
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<String>>,
    /// Accounts to list (`[[source.ec2.accounts]]`); empty means the ambient credentials.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// `MaxResults` per DescribeInstances page, 5 to 1000.
    #[serde(default)]
    pub page_size: Option<i32>,
    /// Seconds one attempt of one API call may take.
    #[serde(default)]
    pub call_timeout_secs: Option<u64>,
    /// Attempts per API call, retries included.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// EC2 change events from an SQS queue (`[source.ec2.events]`).
    #[serde(default)]
    pub events: Option<EventsConfig>,
}

/// `[source.ec2.events]`: the SQS queue that EventBridge rules feed with
/// EC2 state and tag change events.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`.
    pub queue_url: String,
    /// Seconds between full passes while the queue answers; default 900,
    /// or `interval_secs` if that is longer.
    #[serde(default)]
    pub resync_interval_secs: Option<u64>,
}

/// `[[source.ec2.accounts]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The role to assume; omitted means the ambient credentials.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// External id required by the role's trust policy, if any.
    #[serde(default)]
    pub external_id: Option<String>,
    /// STS session name (visible in CloudTrail).
    #[serde(default)]
    pub session_name: Option<String>,
}

/// `[source]` as written: at most one of its tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceTables {
    file: Option<FileSourceConfig>,
    ec2: Option<Ec2SourceConfig>,
}

/// Reads `[source]`, saying in words that it takes one source (serde's
/// own message for an enum with two keys was "wanted exactly 1 element,
/// more than 1 element").
fn one_source<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SourceConfig>, D::Error> {
    let tables = SourceTables::deserialize(d)?;
    match (tables.file, tables.ec2) {
        (Some(_), Some(_)) => Err(serde::de::Error::custom(
            "choose one of [source.ec2] and [source.file], not both",
        )),
        (Some(file), None) => Ok(Some(SourceConfig::File(file))),
        (None, Some(ec2)) => Ok(Some(SourceConfig::Ec2(ec2))),
        (None, None) => Ok(None),
    }
}

/// `[source.file]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Path of the JSON printed by `aws ec2 describe-instances`.
    pub path: PathBuf,
}

/// `[forward]`: how names outside the zone are forwarded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// How long to wait for one upstream before trying the next, in milliseconds.
    #[serde(default = "default_forward_timeout_ms")]
    pub timeout_ms: u64,
    /// Forwarded queries waiting for an upstream at once; more get SERVFAIL.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Answers kept in the cache; 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Longest time an answer stays cached, in seconds, whatever its TTL.
    #[serde(default = "default_max_cache_ttl")]
    pub max_cache_ttl: u32,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_forward_timeout_ms(),
            max_in_flight: default_max_in_flight(),
            cache_entries: default_cache_entries(),
            max_cache_ttl: default_max_cache_ttl(),
        }
    }
}

/// `[tcp]`: limits on DNS over TCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Connections served at once per listener; more are closed at accept.
    #[serde(default = "default_tcp_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection may stay idle (no complete query) before it is closed.
    #[serde(default = "default_tcp_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Connections one source address may hold at once per listener; more
    /// are closed at accept, so that one client cannot take every slot.
    #[serde(default = "default_tcp_max_connections_per_source")]
    pub max_connections_per_source: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_connections: default_tcp_max_connections(),
            idle_timeout_secs: default_tcp_idle_timeout_secs(),
            max_connections_per_source: default_tcp_max_connections_per_source(),
        }
    }
}

fn default_zone() -> String {
    "fleet.internal.".to_string()
}
fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 53))]
}
fn default_interval() -> u64 {
    60
}
fn default_max_removed_fraction() -> f64 {
    0.5
}
fn default_max_backoff() -> u64 {
    300
}
/// The state directory when the config names none: systemd's
/// `StateDirectory=` (the first, if several), else the FHS place.
fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_string_lossy()
                .split(':')
                .next()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/fleetdns"))
}
fn default_ttl() -> u32 {
    30
}
fn default_negative_ttl() -> u32 {
    10
}
fn default_nameserver() -> String {
    "localhost.".to_string()
}
fn default_prefer() -> Vec<String> {
    vec!["tag:Name".to_string(), "security-group".to_string()]
}
fn default_forward_timeout_ms() -> u64 {
    2000
}
fn default_max_in_flight() -> usize {
    256
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_max_cache_ttl() -> u32 {
    3600
}
fn default_tcp_max_connections() -> usize {
    128
}
fn default_tcp_max_connections_per_source() -> usize {
    32
}
fn default_tcp_idle_timeout_secs() -> u64 {
    10
}

impl Default for Config {
    fn default() -> Self {
        // An empty document takes every default, so there is one source of truth.
        read_config("", "<defaults>").unwrap_or_else(|e| unreachable!("defaults parse: {e}"))
    }
}

/// Parses a configuration document; `origin` names it in errors.
pub fn read_config(text: &str, origin: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_string(),
        message: one_line_toml_error(&e, text),
    })
}

/// Reads and parses a configuration file.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    read_config(&text, &path.display().to_string())
}

/// The config file read when neither `--config` nor `FLEETDNS_CONFIG`
/// names one, if it exists (the Debian package installs it).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleetdns/fleetdns.toml";

/// The environment variable that names the config file when `--config`
/// does not.
pub const CONFIG_ENV: &str = "FLEETDNS_CONFIG";

/// Where the configuration comes from, in the order it is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// `--config FILE`.
    Flag(PathBuf),
    /// `FLEETDNS_CONFIG=FILE` (set and not empty).
    Environment(PathBuf),
    /// [`DEFAULT_CONFIG_PATH`], which exists.
    DefaultPath(PathBuf),
    /// No file: every option at its default.
    BuiltIn,
}

impl ConfigOrigin {
    /// `--config` if given, else `FLEETDNS_CONFIG`, else the default path
    /// if a file is there, else the built-in defaults. `env` is the
    /// variable's value and `default` the default path (parameters, so that
    /// tests need not touch the process's environment or `/etc`).
    pub fn resolve(flag: Option<&Path>, env: Option<std::ffi::OsString>, default: &Path) -> Self {
        if let Some(path) = flag {
            return ConfigOrigin::Flag(path.to_path_buf());
        }
        if let Some(path) = env.filter(|v| !v.is_empty()) {
            return ConfigOrigin::Environment(PathBuf::from(path));
        }
        if default.exists() {
            return ConfigOrigin::DefaultPath(default.to_path_buf());
        }
        ConfigOrigin::BuiltIn
    }

    /// [`ConfigOrigin::resolve`] from this process's environment and
    /// [`DEFAULT_CONFIG_PATH`].
    pub fn from_env(flag: Option<&Path>) -> Self {
        Self::resolve(
            flag,
            std::env::var_os(CONFIG_ENV),
            Path::new(DEFAULT_CONFIG_PATH),
        )
    }

    /// Reads and parses the file, or gives the defaults.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigOrigin::Flag(path)
            | ConfigOrigin::Environment(path)
            | ConfigOrigin::DefaultPath(path) => load_config(path),
            ConfigOrigin::BuiltIn => Ok(Config::default()),
        }
    }
}

impl std::fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigOrigin::Flag(p) => write!(f, "{} (--config)", p.display()),
            ConfigOrigin::Environment(p) => write!(f, "{} ({CONFIG_ENV})", p.display()),
            ConfigOrigin::DefaultPath(p) => write!(f, "{} (the default path)", p.display()),
            ConfigOrigin::BuiltIn => {
                write!(f, "none (no {DEFAULT_CONFIG_PATH}; built-in defaults)")
            }
        }
    }
}

/// toml's errors span several lines with a snippet; logs and exit messages
/// want one line with the position.
fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Command-line flags that override the file; applied in one place.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`, replaces `listen` when given.
    pub listen: Vec<SocketAddr>,
    /// `--zone`.
    pub zone: Option<String>,
    /// `--source`: `file:PATH` or `ec2`.
    pub source: Option<String>,
    /// `--upstream`, replaces `upstreams` when given.
    pub upstreams: Vec<String>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
}

/// The zone's own records' parameters.
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    /// The apex, lowercase and fully qualified.
    pub zone: Name,
    /// TTL of positive answers.
    pub ttl: u32,
    /// SOA MINIMUM: how long negative answers may be cached.
    pub negative_ttl: u32,
    /// NS target and SOA MNAME.
    pub nameserver: Name,
    /// SOA RNAME.
    pub hostmaster: Name,
    /// Reverse zones served with the same SOA fields and serial.
    pub reverse_zones: Vec<ReverseZone>,
}

/// A reverse zone: its apex and the network it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseZone {
    /// The apex, lowercase, fully qualified (`20.10.in-addr.arpa.`).
    pub apex: Name,
    /// The addresses it holds (10.20.0.0/16).
    pub network: Cidr,
}

/// Forwarding, validated.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// Upstream resolvers in order of preference; empty means REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// Wait per upstream.
    pub timeout: Duration,
    /// Forwarded queries outstanding at once.
    pub max_in_flight: usize,
    /// Cache size in answers.
    pub cache_entries: usize,
    /// Cap on cached TTLs.
    pub max_cache_ttl: u32,
}

/// TCP limits, validated.
#[derive(Debug, Clone)]
pub struct TcpSettings {
    /// Connections at once per listener.
    pub max_connections: usize,
    /// Idle time before a connection is closed.
    pub idle_timeout: Duration,
    /// Connections at once per source address and listener.
    pub max_connections_per_source: usize,
}

impl From<&TcpConfig> for TcpSettings {
    fn from(c: &TcpConfig) -> Self {
        TcpSettings {
            max_connections: c.max_connections,
            max_connections_per_source: c.max_connections_per_source,
            idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        }
    }
}

impl Default for TcpSettings {
    /// The defaults of `[tcp]`.
    fn default() -> Self {
        TcpSettings::from(&TcpConfig::default())
    }
}

/// Transfers, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSettings {
    /// Every configured key.
    pub keys: Vec<Arc<Key>>,
    /// Who may transfer (empty: nobody).
    pub allow: Vec<Allow>,
    /// NOTIFY targets.
    pub notify: Vec<NotifyTarget>,
    /// Most zone versions kept in the IXFR journal.
    pub ixfr_history: usize,
    /// Most bytes the journal may take.
    pub ixfr_history_bytes: usize,
}

/// One NOTIFY target, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Where to send it.
    pub to: SocketAddr,
    /// What to sign it with.
    pub key: Option<Arc<Key>>,
}

/// Which source to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A describe-instances JSON file.
    File(PathBuf),
    /// The EC2 API.
    Ec2(Ec2Settings),
}

/// Everything validated and ready to build objects from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The zone's parameters.
    pub zone: ZoneSettings,
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// The naming policy.
    pub naming: Naming,
    /// The inventory source.
    pub source: SourceSpec,
    /// Refresh period.
    pub interval: Duration,
    /// Longest wait after failures or throttling.
    pub max_backoff: Duration,
    /// Data older than this makes `/readyz` unready.
    pub max_stale: Duration,
    /// Removals beyond this fraction of a unit wait for a second pass.
    pub max_removed_fraction: f64,
    /// Where the inventory is persisted.
    pub state_dir: PathBuf,
    /// Where metrics and health are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Forwarding.
    pub forward: ForwardSettings,
    /// TCP limits.
    pub tcp: TcpSettings,
    /// Zone transfers, TSIG keys and NOTIFY.
    pub transfer: TransferSettings,
    /// Who may ask what.
    pub access: QueryAccess,
    /// Response rate limiting, if configured.
    pub rrl: Option<RrlSettings>,
}

impl Config {
    /// Applies `overrides` and validates everything, naming the option at fault.
    pub fn validate(mut self, overrides: &Overrides) -> Result<Settings, ConfigError> {
        if !overrides.listen.is_empty() {
            self.listen = overrides.listen.clone();
        }
        if let Some(zone) = &overrides.zone {
            self.zone = zone.clone();
        }
        if !overrides.upstreams.is_empty() {
            self.upstreams = overrides.upstreams.clone();
        }
        if let Some(dir) = &overrides.state_dir {
            self.state_dir = Some(dir.clone());
        }
        if let Some(addr) = overrides.metrics_listen {
            self.metrics_listen = Some(addr);
        }
        if let Some(source) = &overrides.source {
            let flag = parse_source_flag(source)?;
            // `--source ec2` keeps the file's [source.ec2] settings if it has them.
            let keep = matches!(
                (&flag, &self.source),
                (SourceConfig::Ec2(_), Some(SourceConfig::Ec2(_)))
            );
            if !keep {
                self.source = Some(flag);
            }
        }

        let zone = parse_zone(&self.zone).map_err(|m| invalid("zone", m))?;
        if let Some(hazard) = zone_hazard(&zone).filter(|_| !self.allow_unsafe_zone) {
            return Err(invalid(
                "zone",
                format!(
                    "{}: {hazard}. Choose a zone of your own such as fleet.internal, or set allow_unsafe_zone = true",
                    zone.to_ascii()
                ),
            ));
        }
        let zone_text = zone.to_ascii();
        let nameserver = parse_name(&self.nameserver).map_err(|m| invalid("nameserver", m))?;
        let hostmaster = match &self.hostmaster {
            Some(h) => parse_name(h).map_err(|m| invalid("hostmaster", m))?,
            None => Name::from_ascii("hostmaster")
                .and_then(|h| h.append_domain(&zone))
                .map_err(|e| invalid("hostmaster", e.to_string()))?,
        };
        if self.listen.is_empty() {
            return Err(invalid("listen", "needs at least one address"));
        }
        // Port 0 is a new port each time: never a clash.
        for (i, address) in self.listen.iter().enumerate() {
            if address.port() != 0 && self.listen[..i].contains(address) {
                return Err(invalid("listen", format!("{address} is listed twice")));
            }
        }
        if let Some(metrics) = self.metrics_listen.filter(|m| m.port() != 0) {
            if let Some(dns) = self
                .listen
                .iter()
                .find(|l| same_endpoint(**l, metrics) || same_endpoint(metrics, **l))
            {
                return Err(invalid(
                    "metrics_listen",
                    format!("{metrics} is also a DNS listen address ({dns}): DNS over TCP and HTTP cannot share a port"),
                ));
            }
        }
        if !(self.max_removed_fraction > 0.0 && self.max_removed_fraction <= 1.0) {
            return Err(invalid(
                "max_removed_fraction",
                format!(
                    "{} is out of range: above 0, at most 1 (1 turns the guard off)",
                    self.max_removed_fraction
                ),
            ));
        }
        if self.interval_secs == 0 {
            return Err(invalid("interval_secs", "must be at least 1"));
        }
        let max_stale_secs = self
            .max_stale_secs
            .unwrap_or(self.interval_secs.saturating_mul(3));
        if max_stale_secs < self.interval_secs {
            return Err(invalid(
                "max_stale_secs",
                format!(
                    "{max_stale_secs} is below interval_secs ({}): data would turn stale between two refreshes, and /readyz unready every time",
                    self.interval_secs
                ),
            ));
        }
        if self.max_backoff_secs == 0 {
            return Err(invalid("max_backoff_secs", "must be at least 1"));
        }
        let state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        if state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "must not be empty"));
        }

        let mut rules = Vec::with_capacity(self.naming.prefer.len());
        for text in &self.naming.prefer {
            rules.push(
                text.parse::<Rule>()
                    .map_err(|m| invalid("naming.prefer", m))?,
            );
        }
        if rules.is_empty() {
            // Not an error: every instance still has its instance-id name.
            tracing::info!("naming.prefer is empty: instances are named by instance id only");
        }
        let extra = |option: &'static str, texts: &[String]| {
            texts
                .iter()
                .map(|text| text.parse::<Rule>().map_err(|m| invalid(option, m)))
                .collect::<Result<Vec<_>, _>>()
        };
        let aliases = extra("naming.aliases", &self.naming.aliases)?;
        let groups = extra("naming.groups", &self.naming.groups)?;
        // Read with the rest of the configuration, so that a file that
        // fails leaves a reload with everything as it was.
        let statics = match &self.static_records {
            None => Arc::default(),
            Some(path) => Arc::new(
                crate::statics::load(path, &zone, self.ttl)
                    .map_err(|m| invalid("static_records", m))?,
            ),
        };

        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        for text in &self.upstreams {
            let addr = parse_upstream(text).map_err(|m| invalid("upstreams", m))?;
            if self.listen.iter().any(|l| same_endpoint(*l, addr)) {
                return Err(invalid(
                    "upstreams",
                    format!("{addr} is one of fleetdns's own listen addresses (a forwarding loop)"),
                ));
            }
            upstreams.push(addr);
        }
        if self.forward.timeout_ms == 0 {
            return Err(invalid("forward.timeout_ms", "must be at least 1"));
        }
        if self.forward.max_in_flight == 0 {
            return Err(invalid("forward.max_in_flight", "must be at least 1"));
        }
        if self.tcp.max_connections_per_source == 0 {
            return Err(invalid(
                "tcp.max_connections_per_source",
                "must be at least 1",
            ));
        }
        if self.tcp.max_connections == 0 {
            return Err(invalid("tcp.max_connections", "must be at least 1"));
        }
        if self.tcp.idle_timeout_secs == 0 {
            return Err(invalid("tcp.idle_timeout_secs", "must be at least 1"));
        }

        let transfer = validate_transfer(&self.tsig_keys, &self.transfer)?;
        let networks = |option: &str, list: &Option<Vec<String>>, default: Vec<Cidr>| match list {
            None => Ok(default),
            Some(list) if list.is_empty() => Err(invalid(
                option,
                "an empty list would refuse everyone; leave the option out for the default",
            )),
            Some(list) => list
                .iter()
                .map(|c| Cidr::parse(c).map_err(|m| invalid(option, m)))
                .collect(),
        };
        let access = QueryAccess {
            allow_query: networks(
                "access.allow_query",
                &self.access.allow_query,
                QueryAccess::default_query(),
            )?,
            allow_recursion: networks(
                "access.allow_recursion",
                &self.access.allow_recursion,
                QueryAccess::default_recursion(),
            )?,
        };

        let source = match self.source {
            Some(SourceConfig::File(f)) => SourceSpec::File(f.path),
            Some(SourceConfig::Ec2(e)) => SourceSpec::Ec2(validate_ec2(e, self.interval_secs)?),
            // The EC2 API is what fleetdns is for.
            None => SourceSpec::Ec2(validate_ec2(
                Ec2SourceConfig::default(),
                self.interval_secs,
            )?),
        };

        Ok(Settings {
            naming: Naming::new(rules, &zone_text)
                .with_aliases(aliases)
                .with_groups(groups)
                .with_statics(statics),
            zone: ZoneSettings {
                reverse_zones: validate_reverse_zones(&self.reverse_zones)?,
                zone,
                ttl: self.ttl,
                negative_ttl: self.negative_ttl,
                nameserver,
                hostmaster,
            },
            listen: self.listen,
            source,
            interval: Duration::from_secs(self.interval_secs),
            max_backoff: Duration::from_secs(self.max_backoff_secs),
            max_stale: Duration::from_secs(max_stale_secs),
            max_removed_fraction: self.max_removed_fraction,
            state_dir,
            metrics_listen: self.metrics_listen,
            forward: ForwardSettings {
                upstreams,
                timeout: Duration::from_millis(self.forward.timeout_ms),
                max_in_flight: self.forward.max_in_flight,
                cache_entries: self.forward.cache_entries,
                max_cache_ttl: self.forward.max_cache_ttl,
            },
            tcp: TcpSettings::from(&self.tcp),
            transfer,
            access,
            rrl: self.rrl.as_ref().map(validate_rrl).transpose()?,
        })
    }
}

/// Reads `reverse_zones`: each a name under `in-addr.arpa.` of one to four
/// octets or under `ip6.arpa.` of one to 32 nibbles, none inside another.
fn validate_reverse_zones(texts: &[String]) -> Result<Vec<ReverseZone>, ConfigError> {
    let mut zones: Vec<ReverseZone> = Vec::with_capacity(texts.len());
    for text in texts {
        let apex = parse_name(text)
            .map_err(|m| invalid("reverse_zones", m))?
            .to_lowercase();
        let network = crate::dns::handler::reverse_network(&apex)
            .filter(|n| n.prefix > 0)
            .ok_or_else(|| {
                invalid(
                    "reverse_zones",
                    format!(
                        "{text:?} is not a reverse zone: expected octets under in-addr.arpa (\"20.10.in-addr.arpa\" for 10.20.0.0/16) or nibbles under ip6.arpa"
                    ),
                )
            })?;
        if let Some(other) = zones
            .iter()
            .find(|z| z.network.contains(network.address) || network.contains(z.network.address))
        {
            return Err(invalid(
                "reverse_zones",
                format!("{} overlaps {}", apex.to_ascii(), other.apex.to_ascii()),
            ));
        }
        zones.push(ReverseZone { apex, network });
    }
    Ok(zones)
}

/// Reads `[[tsig_keys]]` and `[transfer]`.
fn validate_transfer(
    keys: &[TsigKeyConfig],
    transfer: &TransferConfig,
) -> Result<TransferSettings, ConfigError> {
    let mut ring: Vec<Arc<Key>> = Vec::with_capacity(keys.len());
    for k in keys {
        let option = format!("tsig_keys ({:?})", k.name);
        let algorithm = Algorithm::from_name(&k.algorithm).ok_or_else(|| {
            invalid(
                &format!("{option}.algorithm"),
                format!(
                    "{:?}: expected hmac-sha256, hmac-sha384 or hmac-sha512",
                    k.algorithm
                ),
            )
        })?;
        let secret =
            match (&k.secret, &k.secret_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &option,
                        "give either secret or secret_file, not both",
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        &option,
                        "needs secret_file (a file holding the base64 secret) or secret",
                    ))
                }
                (Some(text), None) => Secret::from_base64(text)
                    .map_err(|m| invalid(&format!("{option}.secret"), m))?,
                (None, Some(path)) => read_secret_file(path)
                    .map_err(|m| invalid(&format!("{option}.secret_file"), m))?,
            };
        let key = Key::new(&k.name, algorithm, secret)
            .map_err(|m| invalid(&format!("{option}.name"), m))?;
        if ring.iter().any(|other| other.name == key.name) {
            return Err(invalid(&option, "a key of this name is defined twice"));
        }
        ring.push(Arc::new(key));
    }
    let find_key = |option: &str, name: &Option<String>| -> Result<Option<Arc<Key>>, ConfigError> {
        let Some(name) = name else { return Ok(None) };
        let wanted = Key::new(name, Algorithm::HmacSha256, Secret::new(vec![0]))
            .map_err(|m| invalid(option, m))?;
        ring.iter()
            .find(|k| k.name == wanted.name)
            .cloned()
            .map(Some)
            .ok_or_else(|| invalid(option, format!("no [[tsig_keys]] entry is named {name:?}")))
    };
    let mut allow = Vec::with_capacity(transfer.allow.len());
    for entry in &transfer.allow {
        let from = entry.from.as_deref().ok_or_else(|| {
            invalid(
                "transfer.allow",
                "every entry needs `from`, the network transfers may come from (e.g. \"10.0.0.0/8\")",
            )
        })?;
        allow.push(Allow {
            from: Cidr::parse(from).map_err(|m| invalid("transfer.allow.from", m))?,
            key: find_key("transfer.allow.key", &entry.key)?,
        });
    }
    let mut notify = Vec::with_capacity(transfer.notify.len());
    for target in &transfer.notify {
        notify.push(NotifyTarget {
            to: parse_upstream(&target.to).map_err(|m| invalid("transfer.notify.to", m))?,
            key: find_key("transfer.notify.key", &target.key)?,
        });
    }
    if transfer.ixfr_history_bytes == 0 && transfer.ixfr_history > 0 {
        return Err(invalid(
            "transfer.ixfr_history_bytes",
            "must be above 0 (or set ixfr_history = 0 to keep no history)",
        ));
    }
    Ok(TransferSettings {
        keys: ring,
        allow,
        notify,
        ixfr_history: transfer.ixfr_history,
        ixfr_history_bytes: transfer.ixfr_history_bytes,
    })
}

/// Reads a base64 secret from `path`, which nobody but its owner may read.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {:o}); chmod 600 it, owned by the user fleetdns runs as",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Secret::from_base64(&text).map_err(|m| format!("{}: {m}", path.display()))
}

/// `file:PATH` -> a file source; `ec2` -> the EC2 API with default settings.
pub fn parse_source_flag(text: &str) -> Result<SourceConfig, ConfigError> {
    if text == "ec2" {
        return Ok(SourceConfig::Ec2(Ec2SourceConfig::default()));
    }
    match text.split_once(':') {
        Some(("file", path)) if !path.is_empty() => Ok(SourceConfig::File(FileSourceConfig {
            path: PathBuf::from(path),
        })),
        _ => Err(invalid(
            "--source",
            format!("{text:?}: expected file:PATH or ec2"),
        )),
    }
}

/// Checks `[source.ec2]` and fills in its defaults.
fn validate_ec2(c: Ec2SourceConfig, interval_secs: u64) -> Result<Ec2Settings, ConfigError> {
    for region in &c.regions {
        region_shape(region).map_err(|m| invalid("source.ec2.regions", m))?;
    }
    let mut regions = c.regions;
    regions.sort();
    regions.dedup();
    if let Some(url) = &c.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "source.ec2.endpoint_url",
                format!("{url:?}: expected an http:// or https:// URL"),
            ));
        }
    }
    for (name, values) in &c.filters {
        if name.is_empty() || values.is_empty() {
            return Err(invalid(
                "source.ec2.filters",
                format!("filter {name:?} needs a name and at least one value"),
            ));
        }
        if name == "instance-state-name" {
            // ANDed with fleetdns's own running filter, another state
            // matches nothing, and running alone adds nothing.
            return Err(invalid(
                "source.ec2.filters",
                "\"instance-state-name\" is always \"running\" (only running instances have names); remove this filter",
            ));
        }
    }
    let page_size = c.page_size.unwrap_or(1000);
    if !(5..=1000).contains(&page_size) {
        return Err(invalid(
            "source.ec2.page_size",
            "must be from 5 to 1000 (the API's limits)",
        ));
    }
    let call_timeout_secs = c.call_timeout_secs.unwrap_or(20);
    if call_timeout_secs == 0 {
        return Err(invalid(
            "source.ec2.call_timeout_secs",
            "must be at least 1",
        ));
    }
    let max_attempts = c.max_attempts.unwrap_or(5);
    if max_attempts == 0 {
        return Err(invalid("source.ec2.max_attempts", "must be at least 1"));
    }
    let mut accounts = Vec::with_capacity(c.accounts.len());
    for a in c.accounts {
        if let Some(arn) = &a.role_arn {
            let parts: Vec<&str> = arn.split(':').collect();
            let ok = parts.len() == 6
                && parts[0] == "arn"
                && parts[2] == "iam"
                && crate::inventory::ec2_settings::is_account_id(parts[4])
                && parts[5].starts_with("role/");
            if !ok {
                return Err(invalid(
                    "source.ec2.accounts.role_arn",
                    format!("{arn:?} is not a role ARN like \"arn:aws:iam::123456789012:role/fleetdns\""),
                ));
            }
        }
        accounts.push(Account {
            role_arn: a.role_arn,
            external_id: a.external_id,
            session_name: a.session_name.unwrap_or_else(|| "fleetdns".to_string()),
        });
    }
    let events = c
        .events
        .as_ref()
        .map(|e| validate_events(e, &regions, interval_secs))
        .transpose()?;
    Ok(Ec2Settings {
        regions,
        endpoint_url: c.endpoint_url,
        filters: c.filters,
        accounts,
        page_size,
        call_timeout: Duration::from_secs(call_timeout_secs),
        max_attempts,
        events,
    })
}

/// Full passes while events flow, by default: a safety net for a lost
/// event or a rule that misses one, at a fifteenth of the API calls of
/// polling every minute.
const DEFAULT_RESYNC_SECS: u64 = 900;

/// Checks `[source.ec2.events]`: an http(s) URL whose path is
/// `/ACCOUNT/NAME`; the region comes from an AWS host
/// (`sqs.REGION.amazonaws.com`), else from `regions`; a resync interval
/// no shorter than `interval_secs` (events would then cost more full
/// passes than polling).
fn validate_events(
    c: &EventsConfig,
    regions: &[String],
    interval_secs: u64,
) -> Result<crate::inventory::ec2_settings::EventQueueSettings, ConfigError> {
    let resync_secs = match c.resync_interval_secs {
        None => DEFAULT_RESYNC_SECS.max(interval_secs),
        Some(secs) if secs < interval_secs => {
            return Err(invalid(
                "source.ec2.events.resync_interval_secs",
                format!("{secs} is below interval_secs ({interval_secs}): with events, full passes would come more often than without"),
            ))
        }
        Some(secs) if secs > 7 * 86_400 => {
            return Err(invalid(
                "source.ec2.events.resync_interval_secs",
                format!("{secs} is over a week; a lost event would stay wrong that long"),
            ))
        }
        Some(secs) => secs,
    };
    let option = "source.ec2.events.queue_url";
    let url = c.queue_url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            invalid(
                option,
                format!("{url:?}: expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"),
            )
        })?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let parts: Vec<&str> = path.split('/').collect();
    let path_ok = parts.len() == 2
        && crate::inventory::ec2_settings::is_account_id(parts[0])
        && !parts[1].is_empty()
        && parts[1].len() <= 80
        && parts[1]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if host.is_empty() || !path_ok {
        return Err(invalid(
            option,
            format!("{url:?}: expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (a 12-digit account and a queue name)"),
        ));
    }
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split_once('.'))
        .map(|(region, _)| region.to_string())
        .filter(|r| region_shape(r).is_ok())
        .or_else(|| regions.first().cloned());
    Ok(crate::inventory::ec2_settings::EventQueueSettings {
        queue_url: url.to_string(),
        region,
        resync_interval: Duration::from_secs(resync_secs),
    })
}

/// A zone must be a valid, non-root name of LDH labels; it is kept lowercase.
fn parse_zone(text: &str) -> Result<Name, String> {
    let name = parse_name(text)?;
    if name.is_root() {
        return Err("the root zone cannot be served".to_string());
    }
    for label in name.iter() {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with(b"-")
            && !label.ends_with(b"-")
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        if !ok {
            return Err(format!(
                "{text:?}: labels must be letters, digits and inner dashes"
            ));
        }
    }
    Ok(name)
}

/// Why serving `zone` (lowercase, fully qualified) would break name
/// resolution on the hosts that use fleetdns, if it would.
///
/// fleetdns answers NXDOMAIN for every name in its zone that the fleet
/// does not have, and glibc's resolver does not try the next `nameserver`
/// after an NXDOMAIN: a zone that holds names someone else serves makes
/// them vanish for every host pointed at fleetdns.
pub fn zone_hazard(zone: &Name) -> Option<String> {
    let text = zone.to_ascii();
    let labels: Vec<String> = zone
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let last = labels.last().map(String::as_str).unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return Some("an address, not a zone: no top-level domain is numeric".to_string());
    }
    let aws = ["ec2.internal.", "compute.internal."];
    if aws
        .iter()
        .any(|a| *a == text || text.ends_with(&format!(".{a}")))
    {
        return Some(format!(
            "AWS's own instance names (ip-10-0-0-1.{}) live there, and would all get NXDOMAIN",
            text.trim_end_matches('.')
        ));
    }
    if aws.iter().any(|a| a.ends_with(&format!(".{text}"))) {
        return Some(
            "it holds AWS's own instance names (ip-10-0-0-1.ec2.internal, *.compute.internal), which would all get NXDOMAIN"
                .to_string(),
        );
    }
    if labels.len() == 1 {
        return Some(format!(
            "a whole top-level domain: every name under .{last} would get NXDOMAIN from fleetdns"
        ));
    }
    if last == "arpa" {
        return Some(
            "reverse zones are not served as a zone (fleetdns answers PTR queries for the fleet's own addresses by itself)"
                .to_string(),
        );
    }
    None
}

/// A fully qualified, lowercase name from presentation text.
///
/// The text is checked here first, so that errors say what is wrong in
/// words (and on one line: hickory's messages quote the offending
/// character raw, a newline included).
fn parse_name(text: &str) -> Result<Name, String> {
    if text.trim().is_empty() {
        return Err("empty name".to_string());
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{text:?}: {c:?} is not allowed in a name (letters, digits, '-' and '_', with '.' between labels)"
        ));
    }
    if text != "." {
        let labels = text.strip_suffix('.').unwrap_or(text);
        if labels.split('.').any(str::is_empty) {
            return Err(format!(
                "{text:?}: an empty label (a leading dot, or two in a row)"
            ));
        }
        if let Some(label) = labels.split('.').find(|l| l.len() > 63) {
            return Err(format!(
                "{text:?}: the label {:?}... is {} characters long; at most 63 are allowed",
                &label[..16],
                label.len()
            ));
        }
        // 255 octets in wire form: one length byte per label and the root.
        if labels.len() + 2 > 255 {
            return Err(format!(
                "{text:?}: {} characters long; a name has at most 253",
                labels.len()
            ));
        }
    }
    let mut name = Name::from_ascii(text).map_err(|_| format!("{text:?}: not a valid name"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!("{text:?}: expected IP or IP:PORT"))
}

/// Whether an upstream would send queries back to one of our listeners.
/// Whether `region` has the shape of an AWS region name (`us-east-1`,
/// `us-gov-west-1`, `eu-central-2`), with the likely fix when it does not.
/// A shape, not a list: a list would refuse the next new region.
fn region_shape(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let number = parts.last().copied().unwrap_or("");
    let letters = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    let ok = (3..=5).contains(&parts.len())
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| letters(p))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit());
    if ok {
        return Ok(());
    }
    // An availability zone: us-east-1a.
    if let Some(zone_of) = region
        .strip_suffix(|c: char| c.is_ascii_lowercase())
        .filter(|r| region_shape(r).is_ok())
    {
        return Err(format!(
            "{region:?} is an availability zone; its region is {zone_of:?}"
        ));
    }
    Err(format!(
        "{region:?} is not a region name like \"us-east-1\" (`aws ec2 describe-regions` lists them)"
    ))
}

fn same_endpoint(listen: SocketAddr, upstream: SocketAddr) -> bool {
    listen.port() == upstream.port()
        && (listen.ip() == upstream.ip()
            || (listen.ip().is_unspecified() && upstream.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_source(extra: &str) -> String {
        format!("{extra}\n[source.file]\npath = \"fleet.json\"\n")
    }

    #[test]
    fn empty_file_takes_every_default() {
        let c = read_config("", "t").unwrap();
        assert_eq!(c.zone, "fleet.internal.");
        assert_eq!(c.listen, [SocketAddr::from(([127, 0, 0, 1], 53))]);
        assert_eq!(c.naming.prefer, ["tag:Name", "security-group"]);
        assert_eq!(c.ttl, 30);
        assert!(c.source.is_none());
    }

    #[test]
    fn an_event_queue_url_gives_its_region_or_an_error_naming_the_option() {
        let queue = |url: &str, regions: &str| {
            read_config(
                &format!("[source.ec2]\nregions = [{regions}]\n[source.ec2.events]\nqueue_url = \"{url}\"\n"),
                "t",
            )
            .unwrap()
            .validate(&Overrides::default())
            .map(|s| match s.source {
                SourceSpec::Ec2(e) => e.events.and_then(|q| q.region),
                SourceSpec::File(_) => None,
            })
        };
        let aws = "https://sqs.eu-west-1.amazonaws.com/123456789012/fleetdns-events";
        assert_eq!(
            queue(aws, "\"us-east-1\"").unwrap().as_deref(),
            Some("eu-west-1")
        );
        let own = "http://127.0.0.1:5000/123456789012/q";
        assert_eq!(
            queue(own, "\"us-east-2\"").unwrap().as_deref(),
            Some("us-east-2")
        );
        for bad in [
            "sqs.us-east-1.amazonaws.com/123456789012/q",
            "https://sqs.us-east-1.amazonaws.com/q",
            "https://sqs.us-east-1.amazonaws.com/12345/q",
            "https://sqs.us-east-1.amazonaws.com/123456789012/a/b",
            "https://sqs.us-east-1.amazonaws.com/123456789012/bad name",
        ] {
            let error = queue(bad, "").unwrap_err().to_string();
            assert!(
                error.contains("source.ec2.events.queue_url"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_resync_interval_defaults_to_900_s_or_the_interval_and_is_never_below_it() {
        let resync = |top: &str, events: &str| {
            read_config(
                &format!("{top}\n[source.ec2]\nregions = [\"us-east-1\"]\n[source.ec2.events]\nqueue_url = \"http://127.0.0.1:1/123456789012/q\"\n{events}"),
                "t",
            )
            .unwrap()
            .validate(&Overrides::default())
            .map(|s| match s.source {
                SourceSpec::Ec2(e) => e.events.map(|q| q.resync_interval.as_secs()),
                SourceSpec::File(_) => None,
            })
        };
        assert_eq!(resync("", "").unwrap(), Some(900));
        assert_eq!(resync("interval_secs = 3600", "").unwrap(), Some(3600));
        assert_eq!(resync("", "resync_interval_secs = 120").unwrap(), Some(120));
        for (top, events, says) in [
            ("", "resync_interval_secs = 30", "below interval_secs (60)"),
            ("", "resync_interval_secs = 1000000", "over a week"),
        ] {
            let error = resync(top, events).unwrap_err().to_string();
            assert!(
                error.contains("source.ec2.events.resync_interval_secs") && error.contains(says),
                "{events}: {error}"
            );
        }
    }

    #[test]
    fn full_example_parses_and_validates() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/fleetdns.example.toml"
        ))
        .unwrap();
        let c = read_config(&text, "example").unwrap();
        let s = c.validate(&Overrides::default()).unwrap();
        assert_eq!(s.zone.zone.to_ascii(), "fleet.internal.");
        assert!(matches!(s.source, SourceSpec::Ec2(_)));

        // Every option the example shows commented out is a real option:
        // uncommented (but for the alternative source table), it still parses.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.starts_with('#') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace("[source.file]\npath = \"/etc/fleetdns/fleet.json\"", "")
            // the credential file exists only under the systemd unit
            .replace(
                "secret_file = \"/run/credentials/fleetdns.service/xfr-key\"",
                "secret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"",
            );
        // The static file: the example's own sample, which must parse.
        let sample: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("##     "))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let statics = dir.path().join("static.zone");
        std::fs::write(&statics, sample).unwrap();
        let uncommented = uncommented.replace(
            "static_records = \"/etc/fleetdns/static.zone\"",
            &format!("static_records = {:?}", statics.to_str().unwrap()),
        );
        assert!(uncommented.contains("role_arn = "), "{uncommented}");
        let c = read_config(&uncommented, "example").unwrap();
        let s = c.validate(&Overrides::default()).unwrap();
        let SourceSpec::Ec2(e) = s.source else {
            panic!()
        };
        assert_eq!(e.accounts.len(), 2);
        assert_eq!(e.filters.len(), 2);
        assert_eq!(s.naming.statics().record_count(), 4);
        assert_eq!(s.transfer.allow.len(), 1);
        assert_eq!(s.transfer.notify.len(), 1);
        assert_eq!(s.transfer.keys.len(), 1);
        assert_eq!(
            e.events.as_ref().map(|q| q.region.as_deref()),
            Some(Some("us-east-1")),
            "the queue's region from its URL"
        );
        let rrl = s.rrl.expect("[rrl] uncommented");
        assert_eq!(
            (rrl.responses_per_second, rrl.slip, rrl.window),
            (100, 2, 15)
        );
        assert_eq!(rrl.exempt.len(), 1);
    }

    fn transfer_error(text: &str) -> String {
        read_config(text, "t")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap_err()
            .to_string()
    }

    const KEY: &str = "[[tsig_keys]]\nname = \"xfr-key\"\nsecret = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";

    #[test]
    fn transfer_settings_name_the_option_at_fault() {
        let e = transfer_error("[transfer]\nallow = [{ key = \"xfr-key\" }]\n");
        assert!(
            e.starts_with("invalid transfer.allow: every entry needs `from`"),
            "{e}"
        );
        let e = transfer_error(&format!(
            "{KEY}[transfer]\nallow = [{{ from = \"10.0.0.0/8\", key = \"nope\" }}]\n"
        ));
        assert!(
            e.contains("transfer.allow.key") && e.contains("\"nope\""),
            "{e}"
        );
        let e = transfer_error(&format!(
            "{KEY}[transfer]\nnotify = [{{ to = \"10.0.1.53\", key = \"other\" }}]\n"
        ));
        assert!(e.contains("transfer.notify.key"), "{e}");
        let e = transfer_error("[transfer]\nallow = [{ from = \"10.0.0.0/33\" }]\n");
        assert!(e.starts_with("invalid transfer.allow.from"), "{e}");
        let e = transfer_error(
            "[[tsig_keys]]\nname = \"k\"\nalgorithm = \"hmac-md5\"\nsecret = \"AAAA\"\n",
        );
        assert!(e.contains("algorithm") && e.contains("hmac-sha256"), "{e}");
        let e = transfer_error("[[tsig_keys]]\nname = \"k\"\n");
        assert!(e.contains("needs secret_file"), "{e}");
        let e = transfer_error("[[tsig_keys]]\nname = \"k\"\nsecret = \"not base64!\"\n");
        assert!(
            e.contains("tsig_keys (\"k\").secret") && e.contains("not base64"),
            "{e}"
        );
        let e = transfer_error(&format!("{KEY}{KEY}"));
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn reverse_zones_are_networks_that_do_not_overlap() {
        let settings = read_config(
            "reverse_zones = [\"20.10.in-addr.arpa\", \"C.B.A.0.8.b.d.0.1.0.0.2.ip6.arpa.\"]\n",
            "t",
        )
        .unwrap()
        .validate(&Overrides::default())
        .unwrap();
        let zones = &settings.zone.reverse_zones;
        assert_eq!(zones[0].network, Cidr::parse("10.20.0.0/16").unwrap());
        assert_eq!(zones[1].network, Cidr::parse("2001:db8:abc::/48").unwrap());
        assert_eq!(
            zones[1].apex.to_ascii(),
            "c.b.a.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
        for (bad, why) in [
            ("[\"in-addr.arpa\"]", "not a reverse zone"),
            ("[\"020.10.in-addr.arpa\"]", "not a reverse zone"),
            ("[\"300.10.in-addr.arpa\"]", "not a reverse zone"),
            ("[\"fleet.internal\"]", "not a reverse zone"),
            ("[\"10.in-addr.arpa\", \"20.10.in-addr.arpa\"]", "overlaps"),
        ] {
            let e = transfer_error(&format!("reverse_zones = {bad}\n"));
            assert!(
                e.starts_with("invalid reverse_zones") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_secret_file_others_may_read_is_refused_and_never_printed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let text = format!(
            "[[tsig_keys]]\nname = \"k\"\nsecret_file = {:?}\n",
            path.display().to_string()
        );
        let e = transfer_error(&text);
        assert!(
            e.contains("secret_file") && e.contains("readable by group or others"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let settings = read_config(&text, "t")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        assert_eq!(settings.transfer.keys.len(), 1);
        let shown = format!("{settings:?}{:?}", read_config(&text, "t").unwrap());
        assert!(!shown.contains("AAECAw"), "{shown}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_line() {
        let err = read_config("zone = \"a.b.\"\nlisten_on = []\n", "f.toml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("config f.toml: line 2: unknown field `listen_on`"),
            "{text}"
        );
        assert!(!text.contains('\n'));
        let err = read_config(&with_source("[tcp]\nmax_conn = 3\n"), "f.toml").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_conn`"),
            "{err}"
        );
    }

    #[test]
    fn bad_zone_names_the_option() {
        for zone in ["", ".", "a..b", "bad_zone.", "-a.b."] {
            let c = read_config(&with_source(&format!("zone = {zone:?}")), "t");
            let c = match c {
                Ok(c) => c,
                Err(e) => panic!("{zone}: {e}"),
            };
            let err = c.validate(&Overrides::default()).unwrap_err().to_string();
            assert!(err.starts_with("invalid zone:"), "{zone}: {err}");
        }
    }

    /// Found by the `config` fuzz target (seed `zone-with-a-newline.toml`):
    /// hickory's message quoted a newline raw, so the error took two lines.
    #[test]
    fn bad_names_are_one_line_errors_in_words() {
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghij"; 24].join(".");
        for (zone, says) in [
            ("fle2et.\nsource", "'\\n' is not allowed in a name"),
            ("a b.c", "' ' is not allowed in a name"),
            ("a..b", "an empty label"),
            (".a", "an empty label"),
            (long_label.as_str(), "is 64 characters long; at most 63"),
            (long_name.as_str(), "a name has at most 253"),
        ] {
            let c = read_config(&with_source(&format!("zone = {zone:?}")), "t").unwrap();
            let err = c.validate(&Overrides::default()).unwrap_err().to_string();
            assert!(err.starts_with("invalid zone:"), "{err}");
            assert!(err.contains(says), "{zone:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn the_config_comes_from_the_flag_then_the_environment_then_the_default_path() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("fleetdns.toml");
        std::fs::write(&present, "").unwrap();
        let absent = dir.path().join("absent.toml");
        let flag = Path::new("/x/flag.toml");
        let env = || Some(std::ffi::OsString::from("/x/env.toml"));
        assert_eq!(
            ConfigOrigin::resolve(Some(flag), env(), &present),
            ConfigOrigin::Flag(flag.into())
        );
        assert_eq!(
            ConfigOrigin::resolve(None, env(), &present),
            ConfigOrigin::Environment("/x/env.toml".into())
        );
        // set but empty is unset
        assert_eq!(
            ConfigOrigin::resolve(None, Some("".into()), &present),
            ConfigOrigin::DefaultPath(present.clone())
        );
        assert_eq!(
            ConfigOrigin::resolve(None, None, &absent),
            ConfigOrigin::BuiltIn
        );
        assert!(ConfigOrigin::BuiltIn
            .to_string()
            .contains("built-in defaults"));
    }

    #[test]
    fn zones_of_others_are_hazards_and_private_ones_are_not() {
        let hazard = |z: &str| zone_hazard(&parse_zone(z).unwrap());
        for zone in [
            "internal",
            "ec2.internal",
            "compute.internal",
            "us-east-2.compute.internal",
            "x.ec2.internal",
            "com",
            "local",
            "1.2.3.4",
            "10.in-addr.arpa",
        ] {
            assert!(hazard(zone).is_some(), "{zone}");
        }
        for zone in [
            "fleet.internal",
            "corp.example",
            "prod.fleet.internal",
            "a1.b2",
        ] {
            assert_eq!(hazard(zone), None, "{zone}");
        }
    }

    /// Issue 20: settings that parse but cannot work are errors naming
    /// the option, as `check` and a start must say before cloud-init goes on.
    #[test]
    fn settings_that_cannot_work_are_refused_naming_the_option() {
        for (toml, option, says) in [
            (
                "listen = [\"127.0.0.1:53\", \"127.0.0.1:53\"]",
                "listen",
                "listed twice",
            ),
            (
                "listen = [\"127.0.0.1:53\"]\nmetrics_listen = \"127.0.0.1:53\"",
                "metrics_listen",
                "cannot share a port",
            ),
            (
                "listen = [\"0.0.0.0:5353\"]\nmetrics_listen = \"127.0.0.1:5353\"",
                "metrics_listen",
                "cannot share a port",
            ),
            (
                "interval_secs = 60\nmax_stale_secs = 30",
                "max_stale_secs",
                "below interval_secs (60)",
            ),
            (
                "[source.ec2]\nregions = [\"us-east-1a\"]",
                "source.ec2.regions",
                "its region is \"us-east-1\"",
            ),
            (
                "[source.ec2]\nregions = [\"useast1\"]",
                "source.ec2.regions",
                "not a region name",
            ),
            (
                "[source.ec2]\nregions = [\"us-east\"]",
                "source.ec2.regions",
                "not a region name",
            ),
            (
                "[source.ec2.filters]\n\"instance-state-name\" = [\"stopped\"]",
                "source.ec2.filters",
                "always \"running\"",
            ),
        ] {
            let err = read_config(toml, "t")
                .unwrap()
                .validate(&Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("invalid {option}: ")),
                "{toml}: {err}"
            );
            assert!(err.contains(says), "{toml}: {err}");
        }
        for region in [
            "us-east-1",
            "us-gov-west-1",
            "eu-central-2",
            "ap-southeast-5",
            "cn-north-1",
        ] {
            assert_eq!(region_shape(region), Ok(()), "{region}");
        }
    }

    #[test]
    fn zone_is_normalised() {
        let c = read_config(&with_source("zone = \"Corp.Example\""), "t").unwrap();
        let s = c.validate(&Overrides::default()).unwrap();
        assert_eq!(s.zone.zone.to_ascii(), "corp.example.");
        assert_eq!(s.zone.hostmaster.to_ascii(), "hostmaster.corp.example.");
    }

    #[test]
    fn overrides_win() {
        let c = read_config(&with_source("listen = [\"127.0.0.1:53\"]"), "t").unwrap();
        let o = Overrides {
            listen: vec!["127.0.0.1:5353".parse().unwrap()],
            zone: Some("x.test".into()),
            source: Some("file:/tmp/f.json".into()),
            upstreams: vec!["127.0.0.2".into()],
            state_dir: Some("/tmp/state".into()),
            metrics_listen: Some("127.0.0.1:9153".parse().unwrap()),
        };
        let s = c.validate(&o).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/tmp/state"));
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9153".parse().unwrap()));
        assert_eq!(s.listen, ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
        assert_eq!(s.zone.zone.to_ascii(), "x.test.");
        assert_eq!(s.source, SourceSpec::File("/tmp/f.json".into()));
        assert_eq!(
            s.forward.upstreams,
            ["127.0.0.2:53".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn the_default_source_is_ec2() {
        let s = Config::default().validate(&Overrides::default()).unwrap();
        let SourceSpec::Ec2(e) = s.source else {
            panic!("{:?}", s.source)
        };
        assert!(e.regions.is_empty() && e.accounts.is_empty());
        assert_eq!((e.page_size, e.max_attempts), (1000, 5));
        let err = parse_source_flag("s3:bucket").unwrap_err();
        assert!(err.to_string().starts_with("invalid --source:"), "{err}");
    }

    #[test]
    fn ec2_source_options() {
        let text = r#"
            [source.ec2]
            regions = ["us-east-1", "eu-west-1"]
            endpoint_url = "http://127.0.0.1:5000"
            page_size = 50
            [source.ec2.filters]
            "tag:Env" = ["prod"]
            [[source.ec2.accounts]]
            [[source.ec2.accounts]]
            role_arn = "arn:aws:iam::210987654321:role/fleetdns"
            external_id = "x"
        "#;
        let s = read_config(text, "t")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        let SourceSpec::Ec2(e) = s.source else {
            panic!()
        };
        assert_eq!(e.regions, ["eu-west-1", "us-east-1"]);
        assert_eq!(e.accounts.len(), 2);
        assert_eq!(e.accounts[0].role_arn, None);
        assert_eq!(e.accounts[1].label(), "210987654321");
        assert_eq!(e.filters["tag:Env"], ["prod"]);
        // --source ec2 keeps these settings
        let o = Overrides {
            source: Some("ec2".into()),
            ..Overrides::default()
        };
        let s = read_config(text, "t").unwrap().validate(&o).unwrap();
        assert!(matches!(s.source, SourceSpec::Ec2(e) if e.page_size == 50));
    }

    #[test]
    fn bad_ec2_options_name_the_option() {
        for (text, option) in [
            (
                "[source.ec2]\nregions = [\"US East\"]",
                "source.ec2.regions",
            ),
            ("[source.ec2]\npage_size = 2000", "source.ec2.page_size"),
            (
                "[source.ec2]\nendpoint_url = \"localhost:5000\"",
                "source.ec2.endpoint_url",
            ),
            (
                "[[source.ec2.accounts]]\nrole_arn = \"fleetdns\"",
                "source.ec2.accounts.role_arn",
            ),
            (
                "[source.ec2.filters]\n\"tag:Env\" = []",
                "source.ec2.filters",
            ),
        ] {
            let err = read_config(text, "t")
                .unwrap()
                .validate(&Overrides::default())
                .unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("invalid {option}:")),
                "{text}: {err}"
            );
        }
        let err = read_config("[source.ec2]\nregion = \"x\"", "t").unwrap_err();
        assert!(err.to_string().contains("unknown field `region`"), "{err}");
    }

    #[test]
    fn upstream_pointing_at_ourselves_is_refused() {
        let c = read_config(
            &with_source("listen = [\"0.0.0.0:53\"]\nupstreams = [\"127.0.0.1\"]"),
            "t",
        )
        .unwrap();
        let err = c.validate(&Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("forwarding loop"), "{err}");
        let c = read_config(&with_source("upstreams = [\"nonsense\"]"), "t").unwrap();
        assert!(c
            .validate(&Overrides::default())
            .unwrap_err()
            .to_string()
            .starts_with("invalid upstreams:"));
    }

    #[test]
    fn bad_naming_rule_names_the_option() {
        let c = read_config(&with_source("[naming]\nprefer = [\"Name\"]"), "t").unwrap();
        let err = c.validate(&Overrides::default()).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid naming.prefer: unknown naming rule"),
            "{err}"
        );
    }
}

//! The fleet as sources see it: [`Instance`] and the [`Source`] trait.
//!
//! Sources know nothing of DNS. They turn an inventory (the EC2 API, or the
//! JSON that `aws ec2 describe-instances` prints) into plain `Instance`s;
//! naming and the snapshot take it from there. A source reports its result
//! per *unit* (a file, or later an EC2 region x account) so that the
//! refresher can keep the last good data of a unit that failed while the
//! others move on.

#[cfg(feature = "ec2")]
pub mod ec2;
pub mod ec2_settings;
pub mod file;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// One machine of the fleet, as the inventory describes it.
///
/// Every field but `id` and `state` may be missing in real data (a
/// terminated instance has no address), so the optional ones stay optional
/// and naming decides what to do without them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The EC2 instance id, e.g. `i-0a15d9d0e0af13dbb`.
    pub id: String,
    /// The EC2 state name (`running`, `stopped`, ...); only `running` is served.
    pub state: String,
    /// Every private IPv4 address of every network interface, primary first.
    pub private_ipv4: Vec<Ipv4Addr>,
    /// Every IPv6 address of every network interface.
    pub ipv6: Vec<Ipv6Addr>,
    /// Tags by key. Values are untrusted: anyone with `ec2:CreateTags` sets them.
    pub tags: BTreeMap<String, String>,
    /// Security group names in the order the API lists them.
    pub security_groups: Vec<String>,
    /// Launch time as the API printed it (RFC 3339).
    pub launch_time: Option<String>,
    /// The region the instance was found in.
    pub region: Option<String>,
    /// The VPC the instance lives in.
    pub vpc_id: Option<String>,
    /// The availability zone, e.g. `us-east-1a`.
    pub availability_zone: Option<String>,
    /// The instance type, e.g. `t3.small`.
    pub instance_type: Option<String>,
}

impl Instance {
    /// Whether the instance is in a state that is served (`running`).
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

/// Why a source could not produce its instances.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The inventory could not be read at all.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that was read.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The EC2 API (or the way to it) failed for one region and account.
    #[error("{code}: {message}")]
    Api {
        /// The AWS error code (`RequestLimitExceeded`, `AuthFailure`, ...),
        /// or `dispatch` / `timeout` / `response` when no response came.
        code: String,
        /// The error message, with its causes.
        message: String,
    },
    /// The inventory was read but is not what the source expects.
    #[error("{path}: not a describe-instances document: {reason}")]
    Parse {
        /// The file that was parsed.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl SourceError {
    /// Whether the API asked us to slow down (EC2's `RequestLimitExceeded`,
    /// or the generic `Throttling` codes of AWS query APIs).
    pub fn is_throttling(&self) -> bool {
        match self {
            SourceError::Api { code, .. } => is_throttling_code(code),
            _ => false,
        }
    }
}

/// Whether an AWS error code means "slow down".
pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "TooManyRequestsException"
    )
}

/// One network interface's addresses as a source reports them, unparsed.
#[derive(Debug, Default)]
pub struct InterfaceAddresses<'a> {
    /// The attachment's device index (0 is the primary interface).
    pub device_index: Option<i64>,
    /// Private IPv4 addresses with their `Primary` flag.
    pub private: Vec<(&'a str, bool)>,
    /// IPv6 addresses.
    pub ipv6: Vec<&'a str>,
}

/// Every address of an instance in a stable order: the instance's primary
/// address first, then each interface's (device 0 first, primary address
/// first within it), then IPv6. Unparsable addresses are skipped with a
/// warning so one odd value cannot hide the instance; duplicates are dropped.
pub fn collect_addresses(
    instance_id: &str,
    primary: Option<&str>,
    mut interfaces: Vec<InterfaceAddresses<'_>>,
) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    interfaces.sort_by_key(|i| i.device_index.unwrap_or(i64::MAX));
    let mut v4: Vec<Ipv4Addr> = Vec::new();
    let mut v6: Vec<Ipv6Addr> = Vec::new();
    let mut push_v4 = |text: &str| match text.parse::<Ipv4Addr>() {
        Ok(ip) if !v4.contains(&ip) => v4.push(ip),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(instance = %instance_id, address = ?text, "skipping unparsable IPv4 address")
        }
    };
    if let Some(primary) = primary {
        push_v4(primary);
    }
    for iface in &mut interfaces {
        iface.private.sort_by_key(|(_, is_primary)| !is_primary);
        for (text, _) in &iface.private {
            push_v4(text);
        }
    }
    for text in interfaces.iter().flat_map(|i| i.ipv6.iter()) {
        match text.parse::<Ipv6Addr>() {
            Ok(ip) if !v6.contains(&ip) => v6.push(ip),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(instance = %instance_id, address = ?text, "skipping unparsable IPv6 address")
            }
        }
    }
    (v4, v6)
}

/// `us-east-1a` -> `us-east-1`: a zone name is its region plus one letter.
pub fn region_of_zone(zone: &str) -> Option<String> {
    let trimmed = zone.trim_end_matches(|c: char| c.is_ascii_lowercase());
    (!trimmed.is_empty() && trimmed.len() < zone.len()).then(|| trimmed.to_string())
}

/// A running instance for unit tests: `ips` may mix IPv4 and IPv6.
#[cfg(test)]
pub(crate) fn test_instance(id: &str, name: Option<&str>, ips: &[&str]) -> Instance {
    Instance {
        id: id.into(),
        state: "running".into(),
        private_ipv4: ips.iter().filter_map(|s| s.parse().ok()).collect(),
        ipv6: ips.iter().filter_map(|s| s.parse().ok()).collect(),
        tags: name
            .map(|n| [("Name".to_string(), n.to_string())].into())
            .unwrap_or_default(),
        security_groups: vec![],
        launch_time: None,
        region: None,
        vpc_id: None,
        availability_zone: Some("us-east-1a".into()),
        instance_type: Some("t3.micro".into()),
    }
}

/// What one unit of a source (a file, a region x account) produced.
#[derive(Debug)]
pub struct UnitFetch {
    /// A stable label for the unit, e.g. `file:/etc/fleetdns/fleet.json`.
    pub unit: String,
    /// Its instances, or why there are none this time.
    pub result: Result<Vec<Instance>, SourceError>,
}

/// What checking one unit found: a summary, or what is wrong.
#[derive(Debug)]
pub struct UnitCheck {
    /// The unit's label.
    pub unit: String,
    /// `Ok(summary)` or `Err(problem)`.
    pub result: Result<String, String>,
}

/// Something that lists the fleet.
///
/// The refresher knows only this trait; which source runs is decided where
/// the configuration is turned into objects.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// A short human description for logs, e.g. `file:deploy/examples/fleet.json`.
    fn describe(&self) -> String;

    /// The labels of every unit [`Source::fetch`] reports, known before any
    /// fetch (persisted data of other units is not served).
    fn units(&self) -> Vec<String>;

    /// Fetches every unit once. Each unit succeeds or fails on its own.
    async fn fetch(&self) -> Vec<UnitFetch>;

    /// Checks that every unit can be read (for `fleetdns check`). The
    /// default fetches once; sources with a cheaper probe override it.
    async fn check(&self) -> Vec<UnitCheck> {
        self.fetch()
            .await
            .into_iter()
            .map(|u| UnitCheck {
                unit: u.unit,
                result: u
                    .result
                    .map(|i| format!("{} instances", i.len()))
                    .map_err(|e| e.to_string()),
            })
            .collect()
    }
}

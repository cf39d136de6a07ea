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
pub mod events;
pub mod file;
pub mod packed;
#[cfg(feature = "ec2")]
pub mod sqs;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use packed::{Packed, Spool};

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_ipv4: Vec<Ipv4Addr>,
    /// Every IPv6 address of every network interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6: Vec<Ipv6Addr>,
    /// Tags by key. Values are untrusted: anyone with `ec2:CreateTags` sets them.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
    /// Security group names in the order the API lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Launch time as the API printed it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_time: Option<String>,
    /// The region the instance was found in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The VPC the instance lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// The availability zone, e.g. `us-east-1a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// The instance type, e.g. `t3.small`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The account that owns it (its reservation's `OwnerId`), where the
    /// source says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// An instance's tags: key -> value, sorted by key, one value per key.
///
/// A sorted vector rather than a `BTreeMap`: a fleet's instances carry a
/// handful of tags each, and a B-tree node per instance costs about half a
/// kilobyte, which at 100,000 instances was most of the daemon's memory.
/// Lookups are a binary search. It reads and writes as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Vec<(Box<str>, Box<str>)>);

impl Tags {
    /// The value of the tag `key`, if the instance has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Every tag, sorted by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// How many tags there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>> FromIterator<(K, V)> for Tags {
    /// Collects tags; for a key given twice the last value wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut tags: Vec<(Box<str>, Box<str>)> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable, so equal keys keep their order and the last one is kept.
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags.reverse();
        tags.dedup_by(|later, earlier| later.0 == earlier.0);
        tags.reverse();
        tags.shrink_to_fit();
        Tags(tags)
    }
}

impl<K: Into<Box<str>>, V: Into<Box<str>>, const N: usize> From<[(K, V); N]> for Tags {
    fn from(tags: [(K, V); N]) -> Self {
        tags.into_iter().collect()
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&**k, &**v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TagsVisitor;
        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = Tags;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of tag keys to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                let mut tags: Vec<(Box<str>, Box<str>)> = Vec::new();
                while let Some(entry) = map.next_entry::<Box<str>, Box<str>>()? {
                    tags.push(entry);
                }
                Ok(tags.into_iter().collect())
            }
        }
        d.deserialize_map(TagsVisitor)
    }
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
    /// The EC2 API (or the way to it) failed for one region and account:
    /// one line, what kind of failure, its innermost cause, and what to do.
    #[error("{problem}: {cause}{}", problem.hint())]
    Api {
        /// What kind of failure, in the operator's words.
        problem: ApiProblem,
        /// The AWS error code (`RequestLimitExceeded`, `AuthFailure`, ...),
        /// or `dispatch` / `timeout` / `response` when no response came.
        code: String,
        /// The innermost cause, on one line (the code and AWS's message
        /// where AWS answered).
        cause: String,
    },
    /// The inventory was read but is not what the source expects.
    #[error("{path}: not a describe-instances document: {reason}")]
    Parse {
        /// The file that was parsed.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The fetched instances could not be kept (their spool file failed).
    #[error("cannot keep the fetched instances: {0}")]
    Spool(std::io::Error),
}

/// The kinds of API failure an operator tells apart, each with its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiProblem {
    /// No credentials anywhere in the SDK's chain.
    NoCredentials,
    /// AWS did not accept the credentials.
    CredentialsRejected,
    /// The credentials work, but lack a permission.
    PermissionMissing,
    /// An account's role could not be assumed.
    RoleNotAssumable,
    /// No answer from the endpoint: DNS, connection, TLS or a timeout.
    EndpointUnreachable,
    /// The API asked fleetdns to slow down.
    Throttled,
    /// Anything else AWS answered or the SDK reported.
    Other,
}

impl ApiProblem {
    /// What to do about it, starting with "; ", or nothing.
    pub fn hint(&self) -> &'static str {
        match self {
            ApiProblem::NoCredentials => "; give the instance a role (in a container, the instance metadata needs a hop limit of 2: aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2), or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ApiProblem::CredentialsRejected => "; the keys are wrong, revoked or expired, or this host's clock is more than 5 minutes off",
            ApiProblem::PermissionMissing => "; allow ec2:DescribeInstances to this identity (deploy/iam-policy.json)",
            ApiProblem::RoleNotAssumable => "; check the role's trust policy (it must trust this identity, with the external_id if one is set) and that this identity may sts:AssumeRole it",
            ApiProblem::EndpointUnreachable => "; check endpoint_url (or AWS_ENDPOINT_URL), DNS, and the route to the endpoint (VPC endpoint, proxy, egress rules)",
            ApiProblem::Throttled => "; fleetdns backs off and keeps serving the last good data (a longer interval_secs asks less)",
            ApiProblem::Other => "",
        }
    }
}

impl std::fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiProblem::NoCredentials => "no AWS credentials",
            ApiProblem::CredentialsRejected => "AWS rejected the credentials",
            ApiProblem::PermissionMissing => "permission missing",
            ApiProblem::RoleNotAssumable => "the role cannot be assumed",
            ApiProblem::EndpointUnreachable => "the endpoint cannot be reached",
            ApiProblem::Throttled => "throttled by the API",
            ApiProblem::Other => "the EC2 API failed",
        })
    }
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
        "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "TooManyRequestsException"
            | "RequestThrottled"
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
        tags: name.map(|n| [("Name", n)].into()).unwrap_or_default(),
        security_groups: vec![],
        launch_time: None,
        region: None,
        vpc_id: None,
        availability_zone: Some("us-east-1a".into()),
        instance_type: Some("t3.micro".into()),
        account: None,
    }
}

/// What one unit of a source (a file, a region x account) produced.
#[derive(Debug)]
pub struct UnitFetch {
    /// A stable label for the unit, e.g. `file:/etc/fleetdns/fleet.json`.
    pub unit: String,
    /// Its instances, packed, or why there are none this time.
    pub result: Result<Packed, SourceError>,
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

    /// Fetches every unit once, packing each unit's instances as they
    /// come with a packer from `spool`. Each unit succeeds or fails on its own.
    async fn fetch(&self, spool: &Spool) -> Vec<UnitFetch>;

    /// The queue of EC2 change events this source reads, if any.
    #[cfg(feature = "ec2")]
    fn event_queue(&self) -> Option<sqs::EventQueue> {
        None
    }

    /// Describes `ids` again in `unit` for an event (issue 16): the
    /// instances among them that belong in the zone now (absent ones have
    /// left it). `None` where the source cannot (a file) or the unit is
    /// unknown.
    async fn describe_ids(
        &self,
        _unit: &str,
        _ids: &[String],
        _spool: &Spool,
    ) -> Option<Result<Packed, SourceError>> {
        None
    }

    /// Checks that every unit can be read (for `fleetdns check`). The
    /// default fetches once; sources with a cheaper probe override it.
    async fn check(&self) -> Vec<UnitCheck> {
        self.fetch(&Spool::memory())
            .await
            .into_iter()
            .map(|u| UnitCheck {
                unit: u.unit,
                result: u.result.map_err(|e| e.to_string()).and_then(|packed| {
                    // The zone serves running instances only; say both, so
                    // that the numbers agree with the summary's.
                    let mut running = 0;
                    packed
                        .for_each(|i| running += usize::from(i.state == "running"))
                        .map_err(|e| e.to_string())?;
                    Ok(format!(
                        "{} instances listed, {running} running",
                        packed.len()
                    ))
                }),
            })
            .collect()
    }
}

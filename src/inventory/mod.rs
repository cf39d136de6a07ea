//! The fleet as sources see it: [`Instance`] and the [`Source`] trait.
//!
//! Sources know nothing of DNS. They turn an inventory (the EC2 API, or the
//! JSON that `aws ec2 describe-instances` prints) into plain `Instance`s;
//! naming and the snapshot take it from there. A source reports its result
//! per *unit* (a file, or later an EC2 region x account) so that the
//! refresher can keep the last good data of a unit that failed while the
//! others move on.

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
    /// The inventory was read but is not what the source expects.
    #[error("{path}: not a describe-instances document: {reason}")]
    Parse {
        /// The file that was parsed.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// What one unit of a source (a file, a region x account) produced.
#[derive(Debug)]
pub struct UnitFetch {
    /// A stable label for the unit, e.g. `file:/etc/fleetdns/fleet.json`.
    pub unit: String,
    /// Its instances, or why there are none this time.
    pub result: Result<Vec<Instance>, SourceError>,
}

/// Something that lists the fleet.
///
/// The refresher knows only this trait; which source runs is decided where
/// the configuration is turned into objects.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// A short human description for logs, e.g. `file:deploy/examples/fleet.json`.
    fn describe(&self) -> String;

    /// Fetches every unit once. Each unit succeeds or fails on its own.
    async fn fetch(&self) -> Vec<UnitFetch>;
}

//! Settings of the EC2 source, apart from the SDK code that uses them, so
//! that configuration parses and validates in builds without the `ec2`
//! feature (fuzzing, file-only builds) too.

use std::collections::BTreeMap;
use std::time::Duration;

/// Validated settings of the EC2 source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Settings {
    /// Regions to list; empty means the SDK's region chain (one region).
    pub regions: Vec<String>,
    /// An endpoint for every call (tests, private endpoints); `None` means
    /// AWS's, or `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL` when set.
    pub endpoint_url: Option<String>,
    /// Extra DescribeInstances filters: name -> values.
    pub filters: BTreeMap<String, Vec<String>>,
    /// Accounts to list; empty means the ambient credentials only.
    pub accounts: Vec<Account>,
    /// `MaxResults` per DescribeInstances page (5..=1000).
    pub page_size: i32,
    /// Timeout of one attempt of one call.
    pub call_timeout: Duration,
    /// Attempts per call, retries included.
    pub max_attempts: u32,
    /// The queue of EC2 change events, if configured.
    pub events: Option<EventQueueSettings>,
}

/// Where EC2 change events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQueueSettings {
    /// The queue's URL.
    pub queue_url: String,
    /// The queue's region: from an AWS URL's host, else (an endpoint of
    /// one's own) the first region listed.
    pub region: Option<String>,
    /// Time between full passes while the queue answers.
    pub resync_interval: Duration,
}

/// Whether `text` is an AWS account id: twelve digits.
pub fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

/// One account to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The role to assume; `None` means the ambient credentials.
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for, if any.
    pub external_id: Option<String>,
    /// The STS session name, visible in CloudTrail.
    pub session_name: String,
}

impl Account {
    /// The ambient credentials.
    pub fn ambient() -> Self {
        Account {
            role_arn: None,
            external_id: None,
            session_name: "fleetdns".to_string(),
        }
    }

    /// A short label: the account id from the role ARN, or `ambient`.
    pub fn label(&self) -> String {
        match &self.role_arn {
            Some(arn) => arn
                .split(':')
                .nth(4)
                .filter(|a| !a.is_empty())
                .unwrap_or(arn)
                .to_string(),
            None => "ambient".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_labels() {
        assert_eq!(Account::ambient().label(), "ambient");
        let a = Account {
            role_arn: Some("arn:aws:iam::210987654321:role/fleetdns".into()),
            ..Account::ambient()
        };
        assert_eq!(a.label(), "210987654321");
    }
}

// What the benches share: the fleet they build zones from, and issue 17's
// richer naming. Each bench uses part of it.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use fleetdns::inventory::{Instance, Tags};
use fleetdns::naming::Naming;

/// Issue 17's naming: two templates, then the Name tag and the first
/// security group; the `dns-aliases` tag as aliases; `Role` as a group (so
/// each member also gets its ordinal).
pub fn rich_naming() -> Naming {
    Naming::new(
        [
            "{tag:Role}-{tag:Env}",
            "{tag:Name}.{az}",
            "tag:Name",
            "security-group",
        ]
        .iter()
        .map(|r| r.parse().expect("rule"))
        .collect(),
        "fleet.internal.",
    )
    .with_aliases(vec!["tag:dns-aliases".parse().expect("rule")])
    .with_groups(vec!["tag:Role".parse().expect("rule")])
}

/// Running instance number `i` of a bench fleet: id `i-<i in hex>`, the
/// address 10.0.0.0 + i, the group `web`, in us-east-1a, with `tags`.
pub fn instance(i: u32, tags: Tags) -> Instance {
    Instance {
        id: format!("i-{i:017x}"),
        state: "running".to_string(),
        private_ipv4: vec![Ipv4Addr::from(0x0a00_0000 + i)],
        ipv6: vec![],
        tags,
        security_groups: vec!["web".to_string()],
        launch_time: None,
        region: Some("us-east-1".to_string()),
        vpc_id: None,
        availability_zone: Some("us-east-1a".to_string()),
        instance_type: Some("t3.micro".to_string()),
        account: None,
    }
}

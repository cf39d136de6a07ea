//! Any bytes as a tag value: a valid DNS name or a skip, never a panic,
//! and sanitising is idempotent. The first line of the input is also tried
//! as a naming rule (a template, issue 17): whatever it is, it parses or is
//! refused, and a rule that parses names an instance whose tags all hold
//! the rest of the input with a valid name or none; gives it valid aliases
//! (as an alias rule, beside `tag:Name`, whose value is split into several
//! names), none of them the primary name, repeated, or shaped like an id;
//! and valid group names (as a group rule, beside `security-group`), none
//! of them a name the instance has already.
#![no_main]

use fleetdns::inventory::{Instance, Tags};
use fleetdns::naming::{is_instance_id, is_valid_name, sanitize, Naming, NamingReport, Rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    // Room left by a typical zone (253 - len("fleet.internal") - 1).
    let max_len = 238;
    if let Ok(name) = sanitize(&value, max_len) {
        assert!(
            is_valid_name(&name, max_len),
            "{value:?} gave invalid {name:?}"
        );
        assert_eq!(sanitize(&name, max_len).as_deref(), Ok(name.as_str()));
    }

    let (rule, tag) = value.split_once('\n').unwrap_or((&value, ""));
    let Ok(rule) = rule.parse::<Rule>() else {
        return;
    };
    let naming = Naming::new(vec![rule.clone()], "fleet.internal.")
        .with_aliases(vec![rule.clone(), Rule::Tag("Name".into())])
        .with_groups(vec![rule, Rule::SecurityGroup]);
    let instance = Instance {
        id: "i-0123456789abcdef0".into(),
        state: "running".into(),
        private_ipv4: vec![],
        ipv6: vec![],
        tags: Tags::from([("Name", tag), ("Role", tag), ("Env", tag)]),
        security_groups: vec![tag.to_string()],
        launch_time: None,
        region: Some(tag.to_string()),
        vpc_id: Some(tag.to_string()),
        availability_zone: Some(tag.to_string()),
        instance_type: Some(tag.to_string()),
        account: Some(tag.to_string()),
    };
    let valid = |what: &str, name: &str| {
        assert!(
            is_valid_name(name, max_len),
            "{value:?} gave invalid {what} {name:?}"
        );
        assert!(!is_instance_id(name), "{value:?} gave {what} {name:?}");
    };
    let mut report = NamingReport::default();
    let primary = naming.choose(&instance, &mut report);
    if let Some(choice) = &primary {
        valid("name", &choice.name);
    }
    let primary = primary.as_ref().map(|c| c.name.as_str());
    let aliases = naming.aliases(&instance, primary, &mut report);
    for (k, alias) in aliases.iter().enumerate() {
        valid("alias", &alias.name);
        assert_ne!(Some(alias.name.as_str()), primary);
        assert!(
            !aliases[..k].iter().any(|a| a.name == alias.name),
            "repeated alias {:?}",
            alias.name
        );
    }
    let mut taken: Vec<&str> = aliases.iter().map(|a| a.name.as_str()).collect();
    taken.extend(primary);
    let groups = naming.groups(&instance, &taken, &mut report);
    for (k, group) in groups.iter().enumerate() {
        valid("group", &group.name);
        assert!(
            !taken.contains(&group.name.as_str()),
            "group {:?} is taken",
            group.name
        );
        assert!(
            !groups[..k].iter().any(|g| g.name == group.name),
            "repeated group {:?}",
            group.name
        );
    }
});

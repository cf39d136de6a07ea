//! Naming beyond one tag (issue 17), over DNS: templates built from several
//! values, with fall-through to the next rule, from a describe-instances
//! file and from moto's EC2.

use serde_json::json;

use crate::ec2::{basic_fleet, ip_of, start};
use crate::harness::*;
use crate::moto::Moto;

/// One instance of a test fleet: id, address, tags, security group.
type Host<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// A describe-instances document of `instances`.
fn fleet(instances: &[Host]) -> String {
    let instances: Vec<serde_json::Value> = instances
        .iter()
        .map(|(id, ip, tags, group)| {
            json!({
                "InstanceId": id,
                "State": {"Code": 16, "Name": "running"},
                "PrivateIpAddress": ip,
                "InstanceType": "t3.small",
                "Placement": {"AvailabilityZone": "eu-west-1b"},
                "VpcId": "vpc-0f1e2d3c",
                "SecurityGroups": [{"GroupName": group, "GroupId": "sg-1"}],
                "Tags": tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"Reservations": [{"Instances": instances}]}).to_string()
}

/// Serves `document` with `naming` as the `[naming]` section.
fn serve(dir: &std::path::Path, document: &str, naming: &str) -> Daemon {
    let path = dir.join("fleet.json");
    std::fs::write(&path, document).unwrap();
    std::fs::write(dir.join("fleetdns.toml"), format!("[naming]\n{naming}\n")).unwrap();
    Daemon::start(&[
        "--config",
        dir.join("fleetdns.toml").to_str().unwrap(),
        "--source",
        &file_source(&path),
    ])
}

/// `fleetdns list --json` of the fleet and config in `dir`.
fn list_json(dir: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args(["list", "--json", "--source"])
        .arg(file_source(&dir.join("fleet.json")))
        .args(["--config", dir.join("fleetdns.toml").to_str().unwrap()])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `fleetdns check` with the config in `dir`, which must fail: its stderr.
fn check_fails(dir: &std::path::Path) -> String {
    let out = std::process::Command::new(bin())
        .args(["check", "--listen", "127.0.0.1:0", "--source"])
        .arg(file_source(&example_fleet()))
        .args(["--config", dir.join("fleetdns.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn templates_fall_through_and_a_hostile_value_stays_inside_its_label() {
    let dir = tempdir();
    let document = fleet(&[
        (
            "i-0000000000000000a",
            "10.0.0.1",
            &[("Role", "api"), ("Env", "prod")],
            "web",
        ),
        // no Env: the second template
        (
            "i-0000000000000000b",
            "10.0.0.2",
            &[("Role", "api"), ("Name", "Cache 1")],
            "web",
        ),
        // values that try to add labels or leave nothing
        (
            "i-0000000000000000c",
            "10.0.0.3",
            &[("Role", "evil.fleet.internal"), ("Env", "x# 127.0.0.1")],
            "web",
        ),
        (
            "i-0000000000000000d",
            "10.0.0.4",
            &[("Role", "---"), ("Env", "prod")],
            "batch",
        ),
    ]);
    let d = serve(
        dir.path(),
        &document,
        "prefer = [\"{tag:Role}-{tag:Env}\", \"{tag:Name}.{az}\", \"security-group\"]",
    );
    assert_eq!(short(d.udp, &["api-prod.fleet.internal"]), ["10.0.0.1"]);
    assert_eq!(
        short(d.udp, &["cache-1.eu-west-1b.fleet.internal"]),
        ["10.0.0.2"]
    );
    assert_eq!(
        short(d.udp, &["evil-fleet-internal-x-127-0-0-1.fleet.internal"]),
        ["10.0.0.3"]
    );
    // "---" leaves nothing: skipped, and the group names it
    assert_eq!(short(d.udp, &["batch.fleet.internal"]), ["10.0.0.4"]);
    // the TXT record says which rule made the name
    let txt = short(d.udp, &["TXT", "api-prod.fleet.internal"]).join(" ");
    assert!(txt.contains("{tag:Role}-{tag:Env}"), "{txt}");
    // `list` reports the rewrite and the skip
    let list = list_json(dir.path());
    let text = list.to_string();
    assert!(text.contains("\"value\":\"---\""), "{text}");
    assert!(text.contains("\"name\":\"cache-1.eu-west-1b\""), "{text}");
}

#[test]
fn a_bad_template_is_a_config_error_that_quotes_it() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("fleetdns.toml"),
        "[naming]\nprefer = [\"{tag:Role\"]\n",
    )
    .unwrap();
    let stderr = check_fails(dir.path());
    assert!(
        stderr.contains("naming.prefer")
            && stderr.contains("template \"{tag:Role\": a '{' is never closed"),
        "{stderr}"
    );
}

#[test]
fn a_template_takes_the_account_from_the_ec2_reservation() {
    let moto = Moto::start();
    let seeded = moto.seed(&basic_fleet());
    let dir = tempdir();
    let d = start(
        dir.path(),
        &moto.endpoint,
        "regions = [\"us-east-1\"]",
        "[naming]\nprefer = [\"{tag:Name}.{account}\"]",
    );
    assert_eq!(
        short(d.udp, &["web-1.123456789012.fleet.internal"]),
        ip_of(&seeded, "us-east-1", "web-1")
    );
}

#[test]
fn aliases_from_a_hostile_list_answer_and_ptr_keeps_the_primary_name() {
    let dir = tempdir();
    let document = fleet(&[
        (
            "i-0000000000000000a",
            "10.0.0.1",
            &[
                ("Name", "web-1"),
                (
                    "dns-aliases",
                    "api, WWW\tevil.fleet.internal,,--- i-0123456789abcdef0 web-1",
                ),
            ],
            "web",
        ),
        ("i-0000000000000000b", "10.0.0.2", &[("Name", "api")], "web"),
    ]);
    let d = serve(
        dir.path(),
        &document,
        "aliases = [\"tag:dns-aliases\", \"{sg}-{tag:Name}\"]",
    );
    // each listed name answers with the instance's address
    assert_eq!(short(d.udp, &["www.fleet.internal"]), ["10.0.0.1"]);
    // a full name in the list means the name before the zone
    assert_eq!(short(d.udp, &["evil.fleet.internal"]), ["10.0.0.1"]);
    // a template alias
    assert_eq!(short(d.udp, &["web-web-1.fleet.internal"]), ["10.0.0.1"]);
    // an alias equal to another instance's name: the name answers both
    assert_eq!(
        short(d.udp, &["api.fleet.internal"]),
        ["10.0.0.1", "10.0.0.2"]
    );
    // "---" gives nothing, and an id-shaped alias never takes that name
    assert!(d
        .dig(&["i-0123456789abcdef0.fleet.internal"])
        .contains("NXDOMAIN"));
    // PTR names the primary name only
    assert_eq!(short(d.udp, &["-x", "10.0.0.1"]), ["web-1.fleet.internal."]);
    // TXT says what the alias is
    let txt = short(d.udp, &["TXT", "www.fleet.internal"]).join(" ");
    assert!(
        txt.contains("rule=tag:dns-aliases") && txt.contains("kind=alias"),
        "{txt}"
    );
    let txt = short(d.udp, &["TXT", "web-1.fleet.internal"]).join(" ");
    assert!(!txt.contains("kind=alias"), "{txt}");
    // list --json: each name's kind
    let list = list_json(dir.path());
    let kinds = |name: &str| {
        list["names"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["kinds"].clone())
    };
    assert_eq!(kinds("www.fleet.internal."), Some(json!(["alias"])));
    assert_eq!(
        kinds("api.fleet.internal."),
        Some(json!(["alias", "primary"]))
    );
    assert_eq!(kinds("web-1.fleet.internal."), Some(json!(["primary"])));
    assert_eq!(
        kinds("i-0000000000000000a.fleet.internal."),
        Some(json!(["instance-id"]))
    );
    // api is shared by an alias and a primary name: a conflict
    let conflicts = list["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0]["name"], "api.fleet.internal.");
    assert_eq!(conflicts[0]["kinds"], json!(["alias", "primary"]));
}

#[test]
fn a_bad_alias_rule_is_a_config_error_that_names_the_option() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("fleetdns.toml"),
        "[naming]\naliases = [\"{tag:Svc}_{tag:Env}\"]\n",
    )
    .unwrap();
    let stderr = check_fails(dir.path());
    assert!(
        stderr.contains("naming.aliases") && stderr.contains("'_' in its text"),
        "{stderr}"
    );
}

#[test]
fn a_group_name_answers_with_every_running_member() {
    let dir = tempdir();
    let document = fleet(&[
        (
            "i-0000000000000000a",
            "10.0.0.1",
            &[("Name", "w1"), ("aws:autoscaling:groupName", "Workers")],
            "web",
        ),
        (
            "i-0000000000000000b",
            "10.0.0.2",
            &[("Name", "w2"), ("aws:autoscaling:groupName", "workers")],
            "web",
        ),
        (
            "i-0000000000000000c",
            "10.0.0.3",
            &[("Name", "db"), ("aws:autoscaling:groupName", "---")],
            "db",
        ),
    ]);
    let d = serve(
        dir.path(),
        &document,
        "groups = [\"tag:aws:autoscaling:groupName\"]",
    );
    assert_eq!(
        short(d.udp, &["workers.fleet.internal"]),
        ["10.0.0.1", "10.0.0.2"]
    );
    let txt = short(d.udp, &["TXT", "workers.fleet.internal"]).join(" ");
    assert!(
        txt.contains("kind=group") && txt.contains("rule=tag:aws:autoscaling:groupName"),
        "{txt}"
    );
    // the members keep their own names, and PTR names them
    assert_eq!(short(d.udp, &["w2.fleet.internal"]), ["10.0.0.2"]);
    assert_eq!(short(d.udp, &["-x", "10.0.0.2"]), ["w2.fleet.internal."]);
    let list = list_json(dir.path());
    let workers = list["names"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "workers.fleet.internal.")
        .unwrap();
    assert_eq!(workers["kinds"], json!(["group"]));
    // "---" gives no group, and is reported
    assert!(list["skipped"].to_string().contains("\"value\":\"---\""));
}

#[test]
fn ordinals_stay_with_their_member_when_the_middle_one_is_replaced() {
    let dir = tempdir();
    let member = |id: &'static str, ip: &'static str| -> Host<'static> {
        (id, ip, &[("aws:autoscaling:groupName", "workers")], "web")
    };
    let (a, b, c, d) = (
        member("i-0000000000000000a", "10.0.0.1"),
        member("i-0000000000000000b", "10.0.0.2"),
        member("i-0000000000000000c", "10.0.0.3"),
        member("i-00000000000000000", "10.0.0.4"),
    );
    let path = dir.path().join("fleet.json");
    let d_ = serve(
        dir.path(),
        &fleet(&[c, a, b]),
        "groups = [\"tag:aws:autoscaling:groupName\"]",
    );
    let at = |n: u32| short(d_.udp, &[&format!("{n}.workers.fleet.internal")]);
    // the first assignment goes by instance id
    assert_eq!(
        (at(1), at(2), at(3)),
        (
            vec!["10.0.0.1".to_string()],
            vec!["10.0.0.2".to_string()],
            vec!["10.0.0.3".to_string()]
        )
    );
    let txt = short(d_.udp, &["TXT", "2.workers.fleet.internal"]).join(" ");
    assert!(txt.contains("kind=ordinal"), "{txt}");
    // the middle member is replaced by one with a lower id
    let serial = |d: &Daemon| short(d.udp, &["SOA", "fleet.internal"]).join(" ");
    let before = serial(&d_);
    std::fs::write(&path, fleet(&[a, c, d])).unwrap();
    d_.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while serial(&d_) == before {
        assert!(std::time::Instant::now() < deadline, "no new zone");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // 1 and 3 stay with their members; the newcomer fills 2
    assert_eq!(at(1), ["10.0.0.1"]);
    assert_eq!(at(2), ["10.0.0.4"]);
    assert_eq!(at(3), ["10.0.0.3"]);
    assert!(d_.dig(&["4.workers.fleet.internal"]).contains("NXDOMAIN"));
    assert_eq!(
        short(d_.udp, &["workers.fleet.internal"]),
        ["10.0.0.1", "10.0.0.3", "10.0.0.4"]
    );
}

#[test]
fn ordinals_survive_a_restart() {
    let dir = tempdir();
    let state = tempdir();
    let member = |id: &'static str, ip: &'static str| -> Host<'static> {
        (id, ip, &[("aws:autoscaling:groupName", "workers")], "web")
    };
    let (a, c, d) = (
        member("i-0000000000000000a", "10.0.0.1"),
        member("i-0000000000000000c", "10.0.0.3"),
        member("i-00000000000000000", "10.0.0.4"),
    );
    let path = dir.path().join("fleet.json");
    std::fs::write(
        dir.path().join("fleetdns.toml"),
        "[naming]\ngroups = [\"tag:aws:autoscaling:groupName\"]\n",
    )
    .unwrap();
    let start = || {
        Daemon::start_env(
            &[
                "--config",
                dir.path().join("fleetdns.toml").to_str().unwrap(),
                "--source",
                &file_source(&path),
            ],
            &[("STATE_DIRECTORY", state.path().to_str().unwrap())],
        )
    };
    // a and c first (1, 2), then d joins and takes 3, though its id is lowest
    std::fs::write(&path, fleet(&[a, c])).unwrap();
    let first = start();
    let before = short(first.udp, &["SOA", "fleet.internal"]).join(" ");
    std::fs::write(&path, fleet(&[a, c, d])).unwrap();
    first.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while short(first.udp, &["SOA", "fleet.internal"]).join(" ") == before {
        assert!(std::time::Instant::now() < deadline, "no new zone");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        short(first.udp, &["3.workers.fleet.internal"]),
        ["10.0.0.4"]
    );
    // persisted after the swap: wait for it before stopping
    let ordinals = state.path().join("ordinals.json");
    while !std::fs::read_to_string(&ordinals)
        .unwrap_or_default()
        .contains("\"i-00000000000000000\":3")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "ordinals never persisted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(first);
    // restarted: the persisted zone and the first fetch both keep them
    // (afresh, d would be 1 by its id)
    let second = start();
    for (n, ip) in [(1, "10.0.0.1"), (2, "10.0.0.3"), (3, "10.0.0.4")] {
        assert_eq!(
            short(second.udp, &[&format!("{n}.workers.fleet.internal")]),
            [ip],
            "{}",
            second.log()
        );
    }
}

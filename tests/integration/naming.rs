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

/// The stdout of `fleetdns <args>` on the fleet and config in `dir`.
fn command_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .args(args)
        .arg("--source")
        .arg(file_source(&dir.join("fleet.json")))
        .args(["--config", dir.join("fleetdns.toml").to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fleetdns list --json` of the fleet and config in `dir`.
fn list_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&command_in(dir, &["list", "--json"])).unwrap()
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

/// A static file beside the demo fleet: a host that is not an instance,
/// a CNAME into the fleet, a chain, one out of the zone, an SRV, apex
/// records, and a static name over the fleet name `api`.
const STATIC_ZONE: &str = "$TTL 120
; hosts EC2 does not list
legacy-db        A     10.30.0.5
                 AAAA  fd00::5
www              CNAME web-1
www-chain        CNAME www
lb   600         CNAME lb-123.us-east-1.elb.amazonaws.com.
_ldap._tcp       SRV   0 5 389 legacy-db
api              A     10.30.0.99   ; wins over the two instances named api
@                TXT   \"v=spf1 -all\"
@                MX    10 legacy-db
";

/// Serves the demo fleet with `statics` as its static file.
fn serve_statics(dir: &std::path::Path, statics: &str) -> Daemon {
    let path = dir.join("static.zone");
    std::fs::write(&path, statics).unwrap();
    std::fs::copy(example_fleet(), dir.join("fleet.json")).unwrap();
    std::fs::write(
        dir.join("fleetdns.toml"),
        format!(
            "static_records = {:?}\nmetrics_listen = \"127.0.0.1:0\"\n",
            path.to_str().unwrap()
        ),
    )
    .unwrap();
    Daemon::start(&[
        "--config",
        dir.join("fleetdns.toml").to_str().unwrap(),
        "--source",
        &file_source(&dir.join("fleet.json")),
    ])
}

#[test]
fn static_records_answer_beside_the_fleet_and_win_over_a_fleet_name() {
    let dir = tempdir();
    let d = serve_statics(dir.path(), STATIC_ZONE);
    // a host that is not an instance, both families, with the file's TTL
    assert_eq!(short(d.udp, &["legacy-db.fleet.internal"]), ["10.30.0.5"]);
    assert_eq!(
        short(d.udp, &["AAAA", "legacy-db.fleet.internal"]),
        ["fd00::5"]
    );
    let full = d.dig(&["+noall", "+answer", "legacy-db.fleet.internal"]);
    let full = full.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(full, "legacy-db.fleet.internal. 120 IN A 10.30.0.5");
    // a CNAME into the fleet is followed, through a chain too
    assert_eq!(
        short(d.udp, &["www.fleet.internal"]),
        ["web-1.fleet.internal.", "10.20.1.11"]
    );
    assert_eq!(
        short(d.udp, &["www-chain.fleet.internal"]),
        ["www.fleet.internal.", "web-1.fleet.internal.", "10.20.1.11"]
    );
    let chain = d.dig(&["www-chain.fleet.internal"]);
    assert!(
        chain.contains("status: NOERROR") && chain.contains(" aa "),
        "{chain}"
    );
    // one out of the zone is left to the resolver, with its own TTL
    let lb = d.dig(&["+noall", "+answer", "lb.fleet.internal"]);
    let lb = lb.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        lb,
        "lb.fleet.internal. 600 IN CNAME lb-123.us-east-1.elb.amazonaws.com."
    );
    // SRV under an empty non-terminal
    assert_eq!(
        short(d.udp, &["SRV", "_ldap._tcp.fleet.internal"]),
        ["0 5 389 legacy-db.fleet.internal."]
    );
    let ent = d.dig(&["_tcp.fleet.internal"]);
    assert!(
        ent.contains("status: NOERROR") && ent.contains("ANSWER: 0"),
        "{ent}"
    );
    // apex records beside fleetdns's SOA and NS
    assert_eq!(
        short(d.udp, &["TXT", "fleet.internal"]),
        ["\"v=spf1 -all\""]
    );
    assert_eq!(
        short(d.udp, &["MX", "fleet.internal"]),
        ["10 legacy-db.fleet.internal."]
    );
    // the static name wins over the two instances named api; their
    // addresses' PTR fall back to their instance-id names
    assert_eq!(short(d.udp, &["api.fleet.internal"]), ["10.30.0.99"]);
    assert!(short(d.udp, &["TXT", "api.fleet.internal"]).is_empty());
    assert_eq!(
        short(d.udp, &["-x", "10.20.1.21"]),
        ["i-05d6c43325a676d7b.fleet.internal."]
    );
    // the fleet is served as before
    assert_eq!(short(d.udp, &["web-2.fleet.internal"]), ["10.20.2.12"]);

    // `list --json`: kinds, where each static name comes from, and what
    // it overrides
    let listing = list_json(dir.path());
    let names = listing["names"].as_array().unwrap();
    let named = |n: &str| {
        names
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {listing}"))
    };
    let api = named("api.fleet.internal.");
    assert_eq!(api["kinds"], json!(["static"]));
    assert_eq!(api["addresses"], json!(["10.30.0.99"]));
    assert_eq!(
        api["overridden"],
        json!(["i-05d6c43325a676d7b", "i-0f2de9682e9441cd7"])
    );
    assert!(
        api["static_records"]
            .as_str()
            .unwrap()
            .ends_with("static.zone:9"),
        "{api}"
    );
    assert_eq!(
        named("www.fleet.internal.")["records"],
        json!(["CNAME web-1.fleet.internal."])
    );
    assert_eq!(named("fleet.internal.")["kinds"], json!(["static"]));
    assert_eq!(named("web-1.fleet.internal.")["kinds"], json!(["primary"]));
    let overridden = listing["overridden"].as_array().unwrap();
    assert_eq!(overridden.len(), 1, "{listing}");
    assert_eq!(overridden[0]["name"], "api.fleet.internal.");
    assert_eq!(overridden[0]["kinds"], json!(["primary"]));
    // and the table says it in words
    let table = command_in(dir.path(), &["list"]);
    assert!(
        table.contains("static records override fleet names (1):\n  api.fleet.internal. (primary): i-05d6c43325a676d7b,i-0f2de9682e9441cd7"),
        "{table}"
    );

    // the hosts export has the static addresses, and no line for names
    // without one
    let hosts = command_in(dir.path(), &["hosts", "--output", "-"]);
    assert!(
        hosts.contains("10.30.0.5\tlegacy-db.fleet.internal legacy-db\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains("fd00::5\tlegacy-db.fleet.internal legacy-db\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains("10.30.0.99\tapi.fleet.internal api\n"),
        "{hosts}"
    );
    assert!(!hosts.contains("10.20.1.21\tapi."), "{hosts}");
    assert!(
        !hosts.contains("www.fleet.internal") && !hosts.contains("_ldap"),
        "{hosts}"
    );
}

#[test]
fn a_static_file_that_fails_on_sighup_keeps_the_last_good_one() {
    let dir = tempdir();
    let d = serve_statics(dir.path(), "legacy-db A 10.30.0.5\n");
    assert_eq!(short(d.udp, &["legacy-db.fleet.internal"]), ["10.30.0.5"]);
    // a CNAME beside other data, on line 3
    std::fs::write(
        dir.path().join("static.zone"),
        "legacy-db A 10.30.0.6\nnew-host A 10.30.0.7\nnew-host CNAME web-1\n",
    )
    .unwrap();
    d.signal("HUP");
    d.wait_for_log(
        "reload failed, still running on the previous configuration",
        10,
    );
    let log = d.log();
    assert!(
        log.contains("static_records")
            && log.contains(
                "static.zone: line 3: new-host has a CNAME and other data (lines 2 and 3)"
            ),
        "{log}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(short(d.udp, &["legacy-db.fleet.internal"]), ["10.30.0.5"]);
    assert!(d.dig(&["new-host.fleet.internal"]).contains("NXDOMAIN"));
    // fixed: applied, and said so
    std::fs::write(
        dir.path().join("static.zone"),
        "legacy-db A 10.30.0.6\nnew-host CNAME web-1\n",
    )
    .unwrap();
    d.signal("HUP");
    wait_for_answer(&d, "legacy-db.fleet.internal", &["10.30.0.6"], 10);
    assert_eq!(
        short(d.udp, &["new-host.fleet.internal"]),
        ["web-1.fleet.internal.", "10.20.1.11"]
    );
    assert!(d.log().contains("applied static_records"), "{}", d.log());
    assert_eq!(d.metric("fleetdns_static_records", &[]), 2.0);
}

#[test]
fn a_bad_static_file_is_a_config_error_naming_the_file_and_line() {
    for (text, want) in [
        (
            "ok A 10.0.0.1\n@ CNAME web-1\n",
            "line 2: a CNAME at the zone apex",
        ),
        (
            "ok A 10.0.0.1\n\nhost.example.com. A 10.0.0.2\n",
            "line 3: host.example.com. is outside the zone fleet.internal.",
        ),
        ("x 60 IN NS ns1\n", "line 1: type NS is not supported"),
    ] {
        let dir = tempdir();
        let path = dir.path().join("static.zone");
        std::fs::write(&path, text).unwrap();
        std::fs::write(
            dir.path().join("fleetdns.toml"),
            format!("static_records = {:?}\n", path.to_str().unwrap()),
        )
        .unwrap();
        let err = check_fails(dir.path());
        assert!(err.contains("static_records"), "{err}");
        assert!(err.contains(&format!("static.zone: {want}")), "{err}");
    }
    // a missing file says so
    let dir = tempdir();
    std::fs::write(
        dir.path().join("fleetdns.toml"),
        "static_records = \"/nonexistent/static.zone\"\n",
    )
    .unwrap();
    let err = check_fails(dir.path());
    assert!(
        err.contains("cannot read /nonexistent/static.zone"),
        "{err}"
    );
}

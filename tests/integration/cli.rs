//! `list`, `check`, bad input and clean shutdown: what the operator sees.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn list_json_shows_names_addresses_rules_rewrites_and_skips() {
    let src = file_source(&example_fleet());
    let out = run(&["list", "--json", "--source", &src]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(doc["zone"], "fleet.internal.");
    assert_eq!(doc["instances"], 16);
    assert_eq!(doc["not_running"], 2);
    let names = doc["names"].as_array().unwrap();
    let api = names
        .iter()
        .find(|n| n["name"] == "api.fleet.internal.")
        .unwrap();
    assert_eq!(
        api["addresses"],
        serde_json::json!(["10.20.1.21", "10.20.2.22"])
    );
    assert_eq!(
        api["instances"],
        serde_json::json!(["i-05d6c43325a676d7b", "i-0f2de9682e9441cd7"])
    );
    assert_eq!(api["rules"], serde_json::json!(["tag:Name"]));
    assert_eq!(api["kinds"], serde_json::json!(["primary"]));
    // a name two instances share is listed as a conflict
    let conflicts = doc["conflicts"].as_array().unwrap();
    let shared = conflicts
        .iter()
        .find(|c| c["name"] == "api.fleet.internal.")
        .unwrap();
    assert_eq!(shared["instances"], api["instances"]);
    assert!(conflicts
        .iter()
        .all(|c| c["instances"].as_array().unwrap().len() > 1));
    let rewrites = doc["rewritten"].as_array().unwrap();
    let evil = rewrites
        .iter()
        .find(|r| r["instance_id"] == "i-0410aff01ee22c578")
        .unwrap();
    assert_eq!(evil["value"], "evil\nname # injected 127.0.0.1 localhost");
    assert_eq!(evil["name"], "evil-name-injected-127.0.0.1-localhost");
    let skips = doc["skipped"].as_array().unwrap();
    let dashes = skips.iter().find(|s| s["value"] == "---").unwrap();
    assert_eq!(dashes["rule"], "tag:Name");
    assert_eq!(dashes["reason"], "nothing-valid");
    // every name fleetdns lists is a valid DNS name
    for n in names {
        let name = n["name"].as_str().unwrap();
        assert!(name.len() <= 254 && name.ends_with('.'));
        for label in name.trim_end_matches('.').split('.') {
            assert!(!label.is_empty() && label.len() <= 63, "{name}");
            assert!(
                label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
        }
    }
}

#[test]
fn list_table_escapes_hostile_values() {
    let out = run(&["list", "--source", &file_source(&example_fleet())]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("web-1.fleet.internal."), "{text}");
    // the newline inside the tag value is printed escaped, on one line
    assert!(text.contains(r#""evil\nname # injected 127.0.0.1 localhost" -> evil-name-injected-127.0.0.1-localhost"#), "{text}");
    assert!(text.contains("skipped (2):"), "{text}");
    assert!(text.contains("\nrewritten (5):\n  i-"), "{text}");
    assert!(
        text.contains("\nshared by several instances (1):\n  api.fleet.internal. (primary): i-05d6c43325a676d7b,i-0f2de9682e9441cd7\n"),
        "{text}"
    );
}

#[test]
fn check_reports_a_summary_and_succeeds() {
    let src = file_source(&example_fleet());
    let out = run(&["check", "--listen", "127.0.0.1:0", "--source", &src]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    // one summary line, as the README says
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("ok: zone fleet.internal. from file:")
            && text.contains(": 16 instances, ")
            && text.contains(", 2 not running"),
        "{text}"
    );
    // -v shows each check, with counts that agree with the summary
    let out = run(&["check", "-v", "--listen", "127.0.0.1:0", "--source", &src]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ok   listen 127.0.0.1:0: "), "{text}");
    assert!(lines[1].starts_with("ok   state_dir "), "{text}");
    assert!(
        lines[2].starts_with("ok   file:")
            && lines[2].ends_with("fleet.json: 18 instances listed, 16 running"),
        "{text}"
    );
    assert!(lines[3].starts_with("ok: zone "), "{text}");
    assert!(
        stderr(&out).contains("zone updated"),
        "-v also shows info lines"
    );
}

/// Asserts a one-line error on stderr containing `needles`, and exit `code`.
fn assert_fails(args: &[&str], code: i32, needles: &[&str]) {
    let out = run(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "{err}");
    for n in needles {
        assert!(last.contains(n), "{n:?} not in {last:?}");
    }
}

#[test]
fn malformed_inventory_is_a_one_line_error_naming_the_file() {
    let dir = tempdir();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{\"Reservations\": [ {\"Instances\": [ {").unwrap();
    let src = file_source(&path);
    // `serve` keeps running instead: see resilience.rs.
    for cmd in ["check", "list"] {
        assert_fails(
            &[cmd, "--listen", "127.0.0.1:0", "--source", &src],
            1,
            &["broken.json"],
        );
    }
    assert_fails(
        &[
            "check",
            "--listen",
            "127.0.0.1:0",
            "--source",
            "file:/nonexistent/fleet.json",
        ],
        1,
        &["/nonexistent/fleet.json", "No such file"],
    );
}

#[test]
fn bad_config_is_a_one_line_error_naming_the_option() {
    let dir = tempdir();
    let config = dir.path().join("fleetdns.toml");
    let src = file_source(&example_fleet());
    let cfg = config.to_str().unwrap();

    std::fs::write(
        &config,
        "zone = \"fleet.internal.\"\nlisten_adress = [\"127.0.0.1:53\"]\n",
    )
    .unwrap();
    assert_fails(
        &["check", "--config", cfg, "--source", &src],
        2,
        &["fleetdns.toml", "line 2", "unknown field `listen_adress`"],
    );

    std::fs::write(&config, "zone = \"bad zone!\"\n").unwrap();
    assert_fails(
        &["serve", "--config", cfg, "--source", &src],
        2,
        &["invalid zone"],
    );
    assert_fails(
        &["check", "--zone", "a..b", "--source", &src],
        2,
        &["invalid zone"],
    );

    std::fs::write(&config, "ttl = \"soon\"\n").unwrap();
    assert_fails(
        &["check", "--config", cfg, "--source", &src],
        2,
        &["invalid type"],
    );

    assert_fails(&["check", "--source", "ftp://x"], 2, &["invalid --source"]);
    assert_fails(
        &["check", "--config", "/nonexistent.toml"],
        2,
        &["cannot read config /nonexistent.toml"],
    );
}

#[test]
fn port_in_use_is_a_clear_error_and_nothing_keeps_running() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let start = Instant::now();
    assert_fails(
        &[
            "serve",
            "--listen",
            &addr,
            "--source",
            &file_source(&example_fleet()),
        ],
        1,
        &[&format!("cannot listen for UDP on {addr}"), "in use"],
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_and_sigint_stop_the_daemon_cleanly() {
    for sig in ["TERM", "INT"] {
        let mut d = Daemon::start(&["--source", &file_source(&example_fleet())]);
        d.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = d.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running after SIG{sig}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "SIG{sig}: {status:?}");
        d.wait_for_log("stopped", 2);
    }
}

#[test]
fn version_and_help() {
    let out = run(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("fleetdns "));
    let out = run(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--zone", "--source", "--upstream"] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}

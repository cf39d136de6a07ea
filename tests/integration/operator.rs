//! What an operator meets first (issue 20): where the config comes from,
//! quiet one-shot commands, zones that would break DNS, and log lines for
//! journald and log shippers. Each test runs the exact command a user
//! would and checks what it prints and how it exits.

use std::process::Command;

use crate::harness::*;

fn demo_source() -> String {
    file_source(&example_fleet())
}

#[test]
fn list_piped_into_head_exits_0_without_a_broken_pipe_error() {
    // More than a pipe buffer (64 KiB) of output, so that fleetdns is
    // still writing when `head` has closed the pipe.
    let dir = tempdir();
    let path = dir.path().join("fleet.json");
    let fleet: Vec<Fake> = (0..3000).map(|n| Fake::running(n, Some("web"))).collect();
    write_inventory(&path, &fleet);
    let script = format!(
        "set -o pipefail; {} list --source file:{} | head -1",
        bin(),
        path.display()
    );
    let mut command = Command::new("bash");
    aws_test_env(&mut command);
    let out = command.args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert!(stdout(&out).starts_with("NAME"), "{}", stdout(&out));
    assert_eq!(stderr(&out), "", "nothing on stderr");
}

#[test]
fn one_shot_commands_print_no_log_lines_unless_asked() {
    let src = demo_source();
    // The demo fleet has skipped tag values and a zone update: the daemon
    // logs them; list, check and hosts print their output and nothing else.
    for args in [
        vec!["list", "--source", &src],
        vec!["check", "--listen", "127.0.0.1:0", "--source", &src],
        vec!["hosts", "--source", &src, "-o", "-"],
    ] {
        let out = run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?} logged");
        assert!(!stdout(&out).is_empty());
    }
    // -v asks for info lines, -vv for debug ones (the skipped values)
    let out = run(&["list", "-v", "--source", &src]);
    assert!(stderr(&out).contains("zone updated"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("DEBUG"), "{}", stderr(&out));
    let out = run(&["list", "-vv", "--source", &src]);
    assert!(
        stderr(&out).contains("value gives no name; skipped"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fleetdns_config_names_the_config_file_and_the_flag_wins() {
    let dir = tempdir();
    let corp = dir.path().join("corp.toml");
    std::fs::write(&corp, "zone = \"corp.example\"\n").unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "zone = \"other.example\"\n").unwrap();
    let src = demo_source();
    let zone_of = |out: std::process::Output| -> String {
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["zone"].as_str().unwrap().to_string()
    };
    let env = [("FLEETDNS_CONFIG", corp.to_str().unwrap())];
    let listed = run_with_env(&["list", "--json", "--source", &src], &env);
    assert_eq!(zone_of(listed), "corp.example.");
    let other_flag = other.to_str().unwrap();
    let listed = run_with_env(
        &["list", "--json", "--config", other_flag, "--source", &src],
        &env,
    );
    assert_eq!(zone_of(listed), "other.example.");
    // a file named there must exist
    let out = run_with_env(
        &["list", "--source", &src],
        &[("FLEETDNS_CONFIG", "/nonexistent/fleetdns.toml")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: cannot read config /nonexistent/fleetdns.toml: No such file or directory (os error 2)",
        "one line, the OS error once"
    );
    // the daemon says at start which file it read, and from where
    let d = Daemon::start_env(&["--source", &src], &env);
    let log = d.log();
    assert!(
        log.contains(&format!("config={} (FLEETDNS_CONFIG)", corp.display())),
        "{log}"
    );
    assert!(log.contains("version="), "{log}");
    assert_eq!(
        short(d.udp, &["web-1.corp.example"]),
        ["10.20.1.11"],
        "served from the file's zone"
    );
    // and the help says where it looks
    let help = stdout(&run(&["list", "--help"]));
    assert!(
        help.contains("FLEETDNS_CONFIG") && help.contains("/etc/fleetdns/fleetdns.toml"),
        "{help}"
    );
}

#[test]
fn zones_that_would_break_dns_are_refused_unless_allowed() {
    let src = demo_source();
    for (zone, says) in [
        ("internal", "it holds AWS's own instance names"),
        (
            "ec2.internal",
            "AWS's own instance names (ip-10-0-0-1.ec2.internal)",
        ),
        (
            "eu-west-1.compute.internal",
            "(ip-10-0-0-1.eu-west-1.compute.internal)",
        ),
        ("com", "a whole top-level domain"),
        ("1.2.3.4", "an address, not a zone"),
        ("10.in-addr.arpa", "reverse zones are not served"),
    ] {
        let out = run(&["check", "--source", &src, "--zone", zone]);
        assert_eq!(out.status.code(), Some(2), "{zone}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: invalid zone: "), "{err}");
        assert!(err.contains(says), "{zone}: {err}");
        assert!(err.contains("allow_unsafe_zone = true"), "{err}");
    }
    // the override, for those who mean it
    let dir = tempdir();
    let config = dir.path().join("f.toml");
    std::fs::write(
        &config,
        "zone = \"ec2.internal\"\nallow_unsafe_zone = true\n",
    )
    .unwrap();
    let out = run(&[
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &src,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Starts the daemon on the demo fleet with stderr as journald would see
/// it: `JOURNAL_STREAM` set to the device and inode of the stream itself.
fn daemon_under_journald(extra: &[&str]) -> Daemon {
    let src = demo_source();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--source", &src];
    args.extend_from_slice(extra);
    Daemon::spawn_wrapped(
        &[
            "sh",
            "-c",
            "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec \"$0\" \"$@\"",
        ],
        &args,
        &[],
    )
}

#[test]
fn under_journald_every_line_carries_its_priority_and_no_time() {
    let d = daemon_under_journald(&[]);
    d.wait_for_log("zone is servable", 30);
    let log = d.log();
    for line in log.lines() {
        let prefix = line.get(..3).unwrap_or("");
        assert!(
            matches!(prefix, "<3>" | "<4>" | "<6>" | "<7>"),
            "no priority: {line:?}"
        );
        assert!(
            !line.contains("2026-") && !line.contains("Z  "),
            "a time stamp: {line}"
        );
    }
    // what `journalctl -p warning` would show: the skipped tag values
    assert!(
        log.lines()
            .any(|l| l.starts_with("<4>") && l.contains("value gives no name; skipped")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("zone is servable")),
        "{log}"
    );
    // the same variable, but stderr is not that stream: plain lines
    let src = demo_source();
    let d = Daemon::start_env(&["--source", &src], &[("JOURNAL_STREAM", "1:1")]);
    assert!(!d.log().starts_with('<'), "{}", d.log());
}

#[test]
fn json_logs_are_one_object_a_line() {
    let src = demo_source();
    for d in [
        Daemon::start(&["--source", &src, "--log-format", "json"]),
        daemon_under_journald(&["--log-format", "json"]),
    ] {
        d.wait_for_log("zone is servable", 30);
        let log = d.log();
        let mut levels = Vec::new();
        for line in log.lines() {
            // under journald the priority comes first
            let json =
                line.trim_start_matches(|c: char| c == '<' || c == '>' || c.is_ascii_digit());
            let object: serde_json::Value =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"));
            levels.push(object["level"].as_str().unwrap().to_string());
            assert!(object["message"].is_string(), "{line}");
        }
        assert!(levels.iter().any(|l| l == "WARN") && levels.iter().any(|l| l == "INFO"));
        assert!(log.contains("\"message\":\"zone is servable\""), "{log}");
    }
    // and from the config file
    let dir = tempdir();
    let config = dir.path().join("f.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    let out = run(&[
        "list",
        "-v",
        "--config",
        config.to_str().unwrap(),
        "--source",
        &src,
    ]);
    let first = stderr(&out).lines().next().unwrap_or("").to_string();
    assert!(
        serde_json::from_str::<serde_json::Value>(&first).is_ok(),
        "{first}"
    );
}

#[test]
fn a_listen_address_that_cannot_be_bound_says_why_and_what_to_do() {
    let src = demo_source();
    // an address of no interface here (TEST-NET-1; nothing is sent)
    let out = run(&["serve", "--listen", "192.0.2.1:5353", "--source", &src]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: cannot listen for UDP on 192.0.2.1:5353: ")
            && last.contains("no interface of this host has that address"),
        "{err}"
    );
    // port 53 without the capability
    let unprivileged_from: u32 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_from <= 53 {
        println!("SKIPPED: ports from {unprivileged_from} up need no privilege on this host");
        return;
    }
    let out = if is_root() {
        // as nobody, as a user without the capability would start it
        let mut command = Command::new("setpriv");
        aws_test_env(&mut command);
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
            .args([
                "serve",
                "--listen",
                "127.0.0.1:53",
                "--source",
                &src,
                "--state-dir",
                "/tmp",
            ])
            .output()
            .unwrap()
    } else {
        run(&["serve", "--listen", "127.0.0.1:53", "--source", &src])
    };
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot listen for UDP on 127.0.0.1:53: Permission denied")
            && err.contains("CAP_NET_BIND_SERVICE"),
        "{err}"
    );
}

#[test]
fn a_config_with_two_sources_says_to_choose_one() {
    let dir = tempdir();
    let config = dir.path().join("f.toml");
    // the example config with [source.file] uncommented as well
    let example = std::fs::read_to_string("deploy/fleetdns.example.toml").unwrap();
    let both = example.replace("#[source.file]\n#path", "[source.file]\npath");
    assert_ne!(
        both, example,
        "the example has a [source.file] to uncomment"
    );
    std::fs::write(&config, both).unwrap();
    let out = run(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("choose one of [source.ec2] and [source.file], not both"),
        "{err}"
    );
}

#[test]
fn a_name_tag_holding_the_full_name_is_served_under_its_short_name() {
    let dir = tempdir();
    let path = dir.path().join("fleet.json");
    write_inventory(
        &path,
        &[
            Fake::running(1, Some("web-1.fleet.internal")),
            Fake::running(2, Some("Db.Fleet.Internal.")),
        ],
    );
    let src = format!("file:{}", path.display());
    let out = run(&["list", "--json", "--source", &src]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .filter(|n| !n.starts_with("i-"))
        .collect();
    assert_eq!(names, ["db.fleet.internal.", "web-1.fleet.internal."]);
    // and `list` reports what it did
    let rewritten = doc["rewritten"].as_array().unwrap();
    assert!(
        rewritten
            .iter()
            .any(|r| r["value"] == "web-1.fleet.internal" && r["name"] == "web-1"),
        "{rewritten:?}"
    );
}

/// `fleetdns check` with `args` (and the demo fleet unless a source is
/// given): (exit code, stdout, stderr).
fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let src = demo_source();
    let mut full = vec!["check"];
    full.extend_from_slice(args);
    if !args.contains(&"--source") && !args.contains(&"--config") {
        full.extend_from_slice(&["--source", &src]);
    }
    let out = run(&full);
    (out.status.code(), stdout(&out), stderr(&out))
}

/// Issue 20: what `check` used to pass and a start then failed on, each
/// with the exit code the README lists (2: configuration, 1: this host).
#[test]
fn check_fails_on_what_would_stop_a_start() {
    // a port in use
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, out, err) = check(&["--listen", &port]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!("FAIL listen {port}: ")) && out.contains("in use"),
        "{out}"
    );
    assert!(err.starts_with(&format!("error: listen {port}: ")), "{err}");
    // an address of no interface here
    let (code, out, _) = check(&["--listen", "192.0.2.1:5353"]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("FAIL listen 192.0.2.1:5353: ") && out.contains("no interface"),
        "{out}"
    );
    // a state dir that is a file
    let dir = tempdir();
    let file = dir.path().join("state");
    std::fs::write(&file, "").unwrap();
    let (code, out, _) = check(&[
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(out.contains("is not a directory"), "{out}");
    // configuration that cannot work: exit 2, the option named
    for (toml, says) in [
        (
            "listen = [\"127.0.0.1:5353\", \"127.0.0.1:5353\"]",
            "invalid listen: 127.0.0.1:5353 is listed twice",
        ),
        (
            "listen = [\"127.0.0.1:5353\"]\nmetrics_listen = \"127.0.0.1:5353\"",
            "invalid metrics_listen: ",
        ),
        (
            "interval_secs = 60\nmax_stale_secs = 10",
            "invalid max_stale_secs: 10 is below interval_secs (60)",
        ),
        (
            "[source.ec2]\nregions = [\"eu-west-1b\"]",
            "its region is \"eu-west-1\"",
        ),
        (
            "[source.ec2.filters]\n\"instance-state-name\" = [\"running\", \"stopped\"]",
            "invalid source.ec2.filters: ",
        ),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, toml).unwrap();
        let (code, _, err) = check(&["--config", config.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{toml}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{toml}: {err}");
    }
}

#[test]
fn an_empty_fleet_fails_check_unless_allowed_and_the_daemon_says_so() {
    let dir = tempdir();
    let path = dir.path().join("fleet.json");
    let mut stopped = Fake::running(1, Some("web"));
    stopped.state = "stopped";
    write_inventory(&path, &[stopped]);
    let src = format!("file:{}", path.display());
    let (code, out, err) = check(&["--listen", "127.0.0.1:0", "--source", &src]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("FAIL fleet: no running instance in "), "{out}");
    assert!(err.contains("--allow-empty"), "{err}");
    let (code, out, err) = check(&["--listen", "127.0.0.1:0", "--allow-empty", "--source", &src]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(": 0 instances, "), "{out}");
    // the daemon serves it, warns, and /readyz says so
    let d = Daemon::start(&["--source", &src, "--metrics-listen", "127.0.0.1:0"]);
    d.wait_for_log("the fleet is empty", 10);
    let (status, body) = d.http_get("/readyz");
    assert_eq!(status, 200);
    assert!(body.contains("the fleet is empty"), "{body}");
}

/// The TTL of the first answer `dig` prints for `name`.
fn ttl_of(d: &Daemon, name: &str) -> String {
    let out = d.dig(&["+noall", "+answer", name]);
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Issue 20: `systemctl reload` (SIGHUP) reads the config again: a changed
/// ttl and naming take effect, a broken config is an error line and
/// nothing changes, and what needs a restart is named.
#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempdir();
    let config = dir.path().join("fleetdns.toml");
    let src = demo_source();
    let write = |text: &str| {
        // as an editor saves it: a new file renamed into place
        let tmp = dir.path().join("fleetdns.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &config).unwrap();
    };
    write("ttl = 30\n");
    let d = Daemon::start(&["--config", config.to_str().unwrap(), "--source", &src]);
    // web-1's instance-id name: it stays whatever the naming rules
    let web1 = "i-0a15d9d0e0af13dbb.fleet.internal";
    assert_eq!(ttl_of(&d, web1), "30");

    // a new ttl and a new naming rule
    write("ttl = 120\n[naming]\nprefer = [\"tag:Team\", \"tag:Name\"]\n");
    d.signal("HUP");
    d.wait_for_log("configuration reloaded", 10);
    let log = d.log();
    assert!(
        log.contains("applied ttl, naming"),
        "one line says what changed:\n{log}"
    );
    assert_eq!(ttl_of(&d, web1), "120", "TTL applied");
    // web-1 and web-2 have Team=frontend: the new rule names them so
    wait_for_answer(
        &d,
        "frontend.fleet.internal",
        &["10.20.1.11", "10.20.2.12"],
        10,
    );
    assert_eq!(ttl_of(&d, "frontend.fleet.internal"), "120");

    // broken: an error line, and the daemon goes on as it was
    write("ttl = \"soon\"\n");
    d.signal("HUP");
    d.wait_for_log(
        "reload failed, still running on the previous configuration",
        10,
    );
    let failed = d
        .log()
        .lines()
        .find(|l| l.contains("reload failed"))
        .unwrap()
        .to_string();
    assert!(
        failed.contains("ERROR") && failed.contains("fleetdns.toml: line 1"),
        "{failed}"
    );
    assert_eq!(ttl_of(&d, "frontend.fleet.internal"), "120");

    // the state dir can only change with a restart: said, not done
    let elsewhere = dir.path().join("elsewhere");
    write(&format!(
        "ttl = 60\nstate_dir = {:?}\n[naming]\nprefer = [\"tag:Team\", \"tag:Name\"]\n",
        elsewhere.display().to_string()
    ));
    d.signal("HUP");
    d.wait_for_log("needs a restart to change: state_dir", 10);
    assert_eq!(ttl_of(&d, "frontend.fleet.internal"), "60");
    assert!(
        d.log()
            .contains("applied ttl; needs a restart to change: state_dir"),
        "{}",
        d.log()
    );
    assert!(!elsewhere.exists(), "the state stays where it was");
}

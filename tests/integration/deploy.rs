//! What ships in `deploy/`: the systemd units (verified and scored by
//! systemd-analyze, and the daemon's system calls checked against the
//! unit's filter with strace), the resolver wiring (each file tried with
//! glibc in a network namespace made here), cloud-init's config, and the
//! events template (cfn-lint, and its rules' patterns run in moto).
//! Parts that need root, namespaces or a tool that is missing print
//! `SKIPPED` with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::ec2::basic_fleet;
use crate::harness::*;
use crate::moto::{venv, Moto};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

fn text(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// The units with `/usr/bin/fleetdns` pointing at the binary under test.
fn units_in(dir: &Path) -> Vec<PathBuf> {
    [
        "fleetdns.service",
        "fleetdns-hosts.service",
        "fleetdns-hosts.timer",
    ]
    .iter()
    .map(|name| {
        let unit = fs::read_to_string(deploy(&format!("systemd/{name}")))
            .unwrap()
            .replace("/usr/bin/fleetdns", bin());
        let path = dir.join(name);
        fs::write(&path, unit).unwrap();
        path
    })
    .collect()
}

#[test]
fn systemd_units_verify_and_the_daemon_unit_is_well_hardened() {
    if !have("systemd-analyze") {
        return skip(
            "systemd units",
            "systemd-analyze is missing (Debian package systemd)",
        );
    }
    let dir = tempdir();
    let units = units_in(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("fleetdns"),
        "warnings about our units:\n{}",
        text(&out)
    );

    for (unit, worst) in [("fleetdns.service", 2.0), ("fleetdns-hosts.service", 3.5)] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.path().join(unit))
            .output()
            .unwrap();
        let report = text(&out);
        let score: f64 = report
            .split("Overall exposure level for ")
            .nth(1)
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no score:\n{report}"));
        eprintln!("systemd-analyze security {unit}: {score}");
        assert!(
            score <= worst,
            "{unit} exposure {score} > {worst}:\n{report}"
        );
    }
}

/// systemd's syscall groups: `@name` -> members (syscalls and `@groups`).
fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .unwrap();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') && t.starts_with('@') {
            current = Some(t.to_string());
            groups.entry(t.to_string()).or_default();
        } else if let Some(g) = &current {
            groups.get_mut(g).unwrap().push(t.to_string());
        }
    }
    groups
}

fn expand(groups: &BTreeMap<String, Vec<String>>, name: &str, out: &mut BTreeSet<String>) {
    for member in groups.get(name).into_iter().flatten() {
        if member.starts_with('@') {
            expand(groups, member, out);
        } else {
            out.insert(member.clone());
        }
    }
}

/// The pid of the only child of `parent`.
fn child_of(parent: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no child of {parent}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_daemon_makes_no_system_call_outside_its_unit_filter() {
    // systemd cannot run here (no init), so the filter is checked from the
    // other side: every call the daemon makes, traced, must be one the
    // unit allows: its SystemCallFilter= lines in order (@system-service,
    // minus @privileged and @resources, plus sched_setscheduler).
    if !have("strace") || !have("systemd-analyze") {
        return skip("syscall filter", "needs strace and systemd-analyze");
    }
    let probe = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return skip("syscall filter", "ptrace is not allowed here");
    }
    let groups = syscall_groups();
    let unit = fs::read_to_string(deploy("systemd/fleetdns.service")).unwrap();
    let mut allowed = BTreeSet::new();
    for value in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        for item in list.split_whitespace() {
            let mut set = BTreeSet::new();
            if item.starts_with('@') {
                expand(&groups, item, &mut set);
            } else {
                set.insert(item.to_string());
            }
            if deny {
                allowed.retain(|s| !set.contains(s));
            } else {
                allowed.extend(set);
            }
        }
    }
    assert!(allowed.contains("recvfrom") && !allowed.contains("setrlimit"));
    assert!(allowed.contains("sched_setscheduler") && !allowed.contains("sched_setattr"));

    let upstream = Dnsmasq::start();
    let dir = tempdir();
    let summary = dir.path().join("strace.txt");
    let hosts = dir.path().join("hosts");
    let d = Daemon::spawn_wrapped(
        &["strace", "-f", "-c", "-o", summary.to_str().unwrap()],
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--source",
            &file_source(&example_fleet()),
            "--upstream",
            &upstream.addr.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--export-hosts",
            hosts.to_str().unwrap(),
        ],
        &[
            ("NOTIFY_SOCKET", "@fleetdns-strace-test"),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    d.wait_for_log("zone is servable", 30);
    // every path a running daemon takes
    assert_eq!(short(d.udp, &["web-1.fleet.internal"]), ["10.20.1.11"]);
    assert_eq!(
        short(d.tcp, &["+tcp", "api.fleet.internal", "TXT"]).len(),
        2
    );
    assert_eq!(short(d.udp, &["upstream.test"]), ["192.0.2.7"]);
    assert!(d.dig(&["nosuch.fleet.internal"]).contains("NXDOMAIN"));
    assert_eq!(d.http_get("/metrics").0, 200);
    assert_eq!(d.http_get("/readyz").0, 200);
    let fleetdns = child_of(d.child.id());
    Command::new("kill")
        .args(["-HUP", &fleetdns.to_string()])
        .status()
        .unwrap();
    d.wait_for_log("refresh requested", 5);
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-TERM", &fleetdns.to_string()])
        .status()
        .unwrap();
    d.wait_for_log("stopped", 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = fs::read_to_string(&summary).unwrap_or_default();
        if report.contains("total") {
            break report;
        }
        assert!(Instant::now() < deadline, "no strace summary");
        std::thread::sleep(Duration::from_millis(50));
    };
    let used: BTreeSet<String> = report
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|w| !["total", "syscall", ""].contains(w))
        .map(str::to_string)
        .collect();
    assert!(
        used.contains("recvfrom") || used.contains("recvmsg"),
        "{report}"
    );
    let outside: Vec<&String> = used.difference(&allowed).collect();
    eprintln!("{} distinct system calls, all allowed", used.len());
    assert!(
        outside.is_empty(),
        "calls the unit's filter would refuse: {outside:?}\n{report}"
    );
}

/// A network namespace of the test's own, removed on drop, with its
/// `/etc/netns/NAME/` files that `ip netns exec` mounts over `/etc`.
/// `None` from [`Netns::create`] (with a SKIPPED line) where the test
/// cannot make one: not root, or no `ip netns`.
pub struct Netns {
    name: String,
    etc: PathBuf,
    children: Vec<Child>,
}

impl Netns {
    /// A new namespace with loopback up and a veth pair inside.
    pub fn create(test: &str) -> Option<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !is_root() || !have("ip") {
            skip(test, "needs root and iproute2 (ip netns)");
            return None;
        }
        let name = format!(
            "fdt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            skip(test, "`ip netns add` is not allowed here");
            return None;
        }
        let netns = Netns {
            etc: PathBuf::from(format!("/etc/netns/{name}")),
            name,
            children: Vec::new(),
        };
        assert!(netns.ip(&["link", "set", "lo", "up"]).status.success());
        // A host has an interface besides loopback; systemd-resolved
        // counts the network as down without one. A veth pair with both
        // ends inside (no dummy driver here); nothing leaves the namespace.
        for args in [
            &["link", "add", "fd0", "type", "veth", "peer", "name", "fd1"][..],
            &["addr", "add", "192.0.2.1/24", "dev", "fd0"],
            &["link", "set", "fd0", "up"],
            &["link", "set", "fd1", "up"],
        ] {
            let out = netns.ip(args);
            assert!(out.status.success(), "ip {args:?}: {}", text(&out));
        }
        fs::create_dir_all(&netns.etc).unwrap();
        // glibc's defaults, whatever this machine has
        fs::write(netns.etc.join("nsswitch.conf"), "hosts: files dns\n").unwrap();
        fs::write(netns.etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        Some(netns)
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap()
    }

    /// `ip netns exec NAME args...`
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap()
    }

    /// The command prefix that runs a program inside.
    pub fn wrapper(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }

    /// Starts a dnsmasq inside, with `args`, and waits until `name` answers `want` at `server`.
    fn dnsmasq(&mut self, args: &[&str], server: &str, name: &str, want: &str) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args(["--user=root", "--pid-file=", "--bind-interfaces"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq");
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.exec(&[
                "dig",
                &format!("@{server}"),
                "+short",
                "+time=1",
                "+tries=1",
                name,
            ]);
            if String::from_utf8_lossy(&out.stdout).trim() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq at {server} never answered {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The addresses glibc's getaddrinfo gives for NAME inside (`getent
    /// ahosts`, with this namespace's resolv.conf), then the canonical
    /// name, all on one line; "" when nothing resolves. (`ahostsv4` would
    /// ask for nothing: AI_ADDRCONFIG sees no IPv4 address but loopback.)
    fn getent(&self, name: &str) -> String {
        let out = self.exec(&["getent", "ahosts", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut addresses: Vec<&str> = Vec::new();
        let mut canonical = "";
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(ip) = fields.first() {
                if !addresses.contains(ip) {
                    addresses.push(ip);
                }
            }
            if let Some(c) = fields.get(2) {
                canonical = c;
            }
        }
        addresses.sort();
        if addresses.is_empty() {
            String::new()
        } else {
            format!("{} {canonical}", addresses.join(" "))
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = fs::remove_dir_all(&self.etc);
    }
}

/// fleetdns inside `netns`, on `listen`, serving the demo fleet.
fn fleetdns_in(netns: &Netns, listen: &str) -> Daemon {
    let d = Daemon::spawn_wrapped(
        &netns.wrapper(),
        &[
            "serve",
            "--listen",
            listen,
            "--source",
            &file_source(&example_fleet()),
        ],
        &[],
    );
    d.wait_for_log("zone is servable", 30);
    d
}

#[test]
fn resolv_conf_wiring_resolves_bare_names_and_falls_back_on_refused() {
    let Some(mut netns) = Netns::create("resolv.conf wiring") else {
        return;
    };
    // The VPC resolver's stand-in: a dnsmasq on 127.0.0.2 inside.
    netns.dnsmasq(
        &[
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.2",
            "--port=53",
            "--address=/upstream.test/192.0.2.7",
        ],
        "127.0.0.2",
        "upstream.test",
        "192.0.2.7",
    );
    let _d = fleetdns_in(&netns, "127.0.0.1:53");
    let shipped = fs::read_to_string(deploy("resolver/resolv.conf")).unwrap();
    assert!(shipped.contains("nameserver 169.254.169.253"));
    fs::write(
        netns.etc.join("resolv.conf"),
        shipped.replace("169.254.169.253", "127.0.0.2"),
    )
    .unwrap();

    let web = netns.getent("web-1");
    assert_eq!(web, "10.20.1.11 2600:1f18:abc:100::11 web-1.fleet.internal");
    let full = netns.getent("primary.db.fleet.internal");
    assert!(full.contains("primary.db.fleet.internal"), "{full:?}");
    // fleetdns has no upstreams: REFUSED, and glibc asks the next server
    let other = netns.getent("upstream.test");
    assert_eq!(other, "192.0.2.7 upstream.test");
}

#[test]
fn dnsmasq_wiring_sends_the_zone_to_fleetdns_on_another_port() {
    let Some(mut netns) = Netns::create("dnsmasq wiring") else {
        return;
    };
    let _d = fleetdns_in(&netns, "127.0.0.1:5353");
    let conf = deploy("resolver/dnsmasq-fleetdns.conf");
    netns.dnsmasq(
        &[
            &format!("--conf-file={}", conf.display()),
            "--no-resolv",
            "--no-hosts",
            "--listen-address=127.0.0.1",
            "--port=53",
        ],
        "127.0.0.1",
        "web-1.fleet.internal",
        "10.20.1.11",
    );
    fs::write(
        netns.etc.join("resolv.conf"),
        "nameserver 127.0.0.1\nsearch fleet.internal\n",
    )
    .unwrap();
    let web = netns.getent("web-1");
    assert_eq!(web, "10.20.1.11 2600:1f18:abc:100::11 web-1.fleet.internal");
}

/// systemd-resolved, from Debian's package but not installed (installing
/// it would take over this machine's /etc/resolv.conf): scripts/test
/// unpacks it under the target dir and names it in FLEETDNS_TEST_RESOLVED.
fn resolved_binary() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("FLEETDNS_TEST_RESOLVED")?);
    path.exists().then_some(path)
}

#[test]
fn systemd_resolved_wiring_routes_the_zone_to_fleetdns() {
    let test = "systemd-resolved wiring";
    let Some(resolved) = resolved_binary() else {
        return skip(test, "no systemd-resolved binary (FLEETDNS_TEST_RESOLVED)");
    };
    let Some(netns) = Netns::create(test) else {
        return;
    };
    let _d = fleetdns_in(&netns, "127.0.0.1:53");
    // resolved in a private mount namespace inside the network namespace:
    // its config dir holds only the shipped drop-in, its runtime dir is a
    // tmpfs, and it serves its stub on 127.0.0.53 there.
    let dir = tempdir();
    let conf_d = dir.path().join("resolved.conf.d");
    fs::create_dir_all(&conf_d).unwrap();
    fs::copy(
        deploy("resolver/resolved-fleetdns.conf"),
        conf_d.join("fleetdns.conf"),
    )
    .unwrap();
    fs::write(
        dir.path().join("resolved.conf"),
        "[Resolve]\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\n",
    )
    .unwrap();
    let script = r#"set -e
mkdir -p /etc/systemd
mount --bind "$1" /etc/systemd/resolved.conf 2>/dev/null || { touch /etc/systemd/resolved.conf; mount --bind "$1" /etc/systemd/resolved.conf; }
mkdir -p /etc/systemd/resolved.conf.d
mount --bind "$2" /etc/systemd/resolved.conf.d
mkdir -p /run/systemd
mount -t tmpfs tmpfs /run/systemd
mount --bind "$4" /etc/passwd
mount --bind "$5" /etc/group
exec "$3""#;
    // it drops privileges to its own user, which this machine may not have
    let passwd = dir.path().join("passwd");
    let group = dir.path().join("group");
    let mut users = fs::read_to_string("/etc/passwd").unwrap();
    users.push_str("systemd-resolve:x:64990:64990::/:/usr/sbin/nologin\n");
    fs::write(&passwd, users).unwrap();
    let mut groups = fs::read_to_string("/etc/group").unwrap();
    groups.push_str("systemd-resolve:x:64990:\n");
    fs::write(&group, groups).unwrap();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns.name,
            "unshare",
            "-m",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(dir.path().join("resolved.conf"))
        .arg(&conf_d)
        .arg(&resolved)
        .arg(&passwd)
        .arg(&group)
        .env("SYSTEMD_LOG_LEVEL", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    fs::write(
        netns.etc.join("resolv.conf"),
        "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let web = loop {
        let web = netns.getent("web-1.fleet.internal");
        if !web.is_empty() || Instant::now() > deadline {
            break web;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // a routing domain, not a search domain: bare names are not expanded
    let bare = netns.getent("web-1");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        bare, "",
        "Domains=~ must not make fleet.internal a search domain"
    );
    assert!(
        web.starts_with("10.20.1.11 "),
        "{web:?}; systemd-resolved said:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cloud_init_installs_a_config_that_checks_against_the_api() {
    let python = venv().join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(deploy("cloud-init.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let raw = fs::read_to_string(deploy("cloud-init.yaml")).unwrap();
    assert!(raw.starts_with("#cloud-config\n"));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = |path: &str| -> String {
        doc["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .and_then(|f| f["content"].as_str())
            .unwrap_or_else(|| panic!("cloud-init writes no {path}"))
            .to_string()
    };
    // the resolved drop-in is the shipped one, comments aside
    let settings = |t: &str| -> Vec<String> {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let shipped = fs::read_to_string(deploy("resolver/resolved-fleetdns.conf")).unwrap();
    assert_eq!(
        settings(&file("/etc/systemd/resolved.conf.d/fleetdns.conf")),
        settings(&shipped)
    );
    let commands = doc["runcmd"].to_string();
    assert!(
        commands.contains("\"enable\",\"--now\",\"fleetdns.service\""),
        "{commands}"
    );

    // the config it writes works: `fleetdns check` against moto, with the
    // region and endpoint from the environment as on EC2 (instance metadata)
    let moto = Moto::start();
    moto.seed(&basic_fleet());
    let dir = tempdir();
    let config = dir.path().join("fleetdns.toml");
    fs::write(&config, file("/etc/fleetdns/fleetdns.toml")).unwrap();
    let mut command = Command::new(bin());
    aws_test_env(&mut command);
    command
        // the port is the test's: others may hold 127.0.0.1:53 meanwhile
        .args([
            "check",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ])
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_EC2", &moto.endpoint);
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok: zone fleet.internal. from ec2"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_iam_policy_allows_only_what_fleetdns_calls() {
    let policy: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(deploy("iam-policy.json")).unwrap()).unwrap();
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow");
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_string()));
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(
        actions,
        BTreeSet::from([
            "ec2:DescribeInstances".to_string(),
            "sqs:DeleteMessage".to_string(),
            "sqs:GetQueueAttributes".to_string(),
            "sqs:ReceiveMessage".to_string(),
            "sts:AssumeRole".to_string()
        ])
    );
}

/// `deploy/events/fleetdns-events.yaml`.
fn events_template() -> PathBuf {
    deploy("events/fleetdns-events.yaml")
}

#[test]
fn the_events_template_passes_cfn_lint() {
    // cfn-lint (pinned in tests/moto/requirements.txt) exits 0 only when it
    // finds neither errors nor warnings
    let out = Command::new(venv().join("bin/cfn-lint"))
        .arg(events_template())
        .output()
        .expect("run cfn-lint from the test venv");
    assert!(out.status.success(), "cfn-lint:\n{}", text(&out));
}

/// An event as EventBridge writes it: from `source`, in `region`, about
/// the EC2 resource `resource` (`instance/i-...`, `volume/vol-...`).
fn aws_event(
    source: &str,
    detail_type: &str,
    region: &str,
    resource: &str,
    detail: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": detail_type,
        "source": source,
        "account": "123456789012",
        "time": "2026-12-04T12:00:00Z",
        "region": region,
        "resources": [format!("arn:aws:ec2:{region}:123456789012:{resource}")],
        "detail": detail,
    })
}

/// "EC2 Instance State-change Notification" for instance `id`.
fn state_change(region: &str, id: &str) -> serde_json::Value {
    aws_event(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        region,
        &format!("instance/{id}"),
        serde_json::json!({"instance-id": id, "state": "stopping"}),
    )
}

/// "Tag Change on Resource" for `resource` (`instance/i-...`,
/// `volume/vol-...`), its Name tag set to the resource itself.
fn tag_change(region: &str, resource: &str) -> serde_json::Value {
    let resource_type = resource.split('/').next().unwrap_or_default();
    aws_event(
        "aws.tag",
        "Tag Change on Resource",
        region,
        resource,
        serde_json::json!({
            "changed-tag-keys": ["Name"],
            "service": "ec2",
            "resource-type": resource_type,
            "version": 3,
            "tags": {"Name": resource}
        }),
    )
}

#[test]
fn the_events_rules_deliver_instance_state_and_tag_changes_and_nothing_else() {
    use fleetdns::inventory::events::{parse, Kind, Parsed};

    // tests/moto/events_rules.py makes, in moto, the queue and the
    // template's two rules with its own event patterns: in us-east-1
    // sending to the queue (Mode queue), in eu-west-1 forwarding to
    // us-east-1's default bus (Mode forward). Then it puts each event on
    // the default bus of its region and says what the queue got.
    let ours = [
        (Kind::State, "us-east-1", "i-0aaaaaaaaaaaaaaa1"),
        (Kind::Tag, "us-east-1", "i-0aaaaaaaaaaaaaaa2"),
        (Kind::State, "eu-west-1", "i-0aaaaaaaaaaaaaaa3"),
        (Kind::Tag, "eu-west-1", "i-0aaaaaaaaaaaaaaa4"),
    ];
    let event = |kind: Kind, region: &str, id: &str| match kind {
        Kind::State => state_change(region, id),
        Kind::Tag => tag_change(region, &format!("instance/{id}")),
    };
    // EC2's other events, and tag changes of other resources
    let volume_created = |region: &str, id: &str| {
        aws_event(
            "aws.ec2",
            "EBS Volume Notification",
            region,
            &format!("volume/{id}"),
            serde_json::json!({"event": "createVolume", "result": "available", "volume": id}),
        )
    };
    let foreign = [
        volume_created("us-east-1", "vol-01234567890abcdef"),
        volume_created("eu-west-1", "vol-0fedcba9876543210"),
        tag_change("us-east-1", "volume/vol-01234567890abcdef"),
        tag_change("eu-west-1", "volume/vol-0fedcba9876543210"),
        aws_event(
            "aws.ec2",
            "EC2 Spot Instance Interruption Warning",
            "us-east-1",
            "instance/i-0aaaaaaaaaaaaaaa5",
            serde_json::json!({"instance-id": "i-0aaaaaaaaaaaaaaa5", "instance-action": "stop"}),
        ),
    ];
    let events: Vec<serde_json::Value> = ours
        .iter()
        .map(|&(kind, region, id)| event(kind, region, id))
        .chain(foreign)
        .collect();

    let moto = Moto::start();
    let mut child = Command::new(venv().join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto/events_rules.py"))
        .args(["--endpoint", &moto.endpoint, "deliver"])
        .arg(events_template())
        .args(["us-east-1", "eu-west-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run events_rules.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::Value::Array(events).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "events_rules.py: {}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["rules"], serde_json::json!(["StateRule", "TagRule"]));
    let received = result["received"].as_array().unwrap();

    // each of ours arrived once, and nothing else did (told apart by
    // `detail`, which moto keeps whole across the forward)
    let mut left: Vec<&serde_json::Value> = received.iter().collect();
    for &(kind, region, id) in &ours {
        let want = event(kind, region, id);
        let at = left
            .iter()
            .position(|body| body["detail"] == want["detail"])
            .unwrap_or_else(|| panic!("not delivered: {want}\nthe queue got: {received:?}"));
        left.remove(at);
    }
    assert!(left.is_empty(), "delivered, but not ours: {left:?}");

    // and each body from the home region is an event fleetdns reads, for
    // the right instance. (moto forwards an event between buses as a new
    // one: its region becomes the home region and its resources are lost,
    // so a forwarded tag change would read as malformed here; AWS delivers
    // the event as it was, region and resources included.)
    for &(kind, region, id) in ours.iter().filter(|o| o.1 == "us-east-1") {
        let want = event(kind, region, id);
        let body = received
            .iter()
            .find(|body| body["detail"] == want["detail"])
            .unwrap();
        match parse(&body.to_string()) {
            Parsed::Event(e) => {
                assert_eq!(e.kind, kind, "{body}");
                assert_eq!(e.instance_id, id, "{body}");
                assert_eq!(e.region.as_deref(), Some(region), "{body}");
            }
            other => panic!("{other:?} for {body}"),
        }
    }
}

/// The alerting rules in `deploy/prometheus/` load in the real promtool,
/// their unit tests (`fleetdns.rules.test.yml`: each alert fires when it
/// should and not before) pass, and every metric they use is one fleetdns
/// exports, as the README's metrics table lists them.
#[test]
fn the_alerting_rules_load_and_pass_their_tests_in_promtool() {
    assert!(
        have("promtool"),
        "promtool is missing (scripts/test installs Debian's prometheus package)"
    );
    let dir = deploy("prometheus");
    for args in [
        ["check", "rules", "fleetdns.rules.yml"],
        ["test", "rules", "fleetdns.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(out.status.success(), "promtool {args:?}:\n{}", text(&out));
        assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
    }
    let rules = std::fs::read_to_string(dir.join("fleetdns.rules.yml")).unwrap();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut used = BTreeSet::new();
    for (i, _) in rules.match_indices("fleetdns_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        used.insert(name);
    }
    assert!(used.len() >= 6, "{used:?}");
    for name in &used {
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not a metric the README lists"
        );
    }
}

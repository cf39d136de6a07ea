//! The hosts-file export: real files in temp dirs, the real binary, and
//! glibc itself (through `getent`, in a private mount namespace) as the
//! reader where the tests run as root.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::ec2::{basic_fleet, ip_of, write_config};
use crate::harness::*;
use crate::moto::Moto;

const BEGIN: &str = "# BEGIN fleetdns (managed, do not edit)";
const END: &str = "# END fleetdns";

fn hosts(args: &[&str]) -> Output {
    let mut full = vec!["hosts"];
    full.extend_from_slice(args);
    run(&full)
}

/// Exports `inventory` into `target`; asserts success and returns stdout.
fn export_ok(inventory: &Path, target: &Path, extra: &[&str]) -> String {
    let out = export(inventory, target, extra);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// `fleetdns hosts --source file:INVENTORY --output TARGET EXTRA...`.
fn export(inventory: &Path, target: &Path, extra: &[&str]) -> Output {
    let source = file_source(inventory);
    let mut args = vec!["--source", &source, "--output", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    hosts(&args)
}

/// The lines between the markers.
fn block_of(text: &str) -> Vec<String> {
    let start = text.find(BEGIN).expect("BEGIN") + BEGIN.len();
    let end = text.find(END).expect("END");
    text[start..end]
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Each line as glibc reads it: comment cut at `#`, fields split on blanks.
fn glibc_lines(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split([' ', '\t', '\r']).filter(|f| !f.is_empty());
            let ip = fields.next()?.to_string();
            Some((ip, fields.map(str::to_string).collect()))
        })
        .collect()
}

#[test]
fn hosts_lines_outside_block_survive_and_the_summary_counts_changes() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    write_inventory(
        &inventory,
        &[
            Fake::running(1, Some("web-1")),
            Fake::running(2, Some("db")),
        ],
    );
    let target = dir.path().join("hosts");
    let original = "# static entries\r\n127.0.0.1\tlocalhost\r\n\r\n::1 ip6-localhost # v6";
    fs::write(&target, original).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o604)).unwrap();
    let as_root = is_root();
    if as_root {
        std::os::unix::fs::chown(&target, Some(4321), Some(4322)).unwrap();
    }

    let out = export_ok(&inventory, &target, &[]);
    assert_eq!(
        out.trim(),
        format!(
            "{}: 4 added, 0 changed, 0 removed (4 names, 4 lines)",
            target.display()
        )
    );
    let text = fs::read_to_string(&target).unwrap();
    // the original bytes are a prefix; a CRLF file gets a CRLF block
    assert!(text.starts_with(original), "{text:?}");
    assert!(text.contains(&format!("\r\n{BEGIN}\r\n")), "{text:?}");
    assert_eq!(
        block_of(&text),
        [
            "10.9.0.3\tdb.fleet.internal db",
            "10.9.0.2\ti-00000000000000001.fleet.internal i-00000000000000001",
            "10.9.0.3\ti-00000000000000002.fleet.internal i-00000000000000002",
            "10.9.0.2\tweb-1.fleet.internal web-1",
        ]
    );
    let meta = fs::metadata(&target).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o604);
    if as_root {
        assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    }

    // nothing changed: nothing written (same inode, same bytes)
    let inode = meta.ino();
    let out = export_ok(&inventory, &target, &[]);
    assert!(out.contains("unchanged (4 names, 4 lines)"), "{out}");
    assert_eq!(fs::metadata(&target).unwrap().ino(), inode);

    // the user edits around the block; a rename and a move come through
    let edited = format!("10.1.1.1 mine web-2\r\n{text}# trailing note\r\n");
    fs::write(&target, &edited).unwrap();
    let mut moved = Fake::running(2, Some("db"));
    moved.ipv4 = vec!["10.9.9.9".into()];
    write_inventory(&inventory, &[Fake::running(1, Some("web-2")), moved]);
    let out = export(&inventory, &target, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 added, 2 changed, 1 removed"),
        "{}",
        stdout(&out)
    );
    // the user's own line for web-2 comes first: reported
    assert!(
        stderr(&out).contains("line 1 maps web-2 to 10.1.1.1 and comes first"),
        "{}",
        stderr(&out)
    );
    let now = fs::read_to_string(&target).unwrap();
    assert!(
        now.starts_with("10.1.1.1 mine web-2\r\n# static entries\r\n"),
        "{now:?}"
    );
    assert!(
        now.ends_with(&format!("{END}\r\n# trailing note\r\n")),
        "{now:?}"
    );
    assert!(now.contains("10.9.9.9\tdb.fleet.internal db\r\n"));
    assert!(!now.contains("web-1"));
    // one backup: the previous content
    let backup = PathBuf::from(format!("{}.fleetdns.bak", target.display()));
    assert_eq!(fs::read_to_string(&backup).unwrap(), edited);
}

/// Whether `unshare -m` works here (root, and mount namespaces allowed);
/// prints why not otherwise.
fn can_unshare(test: &str) -> bool {
    let ok = is_root()
        && Command::new("unshare")
            .args(["-m", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED part of {test}: needs root and `unshare -m` (private mount namespace)");
    }
    ok
}

/// What glibc answers for `names` with `file` as /etc/hosts (`getent
/// ahosts`, files only, in a private mount namespace): name -> addresses.
fn glibc_answers(file: &Path, names: &[&str]) -> Vec<(String, BTreeSet<String>)> {
    let script = r#"mount --bind "$1" /etc/hosts || exit 9; shift
for n in "$@"; do echo "== $n"; getent -s files ahosts "$n"; done; exit 0"#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(file)
        .args(names)
        .output()
        .expect("unshare");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut answers: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in stdout(&out).lines() {
        if let Some(name) = line.strip_prefix("== ") {
            answers.push((name.to_string(), BTreeSet::new()));
        } else if let (Some(last), Some(ip)) = (answers.last_mut(), line.split_whitespace().next())
        {
            last.1.insert(ip.to_string());
        }
    }
    answers
}

#[test]
fn hostile_tag_values_never_yield_an_injected_or_invalid_line() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    let long = "x".repeat(300);
    let hostile = [
        "evil\n10.6.6.6 victim",
        "# comment",
        "a b\tc",
        "localhost",
        long.as_str(),
        "ünïcödé-host",
        "10.0.0.1",
        "web-1 127.0.0.1",
        "-lead.",
        "\r\nrogue",
    ];
    let fakes: Vec<Fake> = hostile
        .iter()
        .enumerate()
        .map(|(i, name)| Fake::running(i as u32 + 1, Some(name)))
        .collect();
    write_inventory(&inventory, &fakes);
    let target = dir.path().join("hosts");
    fs::write(
        &target,
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    )
    .unwrap();
    export_ok(&inventory, &target, &[]);
    let text = fs::read_to_string(&target).unwrap();

    let block = block_of(&text);
    assert_eq!(block.len(), 2 * hostile.len(), "{block:#?}");
    let plain = |n: &str| {
        !n.starts_with(['-', '.'])
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    for (ip, names) in glibc_lines(&block.join("\n")) {
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
        assert!(ip.starts_with("10.9."), "an address from a tag: {ip}");
        assert!((1..=2).contains(&names.len()), "{names:?}");
        assert!(names[0].ends_with(".fleet.internal"), "{names:?}");
        for name in &names {
            assert!(plain(name) && name.len() <= 253, "{name:?}");
            // no name of its own for injected text, no local or numeric bare name
            assert!(
                !["localhost", "victim", "10.0.0.1", "127.0.0.1"].contains(&name.as_str()),
                "{name}"
            );
        }
    }
    // the whole file: only the two static lines and the block's lines
    assert_eq!(glibc_lines(&text).len(), 2 + block.len());
    assert!(text.contains("\tlocalhost.fleet.internal\n"), "{text}");

    if can_unshare("hostile_tag_values_never_yield_an_injected_or_invalid_line") {
        let answers = glibc_answers(
            &target,
            &[
                "localhost",
                "victim",
                "rogue",
                "evil-10.6.6.6-victim",
                "web-1-127.0.0.1",
            ],
        );
        let get = |n: &str| {
            answers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert!(
            get("localhost")
                .iter()
                .all(|ip| ip == "127.0.0.1" || ip == "::1"),
            "{answers:?}"
        );
        assert!(get("victim").is_empty(), "{answers:?}");
        // "\r\nrogue" is just the name `rogue`, of its own instance
        assert_eq!(get("rogue"), BTreeSet::from(["10.9.0.11".to_string()]));
        assert_eq!(
            get("evil-10.6.6.6-victim"),
            BTreeSet::from(["10.9.0.2".to_string()])
        );
        assert_eq!(
            get("web-1-127.0.0.1"),
            BTreeSet::from(["10.9.0.9".to_string()])
        );
    }
}

#[test]
fn an_empty_fleet_does_not_wipe_the_block_unless_allowed() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    write_inventory(&inventory, &[Fake::running(1, Some("web-1"))]);
    let target = dir.path().join("hosts");
    export_ok(&inventory, &target, &[]);
    let before = fs::read(&target).unwrap();

    write_inventory(&inventory, &[]);
    let out = export(&inventory, &target, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("refusing to replace 2 fleetdns lines with an empty block"),
        "{err}"
    );
    assert!(err.contains("--allow-empty"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), before);

    let out = export_ok(&inventory, &target, &["--allow-empty"]);
    assert!(out.contains("0 added, 0 changed, 2 removed"), "{out}");
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        format!("{BEGIN}\n{END}\n")
    );
}

#[test]
fn broken_markers_are_refused_and_nothing_changes() {
    let dir = tempdir();
    let inventory = example_fleet();
    for content in [
        format!("a\n{BEGIN}\n{END}\nb\n{BEGIN}\n{END}\n"),
        format!("127.0.0.1 localhost\n{BEGIN}\n10.0.0.1 x\n"),
    ] {
        let target = dir.path().join("hosts");
        fs::write(&target, &content).unwrap();
        let out = export(&inventory, &target, &[]);
        assert_eq!(out.status.code(), Some(1), "{content}");
        let err = stderr(&out);
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), content);
        assert!(!Path::new(&format!("{}.fleetdns.bak", target.display())).exists());
    }
}

#[test]
fn dash_prints_the_block() {
    let out = hosts(&["--source", &file_source(&example_fleet()), "--output", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("{BEGIN}\n")) && text.ends_with(&format!("{END}\n")));
    assert!(
        text.contains("10.20.1.11\tweb-1.fleet.internal web-1\n"),
        "{text}"
    );
}

#[test]
fn a_bind_mounted_hosts_file_is_rewritten_in_place() {
    if !can_unshare("a_bind_mounted_hosts_file_is_rewritten_in_place") {
        return;
    }
    // As in a container: the file is a bind mount, so rename() over it
    // fails with EBUSY, and fleetdns must write into it instead.
    let dir = tempdir();
    let real = dir.path().join("real-hosts");
    let mount_point = dir.path().join("etc-hosts");
    fs::write(&real, "127.0.0.1 localhost\n").unwrap();
    fs::write(&mount_point, "not the real file\n").unwrap();
    let script = r#"mount --bind "$1" "$2" || exit 9; exec "$3" hosts --source "$4" --output "$2""#;
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(&real)
        .arg(&mount_point)
        .arg(bin())
        .arg(file_source(&example_fleet()))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rewritten in place"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("Device or resource busy"),
        "{}",
        stderr(&out)
    );
    let text = fs::read_to_string(&real).unwrap();
    assert!(
        text.starts_with("127.0.0.1 localhost\n# BEGIN fleetdns"),
        "{text}"
    );
    assert!(text.contains("web-1.fleet.internal web-1"));
    // outside the namespace the mount point was never touched, and no temp file is left
    assert_eq!(
        fs::read_to_string(&mount_point).unwrap(),
        "not the real file\n"
    );
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["etc-hosts", "etc-hosts.fleetdns.bak", "real-hosts"]);
}

/// Appends a line as a cooperating editor does: lock the file, make sure
/// it is still the file at `path` (not one replaced meanwhile), append.
fn append_locked(path: &Path, line: &str) {
    loop {
        let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
        f.lock().unwrap();
        let held = f.metadata().unwrap().ino();
        if fs::metadata(path).unwrap().ino() != held {
            continue;
        }
        f.write_all(line.as_bytes()).unwrap();
        return;
    }
}

#[test]
fn concurrent_writers_do_not_lose_updates() {
    let dir = tempdir();
    let target = dir.path().join("hosts");
    fs::write(&target, "127.0.0.1 localhost\n").unwrap();
    let writers = 6;
    let inventories: Vec<PathBuf> = (0..writers)
        .map(|w| {
            let p = dir.path().join(format!("fleet-{w}.json"));
            let name = format!("writer-{w}");
            write_inventory(&p, &[Fake::running(w + 1, Some(&name))]);
            p
        })
        .collect();
    let started = Instant::now();
    let mut procs: Vec<std::process::Child> = Vec::new();
    for round in 0..3 {
        for inv in &inventories {
            procs.push(
                Command::new(bin())
                    .args(["hosts", "--source", &file_source(inv), "--output"])
                    .arg(&target)
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        // an editor appends its own lines while the exports run
        for i in 0..5 {
            append_locked(&target, &format!("10.99.{round}.{i} extra-{round}-{i}\n"));
        }
    }
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "{} concurrent exports in {:?}",
        3 * writers,
        started.elapsed()
    );
    let text = fs::read_to_string(&target).unwrap();
    for round in 0..3 {
        for i in 0..5 {
            assert!(
                text.contains(&format!("10.99.{round}.{i} extra-{round}-{i}\n")),
                "lost an edit:\n{text}"
            );
        }
    }
    assert_eq!(text.matches(BEGIN).count(), 1, "{text}");
    let block = block_of(&text);
    assert_eq!(block.len(), 2, "{block:?}");
    assert!(block.iter().any(|l| l.contains("writer-")), "{block:?}");
    assert!(text.starts_with("127.0.0.1 localhost\n"));
    // no temp files left behind
    let stray: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn serve_export_hosts_follows_every_change() {
    let dir = tempdir();
    let inventory = dir.path().join("fleet.json");
    write_inventory(&inventory, &[Fake::running(1, Some("alpha"))]);
    let target = dir.path().join("hosts");
    fs::write(&target, "127.0.0.1 localhost\n").unwrap();
    let d = Daemon::start(&[
        "--source",
        &file_source(&inventory),
        "--export-hosts",
        target.to_str().unwrap(),
    ]);
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(&target).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared:\n{text}\nlog:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("10.9.0.2\talpha.fleet.internal alpha\n");
    write_inventory(&inventory, &[Fake::running(1, Some("beta"))]);
    d.signal("HUP");
    let text = wait_for("10.9.0.2\tbeta.fleet.internal beta\n");
    assert!(!text.contains("alpha"), "{text}");
    assert!(text.starts_with("127.0.0.1 localhost\n"));
    d.wait_for_log("hosts export:", 5);
}

#[test]
fn from_state_works_with_the_api_unreachable() {
    let dir = tempdir();
    let state = tempdir();
    let (config, web1) = {
        let moto = Moto::start();
        let seeded = moto.seed(&basic_fleet());
        let config = write_config(dir.path(), &moto.endpoint, "regions = [\"us-east-1\"]", "");
        let d = Daemon::start_env(
            &["--config", config.to_str().unwrap()],
            &[("STATE_DIRECTORY", state.path().to_str().unwrap())],
        );
        wait_for_state(state.path());
        drop(d);
        (config, ip_of(&seeded, "us-east-1", "web-1"))
    }; // moto is gone: its endpoint refuses connections now

    let target = dir.path().join("hosts");
    let out = hosts(&[
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "--from-state",
        "--output",
        target.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&target).unwrap();
    assert!(
        text.contains(&format!("{}\tweb-1.fleet.internal web-1\n", web1[0])),
        "{text}"
    );

    // and without --from-state the same command needs the API
    let out = hosts(&[
        "--config",
        config.to_str().unwrap(),
        "--output",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

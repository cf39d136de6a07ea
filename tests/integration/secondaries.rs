//! The real NSD, Knot and BIND from Debian as secondaries of fleetdns.
//!
//! Each runs as a plain process on a loopback port with the config from
//! `deploy/secondaries/` (the one the README points operators at), its
//! placeholders filled in: a directory of its own, its port, and the
//! primary's port. None needs root or port 53. Their logs are kept and
//! printed when a test fails.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{dig, quiet_port, tempdir};

/// The test key, as in the configs: 32 bytes 0..31.
pub const KEY_SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// `dig -y` / `kdig -y` form of the test key.
pub const DIG_KEY: &str = "hmac-sha256:xfr-key:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nsd,
    Knot,
    Bind,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Nsd, Kind::Knot, Kind::Bind];

    fn config_name(self) -> &'static str {
        match self {
            Kind::Nsd => "nsd.conf",
            Kind::Knot => "knot.conf",
            Kind::Bind => "named.conf",
        }
    }
}

/// A running secondary for `fleet.internal`.
pub struct Secondary {
    pub kind: Kind,
    /// Where it answers.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The repository's `deploy/secondaries/`.
fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/secondaries")
}

impl Secondary {
    /// A free port for a secondary, chosen before fleetdns starts (its
    /// NOTIFY targets name it).
    pub fn port() -> u16 {
        quiet_port()
    }

    /// Starts `kind` on `port` as a secondary of fleetdns at `primary_port`.
    pub fn start(kind: Kind, port: u16, primary_port: u16) -> Secondary {
        Self::start_with_zones(kind, port, primary_port, &[])
    }

    /// [`Secondary::start`], a secondary for `zones` too (reverse zones),
    /// each configured as its `fleet.internal` is.
    pub fn start_with_zones(kind: Kind, port: u16, primary_port: u16, zones: &[&str]) -> Secondary {
        let dir = tempdir();
        let mut template = std::fs::read_to_string(configs().join(kind.config_name()))
            .expect("deploy/secondaries has the config");
        for zone in zones {
            template.push_str(&match kind {
                Kind::Knot => format!(
                    "  - domain: {zone}\n    master: fleetdns\n    acl: [notify_from_fleetdns, harness_transfer]\n    zonefile-load: none\n    zonefile-sync: -1\n    journal-content: none\n"
                ),
                Kind::Nsd => format!(
                    "zone:\n    name: \"{zone}\"\n    request-xfr: 127.0.0.1@@PRIMARY_PORT@ xfr-key\n    allow-notify: 127.0.0.1 xfr-key\n    provide-xfr: 127.0.0.1 xfr-key\n"
                ),
                Kind::Bind => format!(
                    "zone \"{zone}\" {{\n    type secondary;\n    primaries {{ 127.0.0.1 port @PRIMARY_PORT@ key \"xfr-key\"; }};\n}};\n"
                ),
            });
        }
        let config = template
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@PRIMARY_PORT@", &primary_port.to_string())
            .replace("@PORT@", &port.to_string());
        std::fs::write(dir.path().join(kind.config_name()), config).unwrap();
        let mut s = Secondary {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let conf = dir.join(self.kind.config_name());
        let conf = conf.to_str().unwrap();
        let (program, args): (&str, Vec<&str>) = match self.kind {
            Kind::Nsd => ("/usr/sbin/nsd", vec!["-d", "-c", conf]),
            Kind::Knot => ("/usr/sbin/knotd", vec!["-c", conf]),
            Kind::Bind => ("/usr/sbin/named", vec!["-g", "-c", conf]),
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program}: {e} (scripts/test installs nsd, knot and bind9)")
            });
        self.child = Some(child);
    }

    /// Its log so far (NSD writes a file of its own, the others stderr).
    pub fn log(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        if self.kind == Kind::Nsd {
            text.push_str(
                &std::fs::read_to_string(self.dir.path().join("nsd.log")).unwrap_or_default(),
            );
        }
        text
    }

    /// The serial it serves, if it serves the zone.
    pub fn serial(&self) -> Option<u32> {
        self.serial_of("fleet.internal")
    }

    /// The serial it serves for `zone`, if it serves it.
    pub fn serial_of(&self, zone: &str) -> Option<u32> {
        let out = dig(self.addr, &["+short", "+norec", zone, "SOA"]);
        out.split_whitespace().nth(2)?.parse().ok()
    }

    /// Waits until it serves `serial` (or panics with its log after `secs`).
    pub fn wait_for_serial(&self, serial: u32, secs: f64) -> Duration {
        self.wait_for_serial_of("fleet.internal", serial, secs)
    }

    /// Waits until it serves `serial` for `zone`.
    pub fn wait_for_serial_of(&self, zone: &str, serial: u32, secs: f64) -> Duration {
        let start = Instant::now();
        loop {
            if self.serial_of(zone) == Some(serial) {
                return start.elapsed();
            }
            if start.elapsed() > Duration::from_secs_f64(secs) {
                panic!(
                    "{:?} serves {:?}, not {serial}, after {secs} s; its log:\n{}",
                    self.kind,
                    self.serial(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its whole zone, by a TSIG-signed AXFR from it.
    pub fn zone(&self) -> BTreeSet<String> {
        self.zone_named("fleet.internal")
    }

    /// Its whole `zone`, by a TSIG-signed AXFR from it.
    pub fn zone_named(&self, zone: &str) -> BTreeSet<String> {
        zone_records(&dig(self.addr, &["+time=10", "-y", DIG_KEY, zone, "AXFR"]))
    }

    /// Stops it (SIGSTOP): it neither answers nor refreshes, keeping its
    /// zone, until [`Secondary::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets it run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{sig}"), &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
}

impl Drop for Secondary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {:?} log ----\n{}", self.kind, self.log());
        }
    }
}

/// The records of a `dig AXFR` output as a set of normalized lines (fields
/// separated by one space), TSIG records and comments left out.
pub fn zone_records(dig_output: &str) -> BTreeSet<String> {
    dig_output
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.contains(" TSIG "))
        .collect()
}

//! Differential conformance: the same wire queries to fleetdns and to Knot
//! DNS serving the same zones, every difference in the replies either
//! explained in [`EXCEPTIONS`] or a failure (issue 15, item 5).
//!
//! Knot is the reference because it is a strict, widely deployed
//! authoritative server that needs no root, starts in a fraction of a
//! second and is already installed for the zone-transfer tests. Its zones
//! are written from `fleetdns list --json` (names, addresses, instances,
//! rules), the inventory (availability zone and instance type, for TXT) and
//! fleetdns's own SOA and NS answers (serial, names, timers, TTLs), so the
//! data are equal by construction and only behaviour can differ. Both are
//! configured alike: 1232-byte UDP payload, the same TCP idle timeout, no
//! NSID or CHAOS identity, no forwarding (fleetdns has no upstreams, so
//! names outside its zones are REFUSED, as Knot refuses them).
//!
//! Queries are built byte by byte ([`Query`], or raw bytes for junk) so that
//! any field can be wrong. Replies are parsed strictly by hand ([`parse`]):
//! every count honoured, names decompressed with pointers only backwards
//! and never into the header, RDATA lengths exact, no byte trailing. Each
//! reply becomes [`Field`]s compared exactly: whether there was a parsable
//! reply, id, opcode, flags (QR AA TC RD RA Z AD CD), the full rcode (with
//! EDNS's extended bits), the question, the answer, authority and
//! additional sections as sorted lists of records, and EDNS (payload size,
//! version, DO and the other flag bits, options in order). Names keep
//! their case: both servers answer with the query's spelling of the name
//! asked, and where they spell a name differently (the SOA of a negative
//! answer) the exception says so.
//!
//! An exception names a case (or a `*` pattern of cases), the field, and a
//! piece of each server's rendering of that field, so that only the
//! difference it describes is excused. One that no longer matches fails
//! too: a fixed defect must leave the list.
//!
//! The world (one fleetdns, one knotd, their temp dirs) starts once, for
//! the first test that needs it, and is shared: statics are never dropped,
//! so an `atexit` handler stops both servers when the test binary exits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{example_fleet, file_source, quiet_port, run, stderr, tempdir, Daemon};

/// The forward zone both serve.
const ZONE: &str = "fleet.internal.";
/// The IPv4 reverse zone both serve (10.20.0.0/16, the demo fleet's).
const REVERSE_V4: &str = "20.10.in-addr.arpa.";
/// The IPv6 reverse zone both serve (2600:1f18:abc::/48).
const REVERSE_V6: &str = "c.b.a.0.8.1.f.1.0.0.6.2.ip6.arpa.";
/// `[tcp] idle_timeout_secs` of fleetdns and Knot's `tcp-idle-timeout`.
const IDLE_TIMEOUT_SECS: u64 = 10;
/// fleetdns's `MAX_UDP_PAYLOAD` (src/dns/wire.rs) and Knot's `udp-max-payload`.
const MAX_UDP_PAYLOAD: u16 = 1232;
/// How many instances share the name `wide`: enough that its A RRset
/// needs more than 512 bytes and its TXT RRset more than 1232.
const WIDE: u32 = 40;

// ---------------------------------------------------------------------
// The world: fleetdns and Knot serving the same zones.

/// Both servers and what they serve, started once for the module.
struct World {
    /// fleetdns on the demo fleet plus the `wide` instances.
    fleetdns: Daemon,
    /// knotd serving the zones written from fleetdns's.
    knot: Knot,
    /// fleetdns's config and inventory.
    _dir: tempfile::TempDir,
}

/// The shared world; taken out and dropped by [`stop_world`] at exit.
static WORLD: Mutex<Option<Arc<World>>> = Mutex::new(None);

/// The world, started on first use.
fn world() -> Arc<World> {
    // A panic while starting poisons the lock; the next test then tries
    // again (and most likely fails the same way, with its own message).
    let mut slot = WORLD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(world) = slot.as_ref() {
        return world.clone();
    }
    let world = Arc::new(World::start());
    // SAFETY: atexit only stores a pointer to a function that takes and
    // returns nothing; the function stays valid for the whole process.
    let registered = unsafe { libc::atexit(stop_world) };
    assert_eq!(
        registered, 0,
        "atexit failed: the servers would outlive the tests"
    );
    *slot = Some(world.clone());
    world
}

/// Runs at exit: drops the world, which kills fleetdns and knotd and
/// removes their temp dirs (statics are never dropped otherwise).
extern "C" fn stop_world() {
    let world = WORLD.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(world);
}

impl World {
    /// Starts fleetdns, writes Knot's zones from what it serves, starts Knot.
    fn start() -> World {
        let dir = tempdir();
        let inventory = write_fleet(dir.path());
        let config = dir.path().join("fleetdns.toml");
        let statics = dir.path().join("static.zone");
        std::fs::write(&statics, STATICS).expect("write static.zone");
        std::fs::write(
            &config,
            format!(
                "# No upstreams: names outside the zones are REFUSED, as Knot refuses them.\n\
                 reverse_zones = [\"{}\", \"{}\"]\nstatic_records = {:?}\n\n[tcp]\nidle_timeout_secs = {IDLE_TIMEOUT_SECS}\n",
                REVERSE_V4.trim_end_matches('.'),
                REVERSE_V6.trim_end_matches('.'),
                statics.to_str().expect("temp paths are UTF-8"),
            ),
        )
        .expect("write fleetdns.toml");
        let config = config.to_str().expect("temp paths are UTF-8").to_string();
        let source = file_source(&dir.path().join("fleet.json"));
        let fleetdns = Daemon::start(&["--config", &config, "--source", &source]);
        let out = run(&["list", "--json", "--config", &config, "--source", &source]);
        assert!(out.status.success(), "fleetdns list: {}", stderr(&out));
        let listing: Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
        let zones = zone_files(fleetdns.udp, &listing, &inventory);
        let knot = Knot::start(&zones);
        World {
            fleetdns,
            knot,
            _dir: dir,
        }
    }

    /// Where `server` answers over `transport`.
    fn addr(&self, server: Server, transport: Transport) -> SocketAddr {
        match (server, transport) {
            (Server::Fleetdns, Transport::Udp) => self.fleetdns.udp,
            (Server::Fleetdns, Transport::Tcp) => self.fleetdns.tcp,
            (Server::Knot, _) => self.knot.addr,
        }
    }
}

/// Writes the demo fleet plus [`WIDE`] instances named `wide` (with IPv4
/// and IPv6 addresses in the reverse zones) as `fleet.json` in `dir`, and
/// returns the document.
fn write_fleet(dir: &Path) -> Value {
    let text = std::fs::read_to_string(example_fleet()).expect("the demo fleet");
    let mut doc: Value = serde_json::from_str(&text).expect("the demo fleet is JSON");
    let wide: Vec<Value> = (1..=WIDE)
        .map(|n| {
            let v4 = format!("10.20.5.{n}");
            serde_json::json!({
                "InstanceId": format!("i-0c0f{n:013x}"),
                "State": {"Code": 16, "Name": "running"},
                "PrivateIpAddress": v4,
                "InstanceType": "c7g.medium",
                "Placement": {"AvailabilityZone": "us-east-1c"},
                "Tags": [{"Key": "Name", "Value": "wide"}],
                "SecurityGroups": [{"GroupName": "wide", "GroupId": "sg-5"}],
                "NetworkInterfaces": [{
                    "Attachment": {"DeviceIndex": 0},
                    "PrivateIpAddresses": [{"Primary": true, "PrivateIpAddress": v4}],
                    "Ipv6Addresses": [{"Ipv6Address": format!("2600:1f18:abc:105::{n:x}")}],
                }],
            })
        })
        .collect();
    doc["Reservations"]
        .as_array_mut()
        .expect("Reservations is a list")
        .push(serde_json::json!({ "Instances": wide }));
    std::fs::write(
        dir.join("fleet.json"),
        serde_json::to_vec_pretty(&doc).expect("encode"),
    )
    .expect("write fleet.json");
    doc
}

/// The static records both serve (issue 17): fleetdns from its
/// `static_records` file, Knot as the same lines in its zone file. One
/// takes over a fleet name (`bastion`); CNAMEs end in the fleet, in static
/// data, outside the zone, at the apex, at an empty non-terminal, at
/// nothing, and in a loop.
const STATICS: &str = "$TTL 300
bastion        A     10.20.9.80
legacy-db      A     10.30.0.5
               AAAA  fd00::5
lb             CNAME lb-123.elb.example.com.
www            CNAME web-1
alias-chain    CNAME www
loop-a         CNAME loop-b
loop-b         CNAME loop-a
dangling       CNAME nothing-here
to-ent         CNAME db
to-apex        CNAME @
to-static      CNAME legacy-db
_kerberos._udp SRV   0 5 88 kdc.example.com.
mail           MX    10 mx.example.com.
note           TXT   \"hello\" \"two words\"
";

/// One zone file for Knot: its apex and its text.
struct ZoneFile {
    /// The apex, with its final dot.
    apex: &'static str,
    /// The SOA record as fleetdns serves it (what Knot must serve too).
    soa: String,
    /// The whole file.
    text: String,
}

/// Asks fleetdns over UDP and returns its answer section; panics unless
/// the reply is an authoritative NOERROR.
fn fleetdns_answer(server: SocketAddr, name: &str, qtype: u16) -> Vec<String> {
    match ask_udp(server, &Query::new(name, qtype).bytes(7)) {
        Outcome::Reply(m) if m.flags[1] & 0x0f == 0 && m.flags[0] & 0x04 != 0 => {
            m.sections[0].clone()
        }
        other => panic!("fleetdns {name} {qtype}: {}", other.render(Some(7))),
    }
}

/// The zone files for Knot: the forward zone and both reverse zones, from
/// fleetdns's listing, the inventory, and fleetdns's SOA and NS answers.
fn zone_files(fleetdns: SocketAddr, listing: &Value, inventory: &Value) -> Vec<ZoneFile> {
    let names = listing["names"].as_array().expect("names");
    // The TTL of data records, as fleetdns answers them.
    let first = names
        .iter()
        .find(|n| n["addresses"].to_string().contains('.'))
        .and_then(|n| n["name"].as_str())
        .expect("a name with an IPv4 address");
    let ttl: u32 = fleetdns_answer(fleetdns, first, 1)[0]
        .split(' ')
        .nth(1)
        .and_then(|t| t.parse().ok())
        .expect("a TTL");
    // Availability zone and type of each instance, for TXT.
    let mut details: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for reservation in inventory["Reservations"].as_array().expect("Reservations") {
        for i in reservation["Instances"].as_array().expect("Instances") {
            let id = i["InstanceId"].as_str().expect("InstanceId");
            let az = i["Placement"]["AvailabilityZone"]
                .as_str()
                .map(String::from);
            let kind = i["InstanceType"].as_str().map(String::from);
            details.insert(id.to_ascii_lowercase(), (az, kind));
        }
    }
    let text_list = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("a list")
            .iter()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    };
    let mut forward = Vec::new();
    // instance -> (its addresses, from its instance-id name; its primary name)
    let mut addresses: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut primary: BTreeMap<String, String> = BTreeMap::new();
    for entry in names {
        let name = entry["name"].as_str().expect("name");
        // Static names go to Knot as the static file's own lines.
        if !entry["static_records"].is_null() {
            continue;
        }
        let instances = text_list(&entry["instances"]);
        let rules = text_list(&entry["rules"]);
        for address in text_list(&entry["addresses"]) {
            let ip: IpAddr = address.parse().expect("an address");
            let kind = if ip.is_ipv4() { "A" } else { "AAAA" };
            forward.push(format!("{name} {ttl} IN {kind} {ip}"));
        }
        assert_eq!(
            rules.len(),
            1,
            "{name}: one rule per name is all this test can attribute to instances"
        );
        let rule = &rules[0];
        for id in &instances {
            let (az, kind) = details.get(id).cloned().unwrap_or_default();
            let mut strings = vec![format!("id={id}")];
            strings.extend(az.map(|a| format!("az={a}")));
            strings.extend(kind.map(|t| format!("type={t}")));
            strings.push(format!("rule={rule}"));
            let quoted: Vec<String> = strings.iter().map(|s| quote(s.as_bytes())).collect();
            forward.push(format!("{name} {ttl} IN TXT {}", quoted.join(" ")));
            if rule == "instance-id" {
                let ips = text_list(&entry["addresses"]);
                addresses.insert(
                    id.clone(),
                    ips.iter().map(|a| a.parse().expect("an address")).collect(),
                );
                primary
                    .entry(id.clone())
                    .or_insert_with(|| name.to_string());
            } else {
                primary.insert(id.clone(), name.to_string());
            }
        }
    }
    // PTR: each address of an instance names its primary name.
    let mut reverse: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (id, ips) in &addresses {
        for ip in ips {
            let owner = reverse_name(*ip);
            let apex = [REVERSE_V4, REVERSE_V6]
                .into_iter()
                .find(|apex| owner.ends_with(&format!(".{apex}")));
            if let Some(apex) = apex {
                reverse
                    .entry(apex)
                    .or_default()
                    .insert(format!("{owner} {ttl} IN PTR {}", primary[id]));
            }
        }
    }
    [ZONE, REVERSE_V4, REVERSE_V6]
        .into_iter()
        .map(|apex| {
            let soa = fleetdns_answer(fleetdns, apex, 6);
            assert_eq!(soa.len(), 1, "{apex}: {soa:?}");
            let ns = fleetdns_answer(fleetdns, apex, 2);
            let mut text = format!("{}\n{}\n", soa[0], ns.join("\n"));
            let data: Vec<String> = match apex {
                ZONE => forward.clone(),
                _ => reverse
                    .remove(apex)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            };
            for line in data {
                text.push_str(&line);
                text.push('\n');
            }
            if apex == ZONE {
                text.push_str("$ORIGIN fleet.internal.\n");
                text.push_str(STATICS);
            }
            ZoneFile {
                apex,
                soa: soa[0].clone(),
                text,
            }
        })
        .collect()
}

/// The reverse name of `ip` (`11.1.20.10.in-addr.arpa.`, or 32 nibbles
/// under `ip6.arpa.`).
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(a) => {
            let hex = format!("{:032x}", u128::from(a));
            let mut name: String = hex.chars().rev().flat_map(|c| [c, '.']).collect();
            name.push_str("ip6.arpa.");
            name
        }
    }
}

/// Knot's configuration; the zones are appended. Its defaults are made
/// comparable to fleetdns's where they differ.
const KNOT_CONF: &str = "\
server:
    rundir: \"@DIR@\"
    listen: 127.0.0.1@@PORT@
    # fleetdns has no CHAOS identity or version and no NSID (Knot's
    # default NSID and identity are the host name).
    identity: \"\"
    version: \"\"
    nsid: \"\"
    # fleetdns's MAX_UDP_PAYLOAD and [tcp] idle_timeout_secs.
    udp-max-payload: @PAYLOAD@
    tcp-idle-timeout: @IDLE@
    # Knot's defaults, stated: RRsets in a stable order, no client subnet.
    answer-rotation: off
    edns-client-subnet: off
    # Plenty for a test, and kind to a 2-core machine.
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

log:
  - target: stderr
    any: info

database:
    storage: \"@DIR@/db\"

template:
  - id: default
    storage: \"@DIR@\"
    # A primary from its zone files; nothing written back, no journal.
    zonefile-sync: -1
    journal-content: none

zone:
";

/// A running knotd serving the zone files as a primary.
struct Knot {
    /// The process.
    child: Child,
    /// Where it answers, UDP and TCP.
    addr: SocketAddr,
    /// Its config, zone files, databases and log.
    dir: tempfile::TempDir,
}

impl Knot {
    /// Writes the config and `zones`, starts knotd and waits until it
    /// serves every zone with fleetdns's SOA.
    fn start(zones: &[ZoneFile]) -> Knot {
        let dir = tempdir();
        let port = quiet_port();
        let mut config = KNOT_CONF
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@PORT@", &port.to_string())
            .replace("@PAYLOAD@", &MAX_UDP_PAYLOAD.to_string())
            .replace("@IDLE@", &IDLE_TIMEOUT_SECS.to_string());
        for zone in zones {
            let file = format!("{}zone", zone.apex);
            std::fs::write(dir.path().join(&file), &zone.text).expect("write a zone file");
            writeln!(config, "  - domain: {}\n    file: \"{file}\"", zone.apex)
                .expect("to a String");
        }
        std::fs::write(dir.path().join("knot.conf"), config).expect("write knot.conf");
        let log = File::create(dir.path().join("stderr.log")).expect("create the log");
        let child = Command::new("/usr/sbin/knotd")
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("knotd (scripts/test installs knot)");
        let mut knot = Knot {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        for zone in zones {
            loop {
                let answer = match ask_udp(knot.addr, &Query::new(zone.apex, 6).bytes(9)) {
                    Outcome::Reply(m) => m.sections[0].clone(),
                    _ => Vec::new(),
                };
                if answer == [zone.soa.clone()] {
                    break;
                }
                let exited = knot.child.try_wait().ok().flatten();
                assert!(
                    exited.is_none() && Instant::now() < deadline,
                    "knotd does not serve {} with {:?} (got {answer:?}, exit {exited:?}); its log:\n{}",
                    zone.apex,
                    zone.soa,
                    knot.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        knot
    }

    /// Its log so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------
// Queries.

/// A query built field by field, so that any of them can be wrong.
#[derive(Clone)]
struct Query {
    /// Header bytes 2 and 3: QR, opcode, AA, TC, RD, then RA, Z, AD, CD, rcode.
    flags: [u8; 2],
    /// The question section as sent.
    questions: Vec<u8>,
    /// QDCOUNT as claimed (normally the number of questions).
    qdcount: u16,
    /// Records of the answer section, whole.
    answers: Vec<Vec<u8>>,
    /// Records of the authority section, whole.
    authorities: Vec<Vec<u8>>,
    /// The OPT records of the additional section (normally none or one).
    opts: Vec<Opt>,
    /// Bytes after the last section.
    trailing: Vec<u8>,
}

/// An OPT pseudo-record.
#[derive(Clone)]
struct Opt {
    /// Its owner in wire form (the root, when well formed).
    owner: Vec<u8>,
    /// The requestor's UDP payload size (the class field).
    payload: u16,
    /// The upper 8 bits of the extended rcode.
    ext_rcode: u8,
    /// The EDNS version.
    version: u8,
    /// DO and the Z bits.
    flags: u16,
    /// Options, in order: code and data.
    options: Vec<(u16, Vec<u8>)>,
    /// RDLENGTH to claim instead of the options' real length.
    rdlen: Option<u16>,
}

impl Opt {
    /// The record's bytes.
    fn bytes(&self) -> Vec<u8> {
        let mut rdata = Vec::new();
        for (code, data) in &self.options {
            rdata.extend_from_slice(&code.to_be_bytes());
            rdata.extend_from_slice(&(data.len() as u16).to_be_bytes());
            rdata.extend_from_slice(data);
        }
        let mut out = self.owner.clone();
        out.extend_from_slice(&41u16.to_be_bytes());
        out.extend_from_slice(&self.payload.to_be_bytes());
        out.extend_from_slice(&[self.ext_rcode, self.version]);
        out.extend_from_slice(&self.flags.to_be_bytes());
        let rdlen = self.rdlen.unwrap_or(rdata.len() as u16);
        out.extend_from_slice(&rdlen.to_be_bytes());
        out.extend_from_slice(&rdata);
        out
    }
}

/// `name` (dotted, case kept; `.` is the root) in wire form.
fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A question: `name` in wire form, type and class.
fn question(name: &[u8], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut out = name.to_vec();
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    out
}

/// A record: owner in wire form, type, class, TTL and RDATA.
fn record(owner: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = owner.to_vec();
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

impl Query {
    /// A standard query as a stub resolver sends it: RD, class IN, EDNS
    /// with a 1232-byte payload and no DO.
    fn new(name: &str, qtype: u16) -> Query {
        Query::wire_name(&wire(name), qtype)
    }

    /// [`Query::new`] for a name given in wire form.
    fn wire_name(name: &[u8], qtype: u16) -> Query {
        Query {
            flags: [0x01, 0x00],
            questions: question(name, qtype, 1),
            qdcount: 1,
            answers: Vec::new(),
            authorities: Vec::new(),
            opts: vec![Opt {
                owner: vec![0],
                payload: MAX_UDP_PAYLOAD,
                ext_rcode: 0,
                version: 0,
                flags: 0,
                options: Vec::new(),
                rdlen: None,
            }],
            trailing: Vec::new(),
        }
    }

    /// Without EDNS.
    fn no_edns(mut self) -> Query {
        self.opts.clear();
        self
    }

    /// Applies `f` to the OPT record (there is one unless removed).
    fn opt(mut self, f: impl FnOnce(&mut Opt)) -> Query {
        f(self.opts.first_mut().expect("the query has an OPT record"));
        self
    }

    /// With header bytes 2 and 3 exactly `b2` and `b3`.
    fn header(mut self, b2: u8, b3: u8) -> Query {
        self.flags = [b2, b3];
        self
    }

    /// With `opcode` (RD kept).
    fn opcode(mut self, opcode: u8) -> Query {
        self.flags[0] = (self.flags[0] & 0x87) | (opcode << 3);
        self
    }

    /// With the question's class `class`.
    fn class(mut self, class: u16) -> Query {
        let at = self.questions.len() - 2;
        self.questions[at..].copy_from_slice(&class.to_be_bytes());
        self
    }

    /// With another question after the first.
    fn and_question(mut self, name: &str, qtype: u16) -> Query {
        self.questions.extend(question(&wire(name), qtype, 1));
        self.qdcount += 1;
        self
    }

    /// Without the question section's bytes (for QDCOUNT 0).
    fn no_questions(mut self) -> Query {
        self.questions.clear();
        self
    }

    /// Claiming `count` questions, whatever the section holds.
    fn qdcount(mut self, count: u16) -> Query {
        self.qdcount = count;
        self
    }

    /// With `bytes` after the last section.
    fn trailing(mut self, bytes: &[u8]) -> Query {
        self.trailing = bytes.to_vec();
        self
    }

    /// The message with id `id`.
    fn bytes(&self, id: u16) -> Vec<u8> {
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&self.flags);
        for count in [
            self.qdcount,
            self.answers.len() as u16,
            self.authorities.len() as u16,
            self.opts.len() as u16,
        ] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(&self.questions);
        for r in self.answers.iter().chain(&self.authorities) {
            out.extend_from_slice(r);
        }
        for opt in &self.opts {
            out.extend(opt.bytes());
        }
        out.extend_from_slice(&self.trailing);
        out
    }
}

/// How a query is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Transport {
    /// One datagram each way.
    Udp,
    /// A new connection, one length-prefixed message each way.
    Tcp,
}

/// One of the two servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    /// The server under test.
    Fleetdns,
    /// The reference.
    Knot,
}

/// UDP only.
const UDP: &[Transport] = &[Transport::Udp];
/// TCP only.
const TCP: &[Transport] = &[Transport::Tcp];
/// Both transports.
const BOTH: &[Transport] = &[Transport::Udp, Transport::Tcp];

/// One row of a table: a name, the bytes to send and how.
struct Case {
    /// Unique across all tables; what exceptions name.
    name: String,
    /// The message, exactly as sent (its first two bytes are the id).
    bytes: Vec<u8>,
    /// Over which transports it is sent.
    over: &'static [Transport],
}

/// Collects the cases of one table, numbering their ids.
struct Table {
    /// The cases so far.
    cases: Vec<Case>,
}

impl Table {
    /// An empty table.
    fn new() -> Table {
        Table { cases: Vec::new() }
    }

    /// Adds `query` as case `name`, over `over`, with an id of its own.
    fn query(&mut self, name: impl Into<String>, query: Query, over: &'static [Transport]) {
        let id = 0x4000 + self.cases.len() as u16;
        self.raw(name, query.bytes(id), over);
    }

    /// Adds `bytes`, exactly, as case `name`.
    fn raw(&mut self, name: impl Into<String>, bytes: Vec<u8>, over: &'static [Transport]) {
        let name = name.into();
        assert!(
            self.cases.iter().all(|c| c.name != name),
            "two cases named {name:?}"
        );
        self.cases.push(Case { name, bytes, over });
    }
}

// ---------------------------------------------------------------------
// The tables.

/// Query types by name: every common type, DNSSEC types, meta types, and
/// types nobody has (0, private use, 65535).
const TYPES: &[(&str, u16)] = &[
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("HINFO", 13),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("NAPTR", 35),
    ("OPT", 41),
    ("DS", 43),
    ("RRSIG", 46),
    ("NSEC", 47),
    ("DNSKEY", 48),
    ("NSEC3PARAM", 51),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("TKEY", 249),
    ("TSIG", 250),
    ("IXFR", 251),
    ("AXFR", 252),
    ("MAILB", 253),
    ("MAILA", 254),
    ("ANY", 255),
    ("CAA", 257),
    ("TYPE0", 0),
    ("TYPE65280", 65280),
    ("TYPE65535", 65535),
];

/// The types a resolver asks about most, for the names not asked every type.
const COMMON: &[&str] = &["A", "AAAA", "TXT", "PTR", "ANY", "SOA", "NS", "MX", "CNAME"];

/// A type's number by its name in [`TYPES`].
fn qtype(name: &str) -> u16 {
    TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no type {name}"))
}

/// Every kind of name, each asked every type or the common ones.
fn names_table() -> Table {
    let v6 = reverse_name("2600:1f18:abc:100::11".parse().expect("an address"));
    let every_type: &[&str] = &[
        ZONE,                        // the apex: SOA, NS, NODATA
        "web-1.fleet.internal.",     // A, AAAA, TXT
        "ipv6-host.fleet.internal.", // one A, two AAAA
        "db.fleet.internal.",        // an empty non-terminal
        "no-such-host.fleet.internal.",
        "11.1.20.10.in-addr.arpa.", // PTR in the reverse zone
        REVERSE_V4,
        "example.com.", // outside every zone
    ];
    let common: Vec<String> = [
        "multi-ip.fleet.internal.",            // three A
        "api.fleet.internal.",                 // two instances, two TXT
        "i-0a15d9d0e0af13dbb.fleet.internal.", // an instance-id name
        "primary.db.fleet.internal.",          // two labels
        "x.web-1.fleet.internal.",             // below a host
        "wide.fleet.internal.",                // 40 A, 40 AAAA, 40 TXT
        "analytics-abcdefghij0123456789abcdefghij0123456789abcdefghij012.fleet.internal.",
        "33.4.20.10.in-addr.arpa.",  // second interface's address
        "9.9.20.10.in-addr.arpa.",   // no such address
        "1.20.10.in-addr.arpa.",     // above known addresses
        "011.1.20.10.in-addr.arpa.", // not a canonical octet
        "x.11.1.20.10.in-addr.arpa.",
        REVERSE_V6,
        &v6,
        "99.99.99.10.in-addr.arpa.", // an address outside the reverse zones
        "internal.",                 // the zone's parent
        "fleet.internal.evil.",
        ".",
        "localhost.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut t = Table::new();
    for name in every_type {
        for (type_name, code) in TYPES {
            t.query(format!("{type_name} {name}"), Query::new(name, *code), UDP);
        }
    }
    for name in &common {
        for type_name in COMMON {
            t.query(
                format!("{type_name} {name}"),
                Query::new(name, qtype(type_name)),
                UDP,
            );
        }
    }
    // Case: answers and the echoed question keep the query's spelling.
    for (name, type_name) in [
        ("WeB-1.FLEET.Internal.", "A"),
        ("WEB-1.fleet.internal.", "AAAA"),
        ("Api.Fleet.Internal.", "TXT"),
        ("FLEET.INTERNAL.", "SOA"),
        ("Fleet.Internal.", "NS"),
        ("Fleet.Internal.", "MX"),
        ("NO-Such.Fleet.Internal.", "A"),
        ("No-Such.FLEET.internal.", "TXT"),
        ("DB.fleet.INTERNAL.", "A"),
        ("11.1.20.10.IN-ADDR.ARPA.", "PTR"),
        ("20.10.In-Addr.Arpa.", "SOA"),
        ("Example.COM.", "A"),
    ] {
        t.query(
            format!("{type_name} {name}"),
            Query::new(name, qtype(type_name)),
            UDP,
        );
    }
    let upper_v6 = v6.to_ascii_uppercase();
    t.query(format!("PTR {upper_v6}"), Query::new(&upper_v6, 12), UDP);
    // Names no host can have: a wildcard label, a service name, a label
    // with a dot, a zero and a space in it, and the longest name there is.
    t.query(
        "A *.fleet.internal.",
        Query::new("*.fleet.internal.", 1),
        UDP,
    );
    t.query(
        "SRV _ldap._tcp.fleet.internal.",
        Query::new("_ldap._tcp.fleet.internal.", 33),
        UDP,
    );
    let mut odd = vec![6, b'w', b'e', b'.', 0, b' ', b'1'];
    odd.extend(wire(ZONE));
    t.query("A binary label", Query::wire_name(&odd, 1), UDP);
    let mut longest = Vec::new();
    while longest.len() + 64 + 16 <= 255 {
        longest.push(63);
        longest.extend([b'a'; 63]);
    }
    let pad = 255 - 16 - longest.len() - 1;
    longest.push(pad as u8);
    longest.extend(vec![b'b'; pad]);
    longest.extend(wire(ZONE));
    assert_eq!(longest.len(), 255);
    t.query("A name of 255 octets", Query::wire_name(&longest, 1), UDP);
    t
}

/// EDNS: sizes, versions, flags and options, each on the UDP fast path
/// (A), the general path (TXT) and a negative answer (NXDOMAIN).
fn edns_table() -> Table {
    let targets: [(&str, &str, u16); 3] = [
        ("A", "web-1.fleet.internal.", 1),
        ("TXT", "web-1.fleet.internal.", 16),
        ("NXDOMAIN", "no-such-host.fleet.internal.", 1),
    ];
    type Variant = (&'static str, fn(Query) -> Query);
    let variants: &[Variant] = &[
        ("no EDNS", |q| q.no_edns()),
        ("size 0", |q| q.opt(|o| o.payload = 0)),
        ("size 1", |q| q.opt(|o| o.payload = 1)),
        ("size 511", |q| q.opt(|o| o.payload = 511)),
        ("size 512", |q| q.opt(|o| o.payload = 512)),
        ("size 513", |q| q.opt(|o| o.payload = 513)),
        ("size 1232", |q| q),
        ("size 1233", |q| q.opt(|o| o.payload = 1233)),
        ("size 4096", |q| q.opt(|o| o.payload = 4096)),
        ("size 65535", |q| q.opt(|o| o.payload = 65535)),
        ("DO", |q| q.opt(|o| o.flags = 0x8000)),
        ("DO size 4096", |q| {
            q.opt(|o| {
                o.flags = 0x8000;
                o.payload = 4096
            })
        }),
        ("version 1", |q| q.opt(|o| o.version = 1)),
        ("version 1 DO", |q| {
            q.opt(|o| {
                o.version = 1;
                o.flags = 0x8000
            })
        }),
        ("version 255", |q| q.opt(|o| o.version = 255)),
        ("Z bit 0x4000", |q| q.opt(|o| o.flags = 0x4000)),
        ("Z bit 0x0001 DO", |q| q.opt(|o| o.flags = 0x8001)),
        ("extended rcode bits", |q| q.opt(|o| o.ext_rcode = 1)),
        ("NSID", |q| q.opt(|o| o.options.push((3, vec![])))),
        ("cookie", |q| {
            q.opt(|o| o.options.push((10, vec![1, 2, 3, 4, 5, 6, 7, 8])))
        }),
        ("cookie with a bad server cookie", |q| {
            q.opt(|o| o.options.push((10, (1..=24).collect())))
        }),
        ("cookie of 5 bytes", |q| {
            q.opt(|o| o.options.push((10, vec![1, 2, 3, 4, 5])))
        }),
        ("client subnet", |q| {
            q.opt(|o| o.options.push((8, vec![0, 1, 24, 0, 10, 20, 1])))
        }),
        ("padding", |q| q.opt(|o| o.options.push((12, vec![0; 16])))),
        ("expire", |q| q.opt(|o| o.options.push((9, vec![])))),
        ("keepalive", |q| q.opt(|o| o.options.push((11, vec![])))),
        ("keepalive with data", |q| {
            q.opt(|o| o.options.push((11, vec![0, 100])))
        }),
        ("unknown option", |q| {
            q.opt(|o| o.options.push((65001, vec![0xab, 0xcd])))
        }),
        ("unknown option 65535", |q| {
            q.opt(|o| o.options.push((65535, vec![])))
        }),
        ("two unknown options", |q| {
            q.opt(|o| o.options.extend([(65001, vec![1]), (65002, vec![2, 2])]))
        }),
        ("an option twice", |q| {
            q.opt(|o| o.options.extend([(65001, vec![1]), (65001, vec![1])]))
        }),
        ("an option longer than RDATA", |q| {
            q.opt(|o| {
                o.options.push((65001, vec![1, 2, 3, 4]));
                o.rdlen = Some(6)
            })
        }),
        ("RDLENGTH past the end", |q| q.opt(|o| o.rdlen = Some(10))),
        ("OPT owner not the root", |q| {
            q.opt(|o| o.owner = wire("a."))
        }),
        ("two OPT records", |mut q| {
            let opt = q.opts[0].clone();
            q.opts.push(opt);
            q
        }),
    ];
    let mut t = Table::new();
    for (variant, apply) in variants {
        for (label, name, code) in targets {
            t.query(
                format!("{variant}: {label}"),
                apply(Query::new(name, code)),
                UDP,
            );
        }
    }
    // Truncation: RRsets larger than the client's limit.
    let wide = "wide.fleet.internal.";
    for (case, query) in [
        (
            "truncated: A wide without EDNS",
            Query::new(wide, 1).no_edns(),
        ),
        (
            "truncated: A wide size 512",
            Query::new(wide, 1).opt(|o| o.payload = 512),
        ),
        ("fits: A wide size 1232", Query::new(wide, 1)),
        (
            "truncated: AAAA wide size 1000",
            Query::new(wide, 28).opt(|o| o.payload = 1000),
        ),
        ("truncated: TXT wide size 1232", Query::new(wide, 16)),
        (
            "truncated: TXT wide size 4096",
            Query::new(wide, 16).opt(|o| o.payload = 4096),
        ),
        (
            "truncated: TXT wide DO",
            Query::new(wide, 16).opt(|o| o.flags = 0x8000),
        ),
        (
            "truncated: TXT wide without EDNS",
            Query::new(wide, 16).no_edns(),
        ),
        (
            "truncated: ANY wide without EDNS",
            Query::new(wide, 255).no_edns(),
        ),
    ] {
        t.query(case, query, UDP);
    }
    t
}

/// Opcodes, header flags, classes and question counts.
fn header_table() -> Table {
    let mut t = Table::new();
    let soa = || Query::new(ZONE, 6);
    for opcode in 0..16u8 {
        t.query(format!("opcode {opcode}"), soa().opcode(opcode), UDP);
        t.query(
            format!("opcode {opcode} without EDNS"),
            soa().no_edns().opcode(opcode),
            UDP,
        );
    }
    let a = || Query::new("web-1.fleet.internal.", 1);
    let txt = || Query::new("web-1.fleet.internal.", 16);
    for (name, b2, b3) in [
        ("RD clear", 0x00, 0x00),
        ("AA set", 0x05, 0x00),
        ("TC set", 0x03, 0x00),
        ("RA set", 0x01, 0x80),
        ("Z set", 0x01, 0x40),
        ("AD set", 0x01, 0x20),
        ("CD set", 0x01, 0x10),
        ("AD and CD set", 0x01, 0x30),
        ("every flag set", 0x07, 0xf0),
        ("rcode bits set", 0x01, 0x05),
    ] {
        t.query(format!("{name}: A"), a().header(b2, b3), UDP);
        t.query(format!("{name}: TXT"), txt().header(b2, b3), UDP);
        t.query(
            format!("{name}: A without EDNS"),
            a().no_edns().header(b2, b3),
            UDP,
        );
    }
    t.query("QR set: A", a().header(0x81, 0x00), UDP);
    t.query("QR set: TXT", txt().header(0x81, 0x80), UDP);
    for (class_name, class) in [
        ("CH", 3),
        ("HS", 4),
        ("NONE", 254),
        ("ANY", 255),
        ("CLASS0", 0),
        ("CLASS2", 2),
        ("CLASS65280", 65280),
    ] {
        t.query(format!("{class_name} SOA {ZONE}"), soa().class(class), UDP);
        t.query(
            format!("{class_name} A web-1.fleet.internal."),
            a().class(class),
            UDP,
        );
        t.query(
            format!("{class_name} A example.com."),
            Query::new("example.com.", 1).class(class),
            UDP,
        );
    }
    for name in [
        "version.bind.",
        "version.server.",
        "id.server.",
        "hostname.bind.",
    ] {
        t.query(format!("CH TXT {name}"), Query::new(name, 16).class(3), UDP);
    }
    // Question counts.
    t.query("QDCOUNT 0", a().qdcount(0).no_questions(), UDP);
    t.query(
        "QDCOUNT 0 without EDNS",
        a().no_edns().qdcount(0).no_questions(),
        UDP,
    );
    t.query(
        "QDCOUNT 0 with a cookie",
        a().opt(|o| o.options.push((10, vec![1, 2, 3, 4, 5, 6, 7, 8])))
            .qdcount(0)
            .no_questions(),
        UDP,
    );
    t.query("QDCOUNT 2", a().and_question("api.fleet.internal.", 1), UDP);
    t.query(
        "QDCOUNT 2 without EDNS",
        a().no_edns().and_question("api.fleet.internal.", 1),
        UDP,
    );
    t.query(
        "QDCOUNT 2 the same question",
        a().and_question("web-1.fleet.internal.", 1),
        UDP,
    );
    t.query("QDCOUNT 2 with one question", a().no_edns().qdcount(2), UDP);
    t.query(
        "QDCOUNT 2 outside the zone",
        Query::new("example.com.", 1).and_question("example.net.", 1),
        UDP,
    );
    t.query(
        "QDCOUNT 2 NOTIFY",
        soa().opcode(4).and_question(ZONE, 6),
        UDP,
    );
    // Records in sections a query does not use.
    let mut with_answer = a();
    with_answer
        .answers
        .push(record(&[0xc0, 12], 1, 1, 30, &[10, 9, 9, 9]));
    t.query("an answer in the query", with_answer, UDP);
    let mut with_authority = a();
    with_authority
        .authorities
        .push(record(&wire(ZONE), 2, 1, 30, &wire("ns.example.")));
    t.query("an authority record in the query", with_authority, UDP);
    t
}

/// A few bytes of a deterministic pseudo-random sequence.
fn junk(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 16) as u8
        })
        .collect()
}

/// Malformed messages: short, cut, bad labels, pointers, trailing bytes.
fn junk_table() -> Table {
    let mut t = Table::new();
    let header = |qd: u8, ar: u8| vec![0x12, 0x34, 0x01, 0x00, 0, qd, 0, 0, 0, 0, 0, ar];
    t.raw("empty datagram", Vec::new(), UDP);
    t.raw("one byte", vec![0x12], UDP);
    t.raw("the id alone", vec![0x12, 0x34], UDP);
    t.raw("eleven bytes", header(1, 0)[..11].to_vec(), UDP);
    t.raw("a header without its question", header(1, 0), BOTH);
    t.raw("a header of zeros", vec![0; 12], BOTH);
    t.raw(
        "a header claiming 65535 questions",
        {
            let mut h = header(0xff, 0);
            h[4] = 0xff;
            h
        },
        UDP,
    );
    let mut cut = header(1, 0);
    cut.extend_from_slice(&[5, b'w', b'e', b'b']);
    t.raw("a question cut in a label", cut, BOTH);
    let mut no_class = header(1, 0);
    no_class.extend(wire("web-1.fleet.internal."));
    no_class.extend_from_slice(&[0, 1]);
    t.raw("a question without its class", no_class, BOTH);
    let mut claims_opt = header(1, 1);
    claims_opt.extend(question(&wire("web-1.fleet.internal."), 1, 1));
    t.raw("ARCOUNT 1 and no record", claims_opt, BOTH);
    for (name, label_type) in [("label type 0x40", 0x41u8), ("label type 0x80", 0x81)] {
        let mut q = header(1, 0);
        q.extend_from_slice(&[label_type, b'x']);
        q.extend(wire(ZONE));
        q.extend_from_slice(&[0, 1, 0, 1]);
        t.raw(name, q, UDP);
    }
    let mut long = header(1, 0);
    for _ in 0..5 {
        long.push(63);
        long.extend([b'a'; 63]);
    }
    long.extend(wire(ZONE));
    long.extend_from_slice(&[0, 1, 0, 1]);
    t.raw("a name over 255 octets", long, BOTH);
    // Compression pointers in the question: into the header (the fuzz
    // seed of issue 19), forward, to itself, and a valid-looking one from
    // a second question to the first.
    let seed = include_bytes!("../../fuzz/seeds/dns_request/issue-19-question-pointer-into-header");
    t.raw(
        "a question pointing into the header",
        seed[1..].to_vec(),
        BOTH,
    );
    let mut forward = header(1, 0);
    forward.extend_from_slice(&[0xc0, 0x40, 0, 1, 0, 1]);
    t.raw("a question pointing forward", forward, UDP);
    let mut itself = header(1, 0);
    itself.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    t.raw("a question pointing at itself", itself, UDP);
    let mut suffix = header(1, 0);
    suffix.extend_from_slice(&[5, b'w', b'e', b'b', b'-', b'1', 0xc0, 0x1e]);
    suffix.extend_from_slice(&[0, 1, 0, 1]);
    suffix.extend(wire(ZONE));
    t.raw("a question pointing past itself", suffix, UDP);
    let mut second = header(2, 0);
    second.extend(question(&wire("web-1.fleet.internal."), 1, 1));
    second.extend(question(&[0xc0, 12], 28, 1));
    t.raw("a second question pointing at the first", second, BOTH);
    // Trailing bytes.
    let a = Query::new("web-1.fleet.internal.", 1);
    t.query(
        "a byte after the question",
        a.clone().no_edns().trailing(&[0]),
        BOTH,
    );
    t.query("a byte after the OPT", a.clone().trailing(&[0xff]), BOTH);
    t.query(
        "a byte after the question of a TXT query",
        Query::new("web-1.fleet.internal.", 16)
            .no_edns()
            .trailing(&[0]),
        UDP,
    );
    t.query(
        "a whole question after the question",
        a.clone()
            .no_edns()
            .trailing(&question(&wire("api.fleet.internal."), 1, 1)),
        UDP,
    );
    // Random bytes that look like a query (QR clear, opcode 0, QDCOUNT 1).
    for (seed, len) in [(1u32, 20usize), (2, 40), (3, 64), (4, 300), (5, 512)] {
        let mut bytes = junk(seed, len);
        bytes[2] &= 0x07;
        bytes[4..6].copy_from_slice(&[0, 1]);
        t.raw(format!("random {len} bytes (seed {seed})"), bytes, UDP);
    }
    t
}

/// Over TCP: what differs from UDP (no truncation, transfers, keepalive)
/// and a few everyday queries.
fn tcp_table() -> Table {
    let mut t = Table::new();
    let wide = "wide.fleet.internal.";
    for (case, query) in [
        ("tcp: A web-1", Query::new("web-1.fleet.internal.", 1)),
        (
            "tcp: A web-1 without EDNS",
            Query::new("web-1.fleet.internal.", 1).no_edns(),
        ),
        ("tcp: TXT api", Query::new("api.fleet.internal.", 16)),
        (
            "tcp: A no-such-host",
            Query::new("no-such-host.fleet.internal.", 1),
        ),
        ("tcp: SOA apex", Query::new(ZONE, 6)),
        ("tcp: ANY apex", Query::new(ZONE, 255)),
        ("tcp: A example.com", Query::new("example.com.", 1)),
        (
            "tcp: PTR 11.1.20.10",
            Query::new("11.1.20.10.in-addr.arpa.", 12),
        ),
        ("tcp: A wide without EDNS", Query::new(wide, 1).no_edns()),
        ("tcp: TXT wide", Query::new(wide, 16)),
        (
            "tcp: TXT wide DO",
            Query::new(wide, 16).opt(|o| o.flags = 0x8000),
        ),
        ("tcp: AXFR", Query::new(ZONE, 252)),
        ("tcp: AXFR without EDNS", Query::new(ZONE, 252).no_edns()),
        ("tcp: IXFR", Query::new(ZONE, 251)),
        ("tcp: AXFR of the reverse zone", Query::new(REVERSE_V4, 252)),
        (
            "tcp: AXFR outside the zones",
            Query::new("example.com.", 252),
        ),
        (
            "tcp: version 1",
            Query::new("web-1.fleet.internal.", 1).opt(|o| o.version = 1),
        ),
        (
            "tcp: size 0",
            Query::new("web-1.fleet.internal.", 1).opt(|o| o.payload = 0),
        ),
        ("tcp: NOTIFY", Query::new(ZONE, 6).opcode(4)),
        ("tcp: UPDATE", Query::new(ZONE, 6).opcode(5)),
        ("tcp: opcode 15", Query::new(ZONE, 6).opcode(15)),
        (
            "tcp: CH TXT version.bind",
            Query::new("version.bind.", 16).class(3),
        ),
        (
            "tcp: QDCOUNT 0",
            Query::new(ZONE, 6).qdcount(0).no_questions(),
        ),
        (
            "tcp: QDCOUNT 2",
            Query::new(ZONE, 6).and_question("web-1.fleet.internal.", 1),
        ),
        ("tcp: QR set", Query::new(ZONE, 6).header(0x81, 0)),
        (
            "tcp: keepalive",
            Query::new("web-1.fleet.internal.", 1).opt(|o| o.options.push((11, vec![]))),
        ),
        (
            "tcp: keepalive on the general path",
            Query::new("web-1.fleet.internal.", 16).opt(|o| o.options.push((11, vec![]))),
        ),
        (
            "tcp: keepalive with data",
            Query::new("web-1.fleet.internal.", 1).opt(|o| o.options.push((11, vec![0, 100]))),
        ),
    ] {
        t.query(case, query, TCP);
    }
    // AXFR and IXFR over UDP belong here, beside their TCP cases.
    t.query("udp: AXFR", Query::new(ZONE, 252), UDP);
    t.query(
        "udp: AXFR without EDNS",
        Query::new(ZONE, 252).no_edns(),
        UDP,
    );
    t.query("udp: IXFR", Query::new(ZONE, 251), UDP);
    t
}

// ---------------------------------------------------------------------
// Talking to the servers.

/// What a server did with a query.
#[derive(Clone)]
enum Outcome {
    /// No reply: why (timeout, connection closed).
    Silent(&'static str),
    /// A reply that does not parse strictly: why, and its bytes.
    Malformed(String, Vec<u8>),
    /// A reply.
    Reply(Message),
}

/// Sends `query` over UDP from a fresh socket; waits 1 s, then sends it
/// once more (a client retries; a reply lost under load must not read as
/// silence) and waits again.
fn ask_udp(server: SocketAddr, query: &[u8]) -> Outcome {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("set a timeout");
    let mut buf = vec![0u8; 65535];
    for _ in 0..2 {
        socket.send_to(query, server).expect("send over UDP");
        if let Ok(n) = socket.recv(&mut buf) {
            return parse(&buf[..n]);
        }
    }
    Outcome::Silent("no reply over UDP")
}

/// Sends `query` length-prefixed on a new TCP connection and reads one reply.
fn ask_tcp(server: SocketAddr, query: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(server).expect("connect over TCP");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("set a timeout");
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    if stream.write_all(&framed).is_err() {
        return Outcome::Silent("connection closed before the query was sent");
    }
    let mut len = [0u8; 2];
    if let Err(e) = stream.read_exact(&mut len) {
        return Outcome::Silent(match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => "no reply over TCP in 3 s",
            _ => "connection closed without a reply",
        });
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    match stream.read_exact(&mut buf) {
        Ok(()) => parse(&buf),
        Err(_) => Outcome::Malformed("the TCP reply was cut short".into(), buf),
    }
}

/// A parsed reply.
#[derive(Clone)]
struct Message {
    /// The id.
    id: u16,
    /// Header bytes 2 and 3.
    flags: [u8; 2],
    /// The question section, one line per question.
    questions: Vec<String>,
    /// Answer, authority and additional records (OPT left out), as text.
    sections: [Vec<String>; 3],
    /// OPT records of the additional section, in order.
    opts: Vec<ReplyOpt>,
}

/// An OPT record of a reply.
#[derive(Clone)]
struct ReplyOpt {
    /// Its owner.
    owner: String,
    /// The responder's UDP payload size.
    payload: u16,
    /// The upper 8 bits of the extended rcode.
    ext_rcode: u8,
    /// The EDNS version.
    version: u8,
    /// DO and the Z bits.
    flags: u16,
    /// Options: code and data.
    options: Vec<(u16, Vec<u8>)>,
}

/// Reads a reply strictly: every section as counted, RDATA lengths exact,
/// names well formed, nothing after the last record.
fn parse(bytes: &[u8]) -> Outcome {
    match parse_message(bytes) {
        Ok(m) => Outcome::Reply(m),
        Err(why) => Outcome::Malformed(why, bytes.to_vec()),
    }
}

/// The strict parser behind [`parse`].
fn parse_message(msg: &[u8]) -> Result<Message, String> {
    if msg.len() < 12 {
        return Err(format!("{} bytes: shorter than a header", msg.len()));
    }
    let u16_at = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let counts = [u16_at(4), u16_at(6), u16_at(8), u16_at(10)];
    let mut pos = 12;
    let mut questions = Vec::new();
    for _ in 0..counts[0] {
        let (name, next) = read_name(msg, pos)?;
        let fixed = msg.get(next..next + 4).ok_or("a question is cut short")?;
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
        questions.push(format!(
            "{name} {} {}",
            class_name(qclass),
            type_name(qtype)
        ));
        pos = next + 4;
    }
    let mut sections: [Vec<String>; 3] = Default::default();
    let mut opts = Vec::new();
    for (section, &count) in counts[1..].iter().enumerate() {
        for _ in 0..count {
            let (owner, next) = read_name(msg, pos)?;
            let fixed = msg
                .get(next..next + 10)
                .ok_or_else(|| format!("a record of {owner} is cut short"))?;
            let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
            let class = u16::from_be_bytes([fixed[2], fixed[3]]);
            let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
            let start = next + 10;
            let end = start + rdlen;
            if end > msg.len() {
                return Err(format!("the RDATA of {owner} runs past the end"));
            }
            if rtype == 41 && section == 2 {
                opts.push(ReplyOpt {
                    owner,
                    payload: class,
                    ext_rcode: (ttl >> 24) as u8,
                    version: (ttl >> 16) as u8,
                    flags: ttl as u16,
                    options: read_options(&msg[start..end])?,
                });
            } else {
                let rdata = rdata_text(msg, start, end, rtype)?;
                sections[section].push(format!(
                    "{owner} {ttl} {} {} {rdata}",
                    class_name(class),
                    type_name(rtype)
                ));
            }
            pos = end;
        }
    }
    if pos != msg.len() {
        return Err(format!(
            "{} bytes trail the last record (of {})",
            msg.len() - pos,
            msg.len()
        ));
    }
    for section in &mut sections {
        section.sort();
    }
    Ok(Message {
        id: u16_at(0),
        flags: [msg[2], msg[3]],
        questions,
        sections,
        opts,
    })
}

/// The options of an OPT record's RDATA, which they must fill exactly.
fn read_options(rdata: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, String> {
    let mut options = Vec::new();
    let mut pos = 0;
    while pos < rdata.len() {
        let head = rdata
            .get(pos..pos + 4)
            .ok_or("an EDNS option is cut short")?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let data = rdata
            .get(pos + 4..pos + 4 + len)
            .ok_or("an EDNS option runs past its RDATA")?;
        options.push((code, data.to_vec()));
        pos += 4 + len;
    }
    Ok(options)
}

/// Reads the name at `start` of `msg`: its text (case kept, odd bytes
/// escaped, final dot) and where the bytes after it start. Pointers must
/// point backwards and not into the header.
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), String> {
    let mut text = String::new();
    let mut pos = start;
    let mut after = None;
    let mut wire_len = 1;
    loop {
        let len = *msg.get(pos).ok_or("a name runs past the end")?;
        match len & 0xc0 {
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or("a pointer is cut short")?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                if target >= pos {
                    return Err(format!("a pointer at {pos} points forward, to {target}"));
                }
                if target < 12 {
                    return Err(format!("a pointer at {pos} points into the header"));
                }
                after.get_or_insert(pos + 2);
                pos = target;
            }
            0 if len == 0 => {
                after.get_or_insert(pos + 1);
                break;
            }
            0 => {
                let label = msg
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or("a label runs past the end")?;
                wire_len += 1 + label.len();
                if wire_len > 255 {
                    return Err("a name longer than 255 octets".into());
                }
                for &b in label {
                    match b {
                        b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                            text.push('\\');
                            text.push(char::from(b));
                        }
                        0x21..=0x7e => text.push(char::from(b)),
                        _ => {
                            let _ = write!(text, "\\{b:03}");
                        }
                    }
                }
                text.push('.');
                pos += 1 + label.len();
            }
            other => return Err(format!("a label of type {other:#04x}")),
        }
    }
    if text.is_empty() {
        text.push('.');
    }
    Ok((text, after.unwrap_or(pos + 1)))
}

/// `bytes` as a quoted character-string, `"` and `\` and odd bytes escaped.
fn quote(bytes: &[u8]) -> String {
    let mut text = String::from("\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                text.push('\\');
                text.push(char::from(b));
            }
            0x20..=0x7e => text.push(char::from(b)),
            _ => {
                let _ = write!(text, "\\{b:03}");
            }
        }
    }
    text.push('"');
    text
}

/// The RDATA of a record at `msg[start..end]` in presentation form; names
/// in it may point anywhere before them, and must end exactly at `end`.
fn rdata_text(msg: &[u8], start: usize, end: usize, rtype: u16) -> Result<String, String> {
    let rdata = &msg[start..end];
    let name_at = |pos: usize| -> Result<(String, usize), String> {
        let (name, next) = read_name(&msg[..end], pos)?;
        Ok((name, next))
    };
    let exact = |next: usize, text: String| -> Result<String, String> {
        if next == end {
            Ok(text)
        } else {
            Err(format!(
                "the RDATA of a {} record has {} bytes to spare",
                type_name(rtype),
                end.abs_diff(next)
            ))
        }
    };
    match rtype {
        1 => {
            let octets: [u8; 4] = rdata.try_into().map_err(|_| "an A record not 4 bytes")?;
            Ok(Ipv4Addr::from(octets).to_string())
        }
        28 => {
            let octets: [u8; 16] = rdata
                .try_into()
                .map_err(|_| "an AAAA record not 16 bytes")?;
            Ok(Ipv6Addr::from(octets).to_string())
        }
        2 | 5 | 12 | 39 => {
            let (name, next) = name_at(start)?;
            exact(next, name)
        }
        6 => {
            let (mname, next) = name_at(start)?;
            let (rname, next) = name_at(next)?;
            let numbers = msg
                .get(next..next + 20)
                .ok_or("an SOA record is cut short")?;
            let n: Vec<String> = numbers
                .chunks(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]).to_string())
                .collect();
            exact(next + 20, format!("{mname} {rname} {}", n.join(" ")))
        }
        15 => {
            let pref = rdata.get(..2).ok_or("an MX record is cut short")?;
            let (name, next) = name_at(start + 2)?;
            exact(
                next,
                format!("{} {name}", u16::from_be_bytes([pref[0], pref[1]])),
            )
        }
        16 => {
            let mut strings = Vec::new();
            let mut pos = 0;
            while pos < rdata.len() {
                let len = usize::from(rdata[pos]);
                let s = rdata
                    .get(pos + 1..pos + 1 + len)
                    .ok_or("a TXT string runs past its RDATA")?;
                strings.push(quote(s));
                pos += 1 + len;
            }
            Ok(strings.join(" "))
        }
        _ => Ok(format!("\\# {} {}", rdata.len(), hex(rdata))),
    }
}

/// Bytes as lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A class's mnemonic.
fn class_name(class: u16) -> String {
    match class {
        1 => "IN".into(),
        3 => "CH".into(),
        4 => "HS".into(),
        254 => "NONE".into(),
        255 => "ANY".into(),
        n => format!("CLASS{n}"),
    }
}

/// A type's mnemonic.
fn type_name(rtype: u16) -> String {
    TYPES
        .iter()
        .find(|(_, t)| *t == rtype && rtype != 0 && rtype < 65280)
        .map_or_else(|| format!("TYPE{rtype}"), |(n, _)| (*n).to_string())
}

/// An rcode's mnemonic (the full 12-bit value).
fn rcode_name(rcode: u16) -> String {
    let known = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    match rcode {
        0..=10 => known[usize::from(rcode)].into(),
        16 => "BADVERS".into(),
        23 => "BADCOOKIE".into(),
        n => format!("RCODE{n}"),
    }
}

/// An opcode's mnemonic.
fn opcode_name(opcode: u8) -> String {
    match opcode {
        0 => "QUERY".into(),
        1 => "IQUERY".into(),
        2 => "STATUS".into(),
        4 => "NOTIFY".into(),
        5 => "UPDATE".into(),
        6 => "DSO".into(),
        n => format!("OPCODE{n}"),
    }
}

// ---------------------------------------------------------------------
// Comparing.

/// What is compared of two replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    /// Whether there was a reply, and whether it parsed.
    Reply,
    /// The id, echoed or not.
    Id,
    /// The opcode.
    Opcode,
    /// QR AA TC RD RA Z AD CD.
    Flags,
    /// The rcode, with EDNS's extended bits.
    Rcode,
    /// The question section.
    Question,
    /// The answer section, as a sorted list of records.
    Answer,
    /// The authority section, likewise.
    Authority,
    /// The additional section without OPT, likewise.
    Additional,
    /// EDNS: the OPT record's owner, payload, version, flags and options.
    Edns,
}

impl Outcome {
    /// The outcome as compared: one value per field. Without a reply (or
    /// with one that does not parse) there is only [`Field::Reply`].
    fn fields(&self, query_id: Option<u16>) -> Vec<(Field, String)> {
        let m = match self {
            Outcome::Silent(why) => return vec![(Field::Reply, format!("none ({why})"))],
            Outcome::Malformed(why, _) => {
                return vec![(Field::Reply, format!("malformed ({why})"))]
            }
            Outcome::Reply(m) => m,
        };
        let id = if Some(m.id) == query_id {
            "echoed".to_string()
        } else {
            format!("{:#06x}, not the query's", m.id)
        };
        let flag_names = [
            (m.flags[0] & 0x80, "qr"),
            (m.flags[0] & 0x04, "aa"),
            (m.flags[0] & 0x02, "tc"),
            (m.flags[0] & 0x01, "rd"),
            (m.flags[1] & 0x80, "ra"),
            (m.flags[1] & 0x40, "z"),
            (m.flags[1] & 0x20, "ad"),
            (m.flags[1] & 0x10, "cd"),
        ];
        let flags: Vec<&str> = flag_names
            .iter()
            .filter(|(bit, _)| *bit != 0)
            .map(|(_, n)| *n)
            .collect();
        let ext = m.opts.first().map_or(0, |o| u16::from(o.ext_rcode));
        let rcode = (ext << 4) | u16::from(m.flags[1] & 0x0f);
        let edns = if m.opts.is_empty() {
            "none".to_string()
        } else {
            m.opts
                .iter()
                .map(|o| {
                    let mut text = format!("version {}, udp {}", o.version, o.payload);
                    if o.flags & 0x8000 != 0 {
                        text.push_str(", do");
                    }
                    if o.flags & 0x7fff != 0 {
                        let _ = write!(text, ", z {:#06x}", o.flags & 0x7fff);
                    }
                    if o.owner != "." {
                        let _ = write!(text, ", owner {}", o.owner);
                    }
                    for (code, data) in &o.options {
                        let _ = write!(text, ", option {code}: {}", hex(data));
                    }
                    text
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let lines = |l: &[String]| {
            if l.is_empty() {
                "(empty)".to_string()
            } else {
                l.join("\n")
            }
        };
        vec![
            (Field::Reply, "a message".into()),
            (Field::Id, id),
            (Field::Opcode, opcode_name((m.flags[0] >> 3) & 0x0f)),
            (Field::Flags, flags.join(" ")),
            (Field::Rcode, rcode_name(rcode)),
            (Field::Question, lines(&m.questions)),
            (Field::Answer, lines(&m.sections[0])),
            (Field::Authority, lines(&m.sections[1])),
            (Field::Additional, lines(&m.sections[2])),
            (Field::Edns, edns),
        ]
    }

    /// The outcome as a reader wants it: like dig, one field a line.
    fn render(&self, query_id: Option<u16>) -> String {
        match self {
            Outcome::Silent(why) => format!("    no reply: {why}\n"),
            Outcome::Malformed(why, bytes) => {
                format!("    malformed: {why}\n    bytes: {}\n", hex(bytes))
            }
            Outcome::Reply(_) => {
                let mut text = String::new();
                for (field, value) in self.fields(query_id) {
                    if field == Field::Reply {
                        continue;
                    }
                    let value = value.replace('\n', "\n        ");
                    let _ = writeln!(text, "    {field:?}: {value}");
                }
                text
            }
        }
    }
}

/// A difference the test accepts, and why.
#[derive(Clone, Copy)]
struct Exception {
    /// The cases' names, each exact or a pattern with one `*` standing for
    /// any text.
    cases: &'static [&'static str],
    /// Only over this transport, if set.
    transport: Option<Transport>,
    /// The field that differs.
    field: Field,
    /// What fleetdns's value of the field contains (`=...`: is; `|`
    /// between alternatives).
    fleetdns: &'static str,
    /// What Knot's value of the field contains, likewise.
    knot: &'static str,
    /// Why: `DEFECT: ...` where fleetdns is wrong by the RFCs.
    reason: &'static str,
    /// For an rcode difference: the fields that follow from the rcode
    /// (flags, question, sections, EDNS) are excused with it.
    follows: bool,
}

/// An exception for `field` of `cases`, where fleetdns's value contains
/// `fleetdns` and Knot's contains `knot`.
const fn differs(
    cases: &'static [&'static str],
    field: Field,
    fleetdns: &'static str,
    knot: &'static str,
    reason: &'static str,
) -> Exception {
    Exception {
        cases,
        transport: None,
        field,
        fleetdns,
        knot,
        reason,
        follows: false,
    }
}

impl Exception {
    /// Only over `transport`.
    const fn over(mut self, transport: Transport) -> Exception {
        self.transport = Some(transport);
        self
    }

    /// Excuses, with the rcode, the fields that follow from it.
    const fn and_what_follows(mut self) -> Exception {
        self.follows = true;
        self
    }

    /// Whether it names `case`.
    fn names(&self, case: &str) -> bool {
        self.cases.iter().any(|pattern| matches_case(pattern, case))
    }

    /// Whether it explains `d`, a difference of case `case`.
    fn explains(&self, d: &Difference, case: &str) -> bool {
        // Alternatives are separated by `|`; `=` asks for the whole value.
        let has = |value: &str, want: &str| {
            want.split('|').any(|want| match want.strip_prefix('=') {
                Some(exact) => value == exact,
                None => value.contains(want),
            })
        };
        self.names(case)
            && self.transport.is_none_or(|t| t == d.transport)
            && self.field == d.field
            && has(&d.fleetdns, self.fleetdns)
            && has(&d.knot, self.knot)
    }
}

/// Whether `case` is `pattern`, where one `*` stands for any text.
fn matches_case(pattern: &str, case: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => {
            case.len() >= head.len() + tail.len() && case.starts_with(head) && case.ends_with(tail)
        }
        None => pattern == case,
    }
}

/// The static names ([`STATICS`]), each asked the common types and SRV.
fn statics_table() -> Table {
    let mut t = Table::new();
    for name in [
        "bastion",
        "legacy-db",
        "lb",
        "www",
        "alias-chain",
        "loop-a",
        "dangling",
        "to-ent",
        "to-apex",
        "to-static",
        "_kerberos._udp",
        "_udp",
        "mail",
        "note",
    ] {
        let name = format!("{name}.fleet.internal.");
        for type_name in COMMON.iter().chain(&["SRV"]) {
            t.query(
                format!("{type_name} {name}"),
                Query::new(&name, qtype(type_name)),
                UDP,
            );
        }
    }
    t.query(
        "tcp: A alias-chain",
        Query::new("alias-chain.fleet.internal.", 1),
        TCP,
    );
    t.query(
        "WWW upper case A",
        Query::new("WWW.Fleet.Internal.", 1),
        UDP,
    );
    t
}

/// Names outside every zone of both servers.
const OUTSIDE: &[&str] = &[
    "* example.com.",
    "* Example.COM.",
    "* internal.",
    "* fleet.internal.evil.",
    "* .",
    "* localhost.",
    "* 99.99.99.10.in-addr.arpa.",
    "tcp: A example.com",
];

/// The differences that are known and accepted. Everything else fails.
const EXCEPTIONS: &[Exception] = &[
    // Choices: both servers are right, or neither is bound.
    differs(
        &[
            "ANY fleet.internal.",
            "ANY 20.10.in-addr.arpa.",
            "ANY c.b.a.0.8.1.f.1.0.0.6.2.ip6.arpa.",
            "tcp: ANY apex",
        ],
        Field::Answer,
        " IN SOA ",
        " IN NS ",
        "RFC 8482 section 4.1: ANY may be answered with any one RRset of the name; \
         at an apex fleetdns picks the SOA, Knot the NS",
    ),
    differs(
        OUTSIDE,
        Field::Edns,
        "=version 0, udp 1232",
        "=version 0, udp 1232, option 15: 0014",
        "Knot adds Extended DNS Error 20 (Not Authoritative, RFC 8914) to REFUSED for \
         names outside its zones; EDE is optional and fleetdns sends none",
    ),
    differs(
        &[
            "MX Fleet.Internal.",
            "A NO-Such.Fleet.Internal.",
            "TXT No-Such.FLEET.internal.",
            "A DB.fleet.INTERNAL.",
        ],
        Field::Authority,
        "fleet.internal. 10 IN SOA localhost. hostmaster.fleet.internal. ",
        " 10 IN SOA localhost. hostmaster.fleet.internal. ",
        "the owner of the SOA in a negative answer: Knot writes it as a pointer into the \
         question, so it takes the query's spelling of the apex; fleetdns writes the apex \
         as configured, lowercase. Names compare case-insensitively (RFC 4343), and both \
         keep the query's spelling for the name asked",
    ),
    differs(
        &["WWW upper case A"],
        Field::Answer,
        "CNAME web-1.fleet.internal.",
        "CNAME web-1.Fleet.Internal.",
        "the zone part of a static CNAME's target, and so of the name it leads to: Knot \
         compresses it to a pointer into the question, so it takes the query's spelling of \
         the apex; fleetdns writes the target as the static file spells it. Names compare \
         case-insensitively (RFC 4343)",
    ),
    differs(
        &["CD set: *", "AD and CD set: *", "every flag set: *"],
        Field::Flags,
        "=qr aa rd cd",
        "=qr aa rd",
        "the CD bit: fleetdns copies it from the query (RFC 4035 section 3.1.6 asks that of \
         security-aware servers), Knot 3.2 clears it for an unsigned zone; resolvers do not \
         read CD in answers",
    ),
    differs(
        &["TYPE0 *"],
        Field::Rcode,
        "=NOERROR|=NXDOMAIN|=REFUSED",
        "=NOTIMP",
        "type 0 is reserved (RFC 6895 section 3.1) and no RFC says how to answer a query \
         for it: Knot answers NOTIMP, fleetdns as for any type it has no data of (NODATA \
         or NXDOMAIN with the SOA, REFUSED outside its zones)",
    )
    .and_what_follows(),
    differs(
        &["ANY SOA fleet.internal.", "ANY A web-1.fleet.internal."],
        Field::Rcode,
        "=REFUSED",
        "=NOERROR",
        "QCLASS * (RFC 1035 section 3.2.5): Knot answers it from its class IN zone; \
         fleetdns serves class IN only and refuses every other class, * included, as it \
         refuses CH and HS",
    )
    .and_what_follows(),
    differs(
        &[
            "opcode 4",
            "opcode 4 without EDNS",
            "opcode 5",
            "opcode 5 without EDNS",
            "tcp: NOTIFY",
            "tcp: UPDATE",
        ],
        Field::Rcode,
        "=NOTIMP",
        "=NOTAUTH",
        "NOTIFY and UPDATE: fleetdns is a primary that takes neither and answers NOTIMP \
         (RFC 1035's rcode for an unsupported kind of query); Knot has both and refuses \
         an unsigned one that no ACL allows with NOTAUTH",
    ),
    differs(
        &[
            "tcp: AXFR",
            "tcp: AXFR without EDNS",
            "tcp: IXFR",
            "tcp: AXFR of the reverse zone",
            "udp: IXFR",
            "IXFR fleet.internal.",
            "IXFR 20.10.in-addr.arpa.",
        ],
        Field::Rcode,
        "=REFUSED",
        "=NOTAUTH",
        "a transfer no ACL allows: fleetdns answers REFUSED (a policy refusal), Knot \
         NOTAUTH; RFC 5936 does not fix the rcode, and secondaries take both as failure",
    ),
    differs(
        &["AXFR *", "udp: AXFR", "udp: AXFR without EDNS"],
        Field::Rcode,
        "=FORMERR|=NOTAUTH",
        "=NOTIMP",
        "AXFR over UDP is not defined (RFC 5936 section 4.2): fleetdns answers FORMERR for \
         its zones, as BIND does, and NOTAUTH for other names; Knot answers NOTIMP",
    )
    .over(Transport::Udp),
    differs(
        &[
            "RDLENGTH past the end: *",
            "two OPT records: *",
            "ARCOUNT 1 and no record",
        ],
        Field::Question,
        "=(empty)",
        ".fleet.internal. IN ",
        "both answer FORMERR; Knot repeats the question, fleetdns sends a bare header: \
         RFC 1035 does not ask for the question in an error, and not repeating what did \
         not parse avoids the bug of issue 19",
    ),
    differs(
        &[
            "QDCOUNT 2",
            "QDCOUNT 2 *",
            "tcp: QDCOUNT 2",
            "a header without its question",
            "a header claiming 65535 questions",
            "a question cut in a label",
            "a question without its class",
            "label type 0x40",
            "label type 0x80",
            "a name over 255 octets",
            "a question pointing *",
            "a second question pointing at the first",
            "random *",
        ],
        Field::Reply,
        "=a message",
        "none",
        "a query whose question cannot be read, or with more than one (RFC 9619): \
         fleetdns answers (FORMERR with a bare header; NOTIMP, questions echoed, for a \
         NOTIFY of two), Knot drops it (over TCP it closes the connection). RFC 1035 \
         allows both; an answer lets the client stop waiting (RFC 8906 prefers one)",
    ),
    differs(
        &[
            "a byte after the question",
            "a byte after the OPT",
            "a byte after the question of a TXT query",
            "a whole question after the question",
            "an option longer than RDATA: *",
        ],
        Field::Rcode,
        "=NOERROR|=NXDOMAIN",
        "=FORMERR",
        "bytes after the last counted record (or an EDNS option running past its OPT): \
         Knot answers FORMERR, fleetdns ignores them and answers the question, as \
         hickory's decoder does (the 4096-byte datagram test in dns.rs relies on it); no \
         RFC says what to do with trailing bytes",
    )
    .and_what_follows(),
    differs(
        &["size 1: *"],
        Field::Rcode,
        "=NOERROR|=NXDOMAIN",
        "=FORMERR",
        "Knot 3.2 answers FORMERR when the OPT's payload size is exactly 1 (0, 2 and 511 \
         are answered); RFC 6891 section 6.2.5 says sizes below 512 count as 512, as \
         fleetdns does",
    )
    .and_what_follows(),
    differs(
        &["expire: *"],
        Field::Edns,
        "=version 0, udp 1232",
        "=version 0, udp 1232, option 9: 00127500",
        "Knot answers the EDNS EXPIRE option (RFC 7314) with the zone's SOA expire; \
         fleetdns does not implement that optional option and ignores it, as RFC 6891 \
         section 6.1.2 asks of unknown options",
    ),
    differs(
        &["OPT owner not the root: *"],
        Field::Rcode,
        "=FORMERR",
        "=NOERROR|=NXDOMAIN",
        "RFC 6891 section 6.1.2: the OPT's owner MUST be the root; fleetdns rejects such \
         a query with FORMERR, Knot ignores the owner",
    )
    .and_what_follows(),
    // RFC 7828 keepalive, which fleetdns has (issue 15, item 4) and Knot
    // 3.2 does not: both ignore the option over UDP, as RFC 7828 asks.
    differs(
        &["tcp: keepalive", "tcp: keepalive on the general path"],
        Field::Edns,
        "=version 0, udp 1232, option 11: 0064",
        "=version 0, udp 1232",
        "RFC 7828: fleetdns's TCP replies to a query with the \
         edns-tcp-keepalive option carry it with the idle timeout (10 s: 100 units of \
         100 ms); Knot 3.2 does not implement RFC 7828",
    )
    .over(Transport::Tcp),
    differs(
        &["tcp: keepalive with data"],
        Field::Rcode,
        "=FORMERR",
        "=NOERROR",
        "RFC 7828 section 3.2.1: a client MUST NOT send a TIMEOUT in a query; fleetdns \
         answers such a query FORMERR (as Unbound does), Knot 3.2 does not implement \
         RFC 7828 and ignores the option",
    )
    .over(Transport::Tcp)
    .and_what_follows(),
];

/// One field that differs in one exchange.
struct Difference {
    /// Over which transport.
    transport: Transport,
    /// Which field.
    field: Field,
    /// fleetdns's value.
    fleetdns: String,
    /// Knot's value.
    knot: String,
}

/// One query sent to both servers.
struct Exchange {
    /// Index of the case.
    case: usize,
    /// Over which transport.
    transport: Transport,
    /// What fleetdns did.
    fleetdns: Outcome,
    /// What Knot did.
    knot: Outcome,
}

/// Sends every case of `table` to both servers (16 at a time: the silent
/// cases each wait 3 s) and returns the exchanges in table order.
fn exchange_all(world: &World, table: &Table) -> Vec<Exchange> {
    let jobs: Vec<(usize, Transport, Server)> = table
        .cases
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            c.over.iter().flat_map(move |&t| {
                [Server::Fleetdns, Server::Knot]
                    .into_iter()
                    .map(move |s| (i, t, s))
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<(usize, Transport, Server), Outcome>> = Mutex::default();
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                while let Some(&(case, transport, server)) =
                    jobs.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    let addr = world.addr(server, transport);
                    let bytes = &table.cases[case].bytes;
                    let outcome = match transport {
                        Transport::Udp => ask_udp(addr, bytes),
                        Transport::Tcp => ask_tcp(addr, bytes),
                    };
                    results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((case, transport, server), outcome);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut take = |key| results.remove(&key).expect("every job ran");
    table
        .cases
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.over.iter().map(move |&t| (i, t)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(case, transport)| Exchange {
            case,
            transport,
            fleetdns: take((case, transport, Server::Fleetdns)),
            knot: take((case, transport, Server::Knot)),
        })
        .collect()
}

/// How many fields of an exchange's two outcomes were compared, and
/// those that differ: only [`Field::Reply`] is compared unless both are
/// parsed replies.
fn compare(exchange: &Exchange, query_id: Option<u16>) -> (usize, Vec<Difference>) {
    let ours = exchange.fleetdns.fields(query_id);
    let theirs = exchange.knot.fields(query_id);
    let mut differences = Vec::new();
    let pairs: Vec<_> = if ours[0] != theirs[0] {
        vec![(&ours[0], &theirs[0])]
    } else {
        ours.iter().zip(&theirs).collect()
    };
    for ((field, a), (_, b)) in &pairs {
        if a != b {
            differences.push(Difference {
                transport: exchange.transport,
                field: *field,
                fleetdns: a.clone(),
                knot: b.clone(),
            });
        }
    }
    (pairs.len(), differences)
}

/// Runs `table` against both servers and fails, showing both replies of
/// every unexplained difference, unless every difference is in
/// [`EXCEPTIONS`] and every exception naming one of its cases is still
/// needed.
///
/// With `FLEETDNS_CONFORMANCE_SHOW` set, every exchange is printed. Returns
/// how many exchanges had answers from both servers.
fn check(label: &str, table: &Table) -> usize {
    let show = std::env::var_os("FLEETDNS_CONFORMANCE_SHOW").is_some();
    let world = world();
    let started = Instant::now();
    let exchanges = exchange_all(&world, table);
    let mut comparisons = 0;
    let mut explained = 0;
    let mut used = BTreeSet::new();
    let mut report = String::new();
    let mut answered = 0;
    for exchange in &exchanges {
        let case = &table.cases[exchange.case];
        let query_id = case
            .bytes
            .get(..2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        let (compared, differences) = compare(exchange, query_id);
        comparisons += compared;
        if let (Outcome::Reply(a), Outcome::Reply(b)) = (&exchange.fleetdns, &exchange.knot) {
            if !a.sections[0].is_empty() && !b.sections[0].is_empty() {
                answered += 1;
            }
        }
        // An explained rcode difference may carry its consequences.
        let follows = differences.iter().find_map(|d| {
            EXCEPTIONS
                .iter()
                .position(|e| e.follows && e.explains(d, &case.name))
        });
        let mut unexplained = Vec::new();
        for d in &differences {
            let consequence = matches!(
                d.field,
                Field::Flags
                    | Field::Question
                    | Field::Answer
                    | Field::Authority
                    | Field::Additional
                    | Field::Edns
            );
            let explained_by = EXCEPTIONS
                .iter()
                .position(|e| e.explains(d, &case.name))
                .or(follows.filter(|_| consequence));
            match explained_by {
                Some(i) => {
                    let pattern = EXCEPTIONS[i]
                        .cases
                        .iter()
                        .position(|p| matches_case(p, &case.name));
                    used.insert((i, pattern));
                    explained += 1;
                }
                None => unexplained.push(d),
            }
        }
        if show {
            println!(
                "--- {:?} {:?}\n  fleetdns:\n{}  knot:\n{}",
                case.name,
                exchange.transport,
                exchange.fleetdns.render(query_id),
                exchange.knot.render(query_id)
            );
        }
        if unexplained.is_empty() {
            continue;
        }
        let _ = writeln!(
            report,
            "\n=== {:?} {:?}: {} differ\n  query: {}\n  fleetdns:\n{}  knot:\n{}",
            case.name,
            exchange.transport,
            unexplained
                .iter()
                .map(|d| format!("{:?}", d.field))
                .collect::<Vec<_>>()
                .join(", "),
            hex(&case.bytes),
            exchange.fleetdns.render(query_id),
            exchange.knot.render(query_id),
        );
    }
    // Every case pattern of an exception that names cases of this table
    // must still be needed here, so that the list stays true.
    for (i, e) in EXCEPTIONS.iter().enumerate() {
        for (j, pattern) in e.cases.iter().enumerate() {
            let mine = table.cases.iter().any(|c| matches_case(pattern, &c.name));
            if mine && !used.contains(&(i, Some(j))) {
                let _ = writeln!(
                    report,
                    "\n=== exception no longer needed for {pattern:?} (remove it): {:?} {:?}: {}",
                    e.transport, e.field, e.reason
                );
            }
        }
    }
    println!(
        "conformance {label}: {} cases, {} exchanges, {comparisons} field comparisons, {explained} explained differences, {answered} exchanges with answers from both, in {:.1} s",
        table.cases.len(),
        exchanges.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.is_empty(),
        "fleetdns and Knot differ ({label}):{report}\n---- fleetdns log ----\n{}---- knot log ----\n{}",
        world.fleetdns.log(),
        world.knot.log()
    );
    answered
}

// ---------------------------------------------------------------------
// The tests.

#[test]
fn every_name_and_type_is_answered_as_knot_answers_it() {
    let answered = check("names and types", &names_table());
    // Both serve data, not just refusals alike: the zones really loaded.
    assert!(answered >= 40, "only {answered} answers from both");
}

#[test]
fn edns_sizes_versions_flags_and_options_are_handled_as_knot_handles_them() {
    check("EDNS", &edns_table());
}

#[test]
fn opcodes_flags_classes_and_question_counts_are_handled_as_knot_handles_them() {
    check("header", &header_table());
}

#[test]
fn malformed_queries_get_what_knot_gives_them() {
    check("junk", &junk_table());
}

#[test]
fn tcp_queries_are_answered_as_knot_answers_them() {
    check("TCP", &tcp_table());
}

#[test]
fn static_records_and_their_cnames_are_answered_as_knot_answers_them() {
    let answered = check("static records", &statics_table());
    assert!(answered >= 20, "only {answered} answers from both");
}

/// Every exception names a case that exists and says why; a DEFECT says
/// so first. (Needs no servers.)
#[test]
fn every_exception_names_a_case_and_gives_a_reason() {
    let tables = [
        names_table(),
        edns_table(),
        header_table(),
        junk_table(),
        tcp_table(),
        statics_table(),
    ];
    let mut all = BTreeSet::new();
    for case in tables.iter().flat_map(|t| &t.cases) {
        assert!(
            all.insert(case.name.clone()),
            "two cases named {:?}",
            case.name
        );
    }
    for e in EXCEPTIONS {
        for pattern in e.cases {
            assert!(
                all.iter().any(|c| matches_case(pattern, c)),
                "exception {pattern:?} names no case"
            );
        }
        assert!(e.reason.len() > 20, "{:?}: say why", e.cases);
        assert!(
            !e.reason.to_ascii_lowercase().starts_with("defect")
                || e.reason.starts_with("DEFECT: "),
            "{:?}: a defect's reason starts with \"DEFECT: \"",
            e.cases
        );
    }
}

//! Starting the real binary and talking to it.
//!
//! `Daemon::start` runs `fleetdns serve` with `--listen 127.0.0.1:0` and
//! reads the `listening for UDP/TCP on ...` lines from its log to learn the
//! ports (as hickory-dns's own harness does). The child is killed on drop,
//! and its whole log is printed when a test fails, to show why.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fleetdns")
}

/// The demo inventory shipped in the repository.
pub fn example_fleet() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/fleet.json")
}

/// A running `fleetdns serve`.
pub struct Daemon {
    /// The child process.
    pub child: Child,
    /// Where it answers UDP.
    pub udp: SocketAddr,
    /// Where it answers TCP.
    pub tcp: SocketAddr,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
    /// Its own state directory (`STATE_DIRECTORY`), unless the test gave one.
    pub state: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `fleetdns serve` with `args` plus `--listen 127.0.0.1:0`.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_env(args, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        Self::start_with_env(&full, env)
    }

    /// Starts the binary with exactly `args` and waits for both listeners.
    pub fn start_raw(args: &[&str]) -> Daemon {
        Self::start_with_env(args, &[])
    }

    /// [`Daemon::spawn`], then waits until the zone is servable (the log
    /// line that goes with systemd's READY=1), as a service manager would.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let d = Self::spawn(args, env);
        d.wait_for_log("zone is servable", 30);
        d
    }

    /// Starts the binary with `args` and extra environment variables and
    /// returns once it listens, servable or not.
    ///
    /// Each daemon persists its state in a fresh temp dir (through
    /// `STATE_DIRECTORY`, as under systemd) unless `env` names one: tests
    /// must never share, or read, `/var/lib/fleetdns`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Self::spawn_wrapped(&[], args, env)
    }

    /// [`Daemon::spawn`] under a wrapper command (`strace -f`, `ip netns
    /// exec NAME`): `wrapper` comes first, then the binary and `args`.
    pub fn spawn_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        aws_test_env(&mut command);
        let state = if env.iter().any(|(k, _)| *k == "STATE_DIRECTORY") {
            None
        } else {
            let dir = tempdir();
            command.env("STATE_DIRECTORY", dir.path());
            Some(dir)
        };
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fleetdns");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                for proto in ["UDP", "TCP"] {
                    let marker = format!("listening for {proto} on ");
                    if let Some(rest) = line.split(&marker).nth(1) {
                        // the address ends the line, or a JSON string
                        let rest = rest.split(['"', ' ']).next().unwrap_or("");
                        if let Ok(addr) = rest.trim().parse::<SocketAddr>() {
                            let _ = tx.send((proto, addr));
                        }
                    }
                }
            }
        });
        let (mut udp, mut tcp) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while udp.is_none() || tcp.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("UDP", a)) => udp = Some(a),
                Ok((_, a)) => tcp = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!("fleetdns did not start; log:\n{}", log.lock().unwrap());
                }
            }
        }
        Daemon {
            child,
            udp: udp.unwrap(),
            tcp: tcp.unwrap(),
            log,
            state,
        }
    }

    /// The `http://ADDR` of the metrics listener, from its log line.
    pub fn metrics_base(&self) -> String {
        let marker = "listening for HTTP (metrics) on ";
        self.wait_for_log(marker, 10);
        let log = self.log();
        let rest = log.split(marker).nth(1).unwrap_or_default();
        let addr = rest.lines().next().unwrap_or_default().trim();
        format!("http://{addr}")
    }

    /// GET `path` from the metrics listener: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        crate::moto::http(&self.metrics_base(), "GET", path, "")
            .unwrap_or_else(|| panic!("GET {path} failed; log:\n{}", self.log()))
    }

    /// The value of one sample in `/metrics`: the line that starts with
    /// `metric{` and contains every label in `labels` (0 when absent).
    pub fn metric(&self, metric: &str, labels: &[&str]) -> f64 {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        sample(&body, metric, labels)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (or panics after `secs`).
    pub fn wait_for_log(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("log never showed {needle:?}:\n{}", self.log());
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// `dig` against this daemon over UDP; `args` are extra dig arguments.
    pub fn dig(&self, args: &[&str]) -> String {
        dig(self.udp, args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- fleetdns log ----\n{}", self.log());
        }
    }
}

/// The value of the first sample of `metric` whose labels contain all of
/// `labels` (e.g. `qtype="A"`), or 0.
pub fn sample(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Runs `dig @addr -p port` with short timeouts and returns its output.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (scripts/test installs bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short`, one answer per line.
pub fn short(server: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut full = vec!["+short"];
    full.extend_from_slice(args);
    dig(server, &full)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Polls `name` (A) until it answers exactly `want`, or panics after `secs`.
pub fn wait_for_answer<S: AsRef<str>>(d: &Daemon, name: &str, want: &[S], secs: u64) {
    let want: Vec<&str> = want.iter().map(AsRef::as_ref).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = short(d.udp, &[name]);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {got:?}, wanted {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the binary to completion with `args`.
pub fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

/// [`run`] with extra environment variables.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin());
    aws_test_env(&mut command);
    command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run fleetdns")
}

/// AWS settings for every child: dummy credentials, no instance metadata
/// (nothing may reach 169.254.169.254), no region or endpoint from the
/// environment, and no profile files from the machine (empty ones: a
/// missing file named by the variable draws a warning from the SDK).
pub fn aws_test_env(command: &mut Command) {
    for var in [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_SESSION_TOKEN",
        // log levels are the test's to choose
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
        // No config but what the test gives: a machine with an
        // /etc/fleetdns/fleetdns.toml must not change what tests see (an
        // empty file is every default). Tests that set it themselves win.
        .env("FLEETDNS_CONFIG", "/dev/null")
        // and no state in /var/lib/fleetdns: daemons get their own dir
        // (Daemon::spawn); one-shot commands share this one
        .env("STATE_DIRECTORY", shared_state_dir())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
}

/// A state directory for one-shot commands, made once per test run.
pub fn shared_state_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(tempdir).path()
}

/// Parses a reply strictly: it must decode and leave no trailing bytes.
pub fn strict_parse(bytes: &[u8]) -> Message {
    let mut decoder = BinDecoder::new(bytes);
    let message =
        Message::read(&mut decoder).unwrap_or_else(|e| panic!("reply does not parse: {e}"));
    assert!(
        decoder.is_empty(),
        "{} bytes trail the reply ({} bytes)",
        decoder.len(),
        bytes.len()
    );
    message
}

/// A query message; `edns` is the UDP size to offer, if any.
pub fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    let mut q = Query::query(Name::from_ascii(name).unwrap(), qtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// Sends raw bytes over UDP and returns the raw reply.
pub fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(bytes, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match socket.recv(&mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// One UDP exchange with hickory's encoder and the strict decoder.
pub fn udp_query(server: SocketAddr, message: &Message) -> (Vec<u8>, Message) {
    let raw = udp_raw(server, &message.to_vec().unwrap()).expect("UDP reply");
    let parsed = strict_parse(&raw);
    assert_eq!(parsed.metadata.id, message.metadata.id);
    (raw, parsed)
}

/// One TCP exchange (length-prefixed) on a new connection.
pub fn tcp_query(server: SocketAddr, message: &Message) -> (Vec<u8>, Message) {
    let raw = tcp_raw(server, &message.to_vec().unwrap()).expect("TCP reply");
    let parsed = strict_parse(&raw);
    (raw, parsed)
}

/// Sends raw bytes as one length-prefixed message on a new TCP connection
/// and returns the raw reply; `None` when the server closed instead.
pub fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).unwrap();
    read_framed(&mut stream)
}

/// Reads one length-prefixed message; `None` when the server closed.
pub fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Waits until a daemon has persisted its inventory in `state_dir` (it does
/// so right after its first swap), or panics after 5 s.
pub fn wait_for_state(state_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !state_dir.join("inventory.bin").exists() {
        assert!(Instant::now() < deadline, "no state file was written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON header line of the state file in `state_dir`, if the file is
/// there and its first line is JSON.
pub fn state_header(state_dir: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(state_dir.join("inventory.bin")).ok()?;
    let line = bytes.split(|&b| b == b'\n').next()?;
    serde_json::from_slice(line).ok()
}

/// A finished command's stdout, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether the tests run as root (owners, mounts, namespaces need it).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// The A records of a reply, as text, in order.
pub fn a_records(reply: &Message) -> Vec<String> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

/// A temp dir for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// One instance for a generated inventory.
pub struct Fake<'a> {
    pub id: String,
    pub name: Option<&'a str>,
    pub ipv4: Vec<String>,
    pub state: &'a str,
}

impl<'a> Fake<'a> {
    /// A running instance numbered `n` with one address.
    pub fn running(n: u32, name: Option<&'a str>) -> Self {
        Fake {
            id: format!("i-{n:017x}"),
            name,
            ipv4: vec![format!("10.9.{}.{}", n / 250, n % 250 + 1)],
            state: "running",
        }
    }
}

/// Writes a describe-instances document with `instances` to `path`.
pub fn write_inventory(path: &Path, instances: &[Fake]) {
    let list: Vec<serde_json::Value> = instances
        .iter()
        .map(|f| {
            let tags: Vec<serde_json::Value> = f
                .name
                .iter()
                .map(|n| serde_json::json!({"Key": "Name", "Value": n}))
                .collect();
            serde_json::json!({
                "InstanceId": f.id,
                "State": {"Code": 16, "Name": f.state},
                "PrivateIpAddress": f.ipv4.first(),
                "InstanceType": "t3.micro",
                "Placement": {"AvailabilityZone": "us-east-1a"},
                "Tags": tags,
                "SecurityGroups": [{"GroupName": "sg-fallback", "GroupId": "sg-1"}],
                "NetworkInterfaces": [{
                    "Attachment": {"DeviceIndex": 0},
                    "PrivateIpAddresses": f.ipv4.iter().enumerate()
                        .map(|(i, a)| serde_json::json!({"Primary": i == 0, "PrivateIpAddress": a}))
                        .collect::<Vec<_>>(),
                }],
            })
        })
        .collect();
    let doc = serde_json::json!({"Reservations": [{"Instances": list}]});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts the daemon on the demo fleet with `toml` as its config file (in `dir`).
pub fn start_with_config(dir: &Path, toml: &str) -> Daemon {
    let config = dir.join("fleetdns.toml");
    std::fs::write(&config, toml).unwrap();
    Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--source",
        &file_source(&example_fleet()),
    ])
}

/// The `source` flag for a file.
pub fn file_source(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// A dnsmasq that answers `upstream.test` and nothing else, on loopback.
pub struct Dnsmasq {
    /// The dnsmasq process.
    pub child: Child,
    /// Where it answers.
    pub addr: SocketAddr,
}

/// A free loopback port below the kernel's ephemeral range (32768 and
/// up), for upstreams that tests stop. fleetdns goes on sending queries to
/// a stopped upstream's port; were that port ephemeral, the `dig` of a
/// parallel test could get it as its source port and read one of those
/// queries as its answer ("query response not set"), as happened in CI.
pub fn quiet_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id() % 4000;
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20000 + ((start + offset * 7) % 12000) as u16;
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
        assert!(offset < 12000, "no free port below 32000");
    }
}

impl Dnsmasq {
    /// Starts it and waits until it answers.
    pub fn start() -> Dnsmasq {
        let port = quiet_port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--user=root",
                &format!("--port={port}"),
                "--address=/upstream.test/192.0.2.7",
                "--address=/nx.test/",
                // dnsmasq's own answers default to TTL 0, which nobody caches
                "--local-ttl=300",
                "--ptr-record=99.99.99.10.in-addr.arpa,up.upstream.test",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (scripts/test installs it)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while short(addr, &["upstream.test"]) != ["192.0.2.7"] {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Dnsmasq { child, addr }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The EC2 API for tests: a real moto server (pinned, in a venv that
//! `scripts/test` creates), seeded with boto3 through `tests/moto/fleet.py`,
//! and an optional fault proxy (`tests/moto/faultproxy.py`) in front of it
//! that answers throttling or errors for one region on command.
//! Everything listens on 127.0.0.1 only.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The venv with moto and boto3.
pub fn venv() -> PathBuf {
    let path = std::env::var_os("FLEETDNS_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv"));
    assert!(
        path.join("bin/moto_server").exists(),
        "no moto venv at {}: run scripts/test, which creates it",
        path.display()
    );
    path
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/moto")
        .join(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(&moto.endpoint, "GET", "/moto-api/", "").map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn fleet(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new(venv().join("bin/python"))
            .arg(script("fleet.py"))
            .args(["--endpoint", &self.endpoint])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run fleet.py");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "fleet.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Seeds a fleet (see fleet.py for the spec) and returns what was made.
    pub fn seed(&self, spec: &Value) -> Value {
        serde_json::from_str(&self.fleet(&["seed"], Some(&spec.to_string()))).unwrap()
    }

    /// Seeds a fleet in the account of `role_arn`.
    pub fn seed_as(&self, role_arn: &str, spec: &Value) -> Value {
        serde_json::from_str(
            &self.fleet(&["--role-arn", role_arn, "seed"], Some(&spec.to_string())),
        )
        .unwrap()
    }

    /// Creates an SQS queue in `region` and returns its URL.
    pub fn queue(&self, region: &str, name: &str) -> String {
        self.fleet(&["queue", region, name], None)
    }

    /// Sends one message with `body` to the queue at `url`.
    pub fn send(&self, region: &str, url: &str, body: &str) {
        self.fleet(&["send", region, url], Some(body));
    }

    /// Messages in the queue at `url`, visible or in flight.
    pub fn depth(&self, region: &str, url: &str) -> u64 {
        self.fleet(&["depth", region, url], None)
            .trim()
            .parse()
            .unwrap()
    }

    /// Deletes the queue at `url`.
    pub fn delete_queue(&self, region: &str, url: &str) {
        self.fleet(&["delete-queue", region, url], None);
    }

    /// Launches a running instance named `name` in `region`'s default
    /// VPC: its id and private address.
    pub fn launch(&self, region: &str, name: &str) -> (String, String) {
        let out: Value =
            serde_json::from_str(&self.fleet(&["launch", region, name], None)).unwrap();
        (
            out["id"].as_str().unwrap().to_string(),
            out["ip"].as_str().unwrap().to_string(),
        )
    }

    /// Creates the EventBridge rule that sends EC2 state changes in
    /// `region` to the queue at `url` (as deploy/events/ does).
    pub fn state_rule(&self, region: &str, url: &str) {
        self.fleet(&["state-rule", region, url], None);
    }

    /// Puts one event (as EventBridge delivers it; its source, detail-type,
    /// detail and resources are used) on `region`'s default event bus.
    pub fn put_event(&self, region: &str, event: &str) {
        self.fleet(&["put-event", region], Some(event));
    }

    /// Creates an IAM user allowed `actions` only (on any resource), and
    /// returns its access key id and secret; see [`Moto::user_without_policy`].
    pub fn user_allowed(&self, name: &str, actions: &[&str]) -> (String, String) {
        let mut args = vec!["iam-user", name];
        for action in actions {
            args.extend(["--allow", action]);
        }
        let keys: Value = serde_json::from_str(&self.fleet(&args, None)).unwrap();
        (
            keys["id"].as_str().unwrap().to_string(),
            keys["secret"].as_str().unwrap().to_string(),
        )
    }

    /// Changes an instance's state (running, stopped, terminated).
    pub fn set_state(&self, region: &str, id: &str, state: &str) {
        self.fleet(&["state", region, id, state], None);
    }

    /// Sets a tag on an instance.
    pub fn tag(&self, region: &str, id: &str, key: &str, value: &str) {
        self.fleet(&["tag", region, id, key, value], None);
    }

    /// Creates an IAM user with no policy and returns its access key id
    /// and secret: once [`Moto::reject_credentials`] turns authorization
    /// on, its calls fail for want of permission, not of credentials.
    pub fn user_without_policy(&self, name: &str) -> (String, String) {
        self.user_allowed(name, &[])
    }

    /// Makes every further call fail with AuthFailure (moto's own switch).
    pub fn reject_credentials(&self) {
        let (status, _) = http(&self.endpoint, "POST", "/moto-api/reset-auth", "0").unwrap();
        assert_eq!(status, 200);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fault proxy in front of a moto server.
pub struct FaultProxy {
    child: Child,
    /// `http://127.0.0.1:PORT`: point fleetdns here.
    pub endpoint: String,
}

impl FaultProxy {
    /// Starts the proxy in front of `moto`.
    pub fn start(moto: &Moto) -> FaultProxy {
        let mut child = Command::new(venv().join("bin/python"))
            .arg(script("faultproxy.py"))
            .args(["0", &moto.endpoint])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start faultproxy.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .expect("proxy ready line");
        FaultProxy {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Sets the fault for `region` (or `*`, or `SERVICE/REGION`, or
    /// `SERVICE/*`): ok, throttle, error500, drop, delay.
    pub fn set(&self, region: &str, mode: &str) {
        let body = serde_json::json!({"region": region, "mode": mode, "seconds": 30}).to_string();
        let (status, _) = http(&self.endpoint, "POST", "/__fault", &body).unwrap();
        assert_eq!(status, 200);
    }

    /// Requests seen per region.
    pub fn calls(&self, region: &str) -> u64 {
        let (_, body) = http(&self.endpoint, "GET", "/__stats", "").unwrap();
        let stats: Value = serde_json::from_str(&body).unwrap();
        stats[region].as_u64().unwrap_or(0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 request to a loopback URL: (status, body).
pub fn http(base: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let authority = base.strip_prefix("http://")?;
    let mut stream = TcpStream::connect(authority).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

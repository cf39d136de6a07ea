//! systemd's service notification protocol (`sd_notify`), by hand.
//!
//! Under `Type=notify`, systemd passes a datagram socket in `NOTIFY_SOCKET`
//! and waits for `READY=1`; with `WatchdogSec=` it also passes
//! `WATCHDOG_USEC` and restarts the service when `WATCHDOG=1` stops
//! arriving. The protocol is one datagram of `KEY=VALUE` lines, so a few
//! lines of std code do it without a C library or another crate. Outside
//! systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tracing::debug;

/// Where notifications go, if anywhere.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// The socket path (a leading `@` is Linux's abstract namespace).
    socket: Option<PathBuf>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for; a no-op without it.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        Self { socket }
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification (e.g. `READY=1`); failures are logged at
    /// debug level only, since the daemon works the same without systemd.
    pub fn notify(&self, state: &str) {
        let Some(path) = &self.socket else {
            return;
        };
        if let Err(error) = send(path, state) {
            debug!(%error, socket = %path.display(), "sd_notify failed");
        }
    }

    /// How often to send `WATCHDOG=1`: half the period systemd asks for
    /// (`WATCHDOG_USEC`), if it asks this process (`WATCHDOG_PID`, when set,
    /// is our pid).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

fn send(path: &std::path::Path, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(path.clone()),
        };
        notifier.notify("READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("fleetdns-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier {
            socket: Some(PathBuf::from(format!("@{name}"))),
        };
        notifier.notify("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_nothing_happens() {
        let notifier = Notifier { socket: None };
        assert!(!notifier.is_active());
        notifier.notify("READY=1");
        assert_eq!(notifier.watchdog_interval(), None);
    }
}

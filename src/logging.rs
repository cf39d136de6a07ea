//! Log lines: where they go and how they look.
//!
//! Everything goes to stderr. Under systemd, whose journal reads stderr
//! (`JOURNAL_STREAM` names the stream), each line starts with its priority
//! as sd-daemon(3) prefixes it (`<4>` for a warning), so that
//! `journalctl -p warning` selects by level, and carries no time stamp: the
//! journal adds its own. Elsewhere lines are plain text with a time stamp,
//! in colour on a terminal. `json` writes one object a line for log
//! shippers (with the prefix too under systemd).
//!
//! The daemon logs at info; one-shot commands (`list`, `check`, `hosts`)
//! only warnings, because cron mails or logs whatever they print; each
//! `-v` adds a level, and `RUST_LOG` overrides both. hickory logs every
//! request at info, which costs CPU and floods the journal: warn for it.
//! aws-config's credential providers warn with the Debug dump of errors
//! that fleetdns reports in words itself: error for them.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// How to set up logging.
#[derive(Debug, Clone, Copy)]
pub struct LogSetup {
    /// Text or JSON.
    pub format: LogFormat,
    /// Whether this is the daemon (info by default) or a one-shot command
    /// (warnings by default).
    pub daemon: bool,
    /// How many `-v` were given.
    pub verbose: u8,
}

/// The level shown without `RUST_LOG`.
fn default_level(setup: &LogSetup) -> Level {
    let levels = [Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE];
    let start = usize::from(setup.daemon);
    levels[(start + usize::from(setup.verbose)).min(levels.len() - 1)]
}

/// The filter: `RUST_LOG` if set, else the default level with hickory held
/// at warn.
pub fn filter(setup: &LogSetup) -> EnvFilter {
    let asked = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    asked
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| {
            let level = default_level(setup).to_string().to_lowercase();
            // aws-config's credential providers warn with the whole Debug
            // dump of what fleetdns reports on one line itself.
            EnvFilter::new(format!(
                "{level},hickory_server=warn,hickory_proto=warn,hickory_net=warn,aws_config=error"
            ))
        })
}

/// Whether stderr is the stream systemd's journal reads: `JOURNAL_STREAM`
/// is `DEVICE:INODE` of that stream, and must match stderr itself (a child
/// that inherited the variable but writes elsewhere gets plain lines).
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let value = value.to_string_lossy();
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        // No /proc: trust the variable.
        Err(_) => true,
    }
}

/// The sd-daemon(3) priority of a level: err, warning, info, debug.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A formatter that puts the journal's priority prefix before another.
struct Prefixed<F> {
    inner: F,
    journal: bool,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if self.journal {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber; a second call (tests) changes nothing.
pub fn init(setup: LogSetup) {
    let journal = stderr_is_journal();
    let registry = tracing_subscriber::registry().with(filter(&setup));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = match (setup.format, journal) {
        (LogFormat::Json, _) => registry
            .with(layer.fmt_fields(JsonFields::new()).event_format(Prefixed {
                inner: format().json().flatten_event(true),
                journal,
            }))
            .try_init(),
        (LogFormat::Text, true) => registry
            .with(layer.with_ansi(false).event_format(Prefixed {
                inner: format().without_time(),
                journal,
            }))
            .try_init(),
        (LogFormat::Text, false) => registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
    };
    // Only fails when a subscriber is already set.
    let _ = result;
}

/// The default event format, to build on.
fn format() -> format::Format {
    format::Format::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_logs_info_and_one_shot_commands_warnings_unless_asked() {
        let level = |daemon, verbose| {
            default_level(&LogSetup {
                format: LogFormat::Text,
                daemon,
                verbose,
            })
        };
        assert_eq!(level(true, 0), Level::INFO);
        assert_eq!(level(false, 0), Level::WARN);
        assert_eq!(level(false, 1), Level::INFO);
        assert_eq!(level(true, 1), Level::DEBUG);
        assert_eq!(level(true, 9), Level::TRACE);
    }

    #[test]
    fn priorities_are_sd_daemons() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}

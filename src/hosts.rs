//! The hosts-file export: a managed block in a file that people also edit.
//!
//! fleetdns owns only the lines between `# BEGIN fleetdns (managed, do not
//! edit)` and `# END fleetdns`; every byte outside them (comments, blank
//! lines, CRLF endings, a missing final newline) is kept exactly. The file
//! is handled as bytes, never decoded, so odd encodings survive too.
//!
//! Safety, in order:
//! - The names come from the snapshot, which holds only sanitised names
//!   (`[a-z0-9-]` labels), and each one is checked again here, so no tag
//!   value can inject a line or a second host name.
//! - A file with two blocks, or a BEGIN without its END, is refused: fleetdns
//!   cannot tell which lines are its own, so it changes nothing.
//! - A non-empty block is not replaced by an empty one unless asked: an
//!   empty fleet is more often a wrong filter, region or credential.
//! - Writers lock the file (`flock`, exclusive) for the whole
//!   read-merge-write, and re-open it if it was replaced while they waited,
//!   so two exports never lose each other's work, nor that of any other
//!   writer that takes the same lock.
//! - The new file goes to a temp file in the same directory with the old
//!   file's mode and owner, is fsynced and renamed over the old one, and the
//!   directory is fsynced. Where that is impossible (a bind-mounted file
//!   such as Docker's or systemd-nspawn's `/etc/hosts` answers EBUSY or
//!   EXDEV to a rename, or the directory is read-only), the file is
//!   rewritten in place under the lock.
//! - Nothing is written when nothing changed; otherwise the previous
//!   content is kept as `PATH.fleetdns.bak`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::files::{parent_of, sync_dir, write_atomic};
use crate::snapshot::Snapshot;
use crate::subscribe::OnSwap;

/// The first line of the managed block.
pub const BEGIN: &str = "# BEGIN fleetdns (managed, do not edit)";
/// The last line of the managed block.
pub const END: &str = "# END fleetdns";
/// What marks a BEGIN line when reading (the comment may vary).
const BEGIN_PREFIX: &[u8] = b"# BEGIN fleetdns";

/// Why an export changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostsError {
    /// The file's markers do not make exactly one block.
    #[error("{path}: {reason}; fix the file by hand, nothing was changed")]
    Malformed {
        /// The hosts file.
        path: PathBuf,
        /// What is wrong with the markers.
        reason: String,
    },
    /// The new block would be empty and the old one is not.
    #[error(
        "{path}: refusing to replace {lines} fleetdns lines with an empty block (an empty fleet is more often a wrong filter, region or credential than the truth); pass --allow-empty if the fleet really is empty"
    )]
    WouldEmpty {
        /// The hosts file.
        path: PathBuf,
        /// Lines in the current block.
        lines: usize,
    },
    /// The file could not be read, locked or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        source: io::Error,
    },
}

/// The block's lines for a snapshot, without line endings: one line per
/// address, `<ip>\t<name>.<zone> <name>`, sorted by name, then IPv4 before
/// IPv6, each in address order. Instance-id names are included. The bare
/// name is left out where it would mean something else locally (see
/// [`bare_name_is_safe`]).
pub fn render_lines(snapshot: &Snapshot) -> Vec<String> {
    let zone = snapshot.zone().to_string();
    let zone = zone.trim_end_matches('.');
    let mut by_name: Vec<(String, String, Vec<String>)> = Vec::new();
    // Sorted below by the text of the name: cheaper than sorting hickory
    // `Name`s in DNSSEC order, and what a reader of the file expects.
    for entry in snapshot.entries() {
        // Names with no address (a static CNAME, SRV, MX or TXT) have no
        // hosts line.
        if entry.ipv4().is_empty() && entry.ipv6().is_empty() {
            continue;
        }
        let mut fqdn = entry.text();
        fqdn.pop(); // the final dot
        let bare = fqdn
            .strip_suffix(zone)
            .and_then(|b| b.strip_suffix('.'))
            .unwrap_or(&fqdn)
            .to_string();
        if !is_plain_hostname(&fqdn) || !is_plain_hostname(&bare) {
            // Cannot happen with sanitised names; never write one that is not.
            warn!(name = ?fqdn, "name is not a plain host name; left out of the hosts file");
            continue;
        }
        let addresses = entry
            .ipv4()
            .iter()
            .map(ToString::to_string)
            .chain(entry.ipv6().iter().map(ToString::to_string))
            .collect();
        let names = if bare_name_is_safe(&bare) {
            format!("{fqdn} {bare}")
        } else {
            fqdn.clone()
        };
        by_name.push((fqdn, names, addresses));
    }
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    by_name
        .into_iter()
        .flat_map(|(_, names, addresses)| {
            addresses
                .into_iter()
                .map(move |ip| format!("{ip}\t{names}"))
        })
        .collect()
}

/// Host names that mean this machine or a well-known group in every hosts
/// file (Debian's defaults): a bare `localhost` from a tag would add a
/// fleet address to them (glibc returns every match with `multi on`).
const LOCAL_NAMES: [&str; 9] = [
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "broadcasthost",
];

/// Whether the bare (zone-less) name may go into the hosts file: not a
/// local name, and not digits and dots, which tools read as an address
/// (`10.0.0.1`, or `10` for 0.0.0.10). The full name is always written.
fn bare_name_is_safe(bare: &str) -> bool {
    !LOCAL_NAMES.contains(&bare) && !bare.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Lowercase letters, digits, `-` and `.`, not starting with `-` or `.`:
/// a name glibc reads as one host name, and no resolver takes for an option.
fn is_plain_hostname(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The whole block, markers included, each line ended by `eol`.
pub fn render_block(lines: &[String], eol: &str) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 2).sum::<usize>() + 64);
    out.push_str(BEGIN);
    out.push_str(eol);
    for line in lines {
        out.push_str(line);
        out.push_str(eol);
    }
    out.push_str(END);
    out.push_str(eol);
    out
}

/// An existing file cut around its block.
#[derive(Debug)]
struct Layout<'a> {
    /// Everything before the BEGIN line (the whole file without a block).
    before: &'a [u8],
    /// The block's lines between the markers, without line endings; `None`
    /// without a block.
    block: Option<Vec<&'a [u8]>>,
    /// Whether the END line had a line ending.
    end_terminated: bool,
    /// Everything after the END line and its line ending.
    after: &'a [u8],
    /// The file's line ending, from its first line (`\n` if none).
    eol: &'static str,
}

/// Each line with its start offset, its content (no `\n`, no `\r`) and
/// whether it ended with `\n`.
fn lines_of(bytes: &[u8]) -> Vec<(usize, &[u8], bool)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let (content, next, terminated) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[start..start + i], start + i + 1, true),
            None => (&bytes[start..], bytes.len(), false),
        };
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        out.push((start, content, terminated));
        start = next;
    }
    out
}

fn is_begin(content: &[u8]) -> bool {
    content.trim_ascii().starts_with(BEGIN_PREFIX)
}

fn is_end(content: &[u8]) -> bool {
    let t = content.trim_ascii();
    t == END.as_bytes() || t.starts_with(b"# END fleetdns ")
}

fn layout(bytes: &[u8]) -> Result<Layout<'_>, String> {
    let eol = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && bytes[i - 1] == b'\r' => "\r\n",
        // One line ending in CR: the "\n" that merge adds to end it makes
        // it a CRLF line, which the next merge reads as the file's ending.
        None if bytes.ends_with(b"\r") => "\r\n",
        _ => "\n",
    };
    let lines = lines_of(bytes);
    let begins: Vec<usize> = (0..lines.len()).filter(|&i| is_begin(lines[i].1)).collect();
    let ends: Vec<usize> = (0..lines.len()).filter(|&i| is_end(lines[i].1)).collect();
    match (begins.as_slice(), ends.as_slice()) {
        ([], []) => Ok(Layout {
            before: bytes,
            block: None,
            end_terminated: true,
            after: &[],
            eol,
        }),
        ([b], [e]) if b < e => {
            let (b, e) = (*b, *e);
            let after_start = lines.get(e + 1).map_or(bytes.len(), |l| l.0);
            Ok(Layout {
                before: &bytes[..lines[b].0],
                block: Some(lines[b + 1..e].iter().map(|l| l.1).collect()),
                end_terminated: lines[e].2,
                after: &bytes[after_start..],
                eol,
            })
        }
        ([_], [_]) => Err(format!("{END:?} comes before {BEGIN:?}")),
        (b, e) if b.len() > 1 || e.len() > 1 => Err(format!(
            "{} BEGIN and {} END fleetdns lines (lines {}); there must be one block",
            b.len(),
            e.len(),
            b.iter()
                .chain(e)
                .map(|i| (i + 1).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        ([b], []) => Err(format!(
            "line {} opens a fleetdns block that never ends",
            b + 1
        )),
        (_, e) => Err(format!(
            "line {} ends a fleetdns block that never began",
            e.first().map_or(0, |i| i + 1)
        )),
    }
}

/// The result of merging a block into a file's content.
#[derive(Debug)]
pub struct Merged {
    /// The new content.
    pub bytes: Vec<u8>,
    /// The old block's lines (empty without a block).
    pub old_lines: Vec<String>,
    /// Unmanaged lines before the block that map one of our names: glibc
    /// takes the first match, so they win over fleetdns.
    pub shadows: Vec<String>,
}

/// Puts `lines` as the block into `existing`: replaces the block, or
/// appends one. Errors say what is wrong with the markers.
pub fn merge(existing: &[u8], lines: &[String]) -> Result<Merged, String> {
    let layout = layout(existing)?;
    let mut block = render_block(lines, layout.eol).into_bytes();
    let mut bytes = Vec::with_capacity(existing.len() + block.len() + 2);
    bytes.extend_from_slice(layout.before);
    if layout.block.is_none() && !layout.before.is_empty() && !layout.before.ends_with(b"\n") {
        // The last line had no line ending; the block must start a line.
        // A line that stops after its CR needs only the LF.
        let ending = if layout.before.ends_with(b"\r") {
            "\n"
        } else {
            layout.eol
        };
        bytes.extend_from_slice(ending.as_bytes());
    }
    if !layout.end_terminated {
        let cut = block.len() - layout.eol.len();
        block.truncate(cut);
    }
    bytes.extend_from_slice(&block);
    bytes.extend_from_slice(layout.after);
    let old_lines = layout
        .block
        .unwrap_or_default()
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let ours: BTreeSet<&str> = lines
        .iter()
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    let shadows = lines_of(layout.before)
        .iter()
        .enumerate()
        .filter_map(|(n, (_, content, _))| {
            let (ip, names) = glibc_fields(content)?;
            let hit = names
                .iter()
                .find(|name| ours.contains(name.to_ascii_lowercase().as_str()))?;
            Some(format!(
                "line {} maps {hit} to {ip} and comes first, so it shadows fleetdns's entry",
                n + 1
            ))
        })
        .collect();
    Ok(Merged {
        bytes,
        old_lines,
        shadows,
    })
}

/// A hosts line as glibc reads it: text from `#` on is a comment; fields
/// are split on spaces and tabs; the first is the address, the rest names.
/// `None` for a line without an address and a name.
pub fn glibc_fields(content: &[u8]) -> Option<(String, Vec<String>)> {
    let text = String::from_utf8_lossy(content);
    let text = text.split('#').next().unwrap_or("");
    let mut fields = text
        .split([' ', '\t'])
        .filter(|f| !f.is_empty())
        .map(str::to_string);
    let ip = fields.next()?;
    let names: Vec<String> = fields.collect();
    (!names.is_empty()).then_some((ip, names))
}

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The file written.
    pub path: PathBuf,
    /// Names that are new in the block.
    pub added: usize,
    /// Names whose addresses changed.
    pub changed: usize,
    /// Names no longer in the block.
    pub removed: usize,
    /// Names in the new block.
    pub names: usize,
    /// Lines in the new block.
    pub lines: usize,
    /// How the file was written, or `None` when it was already up to date.
    pub written: Option<WriteMethod>,
}

/// How the new content reached the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMethod {
    /// Temp file, fsync, rename, fsync of the directory.
    Replaced,
    /// Rewritten in place under the lock (rename impossible).
    InPlace,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.written {
            None => write!(
                f,
                "{}: unchanged ({} names, {} lines)",
                self.path.display(),
                self.names,
                self.lines
            ),
            Some(method) => write!(
                f,
                "{}: {} added, {} changed, {} removed ({} names, {} lines{})",
                self.path.display(),
                self.added,
                self.changed,
                self.removed,
                self.names,
                self.lines,
                if method == WriteMethod::InPlace {
                    "; rewritten in place"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Name -> addresses, from block lines.
fn name_map(lines: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in lines {
        if let Some((ip, names)) = glibc_fields(line.as_bytes()) {
            if let Some(fqdn) = names.first() {
                map.entry(fqdn.clone()).or_default().insert(ip);
            }
        }
    }
    map
}

/// Exports `snapshot` into the file at `path` (see the module doc); the
/// same code serves `fleetdns hosts` and `serve --export-hosts`.
pub fn export(path: &Path, snapshot: &Snapshot, allow_empty: bool) -> Result<Summary, HostsError> {
    let io_error = |action: &'static str| {
        move |source: io::Error| HostsError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let lines = render_lines(snapshot);
    let mut file = open_locked(path).map_err(io_error("cannot open and lock"))?;
    let mut existing = Vec::new();
    file.read_to_end(&mut existing)
        .map_err(io_error("cannot read"))?;
    let merged = merge(&existing, &lines).map_err(|reason| HostsError::Malformed {
        path: path.to_path_buf(),
        reason,
    })?;
    if lines.is_empty() && !merged.old_lines.is_empty() && !allow_empty {
        return Err(HostsError::WouldEmpty {
            path: path.to_path_buf(),
            lines: merged.old_lines.len(),
        });
    }
    for shadow in &merged.shadows {
        warn!(path = %path.display(), "{shadow}");
    }
    let (old, new) = (name_map(&merged.old_lines), name_map(&lines));
    let mut summary = Summary {
        path: path.to_path_buf(),
        added: new.keys().filter(|k| !old.contains_key(*k)).count(),
        changed: new
            .iter()
            .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
            .count(),
        removed: old.keys().filter(|k| !new.contains_key(*k)).count(),
        names: new.len(),
        lines: lines.len(),
        written: None,
    };
    if merged.bytes == existing {
        return Ok(summary);
    }
    let metadata = file.metadata().map_err(io_error("cannot stat"))?;
    if !existing.is_empty() {
        let backup = backup_path(path);
        if let Err(error) = write_atomic(&backup, &existing, metadata.mode() & 0o7777) {
            // Not fatal: a read-only directory (a bind-mounted /etc/hosts)
            // has no room for a backup, and the export matters more.
            warn!(backup = %backup.display(), %error, "cannot keep a backup of the hosts file");
        }
    }
    summary.written = Some(
        write_locked(path, &mut file, &metadata, &merged.bytes)
            .map_err(io_error("cannot write"))?,
    );
    Ok(summary)
}

/// `PATH.fleetdns.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".fleetdns.bak");
    PathBuf::from(name)
}

/// Opens `path` read-write (creating it, mode 0644, if missing) and takes
/// an exclusive lock. If another writer replaced the file while we waited
/// for the lock, the lock is on a file nobody reads any more: open again.
fn open_locked(path: &Path) -> io::Result<File> {
    for _ in 0..100 {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)?;
        file.lock()?;
        let held = file.metadata()?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(file),
            _ => continue, // replaced (or removed) meanwhile
        }
    }
    Err(io::Error::other("the file keeps being replaced; gave up"))
}

/// Writes `bytes` as the new content of `path`, whose open, locked handle
/// is `file`: replace by rename when possible, else in place.
fn write_locked(
    path: &Path,
    file: &mut File,
    metadata: &fs::Metadata,
    bytes: &[u8],
) -> io::Result<WriteMethod> {
    match replace(path, metadata, bytes) {
        Ok(()) => Ok(WriteMethod::Replaced),
        Err(error) => {
            info!(path = %path.display(), %error, "cannot replace the file (bind mount or read-only directory?); rewriting it in place");
            file.seek(SeekFrom::Start(0))?;
            file.write_all(bytes)?;
            file.set_len(bytes.len() as u64)?;
            file.sync_all()?;
            Ok(WriteMethod::InPlace)
        }
    }
}

/// Temp file with the old mode and owner, fsync, rename, fsync of the
/// directory. Fails, leaving the file alone, if any step before the rename
/// fails or the rename itself does (EBUSY on a mount point, EXDEV, EROFS).
fn replace(path: &Path, metadata: &fs::Metadata, bytes: &[u8]) -> io::Result<()> {
    let owner = Some((metadata.uid(), metadata.gid()));
    crate::files::replace(path, bytes, metadata.mode() & 0o7777, owner)?;
    // The rename is done; a failed directory fsync only weakens durability.
    let dir = parent_of(path);
    if let Err(error) = sync_dir(&dir) {
        warn!(dir = %dir.display(), %error, "cannot fsync the directory");
    }
    Ok(())
}

/// `serve --export-hosts PATH`: the export after every swap. Errors are
/// logged; the daemon goes on serving DNS.
pub struct HostsExport {
    /// The file to keep up to date.
    pub path: PathBuf,
}

impl OnSwap for HostsExport {
    fn on_swap(&self, snapshot: &Snapshot) {
        match export(&self.path, snapshot, false) {
            Ok(summary) if summary.written.is_some() => info!("hosts export: {summary}"),
            Ok(_) => {}
            Err(error) => warn!(%error, "hosts export failed; the file was left as it was"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Everything outside the block, as (before, after).
    fn outside(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let l = layout(bytes).unwrap();
        (l.before.to_vec(), l.after.to_vec())
    }

    #[test]
    fn a_block_is_appended_after_a_last_line_without_newline() {
        let merged = merge(b"127.0.0.1 localhost", &lines(&["10.0.0.1\ta.z a"])).unwrap();
        assert_eq!(
            String::from_utf8(merged.bytes).unwrap(),
            format!("127.0.0.1 localhost\n{BEGIN}\n10.0.0.1\ta.z a\n{END}\n")
        );
        let merged = merge(b"", &[]).unwrap();
        assert_eq!(
            String::from_utf8(merged.bytes).unwrap(),
            format!("{BEGIN}\n{END}\n")
        );
    }

    /// Found by the `hosts_merge` fuzz target (seed `one-line-ending-in-cr`):
    /// a file of one line that stops after a CR got an LF block, which made
    /// its first line CRLF, so the next merge rewrote the block as CRLF.
    #[test]
    fn a_last_line_ending_in_cr_is_completed_to_crlf_and_merges_the_same_twice() {
        let merged = merge(b".\r", &lines(&["10.0.0.1\ta.z a"])).unwrap();
        let text = String::from_utf8(merged.bytes.clone()).unwrap();
        assert_eq!(
            text,
            format!(".\r\n{BEGIN}\r\n10.0.0.1\ta.z a\r\n{END}\r\n")
        );
        let again = merge(&merged.bytes, &lines(&["10.0.0.1\ta.z a"])).unwrap();
        assert_eq!(again.bytes, merged.bytes);
        // with an LF file, the CR line is ended with an LF and the block stays LF
        let merged = merge(b"a\nb\r", &lines(&["10.0.0.1\ta.z a"])).unwrap();
        let text = String::from_utf8(merged.bytes).unwrap();
        assert_eq!(text, format!("a\nb\r\n{BEGIN}\n10.0.0.1\ta.z a\n{END}\n"));
    }

    #[test]
    fn crlf_files_get_crlf_blocks_and_keep_every_other_byte() {
        let file = format!(
            "# hosts\r\n\r\n127.0.0.1 localhost\r\n{BEGIN}\r\nold\r\n{END}\r\n::1 x # tail"
        );
        let merged = merge(file.as_bytes(), &lines(&["10.0.0.1\ta.z a"])).unwrap();
        let text = String::from_utf8(merged.bytes).unwrap();
        assert_eq!(
            text,
            format!("# hosts\r\n\r\n127.0.0.1 localhost\r\n{BEGIN}\r\n10.0.0.1\ta.z a\r\n{END}\r\n::1 x # tail")
        );
        assert_eq!(merged.old_lines, ["old"]);
    }

    #[test]
    fn an_end_line_without_newline_stays_without() {
        let file = format!("x\n{BEGIN}\n{END}");
        let merged = merge(file.as_bytes(), &lines(&["10.0.0.1\ta.z a"])).unwrap();
        assert_eq!(
            String::from_utf8(merged.bytes).unwrap(),
            format!("x\n{BEGIN}\n10.0.0.1\ta.z a\n{END}")
        );
    }

    #[test]
    fn broken_markers_are_refused_with_the_reason() {
        for (file, needle) in [
            (
                format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n"),
                "2 BEGIN and 2 END",
            ),
            (
                format!("a\n{BEGIN}\nb\n"),
                "line 2 opens a fleetdns block that never ends",
            ),
            (
                format!("a\n{END}\n"),
                "line 2 ends a fleetdns block that never began",
            ),
            (format!("{END}\n{BEGIN}\n"), "comes before"),
        ] {
            let error = merge(file.as_bytes(), &[]).unwrap_err();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn unmanaged_lines_that_map_our_names_are_reported() {
        let file = b"10.9.9.9 web-1 # old\n127.0.0.1 localhost\n";
        let merged = merge(file, &lines(&["10.0.0.1\tweb-1.z web-1"])).unwrap();
        assert_eq!(merged.shadows.len(), 1);
        assert!(
            merged.shadows[0].contains("line 1 maps web-1 to 10.9.9.9"),
            "{:?}",
            merged.shadows
        );
    }

    #[test]
    fn local_and_numeric_bare_names_are_left_out() {
        for unsafe_name in ["localhost", "ip6-loopback", "10", "10.0.0.1"] {
            assert!(!bare_name_is_safe(unsafe_name), "{unsafe_name}");
        }
        for fine in ["web-1", "primary.db", "10-0-0-1", "i-0abc"] {
            assert!(bare_name_is_safe(fine), "{fine}");
        }
    }

    #[test]
    fn glibc_reading_of_lines() {
        assert_eq!(
            glibc_fields(b"10.0.0.1\ta.z a # c"),
            Some(("10.0.0.1".to_string(), lines(&["a.z", "a"])))
        );
        assert_eq!(glibc_fields(b"# only a comment"), None);
        assert_eq!(glibc_fields(b"10.0.0.1"), None);
    }

    /// A line that is not a marker: any bytes but a newline.
    fn plain_line() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..40,
        )
        .prop_filter("not a marker", |l| !is_begin(l) && !is_end(l))
    }

    fn text_of(lines: Vec<Vec<u8>>, eol: &[u8], final_eol: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let n = lines.len();
        for (i, l) in lines.into_iter().enumerate() {
            out.extend_from_slice(&l);
            if i + 1 < n || final_eol {
                out.extend_from_slice(eol);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Lines outside the block survive byte for byte, whatever the
        /// edits: several exports in a row, with the user editing the
        /// unmanaged parts between them.
        #[test]
        fn hosts_lines_outside_block_survive(
            before in prop::collection::vec(plain_line(), 0..8),
            after in prop::collection::vec(plain_line(), 0..8),
            crlf in any::<bool>(),
            final_eol in any::<bool>(),
            blocks in prop::collection::vec(prop::collection::vec("[a-z]{1,8}", 0..5), 1..5),
            edits in prop::collection::vec(plain_line(), 0..5),
        ) {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let original = text_of(before.clone(), eol, true);
            let mut file = original.clone();
            // the first export appends; the original is kept as a prefix
            let first: Vec<String> = blocks[0].iter().map(|n| format!("10.0.0.1\t{n}.z {n}")).collect();
            file = merge(&file, &first).unwrap().bytes;
            prop_assert!(file.starts_with(&original));
            // user edits after the block, then more exports
            file.extend_from_slice(&text_of(after.clone(), eol, final_eol));
            for (i, names) in blocks.iter().enumerate() {
                let lines: Vec<String> = names.iter().map(|n| format!("10.0.0.{}\t{n}.z {n}", i + 1)).collect();
                let (b0, a0) = outside(&file);
                file = merge(&file, &lines).unwrap().bytes;
                let (b1, a1) = outside(&file);
                prop_assert_eq!(&b0, &b1);
                prop_assert_eq!(&a0, &a1);
                let l = layout(&file).unwrap();
                let got: Vec<String> = l.block.unwrap().iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect();
                prop_assert_eq!(got, lines);
                if let Some(edit) = edits.get(i) {
                    // prepend an unmanaged line; it must survive the next export
                    let mut edited = edit.clone();
                    edited.extend_from_slice(eol);
                    edited.extend_from_slice(&file);
                    file = edited;
                }
            }
        }
    }
}

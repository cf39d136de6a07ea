//! The persisted inventory: what the daemon serves after a restart while the
//! API is still down.
//!
//! The file (`<state_dir>/inventory.bin`) keeps each source unit's last
//! good instances with the time they were fetched, not the built zone: the
//! naming policy or zone may change between runs, and rebuilding a snapshot
//! is cheap. Its first line is a JSON header (`head -1` shows the units,
//! their fetch times and sizes); the units' instances follow in the packed
//! form of [`crate::inventory::packed`], back to back. The daemon reads a
//! unit from the file when it needs it instead of keeping it in memory: the
//! [`Packed`] handles that [`load`] and [`save`] return point into the file
//! through an open handle, which stays valid when a newer file replaces it.
//!
//! It is written with [`crate::files::write_atomic_with`], so a crash
//! leaves the old file or the new one. Reading it is forgiving: a missing
//! file is "no state", and anything unreadable is an error for the caller
//! to log and ignore; it must never stop the daemon. A state file of
//! version 1 (`inventory.json`, the whole inventory as JSON) is still read,
//! and removed once the new file is written.

use std::fs::{DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::files::write_atomic_with;
use crate::inventory::packed::{Packed, MIN_RECORD_BYTES};
use crate::inventory::Instance;

/// The layout version written (and the newest read).
const VERSION: u32 = 2;
/// Marks the file as ours, so a stray file is not taken for state.
const FORMAT: &str = "fleetdns-state";
/// The longest header line read: a few units' labels and sizes are far less.
const MAX_HEADER: u64 = 1 << 20;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a state file this version understands.
    #[error("{path}: not a usable state file: {reason}")]
    Invalid {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One unit's data as persisted.
#[derive(Debug, Clone)]
pub struct UnitState {
    /// The unit's label, e.g. `ec2:ambient:eu-west-1`.
    pub unit: String,
    /// When the unit last fetched successfully.
    pub fetched_at: SystemTime,
    /// Its instances.
    pub instances: Packed,
}

/// What a state file holds.
#[derive(Debug)]
pub struct State {
    /// The SOA serial served when it was written.
    pub serial: u32,
    /// Each unit's data.
    pub units: Vec<UnitState>,
}

/// The header line.
#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    saved_at: u64,
    serial: u32,
    units: Vec<UnitHeader>,
}

/// One unit in the header; its bytes follow the previous unit's.
#[derive(Serialize, Deserialize)]
struct UnitHeader {
    unit: String,
    fetched_at: u64,
    instances: u32,
    bytes: u64,
}

/// The state file in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("inventory.bin")
}

/// The version 1 state file in `dir`.
fn old_state_path(dir: &Path) -> PathBuf {
    dir.join("inventory.json")
}

/// Reads the state in `dir`: `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
    let path = state_path(dir);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return load_version_1(dir),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let invalid = |reason: String| StateError::Invalid {
        path: path.clone(),
        reason,
    };
    let read_error = |source: io::Error| StateError::Read {
        path: path.clone(),
        source,
    };
    let size = file.metadata().map_err(read_error)?.len();
    let line = header_line(&file, size).map_err(read_error)?;
    let Some(line) = line else {
        return Err(invalid("no header line".to_string()));
    };
    let header: Header = serde_json::from_slice(&line).map_err(|e| invalid(e.to_string()))?;
    if header.format != FORMAT {
        return Err(invalid(format!(
            "format is {:?}, not {FORMAT:?}",
            header.format
        )));
    }
    if header.version != VERSION {
        return Err(invalid(format!(
            "version {} (this fleetdns reads version {VERSION})",
            header.version
        )));
    }
    // Buffers are sized by the counts (the snapshot reserves room per
    // instance): a damaged count must not ask for gigabytes.
    if let Some(u) = header
        .units
        .iter()
        .find(|u| u64::from(u.instances) > u.bytes / MIN_RECORD_BYTES)
    {
        return Err(invalid(format!(
            "unit {}: {} instances cannot fit in {} bytes",
            u.unit, u.instances, u.bytes
        )));
    }
    let start = line.len() as u64 + 1;
    let body: u64 = header
        .units
        .iter()
        .map(|u| u.bytes)
        .fold(0, u64::saturating_add);
    if start.saturating_add(body) != size {
        return Err(invalid(format!(
            "{size} bytes, but the header describes {}",
            start.saturating_add(body)
        )));
    }
    let packed = units_in(
        file,
        start,
        header.units.iter().map(|u| (u.bytes, u.instances)),
    );
    let units = header
        .units
        .into_iter()
        .zip(packed)
        .map(|(u, instances)| UnitState {
            unit: u.unit,
            fetched_at: UNIX_EPOCH + Duration::from_secs(u.fetched_at),
            instances,
        })
        .collect();
    Ok(Some(State {
        serial: header.serial,
        units,
    }))
}

/// The units' instances in `file`, back to back from `start`, given as
/// `(bytes, instances)` in order: the body of a state file.
fn units_in(file: File, start: u64, units: impl Iterator<Item = (u64, u32)>) -> Vec<Packed> {
    let file = Arc::new(file);
    let mut offset = start;
    units
        .map(|(bytes, count)| {
            let packed = Packed::in_file(file.clone(), offset, bytes, count);
            offset += bytes;
            packed
        })
        .collect()
}

/// The first line of `file` without its newline, read in chunks; `None`
/// if there is no newline in the first [`MAX_HEADER`] bytes.
fn header_line(file: &File, size: u64) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    while (line.len() as u64) < size.min(MAX_HEADER) {
        let at = line.len() as u64;
        let n = file.read_at(&mut chunk, at)?;
        if n == 0 {
            break;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..end]);
            return Ok(Some(line));
        }
        line.extend_from_slice(&chunk[..n]);
    }
    Ok(None)
}

/// The state file of version 1, as JSON.
#[derive(Deserialize)]
struct FileV1 {
    format: String,
    version: u32,
    serial: u32,
    units: Vec<UnitV1>,
}

#[derive(Deserialize)]
struct UnitV1 {
    unit: String,
    fetched_at: u64,
    instances: Vec<Instance>,
}

/// Reads a version 1 state file (`inventory.json`), packed in memory.
fn load_version_1(dir: &Path) -> Result<Option<State>, StateError> {
    let path = old_state_path(dir);
    let bytes = match crate::files::read_in_chunks(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let invalid = |reason: String| StateError::Invalid {
        path: path.clone(),
        reason,
    };
    let file: FileV1 = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if file.format != FORMAT || file.version != 1 {
        return Err(invalid(format!(
            "format {:?} version {}, not {FORMAT:?} version 1",
            file.format, file.version
        )));
    }
    tracing::info!(path = %path.display(), "reading the state file of an older fleetdns; it is replaced at the next save");
    Ok(Some(State {
        serial: file.serial,
        units: file
            .units
            .into_iter()
            .map(|u| UnitState {
                unit: u.unit,
                fetched_at: UNIX_EPOCH + Duration::from_secs(u.fetched_at),
                instances: Packed::from_instances(&u.instances),
            })
            .collect(),
    }))
}

/// Writes the state to `dir` atomically, creating `dir` if needed, and
/// returns each unit's instances as read back from the new file (in the
/// order of `units`), so callers can let go of the spools they came from.
///
/// `units` are `(label, fetched_at, instances)`. The file is readable by
/// the owner and group only: it lists every internal address and tag.
pub fn save(
    dir: &Path,
    serial: u32,
    units: &[(&str, SystemTime, &Packed)],
) -> io::Result<Vec<Packed>> {
    DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    let header = Header {
        format: FORMAT.to_string(),
        version: VERSION,
        saved_at: unix_secs(SystemTime::now()),
        serial,
        units: units
            .iter()
            .map(|(unit, at, instances)| UnitHeader {
                unit: unit.to_string(),
                fetched_at: unix_secs(*at),
                instances: instances.len() as u32,
                bytes: instances.byte_len(),
            })
            .collect(),
    };
    // JSON escapes control characters, so the line holds no newline.
    let mut line = serde_json::to_vec(&header).map_err(io::Error::other)?;
    line.push(b'\n');
    let file = write_atomic_with(&state_path(dir), 0o640, |w: &mut dyn Write| {
        w.write_all(&line)?;
        for (_, _, instances) in units {
            instances.write_to(w)?;
        }
        Ok(())
    })?;
    let reread = units_in(
        file,
        line.len() as u64,
        units.iter().map(|(_, _, p)| (p.byte_len(), p.len() as u32)),
    );
    match std::fs::remove_file(old_state_path(dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %old_state_path(dir).display(), error = %e, "cannot remove the old state file")
        }
        _ => {}
    }
    Ok(reread)
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The group ordinals of the served zone (issue 17), beside the state
/// file: `{"version": 1, "groups": {"workers": {"i-0a...": 1, ...}}}`.
pub fn ordinals_path(dir: &Path) -> PathBuf {
    dir.join("ordinals.json")
}

/// The ordinals file's largest size read: 100,000 members take about 3 MB.
const MAX_ORDINALS: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct OrdinalsFile {
    version: u32,
    /// By group name (relative, dotted), each member's ordinal.
    groups: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u32>>,
}

/// Writes `ordinals` to `dir` atomically.
pub fn save_ordinals(dir: &Path, ordinals: &crate::snapshot::Ordinals) -> io::Result<()> {
    let groups = ordinals
        .iter()
        .map(|(wire, members)| {
            let members = members.iter().map(|(id, &n)| (id.clone(), n)).collect();
            (crate::snapshot::labels_text(wire), members)
        })
        .collect();
    let file = OrdinalsFile { version: 1, groups };
    write_atomic_with(&ordinals_path(dir), 0o600, |out| {
        serde_json::to_writer(&mut *out, &file).map_err(io::Error::other)?;
        out.write_all(b"\n")
    })?;
    Ok(())
}

/// Reads the ordinals file of `dir`: `None` when there is none. A damaged
/// file is an error for the caller to log and ignore; members then get
/// ordinals afresh. Group names and ordinals that could not have been
/// written are left out.
pub fn load_ordinals(dir: &Path) -> Result<Option<crate::snapshot::Ordinals>, StateError> {
    let path = ordinals_path(dir);
    let invalid = |reason: String| StateError::Invalid {
        path: path.clone(),
        reason,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let mut text = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(&file, MAX_ORDINALS + 1), &mut text).map_err(
        |source| StateError::Read {
            path: path.clone(),
            source,
        },
    )?;
    if text.len() as u64 > MAX_ORDINALS {
        return Err(invalid(format!("larger than {MAX_ORDINALS} bytes")));
    }
    let file: OrdinalsFile = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    if file.version != 1 {
        return Err(invalid(format!(
            "version {} (this fleetdns reads version 1)",
            file.version
        )));
    }
    Ok(Some(
        file.groups
            .into_iter()
            .filter_map(|(group, members)| {
                let wire = crate::snapshot::text_labels(&group)?;
                let members = members.into_iter().filter(|&(_, n)| n > 0).collect();
                Some((wire, members))
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn instance(id: &str) -> Instance {
        crate::inventory::test_instance(id, Some("web\n1"), &["10.0.0.1"])
    }

    #[test]
    fn ordinals_come_back_as_saved_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_ordinals(dir.path()).unwrap().is_none());
        let mut ordinals = crate::snapshot::Ordinals::new();
        ordinals.insert(
            b"\x07workers".to_vec(),
            [("i-0aa".to_string(), 1), ("i-0bb".to_string(), 3)].into(),
        );
        ordinals.insert(
            b"\x02db\x04pool".to_vec(),
            [("i-0cc".to_string(), 2)].into(),
        );
        save_ordinals(dir.path(), &ordinals).unwrap();
        let text = fs::read_to_string(ordinals_path(dir.path())).unwrap();
        assert!(text.contains("\"db.pool\":{\"i-0cc\":2}"), "{text}");
        assert_eq!(load_ordinals(dir.path()).unwrap().unwrap(), ordinals);
        // names no zone could hold, and ordinal 0, are left out
        fs::write(
            ordinals_path(dir.path()),
            r#"{"version":1,"groups":{"Bad Name":{"i-0aa":1},"ok":{"i-0aa":0,"i-0bb":2}}}"#,
        )
        .unwrap();
        let loaded = load_ordinals(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[b"\x02ok".as_slice()],
            [("i-0bb".to_string(), 2)].into()
        );
        for bad in ["", "{", r#"{"version":2,"groups":{}}"#] {
            fs::write(ordinals_path(dir.path()), bad).unwrap();
            assert!(
                matches!(load_ordinals(dir.path()), Err(StateError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn saved_state_loads_back_unit_by_unit() {
        let dir = tempfile::tempdir().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = vec![instance("i-0a"), instance("i-0b")];
        let (pa, pb) = (Packed::from_instances(&a), Packed::from_instances(&[]));
        let reread = save(
            dir.path(),
            42,
            &[("ec2:ambient:eu-west-1", at, &pa), ("file:x", at, &pb)],
        )
        .unwrap();
        // what save hands back is the new file's copy
        assert!(!reread[0].is_in_memory());
        assert_eq!(reread[0].instances().unwrap(), a);
        assert!(reread[1].is_empty());
        let state = load(dir.path()).unwrap().unwrap();
        assert_eq!(state.serial, 42);
        // it lists internal addresses and tags: not world-readable
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(state_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(state.units.len(), 2);
        assert_eq!(state.units[0].unit, "ec2:ambient:eu-west-1");
        assert_eq!(state.units[0].fetched_at, at);
        assert_eq!(state.units[0].instances.instances().unwrap(), a);
        assert!(state.units[1].instances.instances().unwrap().is_empty());
        // the header line is readable on its own
        let text = fs::read(state_path(dir.path())).unwrap();
        let first = text.split(|&b| b == b'\n').next().unwrap();
        let header: serde_json::Value = serde_json::from_slice(first).unwrap();
        assert_eq!(header["units"][0]["instances"], 2);
    }

    #[test]
    fn handles_stay_valid_after_the_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let at = SystemTime::now();
        let a = Packed::from_instances(&[instance("i-0a")]);
        let first = save(dir.path(), 1, &[("u", at, &a)]).unwrap();
        let b = Packed::from_instances(&[instance("i-0b"), instance("i-0c")]);
        save(dir.path(), 2, &[("u", at, &b)]).unwrap();
        assert_eq!(first[0].instances().unwrap(), [instance("i-0a")]);
        let state = load(dir.path()).unwrap().unwrap();
        assert_eq!(state.units[0].instances.len(), 2);
    }

    #[test]
    fn a_version_1_state_is_read_and_replaced_at_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = serde_json::json!({
            "format": "fleetdns-state", "version": 1, "saved_at": 1, "serial": 7,
            "units": [{"unit": "file:x", "fetched_at": 1_700_000_000u64,
                       "instances": [instance("i-0a")]}]
        });
        fs::write(old_state_path(dir.path()), v1.to_string()).unwrap();
        let state = load(dir.path()).unwrap().unwrap();
        assert_eq!(state.serial, 7);
        assert_eq!(
            state.units[0].instances.instances().unwrap(),
            [instance("i-0a")]
        );
        let units = [(
            "file:x",
            state.units[0].fetched_at,
            &state.units[0].instances,
        )];
        save(dir.path(), 8, &units).unwrap();
        assert!(!old_state_path(dir.path()).exists());
        assert_eq!(load(dir.path()).unwrap().unwrap().serial, 8);
    }

    #[test]
    fn missing_state_is_none_and_garbage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let unit = Packed::from_instances(&[instance("i-0a")]);
        save(dir.path(), 1, &[("u", SystemTime::now(), &unit)]).unwrap();
        let good = fs::read(state_path(dir.path())).unwrap();
        let header_end = good.iter().position(|&b| b == b'\n').unwrap();
        let mut longer = good.clone();
        longer.push(0);
        for garbage in [
            b"\x00\xffnot json\n".to_vec(),
            b"{\"format\":\"fleetdns-state\",\"version\":2,\"serial\":1,\"units\":[{".to_vec(),
            b"{\"format\":\"other\",\"version\":2,\"saved_at\":1,\"serial\":1,\"units\":[]}\n".to_vec(),
            b"{\"format\":\"fleetdns-state\",\"version\":9,\"saved_at\":1,\"serial\":1,\"units\":[]}\n".to_vec(),
            good[..good.len() - 1].to_vec(),
            good[..header_end].to_vec(),
            longer,
        ] {
            fs::write(state_path(dir.path()), garbage).unwrap();
            let error = load(dir.path()).unwrap_err().to_string();
            assert!(error.contains("inventory.bin"), "{error}");
        }
        fs::remove_file(state_path(dir.path())).unwrap();
        fs::write(old_state_path(dir.path()), "{{{").unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("inventory.json"), "{error}");
    }

    /// A header whose instance count the unit's bytes cannot hold is
    /// refused at load: the daemon sizes the zone's buffers by it, and four
    /// billion instances asked for terabytes and aborted the start.
    #[test]
    fn an_instance_count_the_bytes_cannot_hold_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let unit = Packed::from_instances(&[instance("i-0a")]);
        save(dir.path(), 1, &[("u", SystemTime::now(), &unit)]).unwrap();
        let bytes = fs::read(state_path(dir.path())).unwrap();
        let header_end = bytes.iter().position(|&b| b == b'\n').unwrap();
        let header = String::from_utf8(bytes[..header_end].to_vec()).unwrap();
        let damaged = header.replacen("\"instances\":1,", "\"instances\":4000000000,", 1);
        assert_ne!(damaged, header);
        let mut file = damaged.into_bytes();
        file.extend_from_slice(&bytes[header_end..]);
        fs::write(state_path(dir.path()), file).unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("4000000000 instances cannot fit in"),
            "{error}"
        );
    }
}

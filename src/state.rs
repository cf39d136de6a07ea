//! The persisted inventory: what the daemon serves after a restart while the
//! API is still down.
//!
//! The file (`<state_dir>/inventory.json`) keeps each source unit's last
//! good instances with the time they were fetched, not the built zone: the
//! naming policy or zone may change between runs, and rebuilding a snapshot
//! is cheap. It is written with [`crate::files::write_atomic`], so a crash
//! leaves the old file or the new one. Reading it is forgiving: a missing
//! file is "no state", and anything unreadable is an error for the caller
//! to log and ignore; it must never stop the daemon.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::files::write_atomic_with;
use crate::inventory::Instance;

/// The only layout version written and read.
const VERSION: u32 = 1;
/// Marks the file as ours, so a stray JSON file is not taken for state.
const FORMAT: &str = "fleetdns-state";

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
    pub instances: Vec<Instance>,
}

/// What a state file holds.
#[derive(Debug)]
pub struct State {
    /// The SOA serial served when it was written.
    pub serial: u32,
    /// Each unit's data.
    pub units: Vec<UnitState>,
}

/// The file as written: borrowed, so saving copies nothing.
#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    version: u32,
    saved_at: u64,
    serial: u32,
    units: Vec<UnitOut<'a>>,
}

#[derive(Serialize)]
struct UnitOut<'a> {
    unit: &'a str,
    fetched_at: u64,
    instances: crate::background::Paced<'a, Instance>,
}

/// The file as read.
#[derive(Deserialize)]
struct FileIn {
    format: String,
    version: u32,
    serial: u32,
    units: Vec<UnitIn>,
}

#[derive(Deserialize)]
struct UnitIn {
    unit: String,
    fetched_at: u64,
    instances: Vec<Instance>,
}

/// The state file in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("inventory.json")
}

/// Reads the state in `dir`: `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
    let path = state_path(dir);
    let bytes = match crate::files::read_in_chunks(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let invalid = |reason: String| StateError::Invalid {
        path: path.clone(),
        reason,
    };
    let file: FileIn = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if file.format != FORMAT {
        return Err(invalid(format!(
            "format is {:?}, not {FORMAT:?}",
            file.format
        )));
    }
    if file.version != VERSION {
        return Err(invalid(format!(
            "version {} (this fleetdns reads version {VERSION})",
            file.version
        )));
    }
    Ok(Some(State {
        serial: file.serial,
        units: file
            .units
            .into_iter()
            .map(|u| UnitState {
                unit: u.unit,
                fetched_at: UNIX_EPOCH + Duration::from_secs(u.fetched_at),
                instances: u.instances,
            })
            .collect(),
    }))
}

/// Writes the state to `dir` atomically, creating `dir` if needed.
///
/// `units` are `(label, fetched_at, instances)`. The file is readable by
/// the owner and group only: it lists every internal address and tag.
pub fn save(dir: &Path, serial: u32, units: &[(&str, SystemTime, &[Instance])]) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    let file = FileOut {
        format: FORMAT,
        version: VERSION,
        saved_at: unix_secs(SystemTime::now()),
        serial,
        units: units
            .iter()
            .map(|(unit, at, instances)| UnitOut {
                unit,
                fetched_at: unix_secs(*at),
                instances: crate::background::Paced(instances),
            })
            .collect(),
    };
    write_atomic_with(&state_path(dir), 0o640, |w| {
        serde_json::to_writer(w, &file).map_err(io::Error::other)
    })
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn instance(id: &str) -> Instance {
        crate::inventory::test_instance(id, Some("web\n1"), &["10.0.0.1"])
    }

    #[test]
    fn saved_state_loads_back_unit_by_unit() {
        let dir = tempfile::tempdir().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = vec![instance("i-0a")];
        save(
            dir.path(),
            42,
            &[("ec2:ambient:eu-west-1", at, &a), ("file:x", at, &[])],
        )
        .unwrap();
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
        assert_eq!(state.units[0].instances, a);
        assert!(state.units[1].instances.is_empty());
    }

    #[test]
    fn missing_state_is_none_and_garbage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        for garbage in [
            &b"\x00\xffnot json"[..],
            b"{\"format\":\"fleetdns-state\",\"version\":1,\"serial\":1,\"units\":[{",
            b"{\"format\":\"other\",\"version\":1,\"serial\":1,\"units\":[]}",
            b"{\"format\":\"fleetdns-state\",\"version\":9,\"serial\":1,\"units\":[]}",
        ] {
            fs::write(state_path(dir.path()), garbage).unwrap();
            let error = load(dir.path()).unwrap_err().to_string();
            assert!(error.contains("inventory.json"), "{error}");
        }
    }
}

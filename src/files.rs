//! Writing files so that a crash or power cut never leaves half of one.
//!
//! The new content goes to a temporary file in the same directory (so the
//! rename cannot cross filesystems), is flushed to disk, and is renamed over
//! the old file; then the directory is flushed so the rename itself
//! survives a power cut. A reader sees the old file or the new one, never a
//! mix. Used for the persisted inventory and the hosts export.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically, with permission bits `mode` unless
/// `path` exists (then its mode is kept).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, mode, |w| w.write_all(bytes)).map(drop)
}

/// [`write_atomic`] for content that `write` streams out (through a
/// buffer), so that large content never has to be held in memory whole.
/// Returns the new file, open for reading: what was written, whatever
/// replaces `path` later.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<File> {
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => mode,
    };
    let file = replace_with(path, mode, None, write)?;
    sync_dir(&parent_of(path))?;
    Ok(file)
}

/// Puts `bytes` at `path` through a temporary file in the same directory:
/// written with `mode` (and `owner`'s uid and gid when they differ from
/// ours, which needs root), flushed, renamed over `path`. On any failure
/// the temporary file is removed and `path` is untouched. The directory is
/// not flushed: callers decide whether [`sync_dir`] failing is an error.
pub fn replace(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    replace_with(path, mode, owner, |w| w.write_all(bytes)).map(drop)
}

/// [`replace`] with the content streamed out by `write`; returns the new
/// file, open for reading and writing.
pub fn replace_with(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<File> {
    let (temp_path, temp) = create_temp(&parent_of(path), path, mode)?;
    let staged = (|| {
        if let Some((uid, gid)) = owner {
            let mine = temp.metadata()?;
            if mine.uid() != uid || mine.gid() != gid {
                std::os::unix::fs::fchown(&temp, Some(uid), Some(gid))?;
            }
        }
        let mut buffered = io::BufWriter::with_capacity(1 << 16, &temp);
        write(&mut buffered)?;
        buffered.flush()?;
        drop(buffered);
        temp.sync_all()?;
        fs::rename(&temp_path, path)
    })();
    if let Err(error) = staged {
        let _ = fs::remove_file(&temp_path);
        return Err(error);
    }
    Ok(temp)
}

/// How much [`read_in_chunks`] asks of the kernel per call.
const READ_CHUNK: usize = 64 << 10;

/// Reads a whole file with many short `read` calls rather than one.
///
/// The kernel copies a read's bytes without giving up the CPU (this
/// kernel is built without involuntary preemption): one read of a 14 MB
/// inventory kept the DNS loop off a shared CPU for milliseconds, and even
/// 256 KiB reads took up to 2 ms when the pages had to be brought back.
/// Between 64 KiB reads it offers the CPU to the loop
/// ([`crate::background::offer`]).
pub fn read_in_chunks(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len() as usize);
    // The size plus one byte, to see the end without growing; more only if
    // the file grew meanwhile.
    let mut bytes = Vec::with_capacity(size + 1);
    loop {
        crate::background::offer();
        if bytes.len() == bytes.capacity() {
            bytes.reserve(READ_CHUNK);
        }
        let start = bytes.len();
        let end = (start + READ_CHUNK).min(bytes.capacity());
        bytes.resize(end, 0);
        match file.read(&mut bytes[start..end]) {
            Ok(0) => {
                bytes.truncate(start);
                return Ok(bytes);
            }
            Ok(n) => bytes.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => bytes.truncate(start),
            Err(e) => return Err(e),
        }
    }
}

/// [`read_in_chunks`] for text: not UTF-8 is an `InvalidData` error.
pub fn read_text_in_chunks(path: &Path) -> io::Result<String> {
    String::from_utf8(read_in_chunks(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a new, exclusive temporary file next to `target`.
///
/// The name starts with a dot and ends in `.tmp`, so a leftover from a
/// crash is easy to recognise; `create_new` makes two writers never share
/// one.
fn create_temp(dir: &Path, target: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let base = target
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let pid = std::process::id();
    for attempt in 0u32..100 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let candidate = dir.join(format!(".{base}.{pid}.{nanos:x}{attempt}.tmp"));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&candidate)
        {
            Ok(file) => {
                // The umask may have taken bits away; set exactly what was asked.
                file.set_permissions(fs::Permissions::from_mode(mode))?;
                return Ok((candidate, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
}

/// An unnamed temporary file in `dir`, readable and writable by the owner
/// only, gone when its last handle closes (`O_TMPFILE`; where the
/// filesystem lacks it, a named file removed at once). For spooling data
/// that must not sit in memory and must not outlive the process.
pub fn unnamed_temp(dir: &Path) -> io::Result<File> {
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            let (path, file) = create_temp(dir, Path::new("spool"), 0o600)?;
            fs::remove_file(&path)?;
            Ok(file)
        }
        other => other,
    }
}

/// Flushes a directory's entries (a rename in it) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_keeps_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub");
        fs::create_dir(&path).unwrap();
        // Renaming a file over a directory fails: the directory stays.
        assert!(write_atomic(&path, b"x", 0o644).is_err());
        assert!(path.is_dir());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

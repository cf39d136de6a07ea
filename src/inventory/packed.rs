//! A unit's instances in a compact binary form, in memory or in a file.
//!
//! The refresher keeps each unit's last good instances to compare the next
//! fetch with, to rebuild the zone when another unit changes, and to
//! persist them. Kept as parsed [`Instance`]s, 100,000 instances took 35 MB
//! of heap, more than the whole zone; packed, they take about 60 bytes
//! each, and they need not be in memory at all: a source packs what it
//! fetches into an unnamed temporary file in the state directory (a
//! [`Spool`]), the state file is the packed units back to back, and a unit's
//! [`Packed`] handle then points into it. Reading goes through the page
//! cache in 64 KiB chunks, so the daemon's resident memory holds the zone
//! and little else.
//!
//! The form is private to fleetdns (the state file says which version it
//! is): per instance, a little-endian `u32` length and then the fields in
//! the order of [`Instance`], strings as a LEB128 length and UTF-8 bytes,
//! lists as a count and their items, optional strings as length + 1 (0 is
//! none). Decoding checks every length against what is there; a damaged
//! file is an error, never a panic or an out-of-bounds read.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Instance, Tags};

/// How much is read from a file, or buffered before writing one, at a time.
const CHUNK: usize = 64 << 10;

/// How many old records after the last match [`Packed::diff`] tries
/// before it looks a new record up by content: a run of instances gone
/// from one place in the list shorter than this keeps the cheap way.
const PLACE_WINDOW: usize = 16;

/// The fewest bytes a packed instance takes: its length and one byte. A
/// count of instances that cannot fit in a unit's bytes is damage, and
/// must be refused before anything is sized by it.
pub const MIN_RECORD_BYTES: u64 = 5;

/// Why packed instances could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// Reading the file behind them failed.
    #[error("cannot read packed instances: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not what [`Packer`] writes (a damaged state file).
    #[error("damaged packed instances: {0}")]
    Corrupt(&'static str),
}

/// Where packed bytes live.
#[derive(Debug, Clone)]
enum Bytes {
    /// On the heap (one-shot commands, or when no file could be written).
    Memory(Arc<[u8]>),
    /// A range of a file: a spool or the state file. The handle keeps the
    /// file readable after it is replaced or unlinked.
    File {
        /// The open file.
        file: Arc<File>,
        /// Where the range starts.
        offset: u64,
        /// How long it is.
        len: u64,
    },
}

/// One unit's instances, packed: cheap to clone, immutable.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The bytes.
    bytes: Bytes,
    /// How many instances they hold.
    count: u32,
}

impl Packed {
    /// Packs `instances` in memory.
    pub fn from_instances<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> Packed {
        let mut bytes = Vec::new();
        let mut count = 0;
        for instance in instances {
            encode(instance, &mut bytes);
            count += 1;
        }
        Packed {
            bytes: Bytes::Memory(bytes.into()),
            count,
        }
    }

    /// `count` instances packed at `offset..offset + len` of `file` (a
    /// state file this module's writer produced).
    pub fn in_file(file: Arc<File>, offset: u64, len: u64, count: u32) -> Packed {
        Packed {
            bytes: Bytes::File { file, offset, len },
            count,
        }
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size of the packed form in bytes.
    pub fn byte_len(&self) -> u64 {
        match &self.bytes {
            Bytes::Memory(b) => b.len() as u64,
            Bytes::File { len, .. } => *len,
        }
    }

    /// Whether the bytes are held in memory rather than in a file.
    pub fn is_in_memory(&self) -> bool {
        matches!(self.bytes, Bytes::Memory(_))
    }

    /// Fills `buf` with the packed bytes from `at` on; `at + buf.len()`
    /// must be within [`Packed::byte_len`].
    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.bytes {
            Bytes::Memory(bytes) => {
                let at = at as usize;
                buf.copy_from_slice(&bytes[at..at + buf.len()]);
                Ok(())
            }
            Bytes::File { file, offset, .. } => file.read_exact_at(buf, offset + at),
        }
    }

    /// Calls `f` with each chunk of the packed bytes, in order, with a
    /// [`crate::background::offer`] between chunks.
    fn chunks(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let len = self.byte_len();
        let mut buf = vec![0u8; CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            crate::background::offer();
            let want = (len - done).min(CHUNK as u64) as usize;
            self.read_at(done, &mut buf[..want])?;
            f(&buf[..want])?;
            done += want as u64;
        }
        Ok(())
    }

    /// Writes the packed bytes to `out` (into a state file).
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        self.chunks(|chunk| out.write_all(chunk))
    }

    /// Whether `other` holds exactly the same bytes: the same instances in
    /// the same order. Reads both in chunks, and stops at the first
    /// difference.
    pub fn same_as(&self, other: &Packed) -> io::Result<bool> {
        let len = self.byte_len();
        if self.count != other.count || len != other.byte_len() {
            return Ok(false);
        }
        let (mut mine, mut theirs) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        let mut done = 0u64;
        while done < len {
            crate::background::offer();
            let want = (len - done).min(CHUNK as u64) as usize;
            self.read_at(done, &mut mine[..want])?;
            other.read_at(done, &mut theirs[..want])?;
            if mine[..want] != theirs[..want] {
                return Ok(false);
            }
            done += want as u64;
        }
        Ok(true)
    }

    /// Calls `f` with each instance in order. One [`Instance`] is decoded
    /// into again and again, so reading allocates little.
    pub fn for_each(&self, mut f: impl FnMut(&Instance)) -> Result<(), PackError> {
        let mut instance = empty_instance();
        self.for_each_record(|body| {
            decode(body, &mut instance)?;
            f(&instance);
            Ok(())
        })
    }

    /// Calls `f` with each instance's id and whether it is running, in
    /// order, decoding nothing else (the removal guard reads two units
    /// this way: a fraction of decoding every field).
    pub fn for_each_id(&self, mut f: impl FnMut(&str, bool)) -> Result<(), PackError> {
        self.for_each_record(|body| {
            let mut fields = Fields(body);
            let id = fields.str()?;
            f(id, fields.str()? == "running");
            Ok(())
        })
    }

    /// Calls `f` with the body of each record in order, reading the bytes
    /// in 64 KiB chunks; a record that spans two chunks is completed from
    /// the next read.
    fn for_each_record(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), PackError>,
    ) -> Result<(), PackError> {
        let mut records = Records::new(self);
        while let Some(body) = records.next()? {
            f(body)?;
        }
        Ok(())
    }

    /// What changed from `self` (a unit's last good instances) to `new`
    /// (its next fetch), record by record: the records of each that the
    /// other does not hold byte for byte, whatever the order. A refresh in
    /// which a few instances changed patches the zone with these
    /// ([`crate::snapshot::Snapshot::patched`]) instead of building it
    /// from every instance (issue 18). Both sides are read once, a record
    /// at a time; of `self` only the records no place matched are held.
    pub fn diff(&self, new: &Packed) -> Result<UnitDiff, PackError> {
        // First by place: a fetch lists instances in the order the last
        // one did, so most records equal the old one after the last match,
        // or one a little further where old records left. The few that do
        // not wait in `pending` for the hash table below.
        let mut old = OldSide::new(self);
        let mut changed: Vec<bool> = Vec::with_capacity(new.len());
        let mut pending: Vec<u8> = Vec::new();
        // the index in `new` of each record in `pending`
        let mut pending_at: Vec<usize> = Vec::new();
        new.for_each_record(|b| {
            if !old.take(b)? {
                pending_at.push(changed.len());
                pending.extend_from_slice(&(b.len() as u32).to_le_bytes());
                pending.extend_from_slice(b);
            }
            changed.push(false);
            Ok(())
        })?;
        old.finish()?;
        let (old_running, old_len) = (old.running, old.passed.len());
        // Then by content, among the old records no place matched.
        let body = |k: u32| old.passed(k as usize);
        let mut matched = vec![false; old_len];
        use std::hash::BuildHasher;
        // Keyed per process: the bytes come from tags anyone may set.
        let hasher = std::hash::RandomState::new();
        let mut table: hashbrown::HashTable<u32> = hashbrown::HashTable::new();
        if !pending_at.is_empty() {
            for k in 0..old_len as u32 {
                crate::background::checkpoint();
                table.insert_unique(hasher.hash_one(body(k)), k, |&j| hasher.hash_one(body(j)));
            }
        }
        let mut added = Packer::in_memory();
        let mut rest = &pending[..];
        let mut pending_at = pending_at.into_iter();
        while let Some((b, tail)) = whole_record(rest)? {
            let index = pending_at
                .next()
                .ok_or(PackError::Corrupt("fewer or more records than counted"))?;
            let same = table.find(hasher.hash_one(b), |&j| {
                !matched[j as usize] && body(j) == b
            });
            match same {
                Some(&j) => matched[j as usize] = true,
                None => {
                    added.push_record(b);
                    changed[index] = true;
                }
            }
            rest = tail;
        }
        drop(pending);
        let mut gone = Packer::in_memory();
        for (k, _) in matched.iter().enumerate().filter(|(_, m)| !**m) {
            gone.push_record(body(k as u32));
        }
        drop((table, old));
        let (gone, added) = (gone.finish()?, added.finish()?);
        // The ids the two sides touch, lowercase as the zone keys them;
        // and how many running ones leave the zone (the removal guard's
        // count: absent from `new`, or no longer running there).
        let mut ids: HashSet<String> = HashSet::new();
        let mut running_now: HashSet<String> = HashSet::new();
        added.for_each_id(|id, up| {
            ids.insert(id.to_ascii_lowercase());
            if up {
                running_now.insert(id.to_string());
            }
        })?;
        let mut removed_running = 0usize;
        gone.for_each_id(|id, up| {
            ids.insert(id.to_ascii_lowercase());
            removed_running += usize::from(up && !running_now.contains(id));
        })?;
        // An unchanged record with a touched id (an instance listed twice,
        // one copy changed) cannot be patched exactly.
        let mut at = 0usize;
        let mut entangled = false;
        if !ids.is_empty() {
            new.for_each_record(|b| {
                if !changed[at] {
                    let id = std::str::from_utf8(id_and_state(b)?.0);
                    entangled |= id.is_ok_and(|id| has_id(&ids, id));
                }
                at += 1;
                Ok(())
            })?;
        }
        Ok(UnitDiff {
            gone,
            added,
            ids,
            entangled,
            removed_running,
            old_running,
        })
    }

    /// The records whose id `keep` accepts, packed in memory (the few an
    /// event batch names).
    pub fn select(&self, keep: impl FnMut(&str) -> bool) -> Result<Packed, PackError> {
        let mut packer = Packer::in_memory();
        self.copy_into(&mut packer, keep)?;
        Ok(packer.finish()?)
    }

    /// Adds to `packer` the records whose id `keep` accepts, as they are:
    /// nothing but the ids is decoded (merging an event batch into a unit
    /// of 100,000 instances decoded and encoded every one of them).
    pub fn copy_into(
        &self,
        packer: &mut Packer,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<(), PackError> {
        self.for_each_record(|body| {
            if keep(Fields(body).str()?) {
                packer.push_record(body);
            }
            Ok(())
        })
    }

    /// Every instance, decoded into its own value (tests, small units).
    pub fn instances(&self) -> Result<Vec<Instance>, PackError> {
        let mut all = Vec::with_capacity(self.len());
        self.for_each(|i| all.push(i.clone()))?;
        Ok(all)
    }
}

/// Whether `id`, lowercase, is in `ids` (lowercase ids, as the zone keys
/// instances); allocates only for an id with capitals.
pub fn has_id(ids: &HashSet<String>, id: &str) -> bool {
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        ids.contains(&id.to_ascii_lowercase())
    } else {
        ids.contains(id)
    }
}

/// What changed in a unit between two fetches ([`Packed::diff`]).
#[derive(Debug)]
pub struct UnitDiff {
    /// The old records the new fetch does not hold: instances gone or
    /// changed, as they were.
    pub gone: Packed,
    /// The new records the old data did not hold: instances new or
    /// changed, as they are now.
    pub added: Packed,
    /// The ids of both, lowercase.
    pub ids: HashSet<String>,
    /// Whether a record that did not change has one of `ids` (an instance
    /// listed twice with one copy changed): then only a full build is
    /// exact.
    pub entangled: bool,
    /// How many of the old running instances the new fetch takes out of
    /// the zone: absent, or no longer running.
    pub removed_running: usize,
    /// How many old instances were running.
    pub old_running: usize,
}

/// A record's id and state as bytes (its first two fields), unchecked as
/// text: where only equality matters, 100,000 records are read without
/// validating UTF-8.
fn id_and_state(body: &[u8]) -> Result<(&[u8], &[u8]), PackError> {
    let mut fields = Fields(body);
    let n = fields.len()?;
    let id = fields.take(n)?;
    let n = fields.len()?;
    Ok((id, fields.take(n)?))
}

/// Whether a record's body is of a running instance (its second field).
fn is_running(body: &[u8]) -> Result<bool, PackError> {
    Ok(id_and_state(body)?.1 == b"running")
}

/// An instance with nothing in it, to decode into.
fn empty_instance() -> Instance {
    Instance {
        id: String::new(),
        state: String::new(),
        private_ipv4: Vec::new(),
        ipv6: Vec::new(),
        tags: Tags::default(),
        security_groups: Vec::new(),
        launch_time: None,
        region: None,
        vpc_id: None,
        availability_zone: None,
        instance_type: None,
        account: None,
    }
}

/// Reads packed records one at a time, in 64 KiB chunks: a record that
/// spans two chunks is completed from the next read.
struct Records<'p> {
    packed: &'p Packed,
    /// Read bytes; those before `at` are handed out.
    buf: Vec<u8>,
    at: usize,
    /// How many bytes of `packed` are read.
    read: u64,
    /// How many records are handed out.
    seen: u32,
}

impl<'p> Records<'p> {
    fn new(packed: &'p Packed) -> Self {
        Records {
            packed,
            buf: Vec::with_capacity(CHUNK.min(packed.byte_len() as usize)),
            at: 0,
            read: 0,
            seen: 0,
        }
    }

    /// The next record's body; `None` after the last, once the bytes and
    /// the count are found to agree.
    fn next(&mut self) -> Result<Option<&[u8]>, PackError> {
        let len = self.packed.byte_len();
        let (start, size) = loop {
            let found = whole_record(&self.buf[self.at..])?
                .map(|(body, tail)| (self.buf.len() - tail.len() - body.len(), body.len()));
            if let Some(found) = found {
                break found;
            }
            if self.read == len {
                if self.at != self.buf.len() {
                    return Err(PackError::Corrupt("the last record is cut off"));
                }
                if self.seen != self.packed.count {
                    return Err(PackError::Corrupt("fewer or more records than counted"));
                }
                return Ok(None);
            }
            self.buf.drain(..self.at);
            self.at = 0;
            crate::background::offer();
            let want = (len - self.read).min(CHUNK as u64) as usize;
            let have = self.buf.len();
            self.buf.resize(have + want, 0);
            self.packed.read_at(self.read, &mut self.buf[have..])?;
            self.read += want as u64;
        };
        crate::background::checkpoint();
        self.at = start + size;
        self.seen += 1;
        Ok(Some(&self.buf[start..start + size]))
    }
}

/// The old side of [`Packed::diff`], read as the new side asks: the next
/// [`PLACE_WINDOW`] records after the last match, and the bytes of those
/// the window left behind unmatched. Only those are held, so a diff in
/// which a few records changed holds a few records of the old unit, not
/// all of it (issue 18: reading it whole was the peak of a reload).
struct OldSide<'p> {
    records: Records<'p>,
    /// The window: the bodies of the next unmatched old records.
    ahead: std::collections::VecDeque<Vec<u8>>,
    /// Bodies of the windows' matched records, to fill it again.
    spare: Vec<Vec<u8>>,
    /// (start, end in `passed_bytes`) of each record left behind.
    passed: Vec<(u32, u32)>,
    passed_bytes: Vec<u8>,
    /// How many old records are running.
    running: usize,
}

impl<'p> OldSide<'p> {
    fn new(old: &'p Packed) -> Self {
        OldSide {
            records: Records::new(old),
            ahead: std::collections::VecDeque::with_capacity(PLACE_WINDOW),
            spare: Vec::new(),
            passed: Vec::new(),
            passed_bytes: Vec::new(),
            running: 0,
        }
    }

    /// Reads into the window until it is full or the old records end;
    /// whether it holds any.
    fn fill(&mut self) -> Result<bool, PackError> {
        while self.ahead.len() < PLACE_WINDOW {
            let Some(body) = self.records.next()? else {
                break;
            };
            self.running += usize::from(is_running(body)?);
            let mut copy = self.spare.pop().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(body);
            self.ahead.push_back(copy);
        }
        Ok(!self.ahead.is_empty())
    }

    /// Matches `body` against the window: if one of its records is
    /// `body`, the records before it are left behind and the window moves
    /// past it.
    fn take(&mut self, body: &[u8]) -> Result<bool, PackError> {
        self.fill()?;
        let Some(at) = self.ahead.iter().position(|b| b == body) else {
            return Ok(false);
        };
        for _ in 0..at {
            self.leave_first();
        }
        if let Some(matched) = self.ahead.pop_front() {
            self.spare.push(matched);
        }
        Ok(true)
    }

    /// Leaves the window's first record behind.
    fn leave_first(&mut self) {
        if let Some(body) = self.ahead.pop_front() {
            let start = self.passed_bytes.len() as u32;
            self.passed_bytes.extend_from_slice(&body);
            self.passed.push((start, self.passed_bytes.len() as u32));
            self.spare.push(body);
        }
    }

    /// Leaves the window and every record not read yet behind: what no
    /// place matched, in order.
    fn finish(&mut self) -> Result<(), PackError> {
        while self.fill()? {
            while !self.ahead.is_empty() {
                self.leave_first();
            }
        }
        self.spare = Vec::new();
        Ok(())
    }

    /// The body of the `k`th record left behind.
    fn passed(&self, k: usize) -> &[u8] {
        let (start, end) = self.passed[k];
        &self.passed_bytes[start as usize..end as usize]
    }
}

/// A record's body and the bytes after it.
type Split<'a> = (&'a [u8], &'a [u8]);

/// The first record of `bytes` and what follows it, or `None` if `bytes`
/// ends before the record does.
fn whole_record(bytes: &[u8]) -> Result<Option<Split<'_>>, PackError> {
    let Some(head) = bytes.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 {
        return Err(PackError::Corrupt("a record of length zero"));
    }
    Ok(bytes.get(4..4 + len).map(|body| (body, &bytes[4 + len..])))
}

/// Where a [`Packer`] writes: a directory for unnamed temporary files, or
/// memory.
#[derive(Debug, Clone, Default)]
pub struct Spool {
    /// The directory (the daemon's state directory), or `None` for memory.
    dir: Option<PathBuf>,
}

impl Spool {
    /// Packs in memory (one-shot commands, tests).
    pub fn memory() -> Spool {
        Spool { dir: None }
    }

    /// Packs into unnamed temporary files in `dir`, created if missing.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Spool {
        Spool {
            dir: Some(dir.into()),
        }
    }

    /// A new packer. Where no file can be made in the directory (read-only,
    /// full, missing permission), it packs in memory: serving matters more
    /// than memory.
    pub fn packer(&self) -> Packer {
        let Some(dir) = &self.dir else {
            return Packer::in_memory();
        };
        match spool_file(dir) {
            Ok(file) => Packer {
                sink: Sink::File {
                    file,
                    written: 0,
                    buffer: Vec::with_capacity(CHUNK),
                },
                count: 0,
                lost: None,
            },
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot spool the fetch to a file; keeping it in memory");
                Packer::in_memory()
            }
        }
    }
}

/// An unnamed temporary file in `dir` (created, mode 0750, if missing).
fn spool_file(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)?;
    crate::files::unnamed_temp(dir)
}

/// Where packed bytes go while a unit is fetched.
enum Sink {
    /// A growing buffer.
    Memory(Vec<u8>),
    /// A spool file, written in chunks from `buffer`.
    File {
        /// The unnamed file.
        file: File,
        /// Bytes already in the file.
        written: u64,
        /// Bytes not yet written.
        buffer: Vec<u8>,
    },
}

/// Packs instances one by one, as a source produces them.
pub struct Packer {
    /// Where the bytes go.
    sink: Sink,
    /// Instances packed so far.
    count: u32,
    /// Why packed instances were lost (a spool file that failed and could
    /// not be read back): [`Packer::finish`] then fails.
    lost: Option<io::Error>,
}

impl Packer {
    /// A packer that keeps the bytes in memory.
    pub fn in_memory() -> Packer {
        Packer {
            sink: Sink::Memory(Vec::new()),
            count: 0,
            lost: None,
        }
    }

    /// Adds `instance`.
    pub fn push(&mut self, instance: &Instance) {
        self.push_with(|out| encode(instance, out));
    }

    /// Adds a record's body as it is (one read back from packed bytes).
    fn push_record(&mut self, body: &[u8]) {
        self.push_with(|out| {
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
        });
    }

    /// Adds the record `write` appends to the bytes not yet written.
    fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let out = match &mut self.sink {
            Sink::Memory(bytes) => bytes,
            Sink::File { buffer, .. } => buffer,
        };
        write(out);
        self.count += 1;
        self.spill();
    }

    /// Writes the buffer to the spool file once it holds a chunk.
    fn spill(&mut self) {
        if matches!(&self.sink, Sink::File { buffer, .. } if buffer.len() >= CHUNK) {
            self.flush();
        }
    }

    /// Writes what the buffer holds to the spool file. A failed write (a
    /// full disk) moves everything into memory: nothing fetched is lost.
    fn flush(&mut self) {
        let Sink::File {
            file,
            written,
            buffer,
        } = &mut self.sink
        else {
            return;
        };
        if buffer.is_empty() {
            return;
        }
        let Err(error) = file.write_all_at(buffer, *written) else {
            *written += buffer.len() as u64;
            buffer.clear();
            return;
        };
        let mut bytes = vec![0u8; *written as usize];
        let read = file.read_exact_at(&mut bytes, 0);
        bytes.extend_from_slice(buffer);
        match read {
            Ok(()) => {
                tracing::warn!(%error, "cannot write the spool file; keeping the fetch in memory");
            }
            Err(read) => {
                // What the file held is gone: the fetch must not pass for
                // complete (finish fails).
                self.lost = Some(io::Error::new(
                    read.kind(),
                    format!("spool file failed ({error}) and cannot be read back ({read})"),
                ));
                bytes.clear();
            }
        }
        self.sink = Sink::Memory(bytes);
    }

    /// The packed instances. A spool that fails here (its last write)
    /// ends up in memory, as in [`Packer::push`]; the only error is a
    /// spool that failed and could not be read back.
    pub fn finish(mut self) -> io::Result<Packed> {
        self.flush();
        if let Some(lost) = self.lost {
            return Err(lost);
        }
        let bytes = match self.sink {
            Sink::Memory(bytes) => Bytes::Memory(bytes.into()),
            Sink::File { file, written, .. } => Bytes::File {
                file: Arc::new(file),
                offset: 0,
                len: written,
            },
        };
        Ok(Packed {
            bytes,
            count: self.count,
        })
    }
}

/// Appends `value` as LEB128.
fn put_len(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            put_len(out, s.len() + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Appends one record: its length, then its fields.
fn encode(i: &Instance, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    put_str(out, &i.id);
    put_str(out, &i.state);
    put_len(out, i.private_ipv4.len());
    for a in &i.private_ipv4 {
        out.extend_from_slice(&a.octets());
    }
    put_len(out, i.ipv6.len());
    for a in &i.ipv6 {
        out.extend_from_slice(&a.octets());
    }
    put_len(out, i.tags.len());
    for (k, v) in i.tags.iter() {
        put_str(out, k);
        put_str(out, v);
    }
    put_len(out, i.security_groups.len());
    for g in &i.security_groups {
        put_str(out, g);
    }
    for opt in [
        &i.launch_time,
        &i.region,
        &i.vpc_id,
        &i.availability_zone,
        &i.instance_type,
        &i.account,
    ] {
        put_opt(out, opt.as_deref());
    }
    // Instances are far smaller than 4 GiB (a tag value is at most 256
    // characters, and EC2 allows 50 tags).
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Reads fields off the front of a record.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PackError> {
        if n > self.0.len() {
            return Err(PackError::Corrupt("a field runs past its record"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, PackError> {
        let mut value = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PackError::Corrupt("a length of more than 32 bits"))
    }

    /// A count of items of at least `each` bytes, checked against what is left.
    fn count(&mut self, each: usize) -> Result<usize, PackError> {
        let n = self.len()?;
        if n.saturating_mul(each) > self.0.len() {
            return Err(PackError::Corrupt("a list runs past its record"));
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, PackError> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| PackError::Corrupt("a string is not UTF-8"))
    }

    fn opt(&mut self) -> Result<Option<&'a str>, PackError> {
        match self.len()? {
            0 => Ok(None),
            n => std::str::from_utf8(self.take(n - 1)?)
                .map(Some)
                .map_err(|_| PackError::Corrupt("a string is not UTF-8")),
        }
    }
}

/// Replaces `slot` with `value`, reusing its allocation.
fn set_opt(slot: &mut Option<String>, value: Option<&str>) {
    match (slot.as_mut(), value) {
        (Some(s), Some(v)) => {
            s.clear();
            s.push_str(v);
        }
        (_, v) => *slot = v.map(str::to_string),
    }
}

/// Decodes one record's body into `into`, reusing its allocations.
fn decode(body: &[u8], into: &mut Instance) -> Result<(), PackError> {
    let mut f = Fields(body);
    into.id.clear();
    into.id.push_str(f.str()?);
    into.state.clear();
    into.state.push_str(f.str()?);
    into.private_ipv4.clear();
    for _ in 0..f.count(4)? {
        let o = f.take(4)?;
        into.private_ipv4
            .push(Ipv4Addr::new(o[0], o[1], o[2], o[3]));
    }
    into.ipv6.clear();
    for _ in 0..f.count(16)? {
        let mut o = [0u8; 16];
        o.copy_from_slice(f.take(16)?);
        into.ipv6.push(Ipv6Addr::from(o));
    }
    let tags = f.count(2)?;
    let mut pairs = Vec::with_capacity(tags);
    for _ in 0..tags {
        let k = f.str()?;
        let v = f.str()?;
        pairs.push((k, v));
    }
    // Through the collecting constructor: a damaged file cannot break the
    // sorted order that lookups rely on.
    into.tags = pairs.into_iter().collect();
    let groups = f.count(1)?;
    into.security_groups.truncate(groups);
    for n in 0..groups {
        let g = f.str()?;
        match into.security_groups.get_mut(n) {
            Some(s) => {
                s.clear();
                s.push_str(g);
            }
            None => into.security_groups.push(g.to_string()),
        }
    }
    set_opt(&mut into.launch_time, f.opt()?);
    set_opt(&mut into.region, f.opt()?);
    set_opt(&mut into.vpc_id, f.opt()?);
    set_opt(&mut into.availability_zone, f.opt()?);
    set_opt(&mut into.instance_type, f.opt()?);
    // Added with naming templates (`{account}`): a record written before
    // has none, and reads as no account.
    let account = if f.0.is_empty() { None } else { f.opt()? };
    set_opt(&mut into.account, account);
    if !f.0.is_empty() {
        return Err(PackError::Corrupt("a record is longer than its fields"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::test_instance;

    fn fleet(n: usize) -> Vec<Instance> {
        (0..n)
            .map(|k| {
                let mut i = test_instance(
                    &format!("i-{k:017x}"),
                    Some(&format!("web-{k}")),
                    &["10.0.0.1", "2001:db8::1"],
                );
                i.security_groups = vec!["web".into(), format!("sg-{k}")];
                i.launch_time = Some("2026-11-30T10:00:00Z".into());
                i.region = (k % 2 == 0).then(|| "eu-west-1".into());
                if k % 7 == 0 {
                    i.state = "stopped".into();
                }
                i.tags = [("Name", format!("web-{k}")), ("Team", "ünïcode\n".into())].into();
                i
            })
            .collect()
    }

    #[test]
    fn instances_come_back_as_they_went_in_from_memory_and_from_a_spool() {
        let all = fleet(3000);
        let dir = tempfile::tempdir().unwrap();
        for spool in [Spool::memory(), Spool::in_dir(dir.path().join("new"))] {
            let mut packer = spool.packer();
            for i in &all {
                packer.push(i);
            }
            let packed = packer.finish().unwrap();
            assert_eq!(packed.len(), 3000);
            // 3000 instances are several chunks: records span chunk borders
            assert!(packed.byte_len() > 3 * CHUNK as u64);
            assert_eq!(packed.instances().unwrap(), all);
            // the ids and states alone, read the cheap way, are the same
            let mut ids = Vec::new();
            packed
                .for_each_id(|id, running| ids.push((id.to_string(), running)))
                .unwrap();
            let want: Vec<(String, bool)> =
                all.iter().map(|i| (i.id.clone(), i.is_running())).collect();
            assert_eq!(ids, want);
        }
        // the spool files are unnamed: nothing is left in the directory
        assert_eq!(
            std::fs::read_dir(dir.path().join("new")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_record_from_before_the_account_field_reads_as_no_account() {
        let mut with = fleet(1).remove(0);
        with.account = Some("123456789012".into());
        let mut body = Vec::new();
        encode(&with, &mut body);
        let mut back = empty_instance();
        decode(&body[4..], &mut back).unwrap();
        assert_eq!(back, with);
        // the same record as an older fleetdns wrote it: no account field
        with.account = None;
        let mut old = Vec::new();
        encode(&with, &mut old);
        old.pop();
        let mut back = empty_instance();
        decode(&old[4..], &mut back).unwrap();
        assert_eq!(back, with);
    }

    #[test]
    fn a_spool_on_a_full_disk_keeps_the_fetch_in_memory() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let full = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut packer = Packer {
            sink: Sink::File {
                file: full,
                written: 0,
                buffer: Vec::with_capacity(CHUNK),
            },
            count: 0,
            lost: None,
        };
        let all = fleet(3000);
        all.iter().for_each(|i| packer.push(i));
        let packed = packer.finish().unwrap();
        assert!(packed.is_in_memory());
        assert_eq!(packed.instances().unwrap(), all);
    }

    #[test]
    fn same_bytes_compare_equal_across_memory_and_files() {
        let all = fleet(2000);
        let dir = tempfile::tempdir().unwrap();
        let in_memory = Packed::from_instances(&all);
        let mut packer = Spool::in_dir(dir.path()).packer();
        all.iter().for_each(|i| packer.push(i));
        let in_file = packer.finish().unwrap();
        assert!(!in_file.is_in_memory());
        assert!(in_memory.same_as(&in_file).unwrap());
        assert!(in_file.same_as(&in_memory).unwrap());
        assert!(in_file.same_as(&in_file.clone()).unwrap());
        let mut changed = all.clone();
        changed[1999].private_ipv4 = vec!["10.9.9.9".parse().unwrap()];
        let other = Packed::from_instances(&changed);
        assert!(!other.same_as(&in_file).unwrap());
        assert!(!in_file.same_as(&other).unwrap());
        assert!(!in_memory
            .same_as(&Packed::from_instances(&all[1..]))
            .unwrap());
    }

    #[test]
    fn a_range_of_a_file_reads_back_alone() {
        let all = fleet(10);
        let packed = Packed::from_instances(&all[4..7]);
        let mut bytes = b"header".to_vec();
        packed.write_to(&mut bytes).unwrap();
        bytes.extend_from_slice(b"trailer");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, &bytes).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let range = Packed::in_file(file, 6, packed.byte_len(), 3);
        assert_eq!(range.instances().unwrap(), &all[4..7]);
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let all = fleet(4);
        let good = Packed::from_instances(&all);
        let mut bytes = Vec::new();
        good.write_to(&mut bytes).unwrap();
        let count = good.len() as u32;
        // every truncation, and every single byte changed, of a small unit
        for cut in 0..bytes.len() {
            let p = Packed {
                bytes: Bytes::Memory(bytes[..cut].into()),
                count,
            };
            assert!(p.for_each(|_| {}).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] = value;
                let p = Packed {
                    bytes: Bytes::Memory(damaged.into()),
                    count,
                };
                // decodes to something or fails; never panics
                let _ = p.for_each(|_| {});
            }
        }
        let wrong_count = Packed {
            bytes: Bytes::Memory(bytes.into()),
            count: count + 1,
        };
        assert!(wrong_count.for_each(|_| {}).is_err());
    }
}

//! Static records (issue 17): the hosts that are not EC2 instances, from a
//! zone-file fragment (`static_records = "/etc/fleetdns/static.zone"`).
//!
//! The file is RFC 1035 master-file syntax with owners relative to the
//! zone: `db-old  IN A 10.1.2.3`, `lb CNAME my-lb-123.elb.amazonaws.com.`,
//! `_ldap._tcp SRV 0 0 389 dc1`. It is untrusted input (anyone who may edit
//! it, and whatever tool writes it), so [`parse`] is total: a fragment gives
//! records that are valid and inside the zone, or an error with the line.
//!
//! What it accepts, and why it is narrower than a full zone file:
//! - the types A, AAAA, CNAME, TXT, SRV and MX, class IN: the records a
//!   fleet's other hosts need; SOA and NS are fleetdns's own;
//! - `$TTL` and `$ORIGIN` (at or below the zone), `@`, an owner left blank
//!   for the previous one, `;` comments, `( )` across lines, quoted strings
//!   with `\"`, `\\` and `\DDD`, TTLs with units (`1h30m`);
//! - names of letters, digits, `-` and `_`: no wildcards (`*`), which would
//!   answer for instance names that have not appeared yet, and no escapes;
//! - no `$INCLUDE` or `$GENERATE`: one file says everything.
//!
//! It refuses what an authoritative server refuses: a record outside the
//! zone, a CNAME at the apex, a CNAME beside other data (RFC 1034 section
//! 3.6.2), TTLs that differ within one RRset (RFC 2181 section 5.2), and
//! a name shaped like an instance id, which is that instance's own.
//!
//! The snapshot makes every static name a name of the zone
//! ([`crate::snapshot::SnapshotBuilder`]): where one equals a fleet name,
//! the static records win.

use std::cmp::Ordering;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SRV, TXT};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::naming::{is_instance_id, MAX_LABEL};

/// The largest static file read (a fragment of a few thousand hosts is
/// well under a megabyte; more is a mistake, not a zone to load).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The largest TTL (RFC 2181 section 8).
const MAX_TTL: u32 = (1 << 31) - 1;

/// One static record's TTL and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRecord {
    /// Its TTL.
    pub ttl: u32,
    /// A, AAAA, CNAME, TXT, SRV or MX.
    pub data: RData,
}

/// Every static record of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNode {
    /// The name relative to the zone as lowercase wire-format labels,
    /// without the final zero (`\x02db\x03old`); empty for the apex.
    pub labels: Box<[u8]>,
    /// The line of its first record.
    pub line: usize,
    /// Its A addresses, sorted, without duplicates.
    pub ipv4: Vec<Ipv4Addr>,
    /// Its AAAA addresses, sorted, without duplicates.
    pub ipv6: Vec<Ipv6Addr>,
    /// All its records, A and AAAA included, grouped by type in the order
    /// types first appear, without duplicates.
    pub records: Vec<StaticRecord>,
}

impl StaticNode {
    /// Its CNAME target, if it is an alias.
    pub fn cname(&self) -> Option<&Name> {
        self.records.iter().find_map(|r| match &r.data {
            RData::CNAME(CNAME(target)) => Some(target),
            _ => None,
        })
    }

    /// Its records of `rtype`.
    pub fn of_type(&self, rtype: RecordType) -> impl Iterator<Item = &StaticRecord> {
        self.records
            .iter()
            .filter(move |r| r.data.record_type() == rtype)
    }
}

/// A parsed static file: the names below the apex, and the apex's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticRecords {
    /// Names below the apex, in the order of [`crate::snapshot`]'s
    /// entries (by their text).
    nodes: Vec<StaticNode>,
    /// Records at the apex (never a CNAME).
    apex: Option<StaticNode>,
    /// The file they came from, for `list`.
    file: String,
}

impl StaticRecords {
    /// The names below the apex, in the zone's entry order.
    pub fn nodes(&self) -> &[StaticNode] {
        &self.nodes
    }

    /// The apex's records, if the file gives any.
    pub fn apex(&self) -> Option<&StaticNode> {
        self.apex.as_ref()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.apex.is_none()
    }

    /// The file they were read from (empty if none).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// How many records, apex included.
    pub fn record_count(&self) -> usize {
        self.nodes
            .iter()
            .chain(&self.apex)
            .map(|n| n.records.len())
            .sum()
    }
}

/// Why a static file was refused: the line, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for StaticError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

fn error<T>(line: usize, message: impl Into<String>) -> Result<T, StaticError> {
    Err(StaticError {
        line,
        message: message.into(),
    })
}

/// Reads and parses the static file at `path` for `zone`, whose records
/// take `default_ttl` unless `$TTL` or the record says otherwise. The
/// error names the file and, where it applies, the line.
pub fn load(path: &Path, zone: &Name, default_ttl: u32) -> Result<StaticRecords, String> {
    use std::io::Read;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    // Not a FIFO or a device, which could block a reload or never end.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{shown}: larger than {} MiB; static records are for the hosts EC2 does not list, not a whole zone",
            MAX_FILE_BYTES >> 20
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        format!("{shown}: line {line}: not UTF-8 text")
    })?;
    let mut records = parse(&text, zone, default_ttl).map_err(|e| format!("{shown}: {e}"))?;
    records.file = path.display().to_string();
    Ok(records)
}

/// One token of a logical entry.
#[derive(Debug)]
struct Token {
    /// Its bytes, escapes decoded.
    bytes: Vec<u8>,
    /// Whether it was quoted.
    quoted: bool,
    /// Whether it held an escape (names and numbers may not).
    escaped: bool,
}

impl Token {
    /// Its text if it is plain (unquoted, no escapes).
    fn plain(&self) -> Option<&str> {
        if self.quoted || self.escaped {
            return None;
        }
        std::str::from_utf8(&self.bytes).ok()
    }
}

/// One record or directive: its first line, whether it began with blank
/// space (then it has the previous owner), and its tokens.
#[derive(Debug)]
struct Entry {
    line: usize,
    indented: bool,
    tokens: Vec<Token>,
}

/// Splits `text` into entries: a line, or lines joined by parentheses.
fn entries(text: &str) -> Result<Vec<Entry>, StaticError> {
    let bytes = text.as_bytes();
    let mut out: Vec<Entry> = Vec::new();
    let mut line = 1usize;
    let mut i = 0usize;
    // The entry being read, and the line of an open parenthesis.
    let mut current: Option<Entry> = None;
    let mut open: Option<usize> = None;
    let mut at_line_start = true;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => {
                line += 1;
                i += 1;
                at_line_start = true;
                if open.is_none() {
                    if let Some(entry) = current.take() {
                        out.push(entry);
                    }
                }
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                at_line_start = false;
                continue;
            }
            b';' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'(' => {
                if open.is_some() {
                    return error(line, "a parenthesis inside parentheses");
                }
                open = Some(line);
                current.get_or_insert(Entry {
                    line,
                    indented: !at_line_start,
                    tokens: Vec::new(),
                });
                i += 1;
                at_line_start = false;
                continue;
            }
            b')' => {
                if open.take().is_none() {
                    return error(line, "a closing parenthesis without an opening one");
                }
                i += 1;
                at_line_start = false;
                continue;
            }
            _ => {}
        }
        let entry = current.get_or_insert(Entry {
            line,
            indented: !at_line_start,
            tokens: Vec::new(),
        });
        at_line_start = false;
        let quoted = b == b'"';
        if quoted {
            i += 1;
        }
        let mut token = Token {
            bytes: Vec::new(),
            quoted,
            escaped: false,
        };
        loop {
            let Some(&c) = bytes.get(i) else {
                if quoted {
                    return error(entry.line, "a quoted string is not closed");
                }
                break;
            };
            if quoted && c == b'"' {
                i += 1;
                break;
            }
            if c == b'\n' && quoted {
                return error(line, "a quoted string is not closed on its line");
            }
            if !quoted && matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"') {
                break;
            }
            if c == b'\\' {
                token.escaped = true;
                let digits = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit));
                if let Some(d) = digits {
                    let value = d.iter().fold(0u32, |v, &x| v * 10 + u32::from(x - b'0'));
                    let Ok(value) = u8::try_from(value) else {
                        return error(line, "an escape \\DDD above \\255");
                    };
                    token.bytes.push(value);
                    i += 4;
                    continue;
                }
                match bytes.get(i + 1) {
                    Some(&next) if next != b'\n' && next != b'\r' => {
                        token.bytes.push(next);
                        i += 2;
                        continue;
                    }
                    _ => return error(line, "a backslash at the end of a line"),
                }
            }
            token.bytes.push(c);
            i += 1;
        }
        entry.tokens.push(token);
    }
    if let Some(start) = open {
        return error(start, "a parenthesis opened here is never closed");
    }
    out.extend(current);
    Ok(out)
}

/// Where names are relative to.
struct Origin {
    /// Absolute, lowercase labels.
    labels: Vec<String>,
}

/// Parses a name token: `@`, absolute (`x.`), or relative to `origin`.
/// Returns absolute lowercase labels. `what` says which name, for errors.
fn name_labels(
    token: &Token,
    origin: &Origin,
    line: usize,
    what: &str,
) -> Result<Vec<String>, StaticError> {
    let Some(text) = token.plain() else {
        return error(
            line,
            format!("{what}: escapes and quotes are not accepted in names"),
        );
    };
    if text == "@" {
        return Ok(origin.labels.clone());
    }
    if text == "." {
        return Ok(Vec::new());
    }
    let (body, absolute) = match text.strip_suffix('.') {
        Some(body) => (body, true),
        None => (text, false),
    };
    let mut labels = Vec::new();
    for label in body.split('.') {
        if label.is_empty() {
            return error(line, format!("{what} {text:?}: an empty label"));
        }
        if label == "*" {
            return error(
                line,
                format!("{what} {text:?}: wildcards are not supported (they would answer for names the fleet has not yet used)"),
            );
        }
        if label.len() > MAX_LABEL {
            return error(
                line,
                format!("{what} {text:?}: a label longer than 63 octets"),
            );
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return error(
                line,
                format!("{what} {text:?}: {bad:?} is not allowed in a name (letters, digits, '-' and '_')"),
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return error(
                line,
                format!("{what} {text:?}: a label may not start or end with '-'"),
            );
        }
        labels.push(label.to_ascii_lowercase());
    }
    if !absolute {
        labels.extend(origin.labels.iter().cloned());
    }
    let wire: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if wire > 255 {
        return error(line, format!("{what} {text:?}: longer than 255 octets"));
    }
    Ok(labels)
}

/// `labels` relative to `zone`, if at or below it.
fn relative_to<'a>(labels: &'a [String], zone: &[String]) -> Option<&'a [String]> {
    let cut = labels.len().checked_sub(zone.len())?;
    (labels[cut..] == *zone).then_some(&labels[..cut])
}

/// A hickory name from absolute labels.
fn to_name(labels: &[String], line: usize) -> Result<Name, StaticError> {
    let mut name = Name::from_labels(labels.iter().map(String::as_bytes))
        .or_else(|e| error(line, format!("not a valid name: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

/// A TTL: seconds, or a number with units (`1h30m`, `1d`, `2w`).
fn ttl_value(text: &str) -> Option<u32> {
    if text.is_empty() || !text.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().and_then(|v| u32::try_from(v).ok());
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if number.is_some() {
        return None; // digits after the last unit
    }
    u32::try_from(total).ok()
}

/// A TTL token, checked against RFC 2181's limit.
fn ttl_of(text: &str, line: usize) -> Result<u32, StaticError> {
    match ttl_value(text) {
        Some(ttl) if ttl <= MAX_TTL => Ok(ttl),
        Some(_) => error(line, format!("TTL {text} is above 2147483647 (RFC 2181)")),
        None => error(
            line,
            format!("{text:?} is not a TTL (seconds, or e.g. 1h30m)"),
        ),
    }
}

/// A 16-bit number field.
fn u16_field(tokens: &[Token], at: usize, what: &str, line: usize) -> Result<u16, StaticError> {
    let Some(text) = tokens.get(at).and_then(Token::plain) else {
        return error(line, format!("{what} is missing"));
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return error(
            line,
            format!("{what} {text:?} is not a number from 0 to 65535"),
        );
    }
    text.parse().or_else(|_| {
        error(
            line,
            format!("{what} {text:?} is not a number from 0 to 65535"),
        )
    })
}

/// A record as read, before grouping by name.
struct Read {
    /// Relative lowercase labels (empty: the apex).
    owner: Vec<String>,
    line: usize,
    record: StaticRecord,
}

/// Parses the static file `text` for `zone`; records without a TTL of their
/// own take `$TTL`, else `default_ttl`.
pub fn parse(text: &str, zone: &Name, default_ttl: u32) -> Result<StaticRecords, StaticError> {
    let zone_labels: Vec<String> = zone
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let mut origin = Origin {
        labels: zone_labels.clone(),
    };
    let mut ttl_default = default_ttl.min(MAX_TTL);
    let mut previous_owner: Option<Vec<String>> = None;
    let mut read: Vec<Read> = Vec::new();
    for entry in entries(text)? {
        let line = entry.line;
        let tokens = &entry.tokens;
        let Some(first) = tokens.first() else {
            continue;
        };
        if !entry.indented && first.plain().is_some_and(|t| t.starts_with('$')) {
            let directive = first.plain().unwrap_or_default().to_ascii_uppercase();
            match directive.as_str() {
                "$TTL" => {
                    let [_, value] = tokens.as_slice() else {
                        return error(line, "$TTL takes one value");
                    };
                    let Some(value) = value.plain() else {
                        return error(line, "$TTL takes a number");
                    };
                    ttl_default = ttl_of(value, line)?;
                }
                "$ORIGIN" => {
                    let [_, value] = tokens.as_slice() else {
                        return error(line, "$ORIGIN takes one name");
                    };
                    let labels = name_labels(value, &origin, line, "$ORIGIN")?;
                    if relative_to(&labels, &zone_labels).is_none() {
                        return error(
                            line,
                            format!("$ORIGIN must be the zone {zone} or a name below it"),
                        );
                    }
                    origin.labels = labels;
                }
                other => {
                    return error(
                        line,
                        format!("{other} is not supported (only $TTL and $ORIGIN)"),
                    )
                }
            }
            continue;
        }
        // The owner: this entry's first token, or the previous owner.
        let (owner, mut at) = if entry.indented {
            match &previous_owner {
                Some(owner) => (owner.clone(), 0),
                None => {
                    return error(
                        line,
                        "no owner name: the first record must start at the beginning of its line",
                    )
                }
            }
        } else {
            let labels = name_labels(first, &origin, line, "owner")?;
            let Some(relative) = relative_to(&labels, &zone_labels) else {
                return error(
                    line,
                    format!(
                        "{} is outside the zone {zone}",
                        first.plain().unwrap_or_default()
                    ),
                );
            };
            if let [only] = relative {
                if is_instance_id(only) {
                    return error(
                        line,
                        format!("{only:?} is shaped like an instance id; those names are the instances' own"),
                    );
                }
            }
            (relative.to_vec(), 1)
        };
        previous_owner = Some(owner.clone());
        // [TTL] [IN] or [IN] [TTL], then the type.
        let mut ttl: Option<u32> = None;
        let mut class = false;
        let rtype = loop {
            let Some(token) = tokens.get(at) else {
                return error(line, "no record type (A, AAAA, CNAME, TXT, SRV or MX)");
            };
            let Some(text) = token.plain() else {
                return error(line, "a quoted string where the record type belongs");
            };
            at += 1;
            if ttl.is_none() && text.as_bytes()[0].is_ascii_digit() {
                ttl = Some(ttl_of(text, line)?);
                continue;
            }
            let upper = text.to_ascii_uppercase();
            match upper.as_str() {
                "IN" if !class => {
                    class = true;
                    continue;
                }
                "CH" | "HS" | "CS" | "NONE" | "ANY" if !class => {
                    return error(line, format!("class {upper} is not supported: only IN"))
                }
                _ => break upper,
            }
        };
        let rdata = &tokens[at..];
        let data = record_data(&rtype, rdata, &origin, line)?;
        if owner.is_empty() && matches!(data, RData::CNAME(_)) {
            return error(
                line,
                "a CNAME at the zone apex is not allowed: the apex has the SOA and NS (RFC 1034 section 3.6.2)",
            );
        }
        read.push(Read {
            owner,
            line,
            record: StaticRecord {
                ttl: ttl.unwrap_or(ttl_default),
                data,
            },
        });
    }
    group(read)
}

/// The data of a record of type `rtype` from its tokens.
fn record_data(
    rtype: &str,
    tokens: &[Token],
    origin: &Origin,
    line: usize,
) -> Result<RData, StaticError> {
    let count = |n: usize| -> Result<(), StaticError> {
        if tokens.len() == n {
            Ok(())
        } else {
            error(
                line,
                format!("{rtype} takes {n} value(s), found {}", tokens.len()),
            )
        }
    };
    let target = |at: usize, what: &str| -> Result<Name, StaticError> {
        let labels = name_labels(&tokens[at], origin, line, what)?;
        to_name(&labels, line)
    };
    Ok(match rtype {
        "A" => {
            count(1)?;
            let text = tokens[0].plain().unwrap_or_default();
            let address: Ipv4Addr = text
                .parse()
                .or_else(|_| error(line, format!("{text:?} is not an IPv4 address")))?;
            RData::A(A(address))
        }
        "AAAA" => {
            count(1)?;
            let text = tokens[0].plain().unwrap_or_default();
            let address: Ipv6Addr = text
                .parse()
                .or_else(|_| error(line, format!("{text:?} is not an IPv6 address")))?;
            RData::AAAA(AAAA(address))
        }
        "CNAME" => {
            count(1)?;
            RData::CNAME(CNAME(target(0, "CNAME target")?))
        }
        "MX" => {
            count(2)?;
            let preference = u16_field(tokens, 0, "MX preference", line)?;
            RData::MX(MX::new(preference, target(1, "MX exchange")?))
        }
        "SRV" => {
            count(4)?;
            let priority = u16_field(tokens, 0, "SRV priority", line)?;
            let weight = u16_field(tokens, 1, "SRV weight", line)?;
            let port = u16_field(tokens, 2, "SRV port", line)?;
            RData::SRV(SRV::new(priority, weight, port, target(3, "SRV target")?))
        }
        "TXT" => {
            if tokens.is_empty() {
                return error(line, "TXT takes at least one string");
            }
            let mut total = 0usize;
            for t in tokens {
                if t.bytes.len() > 255 {
                    return error(
                        line,
                        "a TXT string longer than 255 octets: split it into several quoted strings",
                    );
                }
                total += 1 + t.bytes.len();
            }
            if total > 65_535 {
                return error(line, "TXT data longer than 65535 octets");
            }
            RData::TXT(TXT::from_bytes(
                tokens.iter().map(|t| t.bytes.as_slice()).collect(),
            ))
        }
        other => {
            return error(
                line,
                format!(
                "type {other} is not supported in static records (A, AAAA, CNAME, TXT, SRV, MX)"
            ),
            )
        }
    })
}

/// Groups records by owner, checks each name's set, and sorts the names.
fn group(mut read: Vec<Read>) -> Result<StaticRecords, StaticError> {
    // By owner, each owner's records in file order.
    read.sort_by(|a, b| a.owner.cmp(&b.owner).then(a.line.cmp(&b.line)));
    let mut nodes: Vec<StaticNode> = Vec::new();
    let mut apex = None;
    for run in read.chunk_by(|a, b| a.owner == b.owner) {
        let first = &run[0];
        if let Some(cname) = run
            .iter()
            .find(|r| matches!(r.record.data, RData::CNAME(_)))
        {
            if let Some(other) = run.iter().find(|r| r.line != cname.line) {
                let (a, b) = if other.line < cname.line {
                    (other.line, cname.line)
                } else {
                    (cname.line, other.line)
                };
                return error(
                    b,
                    format!(
                        "{} has a CNAME and other data (lines {a} and {b}); a CNAME must be the name's only record (RFC 1034 section 3.6.2)",
                        show(&first.owner)
                    ),
                );
            }
        }
        let mut records: Vec<StaticRecord> = Vec::with_capacity(run.len());
        let mut types: Vec<(RecordType, u32, usize)> = Vec::new();
        for r in run {
            let rtype = r.record.data.record_type();
            match types.iter().find(|t| t.0 == rtype) {
                Some(&(_, ttl, line)) if ttl != r.record.ttl => {
                    return error(
                        r.line,
                        format!(
                            "TTL {} differs from the TTL {ttl} of {}'s {rtype} records on line {line}; an RRset has one TTL (RFC 2181 section 5.2)",
                            r.record.ttl,
                            show(&first.owner)
                        ),
                    );
                }
                Some(_) => {}
                None => types.push((rtype, r.record.ttl, r.line)),
            }
            if !records.contains(&r.record) {
                records.push(r.record.clone());
            }
        }
        // Grouped by type, in the order types first appear.
        records.sort_by_key(|r| {
            let rtype = r.data.record_type();
            types.iter().position(|t| t.0 == rtype)
        });
        let mut ipv4: Vec<Ipv4Addr> = records
            .iter()
            .filter_map(|r| match r.data {
                RData::A(A(a)) => Some(a),
                _ => None,
            })
            .collect();
        let mut ipv6: Vec<Ipv6Addr> = records
            .iter()
            .filter_map(|r| match r.data {
                RData::AAAA(AAAA(a)) => Some(a),
                _ => None,
            })
            .collect();
        ipv4.sort_unstable();
        ipv4.dedup();
        ipv6.sort_unstable();
        ipv6.dedup();
        let mut labels = Vec::new();
        for label in &first.owner {
            labels.push(label.len() as u8);
            labels.extend_from_slice(label.as_bytes());
        }
        let node = StaticNode {
            labels: labels.into_boxed_slice(),
            line: first.line,
            ipv4,
            ipv6,
            records,
        };
        if first.owner.is_empty() {
            apex = Some(node);
        } else {
            nodes.push(node);
        }
    }
    nodes.sort_by(|a, b| crate::snapshot::text_order(&a.labels, &b.labels).then(Ordering::Equal));
    Ok(StaticRecords {
        nodes,
        apex,
        file: String::new(),
    })
}

/// Relative labels as text, `@` for the apex.
fn show(labels: &[String]) -> String {
    if labels.is_empty() {
        "@".to_string()
    } else {
        labels.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Name {
        Name::from_ascii("fleet.internal.").unwrap()
    }

    fn ok(text: &str) -> StaticRecords {
        parse(text, &zone(), 60).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(text: &str) -> StaticError {
        parse(text, &zone(), 60).expect_err("should be refused")
    }

    fn node<'a>(records: &'a StaticRecords, name: &str) -> &'a StaticNode {
        let mut wire = Vec::new();
        for l in name.split('.') {
            wire.push(l.len() as u8);
            wire.extend_from_slice(l.as_bytes());
        }
        records
            .nodes()
            .iter()
            .find(|n| *n.labels == *wire)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn a_fragment_with_every_type_parses() {
        let r = ok(r#"
$TTL 300
; the old database
db-old          IN A     10.1.2.3
                   AAAA  fd00::3
lb     600      CNAME  my-lb-123.us-east-1.elb.amazonaws.com.
www    CNAME    lb
_ldap._tcp  IN 1h SRV 0 5 389 dc1
dc1    A 10.1.2.4
mail   MX 10 mx1.example.com.
note   TXT "hello world" plain "a \"quoted\" \059 semicolon"
@      TXT "v=spf1 -all"
big    TXT ( "one"
             "two" )  ; across lines
"#);
        let db = node(&r, "db-old");
        assert_eq!(db.ipv4, ["10.1.2.3".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(db.ipv6, ["fd00::3".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(db.records[0].ttl, 300);
        assert_eq!(db.line, 4);
        let lb = node(&r, "lb");
        assert_eq!(lb.records[0].ttl, 600);
        assert_eq!(
            lb.cname().unwrap().to_ascii(),
            "my-lb-123.us-east-1.elb.amazonaws.com."
        );
        assert_eq!(
            node(&r, "www").cname().unwrap().to_ascii(),
            "lb.fleet.internal."
        );
        let srv = node(&r, "_ldap._tcp");
        assert_eq!(srv.records[0].ttl, 3600);
        match &srv.records[0].data {
            RData::SRV(s) => {
                assert_eq!((s.priority, s.weight, s.port), (0, 5, 389));
                assert_eq!(s.target.to_ascii(), "dc1.fleet.internal.");
            }
            other => panic!("{other:?}"),
        }
        match &node(&r, "note").records[0].data {
            RData::TXT(t) => {
                let strings: Vec<&[u8]> = t.txt_data.iter().map(|s| &**s).collect();
                assert_eq!(
                    strings,
                    [&b"hello world"[..], b"plain", b"a \"quoted\" ; semicolon"]
                );
            }
            other => panic!("{other:?}"),
        }
        match &node(&r, "big").records[0].data {
            RData::TXT(t) => assert_eq!(t.txt_data.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(r.apex().is_some());
        assert_eq!(r.record_count(), 10);
        // Sorted as the zone's entries are.
        let order: Vec<&[u8]> = r.nodes().iter().map(|n| &*n.labels).collect();
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| crate::snapshot::text_order(a, b));
        assert_eq!(order, sorted);
    }

    #[test]
    fn origin_names_and_absolute_owners_inside_the_zone_work() {
        let r = ok("$ORIGIN dc.fleet.internal.\nhost A 10.0.0.1\nother.fleet.internal. A 10.0.0.2\n$ORIGIN east\nx A 10.0.0.3\n");
        node(&r, "host.dc");
        node(&r, "other");
        node(&r, "x.east.dc");
    }

    #[test]
    fn duplicates_are_one_record_and_names_are_lowercased() {
        let r = ok("Web A 10.0.0.1\nweb A 10.0.0.1\nWEB A 10.0.0.2\n");
        assert_eq!(node(&r, "web").records.len(), 2);
    }

    #[test]
    fn bad_input_gets_the_line_and_the_reason() {
        let cases: &[(&str, usize, &str)] = &[
            ("@ CNAME x\n", 1, "CNAME at the zone apex"),
            (
                "a A 10.0.0.1\n\na CNAME b\n",
                3,
                "CNAME and other data (lines 1 and 3)",
            ),
            ("a CNAME b\na CNAME c\n", 2, "CNAME and other data"),
            ("x.example.com. A 10.0.0.1\n", 1, "outside the zone"),
            ("ok A 1.2.3.4\nbad A 1.2.3\n", 2, "not an IPv4 address"),
            ("x AAAA 10.0.0.1\n", 1, "not an IPv6 address"),
            ("x NS ns1\n", 1, "type NS is not supported"),
            ("x CH A 1.2.3.4\n", 1, "class CH"),
            ("x A\n", 1, "A takes 1 value(s), found 0"),
            ("x SRV 0 0 99999 t\n", 1, "SRV port \"99999\""),
            ("x MX ten mx\n", 1, "MX preference"),
            ("*.x A 1.2.3.4\n", 1, "wildcards are not supported"),
            ("a..b A 1.2.3.4\n", 1, "an empty label"),
            ("a/b A 1.2.3.4\n", 1, "'/' is not allowed"),
            ("-1 A 1.2.3.4\n", 1, "may not start or end with '-'"),
            (
                "x CNAME y-.example.com.\n",
                1,
                "may not start or end with '-'",
            ),
            (
                "i-0123456789abcdef0 A 1.2.3.4\n",
                1,
                "shaped like an instance id",
            ),
            ("  A 1.2.3.4\n", 1, "no owner name"),
            ("x TXT \"open\n", 1, "not closed"),
            ("x TXT ( \"a\"\n\n", 1, "never closed"),
            ("x A 1.2.3.4 )\n", 1, "closing parenthesis"),
            ("$INCLUDE other\n", 1, "$INCLUDE is not supported"),
            ("$ORIGIN example.com.\n", 1, "$ORIGIN must be the zone"),
            ("$TTL forever\n", 1, "not a TTL"),
            ("x 4294967295 A 1.2.3.4\n", 1, "above 2147483647"),
            (
                "x 60 A 1.2.3.4\nx 70 A 1.2.3.5\n",
                2,
                "an RRset has one TTL",
            ),
            ("x\n", 1, "no record type"),
            (
                "x \"A\" 1.2.3.4\n",
                1,
                "quoted string where the record type",
            ),
            ("x CNAME a\\.b\n", 1, "escapes"),
        ];
        for (text, line, message) in cases {
            let e = err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.message.contains(message), "{text:?}: {e}");
        }
        let long = format!("x TXT \"{}\"\n", "a".repeat(256));
        assert!(err(&long).message.contains("longer than 255"));
        let deep = format!("{} A 1.2.3.4\n", ["a"; 130].join("."));
        assert!(err(&deep).message.contains("longer than 255 octets"));
    }

    #[test]
    fn ttls_take_units() {
        assert_eq!(ttl_value("1h30m"), Some(5400));
        assert_eq!(ttl_value("2W"), Some(1_209_600));
        assert_eq!(ttl_value("90"), Some(90));
        assert_eq!(ttl_value("1h30"), None);
        assert_eq!(ttl_value("h"), None);
        assert_eq!(ttl_value("99999999999w"), None);
    }

    #[test]
    fn the_loader_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("static.zone");
        std::fs::write(&path, "ok A 10.0.0.1\nbroken A nope\n").unwrap();
        let e = load(&path, &zone(), 60).unwrap_err();
        assert!(e.contains("static.zone: line 2:"), "{e}");
        std::fs::write(&path, b"ok TXT \"\xff\"\n").unwrap();
        let e = load(&path, &zone(), 60).unwrap_err();
        assert!(e.contains("line 1: not UTF-8"), "{e}");
        let e = load(&dir.path().join("missing"), &zone(), 60).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::write(&path, "ok A 10.0.0.1\n").unwrap();
        assert_eq!(
            load(&path, &zone(), 60).unwrap().file(),
            path.display().to_string()
        );
    }
}

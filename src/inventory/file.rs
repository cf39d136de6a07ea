//! The file source: the JSON that `aws ec2 describe-instances` prints.
//!
//! This is how fleetdns runs without AWS (the demo, tests, hosts that get
//! their inventory from elsewhere). Only the fields fleetdns uses are read;
//! everything else in the document is ignored, as the CLI adds fields over
//! time. A document that is not JSON or not shaped like the CLI's output is
//! an error naming the file; a single bad address inside an otherwise good
//! document is skipped with a warning, so one odd instance cannot hide the
//! rest of the fleet.
//!
//! The file is read in 64 KiB chunks and never held whole: a scanner walks
//! the document's outer structure (`Reservations`, each reservation's
//! `Instances`), skipping what it does not need, and hands each instance's
//! bytes to serde, so memory holds one instance at a time whatever the
//! size of the fleet (a document of 100,000 instances is 14 MB).

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::packed::{Packed, Spool};
use super::{
    collect_addresses, region_of_zone, Instance, InterfaceAddresses, Source, SourceError, UnitFetch,
};

/// Reads instances from a describe-instances JSON file, every time it fetches.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The file to read.
    path: PathBuf,
}

impl FileSource {
    /// A source that reads `path` on every fetch.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and parses the file once, packing instances as they come.
    pub fn read(&self, spool: &Spool) -> Result<Packed, SourceError> {
        let path = self.path.display().to_string();
        let read_error = |source| SourceError::Read {
            path: path.clone(),
            source,
        };
        let file = File::open(&self.path).map_err(read_error)?;
        let mut packer = spool.packer();
        scan_describe_instances(file, |instance| packer.push(&instance)).map_err(|e| match e {
            ScanError::Io(source) => read_error(source),
            ScanError::Document(reason) => SourceError::Parse {
                path: path.clone(),
                reason,
            },
        })?;
        packer.finish().map_err(SourceError::Spool)
    }
}

#[async_trait::async_trait]
impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn units(&self) -> Vec<String> {
        vec![self.describe()]
    }

    async fn fetch(&self, spool: &Spool) -> Vec<UnitFetch> {
        // Parsing a large file takes a while: on a background thread, so
        // that DNS answers do not wait for it.
        let (this, spool) = (self.clone(), spool.clone());
        let result = match crate::background::run(move || this.read(&spool)).await {
            Ok(result) => result,
            Err(join) => Err(SourceError::Parse {
                path: self.path.display().to_string(),
                reason: format!("reader task failed: {join}"),
            }),
        };
        vec![UnitFetch {
            unit: self.describe(),
            result,
        }]
    }
}

/// Why a document could not be read.
#[derive(Debug)]
enum ScanError {
    /// Reading failed.
    Io(io::Error),
    /// The bytes are not a describe-instances document.
    Document(String),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

/// How much is read at a time.
const CHUNK: usize = 64 << 10;
/// The deepest nesting of arrays and objects accepted in skipped values
/// (serde_json's own limit), so a hostile document cannot run the scanner
/// out of stack or memory.
const MAX_DEPTH: usize = 128;

/// Reads a JSON document from `src` a chunk at a time.
///
/// Bytes from `mark` on are kept while a value is captured; everything
/// before the reading position is otherwise dropped as the next chunk
/// comes in.
struct Scanner<R> {
    /// Where the bytes come from.
    src: R,
    /// Bytes read and not yet dropped, up to `end`; the rest is room for
    /// the next read (kept zeroed once, not cleared on every read).
    buf: Vec<u8>,
    /// How much of `buf` holds bytes read.
    end: usize,
    /// The next byte to look at, in `buf`.
    pos: usize,
    /// Where a captured value starts, in `buf`.
    mark: Option<usize>,
    /// Bytes dropped from the front of `buf` so far (for error offsets).
    dropped: u64,
    /// Whether `src` has ended.
    eof: bool,
}

impl<R: Read> Scanner<R> {
    fn new(src: R) -> Self {
        Scanner {
            src,
            buf: vec![0; CHUNK],
            end: 0,
            pos: 0,
            mark: None,
            dropped: 0,
            eof: false,
        }
    }

    /// The offset of the reading position in the document.
    fn offset(&self) -> u64 {
        self.dropped + self.pos as u64
    }

    fn error<T>(&self, what: &str) -> Result<T, ScanError> {
        Err(ScanError::Document(format!(
            "{what} at byte {}",
            self.offset()
        )))
    }

    /// Reads another chunk; `false` at the end of the input.
    fn fill(&mut self) -> Result<bool, ScanError> {
        if self.eof {
            return Ok(false);
        }
        let keep = self.mark.unwrap_or(self.pos);
        if keep > 0 {
            self.buf.copy_within(keep..self.end, 0);
            self.end -= keep;
            self.dropped += keep as u64;
            self.pos -= keep;
            self.mark = self.mark.map(|m| m - keep);
        }
        if self.end == self.buf.len() {
            // A captured value longer than the buffer: make room.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        crate::background::offer();
        let n = loop {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.end += n;
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next byte without taking it, `None` at the end.
    fn peek(&mut self) -> Result<Option<u8>, ScanError> {
        while self.pos == self.end {
            if !self.fill()? {
                return Ok(None);
            }
        }
        Ok(Some(self.buf[self.pos]))
    }

    /// The next byte that is not whitespace, without taking it.
    fn peek_token(&mut self) -> Result<Option<u8>, ScanError> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\n' | b'\r' | b'\t') => self.pos += 1,
                other => return Ok(other),
            }
        }
    }

    /// Takes the next token, which must be `byte`.
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), ScanError> {
        match self.peek_token()? {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => self.error(&format!("expected {what}")),
            None => self.error(&format!("the document ends where {what} was expected")),
        }
    }

    /// Takes a `,` or the closing `close` of a container; `true` if more
    /// items follow.
    fn more(&mut self, close: u8) -> Result<bool, ScanError> {
        match self.peek_token()? {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                Ok(false)
            }
            Some(_) => self.error(&format!("expected `,` or `{}`", char::from(close))),
            None => self.error("the document ends inside a list"),
        }
    }

    /// Takes an object key and its `:`; escapes in keys are resolved.
    fn key(&mut self) -> Result<String, ScanError> {
        if self.peek_token()? != Some(b'"') {
            return self.error("expected a key");
        }
        self.mark = Some(self.pos);
        self.skip_string()?;
        let start = self.mark.take().unwrap_or(self.pos);
        let raw = &self.buf[start..self.pos];
        let key = serde_json::from_slice::<String>(raw)
            .map_err(|e| ScanError::Document(format!("bad key at byte {}: {e}", self.offset())))?;
        self.expect(b':', "`:`")?;
        Ok(key)
    }

    /// Takes a string, its quotes included.
    fn skip_string(&mut self) -> Result<(), ScanError> {
        self.pos += 1; // the opening quote, already seen
        loop {
            if self.pos == self.end && !self.fill()? {
                return self.error("the document ends inside a string");
            }
            // The quick part: to the next quote or backslash in this chunk.
            let rest = &self.buf[self.pos..self.end];
            match rest.iter().position(|&b| b == b'"' || b == b'\\') {
                None => self.pos = self.end,
                Some(i) if rest[i] == b'"' => {
                    self.pos += i + 1;
                    return Ok(());
                }
                Some(i) => {
                    // A backslash escapes the next byte, whatever chunk it is in.
                    self.pos += i + 1;
                    if self.peek()?.is_none() {
                        return self.error("the document ends inside a string");
                    }
                    self.pos += 1;
                }
            }
        }
    }

    /// Takes one value of any kind. Strings and nesting are followed
    /// exactly; the rest of a skipped value is checked only loosely (its
    /// bytes must be ones JSON uses), as fleetdns does not read it.
    fn skip_value(&mut self) -> Result<(), ScanError> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            let Some(byte) = self.peek_token()? else {
                return self.error("the document ends inside a value");
            };
            match byte {
                b'"' => self.skip_string()?,
                b'{' | b'[' => {
                    if open.len() == MAX_DEPTH {
                        return self.error("nested too deeply");
                    }
                    open.push(if byte == b'{' { b'}' } else { b']' });
                    self.pos += 1;
                }
                b'}' | b']' => {
                    if open.pop() != Some(byte) {
                        return self.error(&format!("unexpected `{}`", char::from(byte)));
                    }
                    self.pos += 1;
                }
                b',' | b':' if !open.is_empty() => self.pos += 1,
                b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => {
                    // A number or a literal: up to the next delimiter.
                    while let Some(b) = self.peek()? {
                        if !matches!(b, b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
                        {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                other => {
                    return self.error(&format!("unexpected byte 0x{other:02x}"));
                }
            }
            if open.is_empty() {
                return Ok(());
            }
        }
    }

    /// Takes one instance: serde reads it straight from the buffer, and
    /// where it runs past the bytes read, more are read (at least as many
    /// again, so a value over many reads is parsed a few times, not once a
    /// read) and it is parsed again. One pass over the bytes, where
    /// finding the value's end first and parsing it then took two (a
    /// quarter of a reload at 100,000 instances, issue 18).
    fn instance(&mut self) -> Result<Instance, ScanError> {
        if self.peek_token()?.is_none() {
            return self.error("the document ends inside a list");
        }
        let at = self.offset();
        self.mark = Some(self.pos);
        let mut last_error = None;
        loop {
            let start = self.mark.unwrap_or(self.pos);
            let mut stream = serde_json::Deserializer::from_slice(&self.buf[start..self.end])
                .into_iter::<RawInstance<'_>>();
            let error = match stream.next() {
                Some(Ok(raw)) => {
                    let used = stream.byte_offset();
                    let instance = into_instance(raw);
                    self.pos = start + used;
                    self.mark = None;
                    return Ok(instance);
                }
                Some(Err(e)) => e,
                None => return self.error("the document ends inside a list"),
            };
            // An error where the bytes read end may be the cut (serde says
            // "invalid number" for `1.` as readily as for `1.x`): it counts
            // only when more bytes do not move it.
            let place = (error.line(), error.column());
            if self.eof || last_error == Some(place) {
                self.mark = None;
                return Err(ScanError::Document(format!(
                    "the instance at byte {at}: {error}"
                )));
            }
            last_error = Some(place);
            let want = 2 * (self.end - start) + 64;
            self.pos = self.end;
            while !self.eof && self.end - self.mark.unwrap_or(0) < want {
                self.fill()?;
                self.pos = self.end;
            }
        }
    }

    /// Takes the members of an object whose `{` is next, calling `member`
    /// with each key; `member` must take the value.
    fn object(
        &mut self,
        what: &str,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        if self.peek_token()? != Some(b'{') {
            return self.error(&format!("invalid type: expected {what}"));
        }
        self.pos += 1;
        if self.peek_token()? == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            member(self, &key)?;
            if !self.more(b'}')? {
                return Ok(());
            }
        }
    }

    /// Takes the items of an array whose `[` is next, calling `item` for
    /// each; `item` must take the value.
    fn array(
        &mut self,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        if self.peek_token()? != Some(b'[') {
            return self.error(&format!("invalid type: expected {what}"));
        }
        self.pos += 1;
        if self.peek_token()? == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            if !self.more(b']')? {
                return Ok(());
            }
        }
    }
}

/// Reads a describe-instances document from `src`, calling `found` with
/// each instance in document order.
fn scan_describe_instances(
    src: impl Read,
    mut found: impl FnMut(Instance),
) -> Result<(), ScanError> {
    let mut scan = Scanner::new(src);
    let mut reservations = false;
    if scan.peek_token()?.is_none() {
        return Err(ScanError::Document(
            "the file is empty; expected the JSON that `aws ec2 describe-instances` prints".into(),
        ));
    }
    scan.object("a describe-instances object", |scan, key| {
        if key != "Reservations" {
            return scan.skip_value();
        }
        reservations = true;
        scan.array("an array of reservations", |scan| {
            scan.object("a reservation object", |scan, key| {
                if key != "Instances" {
                    return scan.skip_value();
                }
                scan.array("an array of instances", |scan| {
                    crate::background::checkpoint();
                    found(scan.instance()?);
                    Ok(())
                })
            })
        })
    })?;
    if scan.peek_token()?.is_some() {
        return scan.error("trailing characters");
    }
    if !reservations {
        return Err(ScanError::Document("missing field `Reservations`".into()));
    }
    Ok(())
}

/// The fields of an instance that fleetdns reads. Strings borrow from the
/// document where they have no escapes.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInstance<'a> {
    #[serde(borrow)]
    instance_id: Cow<'a, str>,
    #[serde(borrow)]
    state: RawState<'a>,
    #[serde(borrow)]
    private_ip_address: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    network_interfaces: Vec<RawInterface<'a>>,
    #[serde(default, borrow)]
    tags: Vec<RawTag<'a>>,
    #[serde(default, borrow)]
    security_groups: Vec<RawGroup<'a>>,
    #[serde(borrow)]
    placement: Option<RawPlacement<'a>>,
    #[serde(borrow)]
    instance_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    launch_time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    vpc_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawState<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInterface<'a> {
    #[serde(default, borrow)]
    private_ip_addresses: Vec<RawPrivateIp<'a>>,
    #[serde(default, borrow)]
    ipv6_addresses: Vec<RawIpv6<'a>>,
    attachment: Option<RawAttachment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawAttachment {
    device_index: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPrivateIp<'a> {
    #[serde(borrow)]
    private_ip_address: Option<Cow<'a, str>>,
    #[serde(default)]
    primary: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawIpv6<'a> {
    #[serde(borrow)]
    ipv6_address: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTag<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawGroup<'a> {
    #[serde(borrow)]
    group_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPlacement<'a> {
    #[serde(borrow)]
    availability_zone: Option<Cow<'a, str>>,
}

/// Parses a describe-instances document into instances, in document order.
///
/// Returns the reason as text when the document is not usable at all.
pub fn parse_describe_instances(text: &str) -> Result<Vec<Instance>, String> {
    let mut all = Vec::new();
    scan_describe_instances(text.as_bytes(), |i| all.push(i)).map_err(|e| match e {
        ScanError::Io(e) => e.to_string(),
        ScanError::Document(reason) => reason,
    })?;
    Ok(all)
}

/// Turns the CLI's shape into an [`Instance`], skipping unparsable addresses.
fn into_instance(raw: RawInstance<'_>) -> Instance {
    let interfaces = raw
        .network_interfaces
        .iter()
        .map(|i| InterfaceAddresses {
            device_index: i
                .attachment
                .as_ref()
                .and_then(|a| a.device_index)
                .map(i64::from),
            private: i
                .private_ip_addresses
                .iter()
                .filter_map(|a| Some((a.private_ip_address.as_deref()?, a.primary)))
                .collect(),
            ipv6: i
                .ipv6_addresses
                .iter()
                .filter_map(|a| a.ipv6_address.as_deref())
                .collect(),
        })
        .collect();
    let (private_ipv4, ipv6) = collect_addresses(
        &raw.instance_id,
        raw.private_ip_address.as_deref(),
        interfaces,
    );
    let availability_zone = raw
        .placement
        .and_then(|p| p.availability_zone)
        .map(Cow::into_owned);
    let region = availability_zone.as_deref().and_then(region_of_zone);
    Instance {
        id: raw.instance_id.into_owned(),
        state: raw.state.name.into_owned(),
        private_ipv4,
        ipv6,
        tags: raw.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        security_groups: raw
            .security_groups
            .into_iter()
            .filter_map(|g| g.group_name.map(Cow::into_owned))
            .collect(),
        launch_time: raw.launch_time.map(Cow::into_owned),
        region,
        vpc_id: raw.vpc_id.map(Cow::into_owned),
        availability_zone,
        instance_type: raw.instance_type.map(Cow::into_owned),
        // The scanner reads a reservation's instances, not its OwnerId.
        account: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const ONE: &str = r#"{"Reservations":[{"Instances":[{
        "InstanceId":"i-0123456789abcdef0","State":{"Code":16,"Name":"running"},
        "PrivateIpAddress":"10.0.0.5","InstanceType":"t3.micro",
        "Placement":{"AvailabilityZone":"eu-west-1b"},
        "Tags":[{"Key":"Name","Value":"web-1"}],
        "SecurityGroups":[{"GroupName":"web","GroupId":"sg-1"}],
        "NetworkInterfaces":[
          {"Attachment":{"DeviceIndex":1},"PrivateIpAddresses":[{"Primary":true,"PrivateIpAddress":"10.0.1.9"}]},
          {"Attachment":{"DeviceIndex":0},"PrivateIpAddresses":[
             {"Primary":false,"PrivateIpAddress":"10.0.0.6"},
             {"Primary":true,"PrivateIpAddress":"10.0.0.5"}],
           "Ipv6Addresses":[{"Ipv6Address":"2001:db8::5"},{"Ipv6Address":"not-an-ip"}]}
        ],
        "Unknown":{"Fields":"ignored"}}]}]}"#;

    #[test]
    fn reads_every_address_primary_first() {
        let instances = parse_describe_instances(ONE).unwrap();
        assert_eq!(instances.len(), 1);
        let i = &instances[0];
        assert_eq!(i.id, "i-0123456789abcdef0");
        assert!(i.is_running());
        let v4: Vec<String> = i.private_ipv4.iter().map(|a| a.to_string()).collect();
        assert_eq!(v4, ["10.0.0.5", "10.0.0.6", "10.0.1.9"]);
        assert_eq!(i.ipv6, ["2001:db8::5".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(i.tags.get("Name"), Some("web-1"));
        assert_eq!(i.security_groups, ["web"]);
        assert_eq!(i.region.as_deref(), Some("eu-west-1"));
        assert_eq!(i.availability_zone.as_deref(), Some("eu-west-1b"));
    }

    #[test]
    fn malformed_document_is_an_error_with_the_reason() {
        let err = parse_describe_instances("{\"Reservations\": 3}").unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        assert!(parse_describe_instances("not json").is_err());
        for empty in ["", " \n\t"] {
            let err = parse_describe_instances(empty).unwrap_err();
            assert!(
                err.contains("the file is empty; expected the JSON"),
                "{err}"
            );
        }
        assert!(parse_describe_instances("{}")
            .unwrap_err()
            .contains("Reservations"));
    }

    /// A reader that hands out at most `step` bytes per call, so that
    /// every token lands on a chunk border somewhere.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn scan_all(bytes: &[u8], step: usize) -> Result<Vec<Instance>, String> {
        let mut all = Vec::new();
        scan_describe_instances(Trickle { bytes, step }, |i| all.push(i))
            .map(|()| all)
            .map_err(|e| match e {
                ScanError::Io(e) => e.to_string(),
                ScanError::Document(reason) => reason,
            })
    }

    /// A document of `n` instances in several reservations, with escapes,
    /// unicode and fields fleetdns skips of every JSON kind.
    fn big_document(n: usize) -> (String, Vec<(String, String)>) {
        let mut expected = Vec::new();
        let mut reservations = Vec::new();
        for r in 0..n.div_ceil(7) {
            let mut instances = Vec::new();
            for k in r * 7..((r + 1) * 7).min(n) {
                let id = format!("i-{k:017x}");
                let name = format!("web-{k} \"quoted\" back\\slash ü {}", "x".repeat(k % 40));
                instances.push(serde_json::json!({
                    "InstanceId": id,
                    "State": {"Code": 16, "Name": "running"},
                    "PrivateIpAddress": format!("10.0.{}.{}", k / 250, k % 250 + 1),
                    "Tags": [{"Key": "Name", "Value": name}],
                    "Skipped": {"a": [1, -2.5e3, true, false, null, {"b": "}]\\"}], "c": []},
                }));
                expected.push((id, name));
            }
            reservations.push(serde_json::json!({
                "Groups": [], "OwnerId": "123", "Instances": instances, "Late": [[["x"]]],
            }));
        }
        let doc = serde_json::json!({"Reservations": reservations, "NextToken": null});
        (serde_json::to_string_pretty(&doc).unwrap(), expected)
    }

    #[test]
    fn a_document_read_in_pieces_of_any_size_gives_every_instance() {
        let (doc, expected) = big_document(1500);
        assert!(doc.len() > 3 * CHUNK, "{}", doc.len());
        for step in [1, 7, 4093, CHUNK, usize::MAX] {
            let all = scan_all(doc.as_bytes(), step).unwrap();
            let got: Vec<(String, String)> = all
                .iter()
                .map(|i| (i.id.clone(), i.tags.get("Name").unwrap().to_string()))
                .collect();
            assert_eq!(got, expected, "step {step}");
        }
    }

    #[test]
    fn the_file_source_packs_what_the_document_holds() {
        let (doc, expected) = big_document(300);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        std::fs::write(&path, &doc).unwrap();
        let packed = FileSource::new(&path)
            .read(&Spool::in_dir(dir.path().join("spool")))
            .unwrap();
        assert!(!packed.is_in_memory());
        let ids: Vec<String> = packed
            .instances()
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        let want: Vec<String> = expected.into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn every_truncation_of_a_document_is_an_error() {
        let (doc, _) = big_document(3);
        let bytes = doc.as_bytes();
        for cut in 0..bytes.len() {
            // The end may cut only whitespace after the last brace.
            if bytes[cut..].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            assert!(scan_all(&bytes[..cut], 5).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_nesting_and_stray_bytes_are_errors_not_crashes() {
        let deep = format!("{{\"Reservations\":[{{\"X\":{}", "[".repeat(1_000_000));
        let error = scan_all(deep.as_bytes(), CHUNK).unwrap_err();
        assert!(error.contains("nested too deeply"), "{error}");
        for bad in [
            "{\"Reservations\":[{\"Instances\":[]}]} x",
            "{\"Reservations\":[{\"Instances\":[]}],}",
            "{\"Reservations\":[{\"Instances\":[]}] \"A\":1}",
            "{\"Reservations\":[{\"X\":[1}]}",
            "{\"Reservations\":[{\"X\":\u{1}}]}",
            "{\"Reservations\":[{\"Instances\":[{\"InstanceId\":5}]}]}",
            "[]",
        ] {
            assert!(scan_all(bad.as_bytes(), 3).is_err(), "{bad}");
        }
        // escaped keys are still keys
        let escaped = "{\"\\u0052eservations\":[{\"Instances\":[{\"InstanceId\":\"i-1\",\"State\":{\"Name\":\"running\"}}]}]}";
        assert_eq!(scan_all(escaped.as_bytes(), 2).unwrap().len(), 1);
    }

    #[test]
    fn terminated_instance_without_addresses_parses() {
        let text = r#"{"Reservations":[{"Instances":[{"InstanceId":"i-1","State":{"Name":"terminated"},
            "NetworkInterfaces":[],"SecurityGroups":[]}]}]}"#;
        let i = &parse_describe_instances(text).unwrap()[0];
        assert!(!i.is_running());
        assert!(i.private_ipv4.is_empty());
    }

    #[test]
    fn region_comes_from_the_zone() {
        assert_eq!(region_of_zone("us-east-1a").as_deref(), Some("us-east-1"));
        assert_eq!(region_of_zone("us-east-1").as_deref(), None);
        assert_eq!(region_of_zone("a").as_deref(), None);
    }
}

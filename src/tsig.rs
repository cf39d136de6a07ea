//! TSIG (RFC 8945): verifying signed requests and signing replies, at the
//! wire level.
//!
//! hickory-proto 0.26 parses the TSIG record but signs and verifies only
//! with a DNSSEC crypto feature that would rebuild the AWS SDK, and it
//! never signs the second and later messages of a transfer. The MACs here
//! use `hmac` and `sha2`, which the SDK already compiles for its request
//! signing.
//!
//! A signed message ends with exactly one TSIG record, the last of the
//! additional section ([`find`] refuses any other place). What is signed:
//!
//! - a request: the message without its TSIG (ARCOUNT one less, the ID the
//!   TSIG's original ID), then the TSIG variables (key name, class ANY, TTL
//!   0, algorithm, time, fudge, error, other data);
//! - a reply: the request's MAC (with its length), the reply, the TSIG
//!   variables;
//! - each later message of a multi-message reply (section 5.3.1): the
//!   previous message's MAC, the message, and only the time and fudge.
//!
//! Secrets are held in [`Secret`], whose `Debug` prints nothing of them:
//! they never reach logs, metrics or `list`.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};
use hmac::{Hmac, KeyInit, Mac};

/// The TSIG record type.
pub const TSIG_TYPE: u16 = 250;
/// Class ANY, the class of every TSIG record.
const CLASS_ANY: u16 = 255;
/// The fudge fleetdns puts in what it signs: the clock skew it allows
/// (RFC 8945 recommends 300 s; Knot rejects 0).
pub const FUDGE: u16 = 300;

/// TSIG error codes (RFC 8945 section 3 and the IANA registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigError {
    /// The MAC does not verify.
    BadSig = 16,
    /// The key is not known (or not with that algorithm).
    BadKey = 17,
    /// The time signed is outside the fudge.
    BadTime = 18,
    /// The MAC is truncated (fleetdns accepts only full-length MACs).
    BadTrunc = 22,
}

impl fmt::Display for TsigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TsigError::BadSig => "BADSIG",
            TsigError::BadKey => "BADKEY",
            TsigError::BadTime => "BADTIME",
            TsigError::BadTrunc => "BADTRUNC",
        })
    }
}

/// The HMAC algorithms fleetdns signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// hmac-sha256 (what NSD, Knot and BIND use by default).
    HmacSha256,
    /// hmac-sha384.
    HmacSha384,
    /// hmac-sha512.
    HmacSha512,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 3] = [
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ];

    /// The name as config files and the RFC spell it (`hmac-sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// The algorithm named `text` (case-insensitive, final dot optional).
    pub fn from_name(text: &str) -> Option<Algorithm> {
        let text = text.strip_suffix('.').unwrap_or(text);
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(text))
    }

    /// The length of a full MAC, in bytes.
    pub fn mac_len(self) -> usize {
        match self {
            Algorithm::HmacSha256 => 32,
            Algorithm::HmacSha384 => 48,
            Algorithm::HmacSha512 => 64,
        }
    }

    /// The algorithm name in canonical wire form.
    fn wire(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13);
        for label in self.as_str().split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }
}

/// A TSIG secret. Its `Debug` and `Display` never show the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// A secret from base64 (as NSD, Knot, BIND and `tsig-keygen` write
    /// it), spaces and line breaks ignored.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| format!("not base64 ({e})"))?;
        if bytes.is_empty() {
            return Err("empty".into());
        }
        Ok(Secret(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes, not shown>)", self.0.len())
    }
}

/// A named TSIG key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key's name, lowercase, fully qualified (`xfr-key.`).
    pub name: Name,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its secret.
    pub secret: Secret,
}

impl Key {
    /// A key named `name` (`xfr-key` or `xfr-key.`).
    pub fn new(name: &str, algorithm: Algorithm, secret: Secret) -> Result<Key, String> {
        let mut name = Name::from_ascii(name)
            .map_err(|e| format!("not a domain name: {e}"))?
            .to_lowercase();
        name.set_fqdn(true);
        if name.is_root() {
            return Err("empty".into());
        }
        Ok(Key {
            name,
            algorithm,
            secret,
        })
    }

    fn mac(&self) -> Hasher {
        Hasher::new(self.algorithm, &self.secret.0)
    }
}

/// The keys a server knows, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<Arc<Key>>,
}

impl KeyRing {
    /// A ring of `keys`.
    pub fn new(keys: Vec<Arc<Key>>) -> Self {
        KeyRing { keys }
    }

    /// The key named `name` (case-insensitively), if any.
    pub fn get(&self, name: &Name) -> Option<&Arc<Key>> {
        self.keys
            .iter()
            .find(|k| k.name.eq_case(&name.to_lowercase()))
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A running HMAC of one of the supported algorithms.
enum Hasher {
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha512(Hmac<sha2::Sha512>),
}

impl Hasher {
    fn new(algorithm: Algorithm, secret: &[u8]) -> Hasher {
        // HMAC takes keys of any length: these cannot fail.
        match algorithm {
            Algorithm::HmacSha256 => Hasher::Sha256(
                Hmac::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length")),
            ),
            Algorithm::HmacSha384 => Hasher::Sha384(
                Hmac::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length")),
            ),
            Algorithm::HmacSha512 => Hasher::Sha512(
                Hmac::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length")),
            ),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(m) => m.update(data),
            Hasher::Sha384(m) => m.update(data),
            Hasher::Sha512(m) => m.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(m) => m.finalize().into_bytes().to_vec(),
            Hasher::Sha384(m) => m.finalize().into_bytes().to_vec(),
            Hasher::Sha512(m) => m.finalize().into_bytes().to_vec(),
        }
    }

    /// Whether the MAC equals `mac`, compared in constant time.
    fn verify(self, mac: &[u8]) -> bool {
        match self {
            Hasher::Sha256(m) => m.verify_slice(mac).is_ok(),
            Hasher::Sha384(m) => m.verify_slice(mac).is_ok(),
            Hasher::Sha512(m) => m.verify_slice(mac).is_ok(),
        }
    }
}

/// A name in canonical wire form: lowercase, uncompressed.
fn canonical(name: &Name) -> Vec<u8> {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name.to_bytes().unwrap_or_else(|_| vec![0])
}

/// The TSIG record of a message, as found by [`find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tsig {
    /// Where the record starts in the message.
    pub offset: usize,
    /// The key name.
    pub key_name: Name,
    /// The algorithm name as sent.
    pub algorithm: Name,
    /// Seconds since the epoch (48 bits).
    pub time_signed: u64,
    /// Allowed clock skew, seconds.
    pub fudge: u16,
    /// The MAC.
    pub mac: Vec<u8>,
    /// The message's ID when it was signed.
    pub original_id: u16,
    /// The TSIG error field.
    pub error: u16,
    /// Other data (the server time of a BADTIME reply).
    pub other: Vec<u8>,
}

/// Why a message's TSIG cannot even be read: the reply is FORMERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

fn short<T>(r: Result<T, hickory_proto::serialize::binary::DecodeError>) -> Result<T, Malformed> {
    r.map_err(|_| Malformed("the message is cut short"))
}

/// Finds the TSIG record of `message`: `None` when it has none, an error
/// when one is anywhere but last in the additional section, when there are
/// several, or when it is malformed.
pub fn find(message: &[u8]) -> Result<Option<Tsig>, Malformed> {
    if message.len() < 12 {
        return Err(Malformed("shorter than a header"));
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([message[at], message[at + 1]]));
    let (questions, records) = (count(4), count(6) + count(8) + count(10));
    let mut decoder = BinDecoder::new(message);
    short(decoder.read_slice(12))?;
    for _ in 0..questions {
        Name::read(&mut decoder).map_err(|_| Malformed("a question name is malformed"))?;
        short(decoder.read_slice(4))?;
    }
    let mut found = None;
    for i in 0..records {
        let offset = decoder.index();
        let owner =
            Name::read(&mut decoder).map_err(|_| Malformed("a record's name is malformed"))?;
        let rtype = short(decoder.read_u16())?.unverified();
        let class = short(decoder.read_u16())?.unverified();
        let ttl = short(decoder.read_u32())?.unverified();
        let len = short(decoder.read_u16())?.unverified();
        let rdata_start = decoder.index();
        short(decoder.read_slice(usize::from(len)))?;
        if rtype != TSIG_TYPE {
            continue;
        }
        if i + 1 != records || count(10) == 0 {
            return Err(Malformed(
                "a TSIG record that is not the last additional record",
            ));
        }
        if class != CLASS_ANY || ttl != 0 {
            return Err(Malformed(
                "a TSIG record whose class is not ANY or TTL not 0",
            ));
        }
        let rdata = &message[..rdata_start + usize::from(len)];
        found = Some(read_rdata(rdata, rdata_start, offset, owner)?);
    }
    // Bytes after the records matter only behind a TSIG, which must end
    // the message; an unsigned message is left to the decoder's judgement.
    if found.is_some() && !decoder.is_empty() {
        return Err(Malformed("bytes follow the TSIG record"));
    }
    Ok(found)
}

/// Reads a TSIG's RDATA, which ends where `message` ends.
fn read_rdata(message: &[u8], start: usize, offset: usize, owner: Name) -> Result<Tsig, Malformed> {
    let mut decoder = BinDecoder::new(message);
    short(decoder.read_slice(start))?;
    let algorithm =
        Name::read(&mut decoder).map_err(|_| Malformed("the TSIG algorithm name is malformed"))?;
    let time = short(decoder.read_slice(6))?.unverified();
    let time_signed = time.iter().fold(0u64, |t, &b| (t << 8) | u64::from(b));
    let fudge = short(decoder.read_u16())?.unverified();
    let mac_len = short(decoder.read_u16())?.unverified();
    let mac = short(decoder.read_slice(usize::from(mac_len)))?
        .unverified()
        .to_vec();
    let original_id = short(decoder.read_u16())?.unverified();
    let error = short(decoder.read_u16())?.unverified();
    let other_len = short(decoder.read_u16())?.unverified();
    let other = short(decoder.read_slice(usize::from(other_len)))?
        .unverified()
        .to_vec();
    if !decoder.is_empty() {
        return Err(Malformed(
            "the TSIG record's length does not match its data",
        ));
    }
    Ok(Tsig {
        offset,
        key_name: owner,
        algorithm,
        time_signed,
        fudge,
        mac,
        original_id,
        error,
        other,
    })
}

/// The current time as TSIG counts it.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A request whose signature verified: what the reply needs.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The key it was signed with.
    pub key: Arc<Key>,
    /// Its MAC, which the reply's MAC covers.
    pub mac: Vec<u8>,
}

/// A request whose TSIG did not verify (RFC 8945 section 5.2).
#[derive(Debug, Clone)]
pub struct Failed {
    /// BADKEY, BADSIG, BADTIME or BADTRUNC.
    pub error: TsigError,
    /// The key name and algorithm as the request gave them.
    pub key_name: Name,
    /// The algorithm name as the request gave it.
    pub algorithm: Name,
    /// For BADTIME and BADTRUNC, whose replies are signed: the key and
    /// the request's MAC.
    pub signed: Option<Signed>,
}

/// What verifying a request found.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// No TSIG: `message` is the request as it came.
    Unsigned,
    /// A good signature; the message to answer has its TSIG removed.
    Signed(Signed, Vec<u8>),
    /// A bad one: NOTAUTH with the error.
    Failed(Failed),
}

/// Verifies `message`'s TSIG against `keys` at time `now`.
pub fn verify_request(message: &[u8], keys: &KeyRing, now: u64) -> Result<Verdict, Malformed> {
    let Some(tsig) = find(message)? else {
        return Ok(Verdict::Unsigned);
    };
    let fail = |error, signed| {
        Ok(Verdict::Failed(Failed {
            error,
            key_name: tsig.key_name.clone(),
            algorithm: tsig.algorithm.clone(),
            signed,
        }))
    };
    let algorithm = Algorithm::from_name(&tsig.algorithm.to_ascii());
    let key = match keys.get(&tsig.key_name) {
        Some(key) if Some(key.algorithm) == algorithm => key.clone(),
        _ => return fail(TsigError::BadKey, None),
    };
    let full = key.algorithm.mac_len();
    // Section 5.2.2.1: longer than the hash, or shorter than both half of
    // it and 10 bytes, is malformed; anything else short is truncation,
    // which fleetdns does not accept.
    if tsig.mac.len() > full || tsig.mac.len() < (full / 2).max(10) {
        return Err(Malformed("the TSIG MAC has an impossible length"));
    }
    let stripped = strip(message, &tsig);
    let mut hasher = key.mac();
    hasher.update(&stripped);
    hasher.update(&variables(&tsig, true));
    if tsig.mac.len() != full || !hasher.verify(&tsig.mac) {
        let error = if tsig.mac.len() == full {
            TsigError::BadSig
        } else {
            // A truncated MAC cannot be checked against the full one here;
            // RFC 8945 answers BADTRUNC, signed.
            TsigError::BadTrunc
        };
        let signed = (error == TsigError::BadTrunc).then(|| Signed {
            key: key.clone(),
            mac: Vec::new(),
        });
        return fail(error, signed);
    }
    let signed = Signed {
        key,
        mac: tsig.mac.clone(),
    };
    if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
        return fail(TsigError::BadTime, Some(signed));
    }
    Ok(Verdict::Signed(signed, stripped))
}

/// `message` without its TSIG: ARCOUNT one less, the original ID back.
fn strip(message: &[u8], tsig: &Tsig) -> Vec<u8> {
    let mut out = message[..tsig.offset].to_vec();
    out[0..2].copy_from_slice(&tsig.original_id.to_be_bytes());
    let arcount = u16::from_be_bytes([out[10], out[11]]).saturating_sub(1);
    out[10..12].copy_from_slice(&arcount.to_be_bytes());
    out
}

/// The TSIG variables of `tsig` (section 4.3.3): all of them, or only the
/// timers (the later messages of a multi-message reply).
fn variables(tsig: &Tsig, full: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if full {
        out.extend_from_slice(&canonical(&tsig.key_name));
        out.extend_from_slice(&CLASS_ANY.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&canonical(&tsig.algorithm));
    }
    out.extend_from_slice(&tsig.time_signed.to_be_bytes()[2..]);
    out.extend_from_slice(&tsig.fudge.to_be_bytes());
    if full {
        out.extend_from_slice(&tsig.error.to_be_bytes());
        out.extend_from_slice(&(tsig.other.len() as u16).to_be_bytes());
        out.extend_from_slice(&tsig.other);
    }
    out
}

/// Appends `tsig` as the last additional record of `message`.
fn append(message: &mut Vec<u8>, tsig: &Tsig) {
    let algorithm = canonical(&tsig.algorithm);
    message.extend_from_slice(&canonical(&tsig.key_name));
    message.extend_from_slice(&TSIG_TYPE.to_be_bytes());
    message.extend_from_slice(&CLASS_ANY.to_be_bytes());
    message.extend_from_slice(&0u32.to_be_bytes());
    let len = algorithm.len() + 6 + 2 + 2 + tsig.mac.len() + 2 + 2 + 2 + tsig.other.len();
    message.extend_from_slice(&(len as u16).to_be_bytes());
    message.extend_from_slice(&algorithm);
    message.extend_from_slice(&tsig.time_signed.to_be_bytes()[2..]);
    message.extend_from_slice(&tsig.fudge.to_be_bytes());
    message.extend_from_slice(&(tsig.mac.len() as u16).to_be_bytes());
    message.extend_from_slice(&tsig.mac);
    message.extend_from_slice(&tsig.original_id.to_be_bytes());
    message.extend_from_slice(&tsig.error.to_be_bytes());
    message.extend_from_slice(&(tsig.other.len() as u16).to_be_bytes());
    message.extend_from_slice(&tsig.other);
    let arcount = u16::from_be_bytes([message[10], message[11]]).saturating_add(1);
    message[10..12].copy_from_slice(&arcount.to_be_bytes());
}

/// How many bytes a TSIG with `key` adds to a message (with no other data).
pub fn overhead(key: &Key) -> usize {
    let name = canonical(&key.name).len();
    let algorithm = key.algorithm.wire().len();
    name + 10 + algorithm + 16 + key.algorithm.mac_len()
}

/// The longest TSIG any key of `keys` adds (0 without keys).
pub fn max_overhead(keys: &KeyRing) -> usize {
    keys.keys.iter().map(|k| overhead(k)).max().unwrap_or(0)
}

/// A record `message`-sized to sign: its ID and the key's names.
fn record_for(message: &[u8], key: &Key, time_signed: u64, error: u16, other: Vec<u8>) -> Tsig {
    Tsig {
        offset: message.len(),
        key_name: key.name.clone(),
        algorithm: Name::from_ascii(key.algorithm.as_str()).unwrap_or_else(|_| Name::root()),
        time_signed,
        fudge: FUDGE,
        mac: Vec::new(),
        original_id: u16::from_be_bytes([message[0], message[1]]),
        error,
        other,
    }
}

/// Signs a request (a NOTIFY) with `key` at `now`; returns its MAC, which
/// the reply's signature covers.
pub fn sign_request(message: &mut Vec<u8>, key: &Key, now: u64) -> Vec<u8> {
    let mut tsig = record_for(message, key, now, 0, Vec::new());
    let mut hasher = key.mac();
    hasher.update(message);
    hasher.update(&variables(&tsig, true));
    tsig.mac = hasher.finish();
    append(message, &tsig);
    tsig.mac
}

/// Signs the reply `message` to a request signed as `request` (the first
/// or only message of a reply), with TSIG error `error`; returns its MAC,
/// which the next message of a stream chains to.
pub fn sign_reply(
    message: &mut Vec<u8>,
    request: &Signed,
    now: u64,
    error: Option<TsigError>,
) -> Vec<u8> {
    let other = if error == Some(TsigError::BadTime) {
        // The server's time, so the client can see the skew.
        now.to_be_bytes()[2..].to_vec()
    } else {
        Vec::new()
    };
    let mut tsig = record_for(
        message,
        &request.key,
        now,
        error.map_or(0, |e| e as u16),
        other,
    );
    let mut hasher = request.key.mac();
    if !request.mac.is_empty() {
        hasher.update(&(request.mac.len() as u16).to_be_bytes());
        hasher.update(&request.mac);
    }
    hasher.update(message);
    hasher.update(&variables(&tsig, true));
    tsig.mac = hasher.finish();
    append(message, &tsig);
    tsig.mac
}

/// Signs a later message of a multi-message reply, chained to the
/// previous message's MAC `previous` (section 5.3.1); returns its MAC.
pub fn sign_next(message: &mut Vec<u8>, key: &Key, previous: &[u8], now: u64) -> Vec<u8> {
    let mut tsig = record_for(message, key, now, 0, Vec::new());
    let mut hasher = key.mac();
    hasher.update(&(previous.len() as u16).to_be_bytes());
    hasher.update(previous);
    hasher.update(message);
    hasher.update(&variables(&tsig, false));
    tsig.mac = hasher.finish();
    append(message, &tsig);
    tsig.mac
}

/// Adds an unsigned TSIG carrying `failed`'s error (BADKEY, BADSIG: the
/// server cannot or must not sign).
pub fn append_unsigned_error(message: &mut Vec<u8>, failed: &Failed, now: u64) {
    let tsig = Tsig {
        offset: message.len(),
        key_name: failed.key_name.clone(),
        algorithm: failed.algorithm.clone(),
        time_signed: now,
        fudge: FUDGE,
        mac: Vec::new(),
        original_id: u16::from_be_bytes([message[0], message[1]]),
        error: failed.error as u16,
        other: Vec::new(),
    };
    append(message, &tsig);
}

/// Verifies a reply to a request that fleetdns signed with `key` and
/// whose MAC was `request_mac` (the acknowledgement of a NOTIFY).
pub fn verify_reply(message: &[u8], key: &Key, request_mac: &[u8]) -> Result<(), String> {
    let tsig = find(message)
        .map_err(|e| e.to_string())?
        .ok_or("the reply is not signed")?;
    if tsig.error != 0 {
        return Err(match tsig.error {
            16 => "the peer says BADSIG (a different secret?)".into(),
            17 => "the peer says BADKEY (no key of that name and algorithm)".into(),
            18 => "the peer says BADTIME (clocks apart?)".into(),
            other => format!("the peer says TSIG error {other}"),
        });
    }
    if !tsig.key_name.eq_case(&key.name) && tsig.key_name.to_lowercase() != key.name {
        return Err("the reply is signed with another key".into());
    }
    let mut hasher = key.mac();
    hasher.update(&(request_mac.len() as u16).to_be_bytes());
    hasher.update(request_mac);
    hasher.update(&strip(message, &tsig));
    hasher.update(&variables(&tsig, true));
    if hasher.verify(&tsig.mac) {
        Ok(())
    } else {
        Err("the reply's signature does not verify".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;

    fn key() -> Arc<Key> {
        let secret = Secret::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        Arc::new(Key::new("xfr-key", Algorithm::HmacSha256, secret).unwrap())
    }

    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x05fleet\x08internal\x00\x00\x06\x00\x01");
        q
    }

    #[test]
    fn a_request_signed_here_verifies_and_strips_to_the_original() {
        let ring = KeyRing::new(vec![key()]);
        let mut q = query();
        let mac = sign_request(&mut q, &key(), 1_000_000);
        assert_eq!(mac.len(), 32);
        assert_eq!(q.len(), query().len() + overhead(&key()));
        Message::from_vec(&q).expect("hickory parses the signed request");
        match verify_request(&q, &ring, 1_000_100).unwrap() {
            Verdict::Signed(signed, stripped) => {
                assert_eq!(stripped, query());
                assert_eq!(signed.mac, mac);
            }
            other => panic!("{other:?}"),
        }
        // out of the fudge: BADTIME, signed
        match verify_request(&q, &ring, 1_000_301).unwrap() {
            Verdict::Failed(f) => {
                assert_eq!(f.error, TsigError::BadTime);
                assert!(f.signed.is_some());
            }
            other => panic!("{other:?}"),
        }
        // a flipped bit anywhere signed: BADSIG
        let mut bad = q.clone();
        bad[14] ^= 1;
        match verify_request(&bad, &ring, 1_000_000).unwrap() {
            Verdict::Failed(f) => assert_eq!(f.error, TsigError::BadSig),
            other => panic!("{other:?}"),
        }
        // an unknown key: BADKEY
        match verify_request(&q, &KeyRing::default(), 1_000_000).unwrap() {
            Verdict::Failed(f) => assert_eq!(f.error, TsigError::BadKey),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_chain_verifies_message_by_message() {
        let mut q = query();
        let request_mac = sign_request(&mut q, &key(), 5);
        let mut reply = query();
        reply[2] = 0x84;
        let signed = Signed {
            key: key(),
            mac: request_mac.clone(),
        };
        let first = sign_reply(&mut reply, &signed, 5, None);
        verify_reply(&reply, &key(), &request_mac).expect("first message verifies");
        let mut second = query();
        let mac2 = sign_next(&mut second, &key(), &first, 6);
        assert_ne!(mac2, first);
        assert!(find(&second).unwrap().is_some());
    }

    #[test]
    fn a_tsig_anywhere_but_last_is_malformed() {
        let mut q = query();
        sign_request(&mut q, &key(), 5);
        // claim one more additional record after the TSIG
        let mut more = q.clone();
        more[11] = 2;
        more.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert!(find(&more).is_err());
        // cut anywhere inside the TSIG: malformed, never a panic
        for cut in query().len()..q.len() {
            assert!(find(&q[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let text = format!("{:?}", key());
        assert!(!text.contains("AAECAw"), "{text}");
        assert!(text.contains("not shown"));
    }
}

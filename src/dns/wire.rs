//! Encoding replies: size limits and truncation (RFC 6891 section 7).
//!
//! A reply that does not fit the UDP limit is sent as header + question +
//! OPT with TC=1 and no records, so the client retries over TCP. The limit
//! is the client's EDNS offer, never more than [`MAX_UDP_PAYLOAD`] (the
//! DNS Flag Day 2020 value, which avoids IP fragmentation), and 512 for
//! clients without EDNS.

use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

/// The most fleetdns ever sends, and advertises, over UDP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP reply limit for a request with this EDNS (or none).
pub fn udp_limit(edns: Option<&Edns>) -> usize {
    match edns {
        Some(e) => e.max_payload().clamp(512, MAX_UDP_PAYLOAD) as usize,
        None => 512,
    }
}

/// The OPT record fleetdns puts in replies to EDNS queries; `dnssec_ok`
/// is the query's DO bit, which RFC 3225 (section 3) says the reply
/// copies.
pub fn response_edns(dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_PAYLOAD);
    edns.set_version(0);
    edns.set_dnssec_ok(dnssec_ok);
    edns
}

/// That OPT record as bytes: root owner, type 41, class = our UDP size,
/// TTL = extended rcode 0, version 0, the DO bit as asked; no options.
pub fn opt_record(dnssec_ok: bool) -> [u8; 11] {
    let [hi, lo] = MAX_UDP_PAYLOAD.to_be_bytes();
    [
        0,
        0,
        41,
        hi,
        lo,
        0,
        0,
        if dnssec_ok { 0x80 } else { 0 },
        0,
        0,
        0,
    ]
}

/// Appends our OPT record to `reply` if it has no additional records: a
/// reply to a request with an OPT has one too (RFC 6891 section 6.1.1).
/// For the replies fleetdns writes as bare bytes (REFUSED, transfer
/// errors, FORMERR); `dnssec_ok` is the request's DO bit.
pub fn append_opt(reply: &mut Vec<u8>, dnssec_ok: bool) {
    if reply.get(10..12) == Some(&[0, 0]) {
        reply.extend_from_slice(&opt_record(dnssec_ok));
        reply[11] = 1;
    }
}

/// The size of the empty OPT record of a minimal reply.
const OPT_LEN: usize = 11;

/// An encoded reply and its response code.
type Reply = (Vec<u8>, ResponseCode);

/// A [`ResponseHandler`] that encodes the reply into bytes, within a size
/// limit, for the listener to send.
///
/// Cloning shares the output slot; the listener keeps one clone and takes
/// the bytes after the handler returns.
#[derive(Clone)]
pub struct WireResponder {
    /// Most bytes the reply may have (512..=1232 for UDP, 65535 for TCP).
    limit: usize,
    /// Length of the request's question section, which the reply repeats
    /// byte for byte right after the header.
    question_len: usize,
    /// How many questions that section holds.
    questions: u16,
    /// The encoded reply and its response code, once sent.
    out: Arc<Mutex<Option<Reply>>>,
}

impl WireResponder {
    /// A responder for a request whose question section is `question_len`
    /// bytes long and holds `questions` questions.
    pub fn new(limit: usize, question_len: usize, questions: u16) -> Self {
        Self {
            limit,
            question_len,
            questions,
            out: Arc::new(Mutex::new(None)),
        }
    }

    /// The encoded reply and its response code, if the handler sent one.
    pub fn take(&self) -> Option<Reply> {
        self.out.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl WireResponder {
    /// The request's question section: its length and how many it holds.
    fn question(&self) -> (usize, u16) {
        (self.question_len, self.questions)
    }
}

#[async_trait::async_trait]
impl ResponseHandler for WireResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let metadata = *response.metadata();
        let edns = response.edns().map(|e| e.flags().dnssec_ok);
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        let emitted = response.destructive_emit(&mut encoder);
        let (bytes, info) = match emitted {
            Ok(info) if bytes.len() <= self.limit => (bytes, info),
            Ok(_) => {
                let mut truncated = metadata;
                truncated.truncation = true;
                minimal_reply(truncated, &bytes, self.question(), edns, self.limit)
            }
            Err(error) => {
                // Only a reply larger than 64 KiB can fail here.
                tracing::warn!(%error, "reply could not be encoded; sending SERVFAIL");
                let mut failed = metadata;
                failed.response_code = ResponseCode::ServFail;
                minimal_reply(failed, &bytes, self.question(), edns, self.limit)
            }
        };
        let rcode = info.response_code;
        if let Ok(mut slot) = self.out.lock() {
            *slot = Some((bytes, rcode));
        }
        Ok(info)
    }
}

/// Header + the questions copied from `encoded` + an empty OPT if `edns`
/// (`Some(DO bit)`), within `limit` bytes.
///
/// `encoded` holds at least the header and the questions as the full reply
/// encoded them (they are written first, so they are complete even when
/// encoding failed later). `question` is their length and count. Questions
/// that would not fit the limit (a request may ask dozens) are left out
/// whole: a reply never counts questions it does not hold.
fn minimal_reply(
    metadata: Metadata,
    encoded: &[u8],
    (question_len, questions): (usize, u16),
    edns: Option<bool>,
    limit: usize,
) -> (Vec<u8>, ResponseInfo) {
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
    let question = encoded
        .get(12..12 + question_len)
        .filter(|_| 12 + question_len + opt_len <= limit);
    let header = Header {
        metadata,
        counts: HeaderCounts {
            queries: if question.is_some() { questions } else { 0 },
            answers: 0,
            authorities: 0,
            additionals: u16::from(edns.is_some()),
        },
    };
    let mut bytes = Vec::with_capacity(12 + question_len + opt_len);
    let mut encoder = BinEncoder::new(&mut bytes);
    // A 12-byte header into a Vec cannot fail to encode.
    let _ = header.emit(&mut encoder);
    if let Some(question) = question {
        bytes.extend_from_slice(question);
    }
    if let Some(dnssec_ok) = edns {
        bytes.extend_from_slice(&opt_record(dnssec_ok));
    }
    (bytes, ResponseInfo::from(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_limit_is_capped_both_ways() {
        assert_eq!(udp_limit(None), 512);
        let mut e = Edns::new();
        e.set_max_payload(4096);
        assert_eq!(udp_limit(Some(&e)), 1232);
        e.set_max_payload(100);
        assert_eq!(udp_limit(Some(&e)), 512);
        e.set_max_payload(1000);
        assert_eq!(udp_limit(Some(&e)), 1000);
    }
}

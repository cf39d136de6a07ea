//! Response rate limiting (`[rrl]`), as BIND, Knot and NSD do it: a
//! server on a network address must not be an amplifier for spoofed
//! queries.
//!
//! Every UDP reply is accounted to a bucket keyed by the client's network
//! (`ipv4_prefix`, `ipv6_prefix`) and by what the reply says: an answer by
//! its name and type, a NODATA by its name, and all NXDOMAINs and all
//! errors of a network together (as BIND keys them by zone; fleetdns
//! serves one zone, so a flood of random names is one bucket). A bucket
//! earns `responses_per_second` credits a second, at most that many
//! banked, and each reply spends one; a reply without credit is limited.
//! As in BIND, a bucket can go into debt, down to `window - 1` seconds'
//! worth, so that a flood that goes on stays limited however it is paced,
//! and a source must be quiet for up to `window` seconds to be answered
//! in full again (`window = 1`: limited only within the second). Of the
//! limited replies every `slip`-th goes out truncated (TC=1, no records),
//! so a real client behind a spoofed address retries over TCP and gets
//! its answer; the others are dropped. TCP is never limited: a TCP client
//! cannot spoof its address.
//!
//! Memory is fixed when the limiter is made: `table_size` buckets in one
//! array, indexed by a keyed hash (random per process, so that nobody can
//! aim collisions). A new key takes over its slot, so a flood of random
//! sources costs no memory; it can only make the limiter forget a
//! bucket, which then starts again with a second's credit. Buckets are
//! atomics updated without locks by every receive loop.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use tracing::info;

use crate::access::Cidr;
use crate::metrics::metrics;

/// The limiter in force, if any: shared by every receive loop, replaced
/// whole (with fresh buckets) when a reload changes `[rrl]`.
pub type Rrl = Arc<ArcSwapOption<Limiter>>;

/// A cell holding a limiter for `settings`, or none.
pub fn cell(settings: Option<&RrlSettings>) -> Rrl {
    Arc::new(ArcSwapOption::new(
        settings.map(|s| Arc::new(Limiter::new(s.clone()))),
    ))
}

/// Applies `limiter`, if any, to `reply` for `source` at second `now`:
/// whether to send it (perhaps rewritten truncated), counting in the
/// metrics what it holds back.
pub fn admit(limiter: Option<&Limiter>, now: u32, source: IpAddr, reply: &mut Vec<u8>) -> bool {
    let Some(limiter) = limiter else {
        return true;
    };
    match limiter.check(now, source, reply) {
        Verdict::Send => true,
        Verdict::Slip => {
            metrics().count_rrl_limited(true);
            true
        }
        Verdict::Drop => {
            metrics().count_rrl_limited(false);
            false
        }
    }
}

/// `[rrl]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlSettings {
    /// Replies per second each bucket may get in full.
    pub responses_per_second: u32,
    /// Every `slip`-th limited reply goes out truncated; 0 drops them all.
    pub slip: u32,
    /// Seconds a flood stays limited after it stops, at most (a bucket
    /// runs up `window - 1` seconds of debt; 1 = none).
    pub window: u32,
    /// Prefix length that groups IPv4 clients.
    pub ipv4_prefix: u8,
    /// Prefix length that groups IPv6 clients.
    pub ipv6_prefix: u8,
    /// Networks never limited.
    pub exempt: Vec<Cidr>,
    /// Buckets (a power of two).
    pub table_size: usize,
}

/// What to do with one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it as it is.
    Send,
    /// Send it truncated (the reply was rewritten).
    Slip,
    /// Send nothing.
    Drop,
}

/// One bucket: whose it is, its credit, and its limited replies.
#[derive(Default)]
struct Bucket {
    /// The keyed hash of (network, kind, name, type); 0 = unused.
    key: AtomicU64,
    /// Second of the last reply (high 32 bits) and the credit (low 32,
    /// signed), updated together.
    state: AtomicU64,
    /// Limited replies since the bucket was taken, for `slip`.
    limited: AtomicU32,
}

/// The limiter: settings, buckets, and the clock they count in.
pub struct Limiter {
    settings: RrlSettings,
    buckets: Box<[Bucket]>,
    hasher: std::hash::RandomState,
    started: Instant,
    /// Second of the last "rate limiting" log line (+1; 0 = never).
    logged: AtomicU32,
}

/// How often, at most, a "rate limiting" line is logged: under a flood a
/// line per limited reply would be a flood of its own. The metric counts
/// each one.
const LOG_EVERY_SECS: u32 = 60;

/// What a reply says, for its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Answer = 1,
    NoData = 2,
    NxDomain = 3,
    Error = 4,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Answer => "answers",
            Kind::NoData => "NODATA",
            Kind::NxDomain => "NXDOMAIN",
            Kind::Error => "errors",
        }
    }
}

impl Limiter {
    /// A limiter with `settings`; all its memory is taken here.
    pub fn new(settings: RrlSettings) -> Limiter {
        let size = settings.table_size.next_power_of_two().max(1);
        Limiter {
            buckets: (0..size).map(|_| Bucket::default()).collect(),
            settings,
            hasher: std::hash::RandomState::new(),
            started: Instant::now(),
            logged: AtomicU32::new(0),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &RrlSettings {
        &self.settings
    }

    /// The current second on the limiter's clock; a receive loop reads it
    /// once per batch.
    pub fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether `source` is exempt.
    pub fn is_exempt(&self, source: IpAddr) -> bool {
        self.settings.exempt.iter().any(|n| n.contains(source))
    }

    /// Accounts `reply` (a complete encoded UDP reply) to `source` at
    /// second `now`, and says what to do with it; on [`Verdict::Slip`]
    /// `reply` has been rewritten truncated.
    pub fn check(&self, now: u32, source: IpAddr, reply: &mut Vec<u8>) -> Verdict {
        if self.is_exempt(source) {
            return Verdict::Send;
        }
        let Some((network, kind, key)) = self.key(source, reply) else {
            return Verdict::Send; // not a reply we wrote; nothing to key
        };
        let mask = self.buckets.len() - 1;
        let bucket = &self.buckets[(key as usize) & mask];
        let fresh = bucket.key.load(Relaxed) != key;
        if fresh {
            bucket.key.store(key, Relaxed);
            bucket.limited.store(0, Relaxed);
        }
        let rate = i64::from(self.settings.responses_per_second);
        // Debt of `window - 1` seconds: a flood stays limited for up to
        // `window` seconds after it stops.
        let debt_secs = i64::from(self.settings.window.saturating_sub(1));
        let floor = (-rate * debt_secs).max(i64::from(i32::MIN));
        let step = |state: u64| -> (u64, bool) {
            let (then, credit) = ((state >> 32) as u32, i64::from(state as u32 as i32));
            let credit = if fresh {
                rate
            } else {
                let elapsed = i64::from(now.saturating_sub(then));
                credit
                    .saturating_add(rate.saturating_mul(elapsed))
                    .min(rate)
            };
            let spent = (credit - 1).max(floor);
            let packed = (u64::from(now) << 32) | u64::from(spent as i32 as u32);
            (packed, credit >= 1)
        };
        let previous = bucket
            .state
            .fetch_update(Relaxed, Relaxed, |s| Some(step(s).0))
            .unwrap_or_else(|s| s);
        if step(previous).1 {
            return Verdict::Send;
        }
        self.log(now, network, kind);
        let slip = self.settings.slip;
        let n = bucket.limited.fetch_add(1, Relaxed).wrapping_add(1);
        if slip > 0 && n.is_multiple_of(slip) && truncate(reply) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// The client's network, the reply's kind, and the bucket key.
    fn key(&self, source: IpAddr, reply: &[u8]) -> Option<(Cidr, Kind, u64)> {
        let header = reply.get(..12)?;
        let rcode = header[3] & 0x0f;
        let answers = u16::from_be_bytes([header[6], header[7]]);
        let questions = u16::from_be_bytes([header[4], header[5]]);
        let kind = match rcode {
            0 if answers > 0 => Kind::Answer,
            0 => Kind::NoData,
            3 => Kind::NxDomain,
            _ => Kind::Error,
        };
        let network = self.network(source);
        let mut hasher = self.hasher.build_hasher();
        match network.address {
            IpAddr::V4(a) => hasher.write_u32(u32::from(a)),
            IpAddr::V6(a) => hasher.write_u128(u128::from(a)),
        }
        hasher.write_u8(network.prefix);
        hasher.write_u8(kind as u8);
        if matches!(kind, Kind::Answer | Kind::NoData) && questions >= 1 {
            // The question's name, lowercased (a client varying the case
            // is the same client), and for answers its type.
            let mut name = [0u8; 255];
            let mut len = 0;
            let mut pos = 12;
            loop {
                let &label = reply.get(pos)?;
                if label & 0xc0 != 0 {
                    return None;
                }
                let end = pos + 1 + usize::from(label);
                let bytes = reply.get(pos..end)?;
                let room = name.get_mut(len..len + bytes.len())?;
                room.copy_from_slice(bytes);
                room.make_ascii_lowercase();
                len += bytes.len();
                pos = end;
                if label == 0 {
                    break;
                }
            }
            hasher.write(&name[..len]);
            if kind == Kind::Answer {
                hasher.write(reply.get(pos..pos + 2)?);
            }
        }
        // 0 marks an unused bucket
        let key = hasher.finish().max(1);
        Some((network, kind, key))
    }

    /// `source`'s network at the configured prefix length.
    fn network(&self, source: IpAddr) -> Cidr {
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        let (address, prefix) = match source {
            IpAddr::V4(a) => {
                let prefix = self.settings.ipv4_prefix;
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V4((u32::from(a) & mask).into()), prefix)
            }
            IpAddr::V6(a) => {
                let prefix = self.settings.ipv6_prefix;
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V6((u128::from(a) & mask).into()), prefix)
            }
        };
        Cidr { address, prefix }
    }

    /// Logs that `network` is limited, unless a line went out less than
    /// [`LOG_EVERY_SECS`] ago.
    fn log(&self, now: u32, network: Cidr, kind: Kind) {
        let last = self.logged.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last - 1) >= LOG_EVERY_SECS;
        if due
            && self
                .logged
                .compare_exchange(last, now.saturating_add(1), Relaxed, Relaxed)
                .is_ok()
        {
            info!(
                %network,
                replies = kind.label(),
                per_second = self.settings.responses_per_second,
                "rate limiting UDP replies (one line a minute at most; fleetdns_rrl_limited_total counts each)"
            );
        }
    }
}

/// Rewrites `reply` in place as its truncated form: the header with TC
/// set and no records, the question, and the OPT record if it had one (a
/// client that sent EDNS gets EDNS back). `false` if `reply` does not
/// parse that far, and is then left alone.
pub fn truncate(reply: &mut Vec<u8>) -> bool {
    let Some((question_end, opt)) = layout(reply) else {
        return false;
    };
    let opt = opt.map(|range| reply[range].to_vec());
    reply.truncate(question_end);
    reply[2] |= 0x02; // TC
    reply[6..10].fill(0); // ANCOUNT, NSCOUNT
    let additional = u16::from(opt.is_some());
    reply[10..12].copy_from_slice(&additional.to_be_bytes());
    if let Some(opt) = opt {
        reply.extend_from_slice(&opt);
    }
    true
}

/// Where the question section of `message` ends, and where its OPT
/// record lies if it has one in the additional section.
fn layout(message: &[u8]) -> Option<(usize, Option<std::ops::Range<usize>>)> {
    let count = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *message.get(at)?,
            *message.get(at + 1)?,
        ])))
    };
    let (questions, answers, authorities, additionals) =
        (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(message, pos)? + 4;
    }
    let question_end = pos;
    if question_end > message.len() {
        return None;
    }
    let mut opt = None;
    for i in 0..answers + authorities + additionals {
        let start = pos;
        pos = skip_name(message, pos)?;
        let rtype = count(pos)?;
        let rdlen = count(pos + 8)?;
        pos += 10 + rdlen;
        if pos > message.len() {
            return None;
        }
        if rtype == 41 && i >= answers + authorities {
            opt = Some(start..pos);
        }
    }
    Some((question_end, opt))
}

/// The position after the name at `pos` (labels, then a zero or a
/// pointer).
fn skip_name(message: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let &len = message.get(pos)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(pos + 1),
            0 => pos += 1 + usize::from(len),
            0xc0 => return Some(pos + 2),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn settings(rate: u32, slip: u32, window: u32) -> RrlSettings {
        RrlSettings {
            responses_per_second: rate,
            slip,
            window,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec![Cidr::parse("192.0.2.0/24").unwrap()],
            table_size: 1024,
        }
    }

    /// A reply for `name` A with `rcode`, one answer if NOERROR, and an
    /// OPT with the DO bit.
    fn reply(name: &str, rcode: ResponseCode) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.message_type = MessageType::Response;
        m.metadata.response_code = rcode;
        m.metadata.authoritative = true;
        let name = Name::from_ascii(name).unwrap();
        m.add_query(hickory_proto::op::Query::query(name.clone(), RecordType::A));
        if rcode == ResponseCode::NoError {
            m.add_answer(Record::from_rdata(name, 30, RData::A(A::new(10, 0, 0, 1))));
        }
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        m.set_edns(edns);
        m.to_vec().unwrap()
    }

    fn count(limiter: &Limiter, now: u32, from: &str, name: &str, n: usize) -> [usize; 3] {
        let mut seen = [0; 3];
        for _ in 0..n {
            let mut bytes = reply(name, ResponseCode::NoError);
            let i = match limiter.check(now, from.parse().unwrap(), &mut bytes) {
                Verdict::Send => 0,
                Verdict::Slip => 1,
                Verdict::Drop => 2,
            };
            seen[i] += 1;
        }
        seen
    }

    #[test]
    fn a_network_gets_its_rate_then_every_slip_th_reply_truncated() {
        let limiter = Limiter::new(settings(10, 2, 1));
        assert_eq!(
            count(&limiter, 0, "10.1.1.1", "a.example.", 30),
            [10, 10, 10]
        );
        // the same /24, same answer: the same bucket, still empty
        assert_eq!(count(&limiter, 0, "10.1.1.200", "a.example.", 2), [0, 1, 1]);
        // another answer, another network, an exempt network: full
        assert_eq!(count(&limiter, 0, "10.1.1.1", "b.example.", 10), [10, 0, 0]);
        assert_eq!(count(&limiter, 0, "10.1.2.1", "a.example.", 10), [10, 0, 0]);
        assert_eq!(
            count(&limiter, 0, "192.0.2.9", "a.example.", 100),
            [100, 0, 0]
        );
        // the next second: a second's credit again (window 1: no debt)
        assert_eq!(count(&limiter, 1, "10.1.1.1", "A.Example.", 12)[0], 10);
    }

    #[test]
    fn with_a_window_debt_keeps_a_flood_limited_after_it_slows() {
        let limiter = Limiter::new(settings(10, 0, 5));
        // 100 in second 0: 10 answered, debt down to 4 seconds' worth (-40)
        assert_eq!(
            count(&limiter, 0, "10.9.9.9", "a.example.", 100),
            [10, 0, 90]
        );
        // two seconds later the debt is -20: still nothing
        assert_eq!(count(&limiter, 2, "10.9.9.9", "a.example.", 1), [0, 0, 1]);
        // quiet for the window: full credit
        assert_eq!(
            count(&limiter, 10, "10.9.9.9", "a.example.", 10),
            [10, 0, 0]
        );
    }

    #[test]
    fn random_names_that_do_not_exist_share_one_bucket_per_network() {
        let limiter = Limiter::new(settings(5, 0, 1));
        let mut sent = 0;
        for i in 0..50 {
            let mut bytes = reply(&format!("r{i}.example."), ResponseCode::NXDomain);
            if limiter.check(0, "10.3.3.3".parse().unwrap(), &mut bytes) == Verdict::Send {
                sent += 1;
            }
        }
        assert_eq!(sent, 5);
    }

    #[test]
    fn a_slipped_reply_is_header_question_and_opt_with_tc() {
        let mut bytes = reply("web-1.fleet.internal.", ResponseCode::NoError);
        assert!(truncate(&mut bytes));
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty() && m.authorities.is_empty());
        assert_eq!(m.queries[0].name().to_ascii(), "web-1.fleet.internal.");
        let edns = m.edns.expect("the OPT is kept");
        assert!(edns.flags().dnssec_ok);
        // junk is left alone
        let mut junk = vec![0u8; 5];
        assert!(!truncate(&mut junk));
        assert_eq!(junk, vec![0u8; 5]);
    }
}

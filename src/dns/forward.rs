//! Forwarding names outside the zone to upstream resolvers, with a cache.
//!
//! Deliberately small: one question per upstream query, UDP first and TCP
//! when the upstream truncates, upstreams tried in order, each with its own
//! timeout. Bounds keep a flood from growing without limit: at most
//! `max_in_flight` queries wait on upstreams (more get SERVFAIL at once) and
//! the cache holds at most `cache_entries` answers. Never configured from
//! `/etc/resolv.conf`, which will point at fleetdns itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::config::ForwardSettings;
use crate::dns::wire::MAX_UDP_PAYLOAD;
use crate::metrics::{metrics, ForwardResult};

/// How long an answer without any TTL to go by (no records, no SOA) is cached.
const BARE_ANSWER_TTL: u32 = 30;

/// Why a forwarded query got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// Too many forwarded queries are already waiting.
    #[error("too many forwarded queries in flight")]
    Busy,
    /// No upstream answered in time, or all failed.
    #[error("no upstream answered: {0}")]
    NoAnswer(String),
}

/// An upstream's answer, as passed on to the client.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The upstream's response code.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authorities: Vec<Record>,
    /// Additional section, without OPT.
    pub additionals: Vec<Record>,
}

/// A cached answer and when it goes stale.
struct Cached {
    answer: Forwarded,
    stored: Instant,
    ttl: u32,
}

/// Key of the cache: the question, case-folded.
type CacheKey = (LowerName, RecordType, DNSClass);

/// Forwards queries to upstreams and caches their answers.
pub struct Forwarder {
    /// Upstreams in order of preference.
    upstreams: Vec<SocketAddr>,
    /// Wait per upstream.
    timeout: Duration,
    /// Bounds queries waiting on upstreams.
    in_flight: Semaphore,
    /// Answers by question. A std mutex: it is held only for a map
    /// operation, never across an await.
    cache: Mutex<HashMap<CacheKey, Cached>>,
    /// Most answers cached.
    cache_entries: usize,
    /// Cap on cached TTLs.
    max_cache_ttl: u32,
    /// Per upstream, when its failure was last logged and how many came
    /// since: a dead upstream is one warning a minute, not one per query.
    failures_logged: Mutex<HashMap<SocketAddr, (Option<Instant>, u64)>>,
}

/// Least time between two warnings about one upstream.
const UPSTREAM_WARNING_EVERY: Duration = Duration::from_secs(60);

impl Forwarder {
    /// A forwarder for the given settings; `None` when there are no upstreams.
    pub fn new(settings: &ForwardSettings) -> Option<Self> {
        if settings.upstreams.is_empty() {
            return None;
        }
        Some(Self {
            upstreams: settings.upstreams.clone(),
            timeout: settings.timeout,
            in_flight: Semaphore::new(settings.max_in_flight),
            cache: Mutex::new(HashMap::new()),
            cache_entries: settings.cache_entries,
            max_cache_ttl: settings.max_cache_ttl,
            failures_logged: Mutex::new(HashMap::new()),
        })
    }

    /// Logs that `upstream` failed with `why`, at most once a minute per
    /// upstream, with the count of failures since the last line.
    fn log_upstream_failure(&self, upstream: SocketAddr, why: &str) {
        let Ok(mut logged) = self.failures_logged.lock() else {
            return;
        };
        let now = Instant::now();
        let entry = logged.entry(upstream).or_insert((None, 0));
        entry.1 += 1;
        if entry
            .0
            .is_none_or(|at| now.duration_since(at) >= UPSTREAM_WARNING_EVERY)
        {
            tracing::warn!(
                %upstream,
                failures = entry.1,
                "upstream not answering ({why}); queries it would answer get SERVFAIL unless another upstream does"
            );
            *entry = (Some(now), 0);
        }
    }

    /// Answers `name`/`qtype`/`qclass` from the cache or an upstream.
    pub async fn resolve(
        &self,
        name: &LowerName,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Result<Forwarded, ForwardError> {
        let key = (name.clone(), qtype, qclass);
        if let Some(hit) = self.cached(&key) {
            metrics().count_forward(ForwardResult::Cached);
            return Ok(hit);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            metrics().count_forward(ForwardResult::Busy);
            return Err(ForwardError::Busy);
        };

        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        let mut q = Query::query(Name::from(name.clone()), qtype);
        q.set_query_class(qclass);
        query.add_query(q);
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        query.set_edns(edns);
        let bytes = query
            .to_vec()
            .map_err(|e| ForwardError::NoAnswer(format!("cannot encode query: {e}")))?;

        let mut errors = Vec::new();
        for upstream in &self.upstreams {
            match timeout(self.timeout, exchange(*upstream, &bytes, &query)).await {
                Ok(Ok(response)) => {
                    let answer = Forwarded {
                        rcode: response.metadata.response_code,
                        answers: response.answers,
                        authorities: response.authorities,
                        additionals: response.additionals,
                    };
                    self.store(key, &answer);
                    metrics().count_forward(ForwardResult::Answered);
                    return Ok(answer);
                }
                Ok(Err(e)) => {
                    self.log_upstream_failure(*upstream, &e.to_string());
                    errors.push(format!("{upstream}: {e}"));
                }
                Err(_) => {
                    self.log_upstream_failure(*upstream, "timed out");
                    errors.push(format!("{upstream}: timed out"));
                }
            }
            metrics().count_upstream_error(*upstream);
        }
        metrics().count_forward(ForwardResult::Failed);
        Err(ForwardError::NoAnswer(errors.join("; ")))
    }

    /// A fresh cached answer with TTLs reduced by its age.
    fn cached(&self, key: &CacheKey) -> Option<Forwarded> {
        let cache = self.cache.lock().ok()?;
        let hit = cache.get(key)?;
        let age = u32::try_from(hit.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= hit.ttl {
            return None;
        }
        let mut answer = hit.answer.clone();
        for record in answer
            .answers
            .iter_mut()
            .chain(answer.authorities.iter_mut())
            .chain(answer.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(answer)
    }

    /// Caches an answer for the smallest TTL in it (RFC 2308 for negatives).
    fn store(&self, key: CacheKey, answer: &Forwarded) {
        if self.cache_entries == 0 {
            return;
        }
        let ttl = match answer.rcode {
            ResponseCode::NoError | ResponseCode::NXDomain => cache_ttl(answer),
            _ => return, // SERVFAIL, REFUSED, ...: ask again next time
        }
        .min(self.max_cache_ttl);
        if ttl == 0 {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.cache_entries {
            cache.retain(|_, c| c.stored.elapsed().as_secs() < u64::from(c.ttl));
            if cache.len() >= self.cache_entries {
                // Still full of live answers: drop an arbitrary tenth rather
                // than keep an LRU list on every hit.
                let drop: Vec<CacheKey> = cache
                    .keys()
                    .take(self.cache_entries / 10 + 1)
                    .cloned()
                    .collect();
                for k in drop {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(
            key,
            Cached {
                answer: answer.clone(),
                stored: Instant::now(),
                ttl,
            },
        );
    }
}

/// The TTL an answer may be cached for: its smallest record TTL; for a
/// negative answer, min(SOA TTL, SOA MINIMUM).
fn cache_ttl(answer: &Forwarded) -> u32 {
    let from_records = answer
        .answers
        .iter()
        .chain(&answer.authorities)
        .map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(soa) if answer.answers.is_empty() => {
                r.ttl.min(soa.minimum)
            }
            _ => r.ttl,
        })
        .min();
    from_records.unwrap_or(BARE_ANSWER_TTL)
}

/// One query to one upstream: UDP, then TCP if the reply was truncated.
async fn exchange(upstream: SocketAddr, bytes: &[u8], query: &Message) -> Result<Message, String> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(upstream).await.map_err(|e| e.to_string())?;
    socket.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // Ignore anything that is not the reply to this query (spoofing, strays).
        let Ok(response) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if !matches_query(&response, query) {
            continue;
        }
        if response.metadata.truncation {
            return exchange_tcp(upstream, bytes, query).await;
        }
        return Ok(response);
    }
}

/// One query over TCP (length-prefixed, RFC 1035 section 4.2.2).
async fn exchange_tcp(
    upstream: SocketAddr,
    bytes: &[u8],
    query: &Message,
) -> Result<Message, String> {
    let mut stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too large".to_string())?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(|e| e.to_string())?;
    let len = stream.read_u16().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(len)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let response = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if !matches_query(&response, query) {
        return Err("TCP reply does not match the query".to_string());
    }
    Ok(response)
}

/// Whether `response` answers `query`: same id, a response, same question.
fn matches_query(response: &Message, query: &Message) -> bool {
    response.metadata.id == query.metadata.id
        && response.metadata.message_type == hickory_proto::op::MessageType::Response
        && response.queries.len() == 1
        && query.queries.len() == 1
        && LowerName::new(response.queries[0].name()) == LowerName::new(query.queries[0].name())
        && response.queries[0].query_type() == query.queries[0].query_type()
}

//! Listeners: UDP and TCP on every `listen` address.
//!
//! All sockets are bound before anything is served, so a port in use fails
//! the start with nothing half-started. Each bound address is logged
//! (`listening for UDP on 127.0.0.1:5353`); tests start the binary on port
//! 0 and read these lines. TCP connections are bounded in number (more are
//! closed at accept) and closed when idle.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::config::TcpSettings;
use crate::dns::batch::{report_destinations, send_udp, Received, Replies, BATCH};
use crate::dns::fast::FastPath;
use crate::dns::wire::{append_opt, udp_limit, WireResponder, MAX_UDP_PAYLOAD};
use crate::dns::xfr::{header_reply, Answer, Primary, Stream, TransferRequest};
use crate::metrics::metrics;
use crate::rrl::{self, Rrl};
use crate::tsig::{self, Verdict};

/// One listen address, bound for UDP and TCP.
pub struct Bound {
    /// The UDP sockets: one per CPU this process may run on, sharing the
    /// address with SO_REUSEPORT, so that the kernel spreads queries over
    /// as many receive loops. Not yet registered with a runtime: each gets
    /// its own thread and runtime in [`serve`].
    pub udp: Vec<std::net::UdpSocket>,
    /// The TCP listener on the same address and port.
    pub tcp: TcpListener,
}

/// Binds UDP and TCP on every address, or fails naming the address.
///
/// With port 0 the UDP port is chosen by the kernel and TCP binds the same
/// port, retrying with a new port if TCP's is taken.
pub async fn bind_all(addresses: &[SocketAddr]) -> anyhow::Result<Vec<Bound>> {
    let mut bound = Vec::with_capacity(addresses.len());
    for &address in addresses {
        bound.push(bind_one(address).await?);
    }
    for b in &bound {
        if let Some(first) = b.udp.first() {
            info!("listening for UDP on {}", first.local_addr()?);
        }
        info!("listening for TCP on {}", b.tcp.local_addr()?);
    }
    Ok(bound)
}

/// How many UDP sockets (and receive loops) per address: the CPUs this
/// process may use (`taskset` and cgroup limits included).
fn udp_socket_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// Receive buffer asked for each UDP socket. The kernel's default (about
/// 200 KiB) overflows in bursts at a few hundred thousand queries per
/// second; the kernel caps the request at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// One non-blocking UDP socket on `address`, sharing it when `shared`.
fn udp_socket(address: SocketAddr, shared: bool) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol as SocketProtocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(SocketProtocol::UDP),
    )?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer only means drops under bursts.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    if address.ip().is_unspecified() {
        // Replies must leave from the address each query was sent to.
        report_destinations(&socket, address)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// The TCP listener on `address`. An IPv6 one is IPv6 only, as the UDP
/// sockets are, so that `0.0.0.0:53` and `[::]:53` can both be listened on
/// (a dual-stack `[::]` would hold IPv4's port too and fail the second).
fn tcp_listener(address: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol as SocketProtocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(SocketProtocol::TCP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // As tokio's and the standard library's bind do: a restart may bind
    // while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// `count` UDP sockets on `address` (the first picks the port if it is 0).
fn udp_sockets(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let first = udp_socket(address, count > 1)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(udp_socket(bound, true)?);
    }
    Ok(sockets)
}

async fn bind_one(address: SocketAddr) -> anyhow::Result<Bound> {
    let attempts = if address.port() == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = udp_sockets(address, udp_socket_count()).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for UDP on {address}: {e}{}",
                hint(&e, address)
            )
        })?;
        let tcp_address = udp[0].local_addr()?;
        match tcp_listener(tcp_address) {
            Ok(tcp) => return Ok(Bound { udp, tcp }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts > 1 => {
                last_error = Some(e);
            }
            Err(e) => anyhow::bail!(
                "cannot listen for TCP on {tcp_address}: {e}{}",
                hint(&e, tcp_address)
            ),
        }
    }
    let e = last_error.map_or_else(|| "no free port".to_string(), |e| e.to_string());
    anyhow::bail!("cannot listen for TCP on {address}: {e}")
}

/// What to do about a failed bind, in words, or nothing.
pub fn hint(error: &io::Error, address: SocketAddr) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied if address.port() < 1024 => {
            "; ports below 1024 need root or the capability CAP_NET_BIND_SERVICE (the systemd unit grants it; by hand: setcap cap_net_bind_service=+ep $(command -v fleetdns), or a port above 1023)"
        }
        io::ErrorKind::AddrInUse => {
            "; another program listens there (`ss -lunp` and `ss -ltnp` show which; systemd-resolved holds 127.0.0.53:53)"
        }
        io::ErrorKind::AddrNotAvailable => {
            "; no interface of this host has that address (`ip addr` lists them)"
        }
        _ => "",
    }
}

/// Serves every bound socket until `shutdown` turns true; queries the
/// `fast` path can answer (UDP and TCP) skip the handler.
pub async fn serve<H: RequestHandler>(
    bound: Vec<Bound>,
    handler: Arc<H>,
    fast: Option<FastPath>,
    primary: Option<Arc<Primary>>,
    rrl: Rrl,
    tcp: TcpSettings,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for b in bound {
        for udp in b.udp {
            let loop_ = UdpLoop {
                handler: handler.clone(),
                fast: fast.clone(),
                primary: primary.clone(),
                rrl: rrl.clone(),
                shutdown: shutdown.clone(),
            };
            tasks.spawn(loop_.run_on_own_thread(udp));
        }
        tasks.spawn(serve_tcp(
            b.tcp,
            handler.clone(),
            fast.clone(),
            primary.clone(),
            tcp.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits until the shutdown flag is set (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What one UDP receive loop needs.
struct UdpLoop<H> {
    handler: Arc<H>,
    fast: Option<FastPath>,
    primary: Option<Arc<Primary>>,
    rrl: Rrl,
    shutdown: watch::Receiver<bool>,
}

impl<H: RequestHandler> UdpLoop<H> {
    /// Serves `socket` on a thread of its own with a single-threaded
    /// runtime until shutdown; finishes when that thread does.
    ///
    /// Each socket's loop then waits in its own `epoll` and never hands
    /// packets between the daemon's workers: with two sockets on two
    /// cores, a shared multi-threaded runtime answered ~15% fewer queries
    /// (benches/results/). Queries off the fast path (forwarded ones
    /// above all) are tasks of the same thread: handing them to the
    /// daemon's runtime cost two context switches each (forwarding fell
    /// from 126 k to 86 k queries per CPU-second).
    async fn run_on_own_thread(self, socket: std::net::UdpSocket) {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fleetdns-udp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(self.serve_std(socket)),
                    Err(error) => tracing::error!(%error, "cannot start a UDP loop"),
                }
                let _ = done.send(());
            });
        if let Err(error) = thread {
            tracing::error!(%error, "cannot start a UDP thread");
            return;
        }
        let _ = finished.await;
    }

    async fn serve_std(self, socket: std::net::UdpSocket) {
        match UdpSocket::from_std(socket) {
            Ok(socket) => serve_udp(socket, self).await,
            Err(error) => tracing::error!(%error, "cannot serve a UDP socket"),
        }
    }
}

async fn serve_udp<H: RequestHandler>(socket: UdpSocket, parts: UdpLoop<H>) {
    let UdpLoop {
        handler,
        fast,
        primary,
        rrl,
        shutdown,
    } = parts;
    let socket = Arc::new(socket);
    // On a wildcard address each reply names the address its query came
    // to as its source (see `batch`).
    let wildcard = socket.local_addr().is_ok_and(|a| a.ip().is_unspecified());
    let mut received = Received::new(wildcard);
    // The fast path's replies, reused: no allocation per answer.
    let mut reply = Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD));
    let mut replies = Replies::default();
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            ready = socket.readable() => if let Err(error) = ready {
                warn!(%error, "UDP socket failed; no longer serving it");
                return;
            },
            _ = &mut stop => break,
        }
        // Drain what the kernel holds, a batch per system call, without
        // going back to the runtime for each packet, but at most
        // UDP_BATCHES batches, so that other tasks on this thread get turns.
        let mut caught_up = false;
        for _ in 0..UDP_BATCHES {
            let count = match received.receive(&socket) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    caught_up = true;
                    break;
                }
                Err(error) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    debug!(%error, "UDP receive error");
                    continue;
                }
            };
            // Rate limiting, if configured: the limiter and its clock
            // read once per batch.
            let limiter = rrl.load_full();
            let now = limiter.as_ref().map_or(0, |l| l.now());
            for i in 0..count {
                let Some((query, src, local)) =
                    received.get(i).filter(|(_, src, _)| src.port() != 0)
                else {
                    // cut short, not from IP, or port 0: cannot be answered
                    metrics().count_dropped();
                    continue;
                };
                // The common case answered here, in this loop, without a task.
                if let Some((qtype, rcode)) = fast
                    .as_ref()
                    .and_then(|f| f.answer(query, src.ip(), &mut reply))
                {
                    metrics().count_query(Protocol::Udp, Some(qtype), rcode);
                    if rrl::admit(limiter.as_deref(), now, src.ip(), &mut reply) {
                        replies.push(&reply, src, local);
                    }
                    continue;
                }
                let message = query.to_vec();
                let handler = handler.clone();
                let primary = primary.clone();
                let mut answer = Box::pin(async move {
                    let reply =
                        process(&*handler, primary.as_deref(), message, src, Protocol::Udp).await;
                    // Over UDP a transfer is at most one message (an
                    // error or a single SOA).
                    match reply {
                        Some(Reply::One(bytes)) => Some(bytes),
                        Some(Reply::Stream(mut stream)) => stream.next_message(),
                        None => None,
                    }
                });
                // Most answers off the fast path wait for nothing (a
                // forwarded name in the cache, a type the fast path leaves
                // to the handler): tried once here, they join this batch's
                // replies, one system call for all, where a task of their
                // own cost a spawn and a send each (forwarding from the
                // cache: 250 -> 300 k queries per CPU-second). What must
                // wait (an upstream) becomes a task; polling it again there
                // registers the waker that counts.
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match std::future::Future::poll(answer.as_mut(), &mut cx) {
                    std::task::Poll::Ready(Some(mut bytes)) => {
                        if rrl::admit(limiter.as_deref(), now, src.ip(), &mut bytes) {
                            replies.push(&bytes, src, local);
                        }
                    }
                    std::task::Poll::Ready(None) => {}
                    std::task::Poll::Pending => {
                        let socket = socket.clone();
                        let limiter = limiter.clone();
                        tokio::spawn(async move {
                            if let Some(mut bytes) = answer.await {
                                let limiter = limiter.as_deref();
                                let now = limiter.map_or(0, |l| l.now());
                                if rrl::admit(limiter, now, src.ip(), &mut bytes) {
                                    send_udp(&socket, &bytes, src, local).await;
                                }
                            }
                        });
                    }
                }
            }
            replies.flush(&socket).await;
            if count < BATCH {
                // Caught up: the next receive most likely finds nothing
                // and so re-arms the wait for readiness.
                caught_up = true;
                break;
            }
        }
        if !caught_up {
            tokio::task::yield_now().await;
        }
    }
}

/// Batches one receive loop takes from its socket before it lets the
/// other tasks on its thread run.
const UDP_BATCHES: usize = 4;

async fn serve_tcp<H: RequestHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    fast: Option<FastPath>,
    primary: Option<Arc<Primary>>,
    limits: TcpSettings,
    shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Open connections per source address: entries exist only for open
    // connections, so the map is bounded by max_connections.
    let per_source: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        let (stream, src) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(%error, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%src, max = limits.max_connections, "TCP connection limit reached; closing");
            drop(stream);
            continue;
        };
        let Some(source_slot) =
            SourceSlot::take(&per_source, src.ip(), limits.max_connections_per_source)
        else {
            debug!(%src, max = limits.max_connections_per_source, "TCP connection limit of this source reached; closing");
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let fast = fast.clone();
        let primary = primary.clone();
        let shutdown = shutdown.clone();
        let idle = limits.idle_timeout;
        // Replies are coalesced by the connection loop itself (one write
        // per batch of pipelined queries); Nagle would only add delay.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _slot = slot;
            let _source_slot = source_slot;
            let parts = Connection {
                handler: &*handler,
                fast: fast.as_ref(),
                primary: primary.as_deref(),
                idle,
            };
            tokio::select! {
                _ = serve_connection(stream, src, parts) => {}
                _ = stopped(shutdown) => {}
            }
        });
    }
}

/// One source address's hold on a TCP connection: taken at accept,
/// given back when the connection ends.
struct SourceSlot {
    map: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl SourceSlot {
    /// A slot for `source` if it holds fewer than `max` connections.
    fn take(
        map: &Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
        source: IpAddr,
        max: usize,
    ) -> Option<SourceSlot> {
        let mut held = map.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(source).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            map: map.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.source);
            }
        }
    }
}

/// What a TCP connection is served with.
pub struct Connection<'a, H> {
    /// The general path.
    pub handler: &'a H,
    /// The fast path, for the common queries (its replies are the general
    /// path's bytes).
    pub fast: Option<&'a FastPath>,
    /// Transfers, if this server is a primary.
    pub primary: Option<&'a Primary>,
    /// How long the client may leave the connection idle, and how long one
    /// write may wait for it to read.
    pub idle: Duration,
}

/// Bytes asked of the socket per read: many pipelined queries at once.
const TCP_READ: usize = 16 * 1024;
/// Replies are written once this many bytes wait (or no whole query is
/// left to answer), so a client that pipelines without reading holds at
/// most this much, plus one reply, of the server's memory.
const TCP_FLUSH: usize = 16 * 1024;

/// Serves length-prefixed queries (RFC 1035 section 4.2.2) on one
/// connection, in order, until the client closes it, sends a message cut
/// short, or stays idle for `idle`.
///
/// Reads take what the socket has (up to [`TCP_READ`] bytes), so one
/// system call brings every query a client pipelined; each whole query is
/// answered in turn (by the fast path where it can, which skips decoding
/// and encoding), and the replies go out in one write once no whole query
/// is left, or [`TCP_FLUSH`] bytes wait. Memory per connection is bounded
/// by one largest message (64 KiB) in and [`TCP_FLUSH`] plus one reply out.
///
/// Generic over the stream so that the `tcp_framing` fuzz target can feed
/// it any bytes cut at any points through an in-memory pipe.
pub async fn serve_connection<S, H>(mut stream: S, src: SocketAddr, parts: Connection<'_, H>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: RequestHandler,
{
    let Connection {
        handler,
        fast,
        primary,
        idle,
    } = parts;
    let mut input: Vec<u8> = Vec::with_capacity(TCP_READ);
    let mut out: Vec<u8> = Vec::with_capacity(TCP_FLUSH);
    let mut reply: Vec<u8> = Vec::with_capacity(512);
    loop {
        // Answer every whole message read so far.
        let mut at = 0;
        while let Some(len) = input
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .filter(|len| input.len() >= at + 2 + len)
        {
            let message = &input[at + 2..at + 2 + len];
            at += 2 + len;
            if let Some((qtype, rcode)) = fast.and_then(|f| f.answer(message, src.ip(), &mut reply))
            {
                metrics().count_query(Protocol::Tcp, Some(qtype), rcode);
                push_framed(&mut out, &reply);
            } else {
                match process(handler, primary, message.to_vec(), src, Protocol::Tcp).await {
                    None => {}
                    Some(Reply::One(bytes)) => push_framed(&mut out, &bytes),
                    Some(Reply::Stream(mut transfer)) => {
                        // The replies before it go first, in order.
                        let sent = write_all_within(&mut stream, &mut out, idle).await
                            && send_transfer(&mut stream, &mut transfer, src, idle).await;
                        if !sent {
                            return;
                        }
                    }
                }
            }
            if out.len() >= TCP_FLUSH && !write_all_within(&mut stream, &mut out, idle).await {
                return;
            }
        }
        input.drain(..at);
        if !write_all_within(&mut stream, &mut out, idle).await {
            return;
        }
        // A large message's buffer is not kept for the connection's life.
        if input.is_empty() && input.capacity() > 4 * TCP_READ {
            input = Vec::with_capacity(TCP_READ);
        }
        input.reserve(TCP_READ);
        match timeout(idle, stream.read_buf(&mut input)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return, // idle, closed (perhaps mid-message), or broken
        }
    }
}

/// Appends `message` to `out` with its two-byte length; one over 65,535
/// bytes (never built: replies are limited to that) is left out.
fn push_framed(out: &mut Vec<u8>, message: &[u8]) {
    if let Ok(len) = u16::try_from(message.len()) {
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(message);
    }
}

/// Writes all of `out` within `wait` and empties it; whether it went.
async fn write_all_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    wait: Duration,
) -> bool {
    if out.is_empty() {
        return true;
    }
    let sent = matches!(timeout(wait, stream.write_all(out)).await, Ok(Ok(())));
    out.clear();
    sent
}

/// The longest a whole transfer may take before the connection is closed
/// (a 200,000-name zone is about 10 MB: seconds on any link a secondary
/// should use).
pub const TRANSFER_TIME_LIMIT: Duration = Duration::from_secs(300);

/// Sends a transfer's messages one at a time: the next one is rendered
/// only when the previous one is written, so a slow reader holds one
/// message in memory and blocks nothing but its own connection. Each
/// write may take `idle` at most and the whole transfer
/// [`TRANSFER_TIME_LIMIT`]. Whether the connection can go on.
async fn send_transfer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    transfer: &mut Stream,
    src: SocketAddr,
    idle: Duration,
) -> bool {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + TRANSFER_TIME_LIMIT;
    while let Some(message) = transfer.next_message() {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        if !write_framed(stream, &message, wait).await {
            warn!(
                %src,
                kind = transfer.kind,
                serial = transfer.serial(),
                messages = transfer.messages,
                "transfer abandoned: the client stopped reading (or took longer than {} s in all)",
                TRANSFER_TIME_LIMIT.as_secs()
            );
            metrics().count_transfer(transfer.kind, "failed");
            return false;
        }
    }
    if transfer.is_single() {
        return true; // one SOA: counted when answered, not worth a log line
    }
    metrics().count_transfer(transfer.kind, "ok");
    info!(
        %src,
        kind = transfer.kind,
        serial = transfer.serial(),
        steps = transfer.steps,
        messages = transfer.messages,
        bytes = transfer.bytes,
        ms = started.elapsed().as_millis() as u64,
        "transfer sent"
    );
    true
}

/// Writes one length-prefixed message within `wait`; whether it went.
async fn write_framed<S: AsyncWrite + Unpin>(stream: &mut S, reply: &[u8], wait: Duration) -> bool {
    let mut framed = Vec::with_capacity(reply.len() + 2);
    push_framed(&mut framed, reply);
    !framed.is_empty() && write_all_within(stream, &mut framed, wait).await
}

/// A reply: one message, or a transfer's stream of them.
pub enum Reply {
    /// One message.
    One(Vec<u8>),
    /// Several (a zone transfer over TCP).
    Stream(Box<Stream>),
}

impl Reply {
    /// The message of a one-message reply.
    pub fn one(self) -> Option<Vec<u8>> {
        match self {
            Reply::One(bytes) => Some(bytes),
            Reply::Stream(_) => None,
        }
    }
}

/// Turns one raw message into the bytes of its reply, if it gets one.
///
/// Fewer than 12 bytes or a response message: no reply (nothing to answer,
/// and answering responses invites reflection loops). Undecodable after the
/// header, a standard query without exactly one question, or a question
/// name that is not written out label by label: a bare FORMERR header with
/// the request's id, echoing nothing.
pub async fn process<H: RequestHandler>(
    handler: &H,
    primary: Option<&Primary>,
    message: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Reply> {
    let Some(header) = Header::read(&mut BinDecoder::new(&message))
        .ok()
        .filter(|h| h.metadata.message_type != MessageType::Response)
    else {
        metrics().count_dropped();
        return None;
    };
    // A signed request: verified, then answered without its TSIG, and the
    // reply signed. Only a message with additional records can be signed.
    let mut signed = None;
    let message = if header.counts.additionals == 0 {
        message
    } else {
        let keys = primary.map(Primary::keys).unwrap_or_default();
        match tsig::verify_request(&message, &keys, tsig::now()) {
            Ok(Verdict::Unsigned) => message,
            Ok(Verdict::Signed(key, stripped)) => {
                signed = Some(key);
                stripped
            }
            // A message that does not decode is FORMERR whatever its TSIG
            // says (found by the dns_request fuzz target: an SOA with no
            // RDATA in the authority section and an unknown algorithm got
            // NOTAUTH). Rare, so decoding it once more costs nothing.
            Ok(Verdict::Failed(_)) if hickory_proto::op::Message::from_vec(&message).is_err() => {
                debug!(%src, "malformed signed request; answering FORMERR");
                metrics().count_query(protocol, None, ResponseCode::FormErr);
                return Some(Reply::One(formerr(&header.metadata)));
            }
            Ok(Verdict::Failed(failed)) => {
                info!(
                    %src,
                    key = %failed.key_name,
                    error = %failed.error,
                    "signed request refused (TSIG)"
                );
                metrics().count_query(protocol, None, ResponseCode::NotAuth);
                return Some(Reply::One(tsig_failure(&message, &header, &failed)));
            }
            Err(why) => {
                debug!(%src, error = %why, "malformed TSIG; answering FORMERR");
                metrics().count_query(protocol, None, ResponseCode::FormErr);
                return Some(Reply::One(formerr(&header.metadata)));
            }
        }
    };
    // An error, and the message when it is still whole: a query without
    // exactly one question is turned away before it is decoded.
    let decoded = match questions_are_plain(&message, header.counts.queries) {
        // RFC 9619: a query has one question. Echoing dozens of them back
        // (FORMERR with the question section) would amplify.
        Ok(()) if header.metadata.op_code == OpCode::Query && header.counts.queries != 1 => Err((
            format!("{} questions", header.counts.queries),
            Some(message),
        )),
        Ok(()) => Request::from_bytes(message, src, protocol).map_err(|e| (e.to_string(), None)),
        Err(why) => Err((why.to_string(), None)),
    };
    let request = match decoded {
        Ok(request) => request,
        Err((error, message)) => {
            debug!(%error, %src, "malformed query; answering FORMERR");
            metrics().count_query(protocol, None, ResponseCode::FormErr);
            let mut reply = formerr(&header.metadata);
            // Such a query with a well-formed OPT gets an OPT back, as RFC
            // 6891 section 6.1.1 asks and Knot does; one that does not
            // decode gets a bare header.
            if let Some(edns) = message
                .and_then(|m| hickory_proto::op::Message::from_vec(&m).ok())
                .and_then(|m| m.edns)
            {
                append_opt(&mut reply, edns.flags().dnssec_ok);
            }
            return Some(Reply::One(reply));
        }
    };
    // The request's DO bit if it has an OPT: replies written as bare
    // bytes get an OPT too (RFC 6891 section 6.1.1).
    let edns_do = request.edns.as_ref().map(|e| e.flags().dnssec_ok);
    let with_opt = |mut reply: Vec<u8>| {
        if let Some(dnssec_ok) = edns_do {
            append_opt(&mut reply, dnssec_ok);
        }
        reply
    };
    let query = request.queries.queries().first();
    let qtype = query.map(|q| q.query_type());
    let sign = |mut reply: Vec<u8>| {
        if let Some(signed) = &signed {
            tsig::sign_reply(&mut reply, signed, tsig::now(), None);
        }
        reply
    };
    let refused = || {
        metrics().count_query(protocol, qtype, ResponseCode::Refused);
        let refused = header_reply(
            header.metadata.id,
            0,
            header.metadata.recursion_desired,
            false,
            ResponseCode::Refused,
            request.queries.as_bytes(),
        );
        Some(Reply::One(sign(with_opt(refused))))
    };
    if header.metadata.op_code == OpCode::Query {
        if let (Some(query), Some(RecordType::AXFR | RecordType::IXFR)) = (query, qtype) {
            let Some(primary) = primary else {
                return refused();
            };
            let transfer = TransferRequest {
                id: header.metadata.id,
                recursion_desired: header.metadata.recursion_desired,
                opcode: 0,
                question: request.queries.as_bytes(),
                name: query.original().name(),
                qtype: query.query_type(),
                authorities: &request.authorities,
                source: src.ip(),
                protocol,
                signed: signed.as_ref(),
            };
            return Some(match primary.answer(&transfer) {
                Answer::One(reply) => {
                    metrics().count_query(protocol, qtype, rcode_of(&reply));
                    Reply::One(sign(with_opt(reply)))
                }
                Answer::Stream(stream) => {
                    metrics().count_query(protocol, qtype, ResponseCode::NoError);
                    Reply::Stream(stream)
                }
            });
        }
        // A signed SOA query is a secondary's refresh check: the same
        // rule as for transfers decides.
        if let (Some(key), Some(RecordType::SOA)) = (&signed, qtype) {
            if !primary.is_some_and(|p| p.may_transfer(src.ip(), Some(key))) {
                info!(%src, key = %key.key.name, "signed SOA query refused: no [transfer] allow entry matches");
                return refused();
            }
        }
    }
    let limit = match protocol {
        Protocol::Udp => udp_limit(request.edns.as_ref()),
        _ => usize::from(u16::MAX),
    };
    // Room for the signature, so that a signed reply never exceeds it.
    let room = signed.as_ref().map_or(0, |s| tsig::overhead(&s.key));
    let responder = WireResponder::new(
        limit.saturating_sub(room),
        request.queries.as_bytes().len(),
        header.counts.queries,
    );
    handler
        .handle_request::<_, TokioTime>(&request, responder.clone())
        .await;
    let (reply, rcode) = responder.take()?;
    metrics().count_query(protocol, qtype, rcode);
    Some(Reply::One(sign(reply)))
}

/// The response code of an encoded reply.
fn rcode_of(reply: &[u8]) -> ResponseCode {
    ResponseCode::from_low(reply.get(3).map_or(2, |b| b & 0x0f))
}

/// The reply to a request whose TSIG failed (RFC 8945 section 5.2):
/// NOTAUTH with the question, and a TSIG with the error, signed for
/// BADTIME and BADTRUNC, unsigned for BADKEY and BADSIG.
fn tsig_failure(message: &[u8], header: &Header, failed: &tsig::Failed) -> Vec<u8> {
    let question = question_section(message, header.counts.queries).unwrap_or_default();
    let mut reply = header_reply(
        header.metadata.id,
        u8::from(header.metadata.op_code),
        header.metadata.recursion_desired,
        false,
        ResponseCode::NotAuth,
        if header.counts.queries == 1 {
            question
        } else {
            &[]
        },
    );
    let now = tsig::now();
    match &failed.signed {
        Some(signed) => {
            tsig::sign_reply(&mut reply, signed, now, Some(failed.error));
        }
        None => tsig::append_unsigned_error(&mut reply, failed, now),
    }
    reply
}

/// The question section of `message` (with `count` questions) as sent,
/// if every name in it is written out label by label.
fn question_section(message: &[u8], count: u16) -> Option<&[u8]> {
    let mut pos = 12;
    for _ in 0..count {
        loop {
            let &len = message.get(pos)?;
            if len & 0xc0 != 0 {
                return None;
            }
            pos += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        pos += 4;
    }
    message.get(12..pos)
}

/// Checks that every question name of `message` (with `count` questions)
/// is a plain sequence of labels, without compression pointers or other
/// label types.
///
/// hickory keeps the question section's bytes as sent and the reply repeats
/// them, so that the case is echoed. A pointer in those bytes would be
/// copied into the reply, where it points into the reply's own header (the
/// first question can only point there) and no client can parse it. NSD
/// answers such a query FORMERR, as fleetdns now does; Knot drops it. A
/// question cut short is left for the decoder to report.
pub fn questions_are_plain(message: &[u8], count: u16) -> Result<(), &'static str> {
    let mut pos = 12;
    for _ in 0..count {
        loop {
            let Some(&len) = message.get(pos) else {
                return Ok(());
            };
            if len & 0xc0 != 0 {
                return Err("a question name uses compression or an unknown label type");
            }
            pos += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        // type and class
        pos += 4;
    }
    Ok(())
}

/// A bare FORMERR header echoing the request's id and opcode.
fn formerr(request: &Metadata) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = ResponseCode::FormErr;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut bytes = Vec::with_capacity(12);
    let _ = header.emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;
    use proptest::prelude::*;

    /// The query of the issue that found this (the fuzz target's selector
    /// byte removed): its question name ends in a pointer to offset 2.
    const POINTER_TO_HEADER: &[u8] = &[
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, b'f', b'l',
        b'e', b'e', b't', 0xc0, 0x02, 0x00, 0x01, 0x00, 0x01,
    ];

    fn wire_labels(labels: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for label in labels {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out
    }

    fn run(message: Vec<u8>, protocol: Protocol) -> Option<Vec<u8>> {
        let (_, _, handler) = crate::dns::demo_world(Vec::new());
        let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(process(&handler, None, message, src, protocol))
            .and_then(Reply::one)
    }

    /// The reply as a strict client reads it: FORMERR, the id, and nothing
    /// echoed.
    fn assert_bare_formerr(request: &[u8], reply: &[u8]) {
        let parsed = Message::from_vec(reply).expect("the reply parses");
        assert_eq!(parsed.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply[..2], request[..2], "the id is echoed");
        assert!(parsed.queries.is_empty(), "no question is echoed");
        assert_eq!(reply.len(), 12, "a bare header");
    }

    #[test]
    fn a_question_ending_in_a_pointer_into_the_header_gets_a_bare_formerr() {
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            let reply = run(POINTER_TO_HEADER.to_vec(), protocol).expect("a reply");
            assert_bare_formerr(POINTER_TO_HEADER, &reply);
        }
    }

    /// Found by the `dns_request` fuzz target (its first byte selects TCP):
    /// a message with an SOA of no RDATA in the authority section, signed
    /// with an unknown algorithm, got NOTAUTH (BADKEY) although it does not
    /// decode; it gets FORMERR like any undecodable message.
    #[test]
    fn a_signed_request_that_does_not_decode_gets_formerr_not_notauth() {
        let seed = include_bytes!(
            "../../fuzz/seeds/dns_request/issue-14-badkey-on-an-undecodable-message"
        );
        assert!(Message::from_vec(&seed[1..]).is_err());
        let reply = run(seed[1..].to_vec(), Protocol::Tcp).expect("a reply");
        assert_bare_formerr(&seed[1..], &reply);
    }

    #[test]
    fn plain_questions_are_not_refused_by_the_pointer_check() {
        let mut q = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&wire_labels(&[
            "Web-1".into(),
            "fleet".into(),
            "internal".into(),
        ]));
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(questions_are_plain(&q, 1), Ok(()));
        let reply = Message::from_vec(&run(q, Protocol::Udp).unwrap()).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.queries[0].name().to_string(), "Web-1.fleet.internal.");
    }

    /// A request of `count` copies of one question, with opcode `opcode`.
    fn many_questions(opcode: u8, count: u16) -> Vec<u8> {
        let mut q = vec![0, 7, opcode << 3, 0];
        q.extend_from_slice(&count.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        for _ in 0..count {
            q.extend_from_slice(&wire_labels(&[
                "web-1".into(),
                "fleet".into(),
                "internal".into(),
            ]));
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
        }
        q
    }

    /// Found by the `dns_request` fuzz target (seed
    /// `many-questions-truncated`): 48 questions, FORMERR echoing them all,
    /// too big for UDP, so the truncated reply copied all 48 questions
    /// behind a header that counted one.
    #[test]
    fn a_query_without_exactly_one_question_gets_a_bare_formerr() {
        for count in [0, 2, 48] {
            let q = many_questions(0, count);
            for protocol in [Protocol::Udp, Protocol::Tcp] {
                let reply = run(q.clone(), protocol).expect("a reply");
                assert_bare_formerr(&q, &reply);
            }
        }
    }

    #[test]
    fn a_truncated_reply_counts_exactly_the_questions_it_holds() {
        // another opcode: NOTIMP echoing the questions, if they fit
        for (count, echoed) in [(2u16, 2usize), (48, 0)] {
            let q = many_questions(2, count);
            let reply = run(q.clone(), Protocol::Udp).expect("a reply");
            assert!(reply.len() <= 512, "{} bytes", reply.len());
            let parsed = hickory_proto::serialize::binary::BinDecoder::new(&reply);
            let mut decoder = parsed;
            let message = Message::read(&mut decoder).expect("the reply parses");
            assert!(decoder.is_empty(), "bytes trail the reply");
            assert_eq!(message.metadata.response_code, ResponseCode::NotImp);
            assert_eq!(message.queries.len(), echoed, "{count} questions asked");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any question with a pointer (or a reserved label type) anywhere
        /// in its name, in any question of the section, with any opcode,
        /// gets a reply that parses and echoes none of it.
        #[test]
        fn any_question_with_a_pointer_gets_a_reply_that_parses(
            id in any::<u16>(),
            flags in 0u8..0x80,
            labels in proptest::collection::vec("[a-zA-Z0-9-]{1,12}", 0..4),
            tag in prop_oneof![Just(0xc0u8), Just(0x80), Just(0x40)],
            target in any::<u8>(),
            qtype in any::<u16>(),
            first_plain in any::<bool>(),
            tcp in any::<bool>(),
            edns in any::<bool>(),
        ) {
            let mut q = id.to_be_bytes().to_vec();
            let questions: u8 = if first_plain { 2 } else { 1 };
            q.extend_from_slice(&[flags & 0x79, 0, 0, questions, 0, 0, 0, 0, 0, u8::from(edns)]);
            if first_plain {
                q.extend_from_slice(&wire_labels(&["web-1".into(), "fleet".into(), "internal".into()]));
                q.extend_from_slice(&[0, 0, 1, 0, 1]);
            }
            q.extend_from_slice(&wire_labels(&labels));
            q.extend_from_slice(&[tag | (target >> 2), target]);
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&[0, 1]);
            if edns {
                q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
            }
            let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
            let reply = run(q.clone(), protocol).expect("a query gets a reply");
            assert_bare_formerr(&q, &reply);
        }
    }
}

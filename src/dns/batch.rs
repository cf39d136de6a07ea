//! Batches of UDP datagrams: up to [`BATCH`] queries taken from a socket
//! with one `recvmmsg`, their fast-path replies sent with one `sendmmsg`.
//!
//! Under load several queries wait at every wake-up of a receive loop; one
//! system call per batch instead of one per datagram (and one more that
//! finds the socket empty) leaves more of each CPU for answering.
//!
//! On a wildcard address (`0.0.0.0`, `::`) the kernel also reports the
//! address each datagram was sent to (IP_PKTINFO, IPV6_PKTINFO), and the
//! reply names it as its source: otherwise the kernel picks the source by
//! the route back, and a client that asked a host's second address (or a
//! secondary IP of an ENI) gets a reply from another address and drops
//! it. Sockets bound to one address need none of this and skip it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{SockAddr, SockAddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::debug;

/// Datagrams taken per `recvmmsg`, and so the most replies per `sendmmsg`.
pub const BATCH: usize = 64;

/// Bytes kept per received datagram. A DNS query is far smaller (a name is
/// at most 255 bytes; EDNS options and padding add a few hundred); a
/// larger datagram is cut by the kernel, seen as such and dropped.
pub const SLOT: usize = 4096;

/// Where a datagram arrived: the address it was sent to and the interface
/// that took it in, as IP_PKTINFO / IPV6_PKTINFO report them. A reply
/// sent with it leaves from that address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The local address the query was sent to.
    pub addr: IpAddr,
    /// The interface it came in on (kept for IPv6, where a link-local
    /// address means nothing without it; IPv4 replies let the routing
    /// table choose, as a reply from a bound address would).
    pub ifindex: u32,
}

/// One datagram's ancillary data: room for one IPV6_PKTINFO message (40
/// bytes on 64-bit Linux), aligned as `cmsghdr` needs.
type Control = [u64; 8];

/// Asks the kernel to report each datagram's destination address on
/// `socket`, bound to a wildcard address of `address`'s family.
#[allow(unsafe_code)]
pub fn report_destinations(socket: &socket2::Socket, address: SocketAddr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, option) = match address {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor and a c_int option of its declared size.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams received by one [`Received::receive`], and the buffers the
/// kernel fills, set up once per receive loop.
pub struct Received {
    /// [`BATCH`] slots of [`SLOT`] bytes.
    slots: Box<[u8]>,
    /// The senders' addresses, one buffer per slot.
    names: Box<[SockAddrStorage]>,
    /// Ancillary data, one buffer per slot; empty unless the socket
    /// reports destinations ([`report_destinations`]).
    controls: Box<[Control]>,
    /// One iovec per slot, pointing into `slots`; only read through the
    /// headers' pointers, and kept alive for them.
    _iovecs: Box<[libc::iovec]>,
    /// One header per slot, pointing at its iovec and address buffer.
    headers: Box<[libc::mmsghdr]>,
    /// Per datagram received: its length, its sender if it can be
    /// answered (an IP address, not cut short), and where it arrived if
    /// the socket reports that.
    got: Vec<(usize, Option<SocketAddr>, Option<Local>)>,
}

impl Received {
    /// Buffers for a socket that reports destinations if `destinations`.
    #[allow(unsafe_code)]
    pub fn new(destinations: bool) -> Self {
        let mut slots = vec![0u8; BATCH * SLOT].into_boxed_slice();
        let mut names: Box<[SockAddrStorage]> =
            (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect();
        let controls_len = if destinations { BATCH } else { 0 };
        let mut controls: Box<[Control]> = vec![[0u64; 8]; controls_len].into_boxed_slice();
        let mut iovecs: Box<[libc::iovec]> = slots
            .chunks_exact_mut(SLOT)
            .map(|slot| libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            })
            .collect();
        let mut controls_iter = controls.iter_mut();
        let headers = iovecs
            .iter_mut()
            .zip(names.iter_mut())
            .map(|(iovec, name)| {
                // SAFETY: all zeros is a valid `mmsghdr` (integers and
                // null pointers).
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
                header.msg_hdr.msg_iov = std::ptr::from_mut(iovec);
                header.msg_hdr.msg_iovlen = 1;
                if let Some(control) = controls_iter.next() {
                    header.msg_hdr.msg_control = control.as_mut_ptr().cast();
                }
                header
            })
            .collect();
        // The pointers above point into heap blocks that never move or
        // change size while `Received` lives (moving it moves only the
        // boxes' handles).
        Received {
            slots,
            names,
            controls,
            _iovecs: iovecs,
            headers,
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl Received {
    /// Takes up to [`BATCH`] waiting datagrams without blocking; how many.
    /// `WouldBlock` when none waits (tokio then waits for readiness again).
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        socket.try_io(Interest::READABLE, || self.recv_batch(socket))
    }

    /// Datagram `i` of the last batch, where it came from and where it
    /// arrived (when the socket reports that), or `None` for one that
    /// cannot be answered (cut short, or not from IP).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr, Option<Local>)> {
        let (len, from, local) = *self.got.get(i)?;
        let from = from?;
        let start = i * SLOT;
        Some((&self.slots[start..start + len], from, local))
    }

    /// One `recvmmsg(MSG_DONTWAIT)` into the slots; fills `got`.
    ///
    /// The second place in fleetdns that needs `unsafe`: neither the
    /// standard library, tokio, socket2 nor rustix wraps `recvmmsg`.
    #[allow(unsafe_code)]
    fn recv_batch(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.got.clear();
        let control_len = if self.controls.is_empty() {
            0
        } else {
            std::mem::size_of::<Control>()
        };
        for (header, name) in self.headers.iter_mut().zip(self.names.iter()) {
            // in and out: the buffer's size going in, the address's back
            header.msg_hdr.msg_namelen = name.size_of();
            header.msg_hdr.msg_controllen = control_len;
            header.msg_hdr.msg_flags = 0;
        }
        // SAFETY: each of the BATCH headers points at its own live iovec
        // over a distinct SLOT-byte part of `slots`, at its own address
        // buffer of the size given, and at its own control buffer if any
        // (see `new`); all outlive the call,
        // which writes only there and into the headers. MSG_DONTWAIT: it
        // never blocks the runtime.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
        for (header, name) in self.headers.iter().zip(self.names.iter()).take(received) {
            let len = (header.msg_len as usize).min(SLOT);
            let cut = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: a plain C struct, copied; the kernel wrote
            // `msg_namelen` bytes of it (at most its size).
            let from = unsafe { SockAddr::new(std::ptr::read(name), header.msg_hdr.msg_namelen) }
                .as_socket();
            let local = if control_len == 0 {
                None
            } else {
                // SAFETY: the kernel wrote `msg_controllen` bytes of
                // well-formed control messages into this header's buffer.
                unsafe { local_of(&header.msg_hdr) }
            };
            self.got.push((len, from.filter(|_| !cut), local));
        }
        Ok(received)
    }
}

/// The destination that IP_PKTINFO / IPV6_PKTINFO reported in `header`'s
/// control messages, if any.
///
/// # Safety
/// `header.msg_control` points at `msg_controllen` bytes of control
/// messages as `recvmsg` leaves them.
#[allow(unsafe_code)]
unsafe fn local_of(header: &libc::msghdr) -> Option<Local> {
    if header.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    let mut cmsg = libc::CMSG_FIRSTHDR(header);
    while !cmsg.is_null() {
        let data = libc::CMSG_DATA(cmsg);
        let len = (*cmsg).cmsg_len as usize;
        match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
                if len >= libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize =>
            {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                // ipi_spec_dst, not ipi_addr: for a datagram sent to a
                // broadcast address that is the interface's own address.
                return Some(Local {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))),
                    ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                });
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                if len >= libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize =>
            {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                return Some(Local {
                    addr: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    ifindex: info.ipi6_ifindex,
                });
            }
            _ => {}
        }
        cmsg = libc::CMSG_NXTHDR(header, cmsg);
    }
    None
}

/// Writes the control message that makes a reply leave from `local` into
/// `control`; its length.
#[allow(unsafe_code)]
fn source_control(control: &mut Control, local: Local) -> usize {
    // SAFETY: a zeroed msghdr whose control buffer is `control` (64 bytes,
    // 8-aligned), room for one cmsg of either payload, so CMSG_FIRSTHDR is
    // not null; the payload is written unaligned within that room.
    unsafe {
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of::<Control>();
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        match local.addr {
            IpAddr::V4(addr) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                let info = libc::in_pktinfo {
                    // 0: the routing table picks the interface, as for a
                    // socket bound to `addr`.
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(addr).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize
            }
            IpAddr::V6(addr) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: addr.octets(),
                    },
                    ipi6_ifindex: local.ifindex,
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize
            }
        }
    }
}

/// One `sendmmsg` of `messages` (reply, destination, source if chosen);
/// how many went out.
#[allow(unsafe_code)]
fn send_messages<'a>(
    socket: &UdpSocket,
    messages: impl ExactSizeIterator<Item = (&'a [u8], SocketAddr, Option<Local>)>,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let count = messages.len();
    let mut addresses: Vec<SockAddr> = Vec::with_capacity(count);
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(count);
    let mut controls: Vec<(Control, usize)> = Vec::with_capacity(count);
    for (reply, to, local) in messages {
        addresses.push(SockAddr::from(to));
        iovecs.push(libc::iovec {
            iov_base: reply.as_ptr().cast_mut().cast(),
            iov_len: reply.len(),
        });
        let mut control = [0u64; 8];
        let len = local.map_or(0, |local| source_control(&mut control, local));
        controls.push((control, len));
    }
    let mut headers: Vec<libc::mmsghdr> = addresses
        .iter()
        .zip(iovecs.iter_mut())
        .zip(controls.iter_mut())
        .map(|((address, iovec), (control, len))| {
            // SAFETY: all zeros is a valid `mmsghdr`.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = address.as_ptr().cast_mut().cast();
            header.msg_hdr.msg_namelen = address.len();
            header.msg_hdr.msg_iov = std::ptr::from_mut(iovec);
            header.msg_hdr.msg_iovlen = 1;
            if *len > 0 {
                header.msg_hdr.msg_control = control.as_mut_ptr().cast();
                header.msg_hdr.msg_controllen = *len;
            }
            header
        })
        .collect();
    // SAFETY: every header points at a live address, iovec (over a reply
    // borrowed for 'a) and control buffer of the lengths given, all kept
    // alive by the vectors above until the call returns; the kernel only
    // reads them (and writes `msg_len`). MSG_DONTWAIT: never blocks.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// The fast path's replies to one drained batch of queries, sent together
/// with one `sendmmsg`: a system call per batch instead of per reply, and
/// the client, woken by the first, often finds the rest already there.
#[derive(Default)]
pub struct Replies {
    /// The replies, one after the other.
    bytes: Vec<u8>,
    /// Where each reply ends in `bytes`, where it goes, and the source
    /// address it must leave from if the socket is on a wildcard address.
    ends: Vec<(usize, SocketAddr, Option<Local>)>,
}

impl Replies {
    /// Adds a reply to the batch.
    pub fn push(&mut self, reply: &[u8], to: SocketAddr, local: Option<Local>) {
        self.bytes.extend_from_slice(reply);
        self.ends.push((self.bytes.len(), to, local));
    }

    /// Sends every reply, then empties the batch.
    pub async fn flush(&mut self, socket: &UdpSocket) {
        let mut next = 0;
        while next < self.ends.len() {
            match self.send_from(socket, next) {
                Ok(0) => break,
                Ok(sent) => next += sent,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    // The send buffer is full: the rest one by one, each
                    // when there is room.
                    for i in next..self.ends.len() {
                        let (reply, to, local) = self.get(i);
                        send_udp(socket, reply, to, local).await;
                    }
                    break;
                }
                Err(error) => {
                    // The first unsent reply failed (its peer is
                    // unreachable, say): drop it, send the others.
                    debug!(%error, to = %self.ends[next].1, "UDP send failed");
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.ends.clear();
    }

    /// Reply `i`, its destination and its source.
    fn get(&self, i: usize) -> (&[u8], SocketAddr, Option<Local>) {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p].0);
        let (end, to, local) = self.ends[i];
        (&self.bytes[start..end], to, local)
    }

    /// One `sendmmsg` of the replies from `first` on; how many went out.
    fn send_from(&self, socket: &UdpSocket, first: usize) -> io::Result<usize> {
        send_messages(socket, (first..self.ends.len()).map(|i| self.get(i)))
    }
}

/// Sends a UDP reply, from `local` if given: at once when the socket has
/// room (nearly always), else when it has.
pub async fn send_udp(socket: &UdpSocket, reply: &[u8], to: SocketAddr, local: Option<Local>) {
    let sent = match local {
        None => match socket.try_send_to(reply, to) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                socket.send_to(reply, to).await
            }
            other => other,
        },
        Some(local) => {
            let send = || send_messages(socket, std::iter::once((reply, to, Some(local))));
            match socket.try_io(Interest::WRITABLE, send) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    socket.async_io(Interest::WRITABLE, send).await
                }
                other => other,
            }
        }
    };
    if let Err(error) = sent {
        debug!(%error, %to, "UDP send failed");
    }
}

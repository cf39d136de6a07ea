//! Batches of UDP datagrams: up to [`BATCH`] queries taken from a socket
//! with one `recvmmsg`, their fast-path replies sent with one `sendmmsg`.
//!
//! Under load several queries wait at every wake-up of a receive loop; one
//! system call per batch instead of one per datagram (and one more that
//! finds the socket empty) leaves more of each CPU for answering.

use std::io;
use std::net::SocketAddr;

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

/// Datagrams received by one [`Received::receive`], and the buffers the
/// kernel fills, set up once per receive loop.
pub struct Received {
    /// [`BATCH`] slots of [`SLOT`] bytes.
    slots: Box<[u8]>,
    /// The senders' addresses, one buffer per slot.
    names: Box<[SockAddrStorage]>,
    /// One iovec per slot, pointing into `slots`; only read through the
    /// headers' pointers, and kept alive for them.
    _iovecs: Box<[libc::iovec]>,
    /// One header per slot, pointing at its iovec and address buffer.
    headers: Box<[libc::mmsghdr]>,
    /// Per datagram received: its length, and its sender if it can be
    /// answered (an IP address, not cut short).
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for Received {
    #[allow(unsafe_code)]
    fn default() -> Self {
        let mut slots = vec![0u8; BATCH * SLOT].into_boxed_slice();
        let mut names: Box<[SockAddrStorage]> =
            (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect();
        let mut iovecs: Box<[libc::iovec]> = slots
            .chunks_exact_mut(SLOT)
            .map(|slot| libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            })
            .collect();
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
                header
            })
            .collect();
        // The pointers above point into heap blocks that never move or
        // change size while `Received` lives (moving it moves only the
        // boxes' handles).
        Received {
            slots,
            names,
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

    /// Datagram `i` of the last batch and where it came from, or `None`
    /// for one that cannot be answered (cut short, or not from IP).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (len, from) = *self.got.get(i)?;
        let from = from?;
        let start = i * SLOT;
        Some((&self.slots[start..start + len], from))
    }

    /// One `recvmmsg(MSG_DONTWAIT)` into the slots; fills `got`.
    ///
    /// The second place in fleetdns that needs `unsafe`: neither the
    /// standard library, tokio, socket2 nor rustix wraps `recvmmsg`.
    #[allow(unsafe_code)]
    fn recv_batch(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        self.got.clear();
        for (header, name) in self.headers.iter_mut().zip(self.names.iter()) {
            // in and out: the buffer's size going in, the address's back
            header.msg_hdr.msg_namelen = name.size_of();
            header.msg_hdr.msg_flags = 0;
        }
        // SAFETY: each of the BATCH headers points at its own live iovec
        // over a distinct SLOT-byte part of `slots`, and at its own address
        // buffer of the size given (see `default`); all outlive the call,
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
            self.got.push((len, from.filter(|_| !cut)));
        }
        Ok(received)
    }
}

/// The fast path's replies to one drained batch of queries, sent together
/// with one `sendmmsg`: a system call per batch instead of per reply, and
/// the client, woken by the first, often finds the rest already there.
#[derive(Default)]
pub struct Replies {
    /// The replies, one after the other.
    bytes: Vec<u8>,
    /// Where each reply ends in `bytes`, and where it goes.
    ends: Vec<(usize, SocketAddr)>,
}

impl Replies {
    /// Adds a reply to the batch.
    pub fn push(&mut self, reply: &[u8], to: SocketAddr) {
        self.bytes.extend_from_slice(reply);
        self.ends.push((self.bytes.len(), to));
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
                        let (reply, to) = self.get(i);
                        send_udp(socket, reply, to).await;
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

    /// Reply `i` and its destination.
    fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p].0);
        let (end, to) = self.ends[i];
        (&self.bytes[start..end], to)
    }

    /// One `sendmmsg` of the replies from `first` on; how many went out.
    fn send_from(&self, socket: &UdpSocket, first: usize) -> io::Result<usize> {
        use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
        use std::io::IoSlice;
        let range = first..self.ends.len();
        let addresses: Vec<SocketAddrAny> = range
            .clone()
            .map(|i| SocketAddrAny::from(self.ends[i].1))
            .collect();
        let slices: Vec<[IoSlice<'_>; 1]> = range.map(|i| [IoSlice::new(self.get(i).0)]).collect();
        let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = slices
            .iter()
            .map(|_| SendAncillaryBuffer::default())
            .collect();
        let mut messages: Vec<MMsgHdr<'_>> = addresses
            .iter()
            .zip(&slices)
            .zip(controls.iter_mut())
            .map(|((address, slice), control)| MMsgHdr::new_with_addr(address, slice, control))
            .collect();
        Ok(sendmmsg(socket, &mut messages, SendFlags::empty())?)
    }
}

/// Sends a UDP reply: at once when the socket has room (nearly always),
/// else when it has.
pub async fn send_udp(socket: &UdpSocket, reply: &[u8], to: SocketAddr) {
    let sent = match socket.try_send_to(reply, to) {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => socket.send_to(reply, to).await,
        other => other,
    };
    if let Err(error) = sent {
        debug!(%error, %to, "UDP send failed");
    }
}
